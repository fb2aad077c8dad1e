package xdp

import (
	"errors"
	"fmt"
	"sort"

	"github.com/nicpath/nicpath/hal"
)

// backend is where the table's entries really go: the BPF maps on Linux, a
// map in memory in the unit tests of the bookkeeping.
type backend interface {
	// putEntries writes keys[i]→vals[i] in order and returns how many
	// landed before the first failure. A batch of keys not marked
	// inFlows4 may run on another goroutine while the table calls
	// resetCounter or writes one inFlows4 key with putEntries (never
	// another method).
	putEntries(keys []bpfKey, vals []bpfFlowVal) (int, error)
	deleteEntry(k *bpfKey) error
	// putMasks writes s into bank and then makes bank the one the program
	// reads, in one write.
	putMasks(bank uint32, s *bpfMaskSet) error
	// resetCounter zeroes counter idx before a new rule uses it.
	resetCounter(idx uint32) error
}

// errFull marks a backend failure that means "no room" (E2BIG/ENOSPC from a
// full hash map), translated to hal.ErrTableFull.
var errFull = errors.New("map full")

// ruleState is one installed rule. Its masked key and its encoded slot are
// not kept: both are derived from the rule (matchKeys, encodeRuleCached)
// when an entry is written, which costs less than the 240 bytes a rule
// they took, on a table of a million rules and on a bulk load, where each
// fresh page of memory the table touches costs more than the encoding.
type ruleState struct {
	rule  keptRule
	mask  *maskState
	enc   ruleEnc
	entry *entryState
}

// keptRule is a rule as the table keeps it: a hal.Rule whose match mask is
// a pointer, to its shape's copy (maskState.hmask) when it is that one, as
// it is for every rule of a shape unless two masks encode alike. The rules
// of a bulk load share a handful of shapes: this keeps 96 bytes a rule
// out of the fresh memory a load writes and the cache lines a lookup reads.
type keptRule struct {
	ID         hal.RuleID
	Cookie     hal.Cookie
	Priority   uint16
	Scope      hal.Scope
	Generation hal.Generation
	Key        hal.FlowKey
	Mask       *hal.FlowKey
	Actions    []hal.Action
}

// keep is r as a keptRule, its mask ms's copy when ms (may be nil) has the
// same one, else its own copy (attach points it at its shape's when it
// can), and r's action list, not copied.
func keep(r *hal.Rule, ms *maskState) keptRule {
	var c keptRule
	keepInto(&c, r, ms)
	return c
}

// keepInto is keep written into c, field by field: an add writes the rule
// where the table keeps it, in its fresh ruleState, rather than building
// it and copying it there.
func keepInto(c *keptRule, r *hal.Rule, ms *maskState) {
	c.ID, c.Cookie, c.Priority, c.Scope, c.Generation = r.ID, r.Cookie, r.Priority, r.Scope, r.Generation
	c.Key = r.Match.Key
	if ms != nil && ms.hmask == r.Match.Mask {
		c.Mask = &ms.hmask
	} else {
		m := r.Match.Mask
		c.Mask = &m
	}
	c.Actions = r.Actions
}

// cloneKeep is keep with a copy of r's actions.
func cloneKeep(r *hal.Rule, ms *maskState) keptRule {
	c := keep(r, ms)
	c.Actions = hal.CloneActions(r.Actions)
	return c
}

// match is the rule's match.
func (k *keptRule) match() hal.Match { return hal.Match{Key: k.Key, Mask: *k.Mask} }

// full is the rule as it was given (its action list shared, not copied).
func (k *keptRule) full() hal.Rule {
	return hal.Rule{ID: k.ID, Priority: k.Priority, Match: k.match(), Actions: k.Actions, Cookie: k.Cookie,
		Scope: k.Scope, Generation: k.Generation}
}

// clone is the rule as it was given, with its own copy of the actions.
func (k *keptRule) clone() hal.Rule {
	r := k.full()
	r.Actions = hal.CloneActions(r.Actions)
	return r
}

// ruleEnc is what is kept of a rule's encoding: its action flags (whether
// it counts) and its counter.
type ruleEnc struct {
	Flags   uint16
	Counter uint32
}

// bpfKey is the rule's masked key with its mask ID, as its entry is keyed.
func (rs *ruleState) bpfKey() bpfKey {
	m := rs.rule.match()
	k, _ := matchKeys(&m)
	k.MaskID = rs.mask.id
	return k
}

// mapKey is the key rs's entry is written under: bpfKey, marked inFlows4
// when the entry lives in flows4.
func (rs *ruleState) mapKey() bpfKey {
	k := rs.bpfKey()
	if rs.mask.exact4 {
		markFlows4(&k)
	}
	return k
}

// slot is the rule as its entry holds it.
func (t *table) slot(rs *ruleState) bpfRule {
	r := rs.rule.full()
	b, err := encodeRuleCached(&r, &t.encap)
	if err != nil {
		// The rule was encoded when it was added; this cannot differ.
		panic(fmt.Sprintf("xdp: rule %d no longer encodes: %v", rs.rule.ID, err))
	}
	b.Counter = rs.enc.Counter
	return b
}

