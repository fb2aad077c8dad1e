package conformance

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/nicpath/nicpath/hal"
)

func init() {
	register("sanity", "ports and capabilities are coherent; a fresh NIC is empty; malformed rules are ErrInvalidRule", caseSanity)
	register("match", "each advertised match field selects the right frames with traffic; each missing one is refused by Validate", caseMatch)
	register("masked", "each advertised partial mask (prefix, port mask) selects by the masked bits only; a missing one is refused", caseMasked)
	register("priority", "overlapping rules resolve by priority, then by lower rule ID", casePriority)
}

func caseSanity(t T, tg *Target) {
	e := open(t, tg)
	c := e.caps
	if c.Driver == "" {
		t.Errorf("Capabilities.Driver is empty")
	}
	if c.MaxRules <= 0 || c.MaxBatch <= 0 {
		t.Errorf("MaxRules %d, MaxBatch %d: both must be positive", c.MaxRules, c.MaxBatch)
	}
	if c.MaskedFields&^c.MatchFields != 0 {
		t.Errorf("masked fields %v are not match fields", c.MaskedFields&^c.MatchFields)
	}
	if !c.Actions.Has(hal.ActionOutput) {
		t.Errorf("the NIC cannot output: every NIC must")
	}
	if (c.Encaps != 0) != c.Actions.Has(hal.ActionEncap) {
		t.Errorf("encapsulations %v but encap action %v", c.Encaps, c.Actions.Has(hal.ActionEncap))
	}
	if (c.Decaps != 0) != c.Actions.Has(hal.ActionDecap) {
		t.Errorf("decapsulations %v but decap action %v", c.Decaps, c.Actions.Has(hal.ActionDecap))
	}
	if _, ok := e.nic.(hal.AtomicApplier); ok != c.AtomicBatch {
		t.Errorf("AtomicBatch is %v but the NIC implements AtomicApplier: %v", c.AtomicBatch, ok)
	}
	if _, ok := e.nic.(hal.SealedAddresses); c.Crypto && !ok {
		t.Errorf("Crypto is advertised but the NIC does not implement SealedAddresses")
	}
	if _, ok := e.nic.(hal.AddressLearner); c.AddressLearning && !ok {
		t.Errorf("AddressLearning is advertised but the NIC does not implement AddressLearner")
	}
	if c.Location == hal.LocationUnknown {
		t.Errorf("Capabilities.Location is unknown: a driver says where its rules live")
	}
	seen := map[hal.PortID]bool{}
	for _, p := range e.ports {
		if p.ID == 0 {
			t.Errorf("port %q has ID 0", p.Name)
		}
		if seen[p.ID] {
			t.Errorf("port ID %d is used twice", p.ID)
		}
		seen[p.ID] = true
		if p.Kind != hal.PortVPort && p.Kind != hal.PortUplink {
			t.Errorf("port %d has kind %v", p.ID, p.Kind)
		}
	}
	t.Logf("ports: %v; in=%d out=%d", e.ports, e.in.ID, e.out.ID)
	if n := len(e.dump()); n != 0 {
		t.Errorf("a fresh NIC dumps %d rules", n)
	}
	if c.Generations {
		if g, err := e.nic.ActiveGeneration(77); err != nil || g != 0 {
			t.Errorf("ActiveGeneration of a scope never activated = %d, %v; want 0, nil", g, err)
		}
	}
	// Malformed rules are the caller's bug, not a missing capability.
	for name, r := range map[string]hal.Rule{
		"no actions":  {ID: 1},
		"rule ID 0":   {Actions: []hal.Action{hal.Output(e.out.ID)}},
		"no terminal": {ID: 1, Actions: []hal.Action{hal.Count()}},
	} {
		err := e.nic.Validate(&r)
		if err == nil {
			t.Errorf("Validate accepts a rule with %s", name)
			continue
		}
		if !isInvalid(err) {
			t.Errorf("Validate refuses a rule with %s with %v; want ErrInvalidRule", name, err)
		}
	}
}

// matchCase is a traffic test for one match field: the rule's match, the
// port the frames enter, a frame it selects and one it does not.
type matchCase struct {
	m         hal.Match
	in        hal.Port
	hit, miss []byte
	missIn    *hal.Port // port the miss frame enters, when not in
}

