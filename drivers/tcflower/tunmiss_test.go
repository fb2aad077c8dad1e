package tcflower

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// TestCompileUntunnelledNoVLAN: the vswitch's exact-match flows match "not
// tunnelled" (tun=none) and "no VLAN tag". On a port's frames the first
// needs no key (a port's ingress carries no tunnel metadata) and the
// second is num_of_vlans 0, where the kernel has it; without an in-port
// the rule would take the tunnel devices' frames too, and is refused.
func TestCompileUntunnelledNoVLAN(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	k := hal.FlowKey{InPort: 1, EthSrc: hal.MustMAC("02:00:00:00:00:01"), EthDst: hal.MustMAC("02:00:00:00:00:02"), EthType: hal.EtherTypeIPv4,
		IPSrc: hal.Addr16(netip.MustParseAddr("192.0.2.1")), IPDst: hal.Addr16(netip.MustParseAddr("192.0.2.2")), Proto: hal.ProtoTCP, L4Src: 40000, L4Dst: 80}
	m := hal.Exact(&k)
	if m.Mask.TunKind == 0 || m.Mask.VLAN == 0 {
		t.Fatalf("hal.Exact no longer matches tun=none and no VLAN (mask %+v): the test is moot", m.Mask)
	}
	r := hal.Rule{ID: 1, Priority: 0x8000, Match: m, Actions: []hal.Action{hal.Count(), hal.Output(2)}}
	if err := n.Validate(&r); err == nil || !errors.Is(err, hal.ErrNotSupported) {
		t.Fatalf("without num_of_vlans: Validate %v, want a refusal of match.vlan", err)
	}
	n.lay.numVLANs = true
	if err := n.Validate(&r); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	c, err := compileRule(&n.lay, &r)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := decodeAttrs(t, c.keys)
	wantAttr(t, a, flowerIndev, cstr("p1"), "INDEV")
	wantAttr(t, a, flowerNumOfVLANs, []byte{0}, "NUM_OF_VLANS 0: no tag")
	wantAttr(t, a, flowerEthType, []byte{0x08, 0x00}, "ETH_TYPE")
	for _, at := range []uint16{flowerEncKeyID, flowerEncIPv4Src, flowerEncIPv4Dst, flowerVLANID} {
		if _, ok := a[at]; ok {
			t.Errorf("attribute %d present in a rule for untunnelled, untagged frames", at)
		}
	}

	// Without an in-port: refused, naming tun_kind.
	noPort := m
	noPort.Key.InPort, noPort.Mask.InPort = 0, 0
	var ue *hal.UnsupportedError
	if err := n.Validate(&hal.Rule{ID: 2, Match: noPort, Actions: []hal.Action{hal.Output(2)}}); !errors.As(err, &ue) || ue.Field != "match.tun_kind" {
		t.Errorf("tun=none without in_port: %v, want a refusal of match.tun_kind", err)
	}
	// A decap of frames that did not arrive tunnelled: refused.
	if err := n.Validate(&hal.Rule{ID: 3, Match: m, Actions: []hal.Action{hal.Decap(), hal.Output(2)}}); err == nil {
		t.Error("decap of an untunnelled match accepted")
	}

	// The uplink's decap flow: tunnelled, its inner frame untagged.
	tk := k
	tk.InPort, tk.TunKind, tk.VNI = 3, hal.EncapVXLAN, 5001
	tk.TunSrc, tk.TunDst = hal.Addr16(netip.MustParseAddr("198.18.0.2")), hal.Addr16(netip.MustParseAddr("198.18.0.1"))
	dr := hal.Rule{ID: 4, Priority: 0x8000, Match: hal.Exact(&tk), Actions: []hal.Action{hal.Decap(), hal.Count(), hal.Output(1)}}
	c, err = compileRule(&n.lay, &dr)
	if err != nil {
		t.Fatalf("decap flow: %v", err)
	}
	a, _ = decodeAttrs(t, c.keys)
	wantAttr(t, a, flowerIndev, cstr("vx0"), "INDEV: the tunnel device")
	wantAttr(t, a, flowerEncKeyID, []byte{0, 0, 0x13, 0x89}, "ENC_KEY_ID 5001")
	wantAttr(t, a, flowerEncIPv4Dst, []byte{198, 18, 0, 1}, "ENC_IPV4_DST")
	wantAttr(t, a, flowerNumOfVLANs, []byte{0}, "NUM_OF_VLANS of the inner frame")

	// A tagged exact match: VLAN mask 0xffff, as hal.Exact makes it.
	vk := k
	vk.VLAN = hal.VLANPresent | 300
	c, err = compileRule(&n.lay, &hal.Rule{ID: 5, Match: hal.Exact(&vk), Actions: []hal.Action{hal.Output(2)}})
	if err != nil {
		t.Fatalf("tagged exact match: %v", err)
	}
	a, _ = decodeAttrs(t, c.keys)
	wantAttr(t, a, flowerEthType, []byte{0x81, 0x00}, "ETH_TYPE 802.1Q")
	wantAttr(t, a, flowerVLANID, u16(300), "VLAN_ID")
	wantAttr(t, a, flowerVLANEthType, []byte{0x08, 0x00}, "VLAN_ETH_TYPE")
	if _, ok := a[flowerNumOfVLANs]; ok {
		t.Error("a tagged match carries NUM_OF_VLANS")
	}
	// ToHost in a rule for untunnelled frames is the exception path's, as
	// in any port rule (here: the fake NIC has none).
	n.lay.hostChain = hostChainIndex
	if _, err := compileRule(&n.lay, &hal.Rule{ID: 6, Match: m, Actions: []hal.Action{hal.ToHost(hal.ReasonAction)}}); err != nil {
		t.Errorf("to_host of a tun=none rule: %v", err)
	}
}

