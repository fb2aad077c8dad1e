package wire

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/nicpath/nicpath/hal"
)

// ICMP message types and codes the answers to oversized packets use.
const (
	ICMPv4DestUnreachable = 3 // RFC 792
	ICMPv4FragNeeded      = 4 // code of ICMPv4DestUnreachable: fragmentation needed and DF set (RFC 1191)
	ICMPv6PacketTooBig    = 2 // RFC 4443 §3.2
)

// Limits on the size of an ICMP error, quoted packet included.
const (
	// MaxICMPv4Error is the most bytes of IPv4 packet an ICMP error takes:
	// RFC 1812 §4.3.2.3 quotes "as much of the original datagram as
	// possible without the length of the ICMP datagram exceeding 576
	// bytes" (Linux does the same).
	MaxICMPv4Error = 576
	// MaxICMPv6Error is the IPv6 minimum MTU: an ICMPv6 error carries as
	// much of the invoking packet as fits in it (RFC 4443 §2.4(c)).
	MaxICMPv6Error = 1280
	// MinIPv4MTU is the smallest MTU an IPv4 link may have (RFC 791: every
	// module forwards 68 octets without further fragmentation).
	MinIPv4MTU = 68
	// MinIPv6MTU is the smallest MTU an IPv6 link may have (RFC 8200 §5).
	MinIPv6MTU = 1280
)

// Why an oversized packet gets no ICMP answer. AppendTooBig returns them;
// they are package variables so that a refusal allocates nothing.
var (
	// ErrICMPError: the packet is an ICMP error itself; no ICMP error
	// answers one (RFC 1122 §3.2.2, RFC 4443 §2.4(e.1)).
	ErrICMPError = errors.New("wire: the packet is an ICMP error: it is never answered with one")
	// ErrNotUnicast: the packet's source is not a unicast address, or (for
	// IPv4) it was sent to a multicast or broadcast address, IP or link
	// layer (RFC 1122 §3.2.2, RFC 1812 §4.3.2.7; RFC 4443 §2.4(e.3) lets
	// IPv6 answer a multicast destination with a Packet Too Big).
	ErrNotUnicast = errors.New("wire: the packet's source or destination rules out an ICMP error")
	// ErrNoICMPSource: the answer has no unicast source address to be sent
	// from.
	ErrNoICMPSource = errors.New("wire: no unicast source address for the ICMP error")
	// ErrAnswerTooSmall: the answer's size limit leaves no room for the IP
	// header and the first 8 bytes of the packet it quotes (RFC 792).
	ErrAnswerTooSmall = errors.New("wire: size limit too small for an ICMP error quoting the IP header and 8 bytes")
)

// TooBig says how to answer an oversized packet with AppendTooBig.
type TooBig struct {
	// MTU is the next-hop MTU announced: the most bytes of IP packet that
	// pass (RFC 1191 §4; RFC 4443 §3.2). IPv4 carries it in 16 bits, so
	// larger values are announced as 65535.
	MTU int
	// Src is the answer's IP source; the zero Addr means the answered
	// packet's destination.
	Src netip.Addr
	// MaxLen is the most bytes of IP packet the answer may take (the MTU of
	// the port it goes out of); 0 means only the RFC limits
	// (MaxICMPv4Error, MaxICMPv6Error) apply.
	MaxLen int
	// Quoted is the frame whose packet the answer quotes; it must have the
	// answered frame's layout (the same frame before its headers were
	// rewritten, say). Nil quotes the answered frame.
	Quoted []byte
	// ID is the IPv4 identification of the answer.
	ID uint16
	// TTL is the answer's TTL or hop limit; 0 means DefaultTTL.
	TTL uint8
}

