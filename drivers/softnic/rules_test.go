package softnic

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"testing"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// outPortOf sends one frame from vm1 and says where it went: the port it
// came out of, or 0 with the exception reason.
func outPortOf(t *testing.T, n *NIC, f []byte) (hal.PortID, hal.Reason, hal.RuleID) {
	t.Helper()
	send(t, n, pVM1, f)
	for _, id := range []hal.PortID{pVM1, pVM2, pUplink} {
		if out := recvAll(t, n, id); len(out) > 0 {
			return id, 0, 0
		}
	}
	exc := readExc(t, n)
	if len(exc) == 1 {
		return 0, exc[0].Reason, exc[0].Rule
	}
	return 0, hal.ReasonNone, 0
}

func TestPrioritiesMasksAndTies(t *testing.T) {
	n := newNIC(t)
	var wide, narrow, exact, proto hal.Match
	wide.IPDst(hal.MustPrefix("198.18.0.0/16"))
	narrow.IPDst(hal.MustPrefix("198.18.20.0/24"))
	exact.IPDst(hal.MustPrefix("198.18.20.7/32")).Proto(hal.ProtoUDP).L4Dst(53)
	proto.Proto(hal.ProtoUDP).EthType(hal.EtherTypeIPv4)
	mustApply(t, n,
		hal.AddOp(hal.Rule{ID: 10, Priority: 1, Match: wide, Actions: []hal.Action{hal.Output(pVM2)}}),
		hal.AddOp(hal.Rule{ID: 20, Priority: 5, Match: narrow, Actions: []hal.Action{hal.Output(pUplink)}}),
		hal.AddOp(hal.Rule{ID: 30, Priority: 9, Match: exact, Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}),
	)
	dst := func(a string, dp uint16) []byte { return udp4(caVM1, netip.MustParseAddr(a), 7, dp, 0) }
	if p, _, _ := outPortOf(t, n, dst("198.18.1.1", 53)); p != pVM2 {
		t.Fatalf("wide prefix: port %d", p)
	}
	if p, _, _ := outPortOf(t, n, dst("198.18.20.9", 53)); p != pUplink {
		t.Fatalf("narrow prefix wins by priority: port %d", p)
	}
	if p, r, _ := outPortOf(t, n, dst("198.18.20.7", 53)); p != 0 || r != hal.ReasonNone {
		t.Fatalf("exact drop rule: port %d reason %v", p, r)
	}
	if p, _, _ := outPortOf(t, n, dst("198.18.20.7", 54)); p != pUplink {
		t.Fatalf("other port falls to the /24: %d", p)
	}
	if p, r, _ := outPortOf(t, n, dst("198.19.0.1", 53)); p != 0 || r != hal.ReasonMiss {
		t.Fatalf("outside every prefix: port %d reason %v", p, r)
	}
	// A lower-priority rule must not win even if its table is probed first;
	// a tie goes to the lower rule ID, whatever the mask.
	mustApply(t, n,
		hal.AddOp(hal.Rule{ID: 8, Priority: 5, Match: proto, Actions: []hal.Action{hal.Output(pVM1)}}),
	)
	if p, _, _ := outPortOf(t, n, dst("198.18.20.9", 80)); p != pVM1 {
		t.Fatalf("tie at priority 5: rule 8 (lower ID) must win, got port %d", p)
	}
	mustApply(t, n, hal.ModifyOp(hal.Rule{ID: 8, Priority: 4, Match: proto, Actions: []hal.Action{hal.Output(pVM1)}}))
	if p, _, _ := outPortOf(t, n, dst("198.18.20.9", 80)); p != pUplink {
		t.Fatalf("after lowering rule 8: port %d", p)
	}
	if p, _, _ := outPortOf(t, n, dst("198.19.0.1", 80)); p != pVM1 {
		t.Fatalf("proto-only rule: port %d", p)
	}
	s := stats(t, n)
	if s.Drops[hal.ReasonPolicy] != 1 {
		t.Fatalf("policy drops %d", s.Drops[hal.ReasonPolicy])
	}
}

func TestGenerations(t *testing.T) {
	n := newNIC(t)
	ctx := context.Background()
	var m hal.Match
	m.InPort(pVM1).IPDst(netip.PrefixFrom(caRem, 32))
	// The same match in two generations of scope 7: today's mapping and the
	// shadow mapping of a migrating VM.
	mustApply(t, n,
		hal.AddOp(hal.Rule{ID: 1, Priority: 1, Match: m, Scope: 7, Generation: 0, Actions: []hal.Action{hal.Output(pVM2)}}),
		hal.AddOp(hal.Rule{ID: 2, Priority: 1, Match: m, Scope: 7, Generation: 1, Actions: []hal.Action{hal.Output(pUplink)}}),
	)
	f := udp4(caVM1, caRem, 1, 2, 0)
	if p, _, _ := outPortOf(t, n, f); p != pVM2 {
		t.Fatalf("generation 0: port %d", p)
	}
	if err := n.Activate(ctx, 7, 1); err != nil {
		t.Fatal(err)
	}
	if g, _ := n.ActiveGeneration(7); g != 1 {
		t.Fatalf("active generation %d", g)
	}
	if p, _, _ := outPortOf(t, n, f); p != pUplink {
		t.Fatalf("generation 1: port %d", p)
	}
	if err := n.Activate(ctx, 7, 2); err != nil {
		t.Fatal(err)
	}
	if _, r, _ := outPortOf(t, n, f); r != hal.ReasonMiss {
		t.Fatalf("generation 2 has no rule: %v", r)
	}
	// Activating a scope before its rules exist: they are live on arrival.
	if err := n.Activate(ctx, 99, 5); err != nil {
		t.Fatal(err)
	}
	var m2 hal.Match
	m2.InPort(pVM1).IPDst(netip.PrefixFrom(caVM2, 32))
	mustApply(t, n, hal.AddOp(hal.Rule{ID: 3, Match: m2, Scope: 99, Generation: 5, Actions: []hal.Action{hal.Output(pVM2)}}))
	if p, _, _ := outPortOf(t, n, udp4(caVM1, caVM2, 1, 2, 0)); p != pVM2 {
		t.Fatalf("pre-activated scope: port %d", p)
	}
	live := map[hal.RuleID]bool{}
	if err := n.Dump(ctx, func(ri *hal.RuleInfo) error { live[ri.Rule.ID] = ri.Live; return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(live, map[hal.RuleID]bool{1: false, 2: false, 3: true}) {
		t.Fatalf("Dump liveness %v", live)
	}
}

func TestTableFull(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.MaxRules = 3 })
	ops := make([]hal.Op, 5)
	for i := range ops {
		ops[i] = hal.AddOp(flowRule(i))
	}
	res := make([]hal.OpResult, len(ops))
	err := n.Apply(context.Background(), ops, res)
	if !errors.Is(err, hal.ErrTableFull) {
		t.Fatalf("got %v, want ErrTableFull", err)
	}
	for i, r := range res {
		if (i < 3) != (r.Err == nil) || (i >= 3 && !errors.Is(r.Err, hal.ErrTableFull)) {
			t.Fatalf("result %d: %v", i, r.Err)
		}
	}
	// A delete and an add in one batch fit.
	mustApply(t, n, hal.DeleteOp(1), hal.AddOp(flowRule(3)))
	if got := dumpIDs(t, n); !reflect.DeepEqual(got, []hal.RuleID{2, 3, 4}) {
		t.Fatalf("rules %v", got)
	}
	if c := n.Capabilities(); c.MaxRules != 3 {
		t.Fatalf("MaxRules %d", c.MaxRules)
	}
}

