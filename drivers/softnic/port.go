package softnic

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
)

// Port is the far side of one NIC port: what the VM behind a vport, or the
// wire behind an uplink, sees. Send puts frames into the NIC on this port;
// Recv takes the frames the NIC sent out of it. Both are safe for
// concurrent use.
type Port struct {
	nic  *NIC
	info hal.Port
	tx   ring
	// ready is signalled when frames land in an empty transmit ring,
	// unless onReady is set (OnReady): then that is called instead.
	ready   chan struct{}
	onReady atomic.Pointer[func()]

	// tun is the port's tunnel endpoint (uplinks only; nil: no filter).
	tun atomic.Pointer[tunFilter]

	rxPkts, rxBytes atomic.Uint64
	txPkts, txBytes atomic.Uint64
	drops, excs     atomic.Uint64
}

// ID is the port's hal.PortID.
func (p *Port) ID() hal.PortID { return p.info.ID }

// Info describes the port.
func (p *Port) Info() hal.Port { return p.info }

// Send hands frames to the NIC as if they arrived on this port. They are
// processed on the caller's goroutine before Send returns (run to
// completion, like a poll-mode driver): outputs are in the destination
// ports' rings, exceptions in the exception queue, drops counted. Frames
// are copied; the caller keeps them. It returns how many frames the NIC
// took, which is all of them unless it is closed.
func (p *Port) Send(frames [][]byte) (int, error) {
	n := p.nic
	if n.closed.Load() {
		return 0, hal.ErrClosed
	}
	b := n.getBurst()
	defer n.putBurst(b)
	for done := 0; done < len(frames); {
		k := min(len(frames)-done, MaxBurst)
		for i := 0; i < k; i++ {
			f := frames[done+i]
			buf := b.bufs[i]
			if len(f) > len(buf)-Headroom {
				// Longer than any port's MTU allows: keep only a
				// prefix, which process counts as oversized.
				b.sizes[i] = len(f)
				copy(buf[Headroom:], f)
				continue
			}
			b.sizes[i] = copy(buf[Headroom:], f)
		}
		n.process(b, p, b.bufs[:k], b.sizes[:k], Headroom)
		done += k
	}
	return len(frames), nil
}

// Recv moves up to len(bufs) frames that the NIC sent out of this port into
// bufs, setting sizes[i] to each frame's length, and returns how many. It
// does not block: 0 means the ring is empty. A frame longer than its buffer
// stays in the ring and Recv returns io.ErrShortBuffer with the frames
// before it.
func (p *Port) Recv(bufs [][]byte, sizes []int) (int, error) {
	if len(sizes) < len(bufs) {
		return 0, fmt.Errorf("%s: recv: %d sizes for %d buffers", DriverName, len(sizes), len(bufs))
	}
	r := &p.tx
	r.mu.Lock()
	defer r.mu.Unlock()
	i := 0
	for ; i < len(bufs) && r.n > 0; i++ {
		s := r.head
		l := r.lens[s]
		if l > len(bufs[i]) {
			return i, io.ErrShortBuffer
		}
		sizes[i] = copy(bufs[i], r.slots[s][:l])
		r.head = r.slot(1)
		r.n--
	}
	return i, nil
}

// Ready receives a value when frames land in the port's transmit ring
// while it was empty: a reader that found the ring empty (Recv returned 0)
// waits on it instead of polling. A value may be stale (the frames already
// taken); Recv tells.
func (p *Port) Ready() <-chan struct{} { return p.ready }

// OnReady has f called in place of signalling Ready when frames land in
// the port's transmit ring while it was empty, on the goroutine that put
// them there, once the ring is unlocked; nil goes back to Ready. f must
// not block. It is for a reader that takes most frames on the goroutines
// that produce them (a binding whose readers write out what their burst
// queued) and wants its own waiting side woken only for the others.
func (p *Port) OnReady(f func()) {
	if f == nil {
		p.onReady.Store(nil)
		return
	}
	p.onReady.Store(&f)
}

// wake signals Ready, or calls the OnReady function; it never blocks.
func (p *Port) wake() {
	if f := p.onReady.Load(); f != nil {
		(*f)()
		return
	}
	select {
	case p.ready <- struct{}{}:
	default:
	}
}

// Pending returns how many frames wait in the port's transmit ring.
func (p *Port) Pending() int {
	p.tx.mu.Lock()
	defer p.tx.mu.Unlock()
	return p.tx.n
}

// Discard empties the port's transmit ring and returns how many frames it
// held (for benchmarks and for tests that look only at counters).
func (p *Port) Discard() int {
	p.tx.mu.Lock()
	defer p.tx.mu.Unlock()
	k := p.tx.n
	p.tx.head, p.tx.n = 0, 0
	return k
}

func (p *Port) counters() hal.PortCounters {
	return hal.PortCounters{
		Rx:         hal.Counters{Packets: p.rxPkts.Load(), Bytes: p.rxBytes.Load()},
		Tx:         hal.Counters{Packets: p.txPkts.Load(), Bytes: p.txBytes.Load()},
		Drops:      p.drops.Load(),
		Exceptions: p.excs.Load(),
	}
}

// ring is a bounded queue of frames in preallocated slots.
type ring struct {
	mu    sync.Mutex
	slots [][]byte
	lens  []int
	head  int
	n     int
}

func (r *ring) init(size, frameCap int) {
	back := make([]byte, size*frameCap)
	r.slots = make([][]byte, size)
	for i := range r.slots {
		r.slots[i] = back[i*frameCap : (i+1)*frameCap : (i+1)*frameCap]
	}
	r.lens = make([]int, size)
}

// slot returns the index of the i-th frame after head.
func (r *ring) slot(i int) int {
	s := r.head + i
	if s >= len(r.slots) {
		s -= len(r.slots)
	}
	return s
}

// put copies f into the ring; r.mu must be held. It reports false when the
// ring is full or f does not fit a slot.
func (r *ring) put(f []byte) bool {
	if r.n == len(r.slots) {
		return false
	}
	s := r.slot(r.n)
	dst := r.slots[s]
	if len(f) > len(dst) {
		return false
	}
	r.lens[s] = copy(dst, f)
	r.n++
	return true
}

// copyFrame copies f into dst, which has room for it. A frame of 64 to
// 128 bytes (a small packet, encapsulated) is two overlapping copies of 64
// bytes, a few wide moves in line, in place of a call to memmove (which
// copy of a variable length is).
func copyFrame(dst, f []byte) {
	if n := len(f); n >= 64 && n <= 128 && len(dst) >= n {
		*(*line)(unsafe.Pointer(&dst[0])) = *(*line)(unsafe.Pointer(&f[0]))
		*(*line)(unsafe.Pointer(&dst[n-64])) = *(*line)(unsafe.Pointer(&f[n-64]))
		return
	}
	copy(dst, f)
}

// line is 64 bytes that a copy moves in line: a struct, which the compiler
// copies with a few wide moves (an array it copies with memmove, in case
// the two overlap), of bytes, so that it may lie at any address.
type line struct{ b [64]byte }
