package match

import (
	"math/bits"
	"net/netip"
	"slices"

	"github.com/gaissmai/bart"
	"github.com/nicpath/nicpath/policy"
)

// ACLs classifies packets against one list of ACLs in evaluation order
// (policy.State.ACLs' order: ascending priority, deny before allow, then
// by ID, of one direction) and finds the first that matches: exactly
// policy's first match by priority, without scanning the rules.
//
// The scheme is the bit-vector classifier of Lakshman and Stiliadis
// (SIGCOMM 1998): rule i is bit i of a set, and each match field is
// searched on its own for the set of rules whose condition on that field
// the packet meets:
//
//   - source and destination address: a longest-prefix match (bart; for
//     IPv4 addresses its prefixes flattened into intervals, ranges4) over
//     the distinct prefixes the rules name; the set stored at a prefix P
//     holds the rules with no condition on the field and those naming a
//     prefix that contains P. Any prefix containing the address either
//     contains the longest one that does or is longer than it, so the set
//     at the longest match is exactly the rules the address meets.
//   - protocol: a table of 256 sets.
//   - source and destination port: a binary search among the elementary
//     intervals the rules' port ranges cut 0–65535 into; a packet without
//     ports (not TCP, UDP or SCTP) meets only the rules without a
//     condition on the field.
//   - the VNET scope: one set per VNET (rules without a scope and those
//     scoped to it), chosen when the VM's classifier is looked up.
//
// The intersection of the sets is the rules the packet matches; its lowest
// bit is the first in evaluation order. A lookup costs five field searches
// and one pass over ⌈n/64⌉ words that stops at the first word with a
// match: for 1,000 rules, 16 words instead of 1,000 rule evaluations.
type ACLs struct {
	n     int // rules
	words int // per set
	sets  []uint64

	src, dst  addrField
	proto     [256]int32 // protocol → set
	sp, dp    portField
	scopes    map[string]int32
	unscoped  int32 // rules without a VNET scope
	portRules int32 // rules with a condition on a port
}

// A set is an offset into ACLs.sets.

type addrField struct {
	t   *bart.Table[int32]
	any int32 // rules with no condition on the field (no prefix matched)
	// v4: the trie's IPv4 prefixes as intervals (ranges4), for IPv4
	// addresses.
	v4 ranges4
}

type portField struct {
	starts  []uint16 // starts[0] == 0, ascending
	sets    []int32  // set of interval i
	noPorts int32    // a packet without ports: the rules without a condition
}

// Scope selects the rules that apply to VMs of one VNET.
type Scope int32

// NewACLs builds the classifier of rules, which are in evaluation order.
// Rules of another direction must be left out by the caller: the
// classifier looks at match fields and VNET scope only.
func NewACLs(rules []policy.ACL) *ACLs {
	c := &ACLs{n: len(rules), words: (len(rules) + 63) / 64}
	if c.words == 0 {
		c.words = 1
	}
	c.sets = make([]uint64, 0, 16*c.words)
	// rules whose condition on a field is met, as a set
	collect := func(meets func(a *policy.ACL) bool) int32 {
		off := int32(len(c.sets))
		c.sets = append(c.sets, make([]uint64, c.words)...)
		set := c.sets[off:]
		for i := range rules {
			if meets(&rules[i]) {
				set[i/64] |= 1 << (i % 64)
			}
		}
		return off
	}

	c.src = buildAddrField(rules, func(a *policy.ACL) []netip.Prefix { return a.Src }, collect)
	c.dst = buildAddrField(rules, func(a *policy.ACL) []netip.Prefix { return a.Dst }, collect)

	anyProto := collect(func(a *policy.ACL) bool { return a.Protocol == policy.ProtoAny })
	for p := range c.proto {
		c.proto[p] = anyProto
	}
	for i := range rules {
		p := rules[i].Protocol
		if p != policy.ProtoAny && c.proto[p] == anyProto {
			c.proto[p] = collect(func(a *policy.ACL) bool { return a.Protocol == policy.ProtoAny || a.Protocol == p })
		}
	}

	c.sp = buildPortField(rules, func(a *policy.ACL) []policy.PortRange { return a.SrcPorts }, collect)
	c.dp = buildPortField(rules, func(a *policy.ACL) []policy.PortRange { return a.DstPorts }, collect)
	c.portRules = collect(func(a *policy.ACL) bool { return len(a.SrcPorts) > 0 || len(a.DstPorts) > 0 })

	c.unscoped = collect(func(a *policy.ACL) bool { return a.VNET == "" })
	c.scopes = map[string]int32{}
	for i := range rules {
		v := rules[i].VNET
		if _, ok := c.scopes[v]; v != "" && !ok {
			c.scopes[v] = collect(func(a *policy.ACL) bool { return a.VNET == "" || a.VNET == v })
		}
	}
	c.sets = slices.Clip(c.sets)
	return c
}

