package softnic

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// TestTableAgainstModel is a differential test of the rule table against a
// plain map of rules: random batches of adds, deletes and modifies (some
// all-or-nothing batches that fail and must leave the table as it was) of
// rules of four shapes, exact 5-tuples (large entries), mapping-like
// /32 rules on in_port, source MAC and addresses (tiny entries), the same
// on the destination with its UDP port (small entries) and /24 prefixes
// (tiny entries, a fourth mask), with and without a Count action,
// with one cookie or several. After each batch: Dump holds exactly the
// model's rules with their cookies and exact counts, and packets of sampled
// flows come out with the MAC of the rule the model says wins (highest
// priority, then lowest ID), or miss when the model has none. It runs
// twice: with batches in the order they come (as below sortMin), and with
// every batch's mutations in signature order (sortMin 1: addMut,
// sortMutations, sizeForAdds), failed all-or-nothing batches included.
func TestTableAgainstModel(t *testing.T) {
	t.Run("order", testTableAgainstModel)
	t.Run("sorted", func(t *testing.T) {
		defer func(m int) { sortMin = m }(sortMin)
		sortMin = 1
		testTableAgainstModel(t)
	})
}

func testTableAgainstModel(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.MaxRules = 1 << 14; c.RingSize = 1024; c.ExceptionQueue = 1024 })
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(20, 4))
	const flows = 3000
	frameOf := func(f int) []byte {
		// Three flows (source ports) per destination.
		dst := netip.AddrFrom4([4]byte{198, 18, byte(f / 3 >> 8), byte(f / 3)})
		return udp4(caVM1, dst, uint16(1000+f%3), 53, 0)
	}
	keys := make([]hal.FlowKey, flows)
	for f := range keys {
		keys[f], _ = parse(t, frameOf(f))
		keys[f].InPort = pVM1 // as the NIC keys it
	}
	type mrule struct {
		r           hal.Rule
		counts      bool
		pkts, bytes uint64
	}
	model := map[hal.RuleID]*mrule{}
	macOf := func(id hal.RuleID) hal.MAC {
		return hal.MAC{0x02, byte(id >> 32), byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
	}
	newRule := func(id hal.RuleID) hal.Rule {
		f := rng.IntN(flows)
		var m hal.Match
		prio := uint16(1 + rng.IntN(4))
		switch rng.IntN(4) {
		case 0:
			m = hal.Exact(&keys[f])
			prio = 100
		case 1:
			m.InPort(pVM1).EthSrc(macVM1).IPSrc(netip.PrefixFrom(caVM1, 32)).IPDst(netip.PrefixFrom(netip.AddrFrom16(keys[f].IPDst).Unmap(), 32))
			prio = uint16(50 + rng.IntN(2))
		case 2:
			m.InPort(pVM1).EthSrc(macVM1).IPDst(netip.PrefixFrom(netip.AddrFrom16(keys[f].IPDst).Unmap(), 32)).Proto(hal.ProtoUDP).L4Dst(53)
			prio = uint16(50 + rng.IntN(2))
		default:
			m.IPDst(netip.PrefixFrom(netip.AddrFrom16(keys[f].IPDst).Unmap(), 24).Masked())
		}
		out := pUplink
		if rng.IntN(2) == 0 {
			out = pVM2
		}
		acts := []hal.Action{hal.SetEthDst(macOf(id)), hal.Output(out)}
		if rng.IntN(2) == 0 {
			acts = append([]hal.Action{hal.Count()}, acts...)
		}
		cookie := hal.Cookie(7)
		if rng.IntN(8) == 0 {
			cookie = hal.Cookie(rng.Uint64())
		}
		return hal.Rule{ID: id, Priority: prio, Match: m, Actions: acts, Cookie: cookie}
	}
	var lastMisses uint64
	outs := []*Port{mustPort(t, n, pVM2), mustPort(t, n, pUplink)}
	rbufs, rsizes := [][]byte{make([]byte, 2048), make([]byte, 2048)}, make([]int, 2)
	countsOf := func(r *hal.Rule) bool { return r.Actions[0].Kind == hal.ActionCount }
	nextID := hal.RuleID(1)
	var ids []hal.RuleID // the model's, in order: picks are reproducible
	for round := 0; round < 40; round++ {
		if round == 20 {
			// IDs beyond 32 bits from here on, beside the small ones
			// (chunk.id's wide form), ties between them included.
			nextID = 1<<33 + 1
		}
		ids = ids[:0]
		for id := range model {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		size := 1 + rng.IntN(400)
		if round%10 == 3 {
			size = 3000 // beyond a chunk of each size at once
		}
		var ops []hal.Op
		planned := map[hal.RuleID]bool{} // IDs the batch already names
		for len(ops) < size {
			switch x := rng.IntN(10); {
			case x < 5 || len(model) == 0:
				ops = append(ops, hal.AddOp(newRule(nextID)))
				planned[nextID] = true
				nextID++
			default:
				id := ids[rng.IntN(len(ids))]
				if planned[id] {
					continue
				}
				planned[id] = true
				if x < 8 {
					ops = append(ops, hal.DeleteOp(id))
				} else {
					ops = append(ops, hal.Op{Kind: hal.OpModify, Rule: newRule(id)})
				}
			}
		}
		atomicFail := round%7 == 5 && len(model) > 0
		if atomicFail {
			// A duplicate add fails the whole batch.
			ops = append(ops, hal.AddOp(model[ids[rng.IntN(len(ids))]].r))
			rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
			res := make([]hal.OpResult, len(ops))
			if err := n.ApplyAtomic(ctx, ops, res); err == nil {
				t.Fatalf("round %d: atomic batch with a duplicate add landed", round)
			}
		} else {
			res := make([]hal.OpResult, len(ops))
			if err := n.Apply(ctx, ops, res); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			for _, op := range ops {
				switch op.Kind {
				case hal.OpAdd:
					model[op.Rule.ID] = &mrule{r: op.Rule, counts: countsOf(&op.Rule)}
				case hal.OpDelete:
					delete(model, op.Rule.ID)
				case hal.OpModify:
					m := model[op.Rule.ID]
					m.r, m.counts = op.Rule, countsOf(&op.Rule)
				}
			}
		}
		// Every rule's destination lies in the /24 of its flow: only the
		// rules of a packet's /24 can match it.
		by24 := map[byte][]*mrule{}
		for _, m := range model {
			d := m.r.Match.Key.IPDst[14]
			by24[d] = append(by24[d], m)
		}
		// Packets of sampled flows.
		readExc(t, n) // the previous round's misses
		for s := 0; s < 100; s++ {
			f := rng.IntN(flows)
			var win *mrule
			for _, m := range by24[keys[f].IPDst[14]] {
				if !m.r.Match.Matches(&keys[f]) {
					continue
				}
				if win == nil || m.r.Priority > win.r.Priority || (m.r.Priority == win.r.Priority && m.r.ID < win.r.ID) {
					win = m
				}
			}
			frame := frameOf(f)
			send(t, n, pVM1, frame)
			var got []byte
			for _, p := range outs {
				k, err := p.Recv(rbufs, rsizes)
				if err != nil {
					t.Fatal(err)
				}
				if k == 1 {
					got = rbufs[0][:rsizes[0]]
				}
			}
			misses := stats(t, n).Exceptions[hal.ReasonMiss]
			missed := misses - lastMisses
			lastMisses = misses
			switch {
			case win == nil && (got != nil || missed != 1):
				t.Fatalf("round %d flow %d: no rule, got frame %v, %d misses", round, f, got != nil, missed)
			case win != nil && (got == nil || hal.MAC(got[:6]) != macOf(win.r.ID)):
				var other string
				if got != nil {
					gid := hal.RuleID(got[1])<<32 | hal.RuleID(got[2])<<24 | hal.RuleID(got[3])<<16 | hal.RuleID(got[4])<<8 | hal.RuleID(got[5])
					if m := model[gid]; m != nil {
						other = fmt.Sprintf("rule %d prio %d %s", gid, m.r.Priority, m.r.Match.String())
					}
				}
				t.Fatalf("round %d flow %d: want rule %d prio %d (%s), got frame %x (%s), %d misses", round, f, win.r.ID, win.r.Priority, win.r.Match.String(), got, other, missed)
			}
			if win != nil && win.counts {
				win.pkts++
				win.bytes += uint64(len(frame))
			}
		}
		// Dump is the model, counts exact.
		seen := 0
		err := n.Dump(ctx, func(info *hal.RuleInfo) error {
			seen++
			m := model[info.Rule.ID]
			if m == nil {
				t.Fatalf("round %d: Dump has rule %d, the model does not", round, info.Rule.ID)
			}
			if info.Rule.Priority != m.r.Priority || info.Rule.Cookie != m.r.Cookie || !info.Live {
				t.Fatalf("round %d: rule %d dumped as prio %d cookie %#x live %v, want %d %#x", round, info.Rule.ID,
					info.Rule.Priority, info.Rule.Cookie, info.Live, m.r.Priority, m.r.Cookie)
			}
			got, want := info.Rule.Match, m.r.Match
			got.Normalize()
			want.Normalize()
			if got != want {
				t.Fatalf("round %d: rule %d dumped with match %s, want %s", round, info.Rule.ID, info.Rule.Match.String(), m.r.Match.String())
			}
			if info.Counters.Packets != m.pkts || info.Counters.Bytes != m.bytes {
				t.Fatalf("round %d: rule %d counts %+v, want %d packets %d bytes", round, info.Rule.ID, info.Counters, m.pkts, m.bytes)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if seen != len(model) {
			t.Fatalf("round %d: Dump has %d rules, the model %d", round, seen, len(model))
		}
	}
}
