package softnic

import (
	"sync/atomic"
	"unsafe"
)

// Huge pages for the rule table. With a million rules the datapath's two
// reads per packet, a bucket and an entry, land anywhere in some 150 MB:
// with 4 KiB pages each is a TLB miss as well as a cache miss, and the page
// walk adds its own loads before the line itself can come. The bucket
// arrays of large tables and the entry chunks beyond the first few are
// therefore taken from anonymous mappings that the kernel is asked to back
// with transparent huge pages (madvise(MADV_HUGEPAGE); on kernels with THP
// "always" they get them anyway, with "never" they stay 4 KiB pages and
// only the TLB advantage is lost). Neither holds Go pointers, so the
// garbage collector has nothing to scan there.
//
// Such memory is unmapped by a cleanup on its owner (hugeMem), which every
// holder of the memory keeps reachable: a table's owner sits beside its
// bucket slice (htab.mem), the chunks' owners in the views (view.slabs) as
// well as the writer's list. A reader can reach the memory only through a
// view it entered, so nothing is unmapped under it.

// hugeMem owns one mapping; when it becomes unreachable the mapping goes,
// unless free unmapped it before.
type hugeMem struct {
	r *hugeRegion
}

// hugeRegion is the mapping itself, which the cleanup of its owner and
// free share.
type hugeRegion struct {
	b     []byte
	freed atomic.Bool
}

func (r *hugeRegion) unmap() {
	if !r.freed.Swap(true) {
		hugeInUse.Add(-int64(len(r.b)))
		unmapHuge(r.b)
	}
}

// free unmaps m's memory now: the writer calls it for a bucket array it
// replaced, which no view and no reader can reach any more (a view's
// tables change only while no reader is on it). A nil m is heap memory,
// left to the collector.
func (m *hugeMem) free() {
	if m != nil {
		m.r.unmap()
	}
}

// hugeInUse is the bytes mapped for rule tables by every NIC in the
// process, which the memory benchmarks add to the heap's figure.
var hugeInUse atomic.Int64

const (
	// hugeMinBytes: smaller allocations come from the Go heap (a huge
	// page for a table of a few thousand rules would waste most of it).
	hugeMinBytes = 2 << 20
	// slabBytes is the mapping that entry chunks are carved from, once
	// a NIC holds heapChunks chunks from the heap.
	slabBytes  = 8 << 20
	heapChunks = 64
)

// makeBuckets returns a zeroed array of n buckets, from huge-page memory
// when it is large (mem is then its owner, to keep beside it).
func makeBuckets(n int) (b []bucket, mem *hugeMem) {
	size := n * int(unsafe.Sizeof(bucket{}))
	if size >= hugeMinBytes {
		if p, m := mapHuge(size); p != nil {
			return unsafe.Slice((*bucket)(p), n), m
		}
	}
	return make([]bucket, n), nil
}

// newChunk returns a chunk for the writer whose entries are of size class
// class, zeroed: from the heap for the first heapChunks, then carved from
// huge-page slabs. A heap array of tiny or small entries has room for an
// entry struct past its last record, so that such an entry read as an
// entry (whose fields beyond its class's size are never touched) lies
// within one allocation, as checkptr requires.
func (w *writerState) newChunk(class uint8) *chunk {
	c := &chunk{class: class, ids: new([chunkSize]uint32)}
	size := chunkSize * int(classSize[class])
	if len(w.chunks) >= heapChunks {
		if w.slabFree < size {
			p, m := mapHuge(slabBytes)
			if p != nil {
				w.slabs = append(w.slabs, m)
				w.slabNext, w.slabFree = p, slabBytes
			}
		}
		if w.slabFree >= size {
			c.e = w.slabNext
			w.slabNext = unsafe.Add(w.slabNext, size)
			w.slabFree -= size
			return c
		}
	}
	// Large objects, so page-aligned (entRef's low bits are free). The
	// smaller classes get room for a whole entry struct past their last
	// record: the pointer entryAt makes to it spans that much.
	switch class {
	case classTiny:
		c.e = unsafe.Pointer(new([chunkSize*48/8 + (128-48)/8]uint64))
	case classSmall:
		c.e = unsafe.Pointer(new([chunkSize*64/8 + (128-64)/8]uint64))
	default:
		c.e = unsafe.Pointer(new([chunkSize]entry))
	}
	return c
}
