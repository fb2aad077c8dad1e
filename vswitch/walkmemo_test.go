package vswitch

import (
	"context"
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
// was tracked is not reused once one is. The reverse flow pre-installed for
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
