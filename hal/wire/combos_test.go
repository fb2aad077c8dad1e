package wire

import (
	"net/netip"

	"github.com/nicpath/nicpath/hal"
)

// Frames and encapsulations every test walks: each protocol combination the
// package claims to handle. Addresses come from the test ranges.

var (
	macA = hal.MustMAC("02:00:5e:00:00:01")
	macB = hal.MustMAC("02:00:5e:00:00:02")
	macC = hal.MustMAC("02:00:5e:00:00:03")
	macD = hal.MustMAC("02:00:5e:00:00:04")

	caA4 = netip.MustParseAddr("198.18.1.10")
	caB4 = netip.MustParseAddr("198.18.2.20")
	caA6 = netip.MustParseAddr("2001:db8:1::10")
	caB6 = netip.MustParseAddr("2001:db8:2::20")
	paA4 = netip.MustParseAddr("192.0.2.1")
	paB4 = netip.MustParseAddr("192.0.2.2")
	paA6 = netip.MustParseAddr("2001:db8:ff::1")
	paB6 = netip.MustParseAddr("2001:db8:ff::2")
)

type namedSpec struct {
	name string
	spec FrameSpec
}

// l4Variants returns the transport variants for one address family.
func l4Variants(v6 bool) []namedSpec {
	icmpProto, icmpType := hal.ProtoICMP, uint8(8)
	if v6 {
		icmpProto, icmpType = hal.ProtoICMPv6, 128
	}
	pl := []byte("nicpath payload bytes!")
	return []namedSpec{
		{"tcp", FrameSpec{Proto: hal.ProtoTCP, SrcPort: 40000, DstPort: 8080, Payload: pl}},
		{"udp", FrameSpec{Proto: hal.ProtoUDP, SrcPort: 40001, DstPort: 5001, Payload: pl}},
		{"udp-odd", FrameSpec{Proto: hal.ProtoUDP, SrcPort: 7, DstPort: 9, Payload: pl[:5]}},
		{"icmp", FrameSpec{Proto: icmpProto, ICMPType: icmpType, ICMPCode: 0, Payload: pl}},
		{"sctp", FrameSpec{Proto: ProtoSCTP, SrcPort: 2905, DstPort: 2905}},
		{"gre-opaque", FrameSpec{Proto: hal.ProtoGRE, Payload: []byte{0, 0, 0x88, 0xb6, 1, 2, 3, 4}}},
	}
}

// plainSpecs is every non-tunnelled combination: tags × network layers ×
// transports, plus non-IP and fragments.
func plainSpecs() []namedSpec {
	type l2 struct {
		name        string
		vlan, outer uint16
	}
	l2s := []l2{{"eth", 0, 0}, {"vlan", 100, 0}, {"qinq", 100, 200}, {"prio", hal.VLANPresent, 0}}
	type l3 struct {
		name     string
		src, dst netip.Addr
		opts     []byte
		ext      []uint8
	}
	l3s := []l3{
		{"ip4", caA4, caB4, nil, nil},
		{"ip4opt", caA4, caB4, []byte{0x94, 0x04, 0x00, 0x00}, nil}, // router alert (RFC 2113)
		{"ip6", caA6, caB6, nil, nil},
		{"ip6ext", caA6, caB6, nil, []uint8{ProtoHopByHop, ProtoDstOpts, ProtoRouting, ProtoDstOpts}},
		{"ip6frag0", caA6, caB6, nil, []uint8{ProtoFragment}},
	}
	var out []namedSpec
	for _, a := range l2s {
		for _, b := range l3s {
			for _, c := range l4Variants(b.src.Is6()) {
				s := c.spec
				s.SrcMAC, s.DstMAC, s.VLAN, s.OuterVLAN = macA, macB, a.vlan, a.outer
				s.Src, s.Dst, s.IPOptions, s.ExtHeaders = b.src, b.dst, b.opts, b.ext
				if b.name == "ip6frag0" {
					s.MoreFragments, s.FragID = true, 77
				}
				out = append(out, namedSpec{a.name + "/" + b.name + "/" + c.name, s})
			}
		}
		out = append(out, namedSpec{a.name + "/arp", FrameSpec{SrcMAC: macA, DstMAC: hal.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			VLAN: a.vlan, OuterVLAN: a.outer, EthType: hal.EtherTypeARP, Payload: arpRequest()}})
	}
	out = append(out,
		namedSpec{"eth/ip4/first-fragment", FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoUDP,
			SrcPort: 5000, DstPort: 5001, MoreFragments: true, IPID: 9, Payload: make([]byte, 64)}},
		namedSpec{"eth/ip4/df", FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoTCP,
			SrcPort: 5000, DstPort: 22, DontFragment: true, TTL: 1}},
	)
	return out
}

