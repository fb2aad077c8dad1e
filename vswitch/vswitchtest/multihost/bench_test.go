package multihost

import (
	"testing"

	"github.com/nicpath/nicpath/store"
)

// BenchmarkMigration migrates the mover between host-a and host-b (there and
// back, alternately) once per iteration while the streamer on host-c sends
// to it every 50µs, over the in-process store, and reports what the stream
// saw: downtime_ms (the worst gap across a move, see Result.Downtime;
// downtime_p50_ms the median),
// lost_run_ms (the worst run of lost packets × the interval), misdelivered
// (packets that landed in a wrong place after activation, summed), lost per
// migration, and the manager's install and activate phases.
func BenchmarkMigration(b *testing.B) {
	s := store.NewKV(store.NewMemory(), "")
	fb, mgr := setup(b, s)
	RunMigrationBenchmark(b, fb, mgr)
}
