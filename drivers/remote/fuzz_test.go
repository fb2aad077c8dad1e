package remote

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/securechan"
)

// FuzzDecode feeds every decoder of the RPC codec: the first byte picks
// the message type, the rest is its body. No decoder may panic; a body a
// decoder accepts must survive encode → decode unchanged.
func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		typ, body := data[0], data[1:]
		switch typ {
		case msgHello:
			var h hello
			if decodeHello(body, &h) == nil {
				var e enc
				e.hello(&h)
				var h2 hello
				if err := decodeHello(e.b[msgHeaderLen:], &h2); err != nil || h2 != h {
					t.Fatalf("hello round trip: %+v → %+v (%v)", h, h2, err)
				}
			}
		case msgHelloOK:
			var h helloOK
			if decodeHelloOK(body, &h) == nil {
				var e enc
				e.helloOK(&h)
				var h2 helloOK
				if err := decodeHelloOK(e.b[msgHeaderLen:], &h2); err != nil || !reflect.DeepEqual(h, h2) {
					t.Fatalf("hello-ok round trip: %+v → %+v (%v)", h, h2, err)
				}
			}
		case msgHelloRefused:
			decodeHelloRefused(body)
		case msgApplyResult:
			res := make([]hal.OpResult, 64)
			if start, n, done, err := decodeApplyResult(body, res); err == nil {
				var e enc
				e.applyResult(1, start, done, res[start:start+n])
				res2 := make([]hal.OpResult, 64)
				s2, n2, d2, err := decodeApplyResult(e.b[msgHeaderLen:], res2)
				if err != nil || s2 != start || n2 != n || d2 != done {
					t.Fatalf("apply result round trip: %v", err)
				}
				for i := start; i < start+n; i++ {
					if errText(res[i].Err) != errText(res2[i].Err) {
						t.Fatalf("result %d: %v → %v", i, res[i].Err, res2[i].Err)
					}
				}
			}
		case msgDumpChunk:
			if infos, err := decodeDumpChunk(body); err == nil {
				var e enc
				e.u32(uint32(len(infos)))
				for i := range infos {
					e.ruleInfo(&infos[i])
				}
				infos2, err := decodeDumpChunk(e.b)
				if err != nil || !sameInfos(infos, infos2) {
					t.Fatalf("dump chunk round trip: %v", err)
				}
			}
		case msgExceptions:
			decodeExceptions(body, func(x *hal.Exception) {
				if x.Len != len(x.Buf) {
					t.Fatalf("exception length %d, frame %d bytes", x.Len, len(x.Buf))
				}
			})
		case msgRefused:
			decodeRefused(body)
		case msgLearned:
			d := dec{b: body}
			ms := d.addressMsgs(securechan.MsgAddressLearned)
			if d.done() == nil {
				var e enc
				if err := e.addressMsgs(msgLearned, 0, ms, securechan.MsgAddressLearned); err != nil {
					t.Fatalf("learned addresses that decode do not encode: %v", err)
				}
				d2 := dec{b: e.b[msgHeaderLen:]}
				if ms2 := d2.addressMsgs(securechan.MsgAddressLearned); d2.done() != nil || !reflect.DeepEqual(ms, ms2) {
					t.Fatal("learned addresses round trip")
				}
			}
		case msgLearnedAddrs:
			d := dec{b: body}
			as := d.learnedAddrs()
			if d.done() == nil {
				var e enc
				e.learnedAddrs(as)
				d2 := dec{b: e.b[msgHeaderLen:]}
				if as2 := d2.learnedAddrs(); d2.done() != nil || !slices.Equal(as, as2) {
					t.Fatalf("learned addresses round trip: %v → %v", as, as2)
				}
			}
		case msgReply:
			d := dec{b: body}
			err := d.error()
			var st hal.Stats
			var pc hal.PortCounters
			d.stats(&st)
			d.portCounters(&pc)
			if d.done() == nil && err != nil {
				_ = err.Error()
			}
		default:
			var r request
			if decodeRequest(typ, 7, body, &r) != nil {
				return
			}
			var e enc
			e.request(&r)
			if len(e.b) < msgHeaderLen {
				t.Fatalf("request %s re-encoded to %d bytes", msgName(typ), len(e.b))
			}
			var r2 request
			if err := decodeRequest(e.b[4], 7, e.b[msgHeaderLen:], &r2); err != nil {
				t.Fatalf("request %s re-encoded is refused: %v", msgName(typ), err)
			}
			if !sameRequest(&r, &r2) {
				t.Fatalf("request %s round trip:\n%+v\n%+v", msgName(typ), r, r2)
			}
		}
	})
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprintf("%T %v", err, err)
}

