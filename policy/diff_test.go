package policy

import (
	"cmp"
	"net/netip"
	"reflect"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	s := mustLoadExample(t)
	out, err := Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Parse("marshalled.yaml", out)
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, out)
	}
	if c := Diff(s, s2); !c.Empty() {
		t.Errorf("document round trip changed the state: %+v\n%s", c, out)
	}
	s3, err := s.Builder().Build()
	if err != nil {
		t.Fatal(err)
	}
	if c := Diff(s, s3); !c.Empty() {
		t.Errorf("builder round trip changed the state: %+v", c)
	}
	// Activations survive both.
	act, err := s.Activate("blue-web-2", 2)
	if err != nil {
		t.Fatal(err)
	}
	out, err = Marshal(act)
	if err != nil {
		t.Fatal(err)
	}
	act2, err := Parse("act.yaml", out)
	if err != nil {
		t.Fatal(err)
	}
	if c := Diff(act, act2); !c.Empty() {
		t.Errorf("activation lost in the round trip: %+v", c)
	}
	if g, _ := act2.ActiveGeneration("blue-web-2"); g != 2 {
		t.Errorf("active generation %d", g)
	}
}

func TestDiffEmpty(t *testing.T) {
	s := mustLoadExample(t)
	if c := Diff(s, s); !c.Empty() {
		t.Errorf("Diff(s, s) = %+v", c)
	}
	c := Diff(nil, s)
	if len(c.Mappings) != s.MappingCount() || len(c.Hosts) != 2 || len(c.VNETs) != 3 {
		t.Errorf("Diff(nil, s): %d mappings, %d hosts, %d VNETs", len(c.Mappings), len(c.Hosts), len(c.VNETs))
	}
	for _, m := range c.Mappings {
		if m.Kind != Added {
			t.Errorf("Diff(nil, s) has %s", m.Kind)
		}
	}
	for _, m := range Diff(s, nil).Mappings {
		if m.Kind != Removed {
			t.Errorf("Diff(s, nil) has %s", m.Kind)
		}
	}
}

