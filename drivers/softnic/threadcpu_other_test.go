//go:build !linux

package softnic

import "time"

func threadCPU() (time.Duration, bool) { return 0, false }

func threadCPUPrecise() (time.Duration, bool) { return 0, false }
