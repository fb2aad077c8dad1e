package softnic

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/hugemem"
	"github.com/nicpath/nicpath/internal/prefetch"
)

// writerState is the control plane's bookkeeping; only writers (under
// NIC.wmu) touch it. The datapath reads the views built from it.
type writerState struct {
	n      *NIC
	byID   idIndex // rule → entry index
	tuples map[tupleKey]*tuple
	live   int

	chunks []*chunk
	ents   []entRef // chunks[i].ref()
	// Huge-page slabs that chunks beyond the first heapChunks are carved
	// from (hugemem.go): their owners, and the rest of the last one.
	slabs    []*hugemem.Mem
	slabNext unsafe.Pointer
	slabFree int
	// tupleByID finds a tuple from the 16-bit ID its entries carry.
	tupleByID    []*tuple
	freeTupleIDs []uint16
	// Entry indices free for reuse, and the chunk being filled, by size
	// (0 small, 1 large): cur is its index, fill how many of its entries
	// were handed out (0: none being filled).
	free [numClasses][]uint32
	cur  [numClasses]uint32
	fill [numClasses]uint32

	progs      []*program
	progByHash map[uint64][]*program
	freeProgs  []uint32

	scopes map[hal.Scope]uint32 // scope → index in the generation arrays
	// scopeDense is scopes for scopes below scopeDenseLimit (index+1, 0
	// for none): controllers number their scopes densely (the vswitch's
	// are VM ids), and a slice spares a map lookup per rule.
	scopeDense []uint32
	scopeOf    []hal.Scope      // index → scope
	scopeGen   []hal.Generation // index → active generation

	// lastTuple and lastProg shortcut the map lookups for runs of rules
	// with one mask or one action list, the usual shape of a batch.
	lastTuple *tuple
	// lastSeq is checker.MaskSeq() when lastTuple was found: while it
	// stays the same, a rule checker passed has lastTuple's mask.
	lastSeq  uint64
	lastProg *program
	checker  *hal.Checker // validate's checker, with its memory of the last mask
	// emptied says that a tuple of the batch may be left without rules
	// (one lost its last, or one was made): only then does settle look
	// for empty tuples, a walk of every tuple.
	emptied bool
	// progCache maps a cheap fingerprint of an action list (see
	// quickActionsHash) to the programs last seen with it, most recent
	// first: it spares the full hash and map lookup when rules alternate
	// between a few thousand action lists (one per remote host). Each
	// way holds its program's fingerprint, so that a way that is not the
	// one costs no read of the program (a cache miss once a batch's
	// table writes have evicted it).
	progCache [progCacheSize][2]progWay
	// pre is the prefetch pipeline's ring of prepared operations
	// (prepare); batch numbers the batches (program.is).
	pre   [preRing]preOp
	batch uint64

	// scratch of one batch, kept to avoid reallocating
	muts []mutation
	// sorting says that the batch's mutations are put in signature
	// order (addMut); hist counts them by the sort's digits, addTuples
	// holds the tuples they add to, mutsTmp is the sort's second buffer.
	sorting   bool
	hist      [2][256]uint32
	addTuples []*tuple
	mutsTmp   []mutation
	// rebuilds counts the hash tables rebuilt (grow), for the tests.
	rebuilds int
	// undo is how to undo the batch's operations, recorded for an
	// ApplyAtomic batch (atomic) alone: only its failure rolls back
	// (rollback). For a large batch of Apply, the records were some
	// 1.5 MB of stores that nothing read.
	undo   []undoRec
	atomic bool
	// retired is the entries that leave the table in this batch and
	// their programs: settle frees both without reading the entries again
	// (cache misses, a large batch after).
	retired  [][2]uint32
	carry    [][2]uint32 // modify: counters move from [0] to [1]
	newProgs []*program
	// batchTuples is the tuples whose tables the batch being published
	// changes, each once (tuple.inBatch): the passes after the first go
	// over them, not over every mutation.
	batchTuples []*tuple
	pf          [MaxBurst]uintptr // addresses to prefetch
}

