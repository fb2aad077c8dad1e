package softnic

import (
	"runtime"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/hugemem"
)

// TestHugePageTable: a table large enough that its buckets and entry
// chunks come from huge-page mappings (hugemem.go) forwards every flow it
// holds, before and after a grow and through deletes, and once the NIC is
// closed and forgotten its mappings are unmapped (the figure the memory
// benchmarks add back goes down again).
func TestHugePageTable(t *testing.T) {
	if testing.Short() {
		t.Skip("installs 160K rules; -short skips it")
	}
	before := hugeInUse.Load()
	cfg := testConfig()
	const flows = 160 << 10 // beyond heapChunks chunks, buckets beyond hugemem.MinBytes
	cfg.MaxRules = flows
	cfg.RingSize = 2 * MaxBurst
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	installFlows(t, n, flows)
	if !hugemem.Available() {
		t.Log("no huge-page mappings on this system: the heap path is what runs")
	} else if hugeInUse.Load() <= before {
		t.Fatalf("%d rules and no huge-page memory mapped", flows)
	}
	up := mustPort(t, n, pUplink)
	check := func(from, to int) {
		t.Helper()
		bufs := make([][]byte, MaxBurst)
		sizes := make([]int, MaxBurst)
		for i := range bufs {
			bufs[i] = make([]byte, Headroom+benchFrameLen)
			sizes[i] = benchFrameLen
		}
		for f := from; f < to; f += MaxBurst * 97 {
			k := 0
			for ; k < MaxBurst && f+k*97 < to; k++ {
				writeFlowFrame(bufs[k][Headroom:], f+k*97)
			}
			tx := up.counters().Tx.Packets
			if err := n.Process(pVM1, bufs[:k], sizes[:k], Headroom); err != nil {
				t.Fatal(err)
			}
			if got := up.counters().Tx.Packets - tx; got != uint64(k) {
				t.Fatalf("flows from %d: %d of %d frames out of the uplink", f, got, k)
			}
			up.Discard()
		}
	}
	check(0, flows)
	// Delete the first half; its frames now miss, the rest still hit.
	ops := make([]hal.Op, 0, flows/2)
	for f := 0; f < flows/2; f++ {
		ops = append(ops, hal.DeleteOp(hal.RuleID(f+1)))
	}
	for i := 0; i < len(ops); i += DefaultMaxBatch {
		mustApply(t, n, ops[i:min(i+DefaultMaxBatch, len(ops))]...)
	}
	check(flows/2, flows)
	tx := up.counters().Tx.Packets
	send(t, n, pVM1, udp4FromFlow(0))
	if up.counters().Tx.Packets != tx {
		t.Fatal("a frame of a deleted flow reached the uplink")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = nil
	deadline := time.Now().Add(10 * time.Second)
	for hugeInUse.Load() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes of huge-page mappings left after Close, %d before", hugeInUse.Load(), before)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// udp4FromFlow is flow f's benchmark frame.
func udp4FromFlow(f int) []byte {
	b := make([]byte, benchFrameLen)
	writeFlowFrame(b, f)
	return b
}
