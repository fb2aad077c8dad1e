package remote

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// udpFrame is the frame exactRule(_, sport) matches (vm1 → vm2, UDP to 53).
func udpFrame(sport uint16) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2,
		Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"),
		Proto: hal.ProtoUDP, SrcPort: sport, DstPort: 53, Payload: []byte("ping")})
}

// forwards checks that the NIC sends frame, in on vm1, out of the uplink
// by itself (encapsulated: 50 bytes longer), with no help from the host.
func forwards(t *testing.T, soft *softnic.NIC, sport uint16) {
	t.Helper()
	fs := softnic.FarSide{NIC: soft}
	f := udpFrame(sport)
	before, _ := soft.Stats(context.Background())
	if err := fs.Send(1, f); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	got, err := fs.Recv(ctx, 3, 8)
	if err != nil || len(got) != 1 || len(got[0]) != len(f)+50 {
		t.Fatalf("frame of flow %d: got %d frames on the uplink (%v)", sport, len(got), err)
	}
	after, _ := soft.Stats(context.Background())
	if after.Exceptions != before.Exceptions {
		t.Fatalf("flow %d went to the host", sport)
	}
}

func addRules(t *testing.T, n hal.NIC, from, to int) {
	t.Helper()
	var ops []hal.Op
	for i := from; i <= to; i++ {
		ops = append(ops, hal.AddOp(exactRule(hal.RuleID(i), uint16(i))))
	}
	res := make([]hal.OpResult, len(ops))
	if err := n.Apply(context.Background(), ops, res); err != nil {
		t.Fatal(err)
	}
}

// TestServerRestart: the NIC side's server goes away and comes back on the
// same NIC. Meanwhile the NIC forwards on its rules, calls fail typed
// (nothing sent), the driver reconnects by itself and says so, and a Dump
// shows the NIC's real rules.
func TestServerRestart(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	path := sockPath(t)
	s1 := serve(t, soft, k, path, nil)
	events := make(chan Reconnect, 4)
	cfg := clientConfig(k, s1.addr)
	cfg.OnReconnect = func(r Reconnect) { events <- r }
	n := open(t, cfg)
	cl, _ := AsClient(n)
	addRules(t, n, 1, 50)

	s1.stop()
	waitFor(t, "the host to see the channel down", 5*time.Second, func() bool { return !cl.Connected() })
	res := make([]hal.OpResult, 1)
	err := n.Apply(context.Background(), []hal.Op{hal.AddOp(exactRule(99, 99))}, res)
	if err == nil || !errors.Is(res[0].Err, ErrNotConnected) {
		t.Fatalf("apply while down: %v %v", err, res[0].Err)
	}
	var oe *hal.OpError
	if !errors.As(res[0].Err, &oe) || oe.Driver != DriverName {
		t.Errorf("a channel failure is the hal's device error; got %T", res[0].Err)
	}
	if err := n.Dump(context.Background(), func(*hal.RuleInfo) error { return nil }); !errors.Is(err, ErrNotConnected) {
		t.Errorf("dump while down: %v", err)
	}
	// The NIC keeps forwarding on its rules.
	for _, sport := range []uint16{1, 25, 50} {
		forwards(t, soft, sport)
	}

	s2 := serve(t, soft, k, path, nil)
	var ev Reconnect
	select {
	case ev = <-events:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect reported")
	}
	if !ev.Restarted || ev.Cause == nil || ev.Attempts < 1 {
		t.Errorf("reconnect event %+v", ev)
	}
	if cl.Instance() != s2.srv.Instance() {
		t.Error("the driver did not take the new server's identity")
	}
	got := dumpIDs(t, n)
	if len(got) != 50 {
		t.Fatalf("dump after the reconnect: %d rules, want the NIC's 50", len(got))
	}
	if _, ok := got[99]; ok {
		t.Fatal("the call made while down landed")
	}
	addRules(t, n, 51, 60)
	if len(dumpIDs(t, soft)) != 60 {
		t.Fatal("calls after the reconnect do not land")
	}
}

