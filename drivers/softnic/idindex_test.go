package softnic

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// TestIDIndex checks the dense pages and the sparse fallback against a map,
// and that pages which empty are freed.
func TestIDIndex(t *testing.T) {
	var x idIndex
	want := map[hal.RuleID]uint32{}
	ids := []hal.RuleID{0, 1, 1023, 1024, 5000, idDenseLimit - 1, idDenseLimit, 1 << 40, ^hal.RuleID(0)}
	for i, id := range ids {
		x.set(id, uint32(i))
		want[id] = uint32(i)
	}
	x.set(5000, 77) // replace
	want[5000] = 77
	check := func() {
		t.Helper()
		got := map[hal.RuleID]uint32{}
		for id, idx := range x.all() {
			if _, dup := got[id]; dup {
				t.Fatalf("id %d yielded twice", id)
			}
			got[id] = idx
		}
		if len(got) != len(want) {
			t.Fatalf("all: %d mappings, want %d", len(got), len(want))
		}
		for id, idx := range want {
			if g, ok := x.get(id); !ok || g != idx || got[id] != idx {
				t.Fatalf("id %d: get %d,%v all %d; want %d", id, g, ok, got[id], idx)
			}
		}
		for _, id := range []hal.RuleID{2, 1025, 4999, 1 << 39, idDenseLimit + 1} {
			if _, ok := x.get(id); ok {
				t.Fatalf("id %d found, never set", id)
			}
		}
	}
	check()
	for _, id := range ids {
		x.del(id)
		delete(want, id)
		x.del(id) // twice: no effect
		check()
	}
	for p, pg := range x.pages {
		if pg != nil {
			t.Fatalf("page %d still held after every ID was deleted", p)
		}
	}
}

// TestTuplePrios checks a tuple's highest priority through adds and
// deletes that mix the first priority counted with others.
func TestTuplePrios(t *testing.T) {
	tp := &tuple{prios: map[uint16]int{}}
	counts := map[uint16]int{}
	seq := []struct {
		p   uint16
		add bool
	}{{5, true}, {5, true}, {9, true}, {3, true}, {5, false}, {5, false}, {9, true}, {5, true}, {9, false}, {9, false}, {3, false}, {7, true}, {5, false}, {7, false}, {2, true}}
	for i, s := range seq {
		if s.add {
			tp.addPrio(s.p)
			counts[s.p]++
		} else {
			tp.delPrio(s.p)
			if counts[s.p]--; counts[s.p] == 0 {
				delete(counts, s.p)
			}
		}
		want, n := uint16(0), 0
		for p, c := range counts {
			want = max(want, p)
			n += c
		}
		if tp.max != want || tp.rules != n {
			t.Fatalf("step %d: max %d rules %d, want %d %d", i, tp.max, tp.rules, want, n)
		}
	}
}

// TestIDIndexRuns: pages of IDs mapped in a run (entry first+i for ID i)
// stay runs, without a slot array; the first mapping off the run, a
// replacement included, turns its page into slots that keep every
// mapping; and a random mix of sets and deletes agrees with a map.
func TestIDIndexRuns(t *testing.T) {
	var x idIndex
	want := map[hal.RuleID]uint32{}
	set := func(id hal.RuleID, idx uint32) {
		x.set(id, idx)
		want[id] = idx
	}
	check := func(step string) {
		t.Helper()
		n := 0
		for id, idx := range x.all() {
			if w, ok := want[id]; !ok || w != idx {
				t.Fatalf("%s: all yields %d→%d, want %d (%v)", step, id, idx, w, ok)
			}
			n++
		}
		if n != len(want) {
			t.Fatalf("%s: all yields %d mappings, want %d", step, n, len(want))
		}
		for id, idx := range want {
			if g, ok := x.get(id); !ok || g != idx {
				t.Fatalf("%s: id %d: get %d,%v; want %d", step, id, g, ok, idx)
			}
		}
	}
	// IDs 1..3000 to entries 0..2999: pages 0-2 are runs (page 0 from ID
	// 1, its first entry one below zero, mod 2^32).
	for i := 0; i < 3000; i++ {
		set(hal.RuleID(i+1), uint32(i))
	}
	check("runs")
	for p := 0; p < 3; p++ {
		if x.pages[p].slot != nil {
			t.Fatalf("page %d of a run has slots", p)
		}
	}
	if _, ok := x.get(0); ok {
		t.Fatal("id 0 found in a run that starts at 1")
	}
	set(1500, 7) // a modify: off the run
	check("modify")
	if x.pages[1].slot == nil || x.pages[0].slot != nil || x.pages[2].slot != nil {
		t.Fatal("only the modified page should have slots")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for step := 0; step < 20000; step++ {
		id := hal.RuleID(rng.IntN(6000))
		switch rng.IntN(3) {
		case 0:
			set(id, uint32(id)+100) // on a run when the page started with one
		case 1:
			set(id, rng.Uint32()&idxMask)
		default:
			x.del(id)
			delete(want, id)
		}
		if step%1000 == 0 {
			check(fmt.Sprint("step ", step))
		}
	}
	check("mix")
	for id := range want {
		x.del(id)
	}
	for p, pg := range x.pages {
		if pg != nil {
			t.Fatalf("page %d still held after every ID was deleted", p)
		}
	}
}

// TestIDIndexReusesEmptiedPages: a page that empties is kept as a spare
// (up to idSpareMax) and reused for the next page started, with nothing of
// its past: a page that had turned to slots, emptied and reused for a run,
// answers for the run's IDs alone, as a run.
func TestIDIndexReusesEmptiedPages(t *testing.T) {
	var x idIndex
	// Page 0 as slots (entries out of order), then emptied.
	for i := 1; i < 100; i++ {
		x.set(hal.RuleID(i), uint32(1000-i))
	}
	old := x.pages[0]
	if old.slot == nil {
		t.Fatal("entries out of order: the page should have turned to slots")
	}
	for i := 1; i < 100; i++ {
		x.del(hal.RuleID(i))
	}
	if x.pages[0] != nil || len(x.spare) != 1 {
		t.Fatalf("emptied page: pages[0] %p, %d spares; want nil, 1", x.pages[0], len(x.spare))
	}
	// Page 3 as a run, on the spare.
	base := hal.RuleID(3 * idPageSize)
	for i := 50; i < 60; i++ {
		x.set(base+hal.RuleID(i), uint32(500+i))
	}
	if x.pages[3] != old || len(x.spare) != 0 {
		t.Fatal("a new page did not reuse the spare")
	}
	if old.slot != nil {
		t.Fatal("the reused page kept its slots: a run should need none")
	}
	for id := base; id < base+idPageSize; id++ {
		idx, ok := x.get(id)
		if want := id >= base+50 && id < base+60; ok != want || (ok && idx != uint32(500+id-base)) {
			t.Fatalf("id %d: get %d,%v; want present %v", id, idx, ok, want)
		}
	}
	// Spares are bounded.
	for p := 0; p < 2*idSpareMax; p++ {
		x.set(hal.RuleID((10+p)*idPageSize), 1)
	}
	for p := 0; p < 2*idSpareMax; p++ {
		x.del(hal.RuleID((10 + p) * idPageSize))
	}
	if len(x.spare) != idSpareMax {
		t.Fatalf("%d spare pages, want at most %d", len(x.spare), idSpareMax)
	}
}
