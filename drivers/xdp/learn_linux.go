//go:build linux

package xdp

import (
	"context"

	"github.com/nicpath/nicpath/hal"
)

// Address learning (hal.AddressLearner, with hal/learn). Every frame a
// vport sends that no rule forwards reaches the exception path as it
// arrived: a flow's first packet (a miss), and ARP and neighbour discovery
// (misses, or the vswitch's ToHost rules for them), which the program
// hands to the host and drops, never to the kernel's stack. So ReadExceptions learns
// from each frame it reads from a vport, before the copy into the
// caller's buffer (a truncated exception still teaches its source); the
// XDP program does no work for it. A frame from an uplink, or one that
// arrived tunnelled, teaches nothing; a sealed frame never reaches the
// host (the program drops it). Learning thus follows the host's reading:
// a frame that waits in the perf ring is learned when the host reads it,
// and one the ring lost (Stats' lost samples) is not learned at all.

// learnFrom learns from the frame of exception e, as it arrived.
func (n *NIC) learnFrom(e *hal.Exception, frame []byte) {
	if e.VNI != 0 {
		return
	}
	if p, ok := n.ports[e.InPort]; ok && p.Kind == hal.PortVPort {
		n.learn.Frame(e.InPort, frame)
	}
}

// ReadLearned fills batch with the addresses the vports used, as
// ReadExceptions met them (see hal.AddressLearner and hal/learn). It
// blocks until one is there, ctx is done or the NIC is closed.
func (n *NIC) ReadLearned(ctx context.Context, batch []hal.LearnedAddress) (int, error) {
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return 0, hal.ErrClosed
	}
	return n.learn.Read(ctx, batch)
}

// LearnedDropped counts learned-address reports dropped because the
// reader had not taken the learn.QueueMax earlier ones.
func (n *NIC) LearnedDropped() uint64 { return n.learn.Dropped() }
