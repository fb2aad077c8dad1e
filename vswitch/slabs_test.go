package vswitch

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// TestSlabRecycling: a slab all of whose flows are dead comes back from
// allocFlow, zeroed, in the order the passes found them, only after the
// tableFlows pass that finds it and two recycleSlabs (the ends of two
// Maintains); never while an activation can
// be rolled back; and a slab holding a flow that left the table without
// dying (replaced under its key) never does.
func TestSlabRecycling(t *testing.T) {
	var s Switch
	slabOf := map[*flow]int{}
	var slabs [][]*flow
	for i := range 4 * flowsPerSlab {
		f := s.allocFlow()
		f.key = hal.FlowKey{InPort: 1, L4Src: uint16(i)}
		s.flows.put(f)
		slabOf[f] = i / flowsPerSlab
		if i%flowsPerSlab == 0 {
			slabs = append(slabs, nil)
		}
		slabs[i/flowsPerSlab] = append(slabs[i/flowsPerSlab], f)
	}
	// Slabs 0 and 1 die whole; in slab 2 every flow dies but one, which
	// another flow replaces under its key (slab 3 is the current one).
	for _, f := range append(append([]*flow{}, slabs[0]...), slabs[1]...) {
		s.removeFlow(f)
	}
	for _, f := range slabs[2][1:] {
		s.removeFlow(f)
	}
	nf := looseFlow(slabs[2][0].key)
	s.flows.put(nf)
	if slabs[2][0].h.inTable || slabs[2][0].h.dead {
		t.Fatal("the replaced flow should be out of the table and alive")
	}
	for range s.tableFlows() {
	}
	if len(s.emptied) != 2 {
		t.Fatalf("%d slabs found dead, want 2 (slab 2 holds a replaced flow)", len(s.emptied))
	}
	// allocFlow takes nothing back until two recycleSlabs have passed.
	fresh := func(when string) {
		t.Helper()
		for range flowsPerSlab {
			if f := s.allocFlow(); slabOf[f] != 0 || f == slabs[0][0] {
				t.Fatalf("%s: a flow of a dead slab handed out", when)
			}
		}
	}
	fresh("before any recycleSlabs") // the rest of slab 3, then a new slab
	s.recycleSlabs()
	if len(s.spare) != 0 || len(s.cooling) != 2 {
		t.Fatalf("after one recycleSlabs: %d spare, %d cooling; want 0 and 2", len(s.spare), len(s.cooling))
	}
	fresh("after one recycleSlabs")
	// An activation that can be rolled back holds flows: nothing moves.
	s.rollback = map[string]rollbackPoint{"vm": {}}
	s.recycleSlabs()
	if len(s.spare) != 0 {
		t.Fatalf("%d slabs recycled with a rollback pending", len(s.spare))
	}
	s.rollback = nil
	s.recycleSlabs()
	if len(s.spare) != 2 {
		t.Fatalf("%d spare slabs, want 2", len(s.spare))
	}
	// Use up the current slab; the next flows come from the dead slabs,
	// zeroed, and the pass lists their slabs again.
	for s.slabNext < flowsPerSlab {
		s.allocFlow()
	}
	got := map[int]int{}
	for i := range 2 * flowsPerSlab {
		f := s.allocFlow()
		if i == 0 && f != slabs[0][0] {
			t.Fatal("the first recycled flow is not the first of the first dead slab (spares go in the order found)")
		}
		if !zeroFlow(f) {
			t.Fatal("a recycled flow is not zero")
		}
		sl, ok := slabOf[f]
		if !ok || sl > 1 {
			t.Fatal("a flow handed out from a fresh slab while two dead ones were spare")
		}
		got[sl]++
		f.key = hal.FlowKey{InPort: 2, L4Src: uint16(got[0]<<8 | got[1])}
		s.flows.put(f)
	}
	if got[0] != flowsPerSlab || got[1] != flowsPerSlab {
		t.Fatalf("flows handed out per recycled slab: %v", got)
	}
	n := 0
	for f := range s.tableFlows() {
		if _, ok := slabOf[f]; ok && slabOf[f] <= 1 {
			n++
		}
	}
	if n != 2*flowsPerSlab {
		t.Fatalf("the pass yielded %d flows of the recycled slabs, want %d", n, 2*flowsPerSlab)
	}
}

