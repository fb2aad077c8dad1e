//go:build linux

package agent

import (
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/nicpath/nicpath/internal/nsexec"
)

// TestGatewayRouterMACChange: the router beyond the gateway's external
// network takes a new MAC (a router replaced, or failed over to a standby)
// and announces it, as Linux does on a MAC change with arp_notify
// (IPv4: a gratuitous ARP) or ndisc_notify (IPv6: an unsolicited neighbour
// advertisement). A UDP connection from a VM through the gateway, on the
// gateway's NIC before the change, goes on answering on the NIC: its rule
// toward the router rewrites to the new MAC, and the rule for the router's
// answers matches the new MAC. Before, the rule kept sending to the old
// MAC, which the router no longer takes, until the connection expired.
func TestGatewayRouterMACChange(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: network namespaces need root")
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) { testGatewayRouterMACChange(t, fam == "ipv6") })
	}
}

func testGatewayRouterMACChange(t *testing.T, v6 bool) {
	tag := "4"
	gwAddr, router, far, udp, notify := "203.0.113.1/24", "203.0.113.254", "198.51.100.10", "udp4", "net.ipv4.conf.eth0.arp_notify=1"
	if v6 {
		tag = "6"
		gwAddr, router, far, udp, notify = "2001:db8:e::1/64", "2001:db8:e::fe", "2001:db8:f::10", "udp6", "net.ipv6.conf.eth0.ndisc_notify=1"
	}
	b := &gwBed{t: t, prefix: fmt.Sprintf("npgn%s%d", tag, os.Getpid()%100000), dir: t.TempDir(), v6: true, mid: true}
	ctx, gw := b.start("softnic", nsGatewayPolicyMid(t, true, true),
		fmt.Sprintf("gateway:\n  name: gw-shared\n  external: ext0\n  address: %s\n  router: %s\n", gwAddr, router))
	b.servers(ctx, "ext", far)

	var c *net.UDPConn
	if err := nsexec.Do(b.path("vm-blue"), func() (err error) {
		c, err = net.DialUDP(udp, nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(far), 7)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	seq := 0
	// echo sends one datagram and says whether its echo came back within
	// wait (an older echo read on the way is passed over).
	echo := func(wait time.Duration) bool {
		seq++
		msg := fmt.Sprintf("datagram %d", seq)
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(wait))
		for {
			n, err := c.Read(buf)
			if err != nil {
				return false
			}
			if string(buf[:n]) == "echo "+msg {
				return true
			}
		}
	}
	// until retries echo for up to 30s, and says whether one came back.
	until := func() bool {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			if echo(time.Second) {
				return true
			}
		}
		return false
	}
	onNIC := func() bool {
		cs := gw.Gateway().Conns()
		return len(cs) == 1 && cs[0].Where == "nic"
	}
	if !until() {
		t.Fatal("no echo through the gateway before the router's MAC changed")
	}
	waitUntil(t, "the connection on the gateway's NIC", onNIC)
	// The rules landed: an echo now takes them both ways.
	before := gw.Gateway().Stats()
	if !echo(5*time.Second) || gw.Gateway().Stats().HostPackets != before.HostPackets {
		t.Fatalf("an echo on the NIC's rules before the change: host packets %d -> %d", before.HostPackets, gw.Gateway().Stats().HostPackets)
	}

	mid := b.ns("mid")
	b.run("ip", "netns", "exec", mid, "sysctl", "-qw", notify)
	b.ip("-n", mid, "link", "set", "eth0", "address", "02:6d:00:00:00:fe")
	if !until() {
		t.Fatalf("no echo through the gateway after the router's MAC changed: the connection's rule still sends to the old MAC\nconnections: %+v\nstats: %+v",
			gw.Gateway().Conns(), gw.Gateway().Stats())
	}
	if s := gw.Gateway().Stats(); s.NeighborMoves == 0 {
		t.Errorf("the gateway does not count the router's move: %+v", s)
	}
	rec := httptest.NewRecorder()
	gw.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if m := regexp.MustCompile(`(?m)^nicpath_gateway_neighbor_moves_total [1-9]`).FindString(rec.Body.String()); m == "" {
		t.Errorf("the metrics do not count the router's move:\n%s", rec.Body.String())
	}
	if !onNIC() {
		t.Fatalf("after the router's MAC changed, the connection left the NIC: %+v", gw.Gateway().Conns())
	}
	// Both rules are the NIC's again: echoes take neither through the host.
	before = gw.Gateway().Stats()
	for range 3 {
		if !echo(5 * time.Second) {
			t.Fatal("an echo was lost after the router's MAC changed")
		}
	}
	if after := gw.Gateway().Stats(); after.HostPackets != before.HostPackets {
		t.Fatalf("echoes after the router's MAC changed went through the gateway's host path: host packets %d -> %d", before.HostPackets, after.HostPackets)
	}
}