// tunnelRecord builds what the BPF action of bpf/tunmiss.c puts in front
// of a frame, after the channel's tags are inserted: the tags (port tag
// VID 0, kind in its priority bits; reason tag), EtherType 0x88B6, the
// record and the options, then the frame.
func tunnelRecord(kind hal.EncapKind, reason hal.Reason, vni uint32, src, dst netip.Addr, tos, ttl uint8, label uint32, opts, frame []byte) []byte {
	return tunnelRecordTags(kind, reason, vni, src, dst, tos, ttl, label, opts, frame, nil)
}

// tunnelRecordTags is tunnelRecord for a frame whose VLAN tags (TPID<<16 |
// TCI, outermost first) the action took off and listed in the record.
func tunnelRecordTags(kind hal.EncapKind, reason hal.Reason, vni uint32, src, dst netip.Addr, tos, ttl uint8, label uint32, opts, frame []byte, tags []uint32) []byte {
	b := make([]byte, 12, 22+tunnelRecordLen+len(opts)+len(frame))
	b = binary.BigEndian.AppendUint16(b, hal.EtherTypeVLAN)
	b = binary.BigEndian.AppendUint16(b, uint16(kind)<<13)
	vid, prio := tagValue(uint16(reason))
	b = binary.BigEndian.AppendUint16(b, hal.EtherTypeVLAN)
	b = binary.BigEndian.AppendUint16(b, uint16(prio)<<13|vid)
	b = binary.BigEndian.AppendUint16(b, tunnelRecordType)
	rec := make([]byte, tunnelRecordLen)
	rec[0] = tunnelRecordVer
	if src.Is6() {
		rec[1] = 1
		s, d := src.As16(), dst.As16()
		copy(rec[8:], s[:])
		copy(rec[24:], d[:])
	} else {
		s, d := src.As4(), dst.As4()
		copy(rec[8:], s[:])
		copy(rec[24:], d[:])
	}
	rec[2], rec[3] = tos, ttl
	binary.BigEndian.PutUint32(rec[4:], vni)
	binary.BigEndian.PutUint32(rec[40:], label)
	rec[44] = byte(len(opts) / 4)
	rec[45] = byte(len(tags))
	for i, tg := range tags {
		binary.BigEndian.PutUint32(rec[46+4*i:], tg)
	}
	b = append(b, rec...)
	b = append(b, opts...)
	return append(b, frame...)
}

