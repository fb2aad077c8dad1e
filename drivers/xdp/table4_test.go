package xdp

import (
	"sync/atomic"
	"testing"
)

// newTable4Mem is a table4 of slots base slots over Go memory, as the
// driver's is over the map's mmap.
func newTable4Mem(slots uint32, seed uint64) *table4 {
	n := slots + probe4
	return &table4{mem: make([]byte, uintptr(n)*slot4Size), slots: slots, seed: seed,
		tags: make([]uint16, n), progs: newProgs4(make([]byte, uintptr(2*n)*bpfRuleSize), 2*n),
		sides: newSides4(make([]byte, uintptr(n)*side4Size), n)}
}

func val4(id uint64) *bpfFlowVal {
	var v bpfFlowVal
	v.Slot[0].ID = id
	v.Slot[0].Prio = uint16(id)
	return &v
}

// published returns the rule ID the published slot holding k names, or 0
// when no published slot of k's window holds k; it fails the test when
// more than one does.
func published(t *testing.T, t4 *table4, k *bpfKey4) uint64 {
	t.Helper()
	base, _ := t4.base(k)
	var id uint64
	for i := base; i < base+probe4; i++ {
		s := t4.slot(i)
		if atomic.LoadUint32(&s.Seq)&seqValid == 0 || s.Key != *k {
			continue
		}
		if id != 0 {
			t.Fatalf("key %v is published in two slots", *k)
		}
		id = s.Ref.ID
	}
	return id
}

// TestTable4StagedCommit stages writes of new keys and of new versions of
// published ones: nothing is published before commit, and after it every
// key is published once, in its latest version, whatever order commit
// wrote the slots in.
func TestTable4StagedCommit(t *testing.T) {
	t4 := newTable4Mem(8000, 0x1234)
	keys := make([]bpfKey4, 600)
	for i := range keys {
		keys[i] = bpfKey4{InPort: 1, IPSrc: [4]byte{198, 18, 0, 1}, IPDst: [4]byte{198, 19, byte(i >> 8), byte(i)},
			L4Src: uint16(i), L4Dst: 80, Proto: 6}
	}
	for i := range keys[:300] {
		if !t4.put(&keys[i], val4(uint64(i+1))) {
			t.Fatalf("put %d refused", i)
		}
	}
	// New versions of the first 100, and 300 new keys, staged.
	for i := range keys {
		if i >= 100 && i < 300 {
			continue
		}
		if !t4.stage(&keys[i], val4(uint64(10000+i))) {
			t.Fatalf("stage %d refused", i)
		}
	}
	for i := range keys {
		want := uint64(0)
		if i < 300 {
			want = uint64(i + 1)
		}
		if got := published(t, t4, &keys[i]); got != want {
			t.Fatalf("before commit: key %d published as %d, want %d", i, got, want)
		}
	}
	t4.commit()
	if len(t4.staged) != 0 {
		t.Fatalf("%d writes still staged after commit", len(t4.staged))
	}
	for i := range keys {
		want := uint64(10000 + i)
		if i >= 100 && i < 300 {
			want = uint64(i + 1)
		}
		if got := published(t, t4, &keys[i]); got != want {
			t.Fatalf("after commit: key %d published as %d, want %d", i, got, want)
		}
	}
	// Every tag marks a published slot, and every published slot is
	// tagged: nothing reserved was left unwritten or unretired.
	for i := range t4.tags {
		valid := atomic.LoadUint32(&t4.slot(uint32(i)).Seq)&seqValid != 0
		if (t4.tags[i] != 0) != valid {
			t.Fatalf("slot %d: tag %#x, published %v", i, t4.tags[i], valid)
		}
	}
	for i := range keys {
		if !t4.del(&keys[i]) {
			t.Fatalf("del %d found nothing", i)
		}
	}
	if len(t4.progs.ids) != 0 {
		t.Fatalf("%d programs still interned with every slot retired", len(t4.progs.ids))
	}
}

// TestTable4StagedTagCollision stages a key into the slot where another
// key with the same window and tag was published and then retired (the
// slot still holds the retired key's bytes), and then stages that other
// key again: it must not take the staged slot for its own old version.
func TestTable4StagedTagCollision(t *testing.T) {
	t4 := newTable4Mem(16, 0x5678)
	type place struct {
		base uint32
		tag  uint16
	}
	seen := map[place]bpfKey4{}
	var a, b bpfKey4
	found := false
	for i := 0; i < 1<<24 && !found; i++ {
		k := bpfKey4{InPort: 1, IPSrc: [4]byte{198, 18, 0, 1}, IPDst: [4]byte{198, 19, byte(i >> 16), byte(i >> 8)},
			L4Src: uint16(i), L4Dst: 80, Proto: 6}
		base, tag := t4.base(&k)
		if o, ok := seen[place{base, tag}]; ok {
			a, b, found = o, k, true
		}
		seen[place{base, tag}] = k
	}
	if !found {
		t.Fatal("no two keys share a window and a tag")
	}
	if !t4.put(&a, val4(1)) || !t4.del(&a) {
		t.Fatal("put and del of a failed")
	}
	if !t4.stage(&b, val4(2)) || !t4.stage(&a, val4(3)) {
		t.Fatal("stage refused")
	}
	t4.commit()
	if got := published(t, t4, &b); got != 2 {
		t.Fatalf("b published as %d, want 2", got)
	}
	if got := published(t, t4, &a); got != 3 {
		t.Fatalf("a published as %d, want 3", got)
	}
}

