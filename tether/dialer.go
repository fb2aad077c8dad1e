package tether

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nicpath/nicpath/securechan"
)

// Defaults of TetherConfig.
const (
	// DefaultKeepalive is WireGuard's persistent keepalive: NATs keep a UDP
	// mapping for 30 s or more (RFC 4787 REQ-5 asks for 2 min), so 25 s
	// keeps an idle tunnel open on all but the most aggressive.
	DefaultKeepalive = 25 * time.Second
	// DefaultProbe is how often the tether checks that the anchor still
	// answers (Tailscale's path heartbeat is 3 s). A probe also carries a
	// NAT rebinding to the anchor, so recovery after one takes at most a
	// probe interval and a round trip.
	DefaultProbe = 2 * time.Second
	// DefaultDeadAfter: with no authenticated answer for this long, the
	// tether runs a new handshake (the anchor restarted, or lost the
	// session).
	DefaultDeadAfter = 3 * DefaultProbe
	// handshakeRetry is how often an unanswered Init is sent again.
	handshakeRetry = 250 * time.Millisecond
)

// TetherConfig configures a Tether.
type TetherConfig struct {
	// Key is the tether's static key; the anchor pins its public half.
	Key securechan.PrivateKey
	// AnchorKey is the anchor's pinned public key.
	AnchorKey securechan.PublicKey
	// Anchor is the anchor's public UDP endpoint.
	Anchor netip.AddrPort
	// Keepalive is the longest the tether stays silent (DefaultKeepalive
	// if zero).
	Keepalive time.Duration
	// Probe is the liveness probe interval (DefaultProbe if zero).
	Probe time.Duration
	// DeadAfter is how long without an authenticated packet from the
	// anchor before a new handshake (3 × Probe if zero).
	DeadAfter time.Duration
	// PathMTU as in AnchorConfig.
	PathMTU int
	// Deliver receives every overlay frame from the anchor; frame is reused
	// once it returns. It may call Send.
	Deliver func(vni uint32, frame []byte)
	// Conn is the socket to use; nil opens an unconnected UDP socket on an
	// ephemeral port. The tether closes it when Run returns.
	Conn PacketConn
	// Logger (slog.Default if nil).
	Logger *slog.Logger
	// Channel as in AnchorConfig.
	Channel *securechan.Config
}

// Tether is the remote site's end of the tunnel: it dials the anchor through
// the NAT, keeps the NAT's mapping alive and checks that the anchor answers;
// with no answer for DeadAfter it starts a new session.
type Tether struct {
	cfg   TetherConfig
	ch    *securechan.Config
	log   *slog.Logger
	maxDg int

	conn PacketConn

	// mu guards the session and the times; held over seal and write.
	mu        sync.Mutex
	s         *securechan.Session
	started   time.Time // of the handshake in flight
	lastSent  time.Time
	lastAuth  time.Time
	lastProbe time.Time
	since     time.Time
	seq       uint64
	sealBuf   []byte
	ctrlBuf   []byte
	msgBuf    []byte
	rtt       time.Duration

	handshakes, probes, acks atomic.Uint64
	rxFrames, txFrames       atomic.Uint64
	tooBig, refused          atomic.Uint64
}

