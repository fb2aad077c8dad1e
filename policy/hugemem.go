package policy

import (
	"sync/atomic"
	"unsafe"
)

// Huge pages for the CA→PA table. At a million mappings the table is some
// 48 MB that every first packet reads at a random slot: with 4 KiB pages
// that read is a TLB miss as well as a cache miss, and the page walk's own
// loads come before the slot's line can. A table that large is therefore
// taken from an anonymous mapping that the kernel is asked to back with
// transparent huge pages (madvise(MADV_HUGEPAGE); with THP "always" it gets
// them anyway, with "never" it keeps 4 KiB pages and only the TLB
// advantage is lost). mapEntry holds no Go pointers, so the collector has
// nothing to scan there.
//
// The mapping is unmapped by a cleanup on its owner (hugeMem), which the
// table keeps beside its entries (mappingTable.mem): the entries are only
// reached through the table, so nothing reads them after it is gone.

// hugeMem owns one mapping; when it becomes unreachable the mapping goes.
type hugeMem struct {
	r *hugeRegion
}

// hugeRegion is the mapping itself, which the owner's cleanup unmaps.
type hugeRegion struct {
	b []byte
}

func (r *hugeRegion) unmap() {
	hugeInUse.Add(-int64(len(r.b)))
	unmapHuge(r.b)
}

// hugeInUse is the bytes mapped for CA→PA tables in the process, which the
// memory benchmarks add to the heap's figure.
var hugeInUse atomic.Int64

// hugeMinBytes: smaller tables come from the Go heap (a huge page for a
// table of a few thousand mappings would waste most of it).
const hugeMinBytes = 2 << 20

// makeEntries returns a zeroed array of n entries, from huge-page memory
// when it is large (mem is then its owner, to keep beside it).
func makeEntries(n int) (e []mapEntry, mem *hugeMem) {
	if size := n * int(unsafe.Sizeof(mapEntry{})); size >= hugeMinBytes {
		if p, m := mapHuge(size); p != nil {
			return unsafe.Slice((*mapEntry)(p), n), m
		}
	}
	return make([]mapEntry, n), nil
}
