//go:build unix

package remote

import (
	"syscall"
	"time"
)

const cpuClock = true

// processCPU is the CPU time the process used so far, every thread.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
