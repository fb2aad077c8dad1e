package policy

import (
	"runtime"
	"syscall"
	"unsafe"
)

// mapHuge maps size bytes of zeroed anonymous memory (rounded up to whole
// 2 MiB pages) and asks for transparent huge pages; nil when mmap fails,
// and the caller takes heap memory instead.
func mapHuge(size int) (unsafe.Pointer, *hugeMem) {
	const huge = 2 << 20
	size = (size + huge - 1) &^ (huge - 1)
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil, nil
	}
	// Advice only: a kernel without THP keeps 4 KiB pages.
	_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE)
	r := &hugeRegion{b: b}
	m := &hugeMem{r: r}
	hugeInUse.Add(int64(size))
	runtime.AddCleanup(m, (*hugeRegion).unmap, r)
	return unsafe.Pointer(&b[0]), m
}

func unmapHuge(b []byte) { _ = syscall.Munmap(b) }
