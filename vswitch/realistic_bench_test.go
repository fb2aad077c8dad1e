package vswitch

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/policy/policytest"
)

// realisticFlows is how many first packets one switch takes in the
// realistic benchmarks before a fresh one replaces it (its NIC's table
// and connection table would otherwise only grow); every one is a new
// pair of endpoints.
const realisticFlows = 1 << 18

// realistic is the policy of DESIGN.md's slow-path figure, built once per
// process: policytest.Realistic's defaults (16 hosts, 10 tenants, 1,000
// VMs with 1,000 CAs each: 1M mappings; 100 ACLs per tenant, stateful
// allows among them; 1,000 routes per tenant: 10,000), the switch of
// host-0 (its 63 VMs), and realisticFlows first packets from them.
var realistic struct {
	once   sync.Once
	err    error
	st     *policy.State
	host   string
	ports  map[string]hal.PortID
	pcfg   []softnic.PortConfig
	uplink hal.PortID
	// The first packets' frames, back to back in one allocation the
	// collector does not scan: frame i is frameBuf[frameOff[i]:frameOff[i+1]].
	frameBuf []byte
	frameOff []uint32
	inPorts  []hal.PortID
}

// realisticFrame is the realistic traffic's frame i.
func realisticFrame(i int) []byte {
	return realistic.frameBuf[realistic.frameOff[i]:realistic.frameOff[i+1]:realistic.frameOff[i+1]]
}

// realisticTraffic is the realistic traffic as the policy sees it (the
// sending VM and the packet), made again for the benchmarks that ask the
// reference evaluator: the fixture keeps only frames and ports, so that
// what the collector marks during the slow-path benchmarks is the switch's
// heap, not a quarter of a million packets with their addresses.
func realisticTraffic() []policytest.Sent {
	return policytest.Realistic{Seed: 1}.Traffic(realistic.host, realisticFlows)
}

func realisticSetup(b *testing.B) {
	b.Helper()
	realistic.once.Do(func() {
		cfg := policytest.Realistic{Seed: 1}
		st, err := cfg.Generate()
		if err != nil {
			realistic.err = err
			return
		}
		host := policytest.HostName(0)
		realistic.st, realistic.host = st, host
		realistic.ports = map[string]hal.PortID{}
		for i, vm := range st.LocalVMs(host) {
			id := hal.PortID(i + 1)
			realistic.ports[vm.Name] = id
			realistic.pcfg = append(realistic.pcfg, softnic.PortConfig{Name: vm.Name, Kind: hal.PortVPort, MAC: hal.MAC(vm.MAC)})
		}
		realistic.uplink = hal.PortID(len(realistic.pcfg) + 1)
		realistic.pcfg = append(realistic.pcfg, softnic.PortConfig{Name: "uplink", Kind: hal.PortUplink, MAC: uplinkMAC})
		sent := cfg.Traffic(host, realisticFlows)
		realistic.frameOff = make([]uint32, 1, len(sent)+1)
		realistic.inPorts = make([]hal.PortID, 0, len(sent))
		for _, s := range sent {
			realistic.frameBuf = append(realistic.frameBuf, frameOf(s.Packet)...)
			realistic.frameOff = append(realistic.frameOff, uint32(len(realistic.frameBuf)))
			realistic.inPorts = append(realistic.inPorts, realistic.ports[s.VM])
		}
		realistic.frameBuf = slices.Clip(realistic.frameBuf)
	})
	if realistic.err != nil {
		b.Fatal(realistic.err)
	}
}

// newRealisticHost builds host-0's switch on a fresh softnic; wrap, when
// not nil, decorates the NIC, and tune, when not nil, changes the
// switch's configuration. The caller closes both (closeHost): a benchmark
// that replaces its switch closes the old one at once, for each holds a
// table of a million rules.
func newRealisticHost(b *testing.B, memo bool, wrap func(hal.NIC) hal.NIC, tune func(*Config)) (*Switch, *softnic.NIC) {
	soft, err := softnic.New(softnic.Config{Device: "bench", MaxRules: 4 * realisticFlows, Ports: realistic.pcfg})
	if err != nil {
		b.Fatal(err)
	}
	var nic hal.NIC = soft
	if wrap != nil {
		nic = wrap(soft)
	}
	cfg := Config{NIC: nic, Host: realistic.host, State: realistic.st, Ports: realistic.ports,
		Uplink: realistic.uplink, DisableWalkMemo: !memo}
	if tune != nil {
		tune(&cfg)
	}
	sw, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return sw, soft
}