func tunnelNIC(t *testing.T) *NIC {
	n := fakeNIC(t, &fakeKernel{})
	n.lay.ports[3].MAC = hal.MustMAC("02:00:00:00:ff:03")
	n.lay.tunnels[hal.EncapGeneve] = &device{Name: "gnv0", Ifindex: 21}
	n.exc = &exceptionPath{tunnel: true, counted: map[filterID]excFilter{}}
	n.tunPortByKind = map[hal.EncapKind]uint16{hal.EncapVXLAN: 4789, hal.EncapGeneve: 6081}
	return n
}

// TestDecodeTunnelMiss: a tunnelled miss comes back as the frame the wire
// carried, its outer headers rebuilt from the tunnel record: parsed, it
// gives the kind, VNI and outer addresses the record holds and the inner
// frame byte for byte; InPort is the uplink whose endpoint holds the outer
// destination, and the outer destination MAC that endpoint's.
func TestDecodeTunnelMiss(t *testing.T) {
	n := tunnelNIC(t)
	epMAC := hal.MustMAC("02:00:00:00:ee:01")
	pa := netip.MustParseAddr("198.18.0.1")
	n.endpoints[3] = &endpointState{ep: hal.TunnelEndpoint{Port: 3, MAC: epMAC, Addrs: []netip.Addr{pa}}}
	n.publishEndpoints()
	inner := wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:00:00:0b"), DstMAC: hal.MustMAC("02:00:00:00:00:0a"),
		Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddr("192.0.2.1"), Proto: hal.ProtoTCP, SrcPort: 40000, DstPort: 5001, Payload: []byte("first packet")})
	opts := []byte{0x01, 0x02, 0x03, 0x01, 0xaa, 0xbb, 0xcc, 0xdd} // class 0x0102, type 3, 4 bytes of data
	cases := []struct {
		name      string
		kind      hal.EncapKind
		src, dst  netip.Addr
		opts      []byte
		port      hal.PortID
		mac       hal.MAC
		udpDst    uint16
		tos, ttl  uint8
		wantLabel uint32
	}{
		{"vxlan-ipv4", hal.EncapVXLAN, netip.MustParseAddr("198.18.0.2"), pa, nil, 3, epMAC, 4789, 0x28, 61, 0},
		{"geneve-options", hal.EncapGeneve, netip.MustParseAddr("198.18.0.2"), pa, opts, 3, epMAC, 6081, 0, 64, 0},
		// No endpoint holds the address: the first uplink and its MAC.
		{"vxlan-ipv6-no-endpoint", hal.EncapVXLAN, netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::1"), nil, 3, hal.MustMAC("02:00:00:00:ff:03"), 4789, 0xb8, 255, 0x12345},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := tunnelRecord(c.kind, hal.ReasonMiss, 5001, c.src, c.dst, c.tos, c.ttl, c.wantLabel, c.opts, inner)
			e := hal.Exception{Buf: make([]byte, 2048)}
			if !n.decodeException(f, false, &e) {
				t.Fatal("not taken")
			}
			if e.InPort != c.port || e.Reason != hal.ReasonMiss || e.VNI != 5001 || e.Rule != 0 || e.Truncated {
				t.Fatalf("exception %+v", e)
			}
			fr := e.Frame()
			var k hal.FlowKey
			var l wire.Layout
			if err := wire.Parse(fr, c.port, &k, &l); err != nil {
				t.Fatalf("the rebuilt frame does not parse: %v", err)
			}
			if k.TunKind != c.kind || k.VNI != 5001 || hal.AddrFrom16(k.TunSrc) != c.src || hal.AddrFrom16(k.TunDst) != c.dst {
				t.Errorf("key %v: want %s vni 5001 %s → %s", k, c.kind, c.src, c.dst)
			}
			if !bytes.Equal(fr[:6], c.mac[:]) {
				t.Errorf("outer destination MAC % x, want %s", fr[:6], c.mac)
			}
			if !bytes.HasSuffix(fr, inner) {
				t.Error("the inner frame is not the one the tunnel device received")
			}
			ip := fr[14:]
			if c.src.Is4() {
				if ip[1] != c.tos || ip[8] != c.ttl {
					t.Errorf("outer TOS %#x TTL %d, want %#x %d", ip[1], ip[8], c.tos, c.ttl)
				}
				if wire.Checksum(ip[:20], 0) != 0 {
					t.Error("outer IPv4 header checksum wrong")
				}
			} else {
				w := binary.BigEndian.Uint32(ip)
				if uint8(w>>20) != c.tos || w&0xfffff != c.wantLabel || ip[7] != c.ttl {
					t.Errorf("outer traffic class %#x label %#x hop limit %d, want %#x %#x %d", uint8(w>>20), w&0xfffff, ip[7], c.tos, c.wantLabel, c.ttl)
				}
			}
			ihl := 20
			if c.src.Is6() {
				ihl = 40
			}
			udp := ip[ihl:]
			if binary.BigEndian.Uint16(udp[2:]) != c.udpDst {
				t.Errorf("UDP destination port %d, want %d", binary.BigEndian.Uint16(udp[2:]), c.udpDst)
			}
			if c.opts != nil && !bytes.Equal(udp[16:16+len(c.opts)], c.opts) {
				t.Errorf("Geneve options % x, want % x", udp[16:16+len(c.opts)], c.opts)
			}
			// Truncated: the first bytes of the same frame.
			short := hal.Exception{Buf: make([]byte, 60)}
			if !n.decodeException(f, false, &short) || !short.Truncated || short.Len != 60 || !bytes.Equal(short.Frame(), fr[:60]) {
				t.Errorf("truncated: %+v", short)
			}
		})
	}
	// A tagged frame: the action lists its tags, the rebuilt frame has
	// them back after the inner MACs.
	t.Run("tags", func(t *testing.T) {
		tagged := append(append(append([]byte(nil), inner[:12]...), 0x88, 0xa8, 0x00, 0x05, 0x81, 0x00, 0x20, 0x07), inner[12:]...)
		f := tunnelRecordTags(hal.EncapVXLAN, hal.ReasonMiss, 9, netip.MustParseAddr("198.18.0.2"), pa, 0, 64, 0, nil, inner, []uint32{0x88a80005, 0x81002007})
		e := hal.Exception{Buf: make([]byte, 2048)}
		if !n.decodeException(f, false, &e) {
			t.Fatal("not taken")
		}
		if !bytes.HasSuffix(e.Frame(), tagged) {
			t.Errorf("frame % x\nwant it to end in % x", e.Frame(), tagged)
		}
		three := tunnelRecordTags(hal.EncapVXLAN, hal.ReasonMiss, 9, netip.MustParseAddr("198.18.0.2"), pa, 0, 64, 0, nil, inner, []uint32{1, 2})
		three[22+45] = 3
		if n.decodeException(three, false, &e) {
			t.Error("a record of three tags taken")
		}
	})
	// Records the decoder must refuse: no tunnel path, a kind without a
	// device, a wrong record type or version, options longer than the frame.
	good := tunnelRecord(hal.EncapVXLAN, hal.ReasonMiss, 1, netip.MustParseAddr("198.18.0.2"), pa, 0, 64, 0, nil, inner)
	bad := map[string][]byte{
		"nvgre-kind":  tunnelRecord(hal.EncapNVGRE, hal.ReasonMiss, 1, netip.MustParseAddr("198.18.0.2"), pa, 0, 64, 0, nil, inner),
		"record-type": append(append(append([]byte(nil), good[:20]...), 0x88, 0xb5), good[22:]...),
		"version":     append(append(append([]byte(nil), good[:22]...), 9), good[23:]...),
		"short":       good[:22+tunnelRecordLen-1],
		"options":     tunnelRecord(hal.EncapGeneve, hal.ReasonMiss, 1, netip.MustParseAddr("198.18.0.2"), pa, 0, 64, 0, make([]byte, 252), nil)[:22+tunnelRecordLen+8],
	}
	for name, f := range bad {
		e := hal.Exception{Buf: make([]byte, 2048)}
		if n.decodeException(f, false, &e) {
			t.Errorf("%s: taken", name)
		}
	}
	n.exc.tunnel = false
	e := hal.Exception{Buf: make([]byte, 2048)}
	if n.decodeException(good, false, &e) {
		t.Error("a tunnel record taken without the tunnel action installed")
	}
}

