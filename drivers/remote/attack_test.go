package remote

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/securechan"
)

// Attacks on the channel, end to end through the remote driver: each is
// refused with a typed error on the side that sees it, logged and counted,
// and no rule it carried lands on the served NIC.

// attackBed is a served softnic reached through a MITM.
type attackBed struct {
	k    keys
	soft *softnic.NIC
	s    *served
	m    *mitm
	nic  hal.NIC
	cl   *Client
	clog *testLogger
}

func newAttackBed(t *testing.T) *attackBed {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), nil)
	m := newMITM(t, s.addr)
	cfg := clientConfig(k, m.addr)
	clog := &testLogger{}
	cfg.Logger = slogOf(clog)
	cfg.KeepAlive = time.Hour // no pings among the frames the attacker picks
	nic := open(t, cfg)
	cl, _ := AsClient(nic)
	return &attackBed{k: k, soft: soft, s: s, m: m, nic: nic, cl: cl, clog: clog}
}

func (b *attackBed) apply(ops ...hal.Op) ([]hal.OpResult, error) {
	res := make([]hal.OpResult, len(ops))
	err := b.nic.Apply(context.Background(), ops, res)
	return res, err
}

// refusedByNIC checks that every result is a refusal by the NIC side for
// reason r.
func refusedByNIC(t *testing.T, res []hal.OpResult, err error, sentinel error) {
	t.Helper()
	if err == nil {
		t.Fatal("the attacked batch succeeded")
	}
	for i, r := range res {
		var re *RefusedError
		if !errors.As(r.Err, &re) || re.By != "nic" || !errors.Is(r.Err, ErrRefused) || !errors.Is(r.Err, sentinel) {
			t.Fatalf("result %d: %v (want a refusal by the NIC side wrapping %v)", i, r.Err, sentinel)
		}
		if errors.Is(r.Err, ErrUnknownOutcome) {
			t.Fatalf("result %d: a refused frame's outcome is known: not applied", i)
		}
	}
}

func (b *attackBed) noRule(t *testing.T, ids ...hal.RuleID) {
	t.Helper()
	on := dumpIDs(t, b.soft)
	for _, id := range ids {
		if _, ok := on[id]; ok {
			t.Errorf("rule %d landed on the served NIC", id)
		}
	}
}

// TestRefuseTampered: a bit flipped in a frame carrying an Apply.
func TestRefuseTampered(t *testing.T) {
	b := newAttackBed(t)
	b.m.setC2S(once(func(f []byte) [][]byte {
		g := slices.Clone(f)
		g[len(g)-1] ^= 0x40
		return [][]byte{g}
	}))
	res, err := b.apply(hal.AddOp(exactRule(5, 5)))
	refusedByNIC(t, res, err, securechan.ErrTampered)
	b.noRule(t, 5)
	if got := b.s.srv.Stats().Refused[securechan.DropTampered]; got != 1 {
		t.Errorf("server counted %d tampered frames", got)
	}
	if !b.s.log.has("frame refused") {
		t.Errorf("the refusal was not logged: %v", b.s.log.all())
	}
	// The driver reconnects by itself and works again.
	waitFor(t, "reconnect", 5*time.Second, func() bool { return b.cl.Reconnects() == 1 && b.cl.Connected() })
	if _, err := b.apply(hal.AddOp(exactRule(6, 6))); err != nil {
		t.Fatalf("after the reconnect: %v", err)
	}
}

// TestRefuseReplayed: a recorded frame sent again. The add it carried was
// undone since; the replay must not redo it.
func TestRefuseReplayed(t *testing.T) {
	b := newAttackBed(t)
	var mu sync.Mutex
	var recorded [][]byte
	b.m.setC2S(func(f []byte) [][]byte {
		if isData(f) {
			mu.Lock()
			recorded = append(recorded, slices.Clone(f))
			mu.Unlock()
		}
		return [][]byte{f}
	})
	if _, err := b.apply(hal.AddOp(exactRule(1, 1))); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	addFrame := recorded[len(recorded)-1]
	mu.Unlock()
	if _, err := b.apply(hal.DeleteOp(1)); err != nil {
		t.Fatal(err)
	}
	// Replay the add in front of the next call.
	b.m.setC2S(once(func(f []byte) [][]byte { return [][]byte{addFrame, f} }))
	res, err := b.apply(hal.AddOp(exactRule(2, 2)))
	refusedByNIC(t, res, err, securechan.ErrReplay)
	b.noRule(t, 1, 2)
	if got := b.s.srv.Stats().Refused[securechan.DropReplay]; got != 1 {
		t.Errorf("server counted %d replays", got)
	}
}

