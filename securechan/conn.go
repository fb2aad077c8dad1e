package securechan

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Transport is what a Conn needs from the connection below it: net.Conn
// (TCP, unix stream, net.Pipe) for streams, or a connected datagram socket
// (UDP, unixgram) whose Read and Write each move one datagram.
type Transport interface {
	io.ReadWriteCloser
	SetReadDeadline(t time.Time) error
}

// streamPrefixLen is the frame length prefix on stream transports.
const streamPrefixLen = 2

// rekeyWaitPoll is how often a sender blocked on a spent key looks whether
// the rekey completed; a rekey takes one round trip, so waits are short and
// rare (only when RekeyAfterMessages frames are sent within one round trip).
const rekeyWaitPoll = 50 * time.Microsecond

// datagramRetry is how often a datagram handshake frame is sent again while
// no answer came: a lost datagram costs a quarter second, not the handshake.
const datagramRetry = 250 * time.Millisecond

// Conn is a channel endpoint over a Transport: a Session plus framing,
// batching and buffering. Send and Flush may be called from one goroutine
// while Recv is called from another.
//
// Stream framing is a 2-byte big-endian length followed by the frame; a
// datagram carries exactly one frame. On a stream a refused frame ends the
// connection (a stream that carried one forged frame cannot be trusted to be
// in sync); on a datagram transport refused frames are dropped, counted
// (Drops) and Recv goes on, since anyone may send a datagram.
type Conn struct {
	t    Transport
	s    *Session
	cfg  *Config
	gram bool

	wmu   sync.Mutex // guards the write side below; held over seal+write for counter order
	w     *bufio.Writer
	batch []byte // plaintext messages waiting to be sealed
	wbuf  []byte // sealed frame scratch (with stream prefix room)
	werr  error

	rmu    sync.Mutex // guards the read side below
	r      *bufio.Reader
	rbuf   []byte // frame read from the transport
	plain  []byte // opened batch
	off    int    // next message in plain
	rerr   error  // sticky read error (stream)
	closed atomic.Bool

	drops [NumDropReasons]atomic.Uint64
}

// Client runs the initiator's handshake over t against the responder whose
// static key is peer, and returns the established Conn. It closes t on
// failure.
func Client(t Transport, cfg *Config, peer PublicKey) (*Conn, error) {
	s, err := NewInitiator(cfg, peer)
	if err != nil {
		t.Close()
		return nil, err
	}
	c := newConn(t, s, cfg)
	if _, err := s.Start(); err != nil {
		t.Close()
		return nil, err
	}
	if err := c.handshake(); err != nil {
		t.Close()
		return nil, err
	}
	return c, nil
}

// Server runs the responder's handshake over t and returns the established
// Conn once the initiator proved a pinned static key. It closes t on failure.
func Server(t Transport, cfg *Config) (*Conn, error) {
	c := newConn(t, NewResponder(cfg), cfg)
	if err := c.handshake(); err != nil {
		t.Close()
		return nil, err
	}
	return c, nil
}

func newConn(t Transport, s *Session, cfg *Config) *Conn {
	max := cfg.maxFrame()
	c := &Conn{t: t, s: s, cfg: cfg, gram: cfg.Datagram}
	c.batch = make([]byte, 0, max-frameOverhead)
	c.wbuf = make([]byte, 0, max+streamPrefixLen)
	c.plain = make([]byte, 0, max)
	if c.gram {
		c.rbuf = make([]byte, maxFrameLimit+1) // a larger datagram shows as oversized, not cut
	} else {
		c.rbuf = make([]byte, max)
		c.r = bufio.NewReaderSize(t, 64<<10)
		c.w = bufio.NewWriterSize(t, 64<<10)
	}
	return c
}

// Session returns the state machine under c (for its epoch and peer key).
func (c *Conn) Session() *Session { return c.s }

