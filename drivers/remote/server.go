package remote

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/securechan"
)

// ServerConfig configures the NIC side.
type ServerConfig struct {
	// PrivateKey is the NIC side's static key; HostKeys are the pinned
	// static keys of the hosts allowed to program the NIC.
	PrivateKey securechan.PrivateKey
	HostKeys   []securechan.PublicKey
	// Logger receives refusals (handshakes, frames, versions) and session
	// changes; nil discards.
	Logger *slog.Logger
	// MaxMessage bounds one RPC message (DefaultMaxMessage).
	MaxMessage int
	// ApplyChunk is how many operations of an Apply batch go to the NIC in
	// one call; the results of each chunk go back as soon as it is done,
	// so that a channel cut mid-batch loses the outcome of one chunk at
	// most, and the server stops applying the rest of a batch whose
	// session died. Default 16384.
	ApplyChunk int
	// ExceptionBatch is how many exceptions one ReadExceptions call takes
	// and one message carries at most (default 64, the vswitch's batch).
	ExceptionBatch int
	// WriteTimeout bounds one write to the host (default 10s): a host that
	// stops reading loses its session rather than holding the NIC side.
	WriteTimeout time.Duration
	// MinVersion is the oldest protocol version accepted (default
	// ProtocolVersion: no downgrade; never below the oldest version this
	// package speaks).
	MinVersion uint8
	// Channel tunes the secure channel.
	Channel *ChannelTuning
	// Addresses handles the host's address information (securechan's
	// MsgMappingAdd and MsgMappingRemove, from Client.SendAddresses), in
	// order, and says how each went. Nil answers securechan.AckUnknown:
	// this NIC side keeps no mappings.
	Addresses func(ctx context.Context, m *securechan.Message) securechan.AckStatus
}

// ServerStats are what a Server counted.
type ServerStats struct {
	Sessions           uint64 // sessions established (hello answered)
	HandshakeFailures  uint64 // connections refused before or at the hello
	VersionRefusals    uint64 // hellos refused for their version
	Refused            [securechan.NumDropReasons]uint64
	ExceptionsSent     uint64
	LearnedSent        uint64 // learned addresses sent to the host (hal.AddressLearner)
	ExceptionsDropped  uint64 // the host had no room (no credit) or no session: hal.ReasonQueueFull
	RequestsHandled    uint64
	SessionsSuperseded uint64 // sessions closed because the host opened a newer one
}

// Server serves one hal.NIC to the host over the secure channel. One host
// session is active at a time: a newer authenticated session replaces the
// older one (a host that reconnects after a cut the server has not noticed
// yet). The NIC is never closed by the server, and a session that ends
// changes nothing on it: the NIC keeps forwarding on its rules.
type Server struct {
	nic      hal.NIC
	cfg      ServerConfig
	chcfg    *securechan.Config
	log      *slog.Logger
	instance uint64
	excBuf   int

	mu       sync.Mutex // guards active and sessions
	active   *serverSession
	sessions uint64

	handshakeFailures, versionRefusals, exceptionsSent, exceptionsDropped atomic.Uint64
	requests, superseded                                                  atomic.Uint64
	learnedSent                                                           atomic.Uint64
	refused                                                               [securechan.NumDropReasons]atomic.Uint64

	dropMu    sync.Mutex // guards portDrops
	portDrops map[hal.PortID]uint64
}

