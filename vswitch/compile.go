package vswitch

import (
	"net/netip"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// compiled is one policy.State turned into the lookup structures the slow
// path walks: VMs by port, VNETs by VNI, per-tenant routing tables and ACL
// lists, gateways by PA. CA→PA mappings stay in the state's own compiled
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

	vms       map[string]*vmInfo
	byPort    map[hal.PortID]*vmInfo
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
	port   hal.PortID // its vport on this host; 0 when it has none
	local  bool       // runs on this host now (shadow activation applied)
}

type vnetInfo struct {
	tenant *tenantInfo
	name   string
	vni    uint32
	encap  hal.EncapKind // what it is carried in between hosts
}

type tenantInfo struct {
	id      uint32 // stable across updates
	name    string
	routes  []routeInfo // longest prefix first
	acls    [3][]aclInfo
	gwRules []policy.GatewayRule
}

type routeInfo struct {
	prefix netip.Prefix
	hop    policy.NextHop
	origin policy.RouteOrigin
	rule   string
	vnet   *vnetInfo // for NextHopVNET
	gw     *gwInfo   // for NextHopGateway
}

type gwInfo struct {
	name   string
	pa     netip.Addr
	tenant string
}

type aclInfo struct {
	id       string
	priority uint32
	vnet     string
	src, dst []netip.Prefix
	proto    uint8
	sports   []policy.PortRange
	dports   []policy.PortRange
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
	for _, g := range st.Gateways() {
		gi := &gwInfo{name: g.Name, pa: g.PA, tenant: g.Tenant}
		c.gws[g.Name] = gi
		c.gwByPA[g.PA] = gi
	}
	for _, t := range st.Tenants() {
		ti := &tenantInfo{id: tenantIDs.id(t.Name), name: t.Name, gwRules: st.GatewayRules(t.Name)}
		for _, a := range st.ACLs(t.Name) {
			ai := aclInfo{
				id: a.ID, priority: a.Priority, vnet: a.VNET, src: a.Src, dst: a.Dst, proto: a.Protocol,
				sports: a.SrcPorts, dports: a.DstPorts, allow: a.Action == policy.Allow,
				stateful: a.Stateful && a.Action == policy.Allow,
			}
			if a.Direction == policy.Out || a.Direction == policy.In {
				ti.acls[a.Direction] = append(ti.acls[a.Direction], ai)
			}
		}
		c.tenants[t.Name] = ti
	}
	for _, v := range st.VNETs() {
		vi := &vnetInfo{tenant: c.tenants[v.Tenant], name: v.Name, vni: v.VNI, encap: encapOf(v.Encap)}
		c.vnets[policy.VNETKey{Tenant: v.Tenant, Name: v.Name}] = vi
		c.vnetByVNI[v.VNI] = vi
	}
	for _, ti := range c.tenants {
		for _, r := range st.Routes(ti.name) {
			ri := routeInfo{prefix: r.Prefix, hop: r.NextHop, origin: r.Origin, rule: r.Rule}
			switch r.NextHop.Kind {
			case policy.NextHopVNET:
				ri.vnet = c.vnets[policy.VNETKey{Tenant: ti.name, Name: r.NextHop.VNET}]
			case policy.NextHopGateway:
				ri.gw = c.gws[r.NextHop.Gateway]
			}
			ti.routes = append(ti.routes, ri)
		}
	}
	for _, v := range st.VMs() {
		vi := &vmInfo{
			id: vmIDs.id(v.Name), name: v.Name, tenant: c.tenants[v.Tenant],
			vnet: c.vnets[policy.VNETKey{Tenant: v.Tenant, Name: v.VNET}],
			mac:  macOf(v.MAC), cas: v.CAs, port: ports[v.Name],
		}
		if h, _, _, ok := st.Location(v.Name); ok && h == host {
			vi.local = true
		}
		c.vms[v.Name] = vi
		if vi.port != 0 {
			c.byPort[vi.port] = vi
		}
	}
	return c
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
		c.alt[sh.VM] = compile(ns, c.host, ports, vmIDs, tenantIDs)
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

// lpm picks the longest matching route; routes are sorted longest first.
func (t *tenantInfo) lpm(dst netip.Addr) *routeInfo {
	for i := range t.routes {
		if t.routes[i].prefix.Contains(dst) {
			return &t.routes[i]
		}
	}
	return nil
}

func (a *aclInfo) matches(p *policy.Packet) bool {
	if len(a.src) > 0 && !anyContains(a.src, p.Src) {
		return false
	}
	if len(a.dst) > 0 && !anyContains(a.dst, p.Dst) {
		return false
	}
	if a.proto != policy.ProtoAny && a.proto != p.Protocol {
		return false
	}
	if len(a.sports) > 0 && (!hasPorts(p.Protocol) || !anyPort(a.sports, p.SrcPort)) {
		return false
	}
	if len(a.dports) > 0 && (!hasPorts(p.Protocol) || !anyPort(a.dports, p.DstPort)) {
		return false
	}
	return true
}

func hasPorts(proto uint8) bool {
	return proto == policy.ProtoTCP || proto == policy.ProtoUDP || proto == policy.ProtoSCTP
}

func anyContains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func anyPort(rs []policy.PortRange, port uint16) bool {
	for _, r := range rs {
		if port >= r.Lo && port <= r.Hi {
			return true
		}
	}
	return false
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
