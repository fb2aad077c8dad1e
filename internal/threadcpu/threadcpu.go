// Package threadcpu reads the CPU time the calling OS thread has used, to
// the nanosecond, so that a benchmark locked to its thread
// (runtime.LockOSThread) can report what a step cost in CPU apart from the
// time other processes on a shared machine took.
//
// It reads the thread's scheduler clock (CLOCK_THREAD_CPUTIME_ID), not
// getrusage(RUSAGE_THREAD): getrusage's split into user and system time
// follows the scheduler's ticks, so a step of a few microseconds mostly
// reads as nothing and now and then as a whole tick, and a sum of such
// steps is noise.
package threadcpu

import "time"

// Now returns the CPU time the calling thread has used, and false where
// the system has no per-thread clock (the figure is then left out, never
// replaced by a guess).
func Now() (time.Duration, bool) { return now() }