// NewServer returns a server for nic.
func NewServer(nic hal.NIC, cfg ServerConfig) (*Server, error) {
	if nic == nil {
		return nil, errors.New("remote: server: no NIC")
	}
	if len(cfg.HostKeys) == 0 {
		return nil, errors.New("remote: server: no pinned host key")
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.ApplyChunk <= 0 {
		cfg.ApplyChunk = 16384
	}
	if cfg.ExceptionBatch <= 0 {
		cfg.ExceptionBatch = 64
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = ProtocolVersion
	}
	// A version the codec does not speak cannot be allowed, whatever the
	// configuration says.
	cfg.MinVersion = max(cfg.MinVersion, oldestVersion)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	crand.Read(b[:])
	maxMTU := 1500
	for _, p := range nic.Ports() {
		maxMTU = max(maxMTU, p.MTU)
	}
	return &Server{
		nic: nic, cfg: cfg, log: log,
		chcfg:     channelConfig(cfg.PrivateKey, cfg.HostKeys, cfg.Channel),
		instance:  binary.BigEndian.Uint64(b[:]),
		excBuf:    maxMTU + 64, // Ethernet header, tags and slack
		portDrops: map[hal.PortID]uint64{},
	}, nil
}

// Serve serves nic on ln until ctx is done; see Server.
func Serve(ctx context.Context, nic hal.NIC, ln net.Listener, cfg ServerConfig) error {
	s, err := NewServer(nic, cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve accepts connections on ln until ctx is done, serving each. It
// closes ln when it returns, and ends the sessions it started.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.ServeConn(ctx, c)
		}()
	}
}

// Stats returns what the server counted.
func (s *Server) Stats() ServerStats {
	st := ServerStats{
		HandshakeFailures: s.handshakeFailures.Load(), VersionRefusals: s.versionRefusals.Load(),
		ExceptionsSent: s.exceptionsSent.Load(), ExceptionsDropped: s.exceptionsDropped.Load(),
		RequestsHandled: s.requests.Load(), SessionsSuperseded: s.superseded.Load(),
		LearnedSent: s.learnedSent.Load(),
	}
	for i := range st.Refused {
		st.Refused[i] = s.refused[i].Load()
	}
	s.mu.Lock()
	st.Sessions = s.sessions
	s.mu.Unlock()
	return st
}

// Instance is the random identity of this server, which the host sees
// change when the NIC side restarts.
func (s *Server) Instance() uint64 { return s.instance }

// ServeConn runs the channel over one connection until it ends (the host
// closes it, a frame is refused, ctx is done or a newer session replaces
// it), and closes conn. It returns why the session ended (nil for a clean
// close by the host).
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	addr := conn.RemoteAddr().String()
	// The handshake is bounded by its own timeout; ctx ends it too.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	sc, err := serverHandshake(conn, s.chcfg, s.cfg.MaxMessage, s.cfg.WriteTimeout, handshakeTimeout(s.cfg.Channel))
	if err != nil {
		// Logged before counted, and the reason before the total: whoever
		// sees a count finds the line, whoever sees the total the reason.
		r := securechan.ReasonOf(err)
		s.log.Warn("remote: handshake refused", "peer", addr, "reason", r.String(), "err", err)
		s.refused[r].Add(1)
		s.handshakeFailures.Add(1)
		return &HandshakeError{Addr: addr, Err: err}
	}
	peer := sc.s.PeerKey()
	log := s.log.With("peer", addr, "host_key", peer.String()[:16])

	// The hello.
	typ, _, body, err := sc.readMsg(handshakeTimeout(s.cfg.Channel))
	var h hello
	if err == nil && typ != msgHello {
		err = fmt.Errorf("%w: %s before hello", ErrMalformed, msgName(typ))
	}
	if err == nil {
		err = decodeHello(body, &h)
	}
	if err != nil {
		s.refuseFrame(sc, log, err, &s.handshakeFailures)
		return &HandshakeError{Addr: addr, Err: err}
	}
	version := min(h.maxVersion, ProtocolVersion)
	if version < s.cfg.MinVersion || version < h.minVersion || h.minVersion > h.maxVersion {
		ve := &VersionError{Offered: h.maxVersion, Min: s.cfg.MinVersion, Max: ProtocolVersion}
		log.Warn("remote: protocol version refused", "offered_max", h.maxVersion, "offered_min", h.minVersion,
			"min", s.cfg.MinVersion, "max", ProtocolVersion)
		s.refused[securechan.DropVersion].Add(1)
		s.versionRefusals.Add(1)
		var e enc
		e.helloRefused(ve, ve)
		sc.writeMsgs(e.b)
		sc.close()
		return ve
	}

	ss := &serverSession{srv: s, c: sc, log: log, reqs: make(chan *request, 16), free: make(chan *request, 32), done: make(chan struct{}),
		open: map[uint32]*openBatch{}, results: map[uint32][]hal.OpResult{}, keepalive: time.Duration(h.keepaliveMs) * time.Millisecond}
	ss.ctx, ss.cancel = context.WithCancel(ctx)
	ss.credits.Store(int64(min(h.credit, 1<<20)))
	ss.maxCredit = int64(min(h.credit, 1<<20))

	// Take over from an older session of the host: it ends (and finishes
	// the request it is applying) before this one starts.
	s.mu.Lock()
	old := s.active
	s.active = ss
	ss.num = s.sessions
	s.sessions++
	s.mu.Unlock()
	if old != nil {
		s.superseded.Add(1)
		log.Info("remote: a newer session replaces the older one")
		old.stop()
		<-old.done
	}
	defer func() {
		s.mu.Lock()
		if s.active == ss {
			s.active = nil
		}
		s.mu.Unlock()
	}()

	ok := helloOK{version: version, instance: s.instance, session: ss.num, caps: s.nic.Capabilities(), ports: s.nic.Ports()}
	if _, has := s.nic.(hal.AtomicApplier); has {
		ok.opts |= optAtomic
	}
	if sa, has := s.nic.(hal.SealedAddresses); has {
		ok.opts |= optSealed
		ok.sealKey = sa.SealPublicKey()
	}
	if _, has := s.nic.(hal.TunnelTerminator); has {
		ok.opts |= optTunnel
	}
	if _, has := s.nic.(hal.AddressLearner); has {
		ok.opts |= optLearn
	}
	var e enc
	e.helloOK(&ok)
	if err := sc.writeMsgs(e.b); err != nil {
		ss.cancel()
		sc.abort()
		close(ss.done)
		return err
	}
	log.Info("remote: session established", "session", ss.num, "version", version)
	return ss.run()
}

