package remote

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/securechan"
)

// DriverName is the name the driver reports in Capabilities and errors.
const DriverName = "remote"

// Config configures the host side.
type Config struct {
	// Address is where the NIC side listens: "unix:/run/nicd.sock",
	// "tcp:127.0.0.1:7470" or "vsock:CID:PORT". Dial, when set, is used
	// instead (tests, proxies).
	Address string
	Dial    func(ctx context.Context) (net.Conn, error)
	// PrivateKey is the host's static key; ServerKey the NIC side's,
	// pinned: a server that cannot prove it is refused.
	PrivateKey securechan.PrivateKey
	ServerKey  securechan.PublicKey
	// KeyFile and ServerKeyFile, when set, are read instead: the host's
	// private key file and the NIC side's public key file (see keys.go;
	// nicd keygen writes both kinds).
	KeyFile, ServerKeyFile string
	// Logger receives reconnects and refusals; nil discards.
	Logger *slog.Logger
	// OnReconnect is called, on a goroutine of its own, every time the
	// channel comes back after it was down: the NIC side may have lost or
	// kept its rules, so the caller reconciles (vswitch.Switch.Reconcile
	// compares the NIC's Dump with what it wants, by cookie). It may call
	// the NIC.
	OnReconnect func(Reconnect)
	// ReconnectMin and ReconnectMax bound the backoff between attempts
	// (default 20ms and 2s; it doubles, with jitter).
	ReconnectMin, ReconnectMax time.Duration
	// KeepAlive is how often the host pings the NIC side (default 1s); a
	// channel silent for four of them (at least 3s) is declared dead.
	KeepAlive time.Duration
	// ExceptionQueue is how many exceptions the host buffers for
	// ReadExceptions (default 1024). The NIC side sends no more than there
	// is room for, and drops the rest, counted as hal.ReasonQueueFull.
	ExceptionQueue int
	// MaxMessage bounds one RPC message (DefaultMaxMessage).
	MaxMessage int
	// WriteTimeout bounds one write to the NIC side (default 10s).
	WriteTimeout time.Duration
	// Channel tunes the secure channel.
	Channel *ChannelTuning
	// OnLearned receives the address information the NIC side reports
	// (securechan MsgAddressLearned messages, Server.PublishLearned), on
	// the channel's reader: it must return quickly and not call the NIC.
	OnLearned func(securechan.Message)
	// LearnedQueue is how many of the served NIC's learned addresses the
	// host buffers for ReadLearned (hal.AddressLearner; default 1024);
	// beyond it they are dropped and counted (LearnedDropped).
	LearnedQueue int

	// versions offered, for tests of the downgrade refusal (unset:
	// ProtocolVersion only).
	maxVersion, minVersion uint8
	versionsSet            bool
}

// Reconnect says why and how the channel came back.
type Reconnect struct {
	Cause    error         // why it went down
	Down     time.Duration // how long it was down
	Attempts int           // connection attempts it took
	// Restarted is true when the NIC side is another server instance than
	// before (the NIC side restarted: its rules may be gone).
	Restarted bool
}

