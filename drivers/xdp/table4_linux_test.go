//go:build linux

package xdp

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// sameWindow returns count frames (UDP from port 1000 up) whose exact rules
// hash to one base slot of n's table4, so that the window of that slot
// cannot hold all of them once count > probe4.
func sameWindow(t *testing.T, n *NIC, count int) [][]byte {
	t.Helper()
	t4 := n.tab.be.(*mapBackend).t4
	byBase := map[uint32][][]byte{}
	for sp := 1000; sp < 65000; sp++ {
		f := wire.Build(udp4(ca1, ca2, uint16(sp), 2000))
		r := exactRule(t, 1, pVM1, f)
		key, _ := matchKeys(&r.Match)
		markFlows4(&key)
		if key.Pad != inFlows4 {
			t.Fatal("an exact untunnelled IPv4 key is not marked for table4")
		}
		k4 := key4(&key)
		base, _ := t4.base(&k4)
		byBase[base] = append(byBase[base], f)
		if len(byBase[base]) == count {
			return byBase[base]
		}
	}
	t.Fatalf("no %d keys share a base slot", count)
	return nil
}

func overflowOn(t *testing.T, n *NIC) bool {
	t.Helper()
	var v uint32
	if err := n.maps["config"].Lookup(uint32(1), &v); err != nil {
		t.Fatal(err)
	}
	return v != 0
}

// TestTable4Overflow fills one window of table4 and more: the entries that
// find no free slot live in flows4 and are found there; a modify of an
// entry whose window is full moves it to flows4 without a miss; deleting
// the overflowed entries turns the program's flows4 lookup off again, and
// every entry still hits until it is deleted.
func TestTable4Overflow(t *testing.T) {
	n := openVirtual(t, Config{MaxRules: 64})
	frames := sameWindow(t, n, probe4+2)
	var ops []hal.Op
	for i, f := range frames {
		ops = append(ops, hal.AddOp(exactRule(t, hal.RuleID(i+1), pVM1, f, hal.Output(pVM2))))
	}
	mustApply(t, n, ops...)
	if four, flows := mapLens(t, n); four != len(frames) || flows != 0 {
		t.Fatalf("%d exact IPv4 entries: %d in table4 and flows4, %d in flows", len(frames), four, flows)
	}
	if c, _ := n.maps["flows4"].Info(); c == nil {
		t.Fatal("no flows4")
	}
	var over int
	var k4 bpfKey4
	var v bpfFlowVal
	for it := n.maps["flows4"].Iterate(); it.Next(&k4, &v); {
		over++
	}
	if over != 2 || !overflowOn(t, n) {
		t.Fatalf("%d entries overflowed into flows4 (flag %v), want 2 and the flag on", over, overflowOn(t, n))
	}
	for _, f := range frames {
		expectOutput(t, mustRun(t, n, pVM1, f), pVM2, f)
	}
	// The window is full: a new version of entry 1 goes to flows4.
	r := exactRule(t, 1, pVM1, frames[0], hal.Output(pUp))
	mustApply(t, n, hal.ModifyOp(r))
	expectOutput(t, mustRun(t, n, pVM1, frames[0]), pUp, frames[0])
	if four, _ := mapLens(t, n); four != len(frames) {
		t.Fatalf("after the modify: %d exact IPv4 entries, want %d", four, len(frames))
	}
	// Delete every entry that is in flows4 now: the flag goes off, the
	// rest still hit.
	var del []hal.Op
	for it := n.maps["flows4"].Iterate(); it.Next(&k4, &v); {
		for _, s := range v.Slot {
			if s.ID != 0 {
				del = append(del, hal.DeleteOp(hal.RuleID(s.ID)))
			}
		}
	}
	if len(del) != 3 {
		t.Fatalf("%d rules in flows4 after the modify, want 3", len(del))
	}
	mustApply(t, n, del...)
	if overflowOn(t, n) {
		t.Fatal("flows4 is empty but the program still looks there")
	}
	gone := map[hal.RuleID]bool{}
	for _, d := range del {
		gone[d.Rule.ID] = true
	}
	for i, f := range frames {
		res := mustRun(t, n, pVM1, f)
		if gone[hal.RuleID(i+1)] {
			if res.Verdict != VerdictToHost || res.Reason != hal.ReasonMiss {
				t.Fatalf("deleted rule %d: %v %v, want a miss", i+1, res.Verdict, res.Reason)
			}
			continue
		}
		expectOutput(t, res, pVM2, f)
	}
}