func dumpIDs(t *testing.T, n *NIC) []hal.RuleID {
	t.Helper()
	var ids []hal.RuleID
	if err := n.Dump(context.Background(), func(ri *hal.RuleInfo) error { ids = append(ids, ri.Rule.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func TestBatchWithInvalidOps(t *testing.T) {
	bad := flowRule(50)
	bad.Actions = []hal.Action{hal.Count()} // no terminal action
	noPort := flowRule(51)
	noPort.Actions = []hal.Action{hal.Output(42)}
	ops := []hal.Op{
		hal.AddOp(flowRule(0)),
		hal.AddOp(bad),
		hal.AddOp(flowRule(1)),
		hal.AddOp(flowRule(0)), // ID taken
		hal.DeleteOp(777),
		hal.AddOp(noPort),
		hal.ModifyOp(flowRule(900)),
		{Kind: 9, Rule: flowRule(2)},
	}
	check := func(t *testing.T, res []hal.OpResult, atomic bool) {
		want := []error{nil, hal.ErrInvalidRule, nil, hal.ErrExists, hal.ErrNotFound, hal.ErrNotFound, hal.ErrNotFound, hal.ErrInvalidRule}
		for i, w := range want {
			if w == nil {
				if atomic && !errors.Is(res[i].Err, hal.ErrNotApplied) {
					t.Fatalf("op %d: %v, want ErrNotApplied", i, res[i].Err)
				}
				if !atomic && res[i].Err != nil {
					t.Fatalf("op %d: %v", i, res[i].Err)
				}
				continue
			}
			if !errors.Is(res[i].Err, w) {
				t.Fatalf("op %d: %v, want %v", i, res[i].Err, w)
			}
		}
	}
	t.Run("independent", func(t *testing.T) {
		n := newNIC(t)
		res := make([]hal.OpResult, len(ops))
		err := n.Apply(context.Background(), ops, res)
		var be *hal.BatchError
		if !errors.As(err, &be) || be.Failed != 6 || be.Index != 1 {
			t.Fatalf("batch error %#v", err)
		}
		check(t, res, false)
		if got := dumpIDs(t, n); !reflect.DeepEqual(got, []hal.RuleID{1, 2}) {
			t.Fatalf("installed %v", got)
		}
	})
	t.Run("atomic", func(t *testing.T) {
		n := newNIC(t)
		mustApply(t, n, hal.AddOp(flowRule(9)))
		res := make([]hal.OpResult, len(ops)+2)
		all := append([]hal.Op{hal.ModifyOp(flowRule(9)), hal.DeleteOp(10)}, ops...)
		err := n.ApplyAtomic(context.Background(), all, res)
		if err == nil {
			t.Fatal("atomic batch with failures succeeded")
		}
		if !errors.Is(res[0].Err, hal.ErrNotApplied) || !errors.Is(res[1].Err, hal.ErrNotApplied) {
			t.Fatalf("delete/modify: %v %v", res[0].Err, res[1].Err)
		}
		check(t, res[2:], true)
		if got := dumpIDs(t, n); !reflect.DeepEqual(got, []hal.RuleID{10}) {
			t.Fatalf("table changed by a failed atomic batch: %v", got)
		}
		// The rule still works, and a clean atomic batch lands.
		res = res[:2]
		if err := n.ApplyAtomic(context.Background(), []hal.Op{hal.AddOp(flowRule(0)), hal.DeleteOp(10)}, res); err != nil {
			t.Fatal(err)
		}
		if got := dumpIDs(t, n); !reflect.DeepEqual(got, []hal.RuleID{1}) {
			t.Fatalf("after atomic batch: %v", got)
		}
	})
	t.Run("too large", func(t *testing.T) {
		n := newNIC(t, func(c *Config) { c.MaxBatch = 2 })
		res := make([]hal.OpResult, 3)
		err := n.Apply(context.Background(), []hal.Op{hal.AddOp(flowRule(0)), hal.AddOp(flowRule(1)), hal.AddOp(flowRule(2))}, res)
		if !errors.Is(err, ErrBatchTooLarge) || !errors.Is(res[2].Err, ErrBatchTooLarge) || len(dumpIDs(t, n)) != 0 {
			t.Fatalf("%v %v", err, res)
		}
	})
}

func TestDumpRoundTrip(t *testing.T) {
	n := newNIC(t)
	var tun hal.Match
	tun.InPort(pUplink).Tunnel(hal.EncapGeneve, 99).TunSrc(paRem).IPDst(hal.MustPrefix("2001:db8:1::/48"))
	var v4 hal.Match
	v4.IPSrc(hal.MustPrefix("198.18.0.0/15")).Proto(hal.ProtoTCP).L4Dst(443).VLAN(12).EthSrc(macVM1)
	rules := []hal.Rule{
		flowRule(5),
		{ID: 100, Priority: 3, Match: tun, Cookie: 0xfeed, Scope: 4, Generation: 2,
			Actions: []hal.Action{hal.Decap(), hal.PopVLAN(), hal.Count(), hal.Output(pVM1)}},
		{ID: 101, Priority: 65535, Match: v4, Actions: []hal.Action{hal.SetIPDst(caVM2), hal.SetL4Dst(8443), hal.DecTTL(),
			hal.PushVLAN(7), hal.EncapWith(hal.Encap{Kind: hal.EncapGeneve, VNI: 1, Src: pa6Loc, Dst: pa6Rem, GeneveOptions: []byte{0, 1, 2, 0}}), hal.Output(pUplink)}},
		{ID: 102, Match: hal.Match{}, Actions: []hal.Action{hal.ToHost(hal.ReasonPolicy)}},
	}
	var ops []hal.Op
	for _, r := range rules {
		ops = append(ops, hal.AddOp(r))
	}
	mustApply(t, n, ops...)
	got := map[hal.RuleID]hal.Rule{}
	_ = n.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		if ri.Location != hal.LocationUser {
			t.Errorf("location %v", ri.Location)
		}
		got[ri.Rule.ID] = ri.Rule
		return nil
	})
	for _, r := range rules {
		want := r
		want.Match.Normalize()
		if !reflect.DeepEqual(got[r.ID], want) {
			g := got[r.ID]
			t.Errorf("rule %d:\n got %v\nwant %v", r.ID, g.String(), want.String())
		}
	}
	stop := errors.New("stop")
	calls := 0
	if err := n.Dump(context.Background(), func(*hal.RuleInfo) error { calls++; return stop }); err != stop || calls != 1 {
		t.Fatalf("dump stop: %v after %d", err, calls)
	}
}

func TestDisabledCapabilities(t *testing.T) {
	n := newNIC(t, func(c *Config) {
		c.Disable = Disable{
			MatchFields:  hal.MatchVLAN,
			MaskedFields: hal.MatchIPv4Dst,
			Actions:      hal.ActionsOf(hal.ActionSetIPDst),
			Encaps:       hal.EncapsOf(hal.EncapGeneve),
			Decaps:       hal.EncapsOf(hal.EncapVXLAN),
			Generations:  true,
		}
	})
	caps := n.Capabilities()
	if caps.HasMatch(hal.MatchVLAN) || caps.MaskedFields&hal.MatchIPv4Dst != 0 || caps.HasAction(hal.ActionSetIPDst) ||
		caps.Encaps.Has(hal.EncapGeneve) || caps.Decaps.Has(hal.EncapVXLAN) || caps.Generations || caps.Crypto {
		t.Fatalf("capabilities not reduced:\n%v", caps.String())
	}
	var vlan, prefix, exact, vx hal.Match
	vlan.VLAN(3)
	prefix.IPDst(hal.MustPrefix("198.18.0.0/24"))
	exact.IPDst(hal.MustPrefix("198.18.0.1/32"))
	vx.Tunnel(hal.EncapVXLAN, 1)
	gen := hal.Encap{Kind: hal.EncapGeneve, Src: paLocal, Dst: paRem}
	refused := []hal.Rule{
		{ID: 1, Match: vlan, Actions: []hal.Action{hal.Output(1)}},
		{ID: 2, Match: prefix, Actions: []hal.Action{hal.Output(1)}},
		{ID: 3, Match: exact, Actions: []hal.Action{hal.SetIPDst(caVM1), hal.Output(1)}},
		{ID: 4, Match: exact, Actions: []hal.Action{hal.EncapWith(gen), hal.Output(1)}},
		{ID: 5, Match: vx, Actions: []hal.Action{hal.Decap(), hal.Output(1)}},
		{ID: 6, Match: vx, Actions: []hal.Action{hal.Output(1)}},
		{ID: 7, Match: exact, Generation: 1, Actions: []hal.Action{hal.Output(1)}},
	}
	for _, r := range refused {
		if err := n.Validate(&r); !errors.Is(err, hal.ErrNotSupported) {
			t.Errorf("rule %d (%v): Validate %v, want ErrNotSupported", r.ID, r.String(), err)
		}
		res := make([]hal.OpResult, 1)
		if err := n.Apply(context.Background(), []hal.Op{hal.AddOp(r)}, res); !errors.Is(err, hal.ErrNotSupported) {
			t.Errorf("rule %d: Apply %v", r.ID, err)
		}
	}
	ok := hal.Rule{ID: 8, Match: exact, Actions: []hal.Action{hal.EncapWith(vxlanTo(paRem, 3)), hal.Output(pUplink)}}
	if err := n.Validate(&ok); err != nil {
		t.Fatalf("allowed rule refused: %v", err)
	}
	if err := n.Activate(context.Background(), 1, 1); !errors.Is(err, hal.ErrNotSupported) {
		t.Fatalf("Activate: %v", err)
	}
	// The datapath does not decapsulate VXLAN: such frames go to the host
	// with ReasonUnsupported, even though a catch-all rule would output them.
	mustApply(t, n, hal.AddOp(hal.Rule{ID: 9, Actions: []hal.Action{hal.Output(pVM1)}}))
	e := vxlanTo(paLocal, 1)
	e.Src = paRem
	send(t, n, pUplink, wire.BuildEncap(&e, udp4(caRem, caVM1, 1, 2, 0)))
	if out := recvAll(t, n, pVM1); len(out) != 0 {
		t.Fatal("a VXLAN frame was handled by a NIC without VXLAN decap")
	}
	if exc := readExc(t, n); len(exc) != 1 || exc[0].Reason != hal.ReasonUnsupported {
		t.Fatalf("exceptions %+v", exc)
	}
}

func TestClose(t *testing.T) {
	n := newNIC(t)
	mustApply(t, n, hal.AddOp(flowRule(0)))
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		b := []hal.Exception{{Buf: make([]byte, 100)}}
		_, err := n.ReadExceptions(ctx, b)
		done <- err
	}()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, hal.ErrClosed) {
		t.Fatalf("blocked ReadExceptions: %v", err)
	}
	r := flowRule(1)
	res := make([]hal.OpResult, 1)
	p := mustPort(t, n, pVM1)
	for name, err := range map[string]error{
		"Close":            n.Close(),
		"Validate":         n.Validate(&r),
		"Apply":            n.Apply(ctx, []hal.Op{hal.AddOp(r)}, res),
		"ApplyAtomic":      n.ApplyAtomic(ctx, []hal.Op{hal.AddOp(r)}, res),
		"Activate":         n.Activate(ctx, 1, 1),
		"Dump":             n.Dump(ctx, func(*hal.RuleInfo) error { return nil }),
		"Inject":           n.Inject(ctx, pVM1, [][]byte{udp4(caVM1, caVM2, 1, 1, 0)}),
		"RuleCounters":     n.RuleCounters(ctx, []hal.RuleID{1}, make([]hal.Counters, 1)),
		"Process":          n.Process(pVM1, [][]byte{make([]byte, Headroom+60)}, []int{60}, Headroom),
		"ReadExceptions":   func() error { _, err := n.ReadExceptions(ctx, make([]hal.Exception, 1)); return err }(),
		"ActiveGeneration": func() error { _, err := n.ActiveGeneration(1); return err }(),
		"PortCounters":     func() error { _, err := n.PortCounters(ctx, 1); return err }(),
		"Stats":            func() error { _, err := n.Stats(ctx); return err }(),
		"Send":             func() error { _, err := p.Send([][]byte{udp4(caVM1, caVM2, 1, 1, 0)}); return err }(),
	} {
		if !errors.Is(err, hal.ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no ports":  {},
		"bad kind":  {Ports: []PortConfig{{Name: "x"}}},
		"dup names": {Ports: []PortConfig{{Name: "a", Kind: hal.PortVPort}, {Name: "a", Kind: hal.PortUplink}}},
		"tiny MTU":  {Ports: []PortConfig{{Name: "a", Kind: hal.PortVPort, MTU: 10}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

// TestViewsAgree: after batches of every size (some growing the table,
// some adding and removing in one batch), both views' headers point to
// the same hash table, no slot keeps a batch's hide bit, and every
// installed rule is in it.
func TestViewsAgree(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.MaxRules = 1 << 16 })
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	live := map[int]bool{}
	for round, size := range []int{1, 3, 700, 5, 1, 4000, 2, 9000, 17, 1, 30000, 6, 2} {
		ops := make([]hal.Op, 0, size)
		res := make([]hal.OpResult, size)
		for len(ops) < size {
			f := rng.IntN(1 << 15)
			if live[f] {
				ops = append(ops, hal.DeleteOp(hal.RuleID(f+1)))
				delete(live, f)
			} else {
				ops = append(ops, hal.AddOp(flowRule(f)))
				live[f] = true
			}
		}
		if err := n.Apply(ctx, ops, res); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		n.wmu.Lock()
		for _, tup := range n.w.tuples {
			a, b := tup.tabs[0], tup.tabs[1]
			if a == nil || b == nil {
				t.Fatalf("round %d: tuple with a table in one view only", round)
			}
			if tup.inBatch || tup.fresh {
				t.Fatalf("round %d: batch state left between batches (inBatch %v, fresh %v)", round, tup.inBatch, tup.fresh)
			}
			if unsafe.SliceData(a.ht.b) != unsafe.SliceData(b.ht.b) || len(a.ht.b) != len(b.ht.b) || a.ht.nb != b.ht.nb ||
				a.ht.mem != b.ht.mem || a.ht.used != b.ht.used || a.ht.tombs != b.ht.tombs {
				t.Fatalf("round %d: views differ: used %d/%d tombs %d/%d buckets %d/%d",
					round, a.ht.used, b.ht.used, a.ht.tombs, b.ht.tombs, len(a.ht.b), len(b.ht.b))
			}
			if a.ht.used != len(live) {
				t.Fatalf("round %d: %d slots used, %d rules live", round, a.ht.used, len(live))
			}
			used, tombs := 0, 0
			for bi := range a.ht.b {
				bk := &a.ht.b[bi]
				for s := 0; s < 8; s++ {
					switch sig := bk.sig(s); {
					case sig == sigTomb:
						tombs++
					case sig >= 2:
						used++
						if x := bk.ixw[s]; x&^idxMask != 0 {
							t.Fatalf("round %d: slot %d/%d keeps hide bits %#x", round, bi, s, x&^idxMask)
						}
					}
				}
			}
			if used != a.ht.used || tombs != a.ht.tombs {
				t.Fatalf("round %d: %d slots used and %d deleted, the header says %d and %d", round, used, tombs, a.ht.used, a.ht.tombs)
			}
		}
		n.wmu.Unlock()
	}
	// Every live flow hits its rule, every other one misses.
	vm := mustPort(t, n, pVM1)
	up := mustPort(t, n, pUplink)
	frame := make([]byte, benchFrameLen)
	for f := 0; f < 1<<15; f += 97 {
		writeFlowFrame(frame, f)
		before := up.counters().Tx.Packets
		if _, err := vm.Send([][]byte{frame}); err != nil {
			t.Fatal(err)
		}
		if hit := up.counters().Tx.Packets > before; hit != live[f] {
			t.Fatalf("flow %d: hit %v, live %v", f, hit, live[f])
		}
		up.Discard()
	}
}

// TestTupleOfEachRule: rules in a run share the previous rule's tuple only
// when their masks are equal and both are IPv4-only or both not; rules with
// one mask alternating between IPv4 and IPv6 keys land in two tuples.
func TestTupleOfEachRule(t *testing.T) {
	n := newNIC(t)
	var mask hal.FlowKey
	mask.EthType = 0xffff
	mask.IPDst = [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	var ops []hal.Op
	for i := 0; i < 8; i++ {
		k := hal.FlowKey{EthType: hal.EtherTypeIPv4, IPDst: hal.Addr16(netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}))}
		if i%2 == 1 {
			k.EthType = hal.EtherTypeIPv6
			k.IPDst = hal.Addr16(netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", i)))
		}
		ops = append(ops, hal.AddOp(hal.Rule{ID: hal.RuleID(i + 1), Priority: 1,
			Match: hal.Match{Key: k, Mask: mask}, Actions: []hal.Action{hal.Output(pUplink)}}))
	}
	res := make([]hal.OpResult, len(ops))
	if err := n.Apply(context.Background(), ops, res); err != nil {
		t.Fatal(err)
	}
	n.wmu.Lock()
	defer n.wmu.Unlock()
	if len(n.w.tuples) != 2 {
		t.Fatalf("%d tuples, want 2 (IPv4-only and not)", len(n.w.tuples))
	}
	for id, idx := range n.w.byID.all() {
		tup := n.w.tupleByID[n.w.entry(idx).tup]
		if v4 := id%2 == 1; tup.key.v4 != v4 {
			t.Errorf("rule %d: in a tuple with v4 %v, want %v", id, tup.key.v4, v4)
		}
		if tup.rules != 4 {
			t.Errorf("rule %d: its tuple holds %d rules, want 4", id, tup.rules)
		}
	}
}

// TestRuleMACOperand: rules whose actions differ only in the MAC of their
// set_eth_dst (a mapping's per-destination rules) share one program, yet
// every packet leaves with its own rule's MAC (on the short path of MAC
// rewrites and on the general one, with a second set_eth_dst after it),
// Dump gives every rule its own MAC and cookie back, and a modify that
// changes only the MAC takes effect.
func TestRuleMACOperand(t *testing.T) {
	n := newNIC(t)
	const k = 16
	macOf := func(i int) hal.MAC { return hal.MAC{0x02, 0x33, 0, 0, byte(i >> 8), byte(i)} }
	dst := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 30, byte(i)}) }
	rule := func(i int, mac hal.MAC) hal.Rule {
		var extra []hal.Action
		if i%2 == 1 {
			// The general path: a TTL decrement; the later set_eth_dst of
			// odd rules overrides the operand, as the action order says.
			extra = []hal.Action{hal.SetEthDst(mac), hal.DecTTL(), hal.SetEthDst(macNext)}
		} else {
			extra = []hal.Action{hal.SetEthSrc(macVM1), hal.SetEthDst(mac)}
		}
		r := dstRule(hal.RuleID(i+1), dst(i), vxlanTo(paRem, 7), extra...)
		r.Cookie = hal.Cookie(0xc0000 + i)
		return r
	}
	var ops []hal.Op
	for i := 0; i < k; i++ {
		ops = append(ops, hal.AddOp(rule(i, macOf(i))))
	}
	mustApply(t, n, ops...)
	progs := 0
	for _, p := range n.w.progs {
		if p != nil {
			progs++
		}
	}
	if progs != 2 {
		t.Errorf("%d programs for %d rules of two action shapes, want 2", progs, k)
	}
	check := func(want func(i int) hal.MAC) {
		t.Helper()
		for i := 0; i < k; i++ {
			send(t, n, pVM1, udp4(caVM1, dst(i), 1000, 80, 20))
			out := recvAll(t, n, pUplink)
			if len(out) != 1 {
				t.Fatalf("rule %d: %d frames out", i, len(out))
			}
			_, l := parse(t, out[0])
			if got := hal.MAC(out[0][l.L2 : l.L2+6]); got != want(i) {
				t.Errorf("rule %d: inner destination MAC %v, want %v", i, got, want(i))
			}
		}
		seen := 0
		err := n.Dump(context.Background(), func(ri *hal.RuleInfo) error {
			i := int(ri.Rule.ID) - 1
			r := rule(i, macOf(i))
			if i%2 == 0 {
				r = rule(i, want(i))
			}
			if !sameActions(ri.Rule.Actions, r.Actions, -1) || ri.Rule.Cookie != r.Cookie {
				t.Errorf("rule %d dumped as %v cookie %#x, want %v cookie %#x", i, ri.Rule.Actions, ri.Rule.Cookie, r.Actions, r.Cookie)
			}
			seen++
			return nil
		})
		if err != nil || seen != k {
			t.Fatalf("dump: %d rules, %v", seen, err)
		}
	}
	check(func(i int) hal.MAC {
		if i%2 == 1 {
			return macNext
		}
		return macOf(i)
	})
	// A modify of every even rule to another MAC.
	ops = ops[:0]
	for i := 0; i < k; i += 2 {
		ops = append(ops, hal.ModifyOp(rule(i, macOf(500+i))))
	}
	mustApply(t, n, ops...)
	check(func(i int) hal.MAC {
		if i%2 == 1 {
			return macNext
		}
		return macOf(500 + i)
	})
}

