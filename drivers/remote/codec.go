package remote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"

	"github.com/nicpath/nicpath/hal"
)

// The RPC codec. Every message travels inside the secure channel's
// plaintext stream as
//
//	0  length (4, big endian): bytes after this field
//	4  type (1)
//	5  request id (4): echoed by the reply; 0 for unsolicited messages
//	9  body, by type (see the msg* constants and the encode/decode pairs)
//
// Integers inside bodies are big endian when fixed-width and unsigned
// varints (encoding/binary's Uvarint) when they are counts, lengths or
// values that are usually small. A decoder never panics and never reads
// past its input; it refuses trailing bytes, so one value has one encoding.

// ErrMalformed is a message that does not follow the codec (a truncated
// body, an out-of-range count, trailing bytes). A peer that sends one is
// disconnected: the frame authenticated, so the peer itself is broken.
var ErrMalformed = errors.New("remote: malformed message")

const (
	msgHeaderLen = 9
	// DefaultMaxMessage bounds one message (an Apply batch, a dump chunk):
	// 64 MiB holds a batch of more than 200k exact-match rules, more than
	// any driver's MaxBatch needs, and bounds what a peer can make the
	// other end buffer.
	DefaultMaxMessage = 64 << 20
	// maxString bounds every string on the wire (names, error texts).
	maxString = 1 << 16
	// maxErrDepth bounds nested errors (an OpError around an error).
	maxErrDepth = 4
)

// Message types. The wire values are part of the protocol: never renumber.
const (
	// host → NIC
	msgHello        = 1  // version, credit, keepalive, client id
	msgValidate     = 2  // rule → error
	msgApply        = 3  // one segment of a batch: flags, total, start, ops → applyResult messages
	msgDump         = 4  // → dumpChunk messages, then a reply
	msgActivate     = 5  // scope, gen → error
	msgActiveGen    = 6  // scope → error, gen
	msgInject       = 7  // port, frames → error
	msgRuleCounters = 8  // ids → error, counters
	msgPortCounters = 9  // port → error, port counters
	msgStats        = 10 // → error, stats
	msgSealKey      = 11 // a securechan key message (register or revoke) → error
	msgTunnelEP     = 12 // tunnel endpoint → error
	msgCredit       = 13 // n: the host has room for n more exceptions
	msgPing         = 14 // → pong
	msgAddresses    = 15 // securechan mapping messages → error, an ack status each

	// NIC → host
	msgHelloOK      = 64 // server instance, session, caps, ports, seal key
	msgHelloRefused = 65 // error
	msgReply        = 66 // error, then a body that depends on the request
	msgApplyResult  = 67 // start, done flag, results of ops[start:start+n]
	msgDumpChunk    = 68 // rule infos
	msgExceptions   = 69 // exceptions
	msgPong         = 70
	msgRefused      = 71 // the server refused a frame: reason, detail; it closes next
	msgLearned      = 72 // securechan learned-address messages
	msgLearnedAddrs = 73 // the served NIC's learned addresses (hal.AddressLearner)
)

// enc appends to a buffer. lastActs is the action list of the message's
// previous rule: a rule with the very same list (the vswitch interns them,
// drivers share them between rules) sends a one-byte reference instead.
type enc struct {
	b        []byte
	lastActs []hal.Action
	// lastKey and lastMask are the bases of keys and masks (see flowKey):
	// nil for the zero key, else the previous rule's. stable says that the
	// rules being encoded stay put and unchanged for the whole message (an
	// Apply's ops, which the caller does not touch until it returns), so
	// that the bases can point into them; otherwise they point to saved,
	// copies (a Dump's rules may live in a buffer the NIC reuses).
	lastKey  *hal.FlowKey
	lastMask *hal.FlowKey
	stable   bool
	saved    [2]hal.FlowKey
	last     ruleHead // the previous rule's ID, priority, cookie, scope, generation
}

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) uv(v uint64) {
	if v < 0x80 { // most counts, IDs of small tables, the action reference
		e.b = append(e.b, byte(v))
		return
	}
	e.b = binary.AppendUvarint(e.b, v)
}
func (e *enc) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}
func (e *enc) bytes(p []byte) { e.uv(uint64(len(p))); e.b = append(e.b, p...) }
func (e *enc) str(s string) {
	if len(s) > maxString {
		s = s[:maxString]
	}
	e.uv(uint64(len(s)))
	e.b = append(e.b, s...)
}
func (e *enc) mac(m hal.MAC) { e.b = append(e.b, m[:]...) }

