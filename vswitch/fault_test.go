package vswitch

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// TestFaultsKeepFlowsInHost fails Apply with a full table and with a device
// error: every packet still reaches its VM through the host path, each case
// is counted and explained, and once the NIC recovers, Maintain offloads
// the flows again (reconciling after the device error).
func TestFaultsKeepFlowsInHost(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{fault: true})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	fullAdds := func(op *hal.Op) error {
		if op.Kind == hal.OpAdd {
			return hal.ErrTableFull
		}
		return nil
	}
	h1.fault.FailOps(fullAdds)
	p := udp(macVA1, macVA2, caVA1, caVA2, 10, 20)
	for i := 0; i < 3; i++ {
		deliveredTo(t, tp.sendVM("va1", p), h2, "va2")
	}
	s := h1.sw.Stats()
	if s.FlowsHost != 1 || s.FlowsNIC != 0 || s.Fallbacks["table_full"] != 1 || s.Packets != 3 {
		t.Fatalf("table full:\n%s", s)
	}
	ex := h1.sw.Explain(Description{VM: "va1", Packet: p})
	if ex.Where != PathHost || ex.Why != WhyTableFull || !strings.Contains(ex.String(), "host (table_full)") {
		t.Fatalf("explain:\n%s", ex)
	}

	// A device error on a different flow.
	h1.fault.FailOps(func(op *hal.Op) error {
		return &hal.OpError{Driver: "fault", Op: op.Kind.String(), Rule: op.Rule.ID, Err: errInjected}
	})
	q := udp(macVA1, macVB1, caVA1, caVB1, 10, 20)
	deliveredTo(t, tp.sendVM("va1", q), h1, "vb1")
	s = h1.sw.Stats()
	if s.Fallbacks["device_error"] != 1 || s.FlowsHost != 2 {
		t.Fatalf("device error:\n%s", s)
	}
	ex = h1.sw.Explain(Description{VM: "va1", Packet: q})
	var oe *hal.OpError
	if ex.Why != WhyDeviceError || ex.Flow == nil || !errors.As(ex.Flow.Err, &oe) || !strings.Contains(ex.Detail, "injected") {
		t.Fatalf("explain:\n%s", ex)
	}
	// Still failing: Maintain reconciles and retries, flows stay in the host,
	// packets keep flowing.
	h1.sw.Maintain(context.Background())
	deliveredTo(t, tp.sendVM("va1", q), h1, "vb1")
	// The NIC recovers.
	h1.fault.FailOps(nil)
	if err := h1.sw.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	s = h1.sw.Stats()
	if s.FlowsNIC != 2 || s.FlowsHost != 0 {
		t.Fatalf("after recovery:\n%s", s)
	}
	before := s.Packets
	deliveredTo(t, tp.sendVM("va1", p), h2, "va2")
	deliveredTo(t, tp.sendVM("va1", q), h1, "vb1")
	if h1.sw.Stats().Packets != before {
		t.Fatal("recovered flows still reach the host")
	}
}

// TestRealTableFull fills softnic's table: flows beyond it stay in the host
// and are delivered all the same.
func TestRealTableFull(t *testing.T) {
	// Exact flows, one rule per connection: the ten connections fill the
	// table (with port wildcards they share one rule; TestWildcardTableFull).
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{maxRules: 4, exact: true})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	for i := 0; i < 10; i++ {
		deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, uint16(100+i), 20)), h2, "va2")
	}
	s := h1.sw.Stats()
	// Each flow toward va2 also has no shadow; 4 fit.
	if s.FlowsNIC != 4 || s.FlowsHost != 6 || s.Fallbacks["table_full"] != 6 {
		t.Fatalf("with a 4-rule table:\n%s", s)
	}
	ex := h1.sw.Explain(Description{VM: "va1", Packet: udp(macVA1, macVA2, caVA1, caVA2, 200, 20)})
	if ex.Where != PathHost || ex.Why != WhyTableFull {
		t.Fatalf("explain of a new flow on a full table:\n%s", ex)
	}
}

