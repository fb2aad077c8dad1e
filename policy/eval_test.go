package policy

import (
	"net/netip"
	"strings"
	"testing"
)

var (
	hostA = netip.MustParseAddr("198.18.0.1")
	hostB = netip.MustParseAddr("198.18.0.2")
)

// flow builds the packet VM from sends to dst (its first CA of dst's
// family, its own MAC, TTL 64).
func flow(t testing.TB, s *State, from, dst string, proto uint8, sport, dport uint16) Packet {
	t.Helper()
	vm, ok := s.VM(from)
	if !ok {
		t.Fatalf("no VM %s", from)
	}
	d := netip.MustParseAddr(dst)
	p := Packet{SrcMAC: vm.MAC, DstMAC: DefaultRouterMAC, Dst: d, Protocol: proto, SrcPort: sport, DstPort: dport, TTL: 64}
	p.EtherType = EtherTypeIPv4
	if d.Is6() {
		p.EtherType = EtherTypeIPv6
	}
	for _, ca := range vm.CAs {
		if ca.Is4() == d.Is4() {
			p.Src = ca
			break
		}
	}
	return p
}

func mac(t testing.TB, s *State, vm string) MAC {
	v, ok := s.VM(vm)
	if !ok {
		t.Fatalf("no VM %s", vm)
	}
	return v.MAC
}

func wantDrop(t *testing.T, v Verdict, r Reason) {
	t.Helper()
	if v.Action != Drop || v.Reason != r {
		t.Errorf("got %s, want drop (%s)\n%s", v, r, v.Explain())
	}
}

