package xdp

import (
	"sync/atomic"
	"unsafe"
)

// table4 is the user-space side of the BPF array table4 (bpf/lib/maps.h):
// an open-addressing table of the exact IPv4 entries (those markFlows4
// marks), written directly through an mmap of the array, without a system
// call per entry. A key hashes (hash4) to a base slot and lives in one of
// the probe4 slots from there; an entry that finds none of them free goes
// to the BPF hash flows4 instead (the overflow), which the program reads
// only while it holds entries.
//
// Each slot's seq word publishes it. The writer (one at a time: the NIC's
// mutex) never rewrites a published slot: a new version of an entry is
// written to a free slot (or to flows4) and published there before the old
// slot is retired, so a reader finds the old version, the new one or both,
// never neither. A slot's seq changes on every publish and retire (the
// upper bits count its changes), so the program, which reads seq before
// and after the key and value, notices a slot that changed under it and
// reads again. The new version may land before the old one in the window,
// so a search that finds nothing sums the window's seq words again and
// starts over when the sum moved (probe4 in bpf/lib/lookup.h).
//
// A slot is one cache line (64 bytes): the key, one rule inline (what
// picking the better rule needs and the index of the rule's program, its
// actions in the array progs4), and the index in the array sides4 of the
// entry's second rule, if it has one (a shadow, or a rule at another
// priority): a hit on a one-rule entry reads one line, on a two-rule entry
// two. Programs are interned (see progs4): the rules a vswitch offloads
// per connection mostly share the actions of the flows toward one host, so
// an add writes one slot and no program, and the table's memory is the
// slots, not the actions.
type table4 struct {
	mem   []byte // the array's values, slots+probe4 of slot4Size bytes
	slots uint32 // base slots a key hashes to
	seed  uint64
	progs progs4
	sides sides4
	// tags mirrors the slots for the writer: 0 for a slot that holds
	// nothing, else a tag of the hash of its key (never 0). A window's
	// tags are one cache line of Go memory, where its slots' seq words
	// are eight lines of the map: the writer reads a slot only when its
	// tag matches.
	tags []uint16

	// staged is the writes reserved (stage) but not yet made (commit):
	// each has its free slot taken in tags, its programs interned and its
	// second rule, if any, written into a side entry, so that it can no
	// longer fail. commit makes them in the order of their
	// slots: a bulk load of random keys then walks the table (a cold line
	// and often a page of its own per key, on a table of the rules' size)
	// from one end to the other instead of jumping about it. stagedAt
	// marks their slots, whose keys are not in the table yet (see keyAt).
	staged   []stage4
	stagedAt []uint64
	// stagedOld counts the staged writes that retire an older version
	// (old >= 0): committing them frees slots.
	stagedOld int
	order     [2][]uint32 // commit's radix sort
	warmed    uint32      // the sum of what commit read ahead, kept so that the reads are made
}

// stage4 is a write of table4 reserved by stage: key→ref (and side, the
// entry's second rule, already written into sides4; 0: none) is published
// in slot and then old, when not -1, is retired.
type stage4 struct {
	slot uint32
	old  int32
	side uint32
	key  bpfKey4
	ref  bpfRef4
}

const (
	// probe4 is PROBE4: how many slots from its base a key may occupy.
	probe4   = 8
	seqValid = 2 // SEQ_VALID
	// seqStep is added to seq on every change: bits 0 and 1 are flags.
	seqStep = 4
	hash4M  = 0x9E3779B97F4A7C15
)

// bpfRef4 is struct ref4: one rule of a table4 entry. Scope is 16 bits:
// Open takes at most MostScopes scopes.
type bpfRef4 struct {
	ID                 uint64
	Gen, Counter, Prog uint32
	Scope, Prio        uint16
}

// bpfSlot4 is struct slot4: one cache line.
type bpfSlot4 struct {
	Seq  uint32
	Side uint32 // index in sides4 of the entry's second rule; 0: none
	Key  bpfKey4
	Ref  bpfRef4
}

// bpfSide4 is struct side4: the second rule of a two-rule entry.
type bpfSide4 struct {
	Ref bpfRef4
	Pad uint64
}

