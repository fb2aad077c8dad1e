package wire

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

func udp4Spec() FrameSpec {
	return FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoUDP, SrcPort: 1000, DstPort: 2000,
		Payload: []byte("0123456789abcdef0123")}
}

func tcp6Spec() FrameSpec {
	return FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA6, Dst: caB6, Proto: hal.ProtoTCP, SrcPort: 1000, DstPort: 2000,
		Payload: []byte("0123456789abcdef0123")}
}

// fixIPv4Sum recomputes the IPv4 header checksum of the header at off, so
// that a mutation is judged on its own and not as a bad checksum.
func fixIPv4Sum(f []byte, off int) {
	ihl := int(f[off]&0x0f) * 4
	f[off+10], f[off+11] = 0, 0
	binary.BigEndian.PutUint16(f[off+10:], Checksum(f[off:off+ihl], 0))
}

func encapOf(kind hal.EncapKind, v6 bool) hal.Encap {
	e := hal.Encap{Kind: kind, VNI: 4242, Src: paA4, Dst: paB4, SrcMAC: macC, DstMAC: macD}
	if v6 {
		e.Src, e.Dst = paA6, paB6
	}
	return e
}

func TestParseErrors(t *testing.T) {
	type tc struct {
		name   string
		frame  func() []byte
		reason hal.Reason
		layer  Layer
		inner  bool
		trunc  bool
	}
	vx := func(mut func(f []byte)) func() []byte {
		return func() []byte {
			e := encapOf(hal.EncapVXLAN, false)
			f := BuildEncap(&e, Build(udp4Spec()))
			mut(f)
			return f
		}
	}
	gn := func(opts []byte, mut func(f []byte)) func() []byte {
		return func() []byte {
			e := encapOf(hal.EncapGeneve, false)
			e.GeneveOptions = opts
			f := BuildEncap(&e, Build(udp4Spec()))
			mut(f)
			return f
		}
	}
	const tun4 = EthHeaderLen + IPv4HeaderLen + UDPHeaderLen // tunnel header offset over IPv4
	cases := []tc{
		{"empty", func() []byte { return nil }, hal.ReasonMalformed, LayerEthernet, false, true},
		{"short-eth", func() []byte { return Build(udp4Spec())[:13] }, hal.ReasonMalformed, LayerEthernet, false, true},
		{"three-tags", func() []byte {
			f := Build(FrameSpec{SrcMAC: macA, DstMAC: macB, VLAN: 5, OuterVLAN: 6, Src: caA4, Dst: caB4, Proto: hal.ProtoUDP})
			tag := []byte{0x81, 0x00, 0x00, 0x07}
			return append(append(append([]byte(nil), f[:12]...), tag...), f[12:]...)
		}, hal.ReasonUnsupported, LayerVLAN, false, false},
		{"cut-tag", func() []byte {
			return Build(FrameSpec{SrcMAC: macA, DstMAC: macB, VLAN: 5, Src: caA4, Dst: caB4, Proto: hal.ProtoUDP})[:16]
		}, hal.ReasonMalformed, LayerVLAN, false, true},
		{"ip4-short", func() []byte { return Build(udp4Spec())[:14+19] }, hal.ReasonMalformed, LayerIPv4, false, true},
		{"ip4-version", func() []byte { f := Build(udp4Spec()); f[14] = 0x55; fixIPv4Sum(f, 14); return f }, hal.ReasonMalformed, LayerIPv4, false, false},
		{"ip4-ihl4", func() []byte { f := Build(udp4Spec()); f[14] = 0x44; return f }, hal.ReasonMalformed, LayerIPv4, false, false},
		{"ip4-totlen-small", func() []byte {
			f := Build(udp4Spec())
			binary.BigEndian.PutUint16(f[16:], 19)
			fixIPv4Sum(f, 14)
			return f
		}, hal.ReasonMalformed, LayerIPv4, false, false},
		{"ip4-totlen-big", func() []byte {
			f := Build(udp4Spec())
			binary.BigEndian.PutUint16(f[16:], uint16(len(f)))
			fixIPv4Sum(f, 14)
			return f
		}, hal.ReasonMalformed, LayerIPv4, false, true},
		{"ip4-checksum", func() []byte { s := udp4Spec(); s.BadIPChecksum = true; return Build(s) }, hal.ReasonMalformed, LayerIPv4, false, false},
		{"ip4-options-checksum", func() []byte {
			s := udp4Spec()
			s.IPOptions = []byte{1, 1, 1, 1}
			f := Build(s)
			f[14+21] ^= 0xff // an option byte: covered by the header checksum
			return f
		}, hal.ReasonMalformed, LayerIPv4, false, false},
		{"ip4-later-fragment", func() []byte { s := udp4Spec(); s.FragOffset = 3; return Build(s) }, hal.ReasonFragment, LayerIPv4, false, false},
		{"ip6-short", func() []byte { return Build(tcp6Spec())[:14+39] }, hal.ReasonMalformed, LayerIPv6, false, true},
		{"ip6-version", func() []byte { f := Build(tcp6Spec()); f[14] = 0x40; return f }, hal.ReasonMalformed, LayerIPv6, false, false},
		{"ip6-plen-big", func() []byte {
			f := Build(tcp6Spec())
			binary.BigEndian.PutUint16(f[18:], 1000)
			return f
		}, hal.ReasonMalformed, LayerIPv6, false, true},
		{"ip6-jumbo", func() []byte {
			s := tcp6Spec()
			s.ExtHeaders = []uint8{ProtoHopByHop}
			f := Build(s)
			binary.BigEndian.PutUint16(f[18:], 0)
			return f
		}, hal.ReasonUnsupported, LayerIPv6, false, false},
		{"ip6-too-many-ext", func() []byte {
			s := tcp6Spec()
			for range MaxIPv6ExtHeaders + 1 {
				s.ExtHeaders = append(s.ExtHeaders, ProtoDstOpts)
			}
			return Build(s)
		}, hal.ReasonUnsupported, LayerIPv6Ext, false, false},
		{"ip6-hbh-not-first", func() []byte {
			s := tcp6Spec()
			s.ExtHeaders = []uint8{ProtoDstOpts, ProtoHopByHop}
			return Build(s)
		}, hal.ReasonMalformed, LayerIPv6Ext, false, false},
		{"ip6-ext-overrun", func() []byte {
			s := tcp6Spec()
			s.ExtHeaders = []uint8{ProtoDstOpts}
			f := Build(s)
			f[14+40+1] = 200 // header length beyond the packet
			return f
		}, hal.ReasonMalformed, LayerIPv6Ext, false, true},
		{"ip6-later-fragment", func() []byte {
			s := tcp6Spec()
			s.ExtHeaders, s.FragOffset = []uint8{ProtoFragment}, 100
			return Build(s)
		}, hal.ReasonFragment, LayerIPv6Ext, false, false},
		{"tcp-doff-small", func() []byte { f := Build(tcp6Spec()); f[14+40+12] = 4 << 4; return f }, hal.ReasonMalformed, LayerTCP, false, false},
		{"tcp-doff-big", func() []byte { f := Build(tcp6Spec()); f[14+40+12] = 15 << 4; return f }, hal.ReasonMalformed, LayerTCP, false, true},
		{"tcp-short", func() []byte {
			s := tcp6Spec()
			f := Build(s)
			binary.BigEndian.PutUint16(f[18:], 19)
			return f
		}, hal.ReasonMalformed, LayerTCP, false, true},
		{"udp-len-small", func() []byte { f := Build(udp4Spec()); binary.BigEndian.PutUint16(f[38:], 7); return f }, hal.ReasonMalformed, LayerUDP, false, false},
		{"udp-len-big", func() []byte { f := Build(udp4Spec()); binary.BigEndian.PutUint16(f[38:], 500); return f }, hal.ReasonMalformed, LayerUDP, false, true},
		{"icmp-short", func() []byte {
			f := Build(FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoICMP})
			binary.BigEndian.PutUint16(f[16:], 23)
			fixIPv4Sum(f, 14)
			return f
		}, hal.ReasonMalformed, LayerICMP, false, true},
		{"vxlan-no-I", vx(func(f []byte) { f[tun4] = 0 }), hal.ReasonMalformed, LayerVXLAN, false, false},
		{"vxlan-short", func() []byte {
			f := Build(FrameSpec{SrcMAC: macA, DstMAC: macB, Src: paA4, Dst: paB4, Proto: hal.ProtoUDP, SrcPort: 5, DstPort: hal.PortVXLAN,
				Payload: []byte{8, 0, 0, 0}})
			return f
		}, hal.ReasonMalformed, LayerVXLAN, false, true},
		{"vxlan-outer-fragment", vx(func(f []byte) { f[20] |= 0x20; fixIPv4Sum(f, 14) }), hal.ReasonFragment, LayerVXLAN, false, false},
		{"vxlan-inner-checksum", vx(func(f []byte) { f[tun4+8+14+10] ^= 1 }), hal.ReasonMalformed, LayerIPv4, true, false},
		{"vxlan-inner-short", func() []byte {
			f := Build(FrameSpec{SrcMAC: macA, DstMAC: macB, Src: paA4, Dst: paB4, Proto: hal.ProtoUDP, SrcPort: 5, DstPort: hal.PortVXLAN,
				Payload: []byte{8, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7}})
			return f
		}, hal.ReasonMalformed, LayerEthernet, true, true},
		{"geneve-version", gn(nil, func(f []byte) { f[tun4] |= 0x40 }), hal.ReasonUnsupported, LayerGeneve, false, false},
		{"geneve-oam", gn(nil, func(f []byte) { f[tun4+1] |= 0x80 }), hal.ReasonUnsupported, LayerGeneve, false, false},
		{"geneve-proto", gn(nil, func(f []byte) { f[tun4+2], f[tun4+3] = 0x08, 0x00 }), hal.ReasonUnsupported, LayerGeneve, false, false},
		{"geneve-critical", gn([]byte{0, 1, 0x80, 0}, func(f []byte) {}), hal.ReasonUnsupported, LayerGeneve, false, false},
		{"geneve-option-overrun", gn([]byte{0, 1, 2, 0, 0, 1, 2, 0}, func(f []byte) { f[tun4+8+3] = 2 }), hal.ReasonMalformed, LayerGeneve, false, false},
		{"geneve-optlen-beyond", gn(nil, func(f []byte) { f[tun4] = 0x3f }), hal.ReasonMalformed, LayerGeneve, false, true},
		{"nvgre-no-key", func() []byte {
			e := encapOf(hal.EncapNVGRE, false)
			f := BuildEncap(&e, Build(udp4Spec()))
			f[34] = 0
			return f
		}, hal.ReasonUnsupported, LayerGRE, false, false},
		{"nvgre-seq", func() []byte {
			e := encapOf(hal.EncapNVGRE, true)
			f := BuildEncap(&e, Build(udp4Spec()))
			f[54] |= 0x10
			return f
		}, hal.ReasonUnsupported, LayerGRE, false, false},
		{"nvgre-short", func() []byte {
			return Build(FrameSpec{SrcMAC: macA, DstMAC: macB, Src: paA4, Dst: paB4, Proto: hal.ProtoGRE, Payload: []byte{0x20, 0, 0x65, 0x58, 0, 0}})
		}, hal.ReasonMalformed, LayerGRE, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := c.frame()
			var k hal.FlowKey
			var l Layout
			err := Parse(f, 1, &k, &l)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse = %v, want a *ParseError", err)
			}
			if pe.Reason != c.reason || pe.Layer != c.layer || pe.Inner != c.inner || pe.Truncated != c.trunc {
				t.Fatalf("Parse = %v (reason %v layer %v inner %v truncated %v); want %v %v inner %v truncated %v",
					err, pe.Reason, pe.Layer, pe.Inner, pe.Truncated, c.reason, c.layer, c.inner, c.trunc)
			}
			if pe.Offset < 0 || pe.Offset > len(f) {
				t.Fatalf("offset %d outside the %d-byte frame", pe.Offset, len(f))
			}
			if errors.Is(err, ErrTruncated) != c.trunc || errors.Is(err, ErrMalformed) != (c.reason == hal.ReasonMalformed) ||
				errors.Is(err, ErrUnsupported) != (c.reason == hal.ReasonUnsupported) || errors.Is(err, ErrFragment) != (c.reason == hal.ReasonFragment) {
				t.Fatalf("errors.Is disagrees with %v", err)
			}
			if ReasonOf(err) != c.reason {
				t.Fatalf("ReasonOf = %v", ReasonOf(err))
			}
			if err.Error() == "" {
				t.Fatal("empty message")
			}
		})
	}
}

