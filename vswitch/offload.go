package vswitch

import (
	"context"
	"errors"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
)

// offloader owns what the switch says to the NIC: the queued operations
// and what each is for, the results of the last Apply, rule IDs, the owner
// cookie, hal.Exact's mask per key shape, and the validate cache (kept per
// action set, in actSet.valid). The switch's lock guards it.
type offloader struct {
	nic    hal.NIC
	caps   *hal.Capabilities // the switch's
	tag    uint16            // Config.CookieTag
	epoch  uint64            // the policy epoch (its low 16 bits are in the cookie)
	nextID hal.RuleID
	atomic bool // flush with ApplyAtomic (policy updates)

	ops     []hal.Op
	refs    []opRef
	results []hal.OpResult
	// hal.Exact's mask per key shape, once known (see exact).
	exactMasks [numShapes]hal.FlowKey
	exactKnown [numShapes]bool
}

func newOffloader(nic hal.NIC, caps *hal.Capabilities, tag uint16) offloader {
	return offloader{nic: nic, caps: caps, tag: tag, nextID: 1}
}

func (o *offloader) cookie() hal.Cookie {
	return hal.Cookie(uint64(cookieMagic)<<32 | uint64(o.tag)<<cookieOwnerSft | o.epoch&0xffff)
}

// ours reports whether a rule's cookie says this switch installed it.
func (o *offloader) ours(c hal.Cookie) bool {
	return uint64(c)>>cookieOwnerSft == uint64(cookieMagic)<<16|uint64(o.tag)
}

type opPurpose uint8

const (
	opAddPrimary opPurpose = iota
	opAddShadow
	opModPrimary
	opModShadow
	opDelete
	opProPrimary
	opProShadow
)

type opRef struct {
	f       *flow
	pro     *proRule
	purpose opPurpose
}

func (o *offloader) newID() hal.RuleID {
	// IDs only grow; reconciliation moves nextID past every rule the NIC
	// holds, so a new ID is never taken.
	id := o.nextID
	o.nextID++
	return id
}

func (o *offloader) rule(id hal.RuleID, k *hal.FlowKey, a *actSet, sc hal.Scope, gen hal.Generation, wild bool) hal.Rule {
	r := hal.Rule{ID: id, Priority: prioOf(wild), Actions: a.acts, Cookie: o.cookie(), Scope: sc, Generation: gen}
	o.match(&r.Match, k, wild)
	return r
}

// queueRule queues an operation on a unified flow's rule, built in place in
// the batch: an Op is 256 bytes, and building it by value (rule, then op,
// then append) copied it three times per first packet.
// wild says that the rule is a port-wildcard flow's (wildcard.go): its
// match leaves the transport ports out and it has prioWildcard.
func (o *offloader) queueRule(kind hal.OpKind, id hal.RuleID, k *hal.FlowKey, a *actSet, sc hal.Scope, gen hal.Generation, wild bool) {
	o.ops = append(o.ops, hal.Op{})
	op := &o.ops[len(o.ops)-1]
	op.Kind = kind
	r := &op.Rule
	r.ID, r.Priority, r.Actions, r.Cookie, r.Scope, r.Generation = id, prioOf(wild), a.acts, o.cookie(), sc, gen
	o.match(&r.Match, k, wild)
}

// match sets m to hal.Exact(k), or to hal.Exact(k) without the transport
// ports when wild. The mask hal.Exact gives depends only on the key's
// shape (see shapeOf), so it is taken from hal.Exact once per shape and
// the key is masked with it.
func (o *offloader) match(m *hal.Match, k *hal.FlowKey, wild bool) {
	sh := shapeOf(k, false)
	mk := &o.exactMasks[sh]
	if !o.exactKnown[sh] {
		*mk = hal.Exact(k).Mask
		o.exactKnown[sh] = true
	}
	m.Mask = *mk
	if wild {
		m.Mask.L4Src, m.Mask.L4Dst = 0, 0
	}
	m.Key = *k
	m.Normalize()
}

// validate asks the NIC whether it can take a rule of this shape with
// these actions; answers are cached per action set and shape.
func (o *offloader) validate(a *actSet, k *hal.FlowKey, scoped bool, sc hal.Scope, gen hal.Generation, wild bool) error {
	sh := shapeOf(k, scoped)
	if wild {
		sh |= shapeWild
	}
	switch a.valid[sh] {
	case 1:
		return nil
	case 2:
		return a.verr[sh] // set with the 2
	}
	r := o.rule(1, k, a, sc, gen, wild)
	err := o.nic.Validate(&r)
	if err == nil {
		a.valid[sh] = 1
		return nil
	}
	if errors.Is(err, hal.ErrNotSupported) || errors.Is(err, hal.ErrInvalidRule) {
		if a.verr == nil {
			a.verr = new([numShapes]error)
		}
		a.valid[sh], a.verr[sh] = 2, err
	}
	return err
}