// Client is the host side: a hal.NIC whose calls run on the NIC side.
// Open returns it wrapped in a type that has exactly the optional
// interfaces (hal.AtomicApplier, hal.SealedAddresses, hal.TunnelTerminator)
// the served NIC has; AsClient gets it back.
type Client struct {
	cfg   Config
	chcfg *securechan.Config
	log   *slog.Logger
	id    uint64

	mu       sync.Mutex // guards the fields below
	cur      *clientSession
	caps     hal.Capabilities
	ports    []hal.Port
	opts     uint8
	sealKey  [32]byte
	instance uint64
	closed   bool

	nextID     atomic.Uint32
	reconnects atomic.Uint64

	xq excQueue
	lq learnedQueue

	ctx    context.Context // the client's lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ hal.NIC = (*Client)(nil)

// Open connects to the NIC side, authenticates it and returns the remote
// NIC. It makes one attempt; once open, the driver reconnects by itself
// (with backoff) whenever the channel goes down, and reports each
// reconnect through Config.OnReconnect.
func Open(ctx context.Context, cfg Config) (hal.NIC, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	s, h, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.install(s, h)
	c.wg.Add(1)
	go c.supervise(s)
	return c.wrap(), nil
}

// AsClient returns the Client behind a NIC that Open returned.
func AsClient(n hal.NIC) (*Client, bool) {
	type clienter interface{ client() *Client }
	if x, ok := n.(clienter); ok {
		return x.client(), true
	}
	return nil, false
}

func (c *Client) client() *Client { return c }

func newClient(cfg Config) (*Client, error) {
	if cfg.KeyFile != "" {
		k, err := LoadPrivateKey(cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.PrivateKey = k
	}
	if cfg.ServerKeyFile != "" {
		ks, err := LoadPublicKeys(cfg.ServerKeyFile)
		if err != nil {
			return nil, err
		}
		if len(ks) != 1 {
			return nil, fmt.Errorf("%w: %s: want exactly one public key (the NIC side's), got %d", ErrKeyFile, cfg.ServerKeyFile, len(ks))
		}
		cfg.ServerKey = ks[0]
	}
	if cfg.Dial == nil {
		if cfg.Address == "" {
			return nil, errors.New("remote: no address to dial")
		}
		addr := cfg.Address
		cfg.Dial = func(ctx context.Context) (net.Conn, error) { return DialAddress(ctx, addr) }
	}
	if cfg.ServerKey == (securechan.PublicKey{}) {
		return nil, errors.New("remote: no pinned server key")
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 20 * time.Millisecond
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 2 * time.Second
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = time.Second
	}
	if cfg.ExceptionQueue <= 0 {
		cfg.ExceptionQueue = 1024
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if !cfg.versionsSet {
		cfg.maxVersion, cfg.minVersion = ProtocolVersion, ProtocolVersion
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	if _, err := crand.Read(b[:]); err != nil {
		return nil, err
	}
	c := &Client{
		cfg: cfg, log: log, id: binary.BigEndian.Uint64(b[:]),
		chcfg: channelConfig(cfg.PrivateKey, []securechan.PublicKey{cfg.ServerKey}, cfg.Channel),
	}
	c.xq.init(cfg.ExceptionQueue)
	c.lq.max, c.lq.notify = cfg.LearnedQueue, make(chan struct{}, 1)
	if c.lq.max <= 0 {
		c.lq.max = 1024
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// DialAddress dials "unix:PATH", "tcp:HOST:PORT" or "vsock:CID:PORT".
func DialAddress(ctx context.Context, addr string) (net.Conn, error) {
	network, where, err := splitAddress(addr)
	if err != nil {
		return nil, err
	}
	if network == "vsock" {
		return dialVsock(ctx, where)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, where)
}

// Listen listens on "unix:PATH", "tcp:HOST:PORT" or "vsock:CID:PORT" (CID
// is ignored: a listener takes connections to any of its CIDs).
func Listen(addr string) (net.Listener, error) {
	network, where, err := splitAddress(addr)
	if err != nil {
		return nil, err
	}
	if network == "vsock" {
		return listenVsock(where)
	}
	return net.Listen(network, where)
}

func splitAddress(addr string) (network, where string, err error) {
	for _, n := range []string{"unix", "tcp", "vsock"} {
		if len(addr) > len(n)+1 && addr[:len(n)+1] == n+":" {
			return n, addr[len(n)+1:], nil
		}
	}
	return "", "", fmt.Errorf("remote: address %q: want unix:PATH, tcp:HOST:PORT or vsock:CID:PORT", addr)
}

func (c *Client) where() string {
	if c.cfg.Address != "" {
		return c.cfg.Address
	}
	return "a custom dialer"
}

// connect dials, runs the handshake and the hello.
func (c *Client) connect(ctx context.Context) (*clientSession, *helloOK, error) {
	hto := handshakeTimeout(c.cfg.Channel)
	dctx, cancel := context.WithTimeout(ctx, hto)
	defer cancel()
	raw, err := c.cfg.Dial(dctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: dial %s: %w", ErrNotConnected, c.where(), err)
	}
	stop := context.AfterFunc(dctx, func() { raw.Close() })
	defer stop()
	sc, err := clientHandshake(raw, c.chcfg, c.cfg.ServerKey, c.cfg.MaxMessage, c.cfg.WriteTimeout, hto)
	if err != nil {
		c.log.Warn("remote: handshake failed", "addr", c.where(), "reason", securechan.ReasonOf(err).String(), "err", err)
		return nil, nil, &HandshakeError{Addr: c.where(), Err: err}
	}
	var e enc
	e.hello(&hello{maxVersion: c.cfg.maxVersion, minVersion: c.cfg.minVersion, clientID: c.id,
		credit: uint64(c.xq.room()), keepaliveMs: uint64(c.cfg.KeepAlive / time.Millisecond)})
	if err := sc.writeMsgs(e.b); err != nil {
		sc.abort()
		return nil, nil, &HandshakeError{Addr: c.where(), Err: err}
	}
	typ, _, body, err := sc.readMsg(hto)
	if err != nil {
		sc.abort()
		return nil, nil, &HandshakeError{Addr: c.where(), Err: err}
	}
	switch typ {
	case msgHelloOK:
	case msgHelloRefused:
		sc.abort()
		lo, hi, perr, derr := decodeHelloRefused(body)
		if derr != nil {
			return nil, nil, &HandshakeError{Addr: c.where(), Err: derr}
		}
		ve := &VersionError{Offered: c.cfg.maxVersion, Min: lo, Max: hi}
		c.log.Warn("remote: the NIC side refused our protocol version", "err", perr)
		return nil, nil, ve
	case msgRefused:
		sc.abort()
		re, derr := decodeRefused(body)
		if derr != nil {
			return nil, nil, &HandshakeError{Addr: c.where(), Err: derr}
		}
		return nil, nil, &HandshakeError{Addr: c.where(), Err: re}
	default:
		sc.abort()
		return nil, nil, &HandshakeError{Addr: c.where(), Err: fmt.Errorf("%w: %s instead of hello", ErrMalformed, msgName(typ))}
	}
	h := new(helloOK)
	if err := decodeHelloOK(body, h); err != nil {
		sc.abort()
		return nil, nil, &HandshakeError{Addr: c.where(), Err: err}
	}
	s := &clientSession{cl: c, c: sc, pending: map[uint32]*call{}, dead: make(chan struct{})}
	return s, h, nil
}

// install makes s the current session and starts its goroutines.
func (c *Client) install(s *clientSession, h *helloOK) {
	c.mu.Lock()
	c.cur = s
	c.caps, c.ports, c.opts, c.sealKey, c.instance = h.caps, h.ports, h.opts, h.sealKey, h.instance
	c.mu.Unlock()
	c.wg.Add(2)
	go func() { defer c.wg.Done(); s.read() }()
	go func() { defer c.wg.Done(); s.keepalive() }()
}

// supervise waits for the session to die and reconnects, with backoff,
// until the client is closed.
func (c *Client) supervise(s *clientSession) {
	defer c.wg.Done()
	for {
		select {
		case <-s.dead:
		case <-c.ctx.Done():
			return
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return // the session died of Close
		}
		if c.cur == s {
			c.cur = nil
		}
		oldInstance := c.instance
		c.mu.Unlock()
		cause, downAt := s.err, time.Now()
		c.log.Warn("remote: channel down; reconnecting", "addr", c.where(), "err", cause)
		backoff := c.cfg.ReconnectMin
		for attempt := 1; ; attempt++ {
			t := time.NewTimer(jitter(backoff))
			select {
			case <-c.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			ns, h, err := c.connect(c.ctx)
			if err != nil {
				c.log.Debug("remote: reconnect attempt failed", "attempt", attempt, "err", err)
				backoff = min(2*backoff, c.cfg.ReconnectMax)
				continue
			}
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				ns.c.close()
				return
			}
			c.mu.Unlock()
			c.install(ns, h)
			c.reconnects.Add(1)
			ev := Reconnect{Cause: cause, Down: time.Since(downAt), Attempts: attempt, Restarted: h.instance != oldInstance}
			c.log.Info("remote: channel back", "addr", c.where(), "down", ev.Down, "attempts", attempt, "nic_side_restarted", ev.Restarted)
			if f := c.cfg.OnReconnect; f != nil {
				c.wg.Add(1)
				go func() { defer c.wg.Done(); f(ev) }()
			}
			s = ns
			break
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d*3/4 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Connected reports whether the channel is up now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

// Reconnects is how many times the channel came back after going down.
func (c *Client) Reconnects() uint64 { return c.reconnects.Load() }

// Instance is the NIC-side server's identity as of the last hello.
func (c *Client) Instance() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.instance
}

// Disconnect cuts the channel as a failure would (the driver then
// reconnects by itself): for operators and fault tests.
func (c *Client) Disconnect() {
	c.mu.Lock()
	s := c.cur
	c.mu.Unlock()
	if s != nil {
		s.c.abort()
	}
}

func (c *Client) session() (*clientSession, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, hal.ErrClosed
	}
	if c.cur == nil {
		return nil, ErrNotConnected
	}
	return c.cur, nil
}

// Capabilities are the served NIC's, as of the last hello, with Driver
// "remote" and the served driver named in Device.
func (c *Client) Capabilities() hal.Capabilities {
	c.mu.Lock()
	defer c.mu.Unlock()
	caps := c.caps
	caps.Device = fmt.Sprintf("%s (%s) via %s", c.caps.Driver, c.caps.Device, c.where())
	caps.Driver = DriverName
	caps.Notes = append(append([]string(nil), c.caps.Notes...),
		fmt.Sprintf("served over securechan by a NIC-side process at %s; driver %s", c.where(), c.caps.Driver))
	return caps
}

// Ports are the served NIC's.
func (c *Client) Ports() []hal.Port {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]hal.Port(nil), c.ports...)
}

// Close ends the channel cleanly and releases the driver. The NIC side
// keeps its rules and keeps forwarding: closing the host's driver is not
// closing the NIC.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return hal.ErrClosed
	}
	c.closed = true
	s := c.cur
	c.cur = nil
	c.mu.Unlock()
	if s != nil {
		s.c.close()
	}
	c.cancel()
	c.xq.close()
	c.wg.Wait()
	return nil
}

// call is one request waiting for its reply.
type call struct {
	typ uint8

	mu       sync.Mutex // guards the fields below
	finished bool
	err      error  // the call's failure (channel death, refusal)
	body     []byte // the reply's body (a copy)
	results  []hal.OpResult
	upTo     int // results[:upTo] came back
	done     chan struct{}

	dumpCh  chan []hal.RuleInfo
	abandon chan struct{}
}

func (k *call) finish(body []byte, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.finished {
		return
	}
	k.finished, k.body, k.err = true, body, err
	close(k.done)
}

var encPool = sync.Pool{New: func() any { return new(enc) }}

// putEnc keeps buffers up to 16 MiB (a batch of some 200k rules) for the
// next call; a larger one goes to the collector.
func putEnc(e *enc) {
	if cap(e.b) <= 16<<20 {
		e.b = e.b[:0]
		encPool.Put(e)
	}
}

// start registers a call and sends it. The returned error means nothing
// was sent.
func (c *Client) start(typ uint8, k *call, encode func(e *enc, id uint32) error) (*clientSession, uint32, error) {
	s, err := c.session()
	if err != nil {
		return nil, 0, err
	}
	id := c.nextID.Add(1)
	if id == 0 {
		id = c.nextID.Add(1)
	}
	k.typ, k.done = typ, make(chan struct{})
	e := encPool.Get().(*enc)
	defer putEnc(e)
	if err := encode(e, id); err != nil {
		return nil, 0, err
	}
	if len(e.b) > c.cfg.MaxMessage {
		return nil, 0, fmt.Errorf("%w: %s of %d bytes, limit %d", ErrTooLarge, msgName(typ), len(e.b), c.cfg.MaxMessage)
	}
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return nil, 0, ErrNotConnected
	}
	s.pending[id] = k
	s.mu.Unlock()
	if err := s.c.writeMsgs(e.b); err != nil {
		// Part of it may be out: the session is dead and the reader fails
		// the call (unknown outcome) as it fails every pending one.
		s.c.abort()
	}
	return s, id, nil
}

// wait waits for k; when ctx ends first the call is abandoned and its
// outcome is unknown.
func (c *Client) wait(ctx context.Context, s *clientSession, id uint32, k *call) error {
	select {
	case <-k.done:
		return k.err
	case <-ctx.Done():
	}
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
	k.finish(nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, ctx.Err()))
	if k.abandon != nil {
		close(k.abandon)
	}
	<-k.done
	return k.err
}

// simple sends a request whose reply is an error and a payload, decoded by
// payload (which may be nil).
func (c *Client) simple(ctx context.Context, op string, typ uint8, encode func(e *enc, id uint32) error, payload func(d *dec)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k := &call{}
	s, id, err := c.start(typ, k, encode)
	if err != nil {
		return c.opError(op, err)
	}
	if err := c.wait(ctx, s, id, k); err != nil {
		return c.opError(op, err)
	}
	d := dec{b: k.body}
	rerr := d.error()
	if rerr == nil && payload != nil {
		payload(&d)
	}
	if derr := d.done(); derr != nil {
		// An authentic but malformed reply: the peer is broken.
		s.die(fmt.Errorf("%s reply: %w", op, derr))
		return c.opError(op, fmt.Errorf("%w: %w", ErrUnknownOutcome, derr))
	}
	return rerr
}

// opError wraps a failure of the channel (not of the NIC) as the hal's
// device error.
func (c *Client) opError(op string, err error) error {
	if errors.Is(err, hal.ErrClosed) && !errors.Is(err, ErrNotConnected) {
		return err
	}
	return &hal.OpError{Driver: DriverName, Op: op, Err: err}
}

// Validate asks the served NIC.
func (c *Client) Validate(r *hal.Rule) error {
	return c.simple(context.Background(), "validate", msgValidate, func(e *enc, id uint32) error {
		e.validateReq(id, r)
		return nil
	}, nil)
}

// Apply sends the batch in one message; the served NIC applies it and the
// results come back per chunk (ServerConfig.ApplyChunk). Operations whose
// result never came back carry an error wrapping ErrUnknownOutcome; when
// the channel was down, every result wraps ErrNotConnected (nothing was
// sent); when the NIC side refused the frame, a *RefusedError (nothing of
// it was applied).
func (c *Client) Apply(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	return c.apply(ctx, ops, results, false)
}

func (c *Client) applyAtomic(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	return c.apply(ctx, ops, results, true)
}

// testHookApplyResult, when set, sees every chunk of results as it arrives.
var testHookApplyResult func(start, n int)

func (c *Client) apply(ctx context.Context, ops []hal.Op, results []hal.OpResult, atomicBatch bool) error {
	c.mu.Lock()
	caps := hal.Capabilities{Driver: DriverName, MaxBatch: c.caps.MaxBatch}
	closed := c.closed
	c.mu.Unlock()
	// The hal's preconditions, here, so that a batch the served NIC would
	// refuse whole does not cross the channel.
	if err := hal.CheckApply(ctx, &caps, closed, ops, results); err != nil {
		return err
	}
	res := results[:len(ops)]
	clear(res)
	if len(ops) == 0 {
		return nil
	}
	op := "apply"
	if atomicBatch {
		op = "apply atomic"
	}
	fail := func(err error) error {
		err = c.opError(op, err)
		for i := range res {
			if res[i].Err == nil {
				res[i].Err = err
			}
		}
		return hal.Summarize(res)
	}
	k := &call{results: res}
	first := min(len(ops), segmentSize(0))
	s, id, err := c.start(msgApply, k, func(e *enc, id uint32) error {
		e.b = slices.Grow(e.b, 64*first) // an exact-match rule takes about 50 bytes
		e.applyReq(id, atomicBatch, first == len(ops), len(ops), 0, ops[:first])
		return nil
	})
	if err != nil {
		return fail(err)
	}
	if first < len(ops) {
		// The other segments, while the NIC side works on the first.
		e := encPool.Get().(*enc)
		for at, size := first, first; at < len(ops); {
			size = segmentSize(size)
			end := min(at+size, len(ops))
			e.b = e.b[:0]
			e.applyReq(id, atomicBatch, end == len(ops), len(ops), at, ops[at:end])
			if err := s.c.writeMsgs(e.b); err != nil {
				s.c.abort() // the reader fails the call: unknown outcome
				break
			}
			at = end
		}
		putEnc(e)
	}
	if err := c.wait(ctx, s, id, k); err != nil {
		// k.upTo no longer moves: the call is out of pending.
		k.mu.Lock()
		up := k.upTo
		k.mu.Unlock()
		werr := c.opError(op, err)
		for i := up; i < len(res); i++ {
			res[i].Err = werr
		}
	}
	return hal.Summarize(res)
}

// Dump streams the served NIC's rules; fn runs on the caller's goroutine.
// The channel holds a few chunks for it and then waits: a slow fn delays
// the replies and exceptions behind the dump (the NIC side, whose Dump
// also holds its table, waits too), as it would hold a local NIC.
func (c *Client) Dump(ctx context.Context, fn func(*hal.RuleInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k := &call{dumpCh: make(chan []hal.RuleInfo, 4), abandon: make(chan struct{})}
	s, id, err := c.start(msgDump, k, func(e *enc, id uint32) error {
		e.emptyReq(msgDump, id)
		return nil
	})
	if err != nil {
		return c.opError("dump", err)
	}
	var ferr error
	consume := func(chunk []hal.RuleInfo) {
		for i := range chunk {
			if ferr != nil {
				return
			}
			ferr = fn(&chunk[i])
		}
	}
	abandon := func(err error) error {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
		k.finish(nil, err)
		close(k.abandon)
		return err
	}
	for {
		select {
		case chunk := <-k.dumpCh:
			consume(chunk)
			if ferr != nil {
				return abandon(ferr)
			}
			continue
		case <-k.done:
		case <-ctx.Done():
			return c.opError("dump", abandon(fmt.Errorf("%w: %w", ErrUnknownOutcome, ctx.Err())))
		}
		break
	}
	// Chunks are queued before the reply that ends the dump.
	for {
		select {
		case chunk := <-k.dumpCh:
			consume(chunk)
			if ferr != nil {
				return ferr
			}
			continue
		default:
		}
		break
	}
	if k.err != nil {
		return c.opError("dump", k.err)
	}
	d := dec{b: k.body}
	err = d.error()
	if derr := d.done(); derr != nil {
		return c.opError("dump", derr)
	}
	return err
}

// Activate switches a scope's generation on the served NIC.
func (c *Client) Activate(ctx context.Context, scope hal.Scope, gen hal.Generation) error {
	return c.simple(ctx, "activate", msgActivate, func(e *enc, id uint32) error {
		e.activateReq(id, scope, gen)
		return nil
	}, nil)
}

// ActiveGeneration asks the served NIC.
func (c *Client) ActiveGeneration(scope hal.Scope) (hal.Generation, error) {
	var g hal.Generation
	err := c.simple(context.Background(), "active generation", msgActiveGen, func(e *enc, id uint32) error {
		e.scopeReq(id, scope)
		return nil
	}, func(d *dec) { g = hal.Generation(d.u32v()) })
	return g, err
}

// Inject sends frames out of a port of the served NIC.
func (c *Client) Inject(ctx context.Context, port hal.PortID, frames [][]byte) error {
	return c.simple(ctx, "inject", msgInject, func(e *enc, id uint32) error {
		e.injectReq(id, port, frames)
		return nil
	}, nil)
}

// RuleCounters reads rule counters from the served NIC.
func (c *Client) RuleCounters(ctx context.Context, ids []hal.RuleID, out []hal.Counters) error {
	if len(out) < len(ids) {
		return fmt.Errorf("remote: rule counters: %d outputs for %d ids", len(out), len(ids))
	}
	return c.simple(ctx, "rule counters", msgRuleCounters, func(e *enc, id uint32) error {
		e.ruleCountersReq(id, ids)
		return nil
	}, func(d *dec) {
		if n := d.count(2); n != len(ids) {
			d.fail()
			return
		}
		for i := range ids {
			out[i] = d.counters()
		}
	})
}

// PortCounters reads a port's counters; Drops include the exceptions the
// NIC side dropped for want of room on the host.
func (c *Client) PortCounters(ctx context.Context, port hal.PortID) (hal.PortCounters, error) {
	var pc hal.PortCounters
	err := c.simple(ctx, "port counters", msgPortCounters, func(e *enc, id uint32) error {
		e.portReq(id, port)
		return nil
	}, func(d *dec) { d.portCounters(&pc) })
	return pc, err
}

// Stats reads the served NIC's statistics; Drops[hal.ReasonQueueFull]
// include the exceptions dropped because the host had no room.
func (c *Client) Stats(ctx context.Context) (hal.Stats, error) {
	var st hal.Stats
	err := c.simple(ctx, "stats", msgStats, func(e *enc, id uint32) error {
		e.emptyReq(msgStats, id)
		return nil
	}, func(d *dec) { d.stats(&st) })
	if err == nil {
		st.Drops[hal.ReasonQueueFull] += c.xq.droppedCount()
	}
	return st, err
}

func (c *Client) sealPublicKey() [32]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sealKey
}

func (c *Client) sealKeyMsg(ctx context.Context, op string, m *securechan.Message) error {
	return c.simple(ctx, op, msgSealKey, func(e *enc, id uint32) error {
		return e.sealKeyReq(id, m)
	}, nil)
}

func (c *Client) registerSealKey(ctx context.Context, port hal.PortID, keyID uint8, vmPublic [32]byte) error {
	return c.sealKeyMsg(ctx, "register seal key", &securechan.Message{Type: securechan.MsgKeyRegister,
		Vport: uint32(port), KeyID: keyID, Key: securechan.PublicKey(vmPublic)})
}

func (c *Client) revokeSealKey(ctx context.Context, port hal.PortID, keyID uint8) error {
	return c.sealKeyMsg(ctx, "revoke seal key", &securechan.Message{Type: securechan.MsgKeyRevoke,
		Vport: uint32(port), KeyID: keyID})
}

// SendAddresses sends address information to the NIC side in one message:
// securechan MsgMappingAdd and MsgMappingRemove messages, handled in order
// by ServerConfig.Addresses. It returns one status per message
// (securechan.AckUnknown from a NIC side that keeps no mappings).
func (c *Client) SendAddresses(ctx context.Context, ms []securechan.Message) ([]securechan.AckStatus, error) {
	var out []securechan.AckStatus
	err := c.simple(ctx, "send addresses", msgAddresses, func(e *enc, id uint32) error {
		return e.addressMsgs(msgAddresses, id, ms, securechan.MsgMappingAdd, securechan.MsgMappingRemove)
	}, func(d *dec) {
		if n := d.count(1); n != len(ms) {
			d.fail()
			return
		}
		for range ms {
			out = append(out, securechan.AckStatus(d.u8()))
		}
	})
	return out, err
}

func (c *Client) setTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	return c.simple(ctx, "set tunnel endpoint", msgTunnelEP, func(e *enc, id uint32) error {
		e.tunnelReq(id, &ep)
		return nil
	}, nil)
}

