package softnic

import (
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
)

// TestBucketScan holds scan's and free's word-at-a-time compares to
// slot-by-slot ones, on buckets whose signatures collide, differ by one
// bit, or are empty or deleted, with and without overflow bits (which no
// signature compare sees), set before and after the signatures: scan says
// a chain goes on exactly when the bit of sig's ovfSlot is set.
func TestBucketScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	pick := func(sig uint32) uint32 {
		switch rng.IntN(6) {
		case 0:
			return sigEmpty
		case 1:
			return sigTomb
		case 2:
			return sig
		case 3:
			return sig ^ 1<<rng.IntN(31)
		case 4:
			return sig ^ 0x40000000
		}
		return rng.Uint32() & sigMask
	}
	for n := 0; n < 200000; n++ {
		sig := rng.Uint32() & sigMask
		if n%3 == 0 {
			sig = []uint32{2, 3, 0x3fffffff, 0x40000000, 0x7fffffff}[rng.IntN(5)]
		}
		var bk bucket
		var set [8]bool
		overs := rng.IntN(4)
		over := func() {
			o := rng.Uint32() & sigMask
			if rng.IntN(3) == 0 {
				o = sig
			}
			bk.setOverflow(o)
			set[ovfSlot(o)] = true
		}
		for j := 0; j < overs/2; j++ {
			over()
		}
		sigs := make([]uint32, 8)
		for s := 0; s < 8; s++ {
			sigs[s] = pick(sig)
			bk.setSig(s, sigs[s])
			bk.ixw[s] = uint32(s)
		}
		for j := overs / 2; j < overs; j++ {
			over()
		}
		if set[0] {
			t.Fatalf("ovfSlot picked slot 0")
		}
		var want, wantFree uint32
		for s := 0; s < 8; s++ {
			if sigs[s] < 2 {
				wantFree |= 1 << s
			}
			if bk.sig(s) != sigs[s] {
				t.Fatalf("slot %d holds %#x, set %#x", s, bk.sig(s), sigs[s])
			}
			if sigs[s] == sig {
				want |= 1 << s
			}
		}
		if got := bk.free(); got != wantFree {
			t.Fatalf("bucket %#x: free = %08b, want %08b", bk.sigs, got, wantFree)
		}
		got, more := bk.scan(sig)
		if got != want || more != set[ovfSlot(sig)] || bk.overflowed() != (overs > 0) {
			t.Fatalf("bucket %#x sig %#x: scan = %08b, %v; want %08b, %v", bk.sigs, sig, got, more, want, set[ovfSlot(sig)])
		}
	}
}

// TestKeyEqual holds keyEqual to a word-by-word compare, on keys that
// differ in one bit of one word, or in bits another word has set.
func TestKeyEqual(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for n := 0; n < 200000; n++ {
		nw := 1 + rng.IntN(numWords)
		var pk, ek words
		for j := 0; j < nw; j++ {
			pk[j] = rng.Uint64()
		}
		ek = pk
		switch rng.IntN(4) {
		case 0: // equal
		case 1:
			ek[rng.IntN(nw)] ^= 1 << rng.IntN(64)
		case 2: // a difference whose bits another word also has
			j := rng.IntN(nw)
			ek[j] ^= pk[(j+1)%nw] & -pk[(j+1)%nw]
		default:
			ek[rng.IntN(nw)] = rng.Uint64()
		}
		want := true
		for j := 0; j < nw; j++ {
			want = want && pk[j] == ek[j]
		}
		var e entry
		e.arg = rng.Uint64() // beside the key: never compared
		e.setKey(&ek, nw)
		if k := e.keyOf(nw); k != ek {
			t.Fatalf("entry key %#x, stored %#x", k, ek)
		}
		if got := keyEqual(&pk, &e, nw); got != want {
			t.Fatalf("keyEqual(%#x, %#x, %d) = %v", pk, ek, nw, got)
		}
	}
}

