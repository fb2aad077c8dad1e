//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/safchain/ethtool"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/conformance/internal/devices"
)

// requireRoot skips when the test cannot create namespaces; as root it
// runs.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace with veth pairs")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) from iproute2 (scripts/install-deps.sh installs it)")
	}
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// vethTopology creates a namespace holding veth pairs nv1/pv1, nv2/pv2 and
// nvu/pvu (the NIC's ports and their far sides), with IPv6 off so that the
// kernel sends nothing on its own, and GRO on the far sides so that frames
// an XDP program redirects into a veth reach its peer. The namespace is
// deleted when the test ends, also on failure.
func vethTopology(t *testing.T) (nsPath string, ports devices.Ports) {
	t.Helper()
	ns := fmt.Sprintf("ncf%d", os.Getpid())
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	for _, p := range []string{"1", "2", "u"} {
		sh(t, "ip", "-n", ns, "link", "add", "nv"+p, "type", "veth", "peer", "name", "pv"+p)
		sh(t, "ip", "-n", ns, "link", "set", "nv"+p, "up")
		sh(t, "ip", "-n", ns, "link", "set", "pv"+p, "up")
	}
	nsPath = "/var/run/netns/" + ns
	err := devices.InNetNS(nsPath, func() error {
		et, err := ethtool.NewEthtool()
		if err != nil {
			return err
		}
		defer et.Close()
		for _, p := range []string{"pv1", "pv2", "pvu"} {
			if err := et.Change(p, map[string]bool{"rx-gro": true}); err != nil {
				return fmt.Errorf("%s: gro on: %w", p, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("enabling GRO on the far sides: %v", err)
	}
	return nsPath, devices.Ports{NetNS: nsPath, VPorts: []string{"nv1", "nv2"}, Uplinks: []string{"nvu"}, MaxRules: 512, MaxBatch: 256}
}

// TestRunXDP runs the command against the XDP driver on veth pairs in a
// namespace, as an operator would: interfaces by name, the harness on their
// veth peers, reports in a directory. The XDP driver's own tests run the
// whole suite; this checks the command's device path (packet harness, leak
// check, reports) on the cases that touch every part of it.
func TestRunXDP(t *testing.T) {
	requireRoot(t)
	ns, _ := vethTopology(t)
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	args := []string{"-driver", "xdp", "-mode", "generic", "-netns", ns, "-ports", "nv1,nv2", "-uplink", "nvu",
		"-out", dir, "-run", "^(sanity|match|encap|exception|close|malformed|apply)$"}
	code := run(context.Background(), args, &stdout, &stderr)
	j, r, md := readReports(t, dir)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout.String(), md)
	}
	if r.Driver != "xdp" || r.Summary.Pass < 30 || j.Failures != 0 {
		t.Errorf("driver %q summary %+v", r.Driver, r.Summary)
	}
	if c, ok := r.Case("close"); !ok || c.Status != conformance.StatusPass || strings.Contains(strings.Join(c.Log, " "), "no leak checker") {
		t.Errorf("close: %+v; want a pass with the leak check run", c)
	}
	// -max-batch's default is a bound the suite exceeds.
	if c, _ := r.Case("apply/Apply/too-large"); c.Status != conformance.StatusPass {
		t.Errorf("apply/Apply/too-large: %+v; want a pass", c)
	}
	// The driver's one documented difference shows, and holds.
	if c, _ := r.Case("encap/geneve/options"); c.Status != conformance.StatusDocumented || c.Capability != "encap geneve" {
		t.Errorf("encap/geneve/options: %+v; want documented under encap geneve", c)
	}
	if c, _ := r.Case("documented"); c.Status != conformance.StatusPass {
		t.Errorf("the list check: %+v", c)
	}
	// The environment names the devices as ethtool -i does: veth has a
	// driver and a version, and no firmware.
	env := r.Environment
	if env == nil || len(env.Devices) != 3 || env.DevicesError != "" {
		t.Fatalf("environment %+v; want the three interfaces", env)
	}
	for i, want := range []struct{ name, role string }{{"nv1", "vport"}, {"nv2", "vport"}, {"nvu", "uplink"}} {
		d := env.Devices[i]
		if d.Interface != want.name || d.Role != want.role || d.Driver != "veth" || d.Version == "" {
			t.Errorf("device %d: %+v; want %s (%s), driver veth with its version", i, d, want.name, want.role)
		}
	}
	if !strings.Contains(md, "| nvu | uplink | veth | ") || j.Props["device nvu"] == "" {
		t.Errorf("the Markdown or JUnit report lacks the uplink's device")
	}
}
