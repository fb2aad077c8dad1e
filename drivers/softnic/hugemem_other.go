//go:build !linux

package softnic

import "unsafe"

// mapHuge has no huge pages to offer here: the tables stay on the heap.
func mapHuge(size int) (unsafe.Pointer, *hugeMem) { return nil, nil }

func unmapHuge(b []byte) {}
