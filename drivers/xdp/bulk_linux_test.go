//go:build linux

package xdp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/safchain/ethtool"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// bulkBytes is how much each side of a bulk transfer sends.
const bulkBytes = 16 << 20

// setVMMTU sets the MTU of h's VM interface and of its vport, as a host
// does for VMs whose traffic it encapsulates (the demo uses the same).
func setVMMTU(t testing.TB, h *host, mtu int) {
	t.Helper()
	run(t, "ip", "-n", h.vmNS, "link", "set", h.vmDev, "mtu", strconv.Itoa(mtu))
	run(t, "ip", "-n", h.ns, "link", "set", h.vport, "mtu", strconv.Itoa(mtu))
}

// tcpStats reads the TCP counters of the namespace (/proc/net/snmp).
func tcpStats(t testing.TB, ns string) map[string]uint64 {
	t.Helper()
	out := run(t, "ip", "netns", "exec", ns, "cat", "/proc/net/snmp")
	var names []string
	m := map[string]uint64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		for i, v := range f[1:] {
			if i < len(names) {
				m[names[i]], _ = strconv.ParseUint(v, 10, 64)
			}
		}
	}
	return m
}

// bulkTCP opens a TCP connection from clientNS to server:port (a listener
// in serverNS) and has both sides send bulkBytes of random data at the
// same time; each checks what it received by its SHA-256. The transfer is
// bounded by a deadline: a checksum the receiver refuses shows as a stall.
func bulkTCP(t *testing.T, clientNS, serverNS string, server netip.Addr, port int) {
	t.Helper()
	up, down := make([]byte, bulkBytes), make([]byte, bulkBytes)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(up)
	r.Read(down)
	var ln net.Listener
	inNS(t, serverNS, func() {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(server, uint16(port)).String())
		if err != nil {
			t.Error(err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	defer ln.Close()
	deadline := time.Now().Add(90 * time.Second)
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	// both sides: send, half-close, read to the end
	exchange := func(c net.Conn, send []byte) result {
		c.SetDeadline(deadline)
		werr := make(chan error, 1)
		go func() {
			_, err := c.Write(send)
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite()
			}
			werr <- err
		}()
		h := sha256.New()
		n, err := io.Copy(h, c)
		if e := <-werr; err == nil {
			err = e
		}
		var res result
		copy(res.sum[:], h.Sum(nil))
		res.n, res.err = n, err
		return res
	}
	srv := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srv <- result{err: err}
			return
		}
		defer c.Close()
		srv <- exchange(c, down)
	}()
	var c net.Conn
	inNS(t, clientNS, func() {
		var err error
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.Dial("tcp", netip.AddrPortFrom(server, uint16(port)).String())
		if err != nil {
			t.Error(err)
		}
	})
	if c == nil {
		t.FailNow()
	}
	defer c.Close()
	start := time.Now()
	cli := exchange(c, up)
	s := <-srv
	el := time.Since(start)
	if cli.err != nil || s.err != nil {
		t.Fatalf("bulk TCP: client %v after %d bytes, server %v after %d bytes", cli.err, cli.n, s.err, s.n)
	}
	if s.n != bulkBytes || s.sum != sha256.Sum256(up) || cli.n != bulkBytes || cli.sum != sha256.Sum256(down) {
		t.Fatalf("bulk TCP: the data differ (server got %d bytes, client %d)", s.n, cli.n)
	}
	t.Logf("bulk TCP: %d MiB each way in %v", bulkBytes>>20, el.Round(time.Millisecond))
}

// segmentationOff reports whether the kernel turned TSO off on dev in ns.
func segmentationOff(t *testing.T, ns, dev string) bool {
	t.Helper()
	var off bool
	inNS(t, ns, func() {
		e, err := ethtool.NewEthtool()
		if err != nil {
			t.Error(err)
			return
		}
		defer e.Close()
		f, err := e.Features(dev)
		if err != nil {
			t.Error(err)
			return
		}
		on, ok := f["tx-tcp-segmentation"]
		off = ok && !on
	})
	return off
}

