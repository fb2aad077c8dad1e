//go:build linux

package agent

import (
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/gateway"
	"github.com/nicpath/nicpath/hal"
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

// midFamily is the mid bed's addresses in one family: the gateway's
// external address, the router's, the far host's, and the UDP network.
func midFamily(v6 bool) (tag, gwAddr, router, far, udp string) {
	if v6 {
		return "6", "2001:db8:e::1/64", "2001:db8:e::fe", "2001:db8:f::10", "udp6"
	}
	return "4", "203.0.113.1/24", "203.0.113.254", "198.51.100.10", "udp4"
}

// udpEcho is a UDP connection from vm-blue to the far host's echo service
// through the gateway.
type udpEcho struct {
	t   *testing.T
	c   *net.UDPConn
	buf []byte
	seq int
}

func dialEcho(t *testing.T, b *gwBed, udp, far string) *udpEcho {
	t.Helper()
	e := &udpEcho{t: t, buf: make([]byte, 2048)}
	e.c = b.dialUDP("vm-blue", udp, netip.AddrPort{}, netip.AddrPortFrom(netip.MustParseAddr(far), 7))
	t.Cleanup(func() { e.c.Close() })
	return e
}

// once sends one datagram and says whether its echo came back within wait
// (an older echo read on the way is passed over).
func (e *udpEcho) once(wait time.Duration) bool {
	e.seq++
	msg := fmt.Sprintf("datagram %d", e.seq)
	e.c.Write([]byte(msg))
	e.c.SetReadDeadline(time.Now().Add(wait))
	for {
		n, err := e.c.Read(e.buf)
		if err != nil {
			return false
		}
		if string(e.buf[:n]) == "echo "+msg {
			return true
		}
	}
}

// until retries for up to 30s, and says whether an echo came back.
func (e *udpEcho) until() bool {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if e.once(time.Second) {
			return true
		}
	}
	return false
}

// onNIC says whether the gateway's one connection is on its NIC.
func onNIC(gw *GatewayAgent) bool {
	cs := gw.Gateway().Conns()
	return len(cs) == 1 && cs[0].Where == "nic"
}

// offloadedEcho has e's connection answer through the gateway, then
// waits for it on the gateway's NIC and checks that an echo takes the
// NIC's rules both ways.
func offloadedEcho(t *testing.T, gw *GatewayAgent, e *udpEcho, when string) {
	t.Helper()
	if !e.until() {
		t.Fatalf("no echo through the gateway %s", when)
	}
	waitUntil(t, "the connection on the gateway's NIC", func() bool { return onNIC(gw) })
	// The rules landed: an echo now takes them both ways.
	before := gw.Gateway().Stats()
	if !e.once(5*time.Second) || gw.Gateway().Stats().HostPackets != before.HostPackets {
		t.Fatalf("an echo on the NIC's rules %s: host packets %d -> %d", when, before.HostPackets, gw.Gateway().Stats().HostPackets)
	}
}

