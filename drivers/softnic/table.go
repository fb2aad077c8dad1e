package softnic

import (
	"cmp"
	"math/bits"
	"runtime"
	"slices"
	"sync/atomic"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/hugemem"
	"github.com/nicpath/nicpath/internal/prefetch"
)

// The rule table, and how the datapath reads it without locks.
//
// Rules live in entries (48-, 64- or 128-byte records in chunks that never move),
// found through one hash table per tuple (per distinct mask). The hash
// tables and the active-generation array exist twice, as two views: a
// left-right scheme. Readers (the datapath) always read the active view;
// writers (Apply, Activate) change the inactive one, switch the active view
// with one atomic store, wait until no reader is left on the old view, and
// make the same change to it (see applyMutations: a table that a batch
// changed much is copied from the other view rather than replayed). So a
// burst of packets sees the whole table as
// it was before an Apply batch or an Activate, or as it is after, never a
// mix; readers never wait, and a writer waits only for bursts already in
// flight (microseconds). Entries and programs that a batch removes are freed
// only after both views stopped referring to them.

// entry is one installed rule. Its fields do not change while any view
// refers to it; a modify writes a new entry.
//
// Entries come in three sizes (size classes), by how many packed key words
// their tuple compares: a tuple of at most tinyWords words (a mapping's
// per-destination rule: its IPv4 addresses, in_port, source MAC) has
// 48-byte entries, the header, operand and three key words; one of at most
// entryLineWords words 64-byte entries, the first cache line of this
// struct; wider tuples (an exact 5-tuple with tunnel fields) the whole 128
// bytes. An entry's record is followed by the next one, so nothing past its
// class's size is read or written (keyEqual, keyOf, setKey).
type entry struct {
	// The first 48 bytes hold what a lookup reads: liveness, priority,
	// the program, the program's operand and the first key words.
	prog  uint32 // index in the program table
	scope uint32 // index in the generation array
	gen   uint32
	prio  uint16
	tup   uint16 // the tuple's ID (writerState.tupleByID)
	// arg is the rule's own operand of its shared program: the MAC of the
	// program's parametrized set_eth_dst (program.argAct), as macWord.
	// Rules that differ only there (a mapping's per-destination rules,
	// one MAC per destination VM) share one program instead of each
	// compiling its own (some 1.2 KB with its encapsulation template).
	arg uint64
	key [entryLineWords]uint64 // packed by the tuple's shape
	// more holds key words entryLineWords and up: large entries only.
	more [numWords - entryLineWords]uint64
	_    uint64
}

// The size classes of entries.
const (
	classTiny  = iota // 48 bytes: at most tinyWords key words
	classSmall        // 64 bytes: at most entryLineWords
	classLarge        // 128 bytes: the whole entry
	numClasses

	tinyWords = 3
)

// classSize is each class's record size in bytes.
var classSize = [numClasses]uintptr{48, 64, 128}

// classUnits holds each class's size in 16-byte units, a byte per class,
// for entryAt: a shift and a mask instead of a load from classSize.
const classUnits = 3 | 4<<8 | 8<<16

// sizeClass is the class of the entries of a tuple that compares nw words.
func sizeClass(nw int) int {
	switch {
	case nw <= tinyWords:
		return classTiny
	case nw <= entryLineWords:
		return classSmall
	}
	return classLarge
}

// lineWords is how many of e.key an entry of a tuple of nw words holds:
// the rest of its record belongs to the next entry.
func lineWords(nw int) int {
	if nw <= tinyWords {
		return tinyWords
	}
	return entryLineWords
}

// keyOf returns the packed key of e, whose tuple compares nw words.
func (e *entry) keyOf(nw int) words {
	var k words
	copy(k[:lineWords(nw)], e.key[:])
	for j := entryLineWords; j < nw; j++ {
		k[j] = e.more[j-entryLineWords]
	}
	return k
}

