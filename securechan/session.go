package securechan

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math"
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

// Labels keep each use of a key or hash apart, so that a message of one kind
// can never be taken for another (in particular a reflected one).
const (
	labelInit    = "nicpath securechan v1 init"
	labelResp    = "nicpath securechan v1 resp"
	labelSession = "nicpath securechan v1 session keys"
	labelRekey   = "nicpath securechan v1 rekey"
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

// recvKey is one live receive key with its replay window.
type recvKey struct {
	epoch  uint8
	key    [32]byte
	win    replayWindow
	expiry time.Time // previous key only: zero while the peer may still use it
}

// outFrame is a queued outbound frame: raw handshake bytes, or a control
// plaintext sealed when it is dequeued so that its counter follows the data
// frames sealed before it.
type outFrame struct {
	raw  []byte
	ctrl []byte
}

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

// Start creates the initiator's handshake frame and queues it; it returns
// the frame too.
func (s *Session) Start() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.role != Initiator || s.state != stateNew {
		return nil, fmt.Errorf("%w: Start on a %v session in state %d", ErrUnexpected, s.role, s.state)
	}
	ephPub, eph, err := GenerateKey(s.cfg.rand())
	if err != nil {
		return nil, err
	}
	s.eph = eph
	s.initTS = s.cfg.nextTimestamp()

	msg := make([]byte, hdrLen, initLen)
	msg[0], msg[1], msg[2], msg[3] = ProtocolVersion, frameInit, flagInitiator, 0
	msg = append(msg, ephPub[:]...)

	plain := make([]byte, 0, initPlainLen)
	plain = append(plain, s.local[:]...)
	plain = binary.BigEndian.AppendUint64(plain, s.initTS)
	proof := initProof(msg[:hdrLen], &ephPub, &s.local, &s.peer, s.initTS)
	plain, err = sealProof(plain, proof[:], &s.peer, &s.cfg.PrivateKey, s.cfg.rand())
	if err != nil {
		return nil, err
	}
	var nonce [nonceLen]byte
	if _, err := io.ReadFull(s.cfg.rand(), nonce[:]); err != nil {
		return nil, fmt.Errorf("securechan: nonce: %w", err)
	}
	msg = append(msg, nonce[:]...)
	msg = box.Seal(msg, plain, &nonce, (*[32]byte)(&s.peer), (*[32]byte)(&eph))
	s.init = msg
	s.state = stateAwaitResp
	s.out = append(s.out, outFrame{raw: msg})
	return msg, nil
}

// Retransmit queues the last handshake frame again; Conn calls it when a
// datagram handshake sees no answer. It does nothing once established.
func (s *Session) Retransmit() {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateAwaitResp:
		s.out = append(s.out, outFrame{raw: s.init})
	case stateAwaitConfirm:
		s.out = append(s.out, outFrame{raw: s.resp})
	}
}

func initProof(hdr []byte, eph, initiator, responder *PublicKey, ts uint64) [hashLen]byte {
	h := sha256.New()
	h.Write([]byte(labelInit))
	h.Write(hdr)
	h.Write(eph[:])
	h.Write(initiator[:])
	h.Write(responder[:])
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], ts)
	h.Write(t[:])
	var out [hashLen]byte
	h.Sum(out[:0])
	return out
}

func respProof(init, hdr []byte, eph *PublicKey) [hashLen]byte {
	h := sha256.New()
	h.Write([]byte(labelResp))
	h.Write(init)
	h.Write(hdr)
	h.Write(eph[:])
	var out [hashLen]byte
	h.Sum(out[:0])
	return out
}

// sealProof appends nonce | box(proof) under the static-static key: only the
// holder of one of the two static private keys can make it, and the label in
// the proof says which role made it.
func sealProof(dst, proof []byte, peer *PublicKey, priv *PrivateKey, r io.Reader) ([]byte, error) {
	var nonce [nonceLen]byte
	if _, err := io.ReadFull(r, nonce[:]); err != nil {
		return nil, fmt.Errorf("securechan: nonce: %w", err)
	}
	dst = append(dst, nonce[:]...)
	return box.Seal(dst, proof, &nonce, (*[32]byte)(peer), (*[32]byte)(priv)), nil
}