type entryState struct {
	slots [slotsPerEntry]*ruleState
	// pending: the entry is in the batch being gathered, so another op
	// on it must flush first (its value depends on the earlier op).
	pending bool
	// the entry index's hash of the key, and the next entry whose key
	// has the same hash.
	hash uint64
	next *entryState
}

// key is the masked key of the entry, from its rules; false once it holds
// none.
func (e *entryState) key() (bpfKey, bool) {
	for _, s := range e.slots {
		if s != nil {
			return s.bpfKey(), true
		}
	}
	return bpfKey{}, false
}

// value is the entry as the map holds it. enc, when not nil, is the slot of
// rs already encoded.
func (t *table) value(e *entryState, rs *ruleState, enc *bpfRule) bpfFlowVal {
	var v bpfFlowVal
	t.valueInto(&v, e, rs, enc)
	return v
}

// valueInto is value written into v, every slot of it: on a bulk load
// the value is 320 bytes, built where it is written from.
func (t *table) valueInto(v *bpfFlowVal, e *entryState, rs *ruleState, enc *bpfRule) {
	for i, s := range e.slots {
		switch {
		case s == nil:
			v.Slot[i] = bpfRule{}
		case s == rs && enc != nil:
			v.Slot[i] = *enc
			v.Slot[i].Counter = rs.enc.Counter
		default:
			v.Slot[i] = t.slot(s)
		}
	}
}

func (e *entryState) empty() bool { return e.slots == [slotsPerEntry]*ruleState{} }

type maskState struct {
	mask bpfKey
	// hmask is the mask as the shape's first rule gave it: the rules
	// with the same one point their keptRule.Mask here.
	hmask   hal.FlowKey
	id      uint8
	refs    int
	maxPrio uint16
	// exact4: the shape pins every field of an untunnelled IPv4 frame;
	// its entries for such frames go to flows4 (markFlows4).
	exact4 bool
}

// table is the driver's view of what is installed: every rule as it was
// given, the hash entries they share, the mask shapes in use and the
// per-rule counters. It keeps the BPF maps in step through a backend and
// is guarded by the NIC's mutex.
type table struct {
	driver      string
	maxEntries  int
	maxScopes   int
	maxCounters int
	hasPort     func(hal.PortID) bool
	be          backend

	rules   ruleIndex
	entries entryIndex
	masks   map[bpfKey]*maskState
	maskIDs [256]bool
	bank    uint32
	dirty   bool // masks changed since the last publish

	counterFree []uint32
	counterNext uint32

	encap encapCache
	// lastMask is the shape of the previous add: a batch of rules of one
	// shape (per-connection flows) finds it without hashing the mask.
	lastMask *maskState
	// The slabs hand out rule states, entries and action lists a chunk at
	// a time: a big batch would otherwise make several allocations per
	// rule. A chunk is freed when none of its pieces is referenced.
	slab      []ruleState
	entrySlab []entryState
	actSlab   []hal.Action
	// lastActs is the action list kept for the previous rule, for the
	// next rule with the same actions to share. lastSrc is the caller's
	// list it was copied from, in this Apply (nil outside one), and
	// lastEnc that list's encoding (its action fields).
	lastActs []hal.Action
	lastSrc  []hal.Action
	lastEnc  bpfRule
	// knownActs: the rule about to be added has an action list equal to
	// lastSrc, as the Apply's check found (batchCheck): add takes
	// lastActs and lastEnc without comparing or encoding the list again.
	// Whatever sets it is the check that runs just before the add.
	knownActs bool
	// warmed counts what warm found, so that its lookups have a use.
	warmed int
	ahead  aheadOps

	// pend is the batch being gathered: entries written in one
	// putEntries call, at most flushChunk of them. While it fills, the
	// previous full batch may be in flight: written by the kernel on
	// another thread. spare is the buffers of the batch before, reused.
	pend     writeBatch
	spare    writeBatch
	inflight *inflightWrite
	chunk    int // flushChunk, smaller in tests
	// staged is the entries whose writes the backend staged (stager4),
	// pending until commit4, at most stageChunk of them.
	staged []*entryState
	// one is the room for an entry written on its own.
	one struct {
		keys [1]bpfKey
		vals [1]bpfFlowVal
	}
}

// writeBatch is entries to write, and the operations and rules they are for.
type writeBatch struct {
	keys  []bpfKey
	vals  []bpfFlowVal
	ops   []int
	rules []*ruleState
}

func (b *writeBatch) reset() {
	b.keys, b.vals, b.ops, b.rules = b.keys[:0], b.vals[:0], b.ops[:0], b.rules[:0]
}

func (b *writeBatch) grow(n int) {
	if cap(b.rules) < n {
		b.keys = make([]bpfKey, 0, n)
		b.vals = make([]bpfFlowVal, 0, n)
		b.ops = make([]int, 0, n)
		b.rules = make([]*ruleState, 0, n)
	}
}

// inflightWrite is a batch being written on another goroutine.
type inflightWrite struct {
	b    writeBatch
	done chan writeResult
}

type writeResult struct {
	n   int
	err error
}