const (
	slot4Size = unsafe.Sizeof(bpfSlot4{})
	side4Size = unsafe.Sizeof(bpfSide4{})
)

// A slot is one cache line, a side entry half of one.
var (
	_ [slot4Size - 64]byte
	_ [64 - slot4Size]byte
	_ [side4Size - 32]byte
	_ [32 - side4Size]byte
)

// hash4 is the program's hash4 of k under seed.
func hash4(k *bpfKey4, seed uint64) uint64 {
	w := (*[4]uint64)(unsafe.Pointer(k))
	h := seed
	for i := 0; i < 4; i++ {
		h = (h ^ w[i]) * hash4M
		h ^= h >> 29
	}
	return h
}

// slots4For is the number of base slots for a table of maxRules entries:
// twice as many, so that a window of probe4 slots is rarely full.
func slots4For(maxRules int) uint32 { return uint32(2 * maxRules) }

func (t *table4) slot(i uint32) *bpfSlot4 {
	return (*bpfSlot4)(unsafe.Pointer(&t.mem[uintptr(i)*slot4Size]))
}

func (t *table4) base(k *bpfKey4) (uint32, uint16) {
	h := hash4(k, t.seed)
	return uint32(((h >> 32) * uint64(t.slots)) >> 32), uint16(h) | 1
}

// find returns the slot holding k, or -1.
func (t *table4) find(k *bpfKey4, base uint32, tag uint16) int {
	for i := base; i < base+probe4; i++ {
		if t.tags[i] == tag && *t.keyAt(i) == *k {
			return int(i)
		}
	}
	return -1
}

// keyAt is the key slot i holds or, staged, will hold.
func (t *table4) keyAt(i uint32) *bpfKey4 {
	if len(t.staged) > 0 && t.stagedAt[i/64]&(1<<(i%64)) != 0 {
		for j := range t.staged {
			if t.staged[j].slot == i {
				return &t.staged[j].key
			}
		}
	}
	return &t.slot(i).Key
}

// free returns a slot of k's window that holds nothing, or -1.
func (t *table4) free(base uint32) int {
	for i := base; i < base+probe4; i++ {
		if t.tags[i] == 0 {
			return int(i)
		}
	}
	return -1
}

// put publishes k→v in a free slot of k's window and then retires the slot
// that held k before, if any. It returns false, changing nothing, when the
// window has no free slot, progs4 no room for a program of v, or sides4 no
// free entry for v's second rule.
func (t *table4) put(k *bpfKey4, v *bpfFlowVal) bool {
	var st stage4
	if !t.reserve(k, v, &st) {
		return false
	}
	t.write(&st)
	return true
}

// stage is put with the write left for commit; false as for put. Until
// commit, k must not be put, staged again or deleted.
func (t *table4) stage(k *bpfKey4, v *bpfFlowVal) bool {
	if t.stagedAt == nil {
		t.stagedAt = make([]uint64, (len(t.tags)+63)/64)
		// Room for a whole chunk at once: growing by appends copied
		// megabytes of stage4s several times over a bulk load.
		t.staged = make([]stage4, 0, min(stageChunk, len(t.tags)))
	}
	t.staged = append(t.staged, stage4{})
	st := &t.staged[len(t.staged)-1]
	if !t.reserve(k, v, st) {
		t.staged = t.staged[:len(t.staged)-1]
		return false
	}
	t.stagedAt[st.slot/64] |= 1 << (st.slot % 64)
	if st.old >= 0 {
		t.stagedOld++
	}
	return true
}