// NewTether checks cfg and returns a tether; Run dials.
func NewTether(cfg TetherConfig) (*Tether, error) {
	if !cfg.Anchor.IsValid() {
		return nil, fmt.Errorf("tether: no anchor endpoint")
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	if cfg.Probe <= 0 {
		cfg.Probe = DefaultProbe
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = 3 * cfg.Probe
	}
	ch := cfg.Channel
	if ch == nil {
		ch = &securechan.Config{}
	}
	ch.PrivateKey, ch.PeerKeys, ch.Datagram = cfg.Key, []securechan.PublicKey{cfg.AnchorKey}, true
	ch.MaxFrame = maxDatagram(cfg.PathMTU, cfg.Anchor.Addr().Is6() && !cfg.Anchor.Addr().Is4In6())
	t := &Tether{cfg: cfg, ch: ch, log: cfg.Logger, maxDg: ch.MaxFrame}
	if t.log == nil {
		t.log = slog.Default()
	}
	return t, nil
}

// Run dials and keeps the tunnel up until ctx is done.
func (t *Tether) Run(ctx context.Context) error {
	conn := t.cfg.Conn
	if conn == nil {
		c, err := net.ListenUDP("udp", nil)
		if err != nil {
			return fmt.Errorf("tether: socket: %w", err)
		}
		conn = c
	}
	t.mu.Lock()
	t.conn = conn
	t.mu.Unlock()
	defer conn.Close()
	if err := t.newSession(); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- t.readLoop(ctx, conn) }()

	tick := min(handshakeRetry, t.cfg.Probe/4, t.cfg.Keepalive/2)
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			t.mu.Lock()
			if t.s != nil {
				t.s.Close()
				t.flushLocked(t.s)
			}
			t.mu.Unlock()
			conn.Close()
			<-errc
			return nil
		case err := <-errc:
			return err
		case <-tk.C:
			if err := t.tick(time.Now()); err != nil {
				return err
			}
		}
	}
}

func (t *Tether) tick(now time.Time) error {
	t.mu.Lock()
	s := t.s
	if !s.Established() {
		if now.Sub(t.started) >= t.cfg.DeadAfter {
			t.mu.Unlock()
			return t.newSession() // a fresh Init: the old one may be lost for good
		}
		s.Retransmit()
		t.flushLocked(s)
		t.mu.Unlock()
		return nil
	}
	if now.Sub(t.lastAuth) >= t.cfg.DeadAfter {
		t.mu.Unlock()
		t.log.Info("anchor silent, new handshake", "anchor", t.cfg.Anchor, "silent", now.Sub(t.lastAuth).Round(time.Millisecond))
		return t.newSession()
	}
	// A failed write (the socket closing, a route gone for a moment) is
	// not fatal: the next tick tries again and DeadAfter starts over.
	switch {
	case now.Sub(t.lastProbe) >= t.cfg.Probe:
		t.seq++
		t.lastProbe = now
		t.probes.Add(1)
		seq := t.seq
		t.sendLocked(func(b []byte) []byte { return AppendProbe(b, false, seq, now.UnixNano()) })
	case now.Sub(t.lastSent) >= t.cfg.Keepalive:
		t.sendLocked(AppendKeepalive)
	}
	t.mu.Unlock()
	return nil
}

func (t *Tether) newSession() error {
	s, err := securechan.NewInitiator(t.ch, t.cfg.AnchorKey)
	if err != nil {
		return err
	}
	if _, err := s.Start(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.s = s
	t.started = time.Now()
	t.flushLocked(s)
	return nil
}

func (t *Tether) flushLocked(s *securechan.Session) {
	for {
		out, ok, err := s.NextOutbound(t.ctrlBuf[:0])
		if err != nil || !ok {
			return
		}
		t.ctrlBuf = out // not sealBuf: a data frame sealed there may be waiting to be sent
		t.conn.WriteToUDPAddrPort(out, t.cfg.Anchor)
		t.lastSent = time.Now()
	}
}

func (t *Tether) readLoop(ctx context.Context, conn PacketConn) error {
	buf := make([]byte, 64<<10)
	plain := make([]byte, 0, 64<<10)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("tether: read: %w", err)
		}
		if canon(from) != canon(t.cfg.Anchor) {
			t.refused.Add(1)
			continue
		}
		t.receive(buf[:n], plain[:0])
	}
}

