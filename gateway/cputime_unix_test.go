//go:build unix

package gateway_test

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time this process has used (every thread, so the
// garbage collector's background work counts too). Benchmarks report it
// beside wall time because the machines they run on are often shared: wall
// time then measures the neighbours as much as the code.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
