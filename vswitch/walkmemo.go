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
// most between connections: a walk that never read the ports (no ACL with
// port ranges on its path, no connection table to consult, no tracked
// connection opened or named) gives every connection between the same two
// endpoints the same verdict, so it is walked once.
type walkMemo struct {
	c   *compiled // nil: empty
	key hal.FlowKey
	v   verdict
}

// classifyFlow is c.classify for a flow on the data path (no tracer): a key
// whose walk is remembered takes the remembered verdict, unless
// Config.DisableWalkMemo.
//
// A remembered verdict stays right as long as c and the connection table
// do: compiled states are immutable (an update makes a new one, so the
// pointer tells them apart), and a walk is remembered, and a memo used,
// only while the connection table is empty, since a walk that consults it
// reads the ports. The TTL only matters when it is 1 or less (a routed
// packet is dropped); such keys are walked every time.
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
	if !hasPorts(k.Proto) || len(s.ct.conns) > 0 || s.cfg.DisableWalkMemo {
		return c.classifyHinted(k, s.cfg.Uplink, ttl, s.ct, nil, v, hint)
	}
	m := &s.walks[walkSlot(k)]
	if m.c == c && sameButPorts(&m.key, k) {
		*v = m.v
		s.stats.walksRemembered++
		return true
	}
	if c.classifyHinted(k, s.cfg.Uplink, ttl, s.ct, nil, v, hint) {
		m.c, m.key, m.v = c, *k, *v
		m.key.L4Src, m.key.L4Dst = 0, 0
		return true
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