// TestBulkTCPTwoHosts moves 16 MiB each way over one TCP connection between
// two VMs on two XDP hosts, at the same time, with every offload at the
// kernel's default: the VMs leave their checksums partial, which the
// program completes before encapsulating (and the receiving host's before
// redirecting into the VM). With the program attached the kernel sends the
// vports no GSO frames (it turns TSO off on the VM's end), so every segment
// fits one buffer. The VMs' MTU leaves room for VXLAN in the underlay's
// 1500 bytes.
func TestBulkTCPTwoHosts(t *testing.T) {
	requireRoot(t)
	h1, h2 := twoHosts(t)
	for _, h := range []*host{h1, h2} {
		setVMMTU(t, h, 1450)
		if segmentationOff(t, h.vmNS, h.vmDev) {
			t.Fatalf("%s: TSO is off before the program is attached: the test would prove nothing", h.vmNS)
		}
	}
	n1 := openHost(t, h1, ModeAuto)
	defer n1.Close()
	n2 := openHost(t, h2, ModeAuto)
	defer n2.Close()
	for _, h := range []*host{h1, h2} {
		if !segmentationOff(t, h.vmNS, h.vmDev) {
			t.Fatalf("%s: TSO still on with XDP on the vport: the kernel would send GSO frames the program does not take", h.vmNS)
		}
	}
	// Open says so, with the cap it read from the VM's end.
	m := regexp.MustCompile(`maxmtu (\d+)`).FindStringSubmatch(run(t, "ip", "-n", h1.vmNS, "-d", "link", "show", "dev", h1.vmDev))
	if m == nil {
		t.Fatal("ip shows no maxmtu for the VM's interface")
	}
	notes := strings.Join(n1.Capabilities().Notes, "\n")
	if want := fmt.Sprintf("%s: veth, driver mode: the peer's MTU is 1450, capped at %s", h1.vport, m[1]); !strings.Contains(notes, want) {
		t.Fatalf("notes do not say %q:\n%s", want, notes)
	}
	mustApply(t, n1, overlayRules(h1, h2, 77)...)
	mustApply(t, n2, overlayRules(h2, h1, 77)...)
	before1, before2 := tcpStats(t, h1.vmNS), tcpStats(t, h2.vmNS)
	bulkTCP(t, h1.vmNS, h2.vmNS, h2.ca, 5001)
	after1, after2 := tcpStats(t, h1.vmNS), tcpStats(t, h2.vmNS)
	for i, p := range [][2]map[string]uint64{{before1, after1}, {before2, after2}} {
		if d := p[1]["InCsumErrors"] - p[0]["InCsumErrors"]; d != 0 {
			t.Errorf("vm%d: %d TCP checksum errors", i+1, d)
		}
	}
	// The transfer took the fast path: the encap rules counted it.
	for _, n := range []*NIC{n1, n2} {
		rc := make([]hal.Counters, 2)
		if err := n.RuleCounters(context.Background(), []hal.RuleID{1, 2}, rc); err != nil {
			t.Fatal(err)
		}
		if rc[0].Bytes < bulkBytes || rc[1].Bytes < bulkBytes {
			t.Fatalf("rule counters %+v: the transfer did not take the XDP path", rc)
		}
	}
}

