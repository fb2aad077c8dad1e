package hal_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// TestCheckerAgreesWithCheckRule: a Checker answers what CheckRule answers,
// error for error, whatever mask the rule before had: random rules, well
// formed or not, every third one with the previous rule's mask.
func TestCheckerAgreesWithCheckRule(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	capsets := []hal.Capabilities{
		{Driver: "all", MatchFields: hal.MatchAll, MaskedFields: hal.MatchAll, Actions: hal.AllActions,
			Encaps: hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE), Decaps: hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE), Generations: true},
		{Driver: "reduced", MatchFields: hal.MatchAll &^ (hal.MatchVNI | hal.MatchL4Src), MaskedFields: hal.MatchAll &^ hal.MatchIPv6Dst,
			Actions: hal.AllActions &^ hal.ActionsOf(hal.ActionDecTTL, hal.ActionPushVLAN), Encaps: hal.EncapsOf(hal.EncapVXLAN), Decaps: hal.EncapsOf(hal.EncapVXLAN)},
		{Driver: "exact", MatchFields: hal.MatchAll, Actions: hal.AllActions, Encaps: hal.EncapsOf(hal.EncapVXLAN)},
	}
	checkers := make([]*hal.Checker, len(capsets))
	for i := range capsets {
		checkers[i] = hal.NewChecker(&capsets[i])
	}
	accepted := 0
	var prev hal.Rule
	for i := 0; i < 200000; i++ {
		r := randomRule(rng)
		if i%3 == 0 && i > 0 {
			r.Match.Mask = prev.Match.Mask
		}
		prev = r
		for ci := range capsets {
			want := hal.CheckRule(&capsets[ci], &r)
			got := checkers[ci].Check(&r)
			if (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
				t.Fatalf("caps %s: Checker says %v, CheckRule %v:\n%v", capsets[ci].Driver, got, want, r.String())
			}
			if want == nil {
				accepted++
			}
		}
	}
	if accepted < 1000 {
		t.Fatalf("only %d random rules accepted: the generator does not reach the checks past the shape", accepted)
	}
}

// TestCheckerKnownActionsAgreesWithCheckRule: a Checker used as a driver
// uses it for a batch, CheckKnownActions for a rule whose action list (the
// same slice, unchanged) passed earlier in the batch with the same
// TraitsOf, Check otherwise, answers what CheckRule answers, error for
// error. Rules draw their lists from a small pool of shared slices, so
// that one list comes back at once with one trait of the match changed
// (a tunnel kind the mask leaves out, no protocol, the other IP version,
// another tunnel kind), and with other IDs, scopes and generations. A
// trait the checks read that TraitsOf left out would pass a rule that
// CheckRule refuses.
func TestCheckerKnownActionsAgreesWithCheckRule(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	capsets := []hal.Capabilities{
		{Driver: "all", MatchFields: hal.MatchAll, MaskedFields: hal.MatchAll, Actions: hal.AllActions,
			Encaps: hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE), Decaps: hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE), Generations: true},
		{Driver: "reduced", MatchFields: hal.MatchAll &^ (hal.MatchVNI | hal.MatchL4Src), MaskedFields: hal.MatchAll &^ hal.MatchIPv6Dst,
			Actions: hal.AllActions &^ hal.ActionsOf(hal.ActionDecTTL, hal.ActionPushVLAN), Encaps: hal.EncapsOf(hal.EncapVXLAN), Decaps: hal.EncapsOf(hal.EncapVXLAN)},
		{Driver: "vxlan", MatchFields: hal.MatchAll, MaskedFields: hal.MatchAll, Actions: hal.AllActions,
			Encaps: hal.EncapsOf(hal.EncapVXLAN), Decaps: hal.EncapsOf(hal.EncapVXLAN), Generations: true},
	}
	type listKey struct {
		p      *hal.Action
		n      int
		traits hal.ActionTraits
	}
	checkers := make([]*hal.Checker, len(capsets))
	passed := make([]map[listKey]bool, len(capsets)) // this batch's
	for i := range capsets {
		checkers[i] = hal.NewChecker(&capsets[i])
		passed[i] = map[listKey]bool{}
	}
	// Lists whose answer turns on the match: the first few of the pool.
	enc := hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	traitLists := [][]hal.Action{
		{{Kind: hal.ActionDecap}, hal.Output(1)},
		{{Kind: hal.ActionDecap}, hal.EncapWith(enc), hal.Output(2)},
		{{Kind: hal.ActionSetIPDst, Addr: netip.MustParseAddr("198.18.0.9")}, hal.Output(1)},
		{{Kind: hal.ActionSetIPSrc, Addr: netip.MustParseAddr("2001:db8::9")}, hal.Output(1)},
		{{Kind: hal.ActionSetL4Dst, L4Port: 80}, hal.Output(1)},
		{{Kind: hal.ActionDecTTL}, hal.Output(1)},
	}
	// The pool: slices of room for 6 actions, refilled in place between
	// some batches.
	pool := make([][]hal.Action, 32)
	for i := range pool {
		pool[i] = make([]hal.Action, 0, 6)
	}
	fill := func() {
		for i := range pool {
			acts := randomRule(rng).Actions
			if i < len(traitLists) {
				acts = traitLists[i]
			}
			pool[i] = append(pool[i][:0], acts...)
		}
	}
	accepted, known := 0, 0
	for batch := 0; batch < 500; batch++ {
		if batch%3 == 0 {
			fill()
		}
		for i := range passed {
			clear(passed[i])
		}
		for i := 0; i < 100; i++ {
			r := randomRule(rng)
			r.Actions = pool[rng.IntN(len(pool))]
			if n := len(r.Actions); n > 1 && rng.IntN(4) == 0 {
				// A list at the address of a longer one.
				r.Actions = r.Actions[:n-1]
			}
			v := r
			m := &v.Match
			switch rng.IntN(4) {
			case 0: // a tunnel kind in the key that the mask leaves out
				m.Mask.TunKind, m.Mask.VNI, m.Mask.TunSrc, m.Mask.TunDst = 0, 0, [16]byte{}, [16]byte{}
			case 1: // no protocol
				m.Mask.Proto, m.Mask.L4Src, m.Mask.L4Dst = 0, 0, 0
			case 2: // the other IP version, or none
				m.Key.EthType = map[uint16]uint16{hal.EtherTypeIPv4: hal.EtherTypeIPv6, hal.EtherTypeIPv6: hal.EtherTypeIPv4}[m.Key.EthType]
			case 3: // another tunnel kind
				m.Key.TunKind = hal.EncapKind(rng.IntN(4))
			}
			for _, r := range []*hal.Rule{&r, &v} {
				var k listKey
				if len(r.Actions) > 0 {
					k = listKey{&r.Actions[0], len(r.Actions), hal.TraitsOf(&r.Match)}
				}
				for ci := range capsets {
					want := hal.CheckRule(&capsets[ci], r)
					var got error
					if k.p != nil && passed[ci][k] {
						got = checkers[ci].CheckKnownActions(r)
						known++
					} else if got = checkers[ci].Check(r); got == nil && k.p != nil {
						passed[ci][k] = true
					}
					if (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
						t.Fatalf("batch %d caps %s: Checker says %v, CheckRule %v:\n%v", batch, capsets[ci].Driver, got, want, r.String())
					}
					if want == nil {
						accepted++
					}
				}
			}
		}
	}
	if accepted < 1000 || known < 2000 {
		t.Fatalf("%d rules accepted, %d checked as known: the generator does not reach the known lists", accepted, known)
	}
}

