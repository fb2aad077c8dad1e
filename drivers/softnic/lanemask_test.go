package softnic

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
)

// TestLaneMask holds laneMask to bucket.scan's gathering of the lanes' top
// bits, a shift and a mask per slot: on every combination of the eight top
// bits, with and without every other bit set (which both must ignore), and
// on random words.
func TestLaneMask(t *testing.T) {
	slow := func(t0, t1, t2, t3 uint64) uint32 {
		return uint32(t0>>31&1 | t0>>62&2 | t1>>29&4 | t1>>60&8 | t2>>27&16 | t2>>58&32 | t3>>25&64 | t3>>56&128)
	}
	tops := func(m uint32, j int) uint64 { return uint64(m>>(2*j)&1)<<31 | uint64(m>>(2*j+1)&1)<<63 }
	for m := uint32(0); m < 256; m++ {
		for _, rest := range []uint64{0, ^uint64(laneTops)} {
			t0, t1, t2, t3 := tops(m, 0)|rest, tops(m, 1)|rest, tops(m, 2)|rest, tops(m, 3)|rest
			if got := laneMask(t0, t1, t2, t3); got != m || slow(t0, t1, t2, t3) != m {
				t.Fatalf("slots %08b, other bits %#x: laneMask %08b, scan's %08b", m, rest, got, slow(t0, t1, t2, t3))
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		t0, t1, t2, t3 := r.Uint64(), r.Uint64(), r.Uint64(), r.Uint64()
		if got, want := laneMask(t0, t1, t2, t3), slow(t0, t1, t2, t3); got != want {
			t.Fatalf("%#x %#x %#x %#x: laneMask %08b, scan's %08b", t0, t1, t2, t3, got, want)
		}
	}
}

// TestLookupScanMatchesBucketScan holds the lookup's written-out scan of a
// home bucket (its lanes compared without the mask scan applies before the
// sum, and laneMask) to bucket.scan, on buckets whose slots hold the
// signature sought, its neighbours and random ones, overflow bits
// included.
func TestLookupScanMatchesBucketScan(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		sig := 2 + r.Uint32N(sigMask-1)
		var bk bucket
		for s := 0; s < 8; s++ {
			var x uint32
			switch r.IntN(4) {
			case 0:
				x = sig
			case 1:
				x = (sig ^ 1<<r.IntN(31)) & sigMask
			default:
				x = r.Uint32() & sigMask
			}
			bk.sigs[s>>1] |= uint64(x) << (32 * (s & 1))
			if r.IntN(3) == 0 {
				bk.sigs[s>>1] |= overflowBit << (32 * (s & 1))
			}
		}
		want := uint64(sig) * scanLanes
		var tw [4]uint64
		for j := range tw {
			x := (bk.sigs[j] & scanLow31) ^ want
			tw[j] = ^((x + scanLow31) | x)
		}
		m, _ := bk.scan(sig)
		if got := laneMask(tw[0], tw[1], tw[2], tw[3]); got != m {
			t.Fatalf("bucket %#x, signature %#x: lookup's scan %08b, scan %08b", bk.sigs, sig, got, m)
		}
	}
}

// TestWordAt holds wordAt at wordOff to indexing, for every word.
func TestWordAt(t *testing.T) {
	var w words
	for i := range w {
		w[i] = uint64(i+1) * 0x0101010101010101
	}
	for i := 0; i < numWords; i++ {
		if got := wordAt(&w, wordOff(uint8(i))); got != w[i] {
			t.Fatalf("word %d: wordAt %#x, want %#x", i, got, w[i])
		}
	}
}

// TestHashExact4: newShape marks exact4 the shape of hal.Exact on an IPv4
// key that is not tunnelled, whatever the key's tag and protocol, and no
// other; and for such a tuple hashExact4, with its words and masks as
// constants, lists the same packets as hashTuple, with the same packed
// words, signatures, home buckets and prefetches, which are those of the
// rule keys (tupleShape.hashPacked): on bursts of random words, fates and
// priorities, IPv4 and not.
func TestHashExact4(t *testing.T) {
	shapeOf := func(m hal.Match) tupleShape {
		var tk tupleKey
		var kw words
		ruleKey(&m, &tk, &kw)
		return newShape(&tk)
	}
	tagged, tcp := flowKey(3), flowKey(4)
	tagged.VLAN = hal.VLANPresent | 12
	tcp.Proto = hal.ProtoTCP
	tun := flowKey(5)
	tun.TunKind, tun.VNI = hal.EncapVXLAN, 5000
	tun.TunSrc, tun.TunDst = hal.Addr16(paRem), hal.Addr16(paLocal)
	six := flowKey(6)
	six.EthType, six.IPSrc, six.IPDst = hal.EtherTypeIPv6, hal.Addr16(pa6Loc), hal.Addr16(pa6Rem)
	portMask := hal.Exact(&tcp)
	portMask.Mask.InPort = 0xffff
	var mapping hal.Match
	mapping.InPort(pVM1).EthSrc(macVM1).IPSrc(netip.PrefixFrom(caVM1, 32)).IPDst(hal.MustPrefix("198.18.0.1/32"))
	k1 := flowKey(1)
	for _, c := range []struct {
		name   string
		m      hal.Match
		exact4 bool
	}{{"exact", hal.Exact(&k1), true}, {"exact tagged", hal.Exact(&tagged), true}, {"exact tcp", hal.Exact(&tcp), true},
		{"exact tunnelled", hal.Exact(&tun), false}, {"exact ipv6", hal.Exact(&six), false},
		{"in-port mask", portMask, false}, {"mapping", mapping, false}} {
		if got := shapeOf(c.m).exact4; got != c.exact4 {
			t.Errorf("%s: exact4 %v, want %v", c.name, got, c.exact4)
		}
	}

	sh := shapeOf(hal.Exact(&k1))
	var ht htab
	ht.init(1 << 10)
	r := rand.New(rand.NewPCG(7, 8))
	var b1, b2, b3 burst
	for round := 0; round < 2000; round++ {
		k := 1 + r.IntN(MaxBurst)
		for i := 0; i < MaxBurst; i++ {
			var w words
			for j := range w {
				w[j] = r.Uint64()
			}
			switch r.IntN(3) {
			case 0: // an IPv4 packet's words, as parseFast gives them
				key := flowKey(r.IntN(1 << 20))
				if r.IntN(2) == 0 {
					key.VLAN = hal.VLANPresent | uint16(r.IntN(4096))
				}
				loadWords(&key, &w)
			case 1: // IPv4, anything else at random
				w[wordEthType] = w[wordEthType]&^ethTypeMask | uint64(hal.EtherTypeIPv4)<<ethTypeShift
			}
			b1.w[i], b2.w[i] = w, w
			b1.fate[i] = fatePending
			if r.IntN(8) == 0 {
				b1.fate[i] = fateDrop
			}
			b1.prio[i] = int32(r.IntN(200)) - 1
			b2.fate[i], b2.prio[i] = b1.fate[i], b1.prio[i]
		}
		floor := int32(r.IntN(150))
		n1, n2 := hashExact4(&b1, &ht, floor, k), hashTuple(&b2, &sh, &ht, floor, k)
		// b3: each listed packet hashed alone by hashExact4One, as
		// parseBurst does for b.pre (TestParseBurstLists checks what
		// it lists).
		for _, i := range b1.todo[:n1] {
			b3.w[i], b3.pk[i], b3.sig[i], b3.bkt[i] = b1.w[i], words{}, 0, 0
			a := hashExact4One(&b3, &ht, int(i))
			if b3.pk[i] != b1.pk[i] || b3.sig[i] != b1.sig[i] || b3.bkt[i] != b1.bkt[i] || a != uintptr(unsafe.Pointer(&ht.b[b1.bkt[i]])) {
				t.Fatalf("round %d, packet %d: hashExact4One %#x sig %#x bucket %d (asked for %#x), want %#x sig %#x bucket %d",
					round, i, b3.pk[i], b3.sig[i], b3.bkt[i], a, b1.pk[i], b1.sig[i], b1.bkt[i])
			}
		}
		if n1 != n2 || string(b1.todo[:n1]) != string(b2.todo[:n2]) {
			t.Fatalf("round %d: hashExact4 listed %v, hashTuple %v", round, b1.todo[:n1], b2.todo[:n2])
		}
		listed := 0
		for i := 0; i < k; i++ {
			if b1.fate[i] == fatePending && b1.prio[i] <= floor && uint16(b1.w[i][wordEthType]>>ethTypeShift) == hal.EtherTypeIPv4 {
				listed++
			}
		}
		if listed != n1 {
			t.Fatalf("round %d: %d packets listed, %d could match", round, n1, listed)
		}
		for j, i := range b1.todo[:n1] {
			pk := sh.pack(&b1.w[i])
			sig := sigOf(sh.hashPacked(&pk))
			if b1.pk[i] != b2.pk[i] || [entryLineWords]uint64(b1.pk[i][:entryLineWords]) != [entryLineWords]uint64(pk[:entryLineWords]) ||
				b1.sig[i] != sig || b2.sig[i] != sig || b1.bkt[i] != uint32(ht.home(sig)) || b2.bkt[i] != b1.bkt[i] ||
				b1.pf[j] != b2.pf[j] || b1.pf[j] != uintptr(unsafe.Pointer(&ht.b[b1.bkt[i]])) {
				t.Fatalf("round %d, packet %d: hashExact4 %#x sig %#x bucket %d, hashTuple %#x sig %#x bucket %d, rule key %#x sig %#x",
					round, i, b1.pk[i], b1.sig[i], b1.bkt[i], b2.pk[i], b2.sig[i], b2.bkt[i], pk, sig)
			}
		}
	}
}
