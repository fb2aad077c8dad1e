package vswitch

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal/haltest"
)

// A reconcile that cannot read the NIC's table counts in Reconciles and in
// ReconcileFailed (so that a caller waiting for a reconcile can wait for
// one that succeeded), says so in the stats' text, and the next one that
// reads the table counts in Reconciles alone.
func TestReconcileFailedCounted(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{fault: true})
	h1 := tp.byNm["h1"]
	ctx := context.Background()
	before := h1.sw.Stats()
	errDump := errors.New("dump refused (test)")
	h1.fault.FailCall(haltest.MethodDump, errDump)
	if _, err := h1.sw.Reconcile(ctx); !errors.Is(err, errDump) {
		t.Fatalf("reconcile with the dump failing: %v", err)
	}
	st := h1.sw.Stats()
	if st.Reconciles != before.Reconciles+1 || st.ReconcileFailed != before.ReconcileFailed+1 {
		t.Fatalf("after a failed reconcile: reconciles %d -> %d, failed %d -> %d",
			before.Reconciles, st.Reconciles, before.ReconcileFailed, st.ReconcileFailed)
	}
	if !strings.Contains(st.String(), "reconciles failed 1 ") {
		t.Errorf("the stats' text does not say the reconcile failed:\n%s", st)
	}
	h1.fault.FailCall(haltest.MethodDump, nil)
	if _, err := h1.sw.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if st2 := h1.sw.Stats(); st2.Reconciles != st.Reconciles+1 || st2.ReconcileFailed != st.ReconcileFailed {
		t.Fatalf("after a reconcile that succeeded: reconciles %d -> %d, failed %d -> %d",
			st.Reconciles, st2.Reconciles, st.ReconcileFailed, st2.ReconcileFailed)
	}
}
