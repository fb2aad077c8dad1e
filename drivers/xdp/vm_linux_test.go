//go:build linux

package xdp

import (
	"context"
	"flag"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/internal/vmtest"
)

var vmRun = flag.String("vm.run", "^(TestCapabilities|TestFlows4|TestTable4Overflow|TestTable4NeverMisses|TestTable4NeverTorn|TestVerifierStats)$",
	"the tests TestVM runs inside the VM (a -test.run pattern)")

// TestVM runs tests of this package inside a VM booted on Debian's 6.1
// kernel (internal/vmtest): the program must pass that kernel's verifier
// too, and its mmapped table4 and the rule table must work there. By
// default it runs the tests that load the program and use table4; -vm.run
// picks others. Each test the pattern names must pass in the VM, not skip.
func TestVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM: not in -short mode")
	}
	if vmtest.InVM() {
		t.Skip("already inside the VM")
	}
	requireRoot(t)
	if err := vmtest.Available(); err != nil {
		t.Skipf("VM tier unavailable: %v (scripts/install-deps.sh installs it)", err)
	}
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer bcancel()
	bin := filepath.Join(t.TempDir(), "xdp.test")
	if err := vmtest.BuildTestBinary(bctx, ".", bin); err != nil {
		t.Fatal(err)
	}
	const timeout = 15 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cfg := vmtest.Config{TestBinary: bin, Args: []string{"-test.run", *vmRun, "-test.v", "-test.timeout", "13m"},
		MemoryMB: 2048, Timeout: timeout}
	res, err := vmtest.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("VM run: %v\n%s", err, res.Output)
	}
	t.Logf("VM: kernel %s, boot %v, total %v\n%s", res.Kernel, res.Boot.Round(time.Millisecond), res.Total.Round(time.Millisecond), res.Output)
	if !res.Passed() {
		t.Fatalf("in-VM tests failed (exit %d)", res.ExitCode)
	}
	if strings.Contains(res.Output, "--- SKIP") {
		t.Fatal("a test skipped in the VM")
	}
	if !strings.Contains(res.Output, "--- PASS") {
		t.Fatal("no test passed in the VM")
	}
}