// setKey stores packed key pk of nw words in e, no further than its
// class's record: the words of its line beyond nw too (zero in pk), which
// keyEqual compares.
func (e *entry) setKey(pk *words, nw int) {
	copy(e.key[:lineWords(nw)], pk[:])
	for j := entryLineWords; j < nw; j++ {
		e.more[j-entryLineWords] = pk[j]
	}
}

// counter is a rule's packet and byte count, kept apart from the entry so
// that rules that count do not dirty the lines that lookups read.
type counter struct {
	pkts, bytes atomic.Uint64
}

const (
	chunkShift = 10
	chunkSize  = 1 << chunkShift
)

// chunk is chunkSize entries of one size, and what belongs to them beside
// the lookups' lines. Only writers change a chunk's fields; the datapath
// reads e, ids and (for rules that count) c.
type chunk struct {
	// e is the entries: chunkSize records of class's size, from the heap
	// or a huge-page slab (hugemem.go), at an address with its two low
	// bits clear (entRef).
	e     unsafe.Pointer
	class uint8
	// ids is each entry's rule ID, which a lookup reads only to break a
	// tie of priorities and an exception to name its rule: 32 bits while
	// every ID of the chunk fits (controllers count theirs up from 1),
	// then all 64 in wide, which readers then read instead.
	ids  *[chunkSize]uint32
	wide atomic.Pointer[[chunkSize]hal.RuleID]
	// c is the rules' counters, made when the first rule of the chunk
	// that counts (or keeps a modified rule's counts) lands in it: rules
	// without a Count action, a mapping's for one, take none.
	c *[chunkSize]counter
	// Each entry's cookie, which only Dump reads: ck0 for all while ck is
	// nil (a controller marks its rules with one cookie per epoch).
	ckSet bool
	ck0   hal.Cookie
	ck    *[chunkSize]hal.Cookie
}

// at returns entry i of c.
func (c *chunk) at(i uint32) *entry {
	return (*entry)(unsafe.Add(c.e, uintptr(i&(chunkSize-1))*classSize[c.class]))
}

// entRef is a chunk's entries as the datapath finds them: the address of
// the first plus their size class.
// A dense slice of these (view.ents) gives an entry's address from one
// load, as a slice of chunk pointers would not (the chunk, then its
// fields).
type entRef unsafe.Pointer

func (c *chunk) ref() entRef {
	return entRef(unsafe.Add(c.e, c.class))
}

// entryAt returns entry idx of a view's (or the writer's) entRefs.
func entryAt(ents []entRef, idx uint32) *entry {
	p := unsafe.Pointer(ents[idx>>chunkShift])
	class := uintptr(p) & 3
	units := uintptr(classUnits) >> (8 * class) & 0xff
	return (*entry)(unsafe.Add(p, uintptr(idx&(chunkSize-1))*units<<4-class))
}

// id is the rule ID of entry i of c.
func (c *chunk) id(i uint32) hal.RuleID {
	if w := c.wide.Load(); w != nil {
		return w[i&(chunkSize-1)]
	}
	return hal.RuleID(c.ids[i&(chunkSize-1)])
}

// setID records the ID of entry i, which no reader can reach yet.
func (c *chunk) setID(i uint32, id hal.RuleID) {
	i &= chunkSize - 1
	if w := c.wide.Load(); w != nil {
		w[i] = id
		return
	}
	if id <= 1<<32-1 {
		c.ids[i] = uint32(id)
		return
	}
	w := new([chunkSize]hal.RuleID)
	for j := range w {
		w[j] = hal.RuleID(c.ids[j])
	}
	w[i] = id
	c.wide.Store(w)
}

func (c *chunk) cookie(i uint32) hal.Cookie {
	if c.ck == nil {
		return c.ck0
	}
	return c.ck[i&(chunkSize-1)]
}

func (c *chunk) setCookie(i uint32, ck hal.Cookie) {
	if c.ck == nil {
		if !c.ckSet || ck == c.ck0 {
			c.ckSet, c.ck0 = true, ck
			return
		}
		c.ck = new([chunkSize]hal.Cookie)
		for j := range c.ck {
			c.ck[j] = c.ck0
		}
	}
	c.ck[i&(chunkSize-1)] = ck
}

