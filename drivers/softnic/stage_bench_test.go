package softnic

import (
	"runtime"
	"testing"
)

// BenchmarkStage times each stage of the datapath alone, per packet, on
// bursts of MaxBurst frames of HitEncap's kind (UDP/IPv4, 64 bytes, each a
// different one of 64 exact-match rules that encapsulate in VXLAN and
// output to the uplink), with everything in the nearer caches: what each
// stage costs in instructions, without the misses of a large table.
//
//   - parse: parseBurst, frames to words and fates (parseFast takes all
//     of these frames, so no layout is filled);
//   - lookup: the bulk lookup over every tuple (what LookupHot times, here
//     from the words parse left);
//   - execute: executeBurst, finding each hit's program and running it
//     (the encapsulation included);
//   - deliver: deliver, the encapsulated frames copied into the uplink's
//     ring and the counters, then the ring emptied (Discard, once a burst,
//     as HitEncap does);
//   - process: all of them as Process runs them (with what it does once a
//     burst), on the same frames again and again: the stages' sum, and
//     what they cost one another in the caches, without HitEncap's copy
//     of fresh frames from its receive area;
//   - once: what Process does once a burst beside the stages, alone:
//     taking a burst state from the free list and giving it back, and
//     entering and leaving the table's read section, shared by the
//     burst's MaxBurst packets.
//
// Each reports cpu-ns/pkt, the thread's CPU time per packet. Every stage
// runs on the state the stages before it leave, which each iteration puts
// back where the stage changes it (the fates).
func BenchmarkStage(b *testing.B) {
	n := newNIC(b, func(c *Config) { c.RingSize = 2 * MaxBurst })
	installFlows(b, n, MaxBurst)
	in, up := mustPort(b, n, pVM1), mustPort(b, n, pUplink)
	bufs := make([][]byte, MaxBurst)
	sizes := make([]int, MaxBurst)
	for i := range bufs {
		bufs[i] = make([]byte, Headroom+benchFrameLen)
		writeFlowFrame(bufs[i][Headroom:], i*7%MaxBurst)
		sizes[i] = benchFrameLen
	}
	bu := newBurst(n.burstSz, false)
	// One burst through every stage, to check that the frames take the
	// path the stages are about.
	n.parseBurst(bu, in, bufs, sizes, Headroom)
	s := n.rcu.enter()
	v := &n.rcu.views[s]
	for _, tab := range v.tabs {
		n.lookup(bu, v, tab, MaxBurst)
	}
	n.executeBurst(bu, v, bufs, sizes, Headroom)
	n.rcu.exit(s)
	for i := 0; i < MaxBurst; i++ {
		if bu.fate[i] != fateOut || bu.out[i] != up || bu.end[i]-bu.start[i] <= benchFrameLen {
			b.Fatalf("packet %d: fate %d, not encapsulated to the uplink", i, bu.fate[i])
		}
	}
	fates := bu.fate
	perPkt := func(b *testing.B, run func()) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cpu0, cpuOK := threadCPU()
		b.ResetTimer()
		pkts := 0 // whole bursts: b.N rounded up to one
		for ; pkts < b.N; pkts += MaxBurst {
			run()
		}
		b.StopTimer()
		if cpu1, _ := threadCPU(); cpuOK {
			b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(pkts), "cpu-ns/pkt")
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(pkts), "ns/pkt")
	}
	b.Run("parse", func(b *testing.B) {
		perPkt(b, func() { n.parseBurst(bu, in, bufs, sizes, Headroom) })
		for i := 0; i < MaxBurst; i++ {
			if bu.fate[i] != fatePending {
				b.Fatalf("packet %d: fate %d after parsing", i, bu.fate[i])
			}
		}
	})
	b.Run("lookup", func(b *testing.B) {
		s := n.rcu.enter()
		defer n.rcu.exit(s)
		v := &n.rcu.views[s]
		perPkt(b, func() {
			for i := 0; i < MaxBurst; i++ {
				bu.fate[i], bu.best[i], bu.prio[i] = fatePending, noRule, -1
			}
			for _, tab := range v.tabs {
				n.lookup(bu, v, tab, MaxBurst)
			}
		})
		for i := 0; i < MaxBurst; i++ {
			if bu.best[i] == noRule {
				b.Fatalf("packet %d missed", i)
			}
		}
	})
	b.Run("execute", func(b *testing.B) {
		s := n.rcu.enter()
		defer n.rcu.exit(s)
		v := &n.rcu.views[s]
		perPkt(b, func() {
			for i := 0; i < MaxBurst; i++ {
				bu.fate[i] = fatePending
			}
			n.executeBurst(bu, v, bufs, sizes, Headroom)
		})
		for i := 0; i < MaxBurst; i++ {
			if bu.fate[i] != fateOut {
				b.Fatalf("packet %d: fate %d after executing", i, bu.fate[i])
			}
		}
	})
	b.Run("deliver", func(b *testing.B) {
		tx0 := up.counters().Tx.Packets
		count := 0
		perPkt(b, func() {
			bu.fate = fates
			n.deliver(bu, in, bufs, sizes, Headroom, MaxBurst*benchFrameLen)
			up.Discard()
			count += MaxBurst
		})
		if tx := up.counters().Tx.Packets - tx0; tx != uint64(count) {
			b.Fatalf("%d of %d frames reached the uplink's ring", tx, count)
		}
	})
	b.Run("once", func(b *testing.B) {
		perPkt(b, func() {
			x := n.getBurst()
			s := n.rcu.enter()
			n.rcu.exit(s)
			n.putBurst(x)
		})
	})
	b.Run("process", func(b *testing.B) {
		tx0 := up.counters().Tx.Packets
		count := 0
		perPkt(b, func() {
			if err := n.Process(pVM1, bufs, sizes, Headroom); err != nil {
				b.Fatal(err)
			}
			up.Discard()
			count += MaxBurst
		})
		if tx := up.counters().Tx.Packets - tx0; tx != uint64(count) {
			b.Fatalf("%d of %d frames reached the uplink's ring", tx, count)
		}
	})
}