// AppendTooBig appends to b an Ethernet frame that answers frame, parsed
// into l (a frame that is not tunnelled, or the inner frame of one), with
// an ICMP "destination unreachable, fragmentation needed" (IPv4, type 3
// code 4, RFC 792 and RFC 1191) or an ICMPv6 "packet too big" (type 2,
// RFC 4443) announcing tb.MTU.
//
// The answer goes back to the frame's sender: its Ethernet destination is
// the frame's source and its Ethernet source the frame's destination, the
// frame's VLAN tags are kept, its IP destination is the packet's source and
// its IP source tb.Src (or the packet's destination). It quotes the packet
// from its IP header on, as much as the RFCs and tb.MaxLen allow; the IPv4
// and ICMP checksums are computed. A packet that must not be answered (an
// ICMP error, a source that is not unicast, an IPv4 broadcast or multicast)
// is refused with one of the errors above, ErrNoHeader for a frame that is
// not IP, or ErrBounds for a layout that does not fit the frame.
func AppendTooBig(b, frame []byte, l *Layout, tb *TooBig) ([]byte, error) {
	q := tb.Quoted
	if q == nil {
		q = frame
	}
	if l.L3 < 0 || (l.EthType != hal.EtherTypeIPv4 && l.EthType != hal.EtherTypeIPv6) {
		return b, ErrNoHeader
	}
	if l.L2 < 0 || l.L2+EthHeaderLen > l.L3 || l.End > len(frame) || l.End > len(q) {
		return b, ErrBounds
	}
	if l.EthType == hal.EtherTypeIPv4 {
		return appendFragNeeded(b, frame, q, l, tb)
	}
	return appendPacketTooBig(b, frame, q, l, tb)
}

