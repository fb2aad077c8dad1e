package vswitch

import (
	"context"
	"net/netip"
	"reflect"
	"slices"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// Sealed routes: how a VM's sealed frames reach their destination without
// the host learning it.
//
// A VM that seals its destinations (securechan, sealed addresses) sends
// frames whose destination MAC and IP only the NIC can open. The host
// cannot walk the policy on a destination it never sees, and the NIC does
// not walk the policy at all. So the host walks it ahead of traffic, for
// every destination the VM could name, and pushes the results to the NIC
// (hal.SealedAddresses.SetSealedRoutes): per vport, (source MAC, source
// address, destination address) → the actions the walk decided. The NIC
// opens a sealed frame, looks the opened destination up in that table and
// forwards on its own; a destination without a route is dropped and
// counted on the NIC. Nothing about a sealed frame ever comes back to the
// host: no exception, no per-route counter, no flow. The host knows the
// set of destinations a VM may reach (it is its own policy); which one the
// VM talks to stays on the NIC.
//
// A route is pushed only where the walk's verdict holds for every packet
// of the pair: the source VM has a vport here, sealing keys in the policy
// and no outbound ACL; the destination is a VM of the same tenant (any of
// its VNETs the tenant's routes reach, local or remote, IPv4 or IPv6); a
// local destination has no inbound ACL (a remote one's host applies its
// own on arrival, on a frame that is no longer sealed: the destination's
// host sees its own VM's traffic); and the walk read neither ports nor
// connections. Deliver, Encap and Drop verdicts become routes; everything
// else (the gateway, the host) is left out, so such frames are dropped on
// the NIC. The routes are recomputed with the per-destination rules
// (syncProactive) on every policy change.

// sealState is what the switch pushed.
type sealState struct {
	pushed  map[hal.PortID][]hal.SealedRoute
	refused uint64 // SetSealedRoutes calls the NIC refused
	failing bool   // the last push failed (logged once until it works)
}

// sealedRoutesWanted computes the sealed routes of every local VM that
// seals, by vport.
func (s *Switch) sealedRoutesWanted() map[hal.PortID][]hal.SealedRoute {
	c := s.cur
	want := map[hal.PortID][]hal.SealedRoute{}
	for _, src := range c.vms {
		if !src.local || src.port == 0 || src.tenant == nil || hasOutACL(src) {
			continue
		}
		if pv, ok := c.st.VM(src.name); !ok || len(pv.SealKeys) == 0 {
			continue
		}
		var routes []hal.SealedRoute
		for _, dst := range c.vms {
			if dst == src || dst.tenant != src.tenant {
				continue
			}
			if dst.local && hasACL(dst, policy.In) {
				continue
			}
			for _, dca := range dst.cas {
				for _, sca := range src.cas {
					if sca.Is4() != dca.Is4() {
						continue
					}
					if r, ok := s.sealedRoute(c, src, dst, sca, dca); ok {
						routes = append(routes, r)
					}
				}
			}
		}
		if len(routes) > 0 {
			want[src.port] = routes
		}
	}
	return want
}

// sealedRoute walks the policy for one (source, destination) pair as a
// packet with no particular transport would be, and turns a verdict that
// holds for every packet of the pair into a route.
func (s *Switch) sealedRoute(c *compiled, src, dst *vmInfo, sca, dca netip.Addr) (hal.SealedRoute, bool) {
	k := hal.FlowKey{InPort: src.port, EthSrc: src.mac, EthDst: dst.mac, IPSrc: sca.As16(), IPDst: dca.As16(),
		Proto: hal.ProtoUDP, L4Src: 1, L4Dst: 1}
	if dst.vnet != src.vnet {
		k.EthDst = c.routerMAC
	}
	k.EthType = hal.EtherTypeIPv6
	if sca.Is4() {
		k.EthType = hal.EtherTypeIPv4
	}
	var v verdict
	if !c.classify(&k, s.cfg.Uplink, 64, s.ct, nil, &v) {
		return hal.SealedRoute{}, false
	}
	switch v.action {
	case policy.Deliver, policy.Encap, policy.Drop:
	default:
		return hal.SealedRoute{}, false
	}
	r := hal.SealedRoute{SrcMAC: src.mac, Src: sca, Dst: dca, Actions: s.routeActions(&v)}
	if v.action != policy.Drop {
		r.Reply = s.sealedReply(c, src, dst, sca, dca)
	}
	return r, true
}

// routeActions are the actions of a verdict without a counter: a per-route
// counter's movement would tell the host the secret.
func (s *Switch) routeActions(v *verdict) []hal.Action {
	a := s.buildActions(actKeyOf(v))
	return slices.DeleteFunc(slices.Clone(a.acts), func(x hal.Action) bool { return x.Kind == hal.ActionCount })
}

// sealedReply walks the reply direction (dst's frames back to src) as the
// route's walk does, and returns where replies arrive and what the NIC
// does with them, or nil when that verdict would not hold for every reply
// (then replies take the ordinary way, through the host).
func (s *Switch) sealedReply(c *compiled, src, dst *vmInfo, sca, dca netip.Addr) *hal.SealedReply {
	if hasACL(src, policy.In) {
		return nil
	}
	k := hal.FlowKey{EthSrc: dst.mac, EthDst: src.mac, IPSrc: dca.As16(), IPDst: sca.As16(), Proto: hal.ProtoUDP, L4Src: 1, L4Dst: 1}
	k.EthType = hal.EtherTypeIPv6
	if sca.Is4() {
		k.EthType = hal.EtherTypeIPv4
	}
	var rp hal.SealedReply
	routed := dst.vnet != src.vnet
	if routed {
		k.EthDst = c.routerMAC
	}
	switch {
	case dst.local && dst.port != 0:
		if hasOutACL(dst) {
			return nil
		}
		k.InPort = dst.port
		rp.InPort, rp.SrcMAC = dst.port, dst.mac
	case !dst.local:
		m, ok := c.st.Lookup(dst.vnet.vni, dca)
		if !ok || !m.PA.IsValid() || !c.pa.IsValid() {
			return nil
		}
		// The destination's host encapsulates in the receiving VNET's
		// VNI, after its router when the VNETs differ.
		vn := src.vnet
		if routed {
			k.EthSrc = c.routerMAC
		}
		k.InPort, k.TunKind, k.VNI, k.TunSrc, k.TunDst = s.cfg.Uplink, vn.encap, vn.vni, m.PA.As16(), c.pa.As16()
		rp.InPort, rp.TunKind, rp.TunSrc, rp.VNI = s.cfg.Uplink, vn.encap, m.PA, vn.vni
	default:
		return nil
	}
	var v verdict
	if !c.classify(&k, s.cfg.Uplink, 64, s.ct, nil, &v) || v.action != policy.Deliver || v.port != src.port {
		return nil
	}
	rp.Actions = s.routeActions(&v)
	return &rp
}

func hasACL(vm *vmInfo, dir policy.Direction) bool {
	for i := range vm.tenant.acls[dir] {
		if a := &vm.tenant.acls[dir][i]; a.vnet == "" || a.vnet == vm.vnet.name {
			return true
		}
	}
	return false
}

// syncSealed pushes the sealed routes that changed to a NIC that opens
// sealed frames. On a NIC without the crypto capability there is nothing
// to push: sealed frames are dropped (fail closed) wherever they arrive.
func (s *Switch) syncSealed() {
	if !s.caps.Crypto {
		return
	}
	sa, ok := s.nic.(hal.SealedAddresses)
	if !ok {
		if !s.seal.failing {
			s.log.Warn("the NIC reports crypto but has no hal.SealedAddresses (a decorator that hides it?): sealed frames are dropped on the NIC")
		}
		s.seal.failing = true
		return
	}
	want := s.sealedRoutesWanted()
	if s.seal.pushed == nil {
		s.seal.pushed = map[hal.PortID][]hal.SealedRoute{}
	}
	ctx := context.Background()
	fail := func(p hal.PortID, n int, err error) {
		s.seal.refused++
		if !s.seal.failing {
			// The error, not the routes: a log is something the host
			// keeps, and it names no destination.
			s.log.Warn("the NIC refused sealed routes: sealed frames of this vport are dropped on the NIC", "port", p, "routes", n, "err", err)
		}
		s.seal.failing = true
	}
	okAll := true
	for p, rs := range want {
		if sameRoutes(s.seal.pushed[p], rs) {
			continue
		}
		if err := sa.SetSealedRoutes(ctx, p, rs); err != nil {
			fail(p, len(rs), err)
			okAll = false
			continue
		}
		s.seal.pushed[p] = rs
	}
	for p := range s.seal.pushed {
		if _, ok := want[p]; ok {
			continue
		}
		if err := sa.SetSealedRoutes(ctx, p, nil); err != nil {
			fail(p, 0, err)
			okAll = false
			continue
		}
		delete(s.seal.pushed, p)
	}
	if okAll {
		s.seal.failing = false
	}
}

func sameRoutes(a, b []hal.SealedRoute) bool {
	return slices.EqualFunc(a, b, func(x, y hal.SealedRoute) bool {
		return x.SrcMAC == y.SrcMAC && x.Src == y.Src && x.Dst == y.Dst && reflect.DeepEqual(x.Actions, y.Actions)
	})
}

// sealedRouteCount is how many sealed routes the switch has pushed.
func (s *Switch) sealedRouteCount() int {
	n := 0
	for _, rs := range s.seal.pushed {
		n += len(rs)
	}
	return n
}
