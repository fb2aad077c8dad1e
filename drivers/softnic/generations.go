package softnic

import (
	"context"

	"github.com/nicpath/nicpath/hal"
)

// Generations: a scope's live generation, switched with one publish of the
// table views.

// Activate makes gen the live generation of scope. It costs one switch of
// the table views whatever the number of rules: bursts in flight finish on
// the old generation, the next ones see the new one. A scope that no rule
// names yet is remembered, so that rules added later with gen are live at
// once.
func (n *NIC) Activate(ctx context.Context, scope hal.Scope, gen hal.Generation) error {
	if !n.caps.Generations {
		return hal.Unsupported(DriverName, "generation", "generations are disabled on this NIC")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n.wmu.Lock()
	defer n.wmu.Unlock()
	if n.closed.Load() {
		return hal.ErrClosed
	}
	w := &n.w
	idx, err := w.scopeIndex(scope)
	if err != nil {
		return &hal.OpError{Driver: DriverName, Op: "activate", Err: err}
	}
	if w.scopeGen[idx] == gen {
		return nil
	}
	w.scopeGen[idx] = gen
	w.publish(func(v *view, _ int) {
		for len(v.gens) < len(w.scopeGen) {
			v.gens = append(v.gens, uint32(w.scopeGen[len(v.gens)]))
		}
		v.gens[idx] = uint32(gen)
	})
	return nil
}

// ActiveGeneration returns the live generation of scope (0 for a scope
// never activated).
func (n *NIC) ActiveGeneration(scope hal.Scope) (hal.Generation, error) {
	if !n.caps.Generations {
		return 0, hal.Unsupported(DriverName, "generation", "generations are disabled on this NIC")
	}
	n.wmu.Lock()
	defer n.wmu.Unlock()
	if n.closed.Load() {
		return 0, hal.ErrClosed
	}
	if i, ok := n.w.scopes[scope]; ok {
		return n.w.scopeGen[i], nil
	}
	return 0, nil
}
