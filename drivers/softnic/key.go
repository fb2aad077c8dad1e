package softnic

import (
	"encoding/binary"
	"math/bits"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
)

// A FlowKey is handled as numWords 64-bit words, so that masking, hashing
// and comparing are a few word operations instead of a walk over fields.
// The word layout is softnic's own (not Go's struct layout):
//
//	0-1 TunSrc   2-3 TunDst
//	4   IPSrc[0:8]    5 IPSrc[12:16] | IPDst[12:16]<<32
//	6   IPDst[0:8]    7 IPSrc[8:12] | IPDst[8:12]<<32
//	8   InPort | VNI<<32
//	9   EthSrc | EthDst[0:2]<<48
//	10  EthDst[2:6] | EthType<<32 | VLAN<<48
//	11  L4Src | L4Dst<<16 | Proto<<32 | TunKind<<40
const numWords = 12

type words [numWords]uint64

// Words 4 and 6 hold bytes 0-7 of the inner addresses, always zero in the
// IPv4-mapped form of an IPv4 packet, and word 7 bytes 8-11 of both, always
// ::ffff's (v4Mid): so an IPv4 packet's two addresses are word 5 alone. A
// tuple that pins EthType to IPv4 leaves words 4, 6 and 7 out of its
// compare and its hash, and word 10 as well when it masks no more of it
// than the EtherType: the lookup lets only IPv4 packets probe such a tuple
// (tupleShape.v4), for which those words can hold nothing else.
const (
	wordIPSrcHigh = 4
	wordIPDstHigh = 6
	wordIPMid     = 7
	wordEthType   = 10
	ethTypeShift  = 32
	vlanShift     = 48 // FlowKey.VLAN in word 10
	v4Mid         = 0xffff0000ffff0000
	ethTypeMask   = 0xffff << ethTypeShift
)

func loadWords(k *hal.FlowKey, w *words) {
	le := binary.LittleEndian
	w[0] = le.Uint64(k.TunSrc[0:8])
	w[1] = le.Uint64(k.TunSrc[8:16])
	w[2] = le.Uint64(k.TunDst[0:8])
	w[3] = le.Uint64(k.TunDst[8:16])
	w[4] = le.Uint64(k.IPSrc[0:8])
	w[5] = uint64(le.Uint32(k.IPSrc[12:16])) | uint64(le.Uint32(k.IPDst[12:16]))<<32
	w[6] = le.Uint64(k.IPDst[0:8])
	w[7] = uint64(le.Uint32(k.IPSrc[8:12])) | uint64(le.Uint32(k.IPDst[8:12]))<<32
	w[8] = uint64(k.InPort) | uint64(k.VNI)<<32
	s, d := &k.EthSrc, &k.EthDst
	w[9] = uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 | uint64(s[4])<<32 |
		uint64(s[5])<<40 | uint64(d[0])<<48 | uint64(d[1])<<56
	w[10] = uint64(d[2]) | uint64(d[3])<<8 | uint64(d[4])<<16 | uint64(d[5])<<24 |
		uint64(k.EthType)<<32 | uint64(k.VLAN)<<48
	w[11] = uint64(k.L4Src) | uint64(k.L4Dst)<<16 | uint64(k.Proto)<<32 | uint64(k.TunKind)<<40
}

func storeWords(w *words, k *hal.FlowKey) {
	le := binary.LittleEndian
	le.PutUint64(k.TunSrc[0:8], w[0])
	le.PutUint64(k.TunSrc[8:16], w[1])
	le.PutUint64(k.TunDst[0:8], w[2])
	le.PutUint64(k.TunDst[8:16], w[3])
	le.PutUint64(k.IPSrc[0:8], w[4])
	le.PutUint32(k.IPSrc[8:12], uint32(w[7]))
	le.PutUint32(k.IPSrc[12:16], uint32(w[5]))
	le.PutUint64(k.IPDst[0:8], w[6])
	le.PutUint32(k.IPDst[8:12], uint32(w[7]>>32))
	le.PutUint32(k.IPDst[12:16], uint32(w[5]>>32))
	k.InPort, k.VNI = hal.PortID(w[8]), uint32(w[8]>>32)
	for i := 0; i < 6; i++ {
		k.EthSrc[i] = byte(w[9] >> (8 * i))
	}
	k.EthDst[0], k.EthDst[1] = byte(w[9]>>48), byte(w[9]>>56)
	for i := 0; i < 4; i++ {
		k.EthDst[2+i] = byte(w[10] >> (8 * i))
	}
	k.EthType, k.VLAN = uint16(w[10]>>32), uint16(w[10]>>48)
	k.L4Src, k.L4Dst = uint16(w[11]), uint16(w[11]>>16)
	k.Proto, k.TunKind = uint8(w[11]>>32), hal.EncapKind(w[11]>>40)
}

