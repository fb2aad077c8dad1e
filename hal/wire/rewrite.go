package wire

import (
	"encoding/binary"

	"github.com/nicpath/nicpath/hal"
)

// The rewrites change a parsed frame in place, with incremental checksum
// updates (RFC 1624): the IPv4 header checksum, and the TCP, UDP and ICMPv6
// checksums that cover the pseudo-header. A UDP checksum of 0 over IPv4
// means "none" and stays 0. They work on the frame Layout describes: the
// inner frame of a tunnelled packet, so they are meant for plain frames and
// for frames after Decap (an outer IPv6 UDP checksum would not follow). They
// allocate nothing.

// SetEthSrc rewrites the source MAC.
func SetEthSrc(frame []byte, l *Layout, m hal.MAC) {
	if l.L2 >= 0 && l.L2+12 <= len(frame) {
		copy(frame[l.L2+6:l.L2+12], m[:])
	}
}

// SetEthDst rewrites the destination MAC.
func SetEthDst(frame []byte, l *Layout, m hal.MAC) {
	if l.L2 >= 0 && l.L2+6 <= len(frame) {
		copy(frame[l.L2:l.L2+6], m[:])
	}
}

// SetIPSrc rewrites the source address; a is in FlowKey form (IPv4-mapped
// for IPv4).
func SetIPSrc(frame []byte, l *Layout, a [16]byte) error { return setIP(frame, l, a, 0) }

// SetIPDst rewrites the destination address.
func SetIPDst(frame []byte, l *Layout, a [16]byte) error { return setIP(frame, l, a, 1) }

func isMapped(a *[16]byte) bool {
	return binary.LittleEndian.Uint64(a[0:8]) == 0 && a[8] == 0 && a[9] == 0 && a[10] == 0xff && a[11] == 0xff
}

// l4CsumOffset returns the offset of the transport checksum that covers the
// pseudo-header, or -1 when there is none to update.
func l4CsumOffset(frame []byte, l *Layout) int {
	if l.L4 < 0 {
		return -1
	}
	var off int
	switch l.Proto {
	case hal.ProtoTCP:
		off = l.L4 + 16
	case hal.ProtoUDP:
		off = l.L4 + 6
	case hal.ProtoICMPv6:
		if l.EthType != hal.EtherTypeIPv6 {
			return -1
		}
		off = l.L4 + 2
	default:
		return -1
	}
	if off+2 > len(frame) {
		return -1
	}
	return off
}

func setIP(frame []byte, l *Layout, a [16]byte, which int) error {
	if l.L3 < 0 {
		return ErrNoHeader
	}
	var field []byte
	switch l.EthType {
	case hal.EtherTypeIPv4:
		if !isMapped(&a) {
			return ErrFamily
		}
		if l.L3+20 > len(frame) {
			return ErrBounds
		}
		ip := frame[l.L3 : l.L3+20]
		field = ip[12+4*which : 16+4*which]
		c := updateCsumBytes(binary.BigEndian.Uint16(ip[10:12]), field, a[12:16])
		binary.BigEndian.PutUint16(ip[10:12], c)
		updateL4(frame, l, field, a[12:16])
	case hal.EtherTypeIPv6:
		if isMapped(&a) {
			return ErrFamily
		}
		if l.L3+40 > len(frame) {
			return ErrBounds
		}
		field = frame[l.L3+8+16*which : l.L3+24+16*which]
		updateL4(frame, l, field, a[:])
	default:
		return ErrNoHeader
	}
	copy(field, a[16-len(field):])
	return nil
}

func updateL4(frame []byte, l *Layout, old, new []byte) {
	off := l4CsumOffset(frame, l)
	if off < 0 {
		return
	}
	c := binary.BigEndian.Uint16(frame[off:])
	if l.Proto == hal.ProtoUDP && c == 0 {
		if l.EthType == hal.EtherTypeIPv4 {
			return // no checksum
		}
	}
	c = updateCsumBytes(c, old, new)
	if l.Proto == hal.ProtoUDP && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[off:], c)
}

// SetL4Src rewrites the TCP or UDP source port.
func SetL4Src(frame []byte, l *Layout, port uint16) error { return setPort(frame, l, port, 0) }

