package vswitch

import (
	"context"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// newFlowBatch is a batch of 64 first packets from va1 toward va2 (a remote
// VM: walk, offload, encapsulation); fill gives the packets the ports of
// flows base to base+63.
func newFlowBatch(h *benchHost) (batch []hal.Exception, fill func(base int)) {
	batch = make([]hal.Exception, 64)
	for i := range batch {
		batch[i] = hal.Exception{InPort: h.va1, Reason: hal.ReasonMiss, Buf: flowFrame(macVA2, caVA2)}
		batch[i].Len = len(batch[i].Buf)
	}
	return batch, func(base int) {
		for i := range batch {
			setFlow(batch[i].Buf, base+i)
		}
	}
}

// acceptNIC takes every operation without programming anything, so that an
// allocation count sees the switch's own allocations and not the driver's.
type acceptNIC struct{ hal.NIC }

func (a acceptNIC) Apply(ctx context.Context, ops []hal.Op, res []hal.OpResult) error {
	clear(res[:len(ops)])
	return nil
}

// TestSlowPathAllocs bounds what a first packet allocates in the switch:
// its share of a slab of flows and nothing else (its verdict, rule,
// operation and result live in memory the switch reuses). A batch of 64
// first packets allocates at most four slabs of seventeen; one more
// allocation per batch is left for the flow table's growth, amortized over
// many batches. (softnic's Apply allocates too,
// about four times per batch; its allocations are its own and are left
// out here.)
func TestSlowPathAllocs(t *testing.T) {
	h := newBenchHostOn(t, smallPolicy(t, nil), 0, func(n hal.NIC) hal.NIC { return acceptNIC{n} })
	batch, fill := newFlowBatch(h)
	ctx := context.Background()
	next := 0
	run := func() {
		fill(next)
		next += len(batch)
		if err := h.sw.HandleBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		h.uplink.Discard()
	}
	for i := 0; i < 4; i++ { // interned actions, cached answers, scratch slices
		run()
	}
	allocs := testing.AllocsPerRun(64, run)
	if max := float64((len(batch)+flowsPerSlab-1)/flowsPerSlab + 1); allocs > max {
		t.Errorf("%.0f allocations per batch of %d first packets, want at most %.0f", allocs, len(batch), max)
	}
	if s := h.sw.Stats(); s.FlowsNIC != next || s.Injected != uint64(next) {
		t.Fatalf("%d of %d flows offloaded, %d packets reinjected", s.FlowsNIC, next, s.Injected)
	}
}

// TestHostPathNoAllocs: packets of flows the host keeps (offload disabled)
// are executed and reinjected without allocating.
func TestHostPathNoAllocs(t *testing.T) {
	h := newBenchHost(t, smallPolicy(t, nil), 0)
	h.sw.cfg.DisableOffload = true
	batch, fill := newFlowBatch(h)
	fill(0)
	ctx := context.Background()
	run := func() {
		if err := h.sw.HandleBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		h.uplink.Discard()
	}
	run() // the flows
	if allocs := testing.AllocsPerRun(100, run); allocs != 0 {
		t.Errorf("%.1f allocations per batch of packets of known flows, want 0", allocs)
	}
	if s := h.sw.Stats(); s.FlowsHost != len(batch) || s.Injected != 102*uint64(len(batch)) {
		t.Fatalf("%d host flows, %d packets reinjected", s.FlowsHost, s.Injected)
	}
}

// TestQueueRuleIsExact checks that a rule built in place is the one the
// slow path always installed: hal.Exact of the key, the flow's actions,
// exact priority, the owner cookie, scope and generation. Keys of one shape
// follow each other with different fields, so that masks kept per shape are
// checked on keys other than the one they were taken from.
func TestQueueRuleIsExact(t *testing.T) {
	h := newBenchHost(t, smallPolicy(t, nil), 0)
	s := h.sw
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.intern(actKey{action: 0})
	defer s.release(a)
	for _, k := range []hal.FlowKey{
		{InPort: 1, EthType: hal.EtherTypeIPv4, IPSrc: caVA1.As16(), IPDst: caVA2.As16(), Proto: hal.ProtoUDP, L4Src: 9, L4Dst: 7},
		{InPort: 4, TunKind: hal.EncapVXLAN, VNI: 0x0100_0005, TunSrc: pa2.As16(), TunDst: pa1.As16(), EthType: hal.EtherTypeIPv4,
			IPSrc: caVA2.As16(), IPDst: caVA1.As16(), Proto: hal.ProtoTCP, L4Src: 7, L4Dst: 9},
		{InPort: 1, EthType: hal.EtherTypeARP, TunSrc: pa2.As16()}, // tunnel fields without a tunnel are not matched
		{InPort: 4, TunKind: hal.EncapGeneve, VNI: 9, TunSrc: pa3.As16(), TunDst: pa1.As16(), EthType: hal.EtherTypeARP, VLAN: hal.VLANPresent | 7},
		{InPort: 2, EthType: hal.EtherTypeIPv6, IPSrc: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, IPDst: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 2},
			Proto: hal.ProtoICMPv6, L4Src: 128, EthSrc: hal.MAC(macVA1), EthDst: hal.MAC(macVA2)},
		{InPort: 2, EthType: hal.EtherTypeIPv6, Proto: hal.ProtoTCP, L4Src: 1, L4Dst: 2, VNI: 77}, // a VNI without a tunnel is not matched
	} {
		s.off.queueRule(hal.OpModify, 42, &k, a, 3, 5, false)
		got := s.off.ops[len(s.off.ops)-1]
		s.off.ops = s.off.ops[:len(s.off.ops)-1]
		want := hal.Op{Kind: hal.OpModify, Rule: hal.Rule{ID: 42, Priority: prioExact, Match: hal.Exact(&k),
			Actions: a.acts, Cookie: s.off.cookie(), Scope: 3, Generation: 5}}
		if got.Kind != want.Kind || got.Rule.Match != want.Rule.Match || got.Rule.ID != want.Rule.ID ||
			got.Rule.Priority != want.Rule.Priority || got.Rule.Cookie != want.Rule.Cookie ||
			got.Rule.Scope != want.Rule.Scope || got.Rule.Generation != want.Rule.Generation ||
			len(got.Rule.Actions) != len(want.Rule.Actions) || &got.Rule.Actions[0] != &want.Rule.Actions[0] {
			t.Errorf("key %v:\n got %v %v\nwant %v %v", k, got.Kind, &got.Rule, want.Kind, &want.Rule)
		}
	}
}

