package remote

import (
	"context"
	"errors"
	"fmt"

	"github.com/nicpath/nicpath/securechan"
)

var (
	errCanceledSentinel = context.Canceled
	errDeadlineSentinel = context.DeadlineExceeded
)

var (
	// ErrUnknownOutcome marks an operation that was sent to the NIC but whose
	// result never came back (the channel was cut, or the caller's context
	// ended first). It may or may not have landed: a Dump after the channel
	// is back tells which. Retrying is safe by rule ID: an add that landed
	// fails with hal.ErrExists, a delete that landed with hal.ErrNotFound.
	ErrUnknownOutcome = errors.New("remote: outcome unknown: the channel went down before the result came back")

	// ErrNotConnected means the channel to the NIC is down and the call was
	// not sent: nothing of it was applied. The driver reconnects by itself.
	ErrNotConnected = errors.New("remote: not connected to the NIC")

	// ErrHandshake means the secure channel could not be established: the
	// peer did not prove a pinned key, the handshake was tampered with or
	// replayed, or the transport failed during it. The error wraps
	// securechan's sentinel where one end knows it.
	ErrHandshake = errors.New("remote: secure channel handshake failed")

	// ErrRefused means one end refused a frame or message of the other
	// (tampered, replayed, reordered, a downgraded version): a *RefusedError
	// says which, and nothing it carried was applied.
	ErrRefused = errors.New("remote: refused by the peer")

	// ErrVersion means the two ends speak no common protocol version (a
	// peer offering an older version than this end accepts is refused, so
	// that neither side can be talked into a downgrade).
	ErrVersion = errors.New("remote: protocol version not accepted")

	// ErrTooLarge means a call's message exceeds the channel's message
	// limit (MaxMessage); nothing was sent.
	ErrTooLarge = errors.New("remote: message larger than the channel's limit")
)

// RefusedError is a frame or message that one end refused, and why. The
// server sends it to the host before it closes the channel, so that the
// calls in flight learn that they were not applied.
type RefusedError struct {
	// By says which end refused: "nic" (the server) or "host" (this driver).
	By string
	// Reason is the securechan drop reason (tampered, replay, reorder,
	// version, …), or DropOther for a protocol error above the channel.
	Reason securechan.DropReason
	Detail string
}

func (e *RefusedError) Error() string {
	s := fmt.Sprintf("remote: %s refused a frame: %s", e.By, e.Reason)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is makes errors.Is(err, ErrRefused) true, and errors.Is(err, s) true for
// the securechan sentinel s of the reason (ErrTampered, ErrReplay, …).
func (e *RefusedError) Is(target error) bool {
	if target == ErrRefused {
		return true
	}
	if s := reasonSentinel(e.Reason); s != nil && target == s {
		return true
	}
	return false
}

// VersionError is a protocol version the other end does not accept.
type VersionError struct {
	Offered uint8 // what the client offered
	Min     uint8 // the oldest the server accepts
	Max     uint8 // the newest the server speaks
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("remote: protocol version %d not accepted (server speaks %d..%d)", e.Offered, e.Min, e.Max)
}

// Is makes errors.Is(err, ErrVersion) and errors.Is(err, securechan.ErrVersion) true.
func (e *VersionError) Is(target error) bool {
	return target == ErrVersion || target == securechan.ErrVersion
}

// HandshakeError is a failed channel set-up: Err says what this end saw.
type HandshakeError struct {
	Addr string
	Err  error
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("remote: handshake with %s: %v", e.Addr, e.Err)
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrHandshake) true.
func (e *HandshakeError) Is(target error) bool { return target == ErrHandshake }

var reasonSentinels = map[securechan.DropReason]error{
	securechan.DropVersion:    securechan.ErrVersion,
	securechan.DropTampered:   securechan.ErrTampered,
	securechan.DropTruncated:  securechan.ErrTruncated,
	securechan.DropOversized:  securechan.ErrOversized,
	securechan.DropMalformed:  securechan.ErrMalformed,
	securechan.DropReplay:     securechan.ErrReplay,
	securechan.DropReorder:    securechan.ErrReorder,
	securechan.DropPeerKey:    securechan.ErrPeerKey,
	securechan.DropReflection: securechan.ErrReflection,
	securechan.DropUnexpected: securechan.ErrUnexpected,
	securechan.DropUnknownKey: securechan.ErrUnknownKey,
}

func reasonSentinel(r securechan.DropReason) error { return reasonSentinels[r] }
