//go:build linux

package tcflower

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// withOuter6 gives the topology's underlay IPv6 as well: 2001:db8:18::1/64
// on up0 (IPv6 enabled on that link only, no duplicate address detection,
// no router solicitations) and a static neighbour for the remote host's
// 2001:db8:18::2. The remote side stays a packet socket.
func (tp *topology) withOuter6() {
	tp.ns.sh("echo 0 > /proc/sys/net/ipv6/conf/up0/router_solicitations; echo 0 > /proc/sys/net/ipv6/conf/up0/dad_transmits; echo 0 > /proc/sys/net/ipv6/conf/up0/disable_ipv6")
	tp.ns.ip("addr", "replace", pa6Local.String()+"/64", "dev", "up0", "nodad")
	tp.ns.ip("-6", "neigh", "replace", pa6Remote.String(), "lladdr", "02:4e:50:00:00:a2", "dev", "up0", "nud", "permanent")
}

// checksum16 is the Internet checksum of b over an initial sum.
func checksum16(sum uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// udp6Checksum is the UDP checksum over the IPv6 pseudo-header (ip is the
// 40-byte header, u the datagram with its checksum field as it is).
func udp6Checksum(ip, u []byte) uint16 {
	var sum uint32
	for i := 8; i < 40; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	sum += uint32(len(u)) + uint32(hal.ProtoUDP)
	return checksum16(sum, u)
}

// tunnel6Frame wraps inner in Ethernet/IPv6/UDP/VXLAN or Geneve (without
// options), with a UDP checksum, as the remote host would send it.
func tunnel6Frame(kind hal.EncapKind, srcMAC, dstMAC hal.MAC, src, dst netip.Addr, vni uint32, inner []byte) []byte {
	hdr := make([]byte, 8)
	port := hal.PortVXLAN
	if kind == hal.EncapGeneve {
		port = hal.PortGeneve
		binary.BigEndian.PutUint16(hdr[2:], 0x6558) // transparent Ethernet bridging
	} else {
		hdr[0] = 0x08 // I flag
	}
	binary.BigEndian.PutUint32(hdr[4:], vni<<8)
	udpLen := 8 + len(hdr) + len(inner)
	b := make([]byte, 14+40+udpLen)
	copy(b[0:6], dstMAC[:])
	copy(b[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(b[12:], hal.EtherTypeIPv6)
	ip := b[14:54]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(udpLen))
	ip[6], ip[7] = hal.ProtoUDP, 64
	s, d := src.As16(), dst.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	u := b[54:]
	binary.BigEndian.PutUint16(u[0:], 40000)
	binary.BigEndian.PutUint16(u[2:], port)
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	copy(u[8:], hdr)
	copy(u[16:], inner)
	c := udp6Checksum(ip, u)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return b
}

// TestKernelOuterIPv6 encapsulates and decapsulates VXLAN and Geneve with
// outer IPv6 headers through the kernel's flow-based devices, and checks
// every outer field the kernel writes, the UDP checksum included.
func TestKernelOuterIPv6(t *testing.T) {
	requireKernel(t)
	for _, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve} {
		t.Run(kind.String(), func(t *testing.T) {
			tp := newTopology(t)
			tp.withOuter6()
			n := tp.open(t, PlaceAny)
			notes := strings.Join(n.Capabilities().Notes, "\n")
			if !n.lay.outer6.Has(kind) || !strings.Contains(notes, "outer IPv6 taken for") {
				t.Fatalf("the %s device has a UDP/IPv6 socket, yet outer IPv6 is not taken (outer6 %v): %q", kind, n.lay.outer6, notes)
			}
			vm1 := openPacketSock(t, tp.ns, "vm1")
			up1 := openPacketSock(t, tp.remote, "up1")
			remoteMAC := hal.MustMAC("02:4e:50:00:00:a2")

			var m hal.Match
			m.InPort(1)
			enc := enc6(kind)
			apply(t, n, hal.AddOp(hal.Rule{ID: 1, Priority: 1, Match: m, Actions: []hal.Action{hal.EncapWith(enc), hal.Output(3)}}))
			inner := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.2", 1, 2)
			vm1.send(t, inner, inner)
			got := up1.recv(t, 2, wait, hasMagic)
			if len(got) != 2 {
				t.Fatalf("%d encapsulated frames on the remote host, want 2", len(got))
			}
			var sports []uint16
			for _, g := range got {
				b := g.data
				if len(b) < 14+40+8+8+len(inner) {
					t.Fatalf("short frame % x", b)
				}
				if !bytes.Equal(b[0:6], remoteMAC[:]) || !bytes.Equal(b[6:12], tp.upMAC[:]) {
					t.Errorf("outer MACs % x -> % x; want the uplink's %v -> the neighbour's %v", b[6:12], b[0:6], tp.upMAC, remoteMAC)
				}
				if et := binary.BigEndian.Uint16(b[12:]); et != hal.EtherTypeIPv6 {
					t.Fatalf("outer EtherType %#04x, want IPv6", et)
				}
				ip, u := b[14:54], b[54:]
				s, d := pa6Local.As16(), pa6Remote.As16()
				if ip[0]>>4 != 6 || ip[6] != hal.ProtoUDP || ip[7] != 17 || !bytes.Equal(ip[8:24], s[:]) || !bytes.Equal(ip[24:40], d[:]) {
					t.Errorf("outer IPv6 version %d next header %d hop limit %d %x -> %x; want 6, UDP, 17, %v -> %v", ip[0]>>4, ip[6], ip[7], ip[8:24], ip[24:40], pa6Local, pa6Remote)
				}
				if pl := binary.BigEndian.Uint16(ip[4:]); int(pl) != len(u) {
					t.Errorf("IPv6 payload length %d, but %d bytes follow", pl, len(u))
				}
				wantPort := hal.PortVXLAN
				if kind == hal.EncapGeneve {
					wantPort = hal.PortGeneve
				}
				if p := binary.BigEndian.Uint16(u[2:]); p != wantPort {
					t.Errorf("outer UDP destination port %d, want %d", p, wantPort)
				}
				if l := binary.BigEndian.Uint16(u[4:]); int(l) != len(u) {
					t.Errorf("UDP length %d, datagram %d bytes", l, len(u))
				}
				// IPv6 requires the UDP checksum (RFC 8200 §8.1); the
				// device computes it because tunnel_key asks for it.
				if ck := binary.BigEndian.Uint16(u[6:]); ck == 0 {
					t.Errorf("outer UDP checksum 0 over IPv6")
				} else if udp6Checksum(ip, u) != 0 {
					t.Errorf("outer UDP checksum %#04x is wrong", ck)
				}
				sports = append(sports, binary.BigEndian.Uint16(u[0:]))
				if vni := binary.BigEndian.Uint32(u[12:]) >> 8; vni != enc.VNI {
					t.Errorf("VNI %#x, want %#x", vni, enc.VNI)
				}
				if !bytes.Equal(u[16:], inner) {
					t.Errorf("inner frame differs:\n got % x\nwant % x", u[16:], inner)
				}
			}
			if len(sports) == 2 && (sports[0] != sports[1] || sports[0] == 0) {
				t.Errorf("UDP source ports %v: want one nonzero port per flow", sports)
			}

			// Decap: the remote sends VNI 0x123456 over IPv6, from its
			// address to anything in our /64.
			var dm hal.Match
			dm.Tunnel(kind, 0x123456).TunSrc(pa6Remote)
			dm.Key.TunDst = netip.MustParseAddr("2001:db8:18::").As16()
			dm.Mask.TunDst = netip.MustParseAddr("ffff:ffff:ffff:ffff::").As16()
			apply(t, n, hal.AddOp(hal.Rule{ID: 2, Priority: 1, Match: dm, Actions: []hal.Action{hal.Decap(), hal.Output(1)}}))
			back := udpFrame(macVM2, macVM1, "192.0.2.2", "192.0.2.1", 2, 1)
			up1.send(t, tunnel6Frame(kind, remoteMAC, tp.upMAC, pa6Remote, pa6Local, 0x123456, back))
			rx := vm1.recv(t, 1, wait, hasMagic)
			if len(rx) != 1 || !bytes.Equal(rx[0].data, back) {
				t.Fatalf("decapsulated frame on vm1: %+v", rx)
			}
			// Another VNI, and another outer source, miss the rule.
			up1.send(t, tunnel6Frame(kind, remoteMAC, tp.upMAC, pa6Remote, pa6Local, 77, back))
			up1.send(t, tunnel6Frame(kind, remoteMAC, tp.upMAC, netip.MustParseAddr("2001:db8:18::3"), pa6Local, 0x123456, back))
			if rx := vm1.recv(t, 1, 300*time.Millisecond, hasMagic); len(rx) != 0 {
				t.Errorf("a frame of another VNI or outer source was decapsulated to vm1")
			}
			if d := dumpAll(t, n); d[2].Counters.Packets != 1 {
				t.Errorf("decap rule counted %d packets, want 1", d[2].Counters.Packets)
			}
		})
	}
}

// TestKernelOuterIPv6NeedsTheSocket opens the driver while the tunnel
// devices are down, so that they have no UDP socket: outer IPv6 is refused
// by Validate and the notes say why, while IPv4 stays as it was.
func TestKernelOuterIPv6NeedsTheSocket(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	tp.ns.ip("link", "set", "vx0", "down")
	tp.ns.ip("link", "set", "gnv0", "down")
	n := tp.open(t, PlaceAny)
	if n.lay.outer6 != 0 {
		t.Errorf("outer6 %v with the devices down", n.lay.outer6)
	}
	if notes := strings.Join(n.Capabilities().Notes, "\n"); !strings.Contains(notes, "outer IPv6 refused for vxlan (vx0 has no UDP/IPv6 socket") {
		t.Errorf("notes do not say why outer IPv6 is refused: %q", notes)
	}
	var m hal.Match
	m.InPort(1)
	err := n.Validate(&hal.Rule{ID: 1, Match: m, Actions: []hal.Action{hal.EncapWith(enc6(hal.EncapVXLAN)), hal.Output(3)}})
	if err == nil || !strings.Contains(err.Error(), "no UDP/IPv6 socket") {
		t.Errorf("Validate of an IPv6 encap: %v, want a refusal", err)
	}
}
