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
