package vswitch

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// encapVNET is one VNET of encapPolicy: VM <name>1 on h1 and <name>2 on
// h2, at .11 and .12 of its subnet.
type encapVNET struct {
	name   string
	vni    uint32
	kind   policy.EncapKind
	subnet int // 10.<subnet>.0.0/24
}

var encapVNETs = []encapVNET{
	{"vx", 100, policy.EncapVXLAN, 1},
	{"gn", 200, policy.EncapGeneve, 2},
	{"nv", 300, policy.EncapNVGRE, 3},
}

var gwPA = netip.MustParseAddr("198.18.0.100")

func (v encapVNET) vm(i int) string { return v.name + string(rune('0'+i)) }
func (v encapVNET) ca(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(v.subnet), 0, byte(10 + i)})
}
func (v encapVNET) mac(i int) policy.MAC { return policy.MAC{2, 0, 0, byte(v.subnet), 0, byte(i)} }
func (v encapVNET) hal() hal.EncapKind   { return encapOf(v.kind) }

// packet is a UDP packet from VM i of v to VM j of w.
func (v encapVNET) packet(i int, w encapVNET, j int, sport uint16) policy.Packet {
	dst := w.mac(j)
	if v.name != w.name {
		dst = policy.DefaultRouterMAC
	}
	return udp(v.mac(i), dst, v.ca(i), w.ca(j), sport, 53)
}

// encapPolicy has one VNET of each encapsulation in tenant t across hosts
// h1 and h2, and a default route to gateway gw.
func encapPolicy(t testing.TB, extra func(b *policy.Builder)) *policy.State {
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "h1", PA: pa1})
	b.AddHost(policy.Host{Name: "h2", PA: pa2})
	b.AddGateway(policy.Gateway{Name: "gw", PA: gwPA})
	b.AddTenant(policy.Tenant{Name: "t"})
	for _, v := range encapVNETs {
		b.AddVNET(policy.VNET{Tenant: "t", Name: v.name, VNI: v.vni, Encap: v.kind,
			Subnets: []netip.Prefix{netip.PrefixFrom(v.ca(0), 24).Masked()}})
		for i, h := range []string{"h1", "h2"} {
			b.AddVM(policy.VM{Name: v.vm(i + 1), Tenant: "t", VNET: v.name, MAC: v.mac(i + 1), CAs: []netip.Addr{v.ca(i + 1)}, Host: h})
		}
	}
	b.AddRoute(policy.Route{Tenant: "t", Prefix: netip.MustParsePrefix("0.0.0.0/0"), NextHop: policy.NextHop{Kind: policy.NextHopGateway, Gateway: "gw"}})
	if extra != nil {
		extra(b)
	}
	st, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// wireLog records the frames carried between hosts, parsed.
type wireLog struct{ keys []hal.FlowKey }

func (w *wireLog) tap(tp *topo) {
	tp.wire = func(_, _ *testHost, fr []byte) {
		var k hal.FlowKey
		var l wire.Layout
		if err := wire.Parse(fr, 0, &k, &l); err != nil {
			tp.t.Fatalf("a frame on the wire does not parse: %v", err)
		}
		w.keys = append(w.keys, k)
	}
}

// take returns the one frame carried since the last take.
func (w *wireLog) take(t *testing.T, what string) hal.FlowKey {
	t.Helper()
	if len(w.keys) != 1 {
		t.Fatalf("%s: %d frames on the wire, want 1", what, len(w.keys))
	}
	k := w.keys[0]
	w.keys = w.keys[:0]
	return k
}

func wantTunnel(t *testing.T, what string, k hal.FlowKey, kind hal.EncapKind, vni uint32, src, dst netip.Addr) {
	t.Helper()
	if k.TunKind != kind || k.VNI != vni || hal.AddrFrom16(k.TunSrc) != src || hal.AddrFrom16(k.TunDst) != dst {
		t.Fatalf("%s: on the wire %s vni %d %s > %s, want %s vni %d %s > %s", what,
			k.TunKind, k.VNI, hal.AddrFrom16(k.TunSrc), hal.AddrFrom16(k.TunDst), kind, vni, src, dst)
	}
}

// encapActionOf returns the encapsulation in a flow's actions.
func encapActionOf(acts []hal.Action) (hal.Encap, bool) {
	for _, a := range acts {
		if a.Kind == hal.ActionEncap {
			return a.Encap, true
		}
	}
	return hal.Encap{}, false
}

