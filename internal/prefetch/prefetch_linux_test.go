package prefetch

import (
	"syscall"
	"testing"
	"unsafe"
)

// Lines reads the address list up to its length and not one word further:
// the list ends where an unreadable page begins, so a read past its end
// faults and the test dies.
func TestLinesStopsAtLength(t *testing.T) {
	page := syscall.Getpagesize()
	m, err := syscall.Mmap(-1, 0, 2*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	if err := syscall.Mprotect(m[page:], syscall.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	target := make([]uint64, 8)
	const n = 16
	addrs := unsafe.Slice((*uintptr)(unsafe.Pointer(&m[page-n*8])), n)
	for i := range addrs {
		addrs[i] = uintptr(unsafe.Pointer(&target[i%len(target)]))
	}
	for k := 0; k <= n; k++ {
		Lines(addrs[n-k:]) // the last k addresses, ending at the guard page
	}
	if target[0] != 0 {
		t.Fatal("a prefetched word changed")
	}
}
