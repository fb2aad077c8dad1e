package tcflower

import (
	"context"
	"fmt"

	"github.com/mdlayher/netlink"
	"github.com/nicpath/nicpath/hal"
)

// Validate says whether the NIC can take r.
func (n *NIC) Validate(r *hal.Rule) error {
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return hal.ErrClosed
	}
	_, err := n.validate(r)
	return err
}

// validate checks r and returns its translation, so that Apply compiles
// each rule once.
func (n *NIC) validate(r *hal.Rule) (*compiled, error) {
	if err := hal.CheckRule(&n.caps, r); err != nil {
		return nil, err
	}
	return compileRule(&n.lay, r)
}

type pendingOp struct {
	index  int
	msg    netlink.Message
	commit func()
}

// Apply programs a batch: the operations' messages go to the kernel in as
// few sendmsg calls as possible, and results say which landed.
func (n *NIC) Apply(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := hal.CheckApply(ctx, &n.caps, n.closed, ops, results); err != nil {
		return err
	}
	results = results[:len(ops)]
	for i := range results {
		results[i] = hal.OpResult{}
	}
	// ToHost rules hold a reason-tag value; the ones this batch touched give
	// theirs back unless they are installed ToHost rules at the end.
	var tagged []hal.RuleID
	defer func() {
		for _, id := range tagged {
			in := n.rules[id]
			n.hostSlots.keep(id, in != nil && isToHost(&in.rule), in != nil && in.ttlChain != 0)
		}
	}()
	// view is the table as the batch so far leaves it (nil = deleted).
	view := map[hal.RuleID]*installed{}
	lookup := func(id hal.RuleID) *installed {
		if in, ok := view[id]; ok {
			return in
		}
		return n.rules[id]
	}
	var pend []pendingOp
	size := len(n.rules) // rules once the pending operations land
	flush := func() {
		if len(pend) == 0 {
			return
		}
		msgs := make([]netlink.Message, len(pend))
		for i := range pend {
			msgs[i] = pend[i].msg
		}
		errs := n.sendBatch(msgs)
		for i, p := range pend {
			if errs[i] != nil {
				results[p.index].Err = opError(ops[p.index].Kind.String(), ops[p.index].Rule.ID, errs[i])
				continue
			}
			p.commit()
		}
		pend = pend[:0]
		// Later operations are judged on what really landed.
		clear(view)
		size = len(n.rules)
	}
	for i := range ops {
		if err := ctx.Err(); err != nil {
			flush()
			for j := i; j < len(ops); j++ {
				results[j].Err = err
			}
			return hal.Summarize(results)
		}
		op := &ops[i]
		id := op.Rule.ID
		switch op.Kind {
		case hal.OpAdd, hal.OpModify:
			old := lookup(id)
			if op.Kind == hal.OpAdd && old != nil {
				results[i].Err = fmt.Errorf("tcflower: add rule %d: %w", id, hal.ErrExists)
				continue
			}
			if op.Kind == hal.OpAdd && n.caps.MaxRules > 0 && size >= n.caps.MaxRules {
				results[i].Err = fmt.Errorf("tcflower: add rule %d: %d rules installed: %w", id, n.caps.MaxRules, hal.ErrTableFull)
				continue
			}
			if op.Kind == hal.OpModify && old == nil {
				results[i].Err = fmt.Errorf("tcflower: modify rule %d: %w", id, hal.ErrNotFound)
				continue
			}
			if old != nil && (isToHost(&old.rule) || old.ttlChain != 0) {
				tagged = append(tagged, id)
			}
			comp, err := n.validate(&op.Rule)
			if err != nil {
				results[i].Err = err
				continue
			}
			if comp.hostAct >= 0 {
				tagged = append(tagged, id)
				v, err := n.hostSlots.get(slotKey{id, false}, op.Rule.Actions[len(op.Rule.Actions)-1].Reason)
				if err != nil {
					results[i].Err = err
					continue
				}
				vid, prio := tagValue(v)
				comp.actions[comp.hostAct] = vlanPushTCI(vid, prio)
			}
			st, err := n.ensureScope(op.Rule.Scope)
			if err != nil {
				results[i].Err = err
				continue
			}
			chain, err := n.ensureGen(st, op.Rule.Generation)
			if err != nil {
				results[i].Err = err
				continue
			}
			in := &installed{rule: op.Rule.Clone(), chain: chain, prio: tcPrio(op.Rule.Priority)}
			if comp.ttl || (old != nil && old.ttlChain != 0) {
				// A chain of the rule's own comes and goes with it: one
				// message at a time.
				flush()
				if comp.ttl {
					tagged = append(tagged, id)
				}
				if err := n.applyTTL(op.Kind.String(), in, old, comp); err != nil {
					results[i].Err = err
				}
				size = len(n.rules)
				continue
			}
			if old != nil && old.chain == in.chain && old.prio == in.prio {
				// Same flower instance: replace the filter in place, one
				// step for packets.
				in.handle = old.handle
				m, err := n.filterMsg(in.spec(comp, n.flags), netlink.Replace)
				if err != nil {
					results[i].Err = err
					continue
				}
				view[id] = in
				pend = append(pend, pendingOp{index: i, msg: m, commit: func() { n.rules[id] = in }})
				continue
			}
			in.handle = n.nextHandle
			n.nextHandle++
			m, err := n.filterMsg(in.spec(comp, n.flags), netlink.Create|netlink.Excl)
			if err != nil {
				results[i].Err = err
				continue
			}
			if old == nil {
				view[id] = in
				size++
				pend = append(pend, pendingOp{index: i, msg: m, commit: func() { n.rules[id] = in }})
				continue
			}
			// A modify that moves the rule to another priority or
			// generation: the new filter first, then the old one goes; a
			// packet meets one or the other.
			flush()
			if err := n.do(m); err != nil {
				results[i].Err = opError("modify", id, err)
				continue
			}
			n.rules[id] = in
			if err := n.do(n.delFilterMsg(old.chain, old.prio, old.handle)); err != nil {
				results[i].Err = opError("modify: remove the old filter", id, err)
			}
		case hal.OpDelete:
			old := lookup(id)
			if old == nil {
				results[i].Err = fmt.Errorf("tcflower: delete rule %d: %w", id, hal.ErrNotFound)
				continue
			}
			view[id] = nil
			size--
			tagged = append(tagged, id)
			pend = append(pend, pendingOp{index: i, msg: n.delFilterMsg(old.chain, old.prio, old.handle), commit: func() {
				delete(n.rules, id)
				if old.ttlChain != 0 {
					// Nothing jumps there any more. A chain left behind
					// holds no rule and goes with the block at Close.
					_ = n.flushChain(old.ttlChain)
				}
			}})
		default:
			results[i].Err = &hal.RuleError{Field: "op", Reason: fmt.Sprintf("unknown operation %d", op.Kind)}
		}
	}
	flush()
	return hal.Summarize(results)
}

