package vswitch

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/policy/match"
)

// compiled is one policy.State turned into the lookup structures the slow
// path walks: VMs by port, VNETs by VNI, per-tenant routing tables (a
// longest-prefix-match trie, match.Routes) and ACL classifiers (one per
// direction, match.ACLs: first match by priority without scanning the
// rules), gateways by PA. CA→PA mappings stay in the state's own compiled
// open-addressing table (policy.State.Lookup, allocation free), which is the
// table the policy owns and keeps current with shadow activations.
//
// A compiled is immutable once built: the switch swaps the pointer under its
// lock, so a packet is classified entirely against one version.
type compiled struct {
	st        *policy.State
	host      string
	hostKnown bool
	pa        netip.Addr
	// endpoint are the outer destinations this host terminates tunnels
	// for: its provider address(es) from the policy.
	endpoint  []netip.Addr
	routerMAC hal.MAC

	vms    map[string]*vmInfo
	vmAt   []*vmInfo // by index in st.VMs() (policy.State.LookupVM)
	byPort map[hal.PortID]*vmInfo
	// portVM is byPort for the ports below maxDensePort, indexed by port:
	// every first packet from a VM looks its in-port up (vmOnPort).
	portVM    []*vmInfo
	vnetByVNI map[uint32]*vnetInfo
	vnets     map[policy.VNETKey]*vnetInfo
	tenants   map[string]*tenantInfo
	gws       map[string]*gwInfo
	gwByPA    map[netip.Addr]*gwInfo

	// alt holds, for every VM whose shadow is installed but not active, the
	// compiled form of the state with that shadow activated: what flows in
	// the VM's scope must do after ActivateShadow. Only the VM's location
	// differs from the receiver.
	alt map[string]*compiled
	// altIDs has bit i set when the VM with id i has an entry in alt.
	altIDs []uint64

	byVNET map[*vnetInfo][]*vmInfo // built on first use
}

type vmInfo struct {
	id     uint32 // stable across updates: the VM's scope
	name   string
	tenant *tenantInfo
	vnet   *vnetInfo
	mac    hal.MAC
	cas    []netip.Addr
	// caSet holds cas as a hash set when the VM has many and a vport on
	// this switch, the only VMs whose sources the walk checks (see owns).
	caSet *caSet
	port  hal.PortID // its vport on this host; 0 when it has none
	local bool       // runs on this host now (shadow activation applied)
	// act is the action set last interned for a flow toward the VM
	// (internHinted): most of a VM's flows share one, so interning
	// compares it with the verdict's key before probing the table of all
	// sets, whose slots are out of the cache (a thousand sets on a
	// realistic host). Only a hint: checked in full, stale once released.
	act *actSet
}

type vnetInfo struct {
	tenant *tenantInfo
	name   string
	vni    uint32
	encap  hal.EncapKind // what it is carried in between hosts
	// aclScope selects, per direction, the tenant's ACLs that apply to
	// the VNET's VMs.
	aclScope [3]match.Scope
}

type tenantInfo struct {
	id      uint32 // stable across updates
	name    string
	routes  []routeInfo // longest prefix first
	rt      *match.Routes
	acls    [3][]aclInfo // evaluation order, per direction
	acl     [3]*match.ACLs
	gwRules []policy.GatewayRule
}

type routeInfo struct {
	// What a walk reads of every route it takes comes first (routeHot):
	// the route's target and its kind.
	vnet   *vnetInfo // for NextHopVNET
	gw     *gwInfo   // for NextHopGateway
	hop    policy.NextHop
	prefix netip.Prefix
	origin policy.RouteOrigin
	rule   string
}

// routeHot is how many of a routeInfo's first bytes a walk reads of every
// route it takes (vnet, gw, hop.Kind): the lines HandleBatch prefetches.
const routeHot = unsafe.Offsetof(routeInfo{}.hop) + unsafe.Sizeof(policy.NextHop{}.Kind)

type gwInfo struct {
	name   string
	pa     netip.Addr
	tenant string
}

// aclInfo is what the walk needs of the ACL a classifier picked.
type aclInfo struct {
	id       string
	priority uint32
	vnet     string
	allow    bool
	stateful bool
}

