package vswitch

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"math/rand/v2"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
)

// flowTable is the host's flow cache: exact flow key → flow.
//
// A Go map keyed by hal.FlowKey stores the 96-byte key in every slot: a
// first packet's lookup (a miss, for every new flow) compares control bytes
// across large groups, and each growth moves and rehashes every key. Here a
// slot is 16 bytes, the key's full hash and the flow (which holds the key):
// a miss reads one or two cache lines of slots and never touches a flow,
// and growing re-slots by the stored hashes without reading a key.
//
// Open addressing with linear probing; a removed slot becomes a tombstone
// so that probe chains stay intact, and tombstones are swept when the
// table is rebuilt. Iteration tolerates removal and insertion during the
// loop, as a Go map's does: a flow removed before the loop reaches it is
// not produced; one added during the loop may or may not be.
type flowTable struct {
	slots []flowSlot
	mask  uint64
	n     int // live flows
	used  int // live flows and tombstones
	seed  [2]uint64
	// puts is a Bloom filter of the hashes put since forgetPuts (one bit
	// per hash, by its top bits): a lookup that missed before then can only
	// hit now if its hash's bit is set (mayHavePut). HandleBatch looks its
	// packets up before walking the new ones, and again after the walks
	// of earlier packets made flows: the filter spares the second lookup
	// of every packet whose key none of those flows has.
	puts [putsWords]uint64
}

// putsWords is the size of flowTable.puts in 64-bit words: 1,024 bits,
// so that a batch's 64 flows and their reverse flows leave nine bits in
// ten clear.
const putsWords = 16

// forgetPuts clears the filter of hashes put.
func (t *flowTable) forgetPuts() { t.puts = [putsWords]uint64{} }

// mayHavePut reports whether a flow with hash h may have been put since
// forgetPuts; false is certain.
func (t *flowTable) mayHavePut(h uint64) bool {
	b := h >> (64 - 10)
	return t.puts[b/64]&(1<<(b%64)) != 0
}

// flowSlot: f == nil is empty (h == 0) or a tombstone (h == 1).
type flowSlot struct {
	h uint64
	f *flow
}

const (
	// flowTableMin is the initial number of slots.
	flowTableMin = 64
	// Slots are rebuilt past 3/4 use (live and tombstones): linear probing
	// keeps short chains up to there.
	flowLoadNum, flowLoadDen = 3, 4
)

// hashKey hashes every field of k, seeded per table so that keys chosen
// by a VM cannot be made to collide on every host alike. It is wyhash's
// mixing step over the key's twelve 64-bit words.
func (t *flowTable) hashKey(k *hal.FlowKey) uint64 {
	le := binary.LittleEndian
	h := t.seed[0]
	h = mum(le.Uint64(k.IPSrc[0:8])^h, le.Uint64(k.IPSrc[8:16])^t.seed[1])
	h = mum(le.Uint64(k.IPDst[0:8])^h, le.Uint64(k.IPDst[8:16])^t.seed[1])
	h = mum(uint64(k.L4Src)|uint64(k.L4Dst)<<16|uint64(k.Proto)<<32|uint64(k.TunKind)<<40^h,
		uint64(k.InPort)|uint64(k.VNI)<<32^t.seed[1])
	h = mum(mac64(k.EthSrc)|uint64(k.EthType)<<48^h, mac64(k.EthDst)|uint64(k.VLAN)<<48^t.seed[1])
	if k.TunKind != hal.EncapNone || k.TunSrc != ([16]byte{}) || k.TunDst != ([16]byte{}) {
		h = mum(le.Uint64(k.TunSrc[0:8])^h, le.Uint64(k.TunSrc[8:16])^t.seed[1])
		h = mum(le.Uint64(k.TunDst[0:8])^h, le.Uint64(k.TunDst[8:16])^t.seed[1])
	}
	h = mum(h^0xa0761d6478bd642f, t.seed[1]^0xe7037ed1a0b428db)
	if h < 2 {
		h += 2 // 0 and 1 mark empty slots and tombstones
	}
	return h
}

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func mac64(m hal.MAC) uint64 {
	return uint64(m[0]) | uint64(m[1])<<8 | uint64(m[2])<<16 | uint64(m[3])<<24 | uint64(m[4])<<32 | uint64(m[5])<<40
}

