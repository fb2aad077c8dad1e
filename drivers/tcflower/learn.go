package tcflower

import (
	"context"

	"github.com/nicpath/nicpath/hal"
)

// Address learning (hal.AddressLearner, with hal/learn). A vport's frame
// that no rule takes reaches the exception channel as it arrived: a flow's
// first packet, and ARP and neighbour discovery (misses, or the vswitch's
// ToHost rules for them; only an uplink passes ARP and neighbour discovery
// to the kernel's stack, for the tunnel devices' next hops). So
// ReadExceptions learns from each frame it reads from a vport; no filter
// does any work for it. A tunnelled miss (Exception.VNI set, from an
// uplink) and an uplink's frame teach nothing; sealed frames are dropped
// in chain 0 and never reach the channel. Learning follows the host's
// reading: a frame is learned when the host reads it. The NIC learns
// only where it has an exception path (Capabilities.AddressLearning).

// learnFrom learns from exception e, whose frame f is as the channel
// carried it: the two tags in front of the frame's EtherType are 802.1Q
// tags, which hal/learn skips, so f teaches what the frame as it arrived
// does, even when e's buffer was too short for it.
func (n *NIC) learnFrom(e *hal.Exception, f []byte) {
	if e.VNI != 0 || n.learn == nil {
		return
	}
	for _, p := range n.ports {
		if p.ID == e.InPort {
			if p.Kind == hal.PortVPort {
				n.learn.Frame(p.ID, f)
			}
			return
		}
	}
}

// ReadLearned fills batch with the addresses the vports used, as
// ReadExceptions met them (see hal.AddressLearner and hal/learn). It
// blocks until one is there, ctx is done or the NIC is closed.
func (n *NIC) ReadLearned(ctx context.Context, batch []hal.LearnedAddress) (int, error) {
	if n.stopped.Load() {
		return 0, hal.ErrClosed
	}
	if n.exc == nil || n.learn == nil {
		return 0, unsupported("address learning", "the NIC has no exception path to learn from (see Capabilities.Notes)")
	}
	return n.learn.Read(ctx, batch)
}

// LearnedDropped counts learned-address reports dropped because the
// reader had not taken the learn.QueueMax earlier ones.
func (n *NIC) LearnedDropped() uint64 {
	if n.learn == nil {
		return 0
	}
	return n.learn.Dropped()
}
