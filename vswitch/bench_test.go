package vswitch

import (
	"context"
	"encoding/binary"
	"net/netip"
	"runtime"
	"runtime/debug"
	"slices"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// benchHost is host h1 of smallPolicy on one softnic, without the rest of
// the topology: frames it sends out of its uplink are discarded.
type benchHost struct {
	sw     *Switch
	soft   *softnic.NIC
	va1    hal.PortID
	uplink *softnic.Port
}

var shadowSetups = map[int]*benchHost{}

func (h *benchHost) close() { h.sw.Close(); h.soft.Close() }

// newBenchHost builds the host; with a nil b the caller closes it.
func newBenchHost(b testing.TB, st *policy.State, maxRules int) *benchHost {
	return newBenchHostOn(b, st, maxRules, nil)
}

// newBenchHostOn is newBenchHost with the switch on wrap(softnic), when
// wrap is not nil.
func newBenchHostOn(b testing.TB, st *policy.State, maxRules int, wrap func(hal.NIC) hal.NIC) *benchHost {
	fatal := func(err error) {
		if b == nil {
			panic(err)
		}
		b.Fatal(err)
	}
	ports := map[string]hal.PortID{"va1": 1, "vb1": 2, "u1": 3}
	soft, err := softnic.New(softnic.Config{Device: "bench", MaxRules: maxRules, Ports: []softnic.PortConfig{
		{Name: "va1", Kind: hal.PortVPort, MAC: hal.MAC(macVA1)},
		{Name: "vb1", Kind: hal.PortVPort, MAC: hal.MAC(macVB1)},
		{Name: "u1", Kind: hal.PortVPort, MAC: hal.MAC(macU1)},
		{Name: "uplink", Kind: hal.PortUplink, MAC: uplinkMAC},
	}})
	if err != nil {
		fatal(err)
	}
	var nic hal.NIC = soft
	if wrap != nil {
		nic = wrap(soft)
	}
	// Exact flows: the bench host's batches are connections between one
	// pair of VMs, each of which these benchmarks and tests count as a
	// flow through the slow path; with port wildcards (the default) the
	// first would cover the rest (TestWildcard* test that).
	sw, err := New(Config{NIC: nic, Host: "h1", State: st, Ports: ports, Uplink: 4, DisablePortWildcards: true})
	if err != nil {
		fatal(err)
	}
	up, _ := soft.Port(4)
	h := &benchHost{sw: sw, soft: soft, va1: 1, uplink: up}
	if b != nil {
		b.Cleanup(h.close)
	}
	return h
}

// flowFrame is a UDP frame from va1 to dst; setFlow gives it the ports of
// flow i, so that every i is a new flow.
func flowFrame(dst policy.MAC, dstCA netip.Addr) []byte {
	return frameOf(udp(macVA1, dst, caVA1, dstCA, 1, 1))
}

func setFlow(frame []byte, i int) {
	// Ethernet 14 + IPv4 20: UDP ports. UDP over IPv4 may carry checksum
	// 0; clear it so the rewritten ports stay valid.
	binary.BigEndian.PutUint16(frame[34:], uint16(1024+i&0x7fff))
	binary.BigEndian.PutUint16(frame[36:], uint16(1+i>>15))
	binary.BigEndian.PutUint16(frame[40:], 0)
}

// applyTimer decorates a NIC to add up the CPU time its Apply calls take
// on the calling thread, so that the slow-path benchmark can tell the
// NIC's share from the switch's own.
type applyTimer struct {
	hal.NIC
	cpu time.Duration
}

// wrap makes a the NIC's wrapper (a NIC factory's wrap function): a
// times every Apply of n.
func (a *applyTimer) wrap(n hal.NIC) hal.NIC {
	a.NIC = n
	return a
}

func (a *applyTimer) Apply(ctx context.Context, ops []hal.Op, res []hal.OpResult) error {
	c0 := threadCPU()
	err := a.NIC.Apply(ctx, ops, res)
	a.cpu += threadCPU() - c0
	return err
}

// benchSlowPathOnePair is BenchmarkSlowPath/onepair: every exception is
// a new flow toward the same remote VM, on a policy without ACLs, so that
// the walk memo answers all but the first walk of a switch.
func benchSlowPathOnePair(b *testing.B) {
	st := smallPolicy(b, nil)
	// Keep the table well below softnic's size; start afresh when it fills.
	const perSwitch = 1 << 18
	// Apply's thread CPU is read on this goroutine's thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	timer := &applyTimer{}
	wrap := timer.wrap
	h := newBenchHostOn(b, st, 0, wrap)
	batch := make([]hal.Exception, 64)
	for i := range batch {
		batch[i] = hal.Exception{InPort: h.va1, Reason: hal.ReasonMiss, Buf: flowFrame(macVA2, caVA2)}
		batch[i].Len = len(batch[i].Buf)
	}
	ctx := context.Background()
	b.ReportAllocs()
	timer.cpu = 0
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	paused, cpuPaused := time.Duration(0), time.Duration(0)
	made := 0
	for n := 0; n < b.N; n += len(batch) {
		if made >= perSwitch {
			t0, c0, a0 := time.Now(), cpuTime(), timer.cpu
			h = newBenchHostOn(b, st, 0, wrap)
			made = 0
			timer.cpu = a0 // the new switch's reconciliation is setup
			paused += time.Since(t0)
			cpuPaused += cpuTime() - c0
		}
		k := min(len(batch), b.N-n)
		for i := 0; i < k; i++ {
			setFlow(batch[i].Buf, made+i)
		}
		if err := h.sw.HandleBatch(ctx, batch[:k]); err != nil {
			b.Fatal(err)
		}
		made += k
		h.uplink.Discard()
	}
	el := time.Since(start) - paused
	cpu := cpuTime() - cpu0 - cpuPaused
	reportFlowRates(b, el, cpu, timer.cpu)
	if s := h.sw.Stats(); made > 0 && s.FlowsNIC != made {
		b.Fatalf("%d of %d flows offloaded:\n%s", s.FlowsNIC, made, s)
	}
}

// installFlowsToward creates n flows from va1 to vx (whose shadow is
// inactive), each with its rule and its inactive shadow rule on the NIC.
// The keys differ only in their ports and the policy has no ACLs, so the
// layer walk gives every one the same verdict: it is walked once (for the
// current and the shadow location) and the flows are built from it as
// newFlow would, which keeps a million-flow setup within seconds.
func installFlowsToward(b testing.TB, h *benchHost, n int) {
	s := h.sw
	ctx := context.Background()
	k := hal.FlowKey{InPort: h.va1, EthSrc: hal.MAC(macVA1), EthDst: hal.MAC(macVX), EthType: hal.EtherTypeIPv4,
		IPSrc: caVA1.As16(), IPDst: caVX.As16(), Proto: hal.ProtoUDP}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flows.init(n)
	var v, alt verdict
	s.cur.classify(&k, s.cfg.Uplink, 64, s.ct, nil, &v)
	s.cur.alt["vx"].classify(&k, s.cfg.Uplink, 64, s.ct, nil, &alt)
	if v.action != policy.Encap || alt.action != policy.Encap || v.nrec+v.nused+alt.nrec+alt.nused != 0 || v.hasDenied {
		b.Fatalf("verdicts %v / %v: not a plain encapsulation", v.action, alt.action)
	}
	a, sa := s.intern(actKeyOf(&v)), s.intern(actKeyOf(&alt))
	sc := s.scopeOf("vx")
	if err := s.off.validate(a, &k, true, sc.id, sc.active, false); err != nil {
		b.Fatal(err)
	}
	flows, hots := make([]flow, n), make([]flowHot, n)
	for i := 0; i < n; i++ {
		k.L4Src, k.L4Dst = uint16(i), uint16(1+i>>16)
		f := &flows[i]
		*f = flow{h: &hots[i], key: k, acts: a, shadow: sa, scope: sc, tenant: v.tenant, srcVM: v.srcVM, dstVM: v.dstVM}
		f.h.gen = sc.active
		a.refs++
		sa.refs++
		s.flows.put(f)
		f.h.id = s.off.newID()
		s.off.ops = append(s.off.ops, hal.AddOp(s.off.rule(f.h.id, &k, a, sc.id, sc.active, false)))
		s.off.refs = append(s.off.refs, opRef{f: f, purpose: opAddPrimary})
		f.h.shadowID = s.off.newID()
		s.off.ops = append(s.off.ops, hal.AddOp(s.off.rule(f.h.shadowID, &k, sa, sc.id, sc.active+1, false)))
		s.off.refs = append(s.off.refs, opRef{f: f, purpose: opAddShadow})
		if len(s.off.ops) >= 1<<15 {
			s.flush(ctx)
		}
	}
	s.flush(ctx)
}

// BenchmarkShadowActivate measures ActivateShadow with 10k, 100k and 1M
// flows (each with its shadow rule) toward the migrating VM: it must not
// grow with the count. Iterations alternate activation and rollback, each
// one step.
func BenchmarkShadowActivate(b *testing.B) {
	for _, c := range []struct {
		name string
		n    int
	}{{"10k", 10_000}, {"100k", 100_000}, {"1M", 1_000_000}} {
		b.Run(c.name, func(b *testing.B) {
			// The setup is made once per size and kept across the rounds
			// the testing package runs with growing b.N; the GC is held
			// back while a million flows are created.
			h := shadowSetups[c.n]
			if h == nil {
				st := smallPolicy(b, nil)
				h = newBenchHost(nil, st, 2*c.n+16)
				old := debug.SetGCPercent(800)
				installFlowsToward(b, h, c.n)
				debug.SetGCPercent(old)
				if s := h.sw.Stats(); s.FlowsNIC != c.n {
					b.Fatalf("%d flows offloaded, want %d", s.FlowsNIC, c.n)
				}
				// Only one size lives at a time.
				for n, o := range shadowSetups {
					o.close()
					delete(shadowSetups, n)
				}
				shadowSetups[c.n] = h
			}
			if h.sw.cur.st.Activations()[0].Generation != 1 {
				b.Fatal("the shadow is live before the benchmark")
			}
			ctx := context.Background()
			// Leave the setup's garbage behind and warm up with one flip
			// and back, so that a single measured activation (-benchtime=1x)
			// is not a GC pause of the setup.
			runtime.GC()
			if err := h.sw.ActivateShadow(ctx, "vx"); err != nil {
				b.Fatal(err)
			}
			if err := h.sw.Rollback(ctx, "vx"); err != nil {
				b.Fatal(err)
			}
			var total time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				var err error
				if i%2 == 0 {
					err = h.sw.ActivateShadow(ctx, "vx")
				} else {
					err = h.sw.Rollback(ctx, "vx")
				}
				total += time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(total.Nanoseconds())/1e3/float64(b.N), "us/activate")
			if b.N%2 == 1 { // leave the shadow inactive for the next round
				if err := h.sw.Rollback(ctx, "vx"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFlowMemory measures the switch's heap per flow, one iteration
// one flow, at least 10k flows averaged:
//
//   - host: the switch keeps every flow in the host (offload disabled):
//     flow, key and cache entry; action lists are shared.
//   - offloaded: every flow is offloaded, on a NIC that takes every
//     operation and keeps nothing (acceptNIC), so that only the switch's
//     own memory for an offloaded flow counts: the flow with its rule IDs
//     and its shadow rule's (the destination VM migrates), the cache entry
//     and the rule ID index. The NIC's memory per rule is its own figure
//     (softnic.bytes_per_rule).
func BenchmarkFlowMemory(b *testing.B) {
	b.Run("host", func(b *testing.B) { benchFlowMemory(b, false) })
	b.Run("offloaded", func(b *testing.B) { benchFlowMemory(b, true) })
}

func benchFlowMemory(b *testing.B, offload bool) {
	st := smallPolicy(b, nil)
	n := max(b.N, 10_000)
	h := newBenchHostOn(b, st, 0, func(n hal.NIC) hal.NIC { return acceptNIC{n} })
	h.sw.cfg.DisableOffload = !offload
	// Toward vx, whose inactive shadow gives every offloaded flow a shadow
	// rule as well.
	k := hal.FlowKey{InPort: h.va1, EthSrc: hal.MAC(macVA1), EthDst: hal.MAC(macVX), EthType: hal.EtherTypeIPv4,
		IPSrc: caVA1.As16(), IPDst: caVX.As16(), Proto: hal.ProtoUDP}
	ctx := context.Background()
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	s := h.sw
	b.ResetTimer()
	s.mu.Lock()
	for j := 0; j < n; j++ {
		k.L4Src, k.L4Dst = uint16(j), uint16(1+j>>16)
		s.newFlow(&k, 64, 0, false)
		if len(s.off.ops) >= 1<<12 {
			s.flush(ctx)
		}
	}
	s.flush(ctx)
	s.mu.Unlock()
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/float64(n), "bytes/flow")
	st2 := s.Stats()
	if st2.Flows != n {
		b.Fatalf("%d flows, want %d", st2.Flows, n)
	}
	want := 0
	if offload {
		want = n
	}
	if st2.FlowsNIC != want {
		b.Fatalf("%d flows offloaded (offload %v), of %d", st2.FlowsNIC, offload, n)
	}
}

// BenchmarkFirstPacketProactive is BenchmarkFirstPacketLatency's other way:
// with per-destination rules programmed ahead of traffic, the first packet
// of a connection is encapsulated by the NIC and never reaches the host.
func BenchmarkFirstPacketProactive(b *testing.B) {
	st := smallPolicy(b, nil)
	ports := map[string]hal.PortID{"va1": 1, "vb1": 2, "u1": 3}
	soft, err := softnic.New(softnic.Config{Device: "bench", Ports: []softnic.PortConfig{
		{Name: "va1", Kind: hal.PortVPort, MAC: hal.MAC(macVA1)},
		{Name: "vb1", Kind: hal.PortVPort, MAC: hal.MAC(macVB1)},
		{Name: "u1", Kind: hal.PortVPort, MAC: hal.MAC(macU1)},
		{Name: "uplink", Kind: hal.PortUplink, MAC: uplinkMAC},
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer soft.Close()
	sw, err := New(Config{NIC: soft, Host: "h1", State: st, Ports: ports, Uplink: 4, Proactive: true})
	if err != nil {
		b.Fatal(err)
	}
	defer sw.Close()
	far, _ := soft.Port(1)
	up, _ := soft.Port(4)
	frame := flowFrame(macVA2, caVA2)
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		setFlow(frame, i)
		t0 := time.Now()
		far.Send([][]byte{frame})
		if n, _ := up.Recv(bufs, sizes); n != 1 {
			b.Fatal("no frame on the uplink: the first packet was not handled by the NIC")
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	if s := sw.Stats(); s.Packets != 0 {
		b.Fatalf("%d first packets reached the host", s.Packets)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50_us")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99_us")
}
