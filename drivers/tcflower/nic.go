package tcflower

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mdlayher/netlink"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

var _ hal.NIC = (*NIC)(nil)

// maxScopes is how many scopes fit the kernel's limit on chain jumps per
// packet: __tcf_classify gives up (and drops) after 16 jumps
// (max_reclassify_loop). A packet takes one jump from chain 0 to the first
// scope's dispatch chain and two per scope after that (dispatch chain to the
// active generation's chain, its tail to the next dispatch chain): 1 + 2×7 =
// 15.
const maxScopes = 7

// chunkOps bounds the messages of one sendmsg: each filter message is a few
// hundred bytes and the socket's send buffer is 4 MiB at most (see
// open_linux.go), so 1024 messages stay well inside it while a batch still
// costs one system call per thousand rules.
const chunkOps = 1024

// maxRules bounds the rules one NIC holds. Software filters have no table
// size, only kernel memory; the bound keeps one NIC from exhausting it and
// gives callers a table size to plan with (ErrTableFull beyond it).
const maxRules = 1 << 20

// maxBatch is the Apply size the driver accepts; larger batches are refused
// so that a single call cannot hold the lock for minutes.
const maxBatch = 1 << 20

// Structural filters: priorities and handle.
const (
	prioSealed   = 1      // chain 0: drop sealed-address frames, first
	prioHead     = 4      // chain 0: jump to the first scope's dispatch chain (after the tunnel endpoint's filters, endpoint.go)
	prioDispatch = 1      // the only filter of a dispatch chain
	prioTail     = 0xffff // after every rule of a generation chain
	structHandle = 1      // handle of the structural filters
)

// installed is a rule the kernel holds.
type installed struct {
	rule   hal.Rule
	chain  uint32
	prio   uint16
	handle uint32
	// ttlChain is a DecTTL rule's own chain (see ttlFilters); 0 for others.
	ttlChain uint32
}

// scopeState is one scope's chains: dispatch holds one filter that jumps to
// the active generation's chain.
type scopeState struct {
	scope    hal.Scope
	dispatch uint32
	active   hal.Generation
	gens     map[hal.Generation]uint32
}

// NIC is a tc-flower NIC: a shared tc block on the ingress (clsact) of every
// port and tunnel device, holding the rules as flower filters. See the
// package doc.
type NIC struct {
	cfg   Config
	conn  *netlink.Conn
	block uint32
	flags uint32 // TCA_CLS_FLAGS_* every filter gets
	caps  hal.Capabilities
	lay   layout
	devs  []*device // every device the block is attached to
	ports []hal.Port
	sys   sysOps // OS-specific parts (injection); nil in unit tests
	// base holds each port's interface counters at Open: PortCounters
	// reports what passed since, not since the interface was created.
	base map[hal.PortID]linkStats
	// exc is the exception path; nil when Open could not build it.
	exc *exceptionPath
	// hostSlots names the ToHost rules in the frames' reason tags.
	hostSlots hostSlots
	// tunPorts are the UDP ports the tunnel devices receive on;
	// tunPortByKind says which is whose.
	tunPorts      []uint16
	tunPortByKind map[hal.EncapKind]uint16
	// groups joins an endpoint's multicast groups; nil in unit tests.
	groups groupJoiner
	// stopped is set by Close before anything else, so that a reader
	// blocked in ReadExceptions (which never takes mu) leaves.
	stopped atomic.Bool

	// readMu serialises ReadExceptions; excBuf is its receive buffer and
	// tmpls its templates of tunnelled misses' outer headers.
	readMu sync.Mutex
	excBuf []byte
	tmpls  map[tmplKey]*wire.EncapTemplate
	// hashKey and hashLay are innerHash's scratch.
	hashKey hal.FlowKey
	hashLay wire.Layout

	mu         sync.Mutex
	closed     bool
	rules      map[hal.RuleID]*installed
	scopes     []*scopeState // sorted by scope
	nextChain  uint32
	nextHandle uint32
	headTarget uint32 // dispatch chain chain 0 jumps to; 0 = none yet
	// endpoints are the uplinks' tunnel endpoints (endpoint.go);
	// retiredNotLocal the not-local drops of endpoints since removed.
	endpoints       map[hal.PortID]*endpointState
	retiredNotLocal map[hal.PortID]uint64
	// epAddrs is the endpoints' addresses for the exception reader
	// (publishEndpoints).
	epAddrs atomic.Pointer[map[netip.Addr]epTarget]
}

