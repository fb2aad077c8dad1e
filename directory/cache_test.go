package directory

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeResolver answers from a map, counting lookups; block makes every
// lookup wait until its context ends.
type fakeResolver struct {
	mu    sync.Mutex
	recs  map[Dest]Record
	block bool
	calls atomic.Int64
	gate  chan struct{}
}

func (f *fakeResolver) Resolve(ctx context.Context, vni uint32, ca netip.Addr) (Record, error) {
	f.calls.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	block := f.block
	r, ok := f.recs[Dest{vni, ca}]
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return Record{}, ctx.Err()
	}
	if !ok {
		return Record{}, ErrNotFound
	}
	return r, nil
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestCacheTTLAndNegative(t *testing.T) {
	ctx := context.Background()
	d := Dest{100, netip.MustParseAddr("10.0.0.5")}
	none := Dest{100, netip.MustParseAddr("10.0.0.9")}
	f := &fakeResolver{recs: map[Dest]Record{d: sample()}}
	clk := &fakeClock{t: time.Unix(1000, 0)}
	c := NewCache(f, CacheConfig{TTL: 10 * time.Second, NegativeTTL: time.Second, Clock: clk.Now})
	if e := c.Resolve(ctx, d); e.Err != nil || e.Record.VM != "vm5" {
		t.Fatalf("resolve: %+v", e)
	}
	if e := c.Resolve(ctx, none); !errors.Is(e.Err, ErrNotFound) {
		t.Fatalf("unknown: %+v", e)
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d lookups, want 2", n)
	}
	clk.Add(2 * time.Second)
	c.Resolve(ctx, d)    // still fresh
	c.Resolve(ctx, none) // negative entry expired: looked up again
	if n := f.calls.Load(); n != 3 {
		t.Fatalf("%d lookups after the negative TTL, want 3", n)
	}
	if len(c.Expired()) != 0 {
		t.Fatal("a fresh record counted expired")
	}
	clk.Add(10 * time.Second)
	if ex := c.Expired(); len(ex) != 1 || ex[0] != d {
		t.Fatalf("expired = %v, want [%v]", ex, d)
	}
	c.Resolve(ctx, d)
	if n := f.calls.Load(); n != 4 {
		t.Fatalf("%d lookups after the TTL, want 4", n)
	}
	st := c.Stats()
	if st.NotFound != 2 || st.Lookups != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCacheMergesAndTimesOut(t *testing.T) {
	ctx := context.Background()
	d := Dest{100, netip.MustParseAddr("10.0.0.5")}
	f := &fakeResolver{recs: map[Dest]Record{d: sample()}, gate: make(chan struct{})}
	c := NewCache(f, CacheConfig{Timeout: 50 * time.Millisecond})
	var wg sync.WaitGroup
	var got atomic.Int64
	for range 10 {
		wg.Add(1)
		c.Lookup(ctx, d, func(e Entry) {
			if e.Err == nil {
				got.Add(1)
			}
			wg.Done()
		})
	}
	close(f.gate)
	wg.Wait()
	if f.calls.Load() != 1 || got.Load() != 10 {
		t.Fatalf("%d lookups for 10 concurrent misses, %d answers", f.calls.Load(), got.Load())
	}
	f.block = true
	d2 := Dest{100, netip.MustParseAddr("10.0.0.6")}
	start := time.Now()
	e := c.Resolve(ctx, d2)
	if !errors.Is(e.Err, ErrTimeout) {
		t.Fatalf("blocked lookup: %+v", e)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("lookup not bounded by the timeout")
	}
	if _, ok := c.Get(d2); ok {
		t.Fatal("a timeout was cached as an answer")
	}
	if c.Stats().Timeouts != 1 {
		t.Fatalf("stats %+v", c.Stats())
	}
}
