//go:build linux

package xdp

import (
	"net/netip"
	"reflect"
	"testing"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
)

// TestBatchCheck holds Apply's batch check to validate: over a run of rules
// that share action lists (as equal lists in slices of their own) with
// matches of other traits, scopes, shapes and ports, it gives validate's
// answer for each rule, error for error; it carries a list over only once
// the list passed (a refused list is checked again), and it does carry one
// over (the check it leaves out is not made).
func TestBatchCheck(t *testing.T) {
	cfg := Config{MaxRules: 100, MaxScopes: 4}
	n := &NIC{caps: baseCapabilities(&cfg)}
	n.caps.MaxScopes = 4
	n.tab = newTable(DriverName, 100, 4, 101, func(p hal.PortID) bool { return p < 3 }, nullBackend{})

	tcp4 := func(sp uint16) hal.Match {
		k := hal.FlowKey{InPort: 1, EthType: hal.EtherTypeIPv4, Proto: hal.ProtoTCP, L4Src: sp, L4Dst: 80,
			IPSrc: hal.Addr16(netip.MustParseAddr("198.18.0.1")), IPDst: hal.Addr16(netip.MustParseAddr("198.18.0.2"))}
		return hal.Exact(&k)
	}
	ip4 := func() hal.Match { // IPv4, any protocol: no L4 rewrite allowed
		var m hal.Match
		m.InPort(1)
		m.IPDst(netip.MustParsePrefix("198.18.0.0/24"))
		return m
	}
	tcp6 := func() hal.Match {
		k := hal.FlowKey{InPort: 1, EthType: hal.EtherTypeIPv6, Proto: hal.ProtoTCP, L4Src: 1, L4Dst: 80,
			IPSrc: hal.Addr16(netip.MustParseAddr("2001:db8::1")), IPDst: hal.Addr16(netip.MustParseAddr("2001:db8::2"))}
		return hal.Exact(&k)
	}
	vx := hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: netip.MustParseAddr("198.18.1.1"), Dst: netip.MustParseAddr("198.18.1.2")}
	encap := func() []hal.Action { return []hal.Action{hal.EncapWith(vx), hal.Output(2)} }
	l4 := func(port hal.PortID) []hal.Action { return []hal.Action{hal.SetL4Src(8080), hal.Output(port)} }
	badShape := tcp4(9)
	badShape.Key.VNI = 1 << 25 // does not fit 24 bits; the traits are tcp4's
	rules := []struct {
		r  hal.Rule
		ok bool
	}{
		{hal.Rule{ID: 1, Match: tcp4(1), Actions: encap()}, true},
		{hal.Rule{ID: 2, Match: tcp4(2), Actions: encap()}, true},
		{hal.Rule{ID: 3, Match: tcp4(3), Actions: encap(), Scope: 9}, false}, // beyond MaxScopes
		{hal.Rule{ID: 4, Match: badShape, Actions: encap()}, false},
		{hal.Rule{ID: 5, Match: tcp6(), Actions: encap()}, true}, // other traits
		{hal.Rule{ID: 6, Match: tcp4(6), Actions: l4(2)}, true},
		{hal.Rule{ID: 7, Match: ip4(), Actions: l4(2)}, false}, // the same list, no TCP/UDP pinned
		{hal.Rule{ID: 8, Match: tcp4(8), Actions: l4(2)}, true},
		{hal.Rule{ID: 9, Match: tcp4(9), Actions: l4(7)}, false},   // no port 7
		{hal.Rule{ID: 10, Match: tcp4(10), Actions: l4(7)}, false}, // refused before: checked again
		{hal.Rule{ID: 11, Match: tcp4(11), Actions: []hal.Action{hal.PushVLAN(3), hal.PopVLAN(), hal.Output(1)}}, false},
		{hal.Rule{ID: 12, Match: tcp4(12), Actions: encap(), Generation: 2}, true},
	}
	bc := batchCheck{n: n, c: hal.NewChecker(&n.caps)}
	for _, c := range rules {
		want := n.validate(&c.r)
		got := bc.check(&c.r)
		if (want == nil) != c.ok {
			t.Fatalf("rule %d: validate says %v; the case expects ok=%v", c.r.ID, want, c.ok)
		}
		if (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
			t.Fatalf("rule %d: batch check says %v, validate %v", c.r.ID, got, want)
		}
		switch c.r.ID {
		case 2, 12:
			// Carried over from rule 1 (12: its list again after others).
			if c.r.ID == 2 && unsafe.SliceData(bc.acts) != unsafe.SliceData(rules[0].r.Actions) {
				t.Fatal("rule 2's equal list was checked again rather than carried over")
			}
		case 8:
			if unsafe.SliceData(bc.acts) != unsafe.SliceData(rules[5].r.Actions) {
				t.Fatal("rule 8's equal list was checked again rather than carried over")
			}
		case 10:
			if unsafe.SliceData(bc.acts) != unsafe.SliceData(rules[5].r.Actions) {
				t.Fatal("a refused list became the list carried over")
			}
		}
	}
}

