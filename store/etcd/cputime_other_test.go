//go:build !unix

package etcd_test

import "time"

// cpuTime is not measured here: converge_cpu_s reads 0.
func cpuTime() time.Duration { return 0 }