func TestEvaluateOutbound(t *testing.T) {
	s := mustLoadExample(t)

	t.Run("same host same VNET delivers without routing", func(t *testing.T) {
		v := s.Evaluate("host-a", FromVM("red-app-2"), flow(t, s, "red-app-2", "10.0.0.254", ProtoTCP, 40000, 22))
		if v.Action != Deliver || v.VM != "red-fw" {
			t.Fatalf("got %s\n%s", v, v.Explain())
		}
		want := Rewrite{DstMAC: mac(t, s, "red-fw")}
		if v.Rewrite != want {
			t.Errorf("rewrite %s, want %s", v.Rewrite, want)
		}
		if len(v.ACLs) != 2 || v.ACLs[0].ACL != "out-all" || v.ACLs[1].ACL != "ssh-in" || !v.ACLs[1].Stateful {
			t.Errorf("ACL decisions %+v", v.ACLs)
		}
		if len(v.Routes) != 1 || v.Routes[0].Origin != RouteSubnet {
			t.Errorf("routes %+v", v.Routes)
		}
	})
	t.Run("receiver's inbound ACL denies on the same host", func(t *testing.T) {
		v := s.Evaluate("host-a", FromVM("red-app-2"), flow(t, s, "red-app-2", "10.0.0.254", ProtoTCP, 40000, 80))
		wantDrop(t, v, ReasonACLDeny)
		if last := v.ACLs[len(v.ACLs)-1]; last.ACL != "deny-in" || last.VM != "red-fw" || last.Direction != In {
			t.Errorf("deciding ACL %+v", last)
		}
	})
	t.Run("remote VM in the same VNET is encapsulated with its VNI", func(t *testing.T) {
		v := s.Evaluate("host-a", FromVM("blue-web-1"), flow(t, s, "blue-web-1", "10.0.0.11", ProtoUDP, 5000, 53))
		if v.Action != Encap || v.PA != hostB || v.VNI != 1001 || v.VM != "blue-web-2" || v.Host != "host-b" {
			t.Fatalf("got %s", v)
		}
		if v.Rewrite != (Rewrite{DstMAC: mac(t, s, "blue-web-2")}) {
			t.Errorf("rewrite %s", v.Rewrite)
		}
	})
	t.Run("IPv6 too", func(t *testing.T) {
		v := s.Evaluate("host-a", FromVM("blue-web-1"), flow(t, s, "blue-web-1", "fd00:0:0:1::11", ProtoTCP, 5000, 443))
		if v.Action != Encap || v.PA != hostB || v.VNI != 1001 || v.VM != "blue-web-2" {
			t.Fatalf("got %s", v)
		}
	})
	t.Run("another VNET of the tenant is routed and uses that VNET's VNI", func(t *testing.T) {
		v := s.Evaluate("host-a", FromVM("blue-web-1"), flow(t, s, "blue-web-1", "10.0.1.10", ProtoTCP, 40000, 5432))
		if v.Action != Encap || v.VNI != 1002 || v.PA != hostB || v.VM != "blue-db-1" {
			t.Fatalf("got %s", v)
		}
		want := Rewrite{SrcMAC: s.RouterMAC(), DstMAC: mac(t, s, "blue-db-1"), DecTTL: true}
		if v.Rewrite != want {
			t.Errorf("rewrite %s, want %s", v.Rewrite, want)
		}
	})
	t.Run("routed packet with TTL 1", func(t *testing.T) {
		p := flow(t, s, "blue-web-1", "10.0.1.10", ProtoTCP, 40000, 5432)
		p.TTL = 1
		wantDrop(t, s.Evaluate("host-a", FromVM("blue-web-1"), p), ReasonTTLExpired)
		// Within one VNET nothing routes, so TTL 1 still goes.
		p = flow(t, s, "blue-web-1", "10.0.0.11", ProtoTCP, 40000, 80)
		p.TTL = 1
		if v := s.Evaluate("host-a", FromVM("blue-web-1"), p); v.Action != Encap {
			t.Errorf("got %s", v)
		}
	})
	t.Run("default route to a shared gateway", func(t *testing.T) {
		v := s.Evaluate("host-a", FromVM("blue-web-1"), flow(t, s, "blue-web-1", "203.0.113.9", ProtoTCP, 40000, 443))
		if v.Action != ToGateway || v.Gateway != "gw-shared" || v.PA != netip.MustParseAddr("198.18.0.100") || v.VNI != 1001 {
			t.Fatalf("got %s", v)
		}
		if v.Rewrite.Dst.IsValid() || !v.Rewrite.DecTTL || v.Rewrite.SrcMAC != s.RouterMAC() {
			t.Errorf("rewrite %s", v.Rewrite)
		}
	})
	t.Run("gateway rule translates the destination", func(t *testing.T) {
		v := s.Evaluate("host-b", FromVM("red-app-1"), flow(t, s, "red-app-1", "10.200.0.20", ProtoTCP, 40000, 3260))
		if v.Action != ToGateway || v.Gateway != "gw-red-storage" || v.PA != netip.MustParseAddr("198.18.0.101") || v.VNI != 2001 {
			t.Fatalf("got %s", v)
		}
		if v.Rewrite.Dst != netip.MustParseAddr("198.51.100.20") {
			t.Errorf("rewrite %s", v.Rewrite)
		}
		if v.Routes[0].Origin != RouteGatewayRule || v.Routes[0].Rule != "storage" {
			t.Errorf("route %+v", v.Routes[0])
		}
	})
	t.Run("next hop address: the appliance gets the packet unchanged but for MACs", func(t *testing.T) {
		v := s.Evaluate("host-a", FromVM("red-app-2"), flow(t, s, "red-app-2", "203.0.113.9", ProtoTCP, 40000, 22))
		if v.Action != Deliver || v.VM != "red-fw" {
			t.Fatalf("got %s\n%s", v, v.Explain())
		}
		if len(v.Routes) != 2 || v.Routes[0].NextHop.Kind != NextHopAddress || v.Routes[1].Prefix != netip.MustParsePrefix("10.0.0.0/24") {
			t.Errorf("routes %+v", v.Routes)
		}
		want := Rewrite{SrcMAC: s.RouterMAC(), DstMAC: mac(t, s, "red-fw"), DecTTL: true}
		if v.Rewrite != want {
			t.Errorf("rewrite %s, want %s", v.Rewrite, want)
		}
	})
	t.Run("route drop", func(t *testing.T) {
		wantDrop(t, s.Evaluate("host-a", FromVM("blue-web-1"), flow(t, s, "blue-web-1", "10.66.1.1", ProtoUDP, 1, 2)), ReasonRouteDrop)
	})
	t.Run("route to host", func(t *testing.T) {
		v := s.Evaluate("host-a", FromVM("blue-web-1"), flow(t, s, "blue-web-1", "10.99.0.1", ProtoUDP, 1, 2))
		if v.Action != ToHost || v.Reason != ReasonRouteToHost {
			t.Errorf("got %s", v)
		}
	})
	t.Run("no route", func(t *testing.T) {
		wantDrop(t, s.Evaluate("host-a", FromVM("blue-web-1"), flow(t, s, "blue-web-1", "fd00:0:0:2::1", ProtoUDP, 1, 2)), ReasonNoRoute)
	})
	t.Run("unknown destination in a subnet", func(t *testing.T) {
		wantDrop(t, s.Evaluate("host-a", FromVM("blue-web-1"), flow(t, s, "blue-web-1", "10.0.0.99", ProtoUDP, 1, 2)), ReasonUnknownDestination)
	})
	t.Run("outbound ACL deny", func(t *testing.T) {
		v := s.Evaluate("host-a", FromVM("blue-web-1"), flow(t, s, "blue-web-1", "10.0.0.11", ProtoTCP, 40000, 23))
		wantDrop(t, v, ReasonACLDeny)
		if len(v.ACLs) != 1 || v.ACLs[0].ACL != "no-telnet-out" || v.ACLs[0].Direction != Out {
			t.Errorf("ACLs %+v", v.ACLs)
		}
		if len(v.Routes) != 0 {
			t.Errorf("routing ran after an ACL deny: %+v", v.Routes)
		}
	})
	t.Run("spoofed source address", func(t *testing.T) {
		p := flow(t, s, "blue-web-1", "10.0.0.11", ProtoTCP, 40000, 80)
		p.Src = netip.MustParseAddr("10.0.0.12")
		wantDrop(t, s.Evaluate("host-a", FromVM("blue-web-1"), p), ReasonSpoofedSource)
	})
	t.Run("spoofed source MAC", func(t *testing.T) {
		p := flow(t, s, "blue-web-1", "10.0.0.11", ProtoTCP, 40000, 80)
		p.SrcMAC = mac(t, s, "red-app-2")
		wantDrop(t, s.Evaluate("host-a", FromVM("blue-web-1"), p), ReasonSpoofedSource)
	})
	t.Run("VM not on this host", func(t *testing.T) {
		wantDrop(t, s.Evaluate("host-a", FromVM("blue-web-2"), flow(t, s, "blue-web-2", "10.0.0.10", ProtoTCP, 1, 2)), ReasonUnknownPort)
		wantDrop(t, s.Evaluate("host-a", FromVM("nobody"), Packet{}), ReasonUnknownPort)
	})
	t.Run("unknown host", func(t *testing.T) {
		wantDrop(t, s.Evaluate("host-z", FromVM("blue-web-1"), Packet{}), ReasonUnknownHost)
	})
	t.Run("address resolution goes to the host", func(t *testing.T) {
		p := Packet{SrcMAC: mac(t, s, "blue-web-1"), EtherType: EtherTypeARP}
		if v := s.Evaluate("host-a", FromVM("blue-web-1"), p); v.Action != ToHost || v.Reason != ReasonAddressResolution {
			t.Errorf("ARP: got %s", v)
		}
		p = flow(t, s, "blue-web-1", "fd00:0:0:1::11", ProtoICMPv6, 0, 0)
		p.ICMPType = 135
		if v := s.Evaluate("host-a", FromVM("blue-web-1"), p); v.Action != ToHost || v.Reason != ReasonAddressResolution {
			t.Errorf("neighbor solicitation: got %s", v)
		}
	})
	t.Run("other EtherTypes are dropped", func(t *testing.T) {
		p := Packet{SrcMAC: mac(t, s, "blue-web-1"), EtherType: 0x88cc}
		wantDrop(t, s.Evaluate("host-a", FromVM("blue-web-1"), p), ReasonUnsupportedEtherType)
	})
	t.Run("addresses of the wrong family", func(t *testing.T) {
		p := flow(t, s, "blue-web-1", "fd00:0:0:1::11", ProtoTCP, 1, 2)
		p.EtherType = EtherTypeIPv4
		wantDrop(t, s.Evaluate("host-a", FromVM("blue-web-1"), p), ReasonMalformed)
	})
}

