package conformance

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/nicpath/nicpath/hal"
)

// Frames are built and decoded with gopacket, not with nicpath's own hal/wire,
// so that a bug shared by our builders and our parsers cannot hide itself.

// testOUI starts every MAC address the suite uses (locally administered), so
// that frames a kernel sends on its own (IPv6 neighbour discovery on a veth)
// are told apart from the suite's traffic.
var testOUI = [3]byte{0x02, 0x4e, 0x50}

func tmac(last byte) hal.MAC { return hal.MAC{0x02, 0x4e, 0x50, 0x00, 0x00, last} }

// Addresses: CAs in 198.18.0.0/16 and 2001:db8:1::/48, PAs in 198.19.0.0/16
// and 2001:db8:ff::/48, all in benchmarking and documentation ranges.
var (
	macA      = tmac(0x0a) // VM A
	macB      = tmac(0x0b) // VM B
	macGW     = tmac(0x01) // the virtual gateway's MAC
	macX      = tmac(0x58)
	macY      = tmac(0x59)
	macPA1    = tmac(0xa1) // this host's uplink MAC
	macPA2    = tmac(0xa2) // the next hop's MAC
	caA       = netip.MustParseAddr("198.18.1.10")
	caB       = netip.MustParseAddr("198.18.2.20")
	caC       = netip.MustParseAddr("198.18.2.99")
	caNAT     = netip.MustParseAddr("198.18.9.9")
	ca6A      = netip.MustParseAddr("2001:db8:1::a")
	ca6B      = netip.MustParseAddr("2001:db8:1:2::b")
	ca6C      = netip.MustParseAddr("2001:db8:1:3::c")
	paLocal   = netip.MustParseAddr("198.19.0.1")
	paRemote  = netip.MustParseAddr("198.19.0.2")
	pa6Local  = netip.MustParseAddr("2001:db8:ff::1")
	pa6Remote = netip.MustParseAddr("2001:db8:ff::2")
)

// frameSpec describes a test frame. Zero fields get defaults from udpSpec.
type frameSpec struct {
	Src, Dst  hal.MAC
	VLAN      uint16 // VLAN ID; 0 means untagged
	EtherType uint16 // for non-IP frames (IPSrc invalid)
	IPSrc     netip.Addr
	IPDst     netip.Addr
	Proto     uint8 // ProtoUDP, ProtoTCP or ProtoICMP
	SPort     uint16
	DPort     uint16
	TTL       uint8
	Payload   []byte
}

// udpSpec is the suite's usual frame: VM A to VM B, UDP 40000 → 7000 (ports gopacket decodes no application layer on).
func udpSpec() frameSpec {
	return frameSpec{Src: macA, Dst: macGW, IPSrc: caA, IPDst: caB, Proto: hal.ProtoUDP,
		SPort: 40000, DPort: 7000, TTL: 64, Payload: []byte("nicpath conformance payload")}
}

func udp6Spec() frameSpec {
	s := udpSpec()
	s.IPSrc, s.IPDst = ca6A, ca6B
	return s
}

func tcpSpec() frameSpec {
	s := udpSpec()
	s.Proto, s.SPort, s.DPort = hal.ProtoTCP, 40001, 7443
	return s
}

func hw(m hal.MAC) net.HardwareAddr { return net.HardwareAddr(append([]byte(nil), m[:]...)) }

func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(fmt.Sprintf("conformance: building a test frame: %v", err))
	}
	return append([]byte(nil), buf.Bytes()...)
}

// build serializes s with gopacket, lengths and checksums filled in.
func build(s frameSpec) []byte {
	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: hw(s.Src), DstMAC: hw(s.Dst)}
	ls = append(ls, eth)
	var etype layers.EthernetType
	switch {
	case s.IPSrc.Is4():
		etype = layers.EthernetTypeIPv4
	case s.IPSrc.IsValid():
		etype = layers.EthernetTypeIPv6
	default:
		etype = layers.EthernetType(s.EtherType)
	}
	if s.VLAN != 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: s.VLAN, Type: etype})
	} else {
		eth.EthernetType = etype
	}
	if !s.IPSrc.IsValid() {
		ls = append(ls, gopacket.Payload(s.Payload))
		return serialize(ls...)
	}
	ttl := s.TTL
	if ttl == 0 {
		ttl = 64
	}
	var nl gopacket.NetworkLayer
	if s.IPSrc.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Protocol: layers.IPProtocol(s.Proto),
			SrcIP: s.IPSrc.AsSlice(), DstIP: s.IPDst.AsSlice(), Id: 0x1234, Flags: layers.IPv4DontFragment}
		nl = ip
		ls = append(ls, ip)
	} else {
		proto := s.Proto
		if proto == hal.ProtoICMP {
			proto = hal.ProtoICMPv6
		}
		ip := &layers.IPv6{Version: 6, HopLimit: ttl, NextHeader: layers.IPProtocol(proto),
			SrcIP: s.IPSrc.AsSlice(), DstIP: s.IPDst.AsSlice()}
		nl = ip
		ls = append(ls, ip)
	}
	switch s.Proto {
	case hal.ProtoUDP:
		u := &layers.UDP{SrcPort: layers.UDPPort(s.SPort), DstPort: layers.UDPPort(s.DPort)}
		_ = u.SetNetworkLayerForChecksum(nl)
		ls = append(ls, u)
	case hal.ProtoTCP:
		tc := &layers.TCP{SrcPort: layers.TCPPort(s.SPort), DstPort: layers.TCPPort(s.DPort), Seq: 1000, ACK: true, Ack: 1, PSH: true, Window: 65535}
		_ = tc.SetNetworkLayerForChecksum(nl)
		ls = append(ls, tc)
	case hal.ProtoICMP:
		if s.IPSrc.Is4() {
			ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1})
		} else {
			ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
			_ = ic.SetNetworkLayerForChecksum(nl)
			ls = append(ls, ic, &layers.ICMPv6Echo{Identifier: 7, SeqNumber: 1})
		}
	}
	ls = append(ls, gopacket.Payload(s.Payload))
	return serialize(ls...)
}

