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

// idleCheck bounds how long an idle binding waits on the port's wake-up
// before it looks at the transmit ring anyway (and at whether it is closed).
const idleCheck = 100 * time.Millisecond

// pollInterval bounds how long a read blocks before it checks for Close.
const pollInterval = 100 * time.Millisecond
