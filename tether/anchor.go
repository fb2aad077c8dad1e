package tether

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nicpath/nicpath/securechan"
)

// Peer is one tether an anchor accepts: its name, its pinned static key and
// the VNI of the relocated subnet's VNET, the only VNI its frames may carry.
type Peer struct {
	Name string
	Key  securechan.PublicKey
	VNI  uint32
}

// AnchorConfig configures an Anchor.
type AnchorConfig struct {
	// Key is the anchor's static key; the tethers pin its public half.
	Key securechan.PrivateKey
	// Peers are the tethers this anchor accepts (their keys are pinned).
	Peers []Peer
	// PathMTU is the underlay MTU between the anchor and the tethers
	// (DefaultPathMTU if zero); it sizes the largest frame the tunnel
	// carries.
	PathMTU int
	// Deliver receives every overlay frame a tether sent, with the tether's
	// name. frame is reused once Deliver returns. Deliver may call Send.
	Deliver func(peer string, vni uint32, frame []byte)
	// Logger (slog.Default if nil).
	Logger *slog.Logger
	// Channel, when set, is used as the securechan configuration (tests set
	// its clock and rekey limits); its PrivateKey, PeerKeys, Datagram and
	// MaxFrame are set by NewAnchor.
	Channel *securechan.Config
}

// Errors of Send.
var (
	// ErrUnknownPeer: no tether of that name is configured.
	ErrUnknownPeer = errors.New("tether: unknown peer")
	// ErrNotEstablished: the tunnel to that peer has no authenticated
	// session (yet, or any more); the frame was not sent.
	ErrNotEstablished = errors.New("tether: tunnel not established")
	// ErrTooBig: the frame does not fit the tunnel's MTU; the caller answers
	// the sender with an ICMP error (see TooBigAnswer) instead of dropping
	// it silently.
	ErrTooBig = errors.New("tether: frame too big for the tunnel")
)

// Anchor is the data-center end of relocated-subnet tunnels. It answers the
// tethers' handshakes, learns each tether's public endpoint (as its NAT shows
// it) from authenticated packets only, and follows it when the NAT rebinds:
// a datagram from a new address moves the endpoint only once it has been
// opened under the session's keys and passed the replay window. Forged
// datagrams fail authentication, replayed ones the replay window (or, for a
// handshake, the timestamp check); neither changes anything.
type Anchor struct {
	conn    PacketConn
	cfg     *securechan.Config
	log     *slog.Logger
	deliver func(string, uint32, []byte)
	maxDg   int

	peers  []*anchorPeer // in configuration order
	byKey  map[securechan.PublicKey]*anchorPeer
	byName map[string]*anchorPeer

	refused [securechan.NumDropReasons]atomic.Uint64
	junk    atomic.Uint64 // datagrams no session or handshake took
}

type anchorPeer struct {
	Peer

	// mu guards the sessions and the endpoint, and is held over seal and
	// write so that frames leave in counter order.
	mu          sync.Mutex
	cur         *securechan.Session
	endpoint    netip.AddrPort
	pending     *securechan.Session // a handshake answered, not yet confirmed
	pendingFrom netip.AddrPort
	lastAuth    time.Time
	since       time.Time // when cur was established
	// newest is the (epoch, counter) of the newest frame authenticated
	// under cur: only a frame newer than every frame before it may move
	// the endpoint.
	newest  frameOrder
	sealBuf []byte
	ctrlBuf []byte
	msgBuf  []byte

	rebinds, handshakes    atomic.Uint64
	rxFrames, txFrames     atomic.Uint64
	rxBytes, txBytes       atomic.Uint64
	probes, tooBig, noSess atomic.Uint64
}