func (t *Tether) receive(pkt, plain []byte) {
	t.mu.Lock()
	s := t.s
	was := s.Established()
	out, err := s.Open(plain, pkt)
	if err != nil {
		t.mu.Unlock()
		t.refused.Add(1)
		return
	}
	now := time.Now()
	t.lastAuth = now
	if !was && s.Established() {
		t.since, t.lastProbe = now, now
		t.handshakes.Add(1)
		t.log.Info("tunnel established", "anchor", t.cfg.Anchor)
	}
	t.flushLocked(s)
	t.mu.Unlock()
	if out == nil {
		return
	}
	var m Message
	if DecodeMessage(out, &m) != nil {
		t.refused.Add(1)
		return
	}
	switch m.Kind {
	case KindFrame:
		t.rxFrames.Add(1)
		if t.cfg.Deliver != nil {
			t.cfg.Deliver(m.VNI, m.Frame)
		}
	case KindProbeAck:
		// The round trip before the count: a reader that sees the ack
		// counted finds its round trip.
		t.mu.Lock()
		if m.Seq == t.seq {
			t.rtt = now.Sub(time.Unix(0, m.Clock))
		}
		t.mu.Unlock()
		t.acks.Add(1)
	}
}

// sendLocked seals one message and sends it; t.mu is held.
func (t *Tether) sendLocked(build func([]byte) []byte) error {
	if t.s == nil || !t.s.Established() {
		return ErrNotEstablished
	}
	t.msgBuf = build(t.msgBuf[:0])
	t.flushLocked(t.s)
	out, err := t.s.SealData(t.sealBuf[:0], t.msgBuf)
	if err != nil {
		return err
	}
	t.sealBuf = out
	t.flushLocked(t.s)
	if _, err := t.conn.WriteToUDPAddrPort(out, t.cfg.Anchor); err != nil {
		return err
	}
	t.lastSent = time.Now()
	return nil
}

// MaxFrame is the largest overlay Ethernet frame the tunnel carries.
func (t *Tether) MaxFrame() int { return t.maxDg - sealedHeaderLen - 16 - frameHdrLen }

// Send carries an overlay frame of vni to the anchor. A frame larger than
// MaxFrame is refused with ErrTooBig.
func (t *Tether) Send(vni uint32, frame []byte) error {
	if len(frame) > t.MaxFrame() {
		t.tooBig.Add(1)
		return ErrTooBig
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil {
		return ErrNotEstablished
	}
	if err := t.sendLocked(func(b []byte) []byte { return AppendFrame(b, vni, frame) }); err != nil {
		return err
	}
	t.txFrames.Add(1)
	return nil
}

// TetherStatus is what a tether knows of its tunnel.
type TetherStatus struct {
	Anchor      netip.AddrPort `json:"anchor"`
	Local       string         `json:"local"`
	Established bool           `json:"established"`
	Since       time.Time      `json:"since,omitzero"`
	LastSeen    time.Time      `json:"last_seen,omitzero"`
	RTT         time.Duration  `json:"rtt"`
	Handshakes  uint64         `json:"handshakes"`
	Probes      uint64         `json:"probes"`
	Acks        uint64         `json:"acks"`
	RxFrames    uint64         `json:"rx_frames"`
	TxFrames    uint64         `json:"tx_frames"`
	TooBig      uint64         `json:"too_big"`
	Refused     uint64         `json:"refused"`
}

// Status reports the tunnel.
func (t *Tether) Status() TetherStatus {
	t.mu.Lock()
	st := TetherStatus{Anchor: t.cfg.Anchor, Established: t.s != nil && t.s.Established(),
		Since: t.since, LastSeen: t.lastAuth, RTT: t.rtt}
	if t.conn != nil {
		st.Local = t.conn.LocalAddr().String()
	}
	t.mu.Unlock()
	st.Handshakes, st.Probes, st.Acks = t.handshakes.Load(), t.probes.Load(), t.acks.Load()
	st.RxFrames, st.TxFrames = t.rxFrames.Load(), t.txFrames.Load()
	st.TooBig, st.Refused = t.tooBig.Load(), t.refused.Load()
	return st
}
