//go:build amd64 || arm64

package softnic

// prefetch asks the CPU to start loading the cache lines at addrs[:n]
// (addresses of memory the caller keeps alive) without waiting for them.
// It is one call per burst, not per address: an assembly function is not
// inlined, and a call per address would cost more than it saves.
// On architectures without an implementation (prefetch_other.go) it does
// nothing and the lookups take their cache misses as they come.
//
//go:noescape
func prefetch(addrs *[MaxBurst]uintptr, n int)
