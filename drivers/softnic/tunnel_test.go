package softnic

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// tunnelled is a frame from a remote host's VM to VM1, encapsulated by
// kind toward outer destination dst and dstMAC.
func tunnelled(kind hal.EncapKind, vni uint32, dst netip.Addr, dstMAC hal.MAC) []byte {
	src := paRem
	if dst.Is6() {
		src = pa6Rem
	}
	inner := wire.Build(wire.FrameSpec{SrcMAC: macGW, DstMAC: macVM1, Src: caRem, Dst: caVM1,
		Proto: hal.ProtoUDP, SrcPort: 1000, DstPort: 2000, Payload: []byte("tunnelled")})
	e := hal.Encap{Kind: kind, VNI: vni, Src: src, Dst: dst, SrcMAC: macNext, DstMAC: dstMAC}
	return wire.BuildEncap(&e, inner)
}

// The tunnel filter (hal.TunnelTerminator): once an uplink has an
// endpoint, tunnelled frames reach the rules only when addressed to it
// (one of its addresses with its MAC, or one of its groups with the
// group's MAC); the others are dropped and counted with ReasonNotLocal,
// on the NIC and on the port, never matched (the rule's counter stays)
// and never handed to the host.
func TestTunnelFilter(t *testing.T) {
	n := newNIC(t)
	if !n.Capabilities().TunnelFilter {
		t.Fatal("Capabilities.TunnelFilter is false")
	}
	var m hal.Match
	m.InPort(pUplink).Tunnel(hal.EncapVXLAN, 77)
	var mg, mn hal.Match
	mg.InPort(pUplink).Tunnel(hal.EncapGeneve, 77)
	mn.InPort(pUplink).Tunnel(hal.EncapNVGRE, 77)
	for i, mm := range []hal.Match{m, mg, mn} {
		mustApply(t, n, hal.AddOp(hal.Rule{ID: hal.RuleID(i + 1), Match: mm,
			Actions: []hal.Action{hal.Decap(), hal.Count(), hal.Output(pVM1)}}))
	}
	group4, group6 := netip.MustParseAddr("239.1.2.3"), netip.MustParseAddr("ff05::1:3")
	macG4, macG6 := hal.MustMAC("01:00:5e:01:02:03"), hal.MustMAC("33:33:00:01:00:03")
	other := netip.MustParseAddr("198.19.0.99")
	ctx := context.Background()

	deliver := func(f []byte) (out bool, dropped bool) {
		t.Helper()
		before := stats(t, n).Drops[hal.ReasonNotLocal]
		send(t, n, pUplink, f)
		got := recvAll(t, n, pVM1)
		after := stats(t, n).Drops[hal.ReasonNotLocal]
		return len(got) == 1, after == before+1
	}
	mustAccept := func(name string, f []byte) {
		t.Helper()
		if out, dropped := deliver(f); !out || dropped {
			t.Errorf("%s: delivered %v, dropped %v; want delivered", name, out, dropped)
		}
	}
	mustDrop := func(name string, f []byte) {
		t.Helper()
		if out, dropped := deliver(f); out || !dropped {
			t.Errorf("%s: delivered %v, dropped %v; want dropped (not local)", name, out, dropped)
		}
	}

	// No endpoint: nothing is filtered.
	mustAccept("no endpoint, other address", tunnelled(hal.EncapVXLAN, 77, other, macNext))

	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: pUplink, Addrs: []netip.Addr{paLocal, pa6Loc},
		Groups: []netip.Addr{group4, group6}}); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE} {
		k := kind.String()
		mustAccept(k+" to the endpoint", tunnelled(kind, 77, paLocal, macUp))
		mustAccept(k+" to the endpoint over IPv6", tunnelled(kind, 77, pa6Loc, macUp))
		mustAccept(k+" to the IPv4 group", tunnelled(kind, 77, group4, macG4))
		mustAccept(k+" to the IPv6 group", tunnelled(kind, 77, group6, macG6))
		mustDrop(k+" to another address", tunnelled(kind, 77, other, macUp))
		mustDrop(k+" to another IPv6 address", tunnelled(kind, 77, pa6Rem, macUp))
		mustDrop(k+" to the endpoint address, another MAC", tunnelled(kind, 77, paLocal, macNext))
		mustDrop(k+" to the group, the port's MAC", tunnelled(kind, 77, group4, macUp))
		mustDrop(k+" to another group", tunnelled(kind, 77, netip.MustParseAddr("239.1.2.4"), hal.MustMAC("01:00:5e:01:02:04")))
	}
	// Dropped before anything else: a frame whose inner headers are cut
	// short, or a VNI no rule has, is not local either, and the host
	// hears of none of them.
	inner := udp4(caRem, caVM1, 1, 2, 100)
	e := hal.Encap{Kind: hal.EncapVXLAN, VNI: 77, Src: paRem, Dst: other, SrcMAC: macNext, DstMAC: macUp}
	mustDrop("broken inner frame for another endpoint", wire.BuildEncap(&e, inner[:len(inner)-20]))
	mustDrop("unknown VNI for another endpoint", tunnelled(hal.EncapVXLAN, 78, other, macUp))
	if exc := readExc(t, n); len(exc) != 0 {
		t.Fatalf("%d exceptions, the first %s: frames for another endpoint reached the host", len(exc), exc[0].Reason)
	}
	s := stats(t, n)
	pc, err := n.PortCounters(ctx, pUplink)
	if err != nil {
		t.Fatal(err)
	}
	if s.Drops[hal.ReasonNotLocal] != 3*5+2 || pc.Drops != 3*5+2 {
		t.Fatalf("not-local drops: NIC %d, port %d; want 17", s.Drops[hal.ReasonNotLocal], pc.Drops)
	}
	counts := make([]hal.Counters, 3)
	if err := n.RuleCounters(ctx, []hal.RuleID{1, 2, 3}, counts); err != nil {
		t.Fatal(err)
	}
	if counts[0].Packets != 5 || counts[1].Packets != 4 || counts[2].Packets != 4 {
		t.Fatalf("rule counters %+v: dropped frames were matched, or accepted ones not", counts)
	}

	// Frames that are not tunnelled, and tunnelled frames from a vport,
	// are not looked at.
	var plain, fromVM hal.Match
	plain.InPort(pUplink).IPDst(netip.PrefixFrom(caVM1, 32))
	fromVM.InPort(pVM2)
	mustApply(t, n, hal.AddOp(hal.Rule{ID: 10, Priority: 5, Match: plain, Actions: []hal.Action{hal.Output(pVM1)}}),
		hal.AddOp(hal.Rule{ID: 11, Match: fromVM, Actions: []hal.Action{hal.Output(pVM1)}}))
	mustAccept("plain frame on the uplink", udp4(caRem, caVM1, 1, 2, 10))
	before := stats(t, n).Drops[hal.ReasonNotLocal]
	send(t, n, pVM2, tunnelled(hal.EncapVXLAN, 77, other, macNext))
	if got := recvAll(t, n, pVM1); len(got) != 1 || stats(t, n).Drops[hal.ReasonNotLocal] != before {
		t.Fatal("a tunnelled frame from a vport was filtered")
	}

	// An endpoint MAC replaces the port's; no addresses turns it off.
	mac := hal.MustMAC("02:00:00:00:0e:0e")
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: pUplink, MAC: mac, Addrs: []netip.Addr{paLocal}}); err != nil {
		t.Fatal(err)
	}
	mustAccept("endpoint MAC", tunnelled(hal.EncapVXLAN, 77, paLocal, mac))
	mustDrop("port MAC once the endpoint has its own", tunnelled(hal.EncapVXLAN, 77, paLocal, macUp))
	mustDrop("group of the replaced endpoint", tunnelled(hal.EncapVXLAN, 77, group4, macG4))
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: pUplink, Groups: []netip.Addr{group4}}); err != nil {
		t.Fatal(err)
	}
	mustAccept("no addresses: filter off", tunnelled(hal.EncapVXLAN, 77, other, macNext))
}