// TestProbeChains: a table filled to its growth limit with signatures
// crowded onto few home buckets, with removals and reinsertions, against a
// plain map: every slot present is found by walking its chain as the
// lookup does (ending at the first bucket that no chain of its signature
// went past), and none
// removed is.
func TestProbeChains(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	var ht htab
	ht.init(64)
	type slot struct{ sig, idx uint32 }
	live := map[slot]bool{}
	var order []slot
	find := func(s slot) bool {
		bi := ht.home(s.sig)
		for n := uint64(0); n < ht.nb; n++ {
			m, more := ht.b[bi].scan(s.sig)
			for ; m != 0; m &= m - 1 {
				if ht.b[bi].ixw[bits.TrailingZeros32(m)&7] == s.idx {
					return true
				}
			}
			if !more {
				return false
			}
			bi = ht.next(bi)
		}
		return false
	}
	limit := 64 * 8 * maxLoadNum / maxLoadDen
	for round := 0; round < 2000; round++ {
		if len(live) < limit && (rng.IntN(3) > 0 || len(order) == 0) {
			// Signatures of a few home buckets: long chains.
			s := slot{sig: 2 + uint32(rng.IntN(4))<<27 + uint32(rng.IntN(1<<20)), idx: uint32(round)}
			ht.insert(s.sig, s.idx, rng.IntN(2) == 0)
			live[s] = true
			order = append(order, s)
		} else {
			k := rng.IntN(len(order))
			s := order[k]
			order = append(order[:k], order[k+1:]...)
			if _, ok := ht.remove(s.sig, s.idx, marks{}); !ok {
				t.Fatalf("round %d: remove of %+v found nothing", round, s)
			}
			delete(live, s)
			if find(s) {
				t.Fatalf("round %d: %+v found after its removal", round, s)
			}
		}
		for s := range live {
			if !find(s) {
				t.Fatalf("round %d: %+v not found", round, s)
			}
		}
		if ht.used != len(live) {
			t.Fatalf("round %d: %d used, %d live", round, ht.used, len(live))
		}
	}
}

// TestSizeClasses: tuples of the benchmarks' and the model test's shapes
// get the entry sizes their keys need, and entryAt finds entry i of a
// chunk of each class where the chunk's own at does.
func TestSizeClasses(t *testing.T) {
	n := newNIC(t)
	var mapping, port hal.Match
	mapping.InPort(pVM1).EthSrc(macVM1).IPSrc(netip.PrefixFrom(caVM1, 32)).IPDst(hal.MustPrefix("198.18.0.1/32"))
	port.InPort(pVM1).EthSrc(macVM1).IPDst(hal.MustPrefix("198.18.0.1/32")).Proto(hal.ProtoUDP).L4Dst(53)
	k := flowKey(1)
	tk6 := k
	tk6.TunKind, tk6.VNI = hal.EncapVXLAN, 5000
	tk6.TunSrc, tk6.TunDst = hal.Addr16(paRem), hal.Addr16(paLocal)
	for _, c := range []struct {
		name string
		m    hal.Match
		nw   int
		cls  int
	}{{"mapping", mapping, 3, classTiny}, {"mapping+port", port, 4, classSmall}, {"exact", hal.Exact(&k), 5, classSmall},
		{"exact tunnelled", hal.Exact(&tk6), 9, classLarge}} {
		var tk tupleKey
		var kw words
		ruleKey(&c.m, &tk, &kw)
		if sh := newShape(&tk); sh.n != c.nw || sizeClass(sh.n) != c.cls || !tk.v4 {
			t.Errorf("%s: %d words (v4 %v), class %d; want %d, class %d", c.name, sh.n, tk.v4, sizeClass(sh.n), c.nw, c.cls)
		}
		ch := n.w.newChunk(uint8(c.cls))
		ents := []entRef{ch.ref()}
		for i := uint32(0); i < chunkSize; i++ {
			if got, want := entryAt(ents, i), ch.at(i); got != want {
				t.Fatalf("%s: entry %d at %p, want %p", c.name, i, got, want)
			}
		}
		if uintptr(unsafe.Pointer(ch.at(1)))-uintptr(unsafe.Pointer(ch.at(0))) != classSize[c.cls] {
			t.Errorf("%s: entries %d bytes apart", c.name, classSize[c.cls])
		}
	}
}

