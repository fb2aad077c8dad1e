package vswitch

import (
	"bytes"
	"context"

	"github.com/nicpath/nicpath/hal"
)

// ReconcileReport says what one reconciliation found and did.
type ReconcileReport struct {
	Rules    int // rules on the NIC
	Foreign  int // rules another owner installed (left alone)
	Removed  int // our rules the switch no longer wants (or never knew: an earlier run's)
	Modified int // our rules whose match or actions had drifted
	Added    int // rules the switch wants that were missing
	Retried  int // host flows a driver error had left there, offered to the NIC again
}

// Reconcile reads the NIC's rules and makes them what the switch wants:
// it deletes the rules with its owner cookie that no flow wants, repairs
// those that differ, re-adds the missing ones and offers flows that a
// driver error left in the host to the NIC again. Rules with another
// owner's cookie are left alone. New calls it at start and Maintain after a
// driver error.
func (s *Switch) Reconcile(ctx context.Context) (ReconcileReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ReconcileReport{}, hal.ErrClosed
	}
	// Sealed routes are not rules: no dump shows them, so they are pushed
	// again whole (a NIC that kept them replaces them with the same).
	s.seal.pushed = nil
	s.syncSealed()
	return s.reconcileLocked(ctx)
}

func (s *Switch) reconcileLocked(ctx context.Context) (ReconcileReport, error) {
	var rep ReconcileReport
	s.stats.reconciles++
	s.flush(ctx) // nothing of ours may be in flight while we compare
	seen := map[hal.RuleID]bool{}
	var stale []hal.RuleID
	type fix struct {
		f      *flow
		shadow bool
	}
	var fixes []fix
	proWanted := map[hal.RuleID]hal.Rule{}
	s.proRules(proWanted)
	var proFix []hal.Rule
	byID := make(map[hal.RuleID]*flow, s.flows.Len())
	for f := range s.flows.all() {
		if f.h.id != 0 {
			byID[f.h.id] = f
		}
		if f.h.shadowID != 0 {
			byID[f.h.shadowID] = f
		}
	}
	err := s.nic.Dump(ctx, func(ri *hal.RuleInfo) error {
		r := &ri.Rule
		rep.Rules++
		if r.ID >= s.off.nextID {
			s.off.nextID = r.ID + 1
		}
		if !s.off.ours(r.Cookie) {
			rep.Foreign++
			return nil
		}
		if want, ok := proWanted[r.ID]; ok {
			seen[r.ID] = true
			if !sameRule(r, &want) {
				proFix = append(proFix, want)
			}
			return nil
		}
		f := byID[r.ID]
		if f == nil || f.h.dead || (f.h.id != r.ID && f.h.shadowID != r.ID) {
			stale = append(stale, r.ID)
			return nil
		}
		seen[r.ID] = true
		shadow := f.h.shadowID == r.ID
		if want := s.wanted(f, shadow); !sameRule(r, &want) {
			fixes = append(fixes, fix{f, shadow})
		}
		return nil
	})
	if err != nil {
		s.needRecon = true
		s.stats.recFailed++
		return rep, err
	}
	s.stats.foreign = uint64(rep.Foreign)
	for _, id := range stale {
		s.off.queueDelete(id)
		rep.Removed++
	}
	for _, x := range fixes {
		r := s.wanted(x.f, x.shadow)
		s.off.ops = append(s.off.ops, hal.ModifyOp(r))
		p := opModPrimary
		if x.shadow {
			p = opModShadow
		}
		s.off.refs = append(s.off.refs, opRef{f: x.f, purpose: p})
		rep.Modified++
	}
	for _, r := range proFix {
		s.off.ops = append(s.off.ops, hal.ModifyOp(r))
		s.off.refs = append(s.off.refs, opRef{purpose: opDelete}) // a failure only asks for another reconcile
		rep.Modified++
	}
	for id, r := range proWanted {
		if !seen[id] {
			s.off.ops = append(s.off.ops, hal.AddOp(r))
			s.off.refs = append(s.off.refs, opRef{purpose: opDelete})
			rep.Added++
		}
	}
	for f := range s.flows.all() {
		if f.h.loc == PathNIC && f.h.id != 0 && !seen[f.h.id] {
			r := s.wanted(f, false)
			s.off.ops = append(s.off.ops, hal.AddOp(r))
			s.off.refs = append(s.off.refs, opRef{f: f, purpose: opAddPrimary})
			rep.Added++
		}
		if f.h.shadowID != 0 && !seen[f.h.shadowID] && f.h.loc == PathNIC {
			r := s.wanted(f, true)
			s.off.ops = append(s.off.ops, hal.AddOp(r))
			s.off.refs = append(s.off.refs, opRef{f: f, purpose: opAddShadow})
			rep.Added++
		}
		if f.h.loc == PathHost && f.why == WhyDeviceError && s.offloading() {
			f.h.loc = PathNone
			s.place(f)
			if f.h.loc != PathHost {
				s.placeShadow(f)
			}
			rep.Retried++
		}
	}
	s.stats.recAdded += uint64(rep.Added)
	s.stats.recRemoved += uint64(rep.Removed)
	s.stats.recModified += uint64(rep.Modified)
	s.flush(ctx)
	return rep, nil
}

// wanted is the rule the switch wants on the NIC for f (or its shadow).
func (s *Switch) wanted(f *flow, shadow bool) hal.Rule {
	var sc hal.Scope
	if f.scope != nil {
		sc = f.scope.id
	}
	if shadow {
		return s.off.rule(f.h.shadowID, &f.key, f.shadow, sc, f.h.gen+1, f.wild)
	}
	return s.off.rule(f.h.id, &f.key, f.acts, sc, f.h.gen, f.wild)
}

// sameRule compares what matters of two rules; the cookie's epoch bits
// only say which policy version programmed a rule.
func sameRule(a, b *hal.Rule) bool {
	if a.ID != b.ID || a.Priority != b.Priority || a.Match != b.Match || a.Scope != b.Scope ||
		a.Generation != b.Generation || uint64(a.Cookie)>>16 != uint64(b.Cookie)>>16 || len(a.Actions) != len(b.Actions) {
		return false
	}
	for i := range a.Actions {
		if !sameAction(&a.Actions[i], &b.Actions[i]) {
			return false
		}
	}
	return true
}

func sameAction(a, b *hal.Action) bool {
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case hal.ActionSetEthSrc, hal.ActionSetEthDst:
		return a.MAC == b.MAC
	case hal.ActionSetIPSrc, hal.ActionSetIPDst:
		return a.Addr == b.Addr
	case hal.ActionSetL4Src, hal.ActionSetL4Dst:
		return a.L4Port == b.L4Port
	case hal.ActionPushVLAN:
		return a.VLAN == b.VLAN
	case hal.ActionOutput:
		return a.OutPort == b.OutPort
	case hal.ActionDrop, hal.ActionToHost:
		return a.Reason == b.Reason
	case hal.ActionEncap:
		x, y := &a.Encap, &b.Encap
		return x.Kind == y.Kind && x.VNI == y.VNI && x.Src == y.Src && x.Dst == y.Dst && x.SrcMAC == y.SrcMAC &&
			x.DstMAC == y.DstMAC && x.TTL == y.TTL && x.DstPort == y.DstPort && x.FlowID == y.FlowID &&
			bytes.Equal(x.GeneveOptions, y.GeneveOptions)
	}
	return true
}