func newTable(driver string, maxEntries, maxScopes, maxCounters int, hasPort func(hal.PortID) bool, be backend) *table {
	return &table{
		driver: driver, maxEntries: maxEntries, maxScopes: maxScopes, maxCounters: maxCounters,
		hasPort: hasPort, be: be,
		rules: newRuleIndex(0), entries: newEntryIndex(0),
		masks: map[bpfKey]*maskState{}, counterNext: 1, chunk: flushChunk,
	}
}

// validate is the driver's own check after hal.CheckRule: what the program
// cannot express, and the capacity that is already taken. knownActions:
// r's action list is equal to one that passed validate before, in the same
// Apply (the ports it checks are the same), so the checks of the list
// alone are left out.
func (t *table) validate(r *hal.Rule, knownActions bool) error {
	if int(r.Scope) >= t.maxScopes {
		return hal.Unsupported(t.driver, "scope", "scope %d is beyond the %d scopes of the generation map", r.Scope, t.maxScopes)
	}
	var push, pop bool
	for i := range r.Actions {
		if knownActions {
			break
		}
		a := &r.Actions[i]
		// built only for a refusal: validate runs once per operation
		field := func() string { return fmt.Sprintf("actions[%d] %s", i, a.Kind) }
		switch a.Kind {
		case hal.ActionEncap:
			e := &a.Encap
			if len(e.GeneveOptions) > 0 {
				return hal.Unsupported(t.driver, field()+" geneve", "Geneve options are not written; the program writes a fixed 8-byte Geneve header")
			}
		case hal.ActionPushVLAN:
			push = true
		case hal.ActionPopVLAN:
			pop = true
		case hal.ActionOutput:
			if t.hasPort != nil && !t.hasPort(a.OutPort) {
				return fmt.Errorf("%s: %s: port %d: %w", t.driver, field(), a.OutPort, hal.ErrNotFound)
			}
		}
	}
	if push && pop {
		return hal.Unsupported(t.driver, "actions", "push_vlan and pop_vlan in one rule: the program applies a fixed order of rewrites")
	}
	if len(t.masks) < maxMasks {
		return nil // a new shape would still fit: no need to know the shape
	}
	_, mask := matchKeys(&r.Match)
	if _, ok := t.masks[mask]; !ok {
		return fmt.Errorf("%s: match shape %s: all %d mask shapes are in use: %w", t.driver, r.Match.String(), maxMasks, hal.ErrTableFull)
	}
	return nil
}

func (t *table) allocMaskID() uint8 {
	for i := 1; i < 256; i++ {
		if !t.maskIDs[i] {
			t.maskIDs[i] = true
			return uint8(i)
		}
	}
	return 0
}

func (t *table) allocCounter() (uint32, error) {
	if n := len(t.counterFree); n > 0 {
		idx := t.counterFree[n-1]
		t.counterFree = t.counterFree[:n-1]
		return idx, t.be.resetCounter(idx)
	}
	if int(t.counterNext) >= t.maxCounters {
		return 0, fmt.Errorf("%s: no per-rule counter left (%d): %w", t.driver, t.maxCounters-1, hal.ErrTableFull)
	}
	t.counterNext++
	return t.counterNext - 1, nil
}

// attach places rs into the Go state: its mask (new or shared), its entry
// and slot, its counter. It returns an error without changing anything when
// there is no room.
func (t *table) attach(rs *ruleState) error {
	m := rs.rule.match()
	key, mask := matchKeys(&m)
	return t.attachKeys(rs, key, mask)
}

func (t *table) attachKeys(rs *ruleState, key, mask bpfKey) error {
	ms := t.findMask(&mask)
	var e *entryState
	if ms != nil {
		k := key
		k.MaskID = ms.id
		e = t.entries.get(&k)
	}
	return t.attachFound(rs, key, mask, ms, e, 0, false)
}

// attachFound is attachKeys once the caller has looked up the mask shape
// (ms, nil when new) and, for a known shape, the entry of key under it (e,
// nil when none). When hashed is set, h is the entry index's hash of key
// under ms (which is then not nil), so that a new entry is indexed without
// hashing its key again.
func (t *table) attachFound(rs *ruleState, key, mask bpfKey, ms *maskState, e *entryState, h uint64, hashed bool) error {
	if ms == nil {
		if len(t.masks) >= maxMasks {
			return fmt.Errorf("%s: all %d mask shapes are in use: %w", t.driver, maxMasks, hal.ErrTableFull)
		}
		ms = &maskState{mask: mask, hmask: *rs.rule.Mask, exact4: exact4Shape(&mask)}
	}
	key.MaskID = ms.id
	if ms.id == 0 {
		e = nil // a new shape has no entries yet
	}
	if ms.id != 0 && e != nil {
		free := -1
		for i, s := range e.slots {
			if s == nil {
				free = i
				break
			}
		}
		if free < 0 {
			m := rs.rule.match()
			return fmt.Errorf("%s: %d rules already share the match %s: %w", t.driver, slotsPerEntry, m.String(), hal.ErrTableFull)
		}
	} else if t.entries.len() >= t.maxEntries {
		return fmt.Errorf("%s: %d flow entries: %w", t.driver, t.maxEntries, hal.ErrTableFull)
	}
	if rs.enc.Flags&actCount != 0 {
		idx, err := t.allocCounter()
		if err != nil {
			return err
		}
		rs.enc.Counter = idx
	}
	if ms.id == 0 {
		ms.id = t.allocMaskID()
		t.masks[mask] = ms
		t.dirty = true
		key.MaskID = ms.id
		e = nil
		hashed = false
	}
	ms.refs++
	if rs.rule.Priority > ms.maxPrio || ms.refs == 1 {
		if rs.rule.Priority > ms.maxPrio {
			ms.maxPrio = rs.rule.Priority
		}
		t.dirty = true
	}
	fresh := e == nil
	if fresh {
		e = t.newEntryState()
	}
	for i, s := range e.slots {
		if s == nil {
			e.slots[i] = rs
			break
		}
	}
	if fresh {
		// after the slot: the index reads the key from it
		if !hashed {
			h = t.entries.hash(&key)
		}
		t.entries.putHashed(h, e)
	}
	rs.mask, rs.entry = ms, e
	if rs.rule.Mask != &ms.hmask && *rs.rule.Mask == ms.hmask {
		rs.rule.Mask = &ms.hmask
	}
	t.rules.put(rs.rule.ID, rs)
	return nil
}

