package securechan

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/nacl/secretbox"
)

// ProtocolVersion is the channel's wire version, the first byte of every
// frame. Frames with any other version are refused with ErrVersion; the
// version byte is authenticated (it is part of the nonce of sealed frames and
// of the handshake transcript), so it cannot be rewritten in flight.
const ProtocolVersion uint8 = 1

// Frame types (second byte of every frame).
const (
	frameInit    = 1 // handshake, initiator → responder
	frameResp    = 2 // handshake, responder → initiator
	frameData    = 3 // sealed batch of address messages
	frameControl = 4 // sealed control message (confirm, rekey, close)
)

// flagInitiator is set in frames sent by the initiator. A node refuses
// frames carrying its own role (ErrReflection); the flag is authenticated,
// so flipping it makes the frame fail authentication instead.
const flagInitiator = 0x01

// Sizes of the frames (see doc.go for the diagrams).
const (
	hdrLen        = 4
	nonceLen      = 24
	tsLen         = 8
	hashLen       = sha256.Size
	innerBoxLen   = nonceLen + hashLen + box.Overhead // proof of the static key
	initPlainLen  = KeySize + tsLen + innerBoxLen     // S_i | ts | proof
	initLen       = hdrLen + KeySize + nonceLen + initPlainLen + box.Overhead
	respLen       = hdrLen + KeySize + innerBoxLen    // hdr | E_r | proof
	sealedHdrLen  = hdrLen + 8                        // hdr | counter
	minSealedLen  = sealedHdrLen + secretbox.Overhead // empty plaintext
	frameOverhead = sealedHdrLen + secretbox.Overhead
)

// Control message types (first plaintext byte of a control frame).
const (
	ctrlConfirm   = 1 // initiator: key confirmation, ends the handshake
	ctrlRekeyInit = 2 // initiator: new ephemeral public key
	ctrlRekeyResp = 3 // responder: its new ephemeral public key
	ctrlRekeyReq  = 4 // responder: please start a rekey
	ctrlClose     = 5 // either: clean close, nothing follows
	ctrlKeepalive = 6 // initiator: first frame under a new key
)

// Role is the side a Session plays in the handshake.
type Role uint8

const (
	Initiator Role = 1 // sends the first handshake message (the host, usually)
	Responder Role = 2 // answers it (the NIC, usually)
)

// String names the role for logs.
func (r Role) String() string {
	if r == Initiator {
		return "initiator"
	}
	return "responder"
}

type sessState uint8

const (
	stateNew          sessState = iota // initiator before Start
	stateAwaitResp                     // initiator sent Init
	stateAwaitInit                     // responder, nothing yet
	stateAwaitConfirm                  // responder sent Resp
	stateEstablished
	stateClosing    // we sent Close
	statePeerClosed // peer sent Close
)

// Session is the channel's state machine, free of any I/O: frames go in
// through Open, frames come out of SealData and NextOutbound. Conn drives
// one over a stream or datagram transport; a NIC with its own mailbox can
// drive one directly. A Session is safe for one sender and one receiver
// goroutine at once, but frames must be handed to the transport in the order
// they were sealed (hold one lock over seal and write).
type Session struct {
	cfg  *Config
	role Role

	mu     sync.Mutex // guards everything below
	state  sessState
	local  PublicKey
	peer   PublicKey
	eph    PrivateKey // handshake ephemeral (initiator), wiped once used
	init   []byte     // Init as sent/received: transcript, and datagram retransmission
	resp   []byte     // Resp as sent (responder, to retransmit) or accepted (initiator, to spot a retransmission)
	initTS uint64

	chain    [32]byte // chaining key for the next rekey
	sendKey  [32]byte
	sendEp   uint8
	sendCtr  uint64
	sendBorn time.Time
	askedKey bool // responder asked for a rekey in this epoch

	cur, prev *recvKey
	next      *recvKey // responder: derived, waiting for the initiator to use it
	nextSend  [32]byte // responder: send key of the next epoch
	nextPeer  PublicKey
	nextResp  PublicKey // responder: its rekey ephemeral, resent on a retransmitted RekeyInit
	nextChain [32]byte

	rekeyEph  *PrivateKey // initiator: rekey in flight
	rekeyPub  PublicKey
	rekeySent time.Time

	out []outFrame
}

// NewInitiator returns a session that will authenticate peer, whose static
// key must be pinned in cfg.PeerKeys when that list is not empty. Call Start
// to obtain the first handshake frame.
func NewInitiator(cfg *Config, peer PublicKey) (*Session, error) {
	if len(cfg.PeerKeys) > 0 && !cfg.pinned(peer) {
		return nil, fmt.Errorf("%w: %v", ErrPeerKey, peer)
	}
	s := &Session{cfg: cfg, role: Initiator, state: stateNew, peer: peer, local: cfg.PrivateKey.Public()}
	if s.local == peer {
		return nil, fmt.Errorf("%w: peer key is our own key", ErrReflection)
	}
	return s, nil
}

// NewResponder returns a session that waits for an initiator whose static
// key is pinned in cfg.PeerKeys.
func NewResponder(cfg *Config) *Session {
	return &Session{cfg: cfg, role: Responder, state: stateAwaitInit, local: cfg.PrivateKey.Public()}
}

// Role returns the side this session plays.
func (s *Session) Role() Role { return s.role }

// PeerKey returns the peer's authenticated static key (zero before the
// handshake authenticated it).
func (s *Session) PeerKey() PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peer
}

// Established reports whether both ends proved their keys and data may flow.
func (s *Session) Established() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == stateEstablished
}

// Epoch returns the current send-key epoch; it grows by one per rekey
// (modulo 256 on the wire).
func (s *Session) Epoch() uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sendEp
}

// Close queues a clean close for the peer; SealData refuses to send after it.
func (s *Session) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateEstablished, stateAwaitConfirm:
		s.out = append(s.out, outFrame{ctrl: []byte{ctrlClose}})
	}
	if s.state != statePeerClosed {
		s.state = stateClosing
	}
}
