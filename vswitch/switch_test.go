package vswitch

import (
	"context"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

var (
	macVA1 = policy.MAC{0x02, 0, 0, 0, 0x01, 0x11}
	macVA2 = policy.MAC{0x02, 0, 0, 0, 0x01, 0x12}
	macVB1 = policy.MAC{0x02, 0, 0, 0, 0x02, 0x11}
	macVX  = policy.MAC{0x02, 0, 0, 0, 0x01, 0x20}
	macU1  = policy.MAC{0x02, 0, 0, 0, 0x03, 0x11}
	macU2  = policy.MAC{0x02, 0, 0, 0, 0x03, 0x12}
	pa1    = netip.MustParseAddr("198.18.0.1")
	pa2    = netip.MustParseAddr("198.18.0.2")
	pa3    = netip.MustParseAddr("198.18.0.3")
	caVA1  = netip.MustParseAddr("10.1.0.11")
	caVA2  = netip.MustParseAddr("10.1.0.12")
	caVB1  = netip.MustParseAddr("10.2.0.11")
	caVX   = netip.MustParseAddr("10.1.0.20")
	caU1   = netip.MustParseAddr("10.1.0.11") // tenant u reuses tenant t's plan
	caU2   = netip.MustParseAddr("10.1.0.12")
)

// smallPolicy is a hand-made state: tenant t with VNETs a (VNI 100) and b
// (VNI 200) across hosts h1, h2, h3, a VM vx on h2 with a shadow on h3, and
// tenant u reusing t's addresses. extra adds to it.
func smallPolicy(t testing.TB, extra func(b *policy.Builder)) *policy.State {
	return smallPolicyPA(t, pa2, extra)
}

// smallPolicyPA is smallPolicy with h2 at provider address h2PA.
func smallPolicyPA(t testing.TB, h2PA netip.Addr, extra func(b *policy.Builder)) *policy.State {
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "h1", PA: pa1})
	b.AddHost(policy.Host{Name: "h2", PA: h2PA})
	b.AddHost(policy.Host{Name: "h3", PA: pa3})
	b.AddTenant(policy.Tenant{Name: "t"})
	b.AddTenant(policy.Tenant{Name: "u"})
	b.AddVNET(policy.VNET{Tenant: "t", Name: "a", VNI: 100, Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}})
	b.AddVNET(policy.VNET{Tenant: "t", Name: "b", VNI: 200, Subnets: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24")}})
	b.AddVNET(policy.VNET{Tenant: "u", Name: "a", VNI: 300, Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}})
	b.AddVM(policy.VM{Name: "va1", Tenant: "t", VNET: "a", MAC: macVA1, CAs: []netip.Addr{caVA1}, Host: "h1"})
	b.AddVM(policy.VM{Name: "va2", Tenant: "t", VNET: "a", MAC: macVA2, CAs: []netip.Addr{caVA2}, Host: "h2"})
	b.AddVM(policy.VM{Name: "vb1", Tenant: "t", VNET: "b", MAC: macVB1, CAs: []netip.Addr{caVB1}, Host: "h1"})
	b.AddVM(policy.VM{Name: "vx", Tenant: "t", VNET: "a", MAC: macVX, CAs: []netip.Addr{caVX}, Host: "h2"})
	b.AddVM(policy.VM{Name: "u1", Tenant: "u", VNET: "a", MAC: macU1, CAs: []netip.Addr{caU1}, Host: "h1"})
	b.AddVM(policy.VM{Name: "u2", Tenant: "u", VNET: "a", MAC: macU2, CAs: []netip.Addr{caU2}, Host: "h2"})
	b.AddShadow(policy.Shadow{VM: "vx", Host: "h3", Generation: 2})
	if extra != nil {
		extra(b)
	}
	st, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func udp(src, dst policy.MAC, s, d netip.Addr, sp, dp uint16) policy.Packet {
	et := policy.EtherTypeIPv4
	if s.Is6() {
		et = policy.EtherTypeIPv6
	}
	return policy.Packet{SrcMAC: src, DstMAC: dst, EtherType: et, Src: s, Dst: d, Protocol: policy.ProtoUDP, SrcPort: sp, DstPort: dp, TTL: 64}
}

func tcp(src, dst policy.MAC, s, d netip.Addr, sp, dp uint16) policy.Packet {
	p := udp(src, dst, s, d, sp, dp)
	p.Protocol = policy.ProtoTCP
	return p
}

// sendVM sends p from vm's vport and returns where it landed.
func (tp *topo) sendVM(vm string, p policy.Packet) []delivery {
	host, _, _, _ := tp.st.Location(vm)
	for _, h := range tp.hosts {
		if _, ok := h.ports[vm]; ok && (h.name == host || host == "") {
			return tp.send(h, h.ports[vm], frameOf(p))
		}
	}
	tp.t.Fatalf("VM %s has no port", vm)
	return nil
}

func deliveredTo(t testing.TB, got []delivery, h *testHost, vm string) policy.Packet {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("%d frames delivered, want 1 to %s on %s", len(got), vm, h.name)
	}
	if got[0].host != h || got[0].port != h.ports[vm] {
		t.Fatalf("delivered on %s port %d, want %s's port %d on %s", got[0].host.name, got[0].port, vm, h.ports[vm], h.name)
	}
	p, _ := packetFrom(t, got[0].frame)
	return p
}

