package policy

// The checker behind Builder.Build: every rule of the desired state's
// consistency (names, addresses, subnets, routes, ACLs, shadows) is checked
// here, and every error is reported with where it was written.

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

type checker struct {
	file string
	errs ErrorList
	// inLoop marks routes already reported as part of a loop, so that a
	// loop of n routes is reported once, at its first route.
	inLoop map[RouteKey]bool
}

func (c *checker) errf(o *origin, field, format string, args ...any) {
	path, p := o.field(field)
	c.errs = append(c.errs, &LoadError{File: c.file, Line: p.line, Column: p.col, Field: path, Msg: fmt.Sprintf(format, args...)})
}

// addr checks an address that must be a usable unicast address without zone.
func (c *checker) addr(o *origin, field string, a netip.Addr, what string) bool {
	switch {
	case !a.IsValid():
		c.errf(o, field, "missing %s", what)
	case a.Zone() != "":
		c.errf(o, field, "%s %s must not have a zone", what, a)
	case a.Is4In6():
		c.errf(o, field, "%s %s is an IPv4-mapped IPv6 address; write it as IPv4", what, a)
	case a.IsUnspecified() || a.IsMulticast():
		c.errf(o, field, "%s %s is not a unicast address", what, a)
	default:
		return true
	}
	return false
}

func (c *checker) prefix(o *origin, field string, p netip.Prefix, what string) bool {
	switch {
	case !p.IsValid():
		c.errf(o, field, "missing or invalid %s", what)
	case p.Addr().Zone() != "":
		c.errf(o, field, "%s %s must not have a zone", what, p)
	case p.Addr().Is4In6():
		c.errf(o, field, "%s %s is IPv4-mapped; write it as IPv4", what, p)
	case p.Masked() != p:
		c.errf(o, field, "%s %s has host bits set (did you mean %s?)", what, p, p.Masked())
	default:
		return true
	}
	return false
}

func (c *checker) name(o *origin, field, n, what string) bool {
	if n == "" {
		c.errf(o, field, "missing %s", what)
		return false
	}
	return true
}

