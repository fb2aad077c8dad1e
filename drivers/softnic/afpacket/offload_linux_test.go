//go:build linux

package afpacket

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

var (
	macVMA = hal.MustMAC("02:00:00:0a:00:01")
	macVMB = hal.MustMAC("02:00:00:0a:00:02")
)

// bulkBytes is the size of each bulk TCP transfer: enough for the
// congestion window to open fully, so that the VMs send 64 KB TSO frames
// for most of it.
const bulkBytes = 32 << 20

// twoVMs builds two VMs, namespaces a and b whose veths keep the kernel's
// default offloads, behind one softnic (ports vm1 and vm2) bound in a
// third namespace, with a rule per direction.
func twoVMs(tb testing.TB, tag string) (a, b string, nic *softnic.NIC, bs []*Binding) {
	l := newLab(tb, tag)
	host := l.ns("host")
	a, b = l.ns("vma"), l.ns("vmb")
	l.veth(host, "vm1", a, "eth0", macVMA)
	l.veth(host, "vm2", b, "eth0", macVMB)
	for _, c := range []struct {
		ns, v4, v6, peer4, peer6 string
		peerMAC                  hal.MAC
	}{
		{a, "198.18.5.1/24", "2001:db8:5::1/64", "198.18.5.2", "2001:db8:5::2", macVMB},
		{b, "198.18.5.2/24", "2001:db8:5::2/64", "198.18.5.1", "2001:db8:5::1", macVMA},
	} {
		ip(tb, "-n", c.ns, "addr", "replace", c.v4, "dev", "eth0")
		ip(tb, "-n", c.ns, "addr", "replace", c.v6, "dev", "eth0", "nodad")
		ip(tb, "-n", c.ns, "neigh", "replace", c.peer4, "lladdr", c.peerMAC.String(), "dev", "eth0", "nud", "permanent")
		ip(tb, "-n", c.ns, "neigh", "replace", c.peer6, "lladdr", c.peerMAC.String(), "dev", "eth0", "nud", "permanent")
	}
	nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm1", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:00:00:01")},
		{Name: "vm2", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:00:00:02")},
	}, RingSize: 4096})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nic.Close() })
	var from1, from2 hal.Match
	from1.InPort(1)
	from2.InPort(2)
	apply(tb, nic,
		hal.Rule{ID: 1, Match: from1, Actions: []hal.Action{hal.Output(2)}},
		hal.Rule{ID: 2, Match: from2, Actions: []hal.Action{hal.Output(1)}})
	bs = bind(tb, host, nic, "vm1", "vm2")
	return a, b, nic, bs
}

