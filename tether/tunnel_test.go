package tether

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nicpath/nicpath/securechan"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func keys(t testing.TB) (securechan.PublicKey, securechan.PrivateKey) {
	t.Helper()
	pub, priv, err := securechan.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func listen(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func addrOf(c PacketConn) netip.AddrPort {
	return canon(c.LocalAddr().(*net.UDPAddr).AddrPort())
}

// rebinder stands for the NAT in front of a tether: Rebind moves the
// tether's traffic to a new source port, as a NAT does when its mapping
// expires, and it records every datagram sent so that a test can replay
// them from elsewhere.
type rebinder struct {
	mu       sync.Mutex
	c        *net.UDPConn
	sent     [][]byte
	dropNext bool // record the next datagram but lose it on the way
}

func (r *rebinder) cur() *net.UDPConn { r.mu.Lock(); defer r.mu.Unlock(); return r.c }

func (r *rebinder) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	for {
		c := r.cur()
		n, from, err := c.ReadFromUDPAddrPort(b)
		if err != nil && errors.Is(err, net.ErrClosed) && r.cur() != c {
			continue // rebound: read from the new socket
		}
		return n, from, err
	}
}

func (r *rebinder) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	r.mu.Lock()
	r.sent = append(r.sent, bytes.Clone(b))
	c, drop := r.c, r.dropNext
	r.dropNext = false
	r.mu.Unlock()
	if drop {
		return len(b), nil
	}
	return c.WriteToUDPAddrPort(b, to)
}

func (r *rebinder) LocalAddr() net.Addr { return r.cur().LocalAddr() }
func (r *rebinder) Close() error        { return r.cur().Close() }

func (r *rebinder) Rebind(t testing.TB) {
	n := listen(t)
	r.mu.Lock()
	old := r.c
	r.c = n
	r.mu.Unlock()
	old.Close()
}

func (r *rebinder) Sent() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.sent...)
}

type pair struct {
	anchor     *Anchor
	tether     *Tether
	nat        *rebinder
	aConn      *net.UDPConn
	toNode     chan []byte // frames the tether delivered
	toDC       chan []byte // frames the anchor delivered
	cancelT    context.CancelFunc
	doneT      chan struct{}
	tKey       securechan.PrivateKey
	aCfg       AnchorConfig
	stopAnchor func()
	aPub       securechan.PublicKey
	deadAfter  time.Duration // the tether's DeadAfter
}

// pairDeadAfter is the tether's DeadAfter in a pair unless a test wants
// redials: far beyond any stall of a loaded machine, where the default
// (three probes, 300-600ms here) made the tether dial again mid-test and
// count a second handshake, or never finish one.
const pairDeadAfter = time.Minute

const testVNI = 1001

func newPair(t *testing.T, probe time.Duration) *pair {
	t.Helper()
	return newPairDeadAfter(t, probe, pairDeadAfter)
}

func newPairDeadAfter(t *testing.T, probe, deadAfter time.Duration) *pair {
	t.Helper()
	aPub, aPriv := keys(t)
	tPub, tPriv := keys(t)
	p := &pair{toNode: make(chan []byte, 64), toDC: make(chan []byte, 64), tKey: tPriv, aPub: aPub, deadAfter: deadAfter}
	p.aConn = listen(t)
	acfg := AnchorConfig{Key: aPriv, Peers: []Peer{{Name: "branch", Key: tPub, VNI: testVNI}}, Logger: quiet(),
		Deliver: func(peer string, vni uint32, f []byte) {
			select {
			case p.toDC <- bytes.Clone(f):
			default:
			}
		}}
	a, err := NewAnchor(p.aConn, acfg)
	if err != nil {
		t.Fatal(err)
	}
	p.anchor = a
	p.aCfg = acfg
	p.runAnchor(t)
	p.startTether(t, probe)
	return p
}

func (p *pair) runAnchor(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	a := p.anchor
	go func() { defer close(done); a.Run(ctx) }()
	p.stopAnchor = func() { cancel(); <-done }
	t.Cleanup(func() { cancel(); <-done })
}

