package wire

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/nicpath/nicpath/hal"
)

// These tests hold the package against gopacket, an independent decoder and
// encoder: frames Build makes are decoded by gopacket, frames gopacket
// serializes are parsed by Parse, and the keys must agree; re-serializing
// what gopacket decoded (with lengths and checksums recomputed by gopacket)
// must give back the very bytes Build produced.

func addr16(ip net.IP) [16]byte {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap().As16()
}

// keyFromGopacket derives a FlowKey from gopacket's decoding of frame, the
// way hal.FlowKey documents its fields.
func keyFromGopacket(t *testing.T, frame []byte, inPort hal.PortID) hal.FlowKey {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	k := hal.FlowKey{InPort: inPort}
	ls := pkt.Layers()
	seenVLAN := false
	for i := 0; i < len(ls); i++ {
		switch l := ls[i].(type) {
		case *layers.Ethernet:
			if k.EthType != 0 { // a second Ethernet header: the outer ones were a tunnel
				k.TunSrc, k.TunDst = k.IPSrc, k.IPDst
				k.IPSrc, k.IPDst, k.Proto, k.L4Src, k.L4Dst, k.VLAN = [16]byte{}, [16]byte{}, 0, 0, 0, 0
				seenVLAN = false
			}
			copy(k.EthSrc[:], l.SrcMAC)
			copy(k.EthDst[:], l.DstMAC)
			k.EthType = uint16(l.EthernetType)
		case *layers.Dot1Q:
			if !seenVLAN {
				k.VLAN = hal.VLANPresent | l.VLANIdentifier
				seenVLAN = true
			}
			k.EthType = uint16(l.Type)
		case *layers.IPv4:
			k.IPSrc, k.IPDst, k.Proto = addr16(l.SrcIP), addr16(l.DstIP), uint8(l.Protocol)
			if l.Flags&layers.IPv4MoreFragments != 0 && l.FragOffset == 0 && i == len(ls)-2 {
				// gopacket leaves a first fragment undecoded.
				sub := gopacket.NewPacket(l.Payload, l.Protocol.LayerType(), gopacket.Default)
				ls = append(ls[:i+1], sub.Layers()...)
			}
		case *layers.IPv6:
			s, _ := netip.AddrFromSlice(l.SrcIP)
			d, _ := netip.AddrFromSlice(l.DstIP)
			k.IPSrc, k.IPDst, k.Proto = s.As16(), d.As16(), uint8(l.NextHeader)
			if l.HopByHop != nil {
				k.Proto = uint8(l.HopByHop.NextHeader)
			}
		case *layers.IPv6Destination:
			k.Proto = uint8(l.NextHeader)
		case *layers.IPv6Routing:
			k.Proto = uint8(l.NextHeader)
		case *layers.IPv6Fragment:
			k.Proto = uint8(l.NextHeader)
			if l.FragmentOffset == 0 {
				// gopacket stops at a fragment; decode the first
				// fragment's transport header on its own.
				sub := gopacket.NewPacket(l.Payload, l.NextHeader.LayerType(), gopacket.Default)
				ls = append(ls[:i+1], sub.Layers()...)
			}
		case *layers.TCP:
			k.L4Src, k.L4Dst = uint16(l.SrcPort), uint16(l.DstPort)
		case *layers.UDP:
			k.L4Src, k.L4Dst = uint16(l.SrcPort), uint16(l.DstPort)
		case *layers.SCTP:
			k.L4Src, k.L4Dst = uint16(l.SrcPort), uint16(l.DstPort)
		case *layers.ICMPv4:
			k.L4Src, k.L4Dst = uint16(l.TypeCode.Type()), uint16(l.TypeCode.Code())
		case *layers.ICMPv6:
			k.L4Src, k.L4Dst = uint16(l.TypeCode.Type()), uint16(l.TypeCode.Code())
		case *layers.VXLAN:
			k.TunKind, k.VNI = hal.EncapVXLAN, l.VNI
		case *layers.Geneve:
			k.TunKind, k.VNI = hal.EncapGeneve, l.VNI
		case *layers.GRE:
			if l.Protocol == layers.EthernetTypeTransparentEthernetBridging {
				k.TunKind, k.VNI = hal.EncapNVGRE, l.Key>>8
			}
		}
	}
	return k
}