// TestCheckerMaskSeq: after a rule passes, the MaskSeq read is the one
// read after the previous rule that passed only if the two have equal
// masks and the same IP version, and it is whenever they have and no rule
// that failed came between (random rules, every other one with the mask
// and ethertype of the one before).
func TestCheckerMaskSeq(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	caps := hal.Capabilities{Driver: "all", MatchFields: hal.MatchAll, MaskedFields: hal.MatchAll, Actions: hal.AllActions,
		Encaps: hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE), Decaps: hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE)}
	c := hal.NewChecker(&caps)
	var last hal.Rule // the last rule that passed
	var lastSeq uint64
	have, adjacent := false, false // a rule passed; the last call was it
	var prev hal.Rule
	same, changed := 0, 0
	for i := 0; i < 200000; i++ {
		r := randomRule(rng)
		if i%2 == 1 {
			r.Match.Mask = prev.Match.Mask
			r.Match.Key.EthType = prev.Match.Key.EthType
		}
		prev = r
		if c.Check(&r) != nil {
			adjacent = false
			continue
		}
		seq := c.MaskSeq()
		if have {
			eq := r.Match.Mask == last.Match.Mask &&
				(r.Match.Key.EthType == hal.EtherTypeIPv6) == (last.Match.Key.EthType == hal.EtherTypeIPv6)
			if seq == lastSeq && !eq || eq && adjacent && seq != lastSeq {
				t.Fatalf("masks equal %v, MaskSeq %d then %d:\n%v\n%v", eq, lastSeq, seq, last.String(), r.String())
			}
			if eq {
				same++
			} else {
				changed++
			}
		}
		last, lastSeq, have, adjacent = r, seq, true, true
	}
	if same < 100 || changed < 100 {
		t.Fatalf("%d rules passed with the previous mask, %d with another: the generator does not reach both", same, changed)
	}
}