// refuseFrame logs and counts a refused frame or message (by reason, then
// in total if total is not nil), tells the host (sealed, so it is
// authentic) and closes the channel: a host told of the refusal finds it
// logged and counted.
func (s *Server) refuseFrame(sc *secureConn, log *slog.Logger, err error, total *atomic.Uint64) {
	r := securechan.ReasonOf(err)
	if errors.Is(err, ErrMalformed) {
		r = securechan.DropMalformed
	}
	log.Warn("remote: frame refused; nothing it carried is applied", "reason", r.String(), "err", err)
	s.refused[r].Add(1)
	if total != nil {
		total.Add(1)
	}
	var e enc
	e.refused(r, err.Error())
	sc.writeMsgs(e.b)
	sc.close()
}

// PublishLearned sends address information to the host: securechan
// MsgAddressLearned messages (the source MAC and address a vport used; a
// NIC never reports a sealed frame's destination). It fails with
// ErrNotConnected when no host session is up: learned addresses are
// reported again as traffic goes on, not queued.
func (s *Server) PublishLearned(ms ...securechan.Message) error {
	s.mu.Lock()
	ss := s.active
	s.mu.Unlock()
	if ss == nil {
		return ErrNotConnected
	}
	var e enc
	if err := e.addressMsgs(msgLearned, 0, ms, securechan.MsgAddressLearned); err != nil {
		return err
	}
	if err := ss.c.writeMsgs(e.b); err != nil {
		return fmt.Errorf("%w: %w", ErrNotConnected, err)
	}
	return nil
}

func (s *Server) countPortDrop(p hal.PortID) {
	s.dropMu.Lock()
	s.portDrops[p]++
	s.dropMu.Unlock()
}

func (s *Server) portDrop(p hal.PortID) uint64 {
	s.dropMu.Lock()
	defer s.dropMu.Unlock()
	return s.portDrops[p]
}

