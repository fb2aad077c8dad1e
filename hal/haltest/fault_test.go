package haltest_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/haltest"
)

func newSoft(t testing.TB) *softnic.NIC {
	t.Helper()
	n, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm1", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:0b:00:01")},
		{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MustMAC("02:00:00:00:ff:01"), MTU: 1600},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// dropRule is a valid rule for softnic: port 1's traffic is dropped.
func dropRule(id hal.RuleID) hal.Rule {
	r := hal.Rule{ID: id, Priority: uint16(id), Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}
	r.Match.InPort(1)
	return r
}

func installed(t *testing.T, n hal.NIC) []hal.RuleID {
	t.Helper()
	var ids []hal.RuleID
	if err := n.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		ids = append(ids, ri.Rule.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

var errInjected = errors.New("injected")

func failID(id hal.RuleID, err error) func(op *hal.Op) error {
	return func(op *hal.Op) error {
		if op.Rule.ID == id {
			return err
		}
		return nil
	}
}

// Apply fails the chosen operations and passes the others to the NIC.
func TestFaultApplyFailsChosenOps(t *testing.T) {
	soft := newSoft(t)
	f := haltest.NewFaultNIC(soft)
	n := f.NIC()
	f.FailOps(failID(2, hal.ErrTableFull))
	ops := []hal.Op{hal.AddOp(dropRule(1)), hal.AddOp(dropRule(2)), hal.AddOp(dropRule(3))}
	res := make([]hal.OpResult, len(ops))
	err := n.Apply(context.Background(), ops, res)
	var be *hal.BatchError
	if !errors.As(err, &be) || be.Failed != 1 || be.Index != 1 || !errors.Is(err, hal.ErrTableFull) {
		t.Fatalf("Apply = %v, want a batch error for op 1 only", err)
	}
	if res[0].Err != nil || !errors.Is(res[1].Err, hal.ErrTableFull) || res[2].Err != nil {
		t.Fatalf("results %+v", res)
	}
	if got := installed(t, soft); !slices.Equal(got, []hal.RuleID{1, 3}) {
		t.Fatalf("installed %v, want [1 3]", got)
	}
	if f.Failed() != 1 {
		t.Fatalf("Failed() = %d", f.Failed())
	}
	f.FailOps(nil)
	if err := n.Apply(context.Background(), []hal.Op{hal.AddOp(dropRule(2))}, res); err != nil {
		t.Fatalf("after FailOps(nil): %v", err)
	}
}

// ApplyAtomic keeps its promise under faults: nothing of the batch lands,
// and the operations that did not fail carry hal.ErrNotApplied.
func TestFaultApplyAtomicRollsBack(t *testing.T) {
	soft := newSoft(t)
	f := haltest.NewFaultNIC(soft)
	aa, ok := f.NIC().(hal.AtomicApplier)
	if !ok {
		t.Fatal("a FaultNIC over softnic is no AtomicApplier")
	}
	f.FailOps(failID(2, errInjected))
	ops := []hal.Op{hal.AddOp(dropRule(1)), hal.AddOp(dropRule(2)), hal.AddOp(dropRule(3))}
	res := make([]hal.OpResult, len(ops))
	err := aa.ApplyAtomic(context.Background(), ops, res)
	var be *hal.BatchError
	if !errors.As(err, &be) || be.Failed != 3 || be.Index != 0 {
		t.Fatalf("ApplyAtomic = %v, want every operation failed", err)
	}
	if !errors.Is(res[0].Err, hal.ErrNotApplied) || !errors.Is(res[1].Err, errInjected) || !errors.Is(res[2].Err, hal.ErrNotApplied) {
		t.Fatalf("results %+v", res)
	}
	if got := installed(t, soft); len(got) != 0 {
		t.Fatalf("installed %v after a rolled-back batch", got)
	}
	// Without faults the batch lands through the NIC's own ApplyAtomic.
	f.FailOps(nil)
	if err := aa.ApplyAtomic(context.Background(), ops, res); err != nil {
		t.Fatal(err)
	}
	if got := installed(t, soft); !slices.Equal(got, []hal.RuleID{1, 2, 3}) {
		t.Fatalf("installed %v", got)
	}
}

// FailCall fails a whole method until it is cleared.
func TestFaultFailCall(t *testing.T) {
	soft := newSoft(t)
	f := haltest.NewFaultNIC(soft)
	n := f.NIC()
	ctx := context.Background()
	errDev := &hal.OpError{Driver: "fault", Op: "dump", Err: errInjected}
	f.FailCall(haltest.MethodDump, errDev)
	if err := n.Dump(ctx, func(*hal.RuleInfo) error { return nil }); !errors.Is(err, errInjected) {
		t.Fatalf("Dump = %v", err)
	}
	f.FailCall(haltest.MethodDump, nil)
	if err := n.Dump(ctx, func(*hal.RuleInfo) error { return nil }); err != nil {
		t.Fatalf("Dump after clearing: %v", err)
	}

	f.FailCall(haltest.MethodApply, hal.ErrClosed)
	ops := []hal.Op{hal.AddOp(dropRule(1)), hal.AddOp(dropRule(2))}
	res := make([]hal.OpResult, 2)
	err := n.Apply(ctx, ops, res)
	var be *hal.BatchError
	if !errors.As(err, &be) || be.Failed != 2 || !errors.Is(res[0].Err, hal.ErrClosed) || !errors.Is(res[1].Err, hal.ErrClosed) {
		t.Fatalf("Apply = %v, results %+v", err, res)
	}
	if got := installed(t, soft); len(got) != 0 {
		t.Fatalf("a failed call installed %v", got)
	}

	f.FailCall(haltest.MethodActivate, errInjected)
	if err := n.Activate(ctx, 1, 1); !errors.Is(err, errInjected) {
		t.Fatalf("Activate = %v", err)
	}
	if g, _ := soft.ActiveGeneration(1); g != 0 {
		t.Fatalf("a failed Activate reached the NIC: generation %d", g)
	}
	f.FailCall(haltest.MethodSetTunnelEndpoint, errInjected)
	if err := n.(hal.TunnelTerminator).SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 2}); !errors.Is(err, errInjected) {
		t.Fatalf("SetTunnelEndpoint = %v", err)
	}
	f.FailCall(haltest.MethodReadExceptions, errInjected)
	if k, err := n.ReadExceptions(ctx, make([]hal.Exception, 1)); k != 0 || !errors.Is(err, errInjected) {
		t.Fatalf("ReadExceptions = %d, %v", k, err)
	}
}

