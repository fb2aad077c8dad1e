package wire

import (
	"encoding/binary"
	"math/bits"

	"github.com/nicpath/nicpath/hal"
)

// Bounds on the header walks, so that a hostile frame costs at most a fixed
// amount of work.
const (
	// MaxVLANs is how many 802.1Q/802.1ad tags Parse walks (QinQ is two);
	// a frame with more is ReasonUnsupported.
	MaxVLANs = 2
	// MaxIPv6ExtHeaders is how many IPv6 extension headers Parse walks
	// before the transport header; a chain with more is ReasonUnsupported.
	// Real traffic carries one or two; eight leaves room for every kind
	// RFC 8200 §4.1 lists once.
	MaxIPv6ExtHeaders = 8
)

// Protocol numbers Parse knows beyond those in hal.
const (
	ProtoSCTP     uint8 = 132
	ProtoHopByHop uint8 = 0
	ProtoRouting  uint8 = 43
	ProtoFragment uint8 = 44
	ProtoAH       uint8 = 51
	ProtoNoNext   uint8 = 59
	ProtoDstOpts  uint8 = 60
	ProtoMobility uint8 = 135
	ProtoHIP      uint8 = 139
	ProtoShim6    uint8 = 140
)

// Flags describe what Parse found beyond the key.
type Flags uint16

// Flags of a Layout. In a tunnelled frame, Layout.Flags describe the inner
// frame and Layout.OuterFlags the outer one.
const (
	FlagTunnel        Flags = 1 << iota // the frame was encapsulated; the Outer* fields are set
	FlagIPOptions                       // IPv4 header with options (IHL > 5)
	FlagIPv6Ext                         // IPv6 extension headers before the transport header
	FlagFragment                        // an IP fragment, first or later
	FlagLaterFragment                   // a non-first fragment: no transport header, no ports
	FlagGeneveOptions                   // Geneve header with options
	FlagUDPZeroCsum                     // UDP with checksum 0 (none)
)

// Layout records where a parsed frame's headers are: byte offsets into the
// frame given to Parse, -1 when absent. When the frame was encapsulated, L2
// through End describe the inner frame and the Outer fields the outer one
// (whose Ethernet header is at offset 0).
type Layout struct {
	L2       int    // Ethernet header of the (inner) frame
	L3       int    // IPv4/IPv6 header; -1 for non-IP frames
	L4       int    // transport header; -1 when there is none (non-IP, non-first fragment)
	Payload  int    // first byte after the transport header; -1 when unknown
	End      int    // end of the (inner) frame: L3 + the IP length, so that Ethernet padding is excluded
	VLANs    int    // 802.1Q/802.1ad tags between the (inner) Ethernet header and L3
	IPHdrLen int    // IPv4 header with options, or IPv6 header with extension headers (L4-L3)
	EthType  uint16 // EtherType after the tags
	Proto    uint8  // upper-layer protocol (after IPv6 extension headers)
	Flags    Flags

	OuterL3      int    // outer IP header; -1 when not tunnelled
	OuterL4      int    // outer UDP or GRE header; -1 when not tunnelled
	Tunnel       int    // VXLAN/Geneve/NVGRE header; -1 when not tunnelled
	OuterVLANs   int    // tags on the outer Ethernet header
	OuterEthType uint16 // outer EtherType (IPv4 or IPv6)
	OuterFlags   Flags

	err ParseError // storage for the error Parse returns, so failing allocates nothing
}

// Tunnelled reports whether the parsed frame was encapsulated.
func (l *Layout) Tunnelled() bool { return l.Tunnel >= 0 }

//go:noinline
func (l *Layout) fail(r hal.Reason, layer Layer, off int, inner, trunc bool, msg string) error {
	l.err = ParseError{Reason: r, Layer: layer, Inner: inner, Truncated: trunc, Offset: off, Msg: msg}
	return &l.err
}

