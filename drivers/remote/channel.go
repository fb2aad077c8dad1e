package remote

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nicpath/nicpath/securechan"
)

// The secure stream: a securechan.Session driven over a stream transport
// (unix socket, TCP, vsock), with securechan's stream framing (a 2-byte
// big-endian length before each frame). securechan.Conn carries only its
// own address messages; the RPC needs an ordered byte stream of its own
// messages, so this file drives the Session directly, as its doc invites a
// transport with its own framing to do. The plaintexts of the data frames,
// concatenated, are the RPC message stream: one RPC message may span
// frames, and one frame may carry many messages.

const (
	framePrefix = 2
	// frameOverhead is what sealing adds to a plaintext: the 12-byte header
	// and secretbox's 16-byte tag.
	frameOverhead = 12 + 16
	// maxStreamFrame is the largest frame the 2-byte prefix can say.
	// Frames as large as possible amortise the seal and the syscall over
	// more rules; a batch of a thousand exact-match rules fits in about
	// four.
	maxStreamFrame = 1<<16 - 1
	// ioBuffer is the bufio size of each direction: a few frames, so that
	// a batch of frames goes in one write.
	ioBuffer = 256 << 10
)

// secureConn is one established channel. One goroutine reads (readMsg);
// any number write (writeMsgs), serialised by wmu.
type secureConn struct {
	raw          net.Conn
	s            *securechan.Session
	maxMsg       int
	writeTimeout time.Duration

	wmu  sync.Mutex // guards the write side below
	w    *bufio.Writer
	wbuf []byte
	werr error

	r     *bufio.Reader // read side: used by the one reader only
	rbuf  []byte
	in    []byte // plaintext stream; in[off:] is not consumed yet
	off   int
	rerr  error
	extra int // bytes of the last returned message, consumed on the next call
}

func newSecureConn(raw net.Conn, s *securechan.Session, maxMsg int, writeTimeout time.Duration) *secureConn {
	return &secureConn{
		raw: raw, s: s, maxMsg: maxMsg, writeTimeout: writeTimeout,
		w:    bufio.NewWriterSize(raw, ioBuffer),
		wbuf: make([]byte, 0, framePrefix+maxStreamFrame),
		r:    bufio.NewReaderSize(raw, ioBuffer),
		rbuf: make([]byte, maxStreamFrame),
	}
}

// channelConfig is the securechan configuration of one end. Its frames are
// as large as the stream prefix allows.
func channelConfig(priv securechan.PrivateKey, peers []securechan.PublicKey, tune *ChannelTuning) *securechan.Config {
	c := &securechan.Config{PrivateKey: priv, PeerKeys: append([]securechan.PublicKey(nil), peers...), MaxFrame: maxStreamFrame}
	if tune != nil {
		c.RekeyAfterMessages = tune.RekeyAfterMessages
		c.RekeyAfterTime = tune.RekeyAfterTime
		c.HandshakeTimeout = tune.HandshakeTimeout
	}
	return c
}

// ChannelTuning changes the secure channel's defaults (securechan's), for
// tests and for deployments that want shorter key lifetimes.
type ChannelTuning struct {
	RekeyAfterMessages uint64
	RekeyAfterTime     time.Duration
	HandshakeTimeout   time.Duration
}

func handshakeTimeout(tune *ChannelTuning) time.Duration {
	if tune != nil && tune.HandshakeTimeout > 0 {
		return tune.HandshakeTimeout
	}
	return securechan.DefaultHandshakeTimeout
}

// clientHandshake runs the initiator's side over raw. On failure raw is
// closed.
func clientHandshake(raw net.Conn, cfg *securechan.Config, peer securechan.PublicKey, maxMsg int, wt time.Duration, hto time.Duration) (*secureConn, error) {
	s, err := securechan.NewInitiator(cfg, peer)
	if err != nil {
		raw.Close()
		return nil, err
	}
	c := newSecureConn(raw, s, maxMsg, wt)
	if _, err := s.Start(); err != nil {
		raw.Close()
		return nil, err
	}
	if err := c.handshake(hto); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// serverHandshake runs the responder's side over raw. On failure raw is
// closed.
func serverHandshake(raw net.Conn, cfg *securechan.Config, maxMsg int, wt time.Duration, hto time.Duration) (*secureConn, error) {
	c := newSecureConn(raw, securechan.NewResponder(cfg), maxMsg, wt)
	if err := c.handshake(hto); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

func (c *secureConn) handshake(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c.raw.SetDeadline(deadline)
	defer c.raw.SetDeadline(time.Time{})
	for !c.s.Established() {
		if err := c.flushOutbound(); err != nil {
			return handshakeIOError(err)
		}
		frame, err := c.readFrame()
		if err != nil {
			return handshakeIOError(err)
		}
		p, err := c.s.Open(c.in[:0], frame)
		if err != nil {
			return err
		}
		if len(p) > 0 {
			c.in = p
		}
	}
	return handshakeIOError(c.flushOutbound())
}

func handshakeIOError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %w", securechan.ErrHandshakeTimeout, err)
	}
	return err
}

// flushOutbound writes the session's queued handshake and control frames.
func (c *secureConn) flushOutbound() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.drainLocked(); err != nil {
		return err
	}
	return c.flushLocked()
}