// reserialize has gopacket decode frame and serialize it again, computing
// lengths and checksums itself, and checks that the bytes are frame's.
// A zero outer UDP checksum over IPv4 (the tunnel's "no checksum") is the
// one field gopacket would fill differently; it is checked to be zero.
func reserialize(t *testing.T, frame []byte) {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket cannot decode: %v\n%s", el.Error(), pkt.Dump())
	}
	var net gopacket.NetworkLayer
	var sl []gopacket.SerializableLayer
	zeroUDP := -1 // offset of a zero IPv4 UDP checksum
	off := 0
	ls := pkt.Layers()
	for i := 0; i < len(ls); i++ {
		l := ls[i]
		switch x := l.(type) {
		case *layers.IPv4:
			net = x
			if x.Flags&layers.IPv4MoreFragments != 0 && x.FragOffset == 0 && i == len(ls)-2 {
				sub := gopacket.NewPacket(x.Payload, x.Protocol.LayerType(), gopacket.Default)
				ls = append(ls[:i+1], sub.Layers()...)
			}
		case *layers.IPv6:
			net = x
		case *layers.TCP:
			x.SetNetworkLayerForChecksum(net)
		case *layers.UDP:
			x.SetNetworkLayerForChecksum(net)
			if x.Checksum == 0 {
				if _, v4 := net.(*layers.IPv4); v4 {
					zeroUDP = off + 6
				}
			}
		case *layers.ICMPv6:
			x.SetNetworkLayerForChecksum(net)
		case *layers.IPv6Fragment:
			if x.FragmentOffset == 0 {
				sub := gopacket.NewPacket(x.Payload, x.NextHeader.LayerType(), gopacket.Default)
				ls = append(ls[:i+1], sub.Layers()...)
			}
		}
		if x, ok := l.(gopacket.SerializableLayer); ok {
			sl = append(sl, x)
		} else {
			t.Fatalf("layer %v is not serializable", l.LayerType())
		}
		// IPv4 options and IPv6 hop-by-hop are inside their layer's contents.
		off += len(l.LayerContents())
		if ip6, ok := l.(*layers.IPv6); ok && ip6.HopByHop != nil {
			off += len(ip6.HopByHop.Contents)
		}
	}
	if last := ls[len(ls)-1]; len(last.LayerPayload()) > 0 {
		// Bytes gopacket did not decode further (an opaque GRE payload).
		sl = append(sl, gopacket.Payload(last.LayerPayload()))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, sl...); err != nil {
		t.Fatalf("gopacket serialize: %v", err)
	}
	got := buf.Bytes()
	if zeroUDP >= 0 {
		got = append([]byte(nil), got...)
		if zeroUDP+2 > len(got) {
			t.Fatalf("zero UDP checksum offset %d out of range", zeroUDP)
		}
		got[zeroUDP], got[zeroUDP+1] = 0, 0
	}
	if !bytes.Equal(got, frame) {
		t.Fatalf("gopacket re-serialized different bytes:\nours    %x\ngopacket %x\n%s", frame, got, pkt.Dump())
	}
}

func TestBuildDecodedByGopacket(t *testing.T) {
	for _, s := range plainSpecs() {
		t.Run(s.name, func(t *testing.T) {
			f := Build(s.spec)
			var k hal.FlowKey
			var l Layout
			if err := Parse(f, 7, &k, &l); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if g := keyFromGopacket(t, f, 7); g != k {
				t.Fatalf("keys differ:\nParse    %v\ngopacket %v", k, g)
			}
			reserialize(t, f)
		})
	}
}

