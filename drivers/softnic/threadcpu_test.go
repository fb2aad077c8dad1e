package softnic

import (
	"time"

	"github.com/nicpath/nicpath/internal/threadcpu"
)

// threadCPU returns the CPU time the calling OS thread has used, to the
// nanosecond (the thread's scheduler clock), so that a benchmark locked to
// its thread (runtime.LockOSThread) can report what it cost in CPU apart
// from the time other processes on a shared machine took, down to steps of
// a few microseconds; false where the system has no per-thread clock (the
// figure is then left out).
func threadCPU() (time.Duration, bool) { return threadcpu.Now() }