// init empties the table, sized for n flows. The seed is drawn once and
// kept: hashes computed earlier stay valid.
func (t *flowTable) init(n int) {
	size := flowTableMin
	for size*flowLoadNum/flowLoadDen < n {
		size <<= 1
	}
	if t.seed == ([2]uint64{}) {
		t.seed = [2]uint64{rand.Uint64() | 1, rand.Uint64() | 1}
	}
	t.slots = make([]flowSlot, size)
	t.mask = uint64(size - 1)
	t.n, t.used = 0, 0
}

// Len is the number of flows.
func (t *flowTable) Len() int { return t.n }

// get returns the flow with key k, or nil.
func (t *flowTable) get(k *hal.FlowKey) *flow {
	if t.n == 0 {
		return nil
	}
	return t.getHashed(k, t.hashKey(k))
}

// getHashed is get with the key's hash already known (hashKey).
func (t *flowTable) getHashed(k *hal.FlowKey, h uint64) *flow {
	if t.n == 0 {
		return nil
	}
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.h == h && s.f != nil && s.f.key == *k {
			return s.f
		}
		if s.h == 0 {
			return nil
		}
	}
}

// slotAddr is the address of the first slot a lookup of hash h reads, for
// prefetching (nothing is read or written through it), or 0.
func (t *flowTable) slotAddr(h uint64) uintptr {
	if len(t.slots) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&t.slots[h&t.mask]))
}

// flowSlotSize is the size of a flowSlot.
const flowSlotSize = unsafe.Sizeof(flowSlot{})

// put records f under its key, in place of any flow with the same key
// (as assigning to a Go map would).
func (t *flowTable) put(f *flow) {
	if t.slots == nil {
		t.init(0)
	}
	t.putHashed(f, t.hashKey(&f.key))
}

// putHashed is put with f's key's hash already known (hashKey).
func (t *flowTable) putHashed(f *flow, h uint64) {
	if t.slots == nil {
		t.init(0)
	}
	if (t.used+1)*flowLoadDen > len(t.slots)*flowLoadNum {
		t.rebuild()
	}
	b := h >> (64 - 10)
	t.puts[b/64] |= 1 << (b % 64)
	var free *flowSlot
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.f == nil {
			if free == nil {
				free = s
			}
			if s.h == 0 {
				break
			}
			continue
		}
		if s.h == h && s.f.key == f.key {
			s.f.h.inTable = false
			s.f, f.h.inTable = f, true
			return
		}
	}
	if free.h == 0 {
		t.used++
	}
	free.h, free.f = h, f
	f.h.inTable = true
	t.n++
}

// remove forgets f (and only f: not another flow with its key).
func (t *flowTable) remove(f *flow) {
	if t.n == 0 {
		return
	}
	t.removeHashed(f, t.hashKey(&f.key))
}

// removeHashed is remove with f's key's hash already known (hashKey).
func (t *flowTable) removeHashed(f *flow, h uint64) {
	if t.n == 0 {
		return
	}
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.f == f {
			s.f, f.h.inTable = nil, false
			if t.slots[(i+1)&t.mask].h == 0 {
				// The end of a chain: no probe needs to pass this slot.
				s.h = 0
				t.used--
			} else {
				s.h = 1
			}
			t.n--
			return
		}
		if s.h == 0 {
			return
		}
	}
}

// rebuild re-slots the live flows by their stored hashes, in a table twice
// as large when they fill more than half of it, the same size otherwise
// (tombstones alone filled it).
func (t *flowTable) rebuild() {
	old := t.slots
	size := len(old)
	if t.n*2 >= size {
		size *= 2
	}
	t.slots = make([]flowSlot, size)
	t.mask = uint64(size - 1)
	t.used = t.n
	for j := range old {
		o := &old[j]
		if o.f == nil {
			continue
		}
		for i := o.h & t.mask; ; i = (i + 1) & t.mask {
			if s := &t.slots[i]; s.f == nil {
				*s = *o
				break
			}
		}
	}
}

// all yields every flow. The loop body may remove flows and add new ones.
func (t *flowTable) all() iter.Seq[*flow] {
	return func(yield func(*flow) bool) {
		slots := t.slots
		for i := range slots {
			f := slots[i].f
			// A rebuild during the loop leaves it on the old slots, where
			// flows removed since still appear: they are marked dead.
			if f == nil || f.h.dead {
				continue
			}
			if !yield(f) {
				return
			}
		}
	}
}