// ReadExceptions returns exceptions the NIC side sent. It blocks until one
// is there, ctx is done or the driver is closed; while the channel is down
// it simply waits.
func (c *Client) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	for {
		if n := c.xq.take(batch); n > 0 || len(batch) == 0 {
			c.returnCredit(n)
			return n, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-c.xq.closed:
			return 0, hal.ErrClosed
		case <-c.xq.notify:
		}
	}
}

// returnCredit tells the NIC side that n more exceptions fit, once a
// quarter of the queue's worth is owed (one message per many exceptions).
func (c *Client) returnCredit(n int) {
	if n == 0 {
		return
	}
	s, err := c.session()
	if err != nil {
		return // the next hello carries the room there is
	}
	owed := s.owed.Add(int64(n))
	if owed < int64(max(c.cfg.ExceptionQueue/4, 1)) {
		return
	}
	if !s.owed.CompareAndSwap(owed, 0) {
		return // another reader is returning it
	}
	var e enc
	e.credit(uint64(owed))
	if err := s.c.writeMsgs(e.b); err != nil {
		s.c.abort()
	}
}

// clientSession is one established channel of the client.
type clientSession struct {
	cl *Client
	c  *secureConn

	mu      sync.Mutex // guards pending and gone
	pending map[uint32]*call
	gone    bool

	dead     chan struct{}
	err      error // why it died; set before dead is closed
	dieOnce  sync.Once
	owed     atomic.Int64
	lastRecv atomic.Int64
}