// TestTable4OverflowAfterReplace: an add that finds its window full while
// a staged write in the same batch replaces an older version of an entry
// of that window waits for the commit, which retires the old version and
// frees its slot, and lands in table4, not in flows4 (a full window with no
// replacement staged goes to flows4 without committing: TestTable4Overflow).
func TestTable4OverflowAfterReplace(t *testing.T) {
	n := openVirtual(t, Config{MaxRules: 64})
	frames := sameWindow(t, n, probe4)
	var ops []hal.Op
	for i, f := range frames[:probe4-1] {
		ops = append(ops, hal.AddOp(exactRule(t, hal.RuleID(i+1), pVM1, f, hal.Output(pVM2))))
	}
	mustApply(t, n, ops...) // the window holds probe4-1 entries: one slot is free
	// A second rule on the entry of frames[0]: its new version takes the
	// free slot. Then a new key of the window, which finds none free.
	second := exactRule(t, 100, pVM1, frames[0], hal.Output(pUp))
	second.Priority = 5
	last := exactRule(t, 101, pVM1, frames[probe4-1], hal.Output(pVM2))
	mustApply(t, n, hal.AddOp(second), hal.AddOp(last))
	if four, flows := mapLens(t, n); four != probe4 || flows != 0 {
		t.Fatalf("%d exact IPv4 entries in table4 and flows4, %d in flows; want %d, 0", four, flows, probe4)
	}
	if over := len(n.tab.be.(*mapBackend).over); over != 0 || overflowOn(t, n) {
		t.Fatalf("%d entries in flows4 (flag %v), want none: the replaced version's slot was free after the commit",
			over, overflowOn(t, n))
	}
	expectOutput(t, mustRun(t, n, pVM1, frames[0]), pUp, frames[0])
	for _, f := range frames[1:] {
		expectOutput(t, mustRun(t, n, pVM1, f), pVM2, f)
	}
}

// TestTable4NeverMisses runs a frame through the program, without the
// NIC's lock, while its rule is modified over and over (in table4; and,
// with its window full, moved to flows4 and rewritten there): every run
// must hit the old or the new version, never miss.
func TestTable4NeverMisses(t *testing.T) {
	for _, full := range []bool{false, true} {
		name := "window-free"
		if full {
			name = "window-full"
		}
		t.Run(name, func(t *testing.T) {
			n := openVirtual(t, Config{MaxRules: 64})
			frames := sameWindow(t, n, probe4)
			if !full {
				frames = frames[:1]
			}
			var ops []hal.Op
			for i, f := range frames {
				ops = append(ops, hal.AddOp(exactRule(t, hal.RuleID(i+1), pVM1, f, hal.Output(pVM2))))
			}
			mustApply(t, n, ops...)
			prog := n.ports[pVM1].prog
			var stop atomic.Bool
			var runs, misses atomic.Int64
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					ret, err := prog.Run(&ebpf.RunOptions{Data: frames[0], Repeat: 64})
					if err != nil {
						t.Error(err)
						return
					}
					runs.Add(1)
					if ret != 4 { // XDP_REDIRECT: the rule's output
						misses.Add(1)
					}
				}
			}()
			// At least this many modifies, and on until the runs
			// overlapping them are as many (on a loaded machine the
			// runner may get a CPU late), within a generous bound.
			const modifies = 3000
			deadline := time.Now().Add(2 * time.Minute)
			for i := 0; (i < modifies || runs.Load() < modifies) && time.Now().Before(deadline) && !t.Failed(); i++ {
				out := pVM2
				if i%2 == 0 {
					out = pUp
				}
				mustApply(t, n, hal.ModifyOp(exactRule(t, 1, pVM1, frames[0], hal.Output(out))))
			}
			stop.Store(true)
			wg.Wait()
			if runs.Load() == 0 {
				t.Fatal("no run overlapped the modifies")
			}
			if m := misses.Load(); m != 0 {
				t.Fatalf("%d of %d runs missed while the rule was modified", m, runs.Load())
			}
		})
	}
}