// TestHostGoesAway: the host's side vanishes without a goodbye (its process
// died, its cable was pulled): the NIC keeps forwarding on its last rules,
// the server logs it and takes the next host.
func TestHostGoesAway(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), nil)
	m := newMITM(t, s.addr)
	cfg := clientConfig(k, m.addr)
	cfg.ReconnectMin = time.Hour // the host does not come back by itself
	n := open(t, cfg)
	addRules(t, n, 1, 20)
	m.cut()
	waitFor(t, "the server to see the session end", 5*time.Second, func() bool { return s.log.has("session lost") })
	for _, sport := range []uint16{1, 10, 20} {
		forwards(t, soft, sport)
	}
	if len(dumpIDs(t, soft)) != 20 {
		t.Fatal("the NIC lost rules when the host went away")
	}
	n.Close()
	// Another host process takes over.
	n2 := open(t, clientConfig(k, s.addr))
	if len(dumpIDs(t, n2)) != 20 {
		t.Fatal("the next host does not see the NIC's rules")
	}
}

// gateNIC blocks in its blockAt-th Apply call, after applying, until
// released: the NIC has done the work and its answer is not out yet.
type gateNIC struct {
	*softnic.NIC
	calls   atomic.Int32
	blockAt int32
	entered chan struct{}
	release chan struct{}
}

func (g *gateNIC) Apply(ctx context.Context, ops []hal.Op, res []hal.OpResult) error {
	err := g.NIC.Apply(ctx, ops, res)
	if g.calls.Add(1) == g.blockAt {
		close(g.entered)
		<-g.release
	}
	return err
}

// TestCutMidBatch: the channel is cut while the NIC side is in the middle
// of a batch. The results say which operations landed; those whose result
// never came back wrap ErrUnknownOutcome; the NIC side stops applying the
// rest of the batch; a Dump after the reconnect tells the truth.
func TestCutMidBatch(t *testing.T) {
	k := newKeys(t)
	g := &gateNIC{NIC: newSoftnic(t, false), blockAt: 2, entered: make(chan struct{}), release: make(chan struct{})}
	s := serve(t, g, k, sockPath(t), func(c *ServerConfig) { c.ApplyChunk = 10 })
	m := newMITM(t, s.addr)
	var mu sync.Mutex
	var chunks [][2]int
	testHookApplyResult = func(start, n int) {
		mu.Lock()
		chunks = append(chunks, [2]int{start, n})
		mu.Unlock()
	}
	n := open(t, clientConfig(k, m.addr))
	t.Cleanup(func() { n.Close(); testHookApplyResult = nil })
	cl, _ := AsClient(n)

	var ops []hal.Op
	for i := 1; i <= 30; i++ {
		ops = append(ops, hal.AddOp(exactRule(hal.RuleID(i), uint16(i))))
	}
	res := make([]hal.OpResult, len(ops))
	done := make(chan error, 1)
	go func() { done <- n.Apply(context.Background(), ops, res) }()
	<-g.entered // ops 11..20 landed; their results are not out yet
	waitFor(t, "the first chunk's results", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(chunks) == 1
	})
	m.cut()
	// Closing a socket takes effect once the proxy's reads return: wait
	// until the NIC side saw the cut, then let its Apply return.
	waitFor(t, "the NIC side to see the cut", 5*time.Second, func() bool { return s.log.has("session lost") })
	close(g.release)
	err := <-done
	var be *hal.BatchError
	if !errors.As(err, &be) || be.Failed != 20 || be.Index != 10 {
		t.Fatalf("apply cut mid-batch: %v", err)
	}
	for i, r := range res {
		switch {
		case i < 10 && r.Err != nil:
			t.Errorf("op %d: its result came back before the cut, yet %v", i, r.Err)
		case i >= 10 && !errors.Is(r.Err, ErrUnknownOutcome):
			t.Errorf("op %d: %v, want ErrUnknownOutcome", i, r.Err)
		}
	}
	waitFor(t, "reconnect", 5*time.Second, func() bool { return cl.Connected() && cl.Reconnects() == 1 })
	got := dumpIDs(t, n)
	direct := dumpIDs(t, g.NIC)
	if len(got) != len(direct) {
		t.Fatalf("remote dump %d rules, the NIC has %d", len(got), len(direct))
	}
	for i := 1; i <= 30; i++ {
		_, on := got[hal.RuleID(i)]
		want := i <= 20 // the blocked chunk landed; the NIC side applied no more of the batch
		if on != want {
			t.Errorf("rule %d on the NIC: %v, want %v", i, on, want)
		}
	}
}