// tunnelKind is the encapsulation the suite uses to test tunnel matches: the
// first one the NIC decapsulates, VXLAN when it decapsulates none.
func (e *env) tunnelKind() hal.EncapKind {
	for _, k := range allEncaps {
		if e.caps.Decaps.Has(k) {
			return k
		}
	}
	return hal.EncapVXLAN
}

// tunnelPort is where tunnelled traffic enters: the uplink when there is one.
func (e *env) tunnelPort() hal.Port {
	if len(e.uplinks) > 0 {
		return e.uplinks[0]
	}
	return e.out
}

// egressFor picks an output port other than in.
func (e *env) egressFor(in hal.Port) hal.Port {
	if in.ID != e.out.ID {
		return e.out
	}
	return e.in
}

func (e *env) matchCaseFor(f hal.MatchField) matchCase {
	spec := udpSpec()
	hit := build(spec)
	c := matchCase{in: e.in, hit: hit}
	with := func(mod func(*frameSpec)) []byte {
		s := udpSpec()
		mod(&s)
		return build(s)
	}
	switch f {
	case hal.MatchInPort:
		c.m.InPort(e.in.ID)
		c.miss = hit
		mp := e.out
		if e.other != nil {
			mp = *e.other
		}
		c.missIn = &mp
	case hal.MatchEthSrc:
		c.m.EthSrc(macA)
		c.miss = with(func(s *frameSpec) { s.Src = macB })
	case hal.MatchEthDst:
		c.m.EthDst(macGW)
		c.miss = with(func(s *frameSpec) { s.Dst = macX })
	case hal.MatchEthType:
		c.m.EthType(hal.EtherTypeIPv4)
		c.miss = build(udp6Spec())
	case hal.MatchVLAN:
		c.m.VLAN(100)
		c.hit = with(func(s *frameSpec) { s.VLAN = 100 })
		c.miss = with(func(s *frameSpec) { s.VLAN = 200 })
	case hal.MatchIPv4Src:
		c.m.IPSrc(netip.PrefixFrom(caA, 32))
		c.miss = with(func(s *frameSpec) { s.IPSrc = caC })
	case hal.MatchIPv4Dst:
		c.m.IPDst(netip.PrefixFrom(caB, 32))
		c.miss = with(func(s *frameSpec) { s.IPDst = caC })
	case hal.MatchIPv6Src:
		c.m.IPSrc(netip.PrefixFrom(ca6A, 128))
		c.hit = build(udp6Spec())
		c.miss = with(func(s *frameSpec) { *s = udp6Spec(); s.IPSrc = ca6C })
	case hal.MatchIPv6Dst:
		c.m.IPDst(netip.PrefixFrom(ca6B, 128))
		c.hit = build(udp6Spec())
		c.miss = with(func(s *frameSpec) { *s = udp6Spec(); s.IPDst = ca6C })
	case hal.MatchIPProto:
		c.m.EthType(hal.EtherTypeIPv4).Proto(hal.ProtoUDP)
		c.miss = build(tcpSpec())
	case hal.MatchL4Src:
		c.m.EthType(hal.EtherTypeIPv4).Proto(hal.ProtoUDP).L4Src(40000)
		c.miss = with(func(s *frameSpec) { s.SPort = 40002 })
	case hal.MatchL4Dst:
		c.m.EthType(hal.EtherTypeIPv4).Proto(hal.ProtoUDP).L4Dst(7000)
		c.miss = with(func(s *frameSpec) { s.DPort = 7001 })
	case hal.MatchVNI, hal.MatchTunSrc, hal.MatchTunDst, hal.MatchTunKind:
		kind := e.tunnelKind()
		c.in = e.tunnelPort()
		tn := defaultTunnel(kind, 100)
		c.hit = encapsulate(tn, hit)
		miss := tn
		switch f {
		case hal.MatchVNI:
			c.m.Tunnel(kind, 100)
			miss.VNI = 200
		case hal.MatchTunSrc:
			c.m.Tunnel(kind, 100).TunSrc(paRemote)
			miss.Src = netip.MustParseAddr("198.19.0.3")
		case hal.MatchTunDst:
			c.m.Tunnel(kind, 100).TunDst(paLocal)
			miss.Dst = netip.MustParseAddr("198.19.0.4")
		case hal.MatchTunKind:
			c.m.Key.TunKind, c.m.Mask.TunKind = kind, 0xff
		}
		if f == hal.MatchTunKind {
			c.miss = hit
		} else {
			c.miss = encapsulate(miss, hit)
		}
	default:
		panic(fmt.Sprintf("no match case for %v", f))
	}
	return c
}