func closeHost(sw *Switch, soft *softnic.NIC) {
	sw.Close()
	soft.Close()
}

// benchSlowPathGrow is BenchmarkSlowPath/growing/memo=off: the realistic
// traffic of benchSlowPathSteady, on a switch and NIC that start empty
// and only grow (nothing idles out), replaced by a fresh pair every
// realisticFlows first packets. Beside the steady figure it shows what
// growing from empty adds: the NIC's and the switch's tables taking fresh
// memory (the kernel zeroing new pages) as they fill.
//
// Every first packet has endpoints no other has, so that the layer walk
// (source checks, the sender's ACLs through the classifier, routing
// through the trie, the CA→PA lookup among 1M mappings, the receiver's
// ACLs for a local destination, connection tracking for stateful allows)
// runs for each, unless the memo is on and answers (it can only for
// repeated endpoint pairs, which there are none of). The verdicts are
// those of a real tenant mix: encapsulations to other hosts mostly, local
// deliveries, routed packets, gateways, drops.
//
// What is timed (the wall clock, the process's CPU time and b's timer
// alike): HandleBatch on batches of 64 first packets (the walks, the
// flows' placement, one Apply per batch on softnic, the reinjection),
// the garbage collection that work makes, the copy of each frame into
// its exception buffer and the draining of the ports the reinjected
// packets land on (as a NIC's reader would). What is not: building the
// fixture (policy, frames), and replacing the switch and its softnic
// every realisticFlows first packets (their tables would only grow, and
// the traffic has no more distinct pairs): the old pair is closed, the
// new one built (its port rings are 136 MB), and a collection run, all
// with the timers stopped, so that the next cycle's garbage is the slow
// path's own. The fixture is one allocation of frames and one of ports,
// which the collector does not scan.
func benchSlowPathGrow(b *testing.B, memo bool) {
	realisticSetup(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	timer := &applyTimer{}
	wrap := timer.wrap
	sw, soft := newRealisticHost(b, memo, wrap, nil)
	defer func() { closeHost(sw, soft) }()
	up, _ := soft.Port(realistic.uplink)
	batch := make([]hal.Exception, 64)
	for i := range batch {
		batch[i].Buf = make([]byte, 256)
		batch[i].Reason = hal.ReasonMiss
	}
	ctx := context.Background()
	nframes := len(realistic.inPorts)
	var remembered, wild uint64
	// The setup's garbage (a million mappings' worth) is not the slow
	// path's to collect.
	runtime.GC()
	b.ReportAllocs()
	timer.cpu = 0
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	paused, cpuPaused := time.Duration(0), time.Duration(0)
	made := 0
	for n := 0; n < b.N; {
		if made >= nframes {
			b.StopTimer()
			t0, c0, a0 := time.Now(), cpuTime(), timer.cpu
			sw.mu.Lock()
			remembered += sw.stats.walksRemembered
			wild += sw.stats.wildFlows
			sw.mu.Unlock()
			closeHost(sw, soft)
			sw, soft = nil, nil
			runtime.GC() // the old switch and NIC, before the new are made
			sw, soft = newRealisticHost(b, memo, wrap, nil)
			up, _ = soft.Port(realistic.uplink)
			made = 0
			runtime.GC() // the new NIC's construction garbage
			timer.cpu = a0
			paused += time.Since(t0)
			cpuPaused += cpuTime() - c0
			b.StartTimer()
		}
		k := min(len(batch), b.N-n, nframes-made)
		for i := 0; i < k; i++ {
			e := &batch[i]
			e.InPort = realistic.inPorts[made+i]
			e.Len = copy(e.Buf, realisticFrame(made+i))
		}
		if err := sw.HandleBatch(ctx, batch[:k]); err != nil {
			b.Fatal(err)
		}
		made += k
		up.Discard()
		if made%(16*len(batch)) == 0 {
			// local deliveries: one in twenty packets, over all the vports
			for i := range realistic.pcfg[:len(realistic.pcfg)-1] {
				if p, err := soft.Port(hal.PortID(i + 1)); err == nil {
					p.Discard()
				}
			}
		}
		n += k
	}
	el := time.Since(start) - paused
	cpu := cpuTime() - cpu0 - cpuPaused
	b.StopTimer()
	s := sw.Stats()
	sw.mu.Lock()
	remembered += sw.stats.walksRemembered
	wild += sw.stats.wildFlows
	sw.mu.Unlock()
	reportFlowRates(b, el, cpu, timer.cpu)
	b.ReportMetric(float64(remembered)/float64(b.N), "remembered/flow")
	// Flows offloaded as port-wildcard rules (wildcard.go).
	b.ReportMetric(float64(wild)/float64(b.N), "wildcard/flow")
	if !memo && remembered != 0 {
		b.Fatalf("%d walks answered by the memo with the memo off", remembered)
	}
	// Every first packet of the last switch made a flow, and flows landed
	// on the NIC (a stateful allow adds its reply's flow too).
	if made > 0 && (s.FlowsCreated < uint64(made) || s.FlowsNIC < made*9/10) {
		b.Fatalf("%d first packets made %d flows, %d on the NIC:\n%s", made, s.FlowsCreated, s.FlowsNIC, s)
	}
}

// steadyFlows is how many first packets' worth of flows the steady-state
// benchmarks' switch keeps: its flow idle time, in first packets. Half
// the realistic traffic, so that a frame comes round again (it cycles)
// only after its flows and connections have idled out.
const steadyFlows = realisticFlows / 2

// benchSlowPathSteady is BenchmarkSlowPath/realistic on the realistic
// policy at a steady table size, as a running switch sees it: flows idle
// out as new ones arrive, so the NIC's table and the switch's flow and
// connection tables stay the same size. Every first packet has endpoints
// no other has among the live flows, so that the layer walk (source
// checks, the sender's ACLs through the classifier, routing through the
// trie, the CA→PA lookup among 1M mappings, the receiver's ACLs for a
// local destination, connection tracking for stateful allows) runs for
// each, unless the memo is on and answers (it can only for repeated
// endpoint pairs among its 64 most recent walks, which there are none
// of). The verdicts are those of a real tenant mix: encapsulations to
// other hosts mostly, local deliveries, routed packets, gateways, drops.
//
// The switch's clock advances one nanosecond per first packet; FlowIdle
// and ConnIdle are steadyFlows of them, and Maintain runs every quarter
// of FlowIdle, as Run calls it: it ages out the flows and connections of
// the first packets more than steadyFlows before (deleting their rules
// from the NIC) and reads the NIC's counters. The traffic cycles through
// its realisticFlows frames, each coming round after its flows and
// connections are gone, so each is a first packet again and walked again.
// Before the timers start, the switch takes 1.5×steadyFlows first packets
// (with Maintain), so the tables are at their steady size.
//
// What is timed (the wall clock, the process's CPU time and b's timer
// alike): HandleBatch on batches of 64 first packets (the walks, the
// flows' placement, one Apply per batch on softnic, the reinjection),
// Maintain (idle expiry, with its rule deletions on the NIC, and the
// counters), the garbage collection that work makes, the copy of each
// frame into its exception buffer and the draining of the ports the
// reinjected packets land on (as a NIC's reader would). What is not:
// building the fixture (policy, frames) and the warm-up. The fixture is
// one allocation of frames and one of ports, which the collector does not
// scan.
func benchSlowPathSteady(b *testing.B, memo bool) {
	realisticSetup(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	timer := &applyTimer{}
	wrap := timer.wrap
	var clock int64 // nanoseconds: one per first packet
	tune := func(c *Config) {
		c.Clock = func() time.Time { return time.Unix(0, clock) }
		c.FlowIdle = steadyFlows
		c.ConnIdle = steadyFlows
	}
	sw, soft := newRealisticHost(b, memo, wrap, tune)
	defer closeHost(sw, soft)
	up, _ := soft.Port(realistic.uplink)
	batch := make([]hal.Exception, 64)
	for i := range batch {
		batch[i].Buf = make([]byte, 256)
		batch[i].Reason = hal.ReasonMiss
	}
	ctx := context.Background()
	nframes := len(realistic.inPorts)
	next, sinceMaintain := 0, 0
	var maintainCPU time.Duration // Maintain's, on this thread
	// feed hands the switch k first packets, the frames after the last
	// fed, and runs Maintain every quarter of FlowIdle.
	feed := func(k int) {
		for i := 0; i < k; i++ {
			e := &batch[i]
			f := (next + i) % nframes
			e.InPort = realistic.inPorts[f]
			e.Len = copy(e.Buf, realisticFrame(f))
		}
		clock += int64(k)
		if err := sw.HandleBatch(ctx, batch[:k]); err != nil {
			b.Fatal(err)
		}
		up.Discard()
		if (next/len(batch))%16 == 15 {
			// local deliveries: one in twenty packets, over all the vports
			for i := range realistic.pcfg[:len(realistic.pcfg)-1] {
				if p, err := soft.Port(hal.PortID(i + 1)); err == nil {
					p.Discard()
				}
			}
		}
		next += k
		if sinceMaintain += k; sinceMaintain >= steadyFlows/4 {
			sinceMaintain = 0
			c0 := threadCPU()
			if err := sw.Maintain(ctx); err != nil {
				b.Fatal(err)
			}
			maintainCPU += threadCPU() - c0
		}
	}
	for next < steadyFlows*3/2 {
		feed(len(batch))
	}
	warm := sw.Stats()
	sw.mu.Lock()
	remembered0 := sw.stats.walksRemembered
	wild0 := sw.stats.wildFlows
	sw.mu.Unlock()
	// The setup's garbage (a million mappings' worth) and the warm-up's
	// are not the timed slow path's to collect.
	runtime.GC()
	b.ReportAllocs()
	timer.cpu, maintainCPU = 0, 0
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for n := 0; n < b.N; {
		k := min(len(batch), b.N-n)
		feed(k)
		n += k
	}
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	s := sw.Stats()
	sw.mu.Lock()
	remembered := sw.stats.walksRemembered - remembered0
	wild := sw.stats.wildFlows - wild0
	sw.mu.Unlock()
	reportFlowRates(b, el, cpu, timer.cpu)
	// Maintain's share (idle expiry, the counters, and the Apply of the
	// deletions, which apply_cpu_ns/flow counts as well).
	b.ReportMetric(float64(maintainCPU.Nanoseconds())/float64(b.N), "maintain_cpu_ns/flow")
	b.ReportMetric(float64(remembered)/float64(b.N), "remembered/flow")
	// Flows offloaded as port-wildcard rules (wildcard.go).
	b.ReportMetric(float64(wild)/float64(b.N), "wildcard/flow")
	// Flows idled out, per first packet timed: about one (more for the
	// stateful allows' reply flows).
	b.ReportMetric(float64(s.FlowsAged-warm.FlowsAged)/float64(b.N), "aged/flow")
	b.ReportMetric(float64(s.Flows), "table_flows")
	if !memo && remembered != 0 {
		b.Fatalf("%d walks answered by the memo with the memo off", remembered)
	}
	// The table is at its steady size: at least the flows of the last
	// steadyFlows first packets (one each), nearly all on the NIC, and no
	// more than those of the last 1¼ steadyFlows with their replies.
	if s.Flows < steadyFlows || s.FlowsNIC < s.Flows*9/10 || s.Flows > 2*(steadyFlows+steadyFlows/4+len(batch)) {
		b.Fatalf("%d flows in the switch, %d on the NIC, after %d first packets, not a steady %d:\n%s", s.Flows, s.FlowsNIC, next, steadyFlows, s)
	}
	if b.N >= steadyFlows/4 && s.FlowsAged == warm.FlowsAged {
		b.Fatalf("no flow idled out over %d first packets:\n%s", b.N, s)
	}
}

// BenchmarkSlowPath measures first packet → unified flow offloaded, on one
// core: every exception is a new flow, walked through the layers,
// validated, offloaded in one Apply per 64-packet batch, and the packet
// executed and reinjected. Beside the rate it reports the CPU per flow
// (cpu_flows/s: the process's CPU time, garbage collector included), and
// how much of it softnic's Apply took (apply_cpu_ns/flow, measured on the
// benchmark's own thread), and the rate net of it (switch_cpu_flows/s:
// the switch's own cost per flow, the NIC's apart).
//
//   - realistic/memo=off, realistic/memo=on: the realistic policy at a
//     steady table size, flows idling out as new ones arrive
//     (benchSlowPathSteady), with the walk memo off and on.
//   - growing/memo=off: the same traffic on a switch and NIC that
//     grow from empty (benchSlowPathGrow).
//   - onepair: every flow between the same two VMs of a small policy
//     without ACLs, memo on: after the first, every walk is remembered.
//     It is the memo's best case, not the slow path's cost.
func BenchmarkSlowPath(b *testing.B) {
	b.Run("realistic/memo=off", func(b *testing.B) { benchSlowPathSteady(b, false) })
	b.Run("realistic/memo=on", func(b *testing.B) { benchSlowPathSteady(b, true) })
	b.Run("growing/memo=off", func(b *testing.B) { benchSlowPathGrow(b, false) })
	b.Run("onepair", benchSlowPathOnePair)
}

// BenchmarkFirstPacketLatency measures one first packet through the host
// path on the realistic policy, memo off: from the VM's send on the NIC to
// the encapsulated frame on the uplink, with the exception read, the
// layer walk, the offload and the reinjection. Each packet is a new pair
// of endpoints whose verdict (by the reference evaluator) is an
// encapsulation toward another host.
func BenchmarkFirstPacketLatency(b *testing.B) {
	realisticSetup(b)
	// The first 1<<14 encapsulations (the reference evaluator is slow).
	var picks []int
	for i, s := range realisticTraffic() {
		if len(picks) == 1<<14 {
			break
		}
		if realistic.st.Evaluate(realistic.host, policy.FromVM(s.VM), s.Packet).Action == policy.Encap {
			picks = append(picks, i)
		}
	}
	sw, soft := newRealisticHost(b, false, nil, nil)
	defer func() { closeHost(sw, soft) }()
	up, _ := soft.Port(realistic.uplink)
	batch := []hal.Exception{{Buf: make([]byte, 2048)}}
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, cpuPaused := cpuTime(), time.Duration(0)
	for i := 0; i < b.N; i++ {
		j := i % len(picks)
		if i > 0 && j == 0 {
			b.StopTimer()
			c0 := cpuTime()
			closeHost(sw, soft)
			sw, soft = newRealisticHost(b, false, nil, nil)
			up, _ = soft.Port(realistic.uplink)
			cpuPaused += cpuTime() - c0
			b.StartTimer()
		}
		f := picks[j]
		far, _ := soft.Port(realistic.inPorts[f])
		t0 := time.Now()
		far.Send([][]byte{realisticFrame(f)})
		n, err := soft.ReadExceptions(ctx, batch)
		if err != nil || n != 1 {
			b.Fatal(n, err)
		}
		if err := sw.HandleBatch(ctx, batch[:1]); err != nil {
			b.Fatal(err)
		}
		if n, _ := up.Recv(bufs, sizes); n != 1 {
			b.Fatalf("flow %d: no frame on the uplink\n%s", f, sw.Stats())
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	if cpu := cpuTime() - cpu0 - cpuPaused; cpu > 0 {
		// Mean CPU per first packet: latency percentiles on a shared
		// machine include time the process was not running at all.
		b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu_us/pkt")
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50_us")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99_us")
}

// TestWalkMemoDisabled: with Config.DisableWalkMemo, connections between
// the same two VMs are each walked; with the memo, all but the first are
// remembered.
func TestWalkMemoDisabled(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("off=%v", off), func(t *testing.T) {
			h := newBenchHost(t, smallPolicy(t, nil), 0)
			h.sw.Close()
			sw, err := New(Config{NIC: h.soft, Host: "h1", State: h.sw.cur.st, Ports: map[string]hal.PortID{"va1": 1, "vb1": 2, "u1": 3},
				Uplink: 4, DisableWalkMemo: off,
				// Exact flows: the test counts the 64 connections'
				// flows; port wildcards would make them one.
				DisablePortWildcards: true})
			if err != nil {
				t.Fatal(err)
			}
			defer sw.Close()
			h.sw = sw
			batch, fill := newFlowBatch(h)
			fill(0)
			if err := sw.HandleBatch(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			sw.mu.Lock()
			remembered := sw.stats.walksRemembered
			sw.mu.Unlock()
			want := uint64(len(batch) - 1)
			if off {
				want = 0
			}
			if remembered != want {
				t.Errorf("%d walks remembered, want %d", remembered, want)
			}
			if s := sw.Stats(); s.FlowsNIC != len(batch) {
				t.Errorf("%d flows offloaded, want %d", s.FlowsNIC, len(batch))
			}
		})
	}
}

// BenchmarkWalk measures the layer walk alone (compiled.classify: no flow
// cache, no NIC, no memo, no connection table) on the realistic policy's
// first packets, each between endpoints of its own: what the slow path
// spends deciding a flow, apart from installing it. The reference
// evaluator's time on the same packets is beside it (oracle_cpu_ns/walk,
// over a sample), as a yardstick of what a plain walk of the policy costs.
func BenchmarkWalk(b *testing.B) {
	realisticSetup(b)
	var ids, tids interner
	c := compile(realistic.st, realistic.host, realistic.ports, &ids, &tids)
	keys := make([]hal.FlowKey, len(realistic.inPorts))
	for i := range keys {
		f := realisticFrame(i)
		var l wire.Layout
		if err := wire.Parse(f, realistic.inPorts[i], &keys[i], &l); err != nil {
			b.Fatal(err)
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var v verdict
	b.ReportAllocs()
	b.ResetTimer()
	c0 := threadCPU()
	for i := range b.N {
		c.classify(&keys[i%len(keys)], realistic.uplink, 64, nil, nil, &v)
	}
	cpu := threadCPU() - c0
	b.StopTimer()
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu_ns/walk")
	}
	const sample = 2000
	sent := realisticTraffic()[:sample]
	t0 := threadCPU()
	for _, s := range sent {
		realistic.st.Evaluate(realistic.host, policy.FromVM(s.VM), s.Packet)
	}
	if d := threadCPU() - t0; d > 0 {
		b.ReportMetric(float64(d.Nanoseconds())/sample, "oracle_cpu_ns/walk")
	}
}

// reportFlowRates reports a slow-path benchmark's rates: flows per second of
// wall clock and of CPU time (the figure that does not depend on what else
// the machine runs), and, when apply (the NIC's Apply, timed inside cpu) is
// known, Apply's share per flow and the switch's own rate without it. The
// NIC's Apply (adds, and deletions of flows that idled out) is part of
// placing a flow in cpu_flows/s; switch_cpu_flows/s leaves it out.
func reportFlowRates(b *testing.B, el, cpu, apply time.Duration) {
	b.ReportMetric(float64(b.N)/el.Seconds(), "flows/s")
	if cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "cpu_flows/s")
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu_ns/flow")
	}
	if apply > 0 {
		b.ReportMetric(float64(apply.Nanoseconds())/float64(b.N), "apply_cpu_ns/flow")
		if own := cpu - apply; own > 0 {
			b.ReportMetric(float64(b.N)/own.Seconds(), "switch_cpu_flows/s")
		}
	}
}
