package vswitch

import (
	"context"
	"time"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/prefetch"
)

// counterChunk bounds one RuleCounters call: big enough to amortise the
// call, small enough that the scratch slices and the chunk's flows (two
// or three cache lines each, read again once the counters are in) stay
// in the L2 cache.
const counterChunk = 512

// flowLines is how many cache lines a flow takes (TestFlowSize).
const flowLines = int(unsafe.Sizeof(flow{})+63) / 64

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
	// Idle flows go in the same pass over the flows as the counters
	// (which say which flows are idle), unless a retirement is pending:
	// it promotes shadow rules, and goes first.
	ageFlows := !s.retirePending
	if cerr := s.readCounters(ctx, now, ageFlows); cerr != nil && err == nil {
		err = cerr
	}
	s.retire(now)
	s.age(now, !ageFlows)
	s.retryHost()
	s.flush(ctx)
	s.recycleSlabs()
	return err
}

// readCounters merges the NIC's per-rule counters into the flows (and so
// into their connections); with ageIdle, it also removes the flows idle
// for FlowIdle, in the same pass (age's own pass over the flows then has
// nothing to do), in the order of the flows' slabs (tableFlows). It does
// them a chunk at a time, while the chunk's flows are still in the cache.
func (s *Switch) readCounters(ctx context.Context, now int64, ageIdle bool) error {
	flowIdle := int64(s.cfg.FlowIdle)
	if !s.counting {
		if ageIdle {
			for f, h := range s.tableFlows() {
				if now-h.lastUsed > flowIdle {
					s.ageFlow(f, now, flowIdle)
				}
			}
		}
		return nil
	}
	type ref struct {
		f      *flow
		h      *flowHot // f.h, without reading f
		shadow bool
	}
	ids := make([]hal.RuleID, 0, counterChunk)
	refs := make([]ref, 0, counterChunk)
	var idle []*flow
	var hashes []uint64
	var slots, warm []uintptr
	if ageIdle {
		idle = make([]*flow, 0, counterChunk)
		hashes = make([]uint64, 0, counterChunk)
		slots = make([]uintptr, 0, counterChunk)
		warm = make([]uintptr, 0, counterChunk*flowLines)
	}
	out := make([]hal.Counters, counterChunk)
	var firstErr error
	do := func() {
		if len(ids) == 0 {
			return
		}
		// The flows that look idle (unless their counters moved) are read
		// in full by their removal: their lines load during RuleCounters.
		prefetch.Lines(warm)
		warm = warm[:0]
		if err := s.nic.RuleCounters(ctx, ids, out[:len(ids)]); err != nil {
			if firstErr == nil {
				firstErr = err
			}
		} else {
			for i, r := range refs {
				c := out[i]
				// Only h is read unless the rule's counters moved: the
				// flow's own lines (the byte reading, the totals) are out
				// of the cache.
				h := r.h
				lp := &h.ruleP
				if r.shadow {
					lp = &h.shP
				}
				if c.Packets == *lp {
					continue
				}
				f := r.f
				lb := &f.ruleB
				if r.shadow {
					lb = &f.shB
				}
				if c.Packets > *lp {
					s.countSpoofed(f, c.Packets-*lp)
					f.pkts += c.Packets - *lp
					// A counter that restarted (its rule installed
					// again) can pass the old packet reading with fewer
					// bytes than the old byte reading: count no bytes
					// then rather than a wrapped difference.
					if c.Bytes >= *lb {
						f.bts += c.Bytes - *lb
					}
					h.lastUsed = now
					touchConns(f, now)
				}
				// Lower: the rule was installed again.
				*lp, *lb = c.Packets, c.Bytes
			}
		}
		if ageIdle {
			// The chunk's idle flows, their slots in the table (in hash
			// order, a cache miss each) fetched together before the
			// removals read them.
			idle, hashes, slots = idle[:0], hashes[:0], slots[:0]
			for _, r := range refs {
				f, h := r.f, r.h
				if h.dead || now-h.lastUsed <= flowIdle || len(idle) > 0 && idle[len(idle)-1] == f {
					continue // a flow with a shadow rule is here twice, in a row
				}
				hash := s.flows.hashKey(&f.key)
				idle, hashes = append(idle, f), append(hashes, hash)
				slots = append(slots, s.flows.slotAddr(hash))
			}
			prefetch.Lines(slots)
			for i, f := range idle {
				if f.h.dead {
					continue
				}
				s.removeFlowHashed(f, hashes[i])
				s.stats.flowsAged++
			}
		}
		ids, refs = ids[:0], refs[:0]
	}
	for f, h := range s.tableFlows() {
		if h.loc != PathNIC || h.id == 0 && h.shadowID == 0 {
			// No counters to read first.
			if ageIdle && now-h.lastUsed > flowIdle {
				s.ageFlow(f, now, flowIdle)
			}
			continue
		}
		if ageIdle && now-h.lastUsed > flowIdle {
			p := uintptr(unsafe.Pointer(f))
			for l := range flowLines {
				warm = append(warm, p+uintptr(l*64))
			}
		}
		if h.id != 0 {
			ids = append(ids, h.id)
			refs = append(refs, ref{f, h, false})
		}
		if h.shadowID != 0 {
			ids = append(ids, h.shadowID)
			refs = append(refs, ref{f, h, true})
		}
		if len(ids) >= counterChunk-1 {
			do()
		}
	}
	do()
	return firstErr
}