// sameInfos compares rule infos as the codec carries them (Geneve options:
// nil and empty are distinct on the wire too).
func sameInfos(a, b []hal.RuleInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !reflect.DeepEqual(a[i], b[i]) {
			return false
		}
	}
	return true
}

func sameRequest(a, b *request) bool {
	if len(a.ops) == 0 && len(b.ops) == 0 {
		a.ops, b.ops = nil, nil
	}
	if len(a.ids) == 0 && len(b.ids) == 0 {
		a.ids, b.ids = nil, nil
	}
	if len(a.frames) == 0 && len(b.frames) == 0 {
		a.frames, b.frames = nil, nil
	}
	for i := range a.frames {
		if len(a.frames[i]) == 0 && i < len(b.frames) && len(b.frames[i]) == 0 {
			a.frames[i], b.frames[i] = nil, nil
		}
	}
	return reflect.DeepEqual(a, b)
}

// decodeSeeds are one valid message of each kind, and some broken ones.
func decodeSeeds() map[string][]byte {
	seeds := map[string][]byte{}
	add := func(name string, e *enc) {
		// A seed is the type byte and the body, as FuzzDecode reads them.
		seeds[name] = append([]byte{e.b[4]}, e.b[msgHeaderLen:]...)
	}
	r6 := exactRule(6, 6)
	r6.Match.Key.IPSrc = hal.Addr16(netip.MustParseAddr("2001:db8::1"))
	r6.Actions = append([]hal.Action{hal.Decap(), hal.SetIPDst(netip.MustParseAddr("fe80::1%eth0")), hal.PushVLAN(5),
		hal.EncapWith(hal.Encap{Kind: hal.EncapGeneve, VNI: 7, GeneveOptions: []byte{1, 2, 3, 4}})}, hal.ToHost(hal.ReasonAction))
	var e enc
	e.hello(&hello{maxVersion: 1, minVersion: 1, clientID: 42, credit: 1024, keepaliveMs: 1000})
	add("hello", &e)
	e = enc{}
	e.helloOK(&helloOK{version: 1, instance: 9, session: 2, caps: newSoftnicCaps(), ports: []hal.Port{{ID: 1, Name: "vm1", Kind: hal.PortVPort, MTU: 1500}},
		opts: optAll, sealKey: [32]byte{7}})
	add("hello-ok", &e)
	e = enc{}
	e.helloRefused(&VersionError{Offered: 0, Min: 1, Max: 1}, &VersionError{Offered: 0, Min: 1, Max: 1})
	add("hello-refused", &e)
	e = enc{}
	e.validateReq(1, &r6)
	add("validate", &e)
	e = enc{}
	e.applyReq(2, false, true, 3, 0, []hal.Op{hal.AddOp(exactRule(1, 1)), hal.ModifyOp(r6), hal.DeleteOp(3)})
	add("apply", &e)
	e = enc{}
	e.applyReq(2, true, true, 1, 0, []hal.Op{hal.AddOp(exactRule(1, 1))})
	add("apply-atomic", &e)
	e = enc{}
	e.applyReq(2, false, false, 9000, 4096, []hal.Op{hal.AddOp(exactRule(1, 1)), hal.AddOp(exactRule(2, 2)), hal.AddOp(r6)})
	add("apply-segment", &e)
	e = enc{}
	// Rule heads as differences (version 2): consecutive IDs, and each
	// field of the head changing once; deletes with and without the next ID.
	heads := []hal.Op{hal.AddOp(exactRule(1, 1)), hal.AddOp(exactRule(2, 2)), hal.AddOp(exactRule(7, 3))}
	for i, f := range []func(r *hal.Rule){
		func(r *hal.Rule) { r.Priority = 65535 },
		func(r *hal.Rule) { r.Cookie = 1<<64 - 1 },
		func(r *hal.Rule) { r.Scope = 3 },
		func(r *hal.Rule) { r.Generation = 1<<32 - 1 },
	} {
		r := exactRule(hal.RuleID(8+i), uint16(4+i))
		f(&r)
		heads = append(heads, hal.AddOp(r))
	}
	heads = append(heads, hal.DeleteOp(12), hal.DeleteOp(13), hal.DeleteOp(1<<40), hal.ModifyOp(exactRule(1<<40+1, 9)))
	e.applyReq(2, false, true, len(heads), 0, heads)
	add("apply-heads", &e)
	e = enc{}
	e.emptyReq(msgDump, 3)
	add("dump", &e)
	e = enc{}
	e.activateReq(4, 9, 2)
	add("activate", &e)
	e = enc{}
	e.scopeReq(5, 9)
	add("active-gen", &e)
	e = enc{}
	e.injectReq(6, 3, [][]byte{{1, 2, 3}, {}})
	add("inject", &e)
	e = enc{}
	e.ruleCountersReq(7, []hal.RuleID{1, 2, 1 << 40})
	add("rule-counters", &e)
	e = enc{}
	e.portReq(8, 2)
	add("port-counters", &e)
	e = enc{}
	e.sealKeyReq(9, &securechan.Message{Type: securechan.MsgKeyRegister, Vport: 1, KeyID: 2, Key: securechan.PublicKey{9}})
	add("seal-key", &e)
	e = enc{}
	e.tunnelReq(10, &hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.1")}, Groups: []netip.Addr{netip.MustParseAddr("ff02::1")}})
	add("tunnel", &e)
	e = enc{}
	e.credit(256)
	add("credit", &e)
	e = enc{}
	e.applyResult(2, 10, true, []hal.OpResult{{}, {Err: hal.ErrExists}, {Err: hal.Unsupported("softnic", "match.vlan", "disabled")},
		{Err: &hal.RuleError{Field: "actions", Reason: "no terminal"}}, {Err: &hal.OpError{Driver: "x", Op: "add", Rule: 4, Err: hal.ErrTableFull}}})
	add("apply-result", &e)
	e = enc{}
	st := e.begin(msgDumpChunk, 3)
	e.u32(2)
	e.ruleInfo(&hal.RuleInfo{Rule: exactRule(1, 1), Location: hal.LocationUser, Live: true, Counters: hal.Counters{Packets: 3, Bytes: 300}})
	e.ruleInfo(&hal.RuleInfo{Rule: r6})
	e.end(st)
	add("dump-chunk", &e)
	e = enc{}
	st = e.begin(msgExceptions, 0)
	e.u32(1)
	e.exception(&hal.Exception{InPort: 1, Reason: hal.ReasonMiss, VNI: 5, Rule: 2, Buf: []byte{1, 2, 3, 4}, Len: 4})
	e.end(st)
	add("exceptions", &e)
	e = enc{}
	e.addressMsgs(msgAddresses, 12, []securechan.Message{
		{Type: securechan.MsgMappingAdd, Seq: 1, VNI: 5, Addr: netip.MustParseAddr("10.0.0.1"), PA: netip.MustParseAddr("198.18.0.2"), MAC: [6]byte{2}},
		{Type: securechan.MsgMappingRemove, Seq: 2, VNI: 5, Addr: netip.MustParseAddr("2001:db8::1")}}, securechan.MsgMappingAdd, securechan.MsgMappingRemove)
	add("addresses", &e)
	e = enc{}
	e.addressMsgs(msgLearned, 0, []securechan.Message{{Type: securechan.MsgAddressLearned, Seq: 3, Vport: 1, VNI: 5,
		Addr: netip.MustParseAddr("10.0.0.1"), MAC: [6]byte{2}}}, securechan.MsgAddressLearned)
	add("learned", &e)
	e = enc{}
	e.learnedAddrs([]hal.LearnedAddress{
		{Port: 1, Kind: hal.LearnSeen, MAC: hal.MAC{2, 0, 0, 0, 0, 1}, Addr: netip.MustParseAddr("10.0.0.1")},
		{Port: 2, Kind: hal.LearnAnnounced, MAC: hal.MAC{2, 0, 0, 0, 0, 2}, Addr: netip.MustParseAddr("2001:db8::2")}})
	add("learned-addresses", &e)
	e = enc{}
	e.refused(securechan.DropReplay, "replayed")
	add("refused", &e)
	e = enc{}
	st = e.reply(11, nil)
	e.stats(&hal.Stats{})
	e.portCounters(&hal.PortCounters{Drops: 4})
	e.end(st)
	add("reply-stats", &e)
	seeds["truncated-apply"] = seeds["apply"][:20]
	seeds["count-too-large"] = []byte{msgRuleCounters, 0xff, 0xff, 0xff, 0xff, 0x0f}
	return seeds
}

func newSoftnicCaps() hal.Capabilities {
	return hal.Capabilities{Driver: "softnic", Device: "d", Location: hal.LocationUser, MaxRules: 100, MaxBatch: 10,
		MatchFields: hal.MatchAll, MaskedFields: hal.MatchAll, Priorities: true, Actions: hal.AllActions,
		Encaps: hal.EncapsOf(hal.EncapVXLAN), Generations: true, MaxScopes: 5, ExceptionPath: true, Notes: []string{"a", "b"}}
}

// FuzzKeyFile: the key file parser never panics, and what it accepts
// formats back to a file it parses the same way.
func FuzzKeyFile(f *testing.F) {
	for _, s := range keyFileSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := ParseKeyFile(data)
		if err != nil {
			return
		}
		if kf.Private != nil {
			again, err := ParseKeyFile(FormatPrivateKey(*kf.Private, "x"))
			if err != nil || *again.Private != *kf.Private {
				t.Fatalf("private key round trip: %v", err)
			}
		}
		for _, nk := range kf.Public {
			again, err := ParseKeyFile(FormatPublicKey(nk.Key, nk.Name))
			if err != nil || len(again.Public) != 1 || again.Public[0] != nk {
				t.Fatalf("public key round trip: %v %+v", err, again)
			}
		}
	})
}