func openProof(b []byte, want *[hashLen]byte, peer *PublicKey, priv *PrivateKey) error {
	var got [hashLen]byte
	if _, ok := box.Open(got[:0], b[nonceLen:], (*[24]byte)(b[:nonceLen]), (*[32]byte)(peer), (*[32]byte)(priv)); !ok {
		return ErrTampered
	}
	if got != *want {
		return ErrTampered
	}
	return nil
}

// deriveKeys expands secret into the initiator→responder key, the
// responder→initiator key and the next chaining key.
func deriveKeys(secret, salt []byte, info string) (i2r, r2i, chain [32]byte) {
	k, err := hkdf.Key(sha256.New, secret, salt, info, 96)
	if err != nil {
		panic("securechan: hkdf: " + err.Error()) // only for lengths > 255·32
	}
	copy(i2r[:], k[0:32])
	copy(r2i[:], k[32:64])
	copy(chain[:], k[64:96])
	wipe(k)
	return
}

// installKeys sets the epoch's traffic keys for this session's role.
func (s *Session) installKeys(epoch uint8, i2r, r2i *[32]byte) {
	send, recv := i2r, r2i
	if s.role == Responder {
		send, recv = r2i, i2r
	}
	s.sendKey, s.sendEp, s.sendCtr, s.sendBorn, s.askedKey = *send, epoch, 0, s.cfg.now(), false
	s.cur = &recvKey{epoch: epoch, key: *recv, win: replayWindow{stream: !s.cfg.Datagram}}
}

func checkHeader(frame []byte, role Role) error {
	if len(frame) < hdrLen {
		return ErrTruncated
	}
	if frame[0] != ProtocolVersion {
		return ErrVersion
	}
	if frame[2]&^flagInitiator != 0 {
		return ErrMalformed
	}
	fromInitiator := frame[2]&flagInitiator != 0
	if fromInitiator == (role == Initiator) {
		return ErrReflection
	}
	return nil
}

// Open processes one frame received from the peer. For a data frame it
// appends the plaintext (a batch of encoded messages) to dst and returns it;
// handshake and control frames are handled inside and return (nil, nil),
// possibly queueing frames to send (see NextOutbound). After the peer's
// clean close Open returns io.EOF.
//
// A refused frame returns an error for which errors.Is matches one of the
// package's sentinels and leaves the session exactly as it was.
func (s *Session) Open(dst, frame []byte) ([]byte, error) {
	if err := checkHeader(frame, s.role); err != nil {
		return nil, err
	}
	switch frame[1] {
	case frameInit:
		return nil, s.openInit(frame)
	case frameResp:
		return nil, s.openResp(frame)
	case frameData, frameControl:
		return s.openSealed(dst, frame)
	}
	return nil, ErrMalformed
}

