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
// A slot holds the key and, per rule, what picking the better rule needs
// and the index of the rule's program (its actions, in the array progs4):
// 104 bytes, where the rules inline took 360. Programs are interned (see
// progs4): the rules a vswitch offloads per connection mostly share the
// actions of the flows toward one host, so an add writes one slot and no
// program, and the table's memory is the slots, not the actions.
type table4 struct {
	mem   []byte // the array's values, slots+probe4 of slot4Size bytes
	slots uint32 // base slots a key hashes to
	seed  uint64
	progs progs4
	// tags mirrors the slots for the writer: 0 for a slot that holds
	// nothing, else a tag of the hash of its key (never 0). A window's
	// tags are one cache line of Go memory, where its slots' seq words
	// are eight lines of the map: the writer reads a slot only when its
	// tag matches.
	tags []uint16
}

const (
	// probe4 is PROBE4: how many slots from its base a key may occupy.
	probe4   = 8
	seqValid = 2 // SEQ_VALID
	// seqStep is added to seq on every change: bits 0 and 1 are flags.
	seqStep = 4
	hash4M  = 0x9E3779B97F4A7C15
)

// bpfRef4 is struct ref4: one rule of a table4 slot.
type bpfRef4 struct {
	ID                        uint64
	Scope, Gen, Counter, Prog uint32
	Prio, Pad                 uint16
	Pad2                      uint32
}

// bpfSlot4 is struct slot4.
type bpfSlot4 struct {
	Seq, Pad uint32
	Key      bpfKey4
	Ref      [slotsPerEntry]bpfRef4
}

const slot4Size = unsafe.Sizeof(bpfSlot4{})

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
		if t.tags[i] == tag && t.slot(i).Key == *k {
			return int(i)
		}
	}
	return -1
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
// window has no free slot or progs4 no room for a program of v.
func (t *table4) put(k *bpfKey4, v *bpfFlowVal) bool {
	base, tag := t.base(k)
	f := t.free(base)
	if f < 0 {
		return false
	}
	var refs [slotsPerEntry]bpfRef4
	for i := range v.Slot {
		r := &v.Slot[i]
		if r.ID == 0 {
			continue
		}
		p, ok := t.progs.intern(r)
		if !ok {
			for j := range i {
				if refs[j].ID != 0 {
					t.progs.release(refs[j].Prog)
				}
			}
			return false
		}
		refs[i] = bpfRef4{ID: r.ID, Scope: r.Scope, Gen: r.Gen, Counter: r.Counter, Prog: p, Prio: r.Prio}
	}
	old := t.find(k, base, tag)
	t.tags[f] = tag
	s := t.slot(uint32(f))
	seq := atomic.LoadUint32(&s.Seq)
	s.Key = *k
	s.Ref = refs
	// The atomic store orders the stores above (and those of a program
	// interned for it) before it: the program sees the new seq only with
	// the key, the refs and their programs in place.
	atomic.StoreUint32(&s.Seq, (seq+seqStep)&^3|seqValid)
	if old >= 0 {
		t.retire(uint32(old))
	}
	return true
}

// retire empties slot i and then releases its programs: a program is
// rewritten only once no published slot names it.
func (t *table4) retire(i uint32) {
	t.tags[i] = 0
	s := t.slot(i)
	atomic.StoreUint32(&s.Seq, (atomic.LoadUint32(&s.Seq)+seqStep)&^3)
	for j := range s.Ref {
		if s.Ref[j].ID != 0 {
			t.progs.release(s.Ref[j].Prog)
		}
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
