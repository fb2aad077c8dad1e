//go:build linux

package tcflower

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/internal/vmtest"
)

// vmModules are the kernel modules the in-VM tests need; their dependencies
// (udp_tunnel, ip6_udp_tunnel, …) come from modules.dep.
var vmModules = []string{
	"veth", "vxlan", "geneve", "sch_ingress", "cls_flower", "act_gact", "act_mirred",
	"act_pedit", "act_csum", "act_tunnel_key", "act_vlan", "act_nat", "act_bpf", "ip_gre",
}

// vmExecutables are copied into the VM with their libraries: ip builds the
// topologies, tc is the `tc -b` baseline and lists what is left behind,
// nstat reads the namespaces' checksum error counters.
var vmExecutables = []string{"/usr/sbin/ip", "/usr/sbin/tc", "/usr/bin/nstat"}

var (
	vmConsole = flag.Bool("vm.console", false, "stream the VM's serial console to stderr")
	vmRun     = flag.String("vm.run", "^(TestKernel|TestConformance)", "the tests TestVM runs inside the VM (a -test.run pattern)")
)

// runInVM builds this package's tests as a static binary and runs it in the
// VM with args.
func runInVM(t testing.TB, args []string, timeout time.Duration) vmtest.Result {
	t.Helper()
	if vmtest.InVM() {
		t.Skip("already inside the VM")
	}
	if os.Geteuid() != 0 {
		t.Skip("the VM tier needs root: the kernel image under /boot is readable by root only")
	}
	if err := vmtest.Available(); err != nil {
		t.Skipf("VM tier unavailable: %v (scripts/install-deps.sh installs it)", err)
	}
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer bcancel()
	bin := filepath.Join(t.TempDir(), "tcflower.test")
	if err := vmtest.BuildTestBinary(bctx, ".", bin); err != nil {
		t.Fatal(err)
	}
	// The VM's own bound starts after the build.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cfg := vmtest.Config{
		TestBinary:  bin,
		Args:        args,
		Modules:     vmModules,
		Executables: vmExecutables,
		MemoryMB:    2048,
		Timeout:     timeout,
	}
	if *vmConsole {
		cfg.Console = os.Stderr
	}
	res, err := vmtest.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("VM run: %v\n%s", err, res.Output)
	}
	t.Logf("VM: kernel %s, boot %v, total %v", res.Kernel, res.Boot.Round(time.Millisecond), res.Total.Round(time.Millisecond))
	return res
}

// TestVM runs the kernel tests (TestKernel*) and the conformance suite
// inside a VM booted on Debian's 6.1 kernel, which has cls_flower and the tc
// actions this machine's kernel lacks.
func TestVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM: not in -short mode")
	}
	// About 3 minutes on an idle two-core machine; the bounds leave room for
	// a loaded one (emulation slows down with the host's load).
	res := runInVM(t, []string{"-test.run", *vmRun, "-test.v", "-test.timeout", "13m"}, 15*time.Minute)
	t.Logf("in-VM output:\n%s", res.Output)
	if !res.Passed() {
		t.Fatalf("in-VM tests failed (exit %d)", res.ExitCode)
	}
	// Inside the VM nothing may skip: the kernel has everything.
	for _, l := range strings.Split(res.Output, "\n") {
		if strings.Contains(l, "--- SKIP: TestKernel") {
			t.Errorf("skipped inside the VM: %s", l)
		}
	}
	if !strings.Contains(res.Output, "--- PASS: TestKernel") {
		t.Errorf("no kernel test ran in the VM")
	}
}

var (
	vmBenchOnce sync.Once
	vmBenchRes  vmtest.Result
	vmBenchErr  string
)
