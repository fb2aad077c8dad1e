package vswitch

import (
	"fmt"
	"net/netip"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// Per-destination rules (Config.Proactive) are the switch's form of DASH's
// CA→PA table: for a local VM without outbound ACLs, one rule per (source
// CA, remote destination CA in the same VNET) is programmed ahead of
// traffic, matching in_port, source MAC, IPv4 and both addresses exactly and
// every other field not at all; its actions are the destination MAC and the
// encapsulation toward the destination's PA. The first packet of a
// connection then never reaches the host. Exact unified flows keep a higher
// priority, so anything the layer walk decided for a particular connection
// still wins.
//
// The rules are used only where they are provably what the layer walk would
// decide for every packet they match: IPv4 only (ICMPv6 neighbor discovery
// must reach the host), no outbound ACL of the tenant applying to the VM (so
// no per-connection decision and no connection to track), the destination
// reached by its VNET's own route without routing (no TTL decrement) and
// running on another host. Everything else takes the slow path as before.

// prioProactive is below prioExact: a unified flow for a connection
// overrides the per-destination rule.
const prioProactive = 0x4000

type proKey struct {
	port hal.PortID
	src  netip.Addr
	vni  uint32
	dst  netip.Addr
}

type proWant struct {
	mac     hal.MAC // the source VM's
	scopeVM string  // the destination VM
}

type proRule struct {
	key      proKey
	mac      hal.MAC
	id       hal.RuleID
	acts     *actSet
	gen      hal.Generation
	shadowID hal.RuleID
	shadow   *actSet
	scope    *scope
	landed   bool
}

// proactiveOK says whether the NIC can take per-destination rules: exact
// matches on the fields they use, every other field wildcarded, and
// priorities so that unified flows win over them.
func (s *Switch) proactiveOK() error {
	if !s.cfg.Proactive {
		return fmt.Errorf("not enabled (Config.Proactive)")
	}
	if !s.offloading() {
		return fmt.Errorf("offload is off")
	}
	if !s.caps.Priorities {
		return fmt.Errorf("the NIC does not resolve overlapping rules by priority")
	}
	need := hal.MatchInPort | hal.MatchEthSrc | hal.MatchEthType | hal.MatchIPv4Src | hal.MatchIPv4Dst
	if !s.caps.HasMatch(need) {
		return fmt.Errorf("the NIC cannot match %s", need&^s.caps.MatchFields)
	}
	return nil
}

func (s *Switch) proMatch(k proKey, mac hal.MAC) hal.Match {
	var m hal.Match
	m.InPort(k.port).EthSrc(mac).IPSrc(netip.PrefixFrom(k.src, 32)).IPDst(netip.PrefixFrom(k.dst, 32))
	return m
}

// proVerdict is what a per-destination rule does under compiled state c,
// or ok=false when the destination no longer qualifies.
func (s *Switch) proVerdict(c *compiled, k proKey) (actKey, bool) {
	m, ok := c.st.Lookup(k.vni, k.dst)
	dv := c.vnetByVNI[k.vni]
	if !ok || m.Host == c.host || !m.PA.IsValid() || dv == nil {
		return actKey{}, false
	}
	return actKey{action: policy.Encap, rw: policy.Rewrite{DstMAC: m.MAC}, pa: m.PA, vni: m.VNI, encap: dv.encap, src: c.pa}, true
}

// syncProactive makes the installed per-destination rules those the
// current state wants: it adds the missing, modifies the changed, deletes
// the unwanted and keeps inactive shadow rules for destinations with an
// inactive shadow.
func (s *Switch) syncProactive() {
	s.syncSealed() // the same moments: start, every policy change
	if s.proactiveOK() != nil {
		for _, r := range s.pro {
			s.dropPro(r)
		}
		return
	}
	c := s.cur
	want := map[proKey]proWant{}
	for _, vm := range c.vms {
		if !vm.local || vm.port == 0 || vm.tenant == nil {
			continue
		}
		if hasOutACL(vm) {
			continue
		}
		for _, src := range vm.cas {
			if !src.Is4() {
				continue
			}
			for _, r := range vm.tenant.routes {
				if r.hop.Kind != policy.NextHopVNET || r.vnet != vm.vnet || r.origin != policy.RouteSubnet {
					continue
				}
				for _, dvm := range c.vmsOfVNET(vm.vnet) {
					for _, dst := range dvm.cas {
						if !dst.Is4() || dst == src {
							continue
						}
						// The destination must be routed by this very route.
						if rr, _, via := (&walk{c: c}).resolve(vm.tenant, dst); rr == nil || via || rr.vnet != vm.vnet {
							continue
						}
						want[proKey{port: vm.port, src: src, vni: vm.vnet.vni, dst: dst}] = proWant{mac: vm.mac, scopeVM: dvm.name}
					}
				}
				break
			}
		}
	}
	for k, r := range s.pro {
		if _, ok := want[k]; !ok {
			s.dropPro(r)
		}
	}
	for k, w := range want {
		mac := w.mac
		ak, ok := s.proVerdict(c, k)
		r := s.pro[k]
		if !ok {
			if r != nil {
				s.dropPro(r)
			}
			continue
		}
		var sc *scope
		if s.caps.Generations {
			sc = s.scopeOf(w.scopeVM)
		}
		if r != nil && r.acts.key == ak && r.scope == sc && (sc == nil || r.gen == sc.active) {
			s.proShadow(r, mac)
			continue
		}
		a := s.intern(ak)
		m := s.proMatch(k, mac)
		gen, scid := hal.Generation(0), hal.Scope(0)
		if sc != nil {
			gen, scid = sc.active, sc.id
		}
		rule := hal.Rule{ID: 1, Priority: prioProactive, Match: m, Actions: a.acts, Cookie: s.off.cookie(), Scope: scid, Generation: gen}
		if err := s.nic.Validate(&rule); err != nil {
			s.release(a)
			if r != nil {
				s.dropPro(r)
			}
			s.stats.proRefused++
			continue
		}
		if r == nil {
			r = &proRule{key: k, mac: mac}
			s.pro[k] = r
			rule.ID = s.off.newID()
			r.id = rule.ID
			s.off.ops = append(s.off.ops, hal.AddOp(rule))
		} else {
			s.release(r.acts)
			rule.ID = r.id
			s.off.ops = append(s.off.ops, hal.ModifyOp(rule))
		}
		s.off.refs = append(s.off.refs, opRef{pro: r, purpose: opProPrimary})
		r.acts, r.scope, r.gen = a, sc, gen
		s.proShadow(r, mac)
	}
}

func (c *compiled) vmsOfVNET(v *vnetInfo) []*vmInfo {
	if c.byVNET == nil {
		c.byVNET = map[*vnetInfo][]*vmInfo{}
		for _, vm := range c.vms {
			c.byVNET[vm.vnet] = append(c.byVNET[vm.vnet], vm)
		}
	}
	return c.byVNET[v]
}

func hasOutACL(vm *vmInfo) bool {
	for i := range vm.tenant.acls[policy.Out] {
		if a := &vm.tenant.acls[policy.Out][i]; a.vnet == "" || a.vnet == vm.vnet.name {
			return true
		}
	}
	return false
}

// proShadow keeps r's inactive shadow rule in step with the destination's
// inactive shadow location.
func (s *Switch) proShadow(r *proRule, mac hal.MAC) {
	var alt *compiled
	if r.scope != nil && s.cur.alt != nil {
		alt = s.cur.alt[r.scope.vm]
	}
	var ak actKey
	ok := false
	if alt != nil {
		ak, ok = s.proVerdict(alt, r.key)
	}
	if !ok {
		if r.shadowID != 0 {
			s.off.queueDelete(r.shadowID)
			r.shadowID = 0
		}
		s.release(r.shadow)
		r.shadow = nil
		return
	}
	if r.shadow != nil && r.shadow.key == ak && r.shadowID != 0 {
		return
	}
	a := s.intern(ak)
	s.release(r.shadow)
	r.shadow = a
	rule := hal.Rule{Priority: prioProactive, Match: s.proMatch(r.key, mac), Actions: a.acts, Cookie: s.off.cookie(),
		Scope: r.scope.id, Generation: r.scope.active + 1}
	if r.shadowID == 0 {
		rule.ID = s.off.newID()
		r.shadowID = rule.ID
		s.off.ops = append(s.off.ops, hal.AddOp(rule))
	} else {
		rule.ID = r.shadowID
		s.off.ops = append(s.off.ops, hal.ModifyOp(rule))
	}
	s.off.refs = append(s.off.refs, opRef{pro: r, purpose: opProShadow})
}

func (s *Switch) dropPro(r *proRule) {
	if r.id != 0 {
		s.off.queueDelete(r.id)
	}
	if r.shadowID != 0 {
		s.off.queueDelete(r.shadowID)
	}
	s.release(r.acts)
	s.release(r.shadow)
	delete(s.pro, r.key)
}

// proFor returns the per-destination rule a key would hit, if any.
func (s *Switch) proFor(k *hal.FlowKey) *proRule {
	if len(s.pro) == 0 || k.EthType != hal.EtherTypeIPv4 {
		return nil
	}
	vm := s.cur.byPort[k.InPort]
	if vm == nil || vm.mac != k.EthSrc {
		return nil
	}
	return s.pro[proKey{port: k.InPort, src: hal.AddrFrom16(k.IPSrc), vni: vm.vnet.vni, dst: hal.AddrFrom16(k.IPDst)}]
}

// retirePro promotes the shadow rules of per-destination rules whose scope
// moved to a new generation.
func (s *Switch) retirePro() {
	for _, r := range s.pro {
		if r.scope == nil || r.gen == r.scope.active || r.shadowID == 0 {
			continue
		}
		s.off.queueDelete(r.id)
		s.release(r.acts)
		r.id, r.acts, r.gen = r.shadowID, r.shadow, r.scope.active
		r.shadowID, r.shadow = 0, nil
	}
	s.syncProactive()
}

// proRules lists the per-destination rules the switch wants, by ID.
func (s *Switch) proRules(into map[hal.RuleID]hal.Rule) {
	for _, r := range s.pro {
		var scid hal.Scope
		if r.scope != nil {
			scid = r.scope.id
		}
		m := s.proMatch(r.key, r.mac)
		if r.id != 0 {
			into[r.id] = hal.Rule{ID: r.id, Priority: prioProactive, Match: m, Actions: r.acts.acts, Cookie: s.off.cookie(), Scope: scid, Generation: r.gen}
		}
		if r.shadowID != 0 {
			into[r.shadowID] = hal.Rule{ID: r.shadowID, Priority: prioProactive, Match: m, Actions: r.shadow.acts, Cookie: s.off.cookie(), Scope: scid, Generation: r.gen + 1}
		}
	}
}

func (r *proRule) current() *actSet {
	if r.shadow != nil && r.scope != nil && r.scope.active != r.gen {
		return r.shadow
	}
	return r.acts
}
