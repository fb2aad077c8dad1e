//go:build linux

package multihost

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store/migrate"
	"github.com/nicpath/nicpath/store/storetest"
)

// NSTest is what RunNSMigration needs of a store: the spec the vswitchds
// open, the client the VM manager writes with, and a way to cut the store
// off and bring it back.
type NSTest struct {
	Spec   string
	Store  migrate.Store
	Outage func(down bool)
	// Drivers is each host's driver (NSOptions.Drivers): softnic for a
	// host not named.
	Drivers map[string]string
}

// RunNSMigration is the multi-host test on namespaces, for any store: three
// hosts, the mover migrates from host-a to host-b and back while the
// streamer on host-c sends it UDP; after each activation nothing lands
// anywhere but where the VM is, and every host ends on the final state.
// Then the store goes away: every vswitchd says it is stale and the stream
// still flows on the last state; the store comes back: every host resyncs,
// and one more migration works.
func RunNSMigration(t *testing.T, nt NSTest) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bed, mgr, st := startNS(ctx, t, nt)
	defer func() {
		if err := bed.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	migrate := func(from, to string, gen uint64) {
		t.Helper()
		res, err := bed.Migrate(ctx, mgr, nt.Store, MigrateOptions{VM: "mover", From: from, To: to, Sender: "streamer", SendOn: "host-c"})
		t.Logf("%s → %s: %v", from, to, res)
		if err != nil {
			t.Fatal(err)
		}
		if res.Misdelivered != 0 {
			t.Fatalf("%d packets misdelivered: %v", res.Misdelivered, res.Wrong)
		}
		if res.Delivered < res.Sent/2 || res.Sent < 100 {
			t.Fatalf("the stream did not flow: %v", res)
		}
		if len(res.Migration.Lagging) != 0 {
			t.Fatalf("hosts lagging: %v", res.Migration.Lagging)
		}
		waitNS(t, "every host on the final state", func() error {
			for _, h := range st.Hosts() {
				cur := bed.Daemon(h.Name).State()
				if host, _, g, _ := cur.Location("mover"); host != to || g != gen {
					return fmt.Errorf("%s has the mover on %s, generation %d", h.Name, host, g)
				}
				if _, ok := cur.Shadow("mover"); ok {
					return fmt.Errorf("%s still has the shadow", h.Name)
				}
			}
			return nil
		})
	}
	migrate("host-a", "host-b", 2)
	migrate("host-b", "host-a", 3)

	if nt.Outage == nil {
		return
	}
	nt.Outage(true)
	waitNS(t, "every host stale", func() error {
		for _, h := range st.Hosts() {
			if _, stale := bed.Daemon(h.Name).Follower().Stale(); !stale {
				return fmt.Errorf("%s is not stale", h.Name)
			}
		}
		return nil
	})
	if n, err := bed.Stream(ctx, "mover@host-a", 200); err != nil || n < 150 {
		t.Fatalf("with the store down, %d of 200 packets reached the mover on host-a: %v", n, err)
	}
	nt.Outage(false)
	waitNS(t, "every host resynced", func() error {
		for _, h := range st.Hosts() {
			f := bed.Daemon(h.Name).Follower()
			if _, stale := f.Stale(); stale || f.Resyncs() == 0 {
				return fmt.Errorf("%s: stale %v, resyncs %d", h.Name, stale, f.Resyncs())
			}
		}
		return nil
	})
	migrate("host-a", "host-b", 4)
}

// RunNSMigrationBenchmark is BenchmarkMigration on namespaces: b.N
// migrations of the mover between host-a and host-b, there and back, on
// vswitchds following the store, with real kernels sending and receiving.
func RunNSMigrationBenchmark(b *testing.B, nt NSTest) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bed, mgr, _ := startNS(ctx, b, nt)
	defer bed.Close()
	benchMigrations(b, func(ctx context.Context, o MigrateOptions) (Result, error) { return bed.Migrate(ctx, mgr, nt.Store, o) })
}

// startNS publishes storetest.ThreeHosts to the store and builds the bed on
// it (the mover may move to host-b, the streamer sends); it skips when the
// machine cannot run namespaces.
func startNS(ctx context.Context, tb testing.TB, nt NSTest) (*NSBed, *migrate.Manager, *policy.State) {
	if ok, why := CanRunNS(); !ok {
		tb.Skip(why)
	}
	mgr := migrate.New(nt.Store, nil)
	st := storetest.ThreeHosts(0)
	if _, err := mgr.Publish(ctx, st); err != nil {
		tb.Fatal(err)
	}
	var log *slog.Logger
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	bed, err := NewNSBed(ctx, st, NSOptions{Store: nt.Spec, Mover: "mover", To: "host-b", Sender: "streamer", Dir: tb.TempDir(), Logger: log, Drivers: nt.Drivers})
	if err != nil {
		tb.Fatal(err)
	}
	return bed, mgr, st
}

func waitNS(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
