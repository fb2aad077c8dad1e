package softnic

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// benchFlows is how many exact-match rules the datapath benchmarks install:
// 1M, as DESIGN.md's figure asks. SOFTNIC_BENCH_FLOWS overrides it (a
// power of two) for quicker local runs.
var benchFlows = func() int {
	if v, err := strconv.Atoi(os.Getenv("SOFTNIC_BENCH_FLOWS")); err == nil && v > 0 && v&(v-1) == 0 {
		return v
	}
	return 1 << 20
}()

// benchRemotes is how many remote hosts the flows are spread over; rules
// to one host share their compiled actions.
const benchRemotes = 1024

// flowKey is flow f of the benchmarks: UDP from vm1's CA, to one of 64K
// destinations, from one of 16 source ports.
func flowKey(f int) hal.FlowKey {
	k := hal.FlowKey{InPort: pVM1, EthSrc: macVM1, EthDst: macGW, EthType: hal.EtherTypeIPv4,
		Proto: hal.ProtoUDP, L4Src: uint16(10000 + f&15), L4Dst: 80,
		IPSrc: hal.Addr16(caVM1), IPDst: hal.Addr16(netip.AddrFrom4([4]byte{198, 18, byte(f >> 12), byte(f >> 4)}))}
	if f>>4 >= 1<<16 {
		k.IPDst = hal.Addr16(netip.AddrFrom4([4]byte{203, byte(f >> 20), byte(f >> 12), byte(f >> 4)}))
	}
	return k
}

func remote(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}) }

// remoteActions are the action lists of the flows, one per remote host;
// flowRule shares them (Apply copies what it keeps), so that building a
// million rules does not allocate a million action slices.
var remoteActions = func() [][]hal.Action {
	out := make([][]hal.Action, benchRemotes)
	for i := range out {
		out[i] = []hal.Action{
			hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 5000, Src: paLocal, Dst: remote(i), SrcMAC: macUp, DstMAC: macNext}),
			hal.Output(pUplink)}
	}
	return out
}()

func flowRule(f int) hal.Rule {
	k := flowKey(f)
	return hal.Rule{ID: hal.RuleID(f + 1), Priority: 100, Match: hal.Exact(&k), Actions: remoteActions[f%benchRemotes]}
}

// installFlows adds rules for flows [0, count) in batches of MaxBatch.
func installFlows(tb testing.TB, n *NIC, count int) {
	tb.Helper()
	batch := min(count, DefaultMaxBatch)
	ops := make([]hal.Op, batch)
	res := make([]hal.OpResult, batch)
	for base := 0; base < count; base += batch {
		k := min(batch, count-base)
		for i := 0; i < k; i++ {
			ops[i] = hal.AddOp(flowRule(base + i))
		}
		if err := n.Apply(context.Background(), ops[:k], res[:k]); err != nil {
			tb.Fatal(err)
		}
	}
}

// frameStore holds 64-byte frames back to back, like packets DMA'd into a
// receive area; the benchmark copies each into a buffer with headroom.
type frameStore struct {
	data []byte
	n    int
}

const benchFrameLen = 64

// template is a 64-byte UDP/IPv4 frame of flow 0 (with its 4-byte FCS
// space as payload, so that the inner frame is 64 bytes).
var template = wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: caVM1, Dst: caRem,
	Proto: hal.ProtoUDP, SrcPort: 10000, DstPort: 80, Payload: make([]byte, benchFrameLen-42)})

// writeFlowFrame writes flow f's frame into dst (64 bytes), patching the
// template's destination, source port and checksums.
func writeFlowFrame(dst []byte, f int) {
	copy(dst, template)
	k := flowKey(f)
	copy(dst[30:34], k.IPDst[12:])
	binary.BigEndian.PutUint16(dst[34:36], k.L4Src)
	dst[24], dst[25] = 0, 0
	binary.BigEndian.PutUint16(dst[24:26], wire.Checksum(dst[14:34], 0))
	dst[40], dst[41] = 0, 0 // UDP checksum: none
}