func (s *Session) openInit(frame []byte) error {
	if s.role != Responder { // checkHeader already refused our own Init
		return ErrUnexpected
	}
	if len(frame) < initLen {
		return ErrTruncated
	}
	if len(frame) > initLen || frame[3] != 0 {
		return ErrMalformed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateAwaitInit:
	case stateAwaitConfirm:
		if bytes.Equal(frame, s.init) {
			if !s.cfg.Datagram {
				return ErrReplay // a stream does not duplicate
			}
			// A datagram retransmission: our Resp was lost, answer again.
			s.out = append(s.out, outFrame{raw: s.resp})
			return nil
		}
		return ErrUnexpected
	default:
		return ErrUnexpected
	}
	ephI := PublicKey(frame[hdrLen : hdrLen+KeySize])
	nonce := (*[24]byte)(frame[hdrLen+KeySize : hdrLen+KeySize+nonceLen])
	es, err := dh(&s.cfg.PrivateKey, &ephI) // also refuses a low-order ephemeral
	if err != nil {
		return err
	}
	defer wipe(es[:])
	var plain [initPlainLen]byte
	if _, ok := box.Open(plain[:0], frame[hdrLen+KeySize+nonceLen:], nonce, (*[32]byte)(&ephI), (*[32]byte)(&s.cfg.PrivateKey)); !ok {
		return ErrTampered
	}
	statI := PublicKey(plain[:KeySize])
	ts := binary.BigEndian.Uint64(plain[KeySize:])
	if statI == s.local {
		return ErrReflection
	}
	if !s.cfg.pinned(statI) {
		return ErrPeerKey
	}
	proof := initProof(frame[:hdrLen], &ephI, &statI, &s.local, ts)
	if err := openProof(plain[KeySize+tsLen:], &proof, &statI, &s.cfg.PrivateKey); err != nil {
		return err
	}
	if err := s.cfg.checkInitTimestamp(statI, ts); err != nil {
		return err
	}
	se, err := dh(&s.cfg.PrivateKey, &statI)
	if err != nil {
		return err
	}
	wipe(se[:]) // only checked: the static-static key is used through box

	ephRPub, ephR, err := GenerateKey(s.cfg.rand())
	if err != nil {
		return err
	}
	defer wipe(ephR[:])
	ee, err := dh(&ephR, &ephI)
	if err != nil {
		return err
	}
	defer wipe(ee[:])
	seR, err := dh(&ephR, &statI)
	if err != nil {
		return err
	}
	defer wipe(seR[:])

	resp := make([]byte, hdrLen, respLen)
	resp[0], resp[1], resp[2], resp[3] = ProtocolVersion, frameResp, 0, 0
	resp = append(resp, ephRPub[:]...)
	rp := respProof(frame, resp[:hdrLen], &ephRPub)
	resp, err = sealProof(resp, rp[:], &statI, &s.cfg.PrivateKey, s.cfg.rand())
	if err != nil {
		return err
	}
	if err := s.cfg.commitInitTimestamp(statI, ts); err != nil {
		return err
	}
	// Commit: from here on the state changes.
	s.peer = statI
	s.init = append([]byte(nil), frame...)
	s.resp = resp
	s.deriveSession(&ee, &es, &seR, s.init, resp)
	s.state = stateAwaitConfirm
	s.out = append(s.out, outFrame{raw: resp})
	return nil
}

// deriveSession mixes the ephemeral-ephemeral secret (forward secrecy) with
// both ephemeral-static secrets (each side's static key) into the epoch-0
// keys, salted with the whole handshake transcript.
func (s *Session) deriveSession(ee, es, se *[32]byte, init, resp []byte) {
	secret := make([]byte, 0, 96)
	secret = append(append(append(secret, ee[:]...), es[:]...), se[:]...)
	h := sha256.New()
	h.Write(init)
	h.Write(resp)
	salt := h.Sum(nil)
	i2r, r2i, chain := deriveKeys(secret, salt, labelSession)
	wipe(secret)
	s.installKeys(0, &i2r, &r2i)
	s.chain = chain
	wipe(i2r[:])
	wipe(r2i[:])
}

