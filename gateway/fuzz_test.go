package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// FuzzParseARP: any bytes parse or are refused without a panic; what
// parses is an IPv4-over-Ethernet request or reply, and building it again
// from what was read gives back the same ARP fields.
func FuzzParseARP(f *testing.F) {
	m := hal.MustMAC("02:00:00:00:00:01")
	f.Add(BuildARP(1, m, netip.MustParseAddr("203.0.113.1"), hal.MAC{}, netip.MustParseAddr("203.0.113.10")))
	f.Add(BuildARP(2, m, netip.MustParseAddr("203.0.113.10"), m, netip.MustParseAddr("203.0.113.1")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		op, sha, spa, tpa, ok := ParseARP(b)
		if !ok {
			return
		}
		if op != 1 && op != 2 || !spa.Is4() || !tpa.Is4() {
			t.Fatalf("parsed op %d %s %s", op, spa, tpa)
		}
		var tha hal.MAC
		copy(tha[:], b[14+18:14+24])
		again := BuildARP(op, sha, spa, tha, tpa)
		// The ARP fields (not the Ethernet destination, nor a request's
		// target MAC, which BuildARP leaves zero) round-trip.
		if !bytes.Equal(again[14:14+18], b[14:14+18]) || !bytes.Equal(again[14+24:14+28], b[14+24:14+28]) {
			t.Fatalf("round trip:\n%x\n%x", b[:42], again[:42])
		}
	})
}

// FuzzParseICMPError: any bytes parse or are refused without a panic; what
// parses is an error type of its family whose quoted header and the 8
// bytes after it lie inside the message, with addresses of the family.
func FuzzParseICMPError(f *testing.F) {
	for _, s := range icmpErrorSeeds() {
		f.Add(s.v6, s.msg)
	}
	f.Fuzz(func(t *testing.T, v6 bool, msg []byte) {
		e, err := ParseICMPError(msg, v6)
		if err != nil {
			return
		}
		if !icmpErrorType(e.Type, v6) || e.V6 != v6 || e.Inner != 8 || e.InnerL4 < e.Inner+20 || e.InnerL4+8 > len(msg) {
			t.Fatalf("parsed %+v from %d bytes", e, len(msg))
		}
		if e.Src.Is4() == v6 || e.Dst.Is4() == v6 {
			t.Fatalf("addresses %s %s in a v6=%v error", e.Src, e.Dst, v6)
		}
		switch {
		case e.Proto == hal.ProtoTCP, e.Proto == hal.ProtoUDP:
			if e.Echo || binary.BigEndian.Uint16(msg[e.InnerL4:]) != e.SrcPort {
				t.Fatalf("ports %+v", e)
			}
		case e.Echo:
		default:
			t.Fatalf("accepted protocol %d", e.Proto)
		}
	})
}

type icmpErrorSeed struct {
	v6  bool
	msg []byte
}

// icmpErrorSeeds are ICMP error messages (from the type byte): a
// fragmentation needed about TCP, a port unreachable about UDP, a time
// exceeded about an echo request, their ICMPv6 counterparts, one about a
// non-first fragment and one cut short.
func icmpErrorSeeds() []icmpErrorSeed {
	var out []icmpErrorSeed
	for _, v6 := range []bool{false, true} {
		gw, remote, icmp := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("198.51.100.10"), uint8(hal.ProtoICMP)
		types := [][2]uint8{{3, 4}, {3, 3}, {11, 0}}
		echo := uint8(8)
		if v6 {
			gw, remote, icmp = netip.MustParseAddr("2001:db8:e::1"), netip.MustParseAddr("2001:db8:f::10"), hal.ProtoICMPv6
			types, echo = [][2]uint8{{2, 0}, {1, 4}, {3, 0}}, 128
		}
		for i, q := range []wire.FrameSpec{
			{Src: gw, Dst: remote, Proto: hal.ProtoTCP, SrcPort: 20000, DstPort: 80, Payload: make([]byte, 40)},
			{Src: gw, Dst: remote, Proto: hal.ProtoUDP, SrcPort: 20001, DstPort: 9, Payload: []byte("anyone?")},
			{Src: gw, Dst: remote, Proto: icmp, ICMPType: echo},
		} {
			inner := wire.Build(q)[14:]
			msg := append([]byte{types[i][0], types[i][1], 0, 0, 0, 0, 5, 0}, inner...)
			out = append(out, icmpErrorSeed{v6, msg})
		}
	}
	frag := wire.Build(wire.FrameSpec{Src: netip.MustParseAddr("203.0.113.1"), Dst: netip.MustParseAddr("198.51.100.10"),
		Proto: hal.ProtoUDP, FragOffset: 100, Payload: make([]byte, 16)})[14:]
	out = append(out, icmpErrorSeed{false, append([]byte{3, 4, 0, 0, 0, 0, 5, 0}, frag...)})
	out = append(out, icmpErrorSeed{false, out[0].msg[:8+20+4]})
	return out
}

