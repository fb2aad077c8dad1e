//go:build linux

package tcflower

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/vmtest"
)

// Benchmark sizes, overridable for longer runs: rules for the rate and dump
// figures, and the largest table the activation figure is measured on.
var (
	benchRules = envInt("NICPATH_TCFLOWER_BENCH_RULES", 10000)
	benchMax   = envInt("NICPATH_TCFLOWER_BENCH_MAX", 100000)
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchRule is rule i of a benchmark table: in_port p1, an IPv4 destination
// of its own, redirect to p2.
func benchRule(i int, scope hal.Scope, gen hal.Generation) hal.Rule {
	a := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)})
	var m hal.Match
	m.InPort(1).IPDst(netip.PrefixFrom(a, 32))
	return hal.Rule{ID: hal.RuleID(i + 1), Priority: 100, Match: m, Actions: []hal.Action{hal.Output(2)},
		Cookie: hal.Cookie(i), Scope: scope, Generation: gen}
}

func benchOps(n int, scope hal.Scope, gen hal.Generation) []hal.Op {
	ops := make([]hal.Op, n)
	for i := range ops {
		ops[i] = hal.AddOp(benchRule(i, scope, gen))
	}
	return ops
}

// BenchmarkKernelRuleRate installs the same rules with the driver (one
// batched Apply) and with iproute2's `tc -b` (a batch file), on the same
// kernel and links, and reports the driver's rate over tc's.
func BenchmarkKernelRuleRate(b *testing.B) {
	requireKernel(b)
	tp := newTopology(b)
	ctx := context.Background()
	n := benchRules
	var driverTime, tcTime time.Duration
	for it := 0; it < b.N; it++ {
		nic, err := Open(ctx, tp.config(PlaceAny))
		if err != nil {
			b.Fatal(err)
		}
		ops := benchOps(n, 0, 0)
		res := make([]hal.OpResult, n)
		start := time.Now()
		if err := nic.Apply(ctx, ops, res); err != nil {
			b.Fatal(err)
		}
		driverTime += time.Since(start)
		block := nic.Block()
		if err := nic.Close(); err != nil {
			b.Fatal(err)
		}

		// The same rules through tc: same block layout, flags, keys,
		// action and cookie.
		for _, dev := range []string{"p1", "p2", "up0"} {
			if out, err := tp.ns.tc("qdisc", "add", "dev", dev, "ingress_block", strconv.FormatUint(uint64(block), 10), "clsact"); err != nil {
				b.Fatalf("tc qdisc add: %v: %s", err, out)
			}
		}
		file := filepath.Join(b.TempDir(), "rules.tc")
		f, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		w := bufio.NewWriter(f)
		for i := 0; i < n; i++ {
			r := benchRule(i, 0, 0)
			fmt.Fprintf(w, "filter add block %d protocol ip prio %d handle %d flower skip_hw indev p1 dst_ip %s action mirred egress redirect dev p2 cookie %x\n",
				block, tcPrio(r.Priority), i+1, hal.AddrFrom16(r.Match.Key.IPDst), ruleCookie(r.ID, r.Cookie))
		}
		w.Flush()
		f.Close()
		start = time.Now()
		out, err := exec.Command("tc", "-n", tp.ns.Name, "-b", file).CombinedOutput()
		tcTime += time.Since(start)
		if err != nil {
			b.Fatalf("tc -b: %v: %.500s", err, out)
		}
		cnt, _ := tp.ns.tc("filter", "show", "block", strconv.FormatUint(uint64(block), 10))
		if got := strings.Count(cnt, "dst_ip"); got != n {
			b.Fatalf("tc -b installed %d filters, want %d", got, n)
		}
		for _, dev := range []string{"p1", "p2", "up0"} {
			_, _ = tp.ns.tc("qdisc", "del", "dev", dev, "clsact")
		}
	}
	driverRate := float64(n*b.N) / driverTime.Seconds()
	tcRate := float64(n*b.N) / tcTime.Seconds()
	b.ReportMetric(driverRate, "rules/s")
	b.ReportMetric(tcRate, "tc_rules/s")
	b.ReportMetric(driverRate/tcRate, "vs_tc_batch")
	b.ReportMetric(float64(n), "rules")
}

// BenchmarkKernelDump measures Dump of a table of rules with their
// statistics (every rule's filter is read back with its counters).
func BenchmarkKernelDump(b *testing.B) {
	requireKernel(b)
	tp := newTopology(b)
	ctx := context.Background()
	nic := tp.open(b, PlaceAny)
	n := benchRules
	if err := nic.Apply(ctx, benchOps(n, 0, 0), make([]hal.OpResult, n)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for it := 0; it < b.N; it++ {
		got := 0
		if err := nic.Dump(ctx, func(*hal.RuleInfo) error { got++; return nil }); err != nil {
			b.Fatal(err)
		}
		if got != n {
			b.Fatalf("dumped %d rules, want %d", got, n)
		}
	}
	b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "rules/s")
	b.ReportMetric(float64(n), "rules")
}

