package securechan

import (
	"errors"
	"io"
)

// Sentinel errors. Every frame, message or handshake that is refused is
// refused with an error for which errors.Is reports one of these, so that a
// caller (a NIC's fast path, the vswitch) can count drops by reason. None of
// them is returned after a change of state: a refused input leaves the
// session, the replay window and the key table exactly as they were.
var (
	// ErrVersion: the version byte names a version this package does not
	// speak, or an older one than the session agreed on (a downgrade).
	ErrVersion = errors.New("securechan: unsupported or downgraded version")
	// ErrTampered: authentication failed; the bytes were changed, forged,
	// or sealed with a different key.
	ErrTampered = errors.New("securechan: authentication failed")
	// ErrTruncated: the input is shorter than its format requires.
	ErrTruncated = errors.New("securechan: truncated")
	// ErrOversized: a frame is longer than the configured maximum; it is
	// refused before it is read in full.
	ErrOversized = errors.New("securechan: frame too large")
	// ErrMalformed: the bytes do not follow the format (bad type, reserved
	// bits set, inconsistent lengths, garbage).
	ErrMalformed = errors.New("securechan: malformed")
	// ErrReplay: the frame's counter was already accepted, or is too old for
	// the replay window.
	ErrReplay = errors.New("securechan: replayed frame")
	// ErrReorder: on a stream transport, a frame arrived ahead of the next
	// expected counter (a stream never reorders, so someone dropped or moved
	// frames).
	ErrReorder = errors.New("securechan: frame out of order")
	// ErrPeerKey: the peer proved a static key that is not pinned.
	ErrPeerKey = errors.New("securechan: peer static key not pinned")
	// ErrReflection: the input is one of this node's own messages sent back.
	ErrReflection = errors.New("securechan: reflected message")
	// ErrUnexpected: a valid message that does not fit the protocol state
	// (a handshake reply nobody asked for, data before the handshake …).
	ErrUnexpected = errors.New("securechan: unexpected message")
	// ErrUnknownKey: no live key matches (an unregistered vport, an expired
	// or revoked sealed-address key id, a channel epoch that is gone).
	ErrUnknownKey = errors.New("securechan: no live key")
	// ErrNotSealed: the frame is not a sealed-address frame (EtherType is not
	// 0x88B5).
	ErrNotSealed = errors.New("securechan: not a sealed-address frame")
	// ErrShortBuffer: the caller's output buffer cannot hold the result.
	ErrShortBuffer = errors.New("securechan: output buffer too small")
	// ErrKeyExhausted: the session's send key reached its hard limit of
	// messages or age and a rekey has not completed yet; nothing was sent.
	ErrKeyExhausted = errors.New("securechan: send key exhausted, rekey pending")
	// ErrClosed: the session or connection was closed.
	ErrClosed = errors.New("securechan: closed")
	// ErrHandshakeTimeout: the peer did not complete the handshake in time.
	ErrHandshakeTimeout = errors.New("securechan: handshake timed out")
)

// DropReason names why a sealed-address frame or a channel frame was
// refused, for per-reason counters. Use ReasonOf to map an error.
type DropReason uint8

// Drop reasons, one per sentinel error (DropOther for anything else).
const (
	DropNone DropReason = iota
	DropVersion
	DropTampered
	DropTruncated
	DropOversized
	DropMalformed
	DropReplay
	DropReorder
	DropPeerKey
	DropReflection
	DropUnexpected
	DropUnknownKey
	DropNotSealed
	DropShortBuffer
	DropOther
	NumDropReasons // for arrays indexed by DropReason
)

var dropNames = [...]string{"none", "version", "tampered", "truncated", "oversized", "malformed",
	"replay", "reorder", "peer_key", "reflection", "unexpected", "unknown_key", "not_sealed",
	"short_buffer", "other"}

// String returns the reason's counter label.
func (r DropReason) String() string {
	if int(r) < len(dropNames) {
		return dropNames[r]
	}
	return "other"
}

var reasonErrs = [...]struct {
	err    error
	reason DropReason
}{
	{ErrVersion, DropVersion}, {ErrTampered, DropTampered}, {ErrTruncated, DropTruncated},
	{ErrOversized, DropOversized}, {ErrMalformed, DropMalformed}, {ErrReplay, DropReplay},
	{ErrReorder, DropReorder}, {ErrPeerKey, DropPeerKey}, {ErrReflection, DropReflection},
	{ErrUnexpected, DropUnexpected}, {ErrUnknownKey, DropUnknownKey}, {ErrNotSealed, DropNotSealed},
	{ErrShortBuffer, DropShortBuffer},
}

// ReasonOf maps an error returned by this package to a counter reason. It
// does not allocate, so a fast path may call it per dropped packet.
func ReasonOf(err error) DropReason {
	if err == nil {
		return DropNone
	}
	for _, e := range reasonErrs {
		if err == e.err { // the fast path returns bare sentinels
			return e.reason
		}
	}
	for _, e := range reasonErrs {
		if errors.Is(err, e.err) {
			return e.reason
		}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return DropTruncated
	}
	return DropOther
}