// icmpv4Error reports whether an ICMPv4 type is an error message (RFC 1122
// §3.2.2: destination unreachable, source quench, redirect, time exceeded,
// parameter problem).
func icmpv4Error(t uint8) bool {
	switch t {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// appendL2 appends the answer's Ethernet header and tags: frame's with the
// MACs swapped.
func appendL2(b, frame []byte, l *Layout) []byte {
	n := len(b)
	b = append(b, frame[l.L2:l.L3]...)
	h := b[n:]
	copy(h[0:6], frame[l.L2+6:l.L2+12])
	copy(h[6:12], frame[l.L2:l.L2+6])
	return b
}

// quoteLen is how much of a packet of n bytes an answer with hdr bytes of
// headers quotes within limit, or -1 when it cannot quote the packet's
// IP header and 8 bytes.
func quoteLen(n, hdr, ipHdr, limit int) int {
	q := min(n, limit-hdr)
	if q < min(n, ipHdr+8) {
		return -1
	}
	return q
}

func appendFragNeeded(b, frame, q []byte, l *Layout, tb *TooBig) ([]byte, error) {
	ip := frame[l.L3:l.End]
	if len(ip) < IPv4HeaderLen {
		return b, ErrBounds
	}
	ihl := int(ip[0]&0x0f) << 2
	if ihl < IPv4HeaderLen || ihl > len(ip) {
		return b, ErrBounds
	}
	if binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0 {
		return b, ErrFragment // no transport header to quote, and RFC 1122 §3.2.2
	}
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	dst := netip.AddrFrom4([4]byte(ip[16:20]))
	if ip[9] == hal.ProtoICMP && len(ip) > ihl && icmpv4Error(ip[ihl]) {
		return b, ErrICMPError
	}
	if !unicast4(src) || dst.IsMulticast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) ||
		frame[l.L2]&1 != 0 {
		return b, ErrNotUnicast
	}
	from := tb.Src
	if !from.IsValid() {
		from = dst
	}
	if !from.Is4() || !unicast4(from) {
		return b, ErrNoICMPSource
	}
	limit := MaxICMPv4Error
	if tb.MaxLen > 0 {
		limit = min(limit, tb.MaxLen)
	}
	const hdr = IPv4HeaderLen + 8
	n := quoteLen(len(ip), hdr, ihl, limit)
	if n < 0 {
		return b, ErrAnswerTooSmall
	}
	b = appendL2(b, frame, l)
	start := len(b)
	b = append(b, make([]byte, hdr)...)
	b = append(b, q[l.L3:l.L3+n]...)
	h := b[start:]
	h[0] = 0x45
	// Precedence "internetwork control", as Linux sends its ICMP errors;
	// the type-of-service bits of the packet are kept (RFC 1812 §4.3.2.5).
	h[1] = 0xc0 | ip[1]&0x1c
	binary.BigEndian.PutUint16(h[2:4], uint16(hdr+n))
	binary.BigEndian.PutUint16(h[4:6], tb.ID)
	h[8] = ttlOr(tb.TTL)
	h[9] = hal.ProtoICMP
	s4, d4 := from.As4(), src.As4()
	copy(h[12:16], s4[:])
	copy(h[16:20], d4[:])
	binary.BigEndian.PutUint16(h[10:12], Checksum(h[:IPv4HeaderLen], 0))
	m := h[IPv4HeaderLen:]
	m[0], m[1] = ICMPv4DestUnreachable, ICMPv4FragNeeded
	binary.BigEndian.PutUint16(m[6:8], uint16(min(max(tb.MTU, 0), 0xffff)))
	binary.BigEndian.PutUint16(m[2:4], Checksum(m, 0))
	return b, nil
}

// unicast4 reports whether a is an address an IPv4 packet may come from and
// be answered at: not unspecified, loopback, multicast, broadcast or class E.
func unicast4(a netip.Addr) bool {
	b := a.As4()
	return !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() && b[0] < 240 && b[0] != 0
}

func ttlOr(t uint8) uint8 {
	if t == 0 {
		return DefaultTTL
	}
	return t
}

func appendPacketTooBig(b, frame, q []byte, l *Layout, tb *TooBig) ([]byte, error) {
	ip := frame[l.L3:l.End]
	if len(ip) < IPv6HeaderLen {
		return b, ErrBounds
	}
	if l.Flags&FlagLaterFragment != 0 {
		return b, ErrFragment
	}
	src := netip.AddrFrom16([16]byte(ip[8:24]))
	dst := netip.AddrFrom16([16]byte(ip[24:40]))
	// An ICMPv6 error is a message type below 128 (RFC 4443 §2.1); the
	// type is found past the extension headers.
	if l.Proto == hal.ProtoICMPv6 && l.L4 >= l.L3 && l.L4 < l.End && frame[l.L4] < 128 {
		return b, ErrICMPError
	}
	if !unicast6(src) {
		return b, ErrNotUnicast
	}
	from := tb.Src
	if !from.IsValid() {
		from = dst
	}
	if !from.Is6() || from.Is4In6() || !unicast6(from) {
		return b, ErrNoICMPSource
	}
	limit := MaxICMPv6Error
	if tb.MaxLen > 0 {
		limit = min(limit, tb.MaxLen)
	}
	const hdr = IPv6HeaderLen + 8
	n := quoteLen(len(ip), hdr, IPv6HeaderLen, limit)
	if n < 0 {
		return b, ErrAnswerTooSmall
	}
	b = appendL2(b, frame, l)
	start := len(b)
	b = append(b, make([]byte, hdr)...)
	b = append(b, q[l.L3:l.L3+n]...)
	h := b[start:]
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:6], uint16(8+n))
	h[6] = hal.ProtoICMPv6
	h[7] = ttlOr(tb.TTL)
	s16, d16 := from.As16(), src.As16()
	copy(h[8:24], s16[:])
	copy(h[24:40], d16[:])
	m := h[IPv6HeaderLen:]
	m[0] = ICMPv6PacketTooBig
	binary.BigEndian.PutUint32(m[4:8], uint32(max(tb.MTU, 0)))
	binary.BigEndian.PutUint16(m[2:4], Checksum(m, PseudoHeaderSum(h[8:24], h[24:40], hal.ProtoICMPv6, len(m))))
	return b, nil
}

// unicast6 reports whether a is an IPv6 address a packet may come from and
// be answered at: not unspecified, loopback, multicast or IPv4-mapped.
func unicast6(a netip.Addr) bool {
	return !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() && !a.Is4In6()
}