func TestEvaluateInbound(t *testing.T) {
	s := mustLoadExample(t)
	web1 := flow(t, s, "blue-web-1", "10.0.1.10", ProtoTCP, 40000, 5432)

	t.Run("deliver to the local VM by VNI and inner destination", func(t *testing.T) {
		v := s.Evaluate("host-b", FromUplink(1002, hostA), web1)
		if v.Action != Deliver || v.VM != "blue-db-1" || v.Rewrite != (Rewrite{DstMAC: mac(t, s, "blue-db-1")}) {
			t.Fatalf("got %s\n%s", v, v.Explain())
		}
		if len(v.ACLs) != 1 || v.ACLs[0].ACL != "db-from-web" || !v.ACLs[0].Stateful {
			t.Errorf("ACLs %+v", v.ACLs)
		}
	})
	t.Run("inbound ACL deny", func(t *testing.T) {
		p := web1
		p.DstPort = 22
		v := s.Evaluate("host-b", FromUplink(1002, hostA), p)
		wantDrop(t, v, ReasonACLDeny)
		if v.ACLs[0].ACL != "db-default-deny" {
			t.Errorf("ACLs %+v", v.ACLs)
		}
	})
	t.Run("unknown VNI", func(t *testing.T) {
		wantDrop(t, s.Evaluate("host-b", FromUplink(4242, hostA), web1), ReasonUnknownVNI)
	})
	t.Run("VM elsewhere", func(t *testing.T) {
		p := flow(t, s, "blue-web-2", "10.0.0.10", ProtoTCP, 1, 80)
		wantDrop(t, s.Evaluate("host-b", FromUplink(1001, hostB), p), ReasonNotLocal)
	})
	t.Run("unknown inner destination", func(t *testing.T) {
		p := web1
		p.Dst = netip.MustParseAddr("10.0.1.99")
		wantDrop(t, s.Evaluate("host-b", FromUplink(1002, hostA), p), ReasonUnknownDestination)
	})
	t.Run("outer source that does not host the inner source", func(t *testing.T) {
		// red-app-1 (10.0.0.10 on host-b) forging blue's VNI toward
		// blue-web-1 (also 10.0.0.10, on host-a): blue's 10.0.0.10 lives
		// on host-a, so host-b may not speak for it.
		p := flow(t, s, "red-app-1", "10.0.0.10", ProtoTCP, 1, 80)
		v := s.Evaluate("host-a", FromUplink(1001, hostB), p)
		wantDrop(t, v, ReasonTenantIsolation)
		// The same packet in red's own VNI is simply not for host-a's
		// blue-web-1: red's 10.0.0.10 is red-app-1 on host-b.
		wantDrop(t, s.Evaluate("host-a", FromUplink(2001, hostB), p), ReasonNotLocal)
	})
	t.Run("the appliance receives what is routed through it", func(t *testing.T) {
		p := flow(t, s, "red-app-1", "203.0.113.9", ProtoTCP, 40000, 22)
		out := s.Evaluate("host-b", FromVM("red-app-1"), p)
		if out.Action != Encap || out.VM != "red-fw" || out.PA != hostA || out.VNI != 2001 {
			t.Fatalf("sender: %s", out)
		}
		v := s.Evaluate("host-a", FromUplink(2001, hostB), out.Rewrite.Apply(p))
		if v.Action != Deliver || v.VM != "red-fw" {
			t.Fatalf("receiver: %s\n%s", v, v.Explain())
		}
		// The same destination arriving in blue's VNI is not red's to route.
		wantDrop(t, s.Evaluate("host-a", FromUplink(1001, hostB), out.Rewrite.Apply(p)), ReasonUnknownDestination)
	})
	t.Run("gateway replies are translated back", func(t *testing.T) {
		gw := netip.MustParseAddr("198.18.0.101")
		p := Packet{EtherType: EtherTypeIPv4, Src: netip.MustParseAddr("198.51.100.20"), Dst: netip.MustParseAddr("10.0.0.10"),
			Protocol: ProtoTCP, SrcPort: 3260, DstPort: 40000, TTL: 60}
		v := s.Evaluate("host-b", FromUplink(2001, gw), p)
		// Without a tracked connection red's deny-in drops it...
		wantDrop(t, v, ReasonACLDeny)
		if v.Rewrite.Src != netip.MustParseAddr("10.200.0.20") {
			t.Errorf("source not translated back: %s", v.Rewrite)
		}
		// ... and a dedicated gateway of another tenant cannot send in.
		wantDrop(t, s.Evaluate("host-a", FromUplink(1001, gw), flow(t, s, "blue-web-2", "10.0.0.10", ProtoTCP, 1, 80)), ReasonTenantIsolation)
	})
}

