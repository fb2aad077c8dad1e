//go:build linux

package conformance_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/safchain/ethtool"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/conformance/internal/targets"
	"github.com/nicpath/nicpath/drivers/xdp"
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

func run(t *testing.T, args ...string) {
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
func vethTopology(t *testing.T) (nsPath string, ports targets.Ports) {
	t.Helper()
	ns := fmt.Sprintf("ncf%d", os.Getpid())
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	for _, p := range []string{"1", "2", "u"} {
		run(t, "ip", "-n", ns, "link", "add", "nv"+p, "type", "veth", "peer", "name", "pv"+p)
		run(t, "ip", "-n", ns, "link", "set", "nv"+p, "up")
		run(t, "ip", "-n", ns, "link", "set", "pv"+p, "up")
	}
	nsPath = "/var/run/netns/" + ns
	err := targets.InNetNS(nsPath, func() error {
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
	return nsPath, targets.Ports{NetNS: nsPath, VPorts: []string{"nv1", "nv2"}, Uplinks: []string{"nvu"}, MaxRules: 512}
}

// TestXDPConformance runs the suite against the XDP driver on veth pairs in
// a namespace, in each attach mode veth offers.
func TestXDPConformance(t *testing.T) {
	requireRoot(t)
	for _, mode := range []xdp.Mode{xdp.ModeDriver, xdp.ModeGeneric} {
		t.Run(mode.String(), func(t *testing.T) {
			_, ports := vethTopology(t)
			tg, err := targets.XDP(ports, mode)
			if err != nil {
				t.Fatal(err)
			}
			tg.Documented = targets.XDPDocumented
			conformance.Run(t, tg)
		})
	}
}
