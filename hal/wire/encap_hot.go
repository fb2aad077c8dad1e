package wire

import "unsafe"

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
