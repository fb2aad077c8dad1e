package xdp

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// prefault makes the whole pages of s's memory present and writable in one
// system call (MADV_POPULATE_WRITE), where its first writes would otherwise
// take a page fault each: the table's slabs and indexes are written, a
// piece per rule, right after they are made. It saves the fault's entry
// and exit, not the kernel's allocating and clearing of each page (about
// 15% of a fresh page's cost here). The contents are not changed. Kernels
// without the advice (before 5.14) fault as before. Only for memory that
// is written whole soon: it makes every page of s resident.
func prefault[T any](s []T) {
	n := uintptr(len(s)) * unsafe.Sizeof(*new(T))
	if n < prefaultMin {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	ps := uintptr(unix.Getpagesize())
	start, end := (p+ps-1)&^(ps-1), (p+n)&^(ps-1)
	if end > start {
		// Inside s: the partial pages at either end fault as usual.
		unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_POPULATE_WRITE)
	}
	runtime.KeepAlive(s)
}

// prefaultMin: below this a slice spans too few pages for the call to
// save more than it costs.
const prefaultMin = 32 << 10