// isInvalid reports whether err says the rule is malformed.
func isInvalid(err error) bool { return errorsIs(err, hal.ErrInvalidRule) }

func caseMatch(t T, tg *Target) {
	for i, name := range matchFieldNames {
		f := hal.MatchField(1) << i
		t.Run(name, func(t T) {
			e := open(t, tg)
			c := e.matchCaseFor(f)
			out := e.egressFor(c.in)
			r := e.rule(100, c.m, hal.Output(out.ID))
			if !e.caps.HasMatch(f) {
				e.refused(r, "match on "+name)
				return
			}
			if missing := missingFor(&e.caps, &r); len(missing) > 0 {
				need(t, missing[0], "%s is advertised, but testing it needs %s too", name, strings.Join(missing, ", "))
			}
			e.add(r)
			e.send(c.in, c.hit)
			if got := e.expect(out, 1)[0]; string(got) != string(c.hit) {
				t.Errorf("a frame the rule selects came out changed:\n got % x\nwant % x", got, c.hit)
			}
			missIn := c.in
			if c.missIn != nil {
				missIn = *c.missIn
			}
			e.send(missIn, c.miss)
			e.silent()
			if e.caps.ExceptionPath {
				x := e.expectExceptions(1)[0]
				if x.Reason != hal.ReasonMiss || x.InPort != missIn.ID {
					t.Errorf("the frame the rule does not select reached the host with reason %v on port %d; want miss on %d", x.Reason, x.InPort, missIn.ID)
				}
			}
		})
	}
}

// maskable lists the fields a rule can match with a partial mask, and how
// the suite builds one.
var maskable = map[hal.MatchField]bool{
	hal.MatchEthSrc: true, hal.MatchEthDst: true, hal.MatchIPv4Src: true, hal.MatchIPv4Dst: true,
	hal.MatchIPv6Src: true, hal.MatchIPv6Dst: true, hal.MatchL4Src: true, hal.MatchL4Dst: true,
	hal.MatchTunSrc: true, hal.MatchTunDst: true,
}