func keyFileSeeds() map[string][]byte {
	priv := securechan.PrivateKey{1, 2, 3, 4, 5, 6, 7, 8, 9}
	pub := priv.Public()
	return map[string][]byte{
		"private":      FormatPrivateKey(priv, "nic-1"),
		"public":       FormatPublicKey(pub, "host a"),
		"two-peers":    append(FormatPublicKey(pub, "a"), FormatPublicKey(securechan.PublicKey{5}, "b")...),
		"bad-hex":      []byte("public-key zz\n"),
		"unknown":      []byte("# c\nsecret-key 00\n"),
		"mismatched":   append(FormatPrivateKey(priv, ""), FormatPublicKey(securechan.PublicKey{5}, "")...),
		"zero-key":     []byte("public-key " + string(bytes.Repeat([]byte("0"), 64)) + "\n"),
		"crlf-comment": []byte("# c\r\n\r\npublic-key " + pub.String() + " n\r\n"),
	}
}

// TestSeedCorpus: the committed seed corpora are the seeds above (run with
// REMOTE_WRITE_SEEDS=1 to rewrite them after a codec change).
func TestSeedCorpus(t *testing.T) {
	for target, seeds := range map[string]map[string][]byte{"FuzzDecode": decodeSeeds(), "FuzzKeyFile": keyFileSeeds()} {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, data := range seeds {
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
			path := filepath.Join(dir, name)
			if os.Getenv("REMOTE_WRITE_SEEDS") != "" {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != want {
				t.Errorf("%s: the committed seed differs from the codec's (REMOTE_WRITE_SEEDS=1 rewrites it): %v", path, err)
			}
		}
	}
}

// TestCodecRoundTrip: batches of varied rules (no actions, shared action
// lists and masks, IPv6, zoned addresses, Geneve options) decode to what
// was encoded.
func TestCodecRoundTrip(t *testing.T) {
	shared := exactRule(9, 9).Actions
	r6 := exactRule(6, 6)
	r6.Match = hal.Match{}
	r6.Match.IPDst(netip.MustParsePrefix("2001:db8::/32"))
	r6.Actions = []hal.Action{hal.SetIPDst(netip.MustParseAddr("fe80::1%eth0")), hal.PushVLAN(5),
		hal.EncapWith(hal.Encap{Kind: hal.EncapGeneve, VNI: 7, GeneveOptions: []byte{}}), hal.ToHost(hal.ReasonAction)}
	rules := []hal.Rule{{ID: 1}, exactRule(2, 2), exactRule(3, 3), r6, {ID: 4, Actions: shared}, {ID: 5, Actions: shared},
		{ID: 6, Actions: []hal.Action{}}, {ID: 1 << 60, Priority: 65535, Cookie: 1<<64 - 1, Scope: 1<<32 - 1, Generation: 1<<32 - 1}}
	var ops []hal.Op
	for _, r := range rules {
		ops = append(ops, hal.AddOp(r), hal.ModifyOp(r))
	}
	ops = append(ops, hal.DeleteOp(8))
	var e enc
	e.applyReq(3, false, true, len(ops), 0, ops)
	var q request
	if err := decodeRequest(e.b[4], 3, e.b[msgHeaderLen:], &q); err != nil {
		t.Fatal(err)
	}
	if len(q.ops) != len(ops) {
		t.Fatalf("%d ops back of %d", len(q.ops), len(ops))
	}
	for i := range ops {
		want := ops[i]
		if len(want.Rule.Actions) == 0 {
			want.Rule.Actions = nil // no actions: nil or empty are one value on the wire
		}
		if !reflect.DeepEqual(q.ops[i], want) {
			t.Errorf("op %d:\n got %+v\nwant %+v", i, q.ops[i], want)
		}
	}
}