func newFrameStore(flows []int) *frameStore {
	s := &frameStore{data: make([]byte, len(flows)*benchFrameLen), n: len(flows)}
	for i, f := range flows {
		writeFlowFrame(s.data[i*benchFrameLen:(i+1)*benchFrameLen], f)
	}
	return s
}

var bench1M struct {
	once         sync.Once
	nic          *NIC
	uniform      *frameStore
	hot          *frameStore
	setup        time.Duration // building the NIC and its rules
	bytesPerRule float64       // heap growth from New to the last rule, after GC
}

func benchNIC(tb testing.TB) {
	bench1M.once.Do(func() {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		huge0 := hugeInUse.Load()
		start := time.Now()
		cfg := testConfig()
		cfg.MaxRules = benchFlows
		cfg.RingSize = 2 * MaxBurst // a burst fits; the rings are not rule memory
		n, err := New(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		installFlows(tb, n, benchFlows)
		bench1M.setup = time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&m1)
		// The huge-page mappings of the table (hugemem.go) are outside
		// the heap: they count too.
		bench1M.bytesPerRule = float64(int64(m1.HeapAlloc-m0.HeapAlloc)+hugeInUse.Load()-huge0) / float64(benchFlows)
		rng := rand.New(rand.NewPCG(1, 2))
		seq := make([]int, 1<<18)
		for i := range seq {
			seq[i] = rng.IntN(benchFlows)
		}
		bench1M.uniform = newFrameStore(seq)
		// The hot set: 4096 flows (a busy host's active connections) drawn
		// from the million, each seen many times.
		hot := make([]int, 4096)
		for i := range hot {
			hot[i] = rng.IntN(benchFlows)
		}
		for i := range seq {
			seq[i] = hot[rng.IntN(len(hot))]
		}
		bench1M.hot = newFrameStore(seq)
		bench1M.nic = n
	})
}

// BenchmarkHitEncap: rule hit + VXLAN encapsulation of 64-byte inner frames,
// with benchFlows exact-match rules installed, one goroutine, bursts of
// MaxBurst through Process. "uniform" draws each packet's flow uniformly
// from all rules (every lookup a cache miss); "hotset" from 4096 of them.
// The time includes copying each frame from the receive area into a buffer
// with headroom and copying the result into the uplink's ring. The first
// copy is the harness standing in for a NIC's DMA: rxcopy-ns/pkt (and
// rxcopy-cpu-ns/pkt) time it alone in the same run, and net-ns/pkt (and
// net-cpu-ns/pkt) are the totals without it.
func BenchmarkHitEncap(b *testing.B) {
	benchNIC(b)
	for _, c := range []struct {
		name  string
		store **frameStore
	}{{"uniform", &bench1M.uniform}, {"hotset", &bench1M.hot}} {
		b.Run(c.name, func(b *testing.B) {
			n, store := bench1M.nic, *c.store
			up := mustPort(b, n, pUplink)
			bufs := make([][]byte, MaxBurst)
			sizes := make([]int, MaxBurst)
			for i := range bufs {
				bufs[i] = make([]byte, Headroom+benchFrameLen)
				sizes[i] = benchFrameLen
			}
			before := up.counters().Tx.Packets
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0, cpuOK := threadCPU()
			b.ResetTimer()
			pos := 0
			for done := 0; done < b.N; done += MaxBurst {
				k := min(MaxBurst, b.N-done)
				for i := 0; i < k; i++ {
					copy(bufs[i][Headroom:], store.data[pos*benchFrameLen:(pos+1)*benchFrameLen])
					if pos++; pos == store.n {
						pos = 0
					}
				}
				if err := n.Process(pVM1, bufs[:k], sizes[:k], Headroom); err != nil {
					b.Fatal(err)
				}
				up.Discard()
			}
			b.StopTimer()
			cpu1, _ := threadCPU()
			runtime.ReadMemStats(&ms1)
			sent := up.counters().Tx.Packets - before
			if sent != uint64(b.N) {
				b.Fatalf("%d of %d packets reached the uplink", sent, b.N)
			}
			elapsed := b.Elapsed()
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N), "ns/pkt")
			if cpuOK {
				b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/pkt")
			}
			// The figures above include the harness's copy of each frame
			// from the receive area into its buffer, which a NIC's DMA
			// would do. The same copies, timed alone right after (same
			// frames, same order, same buffers), are the rxcopy figures;
			// the net figures are the totals without them: the datapath's
			// own time, as near as one run can tell.
			rc, rcCPU := rxCopyTime(store, bufs, b.N, pos)
			b.ReportMetric(float64(rc.Nanoseconds())/float64(b.N), "rxcopy-ns/pkt")
			b.ReportMetric(float64((elapsed-rc).Nanoseconds())/float64(b.N), "net-ns/pkt")
			if cpuOK && rcCPU >= 0 {
				b.ReportMetric(float64(rcCPU.Nanoseconds())/float64(b.N), "rxcopy-cpu-ns/pkt")
				b.ReportMetric(float64((cpu1-cpu0-rcCPU).Nanoseconds())/float64(b.N), "net-cpu-ns/pkt")
			}
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N), "allocs/pkt")
			b.ReportMetric(float64(benchFlows), "rules")
			b.ReportMetric(bench1M.setup.Seconds(), "setup_s")
		})
	}
}