// TestSlabRecyclingKeepsReferences: through rounds of tracked connections
// that open, carry replies and idle out, with Maintain recycling the
// slabs of the dead flows, no connection, port-wildcard entry or flow
// ever points at a flow that is not the one it recorded, and every
// request and reply is delivered as the policy says.
func TestSlabRecyclingKeepsReferences(t *testing.T) {
	st := smallPolicy(t, func(b *policy.Builder) {
		b.AddACL(policy.ACL{Tenant: "t", ID: "deny-in-va1", Priority: 100, Direction: policy.In, Action: policy.Deny,
			Dst: []netip.Prefix{netip.PrefixFrom(caVA1, 32)}, Protocol: policy.ProtoTCP})
		b.AddACL(policy.ACL{Tenant: "t", ID: "out-va1", Priority: 10, Direction: policy.Out, Action: policy.Allow, Stateful: true,
			Src: []netip.Prefix{netip.PrefixFrom(caVA1, 32)}, Protocol: policy.ProtoTCP})
	})
	tp := newTopo(t, st, topoOpts{flowIdle: 10 * time.Second, connIdle: 10 * time.Second})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	ctx := context.Background()
	// keyAt: the key each flow address held when last seen in h1's table.
	keyAt := map[*flow]hal.FlowKey{}
	denied := map[*testHost]map[*flow]hal.FlowKey{h1: {}, h2: {}}
	reused := 0
	for round := range 14 {
		for i := range 3 * flowsPerSlab {
			sp := uint16(10000 + round*100 + i)
			deliveredTo(t, tp.sendVM("va1", tcp(macVA1, macVA2, caVA1, caVA2, sp, 80)), h2, "va2")
			if i%2 == 0 {
				deliveredTo(t, tp.sendVM("va2", tcp(macVA2, macVA1, caVA2, caVA1, 80, sp)), h1, "va1")
			}
		}
		// An unsolicited reply is still refused.
		if got := tp.sendVM("va2", tcp(macVA2, macVA1, caVA2, caVA1, 80, 9)); len(got) != 0 {
			t.Fatalf("round %d: a packet of no connection was delivered", round)
		}
		tp.clock.Advance(3 * time.Second)
		for _, h := range []*testHost{h1, h2} {
			if err := h.sw.Maintain(ctx); err != nil {
				t.Fatal(err)
			}
			checkFlowRefs(t, h.sw, denied[h])
		}
		h1.sw.mu.Lock()
		for f := range h1.sw.flows.all() {
			if k, ok := keyAt[f]; ok && k != f.key {
				reused++
			}
			keyAt[f] = f.key
		}
		h1.sw.mu.Unlock()
	}
	if reused == 0 {
		t.Fatal("no flow of a recycled slab was handed out again")
	}
	if s := h1.sw.Stats(); s.FlowsAged == 0 || s.Conns == 0 {
		t.Fatalf("nothing aged, or no connection left:\n%s", s)
	}
}

// checkFlowRefs checks that whatever keeps flows points at flows of the
// table that record it back: a connection's users, the port-wildcard
// index, the flows' own connections, the denied lists.
// deniedKey is the key each flow in a denied list had when checkFlowRefs
// last saw it there: a flow still listed and alive has the same key.
func checkFlowRefs(t *testing.T, s *Switch, deniedKey map[*flow]hal.FlowKey) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	in := map[*flow]bool{}
	for f := range s.flows.all() {
		if f.h.dead || !f.h.inTable {
			t.Fatalf("flow %v in the table: dead %v, inTable %v", f.key, f.h.dead, f.h.inTable)
		}
		in[f] = true
	}
	has := func(cs []*conn, c *conn) bool {
		for _, o := range cs {
			if o == c {
				return true
			}
		}
		return false
	}
	for _, c := range s.ct.conns {
		for f := range c.users {
			if !in[f] {
				t.Fatalf("connection %v has a user not in the table (dead %v)", c.key, f.h.dead)
			}
			if f.x == nil || !has(f.x.opened, c) && !has(f.x.uses, c) {
				t.Fatalf("connection %v has user %v, which does not record it", c.key, f.key)
			}
		}
	}
	for f := range in {
		if f.x == nil {
			continue
		}
		for _, c := range append(append([]*conn{}, f.x.opened...), f.x.uses...) {
			if _, ok := c.users[f]; !ok {
				t.Fatalf("flow %v records connection %v, which does not list it", f.key, c.key)
			}
		}
	}
	for k, w := range s.wilds {
		if !in[w] || !w.wild || wildKey(&w.key) != k {
			t.Fatalf("port-wildcard entry %v points at a flow that is not its own", k)
		}
	}
	for k, fs := range s.denied {
		for _, f := range fs {
			if !f.h.dead && !in[f] {
				t.Fatalf("denied list holds flow %v, alive but not in the table", f.key)
			}
			if want, ok := deniedKey[f]; ok && !f.h.dead && f.key != want {
				t.Fatalf("denied list %v: its flow %v became flow %v", k, want, f.key)
			}
			deniedKey[f] = f.key
		}
	}
}
