package vswitch

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// TestFlowTableAgainstMap runs random puts, gets and removes against the
// flow table and a Go map side by side, over few enough distinct keys that
// chains, tombstones and rebuilds of both kinds occur, and checks that
// they always agree.
func TestFlowTableAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keyOf := func(i int) hal.FlowKey {
		k := hal.FlowKey{InPort: 1, EthType: hal.EtherTypeIPv4, Proto: hal.ProtoUDP,
			IPSrc: caVA1.As16(), IPDst: caVA2.As16(), L4Src: uint16(i), L4Dst: uint16(i >> 16)}
		if i%7 == 0 { // some tunnelled keys: the tunnel words are hashed too
			k.TunKind, k.VNI, k.TunSrc = hal.EncapVXLAN, 5, pa2.As16()
		}
		return k
	}
	var tab flowTable
	ref := map[hal.FlowKey]*flow{}
	for step := 0; step < 200_000; step++ {
		k := keyOf(rng.IntN(3000))
		switch rng.IntN(3) {
		case 0:
			f := looseFlow(k)
			tab.put(f)
			ref[k] = f
		case 1:
			if f := ref[k]; f != nil {
				tab.remove(f)
				f.h.dead = true
				delete(ref, k)
			}
		}
		if got, want := tab.get(&k), ref[k]; got != want {
			t.Fatalf("step %d: get(%v) = %p, want %p", step, k, got, want)
		}
		if tab.Len() != len(ref) {
			t.Fatalf("step %d: Len %d, want %d", step, tab.Len(), len(ref))
		}
	}
	seen := 0
	for f := range tab.all() {
		if ref[f.key] != f {
			t.Fatalf("all yields %v, which the map does not hold", f.key)
		}
		seen++
	}
	if seen != len(ref) {
		t.Fatalf("all yields %d flows, want %d", seen, len(ref))
	}
}

// TestFlowTableIterateWhileChanging removes every other flow and adds new
// ones while iterating, enough to rebuild the table under the loop: removed
// flows are never produced, and every flow present throughout is.
func TestFlowTableIterateWhileChanging(t *testing.T) {
	var tab flowTable
	var all []*flow
	for i := 0; i < 1000; i++ {
		f := looseFlow(hal.FlowKey{InPort: 1, L4Src: uint16(i)})
		tab.put(f)
		all = append(all, f)
	}
	next := 1000
	seen := map[*flow]bool{}
	for f := range tab.all() {
		if f.h.dead {
			t.Fatal("a removed flow was produced")
		}
		seen[f] = true
		// Remove a flow not yet seen, if any, and add two.
		for _, g := range all {
			if !seen[g] && !g.h.dead && g != f {
				tab.remove(g)
				g.h.dead = true
				break
			}
		}
		for j := 0; j < 2; j++ {
			tab.put(looseFlow(hal.FlowKey{InPort: 2, L4Src: uint16(next), L4Dst: uint16(next >> 16)}))
			next++
		}
	}
	for _, g := range all {
		if !g.h.dead && !seen[g] {
			t.Fatalf("flow %v, present throughout, was not produced", g.key)
		}
	}
}

