package softnic

import (
	"bytes"
	"context"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

func TestEncapEveryKind(t *testing.T) {
	opts := []byte{0x01, 0x02, 0x03, 0x01, 0xaa, 0xbb, 0xcc, 0xdd} // class 0x0102, type 3 (not critical), 4 bytes
	cases := []struct {
		name string
		e    hal.Encap
	}{
		{"vxlan4", hal.Encap{Kind: hal.EncapVXLAN, VNI: 5001, Src: paLocal, Dst: paRem, SrcMAC: macUp, DstMAC: macNext}},
		{"vxlan6", hal.Encap{Kind: hal.EncapVXLAN, VNI: 5002, Src: pa6Loc, Dst: pa6Rem, SrcMAC: macUp, DstMAC: macNext, TTL: 9}},
		{"geneve4", hal.Encap{Kind: hal.EncapGeneve, VNI: 77, Src: paLocal, Dst: paRem, SrcMAC: macUp, DstMAC: macNext, GeneveOptions: opts}},
		{"geneve6", hal.Encap{Kind: hal.EncapGeneve, VNI: 78, Src: pa6Loc, Dst: pa6Rem, SrcMAC: macUp, DstMAC: macNext}},
		{"nvgre4", hal.Encap{Kind: hal.EncapNVGRE, VNI: 0xabcdef, Src: paLocal, Dst: paRem, SrcMAC: macUp, DstMAC: macNext}},
		{"nvgre6", hal.Encap{Kind: hal.EncapNVGRE, VNI: 3, Src: pa6Loc, Dst: pa6Rem, SrcMAC: macUp, DstMAC: macNext, FlowID: 9}},
		{"vxlan4 port", hal.Encap{Kind: hal.EncapVXLAN, VNI: 1, Src: paLocal, Dst: paRem, DstPort: 8472}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newNIC(t)
			mustApply(t, n, hal.AddOp(dstRule(1, caRem, c.e)))
			in := udp4(caVM1, caRem, 1234, 80, 22)
			send(t, n, pVM1, in)
			out := recvAll(t, n, pUplink)
			if len(out) != 1 {
				t.Fatalf("got %d frames on the uplink, want 1", len(out))
			}
			f := out[0]
			if c.e.DstPort == 0 {
				k, l := parse(t, f)
				if k.TunKind != c.e.Kind || k.VNI != c.e.VNI || hal.AddrFrom16(k.TunSrc) != c.e.Src || hal.AddrFrom16(k.TunDst) != c.e.Dst {
					t.Fatalf("outer key %v", k)
				}
				if !bytes.Equal(f[l.L2:l.End], in) {
					t.Fatalf("inner frame changed:\n% x\n% x", f[l.L2:l.End], in)
				}
			}
			// The same frame, built independently, must be identical but for
			// the entropy fields (UDP source port, IPv6 flow label, GRE FlowID).
			want := wire.BuildEncap(&c.e, in)
			if len(want) != len(f) || !bytes.Equal(want[:14], f[:14]) || !bytes.Equal(want[len(want)-len(in):], in) {
				t.Fatalf("frame differs from wire.BuildEncap:\n% x\n% x", f, want)
			}
			checkGopacket(t, f, c.e, len(in))
		})
	}
}