// TestDecodeTunnelMissCompletesPartial: an inner frame the sender left to
// the device (a GRO'd segment the kernel marks CHECKSUM_PARTIAL) comes
// back with its transport checksum completed, inside the rebuilt outer
// headers.
func TestDecodeTunnelMissCompletesPartial(t *testing.T) {
	n := tunnelNIC(t)
	src, dst := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.1")
	inner := wire.Build(wire.FrameSpec{Src: src, Dst: dst, Proto: hal.ProtoUDP, SrcPort: 1000, DstPort: 2000, Payload: bytes.Repeat([]byte{7}, 100)})
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(inner, 0, &k, &l); err != nil {
		t.Fatal(err)
	}
	want := binary.BigEndian.Uint16(inner[l.L4+6:])
	partial := append([]byte(nil), inner...)
	s4, d4 := src.As4(), dst.As4()
	binary.BigEndian.PutUint16(partial[l.L4+6:], ^wire.Fold(wire.PseudoHeaderSum(s4[:], d4[:], hal.ProtoUDP, l.End-l.L4)))
	f := tunnelRecord(hal.EncapVXLAN, hal.ReasonMiss, 7, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.1"), 0, 64, 0, nil, partial)
	e := hal.Exception{Buf: make([]byte, 2048)}
	if !n.decodeException(f, true, &e) {
		t.Fatal("not taken")
	}
	if !bytes.HasSuffix(e.Frame(), inner) {
		got := e.Frame()[len(e.Frame())-len(inner):]
		t.Errorf("inner UDP checksum %#04x, want %#04x", binary.BigEndian.Uint16(got[l.L4+6:]), want)
	}
}

// TestTunnelMissFilters: one catch-all per tunnel device in the miss
// chain, after the ports' own: the BPF action, the reason tag (miss), the
// port tag (VID 0, the kind in its priority bits), the redirect.
func TestTunnelMissFilters(t *testing.T) {
	n := tunnelNIC(t)
	fs := n.tunnelMissFilters(99, tunnelAction{fd: 42, name: "nicpath_tunnel_miss"})
	if len(fs) != 2 {
		t.Fatalf("%d filters, want one per tunnel device (2)", len(fs))
	}
	for i, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve} {
		f := fs[i]
		if f.Chain != missChainIndex || f.Prio != prioExcTunnel || f.Prio <= prioExcMiss {
			t.Errorf("%s: chain %#x prio %d", kind, f.Chain, f.Prio)
		}
		a, _ := decodeAttrs(t, f.Keys)
		wantAttr(t, a, flowerIndev, cstr(n.lay.tunnels[kind].Name), "INDEV: the tunnel device")
		if len(a) != 1 {
			t.Errorf("%s: keys %v, want the device only", kind, a)
		}
		if len(f.Actions) != 4 || f.Actions[0].Kind != "bpf" || f.Actions[1].Kind != "vlan" || f.Actions[2].Kind != "vlan" || f.Actions[3].Kind != "mirred" {
			t.Fatalf("%s: actions %+v", kind, f.Actions)
		}
		o, _ := decodeAttrs(t, f.Actions[0].Opts)
		wantAttr(t, o, actBPFFD, []byte{42, 0, 0, 0}, "ACT_BPF_FD")
		wantAttr(t, o, actBPFName, cstr("nicpath_tunnel_miss"), "ACT_BPF_NAME")
		if ctl := int32(binary.NativeEndian.Uint32(o[actBPFParms][8:])); ctl != tcActPipe {
			t.Errorf("act_bpf control %d, want pipe", ctl)
		}
		o, _ = decodeAttrs(t, f.Actions[2].Opts)
		wantAttr(t, o, vlanPushID, u16(0), "port tag VID 0: no port")
		wantAttr(t, o, vlanPushPrio, []byte{byte(kind)}, "port tag priority: the kind")
		o, _ = decodeAttrs(t, f.Actions[1].Opts)
		wantAttr(t, o, vlanPushID, u16(uint16(hal.ReasonMiss)), "reason tag: miss")
	}
}