// BenchmarkChecker: a batch of exact-match rules sharing one mask, as a
// vswitch sends them, through CheckRule and through a Checker.
func BenchmarkChecker(b *testing.B) {
	caps := hal.Capabilities{MatchFields: hal.MatchAll, MaskedFields: hal.MatchAll, Actions: hal.AllActions,
		Encaps: hal.EncapsOf(hal.EncapVXLAN), Generations: true}
	enc := hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	acts := []hal.Action{hal.SetEthDst(hal.MAC{2}), hal.EncapWith(enc), hal.Count(), hal.Output(1)}
	rules := make([]hal.Rule, 256)
	for i := range rules {
		k := key4("198.18.0.1", "198.18.0.2", hal.ProtoUDP, uint16(i), 53)
		rules[i] = hal.Rule{ID: hal.RuleID(i + 1), Match: hal.Exact(&k), Actions: acts}
	}
	b.Run("CheckRule", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := hal.CheckRule(&caps, &rules[i&255]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Checker", func(b *testing.B) {
		c := hal.NewChecker(&caps)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := c.Check(&rules[i&255]); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The 256 rules share their action list: a driver that remembers
	// that it passed checks it once (CheckKnownActions after).
	b.Run("CheckerKnownActions", func(b *testing.B) {
		c := hal.NewChecker(&caps)
		if err := c.Check(&rules[0]); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := c.CheckKnownActions(&rules[i&255]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func randomRule(rng *rand.Rand) hal.Rule {
	pick := func(n int) bool { return rng.IntN(n) == 0 }
	var m hal.Match
	v6 := pick(3)
	addr := func() netip.Addr {
		if v6 {
			return netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 15: byte(rng.IntN(256))})
		}
		return netip.AddrFrom4([4]byte{198, 18, 0, byte(rng.IntN(256))})
	}
	if pick(2) {
		m.InPort(hal.PortID(rng.IntN(4)))
	}
	if pick(2) {
		bits := rng.IntN(addr().BitLen() + 1)
		m.IPDst(netip.PrefixFrom(addr(), bits).Masked())
	}
	if pick(3) {
		m.IPSrc(netip.PrefixFrom(addr(), addr().BitLen()))
	}
	if pick(2) {
		m.Proto([]uint8{hal.ProtoTCP, hal.ProtoUDP, hal.ProtoICMP}[rng.IntN(3)])
	}
	if pick(3) {
		m.L4Dst(uint16(rng.IntN(100)))
	}
	if pick(4) {
		m.Mask.L4Src = uint16(rng.IntN(3)) * 0x7fff
	}
	if pick(4) {
		m.Tunnel(hal.EncapKind(rng.IntN(4)), uint32(rng.IntN(1<<25)))
	}
	if pick(5) {
		m.Mask.EthType = 0
	}
	if pick(6) {
		m.VLAN(uint16(rng.IntN(5000)))
	}
	if pick(6) {
		m.Mask.TunDst[15] = 0xff
	}
	kinds := []hal.ActionKind{hal.ActionDecap, hal.ActionSetEthSrc, hal.ActionSetEthDst, hal.ActionSetIPSrc, hal.ActionSetIPDst,
		hal.ActionSetL4Src, hal.ActionSetL4Dst, hal.ActionDecTTL, hal.ActionPushVLAN, hal.ActionPopVLAN, hal.ActionEncap,
		hal.ActionCount, hal.ActionOutput, hal.ActionDrop, hal.ActionToHost, hal.ActionInvalid, 99}
	var acts []hal.Action
	for k := rng.IntN(5); k > 0; k-- {
		a := hal.Action{Kind: kinds[rng.IntN(len(kinds)-4)+1]}
		switch a.Kind {
		case hal.ActionSetIPSrc, hal.ActionSetIPDst:
			a.Addr = addr()
			if pick(5) {
				v6 = !v6
				a.Addr = addr()
				v6 = !v6
			}
		case hal.ActionPushVLAN:
			a.VLAN = uint16(rng.IntN(5000))
		case hal.ActionEncap:
			a.Encap = hal.Encap{Kind: hal.EncapKind(rng.IntN(5)), VNI: uint32(rng.IntN(1 << 25)), Src: addr(), Dst: addr()}
			if pick(4) {
				a.Encap.Dst = netip.AddrFrom4([4]byte{1, 2, 3, 4})
			}
			if pick(4) {
				a.Encap.GeneveOptions = make([]byte, rng.IntN(10))
			}
			if pick(4) {
				a.Encap.FlowID = 1
			}
		}
		acts = append(acts, a)
	}
	term := hal.Action{Kind: kinds[12+rng.IntN(5)], OutPort: hal.PortID(rng.IntN(3)), Reason: hal.Reason(rng.IntN(int(hal.NumReasons) + 2))}
	if !pick(8) {
		acts = append(acts, term)
	}
	if pick(10) && len(acts) > 0 {
		acts = append(acts, acts[0])
	}
	r := hal.Rule{ID: hal.RuleID(rng.IntN(3)), Priority: uint16(rng.IntN(5)), Match: m, Actions: acts}
	if pick(5) {
		r.Generation = 1
	}
	return r
}
