package main

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	out := []byte(`goos: linux
BenchmarkHitEncap/uniform-2   	 1000000	        41.50 ns/op	        38.20 ns/pkt	         0 allocs/pkt	       0 B/op	       0 allocs/op
BenchmarkRuleOps   	       1	 95000000 ns/op	  12500000 ops/s
PASS
`)
	got := parse(out)
	if v := got["HitEncap/uniform"]["ns/pkt"]; v != "38.20" {
		t.Fatalf("ns/pkt = %q", v)
	}
	if v := got["HitEncap/uniform"]["allocs/pkt"]; v != "0" {
		t.Fatalf("allocs/pkt = %q", v)
	}
	if v := got["RuleOps"]["ops/s"]; v != "12500000" {
		t.Fatalf("ops/s = %q", v)
	}
	if _, ok := got["Missing"]; ok {
		t.Fatal("invented a benchmark")
	}
}

func TestOutcomes(t *testing.T) {
	out := []byte(`goos: linux
--- SKIP: BenchmarkPeerCPS
    peers_bench_linux_test.go:55: Open vSwitch absent: ovs-vswitchd is not installed
BenchmarkRuleOps   	       1	 95000000 ns/op	  12500000 ops/s
--- FAIL: BenchmarkPeerPPS-2
    peers_bench_linux_test.go:80: xdp: nothing arrived
        what the hosts counted:
--- FAIL: BenchmarkTCP/xdp
--- SKIP: BenchmarkQuiet
BenchmarkPeerCPS2-2   	       0	               NaN ns/op	       0 B/op	       0 allocs/op
    peers_bench_linux_test.go:245: Open vSwitch absent: it did not start
BenchmarkChatty
    peers_bench_linux_test.go:541: Open vSwitch absent: ovsdb-server is not installed
--- SKIP: BenchmarkChatty
BenchmarkSub
BenchmarkSub/xdp
BenchmarkSub/xdp-2         	       1	 110840340 ns/op	         0.6056 gbps
    bench_test.go:9: a log line of a benchmark that ran
BenchmarkPeerRuleInstall-2   	--- FAIL: BenchmarkPeerRuleInstall-2
    peers_bench_linux_test.go:590: ovs: installing 20000 rules: timeout
PASS
`)
	got := outcomes(out)
	for name, want := range map[string]string{
		"PeerCPS": "skipped: Open vSwitch absent: ovs-vswitchd is not installed",
		"PeerPPS": "failed: xdp: nothing arrived",
		"TCP/xdp": "failed:",
		"Quiet":   "skipped:",
		"RuleOps": "",
		"Missing": "",
	} {
		if got[name] != want {
			t.Errorf("outcome of %s = %q, want %q", name, got[name], want)
		}
	}
}

// FuzzOutcomes: any output reads without a panic, and every outcome names
// a benchmark and starts with its verdict.
func FuzzOutcomes(f *testing.F) {
	f.Add([]byte("BenchmarkA\n    a_test.go:1: why\n--- SKIP: BenchmarkA\n"))
	f.Add([]byte("BenchmarkB-2   \t--- FAIL: BenchmarkB-2\n    b_test.go:2: broke\n"))
	f.Add([]byte("BenchmarkC-2 \t 0\t NaN ns/op\t 0 B/op\n    c_test.go:3: gone\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		for name, why := range outcomes(out) {
			if name == "" {
				t.Errorf("an outcome without a benchmark: %q", why)
			}
			if !strings.HasPrefix(why, "skipped:") && !strings.HasPrefix(why, "failed:") && !strings.HasPrefix(why, "did not run:") {
				t.Errorf("%s: %q has no verdict", name, why)
			}
		}
	})
}