// detach undoes attach in the Go state. It returns whether the entry became
// empty (the hash entry must be deleted rather than rewritten).
func (t *table) detach(rs *ruleState) (empty bool) {
	e := rs.entry
	for i, s := range e.slots {
		if s == rs {
			e.slots[i] = nil
		}
	}
	if e.empty() {
		t.entries.del(e)
		empty = true
	}
	rs.mask.refs--
	if rs.mask.refs == 0 {
		delete(t.masks, rs.mask.mask)
		t.maskIDs[rs.mask.id] = false
		if t.lastMask == rs.mask {
			t.lastMask = nil
		}
		t.dirty = true
	}
	if rs.enc.Flags&actCount != 0 && rs.enc.Counter != 0 {
		t.counterFree = append(t.counterFree, rs.enc.Counter)
	}
	t.rules.del(rs.rule.ID)
	return empty
}

// keepRule copies r into c for the table, its actions taken from the action slab.
// The copy's action list is capped at its length, so nothing appended to it
// could run into the next rule's actions. A list equal to the previous
// rule's is that rule's list: the table never writes into a kept list
// (modify replaces it, Dump copies it), and the rules of a bulk load mostly
// share one (the flows toward one host), so this saves 150 bytes an
// action on each rule of it.
//
// known: r's list is equal to lastSrc (so to lastActs). Otherwise, when
// the list is copied, enc (r's encoding) becomes lastEnc.
func (t *table) keepRule(c *keptRule, r *hal.Rule, ms *maskState, known bool, enc *bpfRule) {
	keepInto(c, r, ms)
	if known {
		c.Actions = t.lastActs
		return
	}
	n := len(r.Actions)
	if n == 0 || n > actSlabChunk/8 {
		c.Actions = hal.CloneActions(r.Actions)
		return
	}
	if sameActions(r.Actions, t.lastActs) {
		c.Actions = t.lastActs
		return
	}
	if len(t.actSlab) < n {
		t.actSlab = make([]hal.Action, actSlabChunk)
	}
	c.Actions = t.actSlab[:n:n]
	t.actSlab = t.actSlab[n:]
	copy(c.Actions, r.Actions)
	shared := true
	for i := range c.Actions {
		if o := c.Actions[i].Encap.GeneveOptions; o != nil {
			c.Actions[i].Encap.GeneveOptions = append([]byte(nil), o...)
			shared = false
		}
	}
	if shared {
		t.lastActs, t.lastSrc, t.lastEnc = c.Actions, r.Actions, *enc
	}
}

// sameActions reports whether a and b are the same actions, neither with
// Geneve options (whose bytes each rule keeps on its own).
func sameActions(a, b []hal.Action) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Kind != y.Kind || len(x.Encap.GeneveOptions) != 0 || len(y.Encap.GeneveOptions) != 0 {
			return false
		}
		xe, ye := &x.Encap, &y.Encap
		if xe.Kind != ye.Kind || xe.VNI != ye.VNI || xe.Src != ye.Src || xe.Dst != ye.Dst || xe.SrcMAC != ye.SrcMAC ||
			xe.DstMAC != ye.DstMAC || xe.TTL != ye.TTL || xe.DstPort != ye.DstPort || xe.FlowID != ye.FlowID {
			return false
		}
		if x.MAC != y.MAC || x.Addr != y.Addr || x.L4Port != y.L4Port || x.VLAN != y.VLAN ||
			x.OutPort != y.OutPort || x.Reason != y.Reason {
			return false
		}
	}
	return true
}

// Slab chunk sizes: big enough that a batch of 100k rules makes about a
// hundred allocations instead of several hundred thousand, small enough
// (a few hundred KiB) that a table of a few rules does not hold megabytes.
const (
	// flushChunk bounds the entries gathered for one batch update: 8192
	// entries are 3 MiB of keys and values, reused from one chunk to the
	// next, where a buffer for a whole batch of 128k rules is 50 MiB to
	// allocate, clear and fault in. Smaller chunks cost the kernel more per
	// entry (1024: about 20% more CPU in its batch update, measured with
	// BenchmarkRuleOps), larger ones saved nothing more.
	flushChunk = 8192

	// stageChunk bounds the exact IPv4 entries staged before they are
	// written (stager4): the more there are, the closer together their
	// slots lie when written in slot order.
	stageChunk = 1 << 15

	ruleSlabChunk  = 1024
	entrySlabChunk = 1024
	actSlabChunk   = 2048
)

