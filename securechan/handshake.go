package securechan

// The handshake: Init (initiator's ephemeral key, then its static key and a
// timestamp boxed to the responder), Resp (the responder's ephemeral key and
// its proof), then the initiator's Confirm under the new keys. See doc.go for
// the frames.

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/nacl/box"
)

// Labels keep each use of a key or hash apart, so that a message of one kind
// can never be taken for another (in particular a reflected one).
const (
	labelInit    = "nicpath securechan v1 init"
	labelResp    = "nicpath securechan v1 resp"
	labelSession = "nicpath securechan v1 session keys"
)

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