// Each VNET's traffic leaves in its own encapsulation and is taken in it,
// both ways, on the first packet (the host path) and on the packets after
// it (the NIC).
func TestEncapPerVNETBothDirections(t *testing.T) {
	for _, v := range encapVNETs {
		t.Run(v.kind.String(), func(t *testing.T) {
			tp := newTopo(t, encapPolicy(t, nil), topoOpts{})
			var w wireLog
			w.tap(tp)
			h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
			req, rep := v.packet(1, v, 2, 4000), v.packet(2, v, 1, 53)
			rep.DstPort = 4000
			for round := range 4 {
				deliveredTo(t, tp.sendVM(v.vm(1), req), h2, v.vm(2))
				wantTunnel(t, "request", w.take(t, "request"), v.hal(), v.vni, pa1, pa2)
				deliveredTo(t, tp.sendVM(v.vm(2), rep), h1, v.vm(1))
				wantTunnel(t, "reply", w.take(t, "reply"), v.hal(), v.vni, pa2, pa1)
				// The first packet each way walks the layers in the host;
				// the rest stay on the NICs.
				if s1, s2 := h1.sw.Stats(), h2.sw.Stats(); s1.Packets != 2 || s2.Packets != 2 || s1.FlowsNIC != 2 || s2.FlowsNIC != 2 {
					t.Fatalf("round %d:\nh1 %s\nh2 %s", round, s1, s2)
				}
			}
			for _, h := range tp.hosts {
				for _, f := range h.sw.Flows() {
					if f.Path != PathNIC {
						t.Errorf("%s: flow not offloaded: %+v", h.name, f)
					}
					if e, ok := encapActionOf(f.Actions); ok && (e.Kind != v.hal() || e.VNI != v.vni) {
						t.Errorf("%s: flow encapsulates in %s vni %d", h.name, e.Kind, e.VNI)
					}
					if k := f.Match.Key; k.TunKind != hal.EncapNone && (k.TunKind != v.hal() || k.VNI != v.vni) {
						t.Errorf("%s: flow takes %s vni %d", h.name, k.TunKind, k.VNI)
					}
				}
			}
			ex := h1.sw.Explain(Description{VM: v.vm(1), Packet: req}).String()
			for _, want := range []string{"encapsulate in " + v.hal().String() + " with vni", "Verdict: encapsulate in " + v.hal().String(), "Handled: NIC"} {
				if !strings.Contains(ex, want) {
					t.Errorf("explain lacks %q:\n%s", want, ex)
				}
			}
			// Explained from the uplink, the packet arrives in its VNET's
			// encapsulation unless the description says otherwise.
			in := h2.sw.Explain(Description{Uplink: true, VNI: v.vni, OuterSrc: pa1, Packet: req})
			if in.Key.TunKind != v.hal() || in.Action != policy.Deliver || in.Where != PathNIC {
				t.Errorf("inbound explain:\n%s", in)
			}
		})
	}
}

// Across VNETs a packet takes the destination VNET's VNI and
// encapsulation; toward a gateway, the sender's.
func TestEncapAcrossVNETsAndToGateway(t *testing.T) {
	tp := newTopo(t, encapPolicy(t, nil), topoOpts{})
	var w wireLog
	w.tap(tp)
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	for _, src := range encapVNETs {
		for _, dst := range encapVNETs {
			if src == dst {
				continue
			}
			for range 2 {
				deliveredTo(t, tp.sendVM(src.vm(1), src.packet(1, dst, 2, 7000)), h2, dst.vm(2))
				wantTunnel(t, src.name+" to "+dst.name, w.take(t, src.name+" to "+dst.name), dst.hal(), dst.vni, pa1, pa2)
			}
		}
		p := src.packet(1, src, 1, 7000)
		p.Dst = netip.MustParseAddr("203.0.113.9")
		for range 2 {
			got := tp.sendVM(src.vm(1), p)
			if len(got) != 1 || got[0].host != h1 || got[0].port != h1.uplink {
				t.Fatalf("%s to the gateway: %+v", src.name, got)
			}
			_, k := packetFrom(t, got[0].frame)
			wantTunnel(t, src.name+" to the gateway", k, src.hal(), src.vni, pa1, gwPA)
		}
	}
	// Every first packet walked in the host, every second stayed on the
	// NIC: six pairs of VNETs and three gateway flows on h1, six flows in
	// on h2.
	if s1, s2 := h1.sw.Stats(), h2.sw.Stats(); s1.Packets != 9 || s2.Packets != 6 {
		t.Fatalf("h1 %s\nh2 %s", s1, s2)
	}
}