func (t *table) newEntryState() *entryState {
	if len(t.entrySlab) == 0 {
		t.entrySlab = make([]entryState, entrySlabChunk)
		prefault(t.entrySlab)
	}
	e := &t.entrySlab[0]
	t.entrySlab = t.entrySlab[1:]
	return e
}

// findMask returns the state of mask shape mask, or nil.
func (t *table) findMask(mask *bpfKey) *maskState {
	if m := t.lastMask; m != nil && m.refs > 0 && m.mask == *mask {
		return m
	}
	m := t.masks[*mask]
	if m != nil {
		t.lastMask = m
	}
	return m
}

func (t *table) opErr(op string, id hal.RuleID, err error) error {
	if errors.Is(err, errFull) {
		return fmt.Errorf("%s: %s rule %d: %w", t.driver, op, id, hal.ErrTableFull)
	}
	return &hal.OpError{Driver: t.driver, Op: op, Rule: id, Err: err}
}

// flush writes the gathered entries, after the batch in flight. Operations
// whose write did not land are undone in the Go state and get their error.
// Whatever flush returns to, every gathered write has been made.
func (t *table) flush(results []hal.OpResult) {
	t.commit4()
	t.wait(results)
	if len(t.pend.rules) == 0 {
		return
	}
	n, err := t.be.putEntries(t.pend.keys, t.pend.vals)
	t.settle(&t.pend, n, err, results)
	t.pend.reset()
}

// flushAsync hands the gathered entries, a full batch, to another goroutine
// to write while the next batch is gathered: the kernel copies one batch in
// while Go encodes the next, on a second CPU when there is one. Batches
// still land in order (the one in flight is waited for first), an entry in
// flight stays pending (an operation on it flushes, which waits), and the
// results of a batch are settled by the next flush, before Apply returns.
func (t *table) flushAsync(results []hal.OpResult) {
	t.wait(results)
	if len(t.pend.rules) == 0 {
		return
	}
	w := &inflightWrite{b: t.pend, done: make(chan writeResult, 1)}
	be := t.be
	go func() {
		n, err := be.putEntries(w.b.keys, w.b.vals)
		w.done <- writeResult{n, err}
	}()
	t.inflight = w
	t.pend = t.spare
	t.pend.grow(t.chunk)
	t.pend.reset()
}

// wait settles the batch in flight, if any.
func (t *table) wait(results []hal.OpResult) {
	w := t.inflight
	if w == nil {
		return
	}
	r := <-w.done
	t.inflight = nil
	t.settle(&w.b, r.n, r.err, results)
	w.b.reset()
	t.spare = w.b
}

// settle takes the outcome of writing b: the first n entries landed, and err
// is why the next did not.
func (t *table) settle(b *writeBatch, n int, err error, results []hal.OpResult) {
	if err != nil {
		// Entries after the failed one may still fit (a full table
		// refuses new keys, not rewrites): retry them one by one so
		// that every result is exact.
		for i := n; i < len(b.keys); i++ {
			var werr error
			if i == n {
				werr = err
			} else if _, werr = t.be.putEntries(b.keys[i:i+1], b.vals[i:i+1]); werr == nil {
				continue
			}
			rs := b.rules[i]
			t.detach(rs)
			results[b.ops[i]].Err = t.opErr("add", rs.rule.ID, werr)
		}
	}
	for _, rs := range b.rules {
		if rs.entry != nil {
			rs.entry.pending = false
		}
	}
}

// publish writes the mask shapes, in search order, to the idle bank and
// flips to it.
func (t *table) publish() error {
	if !t.dirty {
		return nil
	}
	list := make([]*maskState, 0, len(t.masks))
	for _, m := range t.masks {
		list = append(list, m)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].maxPrio != list[j].maxPrio {
			return list[i].maxPrio > list[j].maxPrio
		}
		return list[i].id < list[j].id
	})
	var s bpfMaskSet
	s.N = uint32(len(list))
	for i, m := range list {
		s.M[i] = bpfMaskEntry{Mask: m.mask, MaxPrio: uint32(m.maxPrio), ID: m.id}
		if m.exact4 {
			s.M[i].Exact4 = 1
		} else if uint32(m.maxPrio)+1 > s.OtherMax {
			s.OtherMax = uint32(m.maxPrio) + 1
		}
	}
	bank := t.bank ^ 1
	if err := t.be.putMasks(bank, &s); err != nil {
		return &hal.OpError{Driver: t.driver, Op: "publish masks", Err: err}
	}
	t.bank = bank
	t.dirty = false
	return nil
}