// TestTableFlows: the slab-order pass yields exactly the flow table's
// flows, removed ones and those replaced under their key never, tolerates
// removals during the loop, and forgets the slabs none of whose flows is
// in the table (but the one being handed out from).
func TestTableFlows(t *testing.T) {
	var s Switch
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 20 * flowsPerSlab
	var all []*flow
	for i := range n {
		f := s.allocFlow()
		f.key = hal.FlowKey{InPort: 1, L4Src: uint16(i), L4Dst: uint16(i >> 16)}
		s.flows.put(f)
		all = append(all, f)
	}
	remove := func(f *flow) {
		s.flows.remove(f)
		f.h.dead = true
	}
	// The first five slabs emptied, and one flow in three of the rest.
	for i, f := range all {
		if i < 5*flowsPerSlab || rng.IntN(3) == 0 {
			remove(f)
		}
	}
	// A flow replaced by another with its key leaves the table.
	replaced := all[len(all)-1]
	if replaced.h.dead {
		t.Fatal("the last flow was removed")
	}
	nf := s.allocFlow()
	nf.key = replaced.key
	s.flows.put(nf)
	if replaced.h.inTable || !nf.h.inTable {
		t.Fatalf("after a put under its key: old flow in table %v, new %v", replaced.h.inTable, nf.h.inTable)
	}
	check := func(when string) {
		t.Helper()
		want := map[*flow]bool{}
		for f := range s.flows.all() {
			want[f] = true
		}
		got := map[*flow]bool{}
		for f := range s.tableFlows() {
			if got[f] {
				t.Fatalf("%s: a flow yielded twice", when)
			}
			got[f] = true
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d flows yielded, the table holds %d", when, len(got), len(want))
		}
		for f := range got {
			if !want[f] {
				t.Fatalf("%s: a flow not in the table yielded", when)
			}
		}
	}
	before := len(s.slabs)
	check("after removals")
	if len(s.slabs) != before-5 {
		t.Fatalf("%d slabs listed after the pass, want %d (five emptied)", len(s.slabs), before-5)
	}
	// Remove every other flow during a pass: none of them is yielded
	// after its removal, and the rest still are.
	odd := false
	for f := range s.tableFlows() {
		if f.h.dead {
			t.Fatal("a removed flow was yielded")
		}
		if odd {
			remove(f)
		}
		odd = !odd
	}
	check("after removals during a pass")
	// Empty the table: only the current slab stays listed.
	for f := range s.tableFlows() {
		remove(f)
	}
	check("emptied")
	if s.flows.Len() != 0 || len(s.slabs) != 1 {
		t.Fatalf("%d flows, %d slabs listed after emptying, want 0 and 1", s.flows.Len(), len(s.slabs))
	}
	// A pass stopped early keeps every slab it did not finish.
	for i := range 3 * flowsPerSlab {
		f := s.allocFlow()
		f.key = hal.FlowKey{InPort: 2, L4Src: uint16(i)}
		s.flows.put(f)
	}
	before = len(s.slabs)
	for range s.tableFlows() {
		break
	}
	if len(s.slabs) != before {
		t.Fatalf("%d slabs listed after a stopped pass, want %d", len(s.slabs), before)
	}
	check("after a stopped pass")
}

// TestFlowSize holds a flow in three cache lines and its flowHot in 48
// bytes: every first packet makes one of each, seventeen to a 4 KiB slab
// (allocFlow), with each flow in whole lines. Fields that few flows need
// belong in flowExtra.
func TestFlowSize(t *testing.T) {
	if sz := unsafe.Sizeof(flow{}); sz > 192 {
		t.Errorf("a flow is %d bytes, more than 192", sz)
	}
	if sz := unsafe.Sizeof(flowHot{}); sz > 48 {
		t.Errorf("a flowHot is %d bytes, more than 48", sz)
	}
	if flowsPerSlab < 17 {
		t.Errorf("%d flows to a slab, fewer than 17", flowsPerSlab)
	}
	if sz := unsafe.Sizeof(flowSlab{}); sz > 4096 {
		t.Errorf("a slab is %d bytes, more than 4 KiB", sz)
	}
	if off := unsafe.Offsetof(flowSlab{}.hot); off%64 != 0 {
		t.Errorf("a slab's flowHots start at byte %d, not on a cache line", off)
	}
}

// TestFlowPassFields: what Maintain's pass over every flow reads for each
// of them is in its flowHot (see flowHot), which the pass reads without
// the flow: the pass is bound by memory bandwidth, and a field moved to
// the flow costs every flow another cache line or two in every Maintain.
// A flow handed out points at its own flowHot in its slab.
func TestFlowPassFields(t *testing.T) {
	var s Switch
	for range 2*flowsPerSlab + 1 {
		f := s.allocFlow()
		sl := s.slabs[len(s.slabs)-1]
		i := s.slabNext - 1
		if f != &sl.flows[i] || f.h != &sl.hot[i] {
			t.Fatalf("flow %d of its slab does not point at the slab's flowHot %d", i, i)
		}
	}
	// The fields themselves: flowHot's, by name, so that moving one back
	// into flow fails to compile here.
	h := flowHot{}
	_ = []any{h.id, h.shadowID, h.ruleP, h.shP, h.lastUsed, h.loc, h.dead, h.inTable}
}