// flowHash is wire.FlowHash of the key whose words are w (the entropy of
// an encapsulation's UDP source port), computed from the words, as a frame
// that parseFast took has no hal.FlowKey. TestFlowHashWords holds it to
// wire.FlowHash.
func flowHash(w *words) uint32 {
	var h uint64
	switch et := uint16(w[wordEthType] >> ethTypeShift); et {
	case hal.EtherTypeIPv4:
		return flowHash4(w)
	case hal.EtherTypeIPv6:
		// The addresses' bytes 0-7 and 8-15, as wire.FlowHash takes them.
		h = mix(h, w[4])
		h = mix(h, w[7]&0xffffffff|w[5]<<32)
		h = mix(h, w[6])
		h = mix(h, w[7]>>32|w[5]&^0xffffffff)
		h = mix(h, w[11]&0xffffffffff)
	default:
		h = mix(h, w[9]&0xffffffffffff|uint64(et)<<48)
		h = mix(h, w[9]>>48|(w[10]&0xffffffff)<<16)
	}
	// wire.FlowHash's avalanche.
	h ^= h >> 33
	h *= hashMul2
	h ^= h >> 29
	h *= 0x165667B19E3779F9
	h ^= h >> 32
	return uint32(h)
}

// flowHash4 is flowHash of the words of an IPv4 packet, small enough to
// inline: the low 4 bytes of the IPv4-mapped addresses, then the ports and
// protocol, and wire.FlowHash's avalanche.
func flowHash4(w *words) uint32 {
	h := bits.RotateLeft64(w[5]*hashMul1, 31) * hashMul2 // mix(0, w[5])
	h = mix(h, w[11]&0xffffffffff)
	h ^= h >> 33
	h *= hashMul2
	h ^= h >> 29
	h *= 0x165667B19E3779F9
	h ^= h >> 32
	return uint32(h)
}

// tupleKey identifies a tuple: the rules that share one mask. v4 marks
// tuples whose rules all pin EthType to IPv4 (see wordIPSrcHigh).
type tupleKey struct {
	mask words
	v4   bool
}

// tupleShape is the immutable part of a tuple that the datapath reads: which
// words it compares, and their masks, packed. v4 says that only IPv4
// packets can match (the tuple's key is v4): the words it leaves out for
// that are known for those packets alone.
//
// exact4 marks the shape of hal.Exact on an IPv4 key that is not
// tunnelled, the flows a vswitch offloads: its words and masks are known
// (exact4Idx, exact4Mask), and the lookup hashes such a tuple with them as
// constants (hashExact4), not as ten values per tuple the loop must keep.
type tupleShape struct {
	v4     bool
	exact4 bool
	n      int
	idx    [numWords]uint8
	pmask  [numWords]uint64
}

// The packed words and masks of an exact4 shape: the IPv4 addresses; the
// in-port (the VNI is not matched); the MACs; the rest of the destination
// MAC, the EtherType and the tag; the ports, the protocol and the tunnel
// kind (none).
var (
	exact4Idx  = [entryLineWords]uint8{5, 8, 9, 10, 11}
	exact4Mask = [entryLineWords]uint64{^uint64(0), exact4Mask8, ^uint64(0), ^uint64(0), exact4Mask11}
)

const (
	exact4Mask8  = 0xffffffff
	exact4Mask11 = 0xffffffffffff
)

func newShape(tk *tupleKey) tupleShape {
	s := tupleShape{v4: tk.v4}
	for i := 0; i < numWords; i++ {
		if tk.mask[i] == 0 || (tk.v4 && v4Known(i, &tk.mask)) {
			continue
		}
		s.idx[s.n] = uint8(i)
		s.pmask[s.n] = tk.mask[i]
		s.n++
	}
	s.exact4 = s.v4 && s.n == entryLineWords &&
		[entryLineWords]uint8(s.idx[:entryLineWords]) == exact4Idx &&
		[entryLineWords]uint64(s.pmask[:entryLineWords]) == exact4Mask
	return s
}

const (
	hashSeed = 0x2d358dccaa6c78a5
	hashMul1 = 0x9E3779B97F4A7C15
	hashMul2 = 0xC2B2AE3D27D4EB4F
)

func mix(h, v uint64) uint64 {
	h ^= v * hashMul1
	return bits.RotateLeft64(h, 31) * hashMul2
}

func finish(h uint64) uint64 {
	h ^= h >> 33
	h *= hashMul2
	h ^= h >> 29
	h *= hashMul1
	h ^= h >> 32
	return h
}

// wordMul gives each packed word position its own odd multiplier, so that
// the hash is a sum of independent products (the multiplications run in
// parallel) followed by one avalanche, instead of a chain of dependent
// mixes.
var wordMul = [numWords]uint64{
	0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x85EBCA77C2B2AE63,
	0x27D4EB2F165667C5, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0xD6E8FEB86659FD93,
	0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3, 0x589965CC75374CC3,
}

// hashPacked hashes a key packed by s. The datapath computes the same
// value for a packet while packing its words (NIC.lookup), and compares the
// packed words with a rule's key.
func (s *tupleShape) hashPacked(pk *words) uint64 {
	h := uint64(hashSeed)
	for j := 0; j < s.n; j++ {
		h += bits.RotateLeft64(pk[j], j*7) * wordMul[j]
	}
	return finish(h)
}

