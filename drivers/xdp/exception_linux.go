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
	count := 0
	for count < len(batch) {
		if count == 0 {
			// Wake up now and then to notice ctx.
			d := time.Now().Add(50 * time.Millisecond)
			if dl, ok := ctx.Deadline(); ok && dl.Before(d) {
				d = dl
			}
			n.reader.SetDeadline(d)
		} else {
			n.reader.SetDeadline(time.Now())
		}
		err := n.reader.ReadInto(&n.rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if count > 0 {
				return count, nil
			}
			if err := ctx.Err(); err != nil {
				return 0, err
			}
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
