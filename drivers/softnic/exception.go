package softnic

import (
	"context"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// The exception path: frames for the host wait in a bounded queue with their
// metadata until ReadExceptions takes them; Inject sends frames out of a port
// as they are.

// excQueue is the exception path: a bounded queue of frames with metadata.
type excQueue struct {
	ring
	meta   []hal.Exception // Buf unused
	notify chan struct{}
	done   chan struct{}
}

func (q *excQueue) init(size, frameCap int) {
	q.ring.init(size, frameCap)
	q.meta = make([]hal.Exception, size)
	q.notify = make(chan struct{}, 1)
	q.done = make(chan struct{})
}

func (q *excQueue) close() { close(q.done) }

// putExc queues one exception; q.mu must be held.
func (q *excQueue) putExc(f []byte, m hal.Exception) bool {
	s := q.slot(q.n)
	if !q.put(f) {
		return false
	}
	q.meta[s] = m
	return true
}

func (q *excQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// ReadExceptions fills batch with queued exception packets (see
// hal.ExceptionPath). It blocks until one is there, ctx is done or the NIC
// is closed.
func (n *NIC) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	q := &n.exc
	for {
		if n.closed.Load() {
			return 0, hal.ErrClosed
		}
		if k := q.take(batch); k > 0 || len(batch) == 0 {
			return k, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-q.done:
			return 0, hal.ErrClosed
		case <-q.notify:
		}
	}
}

func (q *excQueue) take(batch []hal.Exception) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := 0
	for ; i < len(batch) && q.n > 0; i++ {
		s := q.head
		m := q.meta[s]
		f := q.slots[s][:q.lens[s]]
		m.Buf = batch[i].Buf
		m.Len = copy(m.Buf, f)
		m.Truncated = m.Len < len(f)
		batch[i] = m
		q.head = q.slot(1)
		q.n--
	}
	if q.n > 0 {
		q.wake() // more for the next reader
	}
	return i
}

// Inject sends frames out of port as they are, bypassing the flow table.
// A frame shorter than an Ethernet header or longer than the port's MTU
// allows is refused (counted as malformed or MTU drops); frames that find
// the ring full are dropped with ReasonQueueFull. Either way the others are
// sent and Inject says how many were not.
func (n *NIC) Inject(ctx context.Context, port hal.PortID, frames [][]byte) error {
	if n.closed.Load() {
		return hal.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := n.port(port)
	if p == nil {
		return fmt.Errorf("%s: inject: port %d: %w", DriverName, port, hal.ErrNotFound)
	}
	var bad, full int
	var pkts, bytes uint64
	p.tx.mu.Lock()
	wasEmpty := p.tx.n == 0
	for _, f := range frames {
		switch {
		case len(f) < 14:
			n.countStat(true, hal.ReasonMalformed, 1)
			bad++
		case len(f) > p.info.MTU+l2Allowance:
			n.countStat(true, hal.ReasonMTU, 1)
			bad++
		case !p.tx.put(f):
			full++
		default:
			pkts++
			bytes += uint64(len(f))
		}
	}
	// Counted before the frames can be taken (as in the datapath).
	p.txPkts.Add(pkts)
	p.txBytes.Add(bytes)
	p.tx.mu.Unlock()
	if wasEmpty && pkts > 0 {
		p.wake()
	}
	if bad+full > 0 {
		p.drops.Add(uint64(bad + full))
		n.countStat(true, hal.ReasonQueueFull, uint64(full))
		if full > 0 {
			return fmt.Errorf("%s: inject on port %d: %d of %d frames dropped (%d invalid): %w", DriverName, port, bad+full, len(frames), bad, ErrRingFull)
		}
		return fmt.Errorf("%s: inject on port %d: %d of %d frames refused: shorter than an Ethernet header or over the MTU", DriverName, port, bad, len(frames))
	}
	return nil
}