func TestEncapDecodedByGopacket(t *testing.T) {
	for _, e := range encaps() {
		for _, s := range innerSpecs() {
			t.Run(e.name+"/"+s.name, func(t *testing.T) {
				inner := Build(s.spec)
				f := BuildEncap(&e.e, inner)
				var k, ik hal.FlowKey
				var l Layout
				if err := Parse(inner, 7, &ik, &l); err != nil {
					t.Fatalf("Parse inner: %v", err)
				}
				if err := Parse(f, 7, &k, &l); err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if g := keyFromGopacket(t, f, 7); g != k {
					t.Fatalf("keys differ:\nParse    %v\ngopacket %v", k, g)
				}
				want := ik
				want.TunKind, want.VNI, want.TunSrc, want.TunDst = e.e.Kind, e.e.VNI, e.e.Src.As16(), e.e.Dst.As16()
				if e.e.Src.Is4() {
					want.TunSrc, want.TunDst = netip.AddrFrom4(e.e.Src.As4()).As16(), netip.AddrFrom4(e.e.Dst.As4()).As16()
				}
				if k != want {
					t.Fatalf("tunnelled key:\n got %v\nwant %v", k, want)
				}
				reserialize(t, f)
				checkOuter(t, f, &l, &e.e, FlowHash(&ik))
			})
		}
	}
}

