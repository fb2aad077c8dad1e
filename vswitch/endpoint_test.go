package vswitch

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// noFilterNIC is a NIC without a tunnel filter: whatever the NIC it wraps
// can do, its capabilities say TunnelFilter false and it does not
// implement hal.TunnelTerminator, so the switch's slow path is all that
// stands between a foreign tunnelled frame and a VM.
type noFilterNIC struct{ hal.NIC }

func (n noFilterNIC) Capabilities() hal.Capabilities {
	c := n.NIC.Capabilities()
	c.TunnelFilter = false
	return c
}

// endpointNIC is a NIC with a tunnel filter as the switch sees it: it
// advertises TunnelFilter and records every endpoint it is given, and
// passes them on when the NIC it wraps filters itself.
type endpointNIC struct {
	hal.NIC
	advertise bool // Capabilities.TunnelFilter

	mu    sync.Mutex
	calls []hal.TunnelEndpoint
	fail  error // SetTunnelEndpoint fails with it when set
}

func (n *endpointNIC) Capabilities() hal.Capabilities {
	c := n.NIC.Capabilities()
	c.TunnelFilter = n.advertise
	return c
}

func (n *endpointNIC) SetTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, ep)
	if n.fail != nil {
		return n.fail
	}
	if tt, ok := n.NIC.(hal.TunnelTerminator); ok && n.NIC.Capabilities().TunnelFilter {
		return tt.SetTunnelEndpoint(ctx, ep)
	}
	return nil
}

func (n *endpointNIC) recorded() []hal.TunnelEndpoint {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.calls)
}

func (n *endpointNIC) setFail(err error) {
	n.mu.Lock()
	n.fail = err
	n.mu.Unlock()
}

// inbound is the tunnelled frame h1 sends h2 for va1 → va2, with the outer
// destination and destination MAC given.
func inbound(dst netip.Addr, dstMAC hal.MAC, sport uint16) []byte {
	inner := frameOf(udp(macVA1, macVA2, caVA1, caVA2, sport, 53))
	src := pa1
	if dst.Is6() {
		src = netip.MustParseAddr("2001:db8:ff::1")
	}
	e := hal.Encap{Kind: hal.EncapVXLAN, VNI: 100, Src: src, Dst: dst, SrcMAC: hal.MustMAC("02:00:00:00:ff:02"), DstMAC: dstMAC}
	return wire.BuildEncap(&e, inner)
}

// foreignFrames are tunnelled frames that reach h2's uplink but are not
// for h2's tunnel endpoint (PA pa2, MAC uplinkMAC).
func foreignFrames() map[string][]byte {
	return map[string][]byte{
		"another host's PA":    inbound(pa3, uplinkMAC, 1001),
		"underlay broadcast":   inbound(netip.MustParseAddr("198.18.0.255"), hal.MustMAC("ff:ff:ff:ff:ff:ff"), 1002),
		"limited broadcast":    inbound(netip.MustParseAddr("255.255.255.255"), hal.MustMAC("ff:ff:ff:ff:ff:ff"), 1003),
		"multicast group":      inbound(netip.MustParseAddr("233.252.0.1"), hal.MustMAC("01:00:5e:7c:00:01"), 1004),
		"IPv6 multicast":       inbound(netip.MustParseAddr("ff05::db8:0:1"), hal.MustMAC("33:33:00:00:00:01"), 1005),
		"another station":      inbound(pa2, hal.MustMAC("02:00:00:00:ee:01"), 1006),
		"our PA, L2 broadcast": inbound(pa2, hal.MustMAC("ff:ff:ff:ff:ff:ff"), 1007),
	}
}

