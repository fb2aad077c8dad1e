package learn

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// How long a report holds back the same one, and the bounds.
const (
	// SeenRefresh: a seen address is reported again after this long.
	SeenRefresh = 30 * time.Second
	// AnnounceRefresh: an announcement is reported again after this long.
	AnnounceRefresh = time.Second
	// TableMax bounds the deduplication table (cleared when full).
	TableMax = 4096
	// QueueMax bounds the reports waiting for Read.
	QueueMax = 1024
)

type key struct {
	port hal.PortID
	kind hal.LearnKind
	mac  hal.MAC
	addr netip.Addr
}

// Learner learns from frames and queues reports for one reader. Its
// methods are safe for concurrent use. Make one with New.
type Learner struct {
	mu      sync.Mutex
	last    map[key]time.Time
	q       []hal.LearnedAddress
	notify  chan struct{}
	done    chan struct{}
	once    sync.Once
	dropped atomic.Uint64
	now     func() time.Time
}

// New returns an empty Learner.
func New() *Learner {
	return &Learner{last: map[key]time.Time{}, notify: make(chan struct{}, 1), done: make(chan struct{}), now: time.Now}
}

// Frame learns from one frame that port, a vport, sent. The caller passes
// the frame as the vport sent it; a driver never passes a frame that
// arrived tunnelled or from an uplink (their sources are not its vports').
func (l *Learner) Frame(port hal.PortID, f []byte) {
	a, ok := From(f)
	if !ok {
		return
	}
	a.Port = port
	k := key{port, a.Kind, a.MAC, a.Addr}
	refresh := SeenRefresh
	if a.Kind == hal.LearnAnnounced {
		refresh = AnnounceRefresh
	}
	l.mu.Lock()
	now := l.now()
	if t, seen := l.last[k]; seen && now.Sub(t) < refresh {
		l.mu.Unlock()
		return
	}
	if len(l.q) >= QueueMax {
		l.mu.Unlock()
		l.dropped.Add(1)
		return
	}
	if len(l.last) >= TableMax {
		clear(l.last)
	}
	l.last[k] = now
	l.q = append(l.q, a)
	l.mu.Unlock()
	l.wake()
}

func (l *Learner) wake() {
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// From reads the source address a frame carries, and whether it is an
// announcement (see the package doc). It skips 802.1Q and 802.1ad tags.
// The report's Port is left zero.
func From(f []byte) (hal.LearnedAddress, bool) {
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
	if !a.Addr.IsValid() || a.Addr.IsUnspecified() || a.Addr.IsMulticast() {
		return a, false
	}
	if a.Addr.Is4() && a.Addr.As4() == [4]byte{255, 255, 255, 255} {
		return a, false
	}
	return a, true
}

// Read fills batch with queued reports, oldest first, and returns how many
// it filled. It blocks until one is there, ctx is done or the Learner is
// closed (hal.ErrClosed); an empty batch returns at once.
func (l *Learner) Read(ctx context.Context, batch []hal.LearnedAddress) (int, error) {
	for {
		select {
		case <-l.done:
			return 0, hal.ErrClosed
		default:
		}
		l.mu.Lock()
		k := copy(batch, l.q)
		l.q = l.q[:copy(l.q, l.q[k:])]
		more := len(l.q) > 0
		l.mu.Unlock()
		if more {
			l.wake()
		}
		if k > 0 || len(batch) == 0 {
			return k, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-l.done:
			return 0, hal.ErrClosed
		case <-l.notify:
		}
	}
}

// Dropped counts the reports dropped because the reader had not taken the
// QueueMax earlier ones.
func (l *Learner) Dropped() uint64 { return l.dropped.Load() }

// Close wakes Read callers; Read returns hal.ErrClosed from then on.
// Frame still learns (and queues nothing anyone reads). Close may be
// called more than once.
func (l *Learner) Close() { l.once.Do(func() { close(l.done) }) }
