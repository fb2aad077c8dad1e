//go:build linux

package etcd_test

import (
	"testing"

	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/etcd/etcdtest"
	"github.com/nicpath/nicpath/store/migrate"
	"github.com/nicpath/nicpath/vswitch/vswitchtest/multihost"
)

// nsTest is the namespace bed's view of a fresh etcd server: every vswitchd
// opens its own client from the etcd:// name, the VM manager has another.
func nsTest(t testing.TB) multihost.NSTest {
	srv := etcdtest.Start(t, 0)
	spec := "etcd://" + srv.Endpoint + "/nsbed/"
	s, err := store.Open(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return multihost.NSTest{Spec: spec, Store: s.(migrate.Store), Outage: func(down bool) {
		if down {
			srv.Stop()
		} else {
			srv.Start()
		}
	}}
}

// TestNamespaceMigrationOverEtcd: the multi-host test on namespaces with
// every vswitchd following a real etcd server (root only): two migrations
// with nothing misdelivered, then etcd stopped (every host stale, still
// forwarding), restarted (every host resyncs) and one more migration.
func TestNamespaceMigrationOverEtcd(t *testing.T) {
	multihost.RunNSMigration(t, nsTest(t))
}

// BenchmarkNSMigration: migration.downtime_ms on namespaces over etcd.
func BenchmarkNSMigration(b *testing.B) {
	multihost.RunNSMigrationBenchmark(b, nsTest(b))
}
