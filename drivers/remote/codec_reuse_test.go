package remote

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// TestDumpChunkFromReusedInfo: a dump's rules may come from one variable
// the NIC overwrites for each rule; the encoder's key bases must be copies
// then, or every key after the first would encode as "same as the
// previous" and decode wrong.
func TestDumpChunkFromReusedInfo(t *testing.T) {
	want := make([]hal.RuleInfo, 50)
	for i := range want {
		want[i] = hal.RuleInfo{Rule: exactRule(hal.RuleID(i+1), uint16(1000+i)), Live: true}
		if i%7 == 3 {
			want[i].Rule.Match.Mask.L4Src = 0xff00 // masks differ now and then
		}
	}
	var e enc
	st := e.begin(msgDumpChunk, 1)
	e.u32(uint32(len(want)))
	var ri hal.RuleInfo // what a NIC's Dump hands over, reused
	for i := range want {
		ri = want[i]
		ri.Rule.Actions = append([]hal.Action(nil), want[i].Rule.Actions...)
		e.ruleInfo(&ri)
	}
	e.end(st)
	got, err := decodeDumpChunk(e.b[msgHeaderLen:])
	if err != nil {
		t.Fatal(err)
	}
	if !sameInfos(got, want) {
		t.Fatalf("dump chunk from a reused variable decoded differently:\n got %+v\nwant %+v", got[:2], want[:2])
	}
}

// TestApplyDecodeInPlace: decoding every rule into the same variable (the
// key bases then alias the key being decoded) gives the rules encoded.
func TestApplyDecodeInPlace(t *testing.T) {
	rules := make([]hal.Op, 20)
	for i := range rules {
		rules[i] = hal.AddOp(exactRule(hal.RuleID(i+1), uint16(i)))
	}
	var e enc
	e.applyReq(1, false, true, len(rules), 0, rules)
	d := dec{b: e.b[msgHeaderLen:]}
	d.u8()
	d.uv()
	d.uv()
	if n := d.count(2); n != len(rules) {
		t.Fatalf("count %d", n)
	}
	var o hal.Op
	for i := range rules {
		d.op(&o, nil)
		if d.err != nil {
			t.Fatalf("op %d: %v", i, d.err)
		}
		if !reflect.DeepEqual(o.Rule.Match, rules[i].Rule.Match) || o.Rule.ID != rules[i].Rule.ID {
			t.Fatalf("op %d: got %+v want %+v", i, o.Rule, rules[i].Rule)
		}
	}
	if err := d.done(); err != nil {
		t.Fatal(err)
	}
}

// TestReleaseActions: a handled request keeps its ops array for reuse; its
// references to decoded actions stay only while they are few (a batch with
// shared action lists), counted over every reuse of the array.
func TestReleaseActions(t *testing.T) {
	decode := func(r *request, ops []hal.Op) {
		t.Helper()
		var e enc
		e.applyReq(1, false, true, len(ops), 0, ops)
		if err := decodeRequest(msgApply, 1, e.b[msgHeaderLen:], r); err != nil {
			t.Fatal(err)
		}
	}
	held := func(r *request) int {
		n := 0
		for _, o := range r.ops[:cap(r.ops)] {
			if o.Rule.Actions != nil {
				n++
			}
		}
		return n
	}
	shared, _ := benchOps() // one interned action list
	var r request
	decode(&r, shared[:1000])
	releaseActions(&r)
	if held(&r) != 1000 {
		t.Fatalf("a batch sharing one action list: %d rules keep their actions, want 1000 (the pool is small)", held(&r))
	}
	// Distinct lists: every rule its own.
	distinct := make([]hal.Op, 3000)
	for i := range distinct {
		distinct[i] = hal.AddOp(exactRule(hal.RuleID(i+1), uint16(i)))
	}
	decode(&r, distinct[:1])
	releaseActions(&r)
	if held(&r) == 0 {
		t.Fatal("one small batch released its actions")
	}
	decode(&r, distinct) // 3000 rules × 4 actions: over keepActions
	if r.pooled <= keepActions {
		t.Fatalf("pooled %d after %d distinct lists", r.pooled, len(distinct))
	}
	releaseActions(&r)
	if h := held(&r); h != 0 || r.pooled != 0 {
		t.Fatalf("after a large pool: %d ops keep actions, pooled %d", h, r.pooled)
	}
	// Small batches add up: many of them, each under the bound, into a
	// shrinking prefix of the array, must not keep a pool per rule.
	for n := 200; n > 0; n-- {
		decode(&r, distinct[n:n+n])
		releaseActions(&r)
		if r.pooled > keepActions {
			t.Fatalf("pooled %d after release", r.pooled)
		}
	}
}

