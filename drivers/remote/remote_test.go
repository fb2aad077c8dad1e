package remote

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/securechan"
)

// TestEndToEnd: every hal call through the channel lands on the served
// NIC, and what comes back is what the served NIC said.
func TestEndToEnd(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, true)
	s := serve(t, soft, k, sockPath(t), nil)
	n := open(t, clientConfig(k, s.addr))
	ctx := context.Background()

	if _, ok := n.(hal.AtomicApplier); !ok {
		t.Error("served softnic applies atomically; the remote NIC lacks ApplyAtomic")
	}
	if _, ok := n.(hal.SealedAddresses); !ok {
		t.Error("served softnic has crypto; the remote NIC lacks SealedAddresses")
	}
	caps := n.Capabilities()
	sc := soft.Capabilities()
	if caps.Driver != DriverName || caps.MatchFields != sc.MatchFields || caps.Actions != sc.Actions || caps.MaxRules != sc.MaxRules ||
		caps.AtomicBatch != sc.AtomicBatch || caps.Crypto != sc.Crypto || caps.Encaps != sc.Encaps {
		t.Errorf("capabilities differ from the served NIC's:\n%s\nserved:\n%s", caps.String(), sc.String())
	}
	if !reflect.DeepEqual(n.Ports(), soft.Ports()) {
		t.Errorf("ports %v, served %v", n.Ports(), soft.Ports())
	}

	// Validate: a refusal keeps its type and field.
	bad := exactRule(1, 1)
	bad.Actions = bad.Actions[:len(bad.Actions)-1]
	err := n.Validate(&bad)
	var re *hal.RuleError
	if !errors.As(err, &re) || !errors.Is(err, hal.ErrInvalidRule) {
		t.Errorf("validate of a rule without terminal action: %v (%T)", err, err)
	}
	good := exactRule(1, 1)
	if err := n.Validate(&good); err != nil {
		t.Errorf("validate: %v", err)
	}

	// Apply: per-op results.
	ops := []hal.Op{hal.AddOp(exactRule(1, 1)), hal.AddOp(exactRule(2, 2)), hal.AddOp(exactRule(1, 3)), hal.DeleteOp(77)}
	res := make([]hal.OpResult, len(ops))
	err = n.Apply(ctx, ops, res)
	var be *hal.BatchError
	if !errors.As(err, &be) || be.Failed != 2 {
		t.Fatalf("apply: %v", err)
	}
	if res[0].Err != nil || res[1].Err != nil || !errors.Is(res[2].Err, hal.ErrExists) || !errors.Is(res[3].Err, hal.ErrNotFound) {
		t.Fatalf("results %v", res)
	}
	got := dumpIDs(t, n)
	direct := dumpIDs(t, soft)
	if !reflect.DeepEqual(got, direct) || len(got) != 2 {
		t.Fatalf("remote dump %v\ndirect dump %v", got, direct)
	}
	if r := got[1]; !reflect.DeepEqual(r, exactRule(1, 1)) {
		t.Errorf("rule 1 came back as %v", &r)
	}

	// Atomic: one bad op rolls the batch back.
	aa := n.(hal.AtomicApplier)
	ops = []hal.Op{hal.AddOp(exactRule(3, 3)), hal.AddOp(exactRule(2, 9))}
	res = make([]hal.OpResult, 2)
	if err := aa.ApplyAtomic(ctx, ops, res); err == nil || !errors.Is(res[0].Err, hal.ErrNotApplied) || !errors.Is(res[1].Err, hal.ErrExists) {
		t.Fatalf("apply atomic: %v %v", err, res)
	}
	if _, ok := dumpIDs(t, soft)[3]; ok {
		t.Fatal("a rolled back rule landed")
	}

	// Generations.
	if err := n.Activate(ctx, 7, 2); err != nil {
		t.Fatal(err)
	}
	if g, err := n.ActiveGeneration(7); err != nil || g != 2 {
		t.Fatalf("active generation %d, %v", g, err)
	}
	if g, err := soft.ActiveGeneration(7); err != nil || g != 2 {
		t.Fatalf("served NIC's active generation %d, %v", g, err)
	}

	// Counters.
	cs := make([]hal.Counters, 2)
	if err := n.RuleCounters(ctx, []hal.RuleID{1, 2}, cs); err != nil {
		t.Fatal(err)
	}
	if _, err := n.PortCounters(ctx, 99); !errors.Is(err, hal.ErrNotFound) {
		t.Errorf("port counters of a missing port: %v", err)
	}
	if _, err := n.Stats(ctx); err != nil {
		t.Fatal(err)
	}

	// Sealed keys.
	sa := n.(hal.SealedAddresses)
	if sa.SealPublicKey() != soft.SealPublicKey() {
		t.Error("seal public key differs from the served NIC's")
	}
	if err := sa.RegisterSealKey(ctx, 1, 1, [32]byte{1, 2, 3}); err != nil {
		t.Fatalf("register seal key: %v", err)
	}
	if len(soft.SealKeys(1)) != 1 {
		t.Fatalf("served NIC's keys on port 1: %v", soft.SealKeys(1))
	}
	if err := sa.RevokeSealKey(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Activate(ctx, 1, 1); !errors.Is(err, hal.ErrClosed) {
		t.Errorf("after close: %v", err)
	}
	// Closing the host's driver leaves the NIC's rules.
	if len(dumpIDs(t, soft)) != 2 {
		t.Error("closing the remote driver removed rules from the NIC")
	}
}