func (l *Layout) truncated(layer Layer, off int, inner bool, msg string) error {
	return l.fail(hal.ReasonMalformed, layer, off, inner, true, msg)
}

func (l *Layout) malformed(layer Layer, off int, inner bool, msg string) error {
	return l.fail(hal.ReasonMalformed, layer, off, inner, false, msg)
}

func (l *Layout) unsupported(layer Layer, off int, inner bool, msg string) error {
	return l.fail(hal.ReasonUnsupported, layer, off, inner, false, msg)
}

// Parse parses frame into k without allocating; inPort is copied into
// k.InPort. k and l are overwritten entirely.
//
// VXLAN (UDP port 4789), Geneve (UDP port 6081) and NVGRE (GRE with key,
// protocol 0x6558) are parsed through to the inner frame, one level deep:
// k.TunKind, k.VNI, k.TunSrc and k.TunDst describe the outer headers, every
// other field the inner frame. Non-IP frames (ARP, …) parse without error
// with only the Ethernet fields set.
//
// On failure the error is a *ParseError (see there; it points into l). A
// non-first fragment fails with hal.ReasonFragment and leaves k filled up to
// the IP protocol, with no ports; the other failures leave k partly filled.
func Parse(frame []byte, inPort hal.PortID, k *hal.FlowKey, l *Layout) error {
	*k = hal.FlowKey{InPort: inPort}
	// Fast path: the frames a NIC sees most, an untagged or once-tagged
	// Ethernet frame with an option-less, unfragmented IPv4 header or an
	// IPv6 header without extension headers, carrying TCP, UDP or ICMP, are keyed
	// in one straight-line pass; a VXLAN frame whose outer and inner frames
	// are both of that kind takes the pass twice. Everything else, and every
	// error, goes through the general walk, which the fast path never
	// contradicts: it falls back before deciding anything.
	base, end := 0, len(frame)
	inner := false
again:
	if end-base < 14+20+20 || end > len(frame) {
		goto general
	}
	{
		b := frame[base:end]
		_ = b[53]
		off := 14
		et := binary.BigEndian.Uint16(b[12:14])
		vlan := uint16(0)
		if et == hal.EtherTypeVLAN {
			tag := binary.BigEndian.Uint32(b[14:18])
			vlan = hal.VLANPresent | uint16(tag>>16)&0x0fff
			et = uint16(tag)
			off = 18
		}
		ip := b[off:]
		var l3len, hl, tot int
		var proto uint8
		var sp, dp uint16
		var fl Flags
		switch et {
		case hal.EtherTypeIPv4:
			if len(ip) < 40 {
				goto general
			}
			w0 := binary.LittleEndian.Uint64(ip[0:8])  // version/IHL, TOS, total length, ID, flags/fragment offset
			w1 := binary.LittleEndian.Uint64(ip[8:16]) // TTL, protocol, checksum, source
			w2 := uint64(binary.LittleEndian.Uint32(ip[16:20]))
			// Version 4, IHL 5, and neither MF nor a fragment offset.
			if w0&0xff != 0x45 || (w0>>48)&0xff3f != 0 {
				goto general
			}
			// The checksum is verified on little-endian words, as in sum20OK.
			sum, c := bits.Add64(w0, w1, 0)
			sum, c = bits.Add64(sum, w2, c)
			sum, c = bits.Add64(sum, 0, c)
			tot = int(bits.ReverseBytes16(uint16(w0 >> 16)))
			if foldOnes64(sum+c) != 0xffff || tot < 20 || tot > len(ip) {
				goto general
			}
			proto, l3len = uint8(w1>>8), 20
			binary.LittleEndian.PutUint64(k.IPSrc[8:16], 0xffff0000|w1&0xffffffff00000000)
			binary.LittleEndian.PutUint64(k.IPDst[8:16], 0xffff0000|w2<<32)
		case hal.EtherTypeIPv6:
			if len(ip) < 60 || ip[0]>>4 != 6 {
				goto general
			}
			tot = 40 + int(binary.BigEndian.Uint16(ip[4:6]))
			if tot > len(ip) {
				goto general
			}
			proto, l3len = ip[6], 40
			k.IPSrc = [16]byte(ip[8:24])
			k.IPDst = [16]byte(ip[24:40])
		default:
			goto general
		}
		l4 := ip[l3len:]
		_ = l4[19] // both families checked room for 20 bytes after the header
		l4len := tot - l3len
		switch proto {
		case hal.ProtoUDP:
			ul := int(binary.BigEndian.Uint16(l4[4:6]))
			dp = binary.BigEndian.Uint16(l4[2:4])
			if l4len < 8 || ul < 8 || ul > l4len {
				goto general
			}
			hl = 8
			if l4[6]|l4[7] == 0 {
				fl = FlagUDPZeroCsum
			}
			if !inner && (dp == hal.PortVXLAN || dp == hal.PortGeneve) {
				// VXLAN: flags with the I bit; the inner frame follows the
				// 8-byte header, within the UDP length.
				if dp != hal.PortVXLAN || ul < 16 || l4[8]&0x08 == 0 {
					goto general
				}
				k.TunKind, k.VNI = hal.EncapVXLAN, binary.BigEndian.Uint32(l4[12:16])>>8
				k.TunSrc, k.TunDst = k.IPSrc, k.IPDst
				k.IPSrc, k.IPDst = [16]byte{}, [16]byte{}
				o3 := base + off
				l.OuterL3, l.OuterL4, l.Tunnel = o3, o3+l3len, o3+l3len+8
				l.OuterVLANs, l.OuterEthType, l.OuterFlags = (off-14)>>2, et, fl
				base, end, inner = o3+l3len+16, o3+l3len+ul, true
				goto again
			}
		case hal.ProtoTCP:
			hl = int(l4[12]>>4) << 2
			if l4len < 20 || hl < 20 || hl > l4len {
				goto general
			}
			dp = binary.BigEndian.Uint16(l4[2:4])
		case hal.ProtoICMP, hal.ProtoICMPv6:
			if l4len < 4 {
				goto general
			}
			hl = 4
		default:
			goto general
		}
		if hl == 4 { // ICMP: type and code
			sp, dp = uint16(l4[0]), uint16(l4[1])
		} else {
			sp = binary.BigEndian.Uint16(l4[0:2])
		}
		k.EthDst = hal.MAC(b[0:6])
		k.EthSrc = hal.MAC(b[6:12])
		k.EthType, k.VLAN, k.Proto, k.L4Src, k.L4Dst = et, vlan, proto, sp, dp
		l.L2, l.L3, l.L4, l.Payload, l.End = base, base+off, base+off+l3len, base+off+l3len+hl, base+off+tot
		l.VLANs, l.IPHdrLen, l.EthType, l.Proto, l.Flags = (off-14)>>2, l3len, et, proto, fl
		if !inner {
			l.OuterL3, l.OuterL4, l.Tunnel = -1, -1, -1
			l.OuterVLANs, l.OuterEthType, l.OuterFlags = 0, 0, 0
		} else {
			l.Flags |= FlagTunnel
		}
		return nil
	}
general:
	// What the fast path wrote is discarded; the general walk starts over.
	*k = hal.FlowKey{InPort: inPort}
	return parseGeneral(frame, k, l)
}