// begin starts a message; end fills in its length.
func (e *enc) begin(typ uint8, id uint32) int {
	e.lastActs, e.lastKey, e.lastMask, e.stable, e.last = nil, nil, nil, false, ruleHead{}
	start := len(e.b)
	e.b = append(e.b, 0, 0, 0, 0, typ)
	e.u32(id)
	return start
}

func (e *enc) end(start int) {
	binary.BigEndian.PutUint32(e.b[start:], uint32(len(e.b)-start-4))
}

// addr: 0 = the zero Addr, 4 = IPv4 (4 bytes), 6 = IPv6 (16), 7 = IPv6
// with a zone (16 and a string).
func (e *enc) addr(a netip.Addr) {
	switch {
	case !a.IsValid():
		e.u8(0)
	case a.Is4():
		e.u8(4)
		v := a.As4()
		e.b = append(e.b, v[:]...)
	case a.Zone() != "":
		e.u8(7)
		v := a.As16()
		e.b = append(e.b, v[:]...)
		e.str(a.Zone())
	default:
		e.u8(6)
		v := a.As16()
		e.b = append(e.b, v[:]...)
	}
}

// a16 is a FlowKey address: 0 = all zero, 1 = all ones, 4 = IPv4-mapped
// (::ffff:a.b.c.d, 4 bytes follow), 16 = raw. Exact IPv4 rules, the common
// case, take 5 bytes per address instead of 16 and 1 per mask.
func (e *enc) a16(v [16]byte) {
	switch {
	case v == [16]byte{}:
		e.u8(0)
	case v == ones16:
		e.u8(1)
	case [12]byte(v[:12]) == v4prefix:
		e.u8(4)
		e.b = append(e.b, v[12:]...)
	default:
		e.u8(16)
		e.b = append(e.b, v[:]...)
	}
}

var (
	ones16   = [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	v4prefix = [12]byte{10: 0xff, 11: 0xff}
)

// dec reads from a buffer; the first failure sticks and every later read
// returns zero values.
type dec struct {
	b        []byte
	err      error
	lastActs []hal.Action // the previous rule's actions (see enc)
	haveLast bool
	lastKey  *hal.FlowKey // the bases of keys and masks (see flowKey): nil
	lastMask *hal.FlowKey // for the zero key, else the previous rule's
	pooled   int          // actions allocated in pools (see rule)
	last     ruleHead     // the previous rule's head (see enc)
}

func (d *dec) fail() {
	if d.err == nil {
		d.err = ErrMalformed
	}
	d.b = nil
}

func (d *dec) take(n int) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		d.fail()
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *dec) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *dec) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *dec) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *dec) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *dec) uv() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) > 0 && d.b[0] < 0x80 { // a one-byte varint, the usual
		v := uint64(d.b[0])
		d.b = d.b[1:]
		return v
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items each at least min bytes long, refusing one
// the remaining input cannot hold (so that a forged count cannot make the
// decoder allocate much).
func (d *dec) count(min int) int {
	v := d.uv()
	if d.err != nil {
		return 0
	}
	if min < 1 {
		min = 1
	}
	if v > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(v)
}

func (d *dec) bool() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail()
	return false
}

func (d *dec) bytes() []byte {
	n := d.count(1)
	return d.take(n)
}

func (d *dec) str() string {
	n := d.uv()
	if n > maxString {
		d.fail()
		return ""
	}
	return string(d.take(int(n)))
}

func (d *dec) mac() (m hal.MAC) {
	if p := d.take(6); p != nil {
		copy(m[:], p)
	}
	return m
}

func (d *dec) addr() netip.Addr {
	switch d.u8() {
	case 0:
		return netip.Addr{}
	case 4:
		if p := d.take(4); p != nil {
			return netip.AddrFrom4([4]byte(p))
		}
	case 6:
		if p := d.take(16); p != nil {
			a := netip.AddrFrom16([16]byte(p))
			return a
		}
	case 7:
		p := d.take(16)
		z := d.str()
		if p != nil && z != "" {
			return netip.AddrFrom16([16]byte(p)).WithZone(z)
		}
		d.fail()
	default:
		d.fail()
	}
	return netip.Addr{}
}

func (d *dec) a16() (v [16]byte) {
	switch d.u8() {
	case 0:
	case 1:
		v = ones16
	case 4:
		if p := d.take(4); p != nil {
			copy(v[:], v4prefix[:])
			copy(v[12:], p)
		}
	case 16:
		if p := d.take(16); p != nil {
			copy(v[:], p)
		}
	default:
		d.fail()
	}
	return v
}

// done reports the decoder's error, refusing trailing bytes.
func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = ErrMalformed
	}
	return d.err
}