type undoRec struct {
	kind     hal.OpKind
	id       hal.RuleID
	old, new uint32
}

func (w *writerState) init(n *NIC) {
	*w = writerState{
		n:          n,
		checker:    hal.NewChecker(&n.caps),
		tuples:     map[tupleKey]*tuple{},
		progByHash: map[uint64][]*program{},
		scopes:     map[hal.Scope]uint32{0: 0},
		// Scope 0, every rule's unless its controller scopes it, has
		// index 0 from the start: its rules take scopeIndex's slice
		// lookup, not the map lookup (1% of a bulk load in profiles).
		scopeDense: []uint32{1},
		scopeOf:    []hal.Scope{0},
		scopeGen:   []hal.Generation{0},
	}
}

// reset forgets every rule (Close).
func (w *writerState) reset() { w.init(w.n) }

func (w *writerState) entry(idx uint32) *entry {
	return entryAt(w.ents, idx)
}

// counter returns the counter of entry idx, nil when its chunk has none
// (no rule of it ever counted: the count is zero).
func (w *writerState) counter(idx uint32) *counter {
	c := w.chunks[idx>>chunkShift].c
	if c == nil {
		return nil
	}
	return &c[idx&(chunkSize-1)]
}

func (w *writerState) allocEntry(class int) uint32 {
	if k := len(w.free[class]); k > 0 {
		idx := w.free[class][k-1]
		w.free[class] = w.free[class][:k-1]
		return idx
	}
	if w.fill[class] == 0 {
		w.cur[class] = uint32(len(w.chunks))
		c := w.newChunk(uint8(class))
		w.chunks = append(w.chunks, c)
		w.ents = append(w.ents, c.ref())
	}
	idx := w.cur[class]<<chunkShift | w.fill[class]
	w.fill[class] = (w.fill[class] + 1) & (chunkSize - 1)
	return idx
}

// freeEntry makes entry idx available again.
func (w *writerState) freeEntry(idx uint32) {
	class := w.chunks[idx>>chunkShift].class
	w.free[class] = append(w.free[class], idx)
}

// Validate says whether the NIC can take r: hal.CheckRule against the
// capabilities, then softnic's own limits (output ports that exist, at most
// two pushed VLAN tags, tunnel matches only on kinds it decapsulates).
func (n *NIC) Validate(r *hal.Rule) error {
	if n.closed.Load() {
		return hal.ErrClosed
	}
	return n.validate(r, nil)
}

// validate checks r with hal.CheckRule, or with c (nil, or the writer's,
// under wmu), which remembers the previous rule's mask, then with
// softnic's own limits (checkMatch, checkActions).
func (n *NIC) validate(r *hal.Rule, c *hal.Checker) error {
	if err := n.checkMatch(r, c); err != nil {
		return err
	}
	return n.checkActions(r.Actions)
}

// checkMatch is validate but for checkActions, which Apply leaves to the
// rules whose action list compiles a new program (writerState.intern):
// its answer depends on nothing but the list and the ports, which do not
// change, so a list that is a program's already passed it.
func (n *NIC) checkMatch(r *hal.Rule, c *hal.Checker) error {
	return n.checkRule(r, c, false)
}

// checkRule is checkMatch, with c.CheckKnownActions for a rule whose
// action list is known to have passed hal's checks (known: see
// writerState.knownActions).
func (n *NIC) checkRule(r *hal.Rule, c *hal.Checker, known bool) error {
	var err error
	switch {
	case known:
		err = c.CheckKnownActions(r)
	case c != nil:
		err = c.Check(r)
	default:
		err = hal.CheckRule(&n.caps, r)
	}
	if err != nil {
		return err
	}
	if r.Match.Mask.TunKind != 0 && r.Match.Key.TunKind != hal.EncapNone && !n.caps.Decaps.Has(r.Match.Key.TunKind) {
		return hal.Unsupported(DriverName, "match.tun_kind "+r.Match.Key.TunKind.String(),
			"the NIC does not parse %s tunnels", r.Match.Key.TunKind)
	}
	return nil
}

