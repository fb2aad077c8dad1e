package remote

import (
	"fmt"
	"math"
	"slices"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/securechan"
)

// ProtocolVersion is the RPC protocol this package speaks. The client
// offers a range in its hello; the server picks the newest both speak and
// refuses a client whose range ends below the server's minimum, with a
// *VersionError on both ends.
//
// Version 2 sends a rule's head (ID, priority, cookie, scope, generation)
// and a delete's ID as a difference from the previous rule's (see
// ruleHead); this package speaks no older version (oldestVersion), so a
// server configured with a lower MinVersion still refuses version 1.
const ProtocolVersion uint8 = 2

// oldestVersion is the oldest version the codec speaks.
const oldestVersion uint8 = 2

// request is a host → NIC call as the server decodes it.
type request struct {
	typ uint8
	id  uint32

	rule   hal.Rule // validate
	atomic bool     // apply: the batch is all or nothing
	last   bool     // apply: the batch's last segment
	total  int      // apply: operations in the whole batch
	start  int      // apply: index of this segment's first operation
	ops    []hal.Op
	pooled int       // apply: actions allocated for ops since its array was last released (see releaseActions)
	scope  hal.Scope // activate, active generation
	gen    hal.Generation
	port   hal.PortID // inject, port counters
	frames [][]byte   // inject (copies)
	ids    []hal.RuleID
	key    securechan.Message // seal key
	ep     hal.TunnelEndpoint
	n      uint64               // credit
	addrs  []securechan.Message // addresses: mapping updates
	routes []hal.SealedRoute    // sealed routes (of port)
}

// hello is the client's first message.
type hello struct {
	maxVersion, minVersion uint8
	clientID               uint64
	credit                 uint64 // exceptions the host can buffer
	keepaliveMs            uint64 // how often the host pings; the server times out at a multiple
}

func (e *enc) hello(h *hello) {
	st := e.begin(msgHello, 0)
	e.u8(h.maxVersion)
	e.u8(h.minVersion)
	e.u64(h.clientID)
	e.uv(h.credit)
	e.uv(h.keepaliveMs)
	e.end(st)
}

func decodeHello(body []byte, h *hello) error {
	d := dec{b: body}
	h.maxVersion, h.minVersion = d.u8(), d.u8()
	h.clientID = d.u64()
	h.credit = d.uv()
	h.keepaliveMs = d.uv()
	return d.done()
}

// Optional interfaces of the served NIC, as the hello reports them.
const (
	optAtomic = 1 << iota
	optSealed
	optTunnel
	optLearn
	optAll = 1<<iota - 1
)

// helloOK is the server's answer: who it is and what it serves.
type helloOK struct {
	version  uint8
	instance uint64 // random per server process: a change means the NIC side restarted
	session  uint64 // sessions the server accepted before this one
	caps     hal.Capabilities
	ports    []hal.Port
	opts     uint8
	sealKey  [32]byte
}

func (e *enc) helloOK(h *helloOK) {
	st := e.begin(msgHelloOK, 0)
	e.u8(h.version)
	e.u64(h.instance)
	e.u64(h.session)
	e.caps(&h.caps)
	e.ports(h.ports)
	e.u8(h.opts)
	if h.opts&optSealed != 0 {
		e.b = append(e.b, h.sealKey[:]...)
	}
	e.end(st)
}

func decodeHelloOK(body []byte, h *helloOK) error {
	d := dec{b: body}
	h.version = d.u8()
	h.instance = d.u64()
	h.session = d.u64()
	d.caps(&h.caps)
	h.ports = d.ports()
	h.opts = d.u8()
	if h.opts&^optAll != 0 {
		d.fail()
	}
	if h.opts&optSealed != 0 {
		if p := d.take(32); p != nil {
			copy(h.sealKey[:], p)
		}
	}
	return d.done()
}

func (e *enc) helloRefused(ve *VersionError, err error) {
	st := e.begin(msgHelloRefused, 0)
	e.u8(ve.Min)
	e.u8(ve.Max)
	e.error(err)
	e.end(st)
}

func decodeHelloRefused(body []byte) (min, max uint8, err error, derr error) {
	d := dec{b: body}
	min, max = d.u8(), d.u8()
	err = d.error()
	return min, max, err, d.done()
}