// TestBulkTCPKernelPeer is TestBulkTCPTwoHosts against a plain Linux host:
// host2 is a bridge with a kernel VXLAN device over IPv4, offloads at
// their defaults, so its VXLAN frames carry partial inner checksums (the
// program completes them on decapsulation) and it checks the ones the
// program completes on encapsulation.
func TestBulkTCPKernelPeer(t *testing.T) {
	requireRoot(t)
	h1, h2 := twoHosts(t)
	const vni = 4244
	run(t, "ip", "-n", h2.ns, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", h2.ns, "link", "add", "vx0", "type", "vxlan", "id", fmt.Sprint(vni), "local", h2.pa.String(),
		"remote", h1.pa.String(), "dstport", "4789", "dev", h2.up)
	run(t, "ip", "-n", h2.ns, "link", "set", "vx0", "master", "br0")
	run(t, "ip", "-n", h2.ns, "link", "set", h2.vport, "master", "br0")
	run(t, "ip", "-n", h2.ns, "link", "set", "vx0", "up")
	run(t, "ip", "-n", h2.ns, "link", "set", "br0", "up")
	run(t, "ip", "-n", h2.ns, "neigh", "replace", h1.pa.String(), "lladdr", h1.upMAC.String(), "dev", h2.up, "nud", "permanent")
	// NAPI on host2's end of the underlay, for the frames the program
	// redirects into it (test plumbing, inside the test's namespace).
	passProg(t, h2.ns, h2.up)
	for _, h := range []*host{h1, h2} {
		setVMMTU(t, h, 1450) // the kernel's vx0 has 1450
	}
	n1 := openHost(t, h1, ModeAuto)
	defer n1.Close()
	mustApply(t, n1, overlayRules(h1, h2, vni)...)
	if err := n1.SetTunnelEndpoint(context.Background(), hal.TunnelEndpoint{Port: 2, Addrs: []netip.Addr{h1.pa}}); err != nil {
		t.Fatal(err)
	}
	before1, before2 := tcpStats(t, h1.vmNS), tcpStats(t, h2.vmNS)
	bulkTCP(t, h2.vmNS, h1.vmNS, h1.ca, 5002)
	after1, after2 := tcpStats(t, h1.vmNS), tcpStats(t, h2.vmNS)
	for i, p := range [][2]map[string]uint64{{before1, after1}, {before2, after2}} {
		if d := p[1]["InCsumErrors"] - p[0]["InCsumErrors"]; d != 0 {
			t.Errorf("vm%d: %d TCP checksum errors", i+1, d)
		}
	}
	rc := make([]hal.Counters, 2)
	if err := n1.RuleCounters(context.Background(), []hal.RuleID{1, 2}, rc); err != nil {
		t.Fatal(err)
	}
	if rc[0].Bytes < bulkBytes || rc[1].Bytes < bulkBytes {
		t.Fatalf("rule counters %+v: the transfer did not take the XDP path", rc)
	}
}