// checkGopacket decodes an encapsulated frame with gopacket, independently
// of hal/wire.
func checkGopacket(t *testing.T, f []byte, e hal.Encap, innerLen int) {
	t.Helper()
	pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if hal.MAC(eth.SrcMAC) != e.SrcMAC || hal.MAC(eth.DstMAC) != e.DstMAC {
		t.Fatalf("outer MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
	}
	ttl := e.TTL
	if ttl == 0 {
		ttl = 64
	}
	if e.Src.Is4() {
		ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ip.SrcIP.String() != e.Src.String() || ip.DstIP.String() != e.Dst.String() || ip.TTL != ttl {
			t.Fatalf("outer IPv4 %v -> %v ttl %d", ip.SrcIP, ip.DstIP, ip.TTL)
		}
		if int(ip.Length) != len(f)-14 {
			t.Fatalf("IPv4 length %d, frame %d", ip.Length, len(f))
		}
		hdr := append([]byte(nil), f[14:34]...)
		if wire.Checksum(hdr, 0) != 0 {
			t.Fatalf("outer IPv4 header checksum wrong")
		}
	} else {
		ip := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if ip.SrcIP.String() != e.Src.String() || ip.DstIP.String() != e.Dst.String() || ip.HopLimit != ttl {
			t.Fatalf("outer IPv6 %v -> %v hop %d", ip.SrcIP, ip.DstIP, ip.HopLimit)
		}
	}
	var inner []byte
	switch e.Kind {
	case hal.EncapVXLAN:
		udp := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if e.DstPort != 0 {
			if uint16(udp.DstPort) != e.DstPort {
				t.Fatalf("UDP port %d", udp.DstPort)
			}
			return // gopacket decodes VXLAN on 4789 only
		}
		if udp.SrcPort < 49152 {
			t.Fatalf("UDP source port %d outside the dynamic range", udp.SrcPort)
		}
		vx := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
		if vx.VNI != e.VNI || !vx.ValidIDFlag {
			t.Fatalf("VXLAN VNI %d", vx.VNI)
		}
		inner = vx.LayerPayload()
	case hal.EncapGeneve:
		g := pkt.Layer(layers.LayerTypeGeneve).(*layers.Geneve)
		if g.VNI != e.VNI || int(g.OptionsLength) != len(e.GeneveOptions) {
			t.Fatalf("Geneve VNI %d options %d", g.VNI, g.OptionsLength)
		}
		inner = g.LayerPayload()
	case hal.EncapNVGRE:
		g := pkt.Layer(layers.LayerTypeGRE).(*layers.GRE)
		if !g.KeyPresent || g.Key>>8 != e.VNI || g.Protocol != layers.EthernetTypeTransparentEthernetBridging {
			t.Fatalf("GRE key %#x proto %v", g.Key, g.Protocol)
		}
		if e.FlowID != 0 && uint8(g.Key) != e.FlowID {
			t.Fatalf("FlowID %d", uint8(g.Key))
		}
		inner = g.LayerPayload()
	}
	if len(inner) != innerLen {
		t.Fatalf("gopacket inner frame %d bytes, want %d", len(inner), innerLen)
	}
	if e.Src.Is6() && e.Kind != hal.EncapNVGRE {
		// The UDP checksum over IPv6 is mandatory; verify it from scratch.
		udpOff := 14 + 40
		seg := append([]byte(nil), f[udpOff:]...)
		sum := wire.PseudoHeaderSum(f[22:38], f[38:54], hal.ProtoUDP, len(seg))
		if wire.Checksum(seg, sum) != 0 {
			t.Fatal("outer UDP/IPv6 checksum wrong")
		}
	}
}

func TestDecapToVM(t *testing.T) {
	for _, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE} {
		t.Run(kind.String(), func(t *testing.T) {
			n := newNIC(t)
			var m hal.Match
			m.InPort(pUplink).Tunnel(kind, 4242).IPDst(netip.PrefixFrom(caVM2, 32))
			mustApply(t, n, hal.AddOp(hal.Rule{ID: 7, Priority: 1, Match: m,
				Actions: []hal.Action{hal.Decap(), hal.SetEthDst(macVM2), hal.Output(pVM2)}}))
			inner := wire.Build(wire.FrameSpec{SrcMAC: macGW, DstMAC: macGW, Src: caRem, Dst: caVM2,
				Proto: hal.ProtoTCP, SrcPort: 5555, DstPort: 22, Payload: []byte("hello")})
			e := hal.Encap{Kind: kind, VNI: 4242, Src: paRem, Dst: paLocal}
			send(t, n, pUplink, wire.BuildEncap(&e, inner))
			// Another VNI misses and goes to the host.
			e.VNI = 4243
			send(t, n, pUplink, wire.BuildEncap(&e, inner))
			out := recvAll(t, n, pVM2)
			if len(out) != 1 {
				t.Fatalf("vm2 got %d frames, want 1", len(out))
			}
			want := wire.Build(wire.FrameSpec{SrcMAC: macGW, DstMAC: macVM2, Src: caRem, Dst: caVM2,
				Proto: hal.ProtoTCP, SrcPort: 5555, DstPort: 22, Payload: []byte("hello")})
			if !bytes.Equal(out[0], want) {
				t.Fatalf("decapsulated frame\n% x\nwant\n% x", out[0], want)
			}
			exc := readExc(t, n)
			if len(exc) != 1 || exc[0].Reason != hal.ReasonMiss || exc[0].VNI != 4243 || exc[0].InPort != pUplink {
				t.Fatalf("exceptions %+v", exc)
			}
		})
	}
}

