package etcd_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/etcd"
	"github.com/nicpath/nicpath/store/etcd/etcdtest"
	"github.com/nicpath/nicpath/store/storetest"
)

func dial(t testing.TB, srv *etcdtest.Server) *etcd.KV {
	kv, err := etcd.Dial([]string{srv.Endpoint}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	return kv
}

func tctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestKV runs the shared KV suite against a real etcd server.
func TestKV(t *testing.T) {
	srv := etcdtest.Start(t, 0)
	storetest.RunKV(t, func(t *testing.T) storetest.Backend {
		kv := dial(t, srv)
		kv.PageSize = 3 // pages of Get are exercised by the suite's reads
		return storetest.Backend{KV: kv, Compact: func(rev int64) error {
			_, err := kv.Client().Compact(context.Background(), rev)
			return err
		}}
	})
}

// TestPagedLoad: a state far larger than one page loads whole, at one
// revision, equal to what was published.
func TestPagedLoad(t *testing.T) {
	srv := etcdtest.Start(t, 0)
	kv := dial(t, srv)
	kv.PageSize = 50
	s := store.NewKV(kv, "/paged/")
	st := storetest.ThreeHosts(500)
	c := tctx(t)
	if _, err := s.Publish(c, st); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Load(c)
	if err != nil {
		t.Fatal(err)
	}
	if d := policy.Diff(st, snap.State); !d.Empty() || snap.State.MappingCount() != 503 {
		t.Fatalf("loaded %d mappings, diff %+v", snap.State.MappingCount(), d)
	}
}

type recorder struct {
	mu     sync.Mutex
	states []*policy.State
	revs   []int64
}

func (r *recorder) Update(ctx context.Context, st *policy.State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, st)
	return nil
}

func (r *recorder) onApply(s store.Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revs = append(r.revs, s.Revision)
}

func (r *recorder) last() *policy.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return nil
	}
	return r.states[len(r.states)-1]
}

// checkRevs asserts that applied revisions strictly increase: nothing was
// applied twice or out of order.
func (r *recorder) checkRevs(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := 1; i < len(r.revs); i++ {
		if r.revs[i] <= r.revs[i-1] {
			t.Fatalf("revision %d applied after %d: %v", r.revs[i], r.revs[i-1], r.revs)
		}
	}
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func follow(t *testing.T, s store.Store, host string, r *recorder) *store.Follower {
	f := store.NewFollower(store.FollowerConfig{Store: s, Host: host, Target: r, OnApply: r.onApply,
		Heartbeat: time.Second, Timeout: 5 * time.Second, Retry: 50 * time.Millisecond})
	c, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(c); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func located(st *policy.State, vm, host string) bool {
	if st == nil {
		return false
	}
	h, _, _, ok := st.Location(vm)
	return ok && h == host
}

// TestOutageAndResync: with the etcd server stopped the follower keeps its
// state and reports itself stale; when the server is back it resyncs, and
// writes made after the restart reach it, each once, in order.
func TestOutageAndResync(t *testing.T) {
	srv := etcdtest.Start(t, 0)
	writer := store.NewKV(dial(t, srv), "")
	c := tctx(t)
	if _, err := writer.Publish(c, storetest.ThreeHosts(0)); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	f := follow(t, store.NewKV(dial(t, srv), ""), "host-a", rec)
	waitFor(t, "first state", 60*time.Second, func() bool { return rec.last() != nil })
	shadowRev, err := writer.Commit(c, new(store.Change).Put(policy.Shadow{VM: "mover", Host: "host-b", Generation: 2}))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the shadow", 60*time.Second, func() bool { return f.Applied().Revision == shadowRev })

	srv.Stop()
	waitFor(t, "stale", 60*time.Second, func() bool { _, stale := f.Stale(); return stale })
	if st := f.Status(); !st.Stale || st.Error == "" || st.Revision != shadowRev {
		t.Fatalf("status during the outage: %+v", st)
	}
	if !located(rec.last(), "mover", "host-a") {
		t.Fatal("the last state was not kept")
	}

	srv.Start()
	actRev, err := writer.Commit(c, new(store.Change).Put(policy.Activation{VM: "mover", Generation: 2}))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "resync", 60*time.Second, func() bool { return f.Applied().Revision >= actRev })
	if _, stale := f.Stale(); stale {
		t.Fatal("still stale")
	}
	if !located(rec.last(), "mover", "host-b") {
		t.Fatal("the activation written after the restart was not applied")
	}
	rec.checkRevs(t)
	// The status record in etcd says the host is fresh and activated.
	waitFor(t, "status", 60*time.Second, func() bool {
		sts, _, err := writer.Statuses(c)
		return err == nil && sts["host-a"].HasActivated(actRev, "mover", 2) && !sts["host-a"].Stale
	})
}

// TestCompactionBehindWatcher: a watch from a compacted revision ends with
// store.ErrCompacted, and a follower resyncs past a compaction with every
// change applied once.
func TestCompactionBehindWatcher(t *testing.T) {
	srv := etcdtest.Start(t, 0)
	kv := dial(t, srv)
	s := store.NewKV(kv, "")
	c := tctx(t)
	if _, err := s.Publish(c, storetest.ThreeHosts(0)); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Load(c)
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	for i := range 10 {
		vm := policy.VM{Name: "late-" + string(rune('a'+i)), Tenant: "t", VNET: "net", Host: "host-b",
			MAC: policy.MAC{2, 9, 9, 9, 9, byte(i)}, CAs: []netip.Addr{ipv4(10, 9, 9, byte(i))}}
		if last, err = s.Commit(c, new(store.Change).Put(vm)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Client().Compact(c, last); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(c, snap)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if !errors.Is(ev.Err, store.ErrCompacted) {
			t.Fatalf("watch behind a compaction: %+v", ev)
		}
	case <-c.Done():
		t.Fatal("no event")
	}
	rec := &recorder{}
	f := follow(t, s, "host-b", rec)
	waitFor(t, "resync", 60*time.Second, func() bool { return f.Applied().Revision == last })
	for i := range 10 {
		if !located(rec.last(), "late-"+string(rune('a'+i)), "host-b") {
			t.Fatalf("change %d lost", i)
		}
	}
	rec.checkRevs(t)
}

// TestOpen: store.Open knows the etcd scheme once this package is imported.
func TestOpen(t *testing.T) {
	srv := etcdtest.Start(t, 0)
	s, err := store.Open("etcd://"+srv.Endpoint+"/opened/", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := tctx(t)
	if _, err := s.(store.Writer).Publish(c, storetest.ThreeHosts(0)); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Load(c)
	if err != nil || snap.State.MappingCount() != 3 {
		t.Fatalf("load through Open: %v", err)
	}
	if _, err := store.Open("etcd://", 0); err == nil {
		t.Fatal("an etcd spec without endpoints opened")
	}
}
