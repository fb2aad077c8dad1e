package vswitch

import (
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/policy"
)

// TestInternChains: interned action sets are found by key, shared while
// referenced and forgotten with their last reference, also when two keys
// share a hash (the chain is set up by hand: the hash is seeded).
func TestInternChains(t *testing.T) {
	h := newBenchHost(t, smallPolicy(t, nil), 0)
	s := h.sw
	s.mu.Lock()
	defer s.mu.Unlock()
	base := len(s.acts)
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
	}
	if len(s.acts) != base {
		t.Fatalf("%d hashes interned after every set was released, want %d", len(s.acts), base)
	}

	// Three sets under the hash of key 2, its own set at the tail: c → a → b.
	a, b, c := s.intern(key(1)), s.intern(key(2)), s.intern(key(3))
	for _, x := range []*actSet{a, c} {
		delete(s.acts, x.hash)
		x.hash = b.hash
	}
	c.next, a.next = a, b
	s.acts[b.hash] = c
	s.lastAct = nil
	if got := s.intern(key(2)); got != b {
		t.Fatal("key 2 behind two other sets of its hash: not found")
	}
	s.release(b)
	// The middle goes first, then the head.
	s.release(a)
	if s.acts[b.hash] != c || c.next != b || b.next != nil {
		t.Fatal("releasing the middle of a chain broke it")
	}
	s.release(c)
	if s.acts[b.hash] != b || b.next != nil {
		t.Fatal("releasing the head of a chain lost its tail")
	}
	s.release(b)
	if len(s.acts) != base {
		t.Fatalf("%d hashes interned at the end, want %d", len(s.acts), base)
	}
	s.lastAct = nil
	if got := s.intern(key(2)); got == b {
		t.Fatal("a released set was found again")
	} else {
		s.release(got)
	}
}
