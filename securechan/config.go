package securechan

import (
	"crypto/rand"
	"io"
	"math"
	"slices"
	"sync"
	"time"
)

// Defaults for Config fields left zero, with the reasoning for each value.
const (
	// DefaultRekeyAfterMessages: a key is replaced long before its 2^64
	// counter space matters; 2^30 frames also bounds how much traffic a
	// leaked key exposes.
	DefaultRekeyAfterMessages = 1 << 30
	// DefaultRekeyAfterTime: two minutes, as WireGuard does, so that a key
	// stolen from memory reveals at most a few minutes of traffic.
	DefaultRekeyAfterTime = 2 * time.Minute
	// DefaultRekeyGrace: on datagram transports, how long the previous
	// epoch's receive key still opens late frames after the peer switched.
	// Reordering on a host-local path lasts microseconds; 5 s is generous
	// and still bounded.
	DefaultRekeyGrace = 5 * time.Second
	// DefaultRekeyRetry: on datagram transports, how long to wait for the
	// answer to a rekey before asking again (a lost datagram).
	DefaultRekeyRetry = time.Second
	// DefaultHandshakeTimeout bounds Client and Server.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxStreamFrame is the largest frame on a stream transport:
	// the 16-bit length prefix allows 64 KiB; 16 KiB frames already batch
	// hundreds of address messages per seal, beyond which throughput no
	// longer improves but latency and buffer sizes grow.
	DefaultMaxStreamFrame = 16 << 10
	// DefaultMaxDatagramFrame keeps one frame within one unfragmented UDP
	// datagram on a 1500-byte MTU path (1500 − 20 IPv4 − 8 UDP).
	DefaultMaxDatagramFrame = 1472
	// maxFrameLimit is what the stream length prefix can express.
	maxFrameLimit = math.MaxUint16
)

// Config configures one end of a channel. A Config may be shared by many
// sessions and must not be copied after first use: it remembers the newest
// handshake timestamp of each peer so that a recorded handshake cannot be
// replayed against any of them.
type Config struct {
	// PrivateKey is this node's static key.
	PrivateKey PrivateKey
	// PeerKeys are the pinned static keys of the peers this node accepts.
	// An initiator talks to the one it names in NewInitiator, which must be
	// in PeerKeys when PeerKeys is not empty.
	PeerKeys []PublicKey
	// Datagram selects the datagram transport rules: a replay window instead
	// of strict ordering, retransmission of handshake and rekey messages,
	// and a grace period for the previous key after a rekey.
	Datagram bool
	// RekeyAfterMessages and RekeyAfterTime start a rekey (new ephemeral
	// keys, new traffic keys) when the send key has sealed that many frames
	// or is that old. Past twice the count or three times the age, sending
	// stops with ErrKeyExhausted until the rekey completes.
	RekeyAfterMessages uint64
	RekeyAfterTime     time.Duration
	RekeyGrace         time.Duration
	RekeyRetry         time.Duration
	HandshakeTimeout   time.Duration
	// MaxFrame is the largest frame accepted or produced; larger frames are
	// refused with ErrOversized before they are read.
	MaxFrame int
	// Rand supplies ephemeral keys and nonces (crypto/rand.Reader if nil).
	Rand io.Reader
	// Now is the clock (time.Now if nil); tests move it to trigger rekeys.
	Now func() time.Time

	mu       sync.Mutex
	lastInit map[PublicKey]uint64 // newest handshake timestamp accepted per peer
	lastSent uint64               // newest handshake timestamp sent
}

func (c *Config) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
}

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Config) rekeyAfterMessages() uint64 {
	if c.RekeyAfterMessages != 0 {
		return c.RekeyAfterMessages
	}
	return DefaultRekeyAfterMessages
}

func (c *Config) rejectAfterMessages() uint64 {
	r := c.rekeyAfterMessages()
	if r > math.MaxUint64/2 {
		return math.MaxUint64 - 1 // the counter itself must never wrap
	}
	return 2 * r
}

func (c *Config) rekeyAfterTime() time.Duration {
	if c.RekeyAfterTime > 0 {
		return c.RekeyAfterTime
	}
	return DefaultRekeyAfterTime
}

func (c *Config) rekeyGrace() time.Duration {
	if c.RekeyGrace > 0 {
		return c.RekeyGrace
	}
	return DefaultRekeyGrace
}

func (c *Config) rekeyRetry() time.Duration {
	if c.RekeyRetry > 0 {
		return c.RekeyRetry
	}
	return DefaultRekeyRetry
}

func (c *Config) handshakeTimeout() time.Duration {
	if c.HandshakeTimeout > 0 {
		return c.HandshakeTimeout
	}
	return DefaultHandshakeTimeout
}

func (c *Config) maxFrame() int {
	switch {
	case c.MaxFrame > maxFrameLimit:
		return maxFrameLimit
	case c.MaxFrame > 0:
		return c.MaxFrame
	case c.Datagram:
		return DefaultMaxDatagramFrame
	}
	return DefaultMaxStreamFrame
}

func (c *Config) pinned(k PublicKey) bool {
	return slices.Contains(c.PeerKeys, k)
}

// nextTimestamp returns a handshake timestamp greater than any this Config
// sent before, even if the clock steps back.
func (c *Config) nextTimestamp() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := uint64(c.now().UnixNano())
	if ts <= c.lastSent {
		ts = c.lastSent + 1
	}
	c.lastSent = ts
	return ts
}

// checkInitTimestamp refuses a handshake that is not newer than the newest
// accepted from the same peer; commit records it once the handshake passed
// every other check.
func (c *Config) checkInitTimestamp(peer PublicKey, ts uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts <= c.lastInit[peer] {
		return ErrReplay
	}
	return nil
}

func (c *Config) commitInitTimestamp(peer PublicKey, ts uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts <= c.lastInit[peer] {
		return ErrReplay // another session accepted the same handshake first
	}
	if c.lastInit == nil {
		c.lastInit = make(map[PublicKey]uint64)
	}
	c.lastInit[peer] = ts
	return nil
}
