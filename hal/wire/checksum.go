package wire

import "encoding/binary"

// Sum adds data to the one's-complement running sum initial (RFC 1071) and
// returns the unfolded sum. An odd trailing byte is padded with zero, so only
// the last chunk of a message may have odd length.
func Sum(data []byte, initial uint32) uint32 {
	acc := uint64(initial)
	for len(data) >= 16 {
		acc += uint64(binary.BigEndian.Uint32(data[0:4])) + uint64(binary.BigEndian.Uint32(data[4:8])) +
			uint64(binary.BigEndian.Uint32(data[8:12])) + uint64(binary.BigEndian.Uint32(data[12:16]))
		data = data[16:]
	}
	for len(data) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(data))
		data = data[4:]
	}
	if len(data) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(data))
		data = data[2:]
	}
	if len(data) == 1 {
		acc += uint64(data[0]) << 8
	}
	return fold64(acc)
}

// fold64 reduces a 64-bit accumulator of 16-bit words to a 32-bit sum whose
// value fits 17 bits, preserving the one's-complement value.
func fold64(acc uint64) uint32 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	s := uint32(acc>>16) + uint32(acc&0xffff)
	return (s >> 16) + (s & 0xffff)
}

// Fold folds a running sum into 16 bits and complements it: the value that
// goes into a checksum field.
func Fold(sum uint32) uint16 {
	sum = (sum >> 16) + (sum & 0xffff)
	sum = (sum >> 16) + (sum & 0xffff)
	return ^uint16(sum)
}

// Checksum is the Internet checksum of data with an initial running sum
// (a pseudo-header sum, or 0): Fold(Sum(data, initial)).
func Checksum(data []byte, initial uint32) uint16 { return Fold(Sum(data, initial)) }

// PseudoHeaderSum is the running sum of the TCP/UDP/ICMPv6 pseudo-header for
// addresses src and dst (4 or 16 bytes each), protocol proto and upper-layer
// length n (RFC 793, RFC 768, RFC 8200 §8.1).
func PseudoHeaderSum(src, dst []byte, proto uint8, n int) uint32 {
	s := Sum(src, 0)
	s = Sum(dst, s)
	return s + uint32(proto) + uint32(n>>16) + uint32(n&0xffff)
}

// updateCsum16 returns checksum field value csum after one 16-bit word of the
// covered data changed from old to new (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
func updateCsum16(csum, old, new uint16) uint16 {
	s := uint32(^csum) + uint32(^old) + uint32(new)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return ^uint16(s)
}

// updateCsumBytes is updateCsum16 for a change of an even-length run of bytes.
func updateCsumBytes(csum uint16, old, new []byte) uint16 {
	s := uint32(^csum)
	for i := 0; i+1 < len(old) && i+1 < len(new); i += 2 {
		s += uint32(^binary.BigEndian.Uint16(old[i:])) + uint32(binary.BigEndian.Uint16(new[i:]))
	}
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return ^uint16(s)
}
