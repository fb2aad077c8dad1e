package policy

import (
	"encoding/binary"
	"math/bits"
	"net/netip"

	"github.com/nicpath/nicpath/internal/hugemem"
)

// mapEntry is one compiled CA→PA mapping. It holds no pointers, so the
// garbage collector never scans the table, and its size is exactly
// capacity×36 bytes. The PA is stored as the index of the host (hosts are
// few, PAs are 16 bytes); the VM index leads back to the model for names.
type mapEntry struct {
	ca   [16]byte
	vni  uint32
	host uint32
	vm   uint32
	mac  MAC
	v4   bool
	used bool
}

// mappingTable is an open-addressing hash table keyed by (VNI, CA), with the
// entries stored in the slots themselves and probed linearly. A lookup is
// one dependent memory access (plus a neighbour when it probes), where an
// index array in front of dense entries costs two: the second miss doubled
// lookup time at millions of mappings. The capacity is not a power of two
// (the slot is picked by multiplying the hash into the capacity), so the
// load factor stays near maxLoad instead of halving after every doubling:
// 36 bytes / 0.75 = 48 bytes per mapping.
type mappingTable struct {
	entries []mapEntry
	n       int
	// mem owns entries when they live in a huge-page mapping (hugemem.go);
	// nil for heap memory.
	mem *hugemem.Mem
}

// maxLoad is the fullness at which a linear-probing table still finds a
// present key in about 2.5 probes, most of them in the same cache line.
const (
	maxLoadNum = 3
	maxLoadDen = 4
)

func newMappingTable(n int) *mappingTable {
	e, mem := makeEntries(max(8, n*maxLoadDen/maxLoadNum+1))
	return &mappingTable{entries: e, mem: mem}
}

func (t *mappingTable) slot(vni uint32, ca *[16]byte, v4 bool) int {
	hi := binary.LittleEndian.Uint64(ca[:8])
	lo := binary.LittleEndian.Uint64(ca[8:])
	h := lo*0x9E3779B97F4A7C15 ^ hi*0xC2B2AE3D27D4EB4F ^ uint64(vni)*0x165667B19E3779F9
	if v4 {
		h ^= 0xD6E8FEB86659FD93
	}
	// The product above only carries variation upward; fold the high half
	// down and mix once more so that every input bit reaches the top bits
	// the slot is taken from.
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	h ^= h >> 32
	s, _ := bits.Mul64(h, uint64(len(t.entries)))
	return int(s)
}

// insert adds e unless its key is present; it returns the slot holding the
// key and whether e was added.
func (t *mappingTable) insert(e mapEntry) (int, bool) {
	if (t.n+1)*maxLoadDen > len(t.entries)*maxLoadNum {
		t.grow()
	}
	i := t.slot(e.vni, &e.ca, e.v4)
	e.used = true
	for {
		o := &t.entries[i]
		if !o.used {
			*o = e
			t.n++
			return i, true
		}
		if o.vni == e.vni && o.ca == e.ca && o.v4 == e.v4 {
			return i, false
		}
		if i++; i == len(t.entries) {
			i = 0
		}
	}
}

// grow doubles the table; only used when a caller under-sized it.
func (t *mappingTable) grow() {
	nt := newMappingTable(max(t.n*2, 8))
	for _, e := range t.entries {
		if e.used {
			nt.insert(e)
		}
	}
	*t = *nt
}

// lookup returns the slot of the entry for (vni, ca).
func (t *mappingTable) lookup(vni uint32, ca netip.Addr) (int, bool) {
	if t == nil || t.n == 0 {
		return 0, false
	}
	key := ca.As16()
	v4 := ca.Is4()
	i := t.slot(vni, &key, v4)
	for {
		o := &t.entries[i]
		if !o.used {
			return 0, false
		}
		if o.vni == vni && o.ca == key && o.v4 == v4 {
			return i, true
		}
		if i++; i == len(t.entries) {
			i = 0
		}
	}
}

func (e *mapEntry) addr() netip.Addr {
	a := netip.AddrFrom16(e.ca)
	if e.v4 {
		return a.Unmap()
	}
	return a
}

func makeEntry(vni uint32, ca netip.Addr, host, vm int, mac MAC) mapEntry {
	return mapEntry{ca: ca.As16(), vni: vni, host: uint32(host), vm: uint32(vm), mac: mac, v4: ca.Is4()}
}