// tunnel describes outer headers for building encapsulated frames.
type tunnel struct {
	Kind     hal.EncapKind
	VNI      uint32
	Src, Dst netip.Addr
	SrcMAC   hal.MAC
	DstMAC   hal.MAC
	SPort    uint16
	FlowID   uint8
}

// defaultTunnel is traffic from the remote host to this one.
func defaultTunnel(kind hal.EncapKind, vni uint32) tunnel {
	return tunnel{Kind: kind, VNI: vni, Src: paRemote, Dst: paLocal, SrcMAC: macPA2, DstMAC: macPA1, SPort: 50123}
}

// encapsulate wraps inner in the outer headers of tn, built by gopacket.
func encapsulate(tn tunnel, inner []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: hw(tn.SrcMAC), DstMAC: hw(tn.DstMAC)}
	var nl gopacket.NetworkLayer
	var ipl gopacket.SerializableLayer
	proto := layers.IPProtocolUDP
	if tn.Kind == hal.EncapNVGRE {
		proto = layers.IPProtocolGRE
	}
	if tn.Src.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: tn.Src.AsSlice(), DstIP: tn.Dst.AsSlice()}
		nl, ipl = ip, ip
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: tn.Src.AsSlice(), DstIP: tn.Dst.AsSlice()}
		nl, ipl = ip, ip
	}
	switch tn.Kind {
	case hal.EncapVXLAN, hal.EncapGeneve:
		port := hal.PortVXLAN
		var tl gopacket.SerializableLayer = &layers.VXLAN{ValidIDFlag: true, VNI: tn.VNI}
		if tn.Kind == hal.EncapGeneve {
			port = hal.PortGeneve
			tl = &layers.Geneve{Protocol: layers.EthernetTypeTransparentEthernetBridging, VNI: tn.VNI}
		}
		u := &layers.UDP{SrcPort: layers.UDPPort(tn.SPort), DstPort: layers.UDPPort(port)}
		_ = u.SetNetworkLayerForChecksum(nl)
		return serialize(eth, ipl, u, tl, gopacket.Payload(inner))
	case hal.EncapNVGRE:
		g := &layers.GRE{KeyPresent: true, Protocol: layers.EthernetTypeTransparentEthernetBridging, Key: tn.VNI<<8 | uint32(tn.FlowID)}
		return serialize(eth, ipl, g, gopacket.Payload(inner))
	}
	panic("conformance: unknown encapsulation " + tn.Kind.String())
}

// decoded is a frame taken apart by gopacket. The outer fields hold the
// first headers of each kind; inner is the encapsulated Ethernet frame.
type decoded struct {
	raw    []byte
	eth    *layers.Ethernet
	dot1q  *layers.Dot1Q
	ip4    *layers.IPv4
	ip6    *layers.IPv6
	udp    *layers.UDP
	tcp    *layers.TCP
	vxlan  *layers.VXLAN
	geneve *layers.Geneve
	gre    *layers.GRE
	inner  []byte
	l3     []byte // the outer IP header and everything after it
}

// decode takes a frame apart with gopacket. It fails when gopacket reports
// a decoding error anywhere in the frame.
func decode(frame []byte) (*decoded, error) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		return nil, fmt.Errorf("gopacket cannot decode the frame: %v", el.Error())
	}
	d := &decoded{raw: frame}
	for _, l := range p.Layers() {
		switch l := l.(type) {
		case *layers.Ethernet:
			if d.eth == nil {
				d.eth = l
			}
		case *layers.Dot1Q:
			if d.dot1q == nil && d.ip4 == nil && d.ip6 == nil {
				d.dot1q = l
			}
		case *layers.IPv4:
			if d.ip4 == nil && d.ip6 == nil {
				d.ip4 = l
			}
		case *layers.IPv6:
			if d.ip4 == nil && d.ip6 == nil {
				d.ip6 = l
			}
		case *layers.UDP:
			if d.udp == nil && d.tcp == nil && d.gre == nil {
				d.udp = l
			}
		case *layers.TCP:
			if d.udp == nil && d.tcp == nil {
				d.tcp = l
			}
		case *layers.VXLAN:
			if d.inner == nil {
				d.vxlan, d.inner = l, l.Payload
			}
		case *layers.Geneve:
			if d.inner == nil {
				d.geneve, d.inner = l, l.Payload
			}
		case *layers.GRE:
			if d.inner == nil {
				d.gre, d.inner = l, l.Payload
			}
		}
	}
	if d.eth == nil {
		return nil, fmt.Errorf("no Ethernet header")
	}
	off := len(d.eth.Contents)
	if d.dot1q != nil {
		off += len(d.dot1q.Contents)
	}
	d.l3 = frame[off:]
	return d, nil
}

