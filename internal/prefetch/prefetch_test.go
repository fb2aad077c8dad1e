package prefetch

import (
	"testing"
	"unsafe"
)

// Lines leaves the memory it prefetches as it was, for batches of any size
// (none included).
func TestLinesChangesNothing(t *testing.T) {
	Lines(nil)
	data := make([]uint64, 1024)
	addrs := make([]uintptr, 0, 64)
	for i := range 64 {
		addrs = append(addrs, uintptr(unsafe.Pointer(&data[i*16])))
	}
	Lines(addrs)
	Lines(addrs[:1])
	Lines(addrs[5:9])
	for i := range data {
		if data[i] != 0 {
			t.Fatalf("word %d changed to %d", i, data[i])
		}
	}
}

func BenchmarkLines(b *testing.B) {
	data := make([]uint64, 1<<20)
	addrs := make([]uintptr, 32)
	for i := range addrs {
		addrs[i] = uintptr(unsafe.Pointer(&data[(i*4099)%len(data)]))
	}
	for b.Loop() {
		Lines(addrs)
	}
}