// NewAnchor returns an anchor on conn for cfg's peers. Run reads conn.
func NewAnchor(conn PacketConn, cfg AnchorConfig) (*Anchor, error) {
	if len(cfg.Peers) == 0 {
		return nil, fmt.Errorf("tether: an anchor needs at least one peer")
	}
	ch := cfg.Channel
	if ch == nil {
		ch = &securechan.Config{}
	}
	ch.PrivateKey = cfg.Key
	ch.Datagram = true
	ch.MaxFrame = maxDatagram(cfg.PathMTU, false)
	ch.PeerKeys = nil
	a := &Anchor{conn: conn, cfg: ch, log: cfg.Logger, deliver: cfg.Deliver, maxDg: ch.MaxFrame,
		byKey: map[securechan.PublicKey]*anchorPeer{}, byName: map[string]*anchorPeer{}}
	if a.log == nil {
		a.log = slog.Default()
	}
	for _, p := range cfg.Peers {
		if p.Name == "" {
			return nil, fmt.Errorf("tether: a peer without a name")
		}
		if _, dup := a.byName[p.Name]; dup {
			return nil, fmt.Errorf("tether: peer %q given twice", p.Name)
		}
		if _, dup := a.byKey[p.Key]; dup {
			return nil, fmt.Errorf("tether: peer %q has the key of another peer", p.Name)
		}
		if p.VNI == 0 || p.VNI > maxVNI {
			return nil, fmt.Errorf("tether: peer %q: VNI %d out of range", p.Name, p.VNI)
		}
		ap := &anchorPeer{Peer: p}
		a.peers = append(a.peers, ap)
		a.byKey[p.Key] = ap
		a.byName[p.Name] = ap
		ch.PeerKeys = append(ch.PeerKeys, p.Key)
	}
	return a, nil
}

// Run reads the socket until ctx is done or the socket fails; it closes the
// socket when ctx ends, and returns only once it is closed, so that its
// address can be bound again at once (a send in flight elsewhere holds the
// socket open past the moment the read fails).
func (a *Anchor) Run(ctx context.Context) error {
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { a.conn.Close(); close(closed) })
	defer func() {
		if !stop() {
			<-closed
		}
	}()
	buf := make([]byte, 64<<10)
	plain := make([]byte, 0, 64<<10)
	for {
		n, from, err := a.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tether: anchor read: %w", err)
		}
		a.Receive(buf[:n], canon(from), plain[:0])
	}
}

// Receive handles one datagram from from; Run calls it for each. plain is
// scratch space for the opened plaintext.
func (a *Anchor) Receive(pkt []byte, from netip.AddrPort, plain []byte) {
	if len(pkt) < 2 || pkt[0] != securechan.ProtocolVersion {
		a.junk.Add(1)
		return
	}
	if pkt[1] == 1 { // securechan's Init
		a.handshake(pkt, from)
		return
	}
	// A sealed frame: the peer whose endpoint it comes from first, then the
	// others (a rebinding shows as a known session from a new address).
	var first *anchorPeer
	for _, p := range a.peers {
		p.mu.Lock()
		match := p.endpoint == from || p.pendingFrom == from
		p.mu.Unlock()
		if match {
			first = p
			break
		}
	}
	if first != nil {
		if out, ok := a.open(first, pkt, from, plain); ok {
			a.handle(first, out)
			return
		}
	}
	for _, p := range a.peers {
		if p == first {
			continue
		}
		if out, ok := a.open(p, pkt, from, plain); ok {
			a.handle(p, out)
			return
		}
	}
}

// open tries pkt under p's sessions. ok means it authenticated; out is the
// data plaintext (nil for a control frame).
func (a *Anchor) open(p *anchorPeer, pkt []byte, from netip.AddrPort, plain []byte) ([]byte, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil {
		out, err := p.cur.Open(plain, pkt)
		if err == nil {
			newer := p.newest.advance(pkt)
			if from != p.endpoint && newer {
				a.log.Info("tether endpoint moved", "peer", p.Name, "from", p.endpoint, "to", from)
				p.endpoint = from
				p.rebinds.Add(1)
			}
			p.lastAuth = time.Now()
			a.flushLocked(p, p.cur, p.endpoint)
			return out, true
		}
		a.refused[securechan.ReasonOf(err)].Add(1)
	}
	if p.pending != nil {
		out, err := p.pending.Open(plain, pkt)
		if err == nil {
			// The initiator's first authenticated frame under the new keys:
			// the new session replaces the old one, at the address it
			// came from.
			if p.pending.Established() {
				if p.cur != nil {
					p.cur.Close() // nothing is flushed to the old session
				}
				p.cur, p.pending = p.pending, nil
				if p.endpoint.IsValid() && p.endpoint != from {
					p.rebinds.Add(1)
				}
				p.endpoint, p.pendingFrom = from, netip.AddrPort{}
				p.newest = frameOrder{}
				p.newest.advance(pkt)
				p.since = time.Now()
				p.handshakes.Add(1)
				a.log.Info("tether session established", "peer", p.Name, "endpoint", from)
			}
			p.lastAuth = time.Now()
			s := p.cur
			if s == nil {
				s = p.pending
			}
			a.flushLocked(p, s, from)
			return out, true
		}
		a.refused[securechan.ReasonOf(err)].Add(1)
	}
	return nil, false
}

