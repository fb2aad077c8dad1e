//go:build linux

package main

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/internal/vmtest"
)

// TestRunTCFlowerVM boots the VM tier (a kernel with cls_flower and the tc
// actions) and runs TestRunTCFlowerInVM there: the command against the
// tc-flower driver, as an operator would run it. The driver's own tests run
// the whole suite in the VM; this checks the command's tc-flower path.
func TestRunTCFlowerVM(t *testing.T) {
	vmtest.SkipHost(t)
	bin := vmtest.BuildTest(t, t.TempDir(), "nicconform.test")
	res := vmtest.RunTest(t, vmtest.Config{
		TestBinary: bin,
		Args:       []string{"-test.run", "^TestRunTCFlowerInVM$", "-test.v", "-test.timeout", "7m"},
		// act_bpf (in TCModules) carries tunnelled misses to the host, as
		// the driver runs wherever the kernel has it.
		Modules:     slices.Concat(vmtest.TCModules, []string{"geneve"}),
		Executables: []string{"/usr/sbin/ip", "/usr/sbin/tc"},
		MemoryMB:    2048,
		Timeout:     9 * time.Minute,
	})
	if !res.Passed() || !res.PassedTest("TestRunTCFlowerInVM") {
		t.Fatalf("in-VM run failed (exit %d):\n%s", res.ExitCode, res.Output)
	}
	for _, l := range strings.Split(res.Output, "\n") {
		if strings.Contains(l, " cases: ") {
			t.Log(strings.TrimSpace(l))
		}
	}
}

func nsRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestRunTCFlowerInVM builds, inside the VM, the bed an operator would: two
// vports and an uplink as veth pairs, flow-based VXLAN and Geneve devices,
// and on the uplink the provider address, MAC and next-hop neighbours the
// suite's encapsulations name (the kernel's tunnel devices write the outer
// headers from them). Then it runs the command.
func TestRunTCFlowerInVM(t *testing.T) {
	if !vmtest.InVM() {
		t.Skip("runs inside the VM tier (TestRunTCFlowerVM boots it)")
	}
	const ns = "ncftc"
	nsRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	sh := func(script string) { nsRun(t, "ip", "netns", "exec", ns, "sh", "-c", script) }
	ip := func(args ...string) { nsRun(t, append([]string{"ip", "-n", ns}, args...)...) }
	sh("echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6")
	ip("link", "add", "p1", "type", "veth", "peer", "name", "vm1")
	ip("link", "add", "p2", "type", "veth", "peer", "name", "vm2")
	ip("link", "add", "up0", "type", "veth", "peer", "name", "up1")
	ip("link", "set", "up0", "address", "02:4e:50:00:00:a1")
	sh("echo 0 > /proc/sys/net/ipv6/conf/up0/disable_ipv6; echo 0 > /proc/sys/net/ipv6/conf/up0/router_solicitations; echo 0 > /proc/sys/net/ipv6/conf/up0/dad_transmits")
	ip("addr", "replace", "198.19.0.1/24", "dev", "up0")
	ip("addr", "replace", "2001:db8:ff::1/64", "dev", "up0", "nodad")
	ip("link", "add", "vx0", "type", "vxlan", "external", "dstport", "4789")
	ip("link", "add", "gnv0", "type", "geneve", "external")
	for _, l := range []string{"lo", "p1", "vm1", "p2", "vm2", "up0", "up1", "vx0", "gnv0"} {
		ip("link", "set", l, "up")
	}
	ip("neigh", "replace", "198.19.0.2", "lladdr", "02:4e:50:00:00:a2", "dev", "up0", "nud", "permanent")
	ip("-6", "neigh", "replace", "2001:db8:ff::2", "lladdr", "02:4e:50:00:00:a2", "dev", "up0", "nud", "permanent")
	time.Sleep(time.Second) // let the link-up chatter pass

	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-driver", "tcflower", "-netns", "/run/netns/" + ns,
		"-ports", "p1,p2", "-uplink", "up0", "-peers", "vm1,vm2,up1", "-tunnels", "vxlan=vx0,geneve=gnv0",
		"-out", dir, "-run", "^(sanity|action|encap|decap|close|apply|table)$"}, &stdout, &stderr)
	j, r, md := readReports(t, dir)
	t.Logf("%s\n%s", stdout.String(), md)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	if r.Driver != "tcflower" || r.Summary.Pass < 20 || j.Failures != 0 {
		t.Errorf("driver %q summary %+v", r.Driver, r.Summary)
	}
	// The command opens the NIC with its -max-rules and -max-batch
	// defaults: a table the suite fills, a batch bound it exceeds.
	for _, name := range []string{"table/full", "apply/Apply/too-large"} {
		if c, _ := r.Case(name); c.Status != conformance.StatusPass {
			t.Errorf("%s: %+v; want a pass", name, c)
		}
	}
	// The documented differences the run selects fail as documented, and
	// the list holds (no entry passes or matches no case).
	if c, _ := r.Case("documented"); c.Status != conformance.StatusPass {
		t.Errorf("the list check: %+v", c)
	}
	if r.Summary.Documented == 0 {
		t.Errorf("no documented difference showed: %+v", r.Summary)
	}
	// The environment: the VM's kernel, and the devices ethtool describes,
	// the tunnel devices with them.
	env := r.Environment
	if env == nil || !strings.HasPrefix(env.Kernel, "6.1") || env.DevicesError != "" {
		t.Fatalf("environment %+v; want the VM's 6.1 kernel and the devices", env)
	}
	roles := map[string]string{}
	for _, d := range env.Devices {
		roles[d.Interface] = d.Role + " " + d.Driver
	}
	for name, want := range map[string]string{"p1": "vport veth", "up0": "uplink veth", "vx0": "tunnel vxlan vxlan", "gnv0": "tunnel geneve geneve"} {
		if roles[name] != want {
			t.Errorf("device %s: %q, want %q (devices %+v)", name, roles[name], want, env.Devices)
		}
	}
}