// Two VMs, each a namespace whose veth keeps the kernel's default offloads
// (checksum offload, TSO, GSO: nothing switched off), behind one softnic
// with a rule per direction. Their TCP and UDP traffic, over IPv4 and
// IPv6, arrives with complete checksums (the VMs' kernels count no
// checksum errors, and the bytes verify), datagrams sent with UDP_SEGMENT
// arrive one by one, and a bulk TCP transfer each way, sent as TSO frames
// of up to 64 KB, arrives whole.
func TestOffloadsBetweenTwoVMs(t *testing.T) {
	a, b, nic, bs := twoVMs(t, "o2")
	capA := startCapture(t, a, "eth0", 4000, 6001, 6003, 5201)
	capB := startCapture(t, b, "eth0", 4000, 6002, 6004, 5201)
	ua4, ub4 := udpConn(t, a, "198.18.5.1:6001"), udpConn(t, b, "198.18.5.2:6002")
	ua6, ub6 := udpConn(t, a, "[2001:db8:5::1]:6003"), udpConn(t, b, "[2001:db8:5::2]:6004")
	udpExchange(t, ua4, ub4)
	udpExchange(t, ub4, ua4)
	udpExchange(t, ua6, ub6)
	udpExchange(t, ub6, ua6)

	d := bulkTCP(t, b, "198.18.5.2:5201", a, bulkBytes)
	t.Logf("TCP/IPv4 VM A -> VM B through softnic: %d MiB in %v: %.2f Gbit/s", bulkBytes>>20, d, gbps(bulkBytes, d))
	d = bulkTCP(t, a, "[2001:db8:5::1]:5201", b, bulkBytes)
	t.Logf("TCP/IPv6 VM B -> VM A through softnic: %d MiB in %v: %.2f Gbit/s", bulkBytes>>20, d, gbps(bulkBytes, d))

	for _, c := range []struct {
		name string
		c    *capture
	}{{"VM A", capA}, {"VM B", capB}} {
		tcp, udp := c.c.checkFrames(t, c.name)
		t.Logf("%s: %d TCP and %d UDP frames checked", c.name, tcp, udp)
		if tcp == 0 || udp < 16 {
			t.Errorf("%s: %d TCP and %d UDP frames captured: too few to say anything", c.name, tcp, udp)
		}
	}
	noCsumErrors(t, a, b)
	var gso, csum uint64
	for _, bd := range bs {
		s := bd.Stats()
		t.Logf("binding %s: %+v", bd.Interface(), s)
		gso += s.RxGSO
		csum += s.RxCsum
		if s.RxDropped != 0 || s.TxErrors != 0 {
			t.Errorf("binding %s dropped frames: %+v", bd.Interface(), s)
		}
	}
	if gso == 0 || csum == 0 {
		t.Errorf("the bindings cut %d GSO frames and completed %d checksums: the test did not exercise the offloads", gso, csum)
	}
	st, err := nic.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops[hal.ReasonMalformed] != 0 {
		t.Errorf("the NIC dropped %d frames as malformed", st.Drops[hal.ReasonMalformed])
	}
}

// A VM behind softnic and a VM on a plain Linux host (a kernel vxlan
// device and a bridge, everything with the kernel's default offloads),
// over softnic's uplink. The Linux host's VXLAN packets reach the uplink
// as the kernel leaves them: inner checksums partial, TCP and UDP GSO
// super-frames of tens of KB encapsulated whole; softnic's VM gets them
// decapsulated, cut and with complete inner checksums, and the Linux VM
// gets softnic's encapsulated segments with complete checksums. Both ways,
// TCP and UDP, IPv4 and IPv6 inner packets; the uplink terminates tunnels
// for its own address only (hal.TunnelTerminator). Over an IPv4 underlay
// (the outer UDP checksum is Linux's by default, 0 from softnic) and an
// IPv6 one (where both compute it, and the segments of a tunnelled
// super-frame need theirs).
func TestOffloadsThroughVXLANPeer(t *testing.T) {
	t.Run("ipv4-underlay", func(t *testing.T) { vxlanPeer(t, false) })
	t.Run("ipv6-underlay", func(t *testing.T) { vxlanPeer(t, true) })
}

