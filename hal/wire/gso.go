package wire

import (
	"encoding/binary"
	"errors"

	"github.com/nicpath/nicpath/hal"
)

// Errors of Segmenter.Init. Init wraps nothing: callers count and drop.
var (
	// ErrGSOType: the virtio-net header asks for a segmentation this
	// package does not do (UFO, an unknown type, or a GSO size of 0), or
	// one that does not match the frame's headers (TCPv4 on an IPv6
	// packet, UDP_L4 on TCP …).
	ErrGSOType = errors.New("wire: GSO type not segmentable or not matching the frame")
	// ErrGSOFrame: the frame is not one Linux would hand over for
	// segmentation: it does not parse, is a fragment, has no payload, its
	// checksum start is not its (inner) transport header, or its outer
	// packet carries more than the inner one.
	ErrGSOFrame = errors.New("wire: frame not segmentable")
	// ErrSegmentTooBig: a UDP segment (a datagram the sender cut; it cannot
	// be cut smaller) exceeds the L3 size allowed.
	ErrSegmentTooBig = errors.New("wire: UDP segment larger than the MTU allows")
)

// Segmenter cuts a GSO super-frame (a TCP or UDP packet larger than the
// MTU, as a Linux sender hands it to a device with TSO/USO, described by a
// VirtioNetHdr) into the frames that device would put on the wire, one per
// Next call, into caller-owned buffers. It does what the kernel's software
// GSO does (tcp_gso_segment, __udp_gso_segment, inet_gso_segment,
// skb_udp_tunnel_segment):
//
//   - every segment carries the super-frame's headers (Ethernet, VLAN tags,
//     IP options, IPv6 extension headers, TCP options) and GSOSize payload
//     bytes, the last one the rest;
//   - IPv4 total length, IPv6 payload length and the UDP length are the
//     segment's; each IPv4 header's ID is the super-frame's plus the
//     segment's index, and its header checksum is recomputed;
//   - TCP: the sequence number advances by the payload before the segment;
//     FIN and PSH stay on the last segment only, CWR on the first only;
//   - the transport checksum is complete (not partial) in every segment;
//   - tunnelled super-frames (VXLAN or Geneve over UDP, NVGRE; the kernel
//     reports these with the inner packet's plain GSO type and CsumStart at
//     the inner transport header) are cut by their inner packet: the outer
//     IP header gets its length, ID and checksum as above, the outer UDP
//     header its length, and its checksum when the super-frame had one (0
//     stays 0).
//
// Init's maxL3 is the largest L3 packet a segment may be (the outer one
// when tunnelled; 0 for no limit): TCP segments are cut smaller than
// GSOSize when needed to fit it, as any MSS is valid for TCP; a UDP
// segment that does not fit is an error, as it is a datagram of its own.
//
// A Segmenter is reused from frame to frame and allocates nothing; it
// reads the frame given to Init until the last Next. It is not safe for
// concurrent use.
type Segmenter struct {
	frame []byte
	hdr   int // frame[:hdr] are the headers every segment starts with
	mss   int
	next  int // the first payload byte of the next segment
	end   int // the end of the payload
	index int // segments emitted

	l3, l4   int // the segmented packet's IP and transport headers
	v6, tcp  bool
	ol3, ol4 int // a tunnelled frame's outer IP and UDP headers; -1 when absent
	ov6      bool
	outerSum bool // the outer UDP checksum is to be computed per segment
	id, oid  uint16
	seq      uint32

	key hal.FlowKey
	lay Layout
}