// FuzzParseND: any bytes parse or are refused without a panic; what parses
// is a solicitation or advertisement with a unicast target, and a message
// built again from what was read parses to the same fields.
func FuzzParseND(f *testing.F) {
	m := hal.MustMAC("02:00:00:00:00:01")
	f.Add(BuildNS(m, netip.MustParseAddr("2001:db8:e::1"), netip.MustParseAddr("2001:db8:e::10")))
	f.Add(BuildNA(m, netip.MustParseAddr("2001:db8:e::10"), hal.MustMAC("02:00:00:00:00:02"), netip.MustParseAddr("2001:db8:e::1"), netip.MustParseAddr("2001:db8:e::10")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		nd, ok := ParseND(b)
		if !ok {
			return
		}
		if nd.Type != 135 && nd.Type != 136 || nd.Target.IsMulticast() || !nd.Target.Is6() {
			t.Fatalf("parsed %+v", nd)
		}
		if !nd.HasLL || nd.Src.IsUnspecified() {
			return
		}
		var again []byte
		if nd.Type == 135 {
			again = BuildNS(nd.LL, nd.Src, nd.Target)
		} else {
			again = BuildNA(nd.LL, nd.Src, nd.SrcMAC, nd.Dst, nd.Target)
		}
		nd2, ok := ParseND(again)
		if !ok || nd2.Type != nd.Type || nd2.Src != nd.Src || nd2.Target != nd.Target || nd2.LL != nd.LL {
			t.Fatalf("round trip: %+v -> %+v (%v)", nd, nd2, ok)
		}
	})
}