// frameOrder is a position in a session's sealed frames: securechan's
// cleartext (and authenticated) header carries the sender's epoch (byte 3)
// and its counter in that epoch (bytes 4 to 11). A datagram replay window
// accepts a frame it never saw even when it is older than the newest (it
// was delayed, or lost on its first way and replayed by someone who
// captured it): such a frame is delivered, but moves nothing.
type frameOrder struct {
	set   bool
	epoch uint8
	ctr   uint64
}

// advance records the frame's position if it is newer than every one
// before, and reports whether it was.
func (o *frameOrder) advance(frame []byte) bool {
	if len(frame) < sealedHeaderLen {
		return false
	}
	ep, ctr := frame[3], binary.BigEndian.Uint64(frame[4:12])
	newer := !o.set || (ep == o.epoch && ctr > o.ctr) || ep == o.epoch+1
	if newer {
		*o = frameOrder{set: true, epoch: ep, ctr: ctr}
	}
	return newer
}

// handshake answers an Init with a new responder session. A replayed Init
// fails securechan's timestamp check; a retransmitted one (our answer was
// lost) is answered again by the pending session.
func (a *Anchor) handshake(pkt []byte, from netip.AddrPort) {
	s := securechan.NewResponder(a.cfg)
	if _, err := s.Open(nil, pkt); err != nil {
		// A retransmission of the Init a pending session answered: answer
		// it again, wherever it comes from (a copy raced ahead from
		// another address must not keep the real tether's retries from
		// their answer; the answer is of use only to the holder of the
		// Init's ephemeral key, and the endpoint moves only with the
		// Confirm, which is sealed).
		for _, p := range a.peers {
			p.mu.Lock()
			if p.pending != nil {
				if _, err2 := p.pending.Open(nil, pkt); err2 == nil {
					p.pendingFrom = from
					a.flushLocked(p, p.pending, from)
					p.mu.Unlock()
					return
				}
			}
			p.mu.Unlock()
		}
		a.refused[securechan.ReasonOf(err)].Add(1)
		return
	}
	p := a.byKey[s.PeerKey()]
	if p == nil { // pinned but not a peer: cannot happen, PeerKeys are the peers'
		a.junk.Add(1)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending, p.pendingFrom = s, from
	a.flushLocked(p, s, from)
}

// flushLocked sends the session's queued handshake and control frames.
func (a *Anchor) flushLocked(p *anchorPeer, s *securechan.Session, to netip.AddrPort) {
	for {
		out, ok, err := s.NextOutbound(p.ctrlBuf[:0])
		if err != nil || !ok {
			return
		}
		p.ctrlBuf = out // not sealBuf: a data frame sealed there may be waiting to be sent
		a.conn.WriteToUDPAddrPort(out, to)
	}
}

func (a *Anchor) handle(p *anchorPeer, plain []byte) {
	if plain == nil {
		return
	}
	var m Message
	if err := DecodeMessage(plain, &m); err != nil {
		a.junk.Add(1)
		return
	}
	switch m.Kind {
	case KindFrame:
		if m.VNI != p.VNI {
			a.junk.Add(1)
			return
		}
		p.rxFrames.Add(1)
		p.rxBytes.Add(uint64(len(m.Frame)))
		if a.deliver != nil {
			a.deliver(p.Name, m.VNI, m.Frame)
		}
	case KindProbe:
		p.probes.Add(1)
		a.sendMsg(p, func(b []byte) []byte { return AppendProbe(b, true, m.Seq, m.Clock) })
	}
}

// sendMsg seals one message built by build and sends it to p's endpoint.
func (a *Anchor) sendMsg(p *anchorPeer, build func([]byte) []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil || !p.cur.Established() || !p.endpoint.IsValid() {
		p.noSess.Add(1)
		return ErrNotEstablished
	}
	p.msgBuf = build(p.msgBuf[:0])
	a.flushLocked(p, p.cur, p.endpoint)
	out, err := p.cur.SealData(p.sealBuf[:0], p.msgBuf)
	if err != nil {
		return err
	}
	p.sealBuf = out
	a.flushLocked(p, p.cur, p.endpoint) // a rekey request SealData queued
	if _, err := a.conn.WriteToUDPAddrPort(out, p.endpoint); err != nil {
		return err
	}
	return nil
}

// MaxFrame is the largest overlay Ethernet frame (untagged) the tunnel
// carries.
func (a *Anchor) MaxFrame() int { return a.maxDg - sealedHeaderLen - 16 - frameHdrLen }

// Send carries an overlay frame of vni to the tether named peer. A frame
// larger than MaxFrame is refused with ErrTooBig.
func (a *Anchor) Send(peer string, vni uint32, frame []byte) error {
	p := a.byName[peer]
	if p == nil {
		return fmt.Errorf("%w: %q", ErrUnknownPeer, peer)
	}
	if len(frame) > a.MaxFrame() {
		p.tooBig.Add(1)
		return ErrTooBig
	}
	if err := a.sendMsg(p, func(b []byte) []byte { return AppendFrame(b, vni, frame) }); err != nil {
		return err
	}
	p.txFrames.Add(1)
	p.txBytes.Add(uint64(len(frame)))
	return nil
}

// PeerStatus is what an anchor knows of one tether.
type PeerStatus struct {
	Name        string         `json:"name"`
	Key         string         `json:"key"`
	VNI         uint32         `json:"vni"`
	Established bool           `json:"established"`
	Endpoint    netip.AddrPort `json:"endpoint"`
	Since       time.Time      `json:"since,omitzero"`
	LastSeen    time.Time      `json:"last_seen,omitzero"`
	Rebinds     uint64         `json:"rebinds"`
	Handshakes  uint64         `json:"handshakes"`
	RxFrames    uint64         `json:"rx_frames"`
	TxFrames    uint64         `json:"tx_frames"`
	RxBytes     uint64         `json:"rx_bytes"`
	TxBytes     uint64         `json:"tx_bytes"`
	Probes      uint64         `json:"probes"`
	TooBig      uint64         `json:"too_big"`
	NoSession   uint64         `json:"no_session"`
}

// Status reports every peer, in configuration order.
func (a *Anchor) Status() []PeerStatus {
	out := make([]PeerStatus, 0, len(a.peers))
	for _, p := range a.peers {
		p.mu.Lock()
		st := PeerStatus{Name: p.Name, Key: p.Key.String(), VNI: p.VNI,
			Established: p.cur != nil && p.cur.Established(), Endpoint: p.endpoint,
			Since: p.since, LastSeen: p.lastAuth}
		p.mu.Unlock()
		st.Rebinds, st.Handshakes = p.rebinds.Load(), p.handshakes.Load()
		st.RxFrames, st.TxFrames = p.rxFrames.Load(), p.txFrames.Load()
		st.RxBytes, st.TxBytes = p.rxBytes.Load(), p.txBytes.Load()
		st.Probes, st.TooBig, st.NoSession = p.probes.Load(), p.tooBig.Load(), p.noSess.Load()
		out = append(out, st)
	}
	return out
}

// Endpoint returns the public endpoint the anchor sends peer's traffic to.
func (a *Anchor) Endpoint(peer string) (netip.AddrPort, bool) {
	p := a.byName[peer]
	if p == nil {
		return netip.AddrPort{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.endpoint, p.endpoint.IsValid()
}

// Refused returns how many datagrams were refused for reason (forged,
// replayed, out of window …), and how many no session could even try.
func (a *Anchor) Refused(reason securechan.DropReason) uint64 {
	if reason >= securechan.NumDropReasons {
		return 0
	}
	return a.refused[reason].Load()
}

// Junk returns how many datagrams were not the tunnel's at all.
func (a *Anchor) Junk() uint64 { return a.junk.Load() }
