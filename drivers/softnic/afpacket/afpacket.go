package afpacket

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// Options tunes a binding.
type Options struct {
	Logger *slog.Logger
}

// Stats are a binding's counters.
type Stats struct {
	RxFrames uint64 // frames handed to the port (each segment of a GSO super-frame counts one)
	TxFrames uint64 // frames taken from the port and written to the interface
	RxErrors uint64 // socket read errors other than timeouts
	TxErrors uint64 // frames the interface refused (too long, link down, dropped by a qdisc, …)
	// RxCsum counts frames whose partial transport checksum the binding
	// completed (the kernel's NEEDS_CSUM).
	RxCsum uint64
	// RxGSO counts GSO super-frames read from the interface and cut into
	// segments.
	RxGSO uint64
	// RxDropped counts frames read from the interface that the binding
	// could not hand over: longer than its buffer, a GSO super-frame it
	// cannot segment (see wire.Segmenter), a UDP segment over the port's
	// MTU, or checksum offsets outside the frame.
	RxDropped uint64
	// ReturnedToHost is 1 once the binding stopped keeping an uplink's
	// frames from the host's stack because the host's stack became able
	// to use the interface (an address appeared on it, IPv6 came on; see
	// TakesFromHost), 0 otherwise.
	ReturnedToHost uint64
}

type counters struct {
	rx, tx, rxErr, txErr, csum, gso, dropped, toHost atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{RxFrames: c.rx.Load(), TxFrames: c.tx.Load(), RxErrors: c.rxErr.Load(), TxErrors: c.txErr.Load(),
		RxCsum: c.csum.Load(), RxGSO: c.gso.Load(), RxDropped: c.dropped.Load(),
		ReturnedToHost: c.toHost.Load()}
}

// batch is how many frames move through the NIC in one Send or Recv: the
// NIC works on bursts of softnic.MaxBurst (64) frames, so a batch of that
// size costs one burst.
const batch = 64

// idleCheck bounds how long an idle binding's writer waits to be woken
// before it looks at the transmit ring anyway (and at whether it is
// closed). A variable: a test sets it to an hour, so that a frame whose
// wake-up was lost never leaves.
var idleCheck = 100 * time.Millisecond

// pollInterval bounds how long a read blocks before it checks for Close.
const pollInterval = 100 * time.Millisecond

// recvBufLen is the receive buffer of each frame of a batch: the virtio-net
// header and the largest GSO super-frame Linux builds (TCP keeps a
// super-frame, headers included, under the interface's gso_max_size of
// 64 KiB), with room for a tunnel's outer headers and a VLAN tag. A longer
// frame (an interface with BIG TCP's larger gso_max_size) is counted in
// RxDropped.
const recvBufLen = 10 + 1<<16 + 512
