package vswitch

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// TestWildcardSecondConnection: the first connection between two VMs makes
// a port-wildcard flow on both hosts; a second connection between the same
// VMs is not a slow-path exception on either, uses that flow's rule (its
// counters), and Explain says which rule covers it.
func TestWildcardSecondConnection(t *testing.T) {
	for _, mk := range []func(src, dst policy.MAC, s, d netip.Addr, sp, dp uint16) policy.Packet{udp, tcp} {
		tp := newTopo(t, smallPolicy(t, nil), topoOpts{})
		h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
		first := mk(macVA1, macVA2, caVA1, caVA2, 40000, 80)
		deliveredTo(t, tp.sendVM("va1", first), h2, "va2")
		s1, s2 := h1.sw.Stats(), h2.sw.Stats()
		if s1.Packets != 1 || s1.WildcardFlows != 1 || s2.Packets != 1 || s2.WildcardFlows != 1 {
			t.Fatalf("after the first connection:\nh1 %s\nh2 %s", s1, s2)
		}
		for i := 0; i < 5; i++ {
			deliveredTo(t, tp.sendVM("va1", mk(macVA1, macVA2, caVA1, caVA2, uint16(40001+i), 80)), h2, "va2")
		}
		deliveredTo(t, tp.sendVM("va1", mk(macVA1, macVA2, caVA1, caVA2, 50000, 443)), h2, "va2")
		if s := h1.sw.Stats(); s.Packets != 1 || s.FlowsCreated != 1 {
			t.Fatalf("new connections reached h1's host:\n%s", s)
		}
		if s := h2.sw.Stats(); s.Packets != 1 || s.FlowsCreated != 1 {
			t.Fatalf("new connections reached h2's host:\n%s", s)
		}
		if err := h1.sw.Maintain(context.Background()); err != nil {
			t.Fatal(err)
		}
		fs := h1.sw.Flows()
		if len(fs) != 1 || !fs[0].Wildcard || fs[0].Packets != 7 || fs[0].Path != PathNIC ||
			fs[0].Match.Mask.L4Src != 0 || fs[0].Match.Mask.L4Dst != 0 || fs[0].Match.Mask.IPDst != hal.Exact(&hal.FlowKey{EthType: hal.EtherTypeIPv4}).Mask.IPDst {
			t.Fatalf("flows: %+v", fs)
		}
		// The rule on the NIC is the wildcard, below exact flows.
		var rules []hal.Rule
		h1.soft.Dump(context.Background(), func(ri *hal.RuleInfo) error {
			rules = append(rules, ri.Rule)
			return nil
		})
		if len(rules) != 1 || rules[0].Priority != prioWildcard || rules[0].Priority >= prioExact || rules[0].ID != fs[0].ID {
			t.Fatalf("rules on h1: %v", rules)
		}
		ex := h1.sw.Explain(Description{VM: "va1", Packet: mk(macVA1, macVA2, caVA1, caVA2, 50000, 443)})
		if ex.Where != PathNIC || ex.Flow == nil || ex.Flow.ID != fs[0].ID ||
			!strings.Contains(ex.String(), "covered by the port-wildcard rule") || !strings.Contains(ex.String(), "7 packets") {
			t.Fatalf("explain of another connection:\n%s", ex)
		}
		ex = h1.sw.Explain(Description{VM: "va1", Packet: first})
		if !strings.Contains(ex.Detail, "offloaded as the port-wildcard rule") {
			t.Fatalf("explain of the first connection:\n%s", ex)
		}
	}
}

// TestWildcardDisabled: with Config.DisablePortWildcards every connection
// is its own exact flow, as before.
func TestWildcardDisabled(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{exact: true})
	h1 := tp.byNm["h1"]
	for i := 0; i < 3; i++ {
		deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, uint16(100+i), 20)), tp.byNm["h2"], "va2")
	}
	if s := h1.sw.Stats(); s.Packets != 3 || s.FlowsNIC != 3 || s.WildcardFlows != 0 {
		t.Fatalf("exact flows:\n%s", s)
	}
}

