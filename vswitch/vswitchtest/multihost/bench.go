package multihost

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nicpath/nicpath/store/migrate"
)

// MoveAToB migrates storetest.ThreeHosts' mover from host-a to host-b while
// the streamer on host-c streams to it.
var MoveAToB = MigrateOptions{VM: "mover", From: "host-a", To: "host-b", Sender: "streamer", SendOn: "host-c"}

// RunMigrationBenchmark is BenchmarkMigration's loop on any fabric whose
// state is storetest.ThreeHosts (the etcd module runs it over etcd).
func RunMigrationBenchmark(b *testing.B, fb *Fabric, mgr *migrate.Manager) {
	benchMigrations(b, func(ctx context.Context, o MigrateOptions) (Result, error) { return fb.Migrate(ctx, mgr, o) })
}

// benchMigrations migrates the mover b.N times, there and back, and reports
// the worst and median downtime, the longest run of lost packets, the
// misdelivered packets and the time the manager's steps took.
func benchMigrations(b *testing.B, migrate func(context.Context, MigrateOptions) (Result, error)) {
	ctx := context.Background()
	var worst, worstRun time.Duration
	var downs []time.Duration
	var mis, lost int
	var install, activate time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o := MoveAToB
		if i%2 == 1 {
			o.From, o.To = o.To, o.From
		}
		res, err := migrate(ctx, o)
		if err != nil {
			b.Fatal(err)
		}
		worst = max(worst, res.Downtime)
		downs = append(downs, res.Downtime)
		worstRun = max(worstRun, time.Duration(res.LostRun)*res.Interval)
		mis += res.Misdelivered
		if res.Misdelivered > 0 {
			b.Logf("migration %d: %v", i, res)
		}
		lost += res.Lost
		install += res.Migration.Install
		activate += res.Migration.Activate
	}
	b.StopTimer()
	b.ReportMetric(float64(worst)/1e6, "downtime_ms")
	slices.Sort(downs)
	b.ReportMetric(float64(downs[len(downs)/2])/1e6, "downtime_p50_ms")
	b.ReportMetric(float64(worstRun)/1e6, "lost_run_ms")
	b.ReportMetric(float64(mis), "misdelivered")
	b.ReportMetric(float64(lost)/float64(b.N), "lost/migration")
	b.ReportMetric(float64(install)/float64(b.N)/1e6, "install_ms")
	b.ReportMetric(float64(activate)/float64(b.N)/1e6, "activate_ms")
}
