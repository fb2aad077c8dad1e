package wire

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
)

// Header sizes.
const (
	EthHeaderLen    = 14
	VLANTagLen      = 4
	IPv4HeaderLen   = 20
	IPv6HeaderLen   = 40
	UDPHeaderLen    = 8
	TCPHeaderLen    = 20
	VXLANHeaderLen  = 8
	GeneveHeaderLen = 8 // without options
	NVGREHeaderLen  = 8 // GRE with key
	// MaxGeneveOptionBytes is the most option bytes a Geneve header holds
	// (6-bit length in 4-byte words).
	MaxGeneveOptionBytes = 252
)

// Headroom each encapsulation writes in front of the inner frame: outer
// Ethernet (untagged) + outer IP + UDP or nothing + tunnel header.
const (
	HeadroomVXLANIPv4  = EthHeaderLen + IPv4HeaderLen + UDPHeaderLen + VXLANHeaderLen  // 50
	HeadroomVXLANIPv6  = EthHeaderLen + IPv6HeaderLen + UDPHeaderLen + VXLANHeaderLen  // 70
	HeadroomGeneveIPv4 = EthHeaderLen + IPv4HeaderLen + UDPHeaderLen + GeneveHeaderLen // 50, plus options
	HeadroomGeneveIPv6 = EthHeaderLen + IPv6HeaderLen + UDPHeaderLen + GeneveHeaderLen // 70, plus options
	HeadroomNVGREIPv4  = EthHeaderLen + IPv4HeaderLen + NVGREHeaderLen                 // 42
	HeadroomNVGREIPv6  = EthHeaderLen + IPv6HeaderLen + NVGREHeaderLen                 // 62
	// MaxEncapHeadroom is the most any encapsulation writes: Geneve over
	// IPv6 with the largest option area. Buffers that reserve it can take
	// any hal.Encap.
	MaxEncapHeadroom = HeadroomGeneveIPv6 + MaxGeneveOptionBytes // 322
)

// Headroom returns the bytes NewEncapTemplate(e) writes in front of a frame,
// or 0 if e's kind is unknown. Valid for an e that NewEncapTemplate accepts.
func Headroom(e *hal.Encap) int {
	n := 0
	switch e.Kind {
	case hal.EncapVXLAN:
		n = HeadroomVXLANIPv4
	case hal.EncapGeneve:
		n = HeadroomGeneveIPv4 + len(e.GeneveOptions)
	case hal.EncapNVGRE:
		n = HeadroomNVGREIPv4
	default:
		return 0
	}
	if e.Src.Is6() && !e.Src.Is4In6() {
		n += IPv6HeaderLen - IPv4HeaderLen
	}
	return n
}

// DefaultTTL is the outer TTL / hop limit when hal.Encap.TTL is 0.
const DefaultTTL = 64

// EncapTemplate holds the outer headers of one hal.Encap, built once (when a
// rule is programmed) and written in front of each packet by Push. Its
// checksum sums are precomputed without the length fields, which Push adds
// per packet. A template is read-only after NewEncapTemplate: any number of
// goroutines may Push with it at once.
//
// The fields Push reads come first, in EncapHotFields bytes, and the
// headers right after them: a template that starts on a cache line holds
// what Push reads for a VXLAN-over-IPv4 encapsulation in that one line
// (EncapHotFields+HeadroomVXLANIPv4 = 64 bytes), and for the other fixed
// encapsulations in two.
type EncapTemplate struct {
	ipSum  uint32 // IPv4: running sum of the header with total length and checksum zero
	udpSum uint32 // IPv6 UDP: pseudo-header addresses + protocol, destination port and tunnel header
	n      uint16 // bytes of outer headers (at most MaxEncapHeadroom)
	l4     uint8  // offset of the UDP/GRE header in hdr
	kind   hal.EncapKind
	v6     bool
	flowID bool // NVGRE FlowID fixed by the Encap rather than taken from the hash
	hdr    [MaxEncapHeadroom]byte
	encap  hal.Encap
}

// EncapHotFields is the offset of an EncapTemplate's headers: the bytes
// of fields Push reads that come before them.
const EncapHotFields = unsafe.Offsetof(EncapTemplate{}.hdr)