// TestRewrites checks each header rewrite against a frame built directly
// with the rewritten values: the incremental checksum updates must give the
// same bytes as computing the checksums from scratch.
func TestRewrites(t *testing.T) {
	newAddr := netip.MustParseAddr("203.0.113.9")
	base := wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: caVM1, Dst: caVM2, Proto: hal.ProtoTCP,
		SrcPort: 40000, DstPort: 443, TTL: 30, Payload: []byte("payload")}
	cases := []struct {
		name string
		act  []hal.Action
		want func(s *wire.FrameSpec)
		spec func(s *wire.FrameSpec)
	}{
		{"eth_src", []hal.Action{hal.SetEthSrc(macGW)}, func(s *wire.FrameSpec) { s.SrcMAC = macGW }, nil},
		{"eth_dst", []hal.Action{hal.SetEthDst(macVM2)}, func(s *wire.FrameSpec) { s.DstMAC = macVM2 }, nil},
		{"ip_src", []hal.Action{hal.SetIPSrc(newAddr)}, func(s *wire.FrameSpec) { s.Src = newAddr }, nil},
		{"ip_dst", []hal.Action{hal.SetIPDst(newAddr)}, func(s *wire.FrameSpec) { s.Dst = newAddr }, nil},
		{"l4_src", []hal.Action{hal.SetL4Src(1)}, func(s *wire.FrameSpec) { s.SrcPort = 1 }, nil},
		{"l4_dst", []hal.Action{hal.SetL4Dst(8443)}, func(s *wire.FrameSpec) { s.DstPort = 8443 }, nil},
		{"dec_ttl", []hal.Action{hal.DecTTL()}, func(s *wire.FrameSpec) { s.TTL = 29 }, nil},
		{"push_vlan", []hal.Action{hal.PushVLAN(100)}, func(s *wire.FrameSpec) { s.VLAN = 100 }, nil},
		{"pop_vlan", []hal.Action{hal.PopVLAN()}, func(s *wire.FrameSpec) { s.VLAN = 0 }, func(s *wire.FrameSpec) { s.VLAN = 7 }},
		{"nat udp", []hal.Action{hal.SetIPSrc(newAddr), hal.SetL4Src(999), hal.DecTTL(), hal.SetEthDst(macVM2)},
			func(s *wire.FrameSpec) { s.Src, s.SrcPort, s.TTL, s.DstMAC = newAddr, 999, 29, macVM2 },
			func(s *wire.FrameSpec) { s.Proto = hal.ProtoUDP }},
		{"push then set mac", []hal.Action{hal.PushVLAN(5), hal.SetEthSrc(macVM2)},
			func(s *wire.FrameSpec) { s.VLAN, s.SrcMAC = 5, macVM2 }, nil},
		{"ipv6 nat", []hal.Action{hal.SetIPDst(pa6Rem), hal.SetL4Dst(7), hal.DecTTL()},
			func(s *wire.FrameSpec) { s.Dst, s.DstPort, s.TTL = pa6Rem, 7, 29 },
			func(s *wire.FrameSpec) { s.Src, s.Dst = pa6Loc, netip.MustParseAddr("2001:db8::99") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newNIC(t)
			spec := base
			if c.spec != nil {
				c.spec(&spec)
			}
			var m hal.Match
			m.InPort(pVM1).IPDst(netip.PrefixFrom(spec.Dst, spec.Dst.BitLen())).Proto(spec.Proto)
			acts := append(append([]hal.Action(nil), c.act...), hal.Count(), hal.Output(pVM2))
			mustApply(t, n, hal.AddOp(hal.Rule{ID: 1, Match: m, Actions: acts}))
			in := wire.Build(spec)
			send(t, n, pVM1, in)
			out := recvAll(t, n, pVM2)
			want := spec
			c.want(&want)
			if len(out) != 1 || !bytes.Equal(out[0], wire.Build(want)) {
				t.Fatalf("got\n% x\nwant\n% x", out, wire.Build(want))
			}
			// gopacket agrees on the rewritten fields.
			pkt := gopacket.NewPacket(out[0], layers.LayerTypeEthernet, gopacket.Default)
			if pkt.ErrorLayer() != nil {
				t.Fatal(pkt.ErrorLayer().Error())
			}
			var cnt [1]hal.Counters
			if err := n.RuleCounters(context.Background(), []hal.RuleID{1}, cnt[:]); err != nil || cnt[0].Packets != 1 || cnt[0].Bytes != uint64(len(in)) {
				t.Fatalf("counters %+v %v", cnt[0], err)
			}
		})
	}
}