// ageFlow removes f if it has been idle for flowIdle.
func (s *Switch) ageFlow(f *flow, now, flowIdle int64) {
	if now-f.h.lastUsed > flowIdle {
		s.removeFlow(f)
		s.stats.flowsAged++
	}
}

// age removes connections idle for ConnIdle (with every flow that opened
// or relied on them: the next packet walks the layers again and finds the
// connection gone) and, with flows (readCounters did not), flows idle for
// FlowIdle.
func (s *Switch) age(now int64, flows bool) {
	flowIdle, connIdle := int64(s.cfg.FlowIdle), int64(s.cfg.ConnIdle)
	for _, c := range s.ct.conns {
		if now-c.lastSeen <= connIdle {
			continue
		}
		s.ct.remove(c.key)
		s.stats.connsExpired++
		for f := range c.users {
			if !f.h.dead {
				s.removeFlow(f)
				s.stats.flowsAged++
			}
		}
	}
	if flows {
		for f, h := range s.tableFlows() {
			if now-h.lastUsed > flowIdle {
				s.ageFlow(f, now, flowIdle)
			}
		}
	}
	for vm, fs := range s.cross {
		live := fs[:0]
		for _, f := range fs {
			if !f.h.dead {
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
			if !f.h.dead {
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
func (s *Switch) removeFlow(f *flow) { s.removeFlowHashed(f, s.flows.hashKey(&f.key)) }

// removeFlowHashed is removeFlow with the hash of f's key in the flow
// table (hashKey).
func (s *Switch) removeFlowHashed(f *flow, h uint64) {
	s.flows.removeHashed(f, h)
	f.h.dead = true
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
	if !s.offloading() || !s.retryDue {
		return
	}
	// Set again by the retries that fail (toHost), or below when the
	// bound leaves flows for the next Maintain.
	s.retryDue = false
	n := 0
	for f, h := range s.tableFlows() {
		if n >= retryPerMaintain {
			s.retryDue = true
			return
		}
		if h.loc == PathHost && (f.why == WhyTableFull || f.why == WhyDeviceError) {
			n++
			f.h.loc = PathNone
			s.place(f)
			if f.h.loc != PathHost {
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
		ID: f.h.id, Actions: f.current().acts, Path: f.h.loc, Why: f.why, Err: f.failure(), Wildcard: f.wild,
		Gen: f.h.gen, ShadowID: f.h.shadowID,
		Packets: f.pkts, Bytes: f.bts,
		Age: time.Duration(now - f.created), Idle: time.Duration(now - f.h.lastUsed),
	}
	s.off.match(&fi.Match, &f.key, f.wild)
	if f.scope != nil {
		fi.Scope = f.scope.id
	}
	return fi
}
