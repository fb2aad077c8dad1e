package vswitch

import (
	"context"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

// ActivateShadow makes the shadow location of vm live: one
// hal.Generations.Activate of vm's scope on the NIC (the shadow rules were
// installed inactive with the next generation as flows toward vm appeared
// or when the shadow was added), and one pointer swap to the policy state
// with the shadow activated in the host (host-path flows of the scope pick
// their shadow actions by comparing generations). Its cost does not depend
// on how many flows or mappings change. The old generation's rules are
// removed afterwards by Maintain.
//
// The caller's desired state should then record the activation (a later
// Update with it changes nothing); an Update without it rolls back through
// ordinary revalidation.
func (s *Switch) ActivateShadow(ctx context.Context, vm string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return hal.ErrClosed
	}
	sh, ok := s.cur.st.Shadow(vm)
	if !ok {
		return fmt.Errorf("vswitch: VM %q has no shadow", vm)
	}
	if g, _ := s.cur.st.ActiveGeneration(vm); g == sh.Generation {
		return nil // already live
	}
	alt := s.cur.alt[vm]
	if alt == nil {
		ns, err := s.cur.st.Activate(vm, sh.Generation)
		if err != nil {
			return fmt.Errorf("vswitch: %w", err)
		}
		alt = compile(ns, s.cfg.Host, s.cfg.Ports, &s.vmIDs, &s.tenantIDs)
	}
	if sc := s.scopes[vm]; sc != nil {
		if err := s.nic.Activate(ctx, sc.id, sc.active+1); err != nil {
			// The NIC kept the old generation: bring every flow of the scope
			// to the new location the slow way.
			s.needRecon = true
			s.swapTo(alt)
			for f := range s.flows.all() {
				if f.scope == sc {
					s.reflow(f, s.now(), true)
				}
			}
			s.syncProactive()
			s.flush(ctx)
			s.reflowCross(ctx, s.cross[vm])
			delete(s.cross, vm)
			return fmt.Errorf("vswitch: activate scope %d of %s: %w", sc.id, vm, err)
		}
		sc.active++
	}
	if s.rollback == nil {
		s.rollback = map[string]rollbackPoint{}
	}
	cross := s.cross[vm]
	delete(s.cross, vm)
	s.rollback[vm] = rollbackPoint{c: s.cur, epoch: s.off.epoch + 1, cross: cross}
	s.swapTo(alt)
	s.reflowCross(ctx, cross)
	s.stats.activations++
	s.retirePending = true
	return nil
}

// reflowCross re-evaluates the flows that depend on a VM that just moved
// without being in its scope.
func (s *Switch) reflowCross(ctx context.Context, fs []*flow) {
	if len(fs) == 0 {
		return
	}
	now := s.now()
	for _, f := range fs {
		if !f.h.dead {
			s.reflow(f, now, false)
		}
	}
	s.flush(ctx)
}

// rollbackPoint is the compiled state before an activation, kept until
// Maintain retires the old generation.
type rollbackPoint struct {
	c     *compiled
	epoch uint64  // the epoch right after the activation
	cross []*flow // flows re-evaluated outside the scope, to re-evaluate back
}

// Rollback undoes ActivateShadow(vm) in one step, as long as Maintain has
// not retired the old generation yet and no Update came in between: the
// scope's previous generation is activated again (its rules are still on
// the NIC) and the host goes back to the state before the activation.
func (s *Switch) Rollback(ctx context.Context, vm string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, ok := s.rollback[vm]
	if !ok || rp.epoch != s.off.epoch {
		return fmt.Errorf("vswitch: no activation of %s to roll back", vm)
	}
	if sc := s.scopes[vm]; sc != nil {
		if err := s.nic.Activate(ctx, sc.id, sc.active-1); err != nil {
			return fmt.Errorf("vswitch: roll back scope %d of %s: %w", sc.id, vm, err)
		}
		sc.active--
	}
	delete(s.rollback, vm)
	s.cur = rp.c
	s.forgetWalks()
	s.off.epoch++
	s.reflowCross(ctx, rp.cross)
	s.stats.activations++
	return nil
}

// swapTo makes alt the current compiled state; the other VMs' inactive
// shadows are recompiled against it (usually none: migrations are few).
func (s *Switch) swapTo(alt *compiled) {
	nc := *alt
	nc.alt = nil
	nc.compileAlts(s.cfg.Ports, &s.vmIDs, &s.tenantIDs)
	s.cur = &nc
	s.forgetWalks()
	s.off.epoch++
}

// retire promotes every flow whose scope moved to a new generation: its
// shadow rule becomes its rule and the old generation's rule is deleted.
// Flows that had no shadow rule are re-evaluated and re-placed.
func (s *Switch) retire(now int64) {
	if !s.retirePending {
		return
	}
	s.retirePending = false
	clear(s.rollback)
	s.retirePro()
	for f := range s.flows.all() {
		if f.scope == nil || f.h.gen == f.scope.active {
			continue
		}
		if f.shadow != nil && (f.h.shadowID != 0 || f.h.loc != PathNIC) {
			if f.h.id != 0 {
				s.off.queueDelete(f.h.id)
			}
			s.release(f.acts)
			f.acts, f.shadow = f.shadow, nil
			f.h.id, f.h.shadowID = f.h.shadowID, 0
			f.h.ruleP, f.ruleB = f.h.shP, f.shB
			f.h.shP, f.shB = 0, 0
			f.h.gen = f.scope.active
			if f.h.id != 0 {
				f.h.loc, f.why = PathNIC, WhyOffloaded
				f.setFailure(nil)
			}
			s.refresh(f, now) // dependencies and any change since the shadow was computed
			continue
		}
		s.dropShadow(f)
		s.unplace(f)
		s.reflow(f, now, true)
	}
}