func (s *Session) openResp(frame []byte) error {
	if s.role != Initiator {
		return ErrUnexpected
	}
	if len(frame) < respLen {
		return ErrTruncated
	}
	if len(frame) > respLen || frame[3] != 0 {
		return ErrMalformed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateEstablished && s.cfg.Datagram && s.sendEp == 0 && bytes.Equal(frame, s.resp) {
		// The responder sent its Resp again: our Confirm was lost.
		s.out = append(s.out, outFrame{ctrl: []byte{ctrlConfirm}})
		return nil
	}
	if s.state != stateAwaitResp {
		return ErrUnexpected
	}
	ephR := PublicKey(frame[hdrLen : hdrLen+KeySize])
	rp := respProof(s.init, frame[:hdrLen], &ephR)
	if err := openProof(frame[hdrLen+KeySize:], &rp, &s.peer, &s.cfg.PrivateKey); err != nil {
		return err
	}
	ee, err := dh(&s.eph, &ephR)
	if err != nil {
		return err
	}
	defer wipe(ee[:])
	es, err := dh(&s.eph, &s.peer)
	if err != nil {
		return err
	}
	defer wipe(es[:])
	se, err := dh(&s.cfg.PrivateKey, &ephR)
	if err != nil {
		return err
	}
	defer wipe(se[:])
	s.deriveSession(&ee, &es, &se, s.init, frame)
	s.resp = append([]byte(nil), frame...)
	wipe(s.eph[:])
	s.state = stateEstablished
	s.out = append(s.out, outFrame{ctrl: []byte{ctrlConfirm}})
	return nil
}

// keyFor returns the live receive key for epoch, or nil.
func (s *Session) keyFor(epoch uint8) *recvKey {
	switch {
	case s.cur != nil && s.cur.epoch == epoch:
		return s.cur
	case s.next != nil && s.next.epoch == epoch:
		return s.next
	case s.prev != nil && s.prev.epoch == epoch:
		if !s.prev.expiry.IsZero() && !s.cfg.now().Before(s.prev.expiry) {
			return nil
		}
		return s.prev
	}
	return nil
}

func (s *Session) openSealed(dst, frame []byte) ([]byte, error) {
	if len(frame) < minSealedLen {
		return nil, ErrTruncated
	}
	if len(frame) > s.cfg.maxFrame() {
		return nil, ErrOversized
	}
	epoch := frame[3]
	ctr := binary.BigEndian.Uint64(frame[4:sealedHdrLen])

	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateAwaitConfirm, stateEstablished, stateClosing:
	case statePeerClosed:
		return nil, ErrClosed
	default:
		return nil, ErrUnexpected
	}
	k := s.keyFor(epoch)
	if k == nil {
		return nil, ErrUnknownKey
	}
	if err := k.win.check(ctr); err != nil {
		return nil, err
	}
	var nonce [24]byte
	copy(nonce[:], frame[:sealedHdrLen])
	start := len(dst)
	out, ok := secretbox.Open(dst, frame[sealedHdrLen:], &nonce, &k.key)
	if !ok {
		return nil, ErrTampered
	}
	plain := out[start:]
	if frame[1] == frameData {
		if s.state == stateAwaitConfirm && s.role == Responder {
			s.state = stateEstablished // any authenticated frame confirms the keys
		}
		k.win.accept(ctr)
		s.noteEpochUsed(k)
		return out, nil
	}
	if err := s.control(plain, k, ctr); err != nil {
		clear(plain)
		return nil, err
	}
	clear(plain)
	if s.state == statePeerClosed {
		return nil, io.EOF
	}
	return nil, nil
}

// noteEpochUsed handles the first authenticated frame under a new epoch: the
// peer has switched, so we switch our sending side (responder) and start the
// previous key's grace period.
func (s *Session) noteEpochUsed(k *recvKey) {
	switch k {
	case s.next: // responder: the initiator uses the new keys
		s.prev = s.cur
		s.cur = s.next
		s.next = nil
		s.sendKey, s.sendEp, s.sendCtr, s.sendBorn, s.askedKey = s.nextSend, k.epoch, 0, s.cfg.now(), false
		s.chain = s.nextChain
		wipe(s.nextSend[:])
		wipe(s.nextChain[:])
		s.expirePrev()
	case s.cur:
		if s.prev != nil && s.prev.expiry.IsZero() {
			s.expirePrev()
		}
	}
}

func (s *Session) expirePrev() {
	if s.prev == nil {
		return
	}
	if !s.cfg.Datagram {
		// A stream delivers in order: nothing under the old key can follow
		// the first frame under the new one.
		wipe(s.prev.key[:])
		s.prev = nil
		return
	}
	s.prev.expiry = s.cfg.now().Add(s.cfg.rekeyGrace())
}

