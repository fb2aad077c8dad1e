//go:build linux

package tcflower

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
)

// These tests run real sockets in namespaces that keep the kernel's default
// offloads (a veth has transmit checksum offload and TSO on): the VMs'
// kernels leave checksums to the device (CHECKSUM_PARTIAL) and hand over
// segments of up to 64 KiB, as a VM with a virtio NIC does. Whatever the
// NIC's rules do to such frames (rewrite them with pedit and csum,
// encapsulate them, decapsulate them), a receiver must find every
// checksum right: nstat's UdpInCsumErrors and TcpInCsumErrors stay 0, the
// data arrive whole, and every frame captured on the way, completed as a
// NIC completes a checksum left to it, carries the right one.

// nstatCounters runs `nstat -asz` in ns and returns the counters named.
func nstatCounters(t *testing.T, ns *netNS, names ...string) map[string]uint64 {
	t.Helper()
	args := append([]string{"netns", "exec", ns.Name, "nstat", "-asz"}, names...)
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("nstat in %s: %v: %s", ns.Name, err, out)
	}
	got := map[string]uint64{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 {
			if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				got[f[0]] = v
			}
		}
	}
	for _, n := range names {
		if _, ok := got[n]; !ok {
			t.Fatalf("nstat in %s does not report %s:\n%s", ns.Name, n, out)
		}
	}
	return got
}

func checkNoCsumErrors(t *testing.T, nss ...*netNS) {
	t.Helper()
	for _, ns := range nss {
		c := nstatCounters(t, ns, "UdpInCsumErrors", "TcpInCsumErrors", "UdpInDatagrams", "TcpInSegs")
		t.Logf("%s: %v", ns.Name, c)
		if c["UdpInCsumErrors"] != 0 || c["TcpInCsumErrors"] != 0 {
			t.Errorf("%s: checksum errors: UdpInCsumErrors %d, TcpInCsumErrors %d", ns.Name, c["UdpInCsumErrors"], c["TcpInCsumErrors"])
		}
	}
}