func (e *env) maskedCaseFor(f hal.MatchField) matchCase {
	with := func(base frameSpec, mod func(*frameSpec)) []byte {
		mod(&base)
		return build(base)
	}
	c := matchCase{in: e.in}
	switch f {
	case hal.MatchEthSrc:
		// Select the suite's OUI, not one address.
		c.m.Key.EthSrc, c.m.Mask.EthSrc = hal.MAC{0x02, 0x4e, 0x50}, hal.MAC{0xff, 0xff, 0xff}
		c.hit = build(udpSpec())
		c.miss = with(udpSpec(), func(s *frameSpec) { s.Src = hal.MAC{0x02, 0x4e, 0x51, 0, 0, 0x0a} })
	case hal.MatchEthDst:
		c.m.Key.EthDst, c.m.Mask.EthDst = hal.MAC{0x02, 0x4e, 0x50}, hal.MAC{0xff, 0xff, 0xff}
		c.hit = with(udpSpec(), func(s *frameSpec) { s.Dst = macX })
		c.miss = with(udpSpec(), func(s *frameSpec) { s.Dst = hal.MAC{0x02, 0x4e, 0x51, 0, 0, 1} })
	case hal.MatchIPv4Src:
		c.m.IPSrc(hal.MustPrefix("198.18.1.0/24"))
		c.hit = with(udpSpec(), func(s *frameSpec) { s.IPSrc = netip.MustParseAddr("198.18.1.200") })
		c.miss = with(udpSpec(), func(s *frameSpec) { s.IPSrc = netip.MustParseAddr("198.18.3.10") })
	case hal.MatchIPv4Dst:
		c.m.IPDst(hal.MustPrefix("198.18.2.0/23"))
		c.hit = with(udpSpec(), func(s *frameSpec) { s.IPDst = netip.MustParseAddr("198.18.3.1") })
		c.miss = with(udpSpec(), func(s *frameSpec) { s.IPDst = netip.MustParseAddr("198.18.4.1") })
	case hal.MatchIPv6Src:
		c.m.IPSrc(hal.MustPrefix("2001:db8:1::/64"))
		c.hit = with(udp6Spec(), func(s *frameSpec) { s.IPSrc = netip.MustParseAddr("2001:db8:1::77") })
		c.miss = with(udp6Spec(), func(s *frameSpec) { s.IPSrc = netip.MustParseAddr("2001:db8:1:1::a") })
	case hal.MatchIPv6Dst:
		c.m.IPDst(hal.MustPrefix("2001:db8:1:2::/63"))
		c.hit = with(udp6Spec(), func(s *frameSpec) { s.IPDst = netip.MustParseAddr("2001:db8:1:3::1") })
		c.miss = with(udp6Spec(), func(s *frameSpec) { s.IPDst = netip.MustParseAddr("2001:db8:1:4::1") })
	case hal.MatchL4Src:
		c.m.EthType(hal.EtherTypeIPv4).Proto(hal.ProtoUDP)
		c.m.Key.L4Src, c.m.Mask.L4Src = 40000&0xff00, 0xff00
		c.hit = with(udpSpec(), func(s *frameSpec) { s.SPort = 40000&0xff00 | 0x42 })
		c.miss = with(udpSpec(), func(s *frameSpec) { s.SPort = 40000 + 0x100 })
	case hal.MatchL4Dst:
		c.m.EthType(hal.EtherTypeIPv4).Proto(hal.ProtoUDP)
		c.m.Key.L4Dst, c.m.Mask.L4Dst = 0x1000, 0xf000
		c.hit = with(udpSpec(), func(s *frameSpec) { s.DPort = 0x1234 })
		c.miss = with(udpSpec(), func(s *frameSpec) { s.DPort = 0x2234 })
	case hal.MatchTunSrc, hal.MatchTunDst:
		kind := e.tunnelKind()
		c.in = e.tunnelPort()
		inner := build(udpSpec())
		tn := defaultTunnel(kind, 100)
		hit, miss := tn, tn
		c.m.Tunnel(kind, 100)
		pfx := hal.MustPrefix("198.19.0.0/24")
		mk := prefixMask16(pfx)
		if f == hal.MatchTunSrc {
			c.m.Key.TunSrc, c.m.Mask.TunSrc = pfx.Addr().As16(), mk
			hit.Src = netip.MustParseAddr("198.19.0.200")
			miss.Src = netip.MustParseAddr("198.19.1.2")
		} else {
			c.m.Key.TunDst, c.m.Mask.TunDst = pfx.Addr().As16(), mk
			hit.Dst = netip.MustParseAddr("198.19.0.201")
			miss.Dst = netip.MustParseAddr("198.19.1.1")
		}
		c.hit, c.miss = encapsulate(hit, inner), encapsulate(miss, inner)
	default:
		panic(fmt.Sprintf("no masked case for %v", f))
	}
	return c
}

