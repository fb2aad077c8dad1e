package vswitch

import (
	"net/netip"

	"github.com/nicpath/nicpath/policy"
)

// connKey names one direction of a tracked connection at one ACL layer: a
// packet with these addresses, protocol and ports passes layer (vm, dir)
// without an ACL check. It is policy.ConnTable's key, so the switch and the
// reference tracker agree on what "the reply" is.
type connKey struct {
	vm               string
	dir              policy.Direction
	src, dst         netip.Addr
	proto            uint8
	srcPort, dstPort uint16
}

func connKeyOf(vm string, dir policy.Direction, p *policy.Packet) connKey {
	k := connKey{vm: vm, dir: dir, src: p.Src, dst: p.Dst, proto: p.Protocol}
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
