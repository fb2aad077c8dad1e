//go:build amd64 || arm64

// Package prefetch asks the CPU to start loading cache lines without
// waiting for them: unlike a load, a prefetch does not hold the
// instructions behind it, so the misses of a whole batch (softnic's burst
// of lookups, the vswitch's batch of first packets) are in flight together.
//
// Lines takes the addresses of a whole batch in one call: an assembly
// function is never inlined, and a call per address would cost more than
// it saves. On architectures without an implementation (prefetch_other.go)
// it does nothing and lookups take their cache misses as they come.
package prefetch

// Lines starts loading the cache line at each address in addrs. The
// addresses must be of memory the caller keeps alive; a prefetch never
// faults, but it must not be the only thing keeping its target reachable.
//
//go:noescape
func Lines(addrs []uintptr)