// TestEntryIDs: a rule ID of up to 32 bits lives in its entry beside the
// operand (entry.idHi, entry.arg's top bits) without changing the MAC the
// program reads, in every size class; the first wider ID moves the
// chunk's IDs to its wide array, all of them kept.
func TestEntryIDs(t *testing.T) {
	n := newNIC(t)
	for class := uint8(0); class < numClasses; class++ {
		c := n.w.newChunk(class)
		mac := hal.MAC{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
		want := make([]hal.RuleID, chunkSize)
		for i := uint32(0); i < chunkSize; i++ {
			c.at(i).arg = macWord(mac)
			want[i] = hal.RuleID(1<<32-1-i*4099) ^ hal.RuleID(i)<<7
			c.setID(i, want[i])
		}
		for i := uint32(0); i < chunkSize; i++ {
			if got := c.id(i); got != want[i] {
				t.Fatalf("class %d entry %d: ID %#x, want %#x", class, i, got, want[i])
			}
			if got := macOfWord(c.at(i).arg); got != mac {
				t.Fatalf("class %d entry %d: operand %v, want %v", class, i, got, mac)
			}
		}
		if c.wide.Load() != nil {
			t.Fatalf("class %d: wide IDs with every ID of 32 bits", class)
		}
		want[5] = 1 << 40
		c.setID(5, want[5])
		if c.wide.Load() == nil {
			t.Fatalf("class %d: a 41-bit ID kept in the entry", class)
		}
		for i := uint32(0); i < chunkSize; i++ {
			if got := c.id(i); got != want[i] {
				t.Fatalf("class %d entry %d after widening: ID %#x, want %#x", class, i, got, want[i])
			}
		}
	}
}

// TestEntryKeyHash holds keyHash, which a delete hashes its entry with in
// place, and setPacked, which an add stores its key with, to hashPacked of the entry's key as keyOf copies it out (what
// inserts and lookups hash), for tuples of every width: a delete that
// hashed differently would look for its slot in the wrong bucket.
func TestEntryKeyHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for nw := 1; nw <= numWords; nw++ {
		s := tupleShape{n: nw}
		for range 200 {
			var pk words
			for j := 0; j < nw; j++ {
				pk[j] = rng.Uint64() >> uint(rng.IntN(64))
			}
			// A whole entry, its words past the class's record set, which
			// keyHash must not read.
			var e entry
			for j := range e.key {
				e.key[j] = rng.Uint64()
			}
			for j := range e.more {
				e.more[j] = rng.Uint64()
			}
			e.setKey(&pk, nw)
			k := e.keyOf(nw)
			if k != pk {
				t.Fatalf("%d words: keyOf %x, set %x", nw, k, pk)
			}
			if got, want := e.keyHash(&s), s.hashPacked(&pk); got != want {
				t.Fatalf("%d words: keyHash %#x, hashPacked %#x (key %x)", nw, got, want, pk)
			}
			// setPacked, as an add stores its key: the same words (and
			// zeros up to the line's end, which keyEqual compares) as
			// setKey of pack, and their hash, from unpacked words that
			// the shape's masks cut down.
			var kw words
			ps := tupleShape{n: nw}
			for j := range kw {
				kw[j] = rng.Uint64()
			}
			for j := 0; j < nw; j++ {
				ps.idx[j] = uint8(rng.IntN(numWords))
				ps.pmask[j] = rng.Uint64()
			}
			var e1, e2 entry
			for j := range e1.key {
				e1.key[j], e2.key[j] = ^uint64(0), ^uint64(0)
			}
			want := ps.pack(&kw)
			e1.setKey(&want, nw)
			if h := e2.setPacked(&ps, &kw); h != ps.hashPacked(&want) {
				t.Fatalf("%d words: setPacked hash %#x, hashPacked %#x", nw, h, ps.hashPacked(&want))
			}
			if e1 != e2 {
				t.Fatalf("%d words: setPacked stored %x %x, setKey of pack %x %x", nw, e2.key, e2.more, e1.key, e1.more)
			}
		}
	}
	// An exact4 shape's setPacked takes its words and masks as
	// constants: it must store and hash what the general loop does.
	ps := tupleShape{v4: true, exact4: true, n: entryLineWords}
	copy(ps.idx[:], exact4Idx[:])
	copy(ps.pmask[:], exact4Mask[:])
	gen := ps
	gen.exact4 = false
	for range 200 {
		var kw words
		for j := range kw {
			kw[j] = rng.Uint64()
		}
		var e1, e2 entry
		for j := range e1.key {
			e1.key[j], e2.key[j] = ^uint64(0), ^uint64(0)
		}
		h1, h2 := e1.setPacked(&gen, &kw), e2.setPacked(&ps, &kw)
		want := gen.pack(&kw)
		if h2 != h1 || h2 != gen.hashPacked(&want) {
			t.Fatalf("exact4: setPacked hash %#x, general %#x, hashPacked %#x", h2, h1, gen.hashPacked(&want))
		}
		if e1 != e2 {
			t.Fatalf("exact4: setPacked stored %x, general %x", e2.key, e1.key)
		}
		if got := e2.keyHash(&ps); got != h2 {
			t.Fatalf("exact4: keyHash %#x, setPacked %#x", got, h2)
		}
	}
}
