package softnic

import (
	"context"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// Counters: per rule, per port, and the NIC's drops and exceptions by reason.

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
		out[i] = hal.Counters{}
		if c := n.w.counter(idx); c != nil {
			out[i] = hal.Counters{Packets: c.pkts.Load(), Bytes: c.bytes.Load()}
		}
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

func (n *NIC) countStat(drop bool, r hal.Reason, v uint64) {
	if v == 0 {
		return
	}
	i := 0
	if drop {
		i = 1
	}
	n.stats[i][r].Add(v)
}