// TestScopesDenseAndSparse: generations work the same for scopes the
// writer indexes densely and for one beyond scopeDenseLimit, and Dump
// gives each rule its scope back.
func TestScopesDenseAndSparse(t *testing.T) {
	n := newNIC(t)
	ctx := context.Background()
	scopes := []hal.Scope{3, scopeDenseLimit - 1, scopeDenseLimit, 1 << 30}
	for i, sc := range scopes {
		var m hal.Match
		dst := netip.AddrFrom4([4]byte{198, 18, 40, byte(i)})
		m.InPort(pVM1).IPDst(netip.PrefixFrom(dst, 32))
		mustApply(t, n, hal.AddOp(hal.Rule{ID: hal.RuleID(i + 1), Match: m, Scope: sc, Generation: 1, Actions: []hal.Action{hal.Output(pVM2)}}))
		f := udp4(caVM1, dst, 1, 2, 0)
		if _, r, _ := outPortOf(t, n, f); r != hal.ReasonMiss {
			t.Fatalf("scope %d: generation 1 live before its activation (%v)", sc, r)
		}
		if err := n.Activate(ctx, sc, 1); err != nil {
			t.Fatal(err)
		}
		if p, _, _ := outPortOf(t, n, f); p != pVM2 {
			t.Fatalf("scope %d after activation: port %d", sc, p)
		}
	}
	got := map[hal.RuleID]hal.Scope{}
	if err := n.Dump(ctx, func(ri *hal.RuleInfo) error { got[ri.Rule.ID] = ri.Rule.Scope; return nil }); err != nil {
		t.Fatal(err)
	}
	for i, sc := range scopes {
		if got[hal.RuleID(i+1)] != sc {
			t.Errorf("rule %d dumped in scope %d, want %d", i+1, got[hal.RuleID(i+1)], sc)
		}
	}
}