func (c *secureConn) drainLocked() error {
	for {
		buf, ok, err := c.s.NextOutbound(c.wbuf[:framePrefix])
		if err != nil || !ok {
			return err
		}
		if err := c.writeFrameLocked(buf); err != nil {
			return err
		}
	}
}

func (c *secureConn) writeFrameLocked(buf []byte) error {
	binary.BigEndian.PutUint16(buf, uint16(len(buf)-framePrefix))
	_, err := c.w.Write(buf)
	return err
}

func (c *secureConn) flushLocked() error {
	if c.w.Buffered() == 0 {
		return nil
	}
	if c.writeTimeout > 0 {
		c.raw.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	return c.w.Flush()
}

// writeMsgs seals p (whole encoded messages) into as many frames as it
// needs and pushes them to the transport. A failure is sticky: the channel
// is dead after it.
func (c *secureConn) writeMsgs(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	c.werr = c.sealLocked(p)
	if c.werr == nil {
		c.werr = c.flushLocked()
	}
	return c.werr
}

func (c *secureConn) sealLocked(p []byte) error {
	const maxPlain = maxStreamFrame - frameOverhead
	for len(p) > 0 {
		if err := c.drainLocked(); err != nil { // a rekey goes before the data it keys
			return err
		}
		n := min(len(p), maxPlain)
		buf, err := c.s.SealData(c.wbuf[:framePrefix], p[:n])
		if err != nil {
			return err
		}
		if err := c.writeFrameLocked(buf); err != nil {
			return err
		}
		p = p[n:]
	}
	return c.drainLocked()
}

// readFrame reads one frame; the slice is valid until the next call.
func (c *secureConn) readFrame() ([]byte, error) {
	var pfx [framePrefix]byte
	if _, err := io.ReadFull(c.r, pfx[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: stream ended without close: %w", securechan.ErrTruncated, io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(pfx[:]))
	if n < 4 {
		return nil, securechan.ErrTruncated
	}
	if _, err := io.ReadFull(c.r, c.rbuf[:n]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: %w", securechan.ErrTruncated, io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	return c.rbuf[:n], nil
}

// frameError is a frame the session refused: the channel cannot be trusted
// to be in sync after it.
type frameError struct{ err error }

func (e *frameError) Error() string { return e.err.Error() }
func (e *frameError) Unwrap() error { return e.err }

// readMsg returns the next RPC message. body is valid until the next call.
// idle, when positive, bounds the wait for each frame.
func (c *secureConn) readMsg(idle time.Duration) (typ uint8, id uint32, body []byte, err error) {
	c.off += c.extra
	c.extra = 0
	for {
		if avail := len(c.in) - c.off; avail >= 4 {
			n := int(binary.BigEndian.Uint32(c.in[c.off:]))
			if n < msgHeaderLen-4 || n > c.maxMsg {
				c.rerr = fmt.Errorf("%w: message of %d bytes (limit %d)", ErrMalformed, n, c.maxMsg)
				return 0, 0, nil, c.rerr
			}
			if avail >= 4+n {
				m := c.in[c.off : c.off+4+n]
				c.extra = 4 + n
				return m[4], binary.BigEndian.Uint32(m[5:9]), m[9:], nil
			}
		}
		if c.rerr != nil {
			return 0, 0, nil, c.rerr
		}
		// Keep what is not consumed at the front, then read a frame.
		if c.off > 0 {
			k := copy(c.in, c.in[c.off:])
			c.in = c.in[:k]
			c.off = 0
		}
		if idle > 0 {
			c.raw.SetReadDeadline(time.Now().Add(idle))
		}
		frame, err := c.readFrame()
		if err != nil {
			c.rerr = err
			return 0, 0, nil, err
		}
		// Room for the plaintext first: secretbox appends by allocating
		// exactly what it needs, which would copy a large message's
		// bytes again for every frame of it.
		if need := len(c.in) + len(frame); cap(c.in) < need {
			c.in = slices.Grow(c.in, max(need, 2*cap(c.in))-len(c.in))
		}
		p, err := c.s.Open(c.in, frame)
		if err != nil {
			if errors.Is(err, io.EOF) {
				c.rerr = io.EOF // the peer's clean close
			} else {
				c.rerr = &frameError{err}
			}
			return 0, 0, nil, c.rerr
		}
		if p != nil {
			c.in = p
		}
		if c.s.Pending() { // a rekey answer or request to send
			if err := c.flushOutbound(); err != nil {
				c.rerr = err
				return 0, 0, nil, err
			}
		}
	}
}

// close sends a clean close (best effort, bounded by the write timeout)
// and closes the transport.
func (c *secureConn) close() {
	c.wmu.Lock()
	if c.werr == nil {
		c.s.Close()
		c.raw.SetWriteDeadline(time.Now().Add(time.Second))
		if c.drainLocked() == nil {
			c.w.Flush()
		}
		c.werr = net.ErrClosed
	}
	c.wmu.Unlock()
	c.raw.Close()
}

// abort closes the transport without a goodbye.
func (c *secureConn) abort() {
	c.wmu.Lock()
	if c.werr == nil {
		c.werr = net.ErrClosed
	}
	c.wmu.Unlock()
	c.raw.Close()
}
