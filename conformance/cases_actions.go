package conformance

import (
	"bytes"
	"net/netip"

	"github.com/gopacket/gopacket/layers"

	"github.com/nicpath/nicpath/hal"
)

func init() {
	register("action", "each advertised action does exactly what it says to frames, checked field by field and byte by byte against gopacket; each missing one is refused", caseAction)
	register("encap", "each advertised encapsulation writes outer headers gopacket decodes, with every field and checksum right and the inner frame intact; each missing one is refused", caseEncap)
	register("decap", "each advertised decapsulation delivers the inner frame byte for byte; each missing one is refused", caseDecap)
}

// baseMatch selects the suite's frames from e.in: by in-port when the NIC
// matches it, else by source MAC, with an exact EtherType and protocol when
// an action needs them. It skips the case when the NIC cannot match that.
func (e *env) baseMatch(family uint16, proto uint8) hal.Match {
	e.t.Helper()
	var m hal.Match
	switch {
	case e.caps.HasMatch(hal.MatchInPort):
		m.InPort(e.in.ID)
	case e.caps.HasMatch(hal.MatchEthSrc):
		m.EthSrc(macA)
	}
	if family != 0 {
		m.EthType(family)
	}
	if proto != 0 {
		m.Proto(proto)
	}
	if missing := m.Fields() &^ e.caps.MatchFields; missing != 0 {
		need(e.t, matchNeed(missing), "the rule for this test matches on %v, which the NIC cannot", missing)
	}
	return m
}

func family(s frameSpec) uint16 {
	if s.IPSrc.Is6() {
		return hal.EtherTypeIPv6
	}
	return hal.EtherTypeIPv4
}

// rewrite is a test of header actions: spec goes in, want must come out.
type rewrite struct {
	name    string
	spec    frameSpec
	actions []hal.Action
	want    frameSpec
	l3, l4  bool // the rule needs an exact EtherType / IP protocol
}