// entryLineWords is how many key words an entry holds in its first 64
// bytes beside its 16-byte header and its operand (entry.arg); a tiny
// entry holds tinyWords of them (sizeClass).
const entryLineWords = 5

// keyEqual reports whether a packet's packed words pk are the packed key of
// entry e, of a tuple that compares nw words. Both are zero from nw up to
// the entry's line words (pack leaves them so, and lookup clears them in
// pk), so those are compared in straight-line code, without a loop whose
// counter the compiler, short of registers in the lookup, kept in memory;
// the rest (large entries only) in a loop. A tiny entry's record ends
// after tinyWords: nothing further is read.
func keyEqual(pk *words, e *entry, nw int) bool {
	ek := &e.key
	d := (pk[0] ^ ek[0]) | (pk[1] ^ ek[1]) | (pk[2] ^ ek[2])
	if nw <= tinyWords {
		return d == 0 // a tiny entry ends here
	}
	d |= (pk[3] ^ ek[3]) | (pk[4] ^ ek[4])
	for j := entryLineWords; j < nw; j++ {
		d |= pk[j] ^ e.more[j-entryLineWords]
	}
	return d == 0
}

// ruleKey turns a rule's match into its tuple key and its key words (not
// yet packed: see tupleShape.pack, which also masks them, so that the match
// needs no Normalize first).
func ruleKey(m *hal.Match, tk *tupleKey, kw *words) {
	loadWords(&m.Mask, &tk.mask)
	loadWords(&m.Key, kw)
	tk.v4 = pinsIPv4(&tk.mask, kw, m.Key.EthType)
}

// pinsIPv4 says whether a rule with mask words mask and key words kw pins
// EthType to IPv4 with the address words that IPv4 packets hold fixed
// masked to their values: zero high words, ::ffff in the middle
// (tupleKey.v4).
func pinsIPv4(mask, kw *words, ethType uint16) bool {
	et := mask[wordEthType] >> ethTypeShift & 0xffff
	return et == 0xffff && ethType == hal.EtherTypeIPv4 &&
		kw[wordIPSrcHigh]&mask[wordIPSrcHigh] == 0 && kw[wordIPDstHigh]&mask[wordIPDstHigh] == 0 &&
		kw[wordIPMid]&mask[wordIPMid] == v4Mid&mask[wordIPMid]
}

// v4Known says whether word i, under mask, holds the same value in every
// IPv4 packet and every rule of a v4 tuple, so that such a tuple need not
// compare it: the high and middle address words, and the EtherType word
// when the mask covers nothing else of it.
func v4Known(i int, mask *words) bool {
	switch i {
	case wordIPSrcHigh, wordIPDstHigh, wordIPMid:
		return true
	case wordEthType:
		return mask[i]&^ethTypeMask == 0
	}
	return false
}

// pack keeps the words s compares, masked, in order.
func (s *tupleShape) pack(kw *words) words {
	var pk words
	for j := 0; j < s.n; j++ {
		pk[j] = kw[s.idx[j]] & s.pmask[j]
	}
	return pk
}

// unpackMatch rebuilds the hal.Match of a rule from its tuple and packed key.
func unpackMatch(tk *tupleKey, s *tupleShape, pk *words) hal.Match {
	var kw words
	if tk.v4 {
		// The words the shape leaves out, as its rules hold them.
		kw[wordIPMid] = v4Mid & tk.mask[wordIPMid]
		kw[wordEthType] = uint64(hal.EtherTypeIPv4) << ethTypeShift & tk.mask[wordEthType]
	}
	for j := 0; j < s.n; j++ {
		kw[s.idx[j]] = pk[j]
	}
	var m hal.Match
	mask := tk.mask
	storeWords(&mask, &m.Mask)
	storeWords(&kw, &m.Key)
	return m
}

// wordOff is the byte offset of word i in a words value.
func wordOff(i uint8) uintptr { return uintptr(i) * 8 }

// wordAt is the word at byte offset off (wordOff of an index below
// numWords) of w: w[i] without the bounds check, for the lookup's packing
// of a packet's words, whose indexes (tupleShape.idx) newShape keeps below
// numWords.
func wordAt(w *words, off uintptr) uint64 {
	return *(*uint64)(unsafe.Add(unsafe.Pointer(w), off))
}

// laneTops are the top bits of the two 32-bit lanes of a word.
const laneTops = 1<<31 | 1<<63

// laneMask gathers the lanes' top bits of four words, slot 2j's from bit
// 31 of tj and slot 2j+1's from bit 63, into bit s of a slot mask: what
// bucket.scan computes with a shift and a mask per slot, in about half
// the instructions (TestLaneMask). The words are lined up so that slot
// 2j's bit lands on bit 2j+25 and slot 2j+1's on bit 2j+57; one shift
// brings the first to bit 2j, the second to 2j+32, and a second shift
// the latter to 2j+1.
func laneMask(t0, t1, t2, t3 uint64) uint32 {
	u := ((t0&laneTops)>>6 | (t1&laneTops)>>4 | (t2&laneTops)>>2 | t3&laneTops) >> 25
	return uint32(u | u>>31)
}