func TestFirstPacketOffloadedLaterPacketsStayOnNIC(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	p := udp(macVA1, macVA2, caVA1, caVA2, 1000, 53)
	got := deliveredTo(t, tp.sendVM("va1", p), h2, "va2")
	if got.DstMAC != macVA2 || got.Src != caVA1 || got.TTL != 64 {
		t.Fatalf("delivered %v", got)
	}
	s1, s2 := h1.sw.Stats(), h2.sw.Stats()
	if s1.Packets != 1 || s1.FlowsNIC != 1 || s2.Packets != 1 || s2.FlowsNIC != 1 {
		t.Fatalf("after the first packet:\nh1 %s\nh2 %s", s1, s2)
	}
	for i := 0; i < 5; i++ {
		deliveredTo(t, tp.sendVM("va1", p), h2, "va2")
	}
	if s := h1.sw.Stats(); s.Packets != 1 {
		t.Fatalf("later packets reached h1's host: %d exceptions", s.Packets)
	}
	if s := h2.sw.Stats(); s.Packets != 1 {
		t.Fatalf("later packets reached h2's host: %d exceptions", s.Packets)
	}
	// Counters from the NIC merge into the flow's statistics.
	if err := h1.sw.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	fs := h1.sw.Flows()
	if len(fs) != 1 || fs[0].Packets != 6 || fs[0].Path != PathNIC {
		t.Fatalf("flows: %+v", fs)
	}
	ex := h1.sw.Explain(Description{VM: "va1", Packet: p})
	s := ex.String()
	for _, want := range []string{"from VM va1", "routing domain of t", "VNET mapping", "encapsulate in vxlan with vni 100", "Handled: NIC", "6 packets"} {
		if !strings.Contains(s, want) {
			t.Errorf("explain lacks %q:\n%s", want, s)
		}
	}
	if ex.Where != PathNIC {
		t.Errorf("explain says %s", ex.Where)
	}
	// An inbound flow explained by description, on h2.
	in := h2.sw.Explain(Description{Uplink: true, VNI: 100, OuterSrc: pa1, Packet: p})
	if in.Where != PathNIC || in.Action != policy.Deliver || in.Flow == nil {
		t.Errorf("inbound explain:\n%s", in)
	}
}

