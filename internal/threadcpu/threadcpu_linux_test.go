//go:build linux

package threadcpu

import (
	"runtime"
	"testing"
	"time"
)

// spin does a little work the compiler cannot drop.
func spin(n int) uint64 {
	x := uint64(n)
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

// The clock reads short steps: a step of some microseconds of work reads
// as more than nothing (getrusage's thread time reads most such steps as
// zero), a thread's clock never goes back, and it never runs ahead of the
// wall clock.
func TestNowReadsShortSteps(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	w0 := time.Now()
	c0, ok := Now()
	if !ok {
		t.Fatal("no per-thread CPU clock on Linux")
	}
	prev, zero := c0, 0
	var sink uint64
	const steps = 200
	for i := 0; i < steps; i++ {
		sink += spin(20000)
		c, _ := Now()
		switch {
		case c < prev:
			t.Fatalf("the clock went back: %v after %v", c, prev)
		case c == prev:
			zero++
		}
		prev = c
	}
	wall := time.Since(w0)
	if zero > steps/10 {
		t.Errorf("%d of %d steps of work read as no CPU", zero, steps)
	}
	if used := prev - c0; used > wall+time.Millisecond {
		t.Errorf("one thread used %v of CPU in %v", used, wall)
	}
	_ = sink
}

// A thread that sleeps uses no CPU: the clock moves by far less than the
// sleep.
func TestNowIgnoresSleep(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c0, _ := Now()
	time.Sleep(50 * time.Millisecond)
	c1, _ := Now()
	if d := c1 - c0; d >= 25*time.Millisecond {
		t.Fatalf("a 50 ms sleep used %v of CPU", d)
	}
}