// TestExceptionBackpressure: a host that does not read makes the NIC side
// drop exceptions and count them as hal.ReasonQueueFull; the datapath never
// waits for the host, and delivery resumes when the host reads.
func TestExceptionBackpressure(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), nil)
	cfg := clientConfig(k, s.addr)
	cfg.ExceptionQueue = 16
	n := open(t, cfg)
	fs := softnic.FarSide{NIC: soft}
	var frames [][]byte
	for i := range 100 {
		frames = append(frames, udpFrame(uint16(1000+i)))
	}
	start := time.Now()
	if err := fs.Send(1, frames...); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the datapath took %v for 100 misses: it waited for the host", d)
	}
	waitFor(t, "the NIC side to move every exception", 5*time.Second, func() bool {
		st := s.srv.Stats()
		return st.ExceptionsSent+st.ExceptionsDropped == 100
	})
	st := s.srv.Stats()
	if st.ExceptionsSent != 16 || st.ExceptionsDropped != 84 {
		t.Fatalf("sent %d, dropped %d; want 16 and 84 (the host has room for 16)", st.ExceptionsSent, st.ExceptionsDropped)
	}
	hs, err := n.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if hs.Drops[hal.ReasonQueueFull] < 84 {
		t.Errorf("Stats drops[queue_full] %d, want at least 84", hs.Drops[hal.ReasonQueueFull])
	}
	pc, err := n.PortCounters(context.Background(), 1)
	if err != nil || pc.Drops < 84 {
		t.Errorf("port 1 drops %d (%v), want at least 84", pc.Drops, err)
	}
	read := func(want int) []hal.Exception {
		var out []hal.Exception
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for len(out) < want {
			batch := make([]hal.Exception, 8)
			for i := range batch {
				batch[i].Buf = make([]byte, 2048)
			}
			k, err := n.ReadExceptions(ctx, batch)
			if err != nil {
				t.Fatalf("read exceptions after %d: %v", len(out), err)
			}
			out = append(out, batch[:k]...)
		}
		return out
	}
	got := read(16)
	for i, x := range got {
		if x.Reason != hal.ReasonMiss || x.InPort != 1 || !slices.Equal(x.Frame(), frames[i]) {
			t.Fatalf("exception %d: port %d reason %v, frame equal %v", i, x.InPort, x.Reason, slices.Equal(x.Frame(), frames[i]))
		}
	}
	// The host read: it has room again, once its credit reached the NIC
	// side (a credit still in flight would rightly cost exceptions).
	waitFor(t, "the credit to reach the NIC side", 5*time.Second, func() bool {
		s.srv.mu.Lock()
		defer s.srv.mu.Unlock()
		return s.srv.active != nil && s.srv.active.credits.Load() == 16
	})
	if err := fs.Send(1, frames[:10]...); err != nil {
		t.Fatal(err)
	}
	if got := read(10); len(got) != 10 {
		t.Fatalf("after reading: %d exceptions", len(got))
	}
	if d := s.srv.Stats().ExceptionsDropped; d != 84 {
		t.Errorf("dropped %d after the host read, want still 84", d)
	}
}

