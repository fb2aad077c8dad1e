package wire

import (
	"encoding/binary"
	"errors"

	"github.com/nicpath/nicpath/hal"
)

// Errors of FragmentIPv4.
var (
	// ErrDontFragment: the packet has DF set; it is answered, not split.
	ErrDontFragment = errors.New("wire: IPv4 packet with DF set cannot be fragmented")
	// ErrFragmentMTU: the MTU leaves no room for the IP header and 8 bytes
	// of data per fragment, or the fragments' offsets would not fit their
	// 13-bit field.
	ErrFragmentMTU = errors.New("wire: MTU too small to fragment the packet")
)

// FragmentIPv4 splits the IPv4 packet of frame, parsed into l (a frame that
// is not tunnelled, or the inner frame of one), into fragments whose IP
// packets take at most mtu bytes each, as RFC 791 §3.2 says a gateway does:
// each fragment carries frame's Ethernet header and tags, a copy of the IP
// header with its total length, fragment offset, MF flag and checksum set,
// and a run of the data whose length is a multiple of 8 bytes (the last
// one's aside). The last fragment keeps the packet's own MF flag and every
// offset adds to the packet's own, so a fragment splits as well. Options
// that RFC 791 does not copy into every fragment (copied flag clear) are
// replaced by no-operation options in all but the first fragment, as Linux
// does, so that every fragment's header has the first one's length. The
// transport checksum is not touched: it covers the whole datagram.
//
// For every fragment, in order, FragmentIPv4 calls buf with the length of
// the fragment's frame and writes the fragment into the n bytes buf
// returns. It returns how many fragments it wrote. A packet that fits mtu
// is written as one fragment (a copy of frame without Ethernet padding).
// It fails, writing nothing, with ErrNoHeader for a frame that is not
// IPv4, ErrBounds when l does not fit frame or the header is inconsistent,
// ErrDontFragment when DF is set, and ErrFragmentMTU when mtu is too small.
func FragmentIPv4(frame []byte, l *Layout, mtu int, buf func(n int) []byte) (int, error) {
	if l.L3 < 0 || l.EthType != hal.EtherTypeIPv4 {
		return 0, ErrNoHeader
	}
	if l.L2 < 0 || l.L2+EthHeaderLen > l.L3 || l.L3+IPv4HeaderLen > l.End || l.End > len(frame) {
		return 0, ErrBounds
	}
	ip := frame[l.L3:l.End]
	ihl := int(ip[0]&0x0f) << 2
	if ip[0]>>4 != 4 || ihl < IPv4HeaderLen || ihl > len(ip) || int(binary.BigEndian.Uint16(ip[2:4])) != len(ip) {
		return 0, ErrBounds
	}
	l2 := frame[l.L2:l.L3]
	if len(ip) <= mtu {
		b := buf(len(l2) + len(ip))
		copy(b, l2)
		copy(b[len(l2):], ip)
		return 1, nil
	}
	fo := binary.BigEndian.Uint16(ip[6:8])
	if fo&0x4000 != 0 {
		return 0, ErrDontFragment
	}
	data := ip[ihl:]
	per := (mtu - ihl) &^ 7
	if per < 8 {
		return 0, ErrFragmentMTU
	}
	base := int(fo&0x1fff) * 8
	count := (len(data) + per - 1) / per
	if (base+(count-1)*per)/8 > 0x1fff {
		return 0, ErrFragmentMTU
	}
	more := fo&0x2000 != 0
	for i := range count {
		chunk := data[i*per : min((i+1)*per, len(data))]
		b := buf(len(l2) + ihl + len(chunk))
		copy(b, l2)
		h := b[len(l2) : len(l2)+ihl]
		copy(h, ip[:ihl])
		if i > 0 {
			nopUncopiedOptions(h[IPv4HeaderLen:])
		}
		copy(b[len(l2)+ihl:], chunk)
		binary.BigEndian.PutUint16(h[2:4], uint16(ihl+len(chunk)))
		f := uint16((base+i*per)/8) | fo&0x8000 // the reserved bit is kept as it came
		if i < count-1 || more {
			f |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:8], f)
		h[10], h[11] = 0, 0
		binary.BigEndian.PutUint16(h[10:12], Checksum(h, 0))
	}
	return count, nil
}

// nopUncopiedOptions overwrites, in an IPv4 option area, the options whose
// copied flag is clear with no-operation options (RFC 791 §3.1). An option
// whose length does not fit ends the walk: the bytes from it on are
// overwritten too, as nothing says they are to be copied.
func nopUncopiedOptions(o []byte) {
	for i := 0; i < len(o); {
		t := o[i]
		switch {
		case t == 0: // end of options: the rest is padding
			return
		case t == 1:
			i++
			continue
		case i+1 >= len(o) || o[i+1] < 2 || i+int(o[i+1]) > len(o):
			for j := i; j < len(o); j++ {
				o[j] = 1
			}
			return
		}
		n := int(o[i+1])
		if t&0x80 == 0 {
			for j := i; j < i+n; j++ {
				o[j] = 1
			}
		}
		i += n
	}
}
