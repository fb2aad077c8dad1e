package policy_test

import (
	"fmt"
	"net/netip"

	"github.com/nicpath/nicpath/policy"
)

// Build a desired state with the Go API and ask the reference evaluator
// what must happen to packets: one tenant, one VNET on two hosts, and an
// ACL that keeps SSH away from the web VM.
func ExampleBuilder() {
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "host-a", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddHost(policy.Host{Name: "host-b", PA: netip.MustParseAddr("198.18.0.2")})
	b.AddTenant(policy.Tenant{Name: "blue"})
	b.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 1001, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
	b.AddVM(policy.VM{Name: "web-1", Tenant: "blue", VNET: "web", Host: "host-a",
		MAC: policy.MAC{2, 0, 0, 0xb, 0, 1}, CAs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}})
	b.AddVM(policy.VM{Name: "web-2", Tenant: "blue", VNET: "web", Host: "host-b",
		MAC: policy.MAC{2, 0, 0, 0xb, 0, 2}, CAs: []netip.Addr{netip.MustParseAddr("10.0.0.11")}})
	b.AddACL(policy.ACL{Tenant: "blue", ID: "no-ssh", Priority: 100, Direction: policy.In,
		Protocol: policy.ProtoTCP, DstPorts: []policy.PortRange{{Lo: 22, Hi: 22}}, Action: policy.Deny})
	st, err := b.Build()
	if err != nil {
		fmt.Println(err)
		return
	}

	pkt := policy.Packet{
		SrcMAC: policy.MAC{2, 0, 0, 0xb, 0, 1}, DstMAC: st.RouterMAC(), EtherType: policy.EtherTypeIPv4,
		Src: netip.MustParseAddr("10.0.0.10"), Dst: netip.MustParseAddr("10.0.0.11"),
		Protocol: policy.ProtoTCP, SrcPort: 40000, DstPort: 80, TTL: 64,
	}
	// On host-a the packet leaves encapsulated toward host-b; host-b
	// checks web-2's ACLs when it arrives.
	fmt.Println(st.Evaluate("host-a", policy.FromVM("web-1"), pkt))
	fromA := policy.FromUplink(1001, netip.MustParseAddr("198.18.0.1"))
	fmt.Println(st.Evaluate("host-b", fromA, pkt).Action)
	pkt.DstPort = 22
	fmt.Println(st.Evaluate("host-b", fromA, pkt))

	// A state that does not hold together is refused, with where.
	b.AddVM(policy.VM{Name: "web-3", Tenant: "blue", VNET: "web", Host: "host-c",
		MAC: policy.MAC{2, 0, 0, 0xb, 0, 3}, CAs: []netip.Addr{netip.MustParseAddr("10.0.0.12")}})
	_, err = b.Build()
	fmt.Println(err)
	// Output:
	// encap vxlan vni 1001 to 198.18.0.2 (host-b, vm web-2) [dst-mac 02:00:00:0b:00:02]
	// deliver
	// drop (acl-deny)
	// vms[2].host: unknown host "host-c"
}