// NewEncapTemplate checks e and precomputes its outer headers.
func NewEncapTemplate(e *hal.Encap) (*EncapTemplate, error) {
	if e.VNI > 0xffffff {
		return nil, fmt.Errorf("wire: VNI %d does not fit 24 bits", e.VNI)
	}
	if !e.Src.IsValid() || !e.Dst.IsValid() || e.Src.Is4() != e.Dst.Is4() || e.Src.Is4In6() || e.Dst.Is4In6() ||
		e.Src.Zone() != "" || e.Dst.Zone() != "" {
		return nil, fmt.Errorf("wire: outer addresses %v -> %v: want both IPv4 or both IPv6 (not IPv4-mapped)", e.Src, e.Dst)
	}
	if len(e.GeneveOptions) > 0 && e.Kind != hal.EncapGeneve {
		return nil, fmt.Errorf("wire: Geneve options on %s", e.Kind)
	}
	if e.FlowID != 0 && e.Kind != hal.EncapNVGRE {
		return nil, fmt.Errorf("wire: FlowID on %s: it is NVGRE's", e.Kind)
	}
	critical := false
	if e.Kind == hal.EncapGeneve {
		if len(e.GeneveOptions)%4 != 0 || len(e.GeneveOptions) > MaxGeneveOptionBytes {
			return nil, fmt.Errorf("wire: Geneve options of %d bytes: want a multiple of 4, at most %d", len(e.GeneveOptions), MaxGeneveOptionBytes)
		}
		var bad int
		critical, bad = walkGeneveOptions(e.GeneveOptions)
		if bad >= 0 {
			return nil, fmt.Errorf("wire: Geneve option at byte %d overruns the options", bad)
		}
	}
	t := &EncapTemplate{kind: e.Kind, v6: e.Src.Is6(), n: uint16(Headroom(e)), encap: *e}
	t.encap.GeneveOptions = append([]byte(nil), e.GeneveOptions...)
	if t.n == 0 {
		return nil, fmt.Errorf("wire: unknown encapsulation %s", e.Kind)
	}
	h := t.hdr[:t.n]
	copy(h[0:6], e.DstMAC[:])
	copy(h[6:12], e.SrcMAC[:])
	ttl := e.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	proto := hal.ProtoUDP
	if e.Kind == hal.EncapNVGRE {
		proto = hal.ProtoGRE
	}
	ip := h[EthHeaderLen:]
	if t.v6 {
		binary.BigEndian.PutUint16(h[12:14], hal.EtherTypeIPv6)
		ip[0] = 0x60
		ip[6] = proto
		ip[7] = ttl
		s, d := e.Src.As16(), e.Dst.As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], d[:])
		t.l4 = EthHeaderLen + IPv6HeaderLen
	} else {
		binary.BigEndian.PutUint16(h[12:14], hal.EtherTypeIPv4)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[6:8], 0x4000) // DF: tunnels must not be fragmented on the way (RFC 7348 §4.3)
		ip[8] = ttl
		ip[9] = proto
		s, d := e.Src.As4(), e.Dst.As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		t.ipSum = Sum(ip[:IPv4HeaderLen], 0)
		t.l4 = EthHeaderLen + IPv4HeaderLen
	}
	l4 := h[t.l4:]
	switch e.Kind {
	case hal.EncapVXLAN, hal.EncapGeneve:
		port := e.DstPort
		if port == 0 {
			port = hal.PortVXLAN
			if e.Kind == hal.EncapGeneve {
				port = hal.PortGeneve
			}
		}
		binary.BigEndian.PutUint16(l4[2:4], port)
		tun := l4[UDPHeaderLen:]
		if e.Kind == hal.EncapVXLAN {
			tun[0] = 0x08
		} else {
			tun[0] = uint8(len(e.GeneveOptions) >> 2)
			if critical {
				tun[1] = 0x40
			}
			binary.BigEndian.PutUint16(tun[2:4], hal.EtherTypeTEB)
			copy(tun[8:], e.GeneveOptions)
		}
		binary.BigEndian.PutUint32(tun[4:8], e.VNI<<8)
		if t.v6 {
			t.udpSum = PseudoHeaderSum(ip[8:24], ip[24:40], hal.ProtoUDP, 0)
			t.udpSum = Sum(l4[2:4], t.udpSum)
			t.udpSum = Sum(tun[:int(t.n)-int(t.l4)-UDPHeaderLen], t.udpSum)
		}
	case hal.EncapNVGRE:
		l4[0] = 0x20 // K
		binary.BigEndian.PutUint16(l4[2:4], hal.EtherTypeTEB)
		binary.BigEndian.PutUint32(l4[4:8], e.VNI<<8|uint32(e.FlowID))
		t.flowID = e.FlowID != 0
	}
	return t, nil
}

