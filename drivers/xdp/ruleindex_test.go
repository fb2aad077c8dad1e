package xdp

import (
	"math/rand/v2"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// TestRuleIndexModel runs random puts, gets and deletes against a Go map:
// IDs in runs (as a vswitch numbers its rules), scattered ones, and IDs
// that share a group's hash and crowd one run of cells, across growth and
// backward-shift deletions.
func TestRuleIndexModel(t *testing.T) {
	for _, gen := range []struct {
		name string
		id   func(r *rand.Rand) hal.RuleID
	}{
		{"runs", func(r *rand.Rand) hal.RuleID { return hal.RuleID(1 + r.IntN(3000)) }},
		{"scattered", func(r *rand.Rand) hal.RuleID { return hal.RuleID(r.Uint64()%5000 + 1<<40*uint64(r.IntN(4))) }},
		{"same-home", func(r *rand.Rand) hal.RuleID { return hal.RuleID(uint64(r.IntN(200)) << 20) }},
	} {
		t.Run(gen.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			x := newRuleIndex(0)
			model := map[hal.RuleID]*ruleState{}
			states := make([]ruleState, 64)
			for step := 0; step < 200000; step++ {
				id := gen.id(r)
				switch r.IntN(3) {
				case 0:
					rs := &states[r.IntN(len(states))]
					x.put(id, rs)
					model[id] = rs
				case 1:
					x.del(id)
					delete(model, id)
				}
				if got := x.get(id); got != model[id] {
					t.Fatalf("step %d: get(%d) = %p, want %p", step, id, got, model[id])
				}
				if x.len() != len(model) {
					t.Fatalf("step %d: %d rules, want %d", step, x.len(), len(model))
				}
			}
			seen := 0
			for id, rs := range x.all() {
				if model[id] != rs {
					t.Fatalf("all yields %d→%p, want %p", id, rs, model[id])
				}
				seen++
			}
			for id, rs := range model {
				if x.get(id) != rs {
					t.Fatalf("get(%d) lost", id)
				}
			}
			if seen != len(model) {
				t.Fatalf("all yields %d rules, want %d", seen, len(model))
			}
		})
	}
}
