package xdp

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// TestEntryIndexCollisions: keys whose hashes collide share a chain; each
// is found, and deleting any one of them (head, middle, tail) leaves the
// others found.
func TestEntryIndexCollisions(t *testing.T) {
	for del := 0; del < 3; del++ {
		x := newEntryIndex(0)
		var keys [3]bpfKey
		var ents [3]*entryState
		ms := &maskState{id: 1}
		for i := range keys {
			r := prefixRule(hal.RuleID(i+1), 1, fmt.Sprintf("198.19.%d.0/24", i))
			rs := &ruleState{rule: keep(&r, nil), mask: ms}
			keys[i] = rs.bpfKey()
			ents[i] = &entryState{}
			ents[i].slots[0] = rs
			x.putHashed(42, ents[i])
		}
		if x.len() != 3 || x.used != 1 {
			t.Fatalf("%d entries in %d chains", x.len(), x.used)
		}
		for i := range keys {
			if e := x.getHashed(&keys[i], 42); e != ents[i] {
				t.Fatalf("key %d: got %p, want %p", i, e, ents[i])
			}
		}
		other := keys[0]
		other.VNI = 9
		if x.getHashed(&other, 42) != nil {
			t.Fatal("a key not put was found")
		}
		ents[del].slots[0] = nil // detach empties the entry before deleting it
		x.del(ents[del])
		x.del(ents[del]) // twice is harmless
		if x.len() != 2 {
			t.Fatalf("delete %d: %d entries", del, x.len())
		}
		for i := range keys {
			if e := x.getHashed(&keys[i], 42); (e != nil) != (i != del) {
				t.Fatalf("delete %d: key %d found %v", del, i, e != nil)
			}
		}
		n := 0
		for k, e := range x.all() {
			if ek, _ := e.key(); ek != k {
				t.Fatalf("all yields %+v for an entry of %+v", k, ek)
			}
			n++
		}
		if n != 2 {
			t.Fatalf("all yields %d entries", n)
		}
	}
}

// TestEntryIndexThroughTable: a table's index holds exactly the entries of
// its rules through adds, shared matches and deletes.
func TestEntryIndexThroughTable(t *testing.T) {
	fb := &fakeBackend{entries: map[bpfKey]bpfFlowVal{}}
	tab := newTable("test", 1000, 16, 1000, nil, fb)
	var ops []hal.Op
	for i := 0; i < 200; i++ {
		r := prefixRule(hal.RuleID(i+1), 1, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, 0, byte(i / 2)}), 32).String())
		r.Generation = hal.Generation(i % 2)
		ops = append(ops, hal.AddOp(r))
	}
	for i, r := range applyT(t, tab, ops...) {
		if r.Err != nil {
			t.Fatalf("op %d: %v", i, r.Err)
		}
	}
	if tab.entries.len() != 100 || len(fb.entries) != 100 {
		t.Fatalf("%d entries indexed, %d written", tab.entries.len(), len(fb.entries))
	}
	var dels []hal.Op
	for i := 0; i < 200; i += 3 {
		dels = append(dels, hal.DeleteOp(hal.RuleID(i+1)))
	}
	applyT(t, tab, dels...)
	for k, e := range tab.entries.all() {
		v, ok := fb.entries[k]
		if !ok || v != tab.value(e, nil, nil) {
			t.Fatalf("entry %+v: written %v", k, ok)
		}
	}
	if tab.entries.len() != len(fb.entries) {
		t.Fatalf("%d entries indexed, %d written", tab.entries.len(), len(fb.entries))
	}
}

// TestEntryIndexModel runs random puts and deletes of entries whose hashes
// are drawn from a small set (so that they share cells, on chains, and
// crowd runs of cells whose homes coincide) against a model, across growth
// and backward-shift deletions: every entry put is found under its key,
// no other is, and all yields exactly the entries put.
func TestEntryIndexModel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	x := newEntryIndex(0)
	ms := &maskState{id: 1}
	const n = 400
	var ents [n]*entryState
	var keys [n]bpfKey
	var hashes [n]uint64
	for i := range ents {
		ru := prefixRule(hal.RuleID(i+1), 1, fmt.Sprintf("198.19.%d.%d/32", i/256, i%256))
		rs := &ruleState{rule: keep(&ru, nil), mask: ms}
		ents[i] = &entryState{}
		ents[i].slots[0] = rs
		keys[i] = rs.bpfKey()
		// Homes 0..31 of any table size, some hashes shared.
		hashes[i] = uint64(r.IntN(32)) | uint64(r.IntN(3))<<40
	}
	in := map[int]bool{}
	for step := 0; step < 100000; step++ {
		i := r.IntN(n)
		if in[i] {
			x.del(ents[i])
			delete(in, i)
		} else {
			x.putHashed(hashes[i], ents[i])
			in[i] = true
		}
		j := r.IntN(n)
		if got := x.getHashed(&keys[j], hashes[j]); (got == ents[j]) != in[j] || (got != nil && got != ents[j]) {
			t.Fatalf("step %d: entry %d (in %v) found as %p", step, j, in[j], got)
		}
		if x.len() != len(in) {
			t.Fatalf("step %d: %d entries, want %d", step, x.len(), len(in))
		}
	}
	for i := range ents {
		if got := x.getHashed(&keys[i], hashes[i]); (got != nil) != in[i] {
			t.Fatalf("entry %d (in %v) found %v", i, in[i], got != nil)
		}
	}
	seen := map[*entryState]bool{}
	for k, e := range x.all() {
		if ek, _ := e.key(); ek != k || seen[e] {
			t.Fatalf("all yields %+v twice or under another key", k)
		}
		seen[e] = true
	}
	if len(seen) != len(in) {
		t.Fatalf("all yields %d entries, want %d", len(seen), len(in))
	}
}