// TestRefuseReplayedSession: a whole recorded session (its handshake and
// its Apply) played again on a new connection.
func TestRefuseReplayedSession(t *testing.T) {
	b := newAttackBed(t)
	var mu sync.Mutex
	var recorded [][]byte
	b.m.setC2S(func(f []byte) [][]byte {
		mu.Lock()
		recorded = append(recorded, slices.Clone(f))
		mu.Unlock()
		return [][]byte{f}
	})
	b.cl.Disconnect() // a fresh session, recorded from its Init on
	waitFor(t, "reconnect", 5*time.Second, func() bool { return b.cl.Reconnects() == 1 && b.cl.Connected() })
	if _, err := b.apply(hal.AddOp(exactRule(1, 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.apply(hal.DeleteOp(1)); err != nil {
		t.Fatal(err)
	}
	b.m.setC2S(nil)
	mu.Lock()
	// Up to the add: Init, Confirm, hello, the add.
	var session [][]byte
	for _, f := range recorded {
		session = append(session, f)
		if isData(f) && len(session) >= 4 {
			break
		}
	}
	mu.Unlock()
	before := b.s.srv.Stats().HandshakeFailures
	replaySession(t, b.s.addr, session)
	waitFor(t, "the replayed handshake's refusal", 5*time.Second, func() bool {
		return b.s.srv.Stats().HandshakeFailures > before
	})
	if got := b.s.srv.Stats().Refused[securechan.DropReplay]; got < 1 {
		t.Errorf("server counted %d replays", got)
	}
	b.noRule(t, 1)
}

// TestRefuseReordered: two calls in flight; the attacker swaps their
// frames. Neither lands.
func TestRefuseReordered(t *testing.T) {
	b := newAttackBed(t)
	held := make(chan []byte, 1)
	var mu sync.Mutex
	var first []byte
	b.m.setC2S(func(f []byte) [][]byte {
		if !isData(f) {
			return [][]byte{f}
		}
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = f
			held <- f
			return nil
		}
		out := [][]byte{f, first}
		b.m.setC2S(nil) // done (hooks run with m.mu released)
		return out
	})
	var wg sync.WaitGroup
	var resA []hal.OpResult
	var errA error
	wg.Add(1)
	go func() {
		defer wg.Done()
		resA, errA = b.apply(hal.AddOp(exactRule(1, 1)))
	}()
	<-held
	resB, errB := b.apply(hal.AddOp(exactRule(2, 2)))
	wg.Wait()
	refusedByNIC(t, resA, errA, securechan.ErrReorder)
	refusedByNIC(t, resB, errB, securechan.ErrReorder)
	b.noRule(t, 1, 2)
	if got := b.s.srv.Stats().Refused[securechan.DropReorder]; got != 1 {
		t.Errorf("server counted %d reordered frames", got)
	}
}

// TestRefuseVersionRewritten: the attacker rewrites the version byte of a
// frame (a downgrade on the wire).
func TestRefuseVersionRewritten(t *testing.T) {
	b := newAttackBed(t)
	b.m.setC2S(once(func(f []byte) [][]byte {
		g := slices.Clone(f)
		g[0] = 0
		return [][]byte{g}
	}))
	res, err := b.apply(hal.AddOp(exactRule(3, 3)))
	refusedByNIC(t, res, err, securechan.ErrVersion)
	b.noRule(t, 3)
	if got := b.s.srv.Stats().Refused[securechan.DropVersion]; got != 1 {
		t.Errorf("server counted %d version refusals", got)
	}
}

// TestRefuseHandshakeVersion: the version of the handshake's first frame
// rewritten: the channel is never set up.
func TestRefuseHandshakeVersion(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), nil)
	m := newMITM(t, s.addr)
	m.setC2S(func(f []byte) [][]byte {
		g := slices.Clone(f)
		if g[1] == 1 { // Init
			g[0] = 0
		}
		return [][]byte{g}
	})
	_, err := Open(context.Background(), clientConfig(k, m.addr))
	if !errors.Is(err, ErrHandshake) {
		t.Fatalf("open through a version-rewriting attacker: %v", err)
	}
	waitFor(t, "server's count", 10*time.Second, func() bool { return s.srv.Stats().Refused[securechan.DropVersion] == 1 })
	if !s.log.has("handshake refused") {
		t.Errorf("not logged: %v", s.log.all())
	}
}

