//go:build linux

package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// TestGatewayNamespacesIPv6: the gateway with an IPv6 external address
// and a plain Linux host with an IPv6 address on the external network,
// neither with a static neighbour entry: the gateway answers the host's
// neighbour solicitations for its own and its published addresses, and
// resolves the host with solicitations of its own. Both tenants' VMs
// (the same IPv6 address in each) reach the host with ping, UDP and TCP,
// and the host reaches each VM through its published address (ping, TCP,
// and UDP to a closed port, whose port unreachable the VM sends back).
func TestGatewayNamespacesIPv6(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: network namespaces need root")
	}
	for _, drv := range []string{"softnic", "xdp"} {
		t.Run("gateway on "+drv, func(t *testing.T) { testGatewayNamespacesIPv6(t, drv) })
	}
}

func testGatewayNamespacesIPv6(t *testing.T, gwDriver string) {
	b := &gwBed{t: t, prefix: fmt.Sprintf("npg6%s%d", gwDriver[:1], os.Getpid()%100000), dir: t.TempDir(), v6: true}
	ctx, gw := b.start(gwDriver, nsGatewayPolicyWith(t, true), "gateway:\n  name: gw-shared\n  external: ext0\n  address: 2001:db8:e::1/64\n"+
		"  publish:\n    2001:db8:e::21: blue/2001:db8:a::10\n    2001:db8:e::22: red/2001:db8:a::10\n")
	const host = "2001:db8:e::10"
	peers := b.servers(ctx, "ext", host)

	for _, vm := range []string{"blue", "red"} {
		b.pingFrom("vm-"+vm, host)
	}
	for _, vm := range []string{"blue", "red"} {
		c := b.dialUDP("vm-"+vm, "udp6", netip.MustParseAddrPort("[2001:db8:a::10]:40000"), netip.AddrPortFrom(netip.MustParseAddr(host), 7))
		echoes(t, c, vm+" 0", vm+" 1", vm+" 2")
		c.Close()
	}
	ports := map[uint16]bool{}
	for _, p := range peers() {
		if p.Addr() != netip.MustParseAddr("2001:db8:e::1") {
			t.Fatalf("the external host saw a datagram from %s: not the gateway's address", p)
		}
		ports[p.Port()] = true
	}
	if len(ports) != 2 {
		t.Fatalf("the two tenants' datagrams (same address and port inside) came from ports %v: want one each", ports)
	}
	for _, vm := range []string{"blue", "red"} {
		b.tcpDigest("vm-"+vm, "tcp6", "["+host+"]:80", repeat(vm+" over IPv6 ", 1<<20), 20*time.Second, "")
	}

	// The host opens connections to the published addresses: it finds
	// them by solicitation too.
	published := map[string]string{"blue": "2001:db8:e::21", "red": "2001:db8:e::22"}
	for _, vm := range []string{"blue", "red"} {
		b.servers(ctx, "vm-"+vm, "2001:db8:a::10")
		b.pingFrom("ext", published[vm])
		// UDP to a port the VM does not serve: the VM's port unreachable
		// comes back through the gateway (quoting the datagram as the host
		// sent it) and reaches the host's socket as ECONNREFUSED.
		uc := b.dialUDP("ext", "udp6", netip.AddrPort{}, netip.AddrPortFrom(netip.MustParseAddr(published[vm]), 9))
		rerr := refused(uc)
		uc.Close()
		if !errors.Is(rerr, syscall.ECONNREFUSED) {
			t.Fatalf("UDP to %s:9 (%s's VM serves nothing there): %v, want the VM's port unreachable (ECONNREFUSED)", published[vm], vm, rerr)
		}
		b.tcpDigest("ext", "tcp6", "["+published[vm]+"]:80", repeat("to "+vm+" from outside ", 1<<19), 20*time.Second, "")
	}

	// The host learned the gateway's addresses by discovery (no entry is
	// permanent), with the gateway's external MAC.
	out, err := exec.Command("ip", "-n", b.ns("ext"), "-6", "neigh", "show", "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatal(err, string(out))
	}
	for _, a := range []string{"2001:db8:e::1 ", "2001:db8:e::21 ", "2001:db8:e::22 "} {
		line := ""
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, a) {
				line = l
			}
		}
		if !strings.Contains(line, gwExtMAC.String()) || strings.Contains(line, "PERMANENT") {
			t.Errorf("the external host's neighbour entry for %s: %q, want the gateway's MAC %s, learned\n%s", a, line, gwExtMAC, out)
		}
	}
	st := b.gatewayStatus(ctx)
	t.Logf("vswitchctl gateway:\n%s", st.Text)
	s := gw.Gateway().Stats()
	if s.NDReplies == 0 || s.NDRequests == 0 {
		t.Errorf("neighbour discovery: %d solicitations answered, %d sent; want both", s.NDReplies, s.NDRequests)
	}
	for _, c := range st.Connections {
		if (c.Proto == hal.ProtoTCP || c.Proto == hal.ProtoUDP) && c.Where != "nic" {
			t.Errorf("connection %+v is not on the gateway's NIC", c)
		}
	}
	if st.Offloaded < 6 || st.Inbound < 4 {
		t.Fatalf("want UDP and TCP of both tenants offloaded and the inbound connections tracked: %+v", st)
	}
}