func TestRoutedAndTenantIsolation(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{})
	h1 := tp.byNm["h1"]
	st := tp.st
	// va1 → vb1 crosses VNETs on the same host: routed (router MAC, TTL-1).
	got := deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVB1, caVA1, caVB1, 5, 6)), h1, "vb1")
	if got.SrcMAC != st.RouterMAC() || got.TTL != 63 {
		t.Fatalf("routed packet %v", got)
	}
	// A routed packet with TTL 1 is dropped in the host, counted, and does
	// not poison the flow.
	p := udp(macVA1, macVB1, caVA1, caVB1, 5, 6)
	p.TTL = 1
	if got := tp.sendVM("va1", p); len(got) != 0 {
		t.Fatalf("TTL 1 delivered")
	}
	if d := h1.sw.Stats().Drops["ttl"]; d != 1 {
		t.Fatalf("ttl drops %d", d)
	}
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVB1, caVA1, caVB1, 5, 6)), h1, "vb1")
	// u1 uses the same CA plan as t: its packet reaches u2 only.
	deliveredTo(t, tp.sendVM("u1", udp(macU1, macU2, caU1, caU2, 7, 8)), tp.byNm["h2"], "u2")
	// A spoofed source is dropped, as a flow on the NIC.
	if got := tp.sendVM("u1", udp(macU1, macU2, caVB1, caU2, 7, 8)); len(got) != 0 {
		t.Fatal("spoofed packet delivered")
	}
	ex := h1.sw.Explain(Description{VM: "u1", Packet: udp(macU1, macU2, caVB1, caU2, 7, 8)})
	if ex.Reason != policy.ReasonSpoofedSource || ex.Where != PathNIC {
		t.Fatalf("explain spoofed:\n%s", ex)
	}
}

func TestStatefulReplyOffloadedWithRequestAndAgesOut(t *testing.T) {
	st := smallPolicy(t, func(b *policy.Builder) {
		b.AddACL(policy.ACL{Tenant: "t", ID: "deny-in-va1", Priority: 100, Direction: policy.In, Action: policy.Deny,
			Dst: []netip.Prefix{netip.PrefixFrom(caVA1, 32)}, Protocol: policy.ProtoTCP})
		b.AddACL(policy.ACL{Tenant: "t", ID: "out-va1", Priority: 10, Direction: policy.Out, Action: policy.Allow, Stateful: true,
			Src: []netip.Prefix{netip.PrefixFrom(caVA1, 32)}, Protocol: policy.ProtoTCP})
	})
	tp := newTopo(t, st, topoOpts{flowIdle: 10 * time.Second})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	req := tcp(macVA1, macVA2, caVA1, caVA2, 40000, 80)
	reply := tcp(macVA2, macVA1, caVA2, caVA1, 80, 40000)
	// Unsolicited: denied at va1's inbound layer.
	if got := tp.sendVM("va2", reply); len(got) != 0 {
		t.Fatal("unsolicited reply delivered")
	}
	deliveredTo(t, tp.sendVM("va1", req), h2, "va2")
	before := h1.sw.Stats().Packets
	got := deliveredTo(t, tp.sendVM("va2", reply), h1, "va1")
	if got.Src != caVA2 {
		t.Fatalf("reply %v", got)
	}
	if after := h1.sw.Stats().Packets; after != before {
		t.Fatalf("the reply reached h1's host (%d exceptions, %d before): it was not offloaded with the request", after, before)
	}
	// Another connection's reply is still denied.
	if got := tp.sendVM("va2", tcp(macVA2, macVA1, caVA2, caVA1, 80, 40001)); len(got) != 0 {
		t.Fatal("reply of an unopened connection delivered")
	}
	// Keep the connection busy through one idle period: NIC counters keep it.
	tp.clock.Advance(8 * time.Second)
	deliveredTo(t, tp.sendVM("va2", reply), h1, "va1")
	deliveredTo(t, tp.sendVM("va1", req), h2, "va2")
	for _, h := range tp.hosts {
		h.sw.Maintain(context.Background())
	}
	tp.clock.Advance(15 * time.Second)
	for _, h := range tp.hosts {
		h.sw.Maintain(context.Background())
	}
	if s := h1.sw.Stats(); s.Conns != 1 {
		t.Fatalf("connection gone while in use:\n%s", s)
	}
	// Idle past ConnIdle (2×FlowIdle): the connection and its flows go.
	tp.clock.Advance(25 * time.Second)
	for _, h := range tp.hosts {
		h.sw.Maintain(context.Background())
	}
	s := h1.sw.Stats()
	if s.Conns != 0 || s.ConnsExpired != 1 || s.Flows != 0 {
		t.Fatalf("after aging:\n%s", s)
	}
	if got := tp.sendVM("va2", reply); len(got) != 0 {
		t.Fatal("reply delivered after its connection aged out")
	}
}