func (p *pair) restartAnchor(t *testing.T) {
	addr := p.aConn.LocalAddr().(*net.UDPAddr)
	p.stopAnchor()
	c, err := net.ListenUDP("udp4", addr)
	for deadline := time.Now().Add(5 * time.Second); errors.Is(err, syscall.EADDRINUSE) && time.Now().Before(deadline); {
		// Another process's ephemeral bind may hold the freed port a moment.
		time.Sleep(50 * time.Millisecond)
		c, err = net.ListenUDP("udp4", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	p.aConn = c
	a, err := NewAnchor(c, p.aCfg)
	if err != nil {
		t.Fatal(err)
	}
	p.anchor = a
	p.runAnchor(t)
}

func (p *pair) startTether(t *testing.T, probe time.Duration) {
	t.Helper()
	p.nat = &rebinder{c: listen(t)}
	tt, err := NewTether(TetherConfig{Key: p.tKey, AnchorKey: p.aPub, Anchor: addrOf(p.aConn), Probe: probe, DeadAfter: p.deadAfter, Conn: p.nat, Logger: quiet(),
		Deliver: func(vni uint32, f []byte) {
			select {
			case p.toNode <- bytes.Clone(f):
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	p.tether = tt
	ctx, cancel := context.WithCancel(context.Background())
	p.cancelT, p.doneT = cancel, make(chan struct{})
	go func() { defer close(p.doneT); tt.Run(ctx) }()
	t.Cleanup(p.stopTether)
}

func (p *pair) stopTether() {
	if p.cancelT != nil {
		p.cancelT()
		<-p.doneT
		p.cancelT = nil
	}
}

func eventually(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !f() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testFrame(i byte, n int) []byte {
	f := make([]byte, n)
	copy(f, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00})
	for j := 14; j < n; j++ {
		f[j] = i + byte(j)
	}
	return f
}

// exchange sends one frame each way and waits for both.
func (p *pair) exchange(t *testing.T, i byte) {
	t.Helper()
	up, down := testFrame(i, 100), testFrame(i+100, 200)
	deadline := time.Now().Add(30 * time.Second)
	gotUp, gotDown := false, false
	for !(gotUp && gotDown) {
		if time.Now().After(deadline) {
			t.Fatalf("exchange %d: up %v down %v; anchor %+v tether %+v", i, gotUp, gotDown, p.anchor.Status(), p.tether.Status())
		}
		if !gotUp {
			p.tether.Send(testVNI, up)
		}
		if !gotDown {
			p.anchor.Send("branch", testVNI, down)
		}
		tm := time.After(50 * time.Millisecond)
	wait:
		for {
			select {
			case f := <-p.toDC:
				gotUp = gotUp || bytes.Equal(f, up)
			case f := <-p.toNode:
				gotDown = gotDown || bytes.Equal(f, down)
			case <-tm:
				break wait
			}
		}
	}
}

func TestTunnelCarriesFramesBothWays(t *testing.T) {
	start := time.Now()
	p := newPair(t, 200*time.Millisecond)
	eventually(t, "established", 10*time.Second, func() bool { return p.anchor.Status()[0].Established })
	p.exchange(t, 1)
	ep, _ := p.anchor.Endpoint("branch")
	if want := addrOf(p.nat.cur()); ep != want {
		t.Fatalf("anchor's endpoint %v, want the tether's %v", ep, want)
	}
	if err := p.anchor.Send("nobody", testVNI, testFrame(0, 60)); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("send to an unknown peer: %v", err)
	}
	if err := p.anchor.Send("branch", testVNI, make([]byte, p.anchor.MaxFrame()+1)); !errors.Is(err, ErrTooBig) {
		t.Fatalf("oversized frame: %v", err)
	}
	if err := p.tether.Send(testVNI, make([]byte, p.tether.MaxFrame()+1)); !errors.Is(err, ErrTooBig) {
		t.Fatalf("oversized frame from the tether: %v", err)
	}
	// The largest frame passes, in one datagram that fits the path MTU.
	big := testFrame(7, p.tether.MaxFrame())
	if err := p.tether.Send(testVNI, big); err != nil {
		t.Fatal(err)
	}
	sent := p.nat.Sent()
	if n := len(sent[len(sent)-1]); n != DefaultPathMTU-28 {
		t.Fatalf("largest frame's datagram is %d bytes, want %d", n, DefaultPathMTU-28)
	}
	if got := InnerMTU(0, false); got != p.tether.MaxFrame()-14 {
		t.Fatalf("InnerMTU %d, MaxFrame %d", got, p.tether.MaxFrame())
	}
	// Probes are answered and timed. An answer that comes back after the
	// next probe left (a loaded machine) is counted but not timed: wait for
	// a timed one. No round trip is longer than the test so far.
	eventually(t, "probe answered and timed", 10*time.Second, func() bool {
		st := p.tether.Status()
		return st.Acks > 0 && st.RTT != 0
	})
	if rtt := p.tether.Status().RTT; rtt <= 0 || rtt > time.Since(start) {
		t.Fatalf("round trip %v (%v since the test started)", rtt, time.Since(start))
	}
}

func TestAnchorFollowsRebinding(t *testing.T) {
	p := newPair(t, 200*time.Millisecond)
	eventually(t, "established", 10*time.Second, func() bool { return p.anchor.Status()[0].Established })
	p.exchange(t, 1)
	before, _ := p.anchor.Endpoint("branch")
	p.nat.Rebind(t)
	after := addrOf(p.nat.cur())
	// With no data from the tether, its probe alone moves the endpoint.
	eventually(t, "endpoint follows", 10*time.Second, func() bool { ep, _ := p.anchor.Endpoint("branch"); return ep == after })
	p.exchange(t, 2)
	st := p.anchor.Status()[0]
	if st.Rebinds != 1 || st.Handshakes != 1 {
		t.Fatalf("after one rebinding from %v to %v: %+v", before, after, st)
	}
}

func TestForgedAndReplayedPacketsDoNotMoveEndpoint(t *testing.T) {
	p := newPair(t, 200*time.Millisecond)
	eventually(t, "established", 10*time.Second, func() bool { return p.anchor.Status()[0].Established })
	p.exchange(t, 1)
	real, _ := p.anchor.Endpoint("branch")
	evil := listen(t)
	defer evil.Close()
	to := addrOf(p.aConn)
	// Everything the tether sent, Init included, replayed from elsewhere;
	// then the same with a byte flipped; then garbage.
	for _, d := range p.nat.Sent() {
		evil.WriteToUDPAddrPort(d, to)
		f := bytes.Clone(d)
		f[len(f)-1] ^= 1
		evil.WriteToUDPAddrPort(f, to)
	}
	junk := make([]byte, 200)
	rand.Read(junk)
	junk[0], junk[1] = securechan.ProtocolVersion, 3
	evil.WriteToUDPAddrPort(junk, to)
	// A handshake from an unpinned key.
	_, otherKey := keys(t)
	imp, _ := securechan.NewInitiator(&securechan.Config{PrivateKey: otherKey, Datagram: true}, p.aPub)
	init, _ := imp.Start()
	evil.WriteToUDPAddrPort(init, to)
	eventually(t, "forgeries refused", 10*time.Second, func() bool {
		return p.anchor.Refused(securechan.DropReplay) > 0 && p.anchor.Refused(securechan.DropTampered) > 0
	})
	time.Sleep(100 * time.Millisecond)
	if ep, _ := p.anchor.Endpoint("branch"); ep != real {
		t.Fatalf("endpoint moved to %v (was %v) after forged packets", ep, real)
	}
	// The anchor answered none of them.
	evil.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := evil.ReadFromUDPAddrPort(make([]byte, 2048)); err == nil {
		t.Fatalf("anchor answered the forger with %d bytes", n)
	}
	p.exchange(t, 3)
	if st := p.anchor.Status()[0]; st.Rebinds != 0 || st.Handshakes != 1 {
		t.Fatalf("forgeries changed the session: %+v", st)
	}
	// A frame the anchor never received (lost on its way, captured by the
	// forger) is inside the replay window and authentic: it may be
	// delivered late, but, older than frames already seen, it must not
	// move the endpoint.
	p.nat.mu.Lock()
	p.nat.dropNext = true
	p.nat.mu.Unlock()
	lost := testFrame(42, 80)
	if err := p.tether.Send(testVNI, lost); err != nil {
		t.Fatal(err)
	}
	sent := p.nat.Sent()
	captured := sent[len(sent)-1]
	p.exchange(t, 4) // newer frames arrive first
	evil.WriteToUDPAddrPort(captured, to)
	timeout := time.After(10 * time.Second)
	for late := false; !late; {
		select {
		case f := <-p.toDC:
			late = bytes.Equal(f, lost) // exchange's repeats may come first
		case <-timeout:
			t.Fatal("the late frame was not delivered")
		}
	}
	if ep, _ := p.anchor.Endpoint("branch"); ep != real {
		t.Fatalf("a late frame from %v moved the endpoint to %v", addrOf(evil), ep)
	}
}

func TestTetherRestartTakesOver(t *testing.T) {
	p := newPair(t, 200*time.Millisecond)
	eventually(t, "established", 10*time.Second, func() bool { return p.anchor.Status()[0].Established })
	p.exchange(t, 1)
	p.stopTether()
	p.startTether(t, 200*time.Millisecond)
	eventually(t, "second session", 10*time.Second, func() bool { return p.anchor.Status()[0].Handshakes == 2 })
	p.exchange(t, 2)
	if ep, _ := p.anchor.Endpoint("branch"); ep != addrOf(p.nat.cur()) {
		t.Fatalf("endpoint %v, want the restarted tether's %v", ep, addrOf(p.nat.cur()))
	}
}

func TestTetherRedialsRestartedAnchor(t *testing.T) {
	// DeadAfter well above a handshake's round trip on a loaded machine:
	// at 300ms (three probes) the tether gave up on each Init before its
	// answer came and dialed again, round after round.
	p := newPairDeadAfter(t, 100*time.Millisecond, 2*time.Second)
	eventually(t, "established", 10*time.Second, func() bool { return p.anchor.Status()[0].Established })
	p.exchange(t, 1)
	// The anchor restarts with no memory of the session: the tether's
	// probes go unanswered, and after DeadAfter it dials again.
	p.restartAnchor(t)
	eventually(t, "new session", 30*time.Second, func() bool { return p.tether.Status().Handshakes >= 2 })
	p.exchange(t, 2)
}

// The tunnel survives securechan's rekeys (new epochs every few frames
// here), in both directions, and the endpoint stays put through them.
func TestTunnelRekeys(t *testing.T) {
	aPub, aPriv := keys(t)
	tPub, tPriv := keys(t)
	toDC, toNode := make(chan []byte, 256), make(chan []byte, 256)
	aConn := listen(t)
	a, err := NewAnchor(aConn, AnchorConfig{Key: aPriv, Peers: []Peer{{Name: "branch", Key: tPub, VNI: testVNI}}, Logger: quiet(),
		Channel: &securechan.Config{RekeyAfterMessages: 20},
		Deliver: func(_ string, _ uint32, f []byte) { toDC <- bytes.Clone(f) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{}, 2)
	go func() { a.Run(ctx); done <- struct{}{} }()
	tt, err := NewTether(TetherConfig{Key: tPriv, AnchorKey: aPub, Anchor: addrOf(aConn), Probe: 100 * time.Millisecond,
		DeadAfter: pairDeadAfter, Logger: quiet(), Channel: &securechan.Config{RekeyAfterMessages: 20}, Conn: listen(t),
		Deliver: func(_ uint32, f []byte) { toNode <- bytes.Clone(f) }})
	if err != nil {
		t.Fatal(err)
	}
	go func() { tt.Run(ctx); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()
	eventually(t, "established", 10*time.Second, func() bool { return a.Status()[0].Established })
	ep, _ := a.Endpoint("branch")
	for i := 0; i < 200; i++ {
		up, down := testFrame(byte(i), 64), testFrame(byte(i+1), 64)
		// A frame refused while a rekey completes is sent again.
		eventually(t, fmt.Sprintf("frame %d sent by the tether", i), 10*time.Second, func() bool { return tt.Send(testVNI, up) == nil })
		eventually(t, fmt.Sprintf("frame %d sent by the anchor", i), 10*time.Second, func() bool { return a.Send("branch", testVNI, down) == nil })
		for _, c := range []struct {
			ch   chan []byte
			want []byte
		}{{toDC, up}, {toNode, down}} {
			select {
			case f := <-c.ch:
				if !bytes.Equal(f, c.want) {
					t.Fatalf("frame %d: got %x", i, f[:16])
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("frame %d lost; anchor %+v tether %+v", i, a.Status(), tt.Status())
			}
		}
	}
	st := a.Status()[0]
	if now, _ := a.Endpoint("branch"); now != ep || st.Rebinds != 0 || st.Handshakes != 1 {
		t.Fatalf("after the rekeys: %+v", st)
	}
	tt.mu.Lock()
	epoch := tt.s.Epoch()
	tt.mu.Unlock()
	if epoch < 5 {
		t.Fatalf("epoch %d after 400 frames with a rekey every 20", epoch)
	}
}

// An Init raced ahead from another address (captured on its way, the
// original lost) does not keep the real tether out: its retransmission is
// answered too, and the session's endpoint is where the sealed Confirm
// comes from.
func TestRacedInitDoesNotTakeTheSession(t *testing.T) {
	aPub, aPriv := keys(t)
	tPub, tPriv := keys(t)
	aConn := listen(t)
	a, err := NewAnchor(aConn, AnchorConfig{Key: aPriv, Peers: []Peer{{Name: "branch", Key: tPub, VNI: testVNI}}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { a.Run(ctx); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()
	nat := &rebinder{c: listen(t), dropNext: true} // the first Init is lost…
	// DeadAfter far away: the tether must get in with its first Init's
	// retransmissions, not with a new handshake.
	tt, err := NewTether(TetherConfig{Key: tPriv, AnchorKey: aPub, Anchor: addrOf(aConn), Probe: 100 * time.Millisecond, DeadAfter: time.Minute, Conn: nat, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	evil := listen(t)
	defer evil.Close()
	var init []byte
	go func() { tt.Run(ctx); done <- struct{}{} }()
	eventually(t, "the Init captured", 10*time.Second, func() bool {
		if s := nat.Sent(); len(s) > 0 {
			init = s[0]
		}
		return init != nil
	})
	evil.WriteToUDPAddrPort(init, addrOf(aConn)) // …and sent first from elsewhere
	eventually(t, "established with the real tether", 10*time.Second, func() bool { return a.Status()[0].Established })
	if ep, _ := a.Endpoint("branch"); ep != addrOf(nat.cur()) {
		t.Fatalf("endpoint %v, want the tether's %v", ep, addrOf(nat.cur()))
	}
}

// With probes rare, the keepalive alone keeps the tunnel (and the NAT's
// mapping) from going quiet for longer than its interval.
func TestKeepalive(t *testing.T) {
	aPub, aPriv := keys(t)
	tPub, tPriv := keys(t)
	aConn := listen(t)
	a, err := NewAnchor(aConn, AnchorConfig{Key: aPriv, Peers: []Peer{{Name: "branch", Key: tPub, VNI: testVNI}}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	nat := &rebinder{c: listen(t)}
	tt, err := NewTether(TetherConfig{Key: tPriv, AnchorKey: aPub, Anchor: addrOf(aConn), Probe: time.Hour, DeadAfter: time.Hour,
		Keepalive: 100 * time.Millisecond, Conn: nat, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { a.Run(ctx); done <- struct{}{} }()
	go func() { tt.Run(ctx); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()
	eventually(t, "established", 10*time.Second, func() bool { return a.Status()[0].Established })
	// Silence from here: only keepalives leave. Five of them come (the
	// bound is for a loaded machine, where ticks come late), never more
	// than the interval allows (half again for control frames), and the
	// anchor hears them.
	n0, t0 := len(nat.Sent()), time.Now()
	eventually(t, "five keepalives", 10*time.Second, func() bool { return len(nat.Sent())-n0 >= 5 })
	sent, elapsed := len(nat.Sent())-n0, time.Since(t0)
	if most := int(1.5*float64(elapsed)/float64(100*time.Millisecond)) + 1; sent > most {
		t.Fatalf("%d datagrams in %v of silence with a 100ms keepalive (at most %d)", sent, elapsed, most)
	}
	if st := tt.Status(); st.Probes != 0 {
		t.Fatalf("probes sent: %+v", st)
	}
	eventually(t, "the anchor to hear a keepalive", 10*time.Second, func() bool { return a.Status()[0].LastSeen.After(t0) })
}
