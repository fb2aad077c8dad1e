//go:build !amd64 && !arm64

// Package prefetch asks the CPU to start loading cache lines without
// waiting for them; here no assembly version exists and it does nothing.
package prefetch

// Lines does nothing where no assembly version exists: lookups then take
// their cache misses as they come.
func Lines(addrs []uintptr) {}
