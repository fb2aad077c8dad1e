package securechan

// The receive side: Open checks a frame's header, hands handshake frames to
// the handshake and opens sealed ones under the key of their epoch, through
// its replay window; control messages are applied here.

import (
	"encoding/binary"
	"io"
	"time"

	"golang.org/x/crypto/nacl/secretbox"
)

// recvKey is one live receive key with its replay window.
type recvKey struct {
	epoch  uint8
	key    [32]byte
	win    replayWindow
	expiry time.Time // previous key only: zero while the peer may still use it
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