// checkOuter checks the outer header fields RFCs 7348, 8926 and 7637 and
// our policy fix, through gopacket's decoding.
func checkOuter(t *testing.T, f []byte, l *Layout, e *hal.Encap, hash uint32) {
	t.Helper()
	pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	eth := pkt.Layers()[0].(*layers.Ethernet)
	if !bytes.Equal(eth.SrcMAC, e.SrcMAC[:]) || !bytes.Equal(eth.DstMAC, e.DstMAC[:]) {
		t.Errorf("outer MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
	}
	ttl := e.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	switch ip := pkt.Layers()[1].(type) {
	case *layers.IPv4:
		if ip.Flags != layers.IPv4DontFragment || ip.Id != 0 || ip.TTL != ttl || ip.IHL != 5 {
			t.Errorf("outer IPv4 flags %v id %d ttl %d ihl %d; want DF, 0, %d, 5", ip.Flags, ip.Id, ip.TTL, ip.IHL, ttl)
		}
	case *layers.IPv6:
		if ip.HopLimit != ttl || ip.FlowLabel != hash&0xfffff {
			t.Errorf("outer IPv6 hop limit %d flow label %#x; want %d, %#x", ip.HopLimit, ip.FlowLabel, ttl, hash&0xfffff)
		}
	}
	switch e.Kind {
	case hal.EncapVXLAN, hal.EncapGeneve:
		u := pkt.Layers()[2].(*layers.UDP)
		if uint16(u.SrcPort) != UDPSourcePort(hash) || u.SrcPort < 49152 {
			t.Errorf("UDP source port %d; want %d from the inner flow hash, in 49152-65535", u.SrcPort, UDPSourcePort(hash))
		}
		wantPort := hal.PortVXLAN
		if e.Kind == hal.EncapGeneve {
			wantPort = hal.PortGeneve
		}
		if uint16(u.DstPort) != wantPort {
			t.Errorf("UDP dst port %d", u.DstPort)
		}
		if _, v6 := pkt.Layers()[1].(*layers.IPv6); v6 && u.Checksum == 0 {
			t.Errorf("outer UDP over IPv6 without checksum")
		}
		if e.Kind == hal.EncapVXLAN {
			v := pkt.Layers()[3].(*layers.VXLAN)
			if !v.ValidIDFlag || v.VNI != e.VNI || f[l.Tunnel] != 0x08 {
				t.Errorf("VXLAN flags %#x vni %d", f[l.Tunnel], v.VNI)
			}
		} else {
			g := pkt.Layers()[3].(*layers.Geneve)
			if g.Version != 0 || g.Protocol != layers.EthernetTypeTransparentEthernetBridging || g.VNI != e.VNI ||
				int(g.OptionsLength) != len(e.GeneveOptions) || g.OAMPacket {
				t.Errorf("Geneve header %+v", g)
			}
		}
	case hal.EncapNVGRE:
		g := pkt.Layers()[2].(*layers.GRE)
		if !g.KeyPresent || g.ChecksumPresent || g.SeqPresent || g.Version != 0 ||
			g.Protocol != layers.EthernetTypeTransparentEthernetBridging || g.Key>>8 != e.VNI {
			t.Errorf("NVGRE header %+v", g)
		}
		wantFlow := uint8(hash)
		if e.FlowID != 0 {
			wantFlow = e.FlowID
		}
		if uint8(g.Key) != wantFlow {
			t.Errorf("FlowID %#x, want %#x", uint8(g.Key), wantFlow)
		}
	}
	if got := binary.BigEndian.Uint16(f[12:14]); (got == hal.EtherTypeIPv6) != e.Src.Is6() {
		t.Errorf("outer EtherType %#x", got)
	}
}

// gopacketLayers builds spec's frame as gopacket layers, independently of
// Build.
func gopacketLayers(t *testing.T, spec FrameSpec) []gopacket.SerializableLayer {
	t.Helper()
	var sl []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(spec.SrcMAC[:]), DstMAC: net.HardwareAddr(spec.DstMAC[:])}
	sl = append(sl, eth)
	var l3type layers.EthernetType
	switch {
	case !spec.Src.IsValid():
		l3type = layers.EthernetType(spec.EthType)
	case spec.Src.Is4():
		l3type = layers.EthernetTypeIPv4
	default:
		l3type = layers.EthernetTypeIPv6
	}
	prev := &eth.EthernetType
	if vid, ok := vlanTag(spec.OuterVLAN); ok {
		*prev = layers.EthernetTypeQinQ
		q := &layers.Dot1Q{VLANIdentifier: vid}
		sl = append(sl, q)
		prev = &q.Type
	}
	if vid, ok := vlanTag(spec.VLAN); ok {
		*prev = layers.EthernetTypeDot1Q
		q := &layers.Dot1Q{VLANIdentifier: vid}
		sl = append(sl, q)
		prev = &q.Type
	}
	*prev = l3type
	if !spec.Src.IsValid() {
		return append(sl, gopacket.Payload(spec.Payload))
	}
	ttl := ttlOf(&spec)
	var netl gopacket.NetworkLayer
	if spec.Src.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: ttl, Protocol: layers.IPProtocol(spec.Proto), TOS: spec.TOS, Id: spec.IPID,
			SrcIP: spec.Src.AsSlice(), DstIP: spec.Dst.AsSlice(), FragOffset: spec.FragOffset}
		if spec.MoreFragments {
			ip.Flags |= layers.IPv4MoreFragments
		}
		if spec.DontFragment {
			ip.Flags |= layers.IPv4DontFragment
		}
		if len(spec.IPOptions) > 0 {
			ip.Options = []layers.IPv4Option{{OptionType: spec.IPOptions[0], OptionLength: spec.IPOptions[1],
				OptionData: spec.IPOptions[2:spec.IPOptions[1]]}}
		}
		sl = append(sl, ip)
		netl = ip
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: ttl, TrafficClass: spec.TOS,
			SrcIP: spec.Src.AsSlice(), DstIP: spec.Dst.AsSlice()}
		sl = append(sl, ip)
		netl = ip
		nh := &ip.NextHeader
		for _, x := range spec.ExtHeaders {
			*nh = layers.IPProtocol(x)
			switch x {
			case ProtoHopByHop:
				h := &layers.IPv6HopByHop{}
				h.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionLength: 4, OptionData: make([]byte, 4)}}
				ip.HopByHop = h
				nh = &h.NextHeader
			case ProtoDstOpts:
				h := &layers.IPv6Destination{}
				h.Options = []*layers.IPv6DestinationOption{{OptionType: 1, OptionLength: 4, OptionData: make([]byte, 4)}}
				sl = append(sl, h)
				nh = &h.NextHeader
			case ProtoRouting:
				h := &layers.IPv6Routing{RoutingType: 4, Reserved: make([]byte, 4)}
				sl = append(sl, h)
				nh = &h.NextHeader
			case ProtoFragment:
				h := &layers.IPv6Fragment{FragmentOffset: spec.FragOffset, MoreFragments: spec.MoreFragments, Identification: spec.FragID}
				sl = append(sl, h)
				nh = &h.NextHeader
			default:
				t.Fatalf("no gopacket layer for extension header %d", x)
			}
		}
		*nh = layers.IPProtocol(spec.Proto)
	}
	if spec.FragOffset != 0 {
		return append(sl, gopacket.Payload(spec.Payload))
	}
	switch spec.Proto {
	case hal.ProtoTCP:
		l := &layers.TCP{SrcPort: layers.TCPPort(spec.SrcPort), DstPort: layers.TCPPort(spec.DstPort), Seq: 1, ACK: true, Window: 65535}
		l.SetNetworkLayerForChecksum(netl)
		sl = append(sl, l)
	case hal.ProtoUDP:
		l := &layers.UDP{SrcPort: layers.UDPPort(spec.SrcPort), DstPort: layers.UDPPort(spec.DstPort)}
		l.SetNetworkLayerForChecksum(netl)
		sl = append(sl, l)
	case hal.ProtoICMP:
		sl = append(sl, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(spec.ICMPType, spec.ICMPCode), Id: 1, Seq: 1})
	case hal.ProtoICMPv6:
		l := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(spec.ICMPType, spec.ICMPCode)}
		l.SetNetworkLayerForChecksum(netl)
		sl = append(sl, l, gopacket.Payload([]byte{0, 1, 0, 1}))
	case ProtoSCTP:
		sl = append(sl, &layers.SCTP{SrcPort: layers.SCTPPort(spec.SrcPort), DstPort: layers.SCTPPort(spec.DstPort), VerificationTag: 1})
	}
	return append(sl, gopacket.Payload(spec.Payload))
}