// checkActions checks softnic's limits on an action list: output ports
// that exist, at most two pushed VLAN tags.
func (n *NIC) checkActions(acts []hal.Action) error {
	pushes := 0
	for i := range acts {
		a := &acts[i]
		switch a.Kind {
		case hal.ActionOutput:
			if n.port(a.OutPort) == nil {
				return fmt.Errorf("%s: actions[%d] output: port %d: %w", DriverName, i, a.OutPort, hal.ErrNotFound)
			}
		case hal.ActionPushVLAN:
			if pushes++; pushes > 2 {
				return hal.Unsupported(DriverName, fmt.Sprintf("actions[%d] push_vlan", i), "softnic pushes at most two tags")
			}
		}
	}
	return nil
}

// Apply runs a batch. Operations are independent: each gets its own result
// and a failing one does not stop the others. Whatever landed becomes
// visible to packets in one step when Apply returns. An operation sees the
// effect of the ones before it (add then delete of one ID in a batch works).
func (n *NIC) Apply(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	return n.apply(ctx, ops, results, false)
}

// ApplyAtomic runs a batch all or nothing: when any operation fails, the
// table is left as it was, the failing operations carry their own error and
// the others hal.ErrNotApplied. Packets see the table before or after the
// whole batch.
func (n *NIC) ApplyAtomic(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	return n.apply(ctx, ops, results, true)
}

func (n *NIC) apply(ctx context.Context, ops []hal.Op, results []hal.OpResult, atomicBatch bool) error {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	if err := hal.CheckApply(ctx, &n.caps, n.closed.Load(), ops, results); err != nil {
		return err
	}
	results = results[:len(ops)]
	w := &n.w
	w.muts, w.undo, w.retired, w.carry, w.newProgs = w.muts[:0], w.undo[:0], w.retired[:0], w.carry[:0], w.newProgs[:0]
	failed := false
	w.atomic = atomicBatch
	w.batch++
	w.sorting = len(ops) >= sortMin
	// The prefetch pipeline (prepare): stage s of group g runs while
	// group g-3+s is done, and the first line of each operation of group
	// g is loaded while group g-3 is (prefetchOps).
	w.prepare(ops, 0, preGroup, 0)
	w.prepare(ops, preGroup, 2*preGroup, 0)
	w.prepare(ops, 0, preGroup, 1)
	for i := range ops {
		if i%preGroup == 0 {
			w.prefetchOps(ops, i+3*preGroup, i+4*preGroup)
			w.prepare(ops, i+2*preGroup, i+3*preGroup, 0)
			w.prepare(ops, i+preGroup, i+2*preGroup, 1)
			w.prepare(ops, i, i+preGroup, 2)
		}
		results[i].Err = w.do(&ops[i], &w.pre[i%preRing])
		failed = failed || results[i].Err != nil
	}
	if atomicBatch && failed {
		w.rollback()
		for i := range results {
			if results[i].Err == nil {
				results[i].Err = hal.ErrNotApplied
			}
		}
		return hal.Summarize(results)
	}
	if len(w.muts) > 0 {
		if w.sorting {
			w.sortMutations()
		}
		replica := false
		w.publish(func(v *view, side int) {
			w.applyMutations(v, side, w.muts, replica)
			replica = true
		})
	}
	w.settle()
	return hal.Summarize(results)
}

// publish makes a change visible: both views, the inactive one first
// (applyMutations).
func (w *writerState) publish(fn func(v *view, side int)) {
	w.n.rcu.update(fn)
}