// BenchmarkKernelActivate measures Activate (one filter replace) with an
// inactive generation of growing size behind it: the cost must stay flat.
func BenchmarkKernelActivate(b *testing.B) {
	requireKernel(b)
	for _, n := range activateSizes() {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			tp := newTopology(b)
			ctx := context.Background()
			nic := tp.open(b, PlaceAny)
			if err := nic.Apply(ctx, benchOps(n, 1, 1), make([]hal.OpResult, n)); err != nil {
				b.Fatal(err)
			}
			// Each round flips the scope to the full generation and back:
			// both directions are one replace. The median is the figure:
			// under emulation single flips are disturbed by the host.
			const flips = 100
			times := make([]time.Duration, 0, flips*b.N)
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				for j := 0; j < flips; j++ {
					start := time.Now()
					if err := nic.Activate(ctx, 1, hal.Generation(1-j%2)); err != nil {
						b.Fatal(err)
					}
					times = append(times, time.Since(start))
				}
			}
			b.StopTimer()
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			var sum time.Duration
			for _, d := range times {
				sum += d
			}
			us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
			b.ReportMetric(us(times[len(times)/2]), "us/activate")
			b.ReportMetric(us(sum/time.Duration(len(times))), "us/activate_mean")
			b.ReportMetric(us(times[len(times)*9/10]), "us/activate_p90")
			b.ReportMetric(us(times[len(times)-1]), "us/activate_max")
			b.ReportMetric(float64(n), "rules")
		})
	}
}

func activateSizes() []int {
	sizes := []int{1000}
	for s := 10000; s < benchMax; s *= 10 {
		sizes = append(sizes, s)
	}
	return append(sizes, benchMax)
}

// vmBench runs the kernel benchmarks in one VM boot and parses their
// metrics, once per process, for the host-side benchmarks below.
func vmBench(b *testing.B) map[string]map[string]float64 {
	vmtest.SkipHost(b)
	vmBenchOnce.Do(func() {
		vmBenchErr = "the VM run did not finish"
		defer func() {
			if vmBenchErr == "" && vmBenchRes.ExitCode != 0 {
				vmBenchErr = fmt.Sprintf("in-VM benchmarks failed (exit %d):\n%s", vmBenchRes.ExitCode, vmBenchRes.Output)
			}
		}()
		vmBenchRes = runInVM(b, []string{"-test.run", "^$", "-test.bench", "^BenchmarkKernel", "-test.benchtime", "1x", "-test.timeout", "13m"}, 15*time.Minute)
		vmBenchErr = ""
	})
	if vmBenchErr != "" {
		b.Fatal(vmBenchErr)
	}
	return parseBench(vmBenchRes.Output)
}

var benchLineRe = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+\d+\s+(.*)$`)

func parseBench(out string) map[string]map[string]float64 {
	res := map[string]map[string]float64{}
	for _, l := range strings.Split(out, "\n") {
		m := benchLineRe.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		f := strings.Fields(m[3])
		vals := map[string]float64{}
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				vals[f[i+1]] = v
			}
		}
		res[m[1]] = vals
	}
	return res
}

// BenchmarkVMRuleRate is tcflower.rule_rate_vs_tc_batch: the driver's rule
// installation rate over `tc -b`'s on the same rules, in the same VM run.
func BenchmarkVMRuleRate(b *testing.B) {
	m := vmBench(b)
	r, ok := m["KernelRuleRate"]
	if !ok {
		b.Fatalf("no KernelRuleRate result in the VM output:\n%s", vmBenchRes.Output)
	}
	for _, u := range []string{"vs_tc_batch", "rules/s", "tc_rules/s", "rules"} {
		b.ReportMetric(r[u], u)
	}
	if d, ok := m["KernelDump"]; ok {
		b.ReportMetric(d["rules/s"], "dump_rules/s")
	}
}

// BenchmarkVMActivate is shadow.activate_100k_us.tcflower: the worst
// activation (us/activate_worst; the median is us/activate) at the largest
// table the VM run holds, NICPATH_TCFLOWER_BENCH_MAX rules (100k: the VM
// tier boots with 2 GB under emulation, and the run must stay within make
// bench's time); the smaller sizes show that it stays flat.
func BenchmarkVMActivate(b *testing.B) {
	m := vmBench(b)
	sizes := activateSizes()
	for _, n := range sizes {
		r, ok := m["KernelActivate/"+strconv.Itoa(n)]
		if !ok {
			b.Fatalf("no KernelActivate/%d result in the VM output:\n%s", n, vmBenchRes.Output)
		}
		b.ReportMetric(r["us/activate"], "us/activate_"+strconv.Itoa(n))
		if n == sizes[len(sizes)-1] {
			b.ReportMetric(r["us/activate"], "us/activate")
			b.ReportMetric(r["us/activate_mean"], "us/activate_mean")
			b.ReportMetric(r["us/activate_p90"], "us/activate_p90")
			b.ReportMetric(r["us/activate_max"], "us/activate_worst")
			b.ReportMetric(float64(n), "rules")
		}
	}
}