// TestRefuseVersionOneEvenIfAllowed: version 2 changed the rule encoding;
// a server configured to accept version 1 still refuses a host that speaks
// only that one, rather than talking to it in a format it does not read.
func TestRefuseVersionOneEvenIfAllowed(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), func(c *ServerConfig) { c.MinVersion = 1 })
	cfg := clientConfig(k, s.addr)
	cfg.maxVersion, cfg.minVersion, cfg.versionsSet = 1, 1, true
	_, err := Open(context.Background(), cfg)
	var ve *VersionError
	if !errors.As(err, &ve) || ve.Min != oldestVersion {
		t.Fatalf("open offering version 1 to a server allowing it: %v", err)
	}
	// A host offering both gets the newest.
	cfg.maxVersion = ProtocolVersion
	n, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	res := make([]hal.OpResult, 2)
	if err := n.Apply(context.Background(), []hal.Op{hal.AddOp(exactRule(1, 1)), hal.DeleteOp(1)}, res); err != nil {
		t.Fatal(err)
	}
}

// TestOpKindOutOfRange: an op whose kind does not fit the wire's kind byte
// is refused per op by the NIC side, as any unknown kind; it does not
// break the session.
func TestOpKindOutOfRange(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	s := serve(t, soft, k, sockPath(t), nil)
	n := open(t, clientConfig(k, s.addr))
	bad := hal.AddOp(exactRule(1, 1))
	bad.Kind = 0x83
	ops := []hal.Op{bad, hal.AddOp(exactRule(2, 2))}
	res := make([]hal.OpResult, 2)
	n.Apply(context.Background(), ops, res)
	if res[0].Err == nil || res[1].Err != nil {
		t.Fatalf("results %v", res)
	}
	if err := n.Apply(context.Background(), []hal.Op{hal.DeleteOp(2)}, res[:1]); err != nil {
		t.Fatalf("after an out-of-range kind: %v", err)
	}
}

// TestSmallestEncodings: the bounds the decoders put on counts hold for
// the smallest items the encoder makes: a dump chunk of bare rules
// (minRuleInfo bytes each) and a segment of deletes of consecutive IDs (a
// byte each) decode; a segment over applySegmentMax does not.
func TestSmallestEncodings(t *testing.T) {
	var e enc
	st := e.begin(msgDumpChunk, 1)
	const n = 1000
	e.u32(n)
	for i := range n {
		e.ruleInfo(&hal.RuleInfo{Rule: hal.Rule{ID: hal.RuleID(i + 1)}})
	}
	e.end(st)
	if per := (len(e.b) - msgHeaderLen - 4) / n; per != minRuleInfo {
		t.Errorf("a bare rule info takes %d bytes, minRuleInfo says %d", per, minRuleInfo)
	}
	if infos, err := decodeDumpChunk(e.b[msgHeaderLen:]); err != nil || len(infos) != n || infos[n-1].Rule.ID != n {
		t.Fatalf("dump chunk of bare rules: %d infos, %v", len(infos), err)
	}
	dels := make([]hal.Op, applySegmentMax+1)
	for i := range dels {
		dels[i] = hal.DeleteOp(hal.RuleID(i + 1))
	}
	var q request
	e = enc{}
	e.applyReq(1, false, true, applySegmentMax, 0, dels[:applySegmentMax])
	if per := float64(len(e.b)-msgHeaderLen) / applySegmentMax; per > 1.01 {
		t.Errorf("a delete of the next ID takes %.2f bytes", per)
	}
	if err := decodeRequest(msgApply, 1, e.b[msgHeaderLen:], &q); err != nil || len(q.ops) != applySegmentMax || q.ops[applySegmentMax-1].Rule.ID != applySegmentMax {
		t.Fatalf("segment of consecutive deletes: %d ops, %v", len(q.ops), err)
	}
	e = enc{}
	e.applyReq(1, false, true, len(dels), 0, dels)
	if err := decodeRequest(msgApply, 1, e.b[msgHeaderLen:], &q); err == nil {
		t.Fatalf("a segment of %d ops decoded (the bound is %d)", len(dels), applySegmentMax)
	}
}
