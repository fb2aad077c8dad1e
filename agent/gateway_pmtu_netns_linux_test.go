//go:build linux

package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGatewayICMPErrors: ICMP errors about translated connections reach
// the VMs. A router stands between the gateway and the external host, the
// link beyond it has MTU 1280 while the VMs' is 1450 and the host's 1500;
// the VMs keep the kernel's default offloads (TSO/GSO, partial checksums).
//   - A megabyte of TCP from each tenant's VM (the same address in both)
//     to the host arrives whole: the router's "fragmentation needed"
//     (ICMPv6 "packet too big") comes back through the gateway, translated
//     to the VM's connection, and the VM's kernel lowers its path MTU to
//     1280 (checked in its route cache). Without it the transfer stalls:
//     the VMs' packets are too big and carry DF.
//   - UDP to a port the host does not serve: the host's "port
//     unreachable" reaches the VM's socket as ECONNREFUSED.
func TestGatewayICMPErrors(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: network namespaces need root")
	}
	for _, drv := range []string{"softnic", "xdp"} {
		for _, fam := range []string{"ipv4", "ipv6"} {
			t.Run(fam+" gateway on "+drv, func(t *testing.T) { testGatewayICMPErrors(t, drv, fam == "ipv6") })
		}
	}
}

func testGatewayICMPErrors(t *testing.T, gwDriver string, v6 bool) {
	tag := "4"
	gwAddr, router, far, udp, tcp := "203.0.113.1/24", "203.0.113.254", "198.51.100.10", "udp4", "tcp4"
	if v6 {
		tag = "6"
		gwAddr, router, far, udp, tcp = "2001:db8:e::1/64", "2001:db8:e::fe", "2001:db8:f::10", "udp6", "tcp6"
	}
	b := &gwBed{t: t, prefix: fmt.Sprintf("npgm%s%s%d", tag, gwDriver[:1], os.Getpid()%100000), dir: t.TempDir(), v6: true, mid: true}
	ctx, gw := b.start(gwDriver, nsGatewayPolicyMid(t, true, true), fmt.Sprintf("gateway:\n  name: gw-shared\n  external: ext0\n  address: %s\n  router: %s\n", gwAddr, router))
	b.servers(ctx, "ext", far)

	for _, vm := range []string{"blue", "red"} {
		// UDP to port 9, which nothing serves on the host.
		c := b.dialUDP("vm-"+vm, udp, netip.AddrPort{}, netip.AddrPortFrom(netip.MustParseAddr(far), 9))
		rerr := refused(c)
		c.Close()
		if !errors.Is(rerr, syscall.ECONNREFUSED) {
			t.Fatalf("UDP from %s to %s:9: %v, want the host's port unreachable (ECONNREFUSED)", vm, far, rerr)
		}

		// TCP: a megabyte across the narrow link.
		b.tcpDigest("vm-"+vm, tcp, net.JoinHostPort(far, "80"), repeat(vm+" across a narrow link ", 1<<20), 30*time.Second,
			" across MTU 1280 (path MTU discovery through the gateway)")
		out, err := exec.Command("ip", "-n", b.ns("vm-"+vm), "route", "get", far).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "mtu 1280") {
			t.Fatalf("%s's route to %s: %v\n%s\nwant the path MTU 1280 learned from the router's ICMP error", vm, far, err, out)
		}
	}
	s := gw.Gateway().Stats()
	t.Logf("gateway: %d ICMP errors translated, drops %v", s.ICMPErrors, s.Drops)
	if s.ICMPErrors < 4 {
		t.Fatalf("the gateway translated %d ICMP errors: want at least a port unreachable and a too-big for each tenant", s.ICMPErrors)
	}
}
