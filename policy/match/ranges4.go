package match

import (
	"net/netip"
	"slices"

	"github.com/gaissmai/bart"
)

// ranges4 is a longest-prefix match over IPv4 prefixes flattened into the
// elementary intervals the prefixes cut the address space into (the
// binary search on ranges of Lampson, Srinivasan and Varghese): every
// address of an interval has the same longest match, so a lookup is a
// binary search for the last interval start at or below the address.
//
// Why not the trie alone: a slow path that classifies first packets
// between distinct endpoints looks up routes and ACL prefixes of many
// tenants, each lookup a walk through up to four trie nodes (a bitset,
// a sparse array of prefixes, one of children) spread over the heap, which
// other work has evicted since: cache misses, one after the other. The
// intervals of 1,000 routes are one array of 16 KB at most, the searches of
// every lookup go through the same few lines first, and the loads of one
// step do not wait on a pointer.
//
// IPv6 addresses stay in the trie: the tenants' traffic is mostly IPv4,
// and 128-bit bounds would double the arrays.
type ranges4 struct {
	// The intervals: iv[0].start == 0, starts ascending and distinct. A
	// start and its answer share a line, so the search's last step has
	// loaded the answer too.
	iv []interval4
}

// interval4 is one interval: the answer for the addresses from start up
// to the next interval's start minus one.
type interval4 struct {
	start uint32
	val   int32
}

// buildRanges4 flattens the IPv4 prefixes of t; none is the answer for
// addresses in no prefix. The answer at every interval start is t's own
// (the trie stays the reference), so the two agree by construction: an
// answer can only change where some prefix begins or ends.
func buildRanges4(t *bart.Table[int32], none int32) ranges4 {
	bounds := []uint32{0}
	for p := range t.All4() {
		p = p.Masked()
		lo := u32(p.Addr())
		bounds = append(bounds, lo)
		if hi := lo | (^uint32(0) >> p.Bits()); hi != ^uint32(0) {
			bounds = append(bounds, hi+1)
		}
	}
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	r := ranges4{iv: make([]interval4, 0, len(bounds))}
	for _, b := range bounds {
		v, ok := t.Lookup(addr4(b))
		if !ok {
			v = none
		}
		if n := len(r.iv); n > 0 && r.iv[n-1].val == v {
			continue // the same answer as the interval before: one interval
		}
		r.iv = append(r.iv, interval4{start: b, val: v})
	}
	r.iv = slices.Clip(r.iv)
	return r
}

// lookup is the answer for a (as a big-endian number): the value of the
// last interval starting at or below it. The search halves a window whose
// first start is always at or below a. (A branch-free step, moving the
// window by arithmetic, was no faster on the realistic walk: the branch's
// speculation starts the next step's load early, which a cold search
// gains more from than it loses to mispredictions.)
func (r *ranges4) lookup(a uint32) int32 {
	iv := r.iv
	lo, n := 0, len(iv)
	for n > 1 {
		half := n >> 1
		if iv[lo+half].start <= a {
			lo += half
		}
		n -= half
	}
	return iv[lo].val
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