type serverSession struct {
	srv       *Server
	c         *secureConn
	log       *slog.Logger
	num       uint64
	keepalive time.Duration

	ctx     context.Context // the session's: ends when it dies
	cancel  context.CancelFunc
	reqs    chan *request
	free    chan *request             // handled requests, their arrays reused
	results map[uint32][]hal.OpResult // handler only: results of batches in progress
	spare   []hal.OpResult            // handler only: a finished batch's results array, for the next
	done    chan struct{}

	open map[uint32]*openBatch // reader only: batches whose segments are coming

	credits   atomic.Int64
	maxCredit int64
	stopped   atomic.Bool
}

// stop ends the session from outside (a newer session replaces it).
func (ss *serverSession) stop() {
	ss.stopped.Store(true)
	ss.cancel()
	ss.c.abort()
}

// idle is how long the server waits for anything from the host before it
// declares the session dead: four keepalives, at least three seconds.
func (ss *serverSession) idle() time.Duration {
	return max(4*ss.keepalive, 3*time.Second)
}

func (ss *serverSession) run() error {
	defer close(ss.done)
	var hw, pw sync.WaitGroup
	hw.Add(1)
	pw.Add(1)
	go func() { defer hw.Done(); ss.handle() }()
	go func() { defer pw.Done(); ss.pump() }()
	if l, ok := ss.srv.nic.(hal.AddressLearner); ok {
		pw.Add(1)
		go func() { defer pw.Done(); ss.pumpLearned(l) }()
	}
	err := ss.read()
	var fe *frameError
	switch {
	case errors.As(err, &fe) || errors.Is(err, ErrMalformed):
		// Requests read before the refused frame were whole and
		// authentic: answer them, then say what was refused.
		close(ss.reqs)
		hw.Wait()
		ss.srv.refuseFrame(ss.c, ss.log, err, nil)
		ss.cancel()
		pw.Wait()
		return err
	case errors.Is(err, io.EOF):
		ss.log.Info("remote: host closed the session")
		err = nil
	case ss.stopped.Load():
		err = nil
	case ss.ctx.Err() != nil:
		ss.log.Info("remote: server stopping")
		err = nil
	default:
		ss.log.Warn("remote: session lost; the NIC keeps its rules", "err", err)
	}
	// Anything queued is dropped unapplied: the host will learn its
	// outcome is unknown and read the truth with a Dump.
	ss.cancel()
	close(ss.reqs)
	ss.c.abort()
	hw.Wait()
	pw.Wait()
	return err
}

// read decodes the host's messages. Pings and credits are answered here,
// so that a long Apply does not starve them; calls go to the handler in
// order.
func (ss *serverSession) read() error {
	var pong enc
	pong.end(pong.begin(msgPong, 0))
	for {
		typ, id, body, err := ss.c.readMsg(ss.idle())
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("host silent for %v: %w", ss.idle(), err)
			}
			return err
		}
		switch typ {
		case msgPing:
			if err := ss.c.writeMsgs(pong.b); err != nil {
				return err
			}
			continue
		case msgCredit:
			var r request
			if err := decodeRequest(typ, id, body, &r); err != nil {
				return err
			}
			if c := ss.credits.Add(int64(min(r.n, 1<<20))); c > ss.maxCredit {
				// More than the host said it could hold: keep to the bound.
				ss.credits.Store(ss.maxCredit)
			}
			continue
		case msgHello:
			return fmt.Errorf("%w: hello inside a session", ErrMalformed)
		}
		var r *request
		select {
		case r = <-ss.free:
		default:
			r = new(request)
		}
		if err := decodeRequest(typ, id, body, r); err != nil {
			return fmt.Errorf("%s: %w", msgName(typ), err)
		}
		if typ == msgApply {
			var err error
			if r, err = ss.segment(r); err != nil {
				return err
			}
			if r == nil {
				continue // an atomic batch waits for its last segment
			}
		}
		select {
		case ss.reqs <- r:
		case <-ss.ctx.Done():
			return ss.ctx.Err()
		}
	}
}

// maxOpenBatches bounds the batches whose segments are still coming: one
// per host goroutine applying at once is plenty.
const maxOpenBatches = 64