// TestTable4NeverTorn runs a frame through the program while its table4
// entry is rewritten as fast as table4 can (its writer called directly, not
// through Apply, so that writes overlap runs) through three versions, each
// with its own inner destination MAC and VNI: the programs of table4 are
// interned and reused once no slot names them, so the third version is
// written over the first one's program while a slow reader may still be
// copying it. Every run must act on one version whole: a VNI of one
// version with the MAC of another is a torn read. (A run may miss here: a
// search retries a bounded number of times, and this writer, a rewrite
// every few hundred nanoseconds, outpaces any Apply; TestTable4NeverMisses
// checks misses at Apply's pace. With the programs rewritten in place
// instead of interned, this test sees torn reads in about 1 run in 500.)
func TestTable4NeverTorn(t *testing.T) {
	n := openVirtual(t, Config{MaxRules: 64})
	frame := wire.Build(udp4(ca1, ca2, 1000, 2000))
	var vals [3]bpfFlowVal
	for v := range vals {
		e := vxlanTo
		e.VNI = uint32(100 + v)
		r := exactRule(t, 1, pVM1, frame, hal.SetEthDst(hal.MAC{0x02, 0, 0, 0, 0, byte(1 + v)}), hal.EncapWith(e), hal.Output(pUp))
		if v == 0 {
			mustApply(t, n, hal.AddOp(r))
		}
		enc, err := encodeRule(&r)
		if err != nil {
			t.Fatal(err)
		}
		vals[v].Slot[0] = enc
	}
	r0 := exactRule(t, 1, pVM1, frame, hal.Output(pUp))
	key, _ := matchKeys(&r0.Match)
	markFlows4(&key)
	k4 := key4(&key)
	t4 := n.tab.be.(*mapBackend).t4
	prog := n.ports[pVM1].prog
	var stop atomic.Bool
	var writes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// The only writer of table4 while it runs: the test makes no
		// other change to the NIC.
		defer wg.Done()
		for i := 1; !stop.Load(); i++ {
			if !t4.put(&k4, &vals[i%3]) {
				t.Error("table4 refused a rewrite of its only entry")
				return
			}
			writes.Add(1)
		}
	}()
	const runs = 20000
	var torn, misses int
	out := make([]byte, len(frame)+256)
	deadline := time.Now().Add(time.Minute)
	r := 0
	for ; r < runs && time.Now().Before(deadline); r++ {
		opts := &ebpf.RunOptions{Data: frame, DataOut: out}
		ret, err := prog.Run(opts)
		if err != nil {
			t.Fatal(err)
		}
		o := opts.DataOut
		if ret != 4 || len(o) < 56 { // XDP_REDIRECT, encapsulated
			misses++
			continue
		}
		// VXLAN's VNI at 46..48 (after the outer Ethernet, IPv4 and
		// UDP headers and the VXLAN flags), the inner destination MAC
		// at 50..55.
		vni := uint32(o[46])<<16 | uint32(o[47])<<8 | uint32(o[48])
		if vni < 100 || vni > 102 || o[55] != byte(vni-100+1) {
			torn++
		}
	}
	stop.Store(true)
	wg.Wait()
	if writes.Load() == 0 {
		t.Fatal("no write overlapped the runs")
	}
	if torn != 0 {
		t.Fatalf("of %d runs over %d writes: %d acted on a torn rule (%d missed)", r, writes.Load(), torn, misses)
	}
	if misses == r {
		t.Fatal("every run missed")
	}
	t.Logf("%d runs over %d writes, none torn (%d missed)", r, writes.Load(), misses)
}

