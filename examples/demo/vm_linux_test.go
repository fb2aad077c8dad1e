//go:build linux

package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nicpath/nicpath/internal/vmtest"
)

// The namespace story on tc-flower needs cls_flower and the tc actions,
// which this machine's kernel may lack: TestNamespaceStoryVM boots the VM
// tier (Debian's 6.1 kernel, internal/vmtest) and tells the story there,
// every host's vswitchd on the tc-flower driver, then one tc-flower host
// cabled to a softnic host.

var (
	vmRun = flag.String("vm.run", "^TestNamespaceStoryInVM$", "the tests TestNamespaceStoryVM runs inside the VM (a -test.run pattern, e.g. ^TestNamespaceStoryInVM$/^tcflower$)")
)

// vmStoryVariants are the driver pairings told inside the VM. Every VM
// keeps TSO there (no XDP program on any veth), so each of the eight VMs
// of the bulk exchanges shows super-frames.
var vmStoryVariants = []storyVariant{
	{"tcflower", "tcflower", "driver tcflower", 8},
	{"softnic+tcflower", "host-a=softnic,host-b=tcflower", "driver host-a softnic, host-b tcflower", 8},
}

// vmBinDir is where the VM finds vswitchd and vswitchctl (outside /tmp,
// which the VM's init mounts over).
const vmBinDir = "/opt/nicpath/bin"

// vmTimeScale stretches the story's waits inside the VM, whose CPUs are
// emulated (TCG) on a shared machine.
const vmTimeScale = "4"

// TestNamespaceStoryVM boots the VM tier and runs TestNamespaceStoryInVM
// there: the demo's namespace story with vswitchd on tc-flower.
func TestNamespaceStoryVM(t *testing.T) {
	vmtest.SkipHost(t)
	dir := t.TempDir()
	bin := vmtest.BuildTest(t, dir, "demo.test")
	// vswitchd and vswitchctl as the story builds them, static: the VM
	// has no libc.
	t.Setenv("CGO_ENABLED", "0")
	if err := buildBinaries(dir, ""); err != nil {
		t.Fatal(err)
	}
	// Emulated (TCG) and telling the story twice: several minutes.
	cfg := vmtest.Config{
		TestBinary:  bin,
		Args:        []string{"-test.run", *vmRun, "-test.v", "-test.timeout", "18m"},
		Env:         []string{envVMBin + "=" + vmBinDir, "NICPATH_DEMO_TIMESCALE=" + vmTimeScale},
		Modules:     vmtest.TCModules,
		Executables: []string{"/usr/sbin/ip", "/usr/sbin/tc"},
		Files: map[string]string{
			vmBinDir + "/vswitchd":   filepath.Join(dir, "vswitchd"),
			vmBinDir + "/vswitchctl": filepath.Join(dir, "vswitchctl"),
		},
		MemoryMB: 2048,
		Timeout:  20 * time.Minute,
	}
	res := vmtest.RunTest(t, cfg)
	t.Logf("in-VM output:\n%s", res.Output)
	if !res.Passed() {
		t.Fatalf("the story failed in the VM (exit %d)", res.ExitCode)
	}
	if *vmRun != "^TestNamespaceStoryInVM$" {
		return // a part was asked for
	}
	for _, v := range vmStoryVariants {
		if !res.PassedTest("TestNamespaceStoryInVM/" + v.name) {
			t.Errorf("the story on %s did not pass in the VM (skipped, or did not run)", v.driver)
		}
	}
}

// envVMBin names, inside the VM, the directory holding vswitchd and
// vswitchctl built before the boot.
const envVMBin = "NICPATH_DEMO_VM_BIN"

// TestNamespaceStoryInVM tells the namespace story inside the VM tier on
// every variant of vmStoryVariants, with the checks TestNamespaceStory
// makes on this machine's kernel: every check of the story held (ping, UDP
// and TCP both ways, bulk exchanges intact, isolation, explain, capture),
// flows on the NIC, and host-b, on tc-flower, accepting a new inbound TCP
// connection from host-a through tenant red's stateful ACL and carrying it
// on its NIC both ways.
func TestNamespaceStoryInVM(t *testing.T) {
	if !vmtest.InVM() {
		t.Skip("runs inside the VM tier (TestNamespaceStoryVM boots it)")
	}
	dir := os.Getenv(envVMBin)
	if dir == "" {
		t.Fatalf("%s is not set: TestNamespaceStoryVM names the binaries it copied", envVMBin)
	}
	prebuilt[""] = dir
	t.Cleanup(func() { delete(prebuilt, "") })
	for _, v := range vmStoryVariants {
		t.Run(v.name, func(t *testing.T) { tellStory(t, v) })
	}
}