// do plans one operation on the writer state, recording the table
// mutations and how to undo it.
func (w *writerState) do(op *hal.Op, pre *preOp) error {
	r := &op.Rule
	switch op.Kind {
	case hal.OpAdd, hal.OpModify:
		// The action list's own checks come with interning it (intern);
		// hal's, once per batch for a list that rules share.
		traits := hal.TraitsOf(&r.Match)
		if err := w.n.checkRule(r, w.checker, w.knownActions(r.Actions, pre, traits)); err != nil {
			return err
		}
		old, exists := w.byID.get(r.ID)
		if op.Kind == hal.OpAdd && exists {
			return fmt.Errorf("%s: add rule %d: %w", DriverName, r.ID, hal.ErrExists)
		}
		if op.Kind == hal.OpModify && !exists {
			return fmt.Errorf("%s: modify rule %d: %w", DriverName, r.ID, hal.ErrNotFound)
		}
		if op.Kind == hal.OpAdd && w.live >= w.n.maxRules {
			return fmt.Errorf("%s: add rule %d: %d rules installed: %w", DriverName, r.ID, w.live, hal.ErrTableFull)
		}
		scope, err := w.scopeIndex(r.Scope)
		if err != nil {
			return err
		}
		// Runs of rules share a mask: the previous rule's tuple is this
		// one's when the masks are equal (the checker, which compared them
		// already, says so) and the key leaves it as IPv4-only as it was,
		// which spares converting and comparing tuple keys.
		var kw words
		loadWords(&r.Match.Key, &kw)
		t := w.lastTuple
		if t == nil || w.checker.MaskSeq() != w.lastSeq || t.key.v4 != pinsIPv4(&t.key.mask, &kw, r.Match.Key.EthType) {
			var tk tupleKey
			ruleKey(&r.Match, &tk, &kw)
			if t = w.tuples[tk]; t == nil {
				id, ok := w.tupleID()
				if !ok {
					return hal.Unsupported(DriverName, "match", "more than %d distinct masks", maxTuples)
				}
				t = &tuple{key: tk, shape: newShape(&tk), prios: map[uint16]int{}, id: id}
				w.tuples[tk] = t
				w.emptied = true // if the op fails below
				w.tupleByID[id] = t
			}
			w.lastTuple, w.lastSeq = t, w.checker.MaskSeq()
		}
		// A tuple made here and left empty by a failure below is dropped
		// when the batch settles.
		prog, arg, err := w.intern(r.Actions, pre)
		if err != nil {
			return err
		}
		// The rule passed hal's checks: its list is prog's src now.
		prog.srcTraits = traits
		idx := w.allocEntry(sizeClass(t.shape.n))
		c := w.chunks[idx>>chunkShift]
		e := c.at(idx)
		// Field by field: a small entry has no more than its 64 bytes.
		e.prog, e.scope, e.gen, e.prio, e.tup, e.arg = prog.idx, uint16(scope), uint32(r.Generation), r.Priority, t.id, arg
		h := e.setPacked(&t.shape, &kw)
		c.setID(idx, r.ID)
		c.setCookie(idx, r.Cookie)
		if c.c == nil && (prog.count || op.Kind == hal.OpModify) {
			// No reader reads c of a chunk without a rule that counts.
			c.c = new([chunkSize]counter)
		}
		if c.c != nil {
			// No reader can hold idx (a freed entry is reused only after
			// no reader sees it, see htab.finalize): plain stores
			// suffice, where two atomic ones would each cost a locked
			// instruction.
			c.c[idx&(chunkSize-1)] = counter{}
		}
		t.addPrio(r.Priority)
		w.addMut(t, sigOf(h), idx, true)
		w.byID.set(r.ID, idx)
		if op.Kind == hal.OpModify {
			w.removeEntry(old)
			w.carry = append(w.carry, [2]uint32{old, idx})
			if w.atomic {
				w.undo = append(w.undo, undoRec{kind: hal.OpModify, id: r.ID, old: old, new: idx})
			}
		} else {
			w.live++
			if w.atomic {
				w.undo = append(w.undo, undoRec{kind: hal.OpAdd, id: r.ID, new: idx})
			}
		}
		return nil
	case hal.OpDelete:
		old, ok := w.byID.get(r.ID)
		if !ok {
			return fmt.Errorf("%s: delete rule %d: %w", DriverName, r.ID, hal.ErrNotFound)
		}
		w.removeEntry(old)
		w.byID.del(r.ID)
		w.live--
		if w.atomic {
			w.undo = append(w.undo, undoRec{kind: hal.OpDelete, id: r.ID, old: old})
		}
		return nil
	}
	return &hal.RuleError{Field: "op", Reason: fmt.Sprintf("unknown operation %s", op.Kind)}
}