// control validates a control message and applies it; on error nothing
// changed (the counter is accepted only with the message).
func (s *Session) control(p []byte, k *recvKey, ctr uint64) error {
	if len(p) < 1 {
		return ErrMalformed
	}
	want := 1
	if p[0] == ctrlRekeyInit || p[0] == ctrlRekeyResp {
		want = 1 + KeySize
	}
	if len(p) != want {
		return ErrMalformed
	}
	peerIsInitiator := s.role == Responder
	switch p[0] {
	case ctrlConfirm:
		if !peerIsInitiator || s.state != stateAwaitConfirm || k.epoch != 0 {
			return ErrUnexpected
		}
		s.state = stateEstablished
	case ctrlKeepalive:
		if !peerIsInitiator {
			return ErrUnexpected
		}
	case ctrlClose:
		s.state = statePeerClosed
	case ctrlRekeyReq:
		if peerIsInitiator || s.state != stateEstablished {
			return ErrUnexpected
		}
		if s.rekeyEph == nil {
			if err := s.startRekey(); err != nil {
				return err
			}
		}
	case ctrlRekeyInit:
		if !peerIsInitiator || s.state != stateEstablished || k != s.cur {
			return ErrUnexpected
		}
		if err := s.answerRekey(PublicKey(p[1:])); err != nil {
			return err
		}
	case ctrlRekeyResp:
		if peerIsInitiator || s.state != stateEstablished || s.rekeyEph == nil || k != s.cur {
			return ErrUnexpected
		}
		if err := s.finishRekey(PublicKey(p[1:])); err != nil {
			return err
		}
	default:
		return ErrMalformed
	}
	k.win.accept(ctr)
	s.noteEpochUsed(k)
	return nil
}

// startRekey (initiator) sends a fresh ephemeral key under the current keys.
func (s *Session) startRekey() error {
	pub, priv, err := GenerateKey(s.cfg.rand())
	if err != nil {
		return err
	}
	s.rekeyEph, s.rekeyPub, s.rekeySent = &priv, pub, s.cfg.now()
	s.out = append(s.out, outFrame{ctrl: append([]byte{ctrlRekeyInit}, pub[:]...)})
	return nil
}

func (s *Session) rekeyInfo(epoch uint8) string {
	return labelRekey + string([]byte{epoch})
}

// answerRekey (responder) derives the next epoch from the initiator's new
// ephemeral key and a fresh one of its own, and keeps sending under the
// current epoch until the initiator proves it switched.
func (s *Session) answerRekey(peerEph PublicKey) error {
	if s.next != nil && peerEph == s.nextPeer {
		// Our answer was lost (datagram): answer again with the same key.
		s.out = append(s.out, outFrame{ctrl: append([]byte{ctrlRekeyResp}, s.nextResp[:]...)})
		return nil
	}
	pub, priv, err := GenerateKey(s.cfg.rand())
	if err != nil {
		return err
	}
	defer wipe(priv[:])
	shared, err := dh(&priv, &peerEph)
	if err != nil {
		return err
	}
	defer wipe(shared[:])
	epoch := s.sendEp + 1
	i2r, r2i, chain := deriveKeys(shared[:], s.chain[:], s.rekeyInfo(epoch))
	s.next = &recvKey{epoch: epoch, key: i2r, win: replayWindow{stream: !s.cfg.Datagram}}
	s.nextSend, s.nextChain, s.nextPeer, s.nextResp = r2i, chain, peerEph, pub
	wipe(i2r[:])
	wipe(r2i[:])
	s.out = append(s.out, outFrame{ctrl: append([]byte{ctrlRekeyResp}, pub[:]...)})
	return nil
}

// finishRekey (initiator) switches to the next epoch at once; the previous
// receive key stays until the responder's first frame under the new one.
func (s *Session) finishRekey(peerEph PublicKey) error {
	shared, err := dh(s.rekeyEph, &peerEph)
	if err != nil {
		return err
	}
	defer wipe(shared[:])
	epoch := s.sendEp + 1
	i2r, r2i, chain := deriveKeys(shared[:], s.chain[:], s.rekeyInfo(epoch))
	wipe(s.rekeyEph[:])
	s.rekeyEph = nil
	old := s.cur
	if s.prev != nil {
		wipe(s.prev.key[:])
	}
	s.installKeys(epoch, &i2r, &r2i)
	s.prev = old // expiry zero: kept until the responder switches
	s.chain = chain
	wipe(i2r[:])
	wipe(r2i[:])
	s.out = append(s.out, outFrame{ctrl: []byte{ctrlKeepalive}})
	return nil
}