// looseFlow is a flow outside any slab, with its own flowHot.
func looseFlow(k hal.FlowKey) *flow { return &flow{h: new(flowHot), key: k} }

// zeroFlow reports whether f, and its flowHot, are zero (but for f.h).
func zeroFlow(f *flow) bool {
	g := *f
	g.h = nil
	return g == (flow{}) && *f.h == (flowHot{})
}

// TestConnKeyPlainMemory: a connKey has no padding (its fields' sizes add
// up to its size) and no pointers, so the connection table hashes and
// compares it as plain memory.
func TestConnKeyPlainMemory(t *testing.T) {
	var k connKey
	fields := unsafe.Sizeof(k.src) + unsafe.Sizeof(k.dst) + unsafe.Sizeof(k.vm) + unsafe.Sizeof(k.srcPort) +
		unsafe.Sizeof(k.dstPort) + unsafe.Sizeof(k.dir) + unsafe.Sizeof(k.proto) + unsafe.Sizeof(k.pad)
	if sz := unsafe.Sizeof(k); sz != fields {
		t.Errorf("a connKey is %d bytes, its fields %d: padding makes the table hash it field by field", sz, fields)
	}
}

// TestAllocFlow: the slab allocator hands out zero flows, each once:
// across slabs no flow is handed out twice (until its slab is recycled,
// TestSlabRecycling), so a pointer kept to a removed flow never sees
// another flow in its place.
func TestAllocFlow(t *testing.T) {
	if flowsPerSlab < 2 {
		t.Fatalf("%d flows per slab", flowsPerSlab)
	}
	var s Switch
	seen := map[*flow]bool{}
	for i := range 3*flowsPerSlab + 1 {
		f := s.allocFlow()
		if seen[f] {
			t.Fatalf("flow %d handed out twice", i)
		}
		seen[f] = true
		if !zeroFlow(f) {
			t.Fatalf("flow %d is not zero", i)
		}
		// A flow is written after it is handed out; the next must not see it.
		f.key.L4Src, f.h.dead = uint16(i), true
	}
}

// TestConntrackFilter: the connection table's filter never says no for a
// connection in the table, through growth, removals and the rebuilds they
// cause; and it says no for most keys that are not (else it would spare
// no look-up).
func TestConntrackFilter(t *testing.T) {
	ct := newConntrack()
	key := func(i int) connKey {
		k := connKey{vm: uint32(i % 7), dir: policy.Direction(i % 2), proto: 6, srcPort: uint16(i), dstPort: 443}
		k.src[15], k.src[14], k.dst[13] = byte(i), byte(i>>8), byte(i>>16)
		return k
	}
	check := func(lo, hi int) {
		t.Helper()
		for i := lo; i < hi; i++ {
			if !ct.established(key(i)) {
				t.Fatalf("connection %d in the table (%d, filter of %d words) is not established", i, len(ct.conns), len(ct.filter))
			}
		}
	}
	const n = 20000
	for i := range n {
		ct.add(&conn{key: key(i)})
		if i%1000 == 0 {
			check(0, i+1)
		}
	}
	check(0, n)
	grown := len(ct.filter)
	if grown*64 < n*8 {
		t.Errorf("filter of %d words for %d connections", grown, n)
	}
	// Remove all but the last thousand, a few at a time, checking as it goes.
	for i := range n - 1000 {
		ct.remove(key(i))
		if ct.established(key(i)) {
			t.Fatalf("removed connection %d is established", i)
		}
		if i%997 == 0 {
			check(i+1, n)
		}
	}
	check(n-1000, n)
	if len(ct.filter) >= grown {
		t.Errorf("the filter kept %d words for %d connections", len(ct.filter), len(ct.conns))
	}
	maybe := 0
	for i := 2 * n; i < 3*n; i++ {
		k := key(i)
		if ct.mayHave(&k) {
			maybe++
		}
	}
	if maybe > n/10 {
		t.Errorf("the filter says maybe for %d of %d keys never added", maybe, n)
	}
}

