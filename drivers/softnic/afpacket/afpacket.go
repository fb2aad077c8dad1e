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
	RxFrames uint64 // frames read from the interface and handed to the port
	TxFrames uint64 // frames taken from the port and written to the interface
	RxErrors uint64 // socket read errors other than timeouts
	TxErrors uint64 // frames the interface refused (too long, link down, …)
}

type counters struct {
	rx, tx, rxErr, txErr atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{RxFrames: c.rx.Load(), TxFrames: c.tx.Load(), RxErrors: c.rxErr.Load(), TxErrors: c.txErr.Load()}
}

// batch is how many frames move through the NIC in one Send or Recv: the
// NIC works on bursts of softnic.MaxBurst (64) frames, so a batch of that
// size costs one burst.
const batch = 64

// maxIdleSleep bounds how long an idle binding waits before it looks at the
// port's transmit ring again: short enough that a ping's reply is not
// noticeably delayed, long enough that idle bindings cost nothing measurable
// on a shared machine.
const maxIdleSleep = time.Millisecond

// pollInterval bounds how long a read blocks before it checks for Close.
const pollInterval = 100 * time.Millisecond
