package vswitch

import (
	"fmt"
	"net/netip"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// maxViaDepth bounds next-hop address chains, as the policy's evaluator does.
const maxViaDepth = 8

// verdict is what the layer walk decides for one flow key. It holds the
// policy outcome plus what the flow derives from (for revalidation) and the
// connection-tracking work the walk implies.
type verdict struct {
	action policy.Action
	reason policy.Reason
	rw     policy.Rewrite
	port   hal.PortID // Deliver: the local VM's vport
	pa     netip.Addr // Encap/ToGateway: outer destination
	src    netip.Addr // Encap/ToGateway: outer source (this host's PA)
	vni    uint32     // Encap/ToGateway: VNI to encapsulate with
	decap  bool       // the flow came in tunnelled from the uplink
	// dst is the receiving VM's info, whose act is the likely action set
	// of the flow (internHinted); nil when there is no receiving VM.
	dst *vmInfo
	// notLocal: the flow came in tunnelled toward an outer destination
	// that is not this host's provider address; the host drops it
	// (DropNotLocal) before any flow, as the NIC's tunnel filter does.
	notLocal bool
	// routed: the walk crossed the virtual router, so a packet with TTL ≤ 1
	// is dropped (the NIC's dec_ttl hands it to the host, which drops it).
	routed bool
	// encap (Encap/ToGateway) is the encapsulation of the VNI's VNET.
	encap hal.EncapKind

	// What the flow derives from.
	tenant  uint32 // id of the tenant whose policy decided (0: none)
	srcVM   uint32 // sending VM (local vport or remote sender)
	dstVM   uint32 // receiving VM
	scopeVM string // the VM whose location the flow embeds; its scope
	srcName string // the sending VM, when known
	dstName string // the receiving VM, when known
	gateway bool   // a gateway was involved

	// Connection tracking: layers whose stateful allow opens a connection
	// (committed only if the verdict is not Drop), and established
	// connections the walk relied on.
	records [2]connKey
	nrec    int
	used    [2]connKey
	nused   int
	// denied is the ACL layer and packet a deny happened at, so that a
	// later connection through that layer re-evaluates the flow.
	denied    connKey
	hasDenied bool
}

// tracer collects the walk in words for Explain; nil on the data path, so
// callers test for nil before formatting anything.
type tracer struct{ steps []string }

func (t *tracer) step(format string, args ...any) {
	t.steps = append(t.steps, fmt.Sprintf(format, args...))
}

// packetOf turns a parsed key into the packet the policy layers look at.
func packetOf(k *hal.FlowKey, ttl uint8) policy.Packet {
	p := policy.Packet{
		SrcMAC: policy.MAC(k.EthSrc), DstMAC: policy.MAC(k.EthDst),
		EtherType: k.EthType, Protocol: k.Proto, TTL: ttl,
	}
	switch k.EthType {
	case hal.EtherTypeIPv4:
		p.Src, p.Dst = hal.AddrFrom16(k.IPSrc), hal.AddrFrom16(k.IPDst)
	case hal.EtherTypeIPv6:
		p.Src, p.Dst = netip.AddrFrom16(k.IPSrc), netip.AddrFrom16(k.IPDst)
	default:
		p.Protocol = 0
		return p
	}
	switch k.Proto {
	case policy.ProtoTCP, policy.ProtoUDP, policy.ProtoSCTP:
		p.SrcPort, p.DstPort = k.L4Src, k.L4Dst
	case policy.ProtoICMP, policy.ProtoICMPv6:
		p.ICMPType, p.ICMPCode = uint8(k.L4Src), uint8(k.L4Dst)
	}
	return p
}

// walk is one classification in progress. It holds the verdict by value,
// not a pointer to the caller's: escape analysis does not tell a walk's
// fields apart, and the tracer's arguments (addresses, names read through
// the walk) escape, so a verdict pointer kept here would move every
// caller's verdict to the heap: one 600-byte allocation per first packet.
type walk struct {
	c   *compiled
	ct  *conntrack
	tr  *tracer
	p   policy.Packet
	v   verdict
	ttl uint8
	// l4: the walk read the key's transport ports (or ICMP type) in the
	// policy; ctRead: it asked a non-empty connection table, whose keys
	// carry the ports. See classify's result.
	l4, ctRead bool
	// deps collects the ACL layers the walk passed (by value: a pointer
	// kept here would move the caller's walkDeps to the heap, as with v).
	deps walkDeps
	// hint: the first route lookup, done ahead (nil: none).
	hint *routeHint
}

func (w *walk) drop(r policy.Reason) {
	w.v.action, w.v.reason = policy.Drop, r
}

func (w *walk) toHost(r policy.Reason) {
	w.v.action, w.v.reason = policy.ToHost, r
}

// classify walks the layers for key k (arriving on uplink when k.InPort is
// the uplink) and fills v. ttl is only used for the routed-TTL check (the
// flow itself does not depend on it; pass 64 to classify a flow).
//
// It reports whether v holds for every key that differs from k only in
// L4Src and L4Dst (with a TTL above 1 and the same connection table): the
// walk read neither the ports nor the connection table, and v opens, uses
// and names no tracked connection (their keys carry the ports).
func (c *compiled) classify(k *hal.FlowKey, uplink hal.PortID, ttl uint8, ct *conntrack, tr *tracer, v *verdict) (anyPorts bool) {
	return c.classifyHinted(k, uplink, ttl, ct, tr, v, nil)
}

// routeHint is the route a batch looked up ahead of a walk (HandleBatch's
// prefetch stage) for the walk's first route lookup: the route of dst in
// tenant t of compiled state c.
type routeHint struct {
	c   *compiled
	t   *tenantInfo
	dst netip.Addr
	r   *routeInfo
}

// classifyHinted is classify with the first route lookup of the walk
// already done, when hint (which may be nil) is for the same state,
// tenant and destination.
func (c *compiled) classifyHinted(k *hal.FlowKey, uplink hal.PortID, ttl uint8, ct *conntrack, tr *tracer, v *verdict, hint *routeHint) (anyPorts bool) {
	return c.classifyDeps(k, uplink, ttl, ct, tr, v, hint, nil)
}

// walkDeps is what a walk's verdict depends on besides the policy and the
// key's fields other than its ports: the ACL layers it passed, as
// connection keys with their ports zeroed (walkmemo.go).
type walkDeps struct {
	layers [2]connKey
	n      int
	// portFree: the verdict holds for every key that differs from k only
	// in its ports, as long as no connection is tracked at any of the
	// layers between the same endpoints: the walk read no port in the
	// policy, found no connection established, opened none, and was not
	// denied (a deny names its packet, ports included). Set by classifyDeps.
	portFree bool
}

// classifyDeps is classifyHinted that also fills deps, when not nil.
func (c *compiled) classifyDeps(k *hal.FlowKey, uplink hal.PortID, ttl uint8, ct *conntrack, tr *tracer, v *verdict, hint *routeHint, deps *walkDeps) (anyPorts bool) {
	w := walk{c: c, ct: ct, tr: tr, p: packetOf(k, ttl), ttl: ttl, hint: hint}
	w.classify(k, uplink)
	*v = w.v
	free := !w.l4 && w.v.nrec == 0 && w.v.nused == 0 && !w.v.hasDenied
	if deps != nil {
		*deps = w.deps
		deps.portFree = free && deps.n <= len(deps.layers)
	}
	return free && !w.ctRead
}

func (w *walk) classify(k *hal.FlowKey, uplink hal.PortID) {
	c, tr := w.c, w.tr
	if !c.hostKnown {
		if tr != nil {
			tr.step("host %q is not in the policy", c.host)
		}
		w.drop(policy.ReasonUnknownHost)
		return
	}
	if k.InPort == uplink {
		w.inbound(k)
		return
	}
	vm := c.vmOnPort(k.InPort)
	if vm == nil {
		if tr != nil {
			tr.step("in-port %d is not the vport of any VM", k.InPort)
		}
		w.drop(policy.ReasonUnknownPort)
		return
	}
	w.outbound(vm)
}

func (w *walk) checkL3() bool {
	p := &w.p
	switch p.EtherType {
	case policy.EtherTypeARP:
		if w.tr != nil {
			w.tr.step("ARP: answered by the host from the mappings")
		}
		w.toHost(policy.ReasonAddressResolution)
		return false
	case policy.EtherTypeIPv4:
		if !p.Src.Is4() || !p.Dst.Is4() {
			w.drop(policy.ReasonMalformed)
			return false
		}
	case policy.EtherTypeIPv6:
		if !p.Src.Is6() || !p.Dst.Is6() || p.Src.Is4In6() || p.Dst.Is4In6() {
			w.drop(policy.ReasonMalformed)
			return false
		}
		if p.Protocol == policy.ProtoICMPv6 {
			w.l4 = true // the ICMP type lives in the key's L4Src
		}
		if p.Protocol == policy.ProtoICMPv6 && p.ICMPType >= 133 && p.ICMPType <= 137 {
			if w.tr != nil {
				w.tr.step("ICMPv6 neighbor discovery type %d: answered by the host", p.ICMPType)
			}
			w.toHost(policy.ReasonAddressResolution)
			return false
		}
	default:
		if w.tr != nil {
			w.tr.step("EtherType %#04x is not IPv4, IPv6 or ARP", p.EtherType)
		}
		w.drop(policy.ReasonUnsupportedEtherType)
		return false
	}
	return true
}

func (w *walk) outbound(src *vmInfo) {
	c, v := w.c, &w.v
	v.srcVM, v.srcName = src.id, src.name
	v.tenant = src.tenant.id
	if !src.local {
		if w.tr != nil {
			w.tr.step("VM %s does not run on %s now", src.name, c.host)
		}
		w.drop(policy.ReasonUnknownPort)
		return
	}
	if w.tr != nil {
		w.tr.step("from VM %s (tenant %s, vnet %s) on %s", src.name, src.tenant.name, src.vnet.name, c.host)
	}
	if !w.checkL3() {
		return
	}
	p := &w.p
	if hal.MAC(p.SrcMAC) != src.mac {
		if w.tr != nil {
			w.tr.step("source MAC %s is not VM %s's %s", hal.MAC(p.SrcMAC), src.name, src.mac)
		}
		w.drop(policy.ReasonSpoofedSource)
		return
	}
	if !src.owns(p.Src) {
		if w.tr != nil {
			w.tr.step("source address %s is not one of VM %s's addresses", p.Src, src.name)
		}
		w.drop(policy.ReasonSpoofedSource)
		return
	}
	if !w.aclLayer(src, policy.Out, p) {
		w.drop(policy.ReasonACLDeny)
		return
	}
	r, target, via := w.resolve(src.tenant, p.Dst)
	if r == nil {
		return
	}
	switch r.hop.Kind {
	case policy.NextHopDrop:
		w.drop(policy.ReasonRouteDrop)
	case policy.NextHopHost:
		w.toHost(policy.ReasonRouteToHost)
	case policy.NextHopGateway:
		w.toGateway(src, r)
	case policy.NextHopVNET:
		w.toVNET(r.vnet, target, via || r.vnet != src.vnet)
	default:
		w.drop(policy.ReasonNoRoute)
	}
}

// resolve routes dst in the tenant's routing domain, following next-hop
// addresses, to the first route whose next hop is not an address. It
// returns nil (with the drop verdict set) when there is none.
func (w *walk) resolve(t *tenantInfo, dst netip.Addr) (r *routeInfo, target netip.Addr, via bool) {
	target = dst
	for depth := 0; ; depth++ {
		if depth > maxViaDepth {
			if w.tr != nil {
				w.tr.step("routing domain of %s: gave up after %d next-hop addresses", t.name, maxViaDepth)
			}
			w.drop(policy.ReasonRouteLoop)
			return nil, target, via
		}
		if h := w.hint; depth == 0 && h != nil && h.c == w.c && h.t == t && h.dst == target {
			r = h.r
		} else {
			r = t.lpm(target)
		}
		if r == nil {
			if w.tr != nil {
				w.tr.step("routing domain of %s: no route covers %s", t.name, target)
			}
			w.drop(policy.ReasonNoRoute)
			return nil, target, via
		}
		if w.tr != nil {
			w.tr.step("routing domain of %s: route %s (%s) -> %s", t.name, r.prefix, r.origin, r.hop)
		}
		if r.hop.Kind != policy.NextHopAddress {
			return r, target, via
		}
		via = true
		target = r.hop.Via
	}
}

func (w *walk) routedRewrite() bool {
	w.v.routed = true
	if w.ttl <= 1 {
		if w.tr != nil {
			w.tr.step("routed packet with TTL %d", w.ttl)
		}
		w.drop(policy.ReasonTTLExpired)
		return false
	}
	w.v.rw.SrcMAC = policy.MAC(w.c.routerMAC)
	w.v.rw.DecTTL = true
	return true
}

func (w *walk) toVNET(dv *vnetInfo, target netip.Addr, routed bool) {
	c, v := w.c, &w.v
	vi, mac, host, pa, ok := c.st.LookupPlace(dv.vni, target)
	if !ok {
		if w.tr != nil {
			w.tr.step("VNET mapping: vnet %s (vni %d) has no mapping for %s", dv.name, dv.vni, target)
		}
		w.drop(policy.ReasonUnknownDestination)
		return
	}
	if w.tr != nil {
		m, _, _ := c.st.LookupVM(dv.vni, target)
		w.tr.step("VNET mapping: vni %d %s -> VM %s mac %s on %s (%s, generation %d)", m.VNI, m.CA, m.VM, m.MAC, m.Host, m.PA, m.Generation)
	}
	dst := c.vmAt[vi]
	v.dstVM, v.dstName, v.dst = dst.id, dst.name, dst
	v.scopeVM = dst.name
	if routed && !w.routedRewrite() {
		return
	}
	v.rw.DstMAC = mac
	if host == c.host {
		q := v.rw.Apply(w.p)
		if !w.aclLayer(dst, policy.In, &q) {
			w.drop(policy.ReasonACLDeny)
			return
		}
		if dst.port == 0 {
			// The policy places the VM here but this switch was given no
			// vport for it: nothing can be delivered.
			if w.tr != nil {
				w.tr.step("local VM %s has no vport on this switch", dst.name)
			}
			w.drop(policy.ReasonUnknownPort)
			return
		}
		v.action, v.port = policy.Deliver, dst.port
		if w.tr != nil {
			w.tr.step("deliver to local VM %s on port %d", dst.name, dst.port)
		}
		return
	}
	v.action, v.pa, v.vni, v.encap, v.src = policy.Encap, pa, dv.vni, dv.encap, c.pa
	if w.tr != nil {
		w.tr.step("encapsulate in %s with vni %d toward %s (%s)", dv.encap, dv.vni, host, pa)
	}
}

func (w *walk) toGateway(src *vmInfo, r *routeInfo) {
	v := &w.v
	v.gateway = true
	if !w.routedRewrite() {
		return
	}
	if r.hop.NAT.IsValid() {
		v.rw.Dst = translate(w.p.Dst, r.prefix, r.hop.NAT)
		if w.tr != nil {
			w.tr.step("gateway/NAT: rule %s: destination %s -> %s", r.rule, w.p.Dst, v.rw.Dst)
		}
	}
	v.action, v.pa, v.vni, v.encap, v.src = policy.ToGateway, r.gw.pa, src.vnet.vni, src.vnet.encap, w.c.pa
	if w.tr != nil {
		w.tr.step("gateway/NAT: encapsulate in %s with vni %d (vnet %s) toward gateway %s (%s)", src.vnet.encap, src.vnet.vni, src.vnet.name, r.gw.name, r.gw.pa)
	}
}

func (w *walk) inbound(k *hal.FlowKey) {
	c, v := w.c, &w.v
	v.decap = k.TunKind != hal.EncapNone
	outer := hal.AddrFrom16(k.TunSrc)
	if w.tr != nil {
		w.tr.step("from uplink: %s vni %d, outer source %s, on %s", k.TunKind, k.VNI, outer, c.host)
	}
	if !v.decap {
		if w.tr != nil {
			w.tr.step("frame from the uplink is not encapsulated")
		}
		w.drop(policy.ReasonUnknownVNI)
		return
	}
	// The tunnel endpoint comes first: a frame for another host's PA, the
	// underlay's broadcast or a multicast group is not this host's to
	// decapsulate, whatever it carries.
	if dst := hal.AddrFrom16(k.TunDst); !c.terminates(dst) {
		if w.tr != nil {
			w.tr.step("outer destination %s is not this host's provider address (%s): not for this tunnel endpoint", dst, c.endpointString())
		}
		v.notLocal = true
		w.drop(policy.ReasonNone)
		return
	}
	dv := c.vnetByVNI[k.VNI]
	if dv == nil {
		w.drop(policy.ReasonUnknownVNI)
		return
	}
	v.tenant = dv.tenant.id
	if w.tr != nil {
		w.tr.step("vni %d is vnet %s of tenant %s", k.VNI, dv.name, dv.tenant.name)
	}
	if k.TunKind != dv.encap {
		// A VNET is carried in one encapsulation only.
		if w.tr != nil {
			w.tr.step("vnet %s is carried in %s, not %s", dv.name, dv.encap, k.TunKind)
		}
		w.drop(policy.ReasonEncapMismatch)
		return
	}
	if !w.checkL3() {
		return
	}
	p := w.p
	// The receiver routes the inner destination as the sender did, so a
	// route through an appliance cannot be bypassed.
	t := dv.tenant
	r, target, _ := w.resolve(t, p.Dst)
	if r == nil {
		return
	}
	if r.hop.Kind != policy.NextHopVNET || r.vnet != dv {
		if w.tr != nil {
			w.tr.step("tenant %s routes %s to %s, not into vnet %s", t.name, p.Dst, r.hop, dv.name)
		}
		w.drop(policy.ReasonUnknownDestination)
		return
	}
	vi, mac, host, _, ok := c.st.LookupPlace(dv.vni, target)
	if !ok {
		if w.tr != nil {
			w.tr.step("VNET mapping: vnet %s has no mapping for %s", dv.name, target)
		}
		w.drop(policy.ReasonUnknownDestination)
		return
	}
	dst := c.vmAt[vi]
	v.dstVM, v.dstName, v.dst = dst.id, dst.name, dst
	v.scopeVM = dst.name
	if host != c.host {
		if w.tr != nil {
			w.tr.step("VM %s (%s) runs on %s, not on %s", dst.name, p.Dst, host, c.host)
		}
		w.drop(policy.ReasonNotLocal)
		return
	}
	if gw := c.gwByPA[outer]; gw != nil && (gw.tenant == "" || gw.tenant == t.name) {
		v.gateway = true
		if w.tr != nil {
			w.tr.step("outer source is gateway %s", gw.name)
		}
		for _, gr := range t.gwRules {
			if gr.Gateway == gw.name && gr.NAT.IsValid() && gr.NAT.Contains(p.Src) {
				v.rw.Src = translate(p.Src, gr.NAT, gr.Prefix)
				if w.tr != nil {
					w.tr.step("gateway/NAT: rule %s: source %s -> %s", gr.Name, p.Src, v.rw.Src)
				}
				break
			}
		}
	} else if !w.senderMatches(t, p.Src, outer) {
		if w.tr != nil {
			w.tr.step("outer source %s does not host tenant %s's address %s", outer, t.name, p.Src)
		}
		w.drop(policy.ReasonTenantIsolation)
		return
	}
	v.rw.DstMAC = mac
	q := v.rw.Apply(p)
	if !w.aclLayer(dst, policy.In, &q) {
		w.drop(policy.ReasonACLDeny)
		return
	}
	if dst.port == 0 {
		w.drop(policy.ReasonUnknownPort)
		return
	}
	v.action, v.port = policy.Deliver, dst.port
	if w.tr != nil {
		w.tr.step("deliver to local VM %s on port %d", dst.name, dst.port)
	}
}

func (w *walk) senderMatches(t *tenantInfo, src, outer netip.Addr) bool {
	r := t.lpm(src)
	if r == nil || r.hop.Kind != policy.NextHopVNET {
		return false
	}
	vi, _, host, pa, ok := w.c.st.LookupPlace(r.vnet.vni, src)
	if !ok || pa != outer {
		return false
	}
	sender := w.c.vmAt[vi]
	w.v.srcVM, w.v.srcName = sender.id, sender.name
	if w.tr != nil {
		w.tr.step("sender %s is VM %s on %s", src, sender.name, host)
	}
	return true
}

// aclLayer runs the ACLs of vm in direction dir on p, as the policy
// defines them: an established connection passes; otherwise the first
// matching ACL decides and no match allows.
func (w *walk) aclLayer(vm *vmInfo, dir policy.Direction, p *policy.Packet) bool {
	v := &w.v
	ck := connKeyOf(vm.id, dir, p)
	if d := &w.deps; d.n < len(d.layers) {
		d.layers[d.n] = ck
		d.layers[d.n].srcPort, d.layers[d.n].dstPort = 0, 0
	}
	w.deps.n++
	if w.ct != nil && len(w.ct.conns) > 0 {
		w.ctRead = true
	}
	if w.ct != nil && len(w.ct.conns) > 0 && w.ct.established(ck) {
		if v.nused < len(v.used) {
			v.used[v.nused] = ck
			v.nused++
		}
		if w.tr != nil {
			w.tr.step("acl %s %s: established connection, allowed", vm.name, dir)
		}
		return true
	}
	a, l4 := vm.tenant.firstACL(vm, dir, p)
	w.l4 = w.l4 || l4
	if a != nil {
		if w.tr != nil {
			act := "deny"
			if a.allow {
				act = "allow"
			}
			st := ""
			if a.stateful {
				st = " stateful"
			}
			w.tr.step("acl %s %s: %s (priority %d) %s%s", vm.name, dir, a.id, a.priority, act, st)
		}
		if !a.allow {
			v.denied, v.hasDenied = ck, true
			return false
		}
		if a.stateful && v.nrec < len(v.records) {
			rp := p.Reverse()
			v.records[v.nrec] = connKeyOf(vm.id, dir.Opposite(), &rp)
			v.nrec++
		}
		return true
	}
	if w.tr != nil {
		w.tr.step("acl %s %s: no ACL matches, allowed by default", vm.name, dir)
	}
	return true
}

// terminates reports whether this host terminates tunnels for outer
// destination dst: whether dst is one of the host's provider addresses.
// Multicast groups and the underlay's broadcast never are: the policy
// gives a host unicast PAs only.
func (c *compiled) terminates(dst netip.Addr) bool {
	for _, a := range c.endpoint {
		if a == dst {
			return true
		}
	}
	return false
}

func (c *compiled) endpointString() string {
	if len(c.endpoint) == 0 {
		return "none: the host is not in the policy"
	}
	s := c.endpoint[0].String()
	for _, a := range c.endpoint[1:] {
		s += ", " + a.String()
	}
	return s
}

// notLocal reports whether a tunnelled frame that arrived on the uplink is
// for another tunnel endpoint: its outer destination address is not this
// host's PA, or its outer destination MAC is not the uplink's (a frame the
// underlay flooded, or one a promiscuous uplink picked up). The slow path
// drops such a frame before it looks for a flow (DropNotLocal): the walk
// itself refuses the address (walk.inbound), and the MAC, which a flow key
// does not carry, is checked here on the frame.
func (s *Switch) notLocal(frame []byte, k *hal.FlowKey) bool {
	if k.TunKind == hal.EncapNone || k.InPort != s.cfg.Uplink {
		return false
	}
	if !s.cur.terminates(hal.AddrFrom16(k.TunDst)) {
		return true
	}
	return len(frame) < 6 || hal.MAC(frame[0:6]) != s.uplinkMAC
}
