package vswitch_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/vswitch"
)

// One host's switch on the reference NIC: the first packet of a
// connection reaches the switch on the exception path, walks the policy and
// leaves encapsulated; its unified flow is offloaded, so the next packet
// goes from the VM to the wire without the host.
func Example() {
	ctx := context.Background()
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "host-a", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddHost(policy.Host{Name: "host-b", PA: netip.MustParseAddr("198.18.0.2")})
	b.AddTenant(policy.Tenant{Name: "blue"})
	b.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 1001, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
	vm1MAC := policy.MAC{2, 0, 0, 0xb, 0, 1}
	b.AddVM(policy.VM{Name: "web-1", Tenant: "blue", VNET: "web", Host: "host-a", MAC: vm1MAC, CAs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}})
	b.AddVM(policy.VM{Name: "web-2", Tenant: "blue", VNET: "web", Host: "host-b", MAC: policy.MAC{2, 0, 0, 0xb, 0, 2}, CAs: []netip.Addr{netip.MustParseAddr("10.0.0.11")}})
	st, err := b.Build()
	if err != nil {
		fmt.Println(err)
		return
	}

	// The NIC: a vport for every VM host-a hosts, and the uplink.
	var ports []softnic.PortConfig
	for _, vm := range st.HostedVMs("host-a") {
		ports = append(ports, softnic.PortConfig{Name: vm.Name, Kind: hal.PortVPort, MAC: hal.MAC(vm.MAC)})
	}
	ports = append(ports, softnic.PortConfig{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MustMAC("02:00:00:00:ff:01"), MTU: 1600})
	nic, err := softnic.New(softnic.Config{Ports: ports})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nic.Close()
	vm, _ := nic.PortByName("web-1")
	up, _ := nic.PortByName("uplink")

	sw, err := vswitch.New(vswitch.Config{NIC: nic, Host: "host-a", State: st,
		Ports: map[string]hal.PortID{"web-1": vm.ID()}, Uplink: up.ID(),
		NextHopMAC: hal.MustMAC("02:00:00:00:ff:02")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sw.Close()

	frame := wire.Build(wire.FrameSpec{SrcMAC: hal.MAC(vm1MAC), DstMAC: hal.MAC(st.RouterMAC()),
		Src: netip.MustParseAddr("10.0.0.10"), Dst: netip.MustParseAddr("10.0.0.11"),
		Proto: hal.ProtoUDP, SrcPort: 5000, DstPort: 53, Payload: []byte("query")})
	bufs, sizes := [][]byte{make([]byte, 2048)}, make([]int, 1)
	for i := 1; i <= 2; i++ {
		vm.Send([][]byte{frame})
		// What reached the host goes to the switch: Run does this in a loop.
		if ps, _ := nic.PortCounters(ctx, vm.ID()); ps.Exceptions == uint64(i) {
			exc := []hal.Exception{{Buf: make([]byte, 2048)}}
			if n, err := nic.ReadExceptions(ctx, exc); err == nil {
				fmt.Printf("packet %d: to the host (%s)\n", i, exc[0].Reason)
				if err := sw.HandleBatch(ctx, exc[:n]); err != nil {
					fmt.Println(err)
				}
			}
		} else {
			fmt.Printf("packet %d: handled by the NIC\n", i)
		}
		if n, _ := up.Recv(bufs, sizes); n == 1 {
			var k hal.FlowKey
			var l wire.Layout
			if wire.Parse(bufs[0][:sizes[0]], up.ID(), &k, &l) == nil {
				fmt.Printf("packet %d: out of the uplink, %s vni %d to %s\n", i, k.TunKind, k.VNI, hal.AddrFrom16(k.TunDst))
			}
		}
	}
	for _, f := range sw.Flows() {
		acts := make([]string, len(f.Actions))
		for i, a := range f.Actions {
			acts[i] = a.Kind.String()
		}
		fmt.Printf("flow on the %s: %s\n", f.Path, strings.Join(acts, ","))
	}
	// Output:
	// packet 1: to the host (miss)
	// packet 1: out of the uplink, vxlan vni 1001 to 198.18.0.2
	// packet 2: handled by the NIC
	// packet 2: out of the uplink, vxlan vni 1001 to 198.18.0.2
	// flow on the nic: set_eth_dst,encap,count,output
}