// prefixMask16 is the FlowKey form of an IPv4 prefix's mask.
func prefixMask16(p netip.Prefix) [16]byte {
	var mk [16]byte
	for i := 0; i < 10; i++ {
		mk[i] = 0xff
	}
	mk[10], mk[11] = 0xff, 0xff
	bits := p.Bits()
	for i := 12; i < 16; i++ {
		switch {
		case bits >= 8:
			mk[i] = 0xff
			bits -= 8
		case bits > 0:
			mk[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return mk
}

func caseMasked(t T, tg *Target) {
	for i, name := range matchFieldNames {
		f := hal.MatchField(1) << i
		if !maskable[f] {
			continue
		}
		t.Run(name, func(t T) {
			e := open(t, tg)
			c := e.maskedCaseFor(f)
			if c.m.PartialFields()&f == 0 {
				t.Fatalf("suite bug: the masked match %v is not partial in %v", c.m.String(), name)
			}
			out := e.egressFor(c.in)
			r := e.rule(100, c.m, hal.Output(out.ID))
			if !e.caps.HasMatch(f) {
				need(t, "match "+name, "the NIC cannot match %s at all (see match/%s)", name, name)
			}
			if e.caps.MaskedFields&f == 0 {
				e.refused(r, "a partial mask on "+name)
				return
			}
			if missing := missingFor(&e.caps, &r); len(missing) > 0 {
				need(t, missing[0], "testing a mask on %s needs %s too", name, strings.Join(missing, ", "))
			}
			e.add(r)
			e.send(c.in, c.hit)
			if got := e.expect(out, 1)[0]; string(got) != string(c.hit) {
				t.Errorf("a frame the masked rule selects came out changed:\n got % x\nwant % x", got, c.hit)
			}
			e.send(c.in, c.miss)
			e.silent()
			if e.caps.ExceptionPath {
				if x := e.expectExceptions(1)[0]; x.Reason != hal.ReasonMiss {
					t.Errorf("the frame outside the mask reached the host with reason %v, want miss", x.Reason)
				}
			}
		})
	}
}

func casePriority(t T, tg *Target) {
	e := open(t, tg)
	if !e.caps.Priorities {
		need(t, "priorities", "the NIC does not resolve overlapping rules by priority (Priorities is false)")
	}
	if e.caps.MaskedFields&hal.MatchIPv4Dst == 0 {
		need(t, "masked ipv4_dst", "testing priorities needs overlapping prefixes")
	}
	if !e.caps.HasAction(hal.ActionSetEthDst) {
		need(t, "action set_eth_dst", "the suite tells two rules apart by the destination MAC they write")
	}
	mark := func(m hal.MAC) []hal.Action { return []hal.Action{hal.SetEthDst(m), hal.Output(e.out.ID)} }
	var wide, narrow hal.Match
	wide.IPDst(hal.MustPrefix("198.18.0.0/16"))
	narrow.IPDst(hal.MustPrefix("198.18.2.0/24"))
	inNarrow := build(udpSpec()) // to caB, 198.18.2.20
	s := udpSpec()
	s.IPDst = netip.MustParseAddr("198.18.7.7")
	inWide := build(s)
	expectRule := func(what string, f []byte, want hal.MAC) {
		t.Helper()
		e.send(e.in, f)
		d := e.expectOne(e.out)
		if got := macOf(d.eth.DstMAC); got != want {
			t.Errorf("%s: taken by the rule that writes %v, want the one that writes %v", what, got, want)
		}
	}

	// Higher priority wins whatever the install order and the IDs.
	hi := e.rule(200, narrow, mark(macY)...)
	lo := e.rule(100, wide, mark(macX)...)
	e.add(hi, lo)
	expectRule("priority 200 /24 over priority 100 /16", inNarrow, macY)
	expectRule("only the /16 covers", inWide, macX)
	if _, err := e.apply(hal.DeleteOp(hi.ID), hal.DeleteOp(lo.ID)); err != nil {
		t.Fatalf("deleting: %v", err)
	}
	// The wider rule with the higher priority wins over the narrower one.
	lo2 := e.rule(100, narrow, mark(macY)...)
	hi2 := e.rule(200, wide, mark(macX)...)
	e.add(lo2, hi2)
	expectRule("priority 200 /16 over priority 100 /24", inNarrow, macX)
	if _, err := e.apply(hal.DeleteOp(hi2.ID), hal.DeleteOp(lo2.ID)); err != nil {
		t.Fatalf("deleting: %v", err)
	}
	// Equal priorities: the lower rule ID wins, whichever was added first.
	big := hal.Rule{ID: 900, Priority: 50, Match: narrow, Actions: mark(macY)}
	small := hal.Rule{ID: 800, Priority: 50, Match: wide, Actions: mark(macX)}
	e.add(big, small)
	expectRule("equal priority: rule 800 over rule 900", inNarrow, macX)
}