func rewrites(k hal.ActionKind) []rewrite {
	mod := func(s frameSpec, f func(*frameSpec)) frameSpec { f(&s); return s }
	u4, t4, u6 := udpSpec(), tcpSpec(), udp6Spec()
	nat6 := netip.MustParseAddr("2001:db8:1:9::9")
	switch k {
	case hal.ActionSetEthSrc:
		return []rewrite{{name: "udp4", spec: u4, actions: []hal.Action{hal.SetEthSrc(macX)}, want: mod(u4, func(s *frameSpec) { s.Src = macX })}}
	case hal.ActionSetEthDst:
		return []rewrite{{name: "udp4", spec: u4, actions: []hal.Action{hal.SetEthDst(macY)}, want: mod(u4, func(s *frameSpec) { s.Dst = macY })}}
	case hal.ActionSetIPSrc:
		return []rewrite{
			{name: "udp4", spec: u4, l3: true, actions: []hal.Action{hal.SetIPSrc(caNAT)}, want: mod(u4, func(s *frameSpec) { s.IPSrc = caNAT })},
			{name: "tcp4", spec: t4, l3: true, actions: []hal.Action{hal.SetIPSrc(caNAT)}, want: mod(t4, func(s *frameSpec) { s.IPSrc = caNAT })},
			{name: "udp6", spec: u6, l3: true, actions: []hal.Action{hal.SetIPSrc(nat6)}, want: mod(u6, func(s *frameSpec) { s.IPSrc = nat6 })},
		}
	case hal.ActionSetIPDst:
		return []rewrite{
			{name: "udp4", spec: u4, l3: true, actions: []hal.Action{hal.SetIPDst(caNAT)}, want: mod(u4, func(s *frameSpec) { s.IPDst = caNAT })},
			{name: "tcp4", spec: t4, l3: true, actions: []hal.Action{hal.SetIPDst(caNAT)}, want: mod(t4, func(s *frameSpec) { s.IPDst = caNAT })},
			{name: "udp6", spec: u6, l3: true, actions: []hal.Action{hal.SetIPDst(nat6)}, want: mod(u6, func(s *frameSpec) { s.IPDst = nat6 })},
		}
	case hal.ActionSetL4Src:
		return []rewrite{
			{name: "udp4", spec: u4, l3: true, l4: true, actions: []hal.Action{hal.SetL4Src(1234)}, want: mod(u4, func(s *frameSpec) { s.SPort = 1234 })},
			{name: "tcp4", spec: t4, l3: true, l4: true, actions: []hal.Action{hal.SetL4Src(1234)}, want: mod(t4, func(s *frameSpec) { s.SPort = 1234 })},
			{name: "udp6", spec: u6, l3: true, l4: true, actions: []hal.Action{hal.SetL4Src(1234)}, want: mod(u6, func(s *frameSpec) { s.SPort = 1234 })},
		}
	case hal.ActionSetL4Dst:
		return []rewrite{
			{name: "udp4", spec: u4, l3: true, l4: true, actions: []hal.Action{hal.SetL4Dst(8053)}, want: mod(u4, func(s *frameSpec) { s.DPort = 8053 })},
			{name: "tcp4", spec: t4, l3: true, l4: true, actions: []hal.Action{hal.SetL4Dst(8443)}, want: mod(t4, func(s *frameSpec) { s.DPort = 8443 })},
			{name: "udp6", spec: u6, l3: true, l4: true, actions: []hal.Action{hal.SetL4Dst(8053)}, want: mod(u6, func(s *frameSpec) { s.DPort = 8053 })},
		}
	case hal.ActionDecTTL:
		return []rewrite{
			{name: "udp4", spec: u4, l3: true, actions: []hal.Action{hal.DecTTL()}, want: mod(u4, func(s *frameSpec) { s.TTL = 63 })},
			{name: "udp6", spec: u6, l3: true, actions: []hal.Action{hal.DecTTL()}, want: mod(u6, func(s *frameSpec) { s.TTL = 63 })},
		}
	case hal.ActionPushVLAN:
		return []rewrite{{name: "udp4", spec: u4, actions: []hal.Action{hal.PushVLAN(100)}, want: mod(u4, func(s *frameSpec) { s.VLAN = 100 })}}
	case hal.ActionPopVLAN:
		tagged := mod(u4, func(s *frameSpec) { s.VLAN = 100 })
		return []rewrite{{name: "udp4", spec: tagged, actions: []hal.Action{hal.PopVLAN()}, want: u4}}
	case hal.ActionOutput:
		return []rewrite{{name: "udp4", spec: u4, want: u4}, {name: "tcp4", spec: t4, want: t4}, {name: "udp6", spec: u6, want: u6}}
	}
	return nil
}

func caseAction(t T, tg *Target) {
	for _, k := range allActions {
		t.Run(k.String(), func(t T) {
			switch k {
			case hal.ActionDecap:
				decapAction(t, tg)
			case hal.ActionEncap:
				encapAction(t, tg)
			case hal.ActionCount:
				countAction(t, tg)
			case hal.ActionDrop:
				dropAction(t, tg)
			case hal.ActionToHost:
				toHostAction(t, tg)
			default:
				rewriteAction(t, tg, k)
			}
		})
	}
}

func (e *env) ruleFor(rw rewrite, out hal.Port) hal.Rule {
	var fam uint16
	var proto uint8
	if rw.l3 {
		fam = family(rw.spec)
	}
	if rw.l4 {
		proto = rw.spec.Proto
	}
	var m hal.Match
	if e.caps.HasAction(rw.actionKind()) || rw.actionKind() == hal.ActionOutput {
		m = e.baseMatch(fam, proto)
	} else {
		// For a Validate refusal, the match only has to be well formed.
		if fam != 0 {
			m.EthType(fam)
		}
		if proto != 0 {
			m.Proto(proto)
		}
	}
	acts := append(append([]hal.Action(nil), rw.actions...), hal.Output(out.ID))
	return e.rule(100, m, acts...)
}

func (rw rewrite) actionKind() hal.ActionKind {
	if len(rw.actions) == 0 {
		return hal.ActionOutput
	}
	return rw.actions[0].Kind
}