// maintain runs the time- and count-based rekey triggers; called with mu
// held before sealing.
func (s *Session) maintain() error {
	if s.state != stateEstablished {
		return nil
	}
	now := s.cfg.now()
	age := now.Sub(s.sendBorn)
	due := s.sendCtr >= s.cfg.rekeyAfterMessages() || age >= s.cfg.rekeyAfterTime()
	switch {
	case s.role == Initiator && s.rekeyEph == nil && due:
		return s.startRekey()
	case s.role == Initiator && s.rekeyEph != nil && s.cfg.Datagram && now.Sub(s.rekeySent) >= s.cfg.rekeyRetry():
		s.rekeySent = now
		s.out = append(s.out, outFrame{ctrl: append([]byte{ctrlRekeyInit}, s.rekeyPub[:]...)})
	case s.role == Responder && due && !s.askedKey && s.next == nil:
		s.askedKey = true
		s.out = append(s.out, outFrame{ctrl: []byte{ctrlRekeyReq}})
	}
	return nil
}

// exhausted reports whether the send key must not seal anything more.
func (s *Session) exhausted() bool {
	return s.sendCtr >= s.cfg.rejectAfterMessages() || s.cfg.now().Sub(s.sendBorn) >= 3*s.cfg.rekeyAfterTime()
}

func (s *Session) seal(dst []byte, typ byte, p []byte) ([]byte, error) {
	// Data stops at the soft limits; the control frames that complete a
	// rekey may still go, up to where the counter itself would wrap.
	if typ == frameData && s.exhausted() || s.sendCtr == math.MaxUint64 {
		return dst, ErrKeyExhausted
	}
	var flags byte
	if s.role == Initiator {
		flags = flagInitiator
	}
	start := len(dst)
	dst = append(dst, ProtocolVersion, typ, flags, s.sendEp)
	dst = binary.BigEndian.AppendUint64(dst, s.sendCtr)
	var nonce [24]byte
	copy(nonce[:], dst[start:])
	s.sendCtr++
	return secretbox.Seal(dst, p, &nonce, &s.sendKey), nil
}

// SealData appends one data frame carrying p (a batch of encoded messages)
// to dst. Call NextOutbound first and hand its frames to the transport
// before this one, so that frames leave in counter order.
func (s *Session) SealData(dst, p []byte) ([]byte, error) {
	if len(p)+frameOverhead > s.cfg.maxFrame() {
		return dst, fmt.Errorf("%w: %d-byte batch", ErrOversized, len(p))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateEstablished:
	case stateClosing, statePeerClosed:
		return dst, ErrClosed
	default:
		return dst, fmt.Errorf("%w: handshake not complete", ErrUnexpected)
	}
	if err := s.maintain(); err != nil {
		return dst, err
	}
	return s.seal(dst, frameData, p)
}

// Pending reports whether NextOutbound has a frame to send.
func (s *Session) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateEstablished {
		if err := s.maintain(); err != nil {
			return false
		}
	}
	return len(s.out) > 0
}

// NextOutbound appends the next queued handshake or control frame to dst;
// ok is false when nothing is queued.
func (s *Session) NextOutbound(dst []byte) (out []byte, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.out) == 0 {
		return dst, false, nil
	}
	f := s.out[0]
	if f.raw != nil {
		s.out = s.out[1:]
		return append(dst, f.raw...), true, nil
	}
	out, err = s.seal(dst, frameControl, f.ctrl)
	if err != nil {
		return dst, false, err
	}
	s.out = s.out[1:]
	return out, true, nil
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
