//go:build linux

package xdp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf/perf"
	"github.com/nicpath/nicpath/hal"
)

// The exception path: the program hands frames to the host as perf events
// (bpf/lib/actions.h: to_host); ReadExceptions reads them, Inject sends frames
// out of a port as they are.

// ReadExceptions returns frames the datapath handed to the host: misses,
// ToHost actions and frames it could not process, each with its reason.
func (n *NIC) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	n.readMu.Lock()
	defer n.readMu.Unlock()
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return 0, hal.ErrClosed
	}
	// The end of ctx interrupts a wait for the first record (the reader's
	// Flush), rather than the wait ending now and then to look at ctx: an
	// idle NIC's reader sleeps until a record comes. Waking every 50 ms
	// cost more than its own system call: each return from a blocking
	// call wakes Go's runtime monitor, which then polls every 20 µs for a
	// millisecond or more. Profiled under peerbed's CPS load (softnic and
	// xdp vswitchds in one process), the monitor took 5% of the process's
	// CPU samples during the softnic bed's turns, 2% with the wait at 5 s.
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { n.reader.Flush() })
		defer stop()
	}
	count := 0
	for count < len(batch) {
		if count == 0 {
			n.reader.SetDeadline(time.Time{})
		} else {
			n.reader.SetDeadline(time.Now())
		}
		err := n.reader.ReadInto(&n.rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, perf.ErrFlushed):
			if count > 0 {
				return count, nil
			}
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			// A flush left by an earlier call whose ctx ended as it
			// returned.
			continue
		case errors.Is(err, perf.ErrClosed):
			return count, hal.ErrClosed
		case err != nil:
			return count, &hal.OpError{Driver: DriverName, Op: "read exceptions", Err: err}
		}
		if n.rec.LostSamples > 0 {
			n.lost.Add(n.rec.LostSamples)
			continue
		}
		raw := n.rec.RawSample
		if len(raw) < excMetaLen {
			continue
		}
		e := &batch[count]
		e.Rule = hal.RuleID(binary.NativeEndian.Uint64(raw[0:8]))
		e.InPort = hal.PortID(binary.NativeEndian.Uint32(raw[8:12]))
		e.Reason = hal.Reason(binary.NativeEndian.Uint32(raw[12:16]))
		e.VNI = binary.NativeEndian.Uint32(raw[16:20])
		flen := int(binary.NativeEndian.Uint32(raw[20:24]))
		frame := raw[excMetaLen:]
		if flen < len(frame) {
			frame = frame[:flen] // the ring pads samples to 8 bytes
		}
		e.Len = copy(e.Buf, frame)
		e.Truncated = e.Len < len(frame)
		n.learnFrom(e, frame)
		count++
	}
	return count, nil
}

// Inject sends frames out of port as they are, through an AF_PACKET socket
// on the port's interface: they leave on the wire (or the veth peer) without
// meeting the XDP program, which only sees received frames.
func (n *NIC) Inject(ctx context.Context, id hal.PortID, frames [][]byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	p, ok := n.ports[id]
	if !ok {
		return fmt.Errorf("xdp: inject on port %d: %w", id, hal.ErrNotFound)
	}
	if p.sock == nil {
		return hal.Unsupported(DriverName, "inject", "port %d has no device", id)
	}
	for _, f := range frames {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.sock.Send(f); err != nil {
			return &hal.OpError{Driver: DriverName, Op: "inject", Err: err}
		}
		p.injectN.Add(1)
		p.injectB.Add(uint64(len(f)))
	}
	return nil
}