// TestNotLocalDroppedOnSlowPath: on a NIC without a tunnel filter, every
// tunnelled frame for another endpoint reaches the host and is dropped
// there before any flow, counted under not_local; Explain says why. The
// host's own frames are delivered as before.
func TestNotLocalDroppedOnSlowPath(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{wrap: func(_ string, n hal.NIC) hal.NIC { return noFilterNIC{n} }})
	h2 := tp.byNm["h2"]
	if h2.sw.tunnelFilter() {
		t.Fatal("the switch believes the NIC filters")
	}
	n := 0
	for name, f := range foreignFrames() {
		if got := tp.send(h2, h2.uplink, f); len(got) != 0 {
			t.Errorf("%s: delivered on port %d", name, got[0].port)
		}
		n++
		st := h2.sw.Stats()
		if st.Drops[DropNotLocal.String()] != uint64(n) {
			t.Errorf("%s: not_local drops %d, want %d\n%s", name, st.Drops[DropNotLocal.String()], n, st)
		}
		if st.Flows != 0 || st.FlowsCreated != 0 {
			t.Errorf("%s: a frame for another endpoint made a flow:\n%s", name, st)
		}
		ex := h2.sw.ExplainFrame(h2.uplink, f)
		if ex.HostDrop != "not_local" || ex.Where != PathNone || !strings.Contains(ex.Verdict, "not_local") {
			t.Errorf("%s: explain:\n%s", name, ex)
		}
		if s := ex.String(); !strings.Contains(s, "not this host's provider address") && !strings.Contains(s, "is not the uplink's") {
			t.Errorf("%s: explain does not say why:\n%s", name, s)
		}
	}
	// Ours: decapsulated and delivered, and offloaded with the outer
	// destination in its match.
	deliveredTo(t, tp.send(h2, h2.uplink, inbound(pa2, uplinkMAC, 1000)), h2, "va2")
	if st := h2.sw.Stats(); st.Drops[DropNotLocal.String()] != uint64(n) || st.FlowsNIC != 1 {
		t.Errorf("after our own frame:\n%s", st)
	}
	// Explain by description: another outer destination.
	p := udp(macVA1, macVA2, caVA1, caVA2, 1000, 53)
	ex := h2.sw.Explain(Description{Uplink: true, VNI: 100, OuterSrc: pa1, OuterDst: pa3, Packet: p})
	if ex.HostDrop != "not_local" || !strings.Contains(strings.Join(ex.Trace, "\n"), "outer destination 198.18.0.3 is not this host's provider address (198.18.0.2)") {
		t.Errorf("explain with another outer destination:\n%s", ex)
	}
	if ex := h2.sw.Explain(Description{Uplink: true, VNI: 100, OuterSrc: pa1, Packet: p}); ex.HostDrop != "" || ex.Action != policy.Deliver {
		t.Errorf("explain with our own outer destination:\n%s", ex)
	}
}

