//go:build !linux

package policy

import "unsafe"

// mapHuge has no huge pages to offer here: the table stays on the heap.
func mapHuge(size int) (unsafe.Pointer, *hugeMem) { return nil, nil }

func unmapHuge(b []byte) {}
