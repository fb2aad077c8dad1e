package remote

import (
	"context"
	"net/netip"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

// benchBase is how many rules the table holds while the benchmark adds and
// deletes a batch: a table in use, not an empty one.
const benchBase = 1 << 16

// benchBatch is the batch the benchmark applies: softnic's MaxBatch, the
// most one call takes; the vswitch batches up to MaxBatch as well.
const benchBatch = 1 << 16

var benchActions = []hal.Action{
	hal.SetEthDst(hal.MAC{0x02, 0, 0, 0, 0, 9}),
	hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001, Src: netip.MustParseAddr("198.18.0.1"),
		Dst: netip.MustParseAddr("198.18.0.2"), SrcMAC: macUplink, DstMAC: hal.MAC{0x02, 0, 0, 0, 0, 0xfe}}),
	hal.Count(), hal.Output(3)}

// benchRule is an exact-match IPv4/UDP flow from vm1, as the vswitch
// offloads one connection.
func benchRule(f int) hal.Rule {
	k := hal.FlowKey{InPort: 1, EthSrc: macVM1, EthDst: macVM2, EthType: hal.EtherTypeIPv4, Proto: hal.ProtoUDP,
		IPSrc: hal.Addr16(netip.MustParseAddr("10.0.0.1")),
		IPDst: hal.Addr16(netip.AddrFrom4([4]byte{198, 18, byte(f >> 12), byte(f >> 4)})),
		L4Src: uint16(10000 + f&15), L4Dst: 80}
	return hal.Rule{ID: hal.RuleID(f + 1), Priority: 100, Match: hal.Exact(&k), Cookie: 0xC0FFEE, Actions: benchActions}
}

func benchOps() (adds, dels []hal.Op) {
	adds = make([]hal.Op, benchBatch)
	dels = make([]hal.Op, benchBatch)
	for i := range adds {
		adds[i] = hal.AddOp(benchRule(benchBase + i))
		dels[i] = hal.DeleteOp(hal.RuleID(benchBase + i + 1))
	}
	return adds, dels
}

func benchInstall(b *testing.B, n hal.NIC) {
	ops := make([]hal.Op, benchBatch)
	res := make([]hal.OpResult, benchBatch)
	for base := 0; base < benchBase; base += benchBatch {
		for i := range ops {
			ops[i] = hal.AddOp(benchRule(base + i))
		}
		if err := n.Apply(context.Background(), ops, res); err != nil {
			b.Fatal(err)
		}
	}
}

// applyRate is rule operations per second over rounds of one batch of adds
// and one of deletes.
var benchRes = make([]hal.OpResult, benchBatch)

func applyRate(b *testing.B, n hal.NIC, adds, dels []hal.Op, rounds int) (rate, cpuRate float64) {
	res := benchRes
	ctx := context.Background()
	cpu0 := processCPU()
	start := time.Now()
	for range rounds {
		if err := n.Apply(ctx, adds, res); err != nil {
			b.Fatal(err)
		}
		if err := n.Apply(ctx, dels, res); err != nil {
			b.Fatal(err)
		}
	}
	ops := float64(2 * benchBatch * rounds)
	return ops / time.Since(start).Seconds(), ops / (processCPU() - cpu0).Seconds()
}

// benchSides are the two sides the benchmarks set against each other: a
// softnic driven directly, and a softnic served over a unix socket with the
// host side n opened to it. Everything closes at cleanup, the host side
// first.
func benchSides(b *testing.B) (direct, served *softnic.NIC, n hal.NIC) {
	b.Helper()
	direct = newSoftnic(b, false)
	b.Cleanup(func() { direct.Close() })
	served = newSoftnic(b, false)
	b.Cleanup(func() { served.Close() })
	k := newKeys(b)
	s := serve(b, served, k, sockPath(b), nil)
	return direct, served, open(b, clientConfig(k, s.addr))
}

