package testclock

import (
	"sync"
	"testing"
	"time"
)

// The clock stands still until advanced, and advances add up, also from
// several goroutines at once.
func TestClock(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	c := New(start)
	for range 2 { // read twice: a clock that stands still reads the same
		if got := c.Now(); !got.Equal(start) {
			t.Fatalf("a new clock reads %v, want %v", got, start)
		}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Advance(time.Second)
			_ = c.Now()
		}()
	}
	wg.Wait()
	if got := c.Now().Sub(start); got != 8*time.Second {
		t.Fatalf("advanced by %v, want 8s", got)
	}
}