// parseGeneral is Parse without the fast path; k holds only the in-port.
func parseGeneral(frame []byte, k *hal.FlowKey, l *Layout) error {
	l.OuterL3, l.OuterL4, l.Tunnel = -1, -1, -1
	l.OuterVLANs, l.OuterEthType, l.OuterFlags, l.Flags = 0, 0, 0, 0
	return parseFrame(frame, 0, len(frame), k, l, false)
}

// parseFrame parses the Ethernet frame b[off:end].
func parseFrame(b []byte, off, end int, k *hal.FlowKey, l *Layout, inner bool) error {
	l.L2, l.L3, l.L4, l.Payload, l.End = off, -1, -1, -1, end
	l.VLANs, l.IPHdrLen, l.EthType, l.Proto = 0, 0, 0, 0
	if off < 0 || end > len(b) || end-off < 14 {
		return l.truncated(LayerEthernet, off, inner, "shorter than an Ethernet header")
	}
	eth := b[off : off+14]
	copy(k.EthDst[:], eth[0:6])
	copy(k.EthSrc[:], eth[6:12])
	et := binary.BigEndian.Uint16(eth[12:14])
	off += 14
	for et == hal.EtherTypeVLAN || et == hal.EtherTypeQinQ {
		if l.VLANs == MaxVLANs {
			return l.unsupported(LayerVLAN, off, inner, "more VLAN tags than MaxVLANs")
		}
		if end-off < 4 {
			return l.truncated(LayerVLAN, off, inner, "VLAN tag cut short")
		}
		tag := b[off : off+4]
		if l.VLANs == 0 {
			k.VLAN = hal.VLANPresent | binary.BigEndian.Uint16(tag[0:2])&0x0fff
		}
		et = binary.BigEndian.Uint16(tag[2:4])
		off += 4
		l.VLANs++
	}
	k.EthType, l.EthType = et, et
	switch et {
	case hal.EtherTypeIPv4:
		return parseIPv4(b, off, end, k, l, inner)
	case hal.EtherTypeIPv6:
		return parseIPv6(b, off, end, k, l, inner)
	}
	return nil
}

