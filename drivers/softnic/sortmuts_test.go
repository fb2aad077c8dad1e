package softnic

import (
	"context"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// lookupFlows looks flows up in the active view as the datapath does and
// returns the rule ID each hits (0 for none).
func lookupFlows(t *testing.T, n *NIC, flows []int) []hal.RuleID {
	t.Helper()
	s := n.rcu.enter()
	defer n.rcu.exit(s)
	v := &n.rcu.views[s]
	bu := newBurst(n.burstSz, false)
	frames := make([][]byte, MaxBurst)
	for i := range frames {
		frames[i] = make([]byte, benchFrameLen)
	}
	got := make([]hal.RuleID, 0, len(flows))
	for len(flows) > 0 {
		k := min(len(flows), MaxBurst)
		for i := 0; i < k; i++ {
			writeFlowFrame(frames[i], flows[i])
			if !parseFast(frames[i], pVM1, &bu.w[i]) {
				t.Fatal("a flow's frame is not one parseFast takes")
			}
			bu.fate[i], bu.best[i], bu.prio[i] = fatePending, noRule, -1
		}
		for _, tab := range v.tabs {
			n.lookup(bu, v, tab, k)
		}
		for i := 0; i < k; i++ {
			if bu.best[i] == noRule {
				got = append(got, 0)
			} else {
				got = append(got, idOf(v.chunks, bu.best[i]))
			}
		}
		flows = flows[k:]
	}
	return got
}

// TestSortedBatchKeepsKeyOrder: in a batch large enough to have its
// mutations put in signature order (sortMin), the operations on one key
// still take effect in the batch's order: a rule added and deleted in the
// batch is gone, one added and modified is there, a key deleted and added
// again under a new ID has the new rule. Rules that other operations of
// the batch do not name stay, and no slot lies past a bucket without its
// overflow bit.
func TestSortedBatchKeepsKeyOrder(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.MaxRules = 1 << 16 })
	const (
		old     = 6000    // flows installed before: 0..old-1
		churn   = 1000    // flows of each kind of same-key pair
		reKeyID = 1 << 20 // IDs of the rules that take over deleted flows' keys
	)
	ops := make([]hal.Op, 0, old)
	for f := 0; f < old; f++ {
		ops = append(ops, hal.AddOp(flowRule(f)))
	}
	mustApply(t, n, ops...)
	want := map[int]hal.RuleID{} // flow → the rule that should hit it
	for f := 0; f < old; f++ {
		want[f] = hal.RuleID(f + 1)
	}
	ops = ops[:0]
	for i := 0; i < churn; i++ {
		// Added then deleted: flows 10000+i.
		f := 10000 + i
		ops = append(ops, hal.AddOp(flowRule(f)), hal.DeleteOp(hal.RuleID(f+1)))
		want[f] = 0
		// Added then modified (other actions): flows 20000+i.
		f = 20000 + i
		r := flowRule(f)
		ops = append(ops, hal.AddOp(r))
		r.Actions = remoteActions[(f+1)%benchRemotes]
		ops = append(ops, hal.Op{Kind: hal.OpModify, Rule: r})
		want[f] = r.ID
		// Deleted, then the same key under a new ID: flows i.
		f = i
		r = flowRule(f)
		r.ID = reKeyID + hal.RuleID(i)
		ops = append(ops, hal.DeleteOp(hal.RuleID(f+1)), hal.AddOp(r))
		want[f] = r.ID
	}
	if len(ops) < sortMin {
		t.Fatalf("batch of %d operations, below sortMin %d: the test needs a sorted batch", len(ops), sortMin)
	}
	mustApply(t, n, ops...)

	flows := make([]int, 0, len(want))
	for f := range want {
		flows = append(flows, f)
	}
	got := lookupFlows(t, n, flows)
	live := 0
	for i, f := range flows {
		if got[i] != want[f] {
			t.Fatalf("flow %d hits rule %d, want %d", f, got[i], want[f])
		}
		if want[f] != 0 {
			live++
		}
	}
	dumped := 0
	if err := n.Dump(context.Background(), func(info *hal.RuleInfo) error {
		dumped++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if dumped != live {
		t.Fatalf("Dump has %d rules, want %d", dumped, live)
	}
	n.wmu.Lock()
	defer n.wmu.Unlock()
	for _, tup := range n.w.tuples {
		ht := &tup.tabs[0].ht
		if ht.used != live {
			t.Fatalf("%d slots used, %d rules live", ht.used, live)
		}
		if b, h, at, sig, bad := ovfHoles(ht); bad {
			t.Fatalf("signature %#x homed at bucket %d lies at %d, but bucket %d lacks its overflow bit", sig, h, at, b)
		}
		if tup.adds != 0 {
			t.Fatalf("tuple left with %d adds counted", tup.adds)
		}
	}
}

// TestSortedAddsSizeTable: a sorted batch of adds is made into a table
// sized for them first (sizeForAdds), a new tuple's and one that must grow:
// inserted in signature order into a table that grows only when it fills,
// they would pile up ahead of its growth in long runs of full buckets,
// each insert probing along the run, until the table grew (several times
// over in one batch). So: a new tuple's table is made at its size and
// never rebuilt, one too small is rebuilt once; after each batch the table
// is as large as the rules need and has no long run of overflowed buckets.
func TestSortedAddsSizeTable(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.MaxRules = 1 << 16 })
	f := 0
	for i, size := range []int{8000, 30000} {
		r0 := n.w.rebuilds
		ops := make([]hal.Op, 0, size)
		for ; len(ops) < size; f++ {
			ops = append(ops, hal.AddOp(flowRule(f)))
		}
		mustApply(t, n, ops...)
		n.wmu.Lock()
		if r := n.w.rebuilds - r0; r != i {
			t.Fatalf("batch %d of %d adds: %d tables rebuilt, want %d", i, size, r, i)
		}
		for _, tup := range n.w.tuples {
			ht := &tup.tabs[0].ht
			if ht.used != f {
				t.Fatalf("%d slots used, %d rules", ht.used, f)
			}
			if nb := bucketsFor(8, f+1); len(ht.b) > nb*3/2 {
				t.Fatalf("%d rules in %d buckets, %d suffice", f, len(ht.b), nb)
			}
			run, longest := 0, 0
			for bi := range ht.b {
				if ht.b[bi].overflowed() {
					run++
					longest = max(longest, run)
				} else {
					run = 0
				}
			}
			if longest > 16 {
				t.Fatalf("after adding %d rules: a run of %d overflowed buckets", f, longest)
			}
		}
		n.wmu.Unlock()
	}
}