// segment checks that an Apply segment continues its batch (in order, same
// size and kind) and gathers an atomic batch's segments into one request,
// returned with its last segment.
func (ss *serverSession) segment(r *request) (*request, error) {
	b := ss.open[r.id]
	if r.start == 0 {
		if b != nil {
			return nil, fmt.Errorf("%w: apply %d started twice", ErrMalformed, r.id)
		}
		if len(ss.open) >= maxOpenBatches {
			return nil, fmt.Errorf("%w: more than %d batches in progress", ErrMalformed, maxOpenBatches)
		}
		b = &openBatch{total: r.total, atomic: r.atomic}
		if r.atomic && !r.last {
			b.acc = r
		}
		ss.open[r.id] = b
	} else if b == nil || r.start != b.next || r.total != b.total || r.atomic != b.atomic {
		return nil, fmt.Errorf("%w: apply %d: segment at %d out of sequence", ErrMalformed, r.id, r.start)
	} else if b.acc != nil {
		b.acc.ops = append(b.acc.ops, r.ops...)
		b.acc.pooled += r.pooled
		b.acc.last = r.last
	}
	b.next = r.start + len(r.ops)
	if r.last {
		delete(ss.open, r.id)
	}
	if !r.atomic {
		return r, nil
	}
	if !r.last {
		return nil, nil
	}
	if b.acc != nil {
		return b.acc, nil
	}
	return r, nil
}

type openBatch struct {
	total, next int
	atomic      bool
	acc         *request // atomic: the segments so far
}

// handle runs the host's calls in order, one at a time.
func (ss *serverSession) handle() {
	var e enc
	for r := range ss.reqs {
		if ss.ctx.Err() != nil {
			continue // dead session: drain without applying
		}
		e.b = e.b[:0]
		ss.srv.requests.Add(1)
		if !ss.call(r, &e) {
			return
		}
		if len(e.b) > 0 {
			if err := ss.c.writeMsgs(e.b); err != nil {
				ss.cancel()
			}
		}
		if cap(e.b) > 1<<20 {
			e.b = nil // do not keep a dump's buffer for the session's life
		}
		if r.typ == msgApply {
			releaseActions(r)
			select {
			case ss.free <- r:
			default:
			}
		}
	}
}

// keepActions is how many decoded actions a handled request may keep
// referring to while it waits for reuse: a batch of rules that share
// action lists (the vswitch interns them) decodes them into one small
// pool, which stays; a larger pool is let go.
const keepActions = 4096

// releaseActions drops r's references to its rules' actions once the
// pools decoded into its ops array since the last release (counted over
// every reuse, the array's whole capacity included) hold more than
// keepActions, so that a request kept for its array does not keep many
// actions alive. The array itself is reused (decodeRequest overwrites what
// it decodes); clearing it whole after every batch would cost about as
// much as decoding it.
func releaseActions(r *request) {
	if r.pooled <= keepActions {
		return
	}
	ops := r.ops[:cap(r.ops)]
	for i := range ops {
		ops[i].Rule.Actions = nil
	}
	r.pooled = 0
}

