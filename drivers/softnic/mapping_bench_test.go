package softnic

import (
	"context"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// benchMappings is how many CA→PA mappings BenchmarkMappingMemory programs:
// 8M (1<<23), DESIGN.md's scale (DASH's per card). At some 61 bytes per
// mapping that holds about 0.5 GB and takes some 10-30 seconds to program
// on a 2-core machine; SOFTNIC_BENCH_MAPPINGS overrides the count for quicker
// local runs. The count measured is reported as the "mappings" metric.
var benchMappings = func() int {
	if v, err := strconv.Atoi(os.Getenv("SOFTNIC_BENCH_MAPPINGS")); err == nil && v > 0 {
		return v
	}
	return 1 << 23
}()

// mappingRule is mapping i as the vswitch programs a CA→PA mapping into a
// NIC (its per-destination rules, vswitch Config.Proactive): a masked
// rule matching the sending VM's in_port and MAC and the source and
// destination CA, whose actions set the destination VM's MAC, encapsulate
// toward the PA of the host it runs on and send out of the uplink. Every
// mapping is its own VM (one CA each, as most VMs have), so no two rules
// share an action list; the VMs run on 1,024 hosts.
func mappingRule(i int, acts []hal.Action) hal.Rule {
	var m hal.Match
	dst := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	m.InPort(pVM1).EthSrc(macVM1).IPSrc(netip.PrefixFrom(caVM1, 32)).IPDst(netip.PrefixFrom(dst, 32))
	acts = append(acts[:0],
		hal.SetEthDst(hal.MAC{0x02, 0x10, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}),
		hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 5000, Src: paLocal, Dst: remote(i % 1024), SrcMAC: macUp, DstMAC: macNext}),
		hal.Output(pUplink))
	return hal.Rule{ID: hal.RuleID(i + 1), Priority: 0x4000, Match: m, Actions: acts}
}

// BenchmarkMappingMemory is softnic.bytes_per_mapping: the heap a softnic
// holds per CA→PA mapping with benchMappings of them programmed
// (mappingRule), measured with runtime.MemStats (after a GC) from before
// New to after the last Apply, so the table sized for them counts, plus
// the huge-page mappings the table took outside the heap (hugemem.go),
// whole, which the hugepage_bytes/mapping metric shows apart. One
// iteration is the whole measurement; further ones reuse it.
func BenchmarkMappingMemory(b *testing.B) {
	n := benchMappings
	old := debug.SetGCPercent(400)
	defer debug.SetGCPercent(old)
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	huge0 := hugeInUse.Load()
	start := time.Now()
	cfg := testConfig()
	cfg.MaxRules = n
	cfg.RingSize = 2 * MaxBurst
	nic, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer nic.Close()
	const chunk = 1 << 14
	ops := make([]hal.Op, chunk)
	res := make([]hal.OpResult, chunk)
	acts := make([][]hal.Action, chunk)
	ctx := context.Background()
	for base := 0; base < n; base += chunk {
		k := min(chunk, n-base)
		for i := range k {
			r := mappingRule(base+i, acts[i])
			acts[i] = r.Actions
			ops[i] = hal.AddOp(r)
		}
		if err := nic.Apply(ctx, ops[:k], res[:k]); err != nil {
			b.Fatal(err)
		}
		for i := range k {
			if res[i].Err != nil {
				b.Fatalf("mapping %d: %v", base+i, res[i].Err)
			}
		}
	}
	setup := time.Since(start)
	clear(ops)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	huge := hugeInUse.Load() - huge0
	for i := 0; i < b.N; i++ {
	}
	got := 0
	if err := nic.Dump(ctx, func(*hal.RuleInfo) error { got++; return nil }); err != nil || got != n {
		b.Fatalf("%d rules on the NIC (%v), want %d", got, err, n)
	}
	b.ReportMetric(float64(int64(m1.HeapAlloc-m0.HeapAlloc)+huge)/float64(n), "bytes/mapping")
	b.ReportMetric(float64(huge)/float64(n), "hugepage_bytes/mapping")
	b.ReportMetric(float64(n), "mappings")
	b.ReportMetric(setup.Seconds(), "setup_s")
	runtime.KeepAlive(nic)
}