func TestUpdateRevalidatesOnlyDerivedFlows(t *testing.T) {
	st := smallPolicy(t, nil)
	// Exact flows, reprogrammed in place by the update; port-wildcard
	// flows whose verdict comes to depend on the ports are removed
	// instead (TestWildcardUpdate).
	tp := newTopo(t, st, topoOpts{exact: true})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, 1, 2)), h2, "va2")
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVB1, caVA1, caVB1, 1, 2)), h1, "vb1")
	deliveredTo(t, tp.sendVM("u1", udp(macU1, macU2, caU1, caU2, 1, 2)), h2, "u2")
	ids := map[hal.RuleID]bool{}
	for _, f := range h1.sw.Flows() {
		ids[f.ID] = true
	}
	// Tenant t denies UDP to port 2 from now on; tenant u is untouched.
	b := st.Builder()
	b.AddACL(policy.ACL{Tenant: "t", ID: "no-2", Priority: 1, Direction: policy.Out, Action: policy.Deny, Protocol: policy.ProtoUDP,
		DstPorts: []policy.PortRange{{Lo: 2, Hi: 2}}})
	st2, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range tp.hosts {
		if err := h.sw.Update(context.Background(), st2); err != nil {
			t.Fatal(err)
		}
	}
	tp.st = st2
	s := h1.sw.Stats()
	if s.Revalidated != 2 || s.Changed != 2 {
		t.Fatalf("revalidated %d changed %d, want 2 and 2 (tenant t's flows only)", s.Revalidated, s.Changed)
	}
	for _, f := range h1.sw.Flows() {
		if !ids[f.ID] || f.Path != PathNIC {
			t.Fatalf("flow reprogrammed under a new ID or moved: %+v", f)
		}
	}
	before := h1.sw.Stats().Packets
	if got := tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, 1, 2)); len(got) != 0 {
		t.Fatal("packet delivered after the policy denied it")
	}
	deliveredTo(t, tp.sendVM("u1", udp(macU1, macU2, caU1, caU2, 1, 2)), h2, "u2")
	if h1.sw.Stats().Packets != before {
		t.Fatal("packets reached the host after the update: the NIC rules were not reprogrammed")
	}
	// An update with no change touches nothing.
	if err := h1.sw.Update(context.Background(), st2); err != nil {
		t.Fatal(err)
	}
	if s2 := h1.sw.Stats(); s2.Revalidated != s.Revalidated {
		t.Fatal("an empty change revalidated flows")
	}
}

func TestSealedFramesFailClosed(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{})
	h1 := tp.byNm["h1"]
	if h1.sw.caps.Crypto {
		t.Skip("NIC has crypto")
	}
	frame := wire.Build(wire.FrameSpec{SrcMAC: hal.MAC(macVA1), DstMAC: hal.MAC(macVA2), EthType: hal.EtherTypeSealed,
		Payload: []byte("sealed destination, opaque to the host........")})
	// softnic has no crypto and drops sealed frames itself.
	if got := tp.send(h1, h1.ports["va1"], frame); len(got) != 0 {
		t.Fatalf("sealed frame delivered: %d frames", len(got))
	}
	// A NIC that hands them to the host (as a miss, or as a seal it could
	// not open) gets them dropped there, never opened.
	exc := []hal.Exception{
		{InPort: h1.ports["va1"], Reason: hal.ReasonMiss, Buf: frame, Len: len(frame)},
		{InPort: h1.ports["va1"], Reason: hal.ReasonSealed, Buf: frame, Len: len(frame)},
	}
	if err := h1.sw.HandleBatch(context.Background(), exc); err != nil {
		t.Fatal(err)
	}
	if got := tp.settle(h1); len(got) != 0 {
		t.Fatalf("sealed frame delivered from the host: %d frames", len(got))
	}
	s := h1.sw.Stats()
	if s.Drops["sealed"] != 2 || s.Flows != 0 || s.Injected != 0 {
		t.Fatalf("sealed frames not dropped and counted:\n%s", s)
	}
	ex := h1.sw.ExplainFrame(h1.ports["va1"], frame)
	if !strings.Contains(ex.String(), "fail closed") {
		t.Fatalf("explain:\n%s", ex)
	}
}

