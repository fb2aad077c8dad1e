//go:build linux

package afpacket_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

func ipIn(t *testing.T, ns string, args ...string) {
	t.Helper()
	args = append([]string{"-n", strings.TrimPrefix(ns, "/run/netns/")}, args...)
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v\n%s", args, err, out)
	}
}

// udpSender opens a UDP socket on local inside ns; segment > 0 sets
// UDP_SEGMENT, so that each write is one GSO super-frame of datagrams of
// that size.
func udpSender(t *testing.T, ns, local string, segment int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := nsexec.Do(ns, func() error {
		pc, err := net.ListenPacket("udp", local)
		if err != nil {
			return err
		}
		c = pc.(*net.UDPConn)
		if segment == 0 {
			return nil
		}
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, segment)
		}); err != nil {
			return err
		}
		return serr
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recvUDP waits up to 10s for a UDP frame to port on s and returns a copy
// with its virtio-net header; other frames (IPv6 solicitations …) are
// passed over.
func recvUDP(t *testing.T, s *afpacket.Socket, port uint16) ([]byte, wire.VirtioNetHdr) {
	t.Helper()
	buf := make([]byte, 1<<17)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		f, h, _, err := s.RecvVnet(buf, 0)
		if errors.Is(err, afpacket.ErrTimeout) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var k hal.FlowKey
		var l wire.Layout
		if err := wire.Parse(f, 0, &k, &l); err == nil && k.Proto == hal.ProtoUDP && k.L4Dst == port {
			return append([]byte(nil), f...), h
		}
	}
	t.Fatalf("no UDP frame to port %d on %s", port, s.Name())
	return nil, wire.VirtioNetHdr{}
}