// removeEntry plans the removal of entry idx from its tuple.
func (w *writerState) removeEntry(idx uint32) {
	e := w.entry(idx)
	t := w.tupleByID[e.tup]
	t.delPrio(e.prio)
	w.emptied = w.emptied || t.rules == 0
	w.addMut(t, sigOf(e.keyHash(&t.shape)), idx, false)
	// In place, as addMut's record: the pair built on the stack was
	// stored as two words and loaded back as one.
	k := len(w.retired)
	if k == cap(w.retired) {
		w.retired = append(w.retired, [2]uint32{})
	}
	w.retired = w.retired[:k+1]
	w.retired[k][0], w.retired[k][1] = idx, e.prog
}

// rollback undoes the planned operations of the batch, newest first: an
// ApplyAtomic batch's, the only ones that record how (writerState.undo).
func (w *writerState) rollback() {
	for i := len(w.undo) - 1; i >= 0; i-- {
		u := &w.undo[i]
		switch u.kind {
		case hal.OpAdd:
			w.dropNew(u.new)
			w.byID.del(u.id)
			w.live--
		case hal.OpModify:
			w.dropNew(u.new)
			w.restore(u.old)
			w.byID.set(u.id, u.old)
		case hal.OpDelete:
			w.restore(u.old)
			w.byID.set(u.id, u.old)
			w.live++
		}
	}
	w.dropMuts()
	w.retired, w.carry = w.retired[:0], w.carry[:0]
	w.dropEmptyTuples()
}

// dropNew forgets an entry planned in this batch and never published.
func (w *writerState) dropNew(idx uint32) {
	e := w.entry(idx)
	t := w.tupleByID[e.tup]
	t.delPrio(e.prio)
	w.emptied = w.emptied || t.rules == 0
	w.release(w.progs[e.prog])
	w.freeEntry(idx)
}

// restore puts back an entry whose removal was planned in this batch.
func (w *writerState) restore(idx uint32) {
	e := w.entry(idx)
	w.tupleByID[e.tup].addPrio(e.prio)
}

// settle runs after a batch is visible in both views: entries and programs
// that no reader can see any more are freed, modified rules keep their
// counts.
func (w *writerState) settle() {
	for _, c := range w.carry {
		from, to := w.counter(c[0]), w.counter(c[1])
		if from == nil {
			continue // nothing counted
		}
		to.pkts.Add(from.pkts.Load())
		to.bytes.Add(from.bytes.Load())
	}
	// Newest first: the free lists are stacks, so the entries of rules
	// deleted in ID order are handed out again in the order they were
	// freed, and the rules of a later run of IDs get entries in ascending
	// order, which keeps their idIndex pages runs (no slot array to
	// allocate and fill) and their entries' stores sequential.
	for i := len(w.retired) - 1; i >= 0; i-- {
		r := w.retired[i]
		w.release(w.progs[r[1]])
		w.freeEntry(r[0])
	}
	w.dropEmptyTuples()
	w.dropMuts()
	w.retired, w.carry = w.retired[:0], w.carry[:0]
}

func (w *writerState) dropEmptyTuples() {
	if !w.emptied {
		return
	}
	w.emptied = false
	for k, t := range w.tuples {
		if t.rules == 0 && (t.tabs[0] == nil || t.tabs[0].ht.used == 0) && (t.tabs[1] == nil || t.tabs[1].ht.used == 0) {
			delete(w.tuples, k)
			w.tupleByID[t.id] = nil
			w.freeTupleIDs = append(w.freeTupleIDs, t.id)
			if w.lastTuple == t {
				w.lastTuple = nil
			}
		}
	}
}

