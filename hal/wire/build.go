package wire

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"

	"github.com/nicpath/nicpath/hal"
)

// FrameSpec describes a frame for Build. Builders are for tests, examples and
// demos: they allocate, and they produce valid frames with correct lengths
// and checksums unless told otherwise.
type FrameSpec struct {
	SrcMAC, DstMAC hal.MAC
	// VLAN adds an 802.1Q tag with this VLAN ID; 0 means no tag. To tag with
	// VLAN ID 0 (a priority tag), pass hal.VLANPresent (the FlowKey form
	// hal.VLANPresent|vid is accepted too).
	VLAN uint16
	// OuterVLAN adds an 802.1ad (QinQ, 0x88A8) service tag in front of VLAN;
	// same encoding as VLAN.
	OuterVLAN uint16
	// EthType is the EtherType of a non-IP frame (when Src is not valid);
	// Payload follows the Ethernet header as is.
	EthType  uint16
	Src, Dst netip.Addr // IPv4 or IPv6 (an IPv4-mapped address makes IPv6)
	Proto    uint8      // TCP, UDP, ICMP, ICMPv6, SCTP build their headers; others carry Payload as is
	SrcPort  uint16
	DstPort  uint16
	ICMPType uint8
	ICMPCode uint8
	TTL      uint8 // 0 means 64
	TOS      uint8 // IPv4 TOS / IPv6 traffic class
	TCPFlags uint8 // 0 means ACK
	// IPOptions are IPv4 options (padded to a multiple of 4 bytes with
	// end-of-options).
	IPOptions []byte
	// ExtHeaders lists IPv6 extension headers to put before the transport
	// header, by protocol number (0 hop-by-hop, 43 routing, 60 destination
	// options, 44 fragment, 51 AH); each is the smallest valid one of its
	// kind (padding options, a type-0-free routing header with no segments
	// left). A fragment header carries FragOffset, MoreFragments and FragID.
	ExtHeaders []uint8
	// Fragmentation: FragOffset in 8-byte units. A non-zero offset builds a
	// non-first fragment: Payload directly after the IP header(s).
	FragOffset    uint16
	MoreFragments bool
	DontFragment  bool
	FragID        uint32
	IPID          uint16
	// BadIPChecksum corrupts the IPv4 header checksum (for tests of Parse).
	BadIPChecksum bool
	Payload       []byte
}

func vlanTag(v uint16) (uint16, bool) {
	if v == 0 {
		return 0, false
	}
	return v & 0x0fff, true
}

// MinFrameLen is the shortest Ethernet frame without FCS (ETH_ZLEN); Build
// pads shorter frames to it with zeros, as a NIC does on transmit.
const MinFrameLen = 60

func pad(b []byte) []byte {
	for len(b) < MinFrameLen {
		b = append(b, 0)
	}
	return b
}

// Build builds the frame spec describes, padded to MinFrameLen.
func Build(spec FrameSpec) []byte {
	b := make([]byte, 0, 128+len(spec.Payload)+len(spec.IPOptions))
	b = append(b, spec.DstMAC[:]...)
	b = append(b, spec.SrcMAC[:]...)
	if vid, ok := vlanTag(spec.OuterVLAN); ok {
		b = binary.BigEndian.AppendUint16(b, hal.EtherTypeQinQ)
		b = binary.BigEndian.AppendUint16(b, vid)
	}
	if vid, ok := vlanTag(spec.VLAN); ok {
		b = binary.BigEndian.AppendUint16(b, hal.EtherTypeVLAN)
		b = binary.BigEndian.AppendUint16(b, vid)
	}
	if !spec.Src.IsValid() {
		b = binary.BigEndian.AppendUint16(b, spec.EthType)
		return pad(append(b, spec.Payload...))
	}
	v4 := spec.Src.Is4()
	l4 := buildL4(&spec, v4)
	if v4 {
		b = binary.BigEndian.AppendUint16(b, hal.EtherTypeIPv4)
		return pad(appendIPv4(b, &spec, l4))
	}
	b = binary.BigEndian.AppendUint16(b, hal.EtherTypeIPv6)
	return pad(appendIPv6(b, &spec, l4))
}

func laterFragment(spec *FrameSpec) bool { return spec.FragOffset != 0 }