// Init prepares to cut frame as h describes. maxL3 bounds the L3 size of
// every segment (0: no bound).
func (s *Segmenter) Init(frame []byte, h *VirtioNetHdr, maxL3 int) error {
	s.frame, s.next, s.end, s.index = nil, 0, 0, 0
	t := h.GSOType &^ VirtioNetHdrGSOECN
	if t != VirtioNetHdrGSOTCPv4 && t != VirtioNetHdrGSOTCPv6 && t != VirtioNetHdrGSOUDPL4 || h.GSOSize == 0 {
		return ErrGSOType
	}
	l := &s.lay
	if err := Parse(frame, 0, &s.key, l); err != nil {
		return ErrGSOFrame
	}
	if l.Flags&FlagFragment != 0 || l.OuterFlags&FlagFragment != 0 {
		return ErrGSOFrame
	}
	cs := int(h.CsumStart)
	s.ol3, s.ol4, s.ov6, s.outerSum = -1, -1, false, false
	s.l3, s.l4, s.hdr, s.end = l.L3, l.L4, l.Payload, l.End
	s.v6, s.tcp = l.EthType == hal.EtherTypeIPv6, l.Proto == hal.ProtoTCP
	proto := l.Proto
	switch {
	case l.Tunnel >= 0 && cs == l.OuterL4 && t == VirtioNetHdrGSOUDPL4:
		// UDP segmentation of datagrams to a tunnel's port, not of a
		// tunnelled packet: cut by the outer packet.
		s.l3, s.l4, s.hdr = l.OuterL3, l.OuterL4, l.OuterL4+UDPHeaderLen
		s.v6, s.tcp, proto = l.OuterEthType == hal.EtherTypeIPv6, false, hal.ProtoUDP
		s.end = ipEnd(frame, s.l3, s.v6)
	case l.L4 < 0 || l.Payload < 0 || cs != l.L4:
		return ErrGSOFrame
	case l.Tunnel >= 0:
		// Cut by the inner packet; the outer one must end where it does.
		s.ol3, s.ov6 = l.OuterL3, l.OuterEthType == hal.EtherTypeIPv6
		if ipEnd(frame, s.ol3, s.ov6) != l.End {
			return ErrGSOFrame
		}
		if s.key.TunKind != hal.EncapNVGRE {
			s.ol4 = l.OuterL4
			s.outerSum = frame[s.ol4+6]|frame[s.ol4+7] != 0
		}
	}
	switch t {
	case VirtioNetHdrGSOTCPv4:
		if proto != hal.ProtoTCP || s.v6 {
			return ErrGSOType
		}
	case VirtioNetHdrGSOTCPv6:
		if proto != hal.ProtoTCP || !s.v6 {
			return ErrGSOType
		}
	default:
		if proto != hal.ProtoUDP {
			return ErrGSOType
		}
		if s.end-s.l4 != int(binary.BigEndian.Uint16(frame[s.l4+4:])) {
			return ErrGSOFrame // the UDP length must cover the whole payload
		}
	}
	if s.end <= s.hdr {
		return ErrGSOFrame
	}
	s.mss = int(h.GSOSize)
	if maxL3 > 0 {
		base := s.l3
		if s.ol3 >= 0 {
			base = s.ol3
		}
		room := maxL3 - (s.hdr - base)
		if first := min(s.mss, s.end-s.hdr); first > room {
			if !s.tcp || room < 1 {
				return ErrSegmentTooBig
			}
			s.mss = room
		}
	}
	if !s.v6 {
		s.id = binary.BigEndian.Uint16(frame[s.l3+4:])
	}
	if s.ol3 >= 0 && !s.ov6 {
		s.oid = binary.BigEndian.Uint16(frame[s.ol3+4:])
	}
	if s.tcp {
		s.seq = binary.BigEndian.Uint32(frame[s.l4+4:])
	}
	s.frame, s.next = frame, s.hdr
	return nil
}

// ipEnd is where the IP packet whose header is at off ends, by its length
// field.
func ipEnd(frame []byte, off int, v6 bool) int {
	if v6 {
		return off + IPv6HeaderLen + int(binary.BigEndian.Uint16(frame[off+4:]))
	}
	return off + int(binary.BigEndian.Uint16(frame[off+2:]))
}

// Segments is how many segments the frame given to Init is cut into.
func (s *Segmenter) Segments() int {
	if s.frame == nil {
		return 0
	}
	return (s.end - s.hdr + s.mss - 1) / s.mss
}

