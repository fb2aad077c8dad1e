package softnic

import (
	"sync/atomic"
	"unsafe"

	"github.com/nicpath/nicpath/internal/hugemem"
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
// Such memory (internal/hugemem) is unmapped by a cleanup on its owner
// (hugemem.Mem) or by the writer's Free, so every holder of the memory
// keeps its owner reachable: a table's owner sits beside its bucket slice (htab.mem), the chunks' owners in the views (view.slabs) as
// well as the writer's list. A reader can reach the memory only through a
// view it entered, so nothing is unmapped under it.

// hugeInUse is the bytes mapped for rule tables by every NIC in the
// process, which the memory benchmarks add to the heap's figure.
var hugeInUse atomic.Int64

const (
	// slabBytes is the mapping that entry chunks are carved from, once
	// a NIC holds heapChunks chunks from the heap.
	slabBytes  = 8 << 20
	heapChunks = 64
)

// makeBuckets returns a zeroed array of n buckets, from huge-page memory
// when it is large (mem is then its owner, to keep beside it).
func makeBuckets(n int) (b []bucket, mem *hugemem.Mem) {
	return hugemem.Slice[bucket](n, &hugeInUse)
}

// newChunk returns a chunk for the writer whose entries are of size class
// class, zeroed: from the heap for the first heapChunks, then carved from
// huge-page slabs. A heap array of tiny or small entries has room for an
// entry struct past its last record, so that such an entry read as an
// entry (whose fields beyond its class's size are never touched) lies
// within one allocation, as checkptr requires.
func (w *writerState) newChunk(class uint8) *chunk {
	c := &chunk{class: class}
	size := chunkSize * int(classSize[class])
	if len(w.chunks) >= heapChunks {
		if w.slabFree < size {
			p, m := hugemem.Map(slabBytes, &hugeInUse)
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