func rewriteAction(t T, tg *Target, k hal.ActionKind) {
	rws := rewrites(k)
	if rws == nil {
		t.Fatalf("suite bug: no test for action %v", k)
	}
	{
		e := open(t, tg)
		if !e.caps.HasAction(k) {
			e.refused(e.ruleFor(rws[0], e.out), "action "+k.String())
			return
		}
		e.release()
	}
	for _, rw := range rws {
		t.Run(rw.name, func(t T) {
			e := open(t, tg)
			if rw.spec.IPSrc.Is6() && rw.l3 && !e.caps.HasMatch(hal.MatchEthType) {
				need(t, "match eth_type", "an IPv6 rewrite's rule matches the EtherType")
			}
			r := e.ruleFor(rw, e.out)
			e.add(r)
			in, want := build(rw.spec), build(rw.want)
			e.send(e.in, in)
			d := e.expectOne(e.out)
			if !bytes.Equal(d.raw, want) {
				t.Errorf("%v on\n  % x\ngave\n  % x\nwant (built by gopacket)\n  % x", rw.actions, in, d.raw, want)
			}
		})
	}
	if k == hal.ActionDecTTL {
		t.Run("expiry", func(t T) {
			e := open(t, tg)
			s := udpSpec()
			s.TTL = 1
			r := e.rule(100, e.baseMatch(hal.EtherTypeIPv4, 0), hal.DecTTL(), hal.Output(e.out.ID))
			e.add(r)
			f := build(s)
			e.send(e.in, f)
			e.silent()
			if !e.caps.ExceptionPath {
				return
			}
			x := e.expectExceptions(1)[0]
			if x.Reason != hal.ReasonTTL || x.InPort != e.in.ID {
				t.Errorf("a frame whose TTL ran out reached the host with reason %v on port %d; want ttl on %d", x.Reason, x.InPort, e.in.ID)
			}
			if !bytes.Equal(x.Frame(), f) {
				t.Errorf("the exception frame is not the frame as it arrived:\n got % x\nwant % x", x.Frame(), f)
			}
		})
	}
}

func dropAction(t T, tg *Target) {
	e := open(t, tg)
	r := e.rule(100, e.baseMatch(0, 0), hal.Drop(hal.ReasonPolicy))
	if !e.caps.HasAction(hal.ActionDrop) {
		e.refused(r, "action drop")
		return
	}
	e.add(r)
	before := e.stats()
	e.send(e.in, build(udpSpec()), build(tcpSpec()), build(udpSpec()))
	e.silent()
	if e.caps.ExceptionPath {
		if x := e.exceptions(1, e.tg.quiet()); len(x) > 0 {
			t.Errorf("a dropped frame reached the host (reason %v)", x[0].Reason)
		}
	}
	after := e.stats()
	if d := after.Drops[hal.ReasonPolicy] - before.Drops[hal.ReasonPolicy]; d != 3 {
		t.Errorf("Stats.Drops[policy] went up by %d for 3 dropped frames", d)
	}
}

func toHostAction(t T, tg *Target) {
	e := open(t, tg)
	r := e.rule(100, e.baseMatch(0, 0), hal.ToHost(hal.ReasonAction))
	if !e.caps.HasAction(hal.ActionToHost) {
		e.refused(r, "action to_host")
		return
	}
	if !e.caps.ExceptionPath {
		t.Fatalf("to_host is advertised without an exception path")
	}
	e.add(r)
	before := e.stats()
	frames := [][]byte{build(udpSpec()), build(tcpSpec())}
	e.send(e.in, frames...)
	e.silent()
	xs := e.expectExceptions(2)
	for i, x := range xs {
		if x.Reason != hal.ReasonAction || x.InPort != e.in.ID || x.Rule != r.ID || x.Truncated || x.VNI != 0 {
			t.Errorf("exception %d: reason %v in-port %d rule %d truncated %v vni %d; want action, %d, %d, false, 0",
				i, x.Reason, x.InPort, x.Rule, x.Truncated, x.VNI, e.in.ID, r.ID)
		}
		if !bytes.Equal(x.Frame(), frames[i]) {
			t.Errorf("exception %d: frame differs from the one sent (or the order changed):\n got % x\nwant % x", i, x.Frame(), frames[i])
		}
	}
	after := e.stats()
	if d := after.Exceptions[hal.ReasonAction] - before.Exceptions[hal.ReasonAction]; d != 2 {
		t.Errorf("Stats.Exceptions[action] went up by %d for 2 frames", d)
	}
}