// ipv4HeaderSumOK verifies the header checksum of an IPv4 header h.
func ipv4HeaderSumOK(h []byte) bool {
	if len(h) == 20 {
		return sum20OK(h)
	}
	return Checksum(h, 0) == 0
}

// sum20OK verifies the checksum of a 20-byte IPv4 header, loading it as
// little-endian words: the one's-complement sum does not depend on byte
// order (RFC 1071 §2(B)), and a valid header sums to 0xffff either way.
func sum20OK(h []byte) bool {
	_ = h[19]
	sum, c := bits.Add64(binary.LittleEndian.Uint64(h[0:8]), binary.LittleEndian.Uint64(h[8:16]), 0)
	sum, c = bits.Add64(sum, uint64(binary.LittleEndian.Uint32(h[16:20])), c)
	sum, c = bits.Add64(sum, 0, c)
	return foldOnes64(sum+c) == 0xffff
}

// foldOnes64 folds a 64-bit one's-complement sum to 16 bits.
func foldOnes64(sum uint64) uint64 {
	s := (sum & 0xffffffff) + (sum >> 32)
	s = (s & 0xffff) + (s >> 16)
	s = (s & 0xffff) + (s >> 16)
	return (s & 0xffff) + (s >> 16)
}

func parseIPv4(b []byte, off, end int, k *hal.FlowKey, l *Layout, inner bool) error {
	l.L3 = off
	if end-off < 20 {
		return l.truncated(LayerIPv4, off, inner, "shorter than an IPv4 header")
	}
	h := b[off : off+20]
	if h[0]>>4 != 4 {
		return l.malformed(LayerIPv4, off, inner, "IP version is not 4")
	}
	ihl := int(h[0]&0x0f) << 2
	if ihl < 20 {
		return l.malformed(LayerIPv4, off, inner, "IHL below 5")
	}
	tot := int(binary.BigEndian.Uint16(h[2:4]))
	if tot < ihl {
		return l.malformed(LayerIPv4, off, inner, "total length shorter than the header")
	}
	if tot > end-off {
		return l.truncated(LayerIPv4, off, inner, "total length beyond the frame")
	}
	end = off + tot
	l.End = end
	if !ipv4HeaderSumOK(b[off : off+ihl]) {
		return l.malformed(LayerIPv4, off, inner, "bad header checksum")
	}
	if ihl > 20 {
		l.Flags |= FlagIPOptions
	}
	k.IPSrc[10], k.IPSrc[11] = 0xff, 0xff
	k.IPDst[10], k.IPDst[11] = 0xff, 0xff
	copy(k.IPSrc[12:], h[12:16])
	copy(k.IPDst[12:], h[16:20])
	proto := h[9]
	k.Proto, l.Proto = proto, proto
	l.IPHdrLen = ihl
	frag := binary.BigEndian.Uint16(h[6:8])
	if frag&0x3fff != 0 {
		l.Flags |= FlagFragment
		if frag&0x1fff != 0 {
			l.Flags |= FlagLaterFragment
			return l.fail(hal.ReasonFragment, LayerIPv4, off, inner, false, "non-first fragment: no transport header")
		}
	}
	return parseL4(b, off+ihl, end, k, l, inner)
}

