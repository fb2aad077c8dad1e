package conformance_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/conformance/internal/targets"
)

// softnic against itself: no differences.
func TestDifferentialSelf(t *testing.T) {
	conformance.RunDifferential(t, targets.Softnic(), targets.Softnic())
}

// A target that corrupts one byte on the uplink differs on every scenario
// that sends to the uplink, and not on the others; documenting the
// difference turns the failures into "documented".
func TestDifferentialFindsDifferences(t *testing.T) {
	tg := wrap("corrupt", nil, nil, func(h conformance.Harness) conformance.Harness { return &corrupting{h, 3} })
	rep := conformance.Differential(context.Background(), targets.Softnic(), tg, conformance.Options{})
	if !rep.Failed() || rep.Mode != conformance.ModeDifferential || rep.Reference != "softnic" {
		t.Fatalf("report %+v", rep.Summary)
	}
	want := map[string]conformance.Status{
		"diff/encap-vxlan-ipv4":         conformance.StatusFail,
		"diff/rewrite-set_ip_dst-udp4":  conformance.StatusFail,
		"diff/decap-vxlan":              conformance.StatusPass, // out of the vport
		"diff/miss":                     conformance.StatusPass,
		"diff/malformed":                conformance.StatusPass,
		"diff/rewrite-set_eth_src-udp4": conformance.StatusFail,
	}
	for name, st := range want {
		c, ok := rep.Case(name)
		if !ok || c.Status != st {
			t.Errorf("%s: %+v, want %s", name, c, st)
		}
	}
	c, _ := rep.Case("diff/encap-vxlan-ipv4")
	if !strings.Contains(c.Reason, "port out frame 0 differs") {
		t.Errorf("reason %q", c.Reason)
	}

	// Each scenario that differs, by name: the list the run asks for.
	for _, c := range rep.Cases {
		if c.Status == conformance.StatusFail && c.Name != "diff" {
			tg.Documented = append(tg.Documented, conformance.Difference{Case: c.Name, Capability: "action output", Reason: "the uplink flips the last byte"})
		}
	}
	rep = conformance.Differential(context.Background(), targets.Softnic(), tg, conformance.Options{})
	if rep.Failed() {
		t.Fatalf("documented differences still fail: %+v", rep.Summary)
	}
	if c, _ := rep.Case("diff/encap-vxlan-ipv4"); c.Status != conformance.StatusDocumented {
		t.Errorf("encap-vxlan-ipv4: %+v", c)
	}
	if rep.Summary.Documented != len(tg.Documented) {
		t.Errorf("%d documented, want %d", rep.Summary.Documented, len(tg.Documented))
	}
	// One scenario more than differs: it passes, and the run fails on it.
	tg.Documented = append(tg.Documented, conformance.Difference{Case: "diff/miss", Capability: "exception path", Reason: "stale"})
	rep = conformance.Differential(context.Background(), targets.Softnic(), tg, conformance.Options{})
	c, _ = rep.Case("diff/miss")
	if !rep.Failed() || c.Status != conformance.StatusFail || c.Reason != "documented difference diff/miss now passes: remove it from the list" {
		t.Errorf("a documented scenario that passes: %+v (summary %+v)", c, rep.Summary)
	}
}
