package softnic

import (
	"context"

	"github.com/nicpath/nicpath/hal"
)

// Address learning (hal.AddressLearner, with hal/learn). The NIC learns
// from the frames of its vports that its exception path carries: every
// first packet of a flow (a miss), and ARP and neighbour discovery, which
// the vswitch hands to the host. A frame that hits a rule matched a source
// seen on its flow's first packet, so the fast path does no work for it.
// Learning happens in the datapath after the frame is queued for the host,
// outside the queue's lock (datapath.go), so the NIC learns whether or not
// the host reads its exceptions; a sealed frame's source is learned from
// the frame as it arrived, never from what was opened.

// ReadLearned fills batch with the addresses the vports used (see
// hal.AddressLearner and hal/learn). It blocks until one is there, ctx is
// done or the NIC is closed.
func (n *NIC) ReadLearned(ctx context.Context, batch []hal.LearnedAddress) (int, error) {
	if n.closed.Load() {
		return 0, hal.ErrClosed
	}
	return n.learn.Read(ctx, batch)
}

// LearnedDropped counts learned-address reports dropped because the
// reader had not taken the queue's learn.QueueMax earlier ones.
func (n *NIC) LearnedDropped() uint64 { return n.learn.Dropped() }