func TestStatefulACL(t *testing.T) {
	s := mustLoadExample(t)
	ct := NewConnTable()

	// red-app-2 → red-fw ssh: red-app-2's out-all and red-fw's ssh-in are
	// both stateful allows.
	req := flow(t, s, "red-app-2", "10.0.0.254", ProtoTCP, 40000, 22)
	v := s.EvaluateWith("host-a", FromVM("red-app-2"), req, ct.Options())
	if v.Action != Deliver {
		t.Fatalf("request: %s", v)
	}
	reply := req.Reverse()
	reply.SrcMAC, reply.DstMAC = mac(t, s, "red-fw"), mac(t, s, "red-app-2")

	// Untracked, red-app-2's deny-in drops the reply.
	wantDrop(t, s.EvaluateWith("host-a", FromVM("red-fw"), reply, ct.Options()), ReasonACLDeny)

	if n := ct.Record(req, v); n != 2 {
		t.Fatalf("recorded %d layers, want 2", n)
	}
	rv := s.EvaluateWith("host-a", FromVM("red-fw"), reply, ct.Options())
	if rv.Action != Deliver || rv.VM != "red-app-2" {
		t.Fatalf("tracked reply: %s\n%s", rv, rv.Explain())
	}
	for _, d := range rv.ACLs {
		if !d.Established {
			t.Errorf("layer %+v not passed as established", d)
		}
	}
	// A different port of the same pair is a new connection.
	other := reply
	other.DstPort = 40001
	wantDrop(t, s.EvaluateWith("host-a", FromVM("red-fw"), other, ct.Options()), ReasonACLDeny)

	// The storage reply comes through the gateway's NAT and is recognized
	// after translation.
	sreq := flow(t, s, "red-app-1", "10.200.0.20", ProtoTCP, 40000, 3260)
	sv := s.EvaluateWith("host-b", FromVM("red-app-1"), sreq, ct.Options())
	if sv.Action != ToGateway || ct.Record(sreq, sv) != 1 {
		t.Fatalf("storage request: %s", sv)
	}
	sreply := Packet{EtherType: EtherTypeIPv4, Src: netip.MustParseAddr("198.51.100.20"), Dst: sreq.Src,
		Protocol: ProtoTCP, SrcPort: 3260, DstPort: 40000, TTL: 60}
	if v := s.EvaluateWith("host-b", FromUplink(2001, netip.MustParseAddr("198.18.0.101")), sreply, ct.Options()); v.Action != Deliver || v.VM != "red-app-1" {
		t.Errorf("storage reply: %s\n%s", v, v.Explain())
	}

	// A stateless allow records nothing.
	bv := s.Evaluate("host-a", FromVM("blue-web-1"), flow(t, s, "blue-web-1", "10.0.0.11", ProtoTCP, 1, 80))
	if n := NewConnTable().Record(flow(t, s, "blue-web-1", "10.0.0.11", ProtoTCP, 1, 80), bv); n != 0 {
		t.Errorf("recorded %d layers for a default allow", n)
	}
}