// TestExceptionAndInject: the first packet's round trip: a miss reaches the
// host with its metadata and bytes; the host injects it on the uplink.
func TestExceptionAndInject(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), nil)
	n := open(t, clientConfig(k, s.addr))
	fs := softnic.FarSide{NIC: soft}
	f := udpFrame(4242)
	if err := fs.Send(1, f); err != nil {
		t.Fatal(err)
	}
	batch := []hal.Exception{{Buf: make([]byte, 20)}, {Buf: make([]byte, 2048)}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k1, err := n.ReadExceptions(ctx, batch[:1])
	if err != nil || k1 != 1 {
		t.Fatal(k1, err)
	}
	x := batch[0]
	if x.InPort != 1 || x.Reason != hal.ReasonMiss || !x.Truncated || x.Len != 20 || !slices.Equal(x.Frame(), f[:20]) {
		t.Fatalf("exception into a short buffer: %+v", x)
	}
	if err := n.Inject(ctx, 3, [][]byte{f}); err != nil {
		t.Fatal(err)
	}
	got, _ := fs.Recv(ctx, 3, 4)
	if len(got) != 1 || !slices.Equal(got[0], f) {
		t.Fatalf("injected frame on the uplink: %d frames", len(got))
	}
	// Inject's error comes back as the NIC said it.
	if err := n.Inject(ctx, 42, [][]byte{f}); !errors.Is(err, hal.ErrNotFound) {
		t.Errorf("inject on a missing port: %v", err)
	}
	// A blocked read ends with the driver.
	errc := make(chan error, 1)
	go func() {
		_, err := n.ReadExceptions(context.Background(), batch)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	n.Close()
	if err := <-errc; !errors.Is(err, hal.ErrClosed) {
		t.Errorf("blocked read after close: %v", err)
	}
}

// TestRekey: a channel whose keys are replaced every few frames keeps
// working across many rekeys.
func TestRekey(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	tune := &ChannelTuning{RekeyAfterMessages: 4}
	s := serve(t, soft, k, sockPath(t), func(c *ServerConfig) { c.Channel = tune })
	cfg := clientConfig(k, s.addr)
	cfg.Channel = tune
	n := open(t, cfg)
	for i := 1; i <= 60; i++ {
		addRules(t, n, i, i)
	}
	cl, _ := AsClient(n)
	cl.mu.Lock()
	ep := cl.cur.c.s.Epoch()
	cl.mu.Unlock()
	if ep < 5 {
		t.Errorf("epoch %d after 60 calls with a rekey every 4 frames", ep)
	}
	if len(dumpIDs(t, soft)) != 60 || cl.Reconnects() != 0 {
		t.Fatal("rules lost or the channel dropped across rekeys")
	}
}

// tunnelNIC is a softnic that also terminates tunnels for an endpoint
// (recording what it was given).
type tunnelNIC struct {
	*softnic.NIC
	mu  sync.Mutex
	eps []hal.TunnelEndpoint
}

func (n *tunnelNIC) SetTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	if ep.Port != 3 {
		return hal.ErrNotFound
	}
	n.mu.Lock()
	n.eps = append(n.eps, ep)
	n.mu.Unlock()
	return nil
}