// TestWildcardStatefulACLWalked: connections a stateful ACL allows are each
// walked (each opens its own tracked connection), never covered by a
// wildcard; and while connections are tracked, no wildcard is made from a
// walk that passed an ACL layer.
func TestWildcardStatefulACLWalked(t *testing.T) {
	st := smallPolicy(t, func(b *policy.Builder) {
		b.AddACL(policy.ACL{Tenant: "t", ID: "in-va2", Priority: 10, Direction: policy.In, Action: policy.Allow, Stateful: true,
			Dst: []netip.Prefix{netip.PrefixFrom(caVA2, 32)}, Protocol: policy.ProtoTCP})
	})
	tp := newTopo(t, st, topoOpts{})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	const n = 6
	for i := 0; i < n; i++ {
		deliveredTo(t, tp.sendVM("va1", tcp(macVA1, macVA2, caVA1, caVA2, uint16(40000+i), 80)), h2, "va2")
	}
	// h2 decides va2's inbound stateful ACL: every connection is walked
	// there and opens its own connection.
	s2 := h2.sw.Stats()
	if s2.Packets != n || s2.ConnsOpened != n || s2.Conns != n || s2.WildcardFlows != 0 {
		t.Fatalf("h2, the stateful ACL's host:\n%s", s2)
	}
	for _, f := range h2.sw.Flows() {
		if f.Wildcard {
			t.Fatalf("a stateful connection's flow is a wildcard: %+v", f)
		}
	}
	// h1 has no ACL on the path: one wildcard carries them all there.
	if s1 := h1.sw.Stats(); s1.Packets != 1 || s1.WildcardFlows != 1 {
		t.Fatalf("h1:\n%s", s1)
	}
	// The replies ride on the connections, each its own exact flow.
	for i := 0; i < n; i++ {
		deliveredTo(t, tp.sendVM("va2", tcp(macVA2, macVA1, caVA2, caVA1, 80, uint16(40000+i))), h1, "va1")
	}
	if s := h2.sw.Stats(); s.WildcardFlows != 0 {
		t.Fatalf("h2 after the replies:\n%s", s)
	}
}

// TestWildcardUpdate: an update that makes the verdict depend on the ports
// removes the wildcard (no connection keeps the old verdict); each
// connection then gets the new policy's verdict for its ports. An update
// that changes the actions without touching the ports reprograms the
// wildcard in place.
func TestWildcardUpdate(t *testing.T) {
	st := smallPolicy(t, nil)
	tp := newTopo(t, st, topoOpts{})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, 1, 2)), h2, "va2")
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, 1, 3)), h2, "va2")
	if s := h1.sw.Stats(); s.WildcardFlows != 1 || s.Flows != 1 || s.FlowsNIC != 1 {
		t.Fatalf("before the update:\n%s", s)
	}
	b := st.Builder()
	b.AddACL(policy.ACL{Tenant: "t", ID: "no-2", Priority: 1, Direction: policy.Out, Action: policy.Deny, Protocol: policy.ProtoUDP,
		DstPorts: []policy.PortRange{{Lo: 2, Hi: 2}}})
	st2, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range tp.hosts {
		if err := h.sw.Update(context.Background(), st2); err != nil {
			t.Fatal(err)
		}
	}
	tp.st = st2
	s := h1.sw.Stats()
	if s.Flows != 0 || s.FlowsRemoved != 1 || countRules(h1) != 0 {
		t.Fatalf("after the update (%d rules):\n%s", countRules(h1), s)
	}
	if got := tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, 7, 2)); len(got) != 0 {
		t.Fatal("a connection to the denied port was delivered")
	}
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, 7, 3)), h2, "va2")
	for _, f := range h1.sw.Flows() {
		if f.Wildcard {
			t.Fatalf("a port-dependent verdict became a wildcard: %+v", f)
		}
	}
	// Tenant u's wildcard survives an update of tenant t.
	deliveredTo(t, tp.sendVM("u1", udp(macU1, macU2, caU1, caU2, 1, 2)), h2, "u2")
	id := wildID(t, h1)
	b = st2.Builder()
	b.AddACL(policy.ACL{Tenant: "t", ID: "no-4", Priority: 2, Direction: policy.Out, Action: policy.Deny, Protocol: policy.ProtoUDP,
		DstPorts: []policy.PortRange{{Lo: 4, Hi: 4}}})
	st3, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	if err := h1.sw.Update(context.Background(), st3); err != nil {
		t.Fatal(err)
	}
	if got := wildID(t, h1); got != id {
		t.Fatalf("tenant u's wildcard changed (rule %d, was %d)", got, id)
	}
	// h2 moves to another provider address: the update reprograms the
	// wildcard in place (one Modify, the same rule) toward it.
	pa2b := netip.MustParseAddr("198.18.0.22")
	st4 := smallPolicyPA(t, pa2b, nil)
	before := h1.sw.Stats().Reprogrammed
	if err := h1.sw.Update(context.Background(), st4); err != nil {
		t.Fatal(err)
	}
	if got := wildID(t, h1); got != id {
		t.Fatalf("the wildcard was not reprogrammed in place (rule %d, was %d)", got, id)
	}
	var encapTo netip.Addr
	h1.soft.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		for _, a := range ri.Rule.Actions {
			if a.Kind == hal.ActionEncap && ri.Rule.ID == id {
				encapTo = a.Encap.Dst
			}
		}
		return nil
	})
	if s := h1.sw.Stats(); s.Reprogrammed <= before || encapTo != pa2b {
		t.Fatalf("after h2's move the wildcard encapsulates to %v:\n%s", encapTo, s)
	}
}