func TestShadowActivation(t *testing.T) {
	s := mustLoadExample(t)
	p := flow(t, s, "blue-web-1", "10.0.0.11", ProtoTCP, 40000, 80)
	before := s.Evaluate("host-a", FromVM("blue-web-1"), p)
	if before.Action != Encap || before.PA != hostB {
		t.Fatalf("before activation: %s", before)
	}
	var shadowMaps []Mapping
	for m := range s.ShadowMappings() {
		shadowMaps = append(shadowMaps, m)
	}
	if len(shadowMaps) != 2 || shadowMaps[0].VM != "blue-web-2" || shadowMaps[0].PA != hostA || shadowMaps[0].Generation != 2 ||
		shadowMaps[1].CA != netip.MustParseAddr("fd00:0:0:1::11") {
		t.Errorf("shadow mappings %+v", shadowMaps)
	}
	if g, _ := s.ActiveGeneration("blue-web-2"); g != 1 {
		t.Errorf("active generation %d before activation", g)
	}
	if _, err := s.Activate("blue-web-2", 7); err == nil {
		t.Error("activating a generation the VM does not have succeeded")
	}
	if _, err := s.Activate("blue-web-1", 2); err == nil {
		t.Error("activating a VM without shadow succeeded")
	}
	s2, err := s.Activate("blue-web-2", 2)
	if err != nil {
		t.Fatal(err)
	}
	after := s2.Evaluate("host-a", FromVM("blue-web-1"), p)
	if after.Action != Deliver || after.VM != "blue-web-2" {
		t.Fatalf("after activation: %s", after)
	}
	m, _ := s2.Lookup(1001, netip.MustParseAddr("10.0.0.11"))
	if m.PA != hostA || m.Host != "host-a" || m.Generation != 2 {
		t.Errorf("mapping after activation %+v", m)
	}
	// The VM now sends from host-a and no longer from host-b.
	back := flow(t, s2, "blue-web-2", "10.0.0.10", ProtoTCP, 80, 40000)
	if v := s2.Evaluate("host-a", FromVM("blue-web-2"), back); v.Action != Deliver {
		t.Errorf("from the new host: %s", v)
	}
	wantDrop(t, s2.Evaluate("host-b", FromVM("blue-web-2"), back), ReasonUnknownPort)
	if names := vmNames(s2.LocalVMs("host-a")); !strings.Contains(names, "blue-web-2") {
		t.Errorf("host-a's VMs after activation: %s", names)
	}
	if names := vmNames(s2.LocalVMs("host-b")); strings.Contains(names, "blue-web-2") {
		t.Errorf("host-b's VMs after activation: %s", names)
	}
	// The original is untouched; rolling back restores it.
	if v := s.Evaluate("host-a", FromVM("blue-web-1"), p); v.Action != Encap {
		t.Errorf("original state changed: %s", v)
	}
	s3, err := s2.Activate("blue-web-2", 1)
	if err != nil {
		t.Fatal(err)
	}
	if v := s3.Evaluate("host-a", FromVM("blue-web-1"), p); v.Action != Encap || v.PA != hostB {
		t.Errorf("after rollback: %s", v)
	}
	c := Diff(s, s2)
	if len(c.Activations) != 1 || c.Activations[0].New.Generation != 2 || len(c.Mappings) != 0 {
		t.Errorf("diff of an activation: %+v", c)
	}
}