func TestSetTunnelEndpointRefuses(t *testing.T) {
	n := newNIC(t)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		ep   hal.TunnelEndpoint
		want error
	}{
		{"vport", hal.TunnelEndpoint{Port: pVM1, Addrs: []netip.Addr{paLocal}}, hal.ErrNotSupported},
		{"unknown port", hal.TunnelEndpoint{Port: 99, Addrs: []netip.Addr{paLocal}}, hal.ErrNotFound},
		{"invalid address", hal.TunnelEndpoint{Port: pUplink, Addrs: []netip.Addr{{}}}, hal.ErrInvalidRule},
		{"multicast address", hal.TunnelEndpoint{Port: pUplink, Addrs: []netip.Addr{netip.MustParseAddr("239.0.0.1")}}, hal.ErrInvalidRule},
		{"unicast group", hal.TunnelEndpoint{Port: pUplink, Addrs: []netip.Addr{paLocal}, Groups: []netip.Addr{paRem}}, hal.ErrInvalidRule},
	} {
		if err := n.SetTunnelEndpoint(ctx, c.ep); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// A refused endpoint leaves the port unfiltered.
	if mustPort(t, n, pUplink).tun.Load() != nil {
		t.Fatal("a refused endpoint was installed")
	}
	off := newNIC(t, func(c *Config) { c.Disable.TunnelFilter = true })
	if off.Capabilities().TunnelFilter {
		t.Fatal("Disable.TunnelFilter: the capability is still reported")
	}
	if err := off.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: pUplink, Addrs: []netip.Addr{paLocal}}); !errors.Is(err, hal.ErrNotSupported) {
		t.Fatalf("Disable.TunnelFilter: %v", err)
	}
	n.Close()
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: pUplink}); !errors.Is(err, hal.ErrClosed) {
		t.Fatalf("closed NIC: %v", err)
	}
}

