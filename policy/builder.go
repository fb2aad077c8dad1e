package policy

import "slices"

type item[T any] struct {
	v T
	o *origin
}

// Builder assembles a State through the Go API. Add* only record; Build runs
// every check the document loader runs and returns either a complete State
// or an ErrorList (and no State). A Builder can be reused after Build to
// make a modified version.
type Builder struct {
	file      string
	routerMAC item[MAC]
	hosts     []item[Host]
	gateways  []item[Gateway]
	tenants   []item[Tenant]
	vnets     []item[VNET]
	// VMs are kept as plain values, not items, so that a State can share
	// this array instead of copying it (at DASH scale it is most of the
	// memory). Build never changes an element except to fill in a zero
	// Generation, which it does once; appends after a Build land beyond
	// the State's view. vmDoc holds the document positions (none, or
	// fewer than vms, for the Go API).
	vms     []VM
	vmDoc   vmPositions
	routes  []item[Route]
	gwRules []item[GatewayRule]
	acls    []item[ACL]
	shadows []item[Shadow]
	acts    []item[Activation]

	relocated []item[Relocated]
	// poolFrom is the index of the first VM compiled from a relocated
	// subnet during Build, poolOrigins their entries' origins.
	poolFrom    int
	poolOrigins []*origin
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder { return &Builder{} }

func add[T any](list *[]item[T], name string, v T) {
	*list = append(*list, item[T]{v, &origin{list: name, index: len(*list)}})
}

// SetRouterMAC sets the source MAC of routed packets (default
// DefaultRouterMAC).
func (b *Builder) SetRouterMAC(m MAC) {
	b.routerMAC = item[MAC]{m, &origin{path: "router_mac"}}
}

// AddHost adds a host.
func (b *Builder) AddHost(h Host) { add(&b.hosts, "hosts", h) }

// AddGateway adds a virtualization gateway.
func (b *Builder) AddGateway(g Gateway) { add(&b.gateways, "gateways", g) }

// AddTenant adds a tenant.
func (b *Builder) AddTenant(t Tenant) { add(&b.tenants, "tenants", t) }

// AddVNET adds a VNET to the tenant it names.
func (b *Builder) AddVNET(v VNET) {
	v.Subnets = slices.Clone(v.Subnets)
	add(&b.vnets, "vnets", v)
}

// AddVM adds a VM (and so one mapping per CA) to the VNET it names.
func (b *Builder) AddVM(v VM) {
	v.CAs = slices.Clone(v.CAs)
	b.vms = append(b.vms, v)
}

// vmOrigin says where VM i came from; only called to report an error.
func (b *Builder) vmOrigin(i int) *origin {
	if b.poolOrigins != nil && i >= b.poolFrom {
		return b.poolOrigins[i-b.poolFrom]
	}
	if o := b.vmDoc.origin(i); o != nil {
		return o
	}
	return &origin{list: "vms", index: i}
}

// AddRoute adds an explicit route to the tenant it names. Origin and Rule
// are ignored (explicit routes are RouteExplicit).
func (b *Builder) AddRoute(r Route) {
	r.Origin, r.Rule = RouteExplicit, ""
	add(&b.routes, "routes", r)
}

// AddGatewayRule adds a gateway rule to the tenant it names.
func (b *Builder) AddGatewayRule(g GatewayRule) { add(&b.gwRules, "gateway_rules", g) }

// AddACL adds an ACL to the tenant it names.
func (b *Builder) AddACL(a ACL) {
	a.Src, a.Dst = slices.Clone(a.Src), slices.Clone(a.Dst)
	a.SrcPorts, a.DstPorts = slices.Clone(a.SrcPorts), slices.Clone(a.DstPorts)
	add(&b.acls, "acls", a)
}

// AddShadow adds a shadow mapping (PA is taken from the host).
func (b *Builder) AddShadow(s Shadow) { add(&b.shadows, "shadows", s) }

// AddActivation selects the live generation of a VM with a shadow.
func (b *Builder) AddActivation(a Activation) { add(&b.acts, "activations", a) }

// Builder returns a Builder holding everything in s, so that a caller can
// add to it and build a new version. Activations are carried over.
func (s *State) Builder() *Builder {
	b := NewBuilder()
	if s.routerMAC != DefaultRouterMAC {
		b.SetRouterMAC(s.routerMAC)
	}
	for _, h := range s.hosts {
		b.AddHost(h)
	}
	for _, g := range s.gateways {
		b.AddGateway(g)
	}
	for _, t := range s.tenants {
		b.AddTenant(t)
	}
	for _, v := range s.vnets {
		b.AddVNET(v)
	}
	for _, v := range s.ownVMList() {
		b.AddVM(v)
	}
	for _, r := range s.relocated {
		b.AddRelocated(r)
	}
	for ti := range s.tenants {
		for _, r := range s.routes[ti] {
			if r.Origin == RouteExplicit {
				b.AddRoute(r)
			}
		}
		for _, g := range s.gwRules[ti] {
			b.AddGatewayRule(g)
		}
		for _, a := range s.acls[ti] {
			b.AddACL(a)
		}
	}
	for _, sh := range s.shadows {
		b.AddShadow(sh)
	}
	for _, a := range s.Activations() {
		b.AddActivation(a)
	}
	return b
}

// Build checks everything and returns the State, or an ErrorList naming
// every error with its place (file, line and field when the builder was
// filled from YAML). The checks are in check.go.
func (b *Builder) Build() (*State, error) { return b.check() }
