package directory

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"
)

// Dest is a destination resolved through the directory.
type Dest struct {
	VNI uint32
	CA  netip.Addr
}

// CacheConfig tunes a Cache.
type CacheConfig struct {
	// TTL is how long a record is used before it is looked up again
	// (default 30s); NegativeTTL how long "no record" is (default 2s).
	TTL, NegativeTTL time.Duration
	// Timeout bounds one lookup (default 1s).
	Timeout time.Duration
	// Clock, when set, replaces time.Now.
	Clock func() time.Time
}

// Entry is what a Cache knows of a destination.
type Entry struct {
	Record  Record
	Err     error     // ErrNotFound, a timeout, or nil
	Expires time.Time // when the answer is looked up again
}

// CacheStats counts a cache's work.
type CacheStats struct {
	Hits, Misses, Lookups, NotFound, Timeouts, Errors uint64
}

// Cache keeps a resolver's answers for a TTL (misses for NegativeTTL),
// merges concurrent lookups of one destination and bounds each lookup.
type Cache struct {
	r   Resolver
	cfg CacheConfig

	mu       sync.Mutex
	entries  map[Dest]Entry
	inflight map[Dest]*call
	stats    CacheStats
}

type call struct {
	done chan struct{}
	e    Entry
}

// NewCache returns a cache in front of r.
func NewCache(r Resolver, cfg CacheConfig) *Cache {
	if cfg.TTL <= 0 {
		cfg.TTL = 30 * time.Second
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 2 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Cache{r: r, cfg: cfg, entries: map[Dest]Entry{}, inflight: map[Dest]*call{}}
}

// Get returns the cached answer for d if it has not expired; it never
// looks anything up.
func (c *Cache) Get(d Dest) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[d]
	if ok && c.cfg.Clock().Before(e.Expires) {
		c.stats.Hits++
		return e, true
	}
	c.stats.Misses++
	return Entry{}, false
}

// Peek returns the last answer for d, expired or not.
func (c *Cache) Peek(d Dest) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[d]
	return e, ok
}

// Lookup starts a lookup of d unless one runs already, and calls done (on
// the lookup's goroutine) with its answer, which the cache keeps.
func (c *Cache) Lookup(ctx context.Context, d Dest, done func(Entry)) {
	c.mu.Lock()
	if cl, ok := c.inflight[d]; ok {
		c.mu.Unlock()
		if done != nil {
			go func() { <-cl.done; done(cl.e) }()
		}
		return
	}
	cl := &call{done: make(chan struct{})}
	c.inflight[d] = cl
	c.stats.Lookups++
	c.mu.Unlock()
	go func() {
		e := c.resolve(ctx, d)
		c.mu.Lock()
		cl.e = e
		delete(c.inflight, d)
		c.entries[d] = e
		c.mu.Unlock()
		close(cl.done)
		if done != nil {
			done(e)
		}
	}()
}

// Resolve returns d's answer from the cache, or looks it up and waits.
func (c *Cache) Resolve(ctx context.Context, d Dest) Entry {
	if e, ok := c.Get(d); ok {
		return e
	}
	return c.Fetch(ctx, d)
}

// Fetch looks d up (joining a lookup that runs) and waits for the answer.
func (c *Cache) Fetch(ctx context.Context, d Dest) Entry {
	ch := make(chan Entry, 1)
	c.Lookup(ctx, d, func(e Entry) { ch <- e })
	select {
	case e := <-ch:
		return e
	case <-ctx.Done():
		return Entry{Err: ctx.Err()}
	}
}

func (c *Cache) resolve(ctx context.Context, d Dest) Entry {
	lctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	r, err := c.r.Resolve(lctx, d.VNI, d.CA)
	cancel()
	now := c.cfg.Clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil:
		return Entry{Record: r, Expires: now.Add(c.cfg.TTL)}
	case errors.Is(err, ErrNotFound):
		c.stats.NotFound++
		return Entry{Err: ErrNotFound, Expires: now.Add(c.cfg.NegativeTTL)}
	case errors.Is(err, context.DeadlineExceeded) || lctx.Err() != nil:
		c.stats.Timeouts++
		// A timeout is not an answer: the next packet looks up again.
		return Entry{Err: ErrTimeout, Expires: now}
	default:
		c.stats.Errors++
		return Entry{Err: err, Expires: now}
	}
}

// ErrTimeout: the lookup did not finish within the cache's Timeout.
var ErrTimeout = errors.New("directory: lookup timed out")

// Expired returns the destinations whose records have expired: a caller
// revalidating the flows installed from them looks them up again.
func (c *Cache) Expired() []Dest {
	now := c.cfg.Clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Dest
	for d, e := range c.entries {
		if e.Err == nil && !now.Before(e.Expires) {
			if _, busy := c.inflight[d]; !busy {
				out = append(out, d)
			}
		}
	}
	return out
}

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}