// die ends the session: every pending call fails. A refusal by the NIC
// side means the calls were not applied; anything else leaves their
// outcome unknown.
func (s *clientSession) die(cause error) {
	s.dieOnce.Do(func() {
		s.err = cause
		s.c.abort()
		s.mu.Lock()
		s.gone = true
		pend := s.pending
		s.pending = nil
		s.mu.Unlock()
		var callErr error
		var re *RefusedError
		if errors.As(cause, &re) && re.By == "nic" {
			callErr = re
		} else {
			callErr = fmt.Errorf("%w: %w", ErrUnknownOutcome, cause)
		}
		for _, k := range pend {
			k.finish(nil, callErr)
		}
		close(s.dead)
	})
}

func (s *clientSession) keepalive() {
	var e enc
	e.emptyReq(msgPing, 0)
	t := time.NewTicker(s.cl.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-s.dead:
			return
		case <-t.C:
			if err := s.c.writeMsgs(e.b); err != nil {
				s.die(err)
				return
			}
		}
	}
}

func (s *clientSession) idle() time.Duration {
	return max(4*s.cl.cfg.KeepAlive, 3*time.Second)
}

// read dispatches the NIC side's messages until the session dies.
func (s *clientSession) read() {
	for {
		typ, id, body, err := s.c.readMsg(s.idle())
		if err != nil {
			var fe *frameError
			switch {
			case errors.As(err, &fe), errors.Is(err, ErrMalformed):
				r := securechan.ReasonOf(err)
				if errors.Is(err, ErrMalformed) {
					r = securechan.DropMalformed
				}
				s.cl.log.Warn("remote: refused a frame from the NIC side", "reason", r.String(), "err", err)
				err = &RefusedError{By: "host", Reason: r, Detail: err.Error()}
			case errors.Is(err, os.ErrDeadlineExceeded):
				err = fmt.Errorf("NIC side silent for %v: %w", s.idle(), err)
			}
			s.die(err)
			return
		}
		s.lastRecv.Store(time.Now().UnixNano())
		switch typ {
		case msgPong:
		case msgExceptions:
			if err := s.exceptions(body); err != nil {
				s.die(err)
				return
			}
		case msgReply:
			s.mu.Lock()
			k := s.pending[id]
			delete(s.pending, id)
			s.mu.Unlock()
			if k != nil {
				k.finish(append([]byte(nil), body...), nil)
			}
		case msgApplyResult:
			if err := s.applyResult(id, body); err != nil {
				s.die(err)
				return
			}
		case msgDumpChunk:
			s.mu.Lock()
			k := s.pending[id]
			s.mu.Unlock()
			if k == nil || k.dumpCh == nil {
				continue // abandoned
			}
			infos, err := decodeDumpChunk(body)
			if err != nil {
				s.die(fmt.Errorf("dump chunk: %w", err))
				return
			}
			select {
			case k.dumpCh <- infos:
			case <-k.abandon:
			case <-s.cl.ctx.Done():
				return
			}
		case msgLearnedAddrs:
			d := dec{b: body}
			as := d.learnedAddrs()
			if err := d.done(); err != nil {
				s.die(fmt.Errorf("learned addresses: %w", err))
				return
			}
			s.cl.lq.put(as)
		case msgLearned:
			d := dec{b: body}
			ms := d.addressMsgs(securechan.MsgAddressLearned)
			if err := d.done(); err != nil {
				s.die(fmt.Errorf("learned addresses: %w", err))
				return
			}
			if f := s.cl.cfg.OnLearned; f != nil {
				for _, m := range ms {
					f(m)
				}
			}
		case msgRefused:
			re, err := decodeRefused(body)
			if err != nil {
				s.die(err)
				return
			}
			s.cl.log.Warn("remote: the NIC side refused our frame; nothing it carried was applied", "reason", re.Reason.String(), "detail", re.Detail)
			s.die(re)
			return
		default:
			s.die(fmt.Errorf("%w: unexpected %s from the NIC side", ErrMalformed, msgName(typ)))
			return
		}
	}
}

