package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func gatewayTestState(t *testing.T) *State {
	t.Helper()
	p := netip.MustParsePrefix
	b := NewBuilder()
	b.AddHost(Host{Name: "a", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddHost(Host{Name: "b", PA: netip.MustParseAddr("198.18.0.2")})
	b.AddGateway(Gateway{Name: "shared", PA: netip.MustParseAddr("198.18.0.100")})
	b.AddGateway(Gateway{Name: "blue-only", PA: netip.MustParseAddr("198.18.0.101"), Tenant: "blue"})
	for i, tn := range []string{"blue", "red"} {
		b.AddTenant(Tenant{Name: tn})
		b.AddVNET(VNET{Tenant: tn, Name: "web", VNI: uint32(1001 + 1000*i), Subnets: []netip.Prefix{p("10.0.0.0/24")}})
		b.AddVM(VM{Name: tn + "-1", Tenant: tn, VNET: "web", MAC: MAC{2, 0, 0, byte(i), 0, 1}, CAs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}, Host: []string{"a", "b"}[i]})
	}
	b.AddGatewayRule(GatewayRule{Tenant: "blue", Name: "storage", Prefix: p("192.0.2.0/24"), Gateway: "shared", NAT: p("203.0.113.0/24")})
	b.AddGatewayRule(GatewayRule{Tenant: "blue", Name: "backup", Prefix: p("198.51.100.0/24"), Gateway: "blue-only"})
	b.AddRoute(Route{Tenant: "red", Prefix: p("0.0.0.0/0"), NextHop: NextHop{Kind: NextHopGateway, Gateway: "shared"}})
	st, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestEvaluateAtGateway(t *testing.T) {
	st := gatewayTestState(t)
	a, b := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	pkt := func(dst string) Packet {
		return Packet{EtherType: EtherTypeIPv4, Src: netip.MustParseAddr("10.0.0.10"), Dst: netip.MustParseAddr(dst), Protocol: ProtoUDP, SrcPort: 4000, DstPort: 53, TTL: 63}
	}
	for _, c := range []struct {
		name, gw string
		in       InPort
		dst      string
		allow    bool
		reason   Reason
		vm, rule string
		trace    string
	}{
		{"blue through its gateway rule's NAT", "shared", FromUplink(1001, a), "203.0.113.10", true, 0, "blue-1", "storage", "addressed 192.0.2.10"},
		{"red by its default route", "shared", FromUplink(2001, b), "8.8.8.8", true, 0, "red-1", "", "0.0.0.0/0"},
		{"red's address from blue's host", "shared", FromUplink(2001, a), "8.8.8.8", false, ReasonTenantIsolation, "", "", "does not host"},
		{"blue outside its NAT range", "shared", FromUplink(1001, a), "8.8.8.8", false, ReasonNoRoute, "blue-1", "", "routes no destination"},
		{"blue untranslated to the shared gateway", "shared", FromUplink(1001, a), "192.0.2.10", false, ReasonNoRoute, "blue-1", "", "routes no destination"},
		{"blue through its own gateway", "blue-only", FromUplink(1001, a), "198.51.100.7", true, 0, "blue-1", "backup", "198.51.100.0/24"},
		{"red through blue's gateway", "blue-only", FromUplink(2001, b), "198.51.100.7", false, ReasonTenantIsolation, "", "", "dedicated to tenant blue"},
		{"unknown VNI", "shared", FromUplink(77, a), "203.0.113.10", false, ReasonUnknownVNI, "", "", "no VNET"},
		{"wrong encapsulation", "shared", FromTunnel(EncapGeneve, 1001, a), "203.0.113.10", false, ReasonEncapMismatch, "", "", "carried in vxlan"},
		{"from a VM port", "shared", FromVM("blue-1"), "203.0.113.10", false, ReasonUnknownPort, "", "", "uplink only"},
		{"unknown gateway", "nope", FromUplink(1001, a), "203.0.113.10", false, ReasonUnknownHost, "", "", "not in the policy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := st.EvaluateAtGateway(c.gw, c.in, pkt(c.dst))
			if v.Allow != c.allow || v.Reason != c.reason || v.VM != c.vm || v.Rule != c.rule {
				t.Fatalf("got %s vm %q rule %q, want allow=%v %s vm %q rule %q\n%s", v, v.VM, v.Rule, c.allow, c.reason, c.vm, c.rule, strings.Join(v.Trace, "\n"))
			}
			if !strings.Contains(strings.Join(v.Trace, "\n"), c.trace) {
				t.Fatalf("trace lacks %q:\n%s", c.trace, strings.Join(v.Trace, "\n"))
			}
		})
	}
	// ARP never leaves through a gateway.
	arp := pkt("203.0.113.10")
	arp.EtherType = EtherTypeARP
	if v := st.EvaluateAtGateway("shared", FromUplink(1001, a), arp); v.Allow || v.Reason != ReasonUnsupportedEtherType {
		t.Fatalf("ARP: %s", v)
	}
	// The answer's way back agrees with the VM's host: a packet from the
	// gateway whose source is in the rule's NAT is translated back.
	back := Packet{SrcMAC: DefaultRouterMAC, DstMAC: MAC{2, 0, 0, 0, 0, 1}, EtherType: EtherTypeIPv4, Src: netip.MustParseAddr("203.0.113.10"),
		Dst: netip.MustParseAddr("10.0.0.10"), Protocol: ProtoUDP, SrcPort: 53, DstPort: 4000, TTL: 63}
	v := st.Evaluate("a", FromUplink(1001, netip.MustParseAddr("198.18.0.100")), back)
	if v.Action != Deliver || v.VM != "blue-1" || v.Rewrite.Src != netip.MustParseAddr("192.0.2.10") {
		t.Fatalf("answer at blue's host: %s", v)
	}
}