// flush sends the queued operations to the NIC in batches of the NIC's
// size and settles every flow by its result.
func (s *Switch) flush(ctx context.Context) {
	if len(s.off.ops) == 0 {
		return
	}
	// Settling a result may queue more operations (a delete after a failed
	// modify); they go out in the next round of the loop.
	for start := 0; start < len(s.off.ops); {
		chunk := s.caps.MaxBatch
		if chunk <= 0 {
			chunk = len(s.off.ops)
		}
		end := min(start+chunk, len(s.off.ops))
		ops := s.off.ops[start:end]
		s.prefetchActions(ops)
		if cap(s.off.results) < len(ops) {
			s.off.results = make([]hal.OpResult, len(ops))
		}
		res := s.off.results[:len(ops)]
		clear(res)
		var err error
		if aa, ok := s.off.nic.(hal.AtomicApplier); ok && s.off.atomic && s.caps.AtomicBatch {
			// A policy update lands on the NIC in one step where the
			// driver can promise it: every packet sees the old rules or
			// the new ones.
			err = aa.ApplyAtomic(ctx, ops, res)
		} else {
			err = s.off.nic.Apply(ctx, ops, res)
		}
		if err != nil && !isBatchError(err) {
			// The whole call failed: nothing is known to have landed.
			for i := range res {
				if res[i].Err == nil {
					res[i].Err = err
				}
			}
			s.needRecon = true
		}
		s.stats.applyCalls++
		for i := range ops {
			s.settle(&ops[i], s.off.refs[start+i], res[i].Err)
		}
		start = end
	}
	clear(s.off.ops)
	s.off.ops = s.off.ops[:0]
	clear(s.off.refs)
	s.off.refs = s.off.refs[:0]
}

// isBatchError reports whether err says which operations of a batch failed
// (the results carry them). It is its own function because errors.As moves
// its target to the heap: declared in flush, that would cost an allocation
// per batch even when Apply succeeds.
func isBatchError(err error) bool {
	var be *hal.BatchError
	return errors.As(err, &be)
}

func (s *Switch) settle(op *hal.Op, ref opRef, err error) {
	f := ref.f
	if err != nil {
		s.stats.opErrors++
		if !errors.Is(err, hal.ErrNotSupported) && !errors.Is(err, hal.ErrTableFull) {
			s.needRecon = true
		}
	}
	switch ref.purpose {
	case opAddPrimary, opModPrimary:
		if f.h.dead || f.h.id != op.Rule.ID {
			return // the flow went away or moved on meanwhile
		}
		if err == nil {
			if ref.purpose == opAddPrimary {
				s.stats.offloaded++
			} else {
				s.stats.reprogrammed++
			}
			f.h.loc, f.why = PathNIC, WhyOffloaded
			f.setFailure(nil)
			return
		}
		if errors.Is(err, hal.ErrExists) {
			// Someone else's rule has this ID: take another one next time.
			s.needRecon = true
		}
		if ref.purpose == opModPrimary {
			// The old rule may still be there with stale actions: remove it.
			s.off.queueDelete(f.h.id)
		}
		f.h.id = 0
		s.toHost(f, whyOf(err), err)
		if f.h.shadowID != 0 {
			s.off.queueDelete(f.h.shadowID)
			f.h.shadowID = 0
		}
	case opAddShadow, opModShadow:
		if f.h.dead || f.h.shadowID != op.Rule.ID {
			return
		}
		if err == nil {
			return
		}
		if ref.purpose == opModShadow {
			s.off.queueDelete(f.h.shadowID)
		}
		f.h.shadowID = 0
	case opDelete:
		if err != nil && !errors.Is(err, hal.ErrNotFound) {
			s.needRecon = true
		}
	case opProPrimary:
		r := ref.pro
		if s.pro[r.key] != r || r.id != op.Rule.ID {
			return
		}
		if err == nil {
			r.landed = true
			return
		}
		// Without the rule, the destination takes the slow path as usual.
		if op.Kind == hal.OpModify {
			s.off.queueDelete(r.id)
		}
		s.stats.proRefused++
		r.id = 0
		s.dropPro(r)
	case opProShadow:
		r := ref.pro
		if s.pro[r.key] != r || r.shadowID != op.Rule.ID || err == nil {
			return
		}
		if op.Kind == hal.OpModify {
			s.off.queueDelete(r.shadowID)
		}
		r.shadowID = 0
	}
}

func (o *offloader) queueDelete(id hal.RuleID) {
	if id == 0 {
		return
	}
	o.ops = append(o.ops, hal.DeleteOp(id))
	o.refs = append(o.refs, opRef{purpose: opDelete})
}

// prefetchActions prefetches the action lists of ops before they go to the
// NIC. The lists are the action sets' (a thousand on a realistic host, each
// of a few 150-byte actions), out of the cache after the batch's walks; the
// driver reads every action of every rule (its checks, then its own
// interning of the list), one cache miss after another. Prefetched
// together, the misses overlap. A list shared by consecutive operations is
// queued once.
func (s *Switch) prefetchActions(ops []hal.Op) {
	pf := &s.pf
	var last *hal.Action
	for i := range ops {
		acts := ops[i].Rule.Actions
		if len(acts) == 0 || &acts[0] == last {
			continue
		}
		last = &acts[0]
		pf.addAll(uintptr(unsafe.Pointer(last)), uintptr(len(acts))*unsafe.Sizeof(hal.Action{}))
	}
	pf.flush()
}
