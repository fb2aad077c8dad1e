package softnic

import (
	"context"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

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

// RuleCounters fills out[i] with the packets and bytes of rule ids[i] (the
// frames as they matched, Ethernet header included). Rules without a Count
// action read zero. An unknown rule fails with hal.ErrNotFound.
func (n *NIC) RuleCounters(ctx context.Context, ids []hal.RuleID, out []hal.Counters) error {
	if len(out) < len(ids) {
		return fmt.Errorf("%s: rule counters: %d outputs for %d rules", DriverName, len(out), len(ids))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n.wmu.Lock()
	defer n.wmu.Unlock()
	if n.closed.Load() {
		return hal.ErrClosed
	}
	for i, id := range ids {
		idx, ok := n.w.byID.get(id)
		if !ok {
			return fmt.Errorf("%s: counters of rule %d: %w", DriverName, id, hal.ErrNotFound)
		}
		c := n.w.counter(idx)
		out[i] = hal.Counters{Packets: c.pkts.Load(), Bytes: c.bytes.Load()}
	}
	return nil
}

// PortCounters returns a port's counters.
func (n *NIC) PortCounters(ctx context.Context, port hal.PortID) (hal.PortCounters, error) {
	if n.closed.Load() {
		return hal.PortCounters{}, hal.ErrClosed
	}
	p := n.port(port)
	if p == nil {
		return hal.PortCounters{}, fmt.Errorf("%s: port %d: %w", DriverName, port, hal.ErrNotFound)
	}
	return p.counters(), nil
}

// Stats returns the NIC-wide exception and drop counts by reason.
func (n *NIC) Stats(ctx context.Context) (hal.Stats, error) {
	if n.closed.Load() {
		return hal.Stats{}, hal.ErrClosed
	}
	var s hal.Stats
	for r := range s.Exceptions {
		s.Exceptions[r] = n.stats[0][r].Load()
		s.Drops[r] = n.stats[1][r].Load()
	}
	return s, nil
}