// TestDecapFlowsMatchOuterDestination: a decap flow's rule matches the
// outer destination (this host's PA), so a NIC without a tunnel filter
// does not decapsulate a frame for another PA by it; a NIC that cannot
// match tun_dst keeps such flows in the host.
func TestDecapFlowsMatchOuterDestination(t *testing.T) {
	noFilter := func(_ string, n hal.NIC) hal.NIC { return noFilterNIC{n} }
	t.Run("matched", func(t *testing.T) {
		tp := newTopo(t, smallPolicy(t, nil), topoOpts{wrap: noFilter})
		h2 := tp.byNm["h2"]
		deliveredTo(t, tp.send(h2, h2.uplink, inbound(pa2, uplinkMAC, 1000)), h2, "va2")
		var rules []hal.Rule
		if err := h2.soft.Dump(context.Background(), func(ri *hal.RuleInfo) error {
			rules = append(rules, ri.Rule)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(rules) != 1 || rules[0].Actions[0].Kind != hal.ActionDecap {
			t.Fatalf("NIC rules %v, want one decap rule", rules)
		}
		m := rules[0].Match
		if m.Fields()&hal.MatchTunDst == 0 || hal.AddrFrom16(m.Key.TunDst) != pa2 {
			t.Fatalf("decap rule %v does not match the outer destination %s", &m, pa2)
		}
		// The same inner flow toward another PA: the NIC's rule does not
		// take it, the host drops it.
		if got := tp.send(h2, h2.uplink, inbound(pa3, uplinkMAC, 1000)); len(got) != 0 {
			t.Fatalf("a frame for %s was delivered", pa3)
		}
		if st := h2.sw.Stats(); st.Drops[DropNotLocal.String()] != 1 || st.Packets != 2 {
			t.Errorf("stats:\n%s", st)
		}
	})
	t.Run("unmatchable", func(t *testing.T) {
		tp := newTopo(t, smallPolicy(t, nil), topoOpts{wrap: noFilter, disable: softnic.Disable{MatchFields: hal.MatchTunDst}})
		h2 := tp.byNm["h2"]
		for i := 0; i < 2; i++ {
			deliveredTo(t, tp.send(h2, h2.uplink, inbound(pa2, uplinkMAC, 1000)), h2, "va2")
		}
		fs := h2.sw.Flows()
		if len(fs) != 1 || fs[0].Path != PathHost || fs[0].Why != WhyNotSupported || !strings.Contains(fs[0].Err.Error(), "tun_dst") {
			t.Fatalf("flows %+v; want the decap flow in the host, refused for tun_dst", fs)
		}
		if got := tp.send(h2, h2.uplink, inbound(pa3, uplinkMAC, 1000)); len(got) != 0 {
			t.Fatalf("a frame for %s was delivered", pa3)
		}
		if st := h2.sw.Stats(); st.Drops[DropNotLocal.String()] != 1 {
			t.Errorf("stats:\n%s", st)
		}
	})
}

// TestTunnelEndpointSetOnStartAndPAChange: on a NIC with a tunnel filter
// the switch sets the endpoint of every uplink when it starts (this host's
// PA, the uplink's MAC), and again when the host's PA changes; flows toward
// the old PA go, frames for it are dropped, frames for the new one flow.
func TestTunnelEndpointSetOnStartAndPAChange(t *testing.T) {
	nics := map[string]*endpointNIC{}
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{wrap: func(host string, n hal.NIC) hal.NIC {
		e := &endpointNIC{NIC: n, advertise: true}
		nics[host] = e
		return e
	}})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	for _, h := range tp.hosts {
		want := []hal.TunnelEndpoint{{Port: h.uplink, MAC: uplinkMAC, Addrs: []netip.Addr{h.pa}}}
		if got := nics[h.name].recorded(); !sameEndpoints(got, want) {
			t.Errorf("%s: endpoints set at start %+v, want %+v", h.name, got, want)
		}
		if !h.sw.tunnelFilter() {
			t.Errorf("%s: the switch does not use the NIC's filter", h.name)
		}
	}
	ctx := context.Background()
	// Traffic both ways so that h2 has a decap flow and an encap flow.
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, 1000, 53)), h2, "va2")
	deliveredTo(t, tp.sendVM("va2", udp(macVA2, macVA1, caVA2, caVA1, 53, 1000)), h1, "va1")

	// An update that leaves the PA alone sets nothing.
	same := smallPolicy(t, func(b *policy.Builder) {
		b.AddACL(policy.ACL{Tenant: "t", ID: "x", Priority: 1, Direction: policy.In, Action: policy.Allow})
	})
	if err := h2.sw.Update(ctx, same); err != nil {
		t.Fatal(err)
	}
	if got := nics["h2"].recorded(); len(got) != 1 {
		t.Errorf("an update without a PA change set the endpoint again: %+v", got)
	}

	// h2 moves to a new PA: every switch learns it, h2's NIC gets the new
	// endpoint.
	newPA := netip.MustParseAddr("198.18.0.22")
	moved := smallPolicyPA(t, newPA, nil)
	for _, h := range tp.hosts {
		if err := h.sw.Update(ctx, moved); err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
	}
	tp.st = moved
	delete(tp.byPA, pa2)
	tp.byPA[newPA] = h2
	h2.pa = newPA
	got := nics["h2"].recorded()
	if want := (hal.TunnelEndpoint{Port: h2.uplink, MAC: uplinkMAC, Addrs: []netip.Addr{newPA}}); len(got) != 2 || !sameEndpoints(got[1:], []hal.TunnelEndpoint{want}) {
		t.Fatalf("endpoints after the PA change %+v, want the second %+v", got, want)
	}
	if got := nics["h1"].recorded(); len(got) != 1 {
		t.Errorf("h1's PA did not change, yet its endpoint was set again: %+v", got)
	}
	for _, f := range h2.sw.Flows() {
		if f.Match.Fields()&hal.MatchTunDst != 0 && hal.AddrFrom16(f.Match.Key.TunDst) == pa2 {
			t.Errorf("a flow toward the old PA survived the change: %v", &f.Match)
		}
	}
	// Old PA: dropped, by the NIC's filter (softnic has one) or by the
	// host, and counted once.
	notLocal := func() uint64 {
		st, err := h2.soft.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h2.sw.Stats().Drops[DropNotLocal.String()] + st.Drops[hal.ReasonNotLocal]
	}
	before := notLocal()
	if got := tp.send(h2, h2.uplink, inbound(pa2, uplinkMAC, 1000)); len(got) != 0 {
		t.Errorf("a frame for the old PA was delivered")
	}
	if d := notLocal() - before; d != 1 {
		t.Errorf("the frame for the old PA counted %d not_local drops, want 1", d)
	}
	// New PA: h1 encapsulates toward it, h2 delivers; and h2's replies
	// leave with the new PA as their outer source.
	deliveredTo(t, tp.sendVM("va1", udp(macVA1, macVA2, caVA1, caVA2, 1000, 53)), h2, "va2")
	h1.pump(t)
	var outer hal.FlowKey
	var l wire.Layout
	if _, err := h2.far[h2.ports["va2"]].Send([][]byte{frameOf(udp(macVA2, macVA1, caVA2, caVA1, 53, 1000))}); err != nil {
		t.Fatal(err)
	}
	h2.pump(t)
	bufs, sizes := [][]byte{make([]byte, 4096)}, []int{0}
	if n, err := h2.far[h2.uplink].Recv(bufs, sizes); err != nil || n != 1 {
		t.Fatalf("h2 sent %d frames on its uplink (%v), want 1", n, err)
	}
	if err := wire.Parse(bufs[0][:sizes[0]], h2.uplink, &outer, &l); err != nil {
		t.Fatal(err)
	}
	if src := hal.AddrFrom16(outer.TunSrc); src != newPA {
		t.Errorf("h2 encapsulates with outer source %s after moving to %s", src, newPA)
	}
}

