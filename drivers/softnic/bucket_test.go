package softnic

import (
	"math/rand/v2"
	"testing"
)

// TestBucketScan holds scan's word-at-a-time compare to a slot-by-slot one,
// on buckets whose signatures collide, differ by one bit, or are empty.
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
			return sig ^ 1<<rng.IntN(32)
		case 4:
			return sig ^ 0x80000000
		}
		return rng.Uint32()
	}
	for n := 0; n < 200000; n++ {
		sig := rng.Uint32()
		if n%3 == 0 {
			sig = []uint32{2, 3, 0x7fffffff, 0x80000000, 0xffffffff}[rng.IntN(5)]
		}
		var bk bucket
		for s := 0; s < 8; s++ {
			bk.setSig(s, pick(sig))
			bk.idx[s] = uint32(s)
		}
		var want uint32
		wantEmpty := false
		for s := 0; s < 8; s++ {
			if bk.sig(s) == sig {
				want |= 1 << s
			}
			wantEmpty = wantEmpty || bk.sig(s) == sigEmpty
		}
		got, empty := bk.scan(sig)
		if got != want || empty != wantEmpty {
			t.Fatalf("bucket %#x sig %#x: scan = %08b, %v; want %08b, %v", bk.sigs, sig, got, empty, want, wantEmpty)
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