// rxCopyTime runs BenchmarkHitEncap's per-packet copies alone: count
// frames of store, from position pos on (where the measured loop left off,
// so that they are as far from the caches as there), into bufs a burst at
// a time. It returns the wall and the thread CPU time they took (CPU -1
// when the thread's clock is not available). The caller holds the
// goroutine on its thread.
func rxCopyTime(store *frameStore, bufs [][]byte, count, pos int) (wall, cpu time.Duration) {
	cpu0, cpuOK := threadCPU()
	start := time.Now()
	for done := 0; done < count; done += MaxBurst {
		k := min(MaxBurst, count-done)
		for i := 0; i < k; i++ {
			copy(bufs[i][Headroom:], store.data[pos*benchFrameLen:(pos+1)*benchFrameLen])
			if pos++; pos == store.n {
				pos = 0
			}
		}
	}
	wall = time.Since(start)
	cpu1, _ := threadCPU()
	if !cpuOK {
		return wall, -1
	}
	return wall, cpu1 - cpu0
}

// BenchmarkRuleOps: batched adds then deletes of exact-match rules (64K per
// Apply), on a table that already holds benchFlows/4 rules. The rules to
// one remote host share their action list, as a controller's do. Apply
// allocates nothing in the loop (B/op with -benchmem).
func BenchmarkRuleOps(b *testing.B) {
	cfg := testConfig()
	cfg.MaxRules = benchFlows * 2
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	base := benchFlows / 4
	installFlows(b, n, base)
	const batch = 1 << 16
	adds := make([]hal.Op, batch)
	dels := make([]hal.Op, batch)
	for i := range adds {
		adds[i] = hal.AddOp(flowRule(base + i))
		dels[i] = hal.DeleteOp(hal.RuleID(base + i + 1))
	}
	res := make([]hal.OpResult, batch)
	ctx := context.Background()
	// The figures count the NIC's work alone: the garbage of the setup
	// (an earlier round's NIC and table, the building of this one's) is
	// collected now, not by a collection that the setup started and that
	// runs on into the timed loop, scanning among others the benchmark's
	// own 32 MB of operations, in part on this thread.
	runtime.GC()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0, cpuOK := threadCPU()
	b.ResetTimer()
	ops := 0
	for ops < b.N {
		if err := n.Apply(ctx, adds, res); err != nil {
			b.Fatal(err)
		}
		if err := n.Apply(ctx, dels, res); err != nil {
			b.Fatal(err)
		}
		ops += 2 * batch
	}
	b.StopTimer()
	cpu1, _ := threadCPU()
	b.ReportMetric(float64(ops)/b.Elapsed().Seconds(), "ops/s")
	if cpuOK {
		// Apply runs on this goroutine's thread; the rate per CPU second
		// leaves out the time other processes held the CPU.
		b.ReportMetric(float64(ops)/(cpu1-cpu0).Seconds(), "ops/cpu-s")
	}
}