// bucket is 64 bytes: eight signature/index pairs, so that a probe reads
// one cache line. A signature is 31 bits of the hash with the values 0
// (empty) and 1 (deleted) reserved. Signatures are stored two to a word
// (slot 2j in the low half of sigs[j], 2j+1 in the high half), so that scan
// compares them a word at a time, whatever the machine's byte order. The
// top bit of slot 0's half (overflowBit) says that an insert found the
// bucket full and went on to the next: only then does a probe chain go on
// past it. (Ending chains at the first bucket with an empty slot instead
// sent a lookup on to a second bucket, a second miss, whenever its home
// bucket was merely full, some one time in six at three quarters load.)
type bucket struct {
	sigs [4]uint64
	idx  [8]uint32
}

const (
	sigMask     = 1<<31 - 1
	overflowBit = 1 << 31
)

func (bk *bucket) sig(s int) uint32 { return uint32(bk.sigs[s>>1]>>(32*(s&1))) & sigMask }

func (bk *bucket) setSig(s int, sig uint32) {
	sh := 32 * (s & 1)
	w := &bk.sigs[s>>1]
	*w = *w&^(sigMask<<sh) | uint64(sig)<<sh
}

// overflowed says whether a probe chain goes on past bk.
func (bk *bucket) overflowed() bool { return bk.sigs[0]&overflowBit != 0 }

func (bk *bucket) setOverflow() { bk.sigs[0] |= overflowBit }

// scan returns a mask with bit s set for every slot whose signature is sig,
// and whether the bucket overflowed (a probe chain goes on to the next).
// The slots are compared two at a time, without a branch: which slot of a
// bucket holds a packet's rule is random, and a compare-and-branch per slot
// cost about one mispredicted branch per lookup.
func (bk *bucket) scan(sig uint32) (match uint32, more bool) {
	const (
		lanes = 0x0000000100000001
		low31 = 0x7fffffff7fffffff
	)
	want := uint64(sig) * lanes
	w0, w1, w2, w3 := bk.sigs[0], bk.sigs[1], bk.sigs[2], bk.sigs[3]
	more = w0&overflowBit != 0
	// A lane of x is zero exactly when its slot matches; the top bit of
	// each lane of t says so, without carries between lanes (no lane of
	// want has its top bit, which the words' lanes leave to overflowBit).
	x0, x1, x2, x3 := (w0&low31)^want, w1^want, w2^want, w3^want
	t0 := ^((x0&low31 + low31) | x0)
	t1 := ^((x1&low31 + low31) | x1)
	t2 := ^((x2&low31 + low31) | x2)
	t3 := ^((x3&low31 + low31) | x3)
	z := t0>>31&1 | t0>>62&2 | t1>>29&4 | t1>>60&8 | t2>>27&16 | t2>>58&32 | t3>>25&64 | t3>>56&128
	return uint32(z), more
}

// free returns a mask with bit s set for every slot that is empty or
// deleted (signature below 2): scan's compare against zero with each
// lane's lowest bit left out, in one pass where two scans took twice the
// work on every insert.
func (bk *bucket) free() uint32 {
	const (
		low31 = 0x7fffffff7fffffff
		keep  = low31 &^ 0x0000000100000001
	)
	// Lanes below 2^31: adding low31 carries into a lane's top bit
	// exactly when it is not zero, and never into the next lane.
	x0, x1, x2, x3 := bk.sigs[0]&keep, bk.sigs[1]&keep, bk.sigs[2]&keep, bk.sigs[3]&keep
	t0 := ^((x0 + low31) | x0)
	t1 := ^((x1 + low31) | x1)
	t2 := ^((x2 + low31) | x2)
	t3 := ^((x3 + low31) | x3)
	return uint32(t0>>31&1 | t0>>62&2 | t1>>29&4 | t1>>60&8 | t2>>27&16 | t2>>58&32 | t3>>25&64 | t3>>56&128)
}