// What the kernel hands a PACKET_VNET_HDR socket on the receiving end of a
// veth for frames its own stack sent on the other end, with the veth's
// default offloads: a UDP datagram has a partial checksum (NEEDS_CSUM at
// the UDP header), a UDP_SEGMENT write arrives as one GSO_UDP_L4
// super-frame, and the same through a VXLAN device arrives as one GSO
// super-frame too, with the inner packet's plain GSO type and CsumStart at
// the inner UDP header (the tunnel is not in the header). The checksum
// completion and the Segmenter make valid frames of each.
func TestVnetHdrWhatTheKernelHandsOver(t *testing.T) {
	ns := vethNS(t)
	ipIn(t, ns, "addr", "replace", "198.18.0.1/24", "dev", "npa")
	ipIn(t, ns, "neigh", "replace", "198.18.0.2", "lladdr", "02:00:00:00:00:0b", "dev", "npa", "nud", "permanent")
	ipIn(t, ns, "link", "add", "vx0", "type", "vxlan", "id", "42", "local", "198.18.0.1", "remote", "198.18.0.2",
		"dstport", "4789", "dev", "npa")
	ipIn(t, ns, "addr", "replace", "198.51.100.1/24", "dev", "vx0")
	ipIn(t, ns, "link", "set", "vx0", "up")
	ipIn(t, ns, "neigh", "replace", "198.51.100.2", "lladdr", "02:00:00:00:00:0c", "dev", "vx0", "nud", "permanent")
	b := open(t, ns, "npb", afpacket.Options{SkipOutgoing: true, Promisc: true, VnetHdr: true, PollInterval: 20 * time.Millisecond})

	checkL4 := func(name string, f []byte) {
		t.Helper()
		var k hal.FlowKey
		var l wire.Layout
		if err := wire.Parse(f, 0, &k, &l); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		seg := f[l.L4:l.End]
		src, dst := f[l.L3+12:l.L3+16], f[l.L3+16:l.L3+20]
		if wire.Checksum(seg, wire.PseudoHeaderSum(src, dst, hal.ProtoUDP, len(seg))) != 0 {
			t.Fatalf("%s: UDP checksum does not verify", name)
		}
	}

	// One datagram: partial checksum.
	plain := udpSender(t, ns, "198.18.0.1:0", 0)
	if _, err := plain.WriteTo(bytes.Repeat([]byte("p"), 101), &net.UDPAddr{IP: net.ParseIP("198.18.0.2"), Port: 7001}); err != nil {
		t.Fatal(err)
	}
	f, h := recvUDP(t, b, 7001)
	if !h.NeedsCsum() || h.IsGSO() || h.CsumStart != 34 || h.CsumOffset != 6 {
		t.Fatalf("datagram: header %+v, want NEEDS_CSUM at 34+6 and no GSO", h)
	}
	if err := wire.CompleteChecksum(f, int(h.CsumStart), int(h.CsumOffset)); err != nil {
		t.Fatal(err)
	}
	checkL4("datagram", f)

	var sg wire.Segmenter
	segment := func(name string, f []byte, h *wire.VirtioNetHdr, want int) {
		t.Helper()
		if err := sg.Init(f, h, 1500); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		buf := make([]byte, 2048)
		n := 0
		for !sg.Done() {
			k, err := sg.Next(buf)
			if err != nil {
				t.Fatal(err)
			}
			checkL4(name, buf[:k])
			n++
		}
		if n != want {
			t.Fatalf("%s: %d segments, want %d", name, n, want)
		}
	}

	// UDP_SEGMENT: one super-frame of three datagrams.
	gso := udpSender(t, ns, "198.18.0.1:0", 1000)
	if _, err := gso.WriteTo(bytes.Repeat([]byte("g"), 2500), &net.UDPAddr{IP: net.ParseIP("198.18.0.2"), Port: 7002}); err != nil {
		t.Fatal(err)
	}
	f, h = recvUDP(t, b, 7002)
	if h.GSOType != wire.VirtioNetHdrGSOUDPL4 || h.GSOSize != 1000 || !h.NeedsCsum() || h.CsumStart != 34 || len(f) != 14+20+8+2500 {
		t.Fatalf("UDP GSO: %d bytes, header %+v", len(f), h)
	}
	segment("UDP GSO", f, &h, 3)

	// The same through VXLAN: the kernel reports the inner packet's GSO
	// type and checksum start (14+20+8+8 outer bytes, then 14+20).
	vx := udpSender(t, ns, "198.51.100.1:0", 1000)
	if _, err := vx.WriteTo(bytes.Repeat([]byte("v"), 2500), &net.UDPAddr{IP: net.ParseIP("198.51.100.2"), Port: 7003}); err != nil {
		t.Fatal(err)
	}
	f, h = recvUDP(t, b, 7003)
	if h.GSOType != wire.VirtioNetHdrGSOUDPL4 || h.GSOSize != 1000 || !h.NeedsCsum() || h.CsumStart != 84 || h.CsumOffset != 6 {
		t.Fatalf("tunnelled UDP GSO: %d bytes, header %+v", len(f), h)
	}
	segment("tunnelled UDP GSO", f, &h, 3)
}