func parseIPv6(b []byte, off, end int, k *hal.FlowKey, l *Layout, inner bool) error {
	l.L3 = off
	if end-off < 40 {
		return l.truncated(LayerIPv6, off, inner, "shorter than an IPv6 header")
	}
	h := b[off : off+40]
	if h[0]>>4 != 6 {
		return l.malformed(LayerIPv6, off, inner, "IP version is not 6")
	}
	plen := int(binary.BigEndian.Uint16(h[4:6]))
	nh := h[6]
	if plen == 0 && nh == ProtoHopByHop {
		return l.unsupported(LayerIPv6, off, inner, "jumbogram (payload length 0 with hop-by-hop options)")
	}
	if plen > end-off-40 {
		return l.truncated(LayerIPv6, off, inner, "payload length beyond the frame")
	}
	end = off + 40 + plen
	l.End = end
	copy(k.IPSrc[:], h[8:24])
	copy(k.IPDst[:], h[24:40])
	p := off + 40
	if isIPv6Ext(nh) {
		var fl Flags
		var code extResult
		var at int
		nh, p, fl, at, code = walkIPv6Ext(b[:end], p, nh)
		l.Flags |= fl
		k.Proto, l.Proto = nh, nh
		l.IPHdrLen = p - off
		switch code {
		case extOK:
		case extTruncated:
			return l.truncated(LayerIPv6Ext, at, inner, "extension header cut short")
		case extTooMany:
			return l.unsupported(LayerIPv6Ext, at, inner, "more extension headers than MaxIPv6ExtHeaders")
		case extHopByHopNotFirst:
			return l.malformed(LayerIPv6Ext, at, inner, "hop-by-hop options not first")
		case extLaterFragment:
			return l.fail(hal.ReasonFragment, LayerIPv6Ext, at, inner, false, "non-first fragment: no transport header")
		}
	} else {
		k.Proto, l.Proto = nh, nh
		l.IPHdrLen = 40
	}
	return parseL4(b, p, end, k, l, inner)
}

func isIPv6Ext(nh uint8) bool {
	switch nh {
	case ProtoHopByHop, ProtoRouting, ProtoFragment, ProtoDstOpts, ProtoAH, ProtoMobility, ProtoHIP, ProtoShim6:
		return true
	}
	return false
}

type extResult uint8

const (
	extOK extResult = iota
	extTruncated
	extTooMany
	extHopByHopNotFirst
	extLaterFragment
)