const (
	sigEmpty = 0
	sigTomb  = 1
	// maxLoadNum/maxLoadDen is the slot load at which a table grows: at
	// 3/4, a bucket of eight is rarely full, so most lookups read one line.
	maxLoadNum = 3
	maxLoadDen = 4
)

func sigOf(h uint64) uint32 {
	s := uint32(h >> 33)
	if s < 2 {
		s += 2
	}
	return s
}

// htab is an open-addressing table of buckets with linear probing bucket by
// bucket. Keys may repeat (one match in several generations); a lookup
// walks the probe chain until a bucket that never overflowed.
//
// Any number of buckets will do: a signature's home bucket is its share of
// nb (multiply and shift), so a table grows by half, not double, and its
// load stays between a half and maxLoad instead of falling to three
// eighths after each doubling.
type htab struct {
	b     []bucket
	mem   *hugemem.Mem // owns b when it is huge-page memory (hugemem.go)
	nb    uint64       // len(b)
	used  int
	tombs int
}

func (t *htab) init(nbuckets int) {
	t.b, t.mem = makeBuckets(nbuckets)
	t.nb = uint64(nbuckets)
	t.used, t.tombs = 0, 0
}

// home is the bucket where sig's probe chain starts.
func (t *htab) home(sig uint32) uint64 { return uint64(sig) * t.nb >> 31 }

// next is the bucket after bi in a probe chain.
func (t *htab) next(bi uint64) uint64 {
	if bi++; bi == t.nb {
		return 0
	}
	return bi
}

// insert adds idx under signature sig. The home bucket comes from the
// signature, so that a table can be rebuilt from its buckets
// alone, without reading (cache-missing) every entry again. The free slots
// of a bucket (empty or deleted) are found word-wise (free), not with a
// branch per slot.
func (t *htab) insert(sig uint32, idx uint32) {
	for bi := t.home(sig); ; bi = t.next(bi) {
		b := &t.b[bi]
		if free := b.free(); free != 0 {
			s := bits.TrailingZeros32(free) & 7
			if b.sig(s) == sigTomb {
				t.tombs--
			}
			b.idx[s] = idx
			b.setSig(s, sig)
			t.used++
			return
		}
		b.setOverflow()
	}
}

func (t *htab) remove(sig uint32, idx uint32) bool {
	for bi, n := t.home(sig), uint64(0); n < t.nb; bi, n = t.next(bi), n+1 {
		b := &t.b[bi]
		m, more := b.scan(sig)
		for ; m != 0; m &= m - 1 {
			if s := bits.TrailingZeros32(m) & 7; b.idx[s] == idx {
				b.setSig(s, sigTomb)
				t.used--
				t.tombs++
				return true
			}
		}
		if !more {
			return false
		}
	}
	return false
}

// tupleTab is one view's hash table of one tuple.
type tupleTab struct {
	tup     *tuple
	shape   *tupleShape
	maxPrio uint16
	// listed says whether the view's tuple list holds this table (the
	// tuple had rules when the list was last built).
	listed bool
	ht     htab
}

// view is what a reader sees.
type view struct {
	tabs   []*tupleTab // tuples with rules, by decreasing maximum priority
	gens   []uint32    // active generation by scope index
	chunks []*chunk
	ents   []entRef // chunks[i].ref()
	progs  []*program
	// slabs owns the huge-page memory of chunks (hugemem.go): while a
	// reader can see a chunk, it is not unmapped.
	slabs []*hugemem.Mem
}

type paddedCount struct {
	n atomic.Int64
	_ [56]byte
}

type leftRight struct {
	active  atomic.Uint32
	_       [60]byte
	readers [2]paddedCount
	views   [2]view
}

func (lr *leftRight) init(n *NIC) {
	for i := range lr.views {
		lr.views[i].gens = make([]uint32, 1)
	}
}

// enter registers a reader and returns the view it may read until exit.
func (lr *leftRight) enter() uint32 {
	for {
		s := lr.active.Load()
		lr.readers[s].n.Add(1)
		if lr.active.Load() == s {
			return s
		}
		lr.readers[s].n.Add(-1)
	}
}

