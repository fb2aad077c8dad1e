package policy

import (
	"cmp"
	"reflect"
	"slices"
)

// ChangeKind says how an object differs between two states.
type ChangeKind uint8

const (
	// Added: only in the new state.
	Added ChangeKind = iota + 1
	// Changed: in both, with different contents.
	Changed
	// Removed: only in the old state.
	Removed
)

func (k ChangeKind) String() string {
	switch k {
	case Added:
		return "added"
	case Changed:
		return "changed"
	case Removed:
		return "removed"
	}
	return "?"
}

// Change is one object that differs: Old is zero for Added, New is zero
// for Removed.
type Change[K comparable, T any] struct {
	Kind ChangeKind
	Key  K
	Old  T
	New  T
}

// Changes lists what differs between two states, keyed the way a vswitch
// finds the flows derived from each object. Every list is sorted by key.
//
// Mappings carry the VM's own location (Host, PA, Generation of the VM);
// shadows and activations are listed separately so that a migration shows up
// as a Shadows change (install inactive) and then an Activations change (one
// switch), never as a rewrite of every mapping. Routes are each tenant's
// effective routing table: implicit subnet routes and gateway-rule routes
// included.
type Changes struct {
	Hosts        []Change[string, Host]
	Gateways     []Change[string, Gateway]
	Tenants      []Change[string, Tenant]
	VNETs        []Change[VNETKey, VNET]
	VMs          []Change[string, VM]
	Mappings     []Change[MappingKey, Mapping]
	Routes       []Change[RouteKey, Route]
	ACLs         []Change[ACLKey, ACL]
	GatewayRules []Change[GatewayRuleKey, GatewayRule]
	Shadows      []Change[string, Shadow]
	Activations  []Change[string, Activation]
	RouterMAC    bool // the router MAC differs
	// Relocated lists the relocated subnets that differ (their pools'
	// mappings are in VMs and Mappings too).
	Relocated []Change[string, Relocated]
}

// Empty reports whether nothing changed.
func (c *Changes) Empty() bool {
	return !c.RouterMAC && len(c.Hosts)+len(c.Gateways)+len(c.Tenants)+len(c.VNETs)+len(c.VMs)+
		len(c.Mappings)+len(c.Routes)+len(c.ACLs)+len(c.GatewayRules)+len(c.Shadows)+len(c.Activations)+len(c.Relocated) == 0
}

// Diff lists what changed from old to new. Either may be nil (an empty
// state).
func Diff(old, new *State) Changes {
	if old == nil {
		old = empty
	}
	if new == nil {
		new = empty
	}
	var c Changes
	c.RouterMAC = old.routerMAC != new.routerMAC
	c.Hosts = diffSets(index(old.hosts, func(h Host) string { return h.Name }),
		index(new.hosts, func(h Host) string { return h.Name }), cmp.Compare[string])
	c.Gateways = diffSets(index(old.gateways, func(g Gateway) string { return g.Name }),
		index(new.gateways, func(g Gateway) string { return g.Name }), cmp.Compare[string])
	c.Tenants = diffSets(index(old.tenants, func(t Tenant) string { return t.Name }),
		index(new.tenants, func(t Tenant) string { return t.Name }), cmp.Compare[string])
	vnetKey := func(v VNET) VNETKey { return VNETKey{v.Tenant, v.Name} }
	c.VNETs = diffSets(index(old.vnets, vnetKey), index(new.vnets, vnetKey), compareVNETKey)
	c.VMs = diffVMs(old, new)
	c.Mappings = diffMappings(old, new)
	routeKey := func(r Route) RouteKey { return RouteKey{r.Tenant, r.Prefix} }
	c.Routes = diffSets(index(slices.Concat(old.routes...), routeKey), index(slices.Concat(new.routes...), routeKey),
		func(a, b RouteKey) int {
			return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
		})
	aclKey := func(a ACL) ACLKey { return ACLKey{a.Tenant, a.ID} }
	c.ACLs = diffSets(index(slices.Concat(old.acls...), aclKey), index(slices.Concat(new.acls...), aclKey),
		func(a, b ACLKey) int { return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.ID, b.ID)) })
	gwrKey := func(g GatewayRule) GatewayRuleKey { return GatewayRuleKey{g.Tenant, g.Name} }
	c.GatewayRules = diffSets(index(slices.Concat(old.gwRules...), gwrKey), index(slices.Concat(new.gwRules...), gwrKey),
		func(a, b GatewayRuleKey) int {
			return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Name, b.Name))
		})
	c.Shadows = diffSets(index(old.shadows, func(s Shadow) string { return s.VM }),
		index(new.shadows, func(s Shadow) string { return s.VM }), cmp.Compare[string])
	c.Activations = diffSets(index(old.Activations(), func(a Activation) string { return a.VM }),
		index(new.Activations(), func(a Activation) string { return a.VM }), cmp.Compare[string])
	c.Relocated = diffSets(index(old.relocated, func(r Relocated) string { return r.Name }),
		index(new.relocated, func(r Relocated) string { return r.Name }), cmp.Compare[string])
	return c
}