// l4ChecksumOK verifies the TCP or UDP checksum of an IPv4 frame (a UDP
// checksum of 0 means none), and says where its transport header starts
// (-1 for frames it does not check, which pass).
func l4ChecksumOK(f []byte) (ok bool, why string, l4off int) {
	if len(f) < 34 || binary.BigEndian.Uint16(f[12:]) != hal.EtherTypeIPv4 {
		return true, "", -1
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	if ihl < 20 || tot > len(ip) || tot < ihl || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
		return true, "", -1
	}
	proto := ip[9]
	l4 := ip[ihl:tot]
	if proto == hal.ProtoUDP && len(l4) >= 8 && binary.BigEndian.Uint16(l4[6:]) == 0 {
		return true, "", -1
	}
	if proto != hal.ProtoUDP && proto != hal.ProtoTCP {
		return true, "", -1
	}
	var s uint32
	for i := 12; i < 20; i += 2 {
		s += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	s += uint32(proto) + uint32(len(l4))
	for i := 0; i+1 < len(l4); i += 2 {
		s += uint32(binary.BigEndian.Uint16(l4[i:]))
	}
	if len(l4)%2 == 1 {
		s += uint32(l4[len(l4)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	if s != 0xffff {
		return false, fmt.Sprintf("proto %d %v -> %v, %d bytes", proto, net.IP(ip[12:16]), net.IP(ip[16:20]), len(l4)), 14 + ihl
	}
	return true, "", 14 + ihl
}

// capture reads a packet socket until stop, completing checksums the
// kernel left to the device, and checks every TCP and UDP checksum
// (inner frames of VXLAN included).
type capture struct {
	ps                   *packetSock
	mu                   sync.Mutex
	frames, partial, gso int
	bad                  []string
	done                 chan struct{}
}

func startCapture(t *testing.T, ns *netNS, ifname string, stop <-chan struct{}) *capture {
	c := &capture{ps: openPacketSock(t, ns, ifname), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536+vnetHdrLen)
		oob := make([]byte, 256)
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		_ = unix.SetsockoptTimeval(c.ps.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		for {
			select {
			case <-stop:
				return
			default:
			}
			f, err := c.ps.recvFrame(buf, oob, 0)
			if err != nil {
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				c.mu.Lock()
				c.bad = append(c.bad, "capture: "+err.Error())
				c.mu.Unlock()
				return
			}
			c.check(f)
		}
	}()
	return c
}

func (c *capture) check(f frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames++
	if f.partial {
		c.partial++
	}
	if f.gso != 0 {
		c.gso++
	}
	// A frame for segmentation carries one checksum to complete, the one
	// at csumStart (the inner transport header of a tunnelled one); the
	// device writes the others per segment (an outer UDP checksum holds
	// only a seed until then), so only that one is checked.
	what, base := "frame", 0
	for b := f.data; b != nil; {
		ok, why, l4 := l4ChecksumOK(b)
		if !ok && (f.gso == 0 || base+l4 == f.csumStart) && len(c.bad) < 5 {
			c.bad = append(c.bad, fmt.Sprintf("%s with a wrong checksum (left to the device %v, GSO type %d): %s", what, f.partial, f.gso, why))
		}
		in := vxlanInner(b)
		if in != nil {
			base += len(b) - len(in)
		}
		b, what = in, "inner frame"
	}
}

// vxlanInner returns the inner frame of an IPv4 VXLAN frame, or nil.
func vxlanInner(f []byte) []byte {
	if len(f) < 14+20+8+8+14 || binary.BigEndian.Uint16(f[12:]) != hal.EtherTypeIPv4 || f[14+9] != hal.ProtoUDP {
		return nil
	}
	ihl := int(f[14]&0x0f) * 4
	u := f[14+ihl:]
	if len(u) < 16+14 || binary.BigEndian.Uint16(u[2:]) != hal.PortVXLAN {
		return nil
	}
	return u[16:]
}

func (c *capture) report(t *testing.T, where string) {
	t.Helper()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Logf("capture on %s: %d frames, %d with the checksum left to the device, %d for segmentation", where, c.frames, c.partial, c.gso)
	for _, b := range c.bad {
		t.Errorf("%s: %s", where, b)
	}
}

// exchange sends UDP datagrams and a TCP stream from client (in ns cns) to
// addr, served from sns, and checks that everything arrives whole: the
// datagrams one by one, the stream (large enough for TSO segments) by its
// digest.
func exchange(t *testing.T, cns, sns *netNS, listen, addr netip.Addr) {
	t.Helper()
	var uc *net.UDPConn
	var tl *net.TCPListener
	err := inNetNS(sns.Path, func() error {
		var err error
		if uc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: listen.AsSlice(), Port: 7000}); err != nil {
			return err
		}
		tl, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: listen.AsSlice(), Port: 7001})
		return err
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", sns.Name, err)
	}
	defer uc.Close()
	defer tl.Close()

	// UDP: sizes from a few bytes to a full inner MTU.
	sizes := []int{1, 100, 777, 1300}
	var cu *net.UDPConn
	if err := inNetNS(cns.Path, func() error {
		var err error
		cu, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: addr.AsSlice(), Port: 7000})
		return err
	}); err != nil {
		t.Fatalf("UDP socket in %s: %v", cns.Name, err)
	}
	defer cu.Close()
	buf := make([]byte, 2048)
	for _, n := range sizes {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		got := false
		for try := 0; try < 3 && !got; try++ {
			if _, err := cu.Write(msg); err != nil {
				t.Fatalf("UDP write: %v", err)
			}
			_ = uc.SetReadDeadline(time.Now().Add(2 * time.Second))
			k, _, err := uc.ReadFromUDP(buf)
			if err == nil {
				got = bytes.Equal(buf[:k], msg)
				if !got {
					t.Errorf("UDP datagram of %d bytes arrived as %d bytes, changed", n, k)
					got = true
				}
			}
		}
		if !got {
			t.Errorf("UDP datagram of %d bytes to %s never arrived", n, addr)
		}
	}

	// TCP: 1 MiB each way.
	const size = 1 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	want := sha256.Sum256(data)
	srvErr := make(chan error, 1)
	go func() {
		_ = tl.SetDeadline(time.Now().Add(60 * time.Second))
		c, err := tl.AcceptTCP()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		if _, err := io.CopyN(h, c, size); err != nil {
			srvErr <- fmt.Errorf("server read: %w", err)
			return
		}
		if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
			srvErr <- fmt.Errorf("the stream arrived changed")
			return
		}
		_, err = c.Write(data)
		srvErr <- err
	}()
	var cc *net.TCPConn
	if err := inNetNS(cns.Path, func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err := d.Dial("tcp4", netip.AddrPortFrom(addr, 7001).String())
		if err == nil {
			cc = c.(*net.TCPConn)
		}
		return err
	}); err != nil {
		t.Fatalf("TCP connect from %s to %s: %v", cns.Name, addr, err)
	}
	defer cc.Close()
	_ = cc.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := cc.Write(data); err != nil {
		t.Fatalf("TCP write: %v", err)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, cc, size); err != nil {
		t.Fatalf("TCP read of the echo: %v", err)
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("the echoed stream arrived changed")
	}
	if err := <-srvErr; err != nil {
		t.Errorf("TCP server: %v", err)
	}
}

