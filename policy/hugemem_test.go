package policy

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/nicpath/nicpath/internal/hugemem"
)

// TestHugePageTable: a CA→PA table large enough to live in a huge-page
// mapping (hugemem.go) finds every mapping it holds and none it does not,
// through a grow from a small heap table into a mapped one and a grow
// between mapped ones, and once it is unreachable its mappings are
// unmapped (the figure the memory benchmarks add back goes down again).
func TestHugePageTable(t *testing.T) {
	if testing.Short() {
		t.Skip("inserts 200k mappings; -short skips it")
	}
	before := hugeInUse.Load()
	const n = 200_000 // 200k×36 B / 0.75 ≈ 9.6 MB, past hugemem.MinBytes
	ca := func(i int) netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	// Start small: the grows move the entries from the heap to a mapping
	// and then to a larger one.
	tab := newMappingTable(1000)
	if tab.mem != nil {
		t.Fatal("a 1,000-mapping table in a huge-page mapping")
	}
	for i := range n {
		if _, added := tab.insert(makeEntry(uint32(1+i%7), ca(i), i%16, i%1000, MAC{2, byte(i)})); !added {
			t.Fatalf("mapping %d already present", i)
		}
	}
	if !hugemem.Available() {
		t.Log("no huge-page mappings on this system: the heap path is what runs")
	} else if tab.mem == nil || hugeInUse.Load() <= before {
		t.Fatalf("%d mappings in %d entries and no huge-page memory mapped", n, len(tab.entries))
	}
	for i := range n {
		s, ok := tab.lookup(uint32(1+i%7), ca(i))
		if !ok {
			t.Fatalf("mapping %d not found", i)
		}
		if e := &tab.entries[s]; int(e.vm) != i%1000 || int(e.host) != i%16 || e.mac != (MAC{2, byte(i)}) {
			t.Fatalf("mapping %d: entry %+v", i, *e)
		}
		if _, ok := tab.lookup(uint32(1+(i+1)%7), ca(i)); ok {
			t.Fatalf("mapping %d found in another VNI", i)
		}
	}
	if _, ok := tab.lookup(1, netip.MustParseAddr("2001:db8::1")); ok {
		t.Fatal("an absent address found")
	}
	tab = nil
	deadline := time.Now().Add(10 * time.Second)
	for hugeInUse.Load() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still mapped after the table went", hugeInUse.Load()-before)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
