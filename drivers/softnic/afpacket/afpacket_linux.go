//go:build linux

package afpacket

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	rawsock "github.com/nicpath/nicpath/internal/afpacket"
)

// Binding moves frames between one softnic port and one interface.
type Binding struct {
	port   *softnic.Port
	ifname string
	sock   *rawsock.Socket // receives
	// txSock sends: a socket of its own, which receives nothing, so that
	// no one waits on it. The kernel tells a socket's waiters that it has
	// room again each time a frame it sent is freed; the receiving
	// socket's waiter (the ring's epoll) was woken so, and looked away,
	// for every frame the binding sent.
	txSock *rawsock.Socket
	// txr is the transmit ring (see txRing), nil when the kernel refused
	// it: frames that do not go through it go out on txSock.
	txr  *txRing
	ring *rxRing // nil: frames are read with recvmsg
	wait *ringWaiter
	log  *slog.Logger
	c    counters
	// fromHost keeps an uplink's frames from the host's stack until the
	// host's stack can use the interface (see takeFromHost); nil when it
	// never did.
	fromHost *hostTake

	// txMu serialises taking frames from the port's ring and writing
	// them, between the binding's own writeLoop and the readers of other
	// bindings that transmit what their burst produced (see drainPeers);
	// tx is its state.
	txMu sync.Mutex
	tx   *transmitter
	// kick wakes writeLoop: frames wait in the port's ring that no
	// reader will take (see onReady).
	kick chan struct{}
	// pending is set when frames land in the port's empty ring, and
	// cleared by whoever then takes the ring (under txMu, before it reads
	// it): a drain after a burst skips a binding without it.
	pending atomic.Bool

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// Bind opens an AF_PACKET socket on the interface ifname (in the caller's
// network namespace) and starts moving frames between it and port.
func Bind(port *softnic.Port, ifname string, o Options) (*Binding, error) {
	// Promiscuous: a vport receives frames for addresses that are not the
	// interface's. Our own transmissions are not frames for the NIC. The
	// virtio-net header says which frames carry a partial checksum and
	// which are GSO super-frames.
	sock, err := rawsock.Open(ifname, rawsock.Options{Promisc: true, SkipOutgoing: true, PollInterval: pollInterval, VnetHdr: true})
	if err != nil {
		return nil, err
	}
	// Frames go out as they are: a virtio-net header would only ever ask
	// for nothing.
	txSock, err := rawsock.Open(ifname, rawsock.Options{SendOnly: true})
	if err != nil {
		sock.Close()
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Binding{port: port, ifname: ifname, sock: sock, txSock: txSock, done: make(chan struct{}), kick: make(chan struct{}, 1),
		tx: newTransmitter(), log: log.With("port", port.Info().Name, "interface", ifname)}
	if !testNoTxRing {
		if b.txr, err = setupTxRing(ifname, port.Info().MTU); err != nil {
			b.log.Warn("no transmit ring: frames are sent with sendmmsg", "err", err)
		}
	}
	ring, err := (*rxRing)(nil), errors.New("the test asked for none")
	if !testNoRing {
		ring, err = setupRing(sock.FD(), port.Info().MTU)
	}
	if err != nil {
		// Reading with recvmsg works as well, one system call a frame.
		b.log.Warn("no receive ring: frames are read one by one", "err", err)
	} else {
		b.ring = ring
		if b.wait, err = newRingWaiter(sock.FD()); err != nil {
			b.log.Warn("the ring is waited on with poll(2)", "err", err)
		}
	}
	if port.Info().Kind == hal.PortUplink {
		var whyNot string
		b.fromHost, whyNot, err = takeFromHost(ifname, sock.Ifindex(), b.log, &b.c.toHost)
		switch {
		case err != nil:
			b.log.Warn("the host's stack goes on handling the uplink's frames", "err", err)
		case whyNot != "":
			b.log.Debug("the host's stack may use the uplink: it sees its frames", "why", whyNot)
		}
	}
	register(b)
	port.OnReady(b.onReady)
	b.wg.Add(2)
	go b.readLoop()
	go b.writeLoop()
	return b, nil
}

// testNoRing has Bind read with recvmsg, as it does when the kernel
// refuses the ring (tests of that path set it).
var testNoRing bool

// testNoTxRing has Bind send with sendmmsg alone, as it does when the
// kernel refuses the transmit ring (tests of that path set it).
var testNoTxRing bool

// Interface is the bound interface's name.
func (b *Binding) Interface() string { return b.ifname }

// Stats returns the binding's counters.
func (b *Binding) Stats() Stats { return b.c.snapshot() }

// TakesFromHost says whether the binding keeps the interface's frames from
// the host's stack now: an uplink the host's stack cannot use (see the
// package doc). It turns false for good when the host's stack becomes
// able to use the interface (Stats.ReturnedToHost counts it).
func (b *Binding) TakesFromHost() bool { return b.fromHost != nil && b.fromHost.takes() }

// Close stops the binding and closes its socket.
func (b *Binding) Close() error {
	b.closeOnce.Do(func() {
		unregister(b)
		b.port.OnReady(nil)
		close(b.done)
		if b.wait != nil {
			b.wait.close()
		}
		b.wg.Wait()
		// A reader of another binding may still hold this one from
		// before it left the registry: the socket closes under txMu, and
		// a drain after that finds tx nil.
		b.txMu.Lock()
		b.tx = nil
		if b.ring != nil {
			b.ring.close()
		}
		b.sock.Close()
		b.txSock.Close()
		if b.txr != nil {
			b.txr.close()
		}
		b.txMu.Unlock()
		if b.fromHost != nil {
			b.fromHost.Close()
		}
	})
	return nil
}

func (b *Binding) closed() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// reader is readLoop's state: the frames of the batch being gathered, in
// the receive buffers (frames as they arrived) and the segment buffers
// (segments of GSO super-frames).
type reader struct {
	b      *Binding
	rbufs  [][]byte
	sbufs  [][]byte
	frames [][]byte
	ri, si int // next free receive and segment buffer
	seg    wire.Segmenter
	maxL3  int
	// The ring's slots read since the last flush (their frames are
	// handed to the NIC from the ring's memory), from first on.
	first, held int
	spurious    int // polls in a row that found the ring empty
	// ready says whether the ring has a frame or the binding closed
	// (ringWaiter.wait's condition), made once.
	ready func(uintptr) bool
}

// readLoop reads frames from the interface, a batch at a time: one blocking
// read (bounded by pollInterval), then whatever else is already queued.
//
// Every frame leaves the binding with complete checksums: a frame the
// kernel marks partial (NEEDS_CSUM in the virtio-net header: sent by a
// local stack through the veth or tap, checksum left to the "hardware")
// gets it completed at the offsets the header gives, whatever the headers
// around it (inner or outer, TCP or UDP, IPv4 or IPv6): a NIC with checksum
// offload. A GSO super-frame is cut into the segments a NIC with TSO/USO
// would send (wire.Segmenter), tunnelled ones included, each of at most
// the port's MTU. The binding always segments, rather than hand a
// super-frame through the NIC whole to an egress that takes GSO (another
// vport on the same host): the NIC's buffers, rings and exception queue
// are sized for the ports' MTUs and allocated up front (64 KiB slots would
// cost 64 MiB per port for a ring of 1024), rules match and count frames
// as the wire carries them, and every frame that leaves toward the wire
// must be MTU-sized anyway after encapsulation, which the NIC decides per
// rule. A segment too big for its egress after encapsulation goes to the
// host (hal.ReasonMTU), as any frame does.
func (b *Binding) readLoop() {
	defer b.wg.Done()
	r := newReader(b)
	for !b.closed() {
		if b.ring != nil {
			r.gatherRing()
			if len(r.frames) == 0 && r.held == 0 {
				r.pollRing()
				continue
			}
		} else {
			r.gather()
		}
		if !r.flush() {
			return
		}
	}
}

// gatherRing takes the frames the ring holds, up to a batch.
func (r *reader) gatherRing() {
	b, ring := r.b, r.b.ring
	for len(r.frames) < batch && r.held < batch {
		s, st, ok := ring.ready()
		if !ok {
			return
		}
		r.spurious = 0
		ring.next = (ring.next + 1) % ring.n
		r.held++
		f, h, skip, err := slotFrame(s, st)
		inBuf := false
		switch {
		case skip:
			continue
		case errors.Is(err, errCopy):
			// Too long for its slot: the whole frame waits on the queue.
			f, h, _, err = b.sock.RecvVnet(r.rbufs[r.ri], unix.MSG_DONTWAIT)
			if err != nil {
				b.c.dropped.Add(1)
				b.log.Debug("the copy of a long frame", "err", err)
				continue
			}
			inBuf = true
		case err != nil:
			b.c.dropped.Add(1)
			continue
		case h.IsGSO():
			// Cut from a buffer of its own: a flush in the middle gives
			// the slot back.
			f = r.rbufs[r.ri][:copy(r.rbufs[r.ri], f)]
		}
		if !r.take(f, &h, inBuf) {
			return
		}
	}
}

// pollRing waits until the ring has a frame: parked in the Go poller (see
// ringWaiter) until Close, or in poll(2) for at most pollInterval. The
// socket also polls readable when its queue holds a copy whose slot the
// kernel has not handed over yet (a moment); a copy with no slot (its
// slot was lost) would make it readable for ever, so after a few empty
// polls in a row one queued frame is dropped.
func (r *reader) pollRing() {
	if w := r.b.wait; w != nil {
		if r.ready == nil {
			r.ready = func(uintptr) bool {
				_, _, ok := r.b.ring.ready()
				return ok || r.b.closed()
			}
		}
		w.wait(r.ready)
		return
	}
	fds := []unix.PollFd{{Fd: int32(r.b.sock.FD()), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(pollInterval/time.Millisecond))
	if err != nil || n == 0 {
		return
	}
	if _, _, ok := r.b.ring.ready(); ok {
		return
	}
	if r.spurious++; r.spurious > 3 {
		r.spurious = 0
		if _, _, _, err := r.b.sock.RecvVnet(r.rbufs[0], unix.MSG_DONTWAIT); err == nil {
			r.b.c.dropped.Add(1)
		}
	}
}

func newReader(b *Binding) *reader {
	mtu := b.port.Info().MTU
	r := &reader{b: b, rbufs: make([][]byte, batch), sbufs: make([][]byte, batch), frames: make([][]byte, 0, batch), maxL3: mtu}
	for i := range r.rbufs {
		r.rbufs[i] = make([]byte, recvBufLen)
		// A segment is at most the MTU plus the L2 headers in front of
		// its L3 (outer) packet.
		r.sbufs[i] = make([]byte, mtu+64)
	}
	return r
}

// gather reads frames until the batch is full or nothing more is queued.
func (r *reader) gather() {
	b := r.b
	for len(r.frames) < batch {
		flags := 0
		if len(r.frames) > 0 {
			flags = unix.MSG_DONTWAIT
		}
		f, h, _, err := b.sock.RecvVnet(r.rbufs[r.ri], flags)
		switch {
		case err == nil:
		case errors.Is(err, rawsock.ErrTimeout):
			return
		case errors.Is(err, rawsock.ErrTruncated):
			b.c.dropped.Add(1)
			continue
		default:
			b.c.rxErr.Add(1)
			b.log.Debug("read", "err", err)
			return
		}
		if !r.take(f, &h, true) {
			return
		}
	}
}

// take adds the frame f, read into r.rbufs[r.ri] (inBuf) or lying in the
// ring, to the batch: cut into segments if it is a GSO super-frame, its
// partial checksum completed. It reports false when the NIC is closed.
func (r *reader) take(f []byte, h *wire.VirtioNetHdr, inBuf bool) bool {
	b := r.b
	if h.IsGSO() {
		return r.segment(f, h)
	}
	if h.NeedsCsum() {
		if err := wire.CompleteChecksum(f, int(h.CsumStart), int(h.CsumOffset)); err != nil {
			b.c.dropped.Add(1)
			return true
		}
		b.c.csum.Add(1)
	}
	r.frames = append(r.frames, f)
	if inBuf {
		r.ri++
	}
	return true
}

// segment cuts the super-frame f into the segment buffers, handing full
// batches to the NIC on the way. The super-frame's receive buffer is not
// taken: it is free again once f is cut. It reports false when the NIC is
// closed.
func (r *reader) segment(f []byte, h *wire.VirtioNetHdr) bool {
	b := r.b
	if err := r.seg.Init(f, h, r.maxL3); err != nil {
		b.c.dropped.Add(1)
		b.log.Debug("GSO frame not segmented", "err", err, "len", len(f), "gso_type", h.GSOType, "gso_size", h.GSOSize)
		return true
	}
	b.c.gso.Add(1)
	for !r.seg.Done() {
		if len(r.frames) == batch && !r.flush() {
			return false
		}
		n, err := r.seg.Next(r.sbufs[r.si])
		if err != nil {
			b.c.dropped.Add(1)
			return true
		}
		r.frames = append(r.frames, r.sbufs[r.si][:n])
		r.si++
	}
	return true
}

// flush hands the batch to the NIC and empties it. It reports false when
// the NIC is closed.
func (r *reader) flush() bool {
	if len(r.frames) == 0 {
		r.releaseSlots()
		return true
	}
	// Counted first: Send runs the frames through the NIC to completion,
	// and whoever sees the result may look at the counters.
	r.b.c.rx.Add(uint64(len(r.frames)))
	bursts.Add(1)
	_, err := r.b.port.Send(r.frames)
	bursts.Add(-1)
	r.frames, r.ri, r.si = r.frames[:0], 0, 0
	r.releaseSlots()
	if err != nil {
		r.b.log.Debug("send into the NIC", "err", err)
		return false
	}
	drainPeers()
	return true
}

// releaseSlots gives the ring's slots read since the last flush back to
// the kernel: the NIC copied their frames.
func (r *reader) releaseSlots() {
	if r.held == 0 {
		return
	}
	ring := r.b.ring
	ring.release(r.first, r.held)
	r.first = (r.first + r.held) % ring.n
	r.held = 0
}

// writeLoop moves the frames the NIC put in the port's ring to the
// interface, a batch per system call, when no reader did (see drainPeers):
// the frames the vswitch injects, those of a NIC's exception path, and
// what a reader left. When the ring is empty it waits for kick (see
// onReady).
func (b *Binding) writeLoop() {
	defer b.wg.Done()
	idle := time.NewTimer(idleCheck)
	defer idle.Stop()
	for !b.closed() {
		b.txMu.Lock()
		b.pending.Store(false)
		n := b.transmitLocked()
		b.txMu.Unlock()
		if n == 0 {
			idle.Reset(idleCheck)
			select {
			case <-b.kick:
			case <-b.done:
			case <-idle.C:
			}
		}
	}
}

// transmitter is what moving a batch from the port's ring to the socket
// needs, allocated once per binding; it is used under txMu.
type transmitter struct {
	bufs  [][]byte
	sizes []int
	out   [][]byte
}

func newTransmitter() *transmitter {
	t := &transmitter{bufs: make([][]byte, batch), sizes: make([]int, batch), out: make([][]byte, batch)}
	for i := range t.bufs {
		t.bufs[i] = make([]byte, 1<<16)
	}
	return t
}

// transmitLocked moves up to a batch of frames from the port's ring to
// the interface and returns how many it took from the ring; b.txMu is
// held.
func (b *Binding) transmitLocked() int {
	t := b.tx
	if t == nil {
		return 0 // closed
	}
	n, err := b.port.Recv(t.bufs, t.sizes)
	if err != nil {
		b.log.Debug("recv from the NIC", "err", err)
	}
	for i := 0; i < n; i++ {
		t.out[i] = t.bufs[i][:t.sizes[i]]
	}
	sent := 0
	if b.txr != nil {
		put, k, refused, err := b.txr.send(t.out[:n])
		sent = put
		b.c.tx.Add(uint64(k))
		if err != nil {
			b.c.txErr.Add(uint64(refused))
			b.log.Debug("write through the transmit ring", "err", err, "refused", refused)
		}
	}
	for sent < n {
		k, err := b.txSock.SendBatch(t.out[sent:n])
		b.c.tx.Add(uint64(k))
		sent += k
		if err != nil {
			// The frame at sent was refused; the others go on.
			b.c.txErr.Add(1)
			b.log.Debug("write", "err", err, "len", len(t.out[sent]))
			sent++
		}
	}
	return n
}

// The process's open bindings, for drainPeers: a copy-on-write slice,
// read without a lock.
var (
	liveMu sync.Mutex
	live   atomic.Pointer[[]*Binding]
)

func register(b *Binding) {
	liveMu.Lock()
	defer liveMu.Unlock()
	var next []*Binding
	if cur := live.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, b)
	live.Store(&next)
}

func unregister(b *Binding) {
	liveMu.Lock()
	defer liveMu.Unlock()
	cur := live.Load()
	if cur == nil {
		return
	}
	next := make([]*Binding, 0, len(*cur))
	for _, o := range *cur {
		if o != b {
			next = append(next, o)
		}
	}
	live.Store(&next)
}

// bursts counts the process's readers that are handing a burst to their
// NIC (in Port.Send).
var bursts atomic.Int32

// onReady is the port's OnReady: frames landed in its empty ring. While a
// reader hands a burst to its NIC it only marks the binding pending: that
// reader's drainPeers, which follows, takes them on its own goroutine
// (they are, almost always, what its burst produced) or wakes the writer.
// Waking the writer for every frame, as the port's Ready did, cost a
// goroutine's wake-up (often a thread's) per forwarded frame, for
// nothing: the reader had taken the frame by the time the writer ran.
// No frame is left behind: the mark comes before the count is read here,
// and a reader's count goes down before its drainPeers reads the marks,
// so either this call sees no reader in Send and wakes the writer, or a
// reader that was there sees the mark afterwards. A drain blocked on a
// full socket delays no other binding's frames: it is no longer counted.
func (b *Binding) onReady() {
	b.pending.Store(true)
	if bursts.Load() == 0 {
		b.signal()
	}
}

// signal wakes writeLoop; it never blocks.
func (b *Binding) signal() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// drainRounds bounds how many batches a reader moves out of one other
// binding's ring before it hands the rest to that binding's writeLoop and
// goes back to its own interface.
const drainRounds = 4

// drainPeers transmits, on the reader's goroutine, the frames that wait in
// the rings of the process's bindings, right after the reader's burst put
// them there (run to completion, as a poll-mode driver's forwarding loop
// does): the frame leaves without waiting for the writer's thread to be
// woken and scheduled. It looks at the bindings marked pending (frames
// landed in their empty rings since they were last taken). One whose ring
// another goroutine holds (its writer, another reader) gets its writer
// woken, in case the holder read the ring before the frames came. A ring
// that does not empty in drainRounds batches is handed to its writer.
func drainPeers() {
	all := live.Load()
	if all == nil {
		return
	}
	for _, o := range *all {
		if !o.pending.Load() {
			continue
		}
		if !o.txMu.TryLock() {
			o.signal()
			continue
		}
		o.pending.Store(false)
		left := true
		for range drainRounds {
			if o.transmitLocked() < batch {
				left = false
				break
			}
		}
		o.txMu.Unlock()
		if left {
			o.signal()
		}
	}
}
