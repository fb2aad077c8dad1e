// A new flow: the first packet's verdict recorded, its scope and
// connections, and where it is placed (the NIC or the host).

package vswitch

import (
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// newFlow classifies key, records the flow and queues its offload. It
// returns nil when the packet is dropped for its TTL alone (the flow itself
// is fine: the next packet with a usable TTL creates it). reverse says
// whether to pre-install the reverse flows of connections it opens.
func (s *Switch) newFlow(k *hal.FlowKey, ttl uint8, now int64, reverse bool) *flow {
	return s.newFlowHashed(k, s.flows.hashKey(k), ttl, now, reverse)
}

// newFlowHashed is newFlow with the key's hash in the flow table known
// (HandleBatch hashed it for the lookup).
func (s *Switch) newFlowHashed(k *hal.FlowKey, h uint64, ttl uint8, now int64, reverse bool) *flow {
	var v verdict
	anyPorts := s.classifyFlow(s.cur, k, ttl, &v)
	if v.action == policy.Drop && v.reason == policy.ReasonTTLExpired {
		return nil
	}
	wild := anyPorts && s.wildcards() && wildVerdict(k, anyPorts, &v)
	if wild {
		if w := s.coveringWild(k, &v); w != nil {
			// Another connection between the same endpoints made the
			// flow; its rule is on its way or the NIC missed it.
			s.stats.wildCovered++
			return w
		}
		if s.wilds[wildKey(k)] != nil {
			// A port-wildcard flow with other actions (one that predates
			// an activation): this connection gets an exact flow, which
			// wins over the wildcard.
			wild = false
		}
	}
	f := s.allocFlow()
	f.key, f.created, f.h.lastUsed = *k, now, now
	s.flows.putHashed(f, h)
	s.stats.flowsCreated++
	if wild {
		s.setWild(f)
	}
	s.setVerdict(f, &v, now)
	s.place(f)
	s.placeShadow(f)
	if reverse && v.action != policy.Drop && v.nrec > 0 {
		s.preinstallReverse(f, &v)
	}
	return f
}

// setVerdict records v as f's result: actions, dependencies, scope and the
// connection-tracking entries it opens or uses.
func (s *Switch) setVerdict(f *flow, v *verdict, now int64) {
	old := f.acts
	f.acts = s.internHinted(actKeyOf(v), v.dst)
	s.release(old)
	f.tenant, f.srcVM, f.dstVM = v.tenant, v.srcVM, v.dstVM
	f.gateway, f.routed = v.gateway, v.routed
	// The flow's scope is the VM whose location it embeds: its receiver,
	// or its sender when the sender is the one with a pending move (a VM
	// leaving this host, or a remote sender whose PA will change). A flow
	// that also depends on another VM with a pending move is listed under
	// that VM and re-evaluated when it moves: such flows are few, and only
	// they are touched then.
	// The VMs are looked up by their interned ids (a verdict's scopeVM is
	// its receiver, dstName, whose id is dstVM), not hashed by name.
	f.scope = nil
	scopeVM, other := v.scopeVM, v.srcName
	scopeID, otherID := v.dstVM, v.srcVM
	if v.srcName != "" && s.cur.moving(v.srcVM) {
		scopeVM, other = v.srcName, v.dstName
		scopeID, otherID = v.srcVM, v.dstVM
	}
	if other != "" && otherID != scopeID && s.cur.moving(otherID) {
		if l := s.cross[other]; len(l) == 0 || l[len(l)-1] != f {
			s.cross[other] = append(l, f)
		}
	}
	if scopeVM != "" && s.caps.Generations && s.offloading() {
		f.scope = s.scopeOfVM(scopeID, scopeVM)
	}
	// Connections.
	if x := f.x; x != nil {
		for _, c := range x.uses {
			delete(c.users, f)
		}
		x.uses = x.uses[:0]
	}
	for i := 0; i < v.nused; i++ {
		if c := s.ct.conns[v.used[i]]; c != nil {
			c.users[f] = struct{}{}
			x := f.extra()
			x.uses = append(x.uses, c)
		}
	}
	if v.hasDenied {
		if l := s.denied[v.denied]; len(l) == 0 || l[len(l)-1] != f {
			s.denied[v.denied] = append(l, f)
		}
	}
	if v.action != policy.Drop {
		for i := 0; i < v.nrec; i++ {
			s.openConn(f, v.records[i], now)
		}
	}
}

// scopeOfVM is scopeOf for a VM whose interned id the caller has: a
// scope's id is its VM's, and scopes are also indexed by it, which spares
// hashing the name for every first packet.
func (s *Switch) scopeOfVM(id uint32, vm string) *scope {
	if int(id) < len(s.scopeByID) {
		if sc := s.scopeByID[id]; sc != nil {
			return sc
		}
	}
	sc := s.scopeOf(vm)
	if sc != nil && uint32(sc.id) == id {
		if int(id) >= len(s.scopeByID) {
			s.scopeByID = append(s.scopeByID, make([]*scope, int(id)+1-len(s.scopeByID))...)
		}
		s.scopeByID[id] = sc
	}
	return sc
}

func (s *Switch) scopeOf(vm string) *scope {
	sc := s.scopes[vm]
	if sc == nil {
		id := hal.Scope(s.vmIDs.id(vm))
		if s.caps.MaxScopes > 0 && int(id) > s.caps.MaxScopes {
			return nil
		}
		sc = &scope{id: id, vm: vm}
		s.scopes[vm] = sc
	}
	return sc
}

// openConn records a tracked connection opened by f. A flow that an ACL of
// the same layer denied for that very packet is re-evaluated: the reply is
// now part of an allowed connection.
func (s *Switch) openConn(f *flow, k connKey, now int64) {
	c := s.ct.conns[k]
	if c == nil {
		c = &conn{key: k, lastSeen: now, users: map[*flow]struct{}{}}
		s.ct.add(c)
		s.stats.connsOpened++
		if fs := s.denied[k]; len(fs) > 0 {
			delete(s.denied, k)
			for _, d := range fs {
				if !d.h.dead {
					s.refresh(d, now)
				}
			}
		}
	}
	c.lastSeen = max(c.lastSeen, now)
	// The opener is a user too: when the connection expires, the flow that
	// opened it goes with it, so that its next packet opens it again.
	c.users[f] = struct{}{}
	x := f.extra()
	for _, o := range x.opened {
		if o == c {
			return
		}
	}
	x.opened = append(x.opened, c)
}

// place decides where a flow with fresh actions lives: it queues an add to
// the NIC when the NIC can take it and leaves it in the host with the
// reason otherwise.
func (s *Switch) place(f *flow) {
	a := f.acts
	if !a.offload {
		s.toHost(f, WhyPolicy, nil)
		return
	}
	if !s.offloading() {
		s.toHost(f, WhyNoOffload, nil)
		return
	}
	gen := hal.Generation(0)
	var sc hal.Scope
	if f.scope != nil {
		sc, gen = f.scope.id, f.scope.active
	}
	if f.wild && s.off.validate(a, &f.key, sc != 0, sc, gen, true) != nil {
		s.unwild(f) // the NIC does not take the wildcard: an exact rule
	}
	if err := s.off.validate(a, &f.key, sc != 0, sc, gen, f.wild); err != nil {
		s.toHost(f, whyOf(err), err)
		return
	}
	f.h.gen = gen
	f.h.id = s.off.newID()
	// A new rule counts from zero: the readings of a rule the flow had
	// before (replaced under a new ID by an update) are no baseline for
	// it, and kept they would hide its packets up to the old reading, and
	// its use from the idle expiry.
	f.h.ruleP, f.ruleB = 0, 0
	f.h.loc = PathNone
	s.off.queueRule(hal.OpAdd, f.h.id, &f.key, a, sc, gen, f.wild)
	s.off.refs = append(s.off.refs, opRef{f: f, purpose: opAddPrimary})
}

// placeShadow pre-installs f's actions for the next generation of its scope
// when the scope's VM has an inactive shadow.
func (s *Switch) placeShadow(f *flow) {
	// A scope's id is its VM's: most scopes have no shadow, found without
	// hashing the name.
	if f.scope == nil || !s.cur.moving(uint32(f.scope.id)) {
		return
	}
	alt := s.cur.alt[f.scope.vm]
	if alt == nil {
		return
	}
	var v verdict
	anyPorts := s.classifyFlow(alt, &f.key, 64, &v)
	a := s.intern(actKeyOf(&v))
	s.release(f.shadow)
	f.shadow = a
	if !a.offload || f.h.loc == PathHost {
		return
	}
	if f.wild && !wildVerdict(&f.key, anyPorts, &v) {
		// The shadow's verdict depends on the ports: no wildcard rule for
		// it. After the activation the connections take the host path,
		// and the retirement re-walks the flow (and removes it).
		return
	}
	gen := f.scope.active + 1
	if err := s.off.validate(a, &f.key, true, f.scope.id, gen, f.wild); err != nil {
		return
	}
	f.h.shadowID = s.off.newID()
	f.h.shP, f.shB = 0, 0 // a new rule counts from zero, as in place
	s.off.queueRule(hal.OpAdd, f.h.shadowID, &f.key, a, f.scope.id, gen, f.wild)
	s.off.refs = append(s.off.refs, opRef{f: f, purpose: opAddShadow})
}

func (s *Switch) toHost(f *flow, why Why, err error) {
	f.h.loc, f.why = PathHost, why
	if why == WhyTableFull || why == WhyDeviceError {
		s.retryDue = true
	}
	f.setFailure(err)
	s.stats.fallbacks[why]++
}
