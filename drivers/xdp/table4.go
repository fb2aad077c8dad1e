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
type table4 struct {
	mem   []byte // the array's values, slots+probe4 of slot4Size bytes
	slots uint32 // base slots a key hashes to
	seed  uint64
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

// bpfSlot4 is struct slot4.
type bpfSlot4 struct {
	Seq, Pad uint32
	Key      bpfKey4
	Val      bpfFlowVal
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
// window has no free slot.
func (t *table4) put(k *bpfKey4, v *bpfFlowVal) bool {
	base, tag := t.base(k)
	f := t.free(base)
	if f < 0 {
		return false
	}
	old := t.find(k, base, tag)
	t.tags[f] = tag
	s := t.slot(uint32(f))
	seq := atomic.LoadUint32(&s.Seq)
	s.Key = *k
	s.Val = *v
	// The atomic store orders the stores above before it: the program
	// sees the new seq only with the key and value in place.
	atomic.StoreUint32(&s.Seq, (seq+seqStep)&^3|seqValid)
	if old >= 0 {
		t.retire(uint32(old))
	}
	return true
}

// retire empties slot i.
func (t *table4) retire(i uint32) {
	t.tags[i] = 0
	s := t.slot(i)
	atomic.StoreUint32(&s.Seq, (atomic.LoadUint32(&s.Seq)+seqStep)&^3)
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