// walkIPv6Ext walks the IPv6 extension headers in b starting at off, the
// first of them being of type nh. It returns the upper-layer protocol, the
// offset of its header, flags found, and, on failure, the offset of the
// offending header and why. It never reads outside b and stops after
// MaxIPv6ExtHeaders headers.
func walkIPv6Ext(b []byte, off int, nh uint8) (proto uint8, l4 int, fl Flags, at int, res extResult) {
	for i := 0; isIPv6Ext(nh); i++ {
		fl |= FlagIPv6Ext
		if i == MaxIPv6ExtHeaders {
			return nh, off, fl, off, extTooMany
		}
		if nh == ProtoHopByHop && i > 0 {
			return nh, off, fl, off, extHopByHopNotFirst
		}
		if off < 0 || len(b)-off < 8 {
			return nh, off, fl, off, extTruncated
		}
		next := b[off]
		var n int
		switch nh {
		case ProtoFragment:
			n = 8
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			fl |= FlagFragment
			if fo&0xfff8 != 0 {
				fl |= FlagLaterFragment
				return next, off + 8, fl, off, extLaterFragment
			}
		case ProtoAH:
			n = (int(b[off+1]) + 2) << 2
		default:
			n = (int(b[off+1]) + 1) << 3
		}
		if n > len(b)-off {
			return nh, off, fl, off, extTruncated
		}
		off += n
		nh = next
	}
	return nh, off, fl, off, extOK
}

func parseL4(b []byte, off, end int, k *hal.FlowKey, l *Layout, inner bool) error {
	l.L4 = off
	switch k.Proto {
	case hal.ProtoUDP:
		if end-off < 8 {
			return l.truncated(LayerUDP, off, inner, "shorter than a UDP header")
		}
		u := b[off : off+8]
		k.L4Src = binary.BigEndian.Uint16(u[0:2])
		k.L4Dst = binary.BigEndian.Uint16(u[2:4])
		ulen := int(binary.BigEndian.Uint16(u[4:6]))
		if ulen < 8 {
			return l.malformed(LayerUDP, off, inner, "UDP length below 8")
		}
		// A first fragment carries the UDP header of the whole datagram,
		// whose length reaches past this fragment's payload.
		if ulen > end-off && l.Flags&FlagFragment == 0 {
			return l.truncated(LayerUDP, off, inner, "UDP length beyond the IP payload")
		}
		if u[6] == 0 && u[7] == 0 {
			l.Flags |= FlagUDPZeroCsum
		}
		l.Payload = off + 8
		if !inner && l.Flags&FlagLaterFragment == 0 {
			switch k.L4Dst {
			case hal.PortVXLAN:
				return parseVXLAN(b, off+8, off+ulen, k, l)
			case hal.PortGeneve:
				return parseGeneve(b, off+8, off+ulen, k, l)
			}
		}
		return nil
	case hal.ProtoTCP:
		if end-off < 20 {
			return l.truncated(LayerTCP, off, inner, "shorter than a TCP header")
		}
		t := b[off : off+20]
		doff := int(t[12]>>4) << 2
		if doff < 20 {
			return l.malformed(LayerTCP, off, inner, "data offset below 5")
		}
		if doff > end-off {
			return l.truncated(LayerTCP, off, inner, "data offset beyond the IP payload")
		}
		k.L4Src = binary.BigEndian.Uint16(t[0:2])
		k.L4Dst = binary.BigEndian.Uint16(t[2:4])
		l.Payload = off + doff
		return nil
	case hal.ProtoICMP, hal.ProtoICMPv6:
		if end-off < 4 {
			return l.truncated(LayerICMP, off, inner, "shorter than an ICMP header")
		}
		k.L4Src = uint16(b[off])
		k.L4Dst = uint16(b[off+1])
		l.Payload = off + 4
		return nil
	case ProtoSCTP:
		if end-off < 12 {
			return l.truncated(LayerSCTP, off, inner, "shorter than an SCTP common header")
		}
		k.L4Src = binary.BigEndian.Uint16(b[off : off+2])
		k.L4Dst = binary.BigEndian.Uint16(b[off+2 : off+4])
		l.Payload = off + 12
		return nil
	case hal.ProtoGRE:
		// Only GRE carrying Ethernet (NVGRE) is decapsulated; other GRE is
		// an opaque IP payload keyed on addresses and protocol.
		if !inner && end-off >= 4 && binary.BigEndian.Uint16(b[off+2:off+4]) == hal.EtherTypeTEB {
			return parseNVGRE(b, off, end, k, l)
		}
	}
	l.Payload = off
	return nil
}

