package store_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/storetest"
)

func TestMemoryKV(t *testing.T) {
	storetest.RunKV(t, func(t *testing.T) storetest.Backend {
		m := store.NewMemory()
		return storetest.Backend{KV: m, Compact: func(rev int64) error { m.Compact(rev); return nil }}
	})
}

func tctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestPublishLoadRoundTrip: what Publish writes, Load builds back into an
// equal state, for every example policy and the three-host one.
func TestPublishLoadRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("../examples/policies/*.yaml")
	states := map[string]*policy.State{"three-hosts": storetest.ThreeHosts(10)}
	for _, f := range files {
		st, err := policy.LoadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		states[f] = st
	}
	for name, st := range states {
		s := store.NewKV(store.NewMemory(), "")
		s.TxnOps = 7 // several batches
		c := tctx(t)
		if _, err := s.Publish(c, st); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		snap, err := s.Load(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d := policy.Diff(st, snap.State); !d.Empty() {
			t.Fatalf("%s: loaded state differs: %+v", name, d)
		}
		// Publishing the same state again writes nothing.
		rev, err := s.Publish(c, st)
		if err != nil || rev != snap.Revision {
			t.Fatalf("%s: republish moved the revision %d → %d (%v)", name, snap.Revision, rev, err)
		}
	}
}

// recorder is a Target that keeps every state it was given.
type recorder struct {
	mu     sync.Mutex
	states []*policy.State
	fail   error
}

func (r *recorder) Update(ctx context.Context, st *policy.State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.states = append(r.states, st)
	return nil
}

func (r *recorder) last() *policy.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return nil
	}
	return r.states[len(r.states)-1]
}

// revLog records the revisions a follower applied, in order.
type revLog struct {
	mu   sync.Mutex
	revs []int64
}

func (l *revLog) add(s store.Snapshot) {
	l.mu.Lock()
	l.revs = append(l.revs, s.Revision)
	l.mu.Unlock()
}