func TestParseFlagsAndLayout(t *testing.T) {
	var k hal.FlowKey
	var l Layout

	s := udp4Spec()
	s.IPOptions = []byte{0x94, 4, 0, 0}
	s.VLAN = 33
	f := Build(s)
	if err := Parse(f, 1, &k, &l); err != nil {
		t.Fatal(err)
	}
	if l.Flags&FlagIPOptions == 0 || l.IPHdrLen != 24 || l.L3 != 18 || l.L4 != 42 || l.Payload != 50 || l.VLANs != 1 || k.VLAN != hal.VLANPresent|33 {
		t.Fatalf("layout %+v key %v", l, k)
	}
	if l.End != 18+24+8+len(s.Payload) {
		t.Fatalf("End %d", l.End)
	}

	s = udp4Spec()
	s.MoreFragments = true
	if err := Parse(Build(s), 1, &k, &l); err != nil || l.Flags&FlagFragment == 0 || l.Flags&FlagLaterFragment != 0 || k.L4Dst != 2000 {
		t.Fatalf("first fragment: %v flags %#x key %v", err, l.Flags, k)
	}
	// A real first fragment: the UDP header's length is the whole
	// datagram's, longer than what this fragment carries.
	f = Build(s)
	ul := binary.BigEndian.Uint16(f[14+20+4:])
	binary.BigEndian.PutUint16(f[14+20+4:], ul+1480)
	if err := Parse(f, 1, &k, &l); err != nil || l.Flags&FlagFragment == 0 || k.L4Src != 1000 || k.L4Dst != 2000 {
		t.Fatalf("first fragment of a long datagram: %v flags %#x key %v", err, l.Flags, k)
	}
	s.MoreFragments = false
	f = Build(s)
	binary.BigEndian.PutUint16(f[14+20+4:], ul+1480)
	if err := Parse(f, 1, &k, &l); err == nil {
		t.Fatalf("an unfragmented datagram with a UDP length past its payload parsed")
	}

	s6 := tcp6Spec()
	s6.ExtHeaders = []uint8{ProtoHopByHop, ProtoRouting, ProtoAH, ProtoFragment, ProtoDstOpts}
	if err := Parse(Build(s6), 1, &k, &l); err != nil {
		t.Fatal(err)
	}
	if l.Flags&(FlagIPv6Ext|FlagFragment) != FlagIPv6Ext|FlagFragment || l.IPHdrLen != 40+8+8+12+8+8 || k.Proto != hal.ProtoTCP || k.L4Dst != 2000 {
		t.Fatalf("ext walk: layout %+v key %v", l, k)
	}

	// QinQ: the key holds the outer (service) tag.
	s = udp4Spec()
	s.VLAN, s.OuterVLAN = 10, 20
	if err := Parse(Build(s), 1, &k, &l); err != nil || k.VLAN != hal.VLANPresent|20 || l.VLANs != 2 || l.L3 != 22 {
		t.Fatalf("qinq: %v %v %+v", err, k, l)
	}

	// Non-IP frames key only L2.
	if err := Parse(Build(FrameSpec{SrcMAC: macA, DstMAC: macB, EthType: hal.EtherTypeARP, Payload: arpRequest()}), 1, &k, &l); err != nil ||
		k.EthType != hal.EtherTypeARP || k.Proto != 0 || l.L3 != -1 || l.L4 != -1 {
		t.Fatalf("arp: %v %v %+v", err, k, l)
	}

	// A tunnelled frame: outer fields and flags are kept apart.
	e := encapOf(hal.EncapGeneve, true)
	e.GeneveOptions = []byte{0, 1, 2, 1, 9, 9, 9, 9}
	inner := Build(s)
	f = BuildEncap(&e, inner)
	if err := Parse(f, 1, &k, &l); err != nil {
		t.Fatal(err)
	}
	hr := Headroom(&e)
	if !l.Tunnelled() || l.OuterL3 != 14 || l.OuterL4 != 54 || l.Tunnel != 62 || l.L2 != hr || l.OuterEthType != hal.EtherTypeIPv6 ||
		l.OuterFlags&FlagGeneveOptions == 0 || l.Flags&FlagTunnel == 0 || l.VLANs != 2 || l.End != len(f) {
		t.Fatalf("geneve layout %+v (headroom %d)", l, hr)
	}
	if start, err := Decap(f, &l); err != nil || start != hr {
		t.Fatalf("Decap = %d, %v", start, err)
	}
	if err := Parse(inner, 1, &k, &l); err != nil {
		t.Fatal(err)
	}
	if _, err := Decap(inner, &l); !errors.Is(err, ErrNotTunnelled) {
		t.Fatalf("Decap of a plain frame: %v", err)
	}
}