// Requests. Each encoder writes one whole message.

func (e *enc) validateReq(id uint32, r *hal.Rule) {
	st := e.begin(msgValidate, id)
	e.rule(r)
	e.end(st)
}

// A batch goes as one request in segments, so that the NIC side decodes
// and applies the first while the host still encodes and seals the next
// (two cores working on one Apply instead of taking turns). The first
// segment is small, so that the NIC side starts soon; each next one is
// twice as large, up to applySegmentMax, so that the NIC gets few, large
// calls (a call has a fixed cost: softnic switches its table copies once
// per call).
const (
	applySegmentFirst = 2048
	applySegmentMax   = 16384
)

// segmentSize is the size of the segment after one of size prev (0: the
// first).
func segmentSize(prev int) int {
	if prev == 0 {
		return applySegmentFirst
	}
	return min(2*prev, applySegmentMax)
}

const (
	applyAtomic = 1 << iota
	applyLast
	applyFlags = 1<<iota - 1
)

func (e *enc) applyReq(id uint32, atomic, last bool, total, start int, seg []hal.Op) {
	st := e.begin(msgApply, id)
	var f uint8
	if atomic {
		f |= applyAtomic
	}
	if last {
		f |= applyLast
	}
	e.u8(f)
	e.uv(uint64(total))
	e.uv(uint64(start))
	e.uv(uint64(len(seg)))
	e.stable = true // the caller's ops: they stay as they are until Apply returns
	for i := range seg {
		e.op(&seg[i])
	}
	e.stable = false
	e.end(st)
}

func (e *enc) emptyReq(typ uint8, id uint32) {
	e.end(e.begin(typ, id))
}

func (e *enc) activateReq(id uint32, scope hal.Scope, gen hal.Generation) {
	st := e.begin(msgActivate, id)
	e.uv(uint64(scope))
	e.uv(uint64(gen))
	e.end(st)
}

func (e *enc) scopeReq(id uint32, scope hal.Scope) {
	st := e.begin(msgActiveGen, id)
	e.uv(uint64(scope))
	e.end(st)
}

func (e *enc) injectReq(id uint32, port hal.PortID, frames [][]byte) {
	st := e.begin(msgInject, id)
	e.u32(uint32(port))
	e.uv(uint64(len(frames)))
	for _, f := range frames {
		e.bytes(f)
	}
	e.end(st)
}

func (e *enc) ruleCountersReq(id uint32, ids []hal.RuleID) {
	st := e.begin(msgRuleCounters, id)
	e.uv(uint64(len(ids)))
	for _, r := range ids {
		e.uv(uint64(r))
	}
	e.end(st)
}

func (e *enc) portReq(id uint32, port hal.PortID) {
	st := e.begin(msgPortCounters, id)
	e.u32(uint32(port))
	e.end(st)
}

// sealKeyReq carries a securechan key message (MsgKeyRegister or
// MsgKeyRevoke), the channel's own encoding of a key registration.
func (e *enc) sealKeyReq(id uint32, m *securechan.Message) error {
	p, err := securechan.AppendMessage(nil, m)
	if err != nil {
		return err
	}
	st := e.begin(msgSealKey, id)
	e.bytes(p)
	e.end(st)
	return nil
}

func (e *enc) tunnelReq(id uint32, ep *hal.TunnelEndpoint) {
	st := e.begin(msgTunnelEP, id)
	e.tunnelEndpoint(ep)
	e.end(st)
}

func (e *enc) credit(n uint64) {
	st := e.begin(msgCredit, 0)
	e.uv(n)
	e.end(st)
}