// Flow keys go as a difference from a base: a bitmap of the fields that
// differ from it, then those fields. The base is the message's previous
// key (for a rule's key) or previous mask (for its mask), zero at the start
// of a message: a batch of flows from one VM shares most fields and every
// mask, so each rule carries little more than its addresses and ports.
const (
	fkTunSrc = 1 << iota
	fkTunDst
	fkIPSrc
	fkIPDst
	fkInPort
	fkVNI
	fkEthSrc
	fkEthDst
	fkEthType
	fkVLAN
	fkL4Src
	fkL4Dst
	fkProto
	fkTunKind
	fkAll = 1<<iota - 1
)

// zeroKey is the base of a message's first key and mask.
var zeroKey hal.FlowKey

func (e *enc) flowKey(k, base *hal.FlowKey) {
	if base == nil {
		base = &zeroKey
	}
	var m uint16
	if k.TunSrc != base.TunSrc {
		m |= fkTunSrc
	}
	if k.TunDst != base.TunDst {
		m |= fkTunDst
	}
	if k.IPSrc != base.IPSrc {
		m |= fkIPSrc
	}
	if k.IPDst != base.IPDst {
		m |= fkIPDst
	}
	if k.InPort != base.InPort {
		m |= fkInPort
	}
	if k.VNI != base.VNI {
		m |= fkVNI
	}
	if k.EthSrc != base.EthSrc {
		m |= fkEthSrc
	}
	if k.EthDst != base.EthDst {
		m |= fkEthDst
	}
	if k.EthType != base.EthType {
		m |= fkEthType
	}
	if k.VLAN != base.VLAN {
		m |= fkVLAN
	}
	if k.L4Src != base.L4Src {
		m |= fkL4Src
	}
	if k.L4Dst != base.L4Dst {
		m |= fkL4Dst
	}
	if k.Proto != base.Proto {
		m |= fkProto
	}
	if k.TunKind != base.TunKind {
		m |= fkTunKind
	}
	e.u16(m)
	if m == 0 {
		return
	}
	if m&fkTunSrc != 0 {
		e.a16(k.TunSrc)
	}
	if m&fkTunDst != 0 {
		e.a16(k.TunDst)
	}
	if m&fkIPSrc != 0 {
		e.a16(k.IPSrc)
	}
	if m&fkIPDst != 0 {
		e.a16(k.IPDst)
	}
	if m&fkInPort != 0 {
		e.u32(uint32(k.InPort))
	}
	if m&fkVNI != 0 {
		e.u32(k.VNI)
	}
	if m&fkEthSrc != 0 {
		e.mac(k.EthSrc)
	}
	if m&fkEthDst != 0 {
		e.mac(k.EthDst)
	}
	if m&fkEthType != 0 {
		e.u16(k.EthType)
	}
	if m&fkVLAN != 0 {
		e.u16(k.VLAN)
	}
	if m&fkL4Src != 0 {
		e.u16(k.L4Src)
	}
	if m&fkL4Dst != 0 {
		e.u16(k.L4Dst)
	}
	if m&fkProto != 0 {
		e.u8(k.Proto)
	}
	if m&fkTunKind != 0 {
		e.u8(uint8(k.TunKind))
	}
}

// flowKey decodes a key as a difference from base (see enc.flowKey); nil
// is the zero key. k and base may be the same key.
func (d *dec) flowKey(k, base *hal.FlowKey) {
	m := d.u16()
	if m&^fkAll != 0 {
		d.fail()
		return
	}
	if base == nil {
		*k = hal.FlowKey{}
	} else if k != base {
		*k = *base
	}
	if m == 0 {
		return
	}
	if m&fkTunSrc != 0 {
		k.TunSrc = d.a16()
	}
	if m&fkTunDst != 0 {
		k.TunDst = d.a16()
	}
	if m&fkIPSrc != 0 {
		k.IPSrc = d.a16()
	}
	if m&fkIPDst != 0 {
		k.IPDst = d.a16()
	}
	if m&fkInPort != 0 {
		k.InPort = hal.PortID(d.u32())
	}
	if m&fkVNI != 0 {
		k.VNI = d.u32()
	}
	if m&fkEthSrc != 0 {
		k.EthSrc = d.mac()
	}
	if m&fkEthDst != 0 {
		k.EthDst = d.mac()
	}
	if m&fkEthType != 0 {
		k.EthType = d.u16()
	}
	if m&fkVLAN != 0 {
		k.VLAN = d.u16()
	}
	if m&fkL4Src != 0 {
		k.L4Src = d.u16()
	}
	if m&fkL4Dst != 0 {
		k.L4Dst = d.u16()
	}
	if m&fkProto != 0 {
		k.Proto = d.u8()
	}
	if m&fkTunKind != 0 {
		k.TunKind = hal.EncapKind(d.u8())
	}
}

