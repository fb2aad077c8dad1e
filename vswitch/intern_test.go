package vswitch

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/policy"
)

// TestInternTable: interned action sets are found by key, shared while
// referenced and forgotten with their last reference, also when keys
// share a hash or a run of slots (the collisions are set up by hand: the
// hash is seeded).
func TestInternTable(t *testing.T) {
	h := newBenchHost(t, smallPolicy(t, nil), 0)
	s := h.sw
	s.mu.Lock()
	defer s.mu.Unlock()
	base := s.acts.len()
	key := func(i int) actKey {
		return actKey{action: policy.Encap, pa: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), vni: uint32(i),
			rw: policy.Rewrite{DstMAC: policy.MAC{2, 0, 0, 0, byte(i >> 8), byte(i)}}}
	}
	// Many keys, each interned twice, released in another order.
	const n = 2000
	sets := make([]*actSet, n)
	for i := range n {
		sets[i] = s.intern(key(i))
	}
	for i := n - 1; i >= 0; i-- {
		if a := s.intern(key(i)); a != sets[i] {
			t.Fatalf("key %d interned twice gave two sets", i)
		}
	}
	for i := range n {
		if sets[i].key != key(i) {
			t.Fatalf("set %d has key %+v", i, sets[i].key)
		}
		s.release(sets[i])
	}
	for i := range n {
		s.release(sets[i])
		// The others are still found after each removal.
		if i%97 == 0 {
			for j := i + 1; j < n; j++ {
				if got := s.acts.find(sets[j].hash, &sets[j].key); got != sets[j] {
					t.Fatalf("after releasing %d sets, set %d is not found", i+1, j)
				}
			}
		}
	}
	if s.acts.len() != base {
		t.Fatalf("%d sets interned after every set was released, want %d", s.acts.len(), base)
	}

	// Collisions: sets with one hash, and sets whose hashes share a run,
	// put and removed in every order of a few.
	var tab actTable
	mk := func(i int, h uint64) *actSet { return &actSet{key: key(i), hash: h, refs: 1} }
	size := uint64(64)
	for order := range 24 {
		xs := []*actSet{mk(1, 5), mk(2, 5), mk(3, 6), mk(4, 5+size), mk(5, size-1), mk(6, 7)}
		for _, x := range xs {
			tab.put(x)
		}
		if uint64(len(tab.slots)) != size {
			t.Fatalf("%d slots, want %d", len(tab.slots), size)
		}
		perm := rand.New(rand.NewPCG(uint64(order), 1)).Perm(len(xs))
		for k, p := range perm {
			tab.remove(xs[p])
			if got := tab.find(xs[p].hash, &xs[p].key); got != nil {
				t.Fatalf("order %d: removed set %d found", order, p)
			}
			for _, q := range perm[k+1:] {
				if got := tab.find(xs[q].hash, &xs[q].key); got != xs[q] {
					t.Fatalf("order %d: after removing %v, set %d not found", order, perm[:k+1], q)
				}
			}
		}
		if tab.len() != 0 {
			t.Fatalf("order %d: %d sets left", order, tab.len())
		}
		for _, sl := range tab.slots {
			if sl.a != nil {
				t.Fatalf("order %d: a slot still holds a set", order)
			}
		}
	}
	// A set that is not in the table (a removed flow's placeholder) is
	// removed as a no-op.
	tab.put(mk(1, 5))
	tab.remove(mk(1, 5))
	if tab.len() != 1 {
		t.Fatal("removing a set that is not in the table removed another")
	}
	s.lastAct = nil
	if got := s.intern(key(2)); got == sets[2] {
		t.Fatal("a released set was found again")
	} else {
		s.release(got)
	}
}

// TestInternHinted: interning with a receiver's hint (vmInfo.act) gives
// the set intern gives, counts the reference once, and never answers with
// a set whose key differs or that was released (a stale hint), after
// which the hint is the table's answer.
func TestInternHinted(t *testing.T) {
	h := newBenchHost(t, smallPolicy(t, nil), 0)
	s := h.sw
	s.mu.Lock()
	defer s.mu.Unlock()
	base := s.acts.len()
	k1 := actKey{action: policy.Encap, pa: netip.MustParseAddr("198.18.0.1"), vni: 1}
	k2 := actKey{action: policy.Encap, pa: netip.MustParseAddr("198.18.0.2"), vni: 1}
	var vm vmInfo

	a := s.internHinted(k1, &vm)
	if vm.act != a || a.key != k1 || a.refs != 1 {
		t.Fatalf("first intern: hint %p, set %p with key %+v and %d refs", vm.act, a, a.key, a.refs)
	}
	s.lastAct = nil // so that the hint, not the last set, answers
	if b := s.internHinted(k1, &vm); b != a || a.refs != 2 {
		t.Fatalf("hinted intern gave %p (want %p), %d refs", b, a, a.refs)
	}
	// Another key: the table answers, and the hint follows.
	b := s.internHinted(k2, &vm)
	if b == a || b.key != k2 || vm.act != b || s.intern(k2) != b {
		t.Fatalf("second key: set %p with key %+v, hint %p", b, b.key, vm.act)
	}
	s.release(b)
	// The same key as another VM's hint, through the table.
	var other vmInfo
	if c := s.internHinted(k1, &other); c != a || a.refs != 3 || other.act != a {
		t.Fatalf("other VM: set %p (want %p), %d refs", c, a, a.refs)
	}
	// A stale hint: every reference released, the set left the table.
	for range 3 {
		s.release(a)
	}
	s.release(b)
	if s.acts.len() != base {
		t.Fatalf("%d sets interned after every set was released, want %d", s.acts.len(), base)
	}
	s.lastAct = nil
	c := s.internHinted(k1, &other)
	if c == a || c.key != k1 || c.refs != 1 || other.act != c || s.acts.find(c.hash, &k1) != c {
		t.Fatalf("stale hint: got %p (released %p), key %+v, %d refs, hint %p", c, a, c.key, c.refs, other.act)
	}
	s.release(c)
	if s.acts.len() != base {
		t.Fatalf("%d sets interned at the end, want %d", s.acts.len(), base)
	}
	// No receiver: plain interning.
	if d := s.internHinted(k2, nil); d.key != k2 || d.refs != 1 {
		t.Fatalf("no hint: key %+v, %d refs", d.key, d.refs)
	}
}
