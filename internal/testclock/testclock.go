// Package testclock is a clock that tests move by hand, for code that takes
// its time from a func() time.Time (rekeying, key rotation, aging): Now is
// that func, Advance moves it. Safe for concurrent use: the code under test
// reads it from its own goroutines while the test advances it.
package testclock

import (
	"sync"
	"time"
)

// Clock is a time that stands still until Advance moves it.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New is a clock standing at start.
func New(start time.Time) *Clock { return &Clock{t: start} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