// encapFor is the Encap the suite asks for.
func encapFor(kind hal.EncapKind, v6 bool) hal.Encap {
	enc := hal.Encap{Kind: kind, VNI: 0x123456, Src: paLocal, Dst: paRemote, SrcMAC: macPA1, DstMAC: macPA2}
	if v6 {
		enc.Src, enc.Dst = pa6Local, pa6Remote
	}
	if kind == hal.EncapNVGRE {
		enc.FlowID = 0x2a
	}
	return enc
}

func encapAction(t T, tg *Target) {
	e := open(t, tg)
	for _, k := range allEncaps {
		if e.caps.Encaps.Has(k) {
			encapTest(t, e, encapFor(k, false))
			return
		}
	}
	e.refused(e.rule(100, e.baseMatch(0, 0), hal.EncapWith(encapFor(hal.EncapVXLAN, false)), hal.Output(e.out.ID)), "action encap")
}

func caseEncap(t T, tg *Target) {
	for _, k := range allEncaps {
		t.Run(k.String(), func(t T) {
			{
				e := open(t, tg)
				if !e.caps.Encaps.Has(k) {
					e.refused(e.rule(100, hal.Match{}, hal.EncapWith(encapFor(k, false)), hal.Output(e.out.ID)), "encap "+k.String())
					return
				}
				e.release()
			}
			t.Run("ipv4", func(t T) { encapTest(t, open(t, tg), encapFor(k, false)) })
			t.Run("ipv6", func(t T) { encapTest(t, open(t, tg), encapFor(k, true)) })
			t.Run("ttl", func(t T) {
				enc := encapFor(k, false)
				enc.TTL = 17
				encapTest(t, open(t, tg), enc)
			})
			t.Run("inner-ipv6", func(t T) {
				e := open(t, tg)
				enc := encapFor(k, false)
				r := e.rule(100, e.baseMatch(0, 0), hal.EncapWith(enc), hal.Output(e.out.ID))
				e.add(r)
				inner := build(udp6Spec())
				e.send(e.in, inner)
				checkEncapFrame(t, e.expectOne(e.out), enc, inner)
			})
			if k == hal.EncapGeneve {
				t.Run("options", func(t T) {
					enc := encapFor(k, false)
					enc.GeneveOptions = []byte{0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef}
					encapTest(t, open(t, tg), enc)
				})
			}
		})
	}
}

// encapTest sends two frames of one flow through an encap rule and checks
// both outputs.
func encapTest(t T, e *env, enc hal.Encap) {
	r := e.rule(100, e.baseMatch(0, 0), hal.EncapWith(enc), hal.Output(e.out.ID))
	e.add(r)
	inner := build(udpSpec())
	e.send(e.in, inner, inner)
	got := e.expect(e.out, 2)
	var sports []uint16
	for _, f := range got {
		d, err := decode(f)
		if err != nil {
			t.Fatalf("%v: % x", err, f)
		}
		for _, b := range checkChecksums(d) {
			t.Errorf("%s", b)
		}
		checkEncapFrame(t, d, enc, inner)
		if d.udp != nil {
			sports = append(sports, uint16(d.udp.SrcPort))
		}
	}
	if len(sports) == 2 && sports[0] != sports[1] {
		t.Errorf("two frames of one flow got UDP source ports %d and %d: the entropy must be stable per flow", sports[0], sports[1])
	}
}

