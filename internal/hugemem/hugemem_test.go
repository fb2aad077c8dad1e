package hugemem

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

type entry struct{ a, b uint64 }

func TestSliceSizes(t *testing.T) {
	var inUse atomic.Int64
	small, mem := Slice[entry](1000, &inUse)
	if len(small) != 1000 || mem != nil || inUse.Load() != 0 {
		t.Fatalf("1,000 entries: len %d, mem %v, in use %d; want heap memory", len(small), mem, inUse.Load())
	}
	const n = 3 << 20 / 16 // 3 MiB of entries: two huge pages
	big, mem := Slice[entry](n, &inUse)
	if len(big) != n {
		t.Fatalf("len %d, want %d", len(big), n)
	}
	if !Available() {
		t.Log("no huge-page mappings on this system: the heap path is what runs")
		if mem != nil {
			t.Fatal("an owner for heap memory")
		}
		return
	}
	if mem == nil || inUse.Load() != 4<<20 {
		t.Fatalf("3 MiB: mem %v, in use %d; want a mapping of 4 MiB", mem, inUse.Load())
	}
	for i := range big {
		if big[i] != (entry{}) {
			t.Fatalf("entry %d not zero", i)
		}
		big[i] = entry{uint64(i), ^uint64(i)}
	}
	if big[n-1] != (entry{n - 1, ^uint64(n - 1)}) {
		t.Fatal("last entry not kept")
	}
	mem.Free()
	mem.Free() // a second Free unmaps nothing more
	if inUse.Load() != 0 {
		t.Fatalf("after Free: %d bytes in use", inUse.Load())
	}
}

// TestCleanup: a mapping whose owner is unreachable is unmapped.
func TestCleanup(t *testing.T) {
	if !Available() {
		t.Skip("no huge-page mappings on this system: no cleanup to test")
	}
	var inUse atomic.Int64
	func() {
		_, mem := Slice[entry](MinBytes/16, &inUse)
		if mem == nil {
			t.Fatal("no mapping")
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); inUse.Load() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still mapped 10 s after their owner went", inUse.Load())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
