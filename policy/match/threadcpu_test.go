package match

import (
	"time"

	"github.com/nicpath/nicpath/internal/threadcpu"
)

// threadCPU is the CPU time the calling OS thread has used, to the
// nanosecond (0 where the system cannot tell; benchmarks then leave out
// their per-thread figures); callers lock their goroutine to its thread.
func threadCPU() time.Duration {
	d, _ := threadcpu.Now()
	return d
}