// enterTunnel moves the outer headers into the tunnel fields of k and l and
// parses the inner Ethernet frame b[inner:end].
func enterTunnel(b []byte, inner, end int, k *hal.FlowKey, l *Layout, kind hal.EncapKind, vni uint32, tunOff int) error {
	k.TunKind, k.VNI = kind, vni
	k.TunSrc, k.TunDst = k.IPSrc, k.IPDst
	k.IPSrc, k.IPDst = [16]byte{}, [16]byte{}
	k.VLAN, k.Proto, k.L4Src, k.L4Dst = 0, 0, 0, 0
	l.OuterL3, l.OuterL4, l.Tunnel = l.L3, l.L4, tunOff
	l.OuterVLANs, l.OuterEthType, l.OuterFlags = l.VLANs, l.EthType, l.Flags
	l.Flags = FlagTunnel
	return parseFrame(b, inner, end, k, l, true)
}

func (l *Layout) outerFragment(layer Layer, off int) error {
	return l.fail(hal.ReasonFragment, layer, off, false, false, "fragmented encapsulated packet")
}

// parseVXLAN parses the VXLAN header at off (RFC 7348 §5): flags with the I
// bit, 24 reserved bits, the 24-bit VNI, 8 reserved bits. Reserved bits are
// ignored on receipt, as the RFC says.
func parseVXLAN(b []byte, off, end int, k *hal.FlowKey, l *Layout) error {
	if l.Flags&FlagFragment != 0 {
		return l.outerFragment(LayerVXLAN, off)
	}
	if end-off < 8 {
		return l.truncated(LayerVXLAN, off, false, "shorter than a VXLAN header")
	}
	v := b[off : off+8]
	if v[0]&0x08 == 0 {
		return l.malformed(LayerVXLAN, off, false, "I flag not set: no valid VNI")
	}
	vni := binary.BigEndian.Uint32(v[4:8]) >> 8
	return enterTunnel(b, off+8, end, k, l, hal.EncapVXLAN, vni, off)
}

// parseGeneve parses the Geneve header at off (RFC 8926 §3.4) and walks its
// options. Control packets (O bit) and critical options go to the host
// (ReasonUnsupported): this package understands no option, and the RFC
// forbids forwarding a packet whose critical option is not understood.
func parseGeneve(b []byte, off, end int, k *hal.FlowKey, l *Layout) error {
	if l.Flags&FlagFragment != 0 {
		return l.outerFragment(LayerGeneve, off)
	}
	if end-off < 8 {
		return l.truncated(LayerGeneve, off, false, "shorter than a Geneve header")
	}
	g := b[off : off+8]
	if g[0]>>6 != 0 {
		return l.unsupported(LayerGeneve, off, false, "Geneve version is not 0")
	}
	optLen := int(g[0]&0x3f) << 2
	if g[1]&0x80 != 0 {
		return l.unsupported(LayerGeneve, off, false, "control packet (O bit)")
	}
	if binary.BigEndian.Uint16(g[2:4]) != hal.EtherTypeTEB {
		return l.unsupported(LayerGeneve, off, false, "payload is not Ethernet (protocol type not 0x6558)")
	}
	if optLen > end-off-8 {
		return l.truncated(LayerGeneve, off, false, "options beyond the UDP payload")
	}
	if optLen > 0 {
		opts := b[off+8 : off+8+optLen]
		critical, bad := walkGeneveOptions(opts)
		if bad >= 0 {
			return l.malformed(LayerGeneve, off+8+bad, false, "option overruns the option area")
		}
		if critical || g[1]&0x40 != 0 {
			return l.unsupported(LayerGeneve, off, false, "critical option not understood")
		}
	}
	vni := binary.BigEndian.Uint32(g[4:8]) >> 8
	err := enterTunnel(b, off+8+optLen, end, k, l, hal.EncapGeneve, vni, off)
	if optLen > 0 {
		l.OuterFlags |= FlagGeneveOptions
	}
	return err
}