// TestRemoveFlowNoAllocs: removing a flow allocates nothing: the removed
// flow holds the switch's one empty action set (each removal allocated one
// of its own) and its table's slot and rule go back.
func TestRemoveFlowNoAllocs(t *testing.T) {
	h := newBenchHost(t, smallPolicy(t, nil), 0)
	batch, fill := newFlowBatch(h)
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		fill(i * len(batch))
		if err := h.sw.HandleBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		h.uplink.Discard()
	}
	s := h.sw
	s.mu.Lock()
	defer s.mu.Unlock()
	var flows []*flow
	for f := range s.flows.all() {
		flows = append(flows, f)
	}
	const runs = 100
	if len(flows) < runs+1 {
		t.Fatalf("%d flows, want more than %d", len(flows), runs)
	}
	next := 0
	allocs := testing.AllocsPerRun(runs, func() {
		s.removeFlow(flows[next])
		next++
	})
	if allocs != 0 {
		t.Errorf("%.2f allocations per removed flow, want 0", allocs)
	}
	for _, f := range flows[:next] {
		if !f.h.dead || f.acts == nil || len(f.acts.acts) != 0 {
			t.Fatalf("a removed flow: dead %v, actions %v", f.h.dead, f.acts)
		}
	}
	if n := s.flows.Len(); n != len(flows)-next {
		t.Fatalf("%d flows left of %d after %d removals", n, len(flows), next)
	}
}