func wildID(t *testing.T, h *testHost) hal.RuleID {
	t.Helper()
	for _, f := range h.sw.Flows() {
		if f.Wildcard && f.Path == PathNIC {
			return f.ID
		}
	}
	t.Fatalf("no wildcard on %s: %+v", h.name, h.sw.Flows())
	return 0
}

func countRules(h *testHost) int {
	n := 0
	h.soft.Dump(context.Background(), func(*hal.RuleInfo) error { n++; return nil })
	return n
}

// TestWildcardAging: the wildcard ages on its own rule's counters: new
// connections that take it keep it, and it goes (with its rule) once no
// connection between the endpoints sends for FlowIdle, however many
// connections were open.
func TestWildcardAging(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{flowIdle: 10 * time.Second})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, 1, 2)), h2, "va2")
	for i := 0; i < 3; i++ {
		tp.clock.Advance(8 * time.Second)
		deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, uint16(10+i), 2)), h2, "va2")
		if err := h1.sw.Maintain(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if s := h1.sw.Stats(); s.Flows != 1 || s.FlowsAged != 0 || s.Packets != 1 {
		t.Fatalf("a wildcard in use aged:\n%s", s)
	}
	tp.clock.Advance(11 * time.Second)
	if err := h1.sw.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := h1.sw.Stats(); s.Flows != 0 || s.FlowsAged != 1 || countRules(h1) != 0 {
		t.Fatalf("an idle wildcard stayed (%d rules):\n%s", countRules(h1), s)
	}
	// The next connection walks again and makes a new one.
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, 99, 2)), h2, "va2")
	if s := h1.sw.Stats(); s.Packets != 2 || s.WildcardFlows != 2 {
		t.Fatalf("after aging:\n%s", s)
	}
}

// TestWildcardTableFull: ten connections between the same endpoints take
// one rule, where exact flows fill a four-rule table (TestRealTableFull).
func TestWildcardTableFull(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{maxRules: 4})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	for i := 0; i < 10; i++ {
		deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, uint16(100+i), 20)), h2, "va2")
	}
	if s := h1.sw.Stats(); s.FlowsNIC != 1 || s.FlowsHost != 0 || s.Packets != 1 {
		t.Fatalf("with a 4-rule table:\n%s", s)
	}
}

// TestWildcardCoveredInHost: a packet of another connection that reaches
// the host while the wildcard covers it (here: handed to HandleBatch as a
// miss, as when it raced the rule's installation) is handled by the
// wildcard flow, without a new flow or rule.
func TestWildcardCoveredInHost(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, 1, 2)), h2, "va2")
	frame := frameOf(udp(macVA1, macVA2, caVA1, caVA2, 5, 6))
	exc := []hal.Exception{{InPort: h1.ports["va1"], Reason: hal.ReasonMiss, Buf: frame, Len: len(frame)}}
	if err := h1.sw.HandleBatch(context.Background(), exc); err != nil {
		t.Fatal(err)
	}
	deliveredTo(t, tp.settle(h1), h2, "va2")
	if s := h1.sw.Stats(); s.WildcardCovered != 1 || s.FlowsCreated != 1 || s.Flows != 1 || countRules(h1) != 1 {
		t.Fatalf("covered in the host:\n%s", s)
	}
}