// TestCompileTunnelDrop: a rule that only drops (and counts) tunnelled
// frames matches their outer headers on the tunnel device, as a decap rule
// does (the vswitch's ACL-deny flows for a remote VM's packets); one that
// would forward them with the outer headers is refused.
func TestCompileTunnelDrop(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	var m hal.Match
	m.InPort(3).Tunnel(hal.EncapVXLAN, 5001).TunSrc(netip.MustParseAddr("198.18.0.2"))
	c, err := compileRule(&n.lay, &hal.Rule{ID: 1, Match: m, Actions: []hal.Action{hal.Count(), hal.Drop(hal.ReasonPolicy)}})
	if err != nil {
		t.Fatalf("drop of a tunnelled match: %v", err)
	}
	a, _ := decodeAttrs(t, c.keys)
	wantAttr(t, a, flowerIndev, cstr("vx0"), "INDEV: the tunnel device")
	wantAttr(t, a, flowerEncKeyID, []byte{0, 0, 0x13, 0x89}, "ENC_KEY_ID")
	if len(c.actions) != 1 || c.actions[0].Kind != "gact" {
		t.Errorf("actions %+v, want gact shot", c.actions)
	}
	var ue *hal.UnsupportedError
	if _, err := compileRule(&n.lay, &hal.Rule{ID: 2, Match: m, Actions: []hal.Action{hal.Count(), hal.Output(1)}}); !errors.As(err, &ue) || ue.Field != "match.tunnel" {
		t.Errorf("forwarding a tunnelled match without decap: %v, want a refusal of match.tunnel", err)
	}
}