// sysOps are what the NIC needs from the OS beyond netlink.
type sysOps interface {
	inject(ifindex uint32, frames [][]byte) error
	close() error
}

func newNIC(conn *netlink.Conn, cfg Config, block, flags uint32, lay layout, devs []*device) *NIC {
	n := &NIC{
		cfg: cfg, conn: conn, block: block, flags: flags, lay: lay, devs: devs,
		rules: map[hal.RuleID]*installed{}, nextChain: 1, nextHandle: 1,
		endpoints: map[hal.PortID]*endpointState{}, retiredNotLocal: map[hal.PortID]uint64{},
	}
	for _, d := range devs {
		if d.ID != 0 {
			n.ports = append(n.ports, hal.Port{ID: d.ID, Name: d.Name, Kind: d.Kind, MAC: d.MAC, MTU: d.MTU})
		}
	}
	sort.Slice(n.ports, func(i, j int) bool { return n.ports[i].ID < n.ports[j].ID })
	return n
}

// Capabilities returns what Open verified on the device.
func (n *NIC) Capabilities() hal.Capabilities {
	c := n.caps
	c.Notes = append([]string(nil), c.Notes...)
	return c
}

// Ports returns the ports, in ID order.
func (n *NIC) Ports() []hal.Port { return append([]hal.Port(nil), n.ports...) }

// Block returns the index of the shared tc block holding the rules (for
// `tc filter show block N`).
func (n *NIC) Block() uint32 { return n.block }

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

// --- netlink plumbing ---

func (n *NIC) request(typ netlink.HeaderType, flags netlink.HeaderFlags, data []byte) netlink.Message {
	return netlink.Message{Header: netlink.Header{Type: typ, Flags: netlink.Request | flags}, Data: data}
}

// do sends one message and waits for its acknowledgement.
func (n *NIC) do(m netlink.Message) error {
	errs := n.sendBatch([]netlink.Message{m})
	return errs[0]
}

// sendBatch sends msgs in chunks of chunkOps messages per sendmsg and
// returns one error per message. Only each chunk's last message asks for an
// acknowledgement: the kernel processes a sendmsg's messages in order and
// answers every failure with an error message, so the last acknowledgement
// closes the chunk and every message without an error before it landed.
// That keeps the receive queue small however large the batch.
func (n *NIC) sendBatch(msgs []netlink.Message) []error {
	errs := make([]error, len(msgs))
	for start := 0; start < len(msgs); start += chunkOps {
		end := min(start+chunkOps, len(msgs))
		part := msgs[start:end]
		for i := range part {
			part[i].Header.Sequence = 0
			part[i].Header.Flags &^= netlink.Acknowledge
		}
		part[len(part)-1].Header.Flags |= netlink.Acknowledge
		sent, err := n.conn.SendMessages(part)
		if err != nil {
			for i := start; i < end; i++ {
				errs[i] = err
			}
			continue
		}
		index := make(map[uint32]int, len(sent))
		for i, m := range sent {
			index[m.Header.Sequence] = start + i
		}
		last := sent[len(sent)-1].Header.Sequence
		if err := n.collect(index, last, errs); err != nil {
			// The socket failed: what was not answered is unknown.
			for i := start; i < end; i++ {
				if errs[i] == nil {
					errs[i] = fmt.Errorf("%w: %v", errResultUnknown, err)
				}
			}
		}
	}
	return errs
}

