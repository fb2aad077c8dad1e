package softnic

import (
	"context"
	"encoding/binary"
	"sync"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// TestBatchVisibilityOneTable: readers share one hash table per tuple with
// the writer, and a batch's slots are hidden per view (hideBit) until it
// is published. Each batch b replaces the rule of every watched flow by
// one with another rule ID and VNI 1000+b (a delete and an add of the same
// key, so that the old and the new entry sit in one probe chain), adds and
// deletes in the same batch a higher-priority rule for the same flows
// (VNI 999, never to be seen), and adds filler rules of the same mask,
// deleting older ones, so that the table grows in the middle of some
// batches and reuses deleted slots in others. Every burst of the watched
// flows must hit (no flow between its old and new rule) with one VNI (one
// batch, never a mix, never the rule that came and went).
func TestBatchVisibilityOneTable(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.RingSize = 256; c.MaxRules = 1 << 16 })
	const (
		flows   = 64
		batches = 150
		filler  = 300 // added per batch
		keep    = 6   // batches a filler rule lives
	)
	rule := func(f, b int) hal.Rule {
		k := flowKey(f)
		// IDs alternate between two ranges, so that a batch holds the
		// old and the new rule of a flow under different IDs.
		return hal.Rule{ID: hal.RuleID(1 + f + flows*(b%2)), Priority: 10, Match: hal.Exact(&k),
			Actions: []hal.Action{hal.EncapWith(vxlanTo(paRem, uint32(1000+b))), hal.Output(pUplink)}}
	}
	ghost := func(f int) hal.Rule {
		k := flowKey(f)
		return hal.Rule{ID: hal.RuleID(1000 + f), Priority: 20, Match: hal.Exact(&k),
			Actions: []hal.Action{hal.EncapWith(vxlanTo(paRem, 999)), hal.Output(pUplink)}}
	}
	fill := func(b, i int) hal.Rule {
		r := flowRule(100000 + b*filler + i)
		r.ID = hal.RuleID(1_000_000 + b*filler + i)
		return r
	}
	var ops []hal.Op
	for f := 0; f < flows; f++ {
		ops = append(ops, hal.AddOp(rule(f, 0)))
	}
	mustApply(t, n, ops...)

	var wg sync.WaitGroup
	done := make(chan struct{})
	stop := make(chan struct{}) // the reader failed: the writer stops
	defer wg.Wait()
	defer close(stop)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		var res []hal.OpResult
		for b := 1; b <= batches; b++ {
			select {
			case <-stop:
				return
			default:
			}
			ops = ops[:0]
			for f := 0; f < flows; f++ {
				ops = append(ops, hal.AddOp(ghost(f)))
				ops = append(ops, hal.DeleteOp(rule(f, b-1).ID), hal.AddOp(rule(f, b)))
			}
			for i := 0; i < filler; i++ {
				ops = append(ops, hal.AddOp(fill(b, i)))
				if b > keep {
					ops = append(ops, hal.DeleteOp(fill(b-keep, i).ID))
				}
			}
			for f := 0; f < flows; f++ {
				ops = append(ops, hal.DeleteOp(ghost(f).ID))
			}
			res = append(res[:0], make([]hal.OpResult, len(ops))...)
			if err := n.Apply(context.Background(), ops, res); err != nil {
				t.Errorf("batch %d: %v", b, err)
				return
			}
		}
	}()

	bufs := make([][]byte, MaxBurst)
	sizes := make([]int, MaxBurst)
	for i := range bufs {
		bufs[i] = make([]byte, Headroom+benchFrameLen)
		sizes[i] = benchFrameLen
	}
	out := make([][]byte, MaxBurst)
	outSizes := make([]int, MaxBurst)
	for i := range out {
		out[i] = make([]byte, 256)
	}
	up := mustPort(t, n, pUplink)
	seen := map[int]bool{}
	finished := false
	for it := 0; !finished; it++ {
		select {
		case <-done:
			finished = true // one more burst, on the final table
		default:
		}
		for i := range bufs {
			writeFlowFrame(bufs[i][Headroom:], i%flows)
		}
		if err := n.Process(pVM1, bufs, sizes, Headroom); err != nil {
			t.Fatal(err)
		}
		k, err := up.Recv(out, outSizes)
		if err != nil || k != MaxBurst {
			t.Fatalf("burst %d: %d of %d frames out (%v): a flow missed between its old and new rule", it, k, MaxBurst, err)
		}
		first := -1
		for i := 0; i < k; i++ {
			vni := int(binary.BigEndian.Uint32(out[i][46:50]) >> 8)
			if vni == 999 {
				t.Fatalf("burst %d: a rule added and deleted in one batch was seen", it)
			}
			b := vni - 1000
			if b < 0 || b > batches {
				t.Fatalf("burst %d: frame with VNI %d", it, vni)
			}
			if first < 0 {
				first = b
				seen[b] = true
			}
			if b != first {
				t.Fatalf("burst %d saw batches %d and %d", it, first, b)
			}
		}
		if it > 1_000_000 {
			t.Fatal("the writer did not finish")
		}
	}
	<-done
	if t.Failed() {
		return
	}
	if !seen[batches] {
		t.Fatalf("the last burst did not see the last batch (saw %d batches)", len(seen))
	}
	if len(seen) < 3 {
		t.Fatalf("traffic saw only batches %v: the test did not overlap the writer and packets", seen)
	}
	// The table holds the watched rules and the living filler, and no
	// slot keeps a batch's hide bit.
	n.wmu.Lock()
	defer n.wmu.Unlock()
	want := flows + keep*filler
	if n.w.live != want {
		t.Fatalf("%d rules live, want %d", n.w.live, want)
	}
	for _, tup := range n.w.tuples {
		ht := &tup.tabs[0].ht
		for bi := range ht.b {
			for s := 0; s < 8; s++ {
				if ht.b[bi].sig(s) >= 2 && ht.b[bi].ixw[s]&^idxMask != 0 {
					t.Fatalf("slot %d/%d keeps hide bits", bi, s)
				}
			}
		}
	}
}
