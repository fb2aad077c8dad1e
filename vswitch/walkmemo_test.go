package vswitch

import (
	"context"
	"github.com/nicpath/nicpath/hal/wire"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// exception is one exception-path packet from a vport.
func exception(port hal.PortID, p policy.Packet) hal.Exception {
	b := frameOf(p)
	return hal.Exception{InPort: port, Reason: hal.ReasonMiss, Buf: b, Len: len(b)}
}

// TestWalkMemoKeepsConnectionUsers: a walk remembered while no connection
// was tracked is not reused once one is tracked between its endpoints at
// a layer it passed. The reverse flow pre-installed for
// a stateful request has the key (ports aside) of a flow walked before the
// connection opened; its own walk passes the receiver's layer as
// established, and the flow must be recorded as a user of the connection
// (it goes when the connection does).
func TestWalkMemoKeepsConnectionUsers(t *testing.T) {
	st := smallPolicy(t, func(b *policy.Builder) {
		b.AddACL(policy.ACL{Tenant: "t", ID: "out-va1", Priority: 10, Direction: policy.Out, Action: policy.Allow, Stateful: true,
			Src: []netip.Prefix{netip.PrefixFrom(caVA1, 32)}, Protocol: policy.ProtoUDP})
	})
	h := newBenchHost(t, st, 0)
	s := h.sw
	router := st.RouterMAC()
	ctx := context.Background()
	// vb1 → va1 (routed, delivered on this host): no port is read, so the
	// walk is remembered.
	first := []hal.Exception{exception(2, udp(macVB1, router, caVB1, caVA1, 53, 7000))}
	if err := s.HandleBatch(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := []hal.Exception{exception(2, udp(macVB1, router, caVB1, caVA1, 53, 7002))}
	if err := s.HandleBatch(ctx, second); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	remembered := s.stats.walksRemembered
	s.mu.Unlock()
	if remembered != 1 {
		t.Fatalf("%d walks remembered, want 1 (the second connection's)", remembered)
	}
	// va1 → vb1 opens a connection; its reply vb1 → va1 53 → 7001 is
	// pre-installed.
	req := []hal.Exception{exception(1, udp(macVA1, router, caVA1, caVB1, 7001, 53))}
	if err := s.HandleBatch(ctx, req); err != nil {
		t.Fatal(err)
	}
	rk := hal.FlowKey{InPort: 2, EthSrc: hal.MAC(macVB1), EthDst: hal.MAC(router), EthType: hal.EtherTypeIPv4,
		IPSrc: caVB1.As16(), IPDst: caVA1.As16(), Proto: hal.ProtoUDP, L4Src: 53, L4Dst: 7001}
	s.mu.Lock()
	f := s.flows.get(&rk)
	uses := -1
	if f != nil && f.x != nil {
		uses = len(f.x.uses)
	} else if f != nil {
		uses = 0
	}
	after := s.stats.walksRemembered
	s.mu.Unlock()
	if f == nil {
		t.Fatal("the reply was not pre-installed")
	}
	if uses != 1 {
		t.Fatalf("the reply flow uses %d connections, want the one it passes as established", uses)
	}
	if after != remembered {
		t.Fatalf("a remembered walk answered while a connection was tracked")
	}
}

// TestWalkMemoForgottenOnUpdate: an update makes a new compiled state and
// empties the memo, which would otherwise keep the old one alive; the
// first packets after it are walked against the new policy.
func TestWalkMemoForgottenOnUpdate(t *testing.T) {
	st := smallPolicy(t, nil)
	h := newBenchHost(t, st, 0)
	s := h.sw
	batch, fill := newFlowBatch(h)
	fill(0)
	ctx := context.Background()
	if err := s.HandleBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	remembered := s.stats.walksRemembered
	s.mu.Unlock()
	if remembered != uint64(len(batch)-1) {
		t.Errorf("%d walks remembered in a batch of %d connections between two VMs", remembered, len(batch))
	}
	// Deny va1 → va2 from now on.
	st2 := smallPolicy(t, func(b *policy.Builder) {
		b.AddACL(policy.ACL{Tenant: "t", ID: "deny", Priority: 10, Direction: policy.Out, Action: policy.Deny,
			Dst: []netip.Prefix{netip.PrefixFrom(caVA2, 32)}})
	})
	if err := s.Update(ctx, st2); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	kept := 0
	for i := range s.walks {
		if s.walks[i].c != nil {
			kept++
		}
	}
	s.mu.Unlock()
	if kept != 0 {
		t.Fatalf("%d memo entries kept after an update", kept)
	}
	h.uplink.Discard()
	fill(len(batch))
	if err := s.HandleBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Injected != uint64(len(batch)) {
		t.Fatalf("%d packets reinjected: the new connections after the deny were let through\n%s", st.Injected, st)
	}
}

// TestWalkMemoAgreesWithWalk: while connections come and go, a verdict
// from the memo is the verdict a fresh walk of the same key gives, and
// classifyFlow reports the same about its ports. The connections are
// tracked at the very layers the remembered walks passed, between the same
// endpoints, on some of the ports the keys use: a memo that ignored them
// would answer for a key that a fresh walk passes as established (a flow
// that must be recorded as the connection's user), and a memo that shunned
// every walk while connections are tracked would not answer at all.
func TestWalkMemoAgreesWithWalk(t *testing.T) {
	st := smallPolicy(t, nil)
	h := newBenchHost(t, st, 0)
	s := h.sw
	router := st.RouterMAC()
	type pair struct {
		port     hal.PortID
		src, dst policy.MAC
		s, d     netip.Addr
	}
	pairs := []pair{
		{1, macVA1, router, caVA1, caVB1}, // routed, delivered here: two layers
		{2, macVB1, router, caVB1, caVA1},
		{1, macVA1, macVA2, caVA1, caVA2}, // to another host: one layer
	}
	sports, dports := []uint16{1000, 1001, 1002, 1003}, []uint16{53, 80}
	keyOf := func(p pair, sp, dp uint16, proto uint8) hal.FlowKey {
		pkt := udp(p.src, p.dst, p.s, p.d, sp, dp)
		pkt.Protocol = proto
		var k hal.FlowKey
		var l wire.Layout
		if err := wire.Parse(frameOf(pkt), p.port, &k, &l); err != nil {
			t.Fatal(err)
		}
		return k
	}
	r := rand.New(rand.NewPCG(20, 2))
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cur
	var added []connKey
	var hits, hitsWithConns, used, compared int
	for i := 0; i < 20000; i++ {
		p := pairs[r.IntN(len(pairs))]
		proto := []uint8{policy.ProtoUDP, policy.ProtoTCP}[r.IntN(2)]
		k := keyOf(p, sports[r.IntN(len(sports))], dports[r.IntN(len(dports))], proto)
		switch op := r.IntN(10); {
		case op < 2:
			// A connection at one of the layers this key passes, on its
			// ports.
			var d walkDeps
			var v verdict
			c.classifyDeps(&k, s.cfg.Uplink, 64, nil, nil, &v, nil, &d)
			if d.n == 0 {
				t.Fatalf("%v passed no ACL layer", k)
			}
			ck := d.layers[r.IntN(min(d.n, len(d.layers)))]
			ck.srcPort, ck.dstPort = k.L4Src, k.L4Dst
			if s.ct.conns[ck] == nil {
				s.ct.add(&conn{key: ck, users: map[*flow]struct{}{}})
				added = append(added, ck)
			}
		case op < 4 && len(added) > 0:
			j := r.IntN(len(added))
			s.ct.remove(added[j])
			added[j] = added[len(added)-1]
			added = added[:len(added)-1]
		default:
			before := s.stats.walksRemembered
			var vm, vf verdict
			anyM := s.classifyFlow(c, &k, 64, &vm)
			anyF := c.classifyHinted(&k, s.cfg.Uplink, 64, s.ct, nil, &vf, nil)
			compared++
			if s.stats.walksRemembered != before {
				hits++
				if len(s.ct.conns) > 0 {
					hitsWithConns++
				}
			}
			if vf.nused > 0 {
				used++
			}
			if vm != vf || anyM != anyF {
				t.Fatalf("step %d, %d connections tracked: key %+v\nmemo:  %+v (any ports %v)\nfresh: %+v (any ports %v)",
					i, len(s.ct.conns), k, vm, anyM, vf, anyF)
			}
		}
	}
	for _, ck := range added {
		s.ct.remove(ck)
	}
	t.Logf("%d keys compared: %d remembered, %d of them with connections tracked; %d fresh walks passed a layer as established",
		compared, hits, hitsWithConns, used)
	if hitsWithConns == 0 || used == 0 || hits == compared {
		t.Fatalf("the test did not exercise the memo with connections tracked (%d compared, %d remembered, %d with connections, %d established)",
			compared, hits, hitsWithConns, used)
	}
}
