package vswitch

import (
	"context"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// counterChunk bounds one RuleCounters call: big enough to amortise the
// call, small enough that the scratch slices stay in cache.
const counterChunk = 4096

// retryPerMaintain bounds how many host flows (left there by a full table
// or a driver error) one Maintain tries to offload again.
const retryPerMaintain = 4096

// Maintain does the switch's periodic work: reconciliation after a driver
// error, merging the NIC's per-rule counters into the flows (and so into
// their connections), promotion of shadow rules after an activation, aging
// of idle flows and connections, and new offload attempts for flows a full
// table or a driver error left in the host. Run calls it periodically;
// tests call it directly with a fake clock.
func (s *Switch) Maintain(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return hal.ErrClosed
	}
	now := s.now()
	var err error
	if s.needRecon {
		s.needRecon = false
		_, err = s.reconcileLocked(ctx)
	}
	if eerr := s.syncEndpoint(ctx); eerr != nil && err == nil {
		err = eerr
	}
	if cerr := s.readCounters(ctx, now); cerr != nil && err == nil {
		err = cerr
	}
	s.retire(now)
	s.age(now)
	s.retryHost()
	s.flush(ctx)
	return err
}

func (s *Switch) readCounters(ctx context.Context, now int64) error {
	if !s.counting {
		return nil
	}
	type ref struct {
		f      *flow
		shadow bool
	}
	ids := make([]hal.RuleID, 0, counterChunk)
	refs := make([]ref, 0, counterChunk)
	out := make([]hal.Counters, counterChunk)
	var firstErr error
	do := func() {
		if len(ids) == 0 {
			return
		}
		if err := s.nic.RuleCounters(ctx, ids, out[:len(ids)]); err != nil {
			if firstErr == nil {
				firstErr = err
			}
		} else {
			for i, r := range refs {
				c := out[i]
				f := r.f
				lp, lb := &f.ruleP, &f.ruleB
				if r.shadow {
					lp, lb = &f.shP, &f.shB
				}
				if c.Packets > *lp {
					s.countSpoofed(f, c.Packets-*lp)
					f.pkts += c.Packets - *lp
					f.bts += c.Bytes - *lb
					f.lastUsed = now
					touchConns(f, now)
				}
				*lp, *lb = c.Packets, c.Bytes
			}
		}
		ids, refs = ids[:0], refs[:0]
	}
	for f := range s.flows.all() {
		if f.loc != PathNIC {
			continue
		}
		if f.id != 0 {
			ids = append(ids, f.id)
			refs = append(refs, ref{f, false})
		}
		if f.shadowID != 0 {
			ids = append(ids, f.shadowID)
			refs = append(refs, ref{f, true})
		}
		if len(ids) >= counterChunk-1 {
			do()
		}
	}
	do()
	return firstErr
}

// age removes flows idle for FlowIdle and connections idle for ConnIdle
// (with every flow that opened or relied on them: the next packet walks the
// layers again and finds the connection gone).
func (s *Switch) age(now int64) {
	flowIdle, connIdle := int64(s.cfg.FlowIdle), int64(s.cfg.ConnIdle)
	for _, c := range s.ct.conns {
		if now-c.lastSeen <= connIdle {
			continue
		}
		s.ct.remove(c.key)
		s.stats.connsExpired++
		for f := range c.users {
			if !f.dead {
				s.removeFlow(f)
				s.stats.flowsAged++
			}
		}
	}
	for f := range s.flows.all() {
		if now-f.lastUsed > flowIdle {
			s.removeFlow(f)
			s.stats.flowsAged++
		}
	}
	for vm, fs := range s.cross {
		live := fs[:0]
		for _, f := range fs {
			if !f.dead {
				live = append(live, f)
			}
		}
		if len(live) == 0 || s.cur.alt[vm] == nil {
			delete(s.cross, vm) // gone, or the VM has no pending move any more
		} else {
			s.cross[vm] = live
		}
	}
	for k, fs := range s.denied {
		live := fs[:0]
		for _, f := range fs {
			if !f.dead {
				live = append(live, f)
			}
		}
		if len(live) == 0 {
			delete(s.denied, k)
		} else {
			s.denied[k] = live
		}
	}
}

// removeFlow forgets f and deletes its rules.
func (s *Switch) removeFlow(f *flow) {
	s.flows.remove(f)
	f.dead = true
	s.unwild(f)
	s.dropShadow(f)
	s.unplace(f)
	s.release(f.acts)
	f.acts = s.deadActs
	if x := f.x; x != nil {
		for _, c := range x.opened {
			delete(c.users, f)
		}
		for _, c := range x.uses {
			delete(c.users, f)
		}
		x.opened, x.uses = nil, nil
	}
	s.stats.flowsRemoved++
}

// retryHost tries again to offload flows that a full table or a driver
// error left in the host.
func (s *Switch) retryHost() {
	if !s.offloading() {
		return
	}
	n := 0
	for f := range s.flows.all() {
		if n >= retryPerMaintain {
			return
		}
		if f.loc == PathHost && (f.why == WhyTableFull || f.why == WhyDeviceError) {
			n++
			f.loc = PathNone
			s.place(f)
			if f.loc != PathHost {
				s.placeShadow(f)
			}
		}
	}
}

// FlowInfo is one flow as Flows reports it.
type FlowInfo struct {
	ID       hal.RuleID // its NIC rule; 0 when in the host
	Match    hal.Match
	Actions  []hal.Action
	Path     Path // the NIC or the host
	Why      Why
	Err      error // the refusal or failure behind Why
	Scope    hal.Scope
	Gen      hal.Generation
	ShadowID hal.RuleID // inactive rule for the scope's next generation
	// Wildcard: a port-wildcard flow (Match leaves the transport ports
	// out; every connection between the same endpoints uses it).
	Wildcard bool
	// Packets and Bytes merge the host's counts and the NIC's.
	Packets, Bytes uint64
	Age, Idle      time.Duration
}

// Flows returns every flow with its match, actions, location, counters and age.
func (s *Switch) Flows() []FlowInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make([]FlowInfo, 0, s.flows.Len())
	for f := range s.flows.all() {
		out = append(out, s.flowInfo(f, now))
	}
	return out
}

func (s *Switch) flowInfo(f *flow, now int64) FlowInfo {
	fi := FlowInfo{
		ID: f.id, Actions: f.current().acts, Path: f.loc, Why: f.why, Err: f.failure(), Wildcard: f.wild,
		Gen: f.gen, ShadowID: f.shadowID,
		Packets: f.pkts, Bytes: f.bts,
		Age: time.Duration(now - f.created), Idle: time.Duration(now - f.lastUsed),
	}
	s.off.match(&fi.Match, &f.key, f.wild)
	if f.scope != nil {
		fi.Scope = f.scope.id
	}
	return fi
}