func TestMissAndToHost(t *testing.T) {
	n := newNIC(t)
	var m hal.Match
	m.InPort(pVM1).IPDst(hal.MustPrefix("198.18.30.0/24"))
	mustApply(t, n, hal.AddOp(hal.Rule{ID: 9, Priority: 5, Match: m,
		Actions: []hal.Action{hal.SetEthDst(macVM2), hal.Count(), hal.ToHost(hal.ReasonAction)}}))
	hit := udp4(caVM1, netip.MustParseAddr("198.18.30.4"), 1, 2, 0)
	miss := udp4(caVM1, netip.MustParseAddr("198.18.31.4"), 1, 2, 0)
	send(t, n, pVM1, hit, miss)
	exc := readExc(t, n)
	if len(exc) != 2 {
		t.Fatalf("%d exceptions", len(exc))
	}
	if exc[0].Reason != hal.ReasonAction || exc[0].Rule != 9 || !bytes.Equal(exc[0].Frame(), hit) {
		t.Fatalf("to_host exception %+v (the frame must be as it arrived)", exc[0])
	}
	if exc[1].Reason != hal.ReasonMiss || exc[1].Rule != 0 || !bytes.Equal(exc[1].Frame(), miss) || exc[1].InPort != pVM1 {
		t.Fatalf("miss exception %+v", exc[1])
	}
	s := stats(t, n)
	if s.Exceptions[hal.ReasonAction] != 1 || s.Exceptions[hal.ReasonMiss] != 1 {
		t.Fatalf("stats %+v", s)
	}
	pc, _ := n.PortCounters(context.Background(), pVM1)
	if pc.Exceptions != 2 || pc.Rx.Packets != 2 || pc.Rx.Bytes != uint64(len(hit)+len(miss)) {
		t.Fatalf("port counters %+v", pc)
	}
}

// TestMACRewriteLayouts: a rule of the common shape (MAC rewrites and an
// output, executeBurst's own branch) on frames parseFast takes, whose
// layout is never filled (the tag, if any, known from the words), and on
// frames only wire.Parse takes (IPv4 options), whose layout is: the same
// MACs written at the same place, and the same MTU verdict at the edge,
// where a tag counted wrong would send a frame that does not fit or hold
// back one that does.
func TestMACRewriteLayouts(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.Ports[0].MTU = 9000; c.Ports[1].MTU = 1500 })
	var m hal.Match
	m.InPort(pVM1).IPDst(netip.PrefixFrom(caVM2, 32))
	mustApply(t, n, hal.AddOp(hal.Rule{ID: 9, Match: m, Actions: []hal.Action{hal.SetEthDst(macVM2), hal.SetEthSrc(macGW),
		hal.Output(pVM2)}}))
	for _, vlan := range []uint16{0, 7} {
		for _, opts := range [][]byte{nil, {1, 1, 1, 1}} {
			// IP packets of 1500 bytes (they fit) and 1501 (they do not).
			var frames [][]byte
			for _, ipLen := range []int{1500, 1501} {
				pay := ipLen - wire.IPv4HeaderLen - len(opts) - wire.UDPHeaderLen
				frames = append(frames, wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macUp, VLAN: vlan, IPOptions: opts,
					Src: caVM1, Dst: caVM2, Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2, Payload: make([]byte, pay)}))
			}
			var w words
			if fast := parseFast(frames[0], pVM1, &w); fast != (opts == nil) {
				t.Fatalf("vlan %d, options %v: parseFast took the frame: %v", vlan, opts, fast)
			}
			send(t, n, pVM1, frames...)
			out := recvAll(t, n, pVM2)
			if len(out) != 1 || len(out[0]) != len(frames[0]) {
				t.Fatalf("vlan %d, options %v: vm2 got %d frames", vlan, opts, len(out))
			}
			want := append([]byte(nil), frames[0]...)
			copy(want[0:6], macVM2[:])
			copy(want[6:12], macGW[:])
			if !bytes.Equal(out[0], want) {
				t.Fatalf("vlan %d, options %v: frame\n% x\nwant\n% x", vlan, opts, out[0][:40], want[:40])
			}
			exc := readExc(t, n)
			if len(exc) != 1 || exc[0].Reason != hal.ReasonMTU || exc[0].Rule != 9 || !bytes.Equal(exc[0].Frame(), frames[1]) {
				t.Fatalf("vlan %d, options %v: exceptions %+v", vlan, opts, exc)
			}
		}
	}
}