// decodeRequest decodes a host → NIC message other than the hello. Its
// result shares no memory with body.
// The ops array of r is reused when large enough.
func decodeRequest(typ uint8, id uint32, body []byte, r *request) error {
	*r = request{typ: typ, id: id, ops: r.ops[:0], pooled: r.pooled}
	d := dec{b: body}
	switch typ {
	case msgValidate:
		d.rule(&r.rule, nil)
	case msgApply:
		f := d.u8()
		if f&^applyFlags != 0 {
			d.fail()
		}
		r.atomic, r.last = f&applyAtomic != 0, f&applyLast != 0
		total, start := d.uv(), d.uv()
		// An op takes a byte at least (a delete of the next ID); a segment
		// holds applySegmentMax at most (what the host sends), which bounds
		// the ops array a message can make the server allocate.
		n := d.count(1)
		if n > applySegmentMax || total > math.MaxInt32 || start > total || uint64(n) > total-start || (r.last && start+uint64(n) != total) {
			d.fail()
		}
		if d.err != nil {
			break
		}
		if cap(r.ops) < n {
			r.ops = make([]hal.Op, n)
		}
		r.ops = r.ops[:n]
		// One allocation for the batch's distinct action lists (rules that
		// share a list share it here too).
		r.total, r.start = int(total), int(start)
		var pool []hal.Action
		for i := range r.ops {
			d.op(&r.ops[i], &pool)
		}
		r.pooled += d.pooled
	case msgDump, msgStats, msgPing:
	case msgActivate:
		r.scope = hal.Scope(d.u32v())
		r.gen = hal.Generation(d.u32v())
	case msgActiveGen:
		r.scope = hal.Scope(d.u32v())
	case msgInject:
		r.port = hal.PortID(d.u32())
		n := d.count(1)
		for range n {
			r.frames = append(r.frames, append([]byte(nil), d.bytes()...))
		}
	case msgRuleCounters:
		n := d.count(1)
		r.ids = make([]hal.RuleID, 0, n)
		for range n {
			r.ids = append(r.ids, hal.RuleID(d.uv()))
		}
	case msgPortCounters:
		r.port = hal.PortID(d.u32())
	case msgSealKey:
		p := d.bytes()
		if d.err == nil {
			k, err := securechan.DecodeMessage(p, &r.key)
			if err != nil || k != len(p) || (r.key.Type != securechan.MsgKeyRegister && r.key.Type != securechan.MsgKeyRevoke) {
				d.fail()
			}
		}
	case msgTunnelEP:
		d.tunnelEndpoint(&r.ep)
	case msgCredit:
		r.n = d.uv()
	case msgAddresses:
		r.addrs = d.addressMsgs(securechan.MsgMappingAdd, securechan.MsgMappingRemove)
	case msgSealRoutes:
		d.sealRoutes(r)
	default:
		d.fail()
	}
	return d.done()
}

// Address information travels in securechan's own message encoding
// (securechan.AppendMessage), a count and then each message's bytes:
// mapping updates host → NIC, learned addresses NIC → host.
func (e *enc) addressMsgs(typ uint8, id uint32, ms []securechan.Message, allowed ...securechan.MsgType) error {
	st := e.begin(typ, id)
	e.uv(uint64(len(ms)))
	var scratch [securechan.MaxMessageLen]byte
	for i := range ms {
		if !slices.Contains(allowed, ms[i].Type) {
			e.b = e.b[:st]
			return fmt.Errorf("remote: address message %d: %v does not go this way", i, ms[i].Type)
		}
		p, err := securechan.AppendMessage(scratch[:0], &ms[i])
		if err != nil {
			e.b = e.b[:st]
			return fmt.Errorf("remote: address message %d: %w", i, err)
		}
		e.bytes(p)
	}
	e.end(st)
	return nil
}

func (d *dec) addressMsgs(allowed ...securechan.MsgType) []securechan.Message {
	n := d.count(1 + 12)
	out := make([]securechan.Message, 0, n)
	for range n {
		p := d.bytes()
		if d.err != nil {
			return nil
		}
		var m securechan.Message
		k, err := securechan.DecodeMessage(p, &m)
		if err != nil || k != len(p) || !slices.Contains(allowed, m.Type) {
			d.fail()
			return nil
		}
		out = append(out, m)
	}
	return out
}

// encodeRequest is decodeRequest's inverse (the fuzz target checks it).
func (e *enc) request(r *request) {
	switch r.typ {
	case msgValidate:
		e.validateReq(r.id, &r.rule)
	case msgApply:
		e.applyReq(r.id, r.atomic, r.last, r.total, r.start, r.ops)
	case msgDump, msgStats, msgPing:
		e.emptyReq(r.typ, r.id)
	case msgActivate:
		e.activateReq(r.id, r.scope, r.gen)
	case msgActiveGen:
		e.scopeReq(r.id, r.scope)
	case msgInject:
		e.injectReq(r.id, r.port, r.frames)
	case msgRuleCounters:
		e.ruleCountersReq(r.id, r.ids)
	case msgPortCounters:
		e.portReq(r.id, r.port)
	case msgSealKey:
		e.sealKeyReq(r.id, &r.key)
	case msgTunnelEP:
		e.tunnelReq(r.id, &r.ep)
	case msgCredit:
		e.credit(r.n)
	case msgAddresses:
		e.addressMsgs(msgAddresses, r.id, r.addrs, securechan.MsgMappingAdd, securechan.MsgMappingRemove)
	case msgSealRoutes:
		e.sealRoutesReq(r.id, r.port, r.routes)
	}
}

