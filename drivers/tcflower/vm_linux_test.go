//go:build linux

package tcflower

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/internal/vmtest"
)

// vmModules are the kernel modules the in-VM tests need; their dependencies
// (udp_tunnel, ip6_udp_tunnel, …) come from modules.dep.
var vmModules = slices.Concat(vmtest.TCModules, []string{"geneve", "ip_gre"})

// vmExecutables are copied into the VM with their libraries: ip builds the
// topologies, tc is the `tc -b` baseline and lists what is left behind,
// nstat reads the namespaces' checksum error counters.
var vmExecutables = []string{"/usr/sbin/ip", "/usr/sbin/tc", "/usr/bin/nstat"}

var (
	vmRun = flag.String("vm.run", "^(TestKernel|TestConformance)", "the tests TestVM runs inside the VM (a -test.run pattern)")
)

// runInVM builds this package's tests as a static binary and runs it in the
// VM with args.
func runInVM(t testing.TB, args []string, timeout time.Duration) vmtest.Result {
	t.Helper()
	return runBinInVM(t, buildVMBinary(t), args, timeout)
}

// buildVMBinary builds this package's tests as a static binary for the VM,
// skipping t where the VM tier cannot run.
func buildVMBinary(t testing.TB) string {
	t.Helper()
	vmtest.SkipHost(t)
	return vmtest.BuildTest(t, t.TempDir(), "tcflower.test")
}

// runBinInVM runs bin (buildVMBinary's) in the VM with args.
func runBinInVM(t testing.TB, bin string, args []string, timeout time.Duration) vmtest.Result {
	t.Helper()
	// The VM's own bound starts after the build.
	cfg := vmtest.Config{
		TestBinary:  bin,
		Args:        args,
		Modules:     vmModules,
		Executables: vmExecutables,
		MemoryMB:    2048,
		Timeout:     timeout,
	}
	return vmtest.RunTest(t, cfg)
}

// TestVM runs the kernel tests (TestKernel*) and the conformance suite
// inside a VM booted on Debian's 6.1 kernel, which has cls_flower and the tc
// actions this machine's kernel lacks. -vm.run picks other tests (e.g.
// -vm.run '^TestConformance$'): every top-level test the pattern selects
// must then report in the VM, and the kernel tests and the suite among them
// must pass, not skip.
func TestVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM: not in -short mode")
	}
	bin := buildVMBinary(t)
	selected, err := listTests(bin, *vmRun)
	if err != nil {
		t.Fatal(err)
	}
	if len(selected) == 0 {
		t.Fatalf("-vm.run %q selects no test of this package", *vmRun)
	}
	// About 3 minutes on an idle two-core machine; the bounds leave room for
	// a loaded one (emulation slows down with the host's load).
	res := runBinInVM(t, bin, []string{"-test.run", *vmRun, "-test.v", "-test.timeout", "13m"}, 15*time.Minute)
	t.Logf("in-VM output:\n%s", res.Output)
	if !res.Passed() {
		t.Fatalf("in-VM tests failed (exit %d)", res.ExitCode)
	}
	for _, name := range selected {
		if problem := vmVerdict(res.Output, name); problem != "" {
			t.Error(problem)
		}
	}
}

// vmVerdict says what is wrong with the top-level test name in the VM's
// verbose output, or "" when nothing is: a kernel test or the conformance
// suite must pass (inside the VM nothing may skip: the kernel has
// everything), any other test must pass or skip, and every one must report.
// TestVM itself skips inside the VM.
func vmVerdict(output, name string) string {
	if name == "TestVM" {
		return ""
	}
	var passed, skipped bool
	for _, l := range strings.Split(output, "\n") {
		l = strings.TrimRight(l, "\r")
		passed = passed || strings.HasPrefix(l, "--- PASS: "+name+" (")
		skipped = skipped || strings.HasPrefix(l, "--- SKIP: "+name+" (")
	}
	mustPass := strings.HasPrefix(name, "TestKernel") || name == "TestConformance"
	switch {
	case passed:
		return ""
	case skipped && mustPass:
		return name + " skipped inside the VM"
	case skipped:
		return ""
	}
	return name + " did not run in the VM (no result line)"
}

// listTests lists the top-level tests of the test binary bin that the
// -test.run pattern selects, as the binary itself lists them (-test.list
// with the pattern's first element).
func listTests(bin, pattern string) ([]string, error) {
	top := topLevelPattern(pattern)
	out, err := exec.Command(bin, "-test.list", top).Output()
	if err != nil {
		return nil, fmt.Errorf("%s -test.list %q: %w", bin, top, err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "Test") {
			names = append(names, l)
		}
	}
	return names, nil
}

// topLevelPattern is the first element of a -test.run pattern: up to the
// first slash outside brackets and parentheses, as go test splits it.
func topLevelPattern(p string) string {
	depth := 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			i++
		case '[', '(':
			depth++
		case ']', ')':
			if depth > 0 {
				depth--
			}
		case '/':
			if depth == 0 {
				return p[:i]
			}
		}
	}
	return p
}

var (
	vmBenchOnce sync.Once
	vmBenchRes  vmtest.Result
	vmBenchErr  string
)

// TestVMSelection: a filtered VM run is judged on the tests its pattern
// selects (a run of only the conformance suite once failed for want of a
// kernel test), and a selected test that skipped, or never reported, fails
// it.
func TestVMSelection(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"^TestConformance$", "^TestConformance$"},
		{"^TestConformance$/^match$", "^TestConformance$"},
		{"^(TestKernel|TestConformance)", "^(TestKernel|TestConformance)"},
		{"^Test(A/B|C)$/x", "^Test(A/B|C)$"},
		{`^Test[/]x/y`, `^Test[/]x`},
		{`^Test\/x/y`, `^Test\/x`},
	} {
		if got := topLevelPattern(c.in); got != c.want {
			t.Errorf("topLevelPattern(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// This very binary lists its tests as the VM's would.
	got, err := listTests(os.Args[0], "^TestConformance$/^match$")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "TestConformance" {
		t.Errorf("listed %q, want TestConformance", got)
	}
	if got, _ := listTests(os.Args[0], "^TestKernelTunnelMiss"); len(got) != 2 {
		t.Errorf("listed %q, want the two TestKernelTunnelMiss tests", got)
	}
	const conformanceOnly = "=== RUN   TestConformance\n--- PASS: TestConformance (209.62s)\n    --- PASS: TestConformance/action (61.98s)\nPASS\n"
	for _, c := range []struct {
		out, name, want string
	}{
		{conformanceOnly, "TestConformance", ""},
		{conformanceOnly, "TestKernelDecTTL", "TestKernelDecTTL did not run in the VM (no result line)"},
		{"--- SKIP: TestKernelDecTTL (0.00s)\n", "TestKernelDecTTL", "TestKernelDecTTL skipped inside the VM"},
		{"--- SKIP: TestConformance (0.00s)\r\n", "TestConformance", "TestConformance skipped inside the VM"},
		{"--- SKIP: TestParseTunnelPort (0.00s)\n", "TestParseTunnelPort", ""},
		{"    --- PASS: TestConformance/x (0.00s)\n", "TestConformance", "TestConformance did not run in the VM (no result line)"},
		{"", "TestVM", ""},
	} {
		if got := vmVerdict(c.out, c.name); got != c.want {
			t.Errorf("vmVerdict(%q, %s) = %q, want %q", c.out, c.name, got, c.want)
		}
	}
}