func vxlanPeer(t *testing.T, v6 bool) {
	tag, plen, mtu := "ox4", "/24", "1450" // VXLAN adds 50 bytes over IPv4, 70 over IPv6
	paLocal, paPeer := netip.MustParseAddr("198.19.0.1"), netip.MustParseAddr("198.19.0.2")
	if v6 {
		tag, plen, mtu = "ox6", "/64", "1430"
		paLocal, paPeer = netip.MustParseAddr("2001:db8:ff::1"), netip.MustParseAddr("2001:db8:ff::2")
	}
	l := newLab(t, tag)
	host, vm, peer, pvm := l.ns("host"), l.ns("vm"), l.ns("peer"), l.ns("pvm")
	macPeerVM, macUp, macPeer := hal.MustMAC("02:00:00:0b:00:02"), hal.MustMAC("02:00:00:00:01:00"), hal.MustMAC("02:00:00:00:02:00")
	l.veth(host, "vm1", vm, "eth0", macVMA)
	l.veth(host, "up0", peer, "up0p", macPeer)
	l.veth(peer, "pv0", pvm, "eth0", macPeerVM)
	// The plain Linux host.
	ip(t, "-n", peer, "addr", "replace", paPeer.String()+plen, "dev", "up0p", "nodad")
	ip(t, "-n", peer, "neigh", "replace", paLocal.String(), "lladdr", macUp.String(), "dev", "up0p", "nud", "permanent")
	ip(t, "-n", peer, "link", "add", "vx0", "type", "vxlan", "id", "42", "local", paPeer.String(), "remote", paLocal.String(),
		"dstport", "4789", "dev", "up0p")
	ip(t, "-n", peer, "link", "add", "br0", "type", "bridge")
	ip(t, "-n", peer, "link", "set", "vx0", "master", "br0")
	ip(t, "-n", peer, "link", "set", "pv0", "master", "br0")
	ip(t, "-n", peer, "link", "set", "vx0", "up")
	ip(t, "-n", peer, "link", "set", "br0", "up")
	// The VMs: an MTU that leaves room for VXLAN on a 1500-byte underlay,
	// as the Linux vxlan device's own does.
	for _, c := range []struct {
		ns, v4, v6, peer4, peer6 string
		peerMAC                  hal.MAC
	}{
		{vm, "198.18.6.1/24", "2001:db8:6::1/64", "198.18.6.2", "2001:db8:6::2", macPeerVM},
		{pvm, "198.18.6.2/24", "2001:db8:6::2/64", "198.18.6.1", "2001:db8:6::1", macVMA},
	} {
		ip(t, "-n", c.ns, "link", "set", "eth0", "mtu", mtu)
		ip(t, "-n", c.ns, "addr", "replace", c.v4, "dev", "eth0")
		ip(t, "-n", c.ns, "addr", "replace", c.v6, "dev", "eth0", "nodad")
		ip(t, "-n", c.ns, "neigh", "replace", c.peer4, "lladdr", c.peerMAC.String(), "dev", "eth0", "nud", "permanent")
		ip(t, "-n", c.ns, "neigh", "replace", c.peer6, "lladdr", c.peerMAC.String(), "dev", "eth0", "nud", "permanent")
	}

	nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm1", Kind: hal.PortVPort, MAC: macVMA},
		{Name: "up0", Kind: hal.PortUplink, MAC: macUp, MTU: 1500},
	}, RingSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	var out, in hal.Match
	out.InPort(1)
	in.InPort(2).Tunnel(hal.EncapVXLAN, 42)
	apply(t, nic,
		hal.Rule{ID: 1, Match: out, Actions: []hal.Action{hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 42,
			Src: paLocal, Dst: paPeer, SrcMAC: macUp, DstMAC: macPeer}), hal.Output(2)}},
		hal.Rule{ID: 2, Match: in, Actions: []hal.Action{hal.Decap(), hal.Output(1)}})
	if err := nic.SetTunnelEndpoint(t.Context(), hal.TunnelEndpoint{Port: 2, Addrs: []netip.Addr{paLocal}}); err != nil {
		t.Fatal(err)
	}
	bs := bind(t, host, nic, "vm1", "up0")

	capVM := startCapture(t, vm, "eth0", 4000, 6001, 6003, 5201)
	capWire := startCapture(t, peer, "up0p", 4000, 6001, 6003, 5201)
	u4, p4 := udpConn(t, vm, "198.18.6.1:6001"), udpConn(t, pvm, "198.18.6.2:6002")
	u6, p6 := udpConn(t, vm, "[2001:db8:6::1]:6003"), udpConn(t, pvm, "[2001:db8:6::2]:6004")
	udpExchange(t, u4, p4)
	udpExchange(t, p4, u4)
	udpExchange(t, u6, p6)
	udpExchange(t, p6, u6)

	d := bulkTCP(t, pvm, "198.18.6.2:5201", vm, bulkBytes)
	t.Logf("TCP/IPv4 softnic's VM -> Linux VM over VXLAN: %d MiB in %v: %.2f Gbit/s", bulkBytes>>20, d, gbps(bulkBytes, d))
	d = bulkTCP(t, vm, "[2001:db8:6::1]:5201", pvm, bulkBytes)
	t.Logf("TCP/IPv6 Linux VM -> softnic's VM over VXLAN: %d MiB in %v: %.2f Gbit/s", bulkBytes>>20, d, gbps(bulkBytes, d))
	d = bulkTCP(t, vm, "198.18.6.1:5202", pvm, bulkBytes)
	t.Logf("TCP/IPv4 Linux VM -> softnic's VM over VXLAN: %d MiB in %v: %.2f Gbit/s", bulkBytes>>20, d, gbps(bulkBytes, d))

	for _, c := range []struct {
		name string
		c    *capture
	}{{"softnic's VM", capVM}, {"the wire (Linux host's uplink)", capWire}} {
		tcp, udp := c.c.checkFrames(t, c.name)
		t.Logf("%s: %d TCP and %d UDP frames checked", c.name, tcp, udp)
		if tcp == 0 || udp < 16 {
			t.Errorf("%s: %d TCP and %d UDP frames captured: too few to say anything", c.name, tcp, udp)
		}
	}
	noCsumErrors(t, vm, pvm, peer)
	for _, b := range bs {
		s := b.Stats()
		t.Logf("binding %s: %+v", b.Interface(), s)
		if s.RxDropped != 0 || s.TxErrors != 0 {
			t.Errorf("binding %s dropped frames: %+v", b.Interface(), s)
		}
		if s.RxGSO == 0 || s.RxCsum == 0 {
			t.Errorf("binding %s cut %d GSO frames and completed %d checksums: the test did not exercise the offloads", b.Interface(), s.RxGSO, s.RxCsum)
		}
	}
	st, err := nic.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []hal.Reason{hal.ReasonMalformed, hal.ReasonNotLocal, hal.ReasonMTU} {
		if st.Drops[r] != 0 || st.Exceptions[r] != 0 {
			t.Errorf("the NIC dropped %d and sent the host %d frames for %s", st.Drops[r], st.Exceptions[r], r)
		}
	}
}

