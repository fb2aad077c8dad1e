//go:build linux

package xdp

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

func TestMulticastMAC(t *testing.T) {
	for g, want := range map[string]hal.MAC{
		"239.1.1.1":       {0x01, 0x00, 0x5e, 0x01, 0x01, 0x01},
		"239.129.2.3":     {0x01, 0x00, 0x5e, 0x01, 0x02, 0x03}, // the 24th bit does not make it
		"224.0.0.251":     {0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb},
		"ff05::1:3":       {0x33, 0x33, 0x00, 0x01, 0x00, 0x03},
		"ff02::1:ff00:42": {0x33, 0x33, 0xff, 0x00, 0x00, 0x42},
	} {
		if got := multicastMAC(netip.MustParseAddr(g)); got != want {
			t.Errorf("%s: %v, want %v", g, got, want)
		}
	}
}

// TestRunTunnelFilter: once the uplink has a tunnel endpoint, a tunnelled
// frame reaches the rules only when its outer destination is one of the
// endpoint's addresses with the endpoint's MAC, or one of its groups with
// the group's MAC; any other is dropped as not_local, before a rule (or
// the host) sees it. Untunnelled frames and other ports are not filtered.
func TestRunTunnelFilter(t *testing.T) {
	n := openVirtual(t, Config{})
	ctx := context.Background()
	inner := wire.Build(udp4(ca2, ca1, 2000, 1000))
	group4, group6 := netip.MustParseAddr("239.1.1.1"), netip.MustParseAddr("ff05::1:3")
	other := netip.MustParseAddr("198.18.0.99")
	macOther := hal.MAC{0x02, 0, 0, 0, 9, 9}
	// A decap rule for each kind of tunnel (rule 1 + kind), and every
	// other frame to vm2 (rule 1): what passes the filter is forwarded.
	kinds := []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE}
	ops := []hal.Op{hal.AddOp(hal.Rule{ID: 1, Actions: []hal.Action{hal.Output(pVM2)}})}
	for _, kind := range kinds {
		var m hal.Match
		m.Tunnel(kind, testVN)
		ops = append(ops, hal.AddOp(hal.Rule{ID: 1 + hal.RuleID(kind), Priority: 10, Match: m, Actions: []hal.Action{hal.Decap(), hal.Output(pVM1)}}))
	}
	mustApply(t, n, ops...)

	enc := func(kind hal.EncapKind, dst netip.Addr, dmac hal.MAC) []byte {
		src := pa2
		if dst.Is6() {
			src = pa6b
		}
		return wire.BuildEncap(&hal.Encap{Kind: kind, VNI: testVN, Src: src, Dst: dst, SrcMAC: macPA2, DstMAC: dmac}, inner)
	}
	// Before an endpoint is set nothing is filtered.
	if r := mustRun(t, n, pUp, enc(hal.EncapVXLAN, other, macOther)); r.Verdict != VerdictOutput || r.Rule != 1+hal.RuleID(hal.EncapVXLAN) {
		t.Fatalf("no endpoint yet: %v %v", r.Verdict, r.Reason)
	}
	ep := hal.TunnelEndpoint{Port: pUp, MAC: macPA1, Addrs: []netip.Addr{pa1, pa6a}, Groups: []netip.Addr{group4, group6}}
	if err := n.SetTunnelEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	type tc struct {
		name  string
		kind  hal.EncapKind
		frame []byte
		local bool
	}
	var cases []tc
	for _, kind := range kinds {
		k := kind.String()
		cases = append(cases,
			tc{k + "/pa4", kind, enc(kind, pa1, macPA1), true},
			tc{k + "/pa6", kind, enc(kind, pa6a, macPA1), true},
			tc{k + "/group4", kind, enc(kind, group4, multicastMAC(group4)), true},
			tc{k + "/group6", kind, enc(kind, group6, multicastMAC(group6)), true},
			tc{k + "/other-ip", kind, enc(kind, other, macPA1), false},
			tc{k + "/other-ip6", kind, enc(kind, pa6b, macPA1), false},
			tc{k + "/other-mac", kind, enc(kind, pa1, macOther), false},
			tc{k + "/pa-with-group-mac", kind, enc(kind, pa1, multicastMAC(group4)), false},
			tc{k + "/group-with-pa-mac", kind, enc(kind, group4, macPA1), false},
			tc{k + "/other-group", kind, enc(kind, netip.MustParseAddr("239.1.1.2"), multicastMAC(netip.MustParseAddr("239.1.1.2"))), false},
			tc{k + "/broadcast-mac", kind, enc(kind, pa1, hal.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), false},
		)
	}
	drops := 0
	for _, c := range cases {
		r := mustRun(t, n, pUp, c.frame)
		if c.local && (r.Verdict != VerdictOutput || r.Rule != 1+hal.RuleID(c.kind)) {
			t.Errorf("%s: %v %v, want decapsulated", c.name, r.Verdict, r.Reason)
		}
		if !c.local {
			drops++
			if r.Verdict != VerdictDrop || r.Reason != hal.ReasonNotLocal || r.Rule != 0 {
				t.Errorf("%s: %v %v rule %d, want a not_local drop before any rule", c.name, r.Verdict, r.Reason, r.Rule)
			}
		}
	}
	// Not tunnelled, or on another port: no filter.
	if r := mustRun(t, n, pUp, inner); r.Verdict != VerdictOutput || r.Rule != 1 {
		t.Errorf("untunnelled frame on the uplink: %v %v", r.Verdict, r.Reason)
	}
	if r := mustRun(t, n, pVM1, enc(hal.EncapVXLAN, other, macOther)); r.Verdict != VerdictOutput || r.Rule != 1+hal.RuleID(hal.EncapVXLAN) {
		t.Errorf("tunnelled frame on a vport: %v %v", r.Verdict, r.Reason)
	}
	// A not-local frame that no rule matches is dropped too, not handed to
	// the host.
	mustApply(t, n, hal.DeleteOp(1), hal.DeleteOp(1+hal.RuleID(hal.EncapVXLAN)))
	if r := mustRun(t, n, pUp, enc(hal.EncapVXLAN, other, macPA1)); r.Verdict != VerdictDrop || r.Reason != hal.ReasonNotLocal {
		t.Errorf("not-local miss: %v %v", r.Verdict, r.Reason)
	}
	drops++
	st, err := n.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pc, _ := n.PortCounters(ctx, pUp)
	if st.Drops[hal.ReasonNotLocal] != uint64(drops) || pc.Drops != uint64(drops) {
		t.Errorf("not_local drops %d, uplink drops %d; want %d", st.Drops[hal.ReasonNotLocal], pc.Drops, drops)
	}

	// The zero MAC means the port's own (all zero for a port without a
	// device); replacing the endpoint replaces all of it; no Addrs turns
	// the filter off.
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: pUp, Addrs: []netip.Addr{pa1}}); err != nil {
		t.Fatal(err)
	}
	if r := mustRun(t, n, pUp, enc(hal.EncapVXLAN, pa1, hal.MAC{})); r.Reason == hal.ReasonNotLocal {
		t.Errorf("the port's own (zero) MAC: %v %v", r.Verdict, r.Reason)
	}
	for _, f := range [][]byte{enc(hal.EncapVXLAN, pa1, macPA1), enc(hal.EncapVXLAN, pa6a, hal.MAC{}), enc(hal.EncapVXLAN, group4, multicastMAC(group4))} {
		if r := mustRun(t, n, pUp, f); r.Reason != hal.ReasonNotLocal {
			t.Errorf("after the replacement: %v %v, want not_local", r.Verdict, r.Reason)
		}
	}
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: pUp, Groups: []netip.Addr{group4}}); err != nil {
		t.Fatal(err)
	}
	if r := mustRun(t, n, pUp, enc(hal.EncapVXLAN, other, macOther)); r.Reason == hal.ReasonNotLocal {
		t.Errorf("filter off: %v %v", r.Verdict, r.Reason)
	}
	// Removing an endpoint that is not there is fine.
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: pUp}); err != nil {
		t.Fatal(err)
	}
}

