package softnic

import (
	"math/rand/v2"
	"testing"
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
