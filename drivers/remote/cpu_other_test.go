//go:build !unix

package remote

import "time"

// cpuClock is false where the process's CPU time is not read: the
// benchmark then reports no CPU ratio.
const cpuClock = false

func processCPU() time.Duration { return time.Duration(time.Now().UnixNano()) }
