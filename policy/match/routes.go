// Package match holds the lookup structures a datapath's slow path
// classifies with: a longest-prefix-match route table ([Routes]) and an
// ACL classifier ([ACLs]). Each gives exactly the answer of policy's
// linear reference (a scan of a tenant's routes, longest prefix first, and
// the first matching ACL in evaluation order) without visiting every entry.
//
// Both are built once from an immutable list and are then safe for any
// number of concurrent readers; neither allocates on lookup.
package match

import (
	"net/netip"

	"github.com/gaissmai/bart"
)

// Routes finds, for an address, the longest prefix of a list that
// contains it: the first hit of a linear scan over the list sorted longest
// prefix first (policy.State.Routes' order), in a multibit trie (bart's
// Balanced Routing Table: 8-bit strides, popcount-compressed nodes), so a
// lookup costs at most 4 node visits for IPv4 and 16 for IPv6, whatever
// the number of routes. IPv4 lookups go to the trie's prefixes flattened
// into sorted intervals (ranges4: a binary search in one flat array,
// log2 of twice the routes steps), which cost fewer cache misses when the
// lookups are cold.
type Routes struct {
	t bart.Table[int32]
	// v4 answers IPv4 lookups: the trie's IPv4 prefixes as sorted
	// intervals (ranges4), which a slow path's cold lookups find in fewer
	// cache misses than the trie's nodes.
	v4 ranges4
}

// NewRoutes indexes prefixes; Lookup answers with indexes into it. Among
// prefixes equal after masking, the first in the list wins, as in a linear
// scan; invalid prefixes are left out (they contain nothing).
func NewRoutes(prefixes []netip.Prefix) *Routes {
	r := &Routes{}
	for i, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		if _, dup := r.t.Get(p.Masked()); dup {
			continue
		}
		r.t.Insert(p, int32(i))
	}
	r.v4 = buildRanges4(&r.t, -1)
	return r
}

// Lookup returns the index of the longest prefix containing a, with
// netip.Prefix.Contains' rules: an IPv4 prefix never contains an IPv6
// address (not even an IPv4-mapped one), and an address with an IPv6 zone
// is contained in no prefix.
func (r *Routes) Lookup(a netip.Addr) (int, bool) {
	if !a.IsValid() || (!a.Is4() && a.Zone() != "") {
		return -1, false
	}
	if a.Is4() && r.v4.iv != nil {
		i := r.v4.lookup(u32(a))
		return int(i), i >= 0
	}
	i, ok := r.t.Lookup(a)
	if !ok {
		return -1, false
	}
	return int(i), true
}

// Len is the number of distinct prefixes indexed.
func (r *Routes) Len() int { return r.t.Size() }
