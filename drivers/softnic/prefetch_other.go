//go:build !amd64 && !arm64

package softnic

// prefetch does nothing where no assembly version exists: lookups then
// take their cache misses when they compare, a few at a time.
func prefetch(addrs *[MaxBurst]uintptr, n int) {}
