package securechan

// Rekeying: the initiator sends a fresh ephemeral key under the current
// keys, the responder answers with its own, and both move to the next epoch,
// mixed with the chaining key of the last. Time and message counts trigger
// it; the previous receive key lives on for a grace period on datagrams.

// labelRekey separates the keys of each rekey (the epoch is appended).
const labelRekey = "nicpath securechan v1 rekey"

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