// TestEmptyTuplesGo: a mask whose last rule is deleted (or moved by a
// modify) leaves the writer's tuples, while a batch that deletes only some
// of a mask's rules keeps it.
func TestEmptyTuplesGo(t *testing.T) {
	n := newNIC(t)
	rule := func(id hal.RuleID, bits int) hal.Rule {
		var m hal.Match
		m.InPort(pVM1).IPDst(netip.PrefixFrom(caRem, bits))
		return hal.Rule{ID: id, Match: m, Actions: []hal.Action{hal.Output(pVM2)}}
	}
	mustApply(t, n, hal.AddOp(rule(1, 32)), hal.AddOp(rule(2, 24)), hal.AddOp(rule(3, 24)))
	if len(n.w.tuples) != 2 {
		t.Fatalf("%d tuples for two masks", len(n.w.tuples))
	}
	mustApply(t, n, hal.DeleteOp(2))
	if len(n.w.tuples) != 2 {
		t.Fatalf("%d tuples after deleting one of two /24 rules, want 2", len(n.w.tuples))
	}
	mustApply(t, n, hal.ModifyOp(rule(3, 16)))
	if len(n.w.tuples) != 2 {
		t.Fatalf("%d tuples after moving the last /24 rule to /16, want 2", len(n.w.tuples))
	}
	mustApply(t, n, hal.DeleteOp(1))
	if len(n.w.tuples) != 1 {
		t.Fatalf("%d tuples after deleting the /32 rule, want 1", len(n.w.tuples))
	}
}

