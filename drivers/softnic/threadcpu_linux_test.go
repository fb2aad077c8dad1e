package softnic

import (
	"syscall"
	"time"
	"unsafe"
)

// threadCPU returns the CPU time the calling OS thread has used, so that a
// benchmark pinned to its thread (runtime.LockOSThread) can report what it
// cost in CPU, apart from the time other processes on a shared machine took.
func threadCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

// threadCPUPrecise is threadCPU from the thread's scheduler clock
// (CLOCK_THREAD_CPUTIME_ID), to the nanosecond: getrusage's figure moves
// only at the scheduler's ticks, which a benchmark that times calls of a
// few microseconds each cannot add up.
func threadCPUPrecise() (time.Duration, bool) {
	var ts syscall.Timespec
	if _, _, e := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, 3 /* CLOCK_THREAD_CPUTIME_ID */, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
