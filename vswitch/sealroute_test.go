package vswitch

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// TestSealedRoutesFollowPolicy: on h1 only va1 has a sealing key. Its
// sealed routes are every other VM of its tenant (va2 and vx remote, vb1
// local through the router), none of tenant u's; their actions are what
// the walk decides (the router's rewrite toward vb1, the encapsulation
// toward h2); an outbound ACL removes them all; a policy without va1's
// key removes them too. Nothing is pushed for VMs without keys.
func TestSealedRoutesFollowPolicy(t *testing.T) {
	withACL := func(acl bool) func(b *policy.Builder) {
		return func(b *policy.Builder) {
			if acl {
				b.AddACL(policy.ACL{Tenant: "t", ID: "no-telnet", Priority: 10, Direction: policy.Out, Protocol: policy.ProtoTCP,
					DstPorts: []policy.PortRange{{Lo: 23, Hi: 23}}, Action: policy.Deny})
			}
		}
	}
	build := func(acl, key bool) *policy.State {
		b := policy.NewBuilder()
		b.AddHost(policy.Host{Name: "h1", PA: pa1})
		b.AddHost(policy.Host{Name: "h2", PA: pa2})
		b.AddTenant(policy.Tenant{Name: "t"})
		b.AddTenant(policy.Tenant{Name: "u"})
		b.AddVNET(policy.VNET{Tenant: "t", Name: "a", VNI: 100, Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}})
		b.AddVNET(policy.VNET{Tenant: "t", Name: "b", VNI: 200, Subnets: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24")}})
		b.AddVNET(policy.VNET{Tenant: "u", Name: "a", VNI: 300, Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}})
		va1 := policy.VM{Name: "va1", Tenant: "t", VNET: "a", MAC: macVA1, CAs: []netip.Addr{caVA1}, Host: "h1"}
		if key {
			va1.SealKeys = []policy.SealKey{{ID: 1, Public: [32]byte{9}}}
		}
		b.AddVM(va1)
		b.AddVM(policy.VM{Name: "va2", Tenant: "t", VNET: "a", MAC: macVA2, CAs: []netip.Addr{caVA2}, Host: "h2"})
		b.AddVM(policy.VM{Name: "vb1", Tenant: "t", VNET: "b", MAC: macVB1, CAs: []netip.Addr{caVB1}, Host: "h1"})
		b.AddVM(policy.VM{Name: "vx", Tenant: "t", VNET: "a", MAC: macVX, CAs: []netip.Addr{caVX}, Host: "h2"})
		b.AddVM(policy.VM{Name: "u1", Tenant: "u", VNET: "a", MAC: macU1, CAs: []netip.Addr{caU1}, Host: "h1",
			SealKeys: []policy.SealKey{{ID: 1, Public: [32]byte{8}}}})
		b.AddVM(policy.VM{Name: "u2", Tenant: "u", VNET: "a", MAC: macU2, CAs: []netip.Addr{caU2}, Host: "h2"})
		withACL(acl)(b)
		st, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	nic, err := softnic.New(softnic.Config{Device: "h1", Crypto: true, Ports: []softnic.PortConfig{
		{Name: "va1", Kind: hal.PortVPort, MAC: hal.MAC(macVA1)},
		{Name: "vb1", Kind: hal.PortVPort, MAC: hal.MAC(macVB1)},
		{Name: "u1", Kind: hal.PortVPort, MAC: hal.MAC(macU1)},
		{Name: "up", Kind: hal.PortUplink, MAC: hal.MustMAC("02:00:00:00:ff:01"), MTU: 1600}}})
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	sw, err := New(Config{NIC: nic, Host: "h1", State: build(false, true), Uplink: 4,
		Ports: map[string]hal.PortID{"va1": 1, "vb1": 2, "u1": 3}})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	dsts := func(p hal.PortID) []netip.Addr {
		var out []netip.Addr
		for _, r := range nic.SealedRoutes(p) {
			if r.Src != caVA1 && p == 1 || r.SrcMAC != nic.Ports()[p-1].MAC {
				t.Fatalf("route %+v has another source", r)
			}
			out = append(out, r.Dst)
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return out
	}
	if got, want := dsts(1), []netip.Addr{caVA2, caVX, caVB1}; !slices.Equal(got, want) {
		t.Fatalf("va1's sealed routes toward %v, want %v", got, want)
	}
	// u1 seals too: its tenant's only other VM, u2 (same CA as va2, its
	// own VNI).
	ur := nic.SealedRoutes(3)
	if len(ur) != 1 || ur[0].Dst != caU2 || ur[0].Actions[0].Kind != hal.ActionSetEthDst {
		t.Fatalf("u1's sealed routes %+v", ur)
	}
	var encapVNI uint32
	for _, a := range ur[0].Actions {
		if a.Kind == hal.ActionEncap {
			encapVNI = a.Encap.VNI
		}
	}
	if encapVNI != 300 {
		t.Fatalf("u1's route toward u2 encapsulates with VNI %d, want 300", encapVNI)
	}
	if len(nic.SealedRoutes(2)) != 0 {
		t.Fatal("vb1 has no key but got sealed routes")
	}
	for _, r := range nic.SealedRoutes(1) {
		var kinds []hal.ActionKind
		for _, a := range r.Actions {
			kinds = append(kinds, a.Kind)
			if a.Kind == hal.ActionCount {
				t.Fatalf("route toward %v counts: a per-route counter tells the host the destination", r.Dst)
			}
		}
		switch r.Dst {
		case caVB1: // local, through the router
			if !slices.Contains(kinds, hal.ActionDecTTL) || kinds[len(kinds)-1] != hal.ActionOutput || r.Actions[len(r.Actions)-1].OutPort != 2 {
				t.Fatalf("route toward vb1: %+v", r.Actions)
			}
			if r.Reply == nil || r.Reply.InPort != 2 || r.Reply.SrcMAC != hal.MAC(macVB1) {
				t.Fatalf("route toward vb1: reply %+v", r.Reply)
			}
		default: // remote, on h2
			if !slices.Contains(kinds, hal.ActionEncap) || r.Reply == nil || r.Reply.InPort != 4 || r.Reply.TunSrc != pa2 || r.Reply.VNI != 100 {
				t.Fatalf("route toward %v: %+v, reply %+v", r.Dst, r.Actions, r.Reply)
			}
		}
	}
	if st := sw.Stats(); st.SealedRoutes != 4 || st.SealedRefused != 0 {
		t.Fatalf("stats: %d sealed routes (refused %d), want 4", st.SealedRoutes, st.SealedRefused)
	}

	ctx := context.Background()
	// An outbound ACL of tenant t: its verdicts depend on ports now.
	if err := sw.Update(ctx, build(true, true)); err != nil {
		t.Fatal(err)
	}
	if got := dsts(1); len(got) != 0 {
		t.Fatalf("with an outbound ACL va1 still has routes toward %v", got)
	}
	if len(nic.SealedRoutes(3)) != 1 {
		t.Fatal("tenant t's ACL removed tenant u's route")
	}
	// Back without the ACL, then without va1's key.
	if err := sw.Update(ctx, build(false, true)); err != nil {
		t.Fatal(err)
	}
	if len(dsts(1)) != 3 {
		t.Fatal("routes did not come back with the ACL gone")
	}
	if err := sw.Update(ctx, build(false, false)); err != nil {
		t.Fatal(err)
	}
	if got := dsts(1); len(got) != 0 {
		t.Fatalf("without its key va1 still has routes toward %v", got)
	}
}
