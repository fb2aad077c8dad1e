// Package hugemem gives large arrays without Go pointers their memory from
// anonymous mappings that the kernel is asked to back with transparent huge
// pages (madvise(MADV_HUGEPAGE); with THP "always" they get them anyway,
// with "never" they keep 4 KiB pages and only the TLB advantage is lost).
//
// A table of millions of entries read at random slots, as softnic's rule
// table and policy's CA→PA table are, takes a TLB miss on every read with
// 4 KiB pages as well as the cache miss, and the page walk's own loads come
// before the line itself can. Such memory holds no Go pointers, so the
// collector has nothing to scan there.
//
// A mapping is owned by a *Mem: when the owner becomes unreachable a
// cleanup unmaps it, unless Free did before. Whoever can reach the memory
// must keep its owner reachable too (beside the slice, typically).
package hugemem

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// MinBytes is the size below which Slice takes heap memory: a huge page for
// an array of a few thousand entries would waste most of it.
const MinBytes = 2 << 20

// Mem owns one mapping; when it becomes unreachable the mapping goes,
// unless Free unmapped it before.
type Mem struct {
	r *region
}

// region is the mapping itself, which the owner's cleanup and Free share.
type region struct {
	b     []byte
	freed atomic.Bool
	inUse *atomic.Int64
}

func (r *region) unmap() {
	if !r.freed.Swap(true) {
		if r.inUse != nil {
			r.inUse.Add(-int64(len(r.b)))
		}
		unmapHuge(r.b)
	}
}

// Free unmaps m's memory now; nothing may read it after. A nil m (heap
// memory, from Slice) is left to the collector.
func (m *Mem) Free() {
	if m != nil {
		m.r.unmap()
	}
}

// Map maps size bytes of zeroed memory (rounded up to whole 2 MiB pages)
// and asks for huge pages; inUse, if not nil, counts the bytes mapped until
// they are unmapped (memory benchmarks add it to the heap's figure). It
// returns nil when no mapping can be had, and the caller takes heap memory
// instead.
func Map(size int, inUse *atomic.Int64) (unsafe.Pointer, *Mem) {
	const huge = 2 << 20
	size = (size + huge - 1) &^ (huge - 1)
	b := mapHuge(size)
	if b == nil {
		return nil, nil
	}
	r := &region{b: b, inUse: inUse}
	m := &Mem{r: r}
	if inUse != nil {
		inUse.Add(int64(size))
	}
	runtime.AddCleanup(m, (*region).unmap, r)
	return unsafe.Pointer(&b[0]), m
}

// Slice returns n zeroed Ts: from a mapping when they take MinBytes or
// more (mem is then its owner, to keep beside the slice), else from the
// heap (mem nil). T must hold no Go pointers.
func Slice[T any](n int, inUse *atomic.Int64) (s []T, mem *Mem) {
	var zero T
	if size := n * int(unsafe.Sizeof(zero)); size >= MinBytes {
		if p, m := Map(size, inUse); p != nil {
			return unsafe.Slice((*T)(p), n), m
		}
	}
	return make([]T, n), nil
}

// Available reports whether this system gives huge-page mappings (tests
// say which path they ran).
func Available() bool {
	p, m := Map(1, nil)
	m.Free()
	return p != nil
}
