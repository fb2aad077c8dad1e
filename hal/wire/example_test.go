package wire_test

import (
	"fmt"
	"net/netip"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// A VM's frame is parsed into a key, its destination is rewritten and it is
// encapsulated in VXLAN in the headroom of its own buffer.
func Example() {
	frame := wire.Build(wire.FrameSpec{
		SrcMAC: hal.MustMAC("02:00:00:00:00:01"), DstMAC: hal.MustMAC("02:00:00:00:00:02"),
		Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
		Proto: hal.ProtoUDP, SrcPort: 40000, DstPort: 5001, Payload: []byte("hello"),
	})

	// The receive buffer keeps room in front of the frame for any encapsulation.
	buf := make([]byte, wire.MaxEncapHeadroom+len(frame))
	start := wire.MaxEncapHeadroom
	copy(buf[start:], frame)

	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(buf[start:], 1, &k, &l); err != nil {
		fmt.Println("to host:", wire.ReasonOf(err))
		return
	}
	fmt.Println(k.Src(), "->", k.Dst(), "ports", k.L4Src, k.L4Dst)

	// Programmed once per rule.
	tpl, err := wire.NewEncapTemplate(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 5001,
		Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2")})
	if err != nil {
		panic(err)
	}
	// Per packet: no allocation.
	_ = wire.SetIPDst(buf[start:], &l, netip.MustParseAddr("198.18.0.9").As16())
	newStart, err := tpl.Push(buf, start, start+l.End, wire.FlowHash(&k))
	if err != nil {
		panic(err)
	}

	var outer hal.FlowKey
	if err := wire.Parse(buf[newStart:start+l.End], 1, &outer, &l); err != nil {
		panic(err)
	}
	fmt.Println(outer.TunKind, outer.VNI, hal.AddrFrom16(outer.TunDst), "inner", outer.Src(), "->", outer.Dst())
	// Output:
	// 198.18.0.1 -> 198.18.0.2 ports 40000 5001
	// vxlan 5001 192.0.2.2 inner 198.18.0.1 -> 198.18.0.9
}

// Walking the options of a Geneve header allocates nothing.
func ExampleNextGeneveOption() {
	opts := []byte{
		0x01, 0x02, 0x03, 0x01, 0xde, 0xad, 0xbe, 0xef, // class 0x0102, type 3, 4 bytes
		0xff, 0xff, 0x80, 0x00, // class 0xffff, type 0x80 (critical), no data
	}
	for off := 0; off < len(opts); {
		o, next, err := wire.NextGeneveOption(opts, off)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("class %#04x type %#02x critical %v data %x\n", o.Class, o.Type, o.Critical(), o.Data)
		off = next
	}
	// Output:
	// class 0x0102 type 0x03 critical false data deadbeef
	// class 0xffff type 0x80 critical true data
}