func TestDiff(t *testing.T) {
	base := mustLoadExample(t)
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }

	// edit rebuilds the example after changing the Builder's items.
	edit := func(t *testing.T, f func(b *Builder)) *State {
		t.Helper()
		b := base.Builder()
		f(b)
		s, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("VM moves host: its mappings change PA", func(t *testing.T) {
		s := edit(t, func(b *Builder) {
			b.shadows, b.acts = nil, nil
			for i := range b.vms {
				if b.vms[i].Name == "blue-db-1" {
					b.vms[i].Host = "host-a"
				}
			}
		})
		c := Diff(base, s)
		var changed []MappingKey
		for _, m := range c.Mappings {
			if m.Kind != Changed {
				t.Errorf("unexpected %s %v", m.Kind, m.Key)
			}
			changed = append(changed, m.Key)
			if m.Key == (MappingKey{1002, a("10.0.1.10")}) && (m.Old.PA != hostB || m.New.PA != hostA) {
				t.Errorf("PA change %s -> %s", m.Old.PA, m.New.PA)
			}
		}
		if !reflect.DeepEqual(changed, []MappingKey{{1002, a("10.0.1.10")}}) {
			t.Errorf("changed mappings %v", changed)
		}
		if len(c.Shadows) != 1 || c.Shadows[0].Kind != Removed || c.Shadows[0].Key != "blue-web-2" {
			t.Errorf("shadows %+v", c.Shadows)
		}
		if len(c.Activations) != 1 || c.Activations[0].Kind != Removed {
			t.Errorf("activations %+v", c.Activations)
		}
		if len(c.VMs) != 1 || c.VMs[0].Key != "blue-db-1" {
			t.Errorf("VMs %+v", c.VMs)
		}
	})
	t.Run("CA added and removed", func(t *testing.T) {
		s := edit(t, func(b *Builder) {
			for i := range b.vms {
				if b.vms[i].Name == "red-app-2" {
					b.vms[i].CAs = []netip.Addr{a("10.0.0.12"), a("fd00:0:0:1::12")}
				}
			}
		})
		c := Diff(base, s)
		want := []Change[MappingKey, Mapping]{}
		for _, m := range c.Mappings {
			want = append(want, Change[MappingKey, Mapping]{Kind: m.Kind, Key: m.Key})
		}
		exp := []Change[MappingKey, Mapping]{
			{Kind: Removed, Key: MappingKey{2001, a("10.0.0.11")}},
			{Kind: Added, Key: MappingKey{2001, a("10.0.0.12")}},
			{Kind: Added, Key: MappingKey{2001, a("fd00:0:0:1::12")}},
		}
		if !reflect.DeepEqual(want, exp) {
			t.Errorf("mapping changes %+v, want %+v", want, exp)
		}
	})
	t.Run("VNET renumbered: every mapping re-keyed, implicit routes kept", func(t *testing.T) {
		s := edit(t, func(b *Builder) {
			for i := range b.vnets {
				if b.vnets[i].v.Name == "db" {
					b.vnets[i].v.VNI = 1003
				}
			}
		})
		c := Diff(base, s)
		if len(c.VNETs) != 1 || c.VNETs[0].Kind != Changed || c.VNETs[0].New.VNI != 1003 {
			t.Errorf("VNETs %+v", c.VNETs)
		}
		if len(c.Mappings) != 2 || c.Mappings[0].Kind != Removed || c.Mappings[0].Key.VNI != 1002 ||
			c.Mappings[1].Kind != Added || c.Mappings[1].Key.VNI != 1003 {
			t.Errorf("mappings %+v", c.Mappings)
		}
		if len(c.Routes) != 0 {
			t.Errorf("routes %+v", c.Routes)
		}
	})
	t.Run("routes, ACLs and gateway rules", func(t *testing.T) {
		s := edit(t, func(b *Builder) {
			b.AddRoute(Route{Tenant: "blue", Prefix: p("10.77.0.0/16"), NextHop: NextHop{Kind: NextHopDrop}})
			for i := range b.routes {
				if b.routes[i].v.Prefix == p("10.99.0.0/16") {
					b.routes[i].v.NextHop = NextHop{Kind: NextHopDrop}
				}
			}
			for i := range b.acls {
				if b.acls[i].v.ID == "no-telnet-out" {
					b.acls[i].v.Priority = 11
				}
			}
			b.acls = b.acls[:len(b.acls)-1] // red's out-all is last
			b.gwRules = nil
		})
		c := Diff(base, s)
		type rk struct {
			k ChangeKind
			r RouteKey
		}
		var routes []rk
		for _, r := range c.Routes {
			routes = append(routes, rk{r.Kind, r.Key})
		}
		exp := []rk{
			{Added, RouteKey{"blue", p("10.77.0.0/16")}},
			{Changed, RouteKey{"blue", p("10.99.0.0/16")}},
			{Removed, RouteKey{"red", p("10.200.0.20/32")}},
		}
		if !reflect.DeepEqual(routes, exp) {
			t.Errorf("routes %+v, want %+v", routes, exp)
		}
		if len(c.ACLs) != 2 || c.ACLs[0].Key != (ACLKey{"blue", "no-telnet-out"}) || c.ACLs[0].Kind != Changed ||
			c.ACLs[1].Key != (ACLKey{"red", "out-all"}) || c.ACLs[1].Kind != Removed {
			t.Errorf("ACLs %+v", c.ACLs)
		}
		if len(c.GatewayRules) != 1 || c.GatewayRules[0].Kind != Removed {
			t.Errorf("gateway rules %+v", c.GatewayRules)
		}
		if len(c.Mappings) != 0 || len(c.VNETs) != 0 {
			t.Errorf("unrelated changes: %+v", c)
		}
	})
	t.Run("host PA change touches every mapping on it", func(t *testing.T) {
		s := edit(t, func(b *Builder) { b.hosts[1].v.PA = a("198.18.0.22") })
		c := Diff(base, s)
		n := 0
		for vm := range base.Mappings() {
			if vm.Host == "host-b" {
				n++
			}
		}
		if len(c.Mappings) != n || len(c.Hosts) != 1 || len(c.Shadows) != 0 {
			t.Errorf("%d mapping changes (want %d), hosts %+v", len(c.Mappings), n, c.Hosts)
		}
	})
}

// diffVMs finds what comparing maps of every VM finds.
func TestDiffVMsMatchesMaps(t *testing.T) {
	old := mustLoadExample(t)
	b := NewBuilder()
	for _, h := range old.Hosts() {
		b.AddHost(h)
	}
	for _, g := range old.Gateways() {
		b.AddGateway(g)
	}
	for _, tn := range old.Tenants() {
		b.AddTenant(tn)
	}
	for _, v := range old.VNETs() {
		b.AddVNET(v)
	}
	vms := old.VMs()
	for i, v := range vms {
		switch i % 4 {
		case 0: // removed
			continue
		case 1:
			v.MAC[5]++
		case 2:
			v.Generation = 3
		}
		b.AddVM(v)
	}
	add := vms[0]
	add.Name, add.MAC = "new-vm", MAC{2, 9, 9, 9, 9, 9}
	add.CAs = []netip.Addr{netip.MustParseAddr("10.0.0.99")}
	b.AddVM(add)
	s, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]*State{{old, s}, {s, old}, {old, old}, {empty, s}} {
		want := diffSets(index(pair[0].vms, func(v VM) string { return v.Name }),
			index(pair[1].vms, func(v VM) string { return v.Name }), cmp.Compare[string])
		got := diffVMs(pair[0], pair[1])
		if !reflect.DeepEqual(got, want) {
			t.Errorf("diffVMs:\n%+v\nwant\n%+v", got, want)
		}
	}
	if c := Diff(old, s); len(c.VMs) == 0 {
		t.Error("no VM changes found")
	}
}