// empty is the state with nothing in it, for Diff against nil.
var empty = func() *State {
	s, err := NewBuilder().Build()
	if err != nil {
		panic(err)
	}
	return s
}()

func compareVNETKey(a, b VNETKey) int {
	return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Name, b.Name))
}

func index[K comparable, T any](list []T, key func(T) K) map[K]T {
	m := make(map[K]T, len(list))
	for _, v := range list {
		m[key(v)] = v
	}
	return m
}

// diffSets compares two keyed sets; objects are compared by value (slices
// element by element).
func diffSets[K comparable, T any](old, new map[K]T, compare func(a, b K) int) []Change[K, T] {
	var out []Change[K, T]
	for k, o := range old {
		n, ok := new[k]
		switch {
		case !ok:
			out = append(out, Change[K, T]{Kind: Removed, Key: k, Old: o})
		case !reflect.DeepEqual(o, n):
			out = append(out, Change[K, T]{Kind: Changed, Key: k, Old: o, New: n})
		}
	}
	for k, n := range new {
		if _, ok := old[k]; !ok {
			out = append(out, Change[K, T]{Kind: Added, Key: k, New: n})
		}
	}
	slices.SortFunc(out, func(a, b Change[K, T]) int { return compare(a.Key, b.Key) })
	return out
}

// diffVMs compares the VMs through the states' name indexes: states with
// millions of VMs are diffed without building maps of them.
func diffVMs(old, new *State) []Change[string, VM] {
	var out []Change[string, VM]
	for i := range old.vms {
		o := &old.vms[i]
		j, ok := new.vmIdx.get(o.Name, new.vms)
		switch {
		case !ok:
			out = append(out, Change[string, VM]{Kind: Removed, Key: o.Name, Old: *o})
		case !sameVM(o, &new.vms[j]):
			out = append(out, Change[string, VM]{Kind: Changed, Key: o.Name, Old: *o, New: new.vms[j]})
		}
	}
	for j := range new.vms {
		n := &new.vms[j]
		if _, ok := old.vmIdx.get(n.Name, old.vms); !ok {
			out = append(out, Change[string, VM]{Kind: Added, Key: n.Name, New: *n})
		}
	}
	slices.SortFunc(out, func(a, b Change[string, VM]) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// sameVM is reflect.DeepEqual for VMs, without reflection.
func sameVM(a, b *VM) bool {
	return a.Name == b.Name && a.Tenant == b.Tenant && a.VNET == b.VNET && a.MAC == b.MAC && a.Host == b.Host &&
		a.Generation == b.Generation && (a.CAs == nil) == (b.CAs == nil) && slices.Equal(a.CAs, b.CAs)
}

func compareMappingKey(a, b MappingKey) int {
	return cmp.Or(cmp.Compare(a.VNI, b.VNI), a.CA.Compare(b.CA))
}

// diffMappings walks both compiled tables directly: states with millions of
// mappings are diffed without building maps of them.
func diffMappings(old, new *State) []Change[MappingKey, Mapping] {
	var out []Change[MappingKey, Mapping]
	for i := range old.table.entries {
		e := &old.table.entries[i]
		if !e.used {
			continue
		}
		key := MappingKey{e.vni, e.addr()}
		j, ok := new.table.lookup(e.vni, key.CA)
		om := old.mappingAt(i, false)
		if !ok {
			out = append(out, Change[MappingKey, Mapping]{Kind: Removed, Key: key, Old: om})
			continue
		}
		if nm := new.mappingAt(j, false); nm != om {
			out = append(out, Change[MappingKey, Mapping]{Kind: Changed, Key: key, Old: om, New: nm})
		}
	}
	for j := range new.table.entries {
		e := &new.table.entries[j]
		if !e.used {
			continue
		}
		ca := e.addr()
		if _, ok := old.table.lookup(e.vni, ca); !ok {
			out = append(out, Change[MappingKey, Mapping]{Kind: Added, Key: MappingKey{e.vni, ca}, New: new.mappingAt(j, false)})
		}
	}
	slices.SortFunc(out, func(a, b Change[MappingKey, Mapping]) int { return compareMappingKey(a.Key, b.Key) })
	return out
}
