package agent

import (
	"context"
	"errors"
	"testing"

	"github.com/nicpath/nicpath/hal/haltest"
)

// A reconcile that could not read the NIC's table is counted apart from
// those that did, in nicpath_reconciles_total's result label. (The running
// switch's Maintain retries a failed reconcile on its own: while the table
// cannot be read, more may fail, none succeeds.)
func TestReconcileMetrics(t *testing.T) {
	fault := haltest.NewFaultNIC(servedNIC(t))
	r := startDaemon(t, hostAConfig(t, t.TempDir()), fault.NIC())
	failed := func() float64 { return metric(t, r, `nicpath_reconciles_total{result="failed"}`) }
	ok := metric(t, r, `nicpath_reconciles_total{result="ok"}`)
	if ok < 1 || failed() != 0 {
		t.Fatalf("after the start's reconcile: ok %v, failed %v", ok, failed())
	}
	errDump := errors.New("dump refused (test)")
	fault.FailCall(haltest.MethodDump, errDump)
	if _, err := r.d.Switch().Reconcile(context.Background()); !errors.Is(err, errDump) {
		t.Fatalf("reconcile with the dump failing: %v", err)
	}
	if got := failed(); got < 1 {
		t.Errorf("failed reconciles %v after one failed", got)
	}
	if got := metric(t, r, `nicpath_reconciles_total{result="ok"}`); got != ok {
		t.Errorf("ok reconciles %v while the table cannot be read, want %v", got, ok)
	}
	fault.FailCall(haltest.MethodDump, nil)
	if _, err := r.d.Switch().Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := metric(t, r, `nicpath_reconciles_total{result="ok"}`); got <= ok {
		t.Errorf("ok reconciles %v after one succeeded, want more than %v", got, ok)
	}
}