// FuzzHandle: any frame on either port of a gateway is handled without a
// panic, and what leaves the external port is ARP from the gateway or an
// IP packet from its address.
func FuzzHandle(f *testing.F) {
	st, err := gatewayFuzzState()
	if err != nil {
		f.Fatal(err)
	}
	inner := wire.Build(wire.FrameSpec{SrcMAC: hal.MAC{2, 0, 0, 0xb, 0, 1}, DstMAC: hal.MAC(policy.DefaultRouterMAC),
		Src: netip.MustParseAddr("10.0.0.10"), Dst: netip.MustParseAddr("203.0.113.10"), Proto: hal.ProtoUDP, SrcPort: 5, DstPort: 53})
	f.Add(true, wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001, Src: netip.MustParseAddr("198.18.0.1"),
		Dst: netip.MustParseAddr("198.18.0.100")}, inner))
	f.Add(false, BuildARP(1, hal.MAC{2, 0, 0, 0, 0, 9}, netip.MustParseAddr("203.0.113.10"), hal.MAC{}, netip.MustParseAddr("203.0.113.1")))
	f.Add(false, wire.Build(wire.FrameSpec{SrcMAC: hal.MAC{2, 0, 0, 0, 0, 9}, DstMAC: hal.MAC{2, 0, 0, 0, 0, 8},
		Src: netip.MustParseAddr("203.0.113.10"), Dst: netip.MustParseAddr("203.0.113.21"), Proto: hal.ProtoTCP, SrcPort: 9, DstPort: 22}))
	// A port unreachable from the VM, quoting a datagram from outside.
	answer := wire.Build(wire.FrameSpec{Src: netip.MustParseAddr("203.0.113.10"), Dst: netip.MustParseAddr("10.0.0.10"),
		Proto: hal.ProtoUDP, SrcPort: 53, DstPort: 5})[14:]
	vmErr := wire.Build(wire.FrameSpec{SrcMAC: hal.MAC{2, 0, 0, 0xb, 0, 1}, DstMAC: hal.MAC(policy.DefaultRouterMAC),
		Src: netip.MustParseAddr("10.0.0.10"), Dst: netip.MustParseAddr("203.0.113.10"), Proto: hal.ProtoICMP, ICMPType: 3, ICMPCode: 3, Payload: answer})
	f.Add(true, wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001, Src: netip.MustParseAddr("198.18.0.1"),
		Dst: netip.MustParseAddr("198.18.0.100")}, vmErr))
	for _, e := range icmpErrorSeeds()[:3] {
		f.Add(false, wire.Build(wire.FrameSpec{SrcMAC: hal.MAC{2, 0, 0, 0, 0, 9}, DstMAC: hal.MAC{2, 0, 0, 0, 0, 8},
			Src: netip.MustParseAddr("203.0.113.254"), Dst: netip.MustParseAddr("203.0.113.1"), Proto: hal.ProtoICMP,
			ICMPType: e.msg[0], ICMPCode: e.msg[1], Payload: e.msg[8:]}))
	}
	f.Fuzz(func(t *testing.T, uplink bool, frame []byte) {
		nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
			{Name: "ext", Kind: hal.PortVPort, MAC: hal.MAC{2, 0, 0, 0, 0, 8}},
			{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MAC{2, 0, 0, 0, 0, 7}, MTU: 1600}}})
		if err != nil {
			t.Fatal(err)
		}
		defer nic.Close()
		g, err := New(Config{NIC: nic, State: st, Name: "gw", Uplink: 2, External: 1, Address: netip.MustParsePrefix("203.0.113.1/24"),
			Neighbors: map[netip.Addr]hal.MAC{netip.MustParseAddr("203.0.113.10"): {2, 0, 0, 0, 0, 9}},
			Publish:   map[netip.Addr]Target{netip.MustParseAddr("203.0.113.21"): {Tenant: "blue", CA: netip.MustParseAddr("10.0.0.10")}}})
		if err != nil {
			t.Fatal(err)
		}
		in := hal.PortID(1)
		if uplink {
			in = 2
		}
		buf := make([]byte, 2048)
		n := copy(buf, frame)
		if err := g.HandleBatch(context.Background(), []hal.Exception{{InPort: in, Buf: buf, Len: n}}); err != nil {
			t.Fatal(err)
		}
		ext, _ := nic.Port(1)
		bufs, sizes := [][]byte{make([]byte, 2048), make([]byte, 2048)}, []int{0, 0}
		m, _ := ext.Recv(bufs, sizes)
		for i := range m {
			var k hal.FlowKey
			var l wire.Layout
			if err := wire.Parse(bufs[i][:sizes[i]], 0, &k, &l); err != nil {
				t.Fatalf("the gateway sent an unparsable frame: %v", err)
			}
			if k.EthSrc != (hal.MAC{2, 0, 0, 0, 0, 8}) {
				t.Fatalf("a frame left from %s, not the gateway's MAC", k.EthSrc)
			}
			if k.EthType != hal.EtherTypeARP {
				if src := k.Src(); src != netip.MustParseAddr("203.0.113.1") && src != netip.MustParseAddr("203.0.113.21") {
					t.Fatalf("a packet left from %s", src)
				}
			}
		}
	})
}

func gatewayFuzzState() (*policy.State, error) {
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "host-a", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddGateway(policy.Gateway{Name: "gw", PA: netip.MustParseAddr("198.18.0.100")})
	b.AddTenant(policy.Tenant{Name: "blue"})
	b.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 1001, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
	b.AddVM(policy.VM{Name: "vm", Tenant: "blue", VNET: "web", MAC: policy.MAC{2, 0, 0, 0xb, 0, 1},
		CAs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}, Host: "host-a"})
	b.AddRoute(policy.Route{Tenant: "blue", Prefix: netip.MustParsePrefix("0.0.0.0/0"),
		NextHop: policy.NextHop{Kind: policy.NextHopGateway, Gateway: "gw"}})
	return b.Build()
}