// collect reads acknowledgements until the one for sequence last.
func (n *NIC) collect(index map[uint32]int, last uint32, errs []error) error {
	for {
		msgs, err := n.conn.Receive()
		if err != nil {
			var oe *netlink.OpError
			if errors.As(err, &oe) && oe.Sequence != 0 {
				if i, ok := index[oe.Sequence]; ok {
					errs[i] = err
				}
				if oe.Sequence == last {
					return nil
				}
				continue
			}
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == netlink.Error && m.Header.Sequence == last {
				return nil
			}
		}
	}
}

func (n *NIC) filterMsg(f *filterSpec, flags netlink.HeaderFlags) (netlink.Message, error) {
	b, err := encodeFilter(n.block, f, true)
	if err != nil {
		return netlink.Message{}, err
	}
	return n.request(rtmNewFilter, flags, b), nil
}

func (n *NIC) delFilterMsg(chain uint32, prio uint16, handle uint32) netlink.Message {
	b, _ := encodeFilter(n.block, &filterSpec{Chain: chain, Prio: prio, Handle: handle}, false)
	return n.request(rtmDelFilter, 0, b)
}

// jumpFilter is a structural filter: match everything, go to chain target.
func (n *NIC) jumpFilter(chain uint32, prio uint16, target uint32) *filterSpec {
	return &filterSpec{Chain: chain, Prio: prio, Handle: structHandle, Flags: n.flags, Actions: []tcAction{gotoChain(target)}}
}

// setJump creates or replaces a structural filter.
func (n *NIC) setJump(chain uint32, prio uint16, target uint32) error {
	m, err := n.filterMsg(n.jumpFilter(chain, prio, target), netlink.Create|netlink.Replace)
	if err != nil {
		return err
	}
	return n.do(m)
}

// --- scopes and generations ---

func (n *NIC) findScope(s hal.Scope) (int, *scopeState) {
	i := sort.Search(len(n.scopes), func(i int) bool { return n.scopes[i].scope >= s })
	if i < len(n.scopes) && n.scopes[i].scope == s {
		return i, n.scopes[i]
	}
	return i, nil
}

func (n *NIC) allocChain() uint32 {
	c := n.nextChain
	n.nextChain++
	return c
}

// ensureScope returns the scope's state, building its chains and linking
// it into the path of every packet first if it is new. The new scope's
// chains are complete before anything jumps to them.
func (n *NIC) ensureScope(s hal.Scope) (*scopeState, error) {
	i, st := n.findScope(s)
	if st != nil {
		return st, nil
	}
	if len(n.scopes) >= maxScopes {
		return nil, unsupported("scope", "the NIC holds %d scopes (tc allows 16 chain jumps per packet); scope %d would be one more", maxScopes, s)
	}
	st = &scopeState{scope: s, dispatch: n.allocChain(), gens: map[hal.Generation]uint32{}}
	c := n.allocChain()
	if tail := n.tailTo(i); tail != 0 {
		if err := n.setJump(c, prioTail, tail); err != nil {
			return nil, opError("scope", 0, err)
		}
	}
	st.gens[0] = c
	if err := n.setJump(st.dispatch, prioDispatch, c); err != nil {
		return nil, opError("scope", 0, err)
	}
	// Link it in: the previous scope's tails, or chain 0.
	if i == 0 {
		if err := n.setJump(0, prioHead, st.dispatch); err != nil {
			return nil, opError("scope", 0, err)
		}
		n.headTarget = st.dispatch
	} else {
		for _, gc := range n.scopes[i-1].gens {
			if err := n.setJump(gc, prioTail, st.dispatch); err != nil {
				return nil, opError("scope", 0, err)
			}
		}
	}
	n.scopes = append(n.scopes, nil)
	copy(n.scopes[i+1:], n.scopes[i:])
	n.scopes[i] = st
	return st, nil
}