// laterFragments are non-first fragments: keyed up to L3, ReasonFragment.
func laterFragments() []namedSpec {
	return []namedSpec{
		{"eth/ip4/later-fragment", FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA4, Dst: caB4, Proto: hal.ProtoUDP,
			FragOffset: 8, IPID: 9, Payload: make([]byte, 40)}},
		{"eth/ip6/later-fragment", FrameSpec{SrcMAC: macA, DstMAC: macB, Src: caA6, Dst: caB6, Proto: hal.ProtoTCP,
			ExtHeaders: []uint8{ProtoFragment}, FragOffset: 8, FragID: 9, Payload: make([]byte, 40)}},
	}
}

type namedEncap struct {
	name string
	e    hal.Encap
}

func encaps() []namedEncap {
	opts := []byte{
		0x01, 0x02, 0x03, 0x01, 0xde, 0xad, 0xbe, 0xef, // class 0x0102 type 3, 4 bytes of data
		0xff, 0xff, 0x10, 0x00, // class 0xffff type 0x10, no data
	}
	var out []namedEncap
	for _, fam := range []struct {
		name     string
		src, dst netip.Addr
	}{{"ip4", paA4, paB4}, {"ip6", paA6, paB6}} {
		base := hal.Encap{Src: fam.src, Dst: fam.dst, SrcMAC: macC, DstMAC: macD, VNI: 0xabcdef}
		vx, gn, gno, nv := base, base, base, base
		vx.Kind, gn.Kind, gno.Kind, nv.Kind = hal.EncapVXLAN, hal.EncapGeneve, hal.EncapGeneve, hal.EncapNVGRE
		gno.GeneveOptions = opts
		gn.TTL = 7
		nvf := nv
		nvf.FlowID = 0x5a
		out = append(out, namedEncap{"vxlan-" + fam.name, vx}, namedEncap{"geneve-" + fam.name, gn},
			namedEncap{"geneve-opts-" + fam.name, gno}, namedEncap{"nvgre-" + fam.name, nv},
			namedEncap{"nvgre-flowid-" + fam.name, nvf})
	}
	return out
}

// innerSpecs is a representative subset of plainSpecs used as inner frames
// of every encapsulation (the full product is large and adds nothing).
func innerSpecs() []namedSpec {
	var out []namedSpec
	for _, s := range plainSpecs() {
		switch s.name {
		case "eth/ip4/udp", "eth/ip4/tcp", "eth/ip6/tcp", "eth/ip6ext/udp", "vlan/ip4/icmp", "eth/ip6/icmp",
			"qinq/ip4opt/udp", "eth/arp", "eth/ip4/sctp":
			out = append(out, s)
		}
	}
	return out
}

// arpRequest is an ARP request payload: who has caB4, tell caA4.
func arpRequest() []byte {
	p := []byte{0, 1, 8, 0, 6, 4, 0, 1}
	p = append(p, macA[:]...)
	p = append(p, caA4.AsSlice()...)
	p = append(p, 0, 0, 0, 0, 0, 0)
	return append(p, caB4.AsSlice()...)
}
