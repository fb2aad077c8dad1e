package softnic

import (
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
