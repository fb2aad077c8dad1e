package match

import (
	"cmp"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/nicpath/nicpath/policy"
)

// The oracles: policy's own linear definitions.

// linearRoute is the longest prefix containing a, the first among equal
// ones: on a list sorted longest prefix first, the first that contains a.
func linearRoute(ps []netip.Prefix, a netip.Addr) int {
	best := -1
	for i, p := range ps {
		if p.Contains(a) && (best < 0 || p.Bits() > ps[best].Bits()) {
			best = i
		}
	}
	return best
}

// linearACL is the evaluator's first match, and whether a rule at or
// before it (anywhere, without one) that the packet's other fields match
// has a condition on a port.
func linearACL(rules []policy.ACL, vnet string, p policy.Packet) (int, bool) {
	ports := false
	for i := range rules {
		a := &rules[i]
		if a.VNET != "" && a.VNET != vnet {
			continue
		}
		hasPortCond := len(a.SrcPorts) > 0 || len(a.DstPorts) > 0
		if hasPortCond {
			q := *a
			q.SrcPorts, q.DstPorts = nil, nil
			if q.Matches(p) {
				ports = true
			}
		}
		if a.Matches(p) {
			return i, ports
		}
	}
	return -1, ports
}

// randomPrefix draws from a small address plan so that prefixes nest and
// overlap: IPv4 inside 10.0.0.0/8 (and a few elsewhere), IPv6 inside
// fd00::/16, every length, sometimes not masked.
func randomPrefix(r *rand.Rand) netip.Prefix {
	if r.IntN(4) == 0 {
		var b [16]byte
		b[0], b[1] = 0xfd, 0
		for i := 2; i < 16; i++ {
			if r.IntN(3) == 0 {
				b[i] = byte(r.IntN(3))
			}
		}
		bits := []int{0, 8, 16, 32, 48, 64, 96, 120, 127, 128}[r.IntN(10)]
		return maybeMask(r, netip.PrefixFrom(netip.AddrFrom16(b), bits))
	}
	b := [4]byte{10, byte(r.IntN(3)), byte(r.IntN(3)), byte(r.IntN(4))}
	if r.IntN(10) == 0 {
		b[0] = byte(r.IntN(256))
	}
	return maybeMask(r, netip.PrefixFrom(netip.AddrFrom4(b), r.IntN(33)))
}

func maybeMask(r *rand.Rand, p netip.Prefix) netip.Prefix {
	if r.IntN(3) == 0 {
		return p // host bits set: Contains masks, and so must the index
	}
	return p.Masked()
}

func randomAddr(r *rand.Rand) netip.Addr {
	switch r.IntN(20) {
	case 0:
		return netip.Addr{}
	case 1:
		// IPv4-mapped IPv6: no IPv4 prefix contains it
		return netip.AddrFrom16(netip.AddrFrom4([4]byte{10, byte(r.IntN(3)), byte(r.IntN(3)), byte(r.IntN(4))}).As16())
	case 2:
		return netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(r.IntN(3))}).WithZone("eth0")
	case 3, 4, 5:
		var b [16]byte
		b[0] = 0xfd
		for i := 2; i < 16; i++ {
			if r.IntN(3) == 0 {
				b[i] = byte(r.IntN(3))
			}
		}
		return netip.AddrFrom16(b)
	}
	b := [4]byte{10, byte(r.IntN(3)), byte(r.IntN(3)), byte(r.IntN(4))}
	if r.IntN(10) == 0 {
		b[0] = byte(r.IntN(256))
	}
	return netip.AddrFrom4(b)
}

func TestRoutesAgainstLinearScan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		n := r.IntN(1 + []int{3, 30, 300}[round%3])
		ps := make([]netip.Prefix, n)
		for i := range ps {
			ps[i] = randomPrefix(r)
		}
		if r.IntN(5) == 0 && n > 0 {
			ps[r.IntN(n)] = netip.Prefix{} // invalid: contains nothing
		}
		if round%2 == 0 {
			// policy's order: longest first, so the linear scan's first hit
			// is the answer.
			slices.SortStableFunc(ps, func(a, b netip.Prefix) int { return cmp.Compare(b.Bits(), a.Bits()) })
		}
		rt := NewRoutes(ps)
		for range 200 {
			a := randomAddr(r)
			got, ok := rt.Lookup(a)
			want := linearRoute(ps, a)
			if got != want || ok != (want >= 0) {
				t.Fatalf("round %d: Lookup(%s) = %d, %v; the linear scan says %d\nprefixes %v", round, a, got, ok, want, ps)
			}
			if round%2 == 0 && want >= 0 {
				for i, p := range ps {
					if p.Contains(a) {
						if i != want {
							t.Fatalf("sorted list: first hit %d, longest %d", i, want)
						}
						break
					}
				}
			}
		}
	}
}

var protos = []uint8{policy.ProtoAny, policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP, policy.ProtoSCTP, policy.ProtoICMPv6}

func randomPorts(r *rand.Rand) []policy.PortRange {
	var rs []policy.PortRange
	for range r.IntN(3) {
		var lo, hi uint16
		switch r.IntN(4) {
		case 0:
			lo = uint16(r.IntN(3))
			hi = lo + uint16(r.IntN(3))
		case 1:
			hi = 0xffff - uint16(r.IntN(2))
			lo = hi - uint16(r.IntN(3))
		case 2:
			lo, hi = 5, 3 // empty: matches nothing
		default:
			lo = uint16(r.IntN(100))
			hi = lo + uint16(r.IntN(50))
		}
		rs = append(rs, policy.PortRange{Lo: lo, Hi: hi})
	}
	return rs
}

