package policy

import (
	"fmt"
	"net/netip"
)

// maxViaDepth bounds how many next-hop addresses one packet may follow. Build
// rejects loops, so this only guards the evaluator against itself; real
// chains (VM → firewall appliance) are one or two deep.
const maxViaDepth = 8

// Evaluate answers what must happen to pkt entering host through in. It is
// the reference: a plain walk of the policy layers (source checks → the
// sender's outbound ACLs → the tenant's routing domain → the VNET's
// mappings → the receiver's inbound ACLs), written for clarity rather than
// speed. See EvaluateWith for connection tracking.
func (s *State) Evaluate(host string, in InPort, pkt Packet) Verdict {
	return s.EvaluateWith(host, in, pkt, EvalOptions{})
}

// EvaluateWith is Evaluate with options.
func (s *State) EvaluateWith(host string, in InPort, pkt Packet, opts EvalOptions) Verdict {
	e := evaluation{s: s, host: host, pkt: pkt, opts: opts}
	if _, ok := s.hostIdx[host]; !ok {
		return e.drop(ReasonUnknownHost, "host %q is not in the policy", host)
	}
	if in.Uplink {
		return e.inbound(in)
	}
	return e.outbound(in.VM)
}

type evaluation struct {
	s    *State
	host string
	pkt  Packet
	opts EvalOptions
	v    Verdict
}

func (e *evaluation) step(format string, args ...any) {
	e.v.Trace = append(e.v.Trace, fmt.Sprintf(format, args...))
}

func (e *evaluation) drop(r Reason, format string, args ...any) Verdict {
	e.step(format, args...)
	e.v.Action = Drop
	e.v.Reason = r
	return e.v
}

func (e *evaluation) toHost(r Reason, format string, args ...any) Verdict {
	e.step(format, args...)
	e.v.Action = ToHost
	e.v.Reason = r
	return e.v
}

// checkL3 sorts packets by EtherType: IP goes on, address resolution goes
// to the host, anything else is dropped.
func (e *evaluation) checkL3() (Verdict, bool) {
	p := &e.pkt
	switch p.EtherType {
	case EtherTypeARP:
		return e.toHost(ReasonAddressResolution, "ARP: answered by the host from the mappings"), false
	case EtherTypeIPv4:
		if !p.Src.Is4() || !p.Dst.Is4() {
			return e.drop(ReasonMalformed, "IPv4 EtherType with addresses %s > %s", p.Src, p.Dst), false
		}
	case EtherTypeIPv6:
		if !p.Src.Is6() || !p.Dst.Is6() || p.Src.Is4In6() || p.Dst.Is4In6() {
			return e.drop(ReasonMalformed, "IPv6 EtherType with addresses %s > %s", p.Src, p.Dst), false
		}
		if p.Protocol == ProtoICMPv6 && p.ICMPType >= 133 && p.ICMPType <= 137 {
			return e.toHost(ReasonAddressResolution, "ICMPv6 neighbor discovery type %d: answered by the host", p.ICMPType), false
		}
	default:
		return e.drop(ReasonUnsupportedEtherType, "EtherType %#04x is not IPv4, IPv6 or ARP", p.EtherType), false
	}
	return Verdict{}, true
}

func (e *evaluation) outbound(vmName string) Verdict {
	s := e.s
	vi, ok := s.vmIdx.get(vmName, s.vms)
	if !ok {
		return e.drop(ReasonUnknownPort, "in-port VM %q is not in the policy", vmName)
	}
	src := &s.vms[vi]
	if h, _, gen := s.location(int(vi)); h != e.host {
		return e.drop(ReasonUnknownPort, "VM %s runs on %s (generation %d), not on %s", src.Name, h, gen, e.host)
	}
	e.step("from VM %s (tenant %s, vnet %s) on %s", src.Name, src.Tenant, src.VNET, e.host)
	if v, ok := e.checkL3(); !ok {
		return v
	}
	p := e.pkt
	if p.SrcMAC != src.MAC {
		return e.drop(ReasonSpoofedSource, "source MAC %s is not VM %s's %s", p.SrcMAC, src.Name, src.MAC)
	}
	if !containsAddr(src.CAs, p.Src) {
		return e.drop(ReasonSpoofedSource, "source address %s is not one of VM %s's addresses", p.Src, src.Name)
	}
	if !e.aclLayer(int(vi), Out, p) {
		return e.drop(ReasonACLDeny, "denied by the outbound ACLs of %s", src.Name)
	}

	srcVNET := &s.vnets[s.vmVNET[vi]]
	r, target, via, ok := e.resolve(s.tenantIdx[src.Tenant], src.Tenant, p.Dst)
	if !ok {
		return e.v
	}
	switch r.NextHop.Kind {
	case NextHopDrop:
		return e.drop(ReasonRouteDrop, "route %s drops", r.Prefix)
	case NextHopHost:
		return e.toHost(ReasonRouteToHost, "route %s sends to the host", r.Prefix)
	case NextHopGateway:
		return e.toGateway(srcVNET, r)
	case NextHopVNET:
		dv := &s.vnets[s.vnetIdx[VNETKey{src.Tenant, r.NextHop.VNET}]]
		return e.toVNET(dv, target, via || dv != srcVNET)
	}
	return e.drop(ReasonNoRoute, "route %s has no usable next hop", r.Prefix)
}

