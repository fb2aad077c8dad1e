//go:build linux

package xdp

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
)

// TestIPv6UnderlayKernelPeer runs the overlay over an IPv6 underlay between
// this driver and the Linux kernel's own VXLAN: host1 is the XDP NIC, host2
// a bridge with a VXLAN device over IPv6 that refuses zero UDP checksums
// (noudp6zerocsumrx) and checks the others before decapsulating. Datagrams
// VM1 -> VM2 arrive only if the program's outer IPv6 header and UDP
// checksum are right; VM2 -> VM1 takes the kernel's IPv6 encapsulation
// through the program's decapsulation.
func TestIPv6UnderlayKernelPeer(t *testing.T) {
	requireRoot(t)
	h1, h2 := twoHosts(t)
	pa6 := map[*host]netip.Addr{h1: netip.MustParseAddr("2001:db8:1::1"), h2: netip.MustParseAddr("2001:db8:1::2")}
	for _, h := range []*host{h1, h2} {
		run(t, "ip", "-n", h.ns, "addr", "replace", pa6[h].String()+"/64", "dev", h.up, "nodad")
	}
	const vni = 4243
	run(t, "ip", "-n", h2.ns, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", h2.ns, "link", "add", "vx0", "type", "vxlan", "id", fmt.Sprint(vni), "local", pa6[h2].String(),
		"remote", pa6[h1].String(), "dstport", "4789", "dev", h2.up, "noudp6zerocsumrx")
	run(t, "ip", "-n", h2.ns, "link", "set", "vx0", "master", "br0")
	run(t, "ip", "-n", h2.ns, "link", "set", h2.vport, "master", "br0")
	run(t, "ip", "-n", h2.ns, "link", "set", "vx0", "up")
	run(t, "ip", "-n", h2.ns, "link", "set", "br0", "up")
	// host1's uplink runs the program, which does not answer neighbour
	// solicitations: host2 knows host1's MAC.
	run(t, "ip", "-n", h2.ns, "neigh", "replace", pa6[h1].String(), "lladdr", h1.upMAC.String(), "dev", h2.up, "nud", "permanent")
	// Frames the program redirects into host1's uplink reach host2's end
	// only with NAPI running there.
	passProg(t, h2.ns, h2.up)

	n1 := openHost(t, h1, ModeAuto)
	defer n1.Close()
	var out, in hal.Match
	out.InPort(1).IPDst(netip.PrefixFrom(h2.ca, 32))
	in.InPort(2).Tunnel(hal.EncapVXLAN, vni).IPDst(netip.PrefixFrom(h1.ca, 32))
	e := hal.Encap{Kind: hal.EncapVXLAN, VNI: vni, Src: pa6[h1], Dst: pa6[h2], SrcMAC: h1.upMAC, DstMAC: h2.upMAC}
	mustApply(t, n1,
		hal.AddOp(hal.Rule{ID: 1, Priority: 10, Match: out, Actions: []hal.Action{hal.Count(), hal.EncapWith(e), hal.Output(2)}}),
		hal.AddOp(hal.Rule{ID: 2, Priority: 10, Match: in, Actions: []hal.Action{hal.Decap(), hal.Count(), hal.Output(1)}}))

	const datagrams = 50
	send := func(to *host, fd int, port int) {
		payload := make([]byte, 333) // odd: the checksum's padded last byte
		for i := range payload {
			payload[i] = byte(i)
		}
		for i := 0; i < datagrams; i++ {
			if i%20 == 19 {
				time.Sleep(2 * time.Millisecond)
			}
			if err := unix.Sendto(fd, payload, 0, &unix.SockaddrInet4{Addr: to.ca.As4(), Port: port}); err != nil {
				t.Fatal(err)
			}
		}
	}
	snmp6 := func() string {
		b, _ := exec.Command("ip", "netns", "exec", h2.ns, "grep", "-E", "Udp6(InErrors|InCsumErrors|InDatagrams)", "/proc/net/snmp6").CombinedOutput()
		return string(b)
	}

	rx2 := udpSocket(t, h2.vmNS, h2.ca, 9000)
	tx1 := udpSocket(t, h1.vmNS, h1.ca, 9001)
	send(h2, tx1, 9000)
	if got := countUDP(rx2, 300*time.Millisecond); got != datagrams {
		t.Fatalf("VM1 -> VM2 over the program's IPv6 VXLAN: %d of %d datagrams arrived; host2:\n%s", got, datagrams, snmp6())
	}
	rx1 := udpSocket(t, h1.vmNS, h1.ca, 9002)
	tx2 := udpSocket(t, h2.vmNS, h2.ca, 9003)
	send(h1, tx2, 9002)
	if got := countUDP(rx1, 300*time.Millisecond); got != datagrams {
		s, _ := n1.Stats(context.Background())
		t.Fatalf("VM2 -> VM1 over the kernel's IPv6 VXLAN: %d of %d datagrams arrived; host1 %+v", got, datagrams, s)
	}
	rc := make([]hal.Counters, 2)
	if err := n1.RuleCounters(context.Background(), []hal.RuleID{1, 2}, rc); err != nil {
		t.Fatal(err)
	}
	if rc[0].Packets < datagrams || rc[1].Packets < datagrams {
		t.Fatalf("host1 rule counters %+v: the datagrams did not take the program's path", rc)
	}
}