// Actions carry only the fields their kind uses (hal.Action's contract:
// "only the fields its Kind uses are read").
func (e *enc) action(a *hal.Action) {
	e.u8(uint8(a.Kind))
	switch a.Kind {
	case hal.ActionSetEthSrc, hal.ActionSetEthDst:
		e.mac(a.MAC)
	case hal.ActionSetIPSrc, hal.ActionSetIPDst:
		e.addr(a.Addr)
	case hal.ActionSetL4Src, hal.ActionSetL4Dst:
		e.u16(a.L4Port)
	case hal.ActionPushVLAN:
		e.u16(a.VLAN)
	case hal.ActionOutput:
		e.u32(uint32(a.OutPort))
	case hal.ActionDrop, hal.ActionToHost:
		e.u8(uint8(a.Reason))
	case hal.ActionEncap:
		x := &a.Encap
		e.u8(uint8(x.Kind))
		e.u32(x.VNI)
		e.addr(x.Src)
		e.addr(x.Dst)
		e.mac(x.SrcMAC)
		e.mac(x.DstMAC)
		e.u8(x.TTL)
		e.u16(x.DstPort)
		e.u8(x.FlowID)
		e.bool(x.GeneveOptions != nil)
		if x.GeneveOptions != nil {
			e.bytes(x.GeneveOptions)
		}
	}
}

func (d *dec) action(a *hal.Action) {
	*a = hal.Action{Kind: hal.ActionKind(d.u8())}
	switch a.Kind {
	case hal.ActionSetEthSrc, hal.ActionSetEthDst:
		a.MAC = d.mac()
	case hal.ActionSetIPSrc, hal.ActionSetIPDst:
		a.Addr = d.addr()
	case hal.ActionSetL4Src, hal.ActionSetL4Dst:
		a.L4Port = d.u16()
	case hal.ActionPushVLAN:
		a.VLAN = d.u16()
	case hal.ActionOutput:
		a.OutPort = hal.PortID(d.u32())
	case hal.ActionDrop, hal.ActionToHost:
		a.Reason = hal.Reason(d.u8())
	case hal.ActionEncap:
		x := &a.Encap
		x.Kind = hal.EncapKind(d.u8())
		x.VNI = d.u32()
		x.Src = d.addr()
		x.Dst = d.addr()
		x.SrcMAC = d.mac()
		x.DstMAC = d.mac()
		x.TTL = d.u8()
		x.DstPort = d.u16()
		x.FlowID = d.u8()
		if d.bool() {
			x.GeneveOptions = append([]byte{}, d.bytes()...)
		}
	}
}

// A rule's head (ID, priority, cookie, scope, generation) goes as a
// difference from the message's previous rule (or deleted ID), zero at
// the start of a message: a flags byte, then the fields it does not say
// are as before. A batch's rules mostly have consecutive IDs and the same
// priority, cookie, scope and generation, so that the head takes one byte.
// (Protocol version 2; version 1 sent every field.)
type ruleHead struct {
	id         hal.RuleID
	priority   uint16
	cookie     hal.Cookie
	scope      hal.Scope
	generation hal.Generation
}

const (
	rhNextID   = 1 << iota // ID: the previous one + 1
	rhPriority             // priority: the previous one
	rhCookie               // cookie: the previous one
	rhScope                // scope: the previous one
	rhGen                  // generation: the previous one
	rhAll      = 1<<iota - 1
)

func (e *enc) ruleHead(r *hal.Rule) {
	var f uint8
	l := &e.last
	if r.ID == l.id+1 {
		f |= rhNextID
	}
	if r.Priority == l.priority {
		f |= rhPriority
	}
	if r.Cookie == l.cookie {
		f |= rhCookie
	}
	if r.Scope == l.scope {
		f |= rhScope
	}
	if r.Generation == l.generation {
		f |= rhGen
	}
	e.u8(f)
	if f&rhNextID == 0 {
		e.uv(uint64(r.ID))
	}
	if f&rhPriority == 0 {
		e.u16(r.Priority)
	}
	if f&rhCookie == 0 {
		e.uv(uint64(r.Cookie))
	}
	if f&rhScope == 0 {
		e.uv(uint64(r.Scope))
	}
	if f&rhGen == 0 {
		e.uv(uint64(r.Generation))
	}
	*l = ruleHead{r.ID, r.Priority, r.Cookie, r.Scope, r.Generation}
}