// PeerKey returns the peer's authenticated static key.
func (c *Conn) PeerKey() PublicKey { return c.s.PeerKey() }

// Drops returns how many received frames were refused for reason (datagram
// transports; a stream ends at its first refused frame instead).
func (c *Conn) Drops(reason DropReason) uint64 {
	if reason >= NumDropReasons {
		return 0
	}
	return c.drops[reason].Load()
}

func (c *Conn) handshake() error {
	deadline := time.Now().Add(c.cfg.handshakeTimeout())
	defer c.t.SetReadDeadline(time.Time{})
	for !c.s.Established() {
		c.wmu.Lock()
		err := c.flushOutboundLocked()
		c.wmu.Unlock()
		if err != nil {
			return err
		}
		wait := deadline
		if c.gram && time.Until(wait) > datagramRetry {
			wait = time.Now().Add(datagramRetry)
		}
		c.t.SetReadDeadline(wait)
		frame, err := c.readFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
				if !time.Now().Before(deadline) {
					return ErrHandshakeTimeout
				}
				c.s.Retransmit()
				continue
			}
			if c.gram && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.drops[ReasonOf(err)].Add(1)
				continue
			}
			return fmt.Errorf("securechan: handshake: %w", err)
		}
		p, err := c.s.Open(c.plain[:0], frame)
		if err != nil {
			if c.gram {
				c.drops[ReasonOf(err)].Add(1)
				continue
			}
			return fmt.Errorf("securechan: handshake: %w", err)
		}
		if len(p) > 0 { // data that confirmed the handshake (datagram: Confirm was lost)
			c.plain, c.off = p, 0
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushOutboundLocked()
}

// readFrame returns the next frame; the slice is valid until the next call.
func (c *Conn) readFrame() ([]byte, error) {
	if c.gram {
		n, err := c.t.Read(c.rbuf)
		if err != nil {
			return nil, err
		}
		if n > c.cfg.maxFrame() {
			return nil, ErrOversized
		}
		return c.rbuf[:n], nil
	}
	var pfx [streamPrefixLen]byte
	if _, err := io.ReadFull(c.r, pfx[:]); err != nil {
		if errors.Is(err, io.EOF) {
			// The peer's transport ended without a Close frame: a cut,
			// not a clean close.
			return nil, fmt.Errorf("%w: stream ended without close: %w", ErrTruncated, io.ErrUnexpectedEOF)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: %w", ErrTruncated, err)
		}
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(pfx[:]))
	if n > c.cfg.maxFrame() {
		return nil, ErrOversized
	}
	if n < hdrLen {
		return nil, ErrTruncated
	}
	if _, err := io.ReadFull(c.r, c.rbuf[:n]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: %w", ErrTruncated, io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	return c.rbuf[:n], nil
}

// writeFrameLocked hands one frame (in c.wbuf after the prefix room) to the
// transport; streams buffer it until flushLocked.
func (c *Conn) writeFrameLocked(buf []byte) error {
	if c.gram {
		_, err := c.t.Write(buf[streamPrefixLen:])
		return err
	}
	binary.BigEndian.PutUint16(buf, uint16(len(buf)-streamPrefixLen))
	_, err := c.w.Write(buf)
	return err
}

func (c *Conn) flushOutboundLocked() error {
	if err := c.drainLocked(); err != nil {
		return err
	}
	if c.w != nil {
		return c.w.Flush()
	}
	return nil
}

// drainLocked writes every queued handshake and control frame.
func (c *Conn) drainLocked() error {
	for {
		buf, ok, err := c.s.NextOutbound(c.wbuf[:streamPrefixLen])
		if err != nil || !ok {
			return err
		}
		if err := c.writeFrameLocked(buf); err != nil {
			return err
		}
	}
}

// sealBatchLocked seals and writes the pending batch. Called with wmu held;
// it may release wmu for a while when the send key is spent (see below).
func (c *Conn) sealBatchLocked() error {
	if err := c.drainLocked(); err != nil {
		return err
	}
	if len(c.batch) == 0 {
		return nil
	}
	var deadline time.Time
	var buf []byte
	for {
		var err error
		buf, err = c.s.SealData(c.wbuf[:streamPrefixLen], c.batch)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrKeyExhausted) {
			return err
		}
		// The send key is spent and the rekey is still in flight: wait
		// for Recv to take in the peer's answer rather than fail the send.
		// The rekey messages themselves are already queued or written.
		if deadline.IsZero() {
			deadline = time.Now().Add(c.cfg.handshakeTimeout())
		} else if time.Now().After(deadline) {
			return err
		}
		if err := c.flushOutboundLocked(); err != nil {
			return err
		}
		// Let go of the write side while waiting: the reader needs it to
		// send the frames that complete the rekey.
		c.wmu.Unlock()
		time.Sleep(rekeyWaitPoll)
		c.wmu.Lock()
	}
	c.batch = c.batch[:0]
	if err := c.writeFrameLocked(buf); err != nil {
		return err
	}
	return c.drainLocked() // a rekey started by this frame
}