// Send and SendBatch on a VnetHdr socket put the frames on the wire as
// they are (the header is not part of them); a frame longer than the
// receive buffer is ErrTruncated for RecvVnet, cut for Recv; receiving and
// sending allocate nothing.
func TestVnetHdrSendRecv(t *testing.T) {
	ns := vethNS(t)
	a := open(t, ns, "npa", afpacket.Options{SkipOutgoing: true, VnetHdr: true})
	b := open(t, ns, "npb", afpacket.Options{SkipOutgoing: true, Promisc: true, PollInterval: 20 * time.Millisecond})
	buf := make([]byte, 2048)
	one := frame(1, 0, 0)
	if err := a.Send(one); err != nil {
		t.Fatal(err)
	}
	await(t, b, buf, one)
	batch := [][]byte{frame(2, 0, 0), frame(3, 0, 0), frame(4, 0x8100, 7)}
	if n, err := a.SendBatch(batch); n != len(batch) || err != nil {
		t.Fatalf("SendBatch: %d, %v", n, err)
	}
	for _, f := range batch {
		await(t, b, buf, f)
	}
	// And back, received on the VnetHdr socket.
	back := open(t, ns, "npb", afpacket.Options{SendOnly: true})
	rbuf := make([]byte, 2048)
	if err := back.Send(frame(5, 0x8100, 9)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		f, h, _, err := a.RecvVnet(rbuf, 0)
		if err == nil && bytes.Equal(f, frame(5, 0x8100, 9)) {
			if h != (wire.VirtioNetHdr{}) || &f[0] != &rbuf[wire.VirtioNetHdrLen] {
				t.Fatalf("header %+v; frame not at the header's end", h)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the tagged frame never arrived on the VnetHdr socket")
		}
	}
	long := append(frame(6, 0, 0), make([]byte, 200)...)
	if err := back.Send(long); err != nil {
		t.Fatal(err)
	}
	short := make([]byte, 100)
	for deadline := time.Now().Add(3 * time.Second); ; {
		_, _, _, err := a.RecvVnet(short, 0)
		if errors.Is(err, afpacket.ErrTruncated) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ErrTruncated for a %d-byte frame in %d bytes: %v", len(long), len(short), err)
		}
	}
	// Recv, as before RecvVnet existed, cuts the frame to the buffer.
	if err := a.Send(long); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Second); ; {
		f, err := b.Recv(short)
		if err == nil && bytes.Equal(f, long[:len(short)]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Recv did not cut the %d-byte frame to %d bytes: %v", len(long), len(short), err)
		}
	}
	allocs := testing.AllocsPerRun(50, func() {
		if err := back.Send(one); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := a.RecvVnet(rbuf, 0); err != nil && !errors.Is(err, afpacket.ErrTimeout) {
			t.Fatal(err)
		}
		if _, err := a.SendBatch(batch); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per send and receive", allocs)
	}
}

// A tagged frame with a partial UDP checksum, written with its virtio-net
// header (as a VM's stack would leave it): the receiving kernel moves the
// tag into metadata and counts CsumStart from the untagged frame; RecvVnet
// puts the tag back and moves CsumStart with it, so that completing the
// checksum there gives the frame with its checksum computed.
func TestVnetHdrTaggedPartial(t *testing.T) {
	ns := vethNS(t)
	a := open(t, ns, "npa", afpacket.Options{SkipOutgoing: true, VnetHdr: true})
	b := open(t, ns, "npb", afpacket.Options{SkipOutgoing: true, Promisc: true, VnetHdr: true, PollInterval: 20 * time.Millisecond})
	want := wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:00:00:0a"), DstMAC: hal.MustMAC("02:00:00:00:00:0b"), VLAN: 100,
		Src: netip.MustParseAddr("198.18.1.1"), Dst: netip.MustParseAddr("198.18.1.2"), Proto: hal.ProtoUDP,
		SrcPort: 1, DstPort: 7005, Payload: []byte("tagged and partial, 60 bytes at least")})
	partial := append([]byte(nil), want...)
	ps := wire.PseudoHeaderSum(partial[30:34], partial[34:38], hal.ProtoUDP, len(partial)-38)
	binary.BigEndian.PutUint16(partial[38+6:], ^wire.Fold(ps))
	msg := make([]byte, wire.VirtioNetHdrLen, wire.VirtioNetHdrLen+len(partial))
	(&wire.VirtioNetHdr{Flags: wire.VirtioNetHdrFNeedsCsum, CsumStart: 38, CsumOffset: 6}).Put(msg)
	msg = append(msg, partial...)
	if err := unix.Sendto(a.FD(), msg, 0, &unix.SockaddrLinklayer{Ifindex: a.Ifindex(), Protocol: 0x0300}); err != nil {
		t.Fatal(err)
	}
	f, h := recvUDP(t, b, 7005)
	if !h.NeedsCsum() || h.CsumStart != 38 || h.CsumOffset != 6 || !bytes.Equal(f, partial) {
		t.Fatalf("header %+v, frame\n% x\nwant\n% x", h, f, partial)
	}
	if err := wire.CompleteChecksum(f, int(h.CsumStart), int(h.CsumOffset)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f, want) {
		t.Fatalf("completed\n% x\nwant\n% x", f, want)
	}
}