// TestTable4SideNeverTorn is TestTable4NeverTorn for the second rule of a
// two-rule entry, the one a slot names in sides4: the entry holds a shadow
// (generation 0, not live) and the live rule (generation 1), which is its
// second and so lives in a side entry. The writer rewrites it through three
// versions, and after each rewrites a second key's two-rule entry too, which
// takes the side entry the first key's retired slot named (the free list is
// last in, first out): a reader that went on reading a side entry after its
// slot was retired would act on the other key's rule. Every run must act
// on one version of the live rule whole: a VNI outside the key's versions
// (the other key's, or the shadow's) is a foreign rule, a VNI of one
// version with the MAC of another a torn one.
func TestTable4SideNeverTorn(t *testing.T) {
	n := openVirtual(t, Config{MaxRules: 64})
	frames := [2][]byte{wire.Build(udp4(ca1, ca2, 1000, 2000)), wire.Build(udp4(ca1, ca2, 1000, 2001))}
	// vals[k][v]: version v of key k's entry. The live rule of key 0
	// carries VNI 100+v and MAC ..:1+v, key 1's 200+v and ..:0x11+v; both
	// shadows VNI 99.
	var vals [2][3]bpfFlowVal
	var k4s [2]bpfKey4
	for k, f := range frames {
		for v := range 3 {
			shadowEnc := vxlanTo
			shadowEnc.VNI = 99
			shadow := exactRule(t, hal.RuleID(10*k+1), pVM1, f, hal.SetEthDst(hal.MAC{0x02, 0, 0, 0, 0, 0xee}), hal.EncapWith(shadowEnc), hal.Output(pUp))
			shadow.Scope, shadow.Generation = 1, 0
			e := vxlanTo
			e.VNI = uint32(100*(k+1) + v)
			live := exactRule(t, hal.RuleID(10*k+2), pVM1, f, hal.SetEthDst(hal.MAC{0x02, 0, 0, 0, 0, byte(0x10*k + 1 + v)}), hal.EncapWith(e), hal.Output(pUp))
			live.Scope, live.Generation = 1, 1
			if v == 0 {
				mustApply(t, n, hal.AddOp(shadow), hal.AddOp(live))
			}
			for s, r := range []hal.Rule{shadow, live} {
				enc, err := encodeRule(&r)
				if err != nil {
					t.Fatal(err)
				}
				vals[k][v].Slot[s] = enc
			}
		}
		r0 := exactRule(t, 1, pVM1, f, hal.Output(pUp))
		key, _ := matchKeys(&r0.Match)
		markFlows4(&key)
		k4s[k] = key4(&key)
	}
	if err := n.Activate(context.Background(), 1, 1); err != nil {
		t.Fatal(err)
	}
	t4 := n.tab.be.(*mapBackend).t4
	if used := t4.sides.used(); used != 2 {
		t.Fatalf("two two-rule entries use %d side entries", used)
	}
	prog := n.ports[pVM1].prog
	var stop atomic.Bool
	var writes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// The only writer of table4 while it runs.
		defer wg.Done()
		for i := 1; !stop.Load(); i++ {
			for k := range k4s {
				if !t4.put(&k4s[k], &vals[k][i%3]) {
					t.Error("table4 refused a rewrite")
					return
				}
			}
			writes.Add(1)
		}
	}()
	const runs = 20000
	var torn, foreign, misses int
	out := make([]byte, len(frames[0])+256)
	deadline := time.Now().Add(time.Minute)
	r := 0
	for ; r < runs && time.Now().Before(deadline); r++ {
		opts := &ebpf.RunOptions{Data: frames[0], DataOut: out}
		ret, err := prog.Run(opts)
		if err != nil {
			t.Fatal(err)
		}
		o := opts.DataOut
		if ret != 4 || len(o) < 56 { // XDP_REDIRECT, encapsulated
			misses++
			continue
		}
		// The VNI at 46..48, the inner destination MAC at 50..55.
		vni := uint32(o[46])<<16 | uint32(o[47])<<8 | uint32(o[48])
		switch {
		case vni < 100 || vni > 102:
			foreign++
		case o[55] != byte(vni-100+1):
			torn++
		}
	}
	stop.Store(true)
	wg.Wait()
	if writes.Load() == 0 {
		t.Fatal("no write overlapped the runs")
	}
	if torn != 0 || foreign != 0 {
		t.Fatalf("of %d runs over %d writes: %d acted on a torn rule, %d on a foreign one (%d missed)", r, writes.Load(), torn, foreign, misses)
	}
	if misses == r {
		t.Fatal("every run missed")
	}
	if used := t4.sides.used(); used != 2 {
		t.Fatalf("after the rewrites two two-rule entries use %d side entries", used)
	}
	t.Logf("%d runs over %d writes, none torn or foreign (%d missed)", r, writes.Load(), misses)
}