// gopacketEncap builds the outer layers of e with gopacket.
func gopacketEncap(e *hal.Encap, sport uint16) []gopacket.SerializableLayer {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(e.SrcMAC[:]), DstMAC: net.HardwareAddr(e.DstMAC[:])}
	var netl gopacket.NetworkLayer
	proto := layers.IPProtocolUDP
	if e.Kind == hal.EncapNVGRE {
		proto = layers.IPProtocolGRE
	}
	sl := []gopacket.SerializableLayer{eth}
	if e.Src.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: proto, SrcIP: e.Src.AsSlice(), DstIP: e.Dst.AsSlice()}
		sl, netl = append(sl, ip), ip
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: e.Src.AsSlice(), DstIP: e.Dst.AsSlice()}
		sl, netl = append(sl, ip), ip
	}
	switch e.Kind {
	case hal.EncapVXLAN, hal.EncapGeneve:
		dport := hal.PortVXLAN
		if e.Kind == hal.EncapGeneve {
			dport = hal.PortGeneve
		}
		u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
		u.SetNetworkLayerForChecksum(netl)
		sl = append(sl, u)
		if e.Kind == hal.EncapVXLAN {
			sl = append(sl, &layers.VXLAN{ValidIDFlag: true, VNI: e.VNI})
		} else {
			g := &layers.Geneve{Protocol: layers.EthernetTypeTransparentEthernetBridging, VNI: e.VNI}
			for off := 0; off < len(e.GeneveOptions); {
				o, next, _ := NextGeneveOption(e.GeneveOptions, off)
				g.Options = append(g.Options, &layers.GeneveOption{Class: o.Class, Type: o.Type, Data: o.Data})
				off = next
			}
			sl = append(sl, g)
		}
	case hal.EncapNVGRE:
		sl = append(sl, &layers.GRE{KeyPresent: true, Protocol: layers.EthernetTypeTransparentEthernetBridging, Key: e.VNI<<8 | uint32(e.FlowID)})
	}
	return sl
}

func serializeGopacket(t *testing.T, sl []gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, sl...); err != nil {
		t.Fatalf("gopacket serialize: %v", err)
	}
	return buf.Bytes()
}