// TestV4TupleIPv4Only: a tuple of IPv4 rules compares neither the EtherType
// nor the address words that IPv4 packets hold fixed (v4Known), so an IPv6
// packet whose addresses are the rule's in IPv4-mapped form, from the same
// port and MAC, must still miss it, and an IPv4 one hit; a rule of the
// same mask with an IPv6 key, in its own tuple, takes the IPv6 packet. Dump
// gives the rules' matches back whole.
func TestV4TupleIPv4Only(t *testing.T) {
	n := newNIC(t)
	src, dst := netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.2.2")
	src6, dst6 := netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16())
	var m4, m6 hal.Match
	m4.InPort(pVM1).EthSrc(macVM1).IPSrc(netip.PrefixFrom(src, 32)).IPDst(netip.PrefixFrom(dst, 32))
	m6.InPort(pVM1).EthSrc(macVM1).IPSrc(netip.PrefixFrom(src6, 128)).IPDst(netip.PrefixFrom(dst6, 128))
	r4 := hal.Rule{ID: 1, Priority: 1, Match: m4, Actions: []hal.Action{hal.Output(pUplink)}}
	mustApply(t, n, hal.AddOp(r4))
	f4 := udp4(src, dst, 1000, 2000, 10)
	f6 := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: src6, Dst: dst6, Proto: hal.ProtoUDP,
		SrcPort: 1000, DstPort: 2000, Payload: make([]byte, 10)})
	if k, _ := parse(t, f6); k.EthType != hal.EtherTypeIPv6 || k.IPSrc != hal.Addr16(src) {
		t.Fatalf("the IPv6 frame parses as %v", k)
	}
	if out, r, _ := outPortOf(t, n, f4); out != pUplink {
		t.Fatalf("IPv4 frame: out %d (%v), want the uplink", out, r)
	}
	if out, r, _ := outPortOf(t, n, f6); out != 0 || r != hal.ReasonMiss {
		t.Fatalf("IPv6 frame with IPv4-mapped addresses: out %d (%v), want a miss", out, r)
	}
	r6 := hal.Rule{ID: 2, Priority: 1, Match: m6, Actions: []hal.Action{hal.Output(pVM2)}}
	mustApply(t, n, hal.AddOp(r6))
	if out, r, _ := outPortOf(t, n, f6); out != pVM2 {
		t.Fatalf("IPv6 frame with its own rule: out %d (%v), want vm2", out, r)
	}
	if out, r, _ := outPortOf(t, n, f4); out != pUplink {
		t.Fatalf("IPv4 frame beside the IPv6 rule: out %d (%v), want the uplink", out, r)
	}
	got := map[hal.RuleID]hal.Match{}
	if err := n.Dump(context.Background(), func(ri *hal.RuleInfo) error { got[ri.Rule.ID] = ri.Rule.Match; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, r := range []hal.Rule{r4, r6} {
		want := r.Match
		want.Normalize()
		if got[r.ID] != want {
			t.Errorf("rule %d dumped as %v, want %v", r.ID, got[r.ID], want)
		}
	}
}

// TestApplyChecksActionLists: softnic's own checks of an action list (an
// output port that exists, at most two pushed tags) run when the list
// compiles a new program, not for every rule; a rule whose list fails
// them fails however often it comes, and leaves nothing behind, while the
// rules whose list is a program's already pass.
func TestApplyChecksActionLists(t *testing.T) {
	n, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	good := flowRule(0).Actions
	missing := []hal.Action{hal.Output(99)}
	pushes := []hal.Action{hal.PushVLAN(1), hal.PushVLAN(2), hal.PushVLAN(3), hal.Output(pUplink)}
	lists := [][]hal.Action{good, missing, pushes, good, missing, pushes, good}
	ops := make([]hal.Op, len(lists))
	for i, acts := range lists {
		r := flowRule(i)
		r.Actions = acts
		ops[i] = hal.AddOp(r)
	}
	res := make([]hal.OpResult, len(ops))
	if err := n.Apply(context.Background(), ops, res); err == nil {
		t.Fatal("Apply of a batch with bad action lists: no error")
	}
	for i, acts := range lists {
		switch {
		case &acts[0] == &good[0]:
			if res[i].Err != nil {
				t.Errorf("op %d (good list): %v", i, res[i].Err)
			}
		case &acts[0] == &missing[0]:
			if !errors.Is(res[i].Err, hal.ErrNotFound) {
				t.Errorf("op %d (output to port 99): %v, want ErrNotFound", i, res[i].Err)
			}
		default:
			if !errors.Is(res[i].Err, hal.ErrNotSupported) {
				t.Errorf("op %d (three pushes): %v, want ErrNotSupported", i, res[i].Err)
			}
		}
	}
	var ids []hal.RuleID
	if err := n.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		ids = append(ids, ri.Rule.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	if want := []hal.RuleID{1, 4, 7}; !slices.Equal(ids, want) {
		t.Fatalf("installed %v, want %v", ids, want)
	}
	// Validate checks the lists on its own.
	r := flowRule(10)
	r.Actions = missing
	if err := n.Validate(&r); !errors.Is(err, hal.ErrNotFound) {
		t.Fatalf("Validate output to port 99: %v", err)
	}
}

// TestInternByReadFields: action lists that differ only in fields their
// kinds do not read (hal.Action) share one program, and Dump gives each of
// their rules the list with those fields zero; lists that differ in a field
// that is read get programs of their own.
func TestInternByReadFields(t *testing.T) {
	n := newNIC(t)
	dst := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 31, byte(i)}) }
	clean := dstRule(1, dst(1), vxlanTo(paRem, 7)).Actions
	stray := hal.CloneActions(clean)
	stray[0].OutPort, stray[0].MAC, stray[0].VLAN, stray[0].Reason = pVM1, macVM1, 12, hal.ReasonTTL
	stray[1].Encap = vxlanTo(paLocal, 9)
	stray[1].L4Port, stray[1].Addr = 80, caVM1
	other := hal.CloneActions(clean)
	other[0].Encap.TTL = 9 // read: a program of its own
	rules := []hal.Rule{dstRule(1, dst(1), vxlanTo(paRem, 7)), dstRule(2, dst(2), vxlanTo(paRem, 7)), dstRule(3, dst(3), vxlanTo(paRem, 7))}
	rules[1].Actions, rules[2].Actions = stray, other
	for _, r := range rules {
		mustApply(t, n, hal.AddOp(r))
	}
	progs := 0
	for _, p := range n.w.progs {
		if p != nil {
			progs++
		}
	}
	if progs != 2 {
		t.Errorf("%d programs, want 2 (one for the lists that differ in unread fields only, one for the other)", progs)
	}
	want := map[hal.RuleID][]hal.Action{1: clean, 2: clean, 3: other}
	seen := 0
	err := n.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		seen++
		if w := want[ri.Rule.ID]; !reflect.DeepEqual(ri.Rule.Actions, w) {
			t.Errorf("rule %d dumped with %v, want %v", ri.Rule.ID, ri.Rule.Actions, w)
		}
		return nil
	})
	if err != nil || seen != len(rules) {
		t.Fatalf("dump: %d rules, %v", seen, err)
	}
}