// maxTuples bounds the distinct masks: entries name their tuple in 16 bits.
const maxTuples = 1 << 16

// tupleID hands out an unused tuple ID.
func (w *writerState) tupleID() (uint16, bool) {
	if k := len(w.freeTupleIDs); k > 0 {
		id := w.freeTupleIDs[k-1]
		w.freeTupleIDs = w.freeTupleIDs[:k-1]
		return id, true
	}
	if len(w.tupleByID) == maxTuples {
		return 0, false
	}
	w.tupleByID = append(w.tupleByID, nil)
	return uint16(len(w.tupleByID) - 1), true
}

// intern returns the program for the action list acts of the batch's
// operation whose quick hash prepare computed (pre), sharing one with
// identical actions but for the MAC of the first set_eth_dst (argAction),
// which it returns as the rule's operand (entry.arg). A rule's list is
// compared with a program's packed key (matchKey), a few contiguous words,
// rather than with its list, action by action.
func (w *writerState) intern(acts []hal.Action, pre *preOp) (*program, uint64, error) {
	skip := argAction(acts)
	var arg uint64
	if skip >= 0 {
		arg = macWord(acts[skip].MAC)
	}
	q := pre.quick
	if p := w.lastProg; p != nil && p.quick == q && p.refs > 0 && p.is(acts, skip, w.batch) {
		p.refs++
		return p, arg, nil
	}
	set := &w.progCache[q>>(64-progCacheBits)]
	for way := range set {
		if p := set[way].p; set[way].quick == q && p != nil && p.refs > 0 && p.is(acts, skip, w.batch) {
			p.refs++
			w.lastProg = p
			if way > 0 {
				set[0], set[way] = set[way], set[0]
			}
			return p, arg, nil
		}
	}
	h := hashActions(acts, skip)
	for _, p := range w.progByHash[h] {
		if p.is(acts, skip, w.batch) {
			p.refs++
			w.lastProg = p
			set[0], set[1] = progWay{q, p}, set[0]
			return p, arg, nil
		}
	}
	// A list that is no program's yet: softnic's checks of it
	// (checkActions), which every list that is one passed.
	if err := w.n.checkActions(acts); err != nil {
		return nil, 0, err
	}
	p, err := w.n.compile(acts, skip)
	if err != nil {
		return nil, 0, err
	}
	p.hash, p.quick, p.refs = h, q, 1
	p.src, p.srcLen, p.srcBatch = uintptr(unsafe.Pointer(unsafe.SliceData(acts))), len(acts), w.batch
	if key, ok := appendActionsKey(nil, acts, skip); ok {
		p.key = key
	}
	if k := len(w.freeProgs); k > 0 {
		p.idx = w.freeProgs[k-1]
		w.freeProgs = w.freeProgs[:k-1]
		w.progs[p.idx] = p
	} else {
		p.idx = uint32(len(w.progs))
		w.progs = append(w.progs, p)
	}
	w.progByHash[h] = append(w.progByHash[h], p)
	w.lastProg = p
	set[0], set[1] = progWay{q, p}, set[0]
	return p, arg, nil
}

// knownActions says whether the action list acts, of a rule whose match
// has traits, passed hal's checks earlier in the batch with the same
// traits, as the same slice: the list then passes them again
// (hal.Checker.CheckKnownActions), since within one Apply the caller's
// lists do not change. The program a list was interned to keeps the slice
// it was last found for (program.is), and the traits of that rule's match,
// which passed the checks before interning; the program is found as intern
// finds it, from lines the prefetch pipeline loaded (prepare), so that a
// list that rules share (those to one remote host) is checked once per
// batch at the cost of no cache miss.
func (w *writerState) knownActions(acts []hal.Action, pre *preOp, traits hal.ActionTraits) bool {
	p := w.lastProg
	if p == nil || p.quick != pre.quick {
		p = nil
		set := &w.progCache[pre.quick>>(64-progCacheBits)]
		for way := range set {
			if set[way].quick == pre.quick && set[way].p != nil {
				p = set[way].p
				break
			}
		}
		if p == nil {
			return false
		}
	}
	return p.refs > 0 && p.srcBatch == w.batch && p.src == uintptr(unsafe.Pointer(unsafe.SliceData(acts))) &&
		p.srcLen == len(acts) && p.srcTraits == traits
}