// TestRefuseProtocolDowngrade: a host offering only an older protocol
// version than the NIC side accepts is refused with a *VersionError on
// both ends, before any call.
func TestRefuseProtocolDowngrade(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), nil)
	cfg := clientConfig(k, s.addr)
	cfg.maxVersion, cfg.minVersion, cfg.versionsSet = ProtocolVersion-1, ProtocolVersion-1, true
	_, err := Open(context.Background(), cfg)
	var ve *VersionError
	if !errors.As(err, &ve) || !errors.Is(err, ErrVersion) || ve.Min != ProtocolVersion {
		t.Fatalf("open offering version %d: %v", ProtocolVersion-1, err)
	}
	if st := s.srv.Stats(); st.VersionRefusals != 1 || st.Sessions != 0 {
		t.Errorf("server stats %+v", st)
	}
	if !s.log.has("protocol version refused") {
		t.Errorf("not logged: %v", s.log.all())
	}
}

// TestRefuseWrongHostKey: a host whose key the NIC side has not pinned.
func TestRefuseWrongHostKey(t *testing.T) {
	k := newKeys(t)
	other := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), nil)
	cfg := clientConfig(k, s.addr)
	cfg.PrivateKey = other.hostPriv // not pinned by the server
	_, err := Open(context.Background(), cfg)
	if !errors.Is(err, ErrHandshake) {
		t.Fatalf("open with an unpinned host key: %v", err)
	}
	waitFor(t, "server's count", 10*time.Second, func() bool { return s.srv.Stats().Refused[securechan.DropPeerKey] == 1 })
	if !s.log.has("peer_key") {
		t.Errorf("not logged: %v", s.log.all())
	}
}

// TestRefuseWrongServerKey: a NIC side that is not the pinned one (an
// impostor, or a mistyped key): the host refuses it.
func TestRefuseWrongServerKey(t *testing.T) {
	k := newKeys(t)
	other := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), func(c *ServerConfig) { c.PrivateKey = other.nicPriv })
	_, err := Open(context.Background(), clientConfig(k, s.addr))
	if !errors.Is(err, ErrHandshake) {
		t.Fatalf("open against an impostor: %v", err)
	}
	// The impostor cannot open the Init sealed to the pinned key.
	waitFor(t, "server's count", 10*time.Second, func() bool { return s.srv.Stats().Refused[securechan.DropTampered] == 1 })
}

// TestRefuseTamperedReply: the NIC side's answer altered on the way: the
// host refuses it; the call had landed, so its outcome is unknown, and a
// Dump after the reconnect tells the truth.
func TestRefuseTamperedReply(t *testing.T) {
	b := newAttackBed(t)
	b.m.setS2C(once(func(f []byte) [][]byte {
		g := slices.Clone(f)
		g[20] ^= 1
		return [][]byte{g}
	}))
	res, err := b.apply(hal.AddOp(exactRule(4, 4)))
	var re *RefusedError
	if err == nil || !errors.Is(res[0].Err, ErrUnknownOutcome) || !errors.As(res[0].Err, &re) || re.By != "host" ||
		!errors.Is(res[0].Err, securechan.ErrTampered) {
		t.Fatalf("apply with its reply tampered: %v, %v", err, res[0].Err)
	}
	if !b.clog.has("refused a frame from the NIC side") {
		t.Errorf("not logged: %v", b.clog.all())
	}
	waitFor(t, "reconnect", 5*time.Second, func() bool { return b.cl.Connected() && b.cl.Reconnects() == 1 })
	if _, ok := dumpIDs(t, b.nic)[4]; !ok {
		t.Fatal("the Dump after the reconnect does not show the rule that landed")
	}
}
