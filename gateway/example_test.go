package gateway_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/gateway"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// A shared gateway on the reference NIC: a VM of tenant blue on host-a
// sends a UDP datagram to a non-virtualized host on 203.0.113.0/24, which
// blue routes through gateway gw-shared. The gateway takes the frame from
// host-a's tunnel on its uplink, translates its source to its external
// address and sends it on the external port; the answer goes back to
// host-a, encapsulated in blue's VNI.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The policy: a host, a gateway, a tenant with one VM that routes
	// 203.0.113.0/24 to the gateway.
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "host-a", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddGateway(policy.Gateway{Name: "gw-shared", PA: netip.MustParseAddr("198.18.0.100")})
	b.AddTenant(policy.Tenant{Name: "blue"})
	b.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 1001, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
	b.AddVM(policy.VM{Name: "blue-web-1", Tenant: "blue", VNET: "web", MAC: policy.MAC{2, 0, 0, 0x0b, 0, 1},
		CAs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}, Host: "host-a"})
	b.AddRoute(policy.Route{Tenant: "blue", Prefix: netip.MustParsePrefix("203.0.113.0/24"),
		NextHop: policy.NextHop{Kind: policy.NextHopGateway, Gateway: "gw-shared"}})
	st, err := b.Build()
	if err != nil {
		fmt.Println(err)
		return
	}

	// The gateway host's NIC: an external port and an uplink.
	underlayMAC := hal.MustMAC("02:00:00:00:ff:01")
	extMAC := hal.MustMAC("02:00:00:00:fe:01")
	nic, err := softnic.New(softnic.Config{Device: "gw0", Ports: []softnic.PortConfig{
		{Name: "external", Kind: hal.PortVPort, MAC: extMAC},
		{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MustMAC("02:00:00:00:ff:64"), MTU: 1600},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nic.Close()
	ext, _ := nic.PortByName("external")
	up, _ := nic.PortByName("uplink")

	remote, remoteMAC := netip.MustParseAddr("203.0.113.10"), hal.MustMAC("02:00:00:00:fe:10")
	g, err := gateway.New(gateway.Config{NIC: nic, State: st, Name: "gw-shared",
		Uplink: up.ID(), External: ext.ID(), Address: netip.MustParsePrefix("203.0.113.1/24"),
		NextHopMAC: underlayMAC, Neighbors: map[netip.Addr]hal.MAC{remote: remoteMAC}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer g.Close(context.Background())
	go g.Run(ctx)

	// host-a's frame: the VM's datagram in blue's VNI, toward the gateway's PA.
	inner := wire.Build(wire.FrameSpec{SrcMAC: hal.MAC{2, 0, 0, 0x0b, 0, 1}, DstMAC: hal.MAC(policy.DefaultRouterMAC),
		Src: netip.MustParseAddr("10.0.0.10"), Dst: remote, Proto: hal.ProtoUDP, SrcPort: 40000, DstPort: 53,
		Payload: []byte("query")})
	fromHost := wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 1001, Src: netip.MustParseAddr("198.18.0.1"),
		Dst: netip.MustParseAddr("198.18.0.100"), SrcMAC: underlayMAC, DstMAC: hal.MustMAC("02:00:00:00:ff:64")}, inner)
	fmt.Println(g.Explain(up.ID(), fromHost).Verdict)

	up.Send([][]byte{fromHost})
	out := recv(ext)
	var k hal.FlowKey
	var l wire.Layout
	if out == nil || wire.Parse(out, 0, &k, &l) != nil {
		fmt.Println("nothing left on the external port")
		return
	}
	fmt.Println("external port:", k.Src(), "->", k.Dst(), "port", k.L4Dst, "to", k.EthDst)

	// The remote host answers the translated address and port.
	answer := wire.Build(wire.FrameSpec{SrcMAC: remoteMAC, DstMAC: extMAC, Src: remote, Dst: k.Src(),
		Proto: hal.ProtoUDP, SrcPort: 53, DstPort: k.L4Src, Payload: []byte("answer")})
	ext.Send([][]byte{answer})
	back := recv(up)
	var bk hal.FlowKey
	if back == nil || wire.Parse(back, 0, &bk, &l) != nil {
		fmt.Println("nothing left on the uplink")
		return
	}
	fmt.Println("uplink:", hal.AddrFrom16(bk.TunDst), "vni", bk.VNI, "inner", bk.Src(), "->", bk.Dst(), "port", bk.L4Dst)

	for _, c := range g.Conns() {
		fmt.Println("connection:", c.Tenant, c.VM, c.Where)
	}
	// Output:
	// translate
	// external port: 203.0.113.1 -> 203.0.113.10 port 53 to 02:00:00:00:fe:10
	// uplink: 198.18.0.1 vni 1001 inner 203.0.113.10 -> 10.0.0.10 port 40000
	// connection: blue blue-web-1 nic
}

// recv waits (bounded) for a frame the NIC sends out of port.
func recv(p *softnic.Port) []byte {
	buf := [][]byte{make([]byte, 2048)}
	sizes := []int{0}
	deadline := time.After(30 * time.Second)
	for {
		if n, _ := p.Recv(buf, sizes); n == 1 {
			return buf[0][:sizes[0]]
		}
		select {
		case <-p.Ready():
		case <-deadline:
			return nil
		}
	}
}