func TestShadowActivationMovesFlowsAtOnce(t *testing.T) {
	st := smallPolicy(t, nil)
	tp := newTopo(t, st, topoOpts{})
	h1, h2, h3 := tp.byNm["h1"], tp.byNm["h2"], tp.byNm["h3"]
	var ps []policy.Packet
	for i := 0; i < 20; i++ {
		p := udp(macVA1, macVX, caVA1, caVX, uint16(2000+i), 9)
		ps = append(ps, p)
		deliveredTo(t, tp.sendVM("va1", p), h2, "vx")
	}
	for _, f := range h1.sw.Flows() {
		if f.Path != PathNIC || f.ShadowID == 0 || f.Scope == 0 {
			t.Fatalf("flow toward vx without an inactive shadow rule: %+v", f)
		}
	}
	// h2 and h3 learn the move too (h3 becomes vx's host).
	for _, h := range []*testHost{h1, h2, h3} {
		if err := h.sw.ActivateShadow(context.Background(), "vx"); err != nil {
			t.Fatal(err)
		}
	}
	tp.st, _ = st.Activate("vx", 2)
	before, before2 := h1.sw.Stats().Packets, h2.sw.Stats().Packets
	for _, p := range ps {
		deliveredTo(t, tp.sendVM("va1", p), h3, "vx")
	}
	if h1.sw.Stats().Packets != before {
		t.Fatal("packets reached h1's host after activation: the shadow rules were not live")
	}
	if n := h2.sw.Stats().Packets; n != before2 {
		t.Fatalf("h2 saw %d exceptions after activation; no packet may go to the old PA after activation", n-before2)
	}
	if err := h1.sw.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, f := range h1.sw.Flows() {
		if f.ShadowID != 0 || f.Gen != 1 || f.Path != PathNIC {
			t.Fatalf("after retirement: %+v", f)
		}
	}
	n := 0
	h1.soft.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		n++
		if !ri.Live {
			t.Errorf("inactive rule left after retirement: %v", &ri.Rule)
		}
		return nil
	})
	// One rule per flow: 20 exact flows, or one port-wildcard flow for
	// the 20 connections.
	if want := len(h1.sw.Flows()); n != want || want == 0 {
		t.Fatalf("%d rules on h1, want %d", n, want)
	}
	for _, p := range ps[:3] {
		deliveredTo(t, tp.sendVM("va1", p), h3, "vx")
	}
	// A new flow after activation goes to the new location too.
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVX, caVA1, caVX, 3000, 9)), h3, "vx")
}

