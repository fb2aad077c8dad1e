package wire

import (
	"encoding/binary"
	"math/bits"

	"github.com/nicpath/nicpath/hal"
)

const (
	hashMul1 = 0x9E3779B97F4A7C15 // 2^64 / golden ratio
	hashMul2 = 0xC2B2AE3D27D4EB4F // xxhash prime 2
)

func mix(h, v uint64) uint64 {
	h ^= v * hashMul1
	h = bits.RotateLeft64(h, 31) * hashMul2
	return h
}

// FlowHash hashes the (inner) flow of k: addresses, protocol and ports for
// IP, MACs and EtherType otherwise. The tunnel fields and the in-port are
// left out so that a flow keeps its hash across encapsulation. It is the
// entropy source for the UDP source port of VXLAN/Geneve, NVGRE's FlowID and
// the outer IPv6 flow label (RFC 6438), so every bit of the result is mixed.
func FlowHash(k *hal.FlowKey) uint32 {
	var h uint64
	if k.EthType == hal.EtherTypeIPv4 {
		// Only the low 4 bytes of IPv4-mapped addresses vary: one word.
		h = mix(h, uint64(binary.LittleEndian.Uint32(k.IPSrc[12:16]))|uint64(binary.LittleEndian.Uint32(k.IPDst[12:16]))<<32)
		h = mix(h, uint64(k.L4Src)|uint64(k.L4Dst)<<16|uint64(k.Proto)<<32)
	} else if k.EthType == hal.EtherTypeIPv6 {
		h = mix(h, binary.LittleEndian.Uint64(k.IPSrc[0:8]))
		h = mix(h, binary.LittleEndian.Uint64(k.IPSrc[8:16]))
		h = mix(h, binary.LittleEndian.Uint64(k.IPDst[0:8]))
		h = mix(h, binary.LittleEndian.Uint64(k.IPDst[8:16]))
		h = mix(h, uint64(k.L4Src)|uint64(k.L4Dst)<<16|uint64(k.Proto)<<32)
	} else {
		h = mix(h, uint64(k.EthSrc[0])|uint64(k.EthSrc[1])<<8|uint64(k.EthSrc[2])<<16|uint64(k.EthSrc[3])<<24|
			uint64(k.EthSrc[4])<<32|uint64(k.EthSrc[5])<<40|uint64(k.EthType)<<48)
		h = mix(h, uint64(k.EthDst[0])|uint64(k.EthDst[1])<<8|uint64(k.EthDst[2])<<16|uint64(k.EthDst[3])<<24|
			uint64(k.EthDst[4])<<32|uint64(k.EthDst[5])<<40)
	}
	// Final avalanche (xxhash64's), so that the low and high halves are
	// both usable on their own.
	h ^= h >> 33
	h *= hashMul2
	h ^= h >> 29
	h *= 0x165667B19E3779F9
	h ^= h >> 32
	return uint32(h)
}

// UDPSourcePort maps a flow hash to the UDP source port of an encapsulation:
// the dynamic range 49152–65535 (RFC 7348 §5 recommends it, RFC 6335 defines
// it), which is exactly 14 bits of the hash.
func UDPSourcePort(hash uint32) uint16 { return 0xC000 | uint16(hash>>18) }