// Checksums are verified by the suite's own arithmetic (RFC 1071), not by
// gopacket, which decodes but does not check them.

func csumAdd(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// checkChecksums verifies the outer IPv4 header checksum and the outer
// TCP/UDP checksum of d (a zero UDP checksum over IPv4 means "none" and is
// accepted; over IPv6 it is an error), and returns what is wrong.
func checkChecksums(d *decoded) []string {
	var bad []string
	var pseudo uint32
	var l4 []byte
	var proto uint8
	switch {
	case d.ip4 != nil:
		hdr := d.ip4.Contents
		if csumFold(csumAdd(0, hdr)) != 0xffff {
			bad = append(bad, fmt.Sprintf("IPv4 header checksum %#04x is wrong", d.ip4.Checksum))
		}
		if int(d.ip4.Length) != len(d.l3) {
			bad = append(bad, fmt.Sprintf("IPv4 total length %d, but %d bytes follow the Ethernet header", d.ip4.Length, len(d.l3)))
		}
		pseudo = csumAdd(csumAdd(0, d.ip4.SrcIP.To4()), d.ip4.DstIP.To4())
		proto = uint8(d.ip4.Protocol)
		l4 = d.ip4.Payload
	case d.ip6 != nil:
		if int(d.ip6.Length) != len(d.ip6.Payload) {
			bad = append(bad, fmt.Sprintf("IPv6 payload length %d, but %d bytes follow", d.ip6.Length, len(d.ip6.Payload)))
		}
		pseudo = csumAdd(csumAdd(0, d.ip6.SrcIP.To16()), d.ip6.DstIP.To16())
		proto = uint8(d.ip6.NextHeader)
		l4 = d.ip6.Payload
	default:
		return nil
	}
	pseudo += uint32(proto) + uint32(len(l4))
	switch proto {
	case hal.ProtoUDP:
		if len(l4) < 8 {
			return append(bad, "UDP header truncated")
		}
		if int(binary.BigEndian.Uint16(l4[4:])) != len(l4) {
			bad = append(bad, fmt.Sprintf("UDP length %d, but the datagram is %d bytes", binary.BigEndian.Uint16(l4[4:]), len(l4)))
		}
		ck := binary.BigEndian.Uint16(l4[6:])
		if ck == 0 {
			if d.ip6 != nil {
				bad = append(bad, "UDP checksum 0 over IPv6")
			}
			break
		}
		if csumFold(csumAdd(pseudo, l4)) != 0xffff {
			bad = append(bad, fmt.Sprintf("UDP checksum %#04x is wrong", ck))
		}
	case hal.ProtoTCP:
		if csumFold(csumAdd(pseudo, l4)) != 0xffff {
			bad = append(bad, "TCP checksum is wrong")
		}
	}
	return bad
}

// ours reports whether frame is the suite's traffic (see testOUI). A
// kernel's own IPv6 neighbour discovery and multicast listener reports, and
// its IGMP reports, are not, even from an interface that carries a test MAC
// (a tunnel endpoint set up with the suite's provider MAC, which joins the
// groups it is given): the suite never sends ICMPv6 or IGMP.
func ours(frame []byte) bool {
	if len(frame) < 12 {
		return true
	}
	if kernelChatter(frame) {
		return false
	}
	return bytes.Equal(frame[0:3], testOUI[:]) || bytes.Equal(frame[6:9], testOUI[:])
}

// kernelChatter reports an untunnelled IPv6 ICMPv6 message of the
// neighbour discovery or multicast listener kinds (types 130 to 143), also
// behind a hop-by-hop header (MLD's router alert), or an IGMP message.
func kernelChatter(f []byte) bool {
	const eth, ip6 = 14, 40
	if len(f) >= eth+20 && binary.BigEndian.Uint16(f[12:]) == hal.EtherTypeIPv4 && f[eth]>>4 == 4 && f[eth+9] == protoIGMP {
		return true
	}
	if len(f) < eth+ip6+1 || binary.BigEndian.Uint16(f[12:]) != hal.EtherTypeIPv6 {
		return false
	}
	next, off := f[eth+6], eth+ip6
	if next == 0 && len(f) >= off+2 { // hop-by-hop options
		next, off = f[off], off+8*(int(f[off+1])+1)
	}
	return next == hal.ProtoICMPv6 && len(f) > off && f[off] >= 130 && f[off] <= 143
}

// protoIGMP is IGMP's IP protocol number.
const protoIGMP = 2

func macOf(a net.HardwareAddr) hal.MAC {
	var m hal.MAC
	copy(m[:], a)
	return m
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