// check is Build: it checks everything the builder holds, in the order
// the State needs it (hosts, tenants, gateways, VNETs, VMs, routes, ACLs,
// shadows), collecting every error with where it was written.
func (b *Builder) check() (*State, error) {
	c := &checker{file: b.file}
	s := &State{
		routerMAC: DefaultRouterMAC,
		hostIdx:   map[string]int{},
		hostByPA:  map[netip.Addr]int{},
		gwIdx:     map[string]int{},
		gwByPA:    map[netip.Addr]int{},
		tenantIdx: map[string]int{},
		vnetIdx:   map[VNETKey]int{},
		vnetByVNI: map[uint32]int{},
		shadowIdx: map[string]int{},
		active:    map[string]uint64{},
	}
	if o := b.routerMAC.o; o != nil {
		if m := b.routerMAC.v; m.IsZero() || m.IsMulticast() {
			c.errf(o, "", "router MAC %s must be a non-zero unicast MAC", m)
		} else {
			s.routerMAC = m
		}
	}

	for _, it := range b.hosts {
		h, o := it.v, it.o
		okName := c.name(o, "name", h.Name, "host name")
		if _, dup := s.hostIdx[h.Name]; dup && okName {
			c.errf(o, "name", "duplicate host %q", h.Name)
			continue
		}
		if c.addr(o, "pa", h.PA, "provider address") {
			if j, dup := s.hostByPA[h.PA]; dup {
				c.errf(o, "pa", "provider address %s is already host %s's", h.PA, s.hosts[j].Name)
			}
		}
		if !okName {
			continue
		}
		s.hostIdx[h.Name] = len(s.hosts)
		s.hostByPA[h.PA] = len(s.hosts)
		s.hosts = append(s.hosts, h)
	}

	for _, it := range b.tenants {
		t, o := it.v, it.o
		if !c.name(o, "name", t.Name, "tenant name") {
			continue
		}
		if _, dup := s.tenantIdx[t.Name]; dup {
			c.errf(o, "name", "duplicate tenant %q", t.Name)
			continue
		}
		s.tenantIdx[t.Name] = len(s.tenants)
		s.tenants = append(s.tenants, t)
	}
	nt := len(s.tenants)
	s.routes = make([][]Route, nt)
	s.acls = make([][]ACL, nt)
	s.gwRules = make([][]GatewayRule, nt)

	for _, it := range b.gateways {
		g, o := it.v, it.o
		if !c.name(o, "name", g.Name, "gateway name") {
			continue
		}
		if _, dup := s.gwIdx[g.Name]; dup {
			c.errf(o, "name", "duplicate gateway %q", g.Name)
			continue
		}
		if c.addr(o, "pa", g.PA, "provider address") {
			if j, dup := s.hostByPA[g.PA]; dup {
				c.errf(o, "pa", "provider address %s is already host %s's", g.PA, s.hosts[j].Name)
			} else if j, dup := s.gwByPA[g.PA]; dup {
				c.errf(o, "pa", "provider address %s is already gateway %s's", g.PA, s.gateways[j].Name)
			}
		}
		if g.Tenant != "" {
			if _, ok := s.tenantIdx[g.Tenant]; !ok {
				c.errf(o, "tenant", "unknown tenant %q", g.Tenant)
			}
		}
		s.gwIdx[g.Name] = len(s.gateways)
		s.gwByPA[g.PA] = len(s.gateways)
		s.gateways = append(s.gateways, g)
	}

	b.buildVNETs(c, s)
	s.ownVMs = len(b.vms)
	if len(b.relocated) > 0 {
		// The relocated pools' VMs follow the Builder's own, in a copy
		// of the array (the Builder keeps only its own VMs).
		own := b.vms
		pool, origins := b.buildRelocated(c, s)
		b.vms, b.poolFrom, b.poolOrigins = append(own[:len(own):len(own)], pool...), len(own), origins
		b.buildVMs(c, s)
		b.vms, b.poolOrigins = own, nil
		b.checkRelocatedVMs(c, s)
	} else {
		b.buildVMs(c, s)
	}
	b.buildRoutes(c, s)
	b.buildACLs(c, s)
	b.buildShadows(c, s)

	if len(c.errs) > 0 {
		c.errs.sort()
		return nil, c.errs
	}
	return s, nil
}

func (b *Builder) buildVNETs(c *checker, s *State) {
	var subnets []subnetAt
	for _, it := range b.vnets {
		v, o := it.v, it.o
		ti, ok := s.tenantIdx[v.Tenant]
		if !ok {
			c.errf(o, "tenant", "unknown tenant %q", v.Tenant)
			continue
		}
		if !c.name(o, "name", v.Name, "VNET name") {
			continue
		}
		key := VNETKey{v.Tenant, v.Name}
		if _, dup := s.vnetIdx[key]; dup {
			c.errf(o, "name", "duplicate VNET %q in tenant %s", v.Name, v.Tenant)
			continue
		}
		switch {
		case v.VNI == 0 || v.VNI > 0xFFFFFF:
			c.errf(o, "vni", "VNI %d is outside 1..16777215", v.VNI)
		default:
			if j, dup := s.vnetByVNI[v.VNI]; dup {
				other := s.vnets[j]
				c.errf(o, "vni", "VNI %d is already VNET %s of tenant %s", v.VNI, other.Name, other.Tenant)
			} else {
				s.vnetByVNI[v.VNI] = len(s.vnets)
			}
		}
		if !v.Encap.Valid() {
			c.errf(o, "encap", "unknown encapsulation kind %d (want vxlan, geneve or nvgre)", v.Encap)
		}
		if len(v.Subnets) == 0 {
			c.errf(o, "subnets", "a VNET needs at least one subnet")
		}
		for i, p := range v.Subnets {
			f := fmt.Sprintf("subnets[%d]", i)
			if c.prefix(o, f, p, "subnet") {
				subnets = append(subnets, subnetAt{p: p, tenant: ti, vnet: v.Name, o: o, field: f, order: len(subnets)})
			}
		}
		s.vnetIdx[key] = len(s.vnets)
		s.vnets = append(s.vnets, v)
	}
	c.overlaps(s, subnets)
}