func (d *dec) ruleHead(r *hal.Rule) {
	f := d.u8()
	if f&^rhAll != 0 {
		d.fail()
		return
	}
	l := &d.last
	if f&rhNextID != 0 {
		r.ID = l.id + 1
	} else {
		r.ID = hal.RuleID(d.uv())
	}
	if f&rhPriority != 0 {
		r.Priority = l.priority
	} else {
		r.Priority = d.u16()
	}
	if f&rhCookie != 0 {
		r.Cookie = l.cookie
	} else {
		r.Cookie = hal.Cookie(d.uv())
	}
	if f&rhScope != 0 {
		r.Scope = l.scope
	} else {
		r.Scope = hal.Scope(d.u32v())
	}
	if f&rhGen != 0 {
		r.Generation = l.generation
	} else {
		r.Generation = hal.Generation(d.u32v())
	}
	*l = ruleHead{r.ID, r.Priority, r.Cookie, r.Scope, r.Generation}
}

func (e *enc) rule(r *hal.Rule) {
	e.ruleHead(r)
	e.flowKey(&r.Match.Key, e.lastKey)
	if e.lastMask != nil && r.Match.Mask == *e.lastMask {
		e.u16(0) // the previous rule's mask, as a batch's rules mostly have
	} else {
		e.flowKey(&r.Match.Mask, e.lastMask)
	}
	if e.stable {
		e.lastKey, e.lastMask = &r.Match.Key, &r.Match.Mask
	} else {
		e.saved = [2]hal.FlowKey{r.Match.Key, r.Match.Mask}
		e.lastKey, e.lastMask = &e.saved[0], &e.saved[1]
	}
	// Actions: 0 = the previous rule's list; n+1 = n actions follow.
	a := r.Actions
	if len(a) > 0 && len(a) == len(e.lastActs) && &a[0] == &e.lastActs[0] {
		e.u8(0)
		return
	}
	e.uv(uint64(len(a)) + 1)
	for i := range a {
		e.action(&a[i])
	}
	e.lastActs = a
}

// rule decodes into r; actions are carved out of *pool when it has room,
// so that a batch's rules share one allocation.
func (d *dec) rule(r *hal.Rule, pool *[]hal.Action) {
	d.ruleHead(r)
	// The bases point at the previous rule decoded: its memory holds it
	// until this one is decoded (a caller that decodes every rule into the
	// same variable makes k and base the same key).
	d.flowKey(&r.Match.Key, d.lastKey)
	d.flowKey(&r.Match.Mask, d.lastMask)
	d.lastKey, d.lastMask = &r.Match.Key, &r.Match.Mask
	if len(d.b) > 0 && d.b[0] == 0 {
		d.b = d.b[1:]
		if !d.haveLast {
			d.fail()
		}
		r.Actions = d.lastActs
		return
	}
	v := d.uv() // n+1
	if d.err != nil {
		return
	}
	if v == 0 || v-1 > uint64(len(d.b)) { // each action takes a byte at least
		d.fail()
		return
	}
	n := int(v - 1)
	d.haveLast = true
	if n == 0 {
		r.Actions, d.lastActs = nil, nil
		return
	}
	var acts []hal.Action
	if pool != nil {
		if cap(*pool)-len(*pool) < n {
			*pool = make([]hal.Action, 0, max(n, 256))
			d.pooled += cap(*pool)
		}
		p := *pool
		acts = p[len(p) : len(p)+n : len(p)+n]
		*pool = p[:len(p)+n]
	} else {
		acts = make([]hal.Action, n)
	}
	for i := range acts {
		d.action(&acts[i])
	}
	r.Actions, d.lastActs = acts, acts
}

func (d *dec) u32v() uint32 {
	v := d.uv()
	if v > math.MaxUint32 {
		d.fail()
		return 0
	}
	return uint32(v)
}

// Ops: a delete carries only its rule's ID, as a difference from the
// previous rule's (see ruleHead): opNextID in its kind byte when it is
// that one + 1, else the ID.
const opNextID = 0x80

func (e *enc) op(o *hal.Op) {
	if o.Kind == hal.OpDelete {
		if o.Rule.ID == e.last.id+1 {
			e.u8(uint8(o.Kind) | opNextID)
		} else {
			e.u8(uint8(o.Kind))
			e.uv(uint64(o.Rule.ID))
		}
		e.last.id = o.Rule.ID
		return
	}
	k := uint8(o.Kind)
	if k >= opNextID {
		k = 0 // no kind either: the NIC side refuses the op as it would this one
	}
	e.u8(k)
	e.rule(&o.Rule)
}