// interner hands out ids that stay the same for a name across policy
// versions, so that flows can name the VMs and tenants they derive from
// without holding pointers into an old compiled state.
type interner struct {
	ids map[string]uint32
}

func (in *interner) id(name string) uint32 {
	if in.ids == nil {
		in.ids = map[string]uint32{}
	}
	if v, ok := in.ids[name]; ok {
		return v
	}
	v := uint32(len(in.ids) + 1)
	in.ids[name] = v
	return v
}

func macOf(m policy.MAC) hal.MAC { return hal.MAC(m) }

// compile builds the lookup structures of st for host. ports names the
// vports of local VMs.
func compile(st *policy.State, host string, ports map[string]hal.PortID, vmIDs, tenantIDs *interner) *compiled {
	return compileFrom(st, host, ports, vmIDs, tenantIDs, nil)
}

// compileFrom is compile; with a non-nil base, a compiled form of a state
// that differs from st only in VM locations (st is base.st with shadows
// activated), it shares base's tenants, VNETs and gateways, whose routing
// tables and ACL classifiers do not depend on where VMs run.
func compileFrom(st *policy.State, host string, ports map[string]hal.PortID, vmIDs, tenantIDs *interner, base *compiled) *compiled {
	c := &compiled{
		st:        st,
		host:      host,
		routerMAC: macOf(st.RouterMAC()),
		vms:       map[string]*vmInfo{},
		byPort:    map[hal.PortID]*vmInfo{},
		vnetByVNI: map[uint32]*vnetInfo{},
		vnets:     map[policy.VNETKey]*vnetInfo{},
		tenants:   map[string]*tenantInfo{},
		gws:       map[string]*gwInfo{},
		gwByPA:    map[netip.Addr]*gwInfo{},
	}
	if h, ok := st.Host(host); ok {
		c.hostKnown, c.pa = true, h.PA
		if h.PA.IsValid() {
			c.endpoint = []netip.Addr{h.PA}
		}
	}
	if base != nil {
		c.gws, c.gwByPA, c.tenants, c.vnets, c.vnetByVNI = base.gws, base.gwByPA, base.tenants, base.vnets, base.vnetByVNI
	} else {
		c.compileTenants(st, tenantIDs)
	}
	c.vmAt = make([]*vmInfo, len(st.VMs()))
	for i, v := range st.VMs() {
		vi := &vmInfo{
			id: vmIDs.id(v.Name), name: v.Name, tenant: c.tenants[v.Tenant],
			vnet: c.vnets[policy.VNETKey{Tenant: v.Tenant, Name: v.VNET}],
			mac:  macOf(v.MAC), cas: v.CAs, port: ports[v.Name],
		}
		if len(v.CAs) > manyCAs && vi.port != 0 {
			vi.caSet = newCASet(v.CAs)
		}
		if h, _, _, ok := st.Location(v.Name); ok && h == host {
			vi.local = true
		}
		c.vms[v.Name] = vi
		c.vmAt[i] = vi
		if vi.port != 0 {
			c.byPort[vi.port] = vi
			if vi.port < maxDensePort {
				if int(vi.port) >= len(c.portVM) {
					c.portVM = append(c.portVM, make([]*vmInfo, int(vi.port)+1-len(c.portVM))...)
				}
				c.portVM[vi.port] = vi
			}
		}
	}
	return c
}

// maxDensePort bounds the ports compiled.portVM indexes; the VMs on higher
// ports are found in byPort alone.
const maxDensePort = 4096

// vmOnPort is byPort[p] without hashing p for the ports portVM holds.
func (c *compiled) vmOnPort(p hal.PortID) *vmInfo {
	if int(p) < len(c.portVM) {
		return c.portVM[p]
	}
	if p < maxDensePort {
		return nil
	}
	return c.byPort[p]
}

// manyCAs: a VM with more addresses than this checks a source address in
// a hash set rather than by a scan.
const manyCAs = 8