// specKey is the key a frame built from spec must parse to.
func specKey(spec *FrameSpec, inPort hal.PortID) hal.FlowKey {
	k := hal.FlowKey{InPort: inPort, EthSrc: spec.SrcMAC, EthDst: spec.DstMAC}
	if vid, ok := vlanTag(spec.OuterVLAN); ok {
		k.VLAN = hal.VLANPresent | vid
	} else if vid, ok := vlanTag(spec.VLAN); ok {
		k.VLAN = hal.VLANPresent | vid
	}
	if !spec.Src.IsValid() {
		k.EthType = spec.EthType
		return k
	}
	k.EthType = hal.EtherTypeIPv6
	if spec.Src.Is4() {
		k.EthType = hal.EtherTypeIPv4
	}
	k.IPSrc, k.IPDst, k.Proto = spec.Src.As16(), spec.Dst.As16(), spec.Proto
	if spec.Src.Is4() {
		k.IPSrc, k.IPDst = netip.AddrFrom4(spec.Src.As4()).As16(), netip.AddrFrom4(spec.Dst.As4()).As16()
	}
	if spec.FragOffset != 0 {
		return k
	}
	switch spec.Proto {
	case hal.ProtoTCP, hal.ProtoUDP, ProtoSCTP:
		k.L4Src, k.L4Dst = spec.SrcPort, spec.DstPort
	case hal.ProtoICMP, hal.ProtoICMPv6:
		k.L4Src, k.L4Dst = uint16(spec.ICMPType), uint16(spec.ICMPCode)
	}
	return k
}

func TestGopacketFramesParsed(t *testing.T) {
	for _, s := range plainSpecs() {
		t.Run(s.name, func(t *testing.T) {
			f := serializeGopacket(t, gopacketLayers(t, s.spec))
			var k hal.FlowKey
			var l Layout
			if err := Parse(f, 9, &k, &l); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if want := specKey(&s.spec, 9); k != want {
				t.Fatalf("key\n got %v\nwant %v", k, want)
			}
			if want := gopacketIPEnd(f); l.End != want {
				t.Fatalf("End %d, want %d (frame of %d bytes)", l.End, want, len(f))
			}
		})
	}
	for _, s := range laterFragments() {
		t.Run(s.name, func(t *testing.T) {
			f := serializeGopacket(t, gopacketLayers(t, s.spec))
			var k hal.FlowKey
			var l Layout
			err := Parse(f, 9, &k, &l)
			if ReasonOf(err) != hal.ReasonFragment || l.Flags&FlagLaterFragment == 0 || l.L4 != -1 {
				t.Fatalf("Parse: %v, flags %#x, L4 %d; want a fragment error without L4", err, l.Flags, l.L4)
			}
			if want := specKey(&s.spec, 9); k != want {
				t.Fatalf("key\n got %v\nwant %v", k, want)
			}
		})
	}
	for _, e := range encaps() {
		for _, s := range innerSpecs() {
			t.Run(e.name+"/"+s.name, func(t *testing.T) {
				sl := append(gopacketEncap(&e.e, 50000), gopacketLayers(t, s.spec)...)
				f := serializeGopacket(t, sl)
				var k hal.FlowKey
				var l Layout
				if err := Parse(f, 9, &k, &l); err != nil {
					t.Fatalf("Parse: %v", err)
				}
				want := specKey(&s.spec, 9)
				want.TunKind, want.VNI = e.e.Kind, e.e.VNI
				want.TunSrc, want.TunDst = e.e.Src.As16(), e.e.Dst.As16()
				if e.e.Src.Is4() {
					want.TunSrc, want.TunDst = netip.AddrFrom4(e.e.Src.As4()).As16(), netip.AddrFrom4(e.e.Dst.As4()).As16()
				}
				if k != want {
					t.Fatalf("key\n got %v\nwant %v", k, want)
				}
				// The inner frame Decap returns is the one gopacket
				// serialized on its own.
				start, err := Decap(f, &l)
				if err != nil {
					t.Fatal(err)
				}
				inner := serializeGopacket(t, gopacketLayers(t, s.spec))
				if !bytes.Equal(f[start:start+len(inner)], inner) {
					t.Fatalf("Decap start %d: inner frame differs", start)
				}
			})
		}
	}
}

// gopacketIPEnd is where gopacket says the IP packet in f ends (the frame's
// length for non-IP frames).
func gopacketIPEnd(f []byte) int {
	pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	off := 0
	for _, l := range pkt.Layers() {
		switch x := l.(type) {
		case *layers.IPv4:
			return off + int(x.Length)
		case *layers.IPv6:
			return off + IPv6HeaderLen + int(x.Length)
		}
		off += len(l.LayerContents())
	}
	return len(f)
}