// A NIC that cannot encapsulate NVGRE nor decapsulate Geneve: those flows
// stay on the host path, which encapsulates and decapsulates in software;
// explain says why; the packets still arrive, in their encapsulation.
func TestEncapHostPathFallback(t *testing.T) {
	dis := softnic.Disable{Encaps: hal.EncapsOf(hal.EncapNVGRE), Decaps: hal.EncapsOf(hal.EncapGeneve)}
	tp := newTopo(t, encapPolicy(t, nil), topoOpts{disable: dis})
	var w wireLog
	w.tap(tp)
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	vx, gn, nv := encapVNETs[0], encapVNETs[1], encapVNETs[2]
	const n = 3
	for _, v := range encapVNETs {
		for range n {
			deliveredTo(t, tp.sendVM(v.vm(1), v.packet(1, v, 2, 5000)), h2, v.vm(2))
			wantTunnel(t, v.name, w.take(t, v.name), v.hal(), v.vni, pa1, pa2)
		}
	}
	// h1 sends: VXLAN and Geneve on the NIC, NVGRE in the host.
	for _, f := range h1.sw.Flows() {
		e, _ := encapActionOf(f.Actions)
		switch {
		case e.Kind == hal.EncapNVGRE && (f.Path != PathHost || f.Why != WhyNotSupported || f.Err == nil):
			t.Errorf("h1: an NVGRE flow is %s (%s, %v)", f.Path, f.Why, f.Err)
		case e.Kind != hal.EncapNVGRE && f.Path != PathNIC:
			t.Errorf("h1: a %s flow is %s (%s, %v)", e.Kind, f.Path, f.Why, f.Err)
		}
	}
	// h2 receives: VXLAN and NVGRE on the NIC, Geneve in the host.
	for _, f := range h2.sw.Flows() {
		k := f.Match.Key
		switch {
		case k.TunKind == hal.EncapGeneve && (f.Path != PathHost || f.Why != WhyNotSupported):
			t.Errorf("h2: the Geneve flow is %s (%s, %v)", f.Path, f.Why, f.Err)
		case k.TunKind != hal.EncapGeneve && f.Path != PathNIC:
			t.Errorf("h2: a %s flow is %s (%s, %v)", k.TunKind, f.Path, f.Why, f.Err)
		}
	}
	// Every NVGRE packet went through h1's host, every Geneve packet
	// through h2's; the others only once, as first packets.
	if s := h1.sw.Stats(); s.Packets != n+2 || s.Fallbacks[WhyNotSupported.String()] == 0 {
		t.Errorf("h1: %s", s)
	}
	if s := h2.sw.Stats(); s.Packets != n+2 || s.Exceptions[hal.ReasonUnsupported] != n {
		t.Errorf("h2: %s", s)
	}

	ex := h1.sw.Explain(Description{VM: nv.vm(1), Packet: nv.packet(1, nv, 2, 5000)})
	if ex.Where != PathHost || ex.Why != WhyNotSupported ||
		!strings.Contains(ex.String(), "NIC cannot encapsulate nvgre: kept on the host path") {
		t.Errorf("explain of the NVGRE flow:\n%s", ex)
	}
	ex = h2.sw.Explain(Description{Uplink: true, VNI: gn.vni, OuterSrc: pa1, Packet: gn.packet(1, gn, 2, 5000)})
	if ex.Where != PathHost || ex.Why != WhyNotSupported ||
		!strings.Contains(ex.String(), "NIC cannot decapsulate geneve: kept on the host path") {
		t.Errorf("explain of the Geneve flow in:\n%s", ex)
	}
	// A flow not seen yet is explained the same way before its first
	// packet.
	ex = h1.sw.Explain(Description{VM: vx.vm(1), Packet: vx.packet(1, nv, 2, 5001)})
	if ex.Flow != nil || ex.Where != PathHost || !strings.Contains(ex.Detail, "NIC cannot encapsulate nvgre: kept on the host path") {
		t.Errorf("explain of an NVGRE flow not seen yet:\n%s", ex)
	}
	ex = h1.sw.Explain(Description{VM: vx.vm(1), Packet: vx.packet(1, gn, 2, 5001)})
	if ex.Flow != nil || ex.Where != PathNIC {
		t.Errorf("explain of a Geneve flow not seen yet:\n%s", ex)
	}
}