// resolve routes dst in a tenant's routing domain, following next-hop
// addresses, to the first route whose next hop is not an address. It
// returns that route, the address it must be applied to (dst, or the last
// next-hop address) and whether an address was followed. When !ok, e.v is
// already the drop verdict.
func (e *evaluation) resolve(tenant int, tenantName string, dst netip.Addr) (r Route, target netip.Addr, via bool, ok bool) {
	target = dst
	for depth := 0; ; depth++ {
		if depth > maxViaDepth {
			e.drop(ReasonRouteLoop, "gave up after %d next-hop addresses", maxViaDepth)
			return Route{}, target, via, false
		}
		r, ok = lpm(e.s.routes[tenant], target)
		if !ok {
			e.drop(ReasonNoRoute, "no route of tenant %s covers %s", tenantName, target)
			return Route{}, target, via, false
		}
		e.v.Routes = append(e.v.Routes, r)
		e.step("route %s (%s) -> %s", r.Prefix, r.Origin, r.NextHop)
		if r.NextHop.Kind != NextHopAddress {
			return r, target, via, true
		}
		via = true
		target = r.NextHop.Via
	}
}

// routedRewrite is what a virtual router does to a packet it forwards
// between subnets: its own source MAC and one hop less.
func (e *evaluation) routedRewrite() (Verdict, bool) {
	if e.pkt.TTL <= 1 {
		return e.drop(ReasonTTLExpired, "routed packet with TTL %d", e.pkt.TTL), false
	}
	e.v.Rewrite.SrcMAC = e.s.routerMAC
	e.v.Rewrite.DecTTL = true
	return Verdict{}, true
}

func (e *evaluation) toVNET(dv *VNET, target netip.Addr, routed bool) Verdict {
	s := e.s
	ti, ok := s.table.lookup(dv.VNI, target)
	if !ok {
		return e.drop(ReasonUnknownDestination, "vnet %s (vni %d) has no mapping for %s", dv.Name, dv.VNI, target)
	}
	m := s.mappingAt(ti, true)
	e.step("mapping vni %d %s -> VM %s mac %s on %s (%s, generation %d)", m.VNI, m.CA, m.VM, m.MAC, m.Host, m.PA, m.Generation)
	if routed {
		if v, ok := e.routedRewrite(); !ok {
			return v
		}
	}
	e.v.Rewrite.DstMAC = m.MAC
	e.v.VM = m.VM
	if m.Host == e.host {
		// The receiver is local: its inbound ACLs run here, on the packet as
		// it will arrive.
		if !e.aclLayer(int(s.table.entries[ti].vm), In, e.v.Rewrite.Apply(e.pkt)) {
			return e.drop(ReasonACLDeny, "denied by the inbound ACLs of %s", m.VM)
		}
		e.v.Action = Deliver
		e.step("deliver to local VM %s", m.VM)
		return e.v
	}
	e.v.Action = Encap
	e.v.Host = m.Host
	e.v.PA = m.PA
	e.v.VNI = m.VNI
	e.v.Encap = dv.Encap
	e.step("encapsulate in %s with vni %d toward %s (%s)", dv.Encap, m.VNI, m.Host, m.PA)
	return e.v
}

