package policy

import (
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"unsafe"
)

// State is one checked version of the desired state. It is immutable: every
// accessor returns values or slices the caller must not modify, and a State
// may be shared by any number of goroutines. Activate returns a new State.
type State struct {
	routerMAC MAC

	hosts    []Host
	hostIdx  map[string]int
	hostByPA map[netip.Addr]int

	gateways []Gateway
	gwIdx    map[string]int
	gwByPA   map[netip.Addr]int

	tenants   []Tenant
	tenantIdx map[string]int

	vnets     []VNET
	vnetIdx   map[VNETKey]int
	vnetByVNI map[uint32]int

	vms     []VM
	vmVNET  []int32 // index into vnets, parallel to vms
	vmHost  []int32 // index into hosts, parallel to vms
	vmIdx   *nameIndex
	hostVMs [][]int32 // host index → VM indexes (the VMs' own location)

	// Per tenant, indexed like tenants.
	routes  [][]Route // effective routing table, longest prefix first
	acls    [][]ACL   // evaluation order
	gwRules [][]GatewayRule

	shadows   []Shadow
	shadowIdx map[string]int // VM name → index

	// active holds the selected generation of every VM with a shadow.
	active map[string]uint64

	table *mappingTable

	relocated []Relocated
	ownVMs    int // vms[:ownVMs] are the document's; the rest relocated pools'
}

// RouterMAC is the source MAC of routed packets.
func (s *State) RouterMAC() MAC { return s.routerMAC }

// Hosts returns all hosts in document order.
func (s *State) Hosts() []Host { return s.hosts }

// Host returns the host named name.
func (s *State) Host(name string) (Host, bool) {
	i, ok := s.hostIdx[name]
	if !ok {
		return Host{}, false
	}
	return s.hosts[i], true
}

// HostByPA returns the host whose provider address is pa.
func (s *State) HostByPA(pa netip.Addr) (Host, bool) {
	i, ok := s.hostByPA[pa]
	if !ok {
		return Host{}, false
	}
	return s.hosts[i], true
}

// Gateways returns all virtualization gateways in document order.
func (s *State) Gateways() []Gateway { return s.gateways }

// Gateway returns the gateway named name.
func (s *State) Gateway(name string) (Gateway, bool) {
	i, ok := s.gwIdx[name]
	if !ok {
		return Gateway{}, false
	}
	return s.gateways[i], true
}

// Tenants returns all tenants in document order.
func (s *State) Tenants() []Tenant { return s.tenants }

// Tenant returns the tenant named name.
func (s *State) Tenant(name string) (Tenant, bool) {
	i, ok := s.tenantIdx[name]
	if !ok {
		return Tenant{}, false
	}
	return s.tenants[i], true
}

// VNETs returns all VNETs, grouped by tenant in document order.
func (s *State) VNETs() []VNET { return s.vnets }

// VNET returns a tenant's VNET by name.
func (s *State) VNET(tenant, name string) (VNET, bool) {
	i, ok := s.vnetIdx[VNETKey{tenant, name}]
	if !ok {
		return VNET{}, false
	}
	return s.vnets[i], true
}

// VNETByVNI returns the VNET carried with VNI vni (VNIs are unique across
// tenants).
func (s *State) VNETByVNI(vni uint32) (VNET, bool) {
	i, ok := s.vnetByVNI[vni]
	if !ok {
		return VNET{}, false
	}
	return s.vnets[i], true
}

// VMs returns all VMs in document order.
func (s *State) VMs() []VM { return s.vms }

// VM returns the VM named name. Its Host is where it runs in its own
// generation; see Location for where it runs now.
func (s *State) VM(name string) (VM, bool) {
	i, ok := s.vmIdx.get(name, s.vms)
	if !ok {
		return VM{}, false
	}
	return s.vms[i], true
}

// Location returns the host, PA and generation where a VM runs now: its
// shadow's if the shadow's generation is active, its own otherwise.
func (s *State) Location(vm string) (host string, pa netip.Addr, gen uint64, ok bool) {
	i, ok := s.vmIdx.get(vm, s.vms)
	if !ok {
		return "", netip.Addr{}, 0, false
	}
	h, pa, gen := s.location(int(i))
	return h, pa, gen, true
}

func (s *State) location(vmi int) (string, netip.Addr, uint64) {
	v := &s.vms[vmi]
	if len(s.shadows) > 0 {
		if si, ok := s.shadowIdx[v.Name]; ok && s.active[v.Name] == s.shadows[si].Generation {
			sh := &s.shadows[si]
			return sh.Host, sh.PA, sh.Generation
		}
	}
	return v.Host, s.hosts[s.vmHost[vmi]].PA, v.Generation
}

