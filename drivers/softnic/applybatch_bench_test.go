package softnic

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// slowPathFlow is flow f of BenchmarkApplySlowPath as the vswitch's slow
// path offloads it: an exact match, in the scope of its VM (one of 1,000),
// toward a VM behind one of benchRemotes hosts, whose MAC is the rule's
// own (set_eth_dst, then encapsulation to the host, then the uplink).
func slowPathFlow(f int, acts [][]hal.Action) hal.Rule {
	r := flowRule(f)
	r.Scope = hal.Scope(1 + f%1000)
	r.Actions = acts[f%len(acts)]
	return r
}

// slowPathActions are the action lists of slowPathFlow: per remote host,
// and within one, per destination VM (four each), differing only in the
// MAC that each rule gives.
var slowPathActions = func() [][]hal.Action {
	out := make([][]hal.Action, 4*benchRemotes)
	for i := range out {
		r := remoteActions[i%benchRemotes]
		out[i] = append([]hal.Action{hal.SetEthDst(hal.MAC{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)})}, r...)
	}
	return out
}()

// BenchmarkApplySlowPath: Apply as the vswitch's slow path calls it, per
// rule: batches of 64 adds (the first packets of one exception batch, each
// a flow of its own), with everything Apply's writer keeps evicted from the
// caches between batches (the slow path's walks touch megabytes in
// between), on a table of benchFlows/4 rules that stays that size (each
// batch of adds is followed by one that deletes the oldest 64, also timed
// apart), so that what is measured is the operations, not the table's
// growth. apply_cpu_ns/add is the thread CPU time of the adds' Apply
// calls alone (CLOCK_THREAD_CPUTIME_ID around each), per rule;
// del_cpu_ns/op the same for the deletes.
func BenchmarkApplySlowPath(b *testing.B) {
	cpuAt, ok := threadCPU()
	_ = cpuAt
	if !ok {
		b.Skip("no per-thread CPU clock on this system")
	}
	cfg := testConfig()
	base := benchFlows / 4
	cfg.MaxRules = base + 1<<16
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	const batch = 64
	ops := make([]hal.Op, batch)
	res := make([]hal.OpResult, batch)
	for f := 0; f < base; f += batch {
		for i := range ops {
			ops[i] = hal.AddOp(slowPathFlow(f+i, slowPathActions))
		}
		if err := n.Apply(ctx, ops, res); err != nil {
			b.Fatal(err)
		}
	}
	// Larger than the caches Apply's lines could stay in.
	evict := make([]uint64, 16<<20/8)
	var sink uint64
	flush := func() {
		for i := 0; i < len(evict); i += 8 {
			evict[i]++
			sink += evict[i]
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var addCPU, delCPU time.Duration
	next, oldest, adds, dels := base, 0, 0, 0
	b.ResetTimer()
	for adds < b.N {
		for i := range ops {
			ops[i] = hal.AddOp(slowPathFlow(next+i, slowPathActions))
		}
		flush()
		c0, _ := threadCPU()
		err := n.Apply(ctx, ops, res)
		c1, _ := threadCPU()
		if err != nil {
			b.Fatal(err)
		}
		addCPU += c1 - c0
		next += batch
		adds += batch
		for i := range ops {
			ops[i] = hal.DeleteOp(hal.RuleID(oldest + i + 1))
		}
		flush()
		c0, _ = threadCPU()
		err = n.Apply(ctx, ops, res)
		c1, _ = threadCPU()
		if err != nil {
			b.Fatal(err)
		}
		delCPU += c1 - c0
		oldest += batch
		dels += batch
	}
	b.StopTimer()
	if sink == 0 {
		b.Fatal("eviction buffer unread")
	}
	b.ReportMetric(float64(addCPU.Nanoseconds())/float64(adds), "apply_cpu_ns/add")
	b.ReportMetric(float64(delCPU.Nanoseconds())/float64(dels), "del_cpu_ns/op")
	b.ReportMetric(0, "ns/op")
}
