package conformance

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/nicpath/nicpath/hal"
)

func init() {
	register("rules", "add, modify and delete land and take effect; their errors are the contract's sentinels; batches report per operation; Dump tells the truth", caseRules)
	register("counters", "rule and port counters count exactly the packets and bytes sent (L2 or L3 as the NIC says)", caseCounters)
	register("table", "a full table refuses the next rule with ErrTableFull and keeps working", caseTable)
}

// sized returns n UDP frames with payloads of different lengths.
func sized(n int) [][]byte {
	var fs [][]byte
	for i := 0; i < n; i++ {
		s := udpSpec()
		s.Payload = make([]byte, 10+37*i)
		for j := range s.Payload {
			s.Payload[j] = byte(i + j)
		}
		fs = append(fs, build(s))
	}
	return fs
}

// waitCounters polls a rule's counters until they reach want or the wait
// runs out: some datapaths publish counters a little after the packet.
func (e *env) waitCounters(id hal.RuleID, want hal.Counters) hal.Counters {
	deadline := time.Now().Add(e.tg.timeout())
	for {
		got := e.ruleCounters(id)[0]
		if got == want || got.Packets > want.Packets || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func countAction(t T, tg *Target) {
	e := open(t, tg)
	r := e.rule(100, e.baseMatch(0, 0), hal.Count(), hal.Output(e.out.ID))
	if !e.caps.HasAction(hal.ActionCount) {
		e.refused(r, "action count")
		return
	}
	countTest(t, e, r, e.in, sized(5), e.out)
}

func countTest(t T, e *env, r hal.Rule, in hal.Port, frames [][]byte, out hal.Port) {
	e.add(r)
	e.send(in, frames...)
	e.expect(out, len(frames))
	var want hal.Counters
	for _, f := range frames {
		want.Packets++
		want.Bytes += e.counted(f)
	}
	got := e.waitCounters(r.ID, want)
	if got != want {
		t.Errorf("rule counters %+v after %d frames; want %+v (BytesIncludeL2=%v)", got, len(frames), want, e.caps.Counters.BytesIncludeL2)
	}
	if ri, ok := e.dump()[r.ID]; !ok {
		t.Errorf("Dump lacks rule %d", r.ID)
	} else if ri.Counters != got {
		t.Errorf("Dump says counters %+v, RuleCounters %+v", ri.Counters, got)
	}
}

func caseCounters(t T, tg *Target) {
	t.Run("rule", func(t T) {
		e := open(t, tg)
		if !e.caps.Counters.PerRule {
			need(t, "counters per rule", "the NIC keeps no per-rule counters")
		}
		acts := []hal.Action{hal.Output(e.out.ID)}
		if e.caps.HasAction(hal.ActionCount) {
			acts = append([]hal.Action{hal.Count()}, acts...)
		}
		countTest(t, e, e.rule(100, e.baseMatch(0, 0), acts...), e.in, sized(7), e.out)
	})
	t.Run("rule-decap", func(t T) {
		e := open(t, tg)
		if !e.caps.Counters.PerRule {
			need(t, "counters per rule", "the NIC keeps no per-rule counters")
		}
		if e.caps.Decaps == 0 {
			need(t, "action decap", "the NIC decapsulates nothing")
		}
		kind := e.tunnelKind()
		var m hal.Match
		m.Tunnel(kind, 100)
		vp := e.vport()
		acts := []hal.Action{hal.Decap(), hal.Output(vp.ID)}
		if e.caps.HasAction(hal.ActionCount) {
			acts = []hal.Action{hal.Decap(), hal.Count(), hal.Output(vp.ID)}
		}
		var frames [][]byte
		for _, f := range sized(3) {
			frames = append(frames, encapsulate(defaultTunnel(kind, 100), f))
		}
		// Counted as the frame was when it matched: with its outer headers.
		countTest(t, e, e.rule(100, m, acts...), e.tunnelPort(), frames, vp)
	})
	t.Run("port", func(t T) {
		e := open(t, tg)
		if !e.caps.Counters.PerPort {
			need(t, "counters per port", "the NIC keeps no per-port counters")
		}
		e.add(e.rule(100, e.baseMatch(0, 0), hal.Output(e.out.ID)))
		frames := sized(4)
		e.send(e.in, frames...)
		e.expect(e.out, len(frames))
		var want hal.Counters
		for _, f := range frames {
			want.Packets++
			want.Bytes += e.counted(f)
		}
		ctx, cancel := e.ctx()
		defer cancel()
		var rx, tx hal.PortCounters
		deadline := time.Now().Add(e.tg.timeout())
		for {
			var err error
			if rx, err = e.nic.PortCounters(ctx, e.in.ID); err != nil {
				t.Fatalf("PortCounters(%d): %v", e.in.ID, err)
			}
			if tx, err = e.nic.PortCounters(ctx, e.out.ID); err != nil {
				t.Fatalf("PortCounters(%d): %v", e.out.ID, err)
			}
			if (rx.Rx == want && tx.Tx == want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if rx.Rx != want {
			t.Errorf("port %d rx %+v, want %+v", e.in.ID, rx.Rx, want)
		}
		if tx.Tx != want {
			t.Errorf("port %d tx %+v, want %+v", e.out.ID, tx.Tx, want)
		}
		if _, err := e.nic.PortCounters(ctx, 0xfffffff0); !errors.Is(err, hal.ErrNotFound) {
			t.Errorf("PortCounters of a port the NIC lacks: %v, want ErrNotFound", err)
		}
	})
}

func caseRules(t T, tg *Target) {
	t.Run("add-modify-delete", func(t T) {
		e := open(t, tg)
		r := e.rule(100, e.baseMatch(0, 0), hal.Output(e.out.ID))
		e.add(r)
		f := build(udpSpec())
		e.send(e.in, f)
		e.expect(e.out, 1)

		ri, ok := e.dump()[r.ID]
		switch {
		case !ok:
			t.Errorf("Dump lacks the rule just added")
		case ri.Rule.Cookie != r.Cookie || ri.Rule.Priority != r.Priority || !ri.Live || ri.Location == hal.LocationUnknown:
			t.Errorf("Dump: cookie %#x prio %d live %v location %v; want %#x %d true, known", ri.Rule.Cookie, ri.Rule.Priority, ri.Live, ri.Location, r.Cookie, r.Priority)
		case ri.Rule.Match != r.Match || len(ri.Rule.Actions) != len(r.Actions):
			t.Errorf("Dump returns %v, added %v", &ri.Rule, &r)
		}

		// Modify: the same ID now does something else.
		mod := r
		switch {
		case e.other != nil:
			mod.Actions = []hal.Action{hal.Output(e.other.ID)}
		case e.caps.HasAction(hal.ActionSetEthDst):
			mod.Actions = []hal.Action{hal.SetEthDst(macY), hal.Output(e.out.ID)}
		default:
			need(t, "action set_eth_dst", "nothing to modify the rule into: no third port and no set_eth_dst")
		}
		if _, err := e.apply(hal.ModifyOp(mod)); err != nil {
			t.Fatalf("modify: %v", err)
		}
		e.send(e.in, f)
		if e.other != nil {
			e.expect(*e.other, 1)
		} else if d := e.expectOne(e.out); macOf(d.eth.DstMAC) != macY {
			t.Errorf("after modify the frame still leaves with destination %v", d.eth.DstMAC)
		}

		res, err := e.apply(hal.AddOp(r))
		if !errors.Is(err, hal.ErrExists) || !errors.Is(res[0].Err, hal.ErrExists) {
			t.Errorf("adding an installed rule ID: %v / %v, want ErrExists", err, res[0].Err)
		}
		ghost := mod
		ghost.ID = 0xdead
		if res, err := e.apply(hal.ModifyOp(ghost)); !errors.Is(err, hal.ErrNotFound) || !errors.Is(res[0].Err, hal.ErrNotFound) {
			t.Errorf("modifying an absent rule: %v, want ErrNotFound", err)
		}
		if res, err := e.apply(hal.DeleteOp(0xdead)); !errors.Is(err, hal.ErrNotFound) || !errors.Is(res[0].Err, hal.ErrNotFound) {
			t.Errorf("deleting an absent rule: %v, want ErrNotFound", err)
		}

		if _, err := e.apply(hal.DeleteOp(r.ID)); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if _, ok := e.dump()[r.ID]; ok {
			t.Errorf("Dump still has the deleted rule")
		}
		e.send(e.in, f)
		e.silent()
	})

	t.Run("batch", func(t T) {
		e := open(t, tg)
		base := e.baseMatch(0, 0)
		r1 := e.rule(10, base, hal.Output(e.out.ID))
		bad := e.rule(10, base) // no actions: malformed
		r3 := e.rule(10, base, hal.Output(e.out.ID))
		if e.caps.MaxBatch < 3 {
			need(t, "max batch", "MaxBatch %d is below the 3 operations this test needs", e.caps.MaxBatch)
		}
		res, err := e.apply(hal.AddOp(r1), hal.AddOp(bad), hal.AddOp(r3))
		var be *hal.BatchError
		if !errors.As(err, &be) {
			t.Fatalf("a batch with a malformed rule returned %v, want a *hal.BatchError", err)
		}
		if be.Total != 3 || be.Failed != 1 || be.Index != 1 || !errors.Is(err, hal.ErrInvalidRule) {
			t.Errorf("BatchError %+v; want total 3, failed 1, index 1, ErrInvalidRule", *be)
		}
		if res[0].Err != nil || res[2].Err != nil || !errors.Is(res[1].Err, hal.ErrInvalidRule) {
			t.Errorf("results %v; want nil, ErrInvalidRule, nil", res)
		}
		d := e.dump()
		if _, ok := d[r1.ID]; !ok {
			t.Errorf("rule %d of the batch did not land", r1.ID)
		}
		if _, ok := d[r3.ID]; !ok {
			t.Errorf("rule %d of the batch did not land", r3.ID)
		}
		if _, ok := d[bad.ID]; ok {
			t.Errorf("the malformed rule landed")
		}
		// A batch larger than MaxBatch is refused.
		if mb := e.caps.MaxBatch; mb < 1<<16 {
			ops := make([]hal.Op, mb+1)
			for i := range ops {
				ops[i] = hal.AddOp(hal.Rule{ID: hal.RuleID(100000 + i), Priority: 1, Match: base, Actions: []hal.Action{hal.Output(e.out.ID)}})
			}
			ctx, cancel := e.ctx()
			defer cancel()
			if err := e.nic.Apply(ctx, ops, make([]hal.OpResult, len(ops))); err == nil {
				t.Errorf("a batch of %d operations, MaxBatch+1, was taken", len(ops))
			}
		}
	})

	t.Run("atomic", func(t T) {
		e := open(t, tg)
		aa, ok := e.nic.(hal.AtomicApplier)
		if !e.caps.AtomicBatch || !ok {
			need(t, "atomic batch", "the NIC does not advertise atomic batches")
		}
		base := e.baseMatch(0, 0)
		r1 := e.rule(10, base, hal.Output(e.out.ID))
		e.add(r1)
		r2 := e.rule(10, base, hal.Output(e.out.ID))
		ops := []hal.Op{hal.AddOp(r2), hal.AddOp(r1)} // the second fails: r1 exists
		res := make([]hal.OpResult, 2)
		ctx, cancel := e.ctx()
		defer cancel()
		err := aa.ApplyAtomic(ctx, ops, res)
		if err == nil {
			t.Fatalf("an atomic batch with a failing operation returned nil")
		}
		if !errors.Is(res[0].Err, hal.ErrNotApplied) || !errors.Is(res[1].Err, hal.ErrExists) {
			t.Errorf("results %v; want ErrNotApplied, ErrExists", res)
		}
		if _, ok := e.dump()[r2.ID]; ok {
			t.Errorf("the rolled-back rule %d is installed", r2.ID)
		}
	})

	t.Run("invalid-port", func(t T) {
		e := open(t, tg)
		r := e.rule(100, e.baseMatch(0, 0), hal.Output(0xfffffff0))
		err := e.nic.Validate(&r)
		if err == nil {
			_, err = e.apply(hal.AddOp(r))
		}
		if err != nil {
			if !errors.Is(err, hal.ErrNotFound) {
				t.Errorf("a rule to a port the NIC lacks was refused with %v, want ErrNotFound", err)
			}
			return
		}
		// Taken: then the frame must go nowhere, counted as no_port.
		before := e.stats()
		e.send(e.in, build(udpSpec()))
		e.silent()
		if after := e.stats(); after.Drops[hal.ReasonNoPort] == before.Drops[hal.ReasonNoPort] {
			t.Errorf("a rule to a port the NIC lacks was taken, and its frame was not counted as a no_port drop")
		}
	})
}

func caseTable(t T, tg *Target) {
	t.Run("full", func(t T) {
		e := open(t, tg)
		max := e.caps.MaxRules
		if max > e.tg.fillLimit() {
			need(t, "max rules", "a table the suite can fill: MaxRules %d is above the fill limit %d; open the NIC with a smaller table or raise Target.FillLimit", max, e.tg.fillLimit())
		}
		if !e.caps.HasMatch(hal.MatchIPv4Dst) {
			need(t, "match ipv4_dst", "the suite fills the table with ipv4_dst rules")
		}
		dst := func(i int) netip.Addr {
			return netip.AddrFrom4([4]byte{198, 18, byte(64 + i>>8), byte(i)})
		}
		rules := make([]hal.Rule, max)
		for i := range rules {
			var m hal.Match
			m.IPDst(netip.PrefixFrom(dst(i), 32))
			rules[i] = e.rule(100, m, hal.Output(e.out.ID))
		}
		e.add(rules...)
		var m hal.Match
		m.IPDst(netip.PrefixFrom(dst(max), 32))
		extra := e.rule(100, m, hal.Output(e.out.ID))
		res, err := e.apply(hal.AddOp(extra))
		if !errors.Is(err, hal.ErrTableFull) || !errors.Is(res[0].Err, hal.ErrTableFull) {
			t.Errorf("adding rule %d to a table of %d: %v, want ErrTableFull", max+1, max, err)
		}
		if n := len(e.dump()); n != max {
			t.Errorf("Dump has %d rules, want %d", n, max)
		}
		// Still working: the first and the last rule forward.
		for _, i := range []int{0, max - 1} {
			s := udpSpec()
			s.IPDst = dst(i)
			e.send(e.in, build(s))
			e.expect(e.out, 1)
		}
		// Room again after a delete.
		if _, err := e.apply(hal.DeleteOp(rules[0].ID)); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if _, err := e.apply(hal.AddOp(extra)); err != nil {
			t.Errorf("adding after a delete in a full table: %v", err)
		}
		if e.caps.MaxBatch >= 2 {
			if _, err := e.apply(hal.DeleteOp(extra.ID)); err != nil {
				t.Fatalf("delete: %v", err)
			}
			var m2 hal.Match
			m2.IPDst(netip.PrefixFrom(dst(max+1), 32))
			two := e.rule(100, m2, hal.Output(e.out.ID))
			res, _ := e.apply(hal.AddOp(extra), hal.AddOp(two))
			if res[0].Err != nil || !errors.Is(res[1].Err, hal.ErrTableFull) {
				t.Errorf("a batch of two adds with room for one: results %v; want nil, ErrTableFull", res)
			}
		}
	})
}

// closedCalls calls everything on a closed NIC.
func closedCalls(ctx context.Context, nic hal.NIC, port hal.PortID) map[string]error {
	r := hal.Rule{ID: 1, Actions: []hal.Action{hal.Output(port)}}
	res := make([]hal.OpResult, 1)
	errs := map[string]error{}
	errs["Validate"] = nic.Validate(&r)
	errs["Apply"] = nic.Apply(ctx, []hal.Op{hal.AddOp(r)}, res)
	errs["Dump"] = nic.Dump(ctx, func(*hal.RuleInfo) error { return nil })
	errs["Activate"] = nic.Activate(ctx, 1, 1)
	_, errs["ActiveGeneration"] = nic.ActiveGeneration(1)
	_, errs["ReadExceptions"] = nic.ReadExceptions(ctx, make([]hal.Exception, 1))
	errs["Inject"] = nic.Inject(ctx, port, [][]byte{build(udpSpec())})
	errs["RuleCounters"] = nic.RuleCounters(ctx, []hal.RuleID{1}, make([]hal.Counters, 1))
	_, errs["PortCounters"] = nic.PortCounters(ctx, port)
	_, errs["Stats"] = nic.Stats(ctx)
	return errs
}

func init() {
	register("close", "Close unblocks readers, leaves nothing behind, and every later call returns ErrClosed", func(t T, tg *Target) {
		e := open(t, tg)
		e.add(e.rule(100, e.baseMatch(0, 0), hal.Output(e.out.ID)))
		blocked := make(chan error, 1)
		if e.caps.ExceptionPath {
			go func() {
				batch := []hal.Exception{{Buf: make([]byte, 2048)}}
				_, err := e.nic.ReadExceptions(context.Background(), batch)
				blocked <- err
			}()
			time.Sleep(20 * time.Millisecond)
		}
		e.closed = true
		if err := e.nic.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if e.caps.ExceptionPath {
			select {
			case err := <-blocked:
				if !errors.Is(err, hal.ErrClosed) {
					t.Errorf("a ReadExceptions blocked across Close returned %v, want ErrClosed", err)
				}
			case <-time.After(e.tg.timeout()):
				t.Errorf("a ReadExceptions blocked across Close did not return")
			}
		}
		if err := e.nic.Close(); err != nil && !errors.Is(err, hal.ErrClosed) {
			t.Errorf("a second Close: %v; want nil or ErrClosed", err)
		}
		ctx, cancel := e.ctx()
		defer cancel()
		for name, err := range closedCalls(ctx, e.nic, e.out.ID) {
			if !errors.Is(err, hal.ErrClosed) {
				t.Errorf("%s after Close: %v, want ErrClosed", name, err)
			}
		}
		if lc, ok := e.h.(LeakChecker); ok {
			if err := lc.CheckLeaks(); err != nil {
				t.Errorf("left behind after Close: %v", err)
			}
		} else {
			t.Logf("the harness has no leak checker")
		}
	})
}
