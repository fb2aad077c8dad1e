//go:build linux

package xdp

import (
	"context"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// Counters: per rule (per-CPU rule_counters), per port (port_stats) and the
// NIC's drops and exceptions by reason (reason_stats).

func (n *NIC) readCounter(idx uint32) (hal.Counters, error) {
	vals := make([]bpfCounters, n.ncpu)
	if err := n.maps["rule_counters"].Lookup(idx, &vals); err != nil {
		return hal.Counters{}, err
	}
	var c hal.Counters
	for _, v := range vals {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c, nil
}

// RuleCounters fills out[i] for ids[i]: zero for a rule without a Count
// action, ErrNotFound for a rule that is not installed.
func (n *NIC) RuleCounters(ctx context.Context, ids []hal.RuleID, out []hal.Counters) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	for i, id := range ids {
		rs := n.tab.rules.get(id)
		if rs == nil {
			return fmt.Errorf("xdp: counters of rule %d: %w", id, hal.ErrNotFound)
		}
		out[i] = hal.Counters{}
		if rs.enc.Flags&actCount != 0 {
			c, err := n.readCounter(rs.enc.Counter)
			if err != nil {
				return &hal.OpError{Driver: DriverName, Op: "read counters", Rule: id, Err: err}
			}
			out[i] = c
		}
	}
	return nil
}

// PortCounters sums the port's per-CPU counters; Tx includes injected frames.
func (n *NIC) PortCounters(ctx context.Context, id hal.PortID) (hal.PortCounters, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return hal.PortCounters{}, err
	}
	p, ok := n.ports[id]
	if !ok {
		return hal.PortCounters{}, fmt.Errorf("xdp: port %d: %w", id, hal.ErrNotFound)
	}
	vals := make([]bpfPortStats, n.ncpu)
	if err := n.maps["port_stats"].Lookup(uint32(id), &vals); err != nil {
		return hal.PortCounters{}, &hal.OpError{Driver: DriverName, Op: "port counters", Err: err}
	}
	var pc hal.PortCounters
	for _, v := range vals {
		pc.Rx.Packets += v.RxPackets
		pc.Rx.Bytes += v.RxBytes
		pc.Tx.Packets += v.TxPackets
		pc.Tx.Bytes += v.TxBytes
		pc.Drops += v.Drops
		pc.Exceptions += v.Exceptions
	}
	pc.Tx.Packets += p.injectN.Load()
	pc.Tx.Bytes += p.injectB.Load()
	return pc, nil
}

// Stats sums the exception and drop counters by reason. Exception events
// the ring had no room for count as queue_full drops.
func (n *NIC) Stats(ctx context.Context) (hal.Stats, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return hal.Stats{}, err
	}
	var s hal.Stats
	vals := make([]uint64, n.ncpu)
	for r := 0; r < int(hal.NumReasons); r++ {
		for j, dst := range []*uint64{&s.Exceptions[r], &s.Drops[r]} {
			if err := n.maps["reason_stats"].Lookup(uint32(j*int(hal.NumReasons)+r), &vals); err != nil {
				return s, &hal.OpError{Driver: DriverName, Op: "stats", Err: err}
			}
			for _, v := range vals {
				*dst += v
			}
		}
	}
	s.Drops[hal.ReasonQueueFull] += n.lost.Load()
	return s, nil
}