func (e *evaluation) toGateway(srcVNET *VNET, r Route) Verdict {
	gw, _ := e.s.Gateway(r.NextHop.Gateway)
	if v, ok := e.routedRewrite(); !ok {
		return v
	}
	if r.NextHop.NAT.IsValid() {
		e.v.Rewrite.Dst = translate(e.pkt.Dst, r.Prefix, r.NextHop.NAT)
		e.step("gateway rule %s: destination %s -> %s", r.Rule, e.pkt.Dst, e.v.Rewrite.Dst)
	}
	e.v.Action = ToGateway
	e.v.Gateway = gw.Name
	e.v.PA = gw.PA
	e.v.VNI = srcVNET.VNI
	e.v.Encap = srcVNET.Encap
	e.step("encapsulate in %s with vni %d (vnet %s) toward gateway %s (%s)", srcVNET.Encap, srcVNET.VNI, srcVNET.Name, gw.Name, gw.PA)
	return e.v
}

func (e *evaluation) inbound(in InPort) Verdict {
	s := e.s
	e.step("from uplink: %s vni %d, outer source %s, on %s", in.Encap, in.VNI, in.OuterSrc, e.host)
	vni, ok := s.vnetByVNI[in.VNI]
	if !ok {
		return e.drop(ReasonUnknownVNI, "no VNET has vni %d", in.VNI)
	}
	dv := &s.vnets[vni]
	e.step("vni %d is vnet %s of tenant %s", in.VNI, dv.Name, dv.Tenant)
	// A VNET is carried in one encapsulation only: the same VNI in
	// another is not the VNET's traffic.
	if in.Encap != dv.Encap {
		return e.drop(ReasonEncapMismatch, "vnet %s is carried in %s, not %s", dv.Name, dv.Encap, in.Encap)
	}
	if v, ok := e.checkL3(); !ok {
		return v
	}
	p := e.pkt
	// The receiver routes the inner destination the way the sender did, so
	// that a packet sent to an appliance (a next-hop address) reaches the
	// appliance, and a route through an appliance cannot be bypassed by
	// sending straight to the final VM's host.
	tenant := s.tenantIdx[dv.Tenant]
	r, target, _, ok := e.resolve(tenant, dv.Tenant, p.Dst)
	if !ok {
		return e.v
	}
	if r.NextHop.Kind != NextHopVNET || r.NextHop.VNET != dv.Name {
		return e.drop(ReasonUnknownDestination, "tenant %s routes %s to %s, not into vnet %s", dv.Tenant, p.Dst, r.NextHop, dv.Name)
	}
	ti, ok := s.table.lookup(dv.VNI, target)
	if !ok {
		return e.drop(ReasonUnknownDestination, "vnet %s has no mapping for %s", dv.Name, target)
	}
	m := s.mappingAt(ti, true)
	if m.Host != e.host {
		return e.drop(ReasonNotLocal, "VM %s (%s) runs on %s, not on %s", m.VM, p.Dst, m.Host, e.host)
	}

	// The outer source must be entitled to speak for the inner source in
	// this tenant: the host where the tenant's VM with that CA runs now, or a
	// gateway serving the tenant that the tenant's routes send that address
	// to. Anything else would let one tenant (or a stale host) inject into
	// another.
	if gi, ok := s.gwByPA[in.OuterSrc]; ok && s.gatewayServes(gi, dv.Tenant) {
		gw := &s.gateways[gi]
		e.step("outer source is gateway %s", gw.Name)
		for _, gr := range s.gwRules[tenant] {
			if gr.Gateway == gw.Name && gr.NAT.IsValid() && gr.NAT.Contains(p.Src) {
				e.v.Rewrite.Src = translate(p.Src, gr.NAT, gr.Prefix)
				e.step("gateway rule %s: source %s -> %s", gr.Name, p.Src, e.v.Rewrite.Src)
				break
			}
		}
	} else if !e.senderMatches(tenant, dv.Tenant, p.Src, in.OuterSrc) {
		return e.drop(ReasonTenantIsolation, "outer source %s does not host tenant %s's address %s", in.OuterSrc, dv.Tenant, p.Src)
	}

	e.v.Rewrite.DstMAC = m.MAC
	e.v.VM = m.VM
	if !e.aclLayer(int(s.table.entries[ti].vm), In, e.v.Rewrite.Apply(p)) {
		return e.drop(ReasonACLDeny, "denied by the inbound ACLs of %s", m.VM)
	}
	e.v.Action = Deliver
	e.step("deliver to local VM %s", m.VM)
	return e.v
}