func TestFaultValidate(t *testing.T) {
	f := haltest.NewFaultNIC(newSoft(t))
	refuse := &hal.UnsupportedError{Driver: "fault", Field: "actions[0] drop", Reason: "injected"}
	f.FailValidate(func(r *hal.Rule) error {
		if r.ID == 7 {
			return refuse
		}
		return nil
	})
	r7, r8 := dropRule(7), dropRule(8)
	if err := f.NIC().Validate(&r7); !errors.Is(err, hal.ErrNotSupported) {
		t.Fatalf("Validate(7) = %v", err)
	}
	if err := f.NIC().Validate(&r8); err != nil {
		t.Fatalf("Validate(8) = %v", err)
	}
	bad := hal.Rule{ID: 9} // no terminal action: the NIC itself refuses it
	if err := f.NIC().Validate(&bad); err == nil {
		t.Fatal("the NIC's own refusal was lost")
	}
}

// A FaultNIC has the optional interfaces of the NIC it wraps, no more.
func TestFaultKeepsOptionalInterfaces(t *testing.T) {
	for mask := range 16 {
		f := haltest.NewFaultNIC(withOptional(&rec{}, mask))
		if got := optionalOf(f.NIC()); got != mask {
			t.Errorf("FaultNIC over %04b has %04b", mask, got)
		}
	}
}
