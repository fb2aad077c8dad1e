package xdp

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPrefault: prefault makes every whole page of the slice present, no
// page outside it (the partial pages at its ends are left to fault), and
// changes no byte.
func TestPrefault(t *testing.T) {
	ps := unix.Getpagesize()
	const pages = 64
	mem, err := unix.Mmap(-1, 0, pages*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	resident := func() []bool {
		vec := make([]byte, pages)
		if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			t.Fatal(e)
		}
		r := make([]bool, pages)
		for i, v := range vec {
			r[i] = v&1 != 0
		}
		return r
	}
	mem[5*ps+7] = 0xa5 // one page written before
	if r := resident(); r[1] || !r[5] {
		t.Fatalf("fresh mapping: page 1 resident %v, page 5 %v", r[1], r[5])
	}
	// From inside page 0 to inside page 62: pages 1 to 61 are whole.
	prefault(mem[100 : 62*ps+100])
	for i, r := range resident() {
		if want := i >= 1 && i <= 61; r != want {
			t.Fatalf("page %d resident %v, want %v", i, r, want)
		}
	}
	for i, b := range mem {
		if i == 5*ps+7 && b != 0xa5 || i != 5*ps+7 && b != 0 {
			t.Fatalf("byte %d is %#x after prefault", i, b)
		}
	}
}