func (s *clientSession) applyResult(id uint32, body []byte) error {
	s.mu.Lock()
	k := s.pending[id]
	s.mu.Unlock()
	if k == nil {
		return nil // abandoned by its caller
	}
	k.mu.Lock()
	if k.finished {
		k.mu.Unlock()
		return nil
	}
	start, n, done, err := decodeApplyResult(body, k.results)
	if err == nil && start != k.upTo {
		err = fmt.Errorf("%w: apply results from %d, expected %d", ErrMalformed, start, k.upTo)
	}
	if err == nil {
		k.upTo = start + n
		if done && k.upTo != len(k.results) {
			err = fmt.Errorf("%w: apply ended at %d of %d results", ErrMalformed, k.upTo, len(k.results))
		}
	}
	k.mu.Unlock()
	if err != nil {
		return err
	}
	if h := testHookApplyResult; h != nil {
		h(start, n)
	}
	if done {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
		k.finish(nil, nil)
	}
	return nil
}

func (s *clientSession) exceptions(body []byte) error {
	err := decodeExceptions(body, s.cl.xq.put)
	s.cl.xq.wake()
	if err != nil {
		return fmt.Errorf("exceptions: %w", err)
	}
	return nil
}

// learnedQueue holds the served NIC's learned addresses until ReadLearned
// takes them.
type learnedQueue struct {
	mu      sync.Mutex
	q       []hal.LearnedAddress
	max     int
	notify  chan struct{}
	dropped atomic.Uint64
}

