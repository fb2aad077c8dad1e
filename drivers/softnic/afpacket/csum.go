package afpacket

import (
	"encoding/binary"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// completeChecksum finishes the transport checksum of a frame the kernel
// handed over with checksum offload pending (TP_STATUS_CSUMNOTREADY): a
// frame sent by a local socket through a veth or tap carries only the
// pseudo-header part in its TCP or UDP checksum, since the "hardware" was
// meant to finish it. The NIC forwards frames to other hosts, where that
// partial sum would be wrong; so the binding computes it, as a NIC with
// checksum offload would. Frames it cannot parse, and tunnelled ones, are
// left as they are.
func completeChecksum(frame []byte) {
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(frame, 0, &k, &l); err != nil || l.Tunnelled() || l.L4 < 0 || l.End > len(frame) {
		return
	}
	var off int
	switch l.Proto {
	case hal.ProtoTCP:
		off = 16
	case hal.ProtoUDP:
		off = 6
	default:
		return
	}
	if l.L4+off+2 > l.End {
		return
	}
	var src, dst []byte
	switch l.EthType {
	case hal.EtherTypeIPv4:
		src, dst = frame[l.L3+12:l.L3+16], frame[l.L3+16:l.L3+20]
	case hal.EtherTypeIPv6:
		src, dst = frame[l.L3+8:l.L3+24], frame[l.L3+24:l.L3+40]
	default:
		return
	}
	seg := frame[l.L4:l.End]
	binary.BigEndian.PutUint16(seg[off:], 0)
	c := wire.Checksum(seg, wire.PseudoHeaderSum(src, dst, l.Proto, len(seg)))
	if c == 0 && l.Proto == hal.ProtoUDP {
		c = 0xffff // 0 means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(seg[off:], c)
}