// apply runs a batch; see hal.RuleTable.Apply.
func (t *table) apply(ops []hal.Op, results []hal.OpResult, check func(*hal.Rule) error) {
	for i := range ops {
		results[i].Err = nil
	}
	// lastSrc is the caller's, which may change once Apply returns
	t.lastSrc, t.knownActs = nil, false
	defer func() { t.lastSrc, t.knownActs = nil, false }()
	t.ahead.n = 0 // warm's work was for another batch
	if t.rules.len() == 0 && len(ops) > 64 {
		// An empty table about to take a big batch (a reload, a
		// restart): size the maps once instead of growing them step by
		// step through the batch.
		t.rules = newRuleIndex(len(ops))
		t.entries = newEntryIndex(len(ops))
		if _, ok := t.be.(stager4); ok && cap(t.staged) < min(len(ops), stageChunk) {
			t.staged = make([]*entryState, 0, min(len(ops), stageChunk))
			prefault(t.staged[:cap(t.staged)])
		}
	}
	t.pend.grow(min(len(ops), t.chunk))
	for i := range ops {
		if i%warmAhead == 0 {
			t.warm(i, ops[i:min(i+warmAhead, len(ops))])
		}
		op := &ops[i]
		switch op.Kind {
		case hal.OpAdd:
			if _, ok := t.lookup(op.Rule.ID, results); ok {
				results[i].Err = fmt.Errorf("%s: add rule %d: %w", t.driver, op.Rule.ID, hal.ErrExists)
				continue
			}
			if err := check(&op.Rule); err != nil {
				results[i].Err = err
				continue
			}
			t.add(i, &op.Rule, results)
		case hal.OpModify:
			old, ok := t.lookup(op.Rule.ID, results)
			if !ok {
				results[i].Err = fmt.Errorf("%s: modify rule %d: %w", t.driver, op.Rule.ID, hal.ErrNotFound)
				continue
			}
			if err := check(&op.Rule); err != nil {
				results[i].Err = err
				continue
			}
			t.modify(i, old, &op.Rule, results)
		case hal.OpDelete:
			rs, ok := t.lookup(op.Rule.ID, results)
			if !ok {
				results[i].Err = fmt.Errorf("%s: delete rule %d: %w", t.driver, op.Rule.ID, hal.ErrNotFound)
				continue
			}
			t.flush(results)
			if err := t.publish(); err != nil {
				results[i].Err = err
				continue
			}
			results[i].Err = t.remove(rs)
		default:
			results[i].Err = &hal.RuleError{Field: "op", Reason: fmt.Sprintf("unknown operation %d", op.Kind)}
		}
	}
	t.flush(results)
	if err := t.publish(); err != nil {
		// The entries are written but their new mask shapes are not
		// searched: report it on every add that is still marked landed.
		for i := range ops {
			if ops[i].Kind != hal.OpDelete && results[i].Err == nil {
				results[i].Err = err
			}
		}
	}
}

// lookup finds rule id for an operation. A rule added earlier in the batch
// whose write is still gathered may yet fail to land and be undone: the
// write is made first, so that the operation sees whether it did (an add
// of the same ID is then tried again rather than refused as existing, and
// a modify or delete does not act on a rule that is gone).
func (t *table) lookup(id hal.RuleID, results []hal.OpResult) (*ruleState, bool) {
	rs := t.rules.get(id)
	if rs != nil && rs.entry != nil && rs.entry.pending {
		t.flush(results)
		rs = t.rules.get(id)
	}
	return rs, rs != nil
}

// warmAhead is how many operations warm looks up at a time: enough
// independent probes for the CPU to overlap their cache misses, few enough
// that what they bring in is still cached when the operations run.
const warmAhead = 16

// warm looks up, ahead of running them, what the next operations will look
// up: their rule IDs and, for adds of the shape the previous add had, their
// entries and the places table4 will put them (warmer4). Each of these is
// a cold cache miss on a big table (a few hundred ns each in a VM, where
// the page walk misses too); probes made back to back in a loop overlap,
// where one per operation between the rest of its work do not, so the
// keys and hashes are computed first and the probes made after, all
// together. The answers are not used, only the cache lines: an operation
// can still change what a later one finds. What does not change is kept
// for add (ahead): an add's masked key, and its entry's hash under a mask
// ID.
func (t *table) warm(first int, ops []hal.Op) {
	found := 0
	for i := range ops {
		if t.rules.get(ops[i].Rule.ID) != nil {
			found++
		}
	}
	a := &t.ahead
	a.first, a.n = first, len(ops)
	m := t.lastMask
	if m != nil && m.refs == 0 {
		m = nil
	}
	w4, _ := t.be.(warmer4)
	n4 := 0
	for i := range ops {
		a.ok[i], a.hashed[i] = false, false
		if ops[i].Kind != hal.OpAdd {
			continue
		}
		a.key[i], a.mask[i] = matchKeys(&ops[i].Rule.Match)
		a.ok[i] = true
		if m == nil || a.mask[i] != m.mask {
			continue
		}
		k := a.key[i]
		k.MaskID = m.id
		a.h[i], a.maskID[i], a.hashed[i] = t.entries.hash(&k), m.id, true
		a.shape[i] = m
		if m.exact4 && w4 != nil {
			// The window its entry will be written to: a cold
			// line of a table of the rules' size.
			markFlows4(&k)
			if k.Pad == inFlows4 {
				a.keys4[n4] = k
				n4++
			}
		}
	}
	for i := range ops {
		if a.hashed[i] && t.entries.probe(a.h[i]) {
			found++
		}
	}
	if n4 > 0 {
		found += w4.warm4(a.keys4[:n4])
	}
	t.warmed += found
}

