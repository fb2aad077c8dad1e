package vswitch

import (
	"context"
	"errors"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// refresh re-evaluates f against the current policy. When its actions or
// scope change it is reprogrammed in place (one Modify: a packet sees the
// old rule or the new one), moved to the host when the NIC cannot take the
// new actions, or re-offloaded. force re-places it even when nothing changed.
func (s *Switch) refresh(f *flow, now int64) { s.reflow(f, now, false) }

func (s *Switch) reflow(f *flow, now int64, force bool) {
	s.stats.revalidated++
	var v verdict
	anyPorts := s.classifyFlow(s.cur, &f.key, 64, &v)
	if v.notLocal {
		// The host's PA changed: the flow's outer destination is no
		// longer this tunnel endpoint, and its frames are dropped before
		// any flow from now on.
		s.removeFlow(f)
		return
	}
	if f.wild && (!wildVerdict(&f.key, anyPorts, &v) || !s.wildcards()) {
		// The verdict now depends on the ports (or tracks a connection):
		// the wildcard would decide other connections wrongly. Each
		// connection's next packet makes its own flow.
		s.removeFlow(f)
		return
	}
	oldKey, oldScope := f.acts.key, f.scope
	s.setVerdict(f, &v, now)
	if !force && f.acts.key == oldKey && f.scope == oldScope {
		s.reshadow(f)
		return
	}
	s.stats.changed++
	s.dropShadow(f)
	if f.h.loc == PathNIC && f.h.id != 0 && f.acts.offload && s.offloading() {
		var sc hal.Scope
		gen := hal.Generation(0)
		if f.scope != nil {
			sc, gen = f.scope.id, f.scope.active
		}
		if err := s.off.validate(f.acts, &f.key, sc != 0, sc, gen, f.wild); err == nil {
			f.h.gen = gen
			s.off.queueRule(hal.OpModify, f.h.id, &f.key, f.acts, sc, gen, f.wild)
			s.off.refs = append(s.off.refs, opRef{f: f, purpose: opModPrimary})
			s.placeShadow(f)
			return
		}
	}
	s.unplace(f)
	s.place(f)
	s.placeShadow(f)
}

// unplace removes f's primary rule from the NIC (or cancels a pending add).
func (s *Switch) unplace(f *flow) {
	if f.h.id != 0 {
		s.off.queueDelete(f.h.id)
		f.h.id = 0
	}
	f.h.loc = PathNone
}

func (s *Switch) dropShadow(f *flow) {
	if f.h.shadowID != 0 {
		s.off.queueDelete(f.h.shadowID)
		f.h.shadowID = 0
	}
	s.release(f.shadow)
	f.shadow = nil
}

// reshadow recomputes f's shadow actions and reprograms the shadow rule if
// they changed.
func (s *Switch) reshadow(f *flow) {
	var alt *compiled
	if f.scope != nil && s.cur.alt != nil {
		alt = s.cur.alt[f.scope.vm]
	}
	if alt == nil {
		s.dropShadow(f)
		return
	}
	var v verdict
	s.classifyFlow(alt, &f.key, 64, &v)
	if f.shadow != nil && f.shadow.key == actKeyOf(&v) && (f.h.shadowID != 0 || f.h.loc != PathNIC) {
		return
	}
	s.dropShadow(f)
	s.placeShadow(f)
}

// dirtySet names what a policy change touched.
type dirtySet struct {
	all        bool
	tenants    map[uint32]bool
	vms        map[uint32]bool
	unresolved map[uint32]bool // tenants whose set of mappings changed
	noTenant   bool
}

func (d *dirtySet) match(f *flow) bool {
	if d.all || d.tenants[f.tenant] || d.vms[f.srcVM] || d.vms[f.dstVM] {
		return true
	}
	if f.tenant == 0 {
		return d.noTenant
	}
	return d.unresolved[f.tenant] && (f.dstVM == 0 || f.srcVM == 0)
}

func (s *Switch) dirtyOf(ch *policy.Changes) *dirtySet {
	d := &dirtySet{tenants: map[uint32]bool{}, vms: map[uint32]bool{}, unresolved: map[uint32]bool{}}
	d.all = ch.RouterMAC || len(ch.Hosts) > 0 || len(ch.Gateways) > 0
	t := func(name string) { d.tenants[s.tenantIDs.id(name)] = true }
	for _, c := range ch.Tenants {
		t(c.Key)
	}
	for _, c := range ch.VNETs {
		t(c.Key.Tenant)
		d.noTenant = true
	}
	for _, c := range ch.Routes {
		t(c.Key.Tenant)
	}
	for _, c := range ch.ACLs {
		t(c.Key.Tenant)
	}
	for _, c := range ch.GatewayRules {
		t(c.Key.Tenant)
	}
	for _, c := range ch.VMs {
		d.vms[s.vmIDs.id(c.Key)] = true
		d.noTenant = true
	}
	for _, c := range ch.Mappings {
		for _, m := range []policy.Mapping{c.Old, c.New} {
			if m.VM != "" {
				d.vms[s.vmIDs.id(m.VM)] = true
				d.unresolved[s.tenantIDs.id(m.Tenant)] = true
			}
		}
	}
	for _, c := range ch.Activations {
		d.vms[s.vmIDs.id(c.Key)] = true
	}
	return d
}

// Update moves the switch to a new desired state. Only the flows derived
// from what changed (per policy.Diff: tenants, routes, ACLs, gateway rules,
// VMs, mappings) are re-evaluated; those whose actions change are
// reprogrammed in place, the others are left alone. A changed activation of
// a VM whose shadow rules are installed flips the VM's scope in one
// Activate. The host switches to the new state at once (under the switch's
// lock, between two exception batches), so a packet is classified against
// the old state or the new one, never a mix.
func (s *Switch) Update(ctx context.Context, st *policy.State) error {
	if st == nil {
		return errors.New("vswitch: nil state")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return hal.ErrClosed
	}
	now := s.now()
	old := s.cur
	ch := policy.Diff(old.st, st)
	s.stats.updates++
	if ch.Empty() {
		// Nothing the flows derive from changed; what Diff leaves out
		// (VMs' sealing keys) comes from the new state from now on.
		old.st = st
		s.syncSealed()
		return nil
	}
	s.off.epoch++
	nc := compile(st, s.cfg.Host, s.cfg.Ports, &s.vmIDs, &s.tenantIDs)
	nc.compileAlts(s.cfg.Ports, &s.vmIDs, &s.tenantIDs)

	var firstErr error
	flipped := map[string]bool{}
	for _, a := range ch.Activations {
		sh, ok := st.Shadow(a.Key)
		if !ok || a.New.Generation != sh.Generation || old.alt[a.Key] == nil {
			continue
		}
		sc := s.scopes[a.Key]
		if sc == nil {
			continue
		}
		if err := s.nic.Activate(ctx, sc.id, sc.active+1); err != nil {
			s.needRecon = true
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		sc.active++
		flipped[a.Key] = true
		s.stats.activations++
		s.retirePending = true
	}
	s.cur = nc
	s.forgetWalks()
	if err := s.syncEndpoint(ctx); err != nil {
		// The host drops frames for the old PA from now on; the NIC
		// keeps its old filter until Maintain manages to replace it.
		s.log.Warn("setting the NIC's tunnel endpoint after a PA change failed", "err", err)
		if firstErr == nil {
			firstErr = err
		}
	}
	reshadow := map[string]bool{}
	for _, c := range ch.Shadows {
		reshadow[c.Key] = true
	}
	d := s.dirtyOf(&ch)
	for f := range s.flows.all() {
		if f.scope != nil && flipped[f.scope.vm] && f.h.shadowID != 0 {
			continue // already live in its new generation; Maintain retires the old one
		}
		switch {
		case d.match(f):
			s.refresh(f, now)
		case f.scope != nil && reshadow[f.scope.vm]:
			s.reshadow(f)
		}
	}
	s.syncProactive()
	s.off.atomic = true
	s.flush(ctx)
	s.off.atomic = false
	return firstErr
}