// reserve takes a free slot of k's window for k→v (in tags, so that no
// other write takes it), interns v's programs and, for a second rule,
// takes an entry of sides4 and writes the rule there, into st; false,
// changing nothing, when there is no room for any of them. The first rule
// of v that has one goes inline: a one-rule entry names no side entry,
// whichever of v's two places holds its rule. A scope beyond 16 bits (which
// Open's bound on MaxScopes rules out) is refused too: the entry goes to
// flows4, which holds it whole.
func (t *table4) reserve(k *bpfKey4, v *bpfFlowVal, st *stage4) bool {
	base, tag := t.base(k)
	f := t.free(base)
	if f < 0 {
		return false
	}
	var refs [slotsPerEntry]bpfRef4
	n := 0
	for i := range v.Slot {
		r := &v.Slot[i]
		if r.ID == 0 {
			continue
		}
		if r.Scope > 0xffff {
			t.releaseRefs(refs[:n])
			return false
		}
		p, ok := t.progs.intern(r)
		if !ok {
			t.releaseRefs(refs[:n])
			return false
		}
		refs[n] = bpfRef4{ID: r.ID, Scope: uint16(r.Scope), Gen: r.Gen, Counter: r.Counter, Prog: p, Prio: r.Prio}
		n++
	}
	st.side = 0
	if n == 2 {
		i, ok := t.sides.alloc()
		if !ok {
			t.releaseRefs(refs[:n])
			return false
		}
		// Free: no published slot names it, so no reader reads it but
		// one whose slot was retired since, which sees seq changed.
		t.sides.side(i).Ref = refs[1]
		st.side = i
	}
	st.ref = refs[0]
	st.old = int32(t.find(k, base, tag))
	st.slot, st.key = uint32(f), *k
	t.tags[f] = tag
	return true
}

// releaseRefs releases the programs of refs, which reserve interned.
func (t *table4) releaseRefs(refs []bpfRef4) {
	for i := range refs {
		t.progs.release(refs[i].Prog)
	}
}

// write publishes st's slot and then retires the slot it replaces.
func (t *table4) write(st *stage4) {
	s := t.slot(st.slot)
	seq := atomic.LoadUint32(&s.Seq)
	s.Side = st.side
	s.Key = st.key
	s.Ref = st.ref
	// The atomic store orders the stores above (and those of a program
	// interned and a side entry written for it) before it: the program
	// sees the new seq only with the key, the rules and their programs
	// in place.
	atomic.StoreUint32(&s.Seq, (seq+seqStep)&^3|seqValid)
	if st.old >= 0 {
		t.retire(uint32(st.old))
	}
}

// commit makes the staged writes, in the order of their slots (a radix
// sort of their indexes, a byte of the slot number at a time).
func (t *table4) commit() {
	n := len(t.staged)
	if n == 0 {
		return
	}
	if cap(t.order[0]) < n {
		t.order[0], t.order[1] = make([]uint32, n), make([]uint32, n)
		prefault(t.order[0])
		prefault(t.order[1])
	}
	src, dst := t.order[0][:n], t.order[1][:n]
	for i := range src {
		src[i] = uint32(i)
	}
	for shift := uint(0); len(t.tags)>>shift > 1; shift += 8 {
		var count [257]int
		for _, i := range src {
			count[(t.staged[i].slot>>shift)&0xff+1]++
		}
		for d := 1; d < 257; d++ {
			count[d] += count[d-1]
		}
		for _, i := range src {
			d := (t.staged[i].slot >> shift) & 0xff
			dst[count[d]] = i
			count[d]++
		}
		src, dst = dst, src
	}
	// Each publish is an atomic store, which x86 makes with a locked
	// instruction: no later load starts before it completes, so a slot
	// whose line is cold stalls the loop for a whole miss. The slots of
	// a group (a line each) are therefore read first, back to back, their
	// misses overlapping, and written after.
	for g := 0; g < n; g += commitGroup {
		group := src[g:min(g+commitGroup, n)]
		for _, i := range group {
			s := t.slot(t.staged[i].slot)
			t.warmed += atomic.LoadUint32(&s.Seq)
		}
		for _, i := range group {
			st := &t.staged[i]
			t.stagedAt[st.slot/64] &^= 1 << (st.slot % 64)
			t.write(st)
		}
	}
	t.staged = t.staged[:0]
	t.stagedOld = 0
}

// commitGroup is how many slots commit reads ahead of writing them.
const commitGroup = 16

