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
// found through one hash table per tuple (per distinct mask). There is one
// hash table per tuple, which the datapath reads while a writer changes it;
// what else a reader needs (the tuple list, the active-generation array,
// the chunk and program slices and each table's header) exists twice, as
// two views: a left-right scheme. Readers (the datapath) always read the
// active view; writers (Apply, Activate) change the inactive one, switch
// the active view with one atomic store, wait until no reader is left on
// the old view, and bring it up to date.
//
// A batch's changes to a hash table are visible per view: a slot's entry
// index carries a bit per view that hides it from that view's readers
// (hideBit). A batch that will be published on view o adds its slots hidden
// from the other view's readers and marks the slots it removes hidden from
// o's; once no reader is left on the other view, it clears the first and
// turns the second into deleted slots (applyMutations, finalize). So a
// burst of packets sees the whole table as it was before an Apply batch or
// an Activate, or as it is after, never a mix; readers never wait, and a
// writer waits only for bursts already in flight (microseconds). A table
// that a batch grows is rebuilt, with the batch settled, into a new array
// that only o's header points to until the switch. Entries and programs
// that a batch removes are freed only after no reader can see them.

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
	gen   uint32
	scope uint16 // index in the generation array (maxScopes <= 1<<16)
	prio  uint16
	tup   uint16 // the tuple's ID (writerState.tupleByID)
	// idHi is bits 16-31 of the rule ID, bits 0-15 are arg's top bits
	// (chunk.id).
	idHi uint16
	// arg is the rule's own operand of its shared program in its low 48
	// bits: the MAC of the program's parametrized set_eth_dst
	// (program.argAct), as macWord, which reads no further. Rules that
	// differ only there (a mapping's per-destination rules, one MAC per
	// destination VM) share one program instead of each compiling its own
	// (some 1.2 KB with its encapsulation template).
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

// setPacked packs key words kw by s into e (what setKey of s.pack(kw)
// stores, the words of its line beyond s.n zero) and returns their
// hashPacked, without the packed copy in between.
func (e *entry) setPacked(s *tupleShape, kw *words) uint64 {
	if s.exact4 {
		// The vswitch's flows: the words and masks are constants
		// (hashExact4One packs a packet the same way), and the loop's
		// gathers, bounds checks and variable rotations, some 150
		// instructions an add, become 30.
		x0, x1, x2, x3, x4 := kw[5], kw[8]&exact4Mask8, kw[9], kw[10], kw[11]&exact4Mask11
		e.key[0], e.key[1], e.key[2], e.key[3], e.key[4] = x0, x1, x2, x3, x4
		return hashLine(x0, x1, x2, x3, x4)
	}
	h := uint64(hashSeed)
	n := s.n
	lw := lineWords(n)
	for j := 0; j < min(n, entryLineWords); j++ {
		x := kw[s.idx[j]] & s.pmask[j]
		e.key[j] = x
		h += bits.RotateLeft64(x, j*7) * wordMul[j]
	}
	for j := n; j < lw; j++ {
		e.key[j] = 0
	}
	for j := entryLineWords; j < n; j++ {
		x := kw[s.idx[j]] & s.pmask[j]
		e.more[j-entryLineWords] = x
		h += bits.RotateLeft64(x, j*7) * wordMul[j]
	}
	return finish(h)
}

// keyHash is s.hashPacked of e's key (keyOf), read where it lies: a
// delete hashes the entry it takes out without first copying its key into
// a zeroed array of numWords. TestEntryKeyHash holds the two together.
//
// A tuple of entryLineWords words or more (an exact 5-tuple's) hashes its
// line's words in straight-line code: the loop, with its bounds checks and
// variable rotations, cost some 130 instructions a delete.
func (e *entry) keyHash(s *tupleShape) uint64 {
	n := s.n
	if n == entryLineWords {
		return hashLine(e.key[0], e.key[1], e.key[2], e.key[3], e.key[4])
	}
	h := uint64(hashSeed)
	for j := 0; j < min(n, entryLineWords); j++ {
		h += bits.RotateLeft64(e.key[j], j*7) * wordMul[j]
	}
	for j := entryLineWords; j < n; j++ {
		h += bits.RotateLeft64(e.more[j-entryLineWords], j*7) * wordMul[j]
	}
	return finish(h)
}