// buildL4 returns the transport segment with its checksum field zero (the
// pseudo-header is added once the IP header is known).
func buildL4(spec *FrameSpec, v4 bool) []byte {
	if laterFragment(spec) {
		return append([]byte(nil), spec.Payload...)
	}
	var h []byte
	switch spec.Proto {
	case hal.ProtoTCP:
		h = make([]byte, TCPHeaderLen, TCPHeaderLen+len(spec.Payload))
		binary.BigEndian.PutUint16(h[0:2], spec.SrcPort)
		binary.BigEndian.PutUint16(h[2:4], spec.DstPort)
		binary.BigEndian.PutUint32(h[4:8], 1)
		h[12] = 5 << 4
		h[13] = spec.TCPFlags
		if h[13] == 0 {
			h[13] = 0x10
		}
		binary.BigEndian.PutUint16(h[14:16], 65535)
	case hal.ProtoUDP:
		h = make([]byte, UDPHeaderLen, UDPHeaderLen+len(spec.Payload))
		binary.BigEndian.PutUint16(h[0:2], spec.SrcPort)
		binary.BigEndian.PutUint16(h[2:4], spec.DstPort)
		binary.BigEndian.PutUint16(h[4:6], uint16(UDPHeaderLen+len(spec.Payload)))
	case hal.ProtoICMP, hal.ProtoICMPv6:
		h = make([]byte, 8, 8+len(spec.Payload))
		h[0], h[1] = spec.ICMPType, spec.ICMPCode
		binary.BigEndian.PutUint16(h[4:6], 1) // identifier
		binary.BigEndian.PutUint16(h[6:8], 1) // sequence
	case ProtoSCTP:
		h = make([]byte, 12, 12+len(spec.Payload))
		binary.BigEndian.PutUint16(h[0:2], spec.SrcPort)
		binary.BigEndian.PutUint16(h[2:4], spec.DstPort)
		binary.BigEndian.PutUint32(h[4:8], 1) // verification tag
	}
	return append(h, spec.Payload...)
}

// finishL4 fills the transport checksum once the pseudo-header sum is known.
func finishL4(spec *FrameSpec, l4 []byte, pseudo func(proto uint8, n int) uint32) {
	if laterFragment(spec) {
		return
	}
	switch spec.Proto {
	case hal.ProtoTCP:
		binary.BigEndian.PutUint16(l4[16:18], Checksum(l4, pseudo(hal.ProtoTCP, len(l4))))
	case hal.ProtoUDP:
		c := Checksum(l4, pseudo(hal.ProtoUDP, len(l4)))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:8], c)
	case hal.ProtoICMP:
		binary.BigEndian.PutUint16(l4[2:4], Checksum(l4, 0))
	case hal.ProtoICMPv6:
		binary.BigEndian.PutUint16(l4[2:4], Checksum(l4, pseudo(hal.ProtoICMPv6, len(l4))))
	case ProtoSCTP:
		binary.LittleEndian.PutUint32(l4[8:12], crc32.Checksum(l4, crc32.MakeTable(crc32.Castagnoli)))
	}
}

func ttlOf(spec *FrameSpec) uint8 {
	if spec.TTL == 0 {
		return DefaultTTL
	}
	return spec.TTL
}

func appendIPv4(b []byte, spec *FrameSpec, l4 []byte) []byte {
	opts := append([]byte(nil), spec.IPOptions...)
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	ihl := IPv4HeaderLen + len(opts)
	h := make([]byte, ihl)
	h[0] = 0x40 | uint8(ihl/4)
	h[1] = spec.TOS
	binary.BigEndian.PutUint16(h[2:4], uint16(ihl+len(l4)))
	binary.BigEndian.PutUint16(h[4:6], spec.IPID)
	frag := spec.FragOffset & 0x1fff
	if spec.MoreFragments {
		frag |= 0x2000
	}
	if spec.DontFragment {
		frag |= 0x4000
	}
	binary.BigEndian.PutUint16(h[6:8], frag)
	h[8] = ttlOf(spec)
	h[9] = spec.Proto
	s, d := spec.Src.As4(), spec.Dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	copy(h[20:], opts)
	c := Checksum(h, 0)
	if spec.BadIPChecksum {
		c ^= 0x5a5a
	}
	binary.BigEndian.PutUint16(h[10:12], c)
	finishL4(spec, l4, func(proto uint8, n int) uint32 { return PseudoHeaderSum(s[:], d[:], proto, n) })
	b = append(b, h...)
	return append(b, l4...)
}