type subnetAt struct {
	p      netip.Prefix
	tenant int
	vnet   string
	o      *origin
	field  string
	order  int // document order
}

// overlaps reports subnets that overlap within one routing domain. Two
// prefixes overlap only if one contains the other, so after sorting by
// (tenant, address, length) every prefix that overlaps anything overlaps the
// outermost prefix of its group: one pass finds them all, in O(n log n)
// however many subnets a document holds. Of each overlapping pair the one
// later in the document is blamed.
func (c *checker) overlaps(s *State, subnets []subnetAt) {
	slices.SortFunc(subnets, func(a, b subnetAt) int {
		return cmp.Or(cmp.Compare(a.tenant, b.tenant), a.p.Addr().Compare(b.p.Addr()), cmp.Compare(a.p.Bits(), b.p.Bits()), cmp.Compare(a.order, b.order))
	})
	blamed := map[int]bool{}
	top := -1
	for i := range subnets {
		cur := &subnets[i]
		if top < 0 || subnets[top].tenant != cur.tenant || !subnets[top].p.Overlaps(cur.p) {
			top = i
			continue
		}
		late, early := cur, &subnets[top]
		if late.order < early.order {
			late, early = early, late
		}
		if blamed[late.order] {
			continue
		}
		blamed[late.order] = true
		c.errf(late.o, late.field, "subnet %s overlaps %s of VNET %s in tenant %s's routing domain",
			late.p, early.p, early.vnet, s.tenants[late.tenant].Name)
	}
}

func (b *Builder) buildVMs(c *checker, s *State) {
	n := 0
	for i := range b.vms {
		n += len(b.vms[i].CAs)
	}
	s.table = newMappingTable(n)
	s.vmIdx = newNameIndex(len(b.vms))
	// The State shares the Builder's VMs: index i is VM i of the Builder.
	// A VM rejected here stays in the array, but then Build fails and the
	// State is never returned.
	s.vms = b.vms[:len(b.vms):len(b.vms)]
	s.vmVNET = make([]int32, len(b.vms))
	s.vmHost = make([]int32, len(b.vms))
	s.hostVMs = make([][]int32, len(s.hosts))
	// VMs come grouped by VNET (documents nest them so): remember the last
	// VNET to skip most lookups keyed by two strings.
	lastVNET, lastVI := VNETKey{}, -1
	vnetOf := func(v *VM) int {
		if key := (VNETKey{v.Tenant, v.VNET}); lastVI < 0 || key != lastVNET {
			vi, ok := s.vnetIdx[key]
			if !ok {
				return -1
			}
			lastVNET, lastVI = key, vi
		}
		return lastVI
	}
	var hashes [touchBatch]uint64
	var sink uint64
	for start := 0; start < len(b.vms); start += touchBatch {
		end := min(start+touchBatch, len(b.vms))
		// Touch the slots this batch's names and mappings will land in:
		// the loads are independent, so the CPU fetches them together, and
		// the inserts below find them in cache instead of waiting for one
		// miss after another (the tables are hundreds of megabytes at DASH
		// scale).
		for i := start; i < end; i++ {
			v := &b.vms[i]
			h := s.vmIdx.hash(v.Name)
			hashes[i-start] = h
			sink += s.vmIdx.slots[s.vmIdx.home(h)]
			if vi := vnetOf(v); vi >= 0 && len(v.CAs) > 0 {
				ca := v.CAs[0].As16()
				sink += uint64(s.table.entries[s.table.slot(s.vnets[vi].VNI, &ca, v.CAs[0].Is4())].vni)
			}
		}
		for i := start; i < end; i++ {
			b.buildVM(c, s, i, hashes[i-start], vnetOf(&b.vms[i]))
		}
	}
	touchSink.Store(sink)
}

// touchBatch is how many VMs have their slots touched ahead of insertion:
// enough misses in flight to hide most of their latency, few enough for
// the lines to stay in L1.
const touchBatch = 32

