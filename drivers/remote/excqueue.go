package remote

import (
	"sync"

	"github.com/nicpath/nicpath/hal"
)

// excQueue is the host side's buffer of exceptions between the channel's
// reader and ReadExceptions: a ring of slots with their own frame buffers,
// reused. The NIC side sends only while the host has credit, so put finds
// room; if a peer sends more anyway, the extra frames are dropped and
// counted, never buffered without bound.
type excQueue struct {
	mu      sync.Mutex // guards the ring
	slots   []excSlot
	head, n int
	dropped uint64

	notify chan struct{} // a frame arrived (capacity 1)
	closed chan struct{}
	once   sync.Once
}

type excSlot struct {
	x   hal.Exception // Buf unused
	buf []byte
}

func (q *excQueue) init(n int) {
	q.slots = make([]excSlot, n)
	q.notify = make(chan struct{}, 1)
	q.closed = make(chan struct{})
}

// room is how many more exceptions fit.
func (q *excQueue) room() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.slots) - q.n
}

func (q *excQueue) droppedCount() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// put copies x (whose frame is x.Buf[:x.Len]) into the ring.
func (q *excQueue) put(x *hal.Exception) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == len(q.slots) {
		q.dropped++
		return
	}
	s := &q.slots[(q.head+q.n)%len(q.slots)]
	s.x = *x
	s.x.Buf = nil
	s.buf = append(s.buf[:0], x.Buf[:x.Len]...)
	q.n++
}

func (q *excQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// take copies up to len(batch) exceptions into the callers' buffers.
func (q *excQueue) take(batch []hal.Exception) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := 0
	for ; i < len(batch) && q.n > 0; i++ {
		s := &q.slots[q.head]
		buf := batch[i].Buf
		batch[i] = s.x
		batch[i].Buf = buf
		batch[i].Len = copy(buf, s.buf)
		batch[i].Truncated = s.x.Truncated || batch[i].Len < len(s.buf)
		q.head = (q.head + 1) % len(q.slots)
		q.n--
	}
	if q.n > 0 {
		q.wake() // more for the next reader
	}
	return i
}

func (q *excQueue) close() { q.once.Do(func() { close(q.closed) }) }