// call runs one request, leaving its reply in e. It returns false when the
// session died in the middle.
func (ss *serverSession) call(r *request, e *enc) bool {
	nic, ctx := ss.srv.nic, ss.ctx
	switch r.typ {
	case msgValidate:
		e.end(e.reply(r.id, nic.Validate(&r.rule)))
	case msgApply:
		return ss.apply(r, e)
	case msgDump:
		return ss.dump(r, e)
	case msgActivate:
		e.end(e.reply(r.id, nic.Activate(ctx, r.scope, r.gen)))
	case msgActiveGen:
		g, err := nic.ActiveGeneration(r.scope)
		st := e.reply(r.id, err)
		if err == nil {
			e.uv(uint64(g))
		}
		e.end(st)
	case msgInject:
		e.end(e.reply(r.id, nic.Inject(ctx, r.port, r.frames)))
	case msgRuleCounters:
		out := make([]hal.Counters, len(r.ids))
		err := nic.RuleCounters(ctx, r.ids, out)
		st := e.reply(r.id, err)
		if err == nil {
			e.uv(uint64(len(out)))
			for _, c := range out {
				e.counters(c)
			}
		}
		e.end(st)
	case msgPortCounters:
		pc, err := nic.PortCounters(ctx, r.port)
		pc.Drops += ss.srv.portDrop(r.port)
		st := e.reply(r.id, err)
		if err == nil {
			e.portCounters(&pc)
		}
		e.end(st)
	case msgStats:
		s, err := nic.Stats(ctx)
		s.Drops[hal.ReasonQueueFull] += ss.srv.exceptionsDropped.Load()
		st := e.reply(r.id, err)
		if err == nil {
			e.stats(&s)
		}
		e.end(st)
	case msgSealKey:
		var err error
		sa, ok := nic.(hal.SealedAddresses)
		switch {
		case !ok:
			err = hal.Unsupported("remote", "sealed addresses", "the served NIC has no crypto")
		case r.key.Type == securechan.MsgKeyRegister:
			err = sa.RegisterSealKey(ctx, hal.PortID(r.key.Vport), r.key.KeyID, r.key.Key)
		default:
			err = sa.RevokeSealKey(ctx, hal.PortID(r.key.Vport), r.key.KeyID)
		}
		e.end(e.reply(r.id, err))
	case msgAddresses:
		st := e.reply(r.id, nil)
		e.uv(uint64(len(r.addrs)))
		for i := range r.addrs {
			status := securechan.AckUnknown
			if h := ss.srv.cfg.Addresses; h != nil {
				status = h(ctx, &r.addrs[i])
			}
			e.u8(uint8(status))
		}
		e.end(st)
	case msgTunnelEP:
		var err error
		if tt, ok := nic.(hal.TunnelTerminator); ok {
			err = tt.SetTunnelEndpoint(ctx, r.ep)
		} else {
			err = hal.Unsupported("remote", "tunnel endpoint", "the served NIC does not filter tunnels by endpoint")
		}
		e.end(e.reply(r.id, err))
	case msgSealRoutes:
		e.end(e.reply(r.id, serveSealRoutes(ctx, nic, r)))
	}
	return true
}

func (ss *serverSession) apply(r *request, e *enc) bool {
	nic, ctx := ss.srv.nic, ss.ctx
	if r.atomic {
		res := make([]hal.OpResult, len(r.ops))
		aa, ok := nic.(hal.AtomicApplier)
		var err error
		if ok {
			err = aa.ApplyAtomic(ctx, r.ops, res)
		} else {
			err = hal.Unsupported("remote", "apply atomic", "the served NIC cannot apply a batch all or nothing")
		}
		fillResults(res, err)
		e.applyResult(r.id, 0, true, res)
		return true
	}
	// The batch's results, kept until its last segment.
	all := ss.results[r.id]
	if r.start == 0 {
		if cap(ss.spare) >= r.total {
			all, ss.spare = ss.spare[:r.total], nil
		} else {
			all = make([]hal.OpResult, r.total)
		}
		clear(all)
		ss.results[r.id] = all
	}
	if r.last {
		delete(ss.results, r.id)
		defer func() { ss.spare = all[:0] }() // once this segment's results are out
	}
	chunk := ss.srv.cfg.ApplyChunk
	for at := 0; at < len(r.ops) || (at == 0 && r.last); at += chunk {
		end := min(at+chunk, len(r.ops))
		if ctx.Err() != nil {
			return false // the host is gone: apply no more of its batch
		}
		res := all[r.start+at : r.start+end]
		err := nic.Apply(ctx, r.ops[at:end], res)
		fillResults(res, err)
		done := r.last && end == len(r.ops)
		e.applyResult(r.id, r.start+at, done, res)
		if done {
			return true // the handler writes the last chunk
		}
		if err := ss.c.writeMsgs(e.b); err != nil {
			ss.cancel()
			return false
		}
		e.b = e.b[:0]
	}
	return true
}

