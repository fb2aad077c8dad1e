package wire

import (
	"encoding/binary"
	"unsafe"
)

// HotLines returns the spans of t that Push reads for the common
// encapsulations, as (address, size) pairs, without reading t: the outer
// headers it copies (up to a VXLAN-over-IPv6 header's length from the
// start of the template's buffer; a Geneve header with options reads
// further) and the fields that say how to finish them. A caller that
// pushes with many templates prefetches these rather than the whole
// template, most of which is room for the longest Geneve options.
func (t *EncapTemplate) HotLines() (hdr, hdrSize, fields, fieldsSize uintptr) {
	hdr, hdrSize = uintptr(unsafe.Pointer(&t.hdr[0])), HeadroomVXLANIPv6
	fields = uintptr(unsafe.Pointer(&t.ipSum))
	fieldsSize = uintptr(unsafe.Pointer(&t.flowID)) + unsafe.Sizeof(t.flowID) - fields
	return
}

// PushUDP4 is Push, in fewer instructions for the templates whose Len is
// HeadroomVXLANIPv4: VXLAN over IPv4, or Geneve over IPv4 without
// options, the only encapsulations of that length. Their offsets are
// then constants, and no branch on the kind or the IP version is left.
// Any other template is pushed by Push. Same result, same errors, buf
// untouched on an error (TestPushUDP4).
func (t *EncapTemplate) PushUDP4(buf []byte, start, end int, hash uint32) (int, error) {
	const n = HeadroomVXLANIPv4
	if t.n != n {
		return t.Push(buf, start, end, hash)
	}
	if start < 0 || start > end || end > len(buf) {
		return start, ErrBounds
	}
	if start < n {
		return start, ErrNoHeadroom
	}
	// The IPv4 total length: the UDP length, 20 less, fits if it does.
	tot := uint32(n - EthHeaderLen + end - start)
	if tot > 0xffff {
		return start, ErrTooBig
	}
	s := start - n
	h := (*[n]byte)(buf[s:start])
	*(*hdrCopy[[n]byte])(unsafe.Pointer(h)) = *(*hdrCopy[[n]byte])(unsafe.Pointer(&t.hdr[0]))
	const l4 = EthHeaderLen + IPv4HeaderLen
	binary.BigEndian.PutUint16(h[16:18], uint16(tot))
	binary.BigEndian.PutUint16(h[24:26], Fold(t.ipSum+tot))
	binary.BigEndian.PutUint16(h[l4:l4+2], UDPSourcePort(hash))
	binary.BigEndian.PutUint16(h[l4+4:l4+6], uint16(tot-IPv4HeaderLen))
	return s, nil
}
