package match

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/gaissmai/bart"
)

// TestRanges4AgreesWithTrie: the intervals answer as the trie they are
// built from, at every interval bound and beside it (where an answer can
// change), at the ends of the address space, and at random addresses,
// for prefixes of every length anywhere, /0 and /32 at both ends included.
func TestRanges4AgreesWithTrie(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	edges := []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("0.0.0.0/32"),
		netip.MustParsePrefix("255.255.255.255/32"), netip.MustParsePrefix("255.255.255.0/24"),
		netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1"),
	}
	for round := range 200 {
		var tr bart.Table[int32]
		n := r.IntN([]int{1, 10, 100, 1000}[round%4])
		for i := range n {
			var p netip.Prefix
			if r.IntN(8) == 0 {
				p = edges[r.IntN(len(edges))]
			} else {
				p = netip.PrefixFrom(addr4(r.Uint32()), r.IntN(33)).Masked()
			}
			tr.Insert(p, int32(i))
		}
		none := int32(-1 - r.IntN(2))
		rg := buildRanges4(&tr, none)
		check := func(v uint32) {
			want, ok := tr.Lookup(addr4(v))
			if !ok {
				want = none
			}
			if got := rg.lookup(v); got != want {
				t.Fatalf("round %d: %s: intervals say %d, the trie %d", round, addr4(v), got, want)
			}
		}
		for _, iv := range rg.iv {
			check(iv.start)
			check(iv.start - 1)
			check(iv.start + 1)
		}
		check(0)
		check(^uint32(0))
		for range 500 {
			check(r.Uint32())
		}
		if len(rg.iv) == 0 || rg.iv[0].start != 0 {
			t.Fatalf("round %d: intervals do not start at 0: %v", round, rg.iv)
		}
		for i := 1; i < len(rg.iv); i++ {
			if rg.iv[i].start <= rg.iv[i-1].start || rg.iv[i].val == rg.iv[i-1].val {
				t.Fatalf("round %d: interval %d not ascending or not merged: %v", round, i, rg.iv)
			}
		}
	}
}