// TestCompilePortlessExact: an exact-match flow of a protocol without ports
// (IGMP) matches its ports as 0, which every such frame's key holds: no
// key, the rule compiles; a port other than 0, or SCTP's ports, are
// refused.
func TestCompilePortlessExact(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	n.lay.numVLANs = true
	k := hal.FlowKey{InPort: 1, EthType: hal.EtherTypeIPv4, Proto: 2,
		IPSrc: hal.Addr16(netip.MustParseAddr("192.0.2.1")), IPDst: hal.Addr16(netip.MustParseAddr("224.0.0.22"))}
	m := hal.Exact(&k)
	c, err := compileRule(&n.lay, &hal.Rule{ID: 1, Match: m, Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}})
	if err != nil {
		t.Fatalf("IGMP exact match: %v", err)
	}
	a, _ := decodeAttrs(t, c.keys)
	wantAttr(t, a, flowerIPProto, []byte{2}, "IP_PROTO")
	for _, bad := range []hal.FlowKey{{L4Dst: 5}, {Proto: protoSCTP}} {
		bk := k
		if bad.Proto != 0 {
			bk.Proto = bad.Proto
		}
		bk.L4Dst = bad.L4Dst
		if _, err := compileRule(&n.lay, &hal.Rule{ID: 2, Match: hal.Exact(&bk), Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}); err == nil {
			t.Errorf("proto %d l4_dst %d accepted", bk.Proto, bk.L4Dst)
		}
	}
}

