package agent

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

func optionalOf(n hal.NIC) (atomic, sealed, tunnel bool) {
	_, atomic = n.(hal.AtomicApplier)
	_, sealed = n.(hal.SealedAddresses)
	_, tunnel = n.(hal.TunnelTerminator)
	return
}

// The NIC the switch programs (the opened one behind the metrics and
// capture decorator) has exactly the optional interfaces of the opened NIC,
// and an atomic batch is observed as Apply's are.
func TestObservedNICKeepsOptionalInterfaces(t *testing.T) {
	r := startDaemon(t, hostAConfig(t, t.TempDir()), nil)
	if _, ok := r.d.NIC().(hal.AddressLearner); !ok {
		t.Fatal("the daemon's softnic does not report learned addresses")
	}
	if a, s, tt := optionalOf(r.d.NIC()); !a || !s || !tt {
		t.Fatalf("the daemon's softnic: atomic %v, sealed %v, tunnel terminator %v; want all", a, s, tt)
	}
	rule := hal.Rule{ID: 1 << 40, Priority: 1, Cookie: 0xf00d, Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}
	rule.Match.InPort(1)
	res := make([]hal.OpResult, 1)
	if err := r.d.NIC().(hal.AtomicApplier).ApplyAtomic(context.Background(), []hal.Op{hal.AddOp(rule)}, res); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	r.d.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), `nicpath_rule_operations_total{op="add"} 1`) {
		t.Errorf("the atomic batch is not in the metrics:\n%s", rec.Body.String())
	}

	// A NIC with none of them: the daemon's has none either.
	var pcs []softnic.PortConfig
	for _, n := range []string{"vm-bw1", "vm-bw2", "vm-ra2", "vm-rfw"} {
		pcs = append(pcs, softnic.PortConfig{Name: n, Kind: hal.PortVPort})
	}
	pcs = append(pcs, softnic.PortConfig{Name: "up0", Kind: hal.PortUplink, MTU: 1600})
	soft, err := softnic.New(softnic.Config{Ports: pcs})
	if err != nil {
		t.Fatal(err)
	}
	defer soft.Close()
	plain := struct{ hal.NIC }{soft}
	r2 := startDaemon(t, hostAConfig(t, t.TempDir()), plain)
	if _, ok := r2.d.NIC().(hal.AddressLearner); ok {
		t.Fatal("over a plain NIC the daemon's NIC reports learned addresses")
	}
	if a, s, tt := optionalOf(r2.d.NIC()); a || s || tt {
		t.Fatalf("over a plain NIC: atomic %v, sealed %v, tunnel terminator %v; want none", a, s, tt)
	}
}