// walkGeneveOptions checks that the options in opts tile it exactly. It
// returns whether one is critical and the offset of a bad option (-1 when
// all are well formed).
func walkGeneveOptions(opts []byte) (critical bool, bad int) {
	for off := 0; off < len(opts); {
		o, next, err := NextGeneveOption(opts, off)
		if err != nil {
			return critical, off
		}
		critical = critical || o.Critical()
		off = next
	}
	return critical, -1
}

// GeneveOption is one option TLV of a Geneve header (RFC 8926 §3.5).
type GeneveOption struct {
	Class uint16
	Type  uint8 // the high bit is the critical bit
	Data  []byte
}

// Critical reports whether a receiver that does not understand the option
// must drop the packet.
func (o GeneveOption) Critical() bool { return o.Type&0x80 != 0 }

// NextGeneveOption reads the option at opts[off:] and returns it with the
// offset of the next one. opts is the option area of a Geneve header
// (Layout.Tunnel+8 up to the length in the header); walk it with
//
//	for off := 0; off < len(opts); {
//		o, next, err := wire.NextGeneveOption(opts, off)
//		if err != nil { … }
//		off = next
//	}
//
// Data aliases opts; nothing is allocated. An option that does not fit is
// an error, and next always moves forward, so a walk ends after at most
// len(opts)/4 steps.
func NextGeneveOption(opts []byte, off int) (GeneveOption, int, error) {
	if off < 0 || len(opts)-off < 4 {
		return GeneveOption{}, len(opts), errGeneveOption
	}
	h := opts[off : off+4]
	n := 4 + int(h[3]&0x1f)<<2
	if n > len(opts)-off {
		return GeneveOption{}, len(opts), errGeneveOption
	}
	return GeneveOption{
		Class: binary.BigEndian.Uint16(h[0:2]),
		Type:  h[2],
		Data:  opts[off+4 : off+n],
	}, off + n, nil
}

var errGeneveOption = &ParseError{Reason: hal.ReasonMalformed, Layer: LayerGeneve, Truncated: true, Msg: "option overruns the option area"}

// parseNVGRE parses a GRE header carrying Ethernet at off as NVGRE (RFC 7637
// §3.2): C=0, K=1, S=0, version 0, protocol 0x6558, then VSID (24 bits) and
// FlowID (8 bits) in the key.
func parseNVGRE(b []byte, off, end int, k *hal.FlowKey, l *Layout) error {
	if l.Flags&FlagFragment != 0 {
		return l.outerFragment(LayerGRE, off)
	}
	g := b[off:end]
	if g[0]&0xb0 != 0x20 || g[1]&0x07 != 0 {
		return l.unsupported(LayerGRE, off, false, "GRE carrying Ethernet without the NVGRE flags (C=0 K=1 S=0, version 0)")
	}
	if len(g) < 8 {
		return l.truncated(LayerGRE, off, false, "shorter than an NVGRE header")
	}
	vsid := binary.BigEndian.Uint32(g[4:8]) >> 8
	l.Payload = off + 8
	return enterTunnel(b, off+8, end, k, l, hal.EncapNVGRE, vsid, off)
}

// Decap returns the offset of the inner Ethernet frame of a frame Parse
// found encapsulated; the inner frame is frame[start:l.End].
func Decap(frame []byte, l *Layout) (start int, err error) {
	if l.Tunnel < 0 {
		return 0, ErrNotTunnelled
	}
	if l.L2 < 0 || l.L2 > l.End || l.End > len(frame) {
		return 0, ErrBounds
	}
	return l.L2, nil
}