// TestCompileNVGRE: an NVGRE encap is tunnel_key set for the gretap
// device (key VSID<<8 | FlowID, no GRE checksum, no UDP port) and a
// redirect to it; outer IPv6 and NVGRE decap are refused.
func TestCompileNVGRE(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	n.lay.tunnels[hal.EncapNVGRE] = &device{Name: "gt0", Ifindex: 22}
	var m hal.Match
	m.InPort(1)
	en := hal.Encap{Kind: hal.EncapNVGRE, VNI: 0x1234, FlowID: 7, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	c, err := compileRule(&n.lay, &hal.Rule{ID: 1, Match: m, Actions: []hal.Action{hal.EncapWith(en), hal.Output(3)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.actions) != 2 || c.actions[0].Kind != "tunnel_key" || c.actions[1].Kind != "mirred" {
		t.Fatalf("actions %+v", c.actions)
	}
	o, _ := decodeAttrs(t, c.actions[0].Opts)
	wantAttr(t, o, tunKeyKeyID, []byte{0x00, 0x12, 0x34, 0x07}, "ENC_KEY_ID: VSID<<8 | FlowID")
	wantAttr(t, o, tunKeyNoCsum, []byte{1}, "NO_CSUM: NVGRE has no GRE checksum")
	wantAttr(t, o, tunKeyIPv4Dst, []byte{198, 18, 0, 2}, "ENC_IPV4_DST")
	if _, ok := o[tunKeyDstPort]; ok {
		t.Error("a UDP port in a GRE encapsulation")
	}
	p, _ := decodeAttrs(t, c.actions[1].Opts)
	if ifi := binary.NativeEndian.Uint32(p[mirredParms][24:]); ifi != 22 {
		t.Errorf("redirect to ifindex %d, want gt0 (22)", ifi)
	}
	en6 := en
	en6.Src, en6.Dst = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	if _, err := compileRule(&n.lay, &hal.Rule{ID: 2, Match: m, Actions: []hal.Action{hal.EncapWith(en6), hal.Output(3)}}); !errors.Is(err, hal.ErrNotSupported) {
		t.Errorf("NVGRE over IPv6: %v, want a refusal", err)
	}
	var dm hal.Match
	dm.Tunnel(hal.EncapNVGRE, 0x1234)
	var ue *hal.UnsupportedError
	if _, err := compileRule(&n.lay, &hal.Rule{ID: 3, Match: dm, Actions: []hal.Action{hal.Decap(), hal.Output(1)}}); !errors.As(err, &ue) || ue.Field != "match.tun_kind" {
		t.Errorf("NVGRE decap: %v, want a refusal of match.tun_kind", err)
	}
}

// TestReadTunnelMissAllocatesNothing: the misses of one tunnelled flow
// cost ReadExceptions no allocation (the outer headers' template is
// cached).
func TestReadTunnelMissAllocatesNothing(t *testing.T) {
	n, r := fakeExcNIC(t, &fakeKernel{})
	n.exc.tunnel = true
	n.tunPortByKind = map[hal.EncapKind]uint16{hal.EncapVXLAN: 4789}
	inner := wire.Build(wire.FrameSpec{Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddr("192.0.2.1"), Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2})
	f := tunnelRecord(hal.EncapVXLAN, hal.ReasonMiss, 5001, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.1"), 0, 64, 0, nil, inner)
	frames := make([][]byte, 1000)
	for i := range frames {
		frames[i] = f
	}
	r.push(frames...)
	batch := newBatch(1, 2048)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(500, func() {
		if got, err := n.ReadExceptions(ctx, batch); got != 1 || err != nil {
			t.Fatalf("ReadExceptions: %d, %v", got, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per tunnelled miss, want 0", allocs)
	}
	if batch[0].VNI != 5001 || batch[0].InPort != 3 {
		t.Errorf("exception %+v", batch[0])
	}
}

// TestReadPartialAllocatesNothing: completing a partial checksum costs
// ReadExceptions no allocation either.
func TestReadPartialAllocatesNothing(t *testing.T) {
	n, r := fakeExcNIC(t, &fakeKernel{})
	f := tagged(wire.Build(wire.FrameSpec{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2, Payload: []byte("x")}), 1, uint16(hal.ReasonMiss))
	for range 1000 {
		r.pushPartial(f)
	}
	batch := newBatch(1, 2048)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(500, func() {
		if got, err := n.ReadExceptions(ctx, batch); got != 1 || err != nil {
			t.Fatalf("ReadExceptions: %d, %v", got, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per partial frame, want 0", allocs)
	}
}
