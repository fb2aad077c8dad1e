package softnic

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// TestActivateWhileTrafficFlows: generation 0 sends every flow of scope 1
// to remote A with VNI 100, generation 1 to remote B with VNI 200 and a
// rewritten destination MAC. While packets flow on two goroutines, the
// scope flips back and forth; every frame that comes out must be entirely
// one generation's (outer address, VNI and inner MAC agree), and every
// frame must come out.
func TestActivateWhileTrafficFlows(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.RingSize = 4096; c.MaxRules = 1 << 14 })
	const flows = 256
	remA, remB := netip.MustParseAddr("198.19.1.1"), netip.MustParseAddr("198.19.2.2")
	var ops []hal.Op
	for f := 0; f < flows; f++ {
		k := flowKey(f)
		m := hal.Exact(&k)
		ops = append(ops,
			hal.AddOp(hal.Rule{ID: hal.RuleID(2*f + 1), Match: m, Scope: 1, Generation: 0,
				Actions: []hal.Action{hal.EncapWith(vxlanTo(remA, 100)), hal.Output(pUplink)}}),
			hal.AddOp(hal.Rule{ID: hal.RuleID(2*f + 2), Match: m, Scope: 1, Generation: 1,
				Actions: []hal.Action{hal.SetEthDst(macVM2), hal.EncapWith(vxlanTo(remB, 200)), hal.Output(pUplink)}}))
	}
	mustApply(t, n, ops...)
	up := mustPort(t, n, pUplink)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var sent atomic.Int64
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			bufs := make([][]byte, MaxBurst)
			sizes := make([]int, MaxBurst)
			for i := range bufs {
				bufs[i] = make([]byte, Headroom+benchFrameLen)
				sizes[i] = benchFrameLen
			}
			for it := 0; ; it++ {
				select {
				case <-stop:
					return
				default:
				}
				for up.Pending() > 2048 { // leave the ring room: no drops
					select {
					case <-stop:
						return
					default:
						runtime.Gosched()
					}
				}
				for i := range bufs {
					writeFlowFrame(bufs[i][Headroom:], (it*MaxBurst+i+g)%flows)
				}
				if err := n.Process(pVM1, bufs, sizes, Headroom); err != nil {
					t.Error(err)
					return
				}
				sent.Add(MaxBurst)
			}
		}(g)
	}
	var bad, seenA, seenB int
	var received int64
	check := func() {
		for _, f := range recvAll(t, n, pUplink) {
			received++
			var k hal.FlowKey
			var l wire.Layout
			if err := wire.Parse(f, 0, &k, &l); err != nil {
				bad++
				continue
			}
			dst := hal.AddrFrom16(k.TunDst)
			innerDst := hal.MAC(f[l.L2 : l.L2+6])
			switch {
			case dst == remA && k.VNI == 100 && innerDst == macGW:
				seenA++
			case dst == remB && k.VNI == 200 && innerDst == macVM2:
				seenB++
			default:
				bad++
			}
		}
	}
	// Flip at least 300 times, and until both generations carried traffic.
	for i := 0; i < 300 || (seenA < 1000 || seenB < 1000) && i < 1000000; i++ {
		if err := n.Activate(context.Background(), 1, hal.Generation(i%2+1)%2); err != nil {
			t.Fatal(err)
		}
		check()
	}
	close(stop)
	wg.Wait()
	check()
	if bad > 0 {
		t.Fatalf("%d frames mixed two generations (A %d, B %d)", bad, seenA, seenB)
	}
	if seenA == 0 || seenB == 0 {
		t.Fatalf("only one generation was seen: A %d B %d", seenA, seenB)
	}
	pc := up.counters()
	if received != sent.Load() || int64(pc.Tx.Packets) != received || pc.Drops != 0 {
		t.Fatalf("sent %d, received %d, tx %d, drops %d", sent.Load(), received, pc.Tx.Packets, pc.Drops)
	}
}

// TestApplyWhileTrafficFlows: one goroutine sends packets of flows whose
// rules a writer keeps replacing in batches (modify to a new VNI) while
// another adds and deletes unrelated rules. Every packet must come out with
// one of the VNIs its rule had (batch b sets VNI 1000+b for every flow), and
// within one burst no packet may see an older batch than a packet before
// it.
func TestApplyWhileTrafficFlows(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.RingSize = 256; c.MaxRules = 1 << 14 })
	const flows = 64
	rule := func(f, batch int) hal.Rule {
		k := flowKey(f)
		return hal.Rule{ID: hal.RuleID(f + 1), Match: hal.Exact(&k),
			Actions: []hal.Action{hal.EncapWith(vxlanTo(paRem, uint32(1000+batch))), hal.Output(pUplink)}}
	}
	var ops []hal.Op
	for f := 0; f < flows; f++ {
		ops = append(ops, hal.AddOp(rule(f, 0)))
	}
	mustApply(t, n, ops...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // modifies, batch after batch
		defer wg.Done()
		res := make([]hal.OpResult, flows)
		for b := 1; b <= 200; b++ {
			for f := 0; f < flows; f++ {
				ops[f] = hal.ModifyOp(rule(f, b))
			}
			if err := n.Apply(context.Background(), ops, res); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() { // churn elsewhere in the table
		defer wg.Done()
		res := make([]hal.OpResult, 32)
		churn := make([]hal.Op, 32)
		for it := 0; ; it++ {
			select {
			case <-stop:
				return
			default:
			}
			for i := range churn {
				r := flowRule(10000 + i)
				if it%2 == 0 {
					churn[i] = hal.AddOp(r)
				} else {
					churn[i] = hal.DeleteOp(r.ID)
				}
			}
			if err := n.Apply(context.Background(), churn, res); err != nil {
				t.Error(err)
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
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	modsDone := false
	batches := map[int]bool{}
	for it := 0; !modsDone; it++ {
		select {
		case <-done:
			modsDone = true
		default:
		}
		if it == 500 {
			close(stop)
		}
		for i := range bufs {
			writeFlowFrame(bufs[i][Headroom:], i%flows)
		}
		if err := n.Process(pVM1, bufs, sizes, Headroom); err != nil {
			t.Fatal(err)
		}
		k, err := up.Recv(out, outSizes)
		if err != nil || k != MaxBurst {
			t.Fatalf("burst %d: %d frames out, %v", it, k, err)
		}
		first := -1
		for i := 0; i < k; i++ {
			vni := int(binary.BigEndian.Uint32(out[i][46:50]) >> 8)
			b := vni - 1000
			if b < 0 || b > 200 {
				t.Fatalf("frame with VNI %d", vni)
			}
			if first < 0 {
				first = b
				batches[b] = true
			}
			if b != first {
				t.Fatalf("one burst saw batches %d and %d", first, b)
			}
		}
		if it > 100000 {
			close(stop)
			t.Fatal("writers did not finish")
		}
	}
	select {
	case <-stop:
	default:
		close(stop)
	}
	if len(batches) < 2 {
		t.Fatalf("traffic saw only batches %v: the test did not overlap writers and packets", batches)
	}
	if !bytes.Equal(out[0][:6], macNext[:]) {
		t.Fatalf("outer MAC % x", out[0][:6])
	}
}
