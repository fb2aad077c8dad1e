//go:build !linux

package match

import "time"

// threadCPU is unknown here; benchmarks then leave out their per-thread figures.
func threadCPU() time.Duration { return 0 }
