package vswitch

import (
	"github.com/nicpath/nicpath/policy"
)

// connKey names one direction of a tracked connection at one ACL layer: a
// packet with these addresses, protocol and ports passes layer (vm, dir)
// without an ACL check. It is policy.ConnTable's key, so the switch and the
// reference tracker agree on what "the reply" is, in a compact form: the
// VM by its interned id (stable across policy versions, as its name is)
// and the addresses as 16 bytes (IPv4 mapped, which no IPv6 address that
// reaches an ACL layer is: the walk drops IPv4-mapped IPv6 as malformed).
// It has no pointers and no padding, so the connection table hashes it as
// plain memory (a string and two netip.Addr made every first packet's
// lookup hash field by field).
type connKey struct {
	src, dst         [16]byte
	vm               uint32
	srcPort, dstPort uint16
	dir              policy.Direction
	proto            uint8
	// pad fills the struct's tail: a key with padding would be hashed
	// field by field. Always zero.
	pad [2]uint8
}

func connKeyOf(vm uint32, dir policy.Direction, p *policy.Packet) connKey {
	k := connKey{vm: vm, dir: dir, src: p.Src.As16(), dst: p.Dst.As16(), proto: p.Protocol}
	if hasPorts(p.Protocol) {
		k.srcPort, k.dstPort = p.SrcPort, p.DstPort
	}
	return k
}

// conn is one tracked connection entry. It is kept alive by the traffic of
// the flows that opened it or rely on it (their counters, read from the NIC
// when they are offloaded) and removed, with the flows that relied on it,
// after ConnIdle without traffic.
type conn struct {
	key      connKey
	lastSeen int64 // unix nanoseconds
	// users are the flows whose verdict depends on this entry (they passed
	// a layer as established); they go when the entry goes.
	users map[*flow]struct{}
}

type conntrack struct {
	conns map[connKey]*conn
}

func newConntrack() *conntrack { return &conntrack{conns: map[connKey]*conn{}} }

func (t *conntrack) established(k connKey) bool {
	_, ok := t.conns[k]
	return ok
}
