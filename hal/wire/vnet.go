package wire

import (
	"encoding/binary"
	"errors"
)

// VirtioNetHdrLen is the size of the virtio-net header (struct
// virtio_net_hdr, virtio 1.x §5.1.6) that Linux puts in front of every frame
// on a packet socket with PACKET_VNET_HDR, and on a tap with IFF_VNET_HDR.
const VirtioNetHdrLen = 10

// Flags of a virtio-net header.
const (
	// VirtioNetHdrFNeedsCsum: the transport checksum is partial (the kernel's
	// CHECKSUM_PARTIAL): the field at CsumStart+CsumOffset holds only the
	// pseudo-header sum, and the checksum over CsumStart to the end of the
	// frame is still to be computed.
	VirtioNetHdrFNeedsCsum uint8 = 1
	// VirtioNetHdrFDataValid: the receiver already validated the checksum.
	VirtioNetHdrFDataValid uint8 = 2
)

// GSO types of a virtio-net header.
const (
	VirtioNetHdrGSONone  uint8 = 0
	VirtioNetHdrGSOTCPv4 uint8 = 1
	VirtioNetHdrGSOUDP   uint8 = 3 // UFO: IP fragmentation of one datagram; not segmented here
	VirtioNetHdrGSOTCPv6 uint8 = 4
	VirtioNetHdrGSOUDPL4 uint8 = 5 // UDP segmentation (UDP_SEGMENT): one datagram per segment
	VirtioNetHdrGSOECN   uint8 = 0x80
)

// VirtioNetHdr is a decoded virtio-net header. Offsets count from the
// first byte of the Ethernet header.
type VirtioNetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16 // a hint: the length of the headers (Linux: of the linear part)
	GSOSize    uint16 // payload bytes per segment
	CsumStart  uint16 // where the checksummed region starts (the transport header)
	CsumOffset uint16 // where the checksum field is, from CsumStart
}

// IsGSO reports whether the frame is a GSO super-frame to be cut into
// segments of GSOSize payload bytes.
func (h *VirtioNetHdr) IsGSO() bool { return h.GSOType&^VirtioNetHdrGSOECN != VirtioNetHdrGSONone }

// NeedsCsum reports whether the frame's checksum at CsumStart+CsumOffset is
// partial.
func (h *VirtioNetHdr) NeedsCsum() bool { return h.Flags&VirtioNetHdrFNeedsCsum != 0 }

// The header's 16-bit fields are in the host's byte order: Linux packet
// sockets and taps use the legacy virtio convention, native endianness.
var vnetOrder = binary.NativeEndian

// DecodeVirtioNetHdr reads the header at b[:VirtioNetHdrLen]. b must hold
// at least VirtioNetHdrLen bytes.
func DecodeVirtioNetHdr(b []byte) VirtioNetHdr {
	_ = b[VirtioNetHdrLen-1]
	return VirtioNetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     vnetOrder.Uint16(b[2:4]),
		GSOSize:    vnetOrder.Uint16(b[4:6]),
		CsumStart:  vnetOrder.Uint16(b[6:8]),
		CsumOffset: vnetOrder.Uint16(b[8:10]),
	}
}

// Put writes the header into b[:VirtioNetHdrLen].
func (h *VirtioNetHdr) Put(b []byte) {
	_ = b[VirtioNetHdrLen-1]
	b[0], b[1] = h.Flags, h.GSOType
	vnetOrder.PutUint16(b[2:4], h.HdrLen)
	vnetOrder.PutUint16(b[4:6], h.GSOSize)
	vnetOrder.PutUint16(b[6:8], h.CsumStart)
	vnetOrder.PutUint16(b[8:10], h.CsumOffset)
}

// ErrCsumOffsets: a partial checksum's start and offset do not fall inside
// the frame.
var ErrCsumOffsets = errors.New("wire: checksum start/offset outside the frame")

// CompleteChecksum finishes a partial checksum, as a NIC with generic
// checksum offload (Linux's NETIF_F_HW_CSUM, skb_checksum_help) does: the
// one's-complement sum of frame[start:], whose checksum field at
// start+offset holds the pseudo-header sum, is folded, complemented and
// written to that field. A result of 0 is written as 0xffff (the same value
// in one's complement, and the only valid form for UDP, where 0 means "no
// checksum"). It works for any header the kernel marks partial (TCP, UDP,
// inner or outer, IPv4 or IPv6) without parsing the frame, and allocates
// nothing.
func CompleteChecksum(frame []byte, start, offset int) error {
	if start < 0 || offset < 0 || start > len(frame) || offset > len(frame)-start-2 {
		return ErrCsumOffsets
	}
	c := Checksum(frame[start:], 0)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[start+offset:], c)
	return nil
}