func testGatewayRouterMACChange(t *testing.T, v6 bool) {
	tag, gwAddr, router, far, udp := midFamily(v6)
	notify := "net.ipv4.conf.eth0.arp_notify=1"
	if v6 {
		notify = "net.ipv6.conf.eth0.ndisc_notify=1"
	}
	b := &gwBed{t: t, prefix: fmt.Sprintf("npgn%s%d", tag, os.Getpid()%100000), dir: t.TempDir(), v6: true, mid: true}
	ctx, gw := b.start("softnic", nsGatewayPolicyMid(t, true, true),
		fmt.Sprintf("gateway:\n  name: gw-shared\n  external: ext0\n  address: %s\n  router: %s\n", gwAddr, router))
	b.servers(ctx, "ext", far)
	e := dialEcho(t, b, udp, far)
	offloadedEcho(t, gw, e, "before the router's MAC changed")

	mid := b.ns("mid")
	b.run("ip", "netns", "exec", mid, "sysctl", "-qw", notify)
	b.ip("-n", mid, "link", "set", "eth0", "address", "02:6d:00:00:00:fe")
	if !e.until() {
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
	// The control socket's status (vswitchctl gateway) counts it too.
	st := b.gatewayStatus(ctx)
	if want := fmt.Sprintf("moved to a new MAC %d;", st.NeighborMoves); st.NeighborMoves == 0 || !strings.Contains(st.Text, want) {
		t.Errorf("the gateway's status does not count the router's move: neighbor_moves %d, text:\n%s", st.NeighborMoves, st.Text)
	}
	if !onNIC(gw) {
		t.Fatalf("after the router's MAC changed, the connection left the NIC: %+v", gw.Gateway().Conns())
	}
	// Both rules are the NIC's again: echoes take neither through the host.
	before := gw.Gateway().Stats()
	for range 3 {
		if !e.once(5 * time.Second) {
			t.Fatal("an echo was lost after the router's MAC changed")
		}
	}
	if after := gw.Gateway().Stats(); after.HostPackets != before.HostPackets {
		t.Fatalf("echoes after the router's MAC changed went through the gateway's host path: host packets %d -> %d", before.HostPackets, after.HostPackets)
	}
}

// TestGatewayStaticNeighborStays: the router beyond the gateway's external
// network is a static neighbour in the gateway's configuration (its
// address to its MAC), and another station on that network claims the
// router's address with its own MAC: an ARP request (IPv4) or a neighbour
// solicitation (IPv6) for the gateway's address, from the router's
// address. The gateway answers it, but the router stays at its configured
// MAC: a UDP connection from a VM through the gateway goes on answering on
// the gateway's NIC, and no neighbour move is counted. Before, the claim
// moved the router to the claimant's MAC, and the connection's packets
// went to a station that does not route them.
func TestGatewayStaticNeighborStays(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: network namespaces need root")
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) { testGatewayStaticNeighborStays(t, fam == "ipv6") })
	}
}

func testGatewayStaticNeighborStays(t *testing.T, v6 bool) {
	tag, gwAddr, router, far, udp := midFamily(v6)
	b := &gwBed{t: t, prefix: fmt.Sprintf("npgs%s%d", tag, os.Getpid()%100000), dir: t.TempDir(), v6: true, mid: true}
	// The router's MAC is the mid namespace's eth0, extHostMAC.
	ctx, gw := b.start("softnic", nsGatewayPolicyMid(t, true, true),
		fmt.Sprintf("gateway:\n  name: gw-shared\n  external: ext0\n  address: %s\n  router: %s\n  neighbors:\n    %s: %s\n",
			gwAddr, router, router, extHostMAC))
	b.servers(ctx, "ext", far)
	e := dialEcho(t, b, udp, far)
	offloadedEcho(t, gw, e, "before the claim")

	// The claim leaves the mid namespace's eth0 as a raw frame from
	// another MAC: the router's kernel neither sends nor sees it.
	impostor := hal.MustMAC("02:6d:00:00:00:66")
	gwIP := netip.MustParsePrefix(gwAddr).Addr()
	var claim []byte
	if v6 {
		claim = gateway.BuildNS(impostor, netip.MustParseAddr(router), gwIP)
	} else {
		claim = gateway.BuildARP(1, impostor, netip.MustParseAddr(router), hal.MAC{}, gwIP)
	}
	// The gateway's answer to the claimant tells the claim was taken in.
	b.rawExchange("mid", "eth0", claim, func(f []byte) bool {
		if v6 {
			nd, ok := gateway.ParseND(f)
			return ok && nd.Type == 136 && nd.Target == gwIP && hal.MAC(f[0:6]) == impostor
		}
		op, _, _, tpa, ok := gateway.ParseARP(f)
		return ok && op == 2 && tpa == netip.MustParseAddr(router) && hal.MAC(f[0:6]) == impostor
	})

	if s := gw.Gateway().Stats(); s.NeighborMoves != 0 {
		t.Fatalf("the claim moved the static router: %+v", s)
	}
	if !onNIC(gw) {
		t.Fatalf("after the claim, the connection left the NIC: %+v", gw.Gateway().Conns())
	}
	// The connection still reaches the router, on the NIC's rules.
	hostBefore := gw.Gateway().Stats().HostPackets
	for range 3 {
		if !e.once(5 * time.Second) {
			t.Fatalf("an echo was lost after the claim: the connection's rule no longer sends to the router\nconnections: %+v\nstats: %+v",
				gw.Gateway().Conns(), gw.Gateway().Stats())
		}
	}
	if after := gw.Gateway().Stats().HostPackets; after != hostBefore {
		t.Fatalf("echoes after the claim went through the gateway's host path: host packets %d -> %d", hostBefore, after)
	}
}
