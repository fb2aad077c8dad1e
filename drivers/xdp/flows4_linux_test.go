//go:build linux

package xdp

import (
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// mapLens counts the exact IPv4 entries (table4's published slots and its
// overflow, flows4) and the entries of flows.
func mapLens(t *testing.T, n *NIC) (four, flows int) {
	t.Helper()
	for name, c := range map[string]*int{"flows4": &four, "flows": &flows} {
		var k4 bpfKey4
		var k bpfKey
		var v bpfFlowVal
		var it = n.maps[name].Iterate()
		if name == "flows4" {
			for it.Next(&k4, &v) {
				*c++
			}
		} else {
			for it.Next(&k, &v) {
				*c++
			}
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	t4 := n.tab.be.(*mapBackend).t4
	for i := uint32(0); i < t4.slots+probe4; i++ {
		if t4.slot(i).Seq&seqValid != 0 {
			four++
		}
	}
	return four, flows
}

// TestFlows4 holds the compact IPv4 map to the tuple-space search it
// shortcuts: an exact rule of an untunnelled IPv4 frame lives in flows4
// and is found there; a rule of another shape still wins when its priority
// is higher (or equal, with a lower ID); an exact rule of a tunnelled or
// IPv6 frame stays in flows and is found there; removing and modifying
// exact rules takes them out of flows4.
func TestFlows4(t *testing.T) {
	n := openVirtual(t, Config{})
	f := wire.Build(udp4(ca1, ca2, 1000, 2000))
	exact := exactRule(t, 10, pVM1, f, hal.Output(pVM2))
	mustApply(t, n, hal.AddOp(exact))
	if four, flows := mapLens(t, n); four != 1 || flows != 0 {
		t.Fatalf("exact IPv4 rule: %d entries in flows4, %d in flows; want 1, 0", four, flows)
	}
	expectOutput(t, mustRun(t, n, pVM1, f), pVM2, f)
	if r := mustRun(t, n, pVM1, wire.Build(udp4(ca1, ca2, 1000, 2001))); r.Verdict != VerdictToHost || r.Reason != hal.ReasonMiss {
		t.Fatalf("another port: %v %v, want a miss", r.Verdict, r.Reason)
	}

	// A prefix rule above the exact one wins; below it, loses; at the
	// same priority the lower ID wins.
	var m hal.Match
	m.IPDst(netip.MustParsePrefix("198.19.0.0/24"))
	for _, c := range []struct {
		prio uint16
		id   hal.RuleID
		want hal.PortID
	}{
		{2, 20, pUp}, {0, 20, pVM2}, {1, 5, pUp}, {1, 20, pVM2},
	} {
		mustApply(t, n, hal.AddOp(hal.Rule{ID: c.id, Priority: c.prio, Match: m, Actions: []hal.Action{hal.Output(pUp)}}))
		if r := mustRun(t, n, pVM1, f); r.Verdict != VerdictOutput || r.Port != c.want {
			t.Fatalf("prefix rule %d at priority %d: %v to %d, want output to %d", c.id, c.prio, r.Verdict, r.Port, c.want)
		}
		mustApply(t, n, hal.DeleteOp(c.id))
	}

	// Tunnelled and IPv6 exact rules are flows' entries.
	vx := wire.BuildEncap(&vxlanTo, f)
	v6 := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca6a, Dst: ca6b, Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2})
	mustApply(t, n, hal.AddOp(exactRule(t, 30, pVM1, vx, hal.Decap(), hal.Output(pVM2))),
		hal.AddOp(exactRule(t, 31, pVM1, v6, hal.Output(pUp))))
	if four, flows := mapLens(t, n); four != 1 || flows != 2 {
		t.Fatalf("with tunnelled and IPv6 exact rules: %d in flows4, %d in flows; want 1, 2", four, flows)
	}
	expectOutput(t, mustRun(t, n, pVM1, vx), pVM2, f)
	expectOutput(t, mustRun(t, n, pVM1, v6), pUp, v6)

	// Modify (same match, new action) rewrites the flows4 entry; delete
	// removes it.
	exact.Actions = []hal.Action{hal.Output(pUp)}
	mustApply(t, n, hal.ModifyOp(exact))
	expectOutput(t, mustRun(t, n, pVM1, f), pUp, f)
	mustApply(t, n, hal.DeleteOp(10))
	if four, _ := mapLens(t, n); four != 0 {
		t.Fatalf("after delete: %d entries in flows4", four)
	}
	if r := mustRun(t, n, pVM1, f); r.Verdict != VerdictToHost || r.Reason != hal.ReasonMiss {
		t.Fatalf("deleted rule still hits: %v %v", r.Verdict, r.Reason)
	}
}