// SetL4Dst rewrites the TCP or UDP destination port.
func SetL4Dst(frame []byte, l *Layout, port uint16) error { return setPort(frame, l, port, 2) }

func setPort(frame []byte, l *Layout, port uint16, at int) error {
	if l.L4 < 0 || (l.Proto != hal.ProtoTCP && l.Proto != hal.ProtoUDP) {
		return ErrNoHeader
	}
	off := l4CsumOffset(frame, l)
	if off < 0 || l.L4+4 > len(frame) {
		return ErrBounds
	}
	old := binary.BigEndian.Uint16(frame[l.L4+at:])
	c := binary.BigEndian.Uint16(frame[off:])
	if !(l.Proto == hal.ProtoUDP && c == 0 && l.EthType == hal.EtherTypeIPv4) {
		c = updateCsum16(c, old, port)
		if l.Proto == hal.ProtoUDP && c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(frame[off:], c)
	}
	binary.BigEndian.PutUint16(frame[l.L4+at:], port)
	return nil
}

// DecTTL decrements the IPv4 TTL (fixing the header checksum) or the IPv6
// hop limit. A packet whose TTL is 0 or 1 cannot be forwarded: DecTTL then
// reports expired and leaves the frame as it is, for the host to answer
// (ReasonTTL).
func DecTTL(frame []byte, l *Layout) (expired bool, err error) {
	if l.L3 < 0 {
		return false, ErrNoHeader
	}
	switch l.EthType {
	case hal.EtherTypeIPv4:
		if l.L3+20 > len(frame) {
			return false, ErrBounds
		}
		ip := frame[l.L3 : l.L3+20]
		if ip[8] <= 1 {
			return true, nil
		}
		old := binary.BigEndian.Uint16(ip[8:10])
		ip[8]--
		binary.BigEndian.PutUint16(ip[10:12], updateCsum16(binary.BigEndian.Uint16(ip[10:12]), old, binary.BigEndian.Uint16(ip[8:10])))
	case hal.EtherTypeIPv6:
		if l.L3+40 > len(frame) {
			return false, ErrBounds
		}
		if frame[l.L3+7] <= 1 {
			return true, nil
		}
		frame[l.L3+7]--
	default:
		return false, ErrNoHeader
	}
	return false, nil
}

// PushVLAN inserts an 802.1Q tag with VLAN ID vid (priority 0) after the
// MACs of the Ethernet frame buf[start:end], using 4 bytes of headroom, and
// returns the new start. Layouts of the frame are stale afterwards.
func PushVLAN(buf []byte, start, end int, vid uint16) (newStart int, err error) {
	if start < 0 || end > len(buf) || end-start < EthHeaderLen {
		return start, ErrBounds
	}
	if start < VLANTagLen {
		return start, ErrNoHeadroom
	}
	s := start - VLANTagLen
	copy(buf[s:s+12], buf[start:start+12])
	binary.BigEndian.PutUint16(buf[s+12:s+14], hal.EtherTypeVLAN)
	binary.BigEndian.PutUint16(buf[s+14:s+16], vid&0x0fff)
	return s, nil
}

// PopVLAN removes the outer 802.1Q or 802.1ad tag of the Ethernet frame
// buf[start:end] and returns the new start. Layouts of the frame are stale
// afterwards.
func PopVLAN(buf []byte, start, end int) (newStart int, err error) {
	if start < 0 || end > len(buf) || end-start < EthHeaderLen+VLANTagLen {
		if start >= 0 && end <= len(buf) && end-start >= EthHeaderLen {
			if et := binary.BigEndian.Uint16(buf[start+12:]); et != hal.EtherTypeVLAN && et != hal.EtherTypeQinQ {
				return start, ErrNoVLAN
			}
		}
		return start, ErrBounds
	}
	et := binary.BigEndian.Uint16(buf[start+12:])
	if et != hal.EtherTypeVLAN && et != hal.EtherTypeQinQ {
		return start, ErrNoVLAN
	}
	s := start + VLANTagLen
	copy(buf[s:s+12], buf[start:start+12])
	return s, nil
}