func TestShadowActivationThroughUpdate(t *testing.T) {
	st := smallPolicy(t, nil)
	tp := newTopo(t, st, topoOpts{})
	h1, h3 := tp.byNm["h1"], tp.byNm["h3"]
	p := udp(macVA1, macVX, caVA1, caVX, 1, 9)
	deliveredTo(t, tp.sendVM("va1", p), tp.byNm["h2"], "vx")
	st2, err := st.Activate("vx", 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range tp.hosts {
		if err := h.sw.Update(context.Background(), st2); err != nil {
			t.Fatal(err)
		}
	}
	tp.st = st2
	if s := h1.sw.Stats(); s.Activations != 1 {
		t.Fatalf("update did not flip the generation:\n%s", s)
	}
	deliveredTo(t, tp.sendVM("va1", p), h3, "vx")
	if err := h1.sw.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	fs := h1.sw.Flows()
	if len(fs) != 1 || fs[0].ShadowID != 0 || fs[0].Gen != 1 {
		t.Fatalf("old generation not retired after an update's activation: %+v", fs)
	}
	deliveredTo(t, tp.sendVM("va1", p), h3, "vx")
}

// TestProactiveRules: with per-destination rules, the first packet to a
// remote VM of the same VNET never reaches the host, Explain says which rule
// handles it, and a migration flips those rules with the rest of the scope.
func TestProactiveRules(t *testing.T) {
	st := smallPolicy(t, nil)
	tp := newTopo(t, st, topoOpts{proactive: true})
	h1, h2, h3 := tp.byNm["h1"], tp.byNm["h2"], tp.byNm["h3"]
	// va1→va2, va1→vx and u1→u2; vb1 is alone in its VNET.
	if n := h1.sw.Stats().ProactiveRules; n != 3 {
		t.Fatalf("%d per-destination rules on h1, want 3", n)
	}
	p := tcp(macVA1, macVA2, caVA1, caVA2, 5555, 443)
	ex := h1.sw.Explain(Description{VM: "va1", Packet: p})
	if ex.Where != PathNIC || !strings.Contains(ex.Detail, "per-destination rule") {
		t.Fatalf("explain:\n%s", ex)
	}
	deliveredTo(t, tp.sendVM("va1", p), h2, "va2")
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVX, caVA1, caVX, 1, 2)), h2, "vx")
	if s := h1.sw.Stats(); s.Packets != 0 {
		t.Fatalf("first packets reached h1's host:\n%s", s)
	}
	// Routed traffic is not covered: it takes the slow path.
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVB1, caVA1, caVB1, 1, 2)), h1, "vb1")
	if s := h1.sw.Stats(); s.Packets != 1 {
		t.Fatalf("routed packet: %d exceptions", s.Packets)
	}
	for _, h := range tp.hosts {
		if err := h.sw.ActivateShadow(context.Background(), "vx"); err != nil {
			t.Fatal(err)
		}
	}
	tp.st, _ = st.Activate("vx", 2)
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVX, caVA1, caVX, 1, 3)), h3, "vx")
	if s := h1.sw.Stats(); s.Packets != 1 {
		t.Fatalf("after activation, packets reached h1's host: %d", s.Packets)
	}
	h1.sw.Maintain(context.Background())
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVX, caVA1, caVX, 1, 4)), h3, "vx")
	// A policy change that adds an outbound ACL for tenant t withdraws them.
	b := tp.st.Builder()
	b.AddACL(policy.ACL{Tenant: "t", ID: "deny-443", Priority: 1, Direction: policy.Out, Action: policy.Deny, Protocol: policy.ProtoTCP,
		DstPorts: []policy.PortRange{{Lo: 443, Hi: 443}}})
	st2, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range tp.hosts {
		if err := h.sw.Update(context.Background(), st2); err != nil {
			t.Fatal(err)
		}
	}
	tp.st = st2
	if got := tp.sendVM("va1", p); len(got) != 0 {
		t.Fatal("a per-destination rule let a denied packet through")
	}
	rep, err := h1.sw.Reconcile(context.Background())
	if err != nil || rep.Removed != 0 || rep.Added != 0 || rep.Modified != 0 {
		t.Fatalf("reconcile after the update: %+v %v", rep, err)
	}
}

// TestUpdateIsAtomicUnderTraffic sends a flow's packets continuously while
// the policy changes from allowing them to denying them: every packet is
// handled by the old policy or the new one, and none after Update returned
// sees the old one.
func TestUpdateIsAtomicUnderTraffic(t *testing.T) {
	st := smallPolicy(t, nil)
	tp := newTopo(t, st, topoOpts{})
	h1 := tp.byNm["h1"]
	b := st.Builder()
	b.AddACL(policy.ACL{Tenant: "t", ID: "deny", Priority: 1, Direction: policy.Out, Action: policy.Deny, Protocol: policy.ProtoUDP})
	st2, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	var updated atomic.Bool
	done := make(chan struct{})
	var oldAfter, total int
	go func() {
		defer close(done)
		for i := 0; i < 400; i++ {
			after := updated.Load()
			p := udp(macVA1, macVA2, caVA1, caVA2, uint16(1+i%7), 9)
			got := tp.sendVM("va1", p)
			total++
			if len(got) > 1 {
				t.Errorf("packet delivered %d times", len(got))
				return
			}
			if len(got) == 1 && after {
				oldAfter++
			}
		}
	}()
	time.Sleep(2 * time.Millisecond)
	if err := h1.sw.Update(context.Background(), st2); err != nil {
		t.Fatal(err)
	}
	updated.Store(true)
	<-done
	if oldAfter != 0 {
		t.Fatalf("%d of %d packets sent after the update saw the old policy", oldAfter, total)
	}
}

