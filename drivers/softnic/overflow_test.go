package softnic

import (
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// ovfHoles returns a description of the first slot of ht whose chain lacks
// an overflow bit: a bucket between the slot's home and its own bucket
// without the bit of the slot's signature (ovfSlot), which would end a
// lookup's chain before the slot. Every slot that holds a signature counts,
// hidden ones too: some view's readers see it.
func ovfHoles(ht *htab) (bucket, home, at uint64, sig uint32, ok bool) {
	for bi := range ht.b {
		for s := 0; s < 8; s++ {
			sig := ht.b[bi].sig(s)
			if sig < 2 {
				continue
			}
			o := ovfSlot(sig)
			h := ht.home(sig)
			for b := h; b != uint64(bi); b = ht.next(b) {
				if ht.b[b].sigs[o>>1]&ovfBit(o) == 0 {
					return b, h, uint64(bi), sig, true
				}
			}
		}
	}
	return 0, 0, 0, 0, false
}

// findAs walks sig's probe chain in ht as a lookup of a reader with hide
// bit hide does (going on past a bucket only while scan says so), and says
// whether it meets entry idx.
func findAs(ht *htab, sig, idx, hide uint32) bool {
	bi := ht.home(sig)
	for n := uint64(0); n < ht.nb; n++ {
		m, more := ht.b[bi].scan(sig)
		for ; m != 0; m &= m - 1 {
			if x, ok := ht.b[bi].ref(bits.TrailingZeros32(m)&7, hide); ok && x == idx {
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

// TestOverflowBits: batches of adds and removes, as applyMutations makes
// them (hide marks, growth in the middle of a batch, finalize), on a table
// whose signatures crowd onto a few home buckets, so that chains run over
// many full buckets. After every batch and in the middle of each (as the
// readers of either view find the table), no slot lies past a bucket
// without its signature's overflow bit, and every rule a view holds is
// found by a lookup that goes on only where scan says to.
func TestOverflowBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	var w writerState
	tab := &tupleTab{}
	tab.ht.init(8)
	type slot struct{ sig, idx uint32 }
	live := map[slot]bool{}
	var order []slot
	next := uint32(1)
	// Signatures of four home buckets (of any table size: the top bits),
	// with low bytes that pick every overflow slot.
	newSig := func() uint32 {
		return uint32(rng.IntN(4))<<29 | uint32(rng.IntN(1<<20))<<8 | uint32(rng.IntN(256)) | 2
	}
	check := func(what string, ht *htab, want map[slot]bool, hide uint32) {
		t.Helper()
		if b, h, at, sig, bad := ovfHoles(ht); bad {
			t.Fatalf("%s: signature %#x homed at bucket %d lies at %d, but bucket %d lacks its overflow bit", what, sig, h, at, b)
		}
		for s := range want {
			if !findAs(ht, s.sig, s.idx, hide) {
				t.Fatalf("%s: %+v not found", what, s)
			}
		}
	}
	maxChain := 0
	for batch := 0; batch < 300; batch++ {
		side := batch & 1
		mk := marks{add: hideBit(1 - side), del: hideBit(side)}
		fresh := false
		before := tab.ht
		was := make(map[slot]bool, len(live))
		for s := range live {
			was[s] = true
		}
		type mut struct {
			s   slot
			add bool
			pos uint64
		}
		var muts []mut
		for op := 0; op < 1+rng.IntN(24); op++ {
			if rng.IntN(5) < 3 || len(order) == 0 {
				ht := &tab.ht
				if (ht.used+ht.tombs+1)*maxLoadDen > len(ht.b)*8*maxLoadNum {
					w.grow(tab, mk, fresh)
					fresh, mk = true, marks{}
				}
				s := slot{sig: newSig(), idx: next}
				next++
				pos := tab.ht.insert(s.sig, s.idx|mk.add, !fresh)
				muts = append(muts, mut{s, true, pos})
				live[s] = true
				order = append(order, s)
			} else {
				k := rng.IntN(len(order))
				s := order[k]
				order[k] = order[len(order)-1]
				order = order[:len(order)-1]
				pos, ok := tab.ht.remove(s.sig, s.idx, mk)
				if !ok {
					t.Fatalf("batch %d: remove of %+v found nothing", batch, s)
				}
				muts = append(muts, mut{s, false, pos})
				delete(live, s)
			}
		}
		// Published: readers of side find the batch's table, readers of
		// the other view the one before it (the old buckets, if grown).
		check("published, new view", &tab.ht, live, hideBit(side))
		if fresh {
			check("published, old view's buckets", &before, was, hideBit(1-side))
		} else {
			check("published, old view", &tab.ht, was, hideBit(1-side))
			for _, m := range muts {
				tab.ht.finalize(m.pos, m.s.idx, m.add, mk)
			}
		}
		check("settled", &tab.ht, live, hideBit(side))
		check("settled, other view", &tab.ht, live, hideBit(1-side))
		for s := range was {
			if !live[s] && findAs(&tab.ht, s.sig, s.idx, hideBit(side)) {
				t.Fatalf("batch %d: removed %+v found", batch, s)
			}
		}
		for s := range live {
			n, bi := 1, tab.ht.home(s.sig)
			for !findIn(&tab.ht.b[bi], s.sig, s.idx) {
				n++
				bi = tab.ht.next(bi)
			}
			maxChain = max(maxChain, n)
		}
	}
	// The test is only worth its name if chains ran over several full
	// buckets.
	if maxChain < 4 {
		t.Fatalf("longest chain %d buckets: the signatures did not crowd", maxChain)
	}
}

// findIn says whether bucket bk holds entry idx under sig.
func findIn(bk *bucket, sig, idx uint32) bool {
	for s := 0; s < 8; s++ {
		if bk.sig(s) == sig && bk.ixw[s]&idxMask == idx {
			return true
		}
	}
	return false
}

// TestDenseTableFound: a tuple's table filled to near its growth limit,
// then churned (deletes, adds that grow it, deletes again) through Apply;
// after each step every installed rule is found by the datapath's bulk
// lookup (NIC.lookup, with its own copy of scan) and no deleted one is, and
// no slot lies past a bucket without its overflow bit.
func TestDenseTableFound(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.MaxRules = 1 << 15 })
	const total = 6000
	installFlows(t, n, total)
	live := make(map[int]bool, total)
	for f := 0; f < total; f++ {
		live[f] = true
	}
	rng := rand.New(rand.NewPCG(15, 16))
	del := func(count int) {
		var ops []hal.Op
		for f := range live {
			if len(ops) == count {
				break
			}
			ops = append(ops, hal.DeleteOp(hal.RuleID(f+1)))
			delete(live, f)
		}
		for len(ops) > 0 {
			k := min(len(ops), DefaultMaxBatch)
			mustApply(t, n, ops[:k]...)
			ops = ops[k:]
		}
	}
	add := func(count int) {
		var ops []hal.Op
		for len(ops) < count {
			f := rng.IntN(1 << 15)
			if live[f] {
				continue
			}
			live[f] = true
			ops = append(ops, hal.AddOp(flowRule(f)))
		}
		for len(ops) > 0 {
			k := min(len(ops), DefaultMaxBatch)
			mustApply(t, n, ops[:k]...)
			ops = ops[k:]
		}
	}
	verify := func(step string) {
		t.Helper()
		s := n.rcu.enter()
		defer n.rcu.exit(s)
		v := &n.rcu.views[s]
		overflowed := 0
		for _, tab := range v.tabs {
			if b, h, at, sig, bad := ovfHoles(&tab.ht); bad {
				t.Fatalf("%s: signature %#x homed at bucket %d lies at %d, but bucket %d lacks its overflow bit", step, sig, h, at, b)
			}
			for bi := range tab.ht.b {
				if tab.ht.b[bi].overflowed() {
					overflowed++
				}
			}
		}
		if overflowed == 0 {
			t.Fatalf("%s: no bucket overflowed: the table is not dense enough to test chains", step)
		}
		bu := newBurst(n.burstSz, false)
		frames := make([][]byte, MaxBurst)
		for i := range frames {
			frames[i] = make([]byte, benchFrameLen)
		}
		// Every flow of the key space: the live ones hit their own rule,
		// the others nothing.
		for base := 0; base < 1<<15; base += MaxBurst {
			for i := 0; i < MaxBurst; i++ {
				writeFlowFrame(frames[i], base+i)
				if !parseFast(frames[i], pVM1, &bu.w[i]) {
					t.Fatal("a flow's frame is not one parseFast takes")
				}
				bu.fate[i], bu.best[i], bu.prio[i] = fatePending, noRule, -1
			}
			for _, tab := range v.tabs {
				n.lookup(bu, v, tab, MaxBurst)
			}
			for i := 0; i < MaxBurst; i++ {
				f := base + i
				switch {
				case live[f] && bu.best[i] == noRule:
					t.Fatalf("%s: flow %d's rule not found", step, f)
				case live[f] && idOf(v.chunks, bu.best[i]) != hal.RuleID(f+1):
					t.Fatalf("%s: flow %d found rule %d", step, f, idOf(v.chunks, bu.best[i]))
				case !live[f] && bu.best[i] != noRule:
					t.Fatalf("%s: deleted flow %d found rule %d", step, f, idOf(v.chunks, bu.best[i]))
				}
			}
		}
	}
	verify("filled")
	del(total / 3)
	verify("a third deleted")
	add(total)
	verify("grown")
	del(total / 2)
	add(total / 4)
	verify("churned")
}