// A VNET's packets arriving in another encapsulation are dropped and
// counted with their reason, on a NIC that parses every kind (the drop
// lands on the NIC) and on one that parses none (the host drops each).
func TestEncapMismatchDropped(t *testing.T) {
	none := hal.EncapsOf(hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE)
	for _, tc := range []struct {
		name string
		dis  softnic.Disable
	}{{"full", softnic.Disable{}}, {"no decap", softnic.Disable{Decaps: none}}} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopo(t, encapPolicy(t, nil), topoOpts{disable: tc.dis})
			h2 := tp.byNm["h2"]
			drops := uint64(0)
			for _, v := range encapVNETs {
				inner := frameOf(v.packet(1, v, 2, 6000))
				for _, other := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE} {
					e := hal.Encap{Kind: other, VNI: v.vni, Src: pa1, Dst: pa2, SrcMAC: uplinkMAC, DstMAC: uplinkMAC}
					fr := wire.BuildEncap(&e, inner)
					if other == v.hal() {
						deliveredTo(t, tp.send(h2, h2.uplink, fr), h2, v.vm(2))
						continue
					}
					for range 2 {
						if got := tp.send(h2, h2.uplink, fr); len(got) != 0 {
							t.Fatalf("%s vni %d (vnet %s is %s) delivered: %+v", other, v.vni, v.name, v.kind, got)
						}
					}
					drops++
					if tc.dis.Decaps != 0 {
						drops++ // each packet in the host
					}
					ex := h2.sw.ExplainFrame(h2.uplink, fr)
					want := "vnet " + v.name + " is carried in " + v.hal().String() + ", not " + other.String()
					if ex.Reason != policy.ReasonEncapMismatch || !strings.Contains(ex.String(), want) {
						t.Errorf("explain lacks %q:\n%s", want, ex)
					}
				}
			}
			if got := h2.sw.Stats().PolicyDrops[policy.ReasonEncapMismatch.String()]; got != drops {
				t.Errorf("%d packets dropped as encap-mismatch in the host, want %d:\n%s", got, drops, h2.sw.Stats())
			}
		})
	}
}

// A stateful allow pre-installs the reply's flow, keyed on the reply's
// encapsulation: the reply never reaches the host.
func TestEncapReversePreinstalled(t *testing.T) {
	st := encapPolicy(t, func(b *policy.Builder) {
		b.AddACL(policy.ACL{Tenant: "t", ID: "out", Priority: 10, Direction: policy.Out, Action: policy.Allow, Stateful: true})
	})
	for _, v := range encapVNETs {
		t.Run(v.kind.String(), func(t *testing.T) {
			tp := newTopo(t, st, topoOpts{})
			h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
			req := v.packet(1, v, 2, 4100)
			deliveredTo(t, tp.sendVM(v.vm(1), req), h2, v.vm(2))
			rep := v.packet(2, v, 1, 53)
			rep.DstPort = 4100
			before := h1.sw.Stats().Packets
			deliveredTo(t, tp.sendVM(v.vm(2), rep), h1, v.vm(1))
			if s := h1.sw.Stats(); s.Packets != before {
				t.Fatalf("the reply reached h1's host: %s", s)
			}
			if err := h1.sw.Maintain(context.Background()); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, f := range h1.sw.Flows() {
				if k := f.Match.Key; k.TunKind == v.hal() && k.VNI == v.vni && f.Path == PathNIC && f.Packets > 0 {
					found = true
				}
			}
			if !found {
				t.Errorf("no pre-installed %s reply flow carried the reply: %+v", v.hal(), h1.sw.Flows())
			}
		})
	}
}