// hashLine is hashPacked of a key of entryLineWords words x0-x4.
func hashLine(x0, x1, x2, x3, x4 uint64) uint64 {
	return finish(uint64(hashSeed) + x0*wordMul[0] + bits.RotateLeft64(x1, 7)*wordMul[1] +
		bits.RotateLeft64(x2, 14)*wordMul[2] + bits.RotateLeft64(x3, 21)*wordMul[3] +
		bits.RotateLeft64(x4, 28)*wordMul[4])
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
	// wide is every entry's rule ID once one of the chunk's does not fit
	// the 32 bits its entry holds (entry.idHi, entry.arg's top bits;
	// controllers count theirs up from 1): readers then read it instead.
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

// id is the rule ID of entry i of c, which a lookup reads only to break a
// tie of priorities (the entry is then in the cache) and an exception to
// name its rule.
func (c *chunk) id(i uint32) hal.RuleID {
	if w := c.wide.Load(); w != nil {
		return w[i&(chunkSize-1)]
	}
	return hal.RuleID(c.at(i).id32())
}

// argMask is the bits of entry.arg that hold the operand.
const argMask = 1<<48 - 1

func (e *entry) id32() uint32 { return uint32(e.arg>>48) | uint32(e.idHi)<<16 }

func (e *entry) setID32(id uint32) {
	e.arg = e.arg&argMask | uint64(id)<<48
	e.idHi = uint16(id >> 16)
}

// setID records the ID of entry i, which no reader can reach yet, after
// its operand (entry.arg).
func (c *chunk) setID(i uint32, id hal.RuleID) {
	i &= chunkSize - 1
	if w := c.wide.Load(); w != nil {
		w[i] = id
		return
	}
	if id <= 1<<32-1 {
		c.at(i).setID32(uint32(id))
		return
	}
	w := new([chunkSize]hal.RuleID)
	for j := range w {
		w[j] = hal.RuleID(c.at(uint32(j)).id32())
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
// bucket full and went on to the next. (Ending chains at the first bucket
// with an empty slot instead sent a lookup on to a second bucket, a second
// miss, whenever its home bucket was merely full, some one time in six at
// three quarters load.) The top bits of slots 1-7 say which signatures'
// probe chains go on past the bucket: an insert that passes over it sets
// the one its signature picks (ovfSlot), and a lookup goes on only when its
// own is set. A full bucket that one key went past then sends on only the
// lookups of one signature in seven, not all of them. A bit may stay set
// after the keys that set it leave (a lookup then reads one bucket more);
// it is never clear while a key whose chain it picks lies past the bucket
// (TestOverflowBits).
//
// ixw is each slot's index word: the entry index and the hide bits of a
// batch being published (hideBit). Readers go through ref, which reads it
// atomically and says whether their view sees the slot.
type bucket struct {
	sigs [4]uint64
	ixw  [8]uint32
}

const (
	sigMask     = 1<<31 - 1
	overflowBit = 1 << 31
)

// The entry index of a slot holds, in its top bits, which views' readers
// do not see it (hideBit): set while the batch that adds or removes it is
// being published, clear otherwise. Entry indices are below maxEntries.
const (
	maxEntries = 1 << 30
	idxMask    = maxEntries - 1
)

// hideBit is the bit of a slot's index word that hides it from the readers
// of view side.
func hideBit(side int) uint32 { return maxEntries << side }

func (bk *bucket) sig(s int) uint32 { return uint32(bk.sigs[s>>1]>>(32*(s&1))) & sigMask }

// setSig changes slot s's signature. Readers read the signatures while a
// writer changes them: whole words, atomically.
func (bk *bucket) setSig(s int, sig uint32) {
	sh := 32 * (s & 1)
	w := &bk.sigs[s>>1]
	atomic.StoreUint64(w, *w&^(sigMask<<sh)|uint64(sig)<<sh)
}

// setIdx stores slot s's index word (an entry index and its hide bits).
func (bk *bucket) setIdx(s int, x uint32) { atomic.StoreUint32(&bk.ixw[s], x) }

// ref returns the entry index in slot s as a reader of the view with hide
// bit hide finds it, and whether that reader sees it. Readers never read
// an entry they do not see: it may be one a batch is writing, or one freed
// since.
func (bk *bucket) ref(s int, hide uint32) (uint32, bool) {
	x := atomic.LoadUint32(&bk.ixw[s])
	return x & idxMask, x&hide == 0
}

// overflowed says whether any probe chain goes on past bk.
func (bk *bucket) overflowed() bool { return atomic.LoadUint64(&bk.sigs[0])&overflowBit != 0 }

// ovfSlot is the slot (1-7) whose signature's top bit says whether the
// probe chains of signature sig go on past a bucket: from sig's low byte,
// which the home bucket (the top bits) leaves spread evenly over a
// bucket's signatures at any table size up to 2^23 buckets.
func ovfSlot(sig uint32) uint32 { return 1 + (sig&0xff)*7>>8 }

// ovfBit is the bit of bucket.sigs[ovfSlot(sig)>>1] that is sig's.
func ovfBit(slot uint32) uint64 { return overflowBit << (32 * (slot & 1)) }

// setOverflow records that an insert of signature sig went on past bk: the
// bucket's overflowBit and sig's own bit (ovfSlot).
func (bk *bucket) setOverflow(sig uint32) {
	if w := bk.sigs[0]; w&overflowBit == 0 {
		atomic.StoreUint64(&bk.sigs[0], w|overflowBit)
	}
	o := ovfSlot(sig)
	if w, bit := &bk.sigs[o>>1&3], ovfBit(o); *w&bit == 0 {
		atomic.StoreUint64(w, *w|bit)
	}
}

// scan's constants: a signature in both halves of a word, and the low 31
// bits of each half. (NIC.lookup's bucket pass has its own copy of scan.)
const (
	scanLanes = 0x0000000100000001
	scanLow31 = 0x7fffffff7fffffff
)

// scan returns a mask with bit s set for every slot whose signature is sig,
// and whether sig's probe chains go on past the bucket (ovfSlot).
// The slots are compared two at a time, without a branch: which slot of a
// bucket holds a packet's rule is random, and a compare-and-branch per slot
// cost about one mispredicted branch per lookup.
func (bk *bucket) scan(sig uint32) (match uint32, more bool) {
	const (
		lanes = scanLanes
		low31 = scanLow31
	)
	want := uint64(sig) * lanes
	// Atomic loads (plain ones on amd64 and arm64's ordered ones): a
	// writer changes the words under readers.
	w0, w1, w2, w3 := atomic.LoadUint64(&bk.sigs[0]), atomic.LoadUint64(&bk.sigs[1]), atomic.LoadUint64(&bk.sigs[2]), atomic.LoadUint64(&bk.sigs[3])
	o := ovfSlot(sig)
	more = atomic.LoadUint64(&bk.sigs[o>>1&3])&ovfBit(o) != 0
	// A lane of x is zero exactly when its slot matches; the top bit of
	// each lane of t says so, without carries between lanes (no lane of
	// want has its top bit, which the words' lanes leave to the overflow
	// bits).
	x0, x1, x2, x3 := (w0&low31)^want, (w1&low31)^want, (w2&low31)^want, (w3&low31)^want
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

// marks are the hide bits a batch sets on the slots it changes in a table
// that readers can see: add on the slots it adds (hiding them from the
// readers of the view being left), del on the slots it removes (hiding
// them from the readers of the view it is published on). Zero marks, for
// a table no reader can see yet, make every change final at once.
type marks struct{ add, del uint32 }

// insert adds x (an entry index, with the batch's add mark) under
// signature sig and returns its slot (bucket<<3 | slot). The home bucket
// comes from the signature, so that a table can be rebuilt from its buckets
// alone, without reading (cache-missing) every entry again. The free slots
// of a bucket (empty or deleted) are found word-wise (free), not with a
// branch per slot. The index goes in before the signature, so that a
// reader that finds the signature finds the index too.
//
// Stores to a table that no reader can see yet (shared false: made by the
// batch) are plain ones, as is the index word of a slot that was never
// used: no reader matched its signature, and one that matches the new one
// reads the index after it (an atomic store of the signature orders them).
// Atomic stores are locked instructions, and a table's rebuild makes one
// per entry.
func (t *htab) insert(sig uint32, x uint32, shared bool) uint64 {
	for bi := t.home(sig); ; bi = t.next(bi) {
		b := &t.b[bi]
		if free := b.free(); free != 0 {
			s := bits.TrailingZeros32(free) & 7
			tomb := b.sig(s) == sigTomb
			if tomb {
				t.tombs--
			}
			if !shared {
				b.ixw[s] = x
				sh := 32 * (s & 1)
				w := &b.sigs[s>>1]
				*w = *w&^(sigMask<<sh) | uint64(sig)<<sh
			} else {
				if tomb {
					b.setIdx(s, x) // a reader may have matched it before
				} else {
					b.ixw[s] = x
				}
				b.setSig(s, sig)
			}
			t.used++
			return bi<<3 | uint64(s)
		}
		b.setOverflow(sig)
	}
}

// remove takes entry idx, under signature sig, out of the table and
// returns its slot. With a del mark the slot stays, hidden from the
// readers of the view the batch is published on, until finalize turns it
// into a deleted one (readers of the other view still see it meanwhile); a
// slot that the same batch added, which no reader sees, goes at once. The
// counts change at once either way: an insert does not take a slot that
// is only marked, since its signature stays.
func (t *htab) remove(sig uint32, idx uint32, mk marks) (uint64, bool) {
	for bi, n := t.home(sig), uint64(0); n < t.nb; bi, n = t.next(bi), n+1 {
		b := &t.b[bi]
		m, more := b.scan(sig)
		for ; m != 0; m &= m - 1 {
			s := bits.TrailingZeros32(m) & 7
			x := b.ixw[s]
			if x&idxMask != idx || (mk.del != 0 && x&mk.del != 0) {
				continue
			}
			if mk.del == 0 || x&mk.add != 0 {
				b.setSig(s, sigTomb)
			} else {
				b.setIdx(s, x|mk.del)
			}
			t.used--
			t.tombs++
			return bi<<3 | uint64(s), true
		}
		if !more {
			return 0, false
		}
	}
	return 0, false
}

// finalize settles the slot pos that a batch with marks mk changed, once
// no reader is left on the view the batch was not published on: a slot
// added, still holding x with the add mark, is shown to every reader; one
// removed, still holding x with the del mark, becomes a deleted slot. Its
// hide bit stays: a reader that matched the signature before reads the
// index word after, and must not take the entry, freed once the batch
// settles. (The same batch may have removed an added slot and reused it.)
func (t *htab) finalize(pos uint64, x uint32, add bool, mk marks) {
	b, s := &t.b[pos>>3], int(pos&7)
	switch {
	case add && b.ixw[s] == x|mk.add && b.sig(s) >= 2:
		b.setIdx(s, x)
	case !add && b.ixw[s] == x|mk.del && b.sig(s) >= 2:
		b.setSig(s, sigTomb)
	}
}

// tupleTab is one view's header of the hash table of one tuple: both views'
// point to the same buckets but while a batch that grows the table is
// published.
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
	// hide is this view's hideBit: slots with it set are not for its
	// readers (bucket.ref).
	hide uint32
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
		lr.views[i].hide = hideBit(i)
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
	lr.update(func(v *view, side int) { *v = view{gens: make([]uint32, 1), hide: hideBit(side)} })
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
	// While a batch is published: inBatch says that it changes this
	// tuple's table, fresh that the table's buckets were made by the
	// batch (a new tuple's, or grown), which no reader sees before the
	// switch, so that its changes are final at once. False between
	// batches.
	inBatch, fresh bool
	// adds counts the adds of a sorting batch to the tuple until its table
	// is sized for them (addMut, sizeForAdds); zero otherwise.
	adds int
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

// mutation is one change to the hash tables: 16 bytes, since a large
// batch's are written, sorted (addMut) and read twice (applyMutations).
type mutation struct {
	sig uint32
	idx uint32
	pos uint32 // the slot it changed (htab.insert, htab.remove)
	tup uint16 // its tuple's ID (writerState.tupleByID)
	add bool
}

// sortMin is the number of operations from which a batch puts its
// mutations in signature order (addMut, sortMutations); a variable for
// the tests.
var sortMin = 4096

// addMut records mutation m of the batch. A large batch's (w.sorting)
// are then put in signature order (sortMutations), the order of their home
// buckets in every table (htab.home is monotonic in the signature at any
// table size): the two passes over the tables (applyMutations) go through
// each table's buckets in address order, which the hardware's prefetchers
// follow, instead of taking a cache miss anywhere in the table per
// mutation. For them addMut counts the mutations by each of the sort's two
// digits (w.hist) and each tuple's adds (tuple.adds, w.addTuples):
// applyMutations sizes the tables for the adds first (sizeForAdds), since
// inserts in signature order into a table that grows during the batch
// would pile up in one run of full buckets ahead of its growth. Small
// batches (the slow path's) keep their order: their buckets are few, and
// the sort would cost more than it spares.
//
// The record is written field by field where it lies in w.muts: built
// on the stack and copied, it was stored as four small stores and loaded
// back as one 16-byte word, which the store buffer cannot forward (a
// stall of a dozen cycles or more on every operation in profiles).
func (w *writerState) addMut(t *tuple, sig, idx uint32, add bool) {
	k := len(w.muts)
	if k == cap(w.muts) {
		w.muts = append(w.muts, mutation{})
	}
	w.muts = w.muts[:k+1]
	m := &w.muts[k]
	m.sig, m.idx, m.pos, m.tup, m.add = sig, idx, 0, t.id, add
	if !w.sorting {
		return
	}
	w.hist[0][sig>>sortShift0&0xff]++
	w.hist[1][sig>>sortShift1&0xff]++
	if add {
		if t.adds == 0 {
			w.addTuples = append(w.addTuples, t)
		}
		t.adds++
	}
}

// The sort's digits: the signature's top 16 bits (of 31), 8 at a time.
const (
	sortShift0 = 15
	sortShift1 = 23
)

// sortMutations puts a sorting batch's mutations in signature order (see
// addMut): an LSD radix sort, two passes of 8 bits through w.mutsTmp, and
// stable, so that the mutations of one key keep their order (an add then
// the delete of one rule in a batch). Those of different keys, which find
// their slots by entry index, may go in any order.
func (w *writerState) sortMutations() {
	muts := w.muts
	if cap(w.mutsTmp) < len(muts) {
		w.mutsTmp = make([]mutation, len(muts), cap(muts))
	}
	tmp := w.mutsTmp[:len(muts)]
	lo, hi := &w.hist[0], &w.hist[1]
	var sl, sh uint32
	for d := range lo {
		lo[d], sl = sl, sl+lo[d]
		hi[d], sh = sh, sh+hi[d]
	}
	for i := range muts {
		d := muts[i].sig >> sortShift0 & 0xff
		tmp[lo[d]] = muts[i]
		lo[d]++
	}
	for i := range tmp {
		d := tmp[i].sig >> sortShift1 & 0xff
		muts[hi[d]] = tmp[i]
		hi[d]++
	}
	w.hist = [2][256]uint32{}
}

// dropMuts forgets the batch's mutations (rollback, settle).
func (w *writerState) dropMuts() {
	w.muts = w.muts[:0]
	if !w.sorting {
		return
	}
	w.hist = [2][256]uint32{}
	for _, t := range w.addTuples {
		t.adds = 0
	}
	w.addTuples = w.addTuples[:0]
	w.sorting = false
}

// bucketsFor is the number of buckets, nb grown by halves, that holds n
// slots within the maximum load.
func bucketsFor(nb, n int) int {
	for n*maxLoadDen > nb*8*maxLoadNum {
		nb += nb / 2
	}
	return nb
}

// sizeForAdds makes the tables of the tuples that a sorting batch adds to
// (w.addTuples) large enough for their adds at once (see addMut):
// a new tuple's is made at its size, a table too small is grown as it
// would be on the first add that finds it full, to a size that holds the
// adds too. Deleted slots that the adds do not reuse may still have a table
// rebuilt later in the batch, at its size.
func (w *writerState) sizeForAdds(side int, shared marks) (reorder bool) {
	for _, t := range w.addTuples {
		adds := t.adds
		t.adds = 0
		tab := t.tabs[side]
		if tab == nil {
			tab = &tupleTab{tup: t, shape: &t.shape}
			tab.ht.init(bucketsFor(8, adds))
			t.tabs[side] = tab
			t.fresh = true
			reorder = true
			continue
		}
		if (tab.ht.used+adds)*maxLoadDen > len(tab.ht.b)*8*maxLoadNum {
			mk := shared
			if t.fresh {
				mk = marks{}
			}
			w.growFor(tab, mk, t.fresh, adds)
			t.fresh = true
		}
	}
	w.addTuples = w.addTuples[:0]
	return reorder
}

// applyMutations changes view v (side) as muts say and reorders its tuples.
// The first call (replica false) is on the view the batch is published
// on, before the switch: it makes the changes to the tables, marked
// (marks) in tables that readers see. The second (replica true), after
// the switch, when no reader is left on v: it brings v's table headers up
// to those of the first, frees the buckets a grown table left, and
// finalizes the marked slots.
func (w *writerState) applyMutations(v *view, side int, muts []mutation, replica bool) {
	reorder := false
	// Buckets are prefetched a group of ahead mutations at a time, one
	// group ahead: groups of 32 left most of the first touches of a
	// bucket missing all the same (more prefetches in flight at once
	// than the core keeps, it seems), groups of 16 fewer (RuleOps, some
	// 10-20% more operations per CPU second).
	const ahead = 16
	if replica {
		for _, t := range w.batchTuples {
			t.inBatch = false
			src := &t.tabs[1-side].ht
			tab := t.tabs[side]
			if tab == nil {
				tab = &tupleTab{tup: t, shape: &t.shape}
				t.tabs[side] = tab
				reorder = true
			} else if unsafe.SliceData(tab.ht.b) != unsafe.SliceData(src.b) {
				tab.ht.mem.Free() // grown: no reader is left on it
			}
			tab.ht = *src
		}
		mk := marks{add: hideBit(side), del: hideBit(1 - side)}
		// A sorted batch's buckets come in address order, which the
		// hardware prefetches by itself: the software prefetch only
		// cost (RuleOps, some 4% more operations per CPU second
		// without it).
		if !w.sorting {
			w.prefetchSlots(muts[:min(ahead, len(muts))])
		}
		for i := range muts {
			if !w.sorting && i%ahead == 0 && i+ahead < len(muts) {
				w.prefetchSlots(muts[i+ahead : min(i+2*ahead, len(muts))])
			}
			if m := &muts[i]; !w.tupleByID[m.tup].fresh {
				w.tupleByID[m.tup].tabs[side].ht.finalize(uint64(m.pos), m.idx, m.add, mk)
			}
		}
		for _, t := range w.batchTuples {
			t.fresh = false
		}
	} else {
		w.batchTuples = w.batchTuples[:0]
		shared := marks{add: hideBit(1 - side), del: hideBit(side)}
		if w.sorting {
			reorder = w.sizeForAdds(side, shared)
		}
		if !w.sorting { // as above
			prefetchMutations(muts[:min(ahead, len(muts))], w.tupleByID, side, &w.pf)
		}
		for i := range muts {
			if !w.sorting && i%ahead == 0 && i+ahead < len(muts) {
				// One group ahead: its buckets arrive while this one is done.
				prefetchMutations(muts[i+ahead:min(i+2*ahead, len(muts))], w.tupleByID, side, &w.pf)
			}
			m := &muts[i]
			t := w.tupleByID[m.tup]
			if !t.inBatch {
				t.inBatch = true
				w.batchTuples = append(w.batchTuples, t)
			}
			tab := t.tabs[side]
			if tab == nil {
				tab = &tupleTab{tup: t, shape: &t.shape}
				tab.ht.init(8)
				t.tabs[side] = tab
				t.fresh = true
				reorder = true
			}
			mk := shared
			if t.fresh {
				mk = marks{}
			}
			if m.add {
				if (tab.ht.used+tab.ht.tombs+1)*maxLoadDen > len(tab.ht.b)*8*maxLoadNum {
					w.grow(tab, mk, t.fresh)
					t.fresh, mk = true, marks{}
				}
				m.pos = uint32(tab.ht.insert(m.sig, m.idx|mk.add, !t.fresh))
			} else {
				pos, _ := tab.ht.remove(m.sig, m.idx, mk)
				m.pos = uint32(pos)
			}
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
	// every tuple. Only the tuples this batch touched (batchTuples) can
	// have changed.
	for i := 0; i < len(w.batchTuples) && !reorder; i++ {
		t := w.batchTuples[i]
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
func prefetchMutations(muts []mutation, tuples []*tuple, side int, pf *[MaxBurst]uintptr) {
	n := 0
	for i := range muts {
		m := &muts[i]
		if tab := tuples[m.tup].tabs[side]; tab != nil {
			pf[n] = uintptr(unsafe.Pointer(&tab.ht.b[tab.ht.home(m.sig)]))
			n++
		}
	}
	prefetch.Lines(pf[:n])
}

// prefetchSlots starts loading the buckets that finalize changes for
// muts (at most MaxBurst).
func (w *writerState) prefetchSlots(muts []mutation) {
	n := 0
	for i := range muts {
		if m := &muts[i]; !w.tupleByID[m.tup].fresh {
			// Both views' headers agree by now: the first's is read.
			ht := &w.tupleByID[m.tup].tabs[0].ht
			w.pf[n] = uintptr(unsafe.Pointer(&ht.b[m.pos>>3]))
			n++
		}
	}
	prefetch.Lines(w.pf[:n])
}

// grow rebuilds tab's hash table, half as large again unless deleted slots
// were most of the load, from the entries it holds, with the batch's
// changes so far (marks mk) settled: the new buckets are for the view the
// batch is published on, whose readers see the batch. The old ones stay
// for the other view's readers, unless the batch made them (fresh): no
// reader saw those.
func (w *writerState) grow(tab *tupleTab, mk marks, fresh bool) {
	w.growFor(tab, mk, fresh, 0)
}

// growFor is grow to a table that holds extra entries more too.
func (w *writerState) growFor(tab *tupleTab, mk marks, fresh bool, extra int) {
	w.rebuilds++
	old := tab.ht
	nb := len(old.b)
	if old.used*2 >= nb*8*maxLoadNum/maxLoadDen {
		nb += nb / 2
	}
	nb = bucketsFor(nb, old.used+extra+1)
	tab.ht.init(nb)
	for bi := range old.b {
		b := &old.b[bi]
		for s := 0; s < 8; s++ {
			if x := b.sig(s); x >= 2 {
				if ix := b.ixw[s]; mk.del == 0 || ix&mk.del == 0 {
					tab.ht.insert(x, ix&idxMask, false)
				}
			}
		}
	}
	if fresh {
		old.mem.Free()
	}
}