func (d *dec) op(o *hal.Op, pool *[]hal.Action) {
	k := d.u8()
	o.Kind = hal.OpKind(k &^ opNextID)
	if o.Kind == hal.OpDelete {
		id := d.last.id + 1
		if k&opNextID == 0 {
			id = hal.RuleID(d.uv())
		}
		o.Rule = hal.Rule{ID: id}
		d.last.id = id
		return
	}
	if k&opNextID != 0 {
		d.fail() // the flag is a delete's only
		return
	}
	d.rule(&o.Rule, pool)
}

func (e *enc) caps(c *hal.Capabilities) {
	e.str(c.Driver)
	e.str(c.Device)
	e.u8(uint8(c.Location))
	e.uv(uint64(max(c.MaxRules, 0)))
	e.uv(uint64(max(c.MaxBatch, 0)))
	e.u32(uint32(c.MatchFields))
	e.u32(uint32(c.MaskedFields))
	e.u32(uint32(c.Actions))
	e.u8(uint8(c.Encaps))
	e.u8(uint8(c.Decaps))
	var f uint16
	for i, b := range []bool{c.Priorities, c.Counters.PerRule, c.Counters.PerPort, c.Counters.BytesIncludeL2,
		c.Generations, c.Crypto, c.ExceptionPath, c.AtomicBatch, c.TunnelFilter, c.AddressLearning, c.TunnelMissesUnseen, c.SealedDrop} {
		if b {
			f |= 1 << i
		}
	}
	e.u16(f)
	e.uv(uint64(max(c.MaxScopes, 0)))
	e.uv(uint64(len(c.Notes)))
	for _, n := range c.Notes {
		e.str(n)
	}
}

const capsFlags = 1<<12 - 1

func (d *dec) caps(c *hal.Capabilities) {
	c.Driver = d.str()
	c.Device = d.str()
	c.Location = hal.Location(d.u8())
	c.MaxRules = d.int()
	c.MaxBatch = d.int()
	c.MatchFields = hal.MatchField(d.u32())
	c.MaskedFields = hal.MatchField(d.u32())
	c.Actions = hal.ActionSet(d.u32())
	c.Encaps = hal.EncapSet(d.u8())
	c.Decaps = hal.EncapSet(d.u8())
	f := d.u16()
	if f&^capsFlags != 0 {
		d.fail()
	}
	bit := func(i int) bool { return f&(1<<i) != 0 }
	c.Priorities, c.Counters.PerRule, c.Counters.PerPort, c.Counters.BytesIncludeL2 = bit(0), bit(1), bit(2), bit(3)
	c.Generations, c.Crypto, c.ExceptionPath, c.AtomicBatch, c.TunnelFilter = bit(4), bit(5), bit(6), bit(7), bit(8)
	c.AddressLearning, c.TunnelMissesUnseen, c.SealedDrop = bit(9), bit(10), bit(11)
	c.MaxScopes = d.int()
	n := d.count(1)
	c.Notes = nil
	for range n {
		c.Notes = append(c.Notes, d.str())
	}
}

func (d *dec) int() int {
	v := d.uv()
	if v > math.MaxInt32 {
		d.fail()
		return 0
	}
	return int(v)
}

func (e *enc) ports(ps []hal.Port) {
	e.uv(uint64(len(ps)))
	for _, p := range ps {
		e.u32(uint32(p.ID))
		e.str(p.Name)
		e.u8(uint8(p.Kind))
		e.mac(p.MAC)
		e.uv(uint64(max(p.MTU, 0)))
	}
}

func (d *dec) ports() []hal.Port {
	n := d.count(4 + 1 + 1 + 6 + 1)
	out := make([]hal.Port, 0, n)
	for range n {
		var p hal.Port
		p.ID = hal.PortID(d.u32())
		p.Name = d.str()
		p.Kind = hal.PortKind(d.u8())
		p.MAC = d.mac()
		p.MTU = d.int()
		out = append(out, p)
	}
	return out
}

func (e *enc) counters(c hal.Counters) { e.uv(c.Packets); e.uv(c.Bytes) }
func (d *dec) counters() hal.Counters  { return hal.Counters{Packets: d.uv(), Bytes: d.uv()} }

func (e *enc) stats(s *hal.Stats) {
	for _, arr := range [][hal.NumReasons]uint64{s.Exceptions, s.Drops} {
		e.uv(uint64(len(arr)))
		for _, v := range arr {
			e.uv(v)
		}
	}
}

