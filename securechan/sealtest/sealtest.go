// Package sealtest helps tests prove that a sealed destination never leaves
// the NIC toward the host: a Recorder captures everything a transport (the
// channel's socket, an exception-path queue) carries, and FindLeak searches
// captured bytes for every encoding of a destination address.
//
// It is for tests only. The softnic and vswitch tests use it on the
// exception path; securechan's own tests use it on the channel.
package sealtest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Secret is a destination that was sealed by a VM: none of its encodings
// may appear in anything the host can see.
type Secret struct {
	IP  netip.Addr
	MAC [6]byte // zero: not checked
}

// encodings lists the byte strings that would reveal s: the raw address,
// its text form, and the MAC. For IPv4 also the IPv4-mapped IPv6 form.
func (s Secret) encodings() map[string][]byte {
	out := map[string][]byte{}
	if s.IP.IsValid() {
		out["ip"] = s.IP.AsSlice()
		out["ip-text"] = []byte(s.IP.String())
		if s.IP.Is4() {
			v := netip.AddrFrom16(s.IP.As16()).As16()
			out["ip-mapped"] = v[:]
			// An IPv4 address as a little-endian integer (a careless
			// struct dump).
			le := binary.LittleEndian.AppendUint32(nil, binary.BigEndian.Uint32(s.IP.AsSlice()))
			out["ip-le"] = le
		}
	}
	if s.MAC != ([6]byte{}) {
		out["mac"] = s.MAC[:]
		out["mac-text"] = []byte(fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", s.MAC[0], s.MAC[1], s.MAC[2], s.MAC[3], s.MAC[4], s.MAC[5]))
	}
	return out
}

// FindLeak returns a description of where data reveals s, or "" if it does
// not. Random bytes (ciphertext) match a 4-byte address with probability
// about len(data)/2^32, so keep captures to what a test needs.
func FindLeak(data []byte, s Secret) string {
	for name, enc := range s.encodings() {
		if i := bytes.Index(data, enc); i >= 0 {
			return fmt.Sprintf("%s encoding of the sealed destination at offset %d", name, i)
		}
	}
	return ""
}

// Transport is the part of a connection that a Recorder wraps (satisfied by
// net.Conn and by securechan.Transport).
type Transport interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	Close() error
	SetReadDeadline(t time.Time) error
}

// Recorder wraps a Transport and keeps a copy of every byte read from or
// written to it.
type Recorder struct {
	T Transport

	mu   sync.Mutex
	read []byte
	sent []byte
}

// Record wraps t.
func Record(t Transport) *Recorder { return &Recorder{T: t} }

// Read reads from the wrapped transport and records what it got.
func (r *Recorder) Read(p []byte) (int, error) {
	n, err := r.T.Read(p)
	r.mu.Lock()
	r.read = append(r.read, p[:n]...)
	r.mu.Unlock()
	return n, err
}

// Write writes to the wrapped transport and records what it took.
func (r *Recorder) Write(p []byte) (int, error) {
	n, err := r.T.Write(p)
	r.mu.Lock()
	r.sent = append(r.sent, p[:n]...)
	r.mu.Unlock()
	return n, err
}

func (r *Recorder) Close() error                      { return r.T.Close() }
func (r *Recorder) SetReadDeadline(t time.Time) error { return r.T.SetReadDeadline(t) }

// Captured returns copies of everything read and written so far.
func (r *Recorder) Captured() (read, written []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.read), bytes.Clone(r.sent)
}