// TestMTUExceptionOnVeth: a VM frame too big for the underlay once
// encapsulated is not dropped silently: it reaches the host's exception
// path with ReasonMTU (the host answers the VM; that is the vswitch's
// part), and nothing of it reaches the other VM.
func TestMTUExceptionOnVeth(t *testing.T) {
	requireRoot(t)
	h1, h2 := twoHosts(t) // VMs at 1500, like the underlay: no room for VXLAN
	n1 := openHost(t, h1, ModeAuto)
	defer n1.Close()
	n2 := openHost(t, h2, ModeAuto)
	defer n2.Close()
	mustApply(t, n1, overlayRules(h1, h2, 78)...)
	mustApply(t, n2, overlayRules(h2, h1, 78)...)
	rx := udpSocket(t, h2.vmNS, h2.ca, 9000)
	tx := udpSocket(t, h1.vmNS, h1.ca, 9001)
	if err := unix.Sendto(tx, make([]byte, 1472), 0, &unix.SockaddrInet4{Addr: h2.ca.As4(), Port: 9000}); err != nil {
		t.Fatal(err)
	}
	batch := make([]hal.Exception, 4)
	for i := range batch {
		batch[i].Buf = make([]byte, 2048)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var got *hal.Exception
	for got == nil {
		k, err := n1.ReadExceptions(ctx, batch)
		if err != nil {
			t.Fatalf("no MTU exception: %v", err)
		}
		for i := range batch[:k] {
			if batch[i].Reason == hal.ReasonMTU {
				got = &batch[i]
			}
		}
	}
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(got.Frame(), got.InPort, &k, &l); err != nil || got.InPort != 1 || got.Rule != 1 || got.Len != 14+20+8+1472 ||
		k.Dst() != h2.ca {
		t.Fatalf("MTU exception: port %d rule %d len %d dst %v (%v)", got.InPort, got.Rule, got.Len, k.Dst(), err)
	}
	// and its checksum, left partial by the VM, completed for the host
	in, _ := sites(got.Frame())
	if in == nil || !in.valid(got.Frame()) {
		t.Fatal("the MTU exception's UDP checksum does not verify")
	}
	if n := countUDP(rx, 200*time.Millisecond); n != 0 {
		t.Fatalf("%d datagrams reached vm2", n)
	}
	st, _ := n1.Stats(context.Background())
	if st.Exceptions[hal.ReasonMTU] != 1 {
		t.Fatalf("mtu exceptions %d", st.Exceptions[hal.ReasonMTU])
	}
}

// TestTunnelFilterVeth sets the tunnel endpoint on both hosts' uplinks
// (their PA, the uplink's own MAC) and checks on real interfaces that the
// overlay still carries traffic and that VXLAN frames for another address
// or another MAC, sent into host2's uplink, are dropped as not_local and
// never reach its VM.
func TestTunnelFilterVeth(t *testing.T) {
	requireRoot(t)
	h1, h2 := twoHosts(t)
	n1 := openHost(t, h1, ModeAuto)
	defer n1.Close()
	n2 := openHost(t, h2, ModeAuto)
	defer n2.Close()
	ctx := context.Background()
	const vni = 79
	mustApply(t, n1, overlayRules(h1, h2, vni)...)
	mustApply(t, n2, overlayRules(h2, h1, vni)...)
	for _, p := range []struct {
		n *NIC
		h *host
	}{{n1, h1}, {n2, h2}} {
		if err := p.n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 2, Addrs: []netip.Addr{p.h.pa}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := ping(t, h1.vmNS, h2.ca, 3); got != 3 {
		t.Fatalf("ping with the endpoints set: %d of 3", got)
	}
	rx := udpSocket(t, h2.vmNS, h2.ca, 9000)
	send := func(dst netip.Addr, dmac hal.MAC, what string) {
		inner := wire.Build(wire.FrameSpec{SrcMAC: h1.vmMAC, DstMAC: h2.vmMAC, Src: h1.ca, Dst: h2.ca, Proto: hal.ProtoUDP,
			SrcPort: 9001, DstPort: 9000, Payload: []byte(what)})
		e := hal.Encap{Kind: hal.EncapVXLAN, VNI: vni, Src: h1.pa, Dst: dst, SrcMAC: h1.upMAC, DstMAC: dmac}
		if err := n1.Inject(ctx, 2, [][]byte{wire.BuildEncap(&e, inner)}); err != nil {
			t.Fatal(err)
		}
	}
	send(netip.MustParseAddr("198.18.0.99"), h2.upMAC, "another PA")
	send(h2.pa, hal.MAC{0x02, 0, 0, 0, 0x99, 0x99}, "another MAC")
	send(h2.pa, h2.upMAC, "for host2")
	buf := make([]byte, 64)
	tv := unix.NsecToTimeval(int64(time.Second))
	unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	k, _, err := unix.Recvfrom(rx, buf, 0)
	if err != nil || !bytes.Equal(buf[:k], []byte("for host2")) {
		t.Fatalf("vm2 received %q (%v), want the frame for host2", buf[:max(k, 0)], err)
	}
	if n := countUDP(rx, 200*time.Millisecond); n != 0 {
		t.Fatalf("%d frames for other endpoints reached vm2", n)
	}
	st, _ := n2.Stats(ctx)
	if st.Drops[hal.ReasonNotLocal] != 2 {
		t.Fatalf("host2 not_local drops %d, want 2", st.Drops[hal.ReasonNotLocal])
	}
}
