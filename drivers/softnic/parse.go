package softnic

import (
	"encoding/binary"
	"math/bits"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// parseFast keys the frames most of a host's traffic is made of, Ethernet
// (untagged or with one 802.1Q tag) carrying an option-less, unfragmented
// IPv4 packet with a valid header checksum and a UDP (to a port other than
// VXLAN's and Geneve's) or TCP header, straight into the lookup's words, in
// one pass and without a hal.FlowKey. For every other frame it reports
// false having decided nothing, and the frame goes through wire.Parse. For
// the frames it takes, w is what loadWords gives for wire.Parse's key
// (TestParseFast, and FuzzProcess on every frame it is given).
//
// It leaves the frame's wire.Layout unwritten: a hit whose program only
// rewrites MACs, encapsulates and outputs (program.macsOnly, the common
// shape) needs no more of it than the words say (no tunnel, the tags in
// word 10, the Ethernet header at 0), and fastLayout fills it, from the
// frame, for whatever does (execute's general path). Seventeen stores a
// packet, and 136 bytes of burst state a packet, are thereby left out of
// the common path.
func parseFast(b []byte, inPort hal.PortID, w *words) bool {
	if len(b) < wire.EthHeaderLen+wire.IPv4HeaderLen+wire.TCPHeaderLen {
		return false
	}
	be, le := binary.BigEndian, binary.LittleEndian
	_ = b[53]
	off := wire.EthHeaderLen
	et := be.Uint16(b[12:14])
	vlan := uint16(0)
	if et == hal.EtherTypeVLAN {
		tag := be.Uint32(b[14:18])
		vlan = hal.VLANPresent | uint16(tag>>16)&0x0fff
		et = uint16(tag)
		off += wire.VLANTagLen
	}
	if et != hal.EtherTypeIPv4 {
		return false
	}
	ip := b[off:]
	if len(ip) < wire.IPv4HeaderLen+wire.TCPHeaderLen {
		return false
	}
	w0 := le.Uint64(ip[0:8])  // version/IHL, TOS, total length, ID, flags/fragment offset
	w1 := le.Uint64(ip[8:16]) // TTL, protocol, checksum, source
	w2 := uint64(le.Uint32(ip[16:20]))
	// Version 4, IHL 5, neither MF nor a fragment offset.
	if w0&0xff != 0x45 || (w0>>48)&0xff3f != 0 {
		return false
	}
	// The header checksum, on little-endian words: the one's-complement
	// sum does not depend on byte order (RFC 1071 §2(B)).
	sum, c := bits.Add64(w0, w1, 0)
	sum, c = bits.Add64(sum, w2, c)
	sum, c = bits.Add64(sum, 0, c)
	sum += c
	s := sum&0xffffffff + sum>>32
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	tot := int(bits.ReverseBytes16(uint16(w0 >> 16)))
	if s != 0xffff || tot < wire.IPv4HeaderLen || tot > len(ip) {
		return false
	}
	proto := uint8(w1 >> 8)
	l4 := ip[wire.IPv4HeaderLen:]
	_ = l4[19]
	l4len := tot - wire.IPv4HeaderLen
	dp := be.Uint16(l4[2:4])
	switch proto {
	case hal.ProtoUDP:
		ul := int(be.Uint16(l4[4:6]))
		if l4len < wire.UDPHeaderLen || ul < wire.UDPHeaderLen || ul > l4len || dp == hal.PortVXLAN || dp == hal.PortGeneve {
			return false
		}
	case hal.ProtoTCP:
		hl := int(l4[12]>>4) << 2
		if l4len < wire.TCPHeaderLen || hl < wire.TCPHeaderLen || hl > l4len {
			return false
		}
	default:
		return false
	}
	sp := be.Uint16(l4[0:2])

	// The words of the key, as loadWords lays them out: no tunnel, the
	// IPv4-mapped addresses, in-port, MACs, EtherType and tag, L4.
	// (Word by word: a composite literal is built on the stack and copied.)
	w[0], w[1], w[2], w[3], w[4], w[6] = 0, 0, 0, 0, 0, 0
	w[5] = w1>>32 | w2<<32
	w[7] = v4Mid
	w[8] = uint64(inPort)
	w[9] = le.Uint64(b[6:14])&0xffffffffffff | uint64(le.Uint16(b[0:2]))<<48
	w[10] = uint64(le.Uint32(b[2:6])) | uint64(et)<<32 | uint64(vlan)<<48
	w[11] = uint64(sp) | uint64(dp)<<16 | uint64(proto)<<32
	return true
}

// fastLayout fills l with wire.Parse's layout of frame b, which parseFast
// took (and which has not changed since): the checks parseFast made are
// not made again (TestParseFast holds the two together to wire.Parse).
func fastLayout(b []byte, l *wire.Layout) {
	be := binary.BigEndian
	_ = b[53]
	off, vlans := wire.EthHeaderLen, 0
	if be.Uint16(b[12:14]) == hal.EtherTypeVLAN {
		off, vlans = off+wire.VLANTagLen, 1
	}
	ip := b[off:]
	_ = ip[wire.IPv4HeaderLen+wire.TCPHeaderLen-1]
	tot := int(be.Uint16(ip[2:4]))
	proto := ip[9]
	l4 := ip[wire.IPv4HeaderLen:]
	hl := wire.UDPHeaderLen
	var fl wire.Flags
	if proto == hal.ProtoTCP {
		hl = int(l4[12]>>4) << 2
	} else if l4[6]|l4[7] == 0 {
		fl = wire.FlagUDPZeroCsum
	}
	l3 := off + wire.IPv4HeaderLen
	l.L2, l.L3, l.L4, l.Payload, l.End = 0, off, l3, l3+hl, off+tot
	l.VLANs, l.IPHdrLen, l.EthType, l.Proto, l.Flags = vlans, wire.IPv4HeaderLen, hal.EtherTypeIPv4, proto, fl
	l.OuterL3, l.OuterL4, l.Tunnel = -1, -1, -1
	l.OuterVLANs, l.OuterEthType, l.OuterFlags = 0, 0, 0
}