// touchSink keeps the touching loads from being optimized away. It is
// atomic because Builds run concurrently (one process may follow several
// hosts).
var touchSink atomic.Uint64

// buildVM checks VM idx and adds it and its mappings; vi is the index of
// its VNET, or -1 if there is none.
func (b *Builder) buildVM(c *checker, s *State, idx int, nameHash uint64, vi int) {
	v := &b.vms[idx]
	bad := func(field, format string, args ...any) {
		if b.poolOrigins != nil && idx >= b.poolFrom {
			field = poolField(field) // a relocated pool's address
		}
		c.errf(b.vmOrigin(idx), field, format, args...)
	}
	if v.Name == "" {
		bad("name", "missing VM name")
		return
	}
	if vi < 0 {
		if _, ok := s.tenantIdx[v.Tenant]; !ok {
			bad("tenant", "unknown tenant %q", v.Tenant)
		} else {
			bad("vnet", "unknown VNET %q in tenant %s", v.VNET, v.Tenant)
		}
		return
	}
	hi, ok := s.hostIdx[v.Host]
	if !ok {
		bad("host", "unknown host %q", v.Host)
		return
	}
	if _, added := s.vmIdx.insert(nameHash, v.Name, idx, s.vms); !added {
		bad("name", "duplicate VM %q", v.Name)
		return
	}
	if v.MAC.IsZero() || v.MAC.IsMulticast() {
		bad("mac", "MAC %s must be a non-zero unicast MAC", v.MAC)
	}
	if v.Generation == 0 {
		v.Generation = 1
	}
	if len(v.CAs) == 0 {
		bad("ca", "a VM needs at least one customer address")
	}
	if len(v.SealKeys) > 0 {
		checkSealKeys(v.SealKeys, bad)
	}
	s.hostVMs[hi] = append(s.hostVMs[hi], int32(idx))
	s.vmVNET[idx] = int32(vi)
	s.vmHost[idx] = int32(hi)
	vnet := &s.vnets[vi]
	for i, ca := range v.CAs {
		if !ca.IsValid() || ca.Zone() != "" || ca.Is4In6() || ca.IsUnspecified() || ca.IsMulticast() {
			c.addr(b.vmOrigin(idx), caField(i), ca, "customer address")
			continue
		}
		if !anyContains(vnet.Subnets, ca) {
			bad(caField(i), "customer address %s is outside the subnets of VNET %s", ca, vnet.Name)
			continue
		}
		at, added := s.table.insert(makeEntry(vnet.VNI, ca, hi, idx, v.MAC))
		if !added {
			owner := s.vms[s.table.entries[at].vm].Name
			if owner == v.Name {
				bad(caField(i), "customer address %s is listed twice", ca)
			} else {
				bad(caField(i), "duplicate customer address %s in VNET %s: already VM %s's", ca, vnet.Name, owner)
			}
		}
	}
}

// caField names a CA field; built only when there is an error to report.
func caField(i int) string { return "ca[" + strconv.Itoa(i) + "]" }

// gatewayFor checks that a tenant may use a gateway.
func (c *checker) gatewayFor(s *State, o *origin, field, gw, tenant string) bool {
	gi, ok := s.gwIdx[gw]
	if !ok {
		c.errf(o, field, "unknown gateway %q", gw)
		return false
	}
	if t := s.gateways[gi].Tenant; t != "" && t != tenant {
		c.errf(o, field, "gateway %s is dedicated to tenant %s, not %s", gw, t, tenant)
		return false
	}
	return true
}

