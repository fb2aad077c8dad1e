package securechan

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
)

// KeySize is the size of Curve25519 public and private keys.
const KeySize = 32

// PublicKey is a Curve25519 public key. Peers pin each other's PublicKey:
// a channel only completes its handshake with a peer whose static key was
// configured beforehand.
type PublicKey [KeySize]byte

// PrivateKey is a Curve25519 private key (a clamped scalar, as produced by
// nacl/box.GenerateKey).
type PrivateKey [KeySize]byte

// String prints the key in hex so that operators can compare pinned keys.
func (k PublicKey) String() string { return hex.EncodeToString(k[:]) }

// String never prints the secret: logs must not carry private keys.
func (k PrivateKey) String() string { return "PrivateKey(redacted)" }

// GoString keeps %#v from printing the secret too.
func (k PrivateKey) GoString() string { return k.String() }

// Public returns the public key that belongs to k.
func (k *PrivateKey) Public() PublicKey {
	var pub PublicKey
	curve25519.ScalarBaseMult((*[32]byte)(&pub), (*[32]byte)(k))
	return pub
}

// GenerateKey returns a fresh key pair read from r (crypto/rand.Reader when
// r is nil).
func GenerateKey(r io.Reader) (PublicKey, PrivateKey, error) {
	if r == nil {
		r = rand.Reader
	}
	pub, priv, err := box.GenerateKey(r)
	if err != nil {
		return PublicKey{}, PrivateKey{}, fmt.Errorf("securechan: generate key: %w", err)
	}
	return PublicKey(*pub), PrivateKey(*priv), nil
}

// ParsePublicKey decodes a hex public key as printed by PublicKey.String.
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != KeySize {
		return k, fmt.Errorf("securechan: public key %q: want %d hex bytes: %w", s, KeySize, ErrMalformed)
	}
	copy(k[:], b)
	return k, nil
}

// dh is the Curve25519 Diffie-Hellman used by the channel. It refuses
// low-order points (an all-zero shared secret), which a peer could otherwise
// send to force a known session key.
func dh(priv *PrivateKey, pub *PublicKey) ([32]byte, error) {
	var out [32]byte
	s, err := curve25519.X25519(priv[:], pub[:])
	if err != nil {
		return out, fmt.Errorf("%w: peer sent a low-order public key", ErrTampered)
	}
	copy(out[:], s)
	return out, nil
}

// wipe clears key material that is no longer needed, so that a later memory
// disclosure does not reveal past sessions (forward secrecy).
func wipe(b []byte) {
	clear(b)
}