// checkEncapFrame checks every outer field gopacket decoded against enc, and
// that the inner frame is inner.
func checkEncapFrame(t T, d *decoded, enc hal.Encap, inner []byte) {
	t.Helper()
	if got := macOf(d.eth.SrcMAC); got != enc.SrcMAC {
		t.Errorf("outer source MAC %v, want %v", got, enc.SrcMAC)
	}
	if got := macOf(d.eth.DstMAC); got != enc.DstMAC {
		t.Errorf("outer destination MAC %v, want %v", got, enc.DstMAC)
	}
	if d.dot1q != nil {
		t.Errorf("the outer frame carries a VLAN tag nobody asked for")
	}
	ttl := enc.TTL
	if ttl == 0 {
		ttl = 64
	}
	wantProto := layers.IPProtocolUDP
	if enc.Kind == hal.EncapNVGRE {
		wantProto = layers.IPProtocolGRE
	}
	switch {
	case enc.Src.Is4():
		ip := d.ip4
		if ip == nil {
			t.Fatalf("no outer IPv4 header (EtherType %v)", d.eth.EthernetType)
		}
		if addrOf(ip.SrcIP) != enc.Src || addrOf(ip.DstIP) != enc.Dst {
			t.Errorf("outer IPv4 %v -> %v, want %v -> %v", ip.SrcIP, ip.DstIP, enc.Src, enc.Dst)
		}
		if ip.TTL != ttl || ip.Protocol != wantProto || ip.IHL != 5 || ip.FragOffset != 0 || ip.Flags&layers.IPv4MoreFragments != 0 {
			t.Errorf("outer IPv4 ttl %d proto %v ihl %d frag %d flags %v; want ttl %d proto %v ihl 5, unfragmented",
				ip.TTL, ip.Protocol, ip.IHL, ip.FragOffset, ip.Flags, ttl, wantProto)
		}
	default:
		ip := d.ip6
		if ip == nil {
			t.Fatalf("no outer IPv6 header (EtherType %v)", d.eth.EthernetType)
		}
		if addrOf(ip.SrcIP) != enc.Src || addrOf(ip.DstIP) != enc.Dst {
			t.Errorf("outer IPv6 %v -> %v, want %v -> %v", ip.SrcIP, ip.DstIP, enc.Src, enc.Dst)
		}
		if ip.HopLimit != ttl || ip.NextHeader != wantProto {
			t.Errorf("outer IPv6 hop limit %d next header %v; want %d %v", ip.HopLimit, ip.NextHeader, ttl, wantProto)
		}
	}
	switch enc.Kind {
	case hal.EncapVXLAN, hal.EncapGeneve:
		port := enc.DstPort
		if port == 0 {
			port = map[hal.EncapKind]uint16{hal.EncapVXLAN: hal.PortVXLAN, hal.EncapGeneve: hal.PortGeneve}[enc.Kind]
		}
		if d.udp == nil {
			t.Fatalf("no outer UDP header")
		}
		if uint16(d.udp.DstPort) != port {
			t.Errorf("outer UDP destination port %d, want %d", d.udp.DstPort, port)
		}
		if d.udp.SrcPort == 0 {
			t.Errorf("outer UDP source port 0: it must carry flow entropy")
		}
	}
	switch enc.Kind {
	case hal.EncapVXLAN:
		if d.vxlan == nil {
			t.Fatalf("gopacket finds no VXLAN header")
		}
		if !d.vxlan.ValidIDFlag || d.vxlan.VNI != enc.VNI || d.vxlan.GBPExtension {
			t.Errorf("VXLAN I flag %v VNI %#x G %v; want I set, VNI %#x", d.vxlan.ValidIDFlag, d.vxlan.VNI, d.vxlan.GBPExtension, enc.VNI)
		}
		if c := d.vxlan.Contents; len(c) == 8 && (c[0] != 0x08 || c[1]|c[2]|c[3]|c[7] != 0) {
			t.Errorf("VXLAN reserved bits are not zero: % x", c)
		}
	case hal.EncapGeneve:
		g := d.geneve
		if g == nil {
			t.Fatalf("gopacket finds no Geneve header")
		}
		if g.Version != 0 || g.Protocol != layers.EthernetTypeTransparentEthernetBridging || g.VNI != enc.VNI || g.OAMPacket {
			t.Errorf("Geneve version %d protocol %v VNI %#x O %v; want 0, TEB, %#x, false", g.Version, g.Protocol, g.VNI, g.OAMPacket, enc.VNI)
		}
		if int(g.OptionsLength) != len(enc.GeneveOptions) || (len(g.Contents) >= 8 && !bytes.Equal(g.Contents[8:], enc.GeneveOptions)) {
			t.Errorf("Geneve options % x (length field %d), want % x", g.Contents[min(8, len(g.Contents)):], g.OptionsLength, enc.GeneveOptions)
		}
	case hal.EncapNVGRE:
		g := d.gre
		if g == nil {
			t.Fatalf("gopacket finds no GRE header")
		}
		if !g.KeyPresent || g.ChecksumPresent || g.SeqPresent || g.RoutingPresent || g.Version != 0 ||
			g.Protocol != layers.EthernetTypeTransparentEthernetBridging {
			t.Errorf("GRE K %v C %v S %v R %v version %d protocol %v; want key only, version 0, TEB",
				g.KeyPresent, g.ChecksumPresent, g.SeqPresent, g.RoutingPresent, g.Version, g.Protocol)
		}
		if g.Key>>8 != enc.VNI || uint8(g.Key) != enc.FlowID {
			t.Errorf("NVGRE VSID %#x FlowID %#x, want %#x %#x", g.Key>>8, uint8(g.Key), enc.VNI, enc.FlowID)
		}
	}
	if !bytes.Equal(d.inner, inner) {
		t.Errorf("inner frame changed by encapsulation:\n got % x\nwant % x", d.inner, inner)
	}
}