// fillResults makes a whole-call failure every operation's result, as the
// vswitch reads it: an error that is not a *BatchError says nothing landed.
func fillResults(res []hal.OpResult, err error) {
	var be *hal.BatchError
	if err == nil || errors.As(err, &be) {
		return
	}
	for i := range res {
		if res[i].Err == nil {
			res[i].Err = err
		}
	}
}

// dumpChunk is how much of a dump goes in one message: large enough to
// amortise the framing, small enough that the host holds little at once.
const dumpChunk = 32 << 10

func (ss *serverSession) dump(r *request, e *enc) bool {
	var ce enc
	var st, countAt, n int
	begin := func() {
		ce.b = ce.b[:0]
		st = ce.begin(msgDumpChunk, r.id)
		countAt = len(ce.b)
		ce.u32(0)
		n = 0
	}
	flush := func() error {
		binary.BigEndian.PutUint32(ce.b[countAt:], uint32(n))
		ce.end(st)
		err := ss.c.writeMsgs(ce.b)
		begin()
		return err
	}
	begin()
	var werr error
	err := ss.srv.nic.Dump(ss.ctx, func(ri *hal.RuleInfo) error {
		ce.ruleInfo(ri)
		n++
		if len(ce.b) >= dumpChunk {
			werr = flush()
		}
		return werr
	})
	if werr == nil && n > 0 {
		werr = flush()
	}
	if werr != nil {
		ss.cancel()
		return false
	}
	e.end(e.reply(r.id, err))
	return true
}

// pump moves exceptions from the NIC to the host while the host has
// credit, and drops (counting hal.ReasonQueueFull) when it has none: a slow
// host costs exceptions, never the NIC's datapath, and never memory here.
func (ss *serverSession) pump() {
	srv := ss.srv
	batch := make([]hal.Exception, srv.cfg.ExceptionBatch)
	for i := range batch {
		batch[i].Buf = make([]byte, srv.excBuf)
	}
	var e enc
	for {
		n, err := srv.nic.ReadExceptions(ss.ctx, batch)
		if err != nil {
			if ss.ctx.Err() != nil || errors.Is(err, hal.ErrClosed) {
				return
			}
			ss.log.Warn("remote: reading exceptions", "err", err)
			select {
			case <-ss.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		e.b = e.b[:0]
		st := e.begin(msgExceptions, 0)
		countAt := len(e.b)
		e.u32(0)
		sent := 0
		for i := range n {
			if ss.credits.Add(-1) < 0 {
				ss.credits.Add(1)
				srv.exceptionsDropped.Add(1)
				srv.countPortDrop(batch[i].InPort)
				continue
			}
			e.exception(&batch[i])
			sent++
		}
		if sent == 0 {
			continue
		}
		binary.BigEndian.PutUint32(e.b[countAt:], uint32(sent))
		e.end(st)
		if err := ss.c.writeMsgs(e.b); err != nil {
			ss.cancel()
			return
		}
		srv.exceptionsSent.Add(uint64(sent))
	}
}

// pumpLearned sends the served NIC's learned addresses to the host while
// the session lives. Between sessions they wait in the NIC's own bounded
// queue (and a NIC reports an address again on its later frames).
func (ss *serverSession) pumpLearned(l hal.AddressLearner) {
	batch := make([]hal.LearnedAddress, 64)
	var e enc
	for {
		n, err := l.ReadLearned(ss.ctx, batch)
		if err != nil {
			if ss.ctx.Err() != nil || errors.Is(err, hal.ErrClosed) {
				return
			}
			ss.log.Warn("remote: reading learned addresses", "err", err)
			select {
			case <-ss.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if n == 0 {
			continue
		}
		e.b = e.b[:0]
		e.learnedAddrs(batch[:n])
		if err := ss.c.writeMsgs(e.b); err != nil {
			ss.cancel()
			return
		}
		ss.srv.learnedSent.Add(uint64(n))
	}
}
