package match

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/nicpath/nicpath/policy"
)

// addrIn returns a random address inside p.
func addrIn(r *rand.Rand, p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		if r.IntN(2) == 0 {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	return netip.AddrFrom4(b)
}

// benchRoutes returns n distinct IPv4 prefixes with about the length mix
// of a large routing table (most /24, the rest from /8 to /32), sorted
// longest first as policy.State.Routes is.
func benchRoutes(r *rand.Rand, n int) []netip.Prefix {
	seen := map[netip.Prefix]bool{}
	ps := make([]netip.Prefix, 0, n)
	for len(ps) < n {
		var bits int
		switch x := r.IntN(100); {
		case x < 55:
			bits = 24
		case x < 70:
			bits = 20 + r.IntN(4)
		case x < 80:
			bits = 8 + r.IntN(12)
		default:
			bits = 25 + r.IntN(8)
		}
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(1 + r.IntN(223)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}), bits).Masked()
		if !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	slices.SortStableFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(cmp.Compare(b.Bits(), a.Bits()), a.Addr().Compare(b.Addr()))
	})
	return ps
}

// linearFirst is the scan the trie replaces: the first prefix of a
// longest-first list that contains a.
func linearFirst(ps []netip.Prefix, a netip.Addr) int {
	for i, p := range ps {
		if p.Contains(a) {
			return i
		}
	}
	return -1
}

// BenchmarkRouteLookup measures a longest-prefix match among 100k routes,
// in Routes (ns/op; cpu_ns/lookup: the addresses are IPv4, so its sorted
// intervals answer) and, in the same run on the same
// addresses, by the linear scan it replaces (linear_ns/lookup and linear_cpu_ns/lookup, over a
// sample of the addresses: a scan of 100k routes takes a while). Nine
// addresses in ten fall inside a random route, the rest anywhere.
func BenchmarkRouteLookup(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
			r := rand.New(rand.NewPCG(7, 8))
			ps := benchRoutes(r, n)
			rt := NewRoutes(ps)
			addrs := make([]netip.Addr, 1<<14)
			for i := range addrs {
				if r.IntN(10) == 0 {
					addrs[i] = netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
				} else {
					addrs[i] = addrIn(r, ps[r.IntN(len(ps))])
				}
			}
			// The two agree (the tests hold them to it on random tables;
			// this checks the benchmark's).
			for _, a := range addrs[:256] {
				got, _ := rt.Lookup(a)
				if want := linearFirst(ps, a); got != want {
					b.Fatalf("%s: trie %d, linear %d", a, got, want)
				}
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			b.ResetTimer()
			hits := 0
			c0 := threadCPU()
			for i := range b.N {
				if _, ok := rt.Lookup(addrs[i&(len(addrs)-1)]); ok {
					hits++
				}
			}
			cpu := threadCPU() - c0
			b.StopTimer()
			sample := min(len(addrs), max(64, 20_000_000/n))
			t0, c1 := time.Now(), threadCPU()
			for _, a := range addrs[:sample] {
				if linearFirst(ps, a) >= 0 {
					hits++
				}
			}
			report(b, "lookup", cpu, time.Since(t0), threadCPU()-c1, sample)
			_ = hits
		})
	}
}

// report adds, per op (unit "lookup" or "eval"): the structure's wall and
// CPU time (ns/op is its wall time too), the linear scan's over sample ops,
// and how many times faster the structure is in CPU time. CPU time is the
// benchmark thread's own: on a shared machine, wall time also counts the
// time other processes held the core.
func report(b *testing.B, op string, cpu, linWall, linCPU time.Duration, sample int) {
	per := func(d time.Duration, n int) float64 { return float64(d.Nanoseconds()) / float64(n) }
	b.ReportMetric(per(b.Elapsed(), b.N), "ns/"+op)
	b.ReportMetric(per(linWall, sample), "linear_ns/"+op)
	if cpu > 0 && linCPU > 0 {
		b.ReportMetric(per(cpu, b.N), "cpu_ns/"+op)
		b.ReportMetric(per(linCPU, sample), "linear_cpu_ns/"+op)
		b.ReportMetric(per(linCPU, sample)/per(cpu, b.N), "speedup_cpu")
	}
}