// TestActionHashesFollowSameActions: lists that sameActions takes for one
// (random lists, and each with its unread fields scrambled) have the same
// hashActions and quickActionsHash and the same key (appendActionsKey),
// which matchKey finds them to be, and readFields keeps a list the same;
// lists that differ in a read field have different keys, which matchKey
// tells apart.
func TestActionHashesFollowSameActions(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	kinds := []hal.ActionKind{hal.ActionDecap, hal.ActionSetEthSrc, hal.ActionSetEthDst, hal.ActionSetIPSrc, hal.ActionSetIPDst,
		hal.ActionSetL4Src, hal.ActionSetL4Dst, hal.ActionDecTTL, hal.ActionPushVLAN, hal.ActionPopVLAN, hal.ActionEncap,
		hal.ActionCount, hal.ActionOutput, hal.ActionDrop, hal.ActionToHost}
	scramble := func(a *hal.Action) {
		a.MAC = hal.MAC{2, byte(rng.Uint32()), 0, 0, 0, byte(rng.Uint32())}
		a.Addr = netip.AddrFrom4([4]byte{198, 18, byte(rng.Uint32()), byte(rng.Uint32())})
		a.L4Port, a.VLAN, a.OutPort, a.Reason = uint16(rng.Uint32()), uint16(rng.Uint32()), hal.PortID(rng.Uint32()), hal.Reason(rng.Uint32()%4)
		a.Encap = hal.Encap{Kind: hal.EncapGeneve, VNI: rng.Uint32() & 0xffffff, Src: a.Addr, Dst: a.Addr, TTL: uint8(rng.Uint32()),
			GeneveOptions: []byte{byte(rng.Uint32()), 0, 0, 0}}
	}
	differ := 0
	for i := 0; i < 20000; i++ {
		a := make([]hal.Action, 1+rng.IntN(4))
		for j := range a {
			scramble(&a[j])
			a[j].Kind = kinds[rng.IntN(len(kinds))]
		}
		b := make([]hal.Action, len(a))
		norm := make([]hal.Action, len(a))
		for j := range a {
			b[j] = a[j]
			scramble(&b[j])
			b[j].Kind = a[j].Kind
			read := &b[j] // back to a[j] in what its kind reads
			r := readFields(&a[j])
			switch a[j].Kind {
			case hal.ActionEncap:
				read.Encap = r.Encap
			case hal.ActionOutput:
				read.OutPort = r.OutPort
			case hal.ActionSetEthSrc, hal.ActionSetEthDst:
				read.MAC = r.MAC
			case hal.ActionSetIPSrc, hal.ActionSetIPDst:
				read.Addr = r.Addr
			case hal.ActionSetL4Src, hal.ActionSetL4Dst:
				read.L4Port = r.L4Port
			case hal.ActionPushVLAN:
				read.VLAN = r.VLAN
			case hal.ActionDrop, hal.ActionToHost:
				read.Reason = r.Reason
			}
			norm[j] = readFields(&a[j])
		}
		if !sameActions(a, b, -1) || !sameActions(norm, a, -1) {
			t.Fatalf("lists that differ in unread fields only are not the same:\n%v\n%v", a, b)
		}
		if hashActions(a, -1) != hashActions(b, -1) || quickActionsHash(a) != quickActionsHash(b) {
			t.Fatalf("the same lists hash apart:\n%v\n%v", a, b)
		}
		ka, oka := appendActionsKey(nil, a, argAction(a))
		kb, okb := appendActionsKey(nil, b, argAction(b))
		if !oka || !okb || !slices.Equal(ka, kb) || !matchKey(ka, b, argAction(b)) {
			t.Fatalf("the same lists have different keys:\n%v\n%v\n%x\n%x", a, b, ka, kb)
		}
		if !reflect.DeepEqual(a, b) {
			differ++
		}
		// One read field changed: not the same.
		c := hal.CloneActions(norm)
		j := rng.IntN(len(c))
		switch c[j].Kind {
		case hal.ActionEncap:
			c[j].Encap.TTL++
		case hal.ActionOutput:
			c[j].OutPort++
		case hal.ActionSetEthSrc, hal.ActionSetEthDst:
			c[j].MAC[5]++
		case hal.ActionSetL4Src, hal.ActionSetL4Dst:
			c[j].L4Port++
		case hal.ActionPushVLAN:
			c[j].VLAN++
		case hal.ActionDrop, hal.ActionToHost:
			c[j].Reason++
		default:
			continue
		}
		if sameActions(norm, c, -1) {
			t.Fatalf("lists that differ in a read field are the same:\n%v\n%v", norm, c)
		}
		kn, _ := appendActionsKey(nil, norm, -1)
		if kc, _ := appendActionsKey(nil, c, -1); slices.Equal(kn, kc) || matchKey(kn, c, -1) {
			t.Fatalf("lists that differ in a read field have one key:\n%v\n%v", norm, c)
		}
	}
	if differ < 1000 {
		t.Fatalf("only %d pairs differed in unread fields", differ)
	}
}

