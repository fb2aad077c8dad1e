package policy

import (
	"hash/maphash"
	"math/bits"
)

// nameIndex finds a VM's index by name. It exists because at DASH scale
// (millions of VMs) a Go map spent most of the load time waiting on cache
// misses one at a time; this table lets Build compute where a batch of names
// will land and touch those slots together first (see buildVMs), and it
// costs 8 bytes per slot with no pointers for the collector to scan.
//
// Each slot holds a 32-bit tag from the name's hash (high half, never 0)
// and the VM index+1 (low half; 0 = empty). Names are compared only when
// tags match.
type nameIndex struct {
	seed  maphash.Seed
	slots []uint64
	n     int
}

func newNameIndex(n int) *nameIndex {
	return &nameIndex{seed: maphash.MakeSeed(), slots: make([]uint64, max(8, n*maxLoadDen/maxLoadNum+1))}
}

func (x *nameIndex) hash(name string) uint64 { return maphash.String(x.seed, name) }

func (x *nameIndex) home(h uint64) int {
	i, _ := bits.Mul64(h, uint64(len(x.slots)))
	return int(i)
}

func tagOf(h uint64) uint64 { return (h>>32 | 1) << 32 }

// get returns the index of the VM named name.
func (x *nameIndex) get(name string, vms []VM) (int, bool) {
	if x == nil || x.n == 0 {
		return 0, false
	}
	h := x.hash(name)
	tag := tagOf(h)
	for i := x.home(h); ; {
		s := x.slots[i]
		if s == 0 {
			return 0, false
		}
		if s&^0xFFFFFFFF == tag && vms[uint32(s)-1].Name == name {
			return int(uint32(s) - 1), true
		}
		if i++; i == len(x.slots) {
			i = 0
		}
	}
}

// insert adds name → idx given the name's hash, unless the name is
// present; it returns the index already holding the name and false then.
// vms[idx] need not exist yet; names already inserted must be in vms.
func (x *nameIndex) insert(h uint64, name string, idx int, vms []VM) (int, bool) {
	if (x.n+1)*maxLoadDen > len(x.slots)*maxLoadNum {
		x.grow(vms)
	}
	tag := tagOf(h)
	for i := x.home(h); ; {
		s := x.slots[i]
		if s == 0 {
			x.slots[i] = tag | uint64(uint32(idx+1))
			x.n++
			return idx, true
		}
		if s&^0xFFFFFFFF == tag && vms[uint32(s)-1].Name == name {
			return int(uint32(s) - 1), false
		}
		if i++; i == len(x.slots) {
			i = 0
		}
	}
}

func (x *nameIndex) grow(vms []VM) {
	nx := &nameIndex{seed: x.seed, slots: make([]uint64, len(x.slots)*2)}
	for _, s := range x.slots {
		if s != 0 {
			vi := int(uint32(s) - 1)
			nx.insert(nx.hash(vms[vi].Name), vms[vi].Name, vi, vms)
		}
	}
	*x = *nx
}