func (lr *leftRight) exit(s uint32) { lr.readers[s].n.Add(-1) }

// update applies fn to both views, the inactive one first, so that readers
// switch from the old table to the new one in one step. Only writers (under
// NIC.wmu) call it.
func (lr *leftRight) update(fn func(v *view, side int)) {
	s := lr.active.Load()
	o := 1 - s
	fn(&lr.views[o], int(o))
	lr.active.Store(o)
	for lr.readers[s].n.Load() != 0 {
		runtime.Gosched()
	}
	fn(&lr.views[s], int(s))
}

func (lr *leftRight) publishEmpty() {
	lr.update(func(v *view, _ int) { *v = view{gens: make([]uint32, 1)} })
}

// tuple is the writer's record of one mask.
type tuple struct {
	id    uint16
	key   tupleKey
	shape tupleShape
	rules int
	// The rules of a tuple counted by priority, to know its highest. Most
	// tuples hold one priority (every flow of a mask alike), so the first
	// one counted lives in p0/n0 without touching a map; others go to
	// prios. A priority is counted in one place only.
	p0    uint16
	n0    int
	prios map[uint16]int
	max   uint16
	tabs  [2]*tupleTab
	// batchMuts counts the batch's mutations of this tuple while the
	// first view is changed; on the second, -1 marks a table copied from
	// the first and -2 one replayed. Zero between batches.
	batchMuts int
}

func (t *tuple) addPrio(p uint16) {
	t.rules++
	switch {
	case t.n0 > 0 && p == t.p0:
		t.n0++
	case t.n0 == 0 && t.prios[p] == 0:
		t.p0, t.n0 = p, 1
	default:
		t.prios[p]++
	}
	if t.rules == 1 || p > t.max {
		t.max = p
	}
}

func (t *tuple) delPrio(p uint16) {
	t.rules--
	gone := false
	if t.n0 > 0 && p == t.p0 {
		t.n0--
		gone = t.n0 == 0
	} else if t.prios[p]--; t.prios[p] == 0 {
		delete(t.prios, p)
		gone = true
	}
	if gone && p == t.max {
		t.max = 0
		if t.n0 > 0 {
			t.max = t.p0
		}
		for q := range t.prios {
			t.max = max(t.max, q)
		}
	}
}

// mutation is one change to the hash tables, replayed on both views.
type mutation struct {
	t   *tuple
	sig uint32
	idx uint32
	add bool
}

// copyFraction: a view's table of a tuple is copied from the other view,
// instead of replaying the batch on it, when the batch changed at least
// 1/copyFraction as many slots as the table has buckets. A replayed
// mutation is a random access (a cache miss on a large table) and copying
// a 64-byte bucket a sequential one, several times cheaper.
const copyFraction = 4

