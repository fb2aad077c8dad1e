//go:build amd64 || arm64

package vswitch

// prefetch asks the CPU to start loading the cache lines at addrs[:n]
// (addresses of memory the caller keeps alive) without waiting for them:
// unlike a load, a prefetch does not hold the instructions behind it, so
// the misses of a whole batch are in flight together. It is one call per
// batch, not per address: an assembly function is not inlined. On
// architectures without an implementation (prefetch_other.go) it does
// nothing and lookups take their cache misses as they come.
//
//go:noescape
func prefetch(addrs *[prefetchMax]uintptr, n int)
