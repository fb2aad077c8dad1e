package etcd_test

import (
	"testing"
	"time"

	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/etcd/etcdtest"
	"github.com/nicpath/nicpath/store/migrate"
	"github.com/nicpath/nicpath/store/storetest"
	"github.com/nicpath/nicpath/vswitch/vswitchtest/multihost"
)

// migrationBed publishes the three-host state to a fresh etcd server and
// builds the multi-host bed on it, every host with its own etcd client.
func migrationBed(t testing.TB) (*etcdtest.Server, *multihost.Fabric, *migrate.Manager) {
	srv := etcdtest.Start(t, 0)
	s := store.NewKV(dial(t, srv), "")
	mgr := migrate.New(s, nil)
	c := tctx(t)
	if _, err := mgr.Publish(c, storetest.ThreeHosts(0)); err != nil {
		t.Fatal(err)
	}
	fb, err := multihost.NewFabric(c, s, multihost.Options{Track: "mover",
		Heartbeat: 200 * time.Millisecond, Retry: 50 * time.Millisecond,
		Stores: func(string) (store.Store, error) { return store.NewKV(dial(t, srv), ""), nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fb.Close)
	return srv, fb, mgr
}

// TestMigrationOverEtcd: the multi-host migration with every host following
// a real etcd server: nothing misdelivered after activation, every host on
// the final state.
func TestMigrationOverEtcd(t *testing.T) {
	_, fb, mgr := migrationBed(t)
	c := tctx(t)
	res, err := fb.Migrate(c, mgr, multihost.MoveAToB)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Misdelivered != 0 || len(res.Migration.Lagging) != 0 {
		t.Fatalf("migration over etcd: %v", res)
	}
	if err := fb.WaitSynced(c, res.Migration.FinishRev); err != nil {
		t.Fatal(err)
	}
}

// TestOutageKeepsForwarding: with etcd down the hosts go stale and the
// stream still reaches the VM on the last state; after the restart they
// resync and a migration goes through.
func TestOutageKeepsForwarding(t *testing.T) {
	srv, fb, mgr := migrationBed(t)
	c := tctx(t)
	srv.Stop()
	for _, h := range fb.Hosts {
		waitFor(t, h.Name+" stale", 60*time.Second, func() bool { _, stale := h.Follower.Stale(); return stale })
	}
	for i := range 20 {
		fr, _ := fb.StreamFrame("streamer", "mover", uint64(i))
		ds, err := fb.Send(fb.Host("host-c"), "streamer", fr)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 || ds[0].Host.Name != "host-a" || ds[0].VM != "mover" {
			t.Fatalf("stale hosts stopped forwarding: %v", ds)
		}
	}
	srv.Start()
	for _, h := range fb.Hosts {
		waitFor(t, h.Name+" fresh", 60*time.Second, func() bool { _, stale := h.Follower.Stale(); return !stale })
	}
	res, err := fb.Migrate(c, mgr, multihost.MoveAToB)
	if err != nil {
		t.Fatal(err)
	}
	if res.Misdelivered != 0 {
		t.Fatalf("after the outage: %v", res)
	}
}

// BenchmarkMigration is vswitch/vswitchtest/multihost's BenchmarkMigration with every
// host following a real etcd server (watch latency included).
func BenchmarkMigration(b *testing.B) {
	_, fb, mgr := migrationBed(b)
	multihost.RunMigrationBenchmark(b, fb, mgr)
}