func randomRule(r *rand.Rand, i int) policy.ACL {
	a := policy.ACL{ID: string(rune('a' + i%26)), Priority: uint32(i), Protocol: protos[r.IntN(len(protos))],
		Action: policy.ACLAction(1 + r.IntN(2)), Stateful: r.IntN(2) == 0}
	for range r.IntN(3) {
		a.Src = append(a.Src, randomPrefix(r))
	}
	for range r.IntN(3) {
		a.Dst = append(a.Dst, randomPrefix(r))
	}
	if r.IntN(3) == 0 {
		a.Src = append(a.Src, netip.Prefix{}) // an invalid entry matches nothing
	}
	// Unlike policy's checks, ports are also drawn for protocols without
	// them: the classifier must still agree with Matches.
	if r.IntN(2) == 0 {
		a.SrcPorts = randomPorts(r)
	}
	if r.IntN(2) == 0 {
		a.DstPorts = randomPorts(r)
	}
	if r.IntN(3) == 0 {
		a.VNET = []string{"v0", "v1", "v2"}[r.IntN(3)]
	}
	return a
}

func randomPacket(r *rand.Rand) policy.Packet {
	p := policy.Packet{Src: randomAddr(r), Dst: randomAddr(r), Protocol: protos[1+r.IntN(len(protos)-1)]}
	if r.IntN(8) == 0 {
		p.Protocol = uint8(r.IntN(256))
	}
	port := func() uint16 {
		switch r.IntN(3) {
		case 0:
			return uint16(r.IntN(4))
		case 1:
			return 0xffff - uint16(r.IntN(4))
		}
		return uint16(r.IntN(160))
	}
	if p.HasPorts() {
		p.SrcPort, p.DstPort = port(), port()
	} else if r.IntN(2) == 0 {
		// what a caller might leave in the fields: the evaluator ignores
		// them for a protocol without ports, and so must the classifier
		p.SrcPort, p.DstPort = port(), port()
	}
	return p
}

func TestACLsAgainstLinearScan(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 400 {
		n := r.IntN(1 + []int{2, 20, 70, 200}[round%4])
		rules := make([]policy.ACL, n)
		for i := range rules {
			rules[i] = randomRule(r, i)
		}
		c := NewACLs(rules)
		for range 200 {
			p := randomPacket(r)
			vnet := []string{"v0", "v1", "v2", "v3"}[r.IntN(4)]
			got, gotPorts := c.Lookup(c.Scope(vnet), &p)
			want, wantPorts := linearACL(rules, vnet, p)
			if got != want || gotPorts != wantPorts {
				t.Fatalf("round %d: vnet %s packet %+v: classifier %d (ports %v), linear %d (ports %v)", round, vnet, p, got, gotPorts, want, wantPorts)
			}
			if !gotPorts && p.HasPorts() {
				// the promise the walk memo relies on
				for range 10 {
					q := p
					q.SrcPort, q.DstPort = uint16(r.IntN(65536)), uint16(r.IntN(65536))
					if w, _ := linearACL(rules, vnet, q); w != got {
						t.Fatalf("round %d: ports said not to matter, but %+v gives %d and %+v gives %d", round, p, got, q, w)
					}
				}
			}
		}
	}
}

// TestACLsWordBoundaries aims at the set layout: the first match is the
// last bit of a word, the first of the next, or the rule after 64
// non-matching rules with port conditions.
func TestACLsWordBoundaries(t *testing.T) {
	deny := func(i int, ports bool) policy.ACL {
		a := policy.ACL{ID: "r", Priority: uint32(i), Protocol: policy.ProtoTCP, Action: policy.Deny}
		if ports {
			a.DstPorts = []policy.PortRange{{Lo: 1, Hi: 1}} // the other fields match
		} else {
			a.Dst = []netip.Prefix{netip.MustParsePrefix("10.9.9.9/32")}
		}
		return a
	}
	p := policy.Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Protocol: policy.ProtoTCP, SrcPort: 5, DstPort: 80}
	for _, at := range []int{0, 62, 63, 64, 65, 127, 128, 191} {
		for _, portsBefore := range []bool{false, true} {
			rules := make([]policy.ACL, 200)
			for i := range rules {
				rules[i] = deny(i, portsBefore)
			}
			rules[at].Dst, rules[at].DstPorts = nil, nil // matches p
			c := NewACLs(rules)
			got, ports := c.Lookup(c.Scope(""), &p)
			want, wantPorts := linearACL(rules, "", p)
			if got != at || got != want || ports != wantPorts || ports != (portsBefore && at > 0) {
				t.Errorf("match at %d (port rules before: %v): got %d ports %v, linear %d ports %v", at, portsBefore, got, ports, want, wantPorts)
			}
		}
	}
}

func TestEmpty(t *testing.T) {
	c := NewACLs(nil)
	p := policy.Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Protocol: policy.ProtoTCP}
	if i, ports := c.Lookup(c.Scope("x"), &p); i != -1 || ports {
		t.Errorf("no rules: %d %v", i, ports)
	}
	if i, ok := NewRoutes(nil).Lookup(p.Dst); ok || i != -1 {
		t.Errorf("no routes: %d %v", i, ok)
	}
}

func TestLookupsDoNotAllocate(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	rules := make([]policy.ACL, 300)
	for i := range rules {
		rules[i] = randomRule(r, i)
	}
	c := NewACLs(rules)
	ps := make([]netip.Prefix, 300)
	for i := range ps {
		ps[i] = randomPrefix(r)
	}
	rt := NewRoutes(ps)
	p := randomPacket(r)
	sc := c.Scope("v1")
	if n := testing.AllocsPerRun(100, func() {
		c.Lookup(sc, &p)
		rt.Lookup(p.Dst)
	}); n != 0 {
		t.Errorf("lookups allocate %v times", n)
	}
}