// aheadOps is what warm computed for the operations it warmed, from
// first on.
type aheadOps struct {
	first, n int
	ok       [warmAhead]bool // key and mask are the add's
	key      [warmAhead]bpfKey
	mask     [warmAhead]bpfKey
	hashed   [warmAhead]bool // h is the hash of key under maskID, shape is mask's maskState
	shape    [warmAhead]*maskState
	maskID   [warmAhead]uint8
	h        [warmAhead]uint64
	keys4    [warmAhead]bpfKey // warm4's argument
}

// keys is matchKeys of op i's match, as warm computed it when it did.
func (t *table) keys(i int, r *hal.Rule) (key, mask bpfKey) {
	if j := i - t.ahead.first; j >= 0 && j < t.ahead.n && t.ahead.ok[j] {
		return t.ahead.key[j], t.ahead.mask[j]
	}
	return matchKeys(&r.Match)
}

// shape is the state of mask shape mask, as findMask: the one warm found
// for op i, which is mask's, when it is still in use (a shape with no
// rules left is dropped, and a new one would be another maskState), and
// else findMask's answer.
func (t *table) shape(i int, mask *bpfKey) *maskState {
	if j := i - t.ahead.first; j >= 0 && j < t.ahead.n && t.ahead.hashed[j] {
		if m := t.ahead.shape[j]; m.refs > 0 {
			t.lastMask = m
			return m
		}
	}
	return t.findMask(mask)
}

// entryHash is the entry index's hash of op i's key k (its mask ID set),
// as warm computed it when it did.
func (t *table) entryHash(i int, k *bpfKey) uint64 {
	if j := i - t.ahead.first; j >= 0 && j < t.ahead.n && t.ahead.hashed[j] && t.ahead.maskID[j] == k.MaskID {
		return t.ahead.h[j]
	}
	return t.entries.hash(k)
}

// warmer4 is a backend that can warm the places exact IPv4 entries will
// be written to (table4's windows of their keys).
type warmer4 interface {
	// warm4 reads what writing the entries of keys (marked inFlows4)
	// will read first, and returns something of it for warm to count.
	warm4(keys []bpfKey) int
}

// stager4 is a backend that can stage exact IPv4 entries: reserve their
// place now, when the table decides they land, and write them later, all
// together, in the order that suits the backend (table4's slot order).
type stager4 interface {
	// stage4 stages k→v, or writes it now (false) when it cannot be
	// staged; an error means it did not land. k and v are copied.
	stage4(k *bpfKey, v *bpfFlowVal) (bool, error)
	// commit4 writes what was staged.
	commit4()
}

// commit4 writes the staged entries, which can no longer fail, and
// clears their pending marks.
func (t *table) commit4() {
	if len(t.staged) == 0 {
		return
	}
	t.be.(stager4).commit4()
	for _, e := range t.staged {
		e.pending = false
	}
	clear(t.staged)
	t.staged = t.staged[:0]
}

func (t *table) add(i int, r *hal.Rule, results []hal.OpResult) {
	// The entry's key and value are gathered now, while the rule is at
	// hand: nothing changes the entry before the flush (an operation on
	// a pending entry flushes first).
	known := t.knownActs
	t.knownActs = false
	var enc bpfRule
	if known {
		// The same actions encode the same; the rest is the rule's
		// (encodeRuleCached's first line).
		enc = t.lastEnc
		enc.ID, enc.Scope, enc.Gen, enc.Prio = uint64(r.ID), uint32(r.Scope), uint32(r.Generation), r.Priority
	} else {
		var err error
		if enc, err = encodeRuleCached(r, &t.encap); err != nil {
			results[i].Err = hal.Unsupported(t.driver, "actions encap", "%v", err)
			return
		}
	}
	key, mask := t.keys(i, r)
	ms := t.shape(i, &mask)
	var e *entryState
	var h uint64
	if ms != nil {
		k := key
		k.MaskID = ms.id
		h = t.entryHash(i, &k)
		if e = t.entries.getHashed(&k, h); e != nil && e.pending {
			t.flush(results)
			// The flush may have undone rules (a write that did not
			// land): look the shape and the entry up again.
			if ms = t.findMask(&mask); ms != nil {
				k.MaskID = ms.id
				h = t.entries.hash(&k)
				e = t.entries.getHashed(&k, h)
			} else {
				e = nil
			}
		}
	}
	rs := t.newRuleState()
	t.keepRule(&rs.rule, r, ms, known, &enc)
	rs.enc = ruleEnc{Flags: enc.Flags}
	if err := t.attachFound(rs, key, mask, ms, e, h, ms != nil); err != nil {
		*rs = ruleState{} // drop its references; the slot is not reused
		results[i].Err = err
		return
	}
	key.MaskID = rs.mask.id
	if rs.mask.exact4 {
		markFlows4(&key)
	}
	if key.Pad == inFlows4 {
		// An exact IPv4 entry is a few stores into table4, no system
		// call: written now rather than gathered (entries of other
		// maps in flight are independent of it, and none is this one:
		// a pending entry was flushed above).
		t.one.keys[0] = key
		t.valueInto(&t.one.vals[0], rs.entry, rs, &enc)
		if st, ok := t.be.(stager4); ok {
			staged, err := st.stage4(&t.one.keys[0], &t.one.vals[0])
			if err != nil {
				t.detach(rs)
				results[i].Err = t.opErr("add", rs.rule.ID, err)
				return
			}
			if staged {
				rs.entry.pending = true
				t.staged = append(t.staged, rs.entry)
				if len(t.staged) >= stageChunk {
					t.commit4()
				}
			}
			return
		}
		if _, err := t.be.putEntries(t.one.keys[:], t.one.vals[:]); err != nil {
			t.detach(rs)
			results[i].Err = t.opErr("add", rs.rule.ID, err)
		}
		return
	}
	rs.entry.pending = true
	p := &t.pend
	p.keys = append(p.keys, key)
	p.vals = append(p.vals, bpfFlowVal{})
	t.valueInto(&p.vals[len(p.vals)-1], rs.entry, rs, &enc)
	p.ops = append(p.ops, i)
	p.rules = append(p.rules, rs)
	if len(p.rules) >= t.chunk {
		t.flushAsync(results)
	}
}