func appendIPv6(b []byte, spec *FrameSpec, l4 []byte) []byte {
	var ext []byte
	nh := spec.Proto
	// Build the chain back to front so each header names the next.
	for i := len(spec.ExtHeaders) - 1; i >= 0; i-- {
		t := spec.ExtHeaders[i]
		var e []byte
		switch t {
		case ProtoFragment:
			e = make([]byte, 8)
			fo := spec.FragOffset << 3
			if spec.MoreFragments {
				fo |= 1
			}
			binary.BigEndian.PutUint16(e[2:4], fo)
			binary.BigEndian.PutUint32(e[4:8], spec.FragID)
		case ProtoAH:
			e = make([]byte, 12) // payload length 1: 3 words of 4 bytes minus 2
			e[1] = 1
			binary.BigEndian.PutUint32(e[4:8], 0x100) // SPI
		case ProtoRouting:
			e = make([]byte, 8)
			e[2] = 4 // routing type 4 (segment routing); segments left 0
		default: // hop-by-hop, destination options: a PadN option filling 6 bytes
			e = make([]byte, 8)
			e[2], e[3] = 1, 4
		}
		e[0] = nh
		nh = t
		ext = append(e, ext...)
	}
	h := make([]byte, IPv6HeaderLen)
	binary.BigEndian.PutUint32(h[0:4], 6<<28|uint32(spec.TOS)<<20)
	binary.BigEndian.PutUint16(h[4:6], uint16(len(ext)+len(l4)))
	h[6] = nh
	h[7] = ttlOf(spec)
	s, d := spec.Src.As16(), spec.Dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	finishL4(spec, l4, func(proto uint8, n int) uint32 { return PseudoHeaderSum(s[:], d[:], proto, n) })
	b = append(b, h...)
	b = append(b, ext...)
	return append(b, l4...)
}

// BuildEncap encapsulates the Ethernet frame inner as e says, with the UDP
// source port (or NVGRE FlowID) taken from the inner flow's FlowHash. It
// panics if NewEncapTemplate refuses e.
func BuildEncap(e *hal.Encap, inner []byte) []byte {
	t, err := NewEncapTemplate(e)
	if err != nil {
		panic(err)
	}
	var k hal.FlowKey
	var l Layout
	_ = Parse(inner, 0, &k, &l) // an unparsable inner frame still gets a (constant) hash
	buf := make([]byte, t.Len()+len(inner))
	copy(buf[t.Len():], inner)
	s, err := t.Push(buf, t.Len(), len(buf), FlowHash(&k))
	if err != nil {
		panic(err)
	}
	return buf[s:]
}

// SpecFromKey returns a FrameSpec whose frame parses to k's inner fields
// (everything but InPort and the tunnel fields).
func SpecFromKey(k *hal.FlowKey) FrameSpec {
	s := FrameSpec{SrcMAC: k.EthSrc, DstMAC: k.EthDst}
	if k.VLAN&hal.VLANPresent != 0 {
		s.VLAN = k.VLAN
	}
	switch k.EthType {
	case hal.EtherTypeIPv4:
		s.Src = netip.AddrFrom16(k.IPSrc).Unmap()
		s.Dst = netip.AddrFrom16(k.IPDst).Unmap()
	case hal.EtherTypeIPv6:
		s.Src = netip.AddrFrom16(k.IPSrc)
		s.Dst = netip.AddrFrom16(k.IPDst)
	default:
		s.EthType = k.EthType
		return s
	}
	s.Proto = k.Proto
	switch k.Proto {
	case hal.ProtoICMP, hal.ProtoICMPv6:
		s.ICMPType, s.ICMPCode = uint8(k.L4Src), uint8(k.L4Dst)
	default:
		s.SrcPort, s.DstPort = k.L4Src, k.L4Dst
	}
	return s
}

// EncapFromKey returns the hal.Encap that reproduces k's tunnel fields: an
// IPv4 outer header when both tunnel addresses are IPv4-mapped, IPv6
// otherwise.
func EncapFromKey(k *hal.FlowKey) hal.Encap {
	src, dst := netip.AddrFrom16(k.TunSrc), netip.AddrFrom16(k.TunDst)
	if src.Is4In6() && dst.Is4In6() {
		src, dst = src.Unmap(), dst.Unmap()
	}
	return hal.Encap{Kind: k.TunKind, VNI: k.VNI, Src: src, Dst: dst}
}

// BuildKey builds a frame that Parse turns back into k (InPort aside):
// SpecFromKey, then the encapsulation of EncapFromKey when k is tunnelled.
// It fails only for tunnel fields no encapsulation can carry (an IPv6 outer
// address that is IPv4-mapped).
func BuildKey(k *hal.FlowKey) ([]byte, error) {
	f := Build(SpecFromKey(k))
	if k.TunKind == hal.EncapNone {
		return f, nil
	}
	e := EncapFromKey(k)
	if _, err := NewEncapTemplate(&e); err != nil {
		return nil, err
	}
	return BuildEncap(&e, f), nil
}
