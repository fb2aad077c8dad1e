package softnic

import (
	"context"
	"fmt"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// FarSide is the outside of every port of a NIC (what the VMs and the wire
// do), reached through the in-memory rings. It has the shape of the
// conformance suite's Harness, so test code hands it to the suite as it is.
type FarSide struct {
	NIC *NIC
}

// Send puts frames into the NIC on port, as if the VM or the wire sent
// them; they are processed before Send returns.
func (f FarSide) Send(port hal.PortID, frames ...[]byte) error {
	p, err := f.NIC.Port(port)
	if err != nil {
		return err
	}
	n, err := p.Send(frames)
	if err == nil && n != len(frames) {
		err = fmt.Errorf("softnic took %d of %d frames", n, len(frames))
	}
	return err
}

// Recv returns up to limit frames the NIC sent out of port, waiting until
// there is at least one or ctx is done (then it returns none and no error).
// Port.Recv does not block, so this polls the ring.
func (f FarSide) Recv(ctx context.Context, port hal.PortID, limit int) ([][]byte, error) {
	p, err := f.NIC.Port(port)
	if err != nil {
		return nil, err
	}
	limit = max(1, limit)
	for {
		// Buffers for what is there, no more: limit may be large.
		if k := min(limit, p.Pending()); k > 0 {
			bufs, sizes := make([][]byte, k), make([]int, k)
			for i := range bufs {
				bufs[i] = make([]byte, 1<<16)
			}
			n, err := p.Recv(bufs, sizes)
			out := make([][]byte, n)
			for i := range out {
				out[i] = bufs[i][:sizes[i]]
			}
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// Close does nothing: the NIC owns the rings.
func (FarSide) Close() error { return nil }