// TestActionsKeyEdges: appendActionsKey tells apart what sameActions tells
// apart where packing could blur it (an IPv4 address and the same one
// mapped into IPv6, no address and the zero one, option bytes that pad to
// the same word), keeps together what it keeps together (nil and empty
// Geneve options, the rule's own MAC), and refuses a zoned address.
func TestActionsKeyEdges(t *testing.T) {
	v4 := netip.MustParseAddr("198.51.100.7")
	encap := func(f func(e *hal.Encap)) []hal.Action {
		e := hal.Encap{Kind: hal.EncapGeneve, VNI: 7, Src: netip.MustParseAddr("198.51.100.1"), Dst: v4}
		f(&e)
		return []hal.Action{hal.SetEthDst(hal.MAC{2, 0, 0, 0, 0, 1}), hal.EncapWith(e), hal.Output(1)}
	}
	lists := [][]hal.Action{
		{hal.SetIPDst(v4), hal.Output(1)},
		{hal.SetIPDst(netip.AddrFrom16(v4.As16())), hal.Output(1)},
		{hal.SetIPDst(netip.Addr{}), hal.Output(1)},
		{hal.SetIPDst(netip.IPv6Unspecified()), hal.Output(1)},
		{hal.SetIPDst(netip.IPv4Unspecified()), hal.Output(1)},
		encap(func(e *hal.Encap) {}),
		encap(func(e *hal.Encap) { e.GeneveOptions = []byte{0} }),
		encap(func(e *hal.Encap) { e.GeneveOptions = []byte{0, 0} }),
		encap(func(e *hal.Encap) { e.GeneveOptions = []byte{1, 0, 0, 0, 0, 0, 0, 0, 0} }),
		encap(func(e *hal.Encap) { e.GeneveOptions = []byte{1, 0, 0, 0, 0, 0, 0, 0} }),
		encap(func(e *hal.Encap) { e.FlowID = 1 }),
		encap(func(e *hal.Encap) { e.VNI = 7 << 24 }),
		encap(func(e *hal.Encap) { e.Dst = netip.AddrFrom16(v4.As16()) }),
		{hal.SetEthDst(hal.MAC{2, 0, 0, 0, 0, 1}), hal.SetEthDst(hal.MAC{2, 0, 0, 0, 0, 2}), hal.Output(1)},
		{hal.SetEthDst(hal.MAC{2, 0, 0, 0, 0, 1}), hal.SetEthDst(hal.MAC{2, 0, 0, 0, 0, 3}), hal.Output(1)},
		{hal.Output(1)},
		{hal.Output(2)},
		{hal.Drop(hal.ReasonMiss)},
	}
	for i, a := range lists {
		ka, ok := appendActionsKey(nil, a, argAction(a))
		if !ok {
			t.Fatalf("list %d not packed: %v", i, a)
		}
		for j, b := range lists {
			kb, _ := appendActionsKey(nil, b, argAction(b))
			same := sameActions(a, b, argAction(b)) && len(a) == len(b) && argAction(a) == argAction(b)
			if slices.Equal(ka, kb) != same || matchKey(ka, b, argAction(b)) != same {
				t.Errorf("lists %d and %d: same %v, keys equal %v, matchKey %v:\n%v\n%v", i, j, same, slices.Equal(ka, kb), matchKey(ka, b, argAction(b)), a, b)
			}
		}
	}
	// nil and empty options, and another MAC for the rule's own: one key.
	a := encap(func(e *hal.Encap) {})
	b := encap(func(e *hal.Encap) { e.GeneveOptions = []byte{} })
	b[0].MAC = hal.MAC{2, 0, 0, 0, 0, 9}
	ka, _ := appendActionsKey(nil, a, argAction(a))
	kb, _ := appendActionsKey(nil, b, argAction(b))
	if !slices.Equal(ka, kb) {
		t.Errorf("lists alike but for the rule's MAC and empty options have keys %x and %x", ka, kb)
	}
	zoned := []hal.Action{hal.SetIPDst(netip.MustParseAddr("fe80::1%eth0")), hal.Output(1)}
	if _, ok := appendActionsKey(nil, zoned, -1); ok {
		t.Error("a zoned address was packed")
	}
	unzoned := []hal.Action{hal.SetIPDst(netip.MustParseAddr("fe80::1")), hal.Output(1)}
	if k, _ := appendActionsKey(nil, unzoned, -1); matchKey(k, zoned, -1) {
		t.Error("a zoned list matches the key of the same list without the zone")
	}
}