// Every prefix of every valid frame must fail cleanly (or, for non-IP
// frames, parse), never panic, and never report offsets outside the frame.
func TestParseTruncations(t *testing.T) {
	var frames [][]byte
	for _, s := range plainSpecs() {
		frames = append(frames, Build(s.spec))
	}
	for _, e := range encaps() {
		for _, s := range innerSpecs() {
			frames = append(frames, BuildEncap(&e.e, Build(s.spec)))
		}
	}
	var k hal.FlowKey
	var l Layout
	for _, f := range frames {
		if err := Parse(f, 1, &k, &l); err != nil {
			t.Fatalf("full frame: %v", err)
		}
		end := l.End
		for n := 0; n < end; n++ {
			err := Parse(f[:n], 1, &k, &l)
			checkLayout(t, f[:n], &l, err)
			if err == nil && n >= EthHeaderLen+4 && binary.BigEndian.Uint16(f[12:]) != hal.EtherTypeARP {
				// Only frames whose IP packet is cut must fail; ARP and
				// tags-only prefixes may parse.
				if k.IsIP() {
					t.Fatalf("prefix %d of %d parsed: %v", n, len(f), k)
				}
			}
		}
	}
}

// checkLayout asserts the invariants of a Parse result.
func checkLayout(t testing.TB, f []byte, l *Layout, err error) {
	t.Helper()
	if err != nil {
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("error %v is not a *ParseError", err)
		}
		if pe.Reason != hal.ReasonMalformed && pe.Reason != hal.ReasonUnsupported && pe.Reason != hal.ReasonFragment {
			t.Fatalf("reason %v", pe.Reason)
		}
		if pe.Offset < 0 || pe.Offset > len(f) {
			t.Fatalf("error offset %d outside %d bytes", pe.Offset, len(f))
		}
		return
	}
	in := func(name string, v int) {
		if v < -1 || v > len(f) {
			t.Fatalf("%s = %d outside the %d-byte frame (%+v)", name, v, len(f), l)
		}
	}
	in("L2", l.L2)
	in("L3", l.L3)
	in("L4", l.L4)
	in("Payload", l.Payload)
	in("End", l.End)
	in("OuterL3", l.OuterL3)
	in("OuterL4", l.OuterL4)
	in("Tunnel", l.Tunnel)
	order := []int{l.OuterL3, l.OuterL4, l.Tunnel, l.L2, l.L3, l.L4, l.Payload, l.End}
	last := 0
	for i, v := range order {
		if v < 0 {
			continue
		}
		if v < last {
			t.Fatalf("offsets out of order at %d: %v", i, order)
		}
		last = v
	}
	if l.L3 >= 0 && l.L4 >= 0 && l.L4-l.L3 != l.IPHdrLen {
		t.Fatalf("IPHdrLen %d but L4-L3 = %d", l.IPHdrLen, l.L4-l.L3)
	}
	if l.L2 < 0 || l.End < l.L2+EthHeaderLen {
		t.Fatalf("L2 %d End %d", l.L2, l.End)
	}
}

