package tcflower

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/mdlayher/netlink"
	"github.com/nicpath/nicpath/hal"
)

// Dumps of the block's chains, and the rule, port and NIC counters read
// from them and from the interfaces' statistics.

// dumpChain lists the flower filters of one chain of the block.
func (n *NIC) dumpChain(chain uint32, fn func(*dumpedFilter) error) error {
	b, err := encodeDumpRequest(n.block, chain)
	if err != nil {
		return err
	}
	msgs, err := n.conn.Execute(n.request(rtmGetFilter, netlink.Dump, b))
	if err != nil {
		return opError("dump", 0, err)
	}
	for _, m := range msgs {
		if m.Header.Type != rtmNewFilter {
			continue
		}
		f, err := parseFilter(m.Data)
		if errors.Is(err, errNotFilter) {
			continue
		}
		if err != nil {
			return fmt.Errorf("tcflower: dump chain %d: %w", chain, err)
		}
		if err := fn(&f); err != nil {
			return err
		}
	}
	return nil
}

// ruleChains lists every generation chain, in order.
func (n *NIC) ruleChains() []uint32 {
	var cs []uint32
	for _, st := range n.scopes {
		for _, c := range st.gens {
			cs = append(cs, c)
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i] < cs[j] })
	return cs
}

// RuleCounters fills out[i] with the counters of ids[i], read from a dump of
// the chains that hold them.
func (n *NIC) RuleCounters(ctx context.Context, ids []hal.RuleID, out []hal.Counters) error {
	if len(out) < len(ids) {
		return fmt.Errorf("tcflower: %d counters for %d rules", len(out), len(ids))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.ErrClosed
	}
	chains := map[uint32]bool{}
	for _, id := range ids {
		in := n.rules[id]
		if in == nil {
			return fmt.Errorf("tcflower: counters of rule %d: %w", id, hal.ErrNotFound)
		}
		chains[in.chain] = true
	}
	got := map[hal.RuleID]hal.Counters{}
	for c := range chains {
		err := n.dumpChain(c, func(f *dumpedFilter) error {
			if id, _, ok := cookieRule(f.Cookie); ok {
				if in := n.rules[hal.RuleID(id)]; in != nil && in.handle == f.Handle {
					got[hal.RuleID(id)] = hal.Counters{Packets: f.Packets, Bytes: f.Bytes}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for i, id := range ids {
		out[i] = got[id]
	}
	return nil
}

// PortCounters reads the port's interface statistics (IFLA_STATS64).
func (n *NIC) PortCounters(ctx context.Context, port hal.PortID) (hal.PortCounters, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.PortCounters{}, hal.ErrClosed
	}
	d := n.lay.ports[port]
	if d == nil {
		return hal.PortCounters{}, fmt.Errorf("tcflower: port %d: %w", port, hal.ErrNotFound)
	}
	st, err := n.linkStats(d.Ifindex)
	if err != nil {
		return hal.PortCounters{}, err
	}
	b := n.base[port]
	st = linkStats{
		rxPackets: st.rxPackets - b.rxPackets, txPackets: st.txPackets - b.txPackets,
		rxBytes: st.rxBytes - b.rxBytes, txBytes: st.txBytes - b.txBytes,
		rxDropped: st.rxDropped - b.rxDropped, txDropped: st.txDropped - b.txDropped,
	}
	// Interface statistics count whole frames; the driver's byte counters
	// count from L3 (BytesIncludeL2 false), so the Ethernet header of each
	// frame comes off (14 bytes: a VLAN tag's 4 more stay counted).
	l3 := func(bytes, packets uint64) uint64 {
		if bytes < 14*packets {
			return 0
		}
		return bytes - 14*packets
	}
	_, exc, err := n.exceptionCounts(port)
	if err != nil {
		return hal.PortCounters{}, err
	}
	// Frames a tc filter drops are not in the interface's counters: the
	// tunnel endpoint's drops of the port are added.
	notLocal, err := n.notLocalDrops()
	if err != nil {
		return hal.PortCounters{}, err
	}
	return hal.PortCounters{
		Rx:         hal.Counters{Packets: st.rxPackets, Bytes: l3(st.rxBytes, st.rxPackets)},
		Tx:         hal.Counters{Packets: st.txPackets, Bytes: l3(st.txBytes, st.txPackets)},
		Drops:      st.rxDropped + st.txDropped + notLocal[port],
		Exceptions: exc,
	}, nil
}

func (n *NIC) linkStats(ifindex uint32) (linkStats, error) {
	b := make([]byte, 16)
	putU32(b[4:], ifindex)
	msgs, err := n.conn.Execute(n.request(rtmGetLink, 0, b))
	if err != nil {
		return linkStats{}, opError("link", 0, err)
	}
	for _, m := range msgs {
		if _, _, _, _, st, err := parseLink(m.Data); err == nil {
			return st, nil
		}
	}
	return linkStats{}, fmt.Errorf("tcflower: no link message for ifindex %d", ifindex)
}

// installSealedDrop puts the filter that drops sealed-address frames
// (EtherType 0x88B5) ahead of every rule: the NIC has no crypto, so it fails
// closed rather than forward what only a NIC with the key may open.
func (n *NIC) installSealedDrop() error {
	e := netlink.NewAttributeEncoder()
	e.Bytes(flowerEthType, be16(hal.EtherTypeSealed))
	keys, err := e.Encode()
	if err != nil {
		return err
	}
	m, err := n.filterMsg(&filterSpec{Chain: 0, Prio: prioSealed, Handle: structHandle, Flags: n.flags, Keys: keys,
		Actions: []tcAction{gactAction(tcActShot)}}, netlink.Create|netlink.Excl)
	if err != nil {
		return err
	}
	return opError("install the sealed-frame drop", 0, n.do(m))
}

// Stats reports drops and exceptions by reason: sealed-address frames from
// the filter that drops them, tunnelled frames for another endpoint from
// the tunnel endpoint's drop filters, misses and fragments from the
// exception path's own filters, the others from the counters of the drop
// and ToHost rules.
func (n *NIC) Stats(ctx context.Context) (hal.Stats, error) {
	var s hal.Stats
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return s, hal.ErrClosed
	}
	err := n.dumpChain(0, func(f *dumpedFilter) error {
		if f.Prio == prioSealed {
			s.Drops[hal.ReasonSealed] += f.Packets
		}
		return nil
	})
	if err == nil {
		var notLocal map[hal.PortID]uint64
		notLocal, err = n.notLocalDrops()
		for _, c := range notLocal {
			s.Drops[hal.ReasonNotLocal] += c
		}
	}
	if err == nil {
		s.Exceptions, _, err = n.exceptionCounts(0)
	}
	for _, in := range n.rules {
		if err != nil || in.ttlChain == 0 {
			continue
		}
		err = n.dumpChain(in.ttlChain, func(f *dumpedFilter) error {
			if f.Prio == 1 {
				s.Exceptions[hal.ReasonTTL] += f.Packets
			}
			return nil
		})
	}
	n.mu.Unlock()
	if err != nil {
		return s, err
	}
	err = n.Dump(ctx, func(ri *hal.RuleInfo) error {
		t := ri.Rule.Terminal()
		if t == nil || t.Reason >= hal.NumReasons {
			return nil
		}
		switch t.Kind {
		case hal.ActionDrop:
			s.Drops[t.Reason] += ri.Counters.Packets
		case hal.ActionToHost:
			s.Exceptions[t.Reason] += ri.Counters.Packets
		}
		return nil
	})
	return s, err
}

func isToHost(r *hal.Rule) bool {
	t := r.Terminal()
	return t != nil && t.Kind == hal.ActionToHost
}