func decapAction(t T, tg *Target) {
	e := open(t, tg)
	for _, k := range allEncaps {
		if e.caps.Decaps.Has(k) {
			decapTest(t, e, k, false)
			return
		}
	}
	var m hal.Match
	m.Tunnel(hal.EncapVXLAN, 100)
	e.refused(e.rule(100, m, hal.Decap(), hal.Output(e.in.ID)), "action decap")
}

func caseDecap(t T, tg *Target) {
	for _, k := range allEncaps {
		t.Run(k.String(), func(t T) {
			{
				e := open(t, tg)
				if !e.caps.Decaps.Has(k) {
					var m hal.Match
					m.Tunnel(k, 100)
					e.refused(e.rule(100, m, hal.Decap(), hal.Output(e.in.ID)), "decap "+k.String())
					return
				}
				e.release()
			}
			t.Run("ipv4", func(t T) { decapTest(t, open(t, tg), k, false) })
			t.Run("ipv6", func(t T) { decapTest(t, open(t, tg), k, true) })
		})
	}
}

// decapTest sends a tunnelled frame from the uplink through a decap rule
// and expects the inner frame, unchanged, on the vport; another VNI misses.
func decapTest(t T, e *env, kind hal.EncapKind, v6 bool) {
	vp := e.vport()
	up := e.tunnelPort()
	if up.ID == vp.ID {
		need(t, needUplink, "tunnelled traffic needs a port other than the vport")
	}
	var m hal.Match
	m.Tunnel(kind, 100)
	if missing := m.Fields() &^ e.caps.MatchFields; missing != 0 {
		need(t, matchNeed(missing), "a decap rule matches on %v, which the NIC cannot", missing)
	}
	r := e.rule(100, m, hal.Decap(), hal.Output(vp.ID))
	e.add(r)
	tn := defaultTunnel(kind, 100)
	if v6 {
		tn.Src, tn.Dst = pa6Remote, pa6Local
	}
	s := udpSpec()
	s.Src, s.Dst, s.IPSrc, s.IPDst = macB, macA, caB, caA
	inner := build(s)
	e.send(up, encapsulate(tn, inner))
	if got := e.expect(vp, 1)[0]; !bytes.Equal(got, inner) {
		t.Errorf("decapsulated frame differs from the inner frame:\n got % x\nwant % x", got, inner)
	}
	tn.VNI = 200
	miss := encapsulate(tn, inner)
	e.send(up, miss)
	e.silent()
	if e.caps.ExceptionPath {
		x := e.expectExceptions(1)[0]
		if x.Reason != hal.ReasonMiss || x.InPort != up.ID || x.VNI != 200 {
			t.Errorf("a tunnelled miss reached the host with reason %v in-port %d VNI %d; want miss, %d, 200", x.Reason, x.InPort, x.VNI, up.ID)
		}
		if !bytes.Equal(x.Frame(), miss) {
			t.Errorf("the exception carries % x, want the frame as it arrived % x", x.Frame(), miss)
		}
	}
}