// ensureGen returns the chain of (scope, gen), creating it with its tail.
func (n *NIC) ensureGen(st *scopeState, g hal.Generation) (uint32, error) {
	if c, ok := st.gens[g]; ok {
		return c, nil
	}
	c := n.allocChain()
	i, _ := n.findScope(st.scope)
	if tail := n.tailTo(i + 1); tail != 0 {
		if err := n.setJump(c, prioTail, tail); err != nil {
			return 0, opError("generation", 0, err)
		}
	}
	st.gens[g] = c
	return c, nil
}

// Activate makes gen the live generation of scope with one filter replace:
// the scope's dispatch filter now jumps to gen's chain.
func (n *NIC) Activate(ctx context.Context, scope hal.Scope, gen hal.Generation) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.ErrClosed
	}
	st, err := n.ensureScope(scope)
	if err != nil {
		return err
	}
	c, err := n.ensureGen(st, gen)
	if err != nil {
		return err
	}
	if err := n.setJump(st.dispatch, prioDispatch, c); err != nil {
		return opError("activate", 0, err)
	}
	st.active = gen
	return nil
}

// ActiveGeneration returns the live generation of scope (0 for a scope the
// NIC has not seen).
func (n *NIC) ActiveGeneration(scope hal.Scope) (hal.Generation, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return 0, hal.ErrClosed
	}
	if _, st := n.findScope(scope); st != nil {
		return st.active, nil
	}
	return 0, nil
}

// --- Apply ---

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

// --- dumps and counters ---

// dumpChain lists the flower filters of one chain of the block.
func (n *NIC) dumpChain(chain uint32, fn func(*dumpedFilter) error) error {
	b, err := encodeDumpRequest(n.block, chain)
	if err != nil {
		return err
	}
	msgs, err := n.conn.Execute(n.request(rtmGetFilter, netlink.Dump, b))
	if err != nil {
		return opError("dump", 0, err)
	}
	for _, m := range msgs {
		if m.Header.Type != rtmNewFilter {
			continue
		}
		f, err := parseFilter(m.Data)
		if errors.Is(err, errNotFilter) {
			continue
		}
		if err != nil {
			return fmt.Errorf("tcflower: dump chain %d: %w", chain, err)
		}
		if err := fn(&f); err != nil {
			return err
		}
	}
	return nil
}

// ruleChains lists every generation chain, in order.
func (n *NIC) ruleChains() []uint32 {
	var cs []uint32
	for _, st := range n.scopes {
		for _, c := range st.gens {
			cs = append(cs, c)
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i] < cs[j] })
	return cs
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