// vmNS moves the topology's VM-side veth ifname into a namespace of its
// own with addr and mac, as a VM with its default offloads.
func vmNS(t *testing.T, tp *topology, prefix, ifname string, mac hal.MAC, addr string, mtu int) *netNS {
	ns := newNetNS(t, prefix)
	tp.ns.ip("link", "set", ifname, "netns", ns.Name)
	ns.ip("link", "set", ifname, "address", mac.String(), "mtu", strconv.Itoa(mtu))
	ns.ip("addr", "replace", addr+"/24", "dev", ifname)
	ns.ip("link", "set", "lo", "up")
	ns.ip("link", "set", ifname, "up")
	return ns
}

// TestKernelPartialChecksumsRewrite: vm1 talks to a virtual address that
// rules rewrite (pedit + csum) to vm2's, and back.
func TestKernelPartialChecksumsRewrite(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	vmA := vmNS(t, tp, "tva", "vm1", macVM1, "192.0.2.1", 1500)
	vmB := vmNS(t, tp, "tvb", "vm2", macVM2, "192.0.2.2", 1500)
	vip := netip.MustParseAddr("192.0.2.99")
	gw := hal.MustMAC("02:4e:50:00:09:09")
	vmA.ip("neigh", "replace", vip.String(), "lladdr", gw.String(), "dev", "vm1", "nud", "permanent")
	vmB.ip("neigh", "replace", "192.0.2.1", "lladdr", gw.String(), "dev", "vm2", "nud", "permanent")
	var out, back hal.Match
	out.InPort(1).IPDst(netip.PrefixFrom(vip, 32))
	back.InPort(2).IPSrc(netip.MustParsePrefix("192.0.2.2/32")).IPDst(netip.MustParsePrefix("192.0.2.1/32"))
	apply(t, n,
		hal.AddOp(hal.Rule{ID: 1, Priority: 1, Match: out, Actions: []hal.Action{hal.SetEthDst(macVM2), hal.SetIPDst(netip.MustParseAddr("192.0.2.2")), hal.Output(2)}}),
		hal.AddOp(hal.Rule{ID: 2, Priority: 1, Match: back, Actions: []hal.Action{hal.SetEthDst(macVM1), hal.SetIPSrc(vip), hal.Output(1)}}),
	)
	stop := make(chan struct{})
	capB := startCapture(t, vmB, "vm2", stop)
	capA := startCapture(t, vmA, "vm1", stop)
	exchange(t, vmA, vmB, netip.MustParseAddr("192.0.2.2"), vip)
	close(stop)
	capB.report(t, "vm2 (rewritten toward vm2)")
	capA.report(t, "vm1 (rewritten back)")
	checkNoCsumErrors(t, vmA, vmB)
	if d := dumpAll(t, n); d[1].Counters.Packets == 0 || d[2].Counters.Packets == 0 {
		t.Errorf("the rewrite rules counted %d and %d packets: the traffic did not take them", d[1].Counters.Packets, d[2].Counters.Packets)
	}
}