// stats reads both arrays; a peer that knows more reasons than we do
// sends longer arrays, whose extra entries are dropped.
func (d *dec) stats(s *hal.Stats) {
	for _, arr := range []*[hal.NumReasons]uint64{&s.Exceptions, &s.Drops} {
		n := d.count(1)
		for i := range n {
			v := d.uv()
			if i < len(arr) {
				arr[i] = v
			}
		}
	}
}

func (e *enc) ruleInfo(ri *hal.RuleInfo) {
	e.rule(&ri.Rule)
	e.u8(uint8(ri.Location))
	e.bool(ri.Live)
	e.counters(ri.Counters)
}

func (d *dec) ruleInfo(ri *hal.RuleInfo, pool *[]hal.Action) {
	d.rule(&ri.Rule, pool)
	ri.Location = hal.Location(d.u8())
	ri.Live = d.bool()
	ri.Counters = d.counters()
}

func (e *enc) tunnelEndpoint(ep *hal.TunnelEndpoint) {
	e.u32(uint32(ep.Port))
	e.mac(ep.MAC)
	for _, as := range [][]netip.Addr{ep.Addrs, ep.Groups} {
		e.uv(uint64(len(as)))
		for _, a := range as {
			e.addr(a)
		}
	}
}

func (d *dec) tunnelEndpoint(ep *hal.TunnelEndpoint) {
	ep.Port = hal.PortID(d.u32())
	ep.MAC = d.mac()
	for _, as := range []*[]netip.Addr{&ep.Addrs, &ep.Groups} {
		n := d.count(1)
		*as = nil
		for range n {
			*as = append(*as, d.addr())
		}
	}
}

// Exceptions: in-port, reason, VNI, rule, truncated, frame.
func (e *enc) exception(x *hal.Exception) {
	e.u32(uint32(x.InPort))
	e.u8(uint8(x.Reason))
	e.uv(uint64(x.VNI))
	e.uv(uint64(x.Rule))
	e.bool(x.Truncated)
	e.bytes(x.Buf[:x.Len])
}

// exception decodes one exception; its frame aliases the input.
func (d *dec) exception(x *hal.Exception) {
	x.InPort = hal.PortID(d.u32())
	x.Reason = hal.Reason(d.u8())
	x.VNI = d.u32v()
	x.Rule = hal.RuleID(d.uv())
	x.Truncated = d.bool()
	x.Buf = d.bytes()
	x.Len = len(x.Buf)
}

// Errors keep what callers branch on: the hal sentinel (errors.Is), and the
// structure of hal's typed errors (UnsupportedError's field, RuleError's
// field, OpError's operation and rule).
const (
	errNone = iota
	errNotSupported
	errTableFull
	errClosed
	errExists
	errNotFound
	errInvalidRule
	errNotApplied
	errBatchTooLarge
	errShortResults
	errCanceled
	errDeadline
	errOther
	errCodeEnd
)

var errSentinels = [...]error{
	errNotSupported:  hal.ErrNotSupported,
	errTableFull:     hal.ErrTableFull,
	errClosed:        hal.ErrClosed,
	errExists:        hal.ErrExists,
	errNotFound:      hal.ErrNotFound,
	errInvalidRule:   hal.ErrInvalidRule,
	errNotApplied:    hal.ErrNotApplied,
	errBatchTooLarge: hal.ErrBatchTooLarge,
	errShortResults:  hal.ErrShortResults,
}

const (
	formPlain = iota
	formUnsupported
	formRule
	formOp
)

func errCode(err error) uint8 {
	for c := errNotSupported; c <= errShortResults; c++ {
		if errors.Is(err, errSentinels[c]) {
			return uint8(c)
		}
	}
	switch {
	case errors.Is(err, errCanceledSentinel):
		return errCanceled
	case errors.Is(err, errDeadlineSentinel):
		return errDeadline
	}
	return errOther
}

func (e *enc) error(err error) { e.errorDepth(err, 0) }

func (e *enc) errorDepth(err error, depth int) {
	if err == nil {
		e.u8(errNone)
		return
	}
	e.u8(errCode(err))
	switch x := err.(type) {
	case *hal.UnsupportedError:
		e.u8(formUnsupported)
		e.str(x.Driver)
		e.str(x.Field)
		e.str(x.Reason)
		return
	case *hal.RuleError:
		e.u8(formRule)
		e.str(x.Field)
		e.str(x.Reason)
		return
	case *hal.OpError:
		if depth < maxErrDepth {
			e.u8(formOp)
			e.str(x.Driver)
			e.str(x.Op)
			e.uv(uint64(x.Rule))
			e.errorDepth(x.Err, depth+1)
			return
		}
	}
	e.u8(formPlain)
	e.str(err.Error())
}

