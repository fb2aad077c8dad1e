// Port-wildcard flows: OVS's megaflow idea on the NIC, for the one field
// that varies most between connections.

package vswitch

import (
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// A new flow whose verdict does not depend on its transport ports (the
// walk read neither the ports nor the connection table, and the verdict
// opens, uses and names no tracked connection: classify's result, the walk
// memo's condition) is offloaded as a port-wildcard flow: its rule matches
// what hal.Exact matches except L4Src and L4Dst, at prioWildcard, below
// exact unified flows. Every later connection between the same endpoints
// then takes the rule on the NIC and never reaches the host, as OVS's
// megaflows spare it the upcall. Flows a stateful ACL decides (they open
// or use a tracked connection), denied flows and flows walked while the
// connection table was not empty stay exact: every new connection of a
// stateful ACL is still walked. Config.DisablePortWildcards turns them off.
//
// A port-wildcard flow is an ordinary unified flow in every other respect:
// it sits in the flow table under the key of the packet that created it,
// has a scope, a generation and a shadow rule (when the shadow's verdict is
// port-independent too), is revalidated by updates, aged on its own rule's
// counters and reconciled like the others. s.wilds indexes it by its key
// with the ports zeroed: a packet of another connection that reaches the
// host while the rule is being installed (or that the NIC missed) is
// handled by the same flow instead of making an exact one. When a
// revalidation finds its verdict no longer port-independent, the flow is
// removed (its rule with it) and each connection's next packet makes an
// exact flow.

// prioWildcard is below prioExact (an exact unified flow for a connection
// overrides the wildcard) and above prioProactive (the wildcard's walk
// was done for the very packets it matches).
const prioWildcard = 0x6000

func prioOf(wild bool) uint16 {
	if wild {
		return prioWildcard
	}
	return prioExact
}

// wildKey is k with its transport ports zeroed: the key of s.wilds.
func wildKey(k *hal.FlowKey) hal.FlowKey {
	w := *k
	w.L4Src, w.L4Dst = 0, 0
	return w
}

// wildcards reports whether new flows may be port-wildcard flows: enabled,
// offloading, and a NIC that resolves overlapping rules by priority (so
// that exact flows win over the wildcard). Whether the NIC takes the
// particular match is Validate's answer.
func (s *Switch) wildcards() bool {
	return !s.cfg.DisablePortWildcards && s.caps.Priorities && s.offloading()
}

// wildVerdict reports whether v, for key k, with anyPorts as the walk
// reported it, may be a port-wildcard flow's: port-independent, for a
// protocol with ports, and a verdict that can live on the NIC.
func wildVerdict(k *hal.FlowKey, anyPorts bool, v *verdict) bool {
	if !anyPorts || !hasPorts(k.Proto) || v.notLocal || v.nrec != 0 || v.nused != 0 || v.hasDenied {
		return false
	}
	switch v.action {
	case policy.Deliver, policy.Encap, policy.ToGateway, policy.Drop:
		return true
	}
	return false
}

// coveringWild returns the live port-wildcard flow whose rule matches k and
// whose live actions are v's, or nil.
func (s *Switch) coveringWild(k *hal.FlowKey, v *verdict) *flow {
	if len(s.wilds) == 0 {
		return nil
	}
	w := s.wilds[wildKey(k)]
	if w == nil || w.h.dead || w.current().key != actKeyOf(v) {
		return nil
	}
	return w
}

// setWild makes f a port-wildcard flow and indexes it.
func (s *Switch) setWild(f *flow) {
	f.wild = true
	s.wilds[wildKey(&f.key)] = f
	s.stats.wildFlows++
}

// unwild makes f an exact flow again (before its rule is placed) or
// forgets it (when it is removed).
func (s *Switch) unwild(f *flow) {
	if !f.wild {
		return
	}
	f.wild = false
	wk := wildKey(&f.key)
	if s.wilds[wk] == f {
		delete(s.wilds, wk)
	}
}