// TestKernelPartialChecksumsTunnel: vm1 talks to a remote host's overlay
// address through an encap rule (VXLAN out of the uplink) and a decap rule
// (back from the remote host's own VXLAN device), with default offloads on
// every side.
func TestKernelPartialChecksumsTunnel(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	// The inner MTU leaves room for the outer headers on the 1500-byte
	// underlay, as a VM behind VXLAN has.
	vmA := vmNS(t, tp, "tva", "vm1", macVM1, "192.0.2.1", 1450)
	r := tp.remote
	r.ip("link", "add", "vxr", "type", "vxlan", "id", "42", "local", underlayRemote, "remote", underlayLocal, "dstport", "4789", "dev", "up1")
	r.ip("link", "set", "vxr", "address", "02:4e:50:00:02:22", "up")
	r.ip("addr", "replace", "192.0.2.22/24", "dev", "vxr")
	r.ip("neigh", "replace", "192.0.2.1", "lladdr", macVM1.String(), "dev", "vxr", "nud", "permanent")
	vmA.ip("neigh", "replace", "192.0.2.22", "lladdr", "02:4e:50:00:02:22", "dev", "vm1", "nud", "permanent")
	var out, back hal.Match
	out.InPort(1).IPDst(netip.MustParsePrefix("192.0.2.22/32"))
	back.Tunnel(hal.EncapVXLAN, 42).TunSrc(netip.MustParseAddr(underlayRemote))
	enc := hal.Encap{Kind: hal.EncapVXLAN, VNI: 42, Src: netip.MustParseAddr(underlayLocal), Dst: netip.MustParseAddr(underlayRemote)}
	apply(t, n,
		hal.AddOp(hal.Rule{ID: 1, Priority: 1, Match: out, Actions: []hal.Action{hal.EncapWith(enc), hal.Output(3)}}),
		hal.AddOp(hal.Rule{ID: 2, Priority: 1, Match: back, Actions: []hal.Action{hal.Decap(), hal.Output(1)}}),
	)
	// The tunnel endpoint on: the remote's frames are for our PA and MAC.
	if err := n.SetTunnelEndpoint(context.Background(), hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{netip.MustParseAddr(underlayLocal)}}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	capWire := startCapture(t, r, "up1", stop)
	capA := startCapture(t, vmA, "vm1", stop)
	exchange(t, vmA, r, netip.MustParseAddr("192.0.2.22"), netip.MustParseAddr("192.0.2.22"))
	close(stop)
	capWire.report(t, "the underlay (encapsulated both ways)")
	capA.report(t, "vm1 (decapsulated)")
	checkNoCsumErrors(t, vmA, r)
	if d := dumpAll(t, n); d[1].Counters.Packets == 0 || d[2].Counters.Packets == 0 {
		t.Errorf("the encap and decap rules counted %d and %d packets: the traffic did not take them", d[1].Counters.Packets, d[2].Counters.Packets)
	}
	if nl := notLocal(t, n); nl != 0 {
		t.Errorf("%d of the remote host's frames were dropped as not local", nl)
	}
}

