package multihost

import (
	"context"
	"testing"
	"time"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/migrate"
	"github.com/nicpath/nicpath/store/storetest"
)

func setup(t testing.TB, s *store.KVStore) (*Fabric, *migrate.Manager) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mgr := migrate.New(s, nil)
	if _, err := mgr.Publish(ctx, storetest.ThreeHosts(0)); err != nil {
		t.Fatal(err)
	}
	fb, err := NewFabric(ctx, s, Options{Track: "mover", Heartbeat: 50 * time.Millisecond, Retry: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fb.Close)
	return fb, mgr
}

// TestMigration: the mover goes from host-a to host-b while the streamer on
// host-c sends to it; after the activation no packet lands anywhere but on
// the mover's new port, every host ends on the final state, and the old
// host no longer has the mover.
func TestMigration(t *testing.T) {
	s := store.NewKV(store.NewMemory(), "")
	fb, mgr := setup(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := fb.Migrate(ctx, mgr, MoveAToB)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Misdelivered != 0 {
		t.Fatalf("%d packets misdelivered", res.Misdelivered)
	}
	if res.Delivered == 0 || res.Sent < 10 {
		t.Fatalf("the stream did not flow: %v", res)
	}
	if len(res.Migration.Lagging) != 0 {
		t.Fatalf("hosts lagging: %v", res.Migration.Lagging)
	}
	if err := fb.WaitSynced(ctx, res.Migration.FinishRev); err != nil {
		t.Fatal(err)
	}
	for _, h := range fb.Hosts {
		st := h.Follower.Applied().State
		if host, _, gen, _ := st.Location("mover"); host != "host-b" || gen != 2 {
			t.Fatalf("%s: mover at %s gen %d after the migration", h.Name, host, gen)
		}
		if _, ok := st.Shadow("mover"); ok {
			t.Fatalf("%s: shadow left after the migration", h.Name)
		}
	}
	// After the finish, the stream still reaches the new location only.
	for range 20 {
		fr, _ := fb.StreamFrame("streamer", "mover", 1<<40)
		ds, err := fb.Send(fb.Host("host-c"), "streamer", fr)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 || ds[0].Host.Name != "host-b" || ds[0].VM != "mover" {
			t.Fatalf("after the finish the stream landed %v", ds)
		}
	}
}

// TestStoreDownKeepsForwarding: with the store unreachable every host goes
// stale, keeps forwarding on its last state and says so; once the store is
// back they resync and apply what was written meanwhile... which nobody can
// write while it is down, so the change is written right after it returns.
func TestStoreDownKeepsForwarding(t *testing.T) {
	mem := store.NewMemory()
	s := store.NewKV(mem, "")
	fb, mgr := setup(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mem.SetAvailable(false)
	for _, h := range fb.Hosts {
		waitFor(t, h.Name+" stale", func() bool { _, stale := h.Follower.Stale(); return stale })
		if st := h.Follower.Status(); !st.Stale || st.Error == "" {
			t.Fatalf("%s reports %+v while the store is down", h.Name, st)
		}
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
	mem.SetAvailable(true)
	for _, h := range fb.Hosts {
		waitFor(t, h.Name+" fresh", func() bool { _, stale := h.Follower.Stale(); return !stale })
	}
	res, err := fb.Migrate(ctx, mgr, MoveAToB)
	if err != nil {
		t.Fatal(err)
	}
	if res.Misdelivered != 0 {
		t.Fatalf("after reconnection: %v", res)
	}
}

// TestMissedActivation: a host whose follower is down while the activation
// (and the finish) are written catches up from the store when it comes
// back, and forwards to the new location.
func TestMissedActivation(t *testing.T) {
	s := store.NewKV(store.NewMemory(), "")
	fb, mgr := setup(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := fb.Host("host-c")
	// Flows on host-c's NIC first, so that the shadow goes onto them.
	for i := range 10 {
		fr, _ := fb.StreamFrame("streamer", "mover", uint64(i))
		if _, err := fb.Send(c, "streamer", fr); err != nil {
			t.Fatal(err)
		}
	}
	// Long enough for host-a and host-b to report on a loaded machine
	// (only host-c may lag); the test waits it out once, for host-c.
	opt := migrate.Options{ActivateTimeout: 5 * time.Second,
		BeforeActivate: func() { fb.StopFollower(c) }} // host-c misses the activation
	mig, err := mgr.Migrate(ctx, "mover", "host-b", opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(mig.Lagging) != 1 || mig.Lagging[0] != "host-c" {
		t.Fatalf("lagging hosts %v, want host-c", mig.Lagging)
	}
	// host-c still sends to host-a: it never saw the activation.
	fr, _ := fb.StreamFrame("streamer", "mover", 100)
	if ds, _ := fb.Send(c, "streamer", fr); len(ds) != 0 && ds[0].Host.Name != "host-a" {
		t.Fatalf("host-c forwarded to %v without the activation", ds[0].Host.Name)
	}
	fb.StartFollower(c, s)
	if err := fb.WaitSynced(ctx, mig.FinishRev); err != nil {
		t.Fatal(err)
	}
	ds, err := fb.Send(c, "streamer", fr)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Host.Name != "host-b" || ds[0].VM != "mover" {
		t.Fatalf("after catching up host-c's stream lands %v", ds)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var _ = policy.Shadow{}