// is says whether p is the program of action list acts (skip:
// argAction(acts)) of the operation being done in batch batch. Within one
// Apply the caller's lists do not change (the operations are the
// caller's until it returns), so a list given as the same slice as one p
// was found for earlier in the batch is p's without comparing it again:
// a caller that shares one slice among many rules (those to one remote
// host) has it compared once per batch. The batch number keeps a slice of
// an earlier batch, whose memory may hold another list since, from
// counting.
func (p *program) is(acts []hal.Action, skip int, batch uint64) bool {
	src := uintptr(unsafe.Pointer(unsafe.SliceData(acts)))
	if p.srcBatch == batch && p.src == src && p.srcLen == len(acts) {
		return true
	}
	if p.key != nil {
		if !matchKey(p.key, acts, skip) {
			return false
		}
	} else if !sameActions(p.actions, acts, skip) {
		return false
	}
	p.src, p.srcLen, p.srcBatch = src, len(acts), batch
	return true
}

// progWay is one way of writerState.progCache: a program and its
// quickActionsHash, so that a way that is not the one costs no read of
// the program.
type progWay struct {
	quick uint64
	p     *program
}

// preOp is what prepare made of one operation of the batch for intern.
type preOp struct {
	quick uint64 // quickActionsHash of its action list
}

// Interning a batch's action lists reads, for each, a set of progCache,
// the program it names and that program's key: three dependent cache
// misses once the batch's other work (or the caller's, between batches)
// has evicted them, which cost more than the rest of an operation on a
// large table. prepare takes them a group of preGroup operations at a
// time, in three stages each a group apart (the quick hash and the set,
// the program, the program's key), so that when an operation is done its
// lines have arrived and the misses of a group are in flight together.
// The hashes live in a ring of preRing operations.
const (
	preGroup = 16
	preRing  = 4 * preGroup
)

// prefetchOps starts loading the first line of each operation of
// ops[lo:hi] (at most preGroup), its kind and rule ID, which stage 0 of
// prepare reads first: operations are 256 bytes, and in a large batch
// that first read was the costliest line of prepare in profiles (loading
// it ahead: RuleOps, some 5% more operations per CPU second). Loading
// all four lines of each did worse (sixty-four prefetches a group,
// beside the pipeline's own).
func (w *writerState) prefetchOps(ops []hal.Op, lo, hi int) {
	hi = min(hi, len(ops))
	n := 0
	for i := lo; i < hi; i++ {
		w.pf[n] = uintptr(unsafe.Pointer(&ops[i]))
		n++
	}
	prefetch.Lines(w.pf[:n])
}

