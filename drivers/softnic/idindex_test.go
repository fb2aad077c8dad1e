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