// Send queues m. Messages are batched into one sealed frame until the frame
// is full or Flush is called; a batch of a few hundred messages per seal is
// what lets the channel carry hundreds of thousands of messages a second.
func (c *Conn) Send(m *Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if len(c.batch)+MaxMessageLen > cap(c.batch) {
		if err := c.sealBatchLocked(); err != nil {
			c.werr = err
			return err
		}
	}
	b, err := AppendMessage(c.batch, m)
	if err != nil {
		return err // an invalid message poisons nothing
	}
	c.batch = b
	return nil
}

// Flush seals the queued messages and pushes every buffered frame to the
// transport.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if err := c.sealBatchLocked(); err != nil {
		c.werr = err
		return err
	}
	if c.w != nil {
		if err := c.w.Flush(); err != nil {
			c.werr = err
			return err
		}
	}
	return nil
}

// Recv decodes the next message into m. It returns io.EOF after the peer's
// clean close; a transport that ends without one yields ErrTruncated.
func (c *Conn) Recv(m *Message) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.off < len(c.plain) {
			n, err := DecodeMessage(c.plain[c.off:], m)
			if err != nil {
				// The frame authenticated, so the peer itself sent a bad
				// message: drop the rest of its batch.
				c.plain, c.off = c.plain[:0], 0
				return fmt.Errorf("securechan: message from peer: %w", err)
			}
			c.off += n
			return nil
		}
		if c.rerr != nil {
			return c.rerr
		}
		frame, err := c.readFrame()
		if err == nil {
			var p []byte
			p, err = c.s.Open(c.plain[:0], frame)
			if err == nil {
				if p != nil {
					c.plain = p
				} else {
					c.plain = c.plain[:0]
				}
				c.off = 0
				if c.s.Pending() {
					// A failed write (the peer closed its end) belongs to
					// the writers; the reader goes on to what is still
					// buffered, such as the peer's Close.
					c.wmu.Lock()
					if c.werr == nil {
						c.werr = c.flushOutboundLocked()
					}
					c.wmu.Unlock()
				}
				continue
			}
		}
		if errors.Is(err, io.EOF) {
			c.rerr = io.EOF
			return io.EOF
		}
		if c.closed.Load() {
			return ErrClosed
		}
		if c.gram && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
			c.drops[ReasonOf(err)].Add(1)
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			c.rerr = err
		}
		return err
	}
}

// Close sends a clean close to the peer, flushes and closes the transport.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.wmu.Lock()
	var err error
	if c.werr == nil {
		err = c.sealBatchLocked()
		c.s.Close()
		if e := c.flushOutboundLocked(); err == nil {
			err = e
		}
	}
	c.wmu.Unlock()
	if e := c.t.Close(); err == nil {
		err = e
	}
	return err
}