// senderMatches reports whether the tenant's address src currently lives at
// outer: routing src in the tenant's domain must lead to a mapping whose
// current PA is outer.
func (e *evaluation) senderMatches(tenant int, tenantName string, src, outer netip.Addr) bool {
	s := e.s
	r, ok := lpm(s.routes[tenant], src)
	if !ok || r.NextHop.Kind != NextHopVNET {
		return false
	}
	sv := &s.vnets[s.vnetIdx[VNETKey{tenantName, r.NextHop.VNET}]]
	ti, ok := s.table.lookup(sv.VNI, src)
	if !ok {
		return false
	}
	m := s.mappingAt(ti, true)
	if m.PA != outer {
		return false
	}
	e.step("sender %s is VM %s on %s", src, m.VM, m.Host)
	return true
}

func (s *State) gatewayServes(gi int, tenant string) bool {
	t := s.gateways[gi].Tenant
	return t == "" || t == tenant
}

// aclLayer runs the ACLs of one VM in one direction and records the
// decision. It reports whether the packet may pass.
func (e *evaluation) aclLayer(vi int, dir Direction, p Packet) bool {
	s := e.s
	vm := &s.vms[vi]
	d := ACLDecision{ACLLayer: ACLLayer{VM: vm.Name, Direction: dir}, Action: Allow}
	if e.opts.Established != nil && e.opts.Established(d.ACLLayer, p) {
		d.Established = true
		e.v.ACLs = append(e.v.ACLs, d)
		e.step("acl %s %s: established connection, allowed", vm.Name, dir)
		return true
	}
	for _, a := range s.acls[s.tenantIdx[vm.Tenant]] {
		if a.Direction != dir || (a.VNET != "" && a.VNET != vm.VNET) || !a.Matches(p) {
			continue
		}
		d.ACL, d.Priority, d.Action = a.ID, a.Priority, a.Action
		d.Stateful = a.Stateful && a.Action == Allow
		e.v.ACLs = append(e.v.ACLs, d)
		e.step("acl %s %s: %s (priority %d) %s", vm.Name, dir, a.ID, a.Priority, a.Action)
		return a.Action == Allow
	}
	e.v.ACLs = append(e.v.ACLs, d)
	e.step("acl %s %s: no ACL matches, allowed by default", vm.Name, dir)
	return true
}

// Matches reports whether the ACL's match fields cover p (its direction and
// scope are the caller's business).
func (a *ACL) Matches(p Packet) bool {
	if len(a.Src) > 0 && !anyContains(a.Src, p.Src) {
		return false
	}
	if len(a.Dst) > 0 && !anyContains(a.Dst, p.Dst) {
		return false
	}
	if a.Protocol != ProtoAny && a.Protocol != p.Protocol {
		return false
	}
	if len(a.SrcPorts) > 0 && (!p.HasPorts() || !anyPort(a.SrcPorts, p.SrcPort)) {
		return false
	}
	if len(a.DstPorts) > 0 && (!p.HasPorts() || !anyPort(a.DstPorts, p.DstPort)) {
		return false
	}
	return true
}

func anyContains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func anyPort(rs []PortRange, port uint16) bool {
	for _, r := range rs {
		if r.Contains(port) {
			return true
		}
	}
	return false
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// translate maps a from prefix from into prefix to (same length): the
// prefix bits become to's, the host bits stay.
func translate(a netip.Addr, from, to netip.Prefix) netip.Addr {
	bits := to.Bits()
	src := a.As16()
	dst := to.Addr().As16()
	off := 0
	if a.Is4() {
		off = 12
	}
	for i := off; i < 16; i++ {
		bitPos := (i - off) * 8 // bits before this byte
		switch {
		case bitPos+8 <= bits:
			// whole byte from the target prefix
		case bitPos >= bits:
			dst[i] = src[i]
		default:
			keep := bits - bitPos
			mask := byte(0xff << (8 - keep))
			dst[i] = dst[i]&mask | src[i]&^mask
		}
	}
	out := netip.AddrFrom16(dst)
	if a.Is4() {
		return out.Unmap()
	}
	return out
}