func (d *dec) error() error { return d.errorDepth(0) }

func (d *dec) errorDepth(depth int) error {
	code := d.u8()
	if code == errNone || d.err != nil {
		return nil
	}
	if code >= errCodeEnd || depth > maxErrDepth {
		d.fail()
		return nil
	}
	switch d.u8() {
	case formPlain:
		return &PeerError{Msg: d.str(), code: code}
	case formUnsupported:
		if code != errNotSupported {
			d.fail()
			return nil
		}
		return &hal.UnsupportedError{Driver: d.str(), Field: d.str(), Reason: d.str()}
	case formRule:
		if code != errInvalidRule {
			d.fail()
			return nil
		}
		return &hal.RuleError{Field: d.str(), Reason: d.str()}
	case formOp:
		oe := &hal.OpError{Driver: d.str(), Op: d.str(), Rule: hal.RuleID(d.uv())}
		oe.Err = d.errorDepth(depth + 1)
		return oe
	}
	d.fail()
	return nil
}

// PeerError is an error the served NIC returned, as it crossed the channel:
// its text, and the hal sentinel it wrapped (errors.Is finds it).
type PeerError struct {
	Msg  string
	code uint8
}

func (e *PeerError) Error() string { return e.Msg }

// Unwrap returns the hal sentinel the served NIC's error wrapped, if any.
func (e *PeerError) Unwrap() error {
	switch {
	case int(e.code) < len(errSentinels) && errSentinels[e.code] != nil:
		return errSentinels[e.code]
	case e.code == errCanceled:
		return errCanceledSentinel
	case e.code == errDeadline:
		return errDeadlineSentinel
	}
	return nil
}

// msgName names a message type for logs and errors.
func msgName(t uint8) string {
	names := map[uint8]string{
		msgHello: "hello", msgValidate: "validate", msgApply: "apply", msgDump: "dump", msgActivate: "activate",
		msgActiveGen: "active-generation", msgInject: "inject", msgRuleCounters: "rule-counters",
		msgPortCounters: "port-counters", msgStats: "stats", msgSealKey: "seal-key", msgTunnelEP: "tunnel-endpoint",
		msgCredit: "credit", msgPing: "ping", msgHelloOK: "hello-ok", msgHelloRefused: "hello-refused",
		msgReply: "reply", msgApplyResult: "apply-result", msgDumpChunk: "dump-chunk", msgExceptions: "exceptions",
		msgPong: "pong", msgRefused: "refused", msgAddresses: "addresses", msgLearned: "learned",
		msgSealRoutes:   "sealed-routes",
		msgLearnedAddrs: "learned-addresses",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", t)
}

// count32 reads a fixed 4-byte count (used where the writer fills the
// count in after the items), with count's bound.
func (d *dec) count32(min int) int {
	v := d.u32()
	if d.err != nil || uint64(v) > uint64(len(d.b)/max(min, 1)) {
		d.fail()
		return 0
	}
	return int(v)
}

// learnedAddrs encodes a batch of the served NIC's learned addresses:
// count, then per address its port, kind, MAC and address.
func (e *enc) learnedAddrs(as []hal.LearnedAddress) {
	st := e.begin(msgLearnedAddrs, 0)
	e.uv(uint64(len(as)))
	for i := range as {
		e.uv(uint64(as[i].Port))
		e.u8(uint8(as[i].Kind))
		e.mac(as[i].MAC)
		e.addr(as[i].Addr)
	}
	e.end(st)
}

// learnedAddrs decodes what enc.learnedAddrs wrote. A kind other than seen
// or announced, an address that is not a unicast IPv4 or IPv6 one without
// a zone, or a port that is not a PortID is malformed.
func (d *dec) learnedAddrs() []hal.LearnedAddress {
	n := d.count(1 + 1 + 6 + 5)
	out := make([]hal.LearnedAddress, 0, n)
	for range n {
		var a hal.LearnedAddress
		port := d.uv()
		a.Kind = hal.LearnKind(d.u8())
		a.MAC = d.mac()
		a.Addr = d.addr()
		if d.err != nil {
			return nil
		}
		if port > 1<<32-1 || (a.Kind != hal.LearnSeen && a.Kind != hal.LearnAnnounced) || !a.Addr.IsValid() || a.Addr.Zone() != "" ||
			a.Addr.Is4In6() || a.Addr.IsMulticast() || a.Addr.IsUnspecified() {
			d.fail()
			return nil
		}
		a.Port = hal.PortID(port)
		out = append(out, a)
	}
	return out
}