// TestFaultDuringUpdate fails the modifications an update makes: the
// affected flows leave the NIC (no stale rule keeps the old policy) and the
// new policy holds for every packet.
func TestFaultDuringUpdate(t *testing.T) {
	st := smallPolicy(t, nil)
	// Exact flows: the update's deny is reprogrammed with a Modify, which
	// fails. (A port-wildcard flow whose verdict becomes a deny is removed
	// instead, with a Delete: TestWildcardUpdate.)
	tp := newTopo(t, st, topoOpts{fault: true, exact: true})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	p := udp(macVA1, macVA2, caVA1, caVA2, 10, 20)
	deliveredTo(t, tp.sendVM("va1", p), h2, "va2")
	b := st.Builder()
	b.AddACL(policy.ACL{Tenant: "t", ID: "deny", Priority: 1, Direction: policy.Out, Action: policy.Deny, Protocol: policy.ProtoUDP})
	st2, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	h1.fault.FailOps(func(op *hal.Op) error {
		if op.Kind == hal.OpModify {
			return &hal.OpError{Driver: "fault", Op: "modify", Rule: op.Rule.ID, Err: errInjected}
		}
		return nil
	})
	for _, h := range tp.hosts {
		if err := h.sw.Update(context.Background(), st2); err != nil {
			t.Fatal(err)
		}
	}
	tp.st = st2
	if got := tp.sendVM("va1", p); len(got) != 0 {
		t.Fatal("a failed modify left the old policy live")
	}
	if s := h1.sw.Stats(); s.FlowsHost != 1 || s.Fallbacks["device_error"] != 1 {
		t.Fatalf("after the failed modify:\n%s", s)
	}
}

// TestReconcile: at start the switch removes rules of an earlier run of
// itself and keeps other owners' rules; later it re-adds rules that
// disappeared behind its back and repairs drifted ones.
func TestReconcile(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{})
	h1 := tp.byNm["h1"]
	ctx := context.Background()
	foreign := hal.Rule{ID: 1_000_000, Priority: 5, Cookie: 0x1234, Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}
	foreign.Match.InPort(h1.ports["u1"])
	stale := hal.Rule{ID: 1_000_001, Priority: 5, Cookie: h1.sw.off.cookie(), Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}
	stale.Match.InPort(h1.ports["va1"])
	res := make([]hal.OpResult, 2)
	if err := h1.soft.Apply(ctx, []hal.Op{hal.AddOp(foreign), hal.AddOp(stale)}, res); err != nil {
		t.Fatal(err)
	}
	// A new switch on the same NIC (a restart).
	sw, err := New(Config{NIC: h1.soft, Host: "h1", State: tp.st, Ports: h1.ports, Uplink: h1.uplink, NextHopMAC: uplinkMAC, Clock: tp.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	h1.sw = sw
	s := sw.Stats()
	if s.ReconcileRemoved != 1 || s.ForeignRules != 1 {
		t.Fatalf("start-up reconcile:\n%s", s)
	}
	// The stale drop rule is gone: va1's traffic flows.
	p := udp(macVA1, macVA2, caVA1, caVA2, 10, 20)
	deliveredTo(t, tp.sendVM("va1", p), tp.byNm["h2"], "va2")
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVB1, caVA1, caVB1, 10, 20)), h1, "vb1")
	fs := sw.Flows()
	if len(fs) != 2 {
		t.Fatalf("flows %+v", fs)
	}
	// Someone deletes one of our rules and rewrites the other.
	gone, drift := fs[0], fs[1]
	bad := hal.Rule{ID: drift.ID, Priority: prioExact, Match: drift.Match, Cookie: sw.off.cookie(), Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}
	if err := h1.soft.Apply(ctx, []hal.Op{hal.DeleteOp(gone.ID), hal.ModifyOp(bad)}, res); err != nil {
		t.Fatal(err)
	}
	rep, err := sw.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Added != 1 || rep.Modified != 1 || rep.Removed != 0 || rep.Foreign != 1 {
		t.Fatalf("reconcile report %+v", rep)
	}
	before := sw.Stats().Packets
	deliveredTo(t, tp.sendVM("va1", p), tp.byNm["h2"], "va2")
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVB1, caVA1, caVB1, 10, 20)), h1, "vb1")
	if sw.Stats().Packets != before {
		t.Fatal("repaired flows still reach the host")
	}
	found := false
	h1.soft.Dump(ctx, func(ri *hal.RuleInfo) error {
		found = found || ri.Rule.ID == foreign.ID
		return nil
	})
	if !found {
		t.Fatal("the foreign rule was removed")
	}
}