func TestSetTunnelEndpointErrors(t *testing.T) {
	n := openVirtual(t, Config{})
	ctx := context.Background()
	many := make([]netip.Addr, maxEPAddrs+1)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{198, 18, 1, byte(i + 1)})
	}
	for _, c := range []struct {
		name string
		ep   hal.TunnelEndpoint
		want error
	}{
		{"vport", hal.TunnelEndpoint{Port: pVM1, Addrs: []netip.Addr{pa1}}, hal.ErrNotSupported},
		{"no-port", hal.TunnelEndpoint{Port: 9, Addrs: []netip.Addr{pa1}}, hal.ErrNotFound},
		{"too-many", hal.TunnelEndpoint{Port: pUp, Addrs: many}, hal.ErrNotSupported},
		{"multicast-addr", hal.TunnelEndpoint{Port: pUp, Addrs: []netip.Addr{netip.MustParseAddr("239.1.1.1")}}, hal.ErrInvalidRule},
		{"unicast-group", hal.TunnelEndpoint{Port: pUp, Addrs: []netip.Addr{pa1}, Groups: []netip.Addr{pa2}}, hal.ErrInvalidRule},
		{"invalid-addr", hal.TunnelEndpoint{Port: pUp, Addrs: []netip.Addr{{}}}, hal.ErrInvalidRule},
		{"zoned-addr", hal.TunnelEndpoint{Port: pUp, Addrs: []netip.Addr{netip.MustParseAddr("fe80::1%up0")}}, hal.ErrInvalidRule},
	} {
		if err := n.SetTunnelEndpoint(ctx, c.ep); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// A refused endpoint leaves the port unfiltered.
	f := wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 1, Src: pa2, Dst: pa2, SrcMAC: macPA2, DstMAC: macPA2}, wire.Build(udp4(ca2, ca1, 1, 2)))
	if r := mustRun(t, n, pUp, f); r.Reason == hal.ReasonNotLocal {
		t.Errorf("a refused endpoint filters: %+v", r)
	}
	if !n.Capabilities().TunnelFilter {
		t.Error("Capabilities.TunnelFilter is false")
	}
	n.Close()
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: pUp, Addrs: []netip.Addr{pa1}}); !errors.Is(err, hal.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}
