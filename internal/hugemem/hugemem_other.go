//go:build !linux

package hugemem

// mapHuge has no huge pages to offer here: callers stay on the heap.
func mapHuge(size int) []byte { return nil }

func unmapHuge(b []byte) {}