func (in *installed) spec(c *compiled, flags uint32) *filterSpec {
	return &filterSpec{
		Chain: in.chain, Prio: in.prio, Handle: in.handle, Flags: flags,
		Keys: c.keys, Actions: c.actions, Cookie: ruleCookie(in.rule.ID, in.rule.Cookie),
	}
}

func (n *NIC) location(f *dumpedFilter) hal.Location {
	if f.Flags&clsFlagsInHW != 0 || (f.HasHWCnt && f.InHWCount > 0) {
		return hal.LocationHardware
	}
	if f.Flags&clsFlagsSkipSW != 0 {
		return hal.LocationUnknown // neither in hardware nor allowed in software
	}
	return hal.LocationKernel
}

// Dump reports every installed rule from a dump of the kernel's filters:
// where it really is (in_hw / not_in_hw per filter) and its counters.
func (n *NIC) Dump(ctx context.Context, fn func(*hal.RuleInfo) error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.ErrClosed
	}
	var infos []hal.RuleInfo
	for _, c := range n.ruleChains() {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := n.dumpChain(c, func(f *dumpedFilter) error {
			id, _, ok := cookieRule(f.Cookie)
			if !ok {
				return nil // a structural filter
			}
			in := n.rules[hal.RuleID(id)]
			if in == nil || in.chain != f.Chain || in.handle != f.Handle {
				return nil // not ours, or the old half of a modify in flight
			}
			infos = append(infos, hal.RuleInfo{
				Rule:     in.rule.Clone(),
				Location: n.location(f),
				Live:     n.live(&in.rule),
				Counters: hal.Counters{Packets: f.Packets, Bytes: f.Bytes},
			})
			return nil
		})
		if err != nil {
			return err
		}
	}
	// Callbacks run without the kernel conversation in the middle.
	for i := range infos {
		if err := fn(&infos[i]); err != nil {
			return err
		}
	}
	return nil
}

func (n *NIC) live(r *hal.Rule) bool {
	_, st := n.findScope(r.Scope)
	return st != nil && st.active == r.Generation
}