// TestConnectionExpiryTakesItsOpener: when a tracked connection expires
// while the flow that opened it is still cached (ConnIdle shorter than
// FlowIdle), that flow goes too, so its next packet opens the connection
// again and the reply is allowed.
func TestConnectionExpiryTakesItsOpener(t *testing.T) {
	st := smallPolicy(t, func(b *policy.Builder) {
		b.AddACL(policy.ACL{Tenant: "t", ID: "deny-in-va1", Priority: 100, Direction: policy.In, Action: policy.Deny,
			Dst: []netip.Prefix{netip.PrefixFrom(caVA1, 32)}, Protocol: policy.ProtoTCP})
		b.AddACL(policy.ACL{Tenant: "t", ID: "out-va1", Priority: 10, Direction: policy.Out, Action: policy.Allow, Stateful: true,
			Src: []netip.Prefix{netip.PrefixFrom(caVA1, 32)}, Protocol: policy.ProtoTCP})
	})
	tp := newTopo(t, st, topoOpts{flowIdle: time.Minute, connIdle: 10 * time.Second})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	req := tcp(macVA1, macVA2, caVA1, caVA2, 40000, 80)
	reply := tcp(macVA2, macVA1, caVA2, caVA1, 80, 40000)
	deliveredTo(t, tp.sendVM("va1", req), h2, "va2")
	tp.clock.Advance(15 * time.Second)
	h1.sw.Maintain(context.Background())
	if s := h1.sw.Stats(); s.Conns != 0 || s.Flows != 0 {
		t.Fatalf("after the connection expired:\n%s", s)
	}
	deliveredTo(t, tp.sendVM("va1", req), h2, "va2")
	deliveredTo(t, tp.sendVM("va2", reply), h1, "va1")
}

// A flow whose rule is replaced under a new ID (an update that takes it
// through the host and back does so) counts the new rule's packets from
// zero: the old rule's reading is no baseline for them, and the flow stays
// in use for the idle expiry.
func TestReplacedRuleCountsFromZero(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{exact: true})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	p := udp(macVA1, macVA2, caVA1, caVA2, 1000, 53)
	for range 6 {
		deliveredTo(t, tp.sendVM("va1", p), h2, "va2")
	}
	ctx := context.Background()
	if err := h1.sw.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	fs := h1.sw.Flows()
	if len(fs) != 1 || fs[0].Packets != 6 || fs[0].Path != PathNIC {
		t.Fatalf("flows before the replacement: %+v", fs)
	}
	var f *flow
	for fl := range h1.sw.tableFlows() {
		f = fl
	}
	old := f.h.id
	h1.sw.unplace(f)
	h1.sw.place(f)
	h1.sw.flush(ctx)
	if f.h.id == 0 || f.h.id == old || f.h.loc != PathNIC {
		t.Fatalf("the flow's rule was not replaced: ID %d (was %d), on %s", f.h.id, old, f.h.loc)
	}
	for range 3 {
		deliveredTo(t, tp.sendVM("va1", p), h2, "va2")
	}
	if s := h1.sw.Stats(); s.Packets != 1 {
		t.Fatalf("packets reached h1's host: %d exceptions", s.Packets)
	}
	used := f.h.lastUsed
	tp.clock.Advance(time.Second)
	if err := h1.sw.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	fs = h1.sw.Flows()
	if len(fs) != 1 || fs[0].Packets != 9 {
		t.Fatalf("flows after 3 packets on the new rule: %+v, want 9 packets", fs)
	}
	if f.h.lastUsed == used {
		t.Fatal("the new rule's packets did not count as use of the flow")
	}
}