// TestTable4Sides: an entry's first rule goes inline whichever of its two
// places holds it, and only a two-rule entry takes a side entry, which it
// gives back when its slot is retired (replaced or deleted) and not
// before; a scope beyond 16 bits is refused, changing nothing, as is a
// two-rule entry when sides4 is full.
func TestTable4Sides(t *testing.T) {
	t4 := newTable4Mem(64, 0x9abc)
	t4.sides.max = 3 // entry 0 and two more
	key := func(i int) *bpfKey4 {
		return &bpfKey4{InPort: 1, IPSrc: [4]byte{198, 18, 0, 1}, IPDst: [4]byte{198, 19, 0, byte(i)}, L4Src: uint16(i), L4Dst: 80, Proto: 6}
	}
	two := func(id uint64) *bpfFlowVal {
		var v bpfFlowVal
		v.Slot[0] = bpfRule{ID: id, Scope: 3, Gen: 0, Prio: 1, OutPort: 1}
		v.Slot[1] = bpfRule{ID: id + 1, Scope: 0xffff, Gen: 7, Prio: 2, OutPort: 2}
		return &v
	}
	var second bpfFlowVal
	second.Slot[1] = bpfRule{ID: 9, Scope: 5, Gen: 2, Prio: 4, OutPort: 3}
	if !t4.put(key(0), &second) {
		t.Fatal("put refused")
	}
	s := slotOf(t, t4, key(0))
	if s.Side != 0 || s.Ref.ID != 9 || s.Ref.Scope != 5 || s.Ref.Gen != 2 || s.Ref.Prio != 4 || t4.sides.used() != 0 {
		t.Fatalf("a rule in the second place: slot %+v, %d side entries", *s, t4.sides.used())
	}
	for i := 1; i <= 2; i++ {
		if !t4.put(key(i), two(uint64(10*i))) {
			t.Fatalf("put %d refused", i)
		}
		s := slotOf(t, t4, key(i))
		sd := t4.sides.side(s.Side)
		if s.Side == 0 || s.Ref.ID != uint64(10*i) || s.Ref.Scope != 3 || sd.Ref.ID != uint64(10*i+1) || sd.Ref.Scope != 0xffff || sd.Ref.Gen != 7 ||
			t4.progs.prog(sd.Ref.Prog).OutPort != 2 || t4.progs.prog(s.Ref.Prog).OutPort != 1 {
			t.Fatalf("two-rule entry %d: slot %+v, side %+v", i, *s, *sd)
		}
	}
	if t4.sides.used() != 2 {
		t.Fatalf("%d side entries used, want 2", t4.sides.used())
	}
	// sides4 is full: a new two-rule entry, and a new version of one
	// (published before its old one is retired), are refused.
	if t4.put(key(3), two(30)) || t4.put(key(1), two(40)) {
		t.Fatal("a two-rule entry took a side entry from a full sides4")
	}
	if published(t, t4, key(3)) != 0 || published(t, t4, key(1)) != 10 || t4.sides.used() != 2 {
		t.Fatal("a refused put changed the table")
	}
	// A one-rule version of a two-rule entry gives its side entry back.
	if !t4.put(key(1), val4(50)) || t4.sides.used() != 1 || published(t, t4, key(1)) != 50 {
		t.Fatalf("one-rule version: %d side entries", t4.sides.used())
	}
	if !t4.put(key(3), two(30)) || !t4.del(key(2)) || t4.sides.used() != 1 || !t4.del(key(3)) || t4.sides.used() != 0 {
		t.Fatalf("after deletes: %d side entries", t4.sides.used())
	}
	var wide bpfFlowVal
	wide.Slot[0] = bpfRule{ID: 60, Scope: 0x10000, OutPort: 1}
	if t4.put(key(4), &wide) || published(t, t4, key(4)) != 0 {
		t.Fatal("a scope beyond 16 bits went into table4")
	}
	var progs int
	for _, r := range t4.progs.refs {
		progs += int(r)
	}
	if progs != 2 { // key 0's and key 1's
		t.Fatalf("%d program refs held, want 2", progs)
	}
}

// slotOf is the slot holding k; it fails the test when none does.
func slotOf(t *testing.T, t4 *table4, k *bpfKey4) *bpfSlot4 {
	t.Helper()
	base, tag := t4.base(k)
	i := t4.find(k, base, tag)
	if i < 0 {
		t.Fatalf("no slot holds %v", *k)
	}
	return t4.slot(uint32(i))
}
