package xdp

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// fakeBackend keeps the table's writes in memory; full makes it refuse new
// keys beyond a size, as a full BPF hash does.
type fakeBackend struct {
	entries map[bpfKey]bpfFlowVal
	masks   [2]bpfMaskSet
	bank    uint32
	full    int
}

func (f *fakeBackend) putEntries(keys []bpfKey, vals []bpfFlowVal) (int, error) {
	for i := range keys {
		if _, ok := f.entries[keys[i]]; !ok && f.full > 0 && len(f.entries) >= f.full {
			return i, errFull
		}
		f.entries[keys[i]] = vals[i]
	}
	return len(keys), nil
}
func (f *fakeBackend) deleteEntry(k *bpfKey) error { delete(f.entries, *k); return nil }
func (f *fakeBackend) putMasks(bank uint32, s *bpfMaskSet) error {
	f.masks[bank], f.bank = *s, bank
	return nil
}
func (f *fakeBackend) resetCounter(uint32) error { return nil }

func prefixRule(id hal.RuleID, prio uint16, p string) hal.Rule {
	var m hal.Match
	m.IPDst(netip.MustParsePrefix(p))
	return hal.Rule{ID: id, Priority: prio, Match: m, Actions: []hal.Action{hal.Output(1)}}
}

func applyT(t *testing.T, tab *table, ops ...hal.Op) []hal.OpResult {
	t.Helper()
	res := make([]hal.OpResult, len(ops))
	tab.apply(ops, res, tab.validate)
	return res
}

func TestTableBookkeeping(t *testing.T) {
	fb := &fakeBackend{entries: map[bpfKey]bpfFlowVal{}}
	tab := newTable("test", 100, 16, 100, nil, fb)
	res := applyT(t, tab,
		hal.AddOp(prefixRule(1, 5, "198.19.0.0/16")),
		hal.AddOp(prefixRule(2, 9, "198.19.1.0/24")),
		hal.AddOp(prefixRule(3, 1, "198.19.2.0/24")))
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("op %d: %v", i, r.Err)
		}
	}
	// Two shapes, published in order of their highest priority.
	ms := fb.masks[fb.bank]
	if ms.N != 2 || ms.M[0].MaxPrio != 9 || ms.M[1].MaxPrio != 5 {
		t.Fatalf("mask set %d shapes, prios %d %d", ms.N, ms.M[0].MaxPrio, ms.M[1].MaxPrio)
	}
	if len(fb.entries) != 3 {
		t.Fatalf("%d entries", len(fb.entries))
	}
	// Same match in another generation shares the entry; a third does not fit.
	shadow := prefixRule(4, 5, "198.19.0.0/16")
	shadow.Generation = 1
	third := prefixRule(5, 5, "198.19.0.0/16")
	third.Generation = 2
	res = applyT(t, tab, hal.AddOp(shadow), hal.AddOp(third))
	if res[0].Err != nil || !errors.Is(res[1].Err, hal.ErrTableFull) {
		t.Fatalf("shadow %v, third %v", res[0].Err, res[1].Err)
	}
	k := tab.rules[1].key
	if v := fb.entries[k]; v.Slot[0].ID != 1 || v.Slot[1].ID != 4 || v.Slot[1].Gen != 1 {
		t.Fatalf("shared entry %+v / %+v", v.Slot[0].ID, v.Slot[1].ID)
	}
	// Deleting the last /24 rule of a shape unpublishes the shape.
	applyT(t, tab, hal.DeleteOp(2), hal.DeleteOp(3))
	if ms := fb.masks[fb.bank]; ms.N != 1 || len(fb.entries) != 1 {
		t.Fatalf("after deletes: %d shapes, %d entries", ms.N, len(fb.entries))
	}
	// Modify in place keeps the entry; modify to another match moves it.
	m := prefixRule(1, 7, "198.19.0.0/16")
	m.Actions = []hal.Action{hal.Drop(hal.ReasonPolicy)}
	if res := applyT(t, tab, hal.ModifyOp(m)); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if v := fb.entries[k]; v.Slot[0].Terminal != termDrop || v.Slot[0].Prio != 7 {
		t.Fatalf("modified slot %+v", v.Slot[0])
	}
	moved := prefixRule(1, 7, "203.0.113.0/24")
	if res := applyT(t, tab, hal.ModifyOp(moved)); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if v := fb.entries[k]; v.Slot[0].ID != 0 || v.Slot[1].ID != 4 {
		t.Fatalf("old entry after the move: %d %d", v.Slot[0].ID, v.Slot[1].ID)
	}
	if len(fb.entries) != 2 || len(tab.rules) != 2 {
		t.Fatalf("%d entries %d rules", len(fb.entries), len(tab.rules))
	}
	// Errors: exists, not found.
	res = applyT(t, tab, hal.AddOp(moved), hal.DeleteOp(99), hal.ModifyOp(prefixRule(98, 1, "192.0.2.0/24")))
	if !errors.Is(res[0].Err, hal.ErrExists) || !errors.Is(res[1].Err, hal.ErrNotFound) || !errors.Is(res[2].Err, hal.ErrNotFound) {
		t.Fatalf("errors %v / %v / %v", res[0].Err, res[1].Err, res[2].Err)
	}
}

// TestTableFullRollsBack: a batch that overflows the map lands what fits,
// gives ErrTableFull to the rest and leaves no trace of them.
func TestTableFullRollsBack(t *testing.T) {
	fb := &fakeBackend{entries: map[bpfKey]bpfFlowVal{}, full: 3}
	tab := newTable("test", 100, 16, 100, nil, fb)
	var ops []hal.Op
	for i := 0; i < 5; i++ {
		ops = append(ops, hal.AddOp(prefixRule(hal.RuleID(i+1), 1, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i), 0}), 24).String())))
	}
	res := applyT(t, tab, ops...)
	for i, r := range res {
		if (i < 3) != (r.Err == nil) || (r.Err != nil && !errors.Is(r.Err, hal.ErrTableFull)) {
			t.Fatalf("op %d: %v", i, r.Err)
		}
	}
	if len(tab.rules) != 3 || len(tab.entries) != 3 {
		t.Fatalf("%d rules, %d entries kept", len(tab.rules), len(tab.entries))
	}
	if err := hal.Summarize(res); !errors.Is(err, hal.ErrTableFull) {
		t.Fatalf("summary %v", err)
	}
}

// TestEncodeEncap: the template is hal/wire's headers with the per-packet
// fields zeroed, and its folded sum is what the program adds the length to.
func TestEncodeEncap(t *testing.T) {
	e := hal.Encap{Kind: hal.EncapVXLAN, VNI: 0x123456, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	r := hal.Rule{ID: 1, Actions: []hal.Action{hal.EncapWith(e), hal.Output(1)}}
	b, err := encodeRule(&r)
	if err != nil {
		t.Fatal(err)
	}
	if b.EncapLen != 50 || b.Flags&actEncap == 0 || b.EncapSum > 0xffff {
		t.Fatalf("%+v", b)
	}
	h := b.EncapHdr[:50]
	if h[16] != 0 || h[17] != 0 || h[24] != 0 || h[25] != 0 || h[34] != 0 || h[35] != 0 || h[38] != 0 || h[39] != 0 {
		t.Fatalf("per-packet fields not zero: %x", h)
	}
	if h[42] != 0x08 || h[46] != 0x12 || h[47] != 0x34 || h[48] != 0x56 {
		t.Fatalf("VXLAN header %x", h[42:50])
	}
}