// The filter costs no allocation on the datapath, for accepted and
// dropped frames alike.
func TestZeroAllocTunnelFilter(t *testing.T) {
	n := newNIC(t)
	var m hal.Match
	m.InPort(pUplink).Tunnel(hal.EncapVXLAN, 77)
	mustApply(t, n, hal.AddOp(hal.Rule{ID: 1, Match: m, Actions: []hal.Action{hal.Decap(), hal.Output(pVM1)}}))
	if err := n.SetTunnelEndpoint(context.Background(), hal.TunnelEndpoint{Port: pUplink, Addrs: []netip.Addr{paLocal}}); err != nil {
		t.Fatal(err)
	}
	frames := [][]byte{tunnelled(hal.EncapVXLAN, 77, paLocal, macUp), tunnelled(hal.EncapVXLAN, 77, paRem, macUp)}
	bufs := make([][]byte, MaxBurst)
	sizes := make([]int, MaxBurst)
	for i := range bufs {
		f := frames[i%2]
		bufs[i] = make([]byte, Headroom+len(f))
		sizes[i] = len(f)
	}
	vm := mustPort(t, n, pVM1)
	allocs := testing.AllocsPerRun(100, func() {
		for i := range bufs {
			copy(bufs[i][Headroom:], frames[i%2])
		}
		if err := n.Process(pUplink, bufs, sizes, Headroom); err != nil {
			t.Fatal(err)
		}
		vm.Discard()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per burst", allocs)
	}
	if s := stats(t, n); s.Drops[hal.ReasonNotLocal] == 0 || vm.counters().Tx.Packets == 0 {
		t.Fatalf("the burst did not take both paths: %+v", s.Drops)
	}
}