// Per-destination rules carry the destination VNET's encapsulation; the
// ones the NIC cannot take leave those destinations to the slow path.
func TestEncapProactive(t *testing.T) {
	for _, tc := range []struct {
		name string
		dis  softnic.Disable
	}{{"full", softnic.Disable{}}, {"no nvgre", softnic.Disable{Encaps: hal.EncapsOf(hal.EncapNVGRE)}}} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopo(t, encapPolicy(t, nil), topoOpts{proactive: true, disable: tc.dis})
			var w wireLog
			w.tap(tp)
			h1 := tp.byNm["h1"]
			want := 3 // one per VNET on h1 toward h2
			if tc.dis.Encaps != 0 {
				want = 2
			}
			if s := h1.sw.Stats(); s.ProactiveRules != want {
				t.Fatalf("%d per-destination rules, want %d: %s", s.ProactiveRules, want, s)
			}
			for _, v := range encapVNETs {
				before := h1.sw.Stats().Packets
				deliveredTo(t, tp.sendVM(v.vm(1), v.packet(1, v, 2, 4200)), tp.byNm["h2"], v.vm(2))
				wantTunnel(t, v.name, w.take(t, v.name), v.hal(), v.vni, pa1, pa2)
				slow := h1.sw.Stats().Packets - before
				if refused := tc.dis.Encaps.Has(v.hal()); slow != map[bool]uint64{false: 0, true: 1}[refused] {
					t.Errorf("%s: the first packet took the slow path %d times (NIC refuses %s: %v)", v.name, slow, v.hal(), refused)
				}
			}
		})
	}
}

// A VNET whose encapsulation changes: its flows are reprogrammed, its
// packets leave in the new one, and the receiver takes only the new one.
func TestEncapChange(t *testing.T) {
	st := encapPolicy(t, nil)
	tp := newTopo(t, st, topoOpts{})
	var w wireLog
	w.tap(tp)
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	gn := encapVNETs[1]
	p := gn.packet(1, gn, 2, 4300)
	deliveredTo(t, tp.sendVM(gn.vm(1), p), h2, gn.vm(2))
	wantTunnel(t, "before", w.take(t, "before"), hal.EncapGeneve, gn.vni, pa1, pa2)

	changed := withEncap(t, st, gn.name, policy.EncapNVGRE)
	if c := policy.Diff(st, changed); len(c.VNETs) != 1 || c.VNETs[0].Kind != policy.Changed {
		t.Fatalf("Diff: %+v", c.VNETs)
	}
	for _, h := range tp.hosts {
		if err := h.sw.Update(context.Background(), changed); err != nil {
			t.Fatal(err)
		}
	}
	tp.st = changed
	for range 2 {
		deliveredTo(t, tp.sendVM(gn.vm(1), p), h2, gn.vm(2))
		wantTunnel(t, "after", w.take(t, "after"), hal.EncapNVGRE, gn.vni, pa1, pa2)
	}
	for _, f := range h1.sw.Flows() {
		if e, ok := encapActionOf(f.Actions); ok && e.Kind != hal.EncapNVGRE {
			t.Errorf("h1 flow still encapsulates in %s: %+v", e.Kind, f)
		}
	}
	// A straggler in Geneve is refused now.
	e := hal.Encap{Kind: hal.EncapGeneve, VNI: gn.vni, Src: pa1, Dst: pa2, SrcMAC: uplinkMAC, DstMAC: uplinkMAC}
	if got := tp.send(h2, h2.uplink, wire.BuildEncap(&e, frameOf(p))); len(got) != 0 {
		t.Fatalf("a Geneve packet for a VNET now in NVGRE was delivered")
	}
}

// withEncap returns st with VNET name carried in kind.
func withEncap(t *testing.T, st *policy.State, name string, kind policy.EncapKind) *policy.State {
	t.Helper()
	b := policy.NewBuilder()
	for _, h := range st.Hosts() {
		b.AddHost(h)
	}
	for _, g := range st.Gateways() {
		b.AddGateway(g)
	}
	for _, tn := range st.Tenants() {
		b.AddTenant(tn)
		for _, r := range st.Routes(tn.Name) {
			if r.Origin == policy.RouteExplicit {
				b.AddRoute(r)
			}
		}
		for _, a := range st.ACLs(tn.Name) {
			b.AddACL(a)
		}
	}
	for _, v := range st.VNETs() {
		if v.Name == name {
			v.Encap = kind
		}
		b.AddVNET(v)
	}
	for _, vm := range st.VMs() {
		b.AddVM(vm)
	}
	ns, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return ns
}