// Replies.

func (e *enc) applyResult(id uint32, start int, done bool, res []hal.OpResult) {
	st := e.begin(msgApplyResult, id)
	e.uv(uint64(start))
	e.bool(done)
	e.uv(uint64(len(res)))
	allOK := true
	for i := range res {
		if res[i].Err != nil {
			allOK = false
			break
		}
	}
	e.bool(allOK)
	if !allOK {
		for i := range res {
			e.error(res[i].Err)
		}
	}
	e.end(st)
}

// decodeApplyResult fills out[start:start+n] and returns start, n, done.
// A range outside out is malformed.
func decodeApplyResult(body []byte, out []hal.OpResult) (start, n int, done bool, err error) {
	d := dec{b: body}
	s := d.uv()
	done = d.bool()
	k := d.uv()
	allOK := d.bool()
	if d.err != nil || s > uint64(len(out)) || k > uint64(len(out))-s {
		return 0, 0, false, ErrMalformed
	}
	start, n = int(s), int(k)
	for i := start; i < start+n; i++ {
		if allOK {
			out[i].Err = nil
		} else {
			out[i].Err = d.error()
		}
	}
	return start, n, done, d.done()
}

// reply starts a msgReply carrying err; the caller appends the payload
// (only when err is nil) and calls end.
func (e *enc) reply(id uint32, err error) int {
	st := e.begin(msgReply, id)
	e.error(err)
	return st
}

func (e *enc) portCounters(pc *hal.PortCounters) {
	e.counters(pc.Rx)
	e.counters(pc.Tx)
	e.uv(pc.Drops)
	e.uv(pc.Exceptions)
}

func (d *dec) portCounters(pc *hal.PortCounters) {
	pc.Rx = d.counters()
	pc.Tx = d.counters()
	pc.Drops = d.uv()
	pc.Exceptions = d.uv()
}

func (e *enc) refused(reason securechan.DropReason, detail string) {
	st := e.begin(msgRefused, 0)
	e.u8(uint8(reason))
	e.str(detail)
	e.end(st)
}

func decodeRefused(body []byte) (*RefusedError, error) {
	d := dec{b: body}
	r := &RefusedError{By: "nic", Reason: securechan.DropReason(d.u8()), Detail: d.str()}
	if r.Reason >= securechan.NumDropReasons {
		d.fail()
	}
	return r, d.done()
}

// minRuleInfo is the fewest bytes a rule info takes: its head's flags (1),
// key and mask bitmaps (2 each), action reference (1), location, live
// flag and two counters (1 each).
const minRuleInfo = 10

// maxDumpRules bounds the rules of one dump chunk: the server ends a chunk
// once it holds dumpChunk bytes, and a rule takes minRuleInfo at least.
const maxDumpRules = dumpChunk/minRuleInfo + 1

// decodeDumpChunk decodes a chunk of a dump.
func decodeDumpChunk(body []byte) ([]hal.RuleInfo, error) {
	d := dec{b: body}
	n := d.count32(minRuleInfo)
	if n > maxDumpRules {
		d.fail()
		n = 0
	}
	infos := make([]hal.RuleInfo, n)
	var pool []hal.Action
	for i := range infos {
		d.ruleInfo(&infos[i], &pool)
	}
	return infos, d.done()
}

// decodeExceptions hands each exception of a message to put; their frames
// alias body.
func decodeExceptions(body []byte, put func(*hal.Exception)) error {
	d := dec{b: body}
	n := d.count32(9)
	var x hal.Exception
	for range n {
		d.exception(&x)
		if d.err != nil {
			break
		}
		put(&x)
	}
	return d.done()
}