func vmNames(vms []VM) string {
	var n []string
	for _, v := range vms {
		n = append(n, v.Name)
	}
	return strings.Join(n, ",")
}

func TestExplain(t *testing.T) {
	s := mustLoadExample(t)
	v := s.Evaluate("host-a", FromVM("blue-web-1"), flow(t, s, "blue-web-1", "10.0.1.10", ProtoTCP, 40000, 5432))
	out := v.Explain()
	for _, want := range []string{"from VM blue-web-1", "route 10.0.1.0/24 (subnet) -> vnet db", "mapping vni 1002 10.0.1.10 -> VM blue-db-1", "=> encap vxlan vni 1002 to 198.18.0.2"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}
}

func TestTranslate(t *testing.T) {
	cases := []struct{ a, from, to, want string }{
		{"10.200.0.20", "10.200.0.20/32", "198.51.100.20/32", "198.51.100.20"},
		{"10.200.0.77", "10.200.0.0/24", "198.51.100.0/24", "198.51.100.77"},
		{"10.200.1.77", "10.200.0.0/23", "198.51.100.0/23", "198.51.101.77"},
		{"10.200.0.77", "10.200.0.0/28", "198.51.100.16/28", "198.51.100.29"},
		{"fd00::1:2", "fd00::/96", "2001:db8::/96", "2001:db8::1:2"},
	}
	for _, c := range cases {
		got := translate(netip.MustParseAddr(c.a), netip.MustParsePrefix(c.from), netip.MustParsePrefix(c.to))
		if got != netip.MustParseAddr(c.want) {
			t.Errorf("translate(%s, %s→%s) = %s, want %s", c.a, c.from, c.to, got, c.want)
		}
	}
}