// BenchmarkApply: rule operations per second through remote(softnic) over
// a unix socket, batches of 64K exact-match rules (one request per Apply,
// in segments),
// and the same on softnic directly in the same run; apply_ops_ratio is
// remote over direct (remote.apply_ops_ratio, target ≥ 0.5). Each side is
// measured over interleaved rounds, the best round kept, so that a burst
// of load from another process hits both alike.
func BenchmarkApply(b *testing.B) {
	direct, _, n := benchSides(b)
	benchInstall(b, direct)
	benchInstall(b, n)
	adds, dels := benchOps()
	var dRates, rRates, dCPU, rCPU []float64
	b.ResetTimer()
	ops := 0
	for ops < b.N || len(rRates) < 8 { // at least 8 rounds a side: the best of few is noise
		d, dc := applyRate(b, direct, adds, dels, 1)
		r, rc := applyRate(b, n, adds, dels, 1)
		dRates, dCPU = append(dRates, d), append(dCPU, dc)
		rRates, rCPU = append(rRates, r), append(rCPU, rc)
		ops += 2 * benchBatch
	}
	b.StopTimer()
	d, r := slices.Max(dRates), slices.Max(rRates)
	b.ReportMetric(r, "ops/s")
	b.ReportMetric(d, "direct_ops/s")
	b.ReportMetric(r/d, "apply_ops_ratio")
	// What the channel costs in CPU (both ends, every thread) per
	// operation, against softnic alone: the remote path runs on several
	// threads, so on a machine shared with other work its wall-clock
	// ratio moves with the share of CPU it gets; this one does not.
	if cpuClock {
		b.ReportMetric(slices.Max(rCPU)/slices.Max(dCPU), "apply_cpu_ratio")
	}
}

// BenchmarkExceptions: exceptions per second delivered to the host through
// the channel (remote.exceptions_per_s): 64-byte misses sent into the
// served softnic as fast as it takes them, read in batches of 64 by the
// host. Frames the NIC side dropped for want of host room are not counted.
func BenchmarkExceptions(b *testing.B) {
	k := newKeys(b)
	soft, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm1", Kind: hal.PortVPort, MAC: macVM1},
		{Name: "uplink", Kind: hal.PortUplink, MAC: macUplink, MTU: 1600},
	}, ExceptionQueue: 4096})
	if err != nil {
		b.Fatal(err)
	}
	defer soft.Close()
	s := serve(b, soft, k, sockPath(b), nil)
	cfg := clientConfig(k, s.addr)
	cfg.ExceptionQueue = 4096
	n := open(b, cfg)
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = udpFrame(uint16(i))
	}
	port, _ := soft.Port(1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			port.Send(frames)
			// Leave the NIC side and the host the CPU they need: the figure
			// is the channel's, not a measure of who wins the scheduler.
			time.Sleep(50 * time.Microsecond)
		}
	}()
	batch := make([]hal.Exception, 64)
	for i := range batch {
		batch[i].Buf = make([]byte, 2048)
	}
	b.ResetTimer()
	got := 0
	for got < b.N {
		k, err := n.ReadExceptions(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		got += k
	}
	b.StopTimer()
	cancel()
	b.ReportMetric(float64(got)/b.Elapsed().Seconds(), "exceptions/s")
	b.ReportMetric(float64(s.srv.Stats().ExceptionsDropped), "dropped")
}

// BenchmarkFirstPacket: what the channel adds to a first packet's round
// trip through the host: a frame enters the NIC, misses, reaches the host
// on the exception path, and the host injects it out of the uplink. The
// same round trip runs on softnic directly, interleaved; the figures are
// the differences of the percentiles (remote.first_packet_p50_us and
// p99_us).
func BenchmarkFirstPacket(b *testing.B) {
	direct, served, n := benchSides(b)
	f := udpFrame(7)
	batch := []hal.Exception{{Buf: make([]byte, 2048)}}
	rbuf, rsize := [][]byte{make([]byte, 2048)}, []int{0}
	roundTrip := func(soft *softnic.NIC, nic hal.NIC) time.Duration {
		in, _ := soft.Port(1)
		up, _ := soft.Port(3)
		ctx := context.Background()
		start := time.Now()
		in.Send([][]byte{f})
		if _, err := nic.ReadExceptions(ctx, batch); err != nil {
			b.Fatal(err)
		}
		if err := nic.Inject(ctx, 3, [][]byte{batch[0].Frame()}); err != nil {
			b.Fatal(err)
		}
		for {
			if k, _ := up.Recv(rbuf, rsize); k == 1 {
				break
			}
		}
		return time.Since(start)
	}
	var dl, rl []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N || i < 200; i++ {
		dl = append(dl, roundTrip(direct, direct))
		rl = append(rl, roundTrip(served, n))
	}
	b.StopTimer()
	pct := func(d []time.Duration, p float64) float64 {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return float64(d[int(p*float64(len(d)-1))]) / 1e3
	}
	b.ReportMetric(pct(rl, 0.5)-pct(dl, 0.5), "p50_us")
	b.ReportMetric(pct(rl, 0.99)-pct(dl, 0.99), "p99_us")
	b.ReportMetric(pct(rl, 0.5), "remote_p50_us")
	b.ReportMetric(pct(dl, 0.5), "direct_p50_us")
}