// addr128 is an address as a number; IPv4 addresses are IPv4-mapped,
// which a VM's CAs never are (policy rejects them), so the two families
// cannot collide.
type addr128 struct{ hi, lo uint64 }

func addr128Of(a netip.Addr) addr128 {
	return addr128From16(a.As16())
}

func addr128From16(b [16]byte) addr128 {
	return addr128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// caSet is a VM's addresses as an open-addressing hash set (linear
// probing, at most half full), so that checking a source address costs
// one cache line, which the batch prefetches (prefetchWalk), where a
// binary search among a thousand addresses cost ten dependent loads.
// The zero addr128 (::, which no CA is: policy rejects the unspecified
// address) marks an empty slot.
type caSet struct {
	slots []addr128
	mask  uint64
}

// caSeed seeds the sets' hash, per process: a VM cannot pick its
// addresses to collide on every host alike.
var caSeed = [2]uint64{rand.Uint64() | 1, rand.Uint64() | 1}

func newCASet(cas []netip.Addr) *caSet {
	size := 16
	for size < 2*len(cas) {
		size <<= 1
	}
	s := &caSet{slots: make([]addr128, size), mask: uint64(size - 1)}
	for _, a := range cas {
		x := addr128Of(a)
		if x == (addr128{}) {
			continue // contains nothing: owns refuses :: anyway
		}
		for i := x.hash() & s.mask; ; i = (i + 1) & s.mask {
			if y := &s.slots[i]; *y == (addr128{}) || *y == x {
				*y = x
				break
			}
		}
	}
	return s
}

func (x addr128) hash() uint64 {
	return mum(x.hi^caSeed[0], x.lo^caSeed[1])
}

func (s *caSet) has(x addr128) bool {
	if x == (addr128{}) {
		return false
	}
	for i := x.hash() & s.mask; ; i = (i + 1) & s.mask {
		switch y := s.slots[i]; y {
		case x:
			return true
		case addr128{}:
			return false
		}
	}
}

// slotAddr is the address of the slot where a look-up of x starts, for a
// prefetch (nothing is read or written through it).
func (s *caSet) slotAddr(x addr128) uintptr {
	return uintptr(unsafe.Pointer(&s.slots[x.hash()&s.mask]))
}

// owns reports whether a is one of the VM's addresses.
func (vm *vmInfo) owns(a netip.Addr) bool {
	if vm.caSet != nil {
		if a.Zone() != "" || a.Is4In6() {
			return false // no CA has a zone or is IPv4-mapped
		}
		return vm.caSet.has(addr128Of(a))
	}
	for _, x := range vm.cas {
		if x == a {
			return true
		}
	}
	return false
}

// compileTenants builds gateways, tenants (routing tables, ACL
// classifiers) and VNETs.
func (c *compiled) compileTenants(st *policy.State, tenantIDs *interner) {
	for _, g := range st.Gateways() {
		gi := &gwInfo{name: g.Name, pa: g.PA, tenant: g.Tenant}
		c.gws[g.Name] = gi
		c.gwByPA[g.PA] = gi
	}
	for _, t := range st.Tenants() {
		ti := &tenantInfo{id: tenantIDs.id(t.Name), name: t.Name, gwRules: st.GatewayRules(t.Name)}
		var byDir [3][]policy.ACL
		for _, a := range st.ACLs(t.Name) {
			ai := aclInfo{
				id: a.ID, priority: a.Priority, vnet: a.VNET, allow: a.Action == policy.Allow,
				stateful: a.Stateful && a.Action == policy.Allow,
			}
			if a.Direction == policy.Out || a.Direction == policy.In {
				ti.acls[a.Direction] = append(ti.acls[a.Direction], ai)
				byDir[a.Direction] = append(byDir[a.Direction], a)
			}
		}
		for _, d := range []policy.Direction{policy.Out, policy.In} {
			ti.acl[d] = match.NewACLs(byDir[d])
		}
		c.tenants[t.Name] = ti
	}
	for _, v := range st.VNETs() {
		vi := &vnetInfo{tenant: c.tenants[v.Tenant], name: v.Name, vni: v.VNI, encap: encapOf(v.Encap)}
		for _, d := range []policy.Direction{policy.Out, policy.In} {
			vi.aclScope[d] = vi.tenant.acl[d].Scope(v.Name)
		}
		c.vnets[policy.VNETKey{Tenant: v.Tenant, Name: v.Name}] = vi
		c.vnetByVNI[v.VNI] = vi
	}
	for _, ti := range c.tenants {
		var prefixes []netip.Prefix
		for _, r := range st.Routes(ti.name) {
			ri := routeInfo{prefix: r.Prefix, hop: r.NextHop, origin: r.Origin, rule: r.Rule}
			switch r.NextHop.Kind {
			case policy.NextHopVNET:
				ri.vnet = c.vnets[policy.VNETKey{Tenant: ti.name, Name: r.NextHop.VNET}]
			case policy.NextHopGateway:
				ri.gw = c.gws[r.NextHop.Gateway]
			}
			ti.routes = append(ti.routes, ri)
			prefixes = append(prefixes, r.Prefix)
		}
		ti.rt = match.NewRoutes(prefixes)
	}
}

// compileAlts fills c.alt: one compiled state per VM with an inactive shadow.
func (c *compiled) compileAlts(ports map[string]hal.PortID, vmIDs, tenantIDs *interner) {
	c.alt, c.altIDs = nil, nil
	for _, sh := range c.st.Shadows() {
		if g, ok := c.st.ActiveGeneration(sh.VM); ok && g == sh.Generation {
			continue
		}
		ns, err := c.st.Activate(sh.VM, sh.Generation)
		if err != nil {
			continue
		}
		if c.alt == nil {
			c.alt = map[string]*compiled{}
		}
		c.alt[sh.VM] = compileFrom(ns, c.host, ports, vmIDs, tenantIDs, c)
		id := vmIDs.id(sh.VM)
		for int(id/64) >= len(c.altIDs) {
			c.altIDs = append(c.altIDs, 0)
		}
		c.altIDs[id/64] |= 1 << (id % 64)
	}
}

// moving reports whether the VM with interned id has an inactive shadow
// (an entry in c.alt): c.alt[name] != nil without hashing the name.
func (c *compiled) moving(id uint32) bool {
	return int(id/64) < len(c.altIDs) && c.altIDs[id/64]&(1<<(id%64)) != 0
}

// lpm picks the longest matching route.
func (t *tenantInfo) lpm(dst netip.Addr) *routeInfo {
	if i, ok := t.rt.Lookup(dst); ok {
		return &t.routes[i]
	}
	return nil
}

// firstACL returns the first of the tenant's ACLs in direction dir that
// applies to vm and matches p, or nil; l4 reports whether the answer may
// depend on p's transport ports (match.ACLs.Lookup).
func (t *tenantInfo) firstACL(vm *vmInfo, dir policy.Direction, p *policy.Packet) (a *aclInfo, l4 bool) {
	i, l4 := t.acl[dir].Lookup(vm.vnet.aclScope[dir], p)
	if i < 0 {
		return nil, l4
	}
	return &t.acls[dir][i], l4
}

func hasPorts(proto uint8) bool {
	return proto == policy.ProtoTCP || proto == policy.ProtoUDP || proto == policy.ProtoSCTP
}

// translate maps a from prefix from into prefix to (same length): the
// prefix bits become to's, the host bits stay. policy's evaluator has its
// own copy on purpose: it is the oracle the differential tests hold this
// package to, so the two must not share the code they check each other on.
func translate(a netip.Addr, from, to netip.Prefix) netip.Addr {
	bits := to.Bits()
	src := a.As16()
	dst := to.Addr().As16()
	off := 0
	if a.Is4() {
		off = 12
	}
	for i := off; i < 16; i++ {
		pos := (i - off) * 8
		switch {
		case pos+8 <= bits:
		case pos >= bits:
			dst[i] = src[i]
		default:
			mask := byte(0xff << (8 - (bits - pos)))
			dst[i] = dst[i]&mask | src[i]&^mask
		}
	}
	out := netip.AddrFrom16(dst)
	if a.Is4() {
		return out.Unmap()
	}
	return out
}