// retire empties slot i and then releases its programs and its side
// entry: either is rewritten only once no published slot names it.
func (t *table4) retire(i uint32) {
	t.tags[i] = 0
	s := t.slot(i)
	atomic.StoreUint32(&s.Seq, (atomic.LoadUint32(&s.Seq)+seqStep)&^3)
	if s.Ref.ID != 0 {
		t.progs.release(s.Ref.Prog)
	}
	if s.Side != 0 {
		t.progs.release(t.sides.side(s.Side).Ref.Prog)
		t.sides.release(s.Side)
	}
}

// del retires the slot holding k; false when none does.
func (t *table4) del(k *bpfKey4) bool {
	base, tag := t.base(k)
	i := t.find(k, base, tag)
	if i < 0 {
		return false
	}
	t.retire(uint32(i))
	return true
}

// progs4 is the user-space side of the BPF array progs4: the programs of
// table4's rules, interned (a rule's encoding with its own fields, those
// its ref holds, zero), each with the count of the refs that name it. A
// program is written before a slot naming it is published and rewritten
// (reused) only after its last ref was retired: the reader, which reads
// the program between its slot's two seq reads, notices the rewrite.
type progs4 struct {
	mem  []byte // the array's values, max of bpfRuleSize bytes
	max  uint32
	ids  map[bpfRule]uint32
	refs []uint32
	free []uint32
	next uint32
	// last is the program interned last and its index: a run of rules
	// with the same actions (a bulk load) finds it without hashing it.
	last    bpfRule
	lastIdx uint32
	lastOK  bool
}

const bpfRuleSize = unsafe.Sizeof(bpfRule{})

func newProgs4(mem []byte, max uint32) progs4 {
	return progs4{mem: mem, max: max, ids: map[bpfRule]uint32{}, refs: make([]uint32, max)}
}

func (p *progs4) prog(i uint32) *bpfRule {
	return (*bpfRule)(unsafe.Pointer(&p.mem[uintptr(i)*bpfRuleSize]))
}

// intern returns the index of r's program, written into progs4 when new,
// with one more ref; false when progs4 is full.
func (p *progs4) intern(r *bpfRule) (uint32, bool) {
	k := *r
	k.ID, k.Scope, k.Gen, k.Counter, k.Prio = 0, 0, 0, 0, 0
	if p.lastOK && k == p.last {
		p.refs[p.lastIdx]++
		return p.lastIdx, true
	}
	i, ok := p.ids[k]
	if !ok {
		if n := len(p.free); n > 0 {
			i = p.free[n-1]
			p.free = p.free[:n-1]
		} else if p.next < p.max {
			i = p.next
			p.next++
		} else {
			return 0, false
		}
		*p.prog(i) = k
		p.ids[k] = i
	}
	p.refs[i]++
	p.last, p.lastIdx, p.lastOK = k, i, true
	return i, true
}

// release drops a ref of program i, freeing it with its last.
func (p *progs4) release(i uint32) {
	p.refs[i]--
	if p.refs[i] != 0 {
		return
	}
	delete(p.ids, *p.prog(i))
	p.free = append(p.free, i)
	if p.lastOK && p.lastIdx == i {
		p.lastOK = false
	}
}

// sides4 is the user-space side of the BPF array sides4: the second rules
// of table4's two-rule entries, one entry per slot that names it. Entry 0
// is never used (a slot's side 0: none). An entry is written before the
// slot naming it is published and reused only after that slot was retired:
// the reader, which reads it between its slot's two seq reads, notices.
type sides4 struct {
	mem  []byte // the array's values, max of side4Size bytes
	max  uint32
	free []uint32
	next uint32
}

func newSides4(mem []byte, max uint32) sides4 { return sides4{mem: mem, max: max, next: 1} }

func (s *sides4) side(i uint32) *bpfSide4 {
	return (*bpfSide4)(unsafe.Pointer(&s.mem[uintptr(i)*side4Size]))
}

// alloc returns a free entry; false when there is none.
func (s *sides4) alloc() (uint32, bool) {
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		return i, true
	}
	if s.next < s.max {
		s.next++
		return s.next - 1, true
	}
	return 0, false
}

// release frees entry i, whose slot was retired.
func (s *sides4) release(i uint32) { s.free = append(s.free, i) }

// used is the number of entries allocated.
func (s *sides4) used() int { return int(s.next) - 1 - len(s.free) }