// BenchmarkRuleMemory: heap bytes per installed exact-match rule with
// benchFlows rules, measured with runtime.MemStats (after a GC) around
// building the NIC that BenchmarkHitEncap uses.
func BenchmarkRuleMemory(b *testing.B) {
	benchNIC(b)
	for i := 0; i < b.N; i++ {
	}
	b.ReportMetric(bench1M.bytesPerRule, "bytes/rule")
	b.ReportMetric(bench1M.setup.Seconds(), "setup_s")
}

// BenchmarkActivate: switching the active generation of the scope that
// holds all benchFlows rules (every rule goes dead, then live again). The
// cost is one switch of the table views, whatever the number of rules.
func BenchmarkActivate(b *testing.B) {
	benchNIC(b)
	n, ctx := bench1M.nic, context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := n.Activate(ctx, 0, hal.Generation((i+1)%2)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := n.Activate(ctx, 0, 0); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/activate")
}

// BenchmarkLookupHot: the bulk lookup alone (hash, bucket scan, compare),
// per packet, for bursts of 64 packets that all hit one of 64 exact-match
// rules, everything in the L1 cache: the lookup's computation, without
// parsing, execution or cache misses.
func BenchmarkLookupHot(b *testing.B) {
	n := newNIC(b)
	installFlows(b, n, 64)
	bu := newBurst(n.burstSz, false)
	for i := 0; i < MaxBurst; i++ {
		frame := make([]byte, benchFrameLen)
		writeFlowFrame(frame, i*7%64)
		if !parseFast(frame, pVM1, &bu.w[i]) {
			b.Fatal("the benchmark's frame is not one parseFast takes")
		}
	}
	s := n.rcu.enter()
	defer n.rcu.exit(s)
	v := &n.rcu.views[s]
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0, cpuOK := threadCPU()
	b.ResetTimer()
	for done := 0; done < b.N; done += MaxBurst {
		for i := 0; i < MaxBurst; i++ {
			bu.fate[i], bu.best[i], bu.prio[i] = fatePending, noRule, -1
		}
		for _, tab := range v.tabs {
			n.lookup(bu, v, tab, MaxBurst)
		}
	}
	b.StopTimer()
	if cpu1, _ := threadCPU(); cpuOK {
		b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/pkt")
	}
	for i := 0; i < MaxBurst; i++ {
		if bu.best[i] == noRule {
			b.Fatalf("packet %d missed", i)
		}
	}
}

// BenchmarkLookupCold: parsing and the bulk lookup alone, per packet, with
// benchFlows exact-match rules and each packet a random flow of them (the
// frames of HitEncap/uniform, parsed in place from the receive area):
// BenchmarkLookupHot's work plus the cache and TLB misses of a table
// too large for the caches, without execution or delivery.
func BenchmarkLookupCold(b *testing.B) {
	benchNIC(b)
	n, store := bench1M.nic, bench1M.uniform
	bu := newBurst(n.burstSz, false)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0, cpuOK := threadCPU()
	b.ResetTimer()
	pos, hits := 0, 0
	for done := 0; done < b.N; done += MaxBurst {
		k := min(MaxBurst, b.N-done)
		for i := 0; i < k; i++ {
			frame := store.data[pos*benchFrameLen : (pos+1)*benchFrameLen]
			if pos++; pos == store.n {
				pos = 0
			}
			if !parseFast(frame, pVM1, &bu.w[i]) {
				b.Fatal("the benchmark's frame is not one parseFast takes")
			}
			bu.fate[i], bu.best[i], bu.prio[i] = fatePending, noRule, -1
		}
		s := n.rcu.enter()
		v := &n.rcu.views[s]
		for _, tab := range v.tabs {
			n.lookup(bu, v, tab, k)
		}
		n.rcu.exit(s)
		for i := 0; i < k; i++ {
			if bu.best[i] != noRule {
				hits++
			}
		}
	}
	b.StopTimer()
	if cpu1, _ := threadCPU(); cpuOK {
		b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/pkt")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/pkt")
	if hits != b.N {
		b.Fatalf("%d of %d packets hit", hits, b.N)
	}
}
