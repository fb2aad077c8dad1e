package softnic

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// withIPOptions returns frame (untagged IPv4, from writeFlowFrame) with
// four bytes of NOP options in its IPv4 header: the same flow key, but a
// frame parseFast leaves to wire.Parse.
func withIPOptions(frame []byte) []byte {
	out := make([]byte, 0, len(frame)+4)
	out = append(out, frame[:34]...)
	out = append(out, 1, 1, 1, 1)
	out = append(out, frame[34:]...)
	ip := out[14:]
	ip[0] = 0x46
	binary.BigEndian.PutUint16(ip[2:4], binary.BigEndian.Uint16(ip[2:4])+4)
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:12], wire.Checksum(ip[:24], 0))
	return out
}

// TestParseBurstLists: with b.pre, parseBurst does the first (exact4)
// tuple's first lookup pass: it lists the packets that tuple probes, in
// the order hashExact4 does, each packed and hashed as hashExact4 does it,
// and lookup takes that list. Every packet must come out of the lookup
// as it does without it (best, prio, prog), and every flow frame with a
// rule this view sees must hit that rule. The bursts mix frames parseFast
// takes and frames wire.Parse takes (IPv4 options: the same key), misses,
// IPv6, and frames dropped in the parse; the table is loaded so that
// probe chains go on past home buckets, and some rules' slots are hidden
// from the reader's view (a batch being published).
func TestParseBurstLists(t *testing.T) {
	const rules = 12000
	n := newNIC(t, func(c *Config) { c.MaxRules = 1 << 14 })
	installFlows(t, n, rules)
	// A lower-priority tuple after the exact one: the lookup of the
	// second table runs after the lookahead's.
	var wide hal.Match
	wide.IPDst(hal.MustPrefix("198.18.0.0/15"))
	mustApply(t, n, hal.AddOp(hal.Rule{ID: 1 << 20, Priority: 10, Match: wide, Actions: remoteActions[0]}))
	in := mustPort(t, n, pVM1)

	s := n.rcu.enter()
	defer n.rcu.exit(s)
	v := &n.rcu.views[s]
	if len(v.tabs) != 2 || !v.tabs[0].shape.exact4 {
		t.Fatalf("%d tuples, the first exact4 %v: want the exact tuple first", len(v.tabs), len(v.tabs) > 0 && v.tabs[0].shape.exact4)
	}
	ht := &v.tabs[0].ht
	// Hide every fifth flow's slot from this view, and put them back
	// when done.
	hidden := map[int]bool{}
	var restore []func()
	for bi := range ht.b {
		bk := &ht.b[bi]
		for sl := 0; sl < 8; sl++ {
			if bk.sig(sl) < 2 {
				continue
			}
			idx, _ := bk.ref(sl, v.hide)
			f := int(idOf(v.chunks, idx)) - 1
			if f%5 != 0 {
				continue
			}
			hidden[f] = true
			x := atomic.LoadUint32(&bk.ixw[sl])
			bk.setIdx(sl, x|v.hide)
			restore = append(restore, func() { bk.setIdx(sl, x) })
		}
	}
	defer func() {
		for _, r := range restore {
			r()
		}
	}()
	if len(hidden) == 0 {
		t.Fatal("no slot hidden")
	}

	six := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: netip.MustParseAddr("2001:db8::1"),
		Dst: netip.MustParseAddr("2001:db8::2"), Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2})
	bufs := make([][]byte, MaxBurst)
	sizes := make([]int, MaxBurst)
	for i := range bufs {
		bufs[i] = make([]byte, Headroom+128)
	}
	flows := make([]int, MaxBurst) // the flow of frame i, -1 for none
	var b1, b2 burst
	r := rand.New(rand.NewPCG(3, 4))
	var listed, slow int
	for round := 0; round < 400; round++ {
		k := 1 + r.IntN(MaxBurst)
		for i := 0; i < k; i++ {
			f := r.IntN(rules + rules/4) // a fifth of them misses
			flows[i] = f
			var fr [benchFrameLen]byte
			writeFlowFrame(fr[:], f)
			frame := fr[:]
			switch r.IntN(10) {
			case 0:
				frame = withIPOptions(frame)
			case 1:
				frame, flows[i] = six, -1
			}
			copy(bufs[i][Headroom:], frame)
			sizes[i] = len(frame)
			if r.IntN(20) == 0 {
				sizes[i], flows[i] = 1<<12, -1 // dropped in the parse
			}
		}
		b1.pre = ht
		n.parseBurst(&b1, in, bufs[:k], sizes[:k], Headroom)
		n.parseBurst(&b2, in, bufs[:k], sizes[:k], Headroom)
		nt := hashExact4(&b2, ht, int32(v.tabs[0].maxPrio), k)
		if b1.preT != nt || string(b1.todo[:nt]) != string(b2.todo[:nt]) {
			t.Fatalf("round %d: the parse listed %v, hashExact4 %v", round, b1.todo[:b1.preT], b2.todo[:nt])
		}
		for _, i := range b1.todo[:nt] {
			if b1.pk[i] != b2.pk[i] || b1.sig[i] != b2.sig[i] || b1.bkt[i] != b2.bkt[i] {
				t.Fatalf("round %d, packet %d: the parse hashed %#x sig %#x bucket %d, hashExact4 %#x sig %#x bucket %d",
					round, i, b1.pk[i], b1.sig[i], b1.bkt[i], b2.pk[i], b2.sig[i], b2.bkt[i])
			}
			listed++
			if !b1.lazy[i] {
				slow++
			}
		}
		for _, tab := range v.tabs { // the first takes the parse's list
			n.lookup(&b1, v, tab, k)
		}
		b1.pre = nil
		for _, tab := range v.tabs {
			n.lookup(&b2, v, tab, k)
		}
		for i := 0; i < k; i++ {
			if b1.fate[i] != b2.fate[i] || b1.best[i] != b2.best[i] || b1.prio[i] != b2.prio[i] ||
				(b1.best[i] != noRule && b1.prog[i] != b2.prog[i]) {
				t.Fatalf("round %d, packet %d (flow %d): fate %d rule %d prio %d with the parse's list, fate %d rule %d prio %d without",
					round, i, flows[i], b1.fate[i], b1.best[i], b1.prio[i], b2.fate[i], b2.best[i], b2.prio[i])
			}
			f := flows[i]
			if f < 0 {
				continue
			}
			var want hal.RuleID = 1 << 20 // the wide rule
			if f < rules && !hidden[f] {
				want = hal.RuleID(f + 1)
			}
			if b1.best[i] == noRule || idOf(v.chunks, b1.best[i]) != want {
				t.Fatalf("round %d, packet %d: flow %d found rule %d, want %d", round, i, f, idOf(v.chunks, b1.best[i]), want)
			}
		}
	}
	// The list held frames of both parses.
	if listed == slow || slow == 0 {
		t.Fatalf("listed in the parse: %d packets, %d from wire.Parse", listed, slow)
	}
}