func (b *Builder) buildRoutes(c *checker, s *State) {
	explicit := make([]map[netip.Prefix]*origin, len(s.tenants))
	for i := range explicit {
		explicit[i] = map[netip.Prefix]*origin{}
	}
	for _, it := range b.routes {
		r, o := it.v, it.o
		ti, ok := s.tenantIdx[r.Tenant]
		if !ok {
			c.errf(o, "tenant", "unknown tenant %q", r.Tenant)
			continue
		}
		if !c.prefix(o, "prefix", r.Prefix, "route prefix") {
			continue
		}
		if _, dup := explicit[ti][r.Prefix]; dup {
			c.errf(o, "prefix", "duplicate route %s in tenant %s", r.Prefix, r.Tenant)
			continue
		}
		nh := r.NextHop
		good := true
		switch nh.Kind {
		case NextHopVNET:
			if _, ok := s.vnetIdx[VNETKey{r.Tenant, nh.VNET}]; !ok {
				c.errf(o, "next_hop.vnet", "unknown VNET %q in tenant %s", nh.VNET, r.Tenant)
				good = false
			}
		case NextHopAddress:
			if good = c.addr(o, "next_hop.via", nh.Via, "next-hop address"); good && nh.Via.Is4() != r.Prefix.Addr().Is4() {
				c.errf(o, "next_hop.via", "next-hop address %s is not of the family of %s", nh.Via, r.Prefix)
				good = false
			}
		case NextHopGateway:
			good = c.gatewayFor(s, o, "next_hop.gateway", nh.Gateway, r.Tenant)
			if nh.NAT.IsValid() {
				c.errf(o, "next_hop.nat", "NAT belongs in a gateway rule, not a route")
				good = false
			}
		case NextHopDrop, NextHopHost:
		default:
			c.errf(o, "next_hop", "missing or unknown next hop")
			good = false
		}
		explicit[ti][r.Prefix] = o
		if good {
			s.routes[ti] = append(s.routes[ti], r)
		}
	}
	ruleNames := map[GatewayRuleKey]bool{}
	for _, it := range b.gwRules {
		g, o := it.v, it.o
		ti, ok := s.tenantIdx[g.Tenant]
		if !ok {
			c.errf(o, "tenant", "unknown tenant %q", g.Tenant)
			continue
		}
		if !c.name(o, "name", g.Name, "gateway rule name") {
			continue
		}
		if ruleNames[GatewayRuleKey{g.Tenant, g.Name}] {
			c.errf(o, "name", "duplicate gateway rule %q in tenant %s", g.Name, g.Tenant)
			continue
		}
		ruleNames[GatewayRuleKey{g.Tenant, g.Name}] = true
		good := c.prefix(o, "prefix", g.Prefix, "gateway rule prefix")
		if good {
			if _, dup := explicit[ti][g.Prefix]; dup {
				c.errf(o, "prefix", "prefix %s is already routed in tenant %s", g.Prefix, g.Tenant)
				good = false
			}
		}
		good = c.gatewayFor(s, o, "gateway", g.Gateway, g.Tenant) && good
		if g.NAT.IsValid() || g.NAT != (netip.Prefix{}) {
			if c.prefix(o, "nat", g.NAT, "NAT prefix") && good {
				if g.NAT.Addr().Is4() != g.Prefix.Addr().Is4() || g.NAT.Bits() != g.Prefix.Bits() {
					c.errf(o, "nat", "NAT prefix %s must have the family and length of %s", g.NAT, g.Prefix)
					good = false
				}
			} else {
				good = false
			}
		}
		if !good {
			continue
		}
		explicit[ti][g.Prefix] = o
		s.gwRules[ti] = append(s.gwRules[ti], g)
		s.routes[ti] = append(s.routes[ti], Route{
			Tenant: g.Tenant, Prefix: g.Prefix, Origin: RouteGatewayRule, Rule: g.Name,
			NextHop: NextHop{Kind: NextHopGateway, Gateway: g.Gateway, NAT: g.NAT},
		})
	}
	// Implicit subnet routes, unless an explicit route of the same prefix
	// overrides them.
	for _, v := range s.vnets {
		ti := s.tenantIdx[v.Tenant]
		for _, p := range v.Subnets {
			if !p.IsValid() || p.Masked() != p {
				continue
			}
			if _, over := explicit[ti][p]; over {
				continue
			}
			s.routes[ti] = append(s.routes[ti], Route{
				Tenant: v.Tenant, Prefix: p, Origin: RouteSubnet,
				NextHop: NextHop{Kind: NextHopVNET, VNET: v.Name},
			})
		}
	}
	for ti := range s.routes {
		slices.SortStableFunc(s.routes[ti], compareRoutes)
	}

	// Next-hop addresses are routed again; every chain must end at a VM.
	for _, it := range b.routes {
		r, o := it.v, it.o
		ti, ok := s.tenantIdx[r.Tenant]
		if !ok || r.NextHop.Kind != NextHopAddress || !slices.Contains(s.routes[ti], r) {
			continue
		}
		c.checkVia(s, o, ti, r)
	}
}