// A VM whose MTU leaves no room for the encapsulation: its GSO
// super-frame is cut to segments of its own MTU, each too big for the
// uplink once encapsulated, and each goes to the host as it arrived
// (hal.ReasonMTU, for the vswitch to answer), not dropped as malformed.
func TestOffloadsSegmentOverEgressMTU(t *testing.T) {
	l := newLab(t, "om")
	host, vm, far := l.ns("host"), l.ns("vm"), l.ns("wire")
	l.veth(host, "vm1", vm, "eth0", macVMA)
	l.veth(host, "up0", far, "up0p", macVMB)
	ip(t, "-n", vm, "addr", "replace", "198.18.7.1/24", "dev", "eth0")
	ip(t, "-n", vm, "neigh", "replace", "198.18.7.2", "lladdr", macVMB.String(), "dev", "eth0", "nud", "permanent")
	nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm1", Kind: hal.PortVPort, MAC: macVMA},
		{Name: "up0", Kind: hal.PortUplink, MTU: 1500},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	var m hal.Match
	m.InPort(1).EthType(hal.EtherTypeIPv4).Proto(hal.ProtoUDP).L4Dst(7000)
	apply(t, nic, hal.Rule{ID: 9, Match: m, Actions: []hal.Action{hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 42,
		Src: netip.MustParseAddr("198.19.0.1"), Dst: netip.MustParseAddr("198.19.0.2")}), hal.Output(2)}})
	bs := bind(t, host, nic, "vm1", "up0")

	c := udpConn(t, vm, "198.18.7.1:6000")
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 1472) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if _, err := c.WriteToUDP(make([]byte, 2*1472), &net.UDPAddr{IP: net.IPv4(198, 18, 7, 2), Port: 7000}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	batch := make([]hal.Exception, 16)
	for i := range batch {
		batch[i].Buf = make([]byte, 2048)
	}
	got := 0
	for got < 2 {
		n, err := nic.ReadExceptions(ctx, batch)
		if err != nil {
			t.Fatalf("%d of 2 segments reached the host: %v", got, err)
		}
		for _, e := range batch[:n] {
			if e.InPort == 1 && e.Reason == hal.ReasonMTU {
				if e.Rule != 9 || e.Len != 14+1500 {
					t.Fatalf("exception: rule %d, %d bytes; want rule 9, a %d-byte segment", e.Rule, e.Len, 14+1500)
				}
				got++
			}
		}
	}
	if s := bs[0].Stats(); s.RxGSO != 1 {
		t.Fatalf("binding: %+v: the datagrams did not arrive as one GSO frame", s)
	}
	st, err := nic.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops[hal.ReasonMalformed] != 0 || st.Exceptions[hal.ReasonMTU] != 2 {
		t.Fatalf("malformed drops %d, MTU exceptions %d", st.Drops[hal.ReasonMalformed], st.Exceptions[hal.ReasonMTU])
	}
}