// RuleCounters fills out[i] with the counters of ids[i], read from a dump of
// the chains that hold them.
func (n *NIC) RuleCounters(ctx context.Context, ids []hal.RuleID, out []hal.Counters) error {
	if len(out) < len(ids) {
		return fmt.Errorf("tcflower: %d counters for %d rules", len(out), len(ids))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.ErrClosed
	}
	chains := map[uint32]bool{}
	for _, id := range ids {
		in := n.rules[id]
		if in == nil {
			return fmt.Errorf("tcflower: counters of rule %d: %w", id, hal.ErrNotFound)
		}
		chains[in.chain] = true
	}
	got := map[hal.RuleID]hal.Counters{}
	for c := range chains {
		err := n.dumpChain(c, func(f *dumpedFilter) error {
			if id, _, ok := cookieRule(f.Cookie); ok {
				if in := n.rules[hal.RuleID(id)]; in != nil && in.handle == f.Handle {
					got[hal.RuleID(id)] = hal.Counters{Packets: f.Packets, Bytes: f.Bytes}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for i, id := range ids {
		out[i] = got[id]
	}
	return nil
}

// PortCounters reads the port's interface statistics (IFLA_STATS64).
func (n *NIC) PortCounters(ctx context.Context, port hal.PortID) (hal.PortCounters, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.PortCounters{}, hal.ErrClosed
	}
	d := n.lay.ports[port]
	if d == nil {
		return hal.PortCounters{}, fmt.Errorf("tcflower: port %d: %w", port, hal.ErrNotFound)
	}
	st, err := n.linkStats(d.Ifindex)
	if err != nil {
		return hal.PortCounters{}, err
	}
	b := n.base[port]
	st = linkStats{
		rxPackets: st.rxPackets - b.rxPackets, txPackets: st.txPackets - b.txPackets,
		rxBytes: st.rxBytes - b.rxBytes, txBytes: st.txBytes - b.txBytes,
		rxDropped: st.rxDropped - b.rxDropped, txDropped: st.txDropped - b.txDropped,
	}
	// Interface statistics count whole frames; the driver's byte counters
	// count from L3 (BytesIncludeL2 false), so the Ethernet header of each
	// frame comes off (14 bytes: a VLAN tag's 4 more stay counted).
	l3 := func(bytes, packets uint64) uint64 {
		if bytes < 14*packets {
			return 0
		}
		return bytes - 14*packets
	}
	_, exc, err := n.exceptionCounts(port)
	if err != nil {
		return hal.PortCounters{}, err
	}
	// Frames a tc filter drops are not in the interface's counters: the
	// tunnel endpoint's drops of the port are added.
	notLocal, err := n.notLocalDrops()
	if err != nil {
		return hal.PortCounters{}, err
	}
	return hal.PortCounters{
		Rx:         hal.Counters{Packets: st.rxPackets, Bytes: l3(st.rxBytes, st.rxPackets)},
		Tx:         hal.Counters{Packets: st.txPackets, Bytes: l3(st.txBytes, st.txPackets)},
		Drops:      st.rxDropped + st.txDropped + notLocal[port],
		Exceptions: exc,
	}, nil
}

func (n *NIC) linkStats(ifindex uint32) (linkStats, error) {
	b := make([]byte, 16)
	putU32(b[4:], ifindex)
	msgs, err := n.conn.Execute(n.request(rtmGetLink, 0, b))
	if err != nil {
		return linkStats{}, opError("link", 0, err)
	}
	for _, m := range msgs {
		if _, _, _, _, st, err := parseLink(m.Data); err == nil {
			return st, nil
		}
	}
	return linkStats{}, fmt.Errorf("tcflower: no link message for ifindex %d", ifindex)
}

// installSealedDrop puts the filter that drops sealed-address frames
// (EtherType 0x88B5) ahead of every rule: the NIC has no crypto, so it fails
// closed rather than forward what only a NIC with the key may open.
func (n *NIC) installSealedDrop() error {
	e := netlink.NewAttributeEncoder()
	e.Bytes(flowerEthType, be16(hal.EtherTypeSealed))
	keys, err := e.Encode()
	if err != nil {
		return err
	}
	m, err := n.filterMsg(&filterSpec{Chain: 0, Prio: prioSealed, Handle: structHandle, Flags: n.flags, Keys: keys,
		Actions: []tcAction{gactAction(tcActShot)}}, netlink.Create|netlink.Excl)
	if err != nil {
		return err
	}
	return opError("install the sealed-frame drop", 0, n.do(m))
}

// Stats reports drops and exceptions by reason: sealed-address frames from
// the filter that drops them, tunnelled frames for another endpoint from
// the tunnel endpoint's drop filters, misses and fragments from the
// exception path's own filters, the others from the counters of the drop
// and ToHost rules.
func (n *NIC) Stats(ctx context.Context) (hal.Stats, error) {
	var s hal.Stats
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return s, hal.ErrClosed
	}
	err := n.dumpChain(0, func(f *dumpedFilter) error {
		if f.Prio == prioSealed {
			s.Drops[hal.ReasonSealed] += f.Packets
		}
		return nil
	})
	if err == nil {
		var notLocal map[hal.PortID]uint64
		notLocal, err = n.notLocalDrops()
		for _, c := range notLocal {
			s.Drops[hal.ReasonNotLocal] += c
		}
	}
	if err == nil {
		s.Exceptions, _, err = n.exceptionCounts(0)
	}
	for _, in := range n.rules {
		if err != nil || in.ttlChain == 0 {
			continue
		}
		err = n.dumpChain(in.ttlChain, func(f *dumpedFilter) error {
			if f.Prio == 1 {
				s.Exceptions[hal.ReasonTTL] += f.Packets
			}
			return nil
		})
	}
	n.mu.Unlock()
	if err != nil {
		return s, err
	}
	err = n.Dump(ctx, func(ri *hal.RuleInfo) error {
		t := ri.Rule.Terminal()
		if t == nil || t.Reason >= hal.NumReasons {
			return nil
		}
		switch t.Kind {
		case hal.ActionDrop:
			s.Drops[t.Reason] += ri.Counters.Packets
		case hal.ActionToHost:
			s.Exceptions[t.Reason] += ri.Counters.Packets
		}
		return nil
	})
	return s, err
}

func isToHost(r *hal.Rule) bool {
	t := r.Terminal()
	return t != nil && t.Kind == hal.ActionToHost
}

// --- exception path ---

// Inject sends frames out of port as they are (AF_PACKET on Linux).
func (n *NIC) Inject(ctx context.Context, port hal.PortID, frames [][]byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.ErrClosed
	}
	d := n.lay.ports[port]
	if d == nil {
		return fmt.Errorf("tcflower: inject on port %d: %w", port, hal.ErrNotFound)
	}
	if n.sys == nil {
		return unsupported("inject", "no packet socket on this system")
	}
	if err := n.sys.inject(d.Ifindex, frames); err != nil {
		return &hal.OpError{Driver: driverName, Op: "inject", Err: err}
	}
	return nil
}

// Close removes the clsact qdiscs the driver added, which destroys the
// shared block and every filter in it, deletes the exception channel and
// releases the sockets. A ReadExceptions blocked across Close returns
// hal.ErrClosed, as do later calls.
func (n *NIC) Close() error {
	n.stopped.Store(true)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.ErrClosed
	}
	n.closed = true
	var errs []error
	if n.exc != nil {
		// The reader notices stopped within its poll interval; the
		// socket closes once it has left.
		n.readMu.Lock()
		errs = append(errs, n.exc.reader.close())
		n.readMu.Unlock()
		if n.exc.closeTunnel != nil {
			errs = append(errs, n.exc.closeTunnel())
		}
		err := n.do(n.request(rtmDelLink, 0, encodeDelLink(n.exc.txIfindex)))
		var ke *KernelError
		if errors.As(kernelError(err), &ke) && (ke.Errno == errnoENOENT || ke.Errno == errnoENODEV) {
			err = nil // someone deleted it already
		}
		if err != nil {
			errs = append(errs, opError("delete the exception channel "+n.exc.txName, 0, err))
		}
	}
	for _, d := range n.devs {
		b, err := encodeQdisc(d.Ifindex, n.block, false)
		if err == nil {
			err = n.do(n.request(rtmDelQdisc, 0, b))
		}
		// A device that is gone took its qdisc with it.
		var ke *KernelError
		if errors.As(kernelError(err), &ke) && (ke.Errno == errnoENOENT || ke.Errno == errnoENODEV) {
			err = nil
		}
		if err != nil {
			errs = append(errs, opError("remove qdisc from "+d.Name, 0, err))
		}
	}
	n.rules = nil
	errs = append(errs, n.closeEndpoints())
	if n.sys != nil {
		errs = append(errs, n.sys.close())
	}
	errs = append(errs, n.conn.Close())
	return errors.Join(errs...)
}

func putU32(b []byte, v uint32) { binary.NativeEndian.PutUint32(b, v) }