// prepare runs stage stage (0, 1, 2) of the prefetch pipeline for the
// operations ops[lo:hi] of the batch (at most preGroup: three addresses
// each fit w.pf).
func (w *writerState) prepare(ops []hal.Op, lo, hi, stage int) {
	hi = min(hi, len(ops))
	n := 0
	for i := lo; i < hi; i++ {
		op := &ops[i]
		if op.Kind != hal.OpAdd && op.Kind != hal.OpModify {
			continue
		}
		pre := &w.pre[i%preRing]
		switch stage {
		case 0:
			pre.quick = quickActionsHash(op.Rule.Actions)
			w.pf[n] = uintptr(unsafe.Pointer(&w.progCache[pre.quick>>(64-progCacheBits)]))
			n++
		case 1:
			set := &w.progCache[pre.quick>>(64-progCacheBits)]
			for way := range set {
				if set[way].quick == pre.quick && set[way].p != nil {
					// The line do reads (count), and those intern
					// reads (quick to key).
					p := set[way].p
					w.pf[n], w.pf[n+1], w.pf[n+2] = uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&p.quick)), uintptr(unsafe.Pointer(&p.key))
					n += 3
					break
				}
			}
		case 2:
			set := &w.progCache[pre.quick>>(64-progCacheBits)]
			for way := range set {
				if p := set[way].p; set[way].quick == pre.quick && p != nil {
					if len(p.key) > 0 {
						w.pf[n] = uintptr(unsafe.Pointer(&p.key[0]))
						n++
						if len(p.key) > 8 {
							w.pf[n] = uintptr(unsafe.Pointer(&p.key[8]))
							n++
						}
					}
					break
				}
			}
		}
	}
	prefetch.Lines(w.pf[:n])
}

func (w *writerState) release(p *program) {
	if p.refs--; p.refs > 0 {
		return
	}
	list := w.progByHash[p.hash]
	for i, q := range list {
		if q == p {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(w.progByHash, p.hash)
	} else {
		w.progByHash[p.hash] = list
	}
	w.progs[p.idx] = nil
	w.freeProgs = append(w.freeProgs, p.idx)
}

// scopeDenseLimit bounds writerState.scopeDense (256 KiB).
const scopeDenseLimit = 1 << 16

// scopeIndex returns the generation-array index of scope, adding it.
func (w *writerState) scopeIndex(s hal.Scope) (uint32, error) {
	if uint64(s) < uint64(len(w.scopeDense)) {
		if i := w.scopeDense[s]; i != 0 {
			return i - 1, nil
		}
	}
	if i, ok := w.scopes[s]; ok {
		return i, nil
	}
	if len(w.scopeOf) >= w.n.maxScopes {
		return 0, fmt.Errorf("%s: scope %d: %d scopes in use: %w", DriverName, s, len(w.scopeOf), hal.ErrTableFull)
	}
	i := uint32(len(w.scopeOf))
	w.scopes[s] = i
	if uint64(s) < scopeDenseLimit {
		if uint64(s) >= uint64(len(w.scopeDense)) {
			w.scopeDense = append(w.scopeDense, make([]uint32, int(s)+1-len(w.scopeDense))...)
		}
		w.scopeDense[s] = i + 1
	}
	w.scopeOf = append(w.scopeOf, s)
	w.scopeGen = append(w.scopeGen, 0)
	return i, nil
}

// Dump calls fn for every installed rule, in no particular order, with its
// liveness and counters. Writers wait while it runs.
func (n *NIC) Dump(ctx context.Context, fn func(*hal.RuleInfo) error) error {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	if n.closed.Load() {
		return hal.ErrClosed
	}
	w := &n.w
	var info hal.RuleInfo
	for id, idx := range w.byID.all() {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := w.entry(idx)
		t := w.tupleByID[e.tup]
		var cnt hal.Counters
		if c := w.counter(idx); c != nil {
			cnt = hal.Counters{Packets: c.pkts.Load(), Bytes: c.bytes.Load()}
		}
		p := w.progs[e.prog]
		k := e.keyOf(t.shape.n)
		acts := hal.CloneActions(p.actions)
		if p.argAct >= 0 {
			acts[p.argAct].MAC = macOfWord(e.arg)
		}
		info = hal.RuleInfo{
			Rule: hal.Rule{
				ID: id, Priority: e.prio, Match: unpackMatch(&t.key, &t.shape, &k),
				Actions: acts, Cookie: w.chunks[idx>>chunkShift].cookie(idx),
				Scope: w.scopeOf[e.scope], Generation: hal.Generation(e.gen),
			},
			Location: hal.LocationUser,
			Live:     w.scopeGen[e.scope] == hal.Generation(e.gen),
			Counters: cnt,
		}
		if err := fn(&info); err != nil {
			return err
		}
	}
	return nil
}