func (l *revLog) check(t *testing.T) []int64 {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 1; i < len(l.revs); i++ {
		if l.revs[i] <= l.revs[i-1] {
			t.Fatalf("revision %d applied after %d: duplicated or reordered (%v)", l.revs[i], l.revs[i-1], l.revs)
		}
	}
	return append([]int64(nil), l.revs...)
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

func startFollower(t *testing.T, s store.Store, host string, tgt store.Target, log *revLog) *store.Follower {
	// The heartbeat's ping is bounded by the heartbeat itself: at 20ms a
	// loaded machine's scheduling delay alone could make the follower stale
	// for a moment. The outages here end the watch; no test waits on a ping.
	f := store.NewFollower(store.FollowerConfig{Store: s, Host: host, Target: tgt,
		Heartbeat: 500 * time.Millisecond, Retry: 10 * time.Millisecond, Timeout: time.Second, OnApply: log.add})
	c, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(c); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

// hasVM reports whether st places vm on host.
func hasVM(st *policy.State, vm, host string) bool {
	if st == nil {
		return false
	}
	h, _, _, ok := st.Location(vm)
	return ok && h == host
}

func addVM(name string, n byte, host string) *store.Change {
	return new(store.Change).Put(policy.VM{Name: name, Tenant: "t", VNET: "net", Host: host,
		MAC: policy.MAC{2, 0, 0, 9, 0, n}, CAs: []netip.Addr{netip.AddrFrom4([4]byte{10, 9, 0, n})}})
}

// TestFollowerSequence: a follower applies every committed change once, in
// order, across compactions that overtake its watch and a partition.
func TestFollowerSequence(t *testing.T) {
	mem := store.NewMemory()
	s := store.NewKV(mem, "")
	c := tctx(t)
	if _, err := s.Publish(c, storetest.ThreeHosts(0)); err != nil {
		t.Fatal(err)
	}
	rec, log := &recorder{}, &revLog{}
	f := startFollower(t, s, "host-a", rec, log)
	waitFor(t, "first state", func() bool { return rec.last() != nil })

	var last int64
	for i := range 30 {
		rev, err := s.Commit(c, addVM("x"+string(rune('a'+i)), byte(i+1), "host-b"))
		if err != nil {
			t.Fatal(err)
		}
		last = rev
		if i == 10 {
			mem.Compact(rev) // the watch may be behind: it resyncs
		}
		if i == 20 {
			mem.SetAvailable(false)
			waitFor(t, "stale", func() bool { _, stale := f.Stale(); return stale })
			if st := f.Status(); !st.Stale || st.Error == "" {
				t.Fatalf("status while the store is down: %+v", st)
			}
			mem.SetAvailable(true)
		}
	}
	waitFor(t, "last revision", func() bool { return f.Applied().Revision >= last })
	revs := log.check(t)
	if _, stale := f.Stale(); stale {
		t.Fatal("still stale after reconnection")
	}
	for i := range 30 {
		if !hasVM(rec.last(), "x"+string(rune('a'+i)), "host-b") {
			t.Fatalf("change %d lost: final state lacks its VM", i)
		}
	}
	if f.Resyncs() == 0 {
		t.Fatal("neither the compaction nor the partition made the follower resync")
	}
	// The store says what the host applies.
	sts, _, err := s.Statuses(c)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "status of the last revision", func() bool {
		sts, _, _ = s.Statuses(c)
		return sts["host-a"].Revision == last && !sts["host-a"].Stale
	})
	t.Logf("applied revisions %v (resyncs %d)", revs, f.Resyncs())
}

// TestCompactionWhileBehind: a watcher that is far behind a compaction
// resyncs without losing or repeating anything.
func TestCompactionWhileBehind(t *testing.T) {
	mem := store.NewMemory()
	s := store.NewKV(mem, "")
	c := tctx(t)
	if _, err := s.Publish(c, storetest.ThreeHosts(0)); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Load(c)
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	for i := range 5 {
		if last, err = s.Commit(c, addVM("y"+string(rune('a'+i)), byte(i+1), "host-c")); err != nil {
			t.Fatal(err)
		}
	}
	mem.Compact(last)
	ch, err := s.Watch(c, snap)
	if err != nil {
		t.Fatal(err)
	}
	ev := <-ch
	if !errors.Is(ev.Err, store.ErrCompacted) {
		t.Fatalf("watch from before a compaction: %+v, want ErrCompacted", ev)
	}
	rec, log := &recorder{}, &revLog{}
	f := startFollower(t, s, "host-c", rec, log)
	waitFor(t, "resync", func() bool { return f.Applied().Revision == last })
	if !hasVM(rec.last(), "ye", "host-c") || len(log.check(t)) != 1 {
		t.Fatalf("resync after compaction: applied %v", log.check(t))
	}
}

// TestInvalidRevisionIsNotApplied: a change that does not build (a VM in an
// unknown VNET, a value that is not JSON) is reported and skipped; the next
// valid revision is applied.
func TestInvalidRevisionIsNotApplied(t *testing.T) {
	mem := store.NewMemory()
	s := store.NewKV(mem, "")
	c := tctx(t)
	base, err := s.Publish(c, storetest.ThreeHosts(0))
	if err != nil {
		t.Fatal(err)
	}
	rec, log := &recorder{}, &revLog{}
	f := startFollower(t, s, "host-b", rec, log)
	waitFor(t, "first state", func() bool { return f.Applied().Revision == base })

	bad := new(store.Change).Put(policy.VM{Name: "ghost", Tenant: "t", VNET: "nowhere", Host: "host-a",
		MAC: policy.MAC{2, 1, 1, 1, 1, 1}, CAs: []netip.Addr{netip.MustParseAddr("10.9.9.9")}})
	badRev, err := s.Commit(c, bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mem.Txn(c, []store.Op{{Key: store.DefaultPrefix + "state/vms/junk", Value: []byte("{not json")}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refusal in the status", func() bool { return f.Status().Error != "" })
	if f.Applied().Revision != base {
		t.Fatalf("an invalid revision was applied: %d", f.Applied().Revision)
	}
	// Repair both: the next revision builds and is applied.
	fix := new(store.Change).Delete(policy.VM{Name: "ghost"}).Delete(policy.VM{Name: "junk"})
	fixed, err := s.Commit(c, fix.Put(policy.VNET{Tenant: "t", Name: "other", VNI: 7, Subnets: []netip.Prefix{netip.MustParsePrefix("172.16.0.0/24")}}))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the repaired revision", func() bool { return f.Applied().Revision == fixed })
	for _, r := range log.check(t) {
		if r > base && r < fixed {
			t.Fatalf("revision %d (after the bad one at %d) was applied", r, badRev)
		}
	}
	if f.Status().Error != "" {
		t.Fatalf("error not cleared: %s", f.Status().Error)
	}
}

// TestActivationIsCheap: a revision that only writes an activation record
// reaches the follower as the previous state with that activation.
func TestActivationIsCheap(t *testing.T) {
	s := store.NewKV(store.NewMemory(), "")
	c := tctx(t)
	if _, err := s.Publish(c, storetest.ThreeHosts(3)); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Commit(c, new(store.Change).Put(policy.Shadow{VM: "mover", Host: "host-b", Generation: 2}))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := s.Load(c)
	if err != nil || snap.Revision != rev {
		t.Fatal(snap.Revision, err)
	}
	ch, err := s.Watch(c, snap)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(c, new(store.Change).Put(policy.Activation{VM: "mover", Generation: 2})); err != nil {
		t.Fatal(err)
	}
	ev := <-ch
	if ev.Err != nil || ev.Invalid != nil {
		t.Fatal(ev)
	}
	if !hasVM(ev.Snapshot.State, "mover", "host-b") {
		t.Fatal("activation not applied")
	}
	if d := policy.Diff(snap.State, ev.Snapshot.State); len(d.Activations) != 1 || len(d.VMs)+len(d.Mappings)+len(d.Shadows) != 0 {
		t.Fatalf("activation shows up as %+v", d)
	}
	// Removing the record rolls back.
	if _, err := s.Commit(c, new(store.Change).Delete(policy.Activation{VM: "mover"})); err != nil {
		t.Fatal(err)
	}
	if ev = <-ch; !hasVM(ev.Snapshot.State, "mover", "host-a") {
		t.Fatalf("rollback not applied: %+v", ev)
	}
}

// TestFileStore: the file store follows edits of its document, refuses a
// broken one and reports a missing file as unavailable.
func TestFileStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	st := storetest.ThreeHosts(0)
	doc, err := policy.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	b := st.Builder()
	b.AddShadow(policy.Shadow{VM: "mover", Host: "host-b", Generation: 2})
	b.AddActivation(policy.Activation{VM: "mover", Generation: 2})
	moved, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	fs := store.NewFile(path, 5*time.Millisecond)
	rec, log := &recorder{}, &revLog{}
	f := startFollower(t, fs, "host-a", rec, log)
	waitFor(t, "first state", func() bool { return rec.last() != nil })

	if err := os.WriteFile(path, []byte("hosts: [oops"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "refusal", func() bool { return f.Status().Error != "" })
	if len(log.check(t)) != 1 {
		t.Fatal("a broken document was applied")
	}
	doc, _ = policy.Marshal(moved)
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "edited document", func() bool { return hasVM(rec.last(), "mover", "host-b") })
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stale", func() bool { _, stale := f.Stale(); return stale })
	if !hasVM(rec.last(), "mover", "host-b") {
		t.Fatal("the last state was not kept")
	}
	log.check(t)
}

func TestOpen(t *testing.T) {
	s, err := store.Open("mem:", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*store.KVStore); !ok {
		t.Fatalf("mem: opened %T", s)
	}
	if s, _ := store.Open("/x/policy.yaml", 0); s == nil {
		t.Fatal("a path did not open a file store")
	}
	if _, err := store.Open("", 0); err == nil {
		t.Fatal("empty spec opened")
	}
	// A scheme nobody registered is not a file name.
	if s, err := store.Open("etcd://127.0.0.1:2379/x/", 0); err == nil || !strings.Contains(err.Error(), "store/etcd") {
		t.Fatalf("an unregistered etcd:// opened %T, %v; want an error naming the etcd module", s, err)
	}
}

// TestFollowerInitial: a follower started from the snapshot its target was
// built with does not hand that revision to the target again, reports it,
// and applies the next change.
func TestFollowerInitial(t *testing.T) {
	s := store.NewKV(store.NewMemory(), "")
	c := tctx(t)
	if _, err := s.Publish(c, storetest.ThreeHosts(0)); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Load(c)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	f := store.NewFollower(store.FollowerConfig{Store: s, Host: "host-a", Target: rec, Initial: snap,
		Heartbeat: 500 * time.Millisecond, Retry: 10 * time.Millisecond, Timeout: time.Second})
	if got := f.Applied().Revision; got != snap.Revision {
		t.Fatalf("Applied before Run: revision %d, want the initial %d", got, snap.Revision)
	}
	rc, cancel := context.WithCancel(c)
	done := make(chan struct{})
	go func() { f.Run(rc); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the initial status", func() bool {
		sts, _, _ := s.Statuses(c)
		return sts["host-a"].Revision == snap.Revision
	})
	rec.mu.Lock()
	n := len(rec.states)
	rec.mu.Unlock()
	if n != 0 {
		t.Fatalf("the target got %d states; the initial revision must not be applied again", n)
	}
	rev, err := s.Commit(c, addVM("late", 1, "host-b"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the next revision", func() bool { return f.Applied().Revision == rev })
	if !hasVM(rec.last(), "late", "host-b") {
		t.Fatal("the change after the initial snapshot was not applied")
	}
}