// TestTunnelEndpoint: SetTunnelEndpoint reaches a served NIC that has it,
// and the remote NIC has the interface exactly when the served one does.
func TestTunnelEndpoint(t *testing.T) {
	k := newKeys(t)
	tn := &tunnelNIC{NIC: newSoftnic(t, false)}
	s := serve(t, tn, k, sockPath(t), nil)
	n := open(t, clientConfig(k, s.addr))
	tt, ok := n.(hal.TunnelTerminator)
	if !ok {
		t.Fatal("the served NIC terminates tunnels; the remote NIC lacks SetTunnelEndpoint")
	}
	ep := hal.TunnelEndpoint{Port: 3, MAC: macUplink, Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("2001:db8::1")},
		Groups: []netip.Addr{netip.MustParseAddr("239.1.1.1")}}
	if err := tt.SetTunnelEndpoint(context.Background(), ep); err != nil {
		t.Fatal(err)
	}
	if err := tt.SetTunnelEndpoint(context.Background(), hal.TunnelEndpoint{Port: 1}); !errors.Is(err, hal.ErrNotFound) {
		t.Errorf("the served NIC's refusal came back as %v", err)
	}
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if len(tn.eps) != 1 || tn.eps[0].Port != 3 || tn.eps[0].MAC != macUplink || !slices.Equal(tn.eps[0].Addrs, ep.Addrs) || !slices.Equal(tn.eps[0].Groups, ep.Groups) {
		t.Fatalf("the served NIC got %+v", tn.eps)
	}

	// A NIC with none of the optional interfaces: the remote NIC has none
	// either.
	k2 := newKeys(t)
	s2 := serve(t, plainNIC{newSoftnic(t, false)}, k2, sockPath(t), nil)
	n2 := open(t, clientConfig(k2, s2.addr))
	if _, ok := n2.(hal.TunnelTerminator); ok {
		t.Error("remote NIC offers SetTunnelEndpoint though the served NIC has none")
	}
	if _, ok := n2.(hal.SealedAddresses); ok {
		t.Error("remote NIC offers SealedAddresses though the served NIC has none")
	}
	if _, ok := n2.(hal.AtomicApplier); ok {
		t.Error("remote NIC offers ApplyAtomic though the served NIC has none")
	}
}

// plainNIC hides every optional interface of the NIC it holds.
type plainNIC struct{ hal.NIC }

// TestConcurrentCalls: calls from many goroutines at once, with exceptions
// flowing, under the race detector.
func TestConcurrentCalls(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), nil)
	n := open(t, clientConfig(k, s.addr))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		batch := make([]hal.Exception, 16)
		for i := range batch {
			batch[i].Buf = make([]byte, 2048)
		}
		for ctx.Err() == nil {
			n.ReadExceptions(ctx, batch)
		}
	}()
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := 1000 * (w + 1)
			for i := range 50 {
				id := hal.RuleID(base + i)
				res := make([]hal.OpResult, 1)
				if err := n.Apply(ctx, []hal.Op{hal.AddOp(exactRule(id, uint16(base+i)))}, res); err != nil {
					t.Error(err)
					return
				}
				cs := make([]hal.Counters, 1)
				if err := n.RuleCounters(ctx, []hal.RuleID{id}, cs); err != nil {
					t.Error(err)
				}
				softnic.FarSide{NIC: soft}.Send(2, udpFrame(uint16(i)))
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			if err := n.Dump(ctx, func(*hal.RuleInfo) error { return nil }); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()
	cancel()
	readers.Wait()
	if len(dumpIDs(t, n)) != 200 {
		t.Fatal("rules missing after concurrent calls")
	}
}

// TestNoLeaks: a driver closed and a server stopped leave no goroutine
// behind, after sessions that ended every way (clean close, a cut, a
// refusal, a reconnect).
func TestNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		k := newKeys(t)
		soft := newSoftnic(t, false)
		s := serve(t, soft, k, sockPath(t), nil)
		m := newMITM(t, s.addr)
		n := open(t, clientConfig(k, m.addr))
		cl, _ := AsClient(n)
		addRules(t, n, 1, 10)
		m.cut()
		waitFor(t, "reconnect", 5*time.Second, func() bool { return cl.Connected() && cl.Reconnects() == 1 })
		m.setC2S(once(func(f []byte) [][]byte {
			g := slices.Clone(f)
			g[len(g)-1] ^= 1
			return [][]byte{g}
		}))
		res := make([]hal.OpResult, 1)
		n.Apply(context.Background(), []hal.Op{hal.DeleteOp(1)}, res)
		waitFor(t, "reconnect", 5*time.Second, func() bool { return cl.Connected() && cl.Reconnects() == 2 })
		n.Close()
		s.stop()
		m.ln.Close()
		m.cut()
		m.wg.Wait()
	}()
	waitFor(t, "goroutines to end", 5*time.Second, func() bool { return runtime.NumGoroutine() <= before })
}