// TestKnownActions holds an add whose action list the batch check found
// equal to the one the table kept and encoded last (taking that list and
// encoding rather than comparing and encoding again) to the add that does
// the work: the same batch, checked by validate alone, leaves the same
// rules and writes the same entries, rule fields (ID, scope, generation,
// priority, counter) and all. It also holds that the shortcut is taken,
// and only for a list equal to the one last kept.
func TestKnownActions(t *testing.T) {
	vx := hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: netip.MustParseAddr("198.18.1.1"), Dst: netip.MustParseAddr("198.18.1.2")}
	vy := vx
	vy.VNI = 8
	listA := func() []hal.Action { return []hal.Action{hal.EncapWith(vx), hal.Count(), hal.Output(2)} }
	listB := func() []hal.Action { return []hal.Action{hal.EncapWith(vy), hal.Output(1)} }
	rule := func(id hal.RuleID, prio uint16, scope hal.Scope, gen hal.Generation, acts []hal.Action) hal.Rule {
		k := hal.FlowKey{InPort: 1, EthType: hal.EtherTypeIPv4, Proto: hal.ProtoTCP, L4Src: uint16(id), L4Dst: 80,
			IPSrc: hal.Addr16(netip.MustParseAddr("198.18.0.1")), IPDst: hal.Addr16(netip.MustParseAddr("198.18.0.2"))}
		return hal.Rule{ID: id, Priority: prio, Match: hal.Exact(&k), Actions: acts, Scope: scope, Generation: gen}
	}
	ops := []hal.Op{
		hal.AddOp(rule(1, 1, 0, 1, listA())),
		hal.AddOp(rule(2, 2, 1, 2, listA())), // known: rule 1's list
		hal.AddOp(rule(3, 3, 2, 3, listA())), // known
		hal.AddOp(rule(4, 4, 0, 1, listB())),
		hal.AddOp(rule(5, 5, 3, 4, listB())),                  // known: rule 4's list
		hal.AddOp(rule(6, 6, 1, 1, listA())),                  // not known: the check last carried listB
		hal.AddOp(rule(7, 7, 1, 2, listA())),                  // known: rule 6's list, kept anew
		{Kind: hal.OpModify, Rule: rule(5, 9, 3, 5, listB())}, // the check now carries listB
		hal.AddOp(rule(9, 1, 0, 1, listA())),                  // not known; equal to the list kept, which stays
		hal.AddOp(rule(10, 2, 0, 1, listA())),                 // equal to the check's list, not the one kept from it
	}
	wantKnown := []bool{false, true, true, false, true, false, true, false, false, false} // by operation

	newTab := func() (*table, *fakeBackend) {
		fb := &fakeBackend{entries: map[bpfKey]bpfFlowVal{}}
		return newTable(DriverName, 100, 4, 101, func(p hal.PortID) bool { return p < 3 }, fb), fb
	}
	plain, plainBE := newTab()
	res := make([]hal.OpResult, len(ops))
	plain.apply(ops, res, func(r *hal.Rule) error { return plain.validate(r, false) })
	for i := range res {
		if res[i].Err != nil {
			t.Fatalf("plain add %d: %v", ops[i].Rule.ID, res[i].Err)
		}
	}

	cfg := Config{MaxRules: 100, MaxScopes: 4}
	n := &NIC{caps: baseCapabilities(&cfg)}
	n.caps.MaxScopes = 4
	tab, be := newTab()
	n.tab = tab
	bc := batchCheck{n: n, c: hal.NewChecker(&n.caps)}
	res = make([]hal.OpResult, len(ops))
	checked := 0
	tab.apply(ops, res, func(r *hal.Rule) error {
		err := bc.check(r)
		if tab.knownActs != wantKnown[checked] {
			t.Errorf("operation %d (rule %d): known list %v, want %v", checked, r.ID, tab.knownActs, wantKnown[checked])
		}
		checked++
		return err
	})
	if checked != len(ops) {
		t.Fatalf("%d operations checked, want %d", checked, len(ops))
	}
	for i := range res {
		if res[i].Err != nil {
			t.Fatalf("add %d: %v", ops[i].Rule.ID, res[i].Err)
		}
	}
	if tab.lastSrc != nil || tab.knownActs {
		t.Fatal("the caller's list is still referenced after apply")
	}
	if len(be.entries) != len(ops)-1 || len(plainBE.entries) != len(ops)-1 {
		t.Fatalf("%d and %d entries written, want %d", len(be.entries), len(plainBE.entries), len(ops)-1)
	}
	for k, v := range plainBE.entries {
		if got, ok := be.entries[k]; !ok || got != v {
			t.Fatalf("entry %+v: got %+v (present %v), want %+v", k, got.Slot[0], ok, v.Slot[0])
		}
	}
	for _, op := range ops {
		a, b := plain.rules.get(op.Rule.ID), tab.rules.get(op.Rule.ID)
		if a == nil || b == nil {
			t.Fatalf("rule %d not kept", op.Rule.ID)
		}
		if ra, rb := a.rule.full(), b.rule.full(); !reflect.DeepEqual(ra, rb) || a.enc != b.enc {
			t.Fatalf("rule %d kept as %+v / %+v, want %+v / %+v", op.Rule.ID, rb, b.enc, ra, a.enc)
		}
	}
}
