package agent

import (
	"context"
	"errors"
	"testing"

	"github.com/nicpath/nicpath/hal/haltest"
)

// A reconcile that could not read the NIC's table is counted apart from
// those that did, in nicpath_reconciles_total's result label.
func TestReconcileMetrics(t *testing.T) {
	fault := haltest.NewFaultNIC(servedNIC(t))
	r := startDaemon(t, hostAConfig(t, t.TempDir()), fault.NIC())
	ok := metric(t, r, `nicpath_reconciles_total{result="ok"}`)
	if ok < 1 || metric(t, r, `nicpath_reconciles_total{result="failed"}`) != 0 {
		t.Fatalf("after the start's reconcile: ok %v, failed %v", ok, metric(t, r, `nicpath_reconciles_total{result="failed"}`))
	}
	errDump := errors.New("dump refused (test)")
	fault.FailCall(haltest.MethodDump, errDump)
	if _, err := r.d.Switch().Reconcile(context.Background()); !errors.Is(err, errDump) {
		t.Fatalf("reconcile with the dump failing: %v", err)
	}
	if got := metric(t, r, `nicpath_reconciles_total{result="failed"}`); got != 1 {
		t.Errorf("failed reconciles %v, want 1", got)
	}
	if got := metric(t, r, `nicpath_reconciles_total{result="ok"}`); got != ok {
		t.Errorf("ok reconciles %v after a failed one, want %v", got, ok)
	}
}