// benchACLs returns n ACLs of one direction in evaluation order, of the
// kind a tenant writes: addresses inside 10.0.0.0/8 from /16 to /32 (one in
// ten without a source or without a destination), TCP and UDP with port
// ranges, ICMP, some of any protocol, a few scoped to a VNET.
func benchACLs(r *rand.Rand, n int) []policy.ACL {
	pfx := func() netip.Prefix {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}), 16+r.IntN(17))
		return p.Masked()
	}
	rules := make([]policy.ACL, n)
	for i := range rules {
		a := policy.ACL{ID: fmt.Sprintf("acl-%04d", i), Priority: uint32(i), Direction: policy.Out,
			Action: policy.Allow, Stateful: r.IntN(3) == 0}
		if r.IntN(4) == 0 {
			a.Action, a.Stateful = policy.Deny, false
		}
		if r.IntN(10) != 0 {
			a.Src = []netip.Prefix{pfx()}
		}
		if r.IntN(10) != 0 {
			a.Dst = []netip.Prefix{pfx()}
			if r.IntN(5) == 0 {
				a.Dst = append(a.Dst, pfx())
			}
		}
		switch r.IntN(10) {
		case 0:
		case 1:
			a.Protocol = policy.ProtoICMP
		default:
			a.Protocol = []uint8{policy.ProtoTCP, policy.ProtoUDP}[r.IntN(2)]
			if r.IntN(4) != 0 {
				lo := uint16(r.IntN(10000))
				a.DstPorts = []policy.PortRange{{Lo: lo, Hi: lo + uint16(r.IntN(3)*r.IntN(100))}}
			}
		}
		if r.IntN(10) == 0 {
			a.VNET = fmt.Sprintf("v%d", r.IntN(4))
		}
		rules[i] = a
	}
	return rules
}

// benchPackets returns packets of which half are drawn to match a random
// rule's fields and half fall anywhere in 10.0.0.0/8.
func benchPackets(r *rand.Rand, rules []policy.ACL, n int) []policy.Packet {
	ps := make([]policy.Packet, n)
	any := func() netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
	}
	for i := range ps {
		p := policy.Packet{EtherType: policy.EtherTypeIPv4, Src: any(), Dst: any(), Protocol: policy.ProtoTCP,
			SrcPort: uint16(1024 + r.IntN(60000)), DstPort: uint16(r.IntN(10000)), TTL: 64}
		if r.IntN(4) == 0 {
			p.Protocol = policy.ProtoUDP
		}
		if r.IntN(2) == 0 {
			a := &rules[r.IntN(len(rules))]
			if len(a.Src) > 0 {
				p.Src = addrIn(r, a.Src[0])
			}
			if len(a.Dst) > 0 {
				p.Dst = addrIn(r, a.Dst[r.IntN(len(a.Dst))])
			}
			if a.Protocol != policy.ProtoAny {
				p.Protocol = a.Protocol
			}
			if len(a.DstPorts) > 0 {
				p.DstPort = a.DstPorts[0].Lo
			}
		}
		if !p.HasPorts() {
			p.SrcPort, p.DstPort = 0, 0
		}
		ps[i] = p
	}
	return ps
}

// linearACL1 is the scan the classifier replaces (the vswitch's ACL layer
// before it): the first rule in scope whose fields match.
func linearACL1(rules []policy.ACL, vnet string, p *policy.Packet) int {
	for i := range rules {
		a := &rules[i]
		if (a.VNET != "" && a.VNET != vnet) || !a.Matches(*p) {
			continue
		}
		return i
	}
	return -1
}

// BenchmarkACLEval measures finding the first matching ACL among 100 and
// 1,000 rules with the classifier (ns/op; cpu_ns/eval) and, in the
// same run on the same packets, with the linear scan it replaces
// (linear_ns/eval, linear_cpu_ns/eval).
func BenchmarkACLEval(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(9, 10))
			rules := benchACLs(r, n)
			c := NewACLs(rules)
			pkts := benchPackets(r, rules, 1<<12)
			sc := c.Scope("v1")
			matched := 0
			for i := range pkts {
				got, _ := c.Lookup(sc, &pkts[i])
				if want := linearACL1(rules, "v1", &pkts[i]); got != want {
					b.Fatalf("%+v: classifier %d, linear %d", pkts[i], got, want)
				}
				if got >= 0 {
					matched++
				}
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			b.ResetTimer()
			c0 := threadCPU()
			for i := range b.N {
				c.Lookup(sc, &pkts[i&(len(pkts)-1)])
			}
			cpu := threadCPU() - c0
			b.StopTimer()
			sample := min(len(pkts), max(256, 2_000_000/n))
			t0, c1 := time.Now(), threadCPU()
			for i := range sample {
				linearACL1(rules, "v1", &pkts[i])
			}
			report(b, "eval", cpu, time.Since(t0), threadCPU()-c1, sample)
			b.ReportMetric(float64(matched)/float64(len(pkts)), "matched")
		})
	}
}
