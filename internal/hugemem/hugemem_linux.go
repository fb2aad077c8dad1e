package hugemem

import "syscall"

func mapHuge(size int) []byte {
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil
	}
	// Advice only: a kernel without THP keeps 4 KiB pages.
	_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE)
	return b
}

func unmapHuge(b []byte) { _ = syscall.Munmap(b) }
