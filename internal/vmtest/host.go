package vmtest

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// console is the -vm.console flag of every test binary that boots the VM
// tier through RunTest.
var console = flag.Bool("vm.console", false, "stream the VM's serial console to stderr")

// count is the -vm.count flag of the same binaries: the tests inside the
// VM run that many times in one boot (go test's own -count boots the VM
// that many times).
var count = flag.Int("vm.count", 0, "run the tests inside the VM this many times in one boot (their -test.count; 0: once)")

// withCount adds -test.count=n to args for n > 0, leaving args as they are.
func withCount(args []string, n int) []string {
	if n <= 0 {
		return args
	}
	return append(slices.Clip(args), "-test.count="+strconv.Itoa(n))
}

// TCModules are the kernel modules the tc-flower driver programs through
// (the ingress qdisc, flower, and the actions it writes, act_bpf carrying
// tunnelled misses to the host), with veth and vxlan for the beds built
// around it. A test appends what else it needs (bridge, geneve, …).
var TCModules = []string{"veth", "vxlan", "sch_ingress", "cls_flower", "act_gact", "act_mirred",
	"act_pedit", "act_csum", "act_tunnel_key", "act_vlan", "act_nat", "act_bpf"}

// SkipHost skips t unless it can boot the VM tier from here: not inside a
// VM already, not -short (a boot and an emulated run take minutes), as root
// (the kernel image under /boot is readable by root only), and with
// everything Available asks for.
func SkipHost(t testing.TB) {
	t.Helper()
	switch {
	case InVM():
		t.Skip("already inside the VM")
	case testing.Short():
		t.Skip("boots a VM: not in -short mode")
	case os.Geteuid() != 0:
		t.Skip("the VM tier needs root: the kernel image under /boot is readable by root only")
	}
	if err := Available(); err != nil {
		t.Skipf("VM tier unavailable: %v (scripts/install-deps.sh installs it)", err)
	}
}

// BuildTest builds the tests of the package in the working directory for
// the VM (BuildTestBinary) into dir/name, within 10 minutes, and returns the
// binary's path; a failed build fails t.
func BuildTest(t testing.TB, dir, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, name)
	if err := BuildTestBinary(ctx, ".", bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// RunTest boots the VM with cfg, bounded by cfg.Timeout (0: Run's default)
// from now on, so not counting a build before it; with -vm.console and no
// cfg.Console, the serial console streams to stderr. A run that did not reach
// its end fails t with the output so far; otherwise the kernel booted and
// the times are logged and the result returned, whatever the binary's exit
// code.
func RunTest(t testing.TB, cfg Config) Result {
	t.Helper()
	ctx := context.Background()
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	if *console && cfg.Console == nil {
		cfg.Console = os.Stderr
	}
	cfg.Args = withCount(cfg.Args, *count)
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("VM run: %v\n%s", err, res.Output)
	}
	t.Logf("VM: kernel %s, boot %v, total %v", res.Kernel, res.Boot.Round(time.Millisecond), res.Total.Round(time.Millisecond))
	return res
}

// PassedTest reports whether the output has the verbose result line of
// the test name (a top-level test, or a subtest as TestX/sub) passing,
// wherever it stands on its console line (the kernel may have written
// there first).
func (r *Result) PassedTest(name string) bool {
	return strings.Contains(r.Output, "--- PASS: "+name+" (")
}
