package vswitch

import (
	"encoding/binary"

	"github.com/nicpath/nicpath/hal"
)

// walkMemoSize is the number of remembered walks. The first packets of a
// batch are mostly new connections between a few pairs of endpoints (the
// same assumption the interned action sets make); 64 entries of about 700
// bytes (46 KiB per switch, allocated with it) cover the pairs of a
// 64-packet batch and stay in the L2 cache.
const walkMemoSize = 64

// walkMemo is one remembered walk: the verdict of compiled state c for a
// key that differs from key (ports zeroed) only in its transport ports.
//
// This is the megaflow idea of OVS, reduced to the one field that varies
// most between connections: a walk that never read the ports in the policy
// (no ACL with port ranges on its path, no tracked connection opened or
// named) gives every connection between the same two endpoints the same
// verdict, so it is walked once, unless a connection between those
// endpoints is tracked at one of the ACL layers it passed (layers): a
// connection's key carries its ports, so it would let some of those
// connections pass that layer as established, and the flow would depend
// on it.
type walkMemo struct {
	c      *compiled // nil: empty
	key    hal.FlowKey
	v      verdict
	layers [2]connKey // the ACL layers passed, ports zeroed
	n      uint8      // how many
}

// classifyFlow is c.classify for a flow on the data path (no tracer): a key
// whose walk is remembered takes the remembered verdict, unless
// Config.DisableWalkMemo.
//
// A remembered verdict stays right as long as c does and no connection is
// tracked between its endpoints at the layers it passed: compiled states
// are immutable (an update makes a new one, so the pointer tells them
// apart); a walk is remembered only if it found no connection established
// (whatever the table held then), and a memo is used only if the
// connection table's summary of endpoint pairs (conntrack.mayHavePair)
// says that none of its layers has a connection between those endpoints,
// on any ports. Then a fresh walk of k would find none either, read the
// same policy fields, and decide the same. The TTL only matters when it is
// 1 or less (a routed packet is dropped); such keys are walked every time.
//
// It reports classify's result: whether v holds for every key that
// differs from k only in its transport ports (false for a TTL of 1 or
// less).
func (s *Switch) classifyFlow(c *compiled, k *hal.FlowKey, ttl uint8, v *verdict) (anyPorts bool) {
	// The batch's route found for this key, if any: for this walk only.
	hint := s.hint
	s.hint = nil
	if ttl <= 1 {
		c.classifyHinted(k, s.cfg.Uplink, ttl, s.ct, nil, v, hint)
		return false
	}
	if !hasPorts(k.Proto) || s.cfg.DisableWalkMemo {
		return c.classifyHinted(k, s.cfg.Uplink, ttl, s.ct, nil, v, hint)
	}
	m := &s.walks[walkSlot(k)]
	if m.c == c && sameButPorts(&m.key, k) && !s.connsAt(m) {
		*v = m.v
		s.stats.walksRemembered++
		// What a fresh walk reports: it reads the connection table's
		// keys, ports and all, at every ACL layer while any connection
		// is tracked.
		return m.n == 0 || len(s.ct.conns) == 0
	}
	var d walkDeps
	anyPorts = c.classifyDeps(k, s.cfg.Uplink, ttl, s.ct, nil, v, hint, &d)
	if d.portFree {
		m.c, m.key, m.v = c, *k, *v
		m.key.L4Src, m.key.L4Dst = 0, 0
		m.layers, m.n = d.layers, uint8(d.n)
	}
	return anyPorts
}

// connsAt reports whether the connection table may hold a connection at
// one of m's layers between m's endpoints, on any ports.
func (s *Switch) connsAt(m *walkMemo) bool {
	if len(s.ct.conns) == 0 {
		return false
	}
	for i := range m.n {
		if s.ct.mayHavePair(&m.layers[i]) {
			return true
		}
	}
	return false
}

// forgetWalks empties the memo, so that it does not keep a replaced
// compiled state (and its policy state) alive.
func (s *Switch) forgetWalks() {
	clear(s.walks)
}

// walkSlot picks a key's memo entry from the fields other than its ports.
func walkSlot(k *hal.FlowKey) int {
	le := binary.LittleEndian
	h := le.Uint64(k.IPSrc[8:16]) ^ le.Uint64(k.IPDst[8:16])*0x9e3779b97f4a7c15
	h ^= le.Uint64(k.IPSrc[0:8]) ^ le.Uint64(k.IPDst[0:8])<<1
	h ^= uint64(k.InPort)<<32 | uint64(k.VNI)
	h ^= le.Uint64(k.TunSrc[8:16])
	h *= 0xbf58476d1ce4e5b9
	return int(h >> 58) // 64 entries
}

// sameButPorts reports whether a (ports zeroed) and k differ at most in
// their transport ports.
func sameButPorts(a, k *hal.FlowKey) bool {
	b := *k
	b.L4Src, b.L4Dst = 0, 0
	return *a == b
}