// applyMutations changes view v (side) as muts say and reorders its tuples.
// replica says that the other view already holds the batch (update's
// second call): tables that the batch changed much are copied from there.
func (w *writerState) applyMutations(v *view, side int, muts []mutation, replica bool) {
	reorder := false
	if replica {
		for i := range muts {
			t := muts[i].t
			if t.batchMuts < 0 {
				continue // handled
			}
			src := &t.tabs[1-side].ht
			if t.batchMuts*copyFraction >= len(src.b) {
				tab := t.tabs[side]
				if tab == nil {
					tab = &tupleTab{tup: t, shape: &t.shape}
					t.tabs[side] = tab
					reorder = true
				}
				if len(tab.ht.b) != len(src.b) {
					tab.ht.mem.Free() // this view's: no reader on it
					tab.ht.b, tab.ht.mem = makeBuckets(len(src.b))
				}
				copy(tab.ht.b, src.b)
				tab.ht.nb, tab.ht.used, tab.ht.tombs = src.nb, src.used, src.tombs
				t.batchMuts = -1 // copied: skip its mutations below
			} else {
				t.batchMuts = -2 // replayed
			}
		}
	}
	const ahead = MaxBurst / 2
	prefetchMutations(muts[:min(ahead, len(muts))], side, &w.pf)
	for i := range muts {
		if i%ahead == 0 && i+ahead < len(muts) {
			// One group ahead: its buckets arrive while this one is done.
			prefetchMutations(muts[i+ahead:min(i+2*ahead, len(muts))], side, &w.pf)
		}
		m := &muts[i]
		if !replica {
			m.t.batchMuts++
		} else if m.t.batchMuts == -1 {
			continue
		}
		tab := m.t.tabs[side]
		if tab == nil {
			tab = &tupleTab{tup: m.t, shape: &m.t.shape}
			tab.ht.init(8)
			m.t.tabs[side] = tab
			reorder = true
		}
		if m.add {
			if (tab.ht.used+tab.ht.tombs+1)*maxLoadDen > len(tab.ht.b)*8*maxLoadNum {
				w.grow(tab)
			}
			tab.ht.insert(m.sig, m.idx)
		} else {
			tab.ht.remove(m.sig, m.idx)
		}
	}
	if replica {
		for i := range muts {
			muts[i].t.batchMuts = 0
		}
	}
	v.chunks, v.ents = w.chunks, w.ents
	v.slabs = w.slabs
	v.progs = w.progs
	for len(v.gens) < len(w.scopeGen) {
		v.gens = append(v.gens, uint32(w.scopeGen[len(v.gens)]))
	}
	// The tuple list changes only when a tuple gains its first rule, loses
	// its last or its highest priority moves; most batches (flows added to
	// masks that already hold some) do none of that, and rebuilding and
	// sorting the list for every batch cost four allocations and a walk of
	// every tuple. Only the tuples this batch touched can have changed.
	for i := 0; i < len(muts) && !reorder; i++ {
		t := muts[i].t
		tab := t.tabs[side]
		reorder = tab.listed != (t.rules > 0) || (t.rules > 0 && tab.maxPrio != t.max)
	}
	if !reorder {
		return
	}
	// A fresh slice: bursts that entered this view before the writer
	// switched away may still be walking the old one.
	tabs := make([]*tupleTab, 0, len(w.tuples))
	for _, t := range w.tuples {
		tab := t.tabs[side]
		if tab == nil {
			continue
		}
		tab.listed = t.rules > 0
		if tab.listed {
			tab.maxPrio = t.max
			tabs = append(tabs, tab)
		}
	}
	slices.SortFunc(tabs, func(a, b *tupleTab) int { return cmp.Compare(b.maxPrio, a.maxPrio) })
	v.tabs = tabs
}

// prefetchMutations starts loading the home buckets of muts (at most
// MaxBurst) in view side: with a large table each is a cache miss, and
// without the prefetch they would come one mutation at a time. A table
// that grows meanwhile only makes some prefetches useless.
func prefetchMutations(muts []mutation, side int, pf *[MaxBurst]uintptr) {
	n := 0
	for i := range muts {
		m := &muts[i]
		if tab := m.t.tabs[side]; tab != nil && m.t.batchMuts != -1 {
			pf[n] = uintptr(unsafe.Pointer(&tab.ht.b[tab.ht.home(m.sig)]))
			n++
		}
	}
	prefetch.Lines(pf[:n])
}

// grow rebuilds tab's hash table, half as large again unless deleted slots
// were most of the load, from the entries it holds.
func (w *writerState) grow(tab *tupleTab) {
	old := tab.ht
	nb := len(old.b)
	if old.used*2 >= nb*8*maxLoadNum/maxLoadDen {
		nb += nb / 2
	}
	tab.ht.init(nb)
	for bi := range old.b {
		b := &old.b[bi]
		for s := 0; s < 8; s++ {
			if x := b.sig(s); x >= 2 {
				tab.ht.insert(x, b.idx[s])
			}
		}
	}
	// No reader is on this view (see leftRight.update): the old array
	// goes at once rather than at the collector's next cycle.
	old.mem.Free()
}