func sameEndpoints(a, b []hal.TunnelEndpoint) bool {
	return slices.EqualFunc(a, b, func(x, y hal.TunnelEndpoint) bool {
		return x.Port == y.Port && x.MAC == y.MAC && slices.Equal(x.Addrs, y.Addrs) && slices.Equal(x.Groups, y.Groups)
	})
}

// TestTunnelEndpointRetried: a NIC that fails to take the endpoint gets it
// again from Maintain until it takes it; meanwhile the host drops frames
// for other endpoints itself.
func TestTunnelEndpointRetried(t *testing.T) {
	failing := errors.New("injected: endpoint refused")
	var e2 *endpointNIC
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{wrap: func(host string, n hal.NIC) hal.NIC {
		e := &endpointNIC{NIC: n, advertise: true}
		if host == "h2" {
			e.fail = failing
			e2 = e
		}
		return e
	}})
	h2 := tp.byNm["h2"]
	if got := e2.recorded(); len(got) != 1 {
		t.Fatalf("%d attempts at start, want 1", len(got))
	}
	if got := tp.send(h2, h2.uplink, inbound(pa3, uplinkMAC, 1000)); len(got) != 0 {
		t.Fatal("a frame for another PA was delivered")
	}
	if err := h2.sw.Maintain(context.Background()); !errors.Is(err, failing) {
		t.Errorf("Maintain with the NIC refusing: %v, want the refusal", err)
	}
	e2.setFail(nil)
	if err := h2.sw.Maintain(context.Background()); err != nil {
		t.Fatalf("Maintain: %v", err)
	}
	if err := h2.sw.Maintain(context.Background()); err != nil {
		t.Fatalf("Maintain: %v", err)
	}
	if got := e2.recorded(); len(got) != 3 || !slices.Equal(got[2].Addrs, []netip.Addr{pa2}) {
		t.Errorf("attempts %+v: want 3 (start, a failed retry, the one that landed) and none after", got)
	}
}

// TestNoEndpointWithoutTunnelFilter: a NIC that does not advertise the
// filter is never given an endpoint, even if it has the method.
func TestNoEndpointWithoutTunnelFilter(t *testing.T) {
	var e2 *endpointNIC
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{wrap: func(host string, n hal.NIC) hal.NIC {
		e := &endpointNIC{NIC: noFilterNIC{n}}
		if host == "h2" {
			e2 = e
		}
		return e
	}})
	h2 := tp.byNm["h2"]
	if err := h2.sw.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e2.recorded(); len(got) != 0 {
		t.Errorf("endpoints set on a NIC without the capability: %+v", got)
	}
}

// TestNotLocalNeverDelivered: whoever drops it, the NIC's filter (where
// the NIC has one) or the host, a frame for another endpoint is never
// delivered, and it is counted once.
func TestNotLocalNeverDelivered(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{wrap: func(_ string, n hal.NIC) hal.NIC {
		return &endpointNIC{NIC: n, advertise: true}
	}})
	h2 := tp.byNm["h2"]
	ctx := context.Background()
	frames := foreignFrames()
	for name, f := range frames {
		if got := tp.send(h2, h2.uplink, f); len(got) != 0 {
			t.Errorf("%s: delivered", name)
		}
	}
	nst, err := h2.soft.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	host := h2.sw.Stats().Drops[DropNotLocal.String()]
	if got := host + nst.Drops[hal.ReasonNotLocal]; got != uint64(len(frames)) {
		t.Errorf("%d frames for other endpoints, counted %d (host %d, NIC %d)", len(frames), got, host, nst.Drops[hal.ReasonNotLocal])
	}
	deliveredTo(t, tp.send(h2, h2.uplink, inbound(pa2, uplinkMAC, 1000)), h2, "va2")
	deliveredTo(t, tp.send(h2, h2.uplink, inbound(pa2, uplinkMAC, 1000)), h2, "va2")
}