func buildAddrField(rules []policy.ACL, field func(*policy.ACL) []netip.Prefix, collect func(func(*policy.ACL) bool) int32) addrField {
	f := addrField{t: new(bart.Table[int32]), any: collect(func(a *policy.ACL) bool { return len(field(a)) == 0 })}
	seen := map[netip.Prefix]bool{}
	for i := range rules {
		for _, p := range field(&rules[i]) {
			if !p.IsValid() {
				continue // contains nothing
			}
			p = p.Masked()
			if seen[p] {
				continue
			}
			seen[p] = true
			f.t.Insert(p, collect(func(a *policy.ACL) bool {
				ps := field(a)
				if len(ps) == 0 {
					return true
				}
				for _, q := range ps {
					if q.IsValid() && q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
						return true
					}
				}
				return false
			}))
		}
	}
	f.v4 = buildRanges4(f.t, f.any)
	return f
}

func (f *addrField) lookup(a netip.Addr) int32 {
	if !a.IsValid() || (!a.Is4() && a.Zone() != "") {
		return f.any // netip.Prefix.Contains: a zoned address is in no prefix
	}
	if a.Is4() && f.v4.iv != nil {
		return f.v4.lookup(u32(a))
	}
	if s, ok := f.t.Lookup(a); ok {
		return s
	}
	return f.any
}

func buildPortField(rules []policy.ACL, field func(*policy.ACL) []policy.PortRange, collect func(func(*policy.ACL) bool) int32) portField {
	f := portField{noPorts: collect(func(a *policy.ACL) bool { return len(field(a)) == 0 })}
	starts := []uint16{0}
	for i := range rules {
		for _, r := range field(&rules[i]) {
			if r.Lo > r.Hi {
				continue // empty
			}
			starts = append(starts, r.Lo)
			if r.Hi < 0xffff {
				starts = append(starts, r.Hi+1)
			}
		}
	}
	slices.Sort(starts)
	f.starts = slices.Compact(starts)
	// A range contains a whole elementary interval or none of it: its
	// bounds are interval bounds. So the interval's start decides.
	for _, s := range f.starts {
		f.sets = append(f.sets, collect(func(a *policy.ACL) bool {
			rs := field(a)
			if len(rs) == 0 {
				return true
			}
			for _, r := range rs {
				if r.Contains(s) {
					return true
				}
			}
			return false
		}))
	}
	return f
}

func (f *portField) lookup(port uint16, hasPorts bool) int32 {
	if !hasPorts {
		return f.noPorts
	}
	// the last start ≤ port
	lo, hi := 0, len(f.starts)
	for hi-lo > 1 {
		m := int(uint(lo+hi) >> 1)
		if f.starts[m] <= port {
			lo = m
		} else {
			hi = m
		}
	}
	return f.sets[lo]
}

// Len is the number of rules.
func (c *ACLs) Len() int { return c.n }

// Scope returns the scope of VMs in VNET vnet.
func (c *ACLs) Scope(vnet string) Scope {
	if s, ok := c.scopes[vnet]; ok {
		return Scope(s)
	}
	return Scope(c.unscoped)
}

// Lookup returns the index of the first rule in scope sc whose match fields
// cover p (policy.ACL.Matches), or -1.
//
// ports reports whether the answer may change with p's source or
// destination port: some rule that matches p's other fields, at or before
// the answer (anywhere, when there is none), has a condition on a port.
// When ports is false, every packet that differs from p only in its ports
// gets the same answer.
func (c *ACLs) Lookup(sc Scope, p *policy.Packet) (i int, ports bool) {
	hp := p.HasPorts()
	w := c.words
	sets := c.sets
	scope := sets[int(sc):][:w]
	src := sets[c.src.lookup(p.Src):][:w]
	dst := sets[c.dst.lookup(p.Dst):][:w]
	proto := sets[c.proto[p.Protocol]:][:w]
	sp := sets[c.sp.lookup(p.SrcPort, hp):][:w]
	dp := sets[c.dp.lookup(p.DstPort, hp):][:w]
	pr := sets[c.portRules:][:w]
	for j := range w {
		m := scope[j] & src[j] & dst[j] & proto[j]
		if m == 0 {
			continue
		}
		x := m & sp[j] & dp[j]
		pm := m & pr[j]
		if x != 0 {
			b := bits.TrailingZeros64(x)
			// a port rule of this word at or before the match
			ports = ports || pm&(uint64(2)<<b-1) != 0
			return j*64 + b, ports
		}
		ports = ports || pm != 0
	}
	return -1, ports
}