// TestFastPathAgrees holds Parse's fast path against the general walk on
// every combination and on every mutation of one byte of a fast-path frame.
func TestFastPathAgrees(t *testing.T) {
	var frames [][]byte
	for _, s := range plainSpecs() {
		frames = append(frames, Build(s.spec))
	}
	for _, s := range laterFragments() {
		frames = append(frames, Build(s.spec))
	}
	vx4, vx6 := encapOf(hal.EncapVXLAN, false), encapOf(hal.EncapVXLAN, true)
	icmp6 := tcp6Spec()
	icmp6.Proto, icmp6.ICMPType = hal.ProtoICMPv6, 128
	bases := [][]byte{udp4Frame64(), Build(tcp6Spec()), BuildEncap(&vx4, udp4Frame64()), BuildEncap(&vx6, Build(tcp6Spec())),
		Build(icmp6), BuildEncap(&vx4, Build(FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoICMP, ICMPType: 8, Payload: make([]byte, 30)}))}
	for _, e := range encaps() {
		for _, s := range innerSpecs() {
			frames = append(frames, BuildEncap(&e.e, Build(s.spec)))
		}
	}
	for _, base := range bases {
		for i := 0; i < len(base); i++ {
			for _, x := range []byte{0x01, 0x80, 0xff} {
				f := append([]byte(nil), base...)
				f[i] ^= x
				frames = append(frames, f)
			}
		}
	}
	for _, f := range frames {
		var k, gk hal.FlowKey
		var l, gl Layout
		err := Parse(f, 4, &k, &l)
		gk.InPort = 4
		gerr := parseGeneral(f, &gk, &gl)
		if (err == nil) != (gerr == nil) || k != gk || (err == nil && l != gl) {
			t.Fatalf("%x:\nParse   %v %v %+v\ngeneral %v %v %+v", f, err, k, l, gerr, gk, gl)
		}
	}
}