// TestInternZonedAddress: lists that cannot be packed (a zoned address,
// which hal's checks turn away before interning today) are interned by
// comparing lists: the same list shares a program, another zone gets its
// own, and none shares with a packed list.
func TestInternZonedAddress(t *testing.T) {
	n := newNIC(t)
	list := func(a string) []hal.Action {
		return []hal.Action{hal.SetIPDst(netip.MustParseAddr(a)), hal.Output(pVM2)}
	}
	n.wmu.Lock()
	defer n.wmu.Unlock()
	intern := func(acts []hal.Action) *program {
		pre := preOp{quick: quickActionsHash(acts)}
		p, _, err := n.w.intern(acts, &pre)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := intern(list("fe80::1%eth0")), intern(list("fe80::1%eth0"))
	c, d := intern(list("fe80::1%eth1")), intern(list("fe80::1"))
	if a != b || a.refs != 2 || a.key != nil {
		t.Errorf("one zoned list: programs %p and %p (refs %d, key %x)", a, b, a.refs, a.key)
	}
	if a == c || a == d || c == d || d.key == nil {
		t.Error("different lists share a program")
	}
	if got := intern(list("fe80::1")); got != d {
		t.Error("a packed list did not find its program")
	}
}

// TestInternSharedSlice: rules that share one action slice in a batch
// share its program; when the caller changes the slice between batches,
// the next batch's rules get the program of what it holds then, not the
// one the same slice had before.
func TestInternSharedSlice(t *testing.T) {
	n := newNIC(t)
	ctx := context.Background()
	shared := []hal.Action{hal.SetEthDst(macVM2), hal.Output(pVM2)}
	var ops []hal.Op
	for f := 0; f < 100; f++ {
		r := flowRule(f)
		r.Actions = shared
		if f%3 == 0 {
			r.Actions = hal.CloneActions(shared) // the same list, its own slice
		}
		ops = append(ops, hal.AddOp(r))
	}
	if err := n.Apply(ctx, ops, make([]hal.OpResult, len(ops))); err != nil {
		t.Fatal(err)
	}
	prog := func(id hal.RuleID) *program {
		t.Helper()
		idx, ok := n.w.byID.get(id)
		if !ok {
			t.Fatalf("rule %d not installed", id)
		}
		return n.w.progs[n.w.entry(idx).prog]
	}
	first := prog(1)
	for f := 0; f < 100; f++ {
		if prog(hal.RuleID(f+1)) != first {
			t.Fatalf("rule %d has a program of its own", f+1)
		}
	}
	shared[1] = hal.Output(pVM1) // the caller's slice, reused
	ops = ops[:0]
	for f := 100; f < 200; f++ {
		r := flowRule(f)
		r.Actions = shared
		ops = append(ops, hal.AddOp(r))
	}
	if err := n.Apply(ctx, ops, make([]hal.OpResult, len(ops))); err != nil {
		t.Fatal(err)
	}
	second := prog(101)
	if second == first || second.out == nil || second.out.info.ID != pVM1 {
		t.Fatalf("rules given the changed slice have program %p (first %p), output %v", second, first, second.out)
	}
	for f := 100; f < 200; f++ {
		if prog(hal.RuleID(f+1)) != second {
			t.Fatalf("rule %d: not the changed list's program", f+1)
		}
	}
	if first.refs != 100 || second.refs != 100 {
		t.Fatalf("refs %d and %d, want 100 each", first.refs, second.refs)
	}
}

// TestApplyKnownListsStillChecked: a list that rules of a batch share is
// checked once per batch (knownActions), yet every rule gets hal's answer:
// a shared list that passed with one rule's match is refused with another
// whose match it does not fit (an IPv4 rewrite on an IPv6 flow, a port
// rewrite on a flow without a protocol), in the same batch; and a shared
// slice that the caller changed in place between batches is checked
// again in the next.
func TestApplyKnownListsStillChecked(t *testing.T) {
	n := newNIC(t)
	ctx := context.Background()
	setDst := []hal.Action{hal.SetIPDst(caVM2), hal.Output(pVM2)}
	setPort := []hal.Action{{Kind: hal.ActionSetL4Dst, L4Port: 8080}, hal.Output(pVM2)}
	v6 := func(id hal.RuleID) hal.Rule {
		k := hal.FlowKey{InPort: pVM1, EthType: hal.EtherTypeIPv6, Proto: hal.ProtoUDP, L4Dst: 53,
			IPSrc: hal.Addr16(pa6Loc), IPDst: hal.Addr16(pa6Rem)}
		return hal.Rule{ID: id, Priority: 10, Match: hal.Exact(&k), Actions: setDst}
	}
	noProto := func(id hal.RuleID) hal.Rule {
		var m hal.Match
		m.InPort(pVM1).IPDst(netip.PrefixFrom(caRem, 32))
		return hal.Rule{ID: id, Priority: 10, Match: m, Actions: setPort}
	}
	ops := []hal.Op{
		hal.AddOp(withActions(flowRule(0), setDst)),
		hal.AddOp(v6(1000)),
		hal.AddOp(withActions(flowRule(1), setDst)),
		hal.AddOp(withActions(flowRule(2), setPort)),
		hal.AddOp(noProto(1001)),
		hal.AddOp(withActions(flowRule(3), setPort)),
	}
	res := make([]hal.OpResult, len(ops))
	if err := n.Apply(ctx, ops, res); err == nil {
		t.Fatal("a batch with ill-fitting rules: no error")
	}
	for i, op := range ops {
		want := hal.CheckRule(&n.caps, &op.Rule)
		if (res[i].Err == nil) != (want == nil) || (want != nil && res[i].Err.Error() != want.Error()) {
			t.Errorf("op %d (rule %d): %v, want %v", i, op.Rule.ID, res[i].Err, want)
		}
	}
	if res[1].Err == nil || res[4].Err == nil || res[0].Err != nil || res[2].Err != nil || res[3].Err != nil || res[5].Err != nil {
		t.Fatalf("results %v: want rules 1000 and 1001 refused, the others in", res)
	}
	// The shared slice, changed in place (where interning's quick hash
	// does not look): an IPv6 address on IPv4 flows.
	setDst[0] = hal.SetIPDst(pa6Rem)
	ops = []hal.Op{hal.AddOp(withActions(flowRule(10), setDst)), hal.AddOp(withActions(flowRule(11), setDst))}
	res = res[:len(ops)]
	if err := n.Apply(ctx, ops, res); err == nil {
		t.Fatal("a list changed to an IPv6 rewrite of IPv4 flows passed")
	}
	for i := range ops {
		var re *hal.RuleError
		if !errors.As(res[i].Err, &re) {
			t.Errorf("op %d: %v, want a *hal.RuleError", i, res[i].Err)
		}
	}
}

func withActions(r hal.Rule, acts []hal.Action) hal.Rule {
	r.Actions = acts
	return r
}

// TestDeletedEntriesReusedInOrder: rules deleted in ID order leave their
// entries to be handed out again in the order they were freed, so that the
// next run of IDs gets ascending entries and its ID pages stay runs (no
// slot arrays), batch after batch, as a controller that replaces its rules
// in runs does.
func TestDeletedEntriesReusedInOrder(t *testing.T) {
	n := newNIC(t)
	ctx := context.Background()
	const run = 3 * idPageSize
	for round := 0; round < 3; round++ {
		base := round * run
		ops := make([]hal.Op, run)
		for i := range ops {
			ops[i] = hal.AddOp(flowRule(base + i))
		}
		res := make([]hal.OpResult, run)
		if err := n.Apply(ctx, ops, res); err != nil {
			t.Fatal(err)
		}
		prev, _ := n.w.byID.get(hal.RuleID(base + 1))
		for i := 1; i < run; i++ {
			idx, _ := n.w.byID.get(hal.RuleID(base + i + 1))
			if idx != prev+1 {
				t.Fatalf("round %d: rule %d at entry %d after %d: not ascending", round, base+i+1, idx, prev)
			}
			prev = idx
		}
		for p := (base + 1) / idPageSize; p <= (base+run)/idPageSize; p++ {
			if pg := n.w.byID.pages[p]; pg != nil && pg.slot != nil {
				t.Fatalf("round %d: ID page %d turned to slots", round, p)
			}
		}
		for i := range ops {
			ops[i] = hal.DeleteOp(hal.RuleID(base + i + 1))
		}
		if err := n.Apply(ctx, ops, res); err != nil {
			t.Fatal(err)
		}
	}
}

// TestApplyInRunsAllocatesNothing: once a table has settled, a controller
// that adds a run of rules and deletes the oldest, batch after batch (IDs
// counted up, lists shared per remote host), costs Apply no allocation:
// entries, ID pages and program references are reused.
func TestApplyInRunsAllocatesNothing(t *testing.T) {
	const base, batch = 4 * idPageSize, 2 * idPageSize
	n := newNIC(t, func(c *Config) { c.MaxRules = base + batch })
	ctx := context.Background()
	installFlows(t, n, base)
	adds := make([]hal.Op, batch)
	dels := make([]hal.Op, batch)
	res := make([]hal.OpResult, batch)
	next, oldest := base, 0
	step := func() {
		for i := range adds {
			adds[i] = hal.AddOp(flowRule(next + i))
			dels[i] = hal.DeleteOp(hal.RuleID(oldest + i + 1))
		}
		next, oldest = next+batch, oldest+batch
		if err := n.Apply(ctx, adds, res); err != nil {
			t.Fatal(err)
		}
		if err := n.Apply(ctx, dels, res); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 8; i++ {
		step() // the table and the writer's scratch reach their sizes
	}
	if a := testing.AllocsPerRun(20, step); a != 0 {
		t.Fatalf("%v allocations per batch of %d adds and %d deletes", a, batch, batch)
	}
}
