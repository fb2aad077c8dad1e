//go:build linux

package afpacket

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/drivers/softnic"
	rawsock "github.com/nicpath/nicpath/internal/afpacket"
)

// Binding moves frames between one softnic port and one interface.
type Binding struct {
	port   *softnic.Port
	ifname string
	sock   *rawsock.Socket
	log    *slog.Logger
	c      counters

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// Bind opens an AF_PACKET socket on the interface ifname (in the caller's
// network namespace) and starts moving frames between it and port.
func Bind(port *softnic.Port, ifname string, o Options) (*Binding, error) {
	// Promiscuous: a vport receives frames for addresses that are not the
	// interface's. Our own transmissions are not frames for the NIC.
	sock, err := rawsock.Open(ifname, rawsock.Options{Promisc: true, SkipOutgoing: true, PollInterval: pollInterval})
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Binding{port: port, ifname: ifname, sock: sock, done: make(chan struct{}),
		log: log.With("port", port.Info().Name, "interface", ifname)}
	b.wg.Add(2)
	go b.readLoop()
	go b.writeLoop()
	return b, nil
}

// Interface is the bound interface's name.
func (b *Binding) Interface() string { return b.ifname }

// Stats returns the binding's counters.
func (b *Binding) Stats() Stats { return b.c.snapshot() }

// Close stops the binding and closes its socket.
func (b *Binding) Close() error {
	b.closeOnce.Do(func() {
		close(b.done)
		b.wg.Wait()
		b.sock.Close()
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

// readLoop reads frames from the interface, a batch at a time: one blocking
// read (bounded by pollInterval), then whatever else is already queued.
func (b *Binding) readLoop() {
	defer b.wg.Done()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	frames := make([][]byte, 0, batch)
	for !b.closed() {
		frames = frames[:0]
		for len(frames) < batch {
			flags := 0
			if len(frames) > 0 {
				flags = unix.MSG_DONTWAIT
			}
			f, status, err := b.sock.RecvFlags(bufs[len(frames)], flags)
			if err != nil {
				if !errors.Is(err, rawsock.ErrTimeout) {
					b.c.rxErr.Add(1)
					b.log.Debug("read", "err", err)
				}
				break
			}
			if status&unix.TP_STATUS_CSUMNOTREADY != 0 {
				completeChecksum(f)
			}
			frames = append(frames, f)
		}
		if len(frames) == 0 {
			continue
		}
		// Counted first: Send runs the frames through the NIC to completion,
		// and whoever sees the result may look at the counters.
		b.c.rx.Add(uint64(len(frames)))
		if _, err := b.port.Send(frames); err != nil {
			b.log.Debug("send into the NIC", "err", err)
			return
		}
	}
}

// writeLoop moves the frames the NIC put in the port's ring to the
// interface. When the ring is empty it waits on the port's wake-up.
func (b *Binding) writeLoop() {
	defer b.wg.Done()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	sizes := make([]int, batch)
	idle := time.NewTimer(idleCheck)
	defer idle.Stop()
	for !b.closed() {
		n, err := b.port.Recv(bufs, sizes)
		if err != nil {
			b.log.Debug("recv from the NIC", "err", err)
		}
		if n == 0 {
			idle.Reset(idleCheck)
			select {
			case <-b.port.Ready():
			case <-b.done:
			case <-idle.C:
			}
			continue
		}
		for i := 0; i < n; i++ {
			if err := b.sock.Send(bufs[i][:sizes[i]]); err != nil {
				b.c.txErr.Add(1)
				b.log.Debug("write", "err", err, "len", sizes[i])
				continue
			}
			b.c.tx.Add(1)
		}
	}
}