// hdrCopy is n bytes of headers that Push copies in line: a struct, which
// the compiler copies with wide moves (an array it copies with memmove, in
// case the two overlap), of bytes, so that it may lie at any address. h
// and t.hdr are both at least n long, and never overlap (a template is
// not a packet buffer).
type hdrCopy[A any] struct{ b A }

// Len is the number of bytes of outer headers Push writes.
func (t *EncapTemplate) Len() int { return int(t.n) }

// Kind is the template's encapsulation.
func (t *EncapTemplate) Kind() hal.EncapKind { return t.kind }

// Encap returns the hal.Encap the template was built from.
func (t *EncapTemplate) Encap() hal.Encap { return t.encap }

// Push writes the outer headers into buf[start-t.Len():start], in front of
// the inner Ethernet frame buf[start:end], and returns the new start. It
// sets the outer lengths and the IPv4 header checksum, takes the UDP source
// port (and NVGRE FlowID unless fixed, and the IPv6 flow label) from hash,
// leaves the UDP checksum 0 over IPv4 (RFC 7348, RFC 8926) and computes it
// over IPv6 (RFC 8200 §8.1; RFC 6935/6936 allow 0 only with care). It
// allocates nothing and fails only with ErrNoHeadroom, ErrBounds or
// ErrTooBig, leaving buf untouched.
func (t *EncapTemplate) Push(buf []byte, start, end int, hash uint32) (int, error) {
	n := int(t.n)
	if start < 0 || start > end || end > len(buf) {
		return start, ErrBounds
	}
	if start < n {
		return start, ErrNoHeadroom
	}
	inner := end - start
	s := start - n
	h := buf[s:start:start]
	_ = h[n-1]
	l4len := n - int(t.l4) + inner
	// The IPv4 total length counts the IP header too; the IPv6 payload
	// length is l4len. Either must fit 16 bits.
	if l4len > 0xffff || !t.v6 && n-EthHeaderLen+inner > 0xffff {
		return start, ErrTooBig
	}
	// Constant-size copies for the fixed templates, as structs of bytes
	// (hdrCopy), compile to a few vector moves; an array copy, which the
	// compiler must assume may overlap, is a memmove call.
	d, src := unsafe.Pointer(&h[0]), unsafe.Pointer(&t.hdr[0])
	switch n {
	case HeadroomVXLANIPv4:
		*(*hdrCopy[[HeadroomVXLANIPv4]byte])(d) = *(*hdrCopy[[HeadroomVXLANIPv4]byte])(src)
	case HeadroomVXLANIPv6:
		*(*hdrCopy[[HeadroomVXLANIPv6]byte])(d) = *(*hdrCopy[[HeadroomVXLANIPv6]byte])(src)
	case HeadroomNVGREIPv4:
		*(*hdrCopy[[HeadroomNVGREIPv4]byte])(d) = *(*hdrCopy[[HeadroomNVGREIPv4]byte])(src)
	case HeadroomNVGREIPv6:
		*(*hdrCopy[[HeadroomNVGREIPv6]byte])(d) = *(*hdrCopy[[HeadroomNVGREIPv6]byte])(src)
	default:
		copy(h, t.hdr[:n])
	}
	if t.v6 {
		binary.BigEndian.PutUint32(h[14:18], 0x60000000|hash&0xfffff)
		binary.BigEndian.PutUint16(h[18:20], uint16(l4len))
	} else {
		tot := uint32(n - EthHeaderLen + inner)
		binary.BigEndian.PutUint16(h[16:18], uint16(tot))
		binary.BigEndian.PutUint16(h[24:26], Fold(t.ipSum+tot))
	}
	l4 := h[t.l4:]
	if t.kind == hal.EncapNVGRE {
		if !t.flowID {
			l4[7] = uint8(hash)
		}
		return s, nil
	}
	_ = l4[7]
	sport := UDPSourcePort(hash)
	binary.BigEndian.PutUint16(l4[0:2], sport)
	binary.BigEndian.PutUint16(l4[4:6], uint16(l4len))
	if t.v6 {
		sum := Sum(buf[start:end], t.udpSum+uint32(sport)+2*uint32(l4len))
		c := Fold(sum)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:8], c)
	}
	return s, nil
}
