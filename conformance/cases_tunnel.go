package conformance

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/nicpath/nicpath/hal"
)

func init() {
	register("tunnel-endpoint", "a NIC with a tunnel filter drops tunnelled frames for another endpoint (another PA, the underlay's broadcast, a multicast group it was not given, another station's MAC), counts them not_local and never delivers nor hands them to the host; its own and a given group's frames are processed as before", caseTunnelEndpoint)
}

// Tunnel endpoint addresses: the suite's uplink terminates paLocal and
// pa6Local (frames.go) and the groups below; the rest are someone else's.
// Multicast groups come from the documentation ranges (MCAST-TEST-NET,
// RFC 5771; ff0x::db8:0:0/96, RFC 6676).
var (
	paOther     = netip.MustParseAddr("198.19.0.3")
	paBroadcast = netip.MustParseAddr("198.19.0.255") // the underlay subnet's broadcast (198.19.0.0/24)
	groupOurs   = netip.MustParseAddr("233.252.0.11")
	groupOther  = netip.MustParseAddr("233.252.0.12")
	pa6Other    = netip.MustParseAddr("2001:db8:ff::3")
	pa6AllNodes = netip.MustParseAddr("ff02::1") // IPv6 has no broadcast: the link's all-nodes group
	group6Ours  = netip.MustParseAddr("ff05::db8:0:11")
	group6Other = netip.MustParseAddr("ff05::db8:0:12")
	macStation  = tmac(0xa3) // another station on the underlay
	macBcast    = hal.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

// groupMAC is the Ethernet address a multicast group is sent to (RFC 1112
// for IPv4, RFC 2464 for IPv6).
func groupMAC(g netip.Addr) hal.MAC {
	b := g.As16()
	if g.Is4() {
		a := g.As4()
		return hal.MAC{0x01, 0x00, 0x5e, a[1] & 0x7f, a[2], a[3]}
	}
	return hal.MAC{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// endpointOf is the endpoint the suite gives the uplink: both provider
// addresses and one group per family, with the port's own MAC (the suite's
// provider MAC when the port reports none).
func endpointOf(up hal.Port) hal.TunnelEndpoint {
	mac := up.MAC
	if mac.IsZero() {
		mac = macPA1
	}
	return hal.TunnelEndpoint{Port: up.ID, MAC: mac, Addrs: []netip.Addr{paLocal, pa6Local}, Groups: []netip.Addr{groupOurs, group6Ours}}
}

func (e *env) terminator() hal.TunnelTerminator {
	e.t.Helper()
	if !e.caps.TunnelFilter {
		need(e.t, "tunnel filter", "the NIC does not drop tunnelled frames for another endpoint itself (hal.TunnelTerminator); the host must")
	}
	tt, ok := e.nic.(hal.TunnelTerminator)
	if !ok {
		e.t.Fatalf("Capabilities.TunnelFilter is advertised, but the NIC does not implement hal.TunnelTerminator")
	}
	return tt
}

func (e *env) setEndpoint(tt hal.TunnelTerminator, ep hal.TunnelEndpoint) {
	e.t.Helper()
	ctx, cancel := e.ctx()
	defer cancel()
	if err := tt.SetTunnelEndpoint(ctx, ep); err != nil {
		// The NIC advertises the tunnel filter: an IPv6 endpoint or a
		// group is part of it, not a variant it may refuse.
		e.t.Fatalf("SetTunnelEndpoint(%+v): %v", ep, err)
	}
}

// waitNotLocal polls Stats until Drops[not_local] is want or the wait runs
// out, and returns what it saw.
func (e *env) waitNotLocal(want uint64) uint64 {
	deadline := time.Now().Add(e.tg.timeout())
	for {
		got := e.stats().Drops[hal.ReasonNotLocal]
		if got >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func caseTunnelEndpoint(t T, tg *Target) {
	var caps hal.Capabilities
	{
		e := open(t, tg)
		tt := e.terminator()
		caps = e.caps
		if len(e.uplinks) == 0 {
			need(t, needUplink, "the NIC has no uplink to terminate tunnels on")
		}
		ctx, cancel := e.ctx()
		err := tt.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 0xfffffff0, Addrs: []netip.Addr{paLocal}})
		cancel()
		if err == nil {
			t.Errorf("SetTunnelEndpoint on a port the NIC lacks succeeded")
		}
		e.release()
	}
	for _, k := range allEncaps {
		t.Run(k.String(), func(t T) {
			if !caps.Decaps.Has(k) {
				need(t, "decap "+k.String(), "the NIC does not decapsulate %s", k)
			}
			t.Run("ipv4", func(t T) { endpointTest(t, open(t, tg), k, false) })
			t.Run("ipv6", func(t T) { endpointTest(t, open(t, tg), k, true) })
		})
	}
	t.Run("replace", func(t T) { endpointReplace(t, open(t, tg), caps) })
}

// endpointSetup gives the uplink its endpoint and installs a decap rule for
// VNI 100 to the vport that does not look at the outer addresses, so that
// whatever the filter lets through is delivered.
func endpointSetup(t T, e *env, kind hal.EncapKind) (tt hal.TunnelTerminator, up, vp hal.Port, ep hal.TunnelEndpoint) {
	tt = e.terminator()
	vp = e.vport()
	if len(e.uplinks) == 0 {
		need(t, needUplink, "the NIC has no uplink")
	}
	up = e.uplinks[0]
	if up.ID == vp.ID {
		need(t, needUplink, "tunnelled traffic needs a port other than the vport")
	}
	var m hal.Match
	m.Tunnel(kind, 100)
	if missing := m.Fields() &^ e.caps.MatchFields; missing != 0 {
		need(t, matchNeed(missing), "a decap rule matches on %v, which the NIC cannot", missing)
	}
	e.add(e.rule(100, m, hal.Decap(), hal.Output(vp.ID)))
	ep = endpointOf(up)
	e.setEndpoint(tt, ep)
	return tt, up, vp, ep
}

// endpointInner is the inner frame of the case's tunnelled traffic, told
// apart by its source port.
func endpointInner(sport uint16) []byte {
	s := udpSpec()
	s.Src, s.Dst, s.IPSrc, s.IPDst, s.SPort = macB, macA, caB, caA, sport
	return build(s)
}

type endpointFrame struct {
	what   string
	dst    netip.Addr
	dstMAC hal.MAC
}

func endpointTest(t T, e *env, kind hal.EncapKind, v6 bool) {
	_, up, vp, ep := endpointSetup(t, e, kind)
	src, own, group := paRemote, paLocal, groupOurs
	foreign := []endpointFrame{
		{"another host's PA", paOther, ep.MAC},
		{"the underlay's broadcast", paBroadcast, macBcast},
		{"a multicast group the NIC was not given", groupOther, groupMAC(groupOther)},
		{"our PA with another station's MAC", paLocal, macStation},
	}
	if v6 {
		src, own, group = pa6Remote, pa6Local, group6Ours
		foreign = []endpointFrame{
			{"another host's PA", pa6Other, ep.MAC},
			{"the link's all-nodes group", pa6AllNodes, groupMAC(pa6AllNodes)},
			{"a multicast group the NIC was not given", group6Other, groupMAC(group6Other)},
			{"our PA with another station's MAC", pa6Local, macStation},
		}
	}
	tn := defaultTunnel(kind, 100)
	tn.Src, tn.Dst, tn.DstMAC = src, own, ep.MAC
	deliver := func(what string, tn tunnel, sport uint16) {
		t.Helper()
		inner := endpointInner(sport)
		e.send(up, encapsulate(tn, inner))
		got := e.recv(vp, 1, e.tg.timeout())
		if len(got) != 1 {
			t.Errorf("%s: not delivered to the vport (%d frames)", what, len(got))
			return
		}
		if !bytes.Equal(got[0], inner) {
			t.Errorf("%s: delivered % x, want the inner frame % x", what, got[0], inner)
		}
	}
	// Ours passes, before and after the others.
	deliver("a frame for our PA and MAC", tn, 41000)
	for i, f := range foreign {
		ft := tn
		ft.Dst, ft.DstMAC = f.dst, f.dstMAC
		before := e.stats().Drops[hal.ReasonNotLocal]
		e.send(up, encapsulate(ft, endpointInner(uint16(42000+i))))
		if got := e.waitNotLocal(before + 1); got != before+1 {
			t.Errorf("%s (%s, MAC %s): Stats.Drops[not_local] went up by %d, want 1", f.what, f.dst, f.dstMAC, got-before)
		}
	}
	e.silent()
	if e.caps.ExceptionPath {
		for _, x := range e.exceptions(1, e.tg.quiet()) {
			t.Errorf("a frame for another endpoint was handed to the host: reason %v in-port %d: % x", x.Reason, x.InPort, x.Frame())
		}
	}
	after := e.stats().Drops[hal.ReasonNotLocal]
	// A group the NIC was given is processed as before.
	gt := tn
	gt.Dst, gt.DstMAC = group, groupMAC(group)
	deliver("a frame for a group the NIC was given ("+group.String()+")", gt, 43000)
	deliver("a frame for our PA and MAC, after the others", tn, 41001)
	if d := e.stats().Drops[hal.ReasonNotLocal] - after; d != 0 {
		t.Errorf("frames for this endpoint were counted not_local: %d", d)
	}
}

// endpointReplace: setting the endpoint again replaces it, and an endpoint
// without addresses turns the filter off.
func endpointReplace(t T, e *env, caps hal.Capabilities) {
	kind := e.tunnelKind()
	if !caps.Decaps.Has(kind) {
		need(t, "action decap", "the NIC decapsulates nothing")
	}
	tt, up, vp, ep := endpointSetup(t, e, kind)
	tn := defaultTunnel(kind, 100)
	tn.DstMAC = ep.MAC
	e.send(up, encapsulate(tn, endpointInner(44000)))
	e.expect(vp, 1)
	// Another address replaces ours: our frames are someone else's now.
	moved := ep
	moved.Addrs = []netip.Addr{netip.MustParseAddr("198.19.0.4")}
	moved.Groups = nil
	e.setEndpoint(tt, moved)
	base := e.stats().Drops[hal.ReasonNotLocal]
	e.send(up, encapsulate(tn, endpointInner(44001)))
	if got := e.waitNotLocal(base + 1); got != base+1 {
		t.Errorf("after the endpoint moved to %v, a frame for %s counted %d not_local drops, want 1", moved.Addrs, tn.Dst, got-base)
	}
	e.silent()
	// No addresses: the filter is off. What happens to a frame for another
	// PA is then the NIC's own business, but it is not the filter's drop.
	e.setEndpoint(tt, hal.TunnelEndpoint{Port: up.ID})
	base = e.stats().Drops[hal.ReasonNotLocal]
	other := tn
	other.Dst = paOther
	e.send(up, encapsulate(other, endpointInner(44002)))
	e.recv(vp, 1, e.tg.quiet())
	if e.caps.ExceptionPath {
		e.exceptions(1, e.tg.quiet())
	}
	if d := e.stats().Drops[hal.ReasonNotLocal] - base; d != 0 {
		t.Errorf("with the endpoint removed, a frame for %s still counted %d not_local drops", paOther, d)
	}
	// Back to ours.
	e.setEndpoint(tt, ep)
	e.send(up, encapsulate(tn, endpointInner(44003)))
	e.expect(vp, 1)
}