// TestCaptureCatchesStaleSeed: the capture's check fails a frame whose
// sender left the checksum to the device when an address changed and the
// pseudo-header sum in the checksum field did not follow (what pedit and
// csum leave in a TSO frame), and passes it when it did.
func TestCaptureCatchesStaleSeed(t *testing.T) {
	f := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.99", 1000, 2000)
	u := f[34:]
	seed := func(src, dst [4]byte) uint16 {
		var s uint32
		for _, b := range [][]byte{src[:], dst[:]} {
			s += uint32(binary.BigEndian.Uint16(b)) + uint32(binary.BigEndian.Uint16(b[2:]))
		}
		s += uint32(hal.ProtoUDP) + uint32(len(u))
		for s > 0xffff {
			s = s&0xffff + s>>16
		}
		return uint16(s)
	}
	partial := func(dstSeed [4]byte) []byte {
		b := append([]byte(nil), f...)
		copy(b[14+16:], []byte{192, 0, 2, 2}) // the rewrite
		binary.BigEndian.PutUint16(b[14+10:], 0)
		binary.BigEndian.PutUint16(b[14+10:], ipChecksum(b[14:34]))
		binary.BigEndian.PutUint16(b[34+6:], seed(mustAddr4("192.0.2.1"), dstSeed))
		if err := completeChecksum(b, 34, 6); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if ok, _, _ := l4ChecksumOK(partial(mustAddr4("192.0.2.2"))); !ok {
		t.Errorf("a seed that followed the rewrite fails the check")
	}
	if ok, _, _ := l4ChecksumOK(partial(mustAddr4("192.0.2.99"))); ok {
		t.Errorf("a stale seed (the old destination's) passes the check")
	}
	if ok, _, _ := l4ChecksumOK(f); !ok {
		t.Errorf("a frame with a full checksum fails the check")
	}
}

// TestKernelExceptionPartialChecksums: frames a VM's kernel left to the
// device for its checksum reach the host by the exception path completed,
// as a wire would carry them, so that the host can reinject them as they
// are: a host that carries a UDP exchange and a TCP connection between two
// VMs with default offloads (every frame a miss, read and injected by the
// test, as a slow path does) leaves no checksum error in either VM.
func TestKernelExceptionPartialChecksums(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	if !n.Capabilities().ExceptionPath {
		t.Fatal("no exception path")
	}
	vmA := vmNS(t, tp, "tva", "vm1", macVM1, "192.0.2.1", 1500)
	vmB := vmNS(t, tp, "tvb", "vm2", macVM2, "192.0.2.2", 1500)
	vmA.ip("neigh", "replace", "192.0.2.2", "lladdr", macVM2.String(), "dev", "vm1", "nud", "permanent")
	vmB.ip("neigh", "replace", "192.0.2.1", "lladdr", macVM1.String(), "dev", "vm2", "nud", "permanent")
	// The slow path: every miss from one vport is injected, as it is,
	// out of the other; the frames must carry right checksums.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	relayed := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		batch := make([]hal.Exception, 16)
		for i := range batch {
			batch[i].Buf = make([]byte, 65536+64)
		}
		for ctx.Err() == nil {
			k, err := n.ReadExceptions(ctx, batch)
			if err != nil {
				return
			}
			for _, x := range batch[:k] {
				if x.Truncated || (x.InPort != 1 && x.InPort != 2) {
					continue
				}
				f := append([]byte(nil), x.Frame()...)
				if ok, why, _ := l4ChecksumOK(f); !ok {
					mu.Lock()
					bad = append(bad, why)
					mu.Unlock()
				}
				_ = n.Inject(ctx, 3-x.InPort, [][]byte{f})
				mu.Lock()
				relayed++
				mu.Unlock()
			}
		}
	}()
	exchange(t, vmA, vmB, netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.2"))
	cancel()
	wg.Wait()
	mu.Lock()
	t.Logf("%d frames carried by the test's slow path", relayed)
	for i, b := range bad {
		if i < 5 {
			t.Errorf("a frame reached the host with a wrong checksum: %s", b)
		}
	}
	mu.Unlock()
	checkNoCsumErrors(t, vmA, vmB)
}