// TestFlowTablePutFilter: every hash put since forgetPuts answers
// mayHavePut (the filter has no false negatives, which would make
// HandleBatch miss a flow an earlier packet of its batch made), and after
// forgetPuts most hashes do not.
func TestFlowTablePutFilter(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var tab flowTable
	tab.init(0)
	for round := range 100 {
		tab.forgetPuts()
		put := make([]uint64, 80)
		for i := range put {
			f := looseFlow(hal.FlowKey{InPort: 1, L4Src: uint16(round), L4Dst: uint16(i)})
			put[i] = tab.hashKey(&f.key)
			tab.putHashed(f, put[i])
		}
		for _, h := range put {
			if !tab.mayHavePut(h) {
				t.Fatalf("round %d: hash %#x put but not in the filter", round, h)
			}
		}
		tab.forgetPuts()
		for _, h := range put {
			if tab.mayHavePut(h) {
				t.Fatalf("round %d: hash %#x in the filter after forgetPuts", round, h)
			}
		}
		if round == 0 {
			tab.putHashed(looseFlow(hal.FlowKey{}), put[0])
			others := 0
			for range 1000 {
				if tab.mayHavePut(rng.Uint64()) {
					others++
				}
			}
			if others > 20 {
				t.Fatalf("one hash put: %d of 1000 others in the filter", others)
			}
		}
	}
}

// TestBatchFindsFlowsItMade: in one batch, the later packets of a flow that
// an earlier packet created take that flow (one flow per connection, not
// one per packet), whether or not they come right after it.
func TestBatchFindsFlowsItMade(t *testing.T) {
	h := newBenchHost(t, smallPolicy(t, nil), 0)
	h.sw.Close()
	sw, err := New(Config{NIC: h.soft, Host: "h1", State: h.sw.cur.st, Ports: map[string]hal.PortID{"va1": 1, "vb1": 2, "u1": 3},
		Uplink: 4, DisableWalkMemo: true, DisablePortWildcards: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	h.sw = sw
	batch, _ := newFlowBatch(h)
	for i := range batch {
		setFlow(batch[i].Buf, 1000+i%16) // 16 connections, each 4 times, interleaved
	}
	if err := sw.HandleBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	s := sw.Stats()
	if s.FlowsCreated != 16 || s.Flows != 16 {
		t.Fatalf("16 connections in a batch of 64 made %d flows (%d live), want 16\n%s", s.FlowsCreated, s.Flows, s)
	}
}

// TestOutConnKey: the key a batch prefetches the connection filter with
// is the one the walk's sender layer asks about, for IPv4 and IPv6 keys
// of every protocol (ports only where the protocol has them).
func TestOutConnKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	protos := []uint8{hal.ProtoTCP, hal.ProtoUDP, policy.ProtoSCTP, policy.ProtoICMP, policy.ProtoICMPv6, 47, 0}
	for i := range 5000 {
		k := hal.FlowKey{InPort: 1, Proto: protos[rng.IntN(len(protos))], L4Src: uint16(rng.Uint32()), L4Dst: uint16(rng.Uint32())}
		if i%2 == 0 {
			k.EthType = hal.EtherTypeIPv4
			k.IPSrc = netip.AddrFrom4([4]byte{10, byte(i), byte(i >> 8), 1}).As16()
			k.IPDst = netip.AddrFrom4([4]byte{10, 9, byte(i), byte(i >> 8)}).As16()
		} else {
			k.EthType = hal.EtherTypeIPv6
			k.IPSrc = netip.AddrFrom16([16]byte{0: 0xfd, 14: byte(i), 15: byte(i >> 8)}).As16()
			k.IPDst = netip.AddrFrom16([16]byte{0: 0xfd, 1: 9, 15: byte(i)}).As16()
		}
		vm := uint32(rng.IntN(1000))
		p := packetOf(&k, 64)
		if got, want := outConnKey(vm, &k), connKeyOf(vm, policy.Out, &p); got != want {
			t.Fatalf("key %+v: outConnKey %+v, the walk's %+v", k, got, want)
		}
	}
}
