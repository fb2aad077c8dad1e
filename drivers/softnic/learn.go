package softnic

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// Address learning (hal.AddressLearner). The NIC learns from the frames of
// its vports that its exception path carries: every first packet of a flow
// (a miss), and ARP and neighbour discovery, which the vswitch hands to the
// host. A frame that hits a rule matched a source seen on its flow's first
// packet, so the fast path does no work for it. Learning happens after the
// frame is queued for the host, outside the queue's lock, and costs one map
// lookup per exception.
//
// Reports are deduplicated per (port, kind, MAC, address): a seen address
// is reported again after learnSeenRefresh, an announcement after
// learnAnnounceRefresh (a VM that moves sends a few in a row). The table is
// bounded (learnTableMax; it is cleared when full, which only brings
// reports forward) and so is the report queue (learnQueueMax): reports that
// find it full are dropped and counted (LearnedDropped), and the address
// is reported again on its next frame.
const (
	learnSeenRefresh     = 30 * time.Second
	learnAnnounceRefresh = time.Second
	learnTableMax        = 4096
	learnQueueMax        = 1024
)

type learnKey struct {
	port hal.PortID
	kind hal.LearnKind
	mac  hal.MAC
	addr netip.Addr
}

type learner struct {
	mu      sync.Mutex
	last    map[learnKey]time.Time
	q       []hal.LearnedAddress
	notify  chan struct{}
	dropped atomic.Uint64
	now     func() time.Time
}

func (l *learner) init() {
	l.last = map[learnKey]time.Time{}
	l.notify = make(chan struct{}, 1)
	l.now = time.Now
}

// frame learns from one frame a vport sent.
func (l *learner) frame(port hal.PortID, f []byte) {
	a, ok := learnFrom(f)
	if !ok {
		return
	}
	a.Port = port
	k := learnKey{port, a.Kind, a.MAC, a.Addr}
	refresh := learnSeenRefresh
	if a.Kind == hal.LearnAnnounced {
		refresh = learnAnnounceRefresh
	}
	l.mu.Lock()
	now := l.now()
	if t, seen := l.last[k]; seen && now.Sub(t) < refresh {
		l.mu.Unlock()
		return
	}
	if len(l.q) >= learnQueueMax {
		l.mu.Unlock()
		l.dropped.Add(1)
		return
	}
	if len(l.last) >= learnTableMax {
		clear(l.last)
	}
	l.last[k] = now
	l.q = append(l.q, a)
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// learnFrom reads the source address a frame carries, and whether it is
// an announcement. It reads only the frame's source: the sender of an ARP,
// the source of an IP packet, the target of a neighbour advertisement
// (which is the sender's own address).
func learnFrom(f []byte) (hal.LearnedAddress, bool) {
	var a hal.LearnedAddress
	if len(f) < 14 {
		return a, false
	}
	copy(a.MAC[:], f[6:12])
	if a.MAC[0]&1 != 0 || a.MAC == (hal.MAC{}) {
		return a, false
	}
	et, l3 := binary.BigEndian.Uint16(f[12:14]), 14
	for (et == 0x8100 || et == 0x88a8) && len(f) >= l3+4 {
		et, l3 = binary.BigEndian.Uint16(f[l3+2:l3+4]), l3+4
	}
	p := f[l3:]
	switch et {
	case 0x0806: // ARP for IPv4 over Ethernet
		if len(p) < 28 || binary.BigEndian.Uint16(p[0:2]) != 1 || binary.BigEndian.Uint16(p[2:4]) != 0x0800 || p[4] != 6 || p[5] != 4 {
			return a, false
		}
		spa, tpa := netip.AddrFrom4([4]byte(p[14:18])), netip.AddrFrom4([4]byte(p[24:28]))
		a.Addr, a.Kind = spa, hal.LearnSeen
		if spa == tpa {
			a.Kind = hal.LearnAnnounced
		}
	case 0x0800:
		if len(p) < 20 || p[0]>>4 != 4 {
			return a, false
		}
		a.Addr, a.Kind = netip.AddrFrom4([4]byte(p[12:16])), hal.LearnSeen
	case 0x86dd:
		if len(p) < 40 || p[0]>>4 != 6 {
			return a, false
		}
		a.Addr, a.Kind = netip.AddrFrom16([16]byte(p[8:24])), hal.LearnSeen
		// A neighbour advertisement right behind the fixed header (ND
		// packets carry no extension headers), without the solicited
		// flag: an announcement of its target.
		if p[6] == 58 && len(p) >= 40+24 && p[40] == 136 && p[44]&0x40 == 0 {
			a.Addr, a.Kind = netip.AddrFrom16([16]byte(p[48:64])), hal.LearnAnnounced
		}
	default:
		return a, false
	}
	if !a.Addr.IsValid() || a.Addr.IsUnspecified() || a.Addr.IsMulticast() || a.Addr.Is4() && a.Addr == netip.IPv4Unspecified() {
		return a, false
	}
	if a.Addr.Is4() && a.Addr.As4() == [4]byte{255, 255, 255, 255} {
		return a, false
	}
	return a, true
}

// ReadLearned fills batch with the addresses the vports used (see
// hal.AddressLearner and learn.go). It blocks until one is there, ctx is
// done or the NIC is closed.
func (n *NIC) ReadLearned(ctx context.Context, batch []hal.LearnedAddress) (int, error) {
	l := &n.learn
	for {
		if n.closed.Load() {
			return 0, hal.ErrClosed
		}
		l.mu.Lock()
		k := copy(batch, l.q)
		l.q = l.q[:copy(l.q, l.q[k:])]
		more := len(l.q) > 0
		l.mu.Unlock()
		if more {
			select {
			case l.notify <- struct{}{}:
			default:
			}
		}
		if k > 0 || len(batch) == 0 {
			return k, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-n.exc.done:
			return 0, hal.ErrClosed
		case <-l.notify:
		}
	}
}

// LearnedDropped counts learned-address reports dropped because the
// reader had not taken the queue's learnQueueMax earlier ones.
func (n *NIC) LearnedDropped() uint64 { return n.learn.dropped.Load() }
