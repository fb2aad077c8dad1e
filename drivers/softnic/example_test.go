package softnic_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// A VM's UDP flow offloaded to the reference NIC: one rule encapsulates it
// in VXLAN toward another host; a frame no rule covers goes to the host on
// the exception path.
func Example() {
	ctx := context.Background()
	vmMAC, upMAC := hal.MustMAC("02:00:00:0b:00:01"), hal.MustMAC("02:00:00:00:ff:01")
	nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm1", Kind: hal.PortVPort, MAC: vmMAC},
		{Name: "uplink", Kind: hal.PortUplink, MAC: upMAC, MTU: 1600},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nic.Close()
	vm, _ := nic.PortByName("vm1")
	up, _ := nic.PortByName("uplink")

	var m hal.Match
	m.InPort(vm.ID()).IPDst(netip.MustParsePrefix("10.0.0.11/32")).Proto(hal.ProtoUDP)
	rule := hal.Rule{ID: 1, Priority: 10, Match: m, Actions: []hal.Action{
		hal.SetEthDst(hal.MustMAC("02:00:00:0b:00:02")),
		hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001,
			Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"),
			SrcMAC: upMAC, DstMAC: hal.MustMAC("02:00:00:00:ff:02")}),
		hal.Count(),
		hal.Output(up.ID()),
	}}
	res := make([]hal.OpResult, 1)
	if err := nic.Apply(ctx, []hal.Op{hal.AddOp(rule)}, res); err != nil {
		fmt.Println(err)
		return
	}

	udp := func(dst string) []byte {
		return wire.Build(wire.FrameSpec{SrcMAC: vmMAC, DstMAC: hal.MustMAC("02:6e:69:63:00:01"),
			Src: netip.MustParseAddr("10.0.0.10"), Dst: netip.MustParseAddr(dst),
			Proto: hal.ProtoUDP, SrcPort: 5000, DstPort: 53, Payload: []byte("hello")})
	}
	vm.Send([][]byte{udp("10.0.0.11"), udp("10.0.0.99")})

	// The first frame left the uplink encapsulated.
	bufs, sizes := [][]byte{make([]byte, 2048)}, make([]int, 1)
	if n, _ := up.Recv(bufs, sizes); n == 1 {
		var k hal.FlowKey
		var l wire.Layout
		if err := wire.Parse(bufs[0][:sizes[0]], up.ID(), &k, &l); err == nil {
			fmt.Printf("uplink: %s vni %d %s -> %s, inner %s -> %s\n", k.TunKind, k.VNI,
				hal.AddrFrom16(k.TunSrc), hal.AddrFrom16(k.TunDst), k.Src(), k.Dst())
		}
	}
	// The second reached the host.
	exc := []hal.Exception{{Buf: make([]byte, 2048)}}
	if n, err := nic.ReadExceptions(ctx, exc); err == nil && n == 1 {
		fmt.Printf("host: a frame from port %d, %s\n", exc[0].InPort, exc[0].Reason)
	}
	cs := make([]hal.Counters, 1)
	_ = nic.RuleCounters(ctx, []hal.RuleID{1}, cs)
	fmt.Printf("rule 1: %d packet\n", cs[0].Packets)
	// Output:
	// uplink: vxlan vni 1001 198.18.0.1 -> 198.18.0.2, inner 10.0.0.10 -> 10.0.0.11
	// host: a frame from port 1, miss
	// rule 1: 1 packet
}
