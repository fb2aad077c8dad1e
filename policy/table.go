package policy

import (
	"math/bits"
	"net/netip"
)

// mapEntry is one compiled CA→PA mapping. It holds no pointers, so the table
// is invisible to the garbage collector's marking and its size is exactly
// entries×36 bytes plus the slot array. The PA is stored as the index of the
// host (hosts are few, PAs are 16 bytes); the VM index leads back to the
// model for names.
type mapEntry struct {
	ca   [16]byte
	vni  uint32
	host uint32
	vm   uint32
	mac  MAC
	v4   bool
	_    uint8
}

// mappingTable is an open-addressing hash table keyed by (VNI, CA). Entries
// are stored densely in insertion order; the slot array holds entry index+1
// (0 = empty) and is probed linearly. Keeping slots at 4 bytes and the load
// factor ≤ 3/4 costs at most ~10.7 bytes per mapping on top of the entry.
type mappingTable struct {
	entries []mapEntry
	slots   []uint32
	shift   uint // 64 - log2(len(slots))
}

func newMappingTable(n int) *mappingTable {
	size := 8
	for size*3 < n*4 {
		size *= 2
	}
	return &mappingTable{
		entries: make([]mapEntry, 0, n),
		slots:   make([]uint32, size),
		shift:   uint(64 - bits.TrailingZeros(uint(size))),
	}
}

func (t *mappingTable) hash(vni uint32, ca *[16]byte, v4 bool) uint64 {
	hi := uint64(ca[0])<<56 | uint64(ca[1])<<48 | uint64(ca[2])<<40 | uint64(ca[3])<<32 |
		uint64(ca[4])<<24 | uint64(ca[5])<<16 | uint64(ca[6])<<8 | uint64(ca[7])
	lo := uint64(ca[8])<<56 | uint64(ca[9])<<48 | uint64(ca[10])<<40 | uint64(ca[11])<<32 |
		uint64(ca[12])<<24 | uint64(ca[13])<<16 | uint64(ca[14])<<8 | uint64(ca[15])
	h := lo*0x9E3779B97F4A7C15 ^ hi*0xC2B2AE3D27D4EB4F ^ uint64(vni)*0x165667B19E3779F9
	if v4 {
		h ^= 0xD6E8FEB86659FD93
	}
	// Fibonacci hashing takes the top bits; mix once more so that CAs that
	// differ only in low bits spread over the whole table.
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	h ^= h >> 32
	return h
}

// insert adds e unless its key is present; it returns the index of the entry
// holding the key and whether e was added. The table never grows: callers
// size it for the final count.
func (t *mappingTable) insert(e mapEntry) (int, bool) {
	if len(t.entries) == cap(t.entries) || (len(t.entries)+1)*4 > len(t.slots)*3 {
		t.grow()
	}
	mask := uint64(len(t.slots) - 1)
	i := t.hash(e.vni, &e.ca, e.v4) >> t.shift
	for {
		s := t.slots[i]
		if s == 0 {
			t.entries = append(t.entries, e)
			t.slots[i] = uint32(len(t.entries))
			return len(t.entries) - 1, true
		}
		o := &t.entries[s-1]
		if o.vni == e.vni && o.ca == e.ca && o.v4 == e.v4 {
			return int(s - 1), false
		}
		i = (i + 1) & mask
	}
}

// grow doubles the slot array; only used when a caller under-sized it.
func (t *mappingTable) grow() {
	n := max(cap(t.entries)*2, 8)
	nt := newMappingTable(n)
	for _, e := range t.entries {
		nt.insert(e)
	}
	*t = *nt
}

// lookup returns the index of the entry for (vni, ca).
func (t *mappingTable) lookup(vni uint32, ca netip.Addr) (int, bool) {
	if t == nil || len(t.entries) == 0 {
		return 0, false
	}
	key := ca.As16()
	v4 := ca.Is4()
	mask := uint64(len(t.slots) - 1)
	i := t.hash(vni, &key, v4) >> t.shift
	for {
		s := t.slots[i]
		if s == 0 {
			return 0, false
		}
		o := &t.entries[s-1]
		if o.vni == vni && o.ca == key && o.v4 == v4 {
			return int(s - 1), true
		}
		i = (i + 1) & mask
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