func (q *learnedQueue) put(as []hal.LearnedAddress) {
	q.mu.Lock()
	room := max(q.max-len(q.q), 0)
	take := min(room, len(as))
	q.q = append(q.q, as[:take]...)
	q.mu.Unlock()
	q.dropped.Add(uint64(len(as) - take))
	if take > 0 {
		select {
		case q.notify <- struct{}{}:
		default:
		}
	}
}

func (c *Client) readLearned(ctx context.Context, batch []hal.LearnedAddress) (int, error) {
	q := &c.lq
	for {
		c.mu.Lock()
		closed, has := c.closed, c.opts&optLearn != 0
		c.mu.Unlock()
		if closed {
			return 0, hal.ErrClosed
		}
		if !has {
			return 0, hal.Unsupported(DriverName, "ReadLearned", "the NIC side no longer learns addresses")
		}
		q.mu.Lock()
		k := copy(batch, q.q)
		q.q = q.q[:copy(q.q, q.q[k:])]
		more := len(q.q) > 0
		q.mu.Unlock()
		if more {
			select {
			case q.notify <- struct{}{}:
			default:
			}
		}
		if k > 0 || len(batch) == 0 {
			return k, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-c.ctx.Done():
			return 0, hal.ErrClosed
		case <-q.notify:
		}
	}
}

// LearnedDropped counts learned addresses the host dropped because
// ReadLearned had not taken the Config.LearnedQueue earlier ones.
func (c *Client) LearnedDropped() uint64 { return c.lq.dropped.Load() }
