//go:build !amd64 && !arm64

package vswitch

// prefetch does nothing where no assembly version exists: lookups then
// take their cache misses as they come.
func prefetch(addrs *[prefetchMax]uintptr, n int) {}