func (t *table) newRuleState() *ruleState {
	if len(t.slab) == 0 {
		t.slab = make([]ruleState, ruleSlabChunk)
		prefault(t.slab)
	}
	rs := &t.slab[0]
	t.slab = t.slab[1:]
	return rs
}

// modify replaces a rule in one step: when its match is unchanged the entry
// is rewritten in place (one atomic hash update); otherwise the new entry is
// written before the old one goes, so a packet sees the old rule or the new
// one and never a miss in between.
func (t *table) modify(i int, old *ruleState, r *hal.Rule, results []hal.OpResult) {
	t.flush(results)
	enc, err := encodeRule(r)
	if err != nil {
		results[i].Err = hal.Unsupported(t.driver, "actions encap", "%v", err)
		return
	}
	key, mask := matchKeys(&r.Match)
	if ms := t.masks[mask]; ms != nil && ms == old.mask {
		key.MaskID = ms.id
		if key == old.bpfKey() {
			if enc.Flags&actCount != 0 {
				if old.enc.Flags&actCount != 0 {
					enc.Counter = old.enc.Counter
				} else if enc.Counter, err = t.allocCounter(); err != nil {
					results[i].Err = err
					return
				}
			}
			prev := *old
			old.rule, old.enc = cloneKeep(r, old.mask), ruleEnc{Flags: enc.Flags, Counter: enc.Counter}
			if r.Priority > old.mask.maxPrio {
				old.mask.maxPrio = r.Priority
				t.dirty = true
			}
			v := t.value(old.entry, old, &enc)
			if _, err := t.be.putEntries([]bpfKey{old.mapKey()}, []bpfFlowVal{v}); err != nil {
				if enc.Flags&actCount != 0 && prev.enc.Flags&actCount == 0 {
					t.counterFree = append(t.counterFree, enc.Counter)
				}
				old.rule, old.enc = prev.rule, prev.enc
				results[i].Err = t.opErr("modify", r.ID, err)
				return
			}
			if prev.enc.Flags&actCount != 0 && enc.Flags&actCount == 0 {
				t.counterFree = append(t.counterFree, prev.enc.Counter)
			}
			if err := t.publish(); err != nil {
				results[i].Err = err
			}
			return
		}
	}
	// A different match: add the new rule under a temporary identity, then
	// remove the old one.
	t.rules.del(old.rule.ID)
	rs := &ruleState{rule: cloneKeep(r, t.masks[mask]), enc: ruleEnc{Flags: enc.Flags}}
	if err := t.attach(rs); err != nil {
		t.rules.put(old.rule.ID, old)
		results[i].Err = err
		return
	}
	if _, err := t.be.putEntries([]bpfKey{rs.mapKey()}, []bpfFlowVal{t.value(rs.entry, nil, nil)}); err != nil {
		t.detach(rs)
		t.rules.put(old.rule.ID, old)
		results[i].Err = t.opErr("modify", r.ID, err)
		return
	}
	if err := t.publish(); err != nil {
		results[i].Err = err
		return
	}
	t.rules.put(old.rule.ID, old)
	if err := t.remove(old); err != nil {
		results[i].Err = err
		return
	}
	t.rules.put(rs.rule.ID, rs)
}

// remove deletes rs from the maps: its entry is rewritten without it, or
// deleted when it was alone; a mask shape left without rules is unpublished
// after its last entry is gone.
func (t *table) remove(rs *ruleState) error {
	e := rs.entry
	key := rs.mapKey()
	if t.detach(rs) {
		if err := t.be.deleteEntry(&key); err != nil {
			t.attach(rs)
			return t.opErr("delete", rs.rule.ID, err)
		}
	} else if _, err := t.be.putEntries([]bpfKey{key}, []bpfFlowVal{t.value(e, nil, nil)}); err != nil {
		t.attach(rs)
		return t.opErr("delete", rs.rule.ID, err)
	}
	return t.publish()
}