// compareRoutes orders longest prefix first, IPv4 before IPv6, then by
// address, so that a linear scan finds the longest match and the order is
// deterministic.
func compareRoutes(a, b Route) int {
	return cmp.Or(
		cmp.Compare(b.Prefix.Bits(), a.Prefix.Bits()),
		a.Prefix.Addr().Compare(b.Prefix.Addr()),
	)
}

func (c *checker) checkVia(s *State, o *origin, ti int, r Route) {
	if c.inLoop[RouteKey{r.Tenant, r.Prefix}] {
		return
	}
	chain := []string{r.Prefix.String()}
	seen := map[netip.Prefix]bool{r.Prefix: true}
	cur := r
	var via netip.Addr
	for cur.NextHop.Kind == NextHopAddress {
		via = cur.NextHop.Via
		chain = append(chain, "via "+via.String())
		next, ok := lpm(s.routes[ti], via)
		if !ok {
			c.errf(o, "next_hop.via", "next-hop address %s has no route", via)
			return
		}
		chain = append(chain, next.Prefix.String())
		if seen[next.Prefix] {
			c.errf(o, "next_hop.via", "route loop: %s", strings.Join(chain, " -> "))
			if c.inLoop == nil {
				c.inLoop = map[RouteKey]bool{}
			}
			for p := range seen {
				c.inLoop[RouteKey{r.Tenant, p}] = true
			}
			return
		}
		seen[next.Prefix] = true
		cur = next
	}
	if cur.NextHop.Kind != NextHopVNET {
		c.errf(o, "next_hop.via", "next-hop address %s leads to route %s (%s), not to a VM", r.NextHop.Via, cur.Prefix, cur.NextHop)
		return
	}
	vnet := s.vnets[s.vnetIdx[VNETKey{cur.Tenant, cur.NextHop.VNET}]]
	if _, ok := s.table.lookup(vnet.VNI, via); !ok {
		c.errf(o, "next_hop.via", "next-hop address %s is no VM's address in VNET %s", via, vnet.Name)
	}
}

func (b *Builder) buildACLs(c *checker, s *State) {
	ids := map[ACLKey]bool{}
	for _, it := range b.acls {
		a, o := it.v, it.o
		ti, ok := s.tenantIdx[a.Tenant]
		if !ok {
			c.errf(o, "tenant", "unknown tenant %q", a.Tenant)
			continue
		}
		if !c.name(o, "id", a.ID, "ACL id") {
			continue
		}
		if ids[ACLKey{a.Tenant, a.ID}] {
			c.errf(o, "id", "duplicate ACL %q in tenant %s", a.ID, a.Tenant)
			continue
		}
		ids[ACLKey{a.Tenant, a.ID}] = true
		good := true
		if a.Direction != In && a.Direction != Out {
			c.errf(o, "direction", "direction must be in or out")
			good = false
		}
		if a.Action != Allow && a.Action != Deny {
			c.errf(o, "action", "action must be allow or deny")
			good = false
		}
		if a.VNET != "" {
			if _, ok := s.vnetIdx[VNETKey{a.Tenant, a.VNET}]; !ok {
				c.errf(o, "vnet", "unknown VNET %q in tenant %s", a.VNET, a.Tenant)
				good = false
			}
		}
		for i, p := range a.Src {
			good = c.prefix(o, fmt.Sprintf("src[%d]", i), p, "source prefix") && good
		}
		for i, p := range a.Dst {
			good = c.prefix(o, fmt.Sprintf("dst[%d]", i), p, "destination prefix") && good
		}
		for _, pr := range []struct {
			name string
			rs   []PortRange
		}{{"src_ports", a.SrcPorts}, {"dst_ports", a.DstPorts}} {
			if len(pr.rs) > 0 && !hasPorts(a.Protocol) {
				c.errf(o, pr.name, "ports need protocol tcp, udp or sctp")
				good = false
			}
			for i, r := range pr.rs {
				if r.Lo > r.Hi {
					c.errf(o, fmt.Sprintf("%s[%d]", pr.name, i), "port range %d-%d is empty", r.Lo, r.Hi)
					good = false
				}
			}
		}
		if good {
			s.acls[ti] = append(s.acls[ti], a)
		}
	}
	for ti := range s.acls {
		slices.SortStableFunc(s.acls[ti], func(x, y ACL) int {
			return cmp.Or(
				cmp.Compare(x.Priority, y.Priority),
				cmp.Compare(y.Action, x.Action), // Deny (2) before Allow (1)
				strings.Compare(x.ID, y.ID),
			)
		})
	}
}