// BenchmarkBulkTCP is a TCP stream from one VM to another through softnic
// (TestOffloadsBetweenTwoVMs's topology, default offloads: the bindings
// cut 64 KB TSO frames and complete checksums), b.N times 4 MiB over one
// connection per round; Gbit/s is the payload rate. linux-bridge is the
// same VMs on a kernel bridge instead, for scale. It measures the whole
// path, the VMs' kernels and the test's byte check included, on however
// many cores the machine lends it.
func BenchmarkBulkTCP(b *testing.B) {
	for _, c := range []struct {
		name  string
		setup func(testing.TB) (string, string)
	}{
		{"softnic", func(tb testing.TB) (string, string) { a, vb, _, _ := twoVMs(tb, "ob"); return a, vb }},
		{"linux-bridge", bridgedVMs},
	} {
		b.Run(c.name, func(b *testing.B) {
			a, vb := c.setup(b)
			const size = 4 << 20
			var total time.Duration
			b.SetBytes(size)
			for i := 0; b.Loop(); i++ {
				total += bulkTCP(b, vb, "198.18.5.2:"+strconv.Itoa(5300+i%100), a, size)
			}
			b.ReportMetric(gbps(size*b.N, total), "Gbit/s")
		})
	}
}

// bridgedVMs is twoVMs with a Linux bridge where softnic would be.
func bridgedVMs(tb testing.TB) (a, b string) {
	l := newLab(tb, "obr")
	host := l.ns("host")
	a, b = l.ns("vma"), l.ns("vmb")
	l.veth(host, "vm1", a, "eth0", macVMA)
	l.veth(host, "vm2", b, "eth0", macVMB)
	ip(tb, "-n", host, "link", "add", "br0", "type", "bridge")
	ip(tb, "-n", host, "link", "set", "vm1", "master", "br0")
	ip(tb, "-n", host, "link", "set", "vm2", "master", "br0")
	ip(tb, "-n", host, "link", "set", "br0", "up")
	ip(tb, "-n", a, "addr", "replace", "198.18.5.1/24", "dev", "eth0")
	ip(tb, "-n", b, "addr", "replace", "198.18.5.2/24", "dev", "eth0")
	ip(tb, "-n", a, "neigh", "replace", "198.18.5.2", "lladdr", macVMB.String(), "dev", "eth0", "nud", "permanent")
	ip(tb, "-n", b, "neigh", "replace", "198.18.5.1", "lladdr", macVMA.String(), "dev", "eth0", "nud", "permanent")
	return a, b
}