// LocalVMs returns the VMs that run on host now (shadow activations
// applied), in document order.
func (s *State) LocalVMs(host string) []VM {
	var out []VM
	hi, ok := s.hostIdx[host]
	if !ok {
		return nil
	}
	for _, i := range s.hostVMs[hi] {
		if h, _, _ := s.location(int(i)); h == host {
			out = append(out, s.vms[i])
		}
	}
	for _, sh := range s.shadows {
		if sh.Host == host && s.active[sh.VM] == sh.Generation {
			vi, _ := s.vmIdx.get(sh.VM, s.vms)
			out = append(out, s.vms[vi])
		}
	}
	return out
}

// HostedVMs returns the VMs host runs or is about to run: those placed on
// it and those with a shadow location on it (a migration's target), whether
// the shadow is activated or not, in document order. A host needs a port
// for each of them before a migration starts, since its switch's ports are
// fixed when it is made.
func (s *State) HostedVMs(host string) []VM {
	hi, ok := s.hostIdx[host]
	if !ok {
		return nil
	}
	idx := slices.Clone(s.hostVMs[hi])
	for _, sh := range s.shadows {
		if sh.Host == host {
			if vi, ok := s.vmIdx.get(sh.VM, s.vms); ok {
				idx = append(idx, int32(vi))
			}
		}
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	out := make([]VM, len(idx))
	for i, vi := range idx {
		out[i] = s.vms[vi]
	}
	return out
}

// MappingCount returns the number of CA→PA mappings.
func (s *State) MappingCount() int { return s.table.n }

// Lookup returns the mapping for customer address ca in the VNET with VNI
// vni, with the VM's current location (shadow activation applied). It does
// not allocate.
func (s *State) Lookup(vni uint32, ca netip.Addr) (Mapping, bool) {
	i, ok := s.table.lookup(vni, ca)
	if !ok {
		return Mapping{}, false
	}
	return s.mappingAt(i, true), true
}

// LookupVM is Lookup that also returns the index of the mapping's VM in
// VMs(), so that a caller with per-VM data in a slice beside VMs() finds
// it without hashing the name.
func (s *State) LookupVM(vni uint32, ca netip.Addr) (Mapping, int, bool) {
	i, ok := s.table.lookup(vni, ca)
	if !ok {
		return Mapping{}, -1, false
	}
	return s.mappingAt(i, true), int(s.table.entries[i].vm), true
}

// LookupPlace is LookupVM for a data path that needs only where the
// destination is: the VM's index in VMs(), the mapping's MAC, and the
// host the VM runs on now with its PA (shadow activation applied). It
// builds no Mapping (names, the CA and the generation are left to
// LookupVM) and does not allocate.
func (s *State) LookupPlace(vni uint32, ca netip.Addr) (vm int, mac MAC, host string, pa netip.Addr, ok bool) {
	i, ok := s.table.lookup(vni, ca)
	if !ok {
		return -1, MAC{}, "", netip.Addr{}, false
	}
	e := &s.table.entries[i]
	vmi := int(e.vm)
	if len(s.shadows) > 0 {
		host, pa, _ = s.location(vmi)
	} else {
		// Without shadows a VM is where the document puts it: its host
		// is found through the compact index, without reading the VM
		// (a thousand of them, each a few cache lines, spread over
		// memory: a miss for every first packet).
		h := &s.hosts[s.vmHost[vmi]]
		host, pa = h.Name, h.PA
	}
	return vmi, e.mac, host, pa, true
}

// MappingSlot returns the address of the slot where a lookup of (vni, ca)
// starts, and the size of a slot, or 0 for an empty table: a caller that
// will look up the destinations of a batch of packets prefetches their
// slots first, so that the cache misses of the batch overlap instead of
// coming one after the other. The address is a hint for a prefetch
// instruction only, valid as long as the State is; nothing may be read or
// written through it.
func (s *State) MappingSlot(vni uint32, ca netip.Addr) (addr, size uintptr) {
	t := s.table
	if t == nil || t.n == 0 {
		return 0, 0
	}
	key := ca.As16()
	return uintptr(unsafe.Pointer(&t.entries[t.slot(vni, &key, ca.Is4())])), unsafe.Sizeof(mapEntry{})
}

func (s *State) mappingAt(i int, current bool) Mapping {
	e := &s.table.entries[i]
	v := &s.vms[e.vm]
	m := Mapping{
		VNI:        e.vni,
		CA:         e.addr(),
		MAC:        e.mac,
		PA:         s.hosts[e.host].PA,
		Host:       s.hosts[e.host].Name,
		VM:         v.Name,
		Tenant:     v.Tenant,
		VNET:       v.VNET,
		Generation: v.Generation,
	}
	if current {
		m.Host, m.PA, m.Generation = s.location(int(e.vm))
	}
	return m
}

// Mappings yields every mapping with the VM's own location (not shadows),
// in document order.
func (s *State) Mappings() iter.Seq[Mapping] {
	return func(yield func(Mapping) bool) {
		for vi := range s.vms {
			v := &s.vms[vi]
			vni := s.vnets[s.vmVNET[vi]].VNI
			for _, ca := range v.CAs {
				if i, ok := s.table.lookup(vni, ca); ok && int(s.table.entries[i].vm) == vi {
					if !yield(s.mappingAt(i, false)) {
						return
					}
				}
			}
		}
	}
}

// Routes returns a tenant's effective routing table (implicit subnet
// routes, explicit routes and gateway-rule routes), longest prefix first.
func (s *State) Routes(tenant string) []Route {
	i, ok := s.tenantIdx[tenant]
	if !ok {
		return nil
	}
	return s.routes[i]
}

// LookupRoute returns the route a tenant's routing domain picks for dst by
// longest prefix match.
func (s *State) LookupRoute(tenant string, dst netip.Addr) (Route, bool) {
	i, ok := s.tenantIdx[tenant]
	if !ok {
		return Route{}, false
	}
	return lpm(s.routes[i], dst)
}

// lpm scans a table sorted longest prefix first: the first hit is the
// longest match. A linear scan keeps the oracle obviously right; routing
// tables are per tenant and small.
func lpm(routes []Route, dst netip.Addr) (Route, bool) {
	for _, r := range routes {
		if r.Prefix.Contains(dst) {
			return r, true
		}
	}
	return Route{}, false
}

// ACLs returns a tenant's ACLs in evaluation order (ascending priority, deny
// before allow at equal priority, then by ID).
func (s *State) ACLs(tenant string) []ACL {
	i, ok := s.tenantIdx[tenant]
	if !ok {
		return nil
	}
	return s.acls[i]
}

// GatewayRules returns a tenant's gateway rules in document order.
func (s *State) GatewayRules(tenant string) []GatewayRule {
	i, ok := s.tenantIdx[tenant]
	if !ok {
		return nil
	}
	return s.gwRules[i]
}

// Shadows returns all shadow mappings in document order.
func (s *State) Shadows() []Shadow { return s.shadows }

// Shadow returns the shadow of a VM.
func (s *State) Shadow(vm string) (Shadow, bool) {
	i, ok := s.shadowIdx[vm]
	if !ok {
		return Shadow{}, false
	}
	return s.shadows[i], true
}

// ActiveGeneration returns the generation that is live for a VM: its
// shadow's once activated, its own otherwise.
func (s *State) ActiveGeneration(vm string) (uint64, bool) {
	_, _, g, ok := s.Location(vm)
	return g, ok
}

// Activations returns the generation selected for every VM that has a
// shadow, sorted by VM name.
func (s *State) Activations() []Activation {
	out := make([]Activation, 0, len(s.active))
	for _, vm := range slices.Sorted(maps.Keys(s.active)) {
		out = append(out, Activation{VM: vm, Generation: s.active[vm]})
	}
	return out
}

// Activate returns a new State in which generation gen is live for vm: the
// generation of its shadow (the migration happens) or its own (roll back).
// The receiver is unchanged; the new State shares everything else with it.
func (s *State) Activate(vm string, gen uint64) (*State, error) {
	vi, ok := s.vmIdx.get(vm, s.vms)
	if !ok {
		return nil, fmt.Errorf("activate: unknown VM %q", vm)
	}
	si, ok := s.shadowIdx[vm]
	if !ok {
		return nil, fmt.Errorf("activate: VM %q has no shadow mapping", vm)
	}
	if gen != s.vms[vi].Generation && gen != s.shadows[si].Generation {
		return nil, fmt.Errorf("activate: VM %q has generations %d (current) and %d (shadow), not %d",
			vm, s.vms[vi].Generation, s.shadows[si].Generation, gen)
	}
	ns := *s
	ns.active = maps.Clone(s.active)
	ns.active[vm] = gen
	return &ns, nil
}

// ShadowMappings yields, for every shadow, the VM's mappings at the
// shadow's location (its Host, PA and Generation), active or not: what a
// datapath installs under the shadow's generation ahead of the switch.
func (s *State) ShadowMappings() iter.Seq[Mapping] {
	return func(yield func(Mapping) bool) {
		for _, sh := range s.shadows {
			vi, _ := s.vmIdx.get(sh.VM, s.vms)
			v := &s.vms[vi]
			vni := s.vnets[s.vmVNET[vi]].VNI
			for _, ca := range v.CAs {
				i, ok := s.table.lookup(vni, ca)
				if !ok || int(s.table.entries[i].vm) != int(vi) {
					continue
				}
				m := s.mappingAt(i, false)
				m.Host, m.PA, m.Generation = sh.Host, sh.PA, sh.Generation
				if !yield(m) {
					return
				}
			}
		}
	}
}