// TestLargeBatches: batches larger than a segment land whole, with exact
// results at segment boundaries, concurrently from two goroutines; an
// atomic one of many segments is still all or nothing.
func TestLargeBatches(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), func(c *ServerConfig) { c.ApplyChunk = 3000 })
	// 40,000 rules at a time under the race detector: on a loaded machine
	// the server's and the client's goroutines wait seconds for a CPU, and the default
	// keepalive (1 s, dead after 4 s of silence) declared the channel dead
	// mid-batch. This test is about batches, not liveness.
	cfg := clientConfig(k, s.addr)
	cfg.KeepAlive = 5 * time.Second
	n := open(t, cfg)
	ctx := context.Background()
	const size = 40000 // segments of 2048, 4096, 8192, 16384, 9280
	batch := func(base int) ([]hal.Op, map[int]bool) {
		ops := make([]hal.Op, size)
		bad := map[int]bool{}
		for i := range ops {
			r := exactRule(hal.RuleID(base+i+1), uint16(i))
			r.Match.Key.IPDst[13] = byte(base >> 16)
			r.Match.Key.IPDst[14], r.Match.Key.IPDst[15] = byte(i>>8), byte(i)
			if i == 2047 || i == 2048 || i == 6143 || i == 39999 { // at and around segment ends
				r.Actions = nil // invalid: no terminal action
				bad[i] = true
			}
			ops[i] = hal.AddOp(r)
		}
		return ops, bad
	}
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ops, bad := batch(g << 20)
			res := make([]hal.OpResult, len(ops))
			err := n.Apply(ctx, ops, res)
			var be *hal.BatchError
			if !errors.As(err, &be) || be.Failed != len(bad) {
				t.Errorf("batch %d: %v", g, err)
				return
			}
			for i, r := range res {
				if bad[i] != (r.Err != nil) || (bad[i] && !errors.Is(r.Err, hal.ErrInvalidRule)) {
					t.Errorf("batch %d op %d: %v", g, i, r.Err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := len(dumpIDs(t, soft)); got != 2*(size-4) {
		t.Fatalf("the NIC holds %d rules, want %d", got, 2*(size-4))
	}
	ops, bad := batch(3 << 20)
	res := make([]hal.OpResult, len(ops))
	if err := n.(hal.AtomicApplier).ApplyAtomic(ctx, ops, res); err == nil {
		t.Fatal("an atomic batch with invalid ops landed")
	}
	for i, r := range res {
		if bad[i] && !errors.Is(r.Err, hal.ErrInvalidRule) || !bad[i] && !errors.Is(r.Err, hal.ErrNotApplied) {
			t.Fatalf("atomic op %d: %v", i, r.Err)
		}
	}
	if got := len(dumpIDs(t, soft)); got != 2*(size-4) {
		t.Fatalf("after a refused atomic batch the NIC holds %d rules", got)
	}
}

// TestAddressInformation: mapping updates go host → NIC in securechan's
// own messages and come back acknowledged one by one; learned addresses
// go NIC → host.
func TestAddressInformation(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	var mu sync.Mutex
	var got []securechan.Message
	s := serve(t, soft, k, sockPath(t), func(c *ServerConfig) {
		c.Addresses = func(_ context.Context, m *securechan.Message) securechan.AckStatus {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, *m)
			if m.VNI == 666 {
				return securechan.AckRefused
			}
			return securechan.AckOK
		}
	})
	learned := make(chan securechan.Message, 4)
	cfg := clientConfig(k, s.addr)
	cfg.OnLearned = func(m securechan.Message) { learned <- m }
	n := open(t, cfg)
	cl, _ := AsClient(n)
	var ms []securechan.Message
	for i := range 1000 {
		ms = append(ms, securechan.Message{Type: securechan.MsgMappingAdd, Seq: uint64(i), VNI: 1001,
			Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), PA: netip.MustParseAddr("198.18.0.2"), MAC: [6]byte{2, 0, 0, 0, 0, 1}})
	}
	ms = append(ms, securechan.Message{Type: securechan.MsgMappingRemove, Seq: 1000, VNI: 666, Addr: netip.MustParseAddr("2001:db8::1")})
	acks, err := cl.SendAddresses(context.Background(), ms)
	if err != nil {
		t.Fatal(err)
	}
	if len(acks) != len(ms) || acks[0] != securechan.AckOK || acks[1000] != securechan.AckRefused {
		t.Fatalf("acks: %d, first %v, last %v", len(acks), acks[0], acks[len(acks)-1])
	}
	mu.Lock()
	if !reflect.DeepEqual(got, ms) {
		t.Errorf("the NIC side got %d messages, not the ones sent", len(got))
	}
	mu.Unlock()
	// Only mapping updates go this way.
	if _, err := cl.SendAddresses(context.Background(), []securechan.Message{{Type: securechan.MsgAddressLearned, Addr: netip.MustParseAddr("10.0.0.1")}}); err == nil {
		t.Error("a learned-address message was sent toward the NIC")
	}
	want := securechan.Message{Type: securechan.MsgAddressLearned, Seq: 7, Vport: 1, VNI: 1001, MAC: [6]byte{2, 0, 0, 0, 0, 1},
		Addr: netip.MustParseAddr("10.0.0.1")}
	if err := s.srv.PublishLearned(want); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-learned:
		if m != want {
			t.Fatalf("learned %+v, want %+v", m, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the learned address never reached the host")
	}
	// A NIC side without an address handler answers AckUnknown.
	k2 := newKeys(t)
	s2 := serve(t, newSoftnic(t, false), k2, sockPath(t), nil)
	cl2, _ := AsClient(open(t, clientConfig(k2, s2.addr)))
	if acks, err := cl2.SendAddresses(context.Background(), ms[:2]); err != nil || acks[0] != securechan.AckUnknown {
		t.Fatalf("acks from a NIC side without mappings: %v, %v", acks, err)
	}
}
