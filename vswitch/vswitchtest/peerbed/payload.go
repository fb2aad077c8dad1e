package peerbed

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"

	"github.com/nicpath/nicpath/hal/wire"
)

// fill writes the payload of packet seq of a stream into p: seq in the first
// eight bytes (as far as they fit), then bytes that depend on seq and their
// offset, so that a payload damaged, truncated or swapped with another
// packet's does not pass checkPayload.
func fill(p []byte, seq uint64) {
	var h [8]byte
	binary.BigEndian.PutUint64(h[:], seq)
	n := copy(p, h[:])
	for i := n; i < len(p); i++ {
		p[i] = byte(uint64(i)*131 + seq*7 + 11)
	}
}

// checkPayload reads a payload written by fill and says whether it is
// intact: its sequence number and whether every byte is where fill put it.
// A payload shorter than eight bytes carries no sequence number.
func checkPayload(p []byte) (seq uint64, ok bool) {
	if len(p) < 8 {
		return 0, false
	}
	seq = binary.BigEndian.Uint64(p)
	for i := 8; i < len(p); i++ {
		if p[i] != byte(uint64(i)*131+seq*7+11) {
			return seq, false
		}
	}
	return seq, true
}

// ICMP echo.
const (
	icmpEchoReply   = 0
	icmpEchoRequest = 8
)

// echoRequest builds an ICMP echo request (type, code, checksum, id, seq,
// payload written by fill).
func echoRequest(id, seq uint16, size int) []byte {
	m := make([]byte, 8+size)
	m[0] = icmpEchoRequest
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	fill(m[8:], uint64(id)<<16|uint64(seq))
	binary.BigEndian.PutUint16(m[2:], wire.Checksum(m, 0))
	return m
}

// parseEchoReply reads an IPv4 packet as a raw ICMP socket returns it
// (IPv4 header, then ICMP) and, if it is an echo reply with a valid ICMP
// checksum, returns its id and sequence number and its payload.
func parseEchoReply(pkt []byte) (id, seq uint16, payload []byte, ok bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return 0, 0, nil, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if ihl < 20 || total < ihl+8 || total > len(pkt) || pkt[9] != 1 {
		return 0, 0, nil, false
	}
	m := pkt[ihl:total]
	if m[0] != icmpEchoReply || m[1] != 0 || wire.Checksum(m, 0) != 0 {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint16(m[4:]), binary.BigEndian.Uint16(m[6:]), m[8:], true
}

// tcpBlock is the size of the transfer pattern's block: 1 MiB of random
// bytes repeated, each copy stamped with its index, so that a misplaced or
// damaged segment shows.
const tcpBlock = 1 << 20

var tcpPattern = sync.OnceValue(func() []byte {
	b := make([]byte, tcpBlock)
	r := rand.NewChaCha8([32]byte{'n', 'i', 'c', 'p', 'a', 't', 'h'})
	r.Read(b)
	return b
})

// streamAt writes the transfer's bytes at offset off into p.
func streamAt(off int64, p []byte) {
	pat := tcpPattern()
	for len(p) > 0 {
		blk, in := off/tcpBlock, int(off%tcpBlock)
		n := copy(p, pat[in:])
		// The block's first 8 bytes are its index.
		for i := in; i < 8 && i-in < n; i++ {
			p[i-in] = byte(uint64(blk) >> (56 - 8*i))
		}
		p, off = p[n:], off+int64(n)
	}
}