// Done reports whether every segment was emitted.
func (s *Segmenter) Done() bool { return s.frame == nil || s.next >= s.end }

// MaxSegmentLen is the length of the largest segment Next writes.
func (s *Segmenter) MaxSegmentLen() int { return s.hdr + min(s.mss, s.end-s.hdr) }

// Next writes the next segment into dst and returns its length. It returns
// ErrBounds when dst is shorter than the segment (nothing is consumed) and
// 0, nil once Done.
func (s *Segmenter) Next(dst []byte) (int, error) {
	if s.Done() {
		return 0, nil
	}
	n := min(s.mss, s.end-s.next)
	size := s.hdr + n
	if len(dst) < size {
		return 0, ErrBounds
	}
	seg := dst[:size]
	copy(seg, s.frame[:s.hdr])
	copy(seg[s.hdr:], s.frame[s.next:s.next+n])
	first, last := s.index == 0, s.next+n == s.end
	pay := Sum(seg[s.hdr:], 0)

	setIPLen(seg, s.l3, s.v6, s.id+uint16(s.index))
	l4 := seg[s.l4:]
	var csumAt int
	var proto uint8
	if s.tcp {
		proto, csumAt = hal.ProtoTCP, 16
		binary.BigEndian.PutUint32(l4[4:8], s.seq+uint32(s.next-s.hdr))
		if !last {
			l4[13] &^= 0x01 | 0x08 // FIN, PSH
		}
		if !first {
			l4[13] &^= 0x80 // CWR
		}
	} else {
		proto, csumAt = hal.ProtoUDP, 6
		binary.BigEndian.PutUint16(l4[4:6], uint16(size-s.l4))
	}
	l4[csumAt], l4[csumAt+1] = 0, 0
	c := Fold(Sum(seg[s.l4:s.hdr], pseudoSum(seg, s.l3, s.v6, proto, size-s.l4)) + pay)
	if c == 0 && !s.tcp {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[csumAt:], c)

	if s.ol3 >= 0 {
		setIPLen(seg, s.ol3, s.ov6, s.oid+uint16(s.index))
		if s.ol4 >= 0 {
			u := seg[s.ol4:]
			binary.BigEndian.PutUint16(u[4:6], uint16(size-s.ol4))
			if s.outerSum {
				u[6], u[7] = 0, 0
				// The headers between the outer UDP header and the
				// payload have even length (Parse accepts nothing else),
				// so the payload's sum carries over.
				c := Fold(Sum(seg[s.ol4:s.hdr], pseudoSum(seg, s.ol3, s.ov6, hal.ProtoUDP, size-s.ol4)) + pay)
				if c == 0 {
					c = 0xffff
				}
				binary.BigEndian.PutUint16(u[6:8], c)
			}
		}
	}
	s.next += n
	s.index++
	return size, nil
}

// setIPLen sets the length of the IP packet whose header is at off to run
// to the end of seg; an IPv4 header also gets id and its checksum.
func setIPLen(seg []byte, off int, v6 bool, id uint16) {
	h := seg[off:]
	if v6 {
		binary.BigEndian.PutUint16(h[4:6], uint16(len(seg)-off-IPv6HeaderLen))
		return
	}
	ihl := int(h[0]&0x0f) << 2
	binary.BigEndian.PutUint16(h[2:4], uint16(len(seg)-off))
	binary.BigEndian.PutUint16(h[4:6], id)
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:12], Checksum(h[:ihl], 0))
}

// pseudoSum is the pseudo-header sum of the IP header at off for an
// upper-layer packet of n bytes.
func pseudoSum(seg []byte, off int, v6 bool, proto uint8, n int) uint32 {
	h := seg[off:]
	if v6 {
		return PseudoHeaderSum(h[8:24], h[24:40], proto, n)
	}
	return PseudoHeaderSum(h[12:16], h[16:20], proto, n)
}
