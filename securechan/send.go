package securechan

// The send side: data frames sealed under the current epoch's key in counter
// order, and the queue of handshake and control frames that go out before
// them.

import (
	"encoding/binary"
	"fmt"
	"math"

	"golang.org/x/crypto/nacl/secretbox"
)

// outFrame is a queued outbound frame: raw handshake bytes, or a control
// plaintext sealed when it is dequeued so that its counter follows the data
// frames sealed before it.
type outFrame struct {
	raw  []byte
	ctrl []byte
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