func (b *Builder) buildShadows(c *checker, s *State) {
	for _, it := range b.shadows {
		sh, o := it.v, it.o
		vi, ok := s.vmIdx.get(sh.VM, s.vms)
		if !ok {
			c.errf(o, "vm", "shadow mapping for unknown VM %q", sh.VM)
			continue
		}
		if _, dup := s.shadowIdx[sh.VM]; dup {
			c.errf(o, "vm", "VM %s already has a shadow mapping", sh.VM)
			continue
		}
		vm := &s.vms[vi]
		hi, ok := s.hostIdx[sh.Host]
		if !ok {
			c.errf(o, "host", "unknown host %q", sh.Host)
			continue
		}
		if sh.Host == vm.Host {
			c.errf(o, "host", "VM %s already runs on %s", sh.VM, sh.Host)
			continue
		}
		if sh.Generation == 0 || sh.Generation == vm.Generation {
			c.errf(o, "generation", "shadow generation %d must be non-zero and differ from VM %s's generation %d", sh.Generation, sh.VM, vm.Generation)
			continue
		}
		sh.PA = s.hosts[hi].PA
		s.shadowIdx[sh.VM] = len(s.shadows)
		s.shadows = append(s.shadows, sh)
		s.active[sh.VM] = vm.Generation
	}
	seen := map[string]bool{}
	for _, it := range b.acts {
		a, o := it.v, it.o
		vi, ok := s.vmIdx.get(a.VM, s.vms)
		if !ok {
			c.errf(o, "vm", "activation for unknown VM %q", a.VM)
			continue
		}
		si, ok := s.shadowIdx[a.VM]
		if !ok {
			c.errf(o, "vm", "VM %s has no shadow mapping to activate", a.VM)
			continue
		}
		if seen[a.VM] {
			c.errf(o, "vm", "VM %s is activated twice", a.VM)
			continue
		}
		seen[a.VM] = true
		if a.Generation != s.vms[vi].Generation && a.Generation != s.shadows[si].Generation {
			c.errf(o, "generation", "VM %s has generations %d (current) and %d (shadow), not %d",
				a.VM, s.vms[vi].Generation, s.shadows[si].Generation, a.Generation)
			continue
		}
		s.active[a.VM] = a.Generation
	}
}

// checkSealKeys checks a VM's sealing keys (the YAML decoder reports its
// own errors with their lines first; this covers the Go API).
func checkSealKeys(keys []SealKey, bad func(field, format string, args ...any)) {
	if len(keys) > MaxSealKeys {
		bad("seal_keys", "%d keys: a VM has at most %d at once (the current one and the next)", len(keys), MaxSealKeys)
		return
	}
	for i, k := range keys {
		if k.Public == ([32]byte{}) {
			bad("seal_keys["+strconv.Itoa(i)+"].public", "the all-zero key is not a public key")
		}
		for _, p := range keys[:i] {
			if p.ID == k.ID {
				bad("seal_keys["+strconv.Itoa(i)+"].id", "key id %d is given twice", k.ID)
			}
		}
	}
}
