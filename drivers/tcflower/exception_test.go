package tcflower

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// fakeReader is an exception channel fed by the test.
type fakeReader struct {
	mu      sync.Mutex
	frames  [][]byte
	partial []bool
	closed  bool
}

func (r *fakeReader) push(fs ...[]byte) {
	r.mu.Lock()
	r.frames = append(r.frames, fs...)
	r.partial = append(r.partial, make([]bool, len(fs))...)
	r.mu.Unlock()
}

// pushPartial queues a frame whose transport checksum its sender left to
// the device, as the channel's socket reports it.
func (r *fakeReader) pushPartial(f []byte) {
	r.mu.Lock()
	r.frames = append(r.frames, f)
	r.partial = append(r.partial, true)
	r.mu.Unlock()
}

func (r *fakeReader) recv(buf []byte, wait bool) ([]byte, bool, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, false, errors.New("fake reader closed")
	}
	if len(r.frames) == 0 {
		r.mu.Unlock()
		if wait {
			time.Sleep(time.Millisecond)
		}
		return nil, false, errNoFrame
	}
	f, p := r.frames[0], r.partial[0]
	r.frames, r.partial = r.frames[1:], r.partial[1:]
	r.mu.Unlock()
	return buf[:copy(buf, f)], p, nil
}

func (r *fakeReader) close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return nil
}

const testChannelIfindex = 30

// fakeExcNIC is fakeNIC with the exception path installed on a fake channel.
func fakeExcNIC(t *testing.T, k *fakeKernel) (*NIC, *fakeReader) {
	t.Helper()
	n := fakeNIC(t, k)
	r := &fakeReader{}
	if err := n.installExceptionPath(&device{Name: "tcfx", Ifindex: testChannelIfindex}, "tcfy", []uint16{4789}, r); err != nil {
		t.Fatal(err)
	}
	return n, r
}

// sentFilter is one RTM_NEWTFILTER the driver sent, decoded.
type sentFilter struct {
	chain, handle uint32
	prio          uint16
	opts          attrs
	actions       []attrs // each action's attributes, in order
	actOpts       []attrs // each action's TCA_ACT_OPTIONS
}

func decodeSent(t *testing.T, msgs []netlink.Message) []sentFilter {
	t.Helper()
	var out []sentFilter
	for _, m := range msgs {
		if m.Header.Type != rtmNewFilter {
			continue
		}
		tm, err := parseTcmsg(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		top, _ := decodeAttrs(t, m.Data[tcmsgLen:])
		f := sentFilter{chain: binary.NativeEndian.Uint32(top[tcaChain]), handle: tm.Handle, prio: uint16(tm.Info >> 16)}
		f.opts, _ = decodeAttrs(t, top[tcaOptions])
		acts, order := decodeAttrs(t, f.opts[flowerAct])
		for _, i := range order {
			a, _ := decodeAttrs(t, acts[i])
			o, _ := decodeAttrs(t, a[actOptions])
			f.actions = append(f.actions, a)
			f.actOpts = append(f.actOpts, o)
		}
		out = append(out, f)
	}
	return out
}

func findSent(fs []sentFilter, chain uint32, prio uint16, handle uint32) *sentFilter {
	for i := range fs {
		if fs[i].chain == chain && fs[i].prio == prio && fs[i].handle == handle {
			return &fs[i]
		}
	}
	return nil
}

func (f *sentFilter) kinds() []string {
	var ks []string
	for _, a := range f.actions {
		ks = append(ks, string(bytes.TrimRight(a[actKind], "\x00")))
	}
	return ks
}

// checkPush checks that action i pushes an 802.1Q tag with vid and prio.
func checkPush(t *testing.T, f *sentFilter, i int, vid uint16, prio uint8, what string) {
	t.Helper()
	o := f.actOpts[i]
	p := o[vlanParms]
	if len(p) != 24 || binary.NativeEndian.Uint32(p[20:]) != vlanActPush || int32(binary.NativeEndian.Uint32(p[8:])) != tcActPipe {
		t.Errorf("%s: vlan parms % x, want push with control pipe", what, p)
	}
	wantAttr(t, o, vlanPushID, u16(vid), what+": VLAN_PUSH_VLAN_ID")
	wantAttr(t, o, vlanPushProto, []byte{0x81, 0x00}, what+": VLAN_PUSH_VLAN_PROTOCOL")
	if prio != 0 {
		wantAttr(t, o, vlanPushPrio, []byte{prio}, what+": VLAN_PUSH_VLAN_PRIORITY")
	} else if _, ok := o[vlanPushPrio]; ok {
		t.Errorf("%s: a priority attribute for priority 0", what)
	}
}

func checkRedirect(t *testing.T, f *sentFilter, i int, ifindex uint32, what string) {
	t.Helper()
	p := f.actOpts[i][mirredParms]
	if len(p) != 28 || int32(binary.NativeEndian.Uint32(p[8:])) != tcActStolen ||
		binary.NativeEndian.Uint32(p[20:]) != tcaEgressRedir || binary.NativeEndian.Uint32(p[24:]) != ifindex {
		t.Errorf("%s: mirred parms % x, want egress redirect to ifindex %d (stolen)", what, p, ifindex)
	}
}

func checkGoto(t *testing.T, f *sentFilter, i int, chain uint32, what string) {
	t.Helper()
	p := f.actOpts[i][gactParms]
	if len(p) != 20 || binary.NativeEndian.Uint32(p[8:]) != uint32(tcActGotoChain)|chain {
		t.Errorf("%s: gact parms % x, want goto chain %#x", what, p, chain)
	}
}

func TestExceptionPathFilters(t *testing.T) {
	k := &fakeKernel{}
	n, _ := fakeExcNIC(t, k)
	if c := n.Capabilities(); !c.ExceptionPath || !c.HasAction(hal.ActionToHost) || !c.HasAction(hal.ActionDecTTL) {
		t.Errorf("capabilities: exception path %v, to_host %v, dec_ttl %v; want all three", c.ExceptionPath, c.HasAction(hal.ActionToHost), c.HasAction(hal.ActionDecTTL))
	}
	sent := k.allSent()
	fs := decodeSent(t, sent)
	// The whole path is one batch: one acknowledgement, at the end.
	for i, m := range sent {
		if (m.Header.Flags&netlink.Acknowledge != 0) != (i == len(sent)-1) {
			t.Errorf("message %d of %d: ack flag %v", i, len(sent), m.Header.Flags&netlink.Acknowledge != 0)
		}
		if m.Header.Flags&(netlink.Create|netlink.Excl) != netlink.Create|netlink.Excl {
			t.Errorf("message %d: flags %v, want create|excl", i, m.Header.Flags)
		}
	}
	// 3 ports × (host + miss + 2 fragment) + uplink passes (ARP, NS, NA,
	// UDP 4789 over IPv4 and IPv6) + chain 0's catch-all.
	if want := 3*4 + 5 + 1; len(fs) != want {
		t.Fatalf("%d filters, want %d", len(fs), want)
	}
	for _, f := range fs {
		if got := binary.NativeEndian.Uint32(f.opts[flowerFlags]); got != clsFlagsSkipHW {
			t.Errorf("filter chain %#x prio %d handle %d: flags %#x, want the NIC's (skip_hw)", f.chain, f.prio, f.handle, got)
		}
	}

	catch := findSent(fs, 0, prioCatch, structHandle)
	if catch == nil {
		t.Fatal("no catch-all in chain 0")
	}
	if len(catch.actions) != 1 {
		t.Fatalf("chain 0 catch-all: actions %v", catch.kinds())
	}
	checkGoto(t, catch, 0, missChainIndex, "chain 0 catch-all")
	for _, a := range []uint16{flowerIndev, flowerEthType} {
		if _, ok := catch.opts[a]; ok {
			t.Errorf("chain 0 catch-all matches attribute %d; it must take everything", a)
		}
	}

	for slot, name := range []string{"p1", "p2", "up0"} {
		ps := uint16(slot + 1)
		miss := findSent(fs, missChainIndex, prioExcMiss, uint32(ps))
		if miss == nil {
			t.Fatalf("no miss filter for %s", name)
		}
		wantAttr(t, miss.opts, flowerIndev, cstr(name), name+" miss: INDEV")
		if _, ok := miss.opts[flowerEthType]; ok {
			t.Errorf("%s miss: matches an EtherType; a catch-all takes every frame", name)
		}
		if ks := miss.kinds(); len(ks) != 3 || ks[0] != "vlan" || ks[1] != "vlan" || ks[2] != "mirred" {
			t.Fatalf("%s miss: actions %v, want vlan, vlan, mirred", name, ks)
		}
		checkPush(t, miss, 0, uint16(hal.ReasonMiss), 0, name+" miss: reason tag")
		checkPush(t, miss, 1, ps, 0, name+" miss: port tag")
		checkRedirect(t, miss, 2, testChannelIfindex, name+" miss")

		for j, et := range []uint16{hal.EtherTypeIPv4, hal.EtherTypeIPv6} {
			frag := findSent(fs, missChainIndex, prioExcFrag, uint32(ps)<<1|uint32(j))
			if frag == nil {
				t.Fatalf("no fragment filter for %s %#x", name, et)
			}
			wantAttr(t, frag.opts, flowerIndev, cstr(name), name+" fragment: INDEV")
			wantAttr(t, frag.opts, flowerEthType, be16(et), name+" fragment: ETH_TYPE")
			wantAttr(t, frag.opts, flowerKeyFlags, []byte{0, 0, 0, 1}, name+" fragment: KEY_FLAGS (is_fragment)")
			wantAttr(t, frag.opts, flowerKeyFlagsMask, []byte{0, 0, 0, 3}, name+" fragment: KEY_FLAGS_MASK (is_fragment|frag_is_first)")
			checkPush(t, frag, 0, uint16(hal.ReasonFragment), 0, name+" fragment: reason tag")
			checkPush(t, frag, 1, ps, 0, name+" fragment: port tag")
			checkRedirect(t, frag, 2, testChannelIfindex, name+" fragment")
		}

		host := findSent(fs, hostChainIndex, prioHost, uint32(ps))
		if host == nil {
			t.Fatalf("no host-chain filter for %s", name)
		}
		wantAttr(t, host.opts, flowerIndev, cstr(name), name+" to-host: INDEV")
		if ks := host.kinds(); len(ks) != 2 || ks[0] != "vlan" || ks[1] != "mirred" {
			t.Fatalf("%s to-host: actions %v, want vlan, mirred (the rule pushed the reason tag)", name, ks)
		}
		checkPush(t, host, 0, ps, 0, name+" to-host: port tag")
		checkRedirect(t, host, 1, testChannelIfindex, name+" to-host")
	}

	// The uplink passes what the kernel's underlay needs.
	var passes []*sentFilter
	for i := range fs {
		if fs[i].chain == missChainIndex && fs[i].prio == prioExcPass {
			passes = append(passes, &fs[i])
		}
	}
	var arp, nd, udp4, udp6 int
	for _, p := range passes {
		wantAttr(t, p.opts, flowerIndev, cstr("up0"), "pass: INDEV (uplinks only)")
		if ks := p.kinds(); len(ks) != 1 || ks[0] != "gact" || binary.NativeEndian.Uint32(p.actOpts[0][gactParms][8:]) != tcActOK {
			t.Errorf("pass filter %d: actions %v, want gact ok", p.handle, ks)
		}
		switch et := binary.BigEndian.Uint16(p.opts[flowerEthType]); {
		case et == hal.EtherTypeARP:
			arp++
		case bytes.Equal(p.opts[flowerIPProto], []byte{hal.ProtoICMPv6}):
			nd++
			wantAttr(t, p.opts, flowerICMPv6TypeM, []byte{0xff}, "neighbour discovery: ICMPv6 type mask")
		case bytes.Equal(p.opts[flowerUDPDst], []byte{0x12, 0xb5}):
			wantAttr(t, p.opts, flowerIPProto, []byte{hal.ProtoUDP}, "tunnel pass: IP_PROTO")
			wantAttr(t, p.opts, flowerUDPDstMask, []byte{0xff, 0xff}, "tunnel pass: UDP_DST_MASK")
			if et == hal.EtherTypeIPv4 {
				udp4++
			} else {
				udp6++
			}
		}
	}
	if arp != 1 || nd != 2 || udp4 != 1 || udp6 != 1 {
		t.Errorf("uplink passes: %d ARP, %d ND, %d UDP/IPv4 4789, %d UDP/IPv6 4789; want 1, 2, 1, 1", arp, nd, udp4, udp6)
	}
}

func TestToHostRule(t *testing.T) {
	k := &fakeKernel{}
	n, _ := fakeExcNIC(t, k)
	ctx := context.Background()
	k.reset()
	var m hal.Match
	m.InPort(2).IPDst(netip.MustParsePrefix("192.0.2.9/32"))
	r := hal.Rule{ID: 0x77, Priority: 10, Match: m, Cookie: 0xfeed, Actions: []hal.Action{hal.Count(), hal.ToHost(hal.ReasonAction)}}
	r2 := r
	r2.ID, r2.Priority, r2.Actions = 0x78, 11, []hal.Action{hal.SetEthDst(hal.MustMAC("02:00:00:00:00:01")), hal.ToHost(hal.ReasonTTL)}
	apply := func(ops ...hal.Op) {
		t.Helper()
		if err := n.Apply(ctx, ops, make([]hal.OpResult, len(ops))); err != nil {
			t.Fatal(err)
		}
	}
	apply(hal.AddOp(r), hal.AddOp(r2))
	fs := decodeSent(t, k.allSent())
	var got []*sentFilter
	for i := range fs {
		if fs[i].chain != 0 && fs[i].prio != prioTail && fs[i].prio != prioDispatch {
			got = append(got, &fs[i])
		}
	}
	if len(got) != 2 {
		t.Fatalf("%d rule filters, want 2", len(got))
	}
	f := got[0]
	if ks := f.kinds(); len(ks) != 2 || ks[0] != "vlan" || ks[1] != "gact" {
		t.Fatalf("to_host actions %v, want vlan (the reason tag), gact (to the host chain)", ks)
	}
	wantAttr(t, f.actions[0], actCookie, ruleCookie(0x77, 0xfeed), "TCA_ACT_COOKIE on the first action")
	checkPush(t, f, 0, firstHostSlot, 0, "to_host: reason tag")
	checkGoto(t, f, 1, hostChainIndex, "to_host")
	f = got[1]
	if ks := f.kinds(); len(ks) != 3 || ks[0] != "pedit" || ks[1] != "vlan" || ks[2] != "gact" {
		t.Fatalf("rewrite then to_host: actions %v, want pedit, vlan, gact", ks)
	}
	checkPush(t, f, 1, firstHostSlot+1, 0, "second to_host: reason tag")

	// The tags name the rules and their reasons.
	if h, ok := n.hostSlots.lookup(firstHostSlot); !ok || h.rule != 0x77 || h.reason != hal.ReasonAction {
		t.Errorf("slot %d: %+v %v", firstHostSlot, h, ok)
	}
	if h, ok := n.hostSlots.lookup(firstHostSlot + 1); !ok || h.rule != 0x78 || h.reason != hal.ReasonTTL {
		t.Errorf("slot %d: %+v %v", firstHostSlot+1, h, ok)
	}
	// Deleting a ToHost rule, or turning it into another, frees its tag;
	// freed tags are reused oldest first.
	r2.Actions = []hal.Action{hal.Output(1)}
	apply(hal.DeleteOp(0x77), hal.ModifyOp(r2))
	if _, ok := n.hostSlots.lookup(firstHostSlot); ok {
		t.Errorf("the deleted rule's tag is still taken")
	}
	if _, ok := n.hostSlots.lookup(firstHostSlot + 1); ok {
		t.Errorf("the tag of a rule that is no longer to_host is still taken")
	}
	r3 := r
	r3.ID = 0x79
	k.reset()
	apply(hal.AddOp(r3))
	fs = decodeSent(t, k.allSent())
	if len(fs) != 1 {
		t.Fatalf("%d filters for one rule", len(fs))
	}
	checkPush(t, &fs[0], 0, firstHostSlot, 0, "a new to_host rule: the oldest freed tag")
	// A failed add gives its tag back.
	k.refuse = func(m netlink.Message) (int32, string) {
		if m.Header.Type == rtmNewFilter {
			return errnoEINVAL, "no"
		}
		return 0, ""
	}
	r4 := r
	r4.ID, r4.Priority = 0x7a, 30
	if err := n.Apply(ctx, []hal.Op{hal.AddOp(r4)}, make([]hal.OpResult, 1)); err == nil {
		t.Fatal("the fake kernel's refusal did not come through")
	}
	if _, ok := n.hostSlots.byRule[slotKey{0x7a, false}]; ok {
		t.Errorf("a refused to_host rule keeps its tag")
	}
	k.refuse = nil

	// Tags past the first VID range carry priority bits.
	if vid, prio := tagValue(4095 + 3); vid != 3 || prio != 1 {
		t.Errorf("tagValue(4098) = %d, %d; want VID 3 priority 1", vid, prio)
	}
	for _, v := range []uint16{0, 1, firstHostSlot, 4094, 4095, 9000, maxHostSlot} {
		vid, prio := tagValue(v)
		if vid > 4094 || prio > 7 || tagFromTCI(uint16(prio)<<13|vid) != v {
			t.Errorf("tag value %d: VID %d priority %d does not come back", v, vid, prio)
		}
	}
}

func TestToHostRefusals(t *testing.T) {
	n, _ := fakeExcNIC(t, &fakeKernel{})
	enc := hal.Encap{Kind: hal.EncapVXLAN, VNI: 5, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	cases := []struct {
		name  string
		rule  hal.Rule
		field string
	}{
		{"decap", hal.Rule{ID: 1, Match: *new(hal.Match).Tunnel(hal.EncapVXLAN, 5), Actions: []hal.Action{hal.Decap(), hal.ToHost(hal.ReasonAction)}}, "actions[1] to_host"},
		{"encap", hal.Rule{ID: 1, Actions: []hal.Action{hal.EncapWith(enc), hal.ToHost(hal.ReasonAction)}}, "actions[1] to_host"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := n.Validate(&c.rule)
			var ue *hal.UnsupportedError
			if !errors.As(err, &ue) || ue.Field != c.field {
				t.Fatalf("Validate: %v, want an UnsupportedError naming %q", err, c.field)
			}
		})
	}
	if err := n.Validate(&hal.Rule{ID: 1, Actions: []hal.Action{hal.ToHost(hal.ReasonAction)}}); err != nil {
		t.Errorf("a plain to_host rule: %v", err)
	}
}

func TestGenerationsEndInMissChain(t *testing.T) {
	k := &fakeKernel{}
	n, _ := fakeExcNIC(t, k)
	ctx := context.Background()
	tailOf := func(chain uint32) *sentFilter {
		t.Helper()
		fs := decodeSent(t, k.allSent())
		var last *sentFilter
		for i := range fs {
			if fs[i].chain == chain && fs[i].prio == prioTail {
				last = &fs[i]
			}
		}
		return last
	}
	if err := n.Activate(ctx, 5, 0); err != nil {
		t.Fatal(err)
	}
	_, s5 := n.findScope(5)
	tail := tailOf(s5.gens[0])
	if tail == nil {
		t.Fatal("the last scope's generation chain has no tail")
	}
	checkGoto(t, tail, 0, missChainIndex, "the last scope's tail")
	if err := n.Activate(ctx, 5, 3); err != nil {
		t.Fatal(err)
	}
	if tail := tailOf(s5.gens[3]); tail == nil {
		t.Fatal("a new generation of the last scope has no tail")
	} else {
		checkGoto(t, tail, 0, missChainIndex, "a new generation's tail")
	}
	// A scope after it: scope 5's tails now go there, the new one's to the
	// miss chain; a scope before it ends in scope 5.
	k.reset()
	if err := n.Activate(ctx, 9, 0); err != nil {
		t.Fatal(err)
	}
	_, s9 := n.findScope(9)
	for _, g := range []hal.Generation{0, 3} {
		if tail := tailOf(s5.gens[g]); tail == nil {
			t.Errorf("scope 5 gen %d: tail not replaced", g)
		} else {
			checkGoto(t, tail, 0, s9.dispatch, "scope 5's tail once scope 9 exists")
		}
	}
	if tail := tailOf(s9.gens[0]); tail == nil {
		t.Error("scope 9 has no tail")
	} else {
		checkGoto(t, tail, 0, missChainIndex, "scope 9's tail")
	}
	k.reset()
	if err := n.Activate(ctx, 2, 0); err != nil {
		t.Fatal(err)
	}
	_, s2 := n.findScope(2)
	if tail := tailOf(s2.gens[0]); tail == nil {
		t.Error("scope 2 has no tail")
	} else {
		checkGoto(t, tail, 0, s5.dispatch, "scope 2's tail")
	}
}

// tagged builds what the channel carries for f: the port tag and the
// reason tag after the MAC addresses.
func tagged(f []byte, portSlot, tag uint16) []byte {
	vid, prio := tagValue(tag)
	out := append([]byte(nil), f[:12]...)
	out = append(out, 0x81, 0x00, byte(portSlot>>8), byte(portSlot))
	tci := uint16(prio)<<13 | vid
	out = append(out, 0x81, 0x00, byte(tci>>8), byte(tci))
	return append(out, f[12:]...)
}

func testFrame(n int, seed byte) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = seed + byte(i)
	}
	binary.BigEndian.PutUint16(f[12:], hal.EtherTypeIPv4)
	return f
}

func newBatch(n, size int) []hal.Exception {
	b := make([]hal.Exception, n)
	for i := range b {
		b[i].Buf = make([]byte, size)
	}
	return b
}

func TestReadExceptions(t *testing.T) {
	k := &fakeKernel{}
	n, r := fakeExcNIC(t, k)
	ctx := context.Background()
	if err := n.Apply(ctx, []hal.Op{hal.AddOp(hal.Rule{ID: 500, Actions: []hal.Action{hal.ToHost(hal.ReasonUnsupported)}})}, make([]hal.OpResult, 1)); err != nil {
		t.Fatal(err)
	}
	miss := testFrame(60, 1)
	vlanFrame := append(append(append([]byte(nil), miss[:12]...), 0x81, 0x00, 0x00, 0x64), miss[12:]...)
	host := testFrame(100, 7)
	frag := testFrame(80, 9)
	r.push(
		[]byte{0x33, 0x33, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60}, // the channel's own chatter
		tagged(miss, 1, uint16(hal.ReasonMiss)),
		tagged(vlanFrame, 3, uint16(hal.ReasonMiss)),
		tagged(host, 2, firstHostSlot),
		tagged(frag, 2, uint16(hal.ReasonFragment)),
		tagged(miss, 9, uint16(hal.ReasonMiss)), // no port 9: not ours
	)
	batch := newBatch(8, 2048)
	got, err := n.ReadExceptions(ctx, batch)
	if err != nil || got != 4 {
		t.Fatalf("ReadExceptions: %d, %v; want the 4 driver frames, not waiting for more", got, err)
	}
	want := []struct {
		port   hal.PortID
		reason hal.Reason
		rule   hal.RuleID
		frame  []byte
	}{
		{1, hal.ReasonMiss, 0, miss},
		{3, hal.ReasonMiss, 0, vlanFrame},
		{2, hal.ReasonUnsupported, 500, host},
		{2, hal.ReasonFragment, 0, frag},
	}
	for i, w := range want {
		x := batch[i]
		if x.InPort != w.port || x.Reason != w.reason || x.Rule != w.rule || x.VNI != 0 || x.Truncated {
			t.Errorf("exception %d: in %d reason %v rule %d vni %d truncated %v; want %d %v %d 0 false", i, x.InPort, x.Reason, x.Rule, x.VNI, x.Truncated, w.port, w.reason, w.rule)
		}
		if !bytes.Equal(x.Frame(), w.frame) {
			t.Errorf("exception %d: frame\n% x\nwant\n% x", i, x.Frame(), w.frame)
		}
	}

	// A short buffer: the frame's head, Truncated.
	r.push(tagged(host, 1, uint16(hal.ReasonMiss)), tagged(host, 1, uint16(hal.ReasonMiss)), tagged(host, 1, uint16(hal.ReasonMiss)))
	short := []hal.Exception{{Buf: make([]byte, 32)}, {Buf: make([]byte, 8)}}
	if got, err := n.ReadExceptions(ctx, short); err != nil || got != 2 {
		t.Fatalf("ReadExceptions: %d, %v; want 2 (the batch's size)", got, err)
	}
	if x := short[0]; !x.Truncated || x.Len != 32 || !bytes.Equal(x.Frame(), host[:32]) {
		t.Errorf("32-byte buffer: truncated %v len %d frame % x", x.Truncated, x.Len, x.Frame())
	}
	if x := short[1]; !x.Truncated || x.Len != 8 || !bytes.Equal(x.Frame(), host[:8]) {
		t.Errorf("8-byte buffer: truncated %v len %d frame % x", x.Truncated, x.Len, x.Frame())
	}
	if got, err := n.ReadExceptions(ctx, newBatch(4, 2048)); err != nil || got != 1 {
		t.Errorf("the third frame: %d, %v", got, err)
	}
	if got, err := n.ReadExceptions(ctx, nil); got != 0 || err != nil {
		t.Errorf("an empty batch: %d, %v", got, err)
	}

	// A reader waits for ctx when nothing comes.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if got, err := n.ReadExceptions(cctx, newBatch(1, 64)); got != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("nothing to read: %d, %v; want 0 and the context's error", got, err)
	}

	// Close unblocks a reader and closes the channel.
	done := make(chan error, 1)
	go func() {
		_, err := n.ReadExceptions(ctx, newBatch(1, 64))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	k.reset()
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, hal.ErrClosed) {
			t.Errorf("a reader blocked across Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a reader blocked across Close did not return")
	}
	if !r.closed {
		t.Error("Close left the channel's socket open")
	}
	var deleted bool
	for _, m := range k.allSent() {
		if m.Header.Type == rtmDelLink && binary.NativeEndian.Uint32(m.Data[4:]) == testChannelIfindex {
			deleted = true
		}
	}
	if !deleted {
		t.Error("Close did not delete the channel")
	}
	if _, err := n.ReadExceptions(ctx, newBatch(1, 64)); !errors.Is(err, hal.ErrClosed) {
		t.Errorf("ReadExceptions after Close: %v", err)
	}
}

func TestReadExceptionsAllocatesNothing(t *testing.T) {
	n, r := fakeExcNIC(t, &fakeKernel{})
	f := tagged(testFrame(128, 3), 1, uint16(hal.ReasonMiss))
	batch := newBatch(1, 2048)
	frames := make([][]byte, 1000)
	for i := range frames {
		frames[i] = f
	}
	r.push(frames...)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(500, func() {
		if got, err := n.ReadExceptions(ctx, batch); got != 1 || err != nil {
			t.Fatalf("ReadExceptions: %d, %v", got, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per exception, want 0", allocs)
	}
}

func TestNoExceptionPath(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	if _, err := n.ReadExceptions(context.Background(), newBatch(1, 64)); !errors.Is(err, hal.ErrNotSupported) {
		t.Errorf("ReadExceptions without an exception path: %v, want ErrNotSupported", err)
	}
	c, err := compileRule(&n.lay, &hal.Rule{ID: 1, Actions: []hal.Action{hal.Output(1)}})
	if err != nil {
		t.Fatal(err)
	}
	if c.hostAct != -1 {
		t.Errorf("hostAct %d for a rule without to_host", c.hostAct)
	}
	if _, err := compileRule(&n.lay, &hal.Rule{ID: 1, Actions: []hal.Action{hal.ToHost(hal.ReasonAction)}}); !errors.Is(err, hal.ErrNotSupported) {
		t.Errorf("to_host without an exception path compiles: %v", err)
	}
	if _, err := compileRule(&n.lay, &hal.Rule{ID: 1, Match: *new(hal.Match).EthType(hal.EtherTypeIPv4), Actions: []hal.Action{hal.DecTTL(), hal.Output(1)}}); !errors.Is(err, hal.ErrNotSupported) {
		t.Errorf("dec_ttl without an exception path compiles: %v", err)
	}
	// Without one, the last scope's chains end nowhere: packets leave the
	// block for the kernel's stack.
	if n.tailTo(0) != 0 {
		t.Errorf("tail target %#x without an exception path", n.tailTo(0))
	}
}

func TestEncodeNewVeth(t *testing.T) {
	b, err := encodeNewVeth("tcfx1", "tcfy1", channelMTU)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 16 || !bytes.Equal(b[:16], make([]byte, 16)) {
		t.Fatalf("ifinfomsg % x, want zeros", b[:16])
	}
	top, _ := decodeAttrs(t, b[16:])
	wantAttr(t, top, iflaIfname, cstr("tcfx1"), "IFLA_IFNAME")
	wantAttr(t, top, iflaMTU, u32(channelMTU), "IFLA_MTU")
	li, _ := decodeAttrs(t, top[iflaLinkinfo])
	wantAttr(t, li, iflaInfoKind, cstr("veth"), "IFLA_INFO_KIND")
	data, _ := decodeAttrs(t, li[iflaInfoData])
	peer := data[vethInfoPeer]
	if len(peer) < 16 {
		t.Fatalf("VETH_INFO_PEER %d bytes", len(peer))
	}
	pa, _ := decodeAttrs(t, peer[16:])
	wantAttr(t, pa, iflaIfname, cstr("tcfy1"), "peer IFLA_IFNAME")
	wantAttr(t, pa, iflaMTU, u32(channelMTU), "peer IFLA_MTU")

	up := encodeLinkUp(42)
	if binary.NativeEndian.Uint32(up[4:]) != 42 || binary.NativeEndian.Uint32(up[8:]) != iffUp || binary.NativeEndian.Uint32(up[12:]) != iffUp {
		t.Errorf("link up % x", up)
	}
}

func TestParseTunnelPort(t *testing.T) {
	link := func(kind string, typ uint16, port uint16) []byte {
		ae := netlink.NewAttributeEncoder()
		ae.String(iflaIfname, "vx0")
		ae.Nested(iflaLinkinfo, func(le *netlink.AttributeEncoder) error {
			le.String(iflaInfoKind, kind)
			le.Nested(iflaInfoData, func(de *netlink.AttributeEncoder) error {
				de.Uint32(1, 7)
				de.Bytes(typ, be16(port))
				return nil
			})
			return nil
		})
		b, _ := ae.Encode()
		return append(ifinfomsg(20, 0, 0), b...)
	}
	if p := parseTunnelPort(link("vxlan", iflaVXLANPort, 8472)); p != 8472 {
		t.Errorf("vxlan port %d, want 8472", p)
	}
	if p := parseTunnelPort(link("geneve", iflaGenevePort, 6081)); p != 6081 {
		t.Errorf("geneve port %d, want 6081", p)
	}
	if p := parseTunnelPort(link("veth", iflaVXLANPort, 1)); p != 0 {
		t.Errorf("a veth has port %d", p)
	}
	if p := parseTunnelPort([]byte{1, 2}); p != 0 {
		t.Errorf("garbage has port %d", p)
	}
}

func TestDecTTLRule(t *testing.T) {
	k := &fakeKernel{}
	n, _ := fakeExcNIC(t, k)
	ctx := context.Background()
	var m hal.Match
	m.InPort(1).EthType(hal.EtherTypeIPv4)
	r := hal.Rule{ID: 9, Priority: 50, Match: m, Cookie: 0xab, Actions: []hal.Action{hal.DecTTL(), hal.Output(2)}}
	apply := func(ops ...hal.Op) {
		t.Helper()
		if err := n.Apply(ctx, ops, make([]hal.OpResult, len(ops))); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Validate(&r); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if err := n.Activate(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	k.reset()
	apply(hal.AddOp(r))
	in := n.rules[9]
	if in == nil || in.ttlChain == 0 {
		t.Fatalf("installed %+v: want a TTL chain", in)
	}
	sent := k.allSent()
	fs := decodeSent(t, sent)
	if len(fs) != 3 {
		t.Fatalf("%d filters, want the TTL check, the actions and the rule's jump", len(fs))
	}
	// The chain is complete before the rule jumps there.
	check, rest, jump := &fs[0], &fs[1], &fs[2]
	if check.chain != in.ttlChain || check.prio != 1 || rest.chain != in.ttlChain || rest.prio != 2 || jump.chain != in.chain {
		t.Fatalf("order: %+v %+v %+v", check, rest, jump)
	}
	wantAttr(t, check.opts, flowerIndev, cstr("p1"), "TTL check: the rule's own keys")
	wantAttr(t, check.opts, flowerEthType, []byte{8, 0}, "TTL check: ETH_TYPE")
	wantAttr(t, check.opts, flowerIPTTL, []byte{0}, "TTL check: IP_TTL")
	wantAttr(t, check.opts, flowerIPTTLMask, []byte{0xfe}, "TTL check: IP_TTL_MASK (0 and 1)")
	if ks := check.kinds(); len(ks) != 2 || ks[0] != "vlan" || ks[1] != "gact" {
		t.Fatalf("TTL check actions %v", ks)
	}
	checkPush(t, check, 0, firstHostSlot, 0, "TTL check: reason tag")
	checkGoto(t, check, 1, hostChainIndex, "TTL check")
	if h, ok := n.hostSlots.lookup(firstHostSlot); !ok || h.rule != 9 || h.reason != hal.ReasonTTL {
		t.Errorf("the TTL check's tag names %+v, %v; want rule 9, reason ttl", h, ok)
	}
	if ks := rest.kinds(); len(ks) != 3 || ks[0] != "pedit" || ks[1] != "csum" || ks[2] != "mirred" {
		t.Fatalf("actions %v, want pedit, csum, mirred", ks)
	}
	sel := rest.actOpts[0][pedItParmsEx]
	key := sel[24:48]
	if !bytes.Equal(key[0:4], []byte{0, 0xff, 0xff, 0xff}) || !bytes.Equal(key[4:8], []byte{0xff, 0, 0, 0}) || binary.NativeEndian.Uint32(key[8:]) != 8 {
		t.Errorf("pedit key % x: want mask 00ffffff, value ff000000 at offset 8 (ttl + 0xff)", key)
	}
	ad, _ := netlink.NewAttributeDecoder(rest.actOpts[0][pedItKeysEx])
	for ad.Next() {
		ka, _ := decodeAttrs(t, ad.Bytes())
		wantAttr(t, ka, pedItKeyExHType, u16(pedItHTypeIP4), "pedit htype")
		wantAttr(t, ka, pedItKeyExCmd, u16(pedItCmdAdd), "pedit command add")
	}
	if f := binary.NativeEndian.Uint32(rest.actOpts[1][csumParms][20:]); f != csumFlagIPv4Hdr {
		t.Errorf("csum flags %#x, want the IPv4 header's", f)
	}
	if ks := jump.kinds(); len(ks) != 1 || ks[0] != "gact" {
		t.Fatalf("the rule's filter: %v, want a jump", ks)
	}
	checkGoto(t, jump, 0, in.ttlChain, "the rule's filter")
	if jump.handle == 0 || jump.handle != in.handle || jump.prio != in.prio {
		t.Errorf("the rule's filter: prio %d handle %d; want the installed rule's %d, %d", jump.prio, jump.handle, in.prio, in.handle)
	}
	wantAttr(t, jump.actions[0], actCookie, ruleCookie(9, 0xab), "the rule's cookie on its jump")
	for i, m := range sent {
		if m.Header.Flags&netlink.Acknowledge == 0 {
			t.Errorf("message %d not acknowledged: a rule's own chain goes one message at a time", i)
		}
	}

	// IPv6: the hop limit, no checksum.
	var m6 hal.Match
	m6.InPort(1).EthType(hal.EtherTypeIPv6)
	c6, err := compileRule(&n.lay, &hal.Rule{ID: 10, Match: m6, Actions: []hal.Action{hal.DecTTL(), hal.Output(2)}})
	if err != nil || !c6.ttl || len(c6.actions) != 2 || c6.actions[0].Kind != "pedit" {
		t.Fatalf("IPv6 dec_ttl: %+v, %v", c6, err)
	}
	o6, _ := decodeAttrs(t, c6.actions[0].Opts)
	key6 := o6[pedItParmsEx][24:48]
	if !bytes.Equal(key6[0:4], []byte{0xff, 0xff, 0xff, 0}) || !bytes.Equal(key6[4:8], []byte{0, 0, 0, 0xff}) || binary.NativeEndian.Uint32(key6[8:]) != 4 {
		t.Errorf("IPv6 pedit key % x: want mask ffffff00, value 000000ff at offset 4", key6)
	}

	// Modify in place to a plain rule: the filter is replaced, then the
	// TTL chain is flushed and its tag freed.
	old := in.ttlChain
	r.Actions = []hal.Action{hal.Output(2)}
	k.reset()
	apply(hal.ModifyOp(r))
	sent = k.allSent()
	if len(sent) != 2 || sent[0].Header.Type != rtmNewFilter || sent[0].Header.Flags&netlink.Replace == 0 || sent[1].Header.Type != rtmDelFilter {
		t.Fatalf("modify sent %d messages: want a replace, then the chain's flush", len(sent))
	}
	if tm, _ := parseTcmsg(sent[0].Data); tm.Handle != in.handle {
		t.Errorf("the replace names handle %d, want the rule's %d", tm.Handle, in.handle)
	}
	tm, _ := parseTcmsg(sent[1].Data)
	top, _ := decodeAttrs(t, sent[1].Data[tcmsgLen:])
	wantAttr(t, top, tcaChain, u32(old), "flush: TCA_CHAIN")
	if _, ok := top[tcaKind]; ok || tm.Info != 0 || tm.Handle != 0 {
		t.Errorf("flush: kind %v info %#x handle %d; the kernel flushes a chain only without them", ok, tm.Info, tm.Handle)
	}
	if n.rules[9].ttlChain != 0 {
		t.Errorf("the plain rule keeps a TTL chain")
	}
	if _, ok := n.hostSlots.lookup(firstHostSlot); ok {
		t.Errorf("the TTL tag is still taken")
	}
	// Back to dec_ttl, then delete: the chain goes after the rule.
	r.Actions = []hal.Action{hal.DecTTL(), hal.Output(2)}
	apply(hal.ModifyOp(r))
	ttlChain := n.rules[9].ttlChain
	k.reset()
	apply(hal.DeleteOp(9))
	sent = k.allSent()
	if len(sent) != 2 || sent[0].Header.Type != rtmDelFilter || sent[1].Header.Type != rtmDelFilter {
		t.Fatalf("delete sent %d messages, want the rule's, then the chain's flush", len(sent))
	}
	top, _ = decodeAttrs(t, sent[1].Data[tcmsgLen:])
	wantAttr(t, top, tcaChain, u32(ttlChain), "flush after delete: TCA_CHAIN")
	if len(n.hostSlots.byRule) != 0 {
		t.Errorf("tags still taken after the delete: %v", n.hostSlots.byRule)
	}
}

// A frame whose sender left its checksum to the device reaches the host
// completed, as the wire would carry it; a frame the channel does not say
// that of is left as it is.
func TestReadExceptionsCompletesPartialChecksums(t *testing.T) {
	n, r := fakeExcNIC(t, &fakeKernel{})
	ctx := context.Background()
	type frameCase struct {
		name string
		spec wire.FrameSpec
	}
	for _, c := range []frameCase{
		{"UDP/IPv4", wire.FrameSpec{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: hal.ProtoUDP, SrcPort: 5, DstPort: 7, Payload: []byte("partial")}},
		{"TCP/IPv6", wire.FrameSpec{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), Proto: hal.ProtoTCP, SrcPort: 5, DstPort: 7, Payload: []byte("partial, odd")}},
		{"tagged TCP/IPv4", wire.FrameSpec{VLAN: 9, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: hal.ProtoTCP, SrcPort: 5, DstPort: 7, Payload: []byte("x")}},
	} {
		full := wire.Build(c.spec)
		var k hal.FlowKey
		var l wire.Layout
		if err := wire.Parse(full, 0, &k, &l); err != nil {
			t.Fatal(err)
		}
		off := l.L4 + 6
		if l.Proto == hal.ProtoTCP {
			off = l.L4 + 16
		}
		// What the sender's kernel hands the device: the pseudo-header
		// sum, uncomplemented, in the field.
		partial := append([]byte(nil), full...)
		ip := partial[l.L3:]
		var src, dst []byte
		if l.EthType == hal.EtherTypeIPv4 {
			src, dst = ip[12:16], ip[16:20]
		} else {
			src, dst = ip[8:24], ip[24:40]
		}
		ps := wire.PseudoHeaderSum(src, dst, l.Proto, l.End-l.L4)
		binary.BigEndian.PutUint16(partial[off:], ^wire.Fold(ps))
		if bytes.Equal(partial, full) {
			t.Fatalf("%s: the partial frame equals the full one", c.name)
		}
		r.pushPartial(tagged(partial, 1, uint16(hal.ReasonMiss)))
		r.push(tagged(partial, 1, uint16(hal.ReasonMiss)))
		batch := newBatch(2, 2048)
		if got, err := n.ReadExceptions(ctx, batch); err != nil || got != 2 {
			t.Fatalf("%s: ReadExceptions: %d, %v", c.name, got, err)
		}
		if !bytes.Equal(batch[0].Frame(), full) {
			t.Errorf("%s: a frame left to the device reached the host as\n% x\nwant it completed\n% x", c.name, batch[0].Frame(), full)
		}
		if !bytes.Equal(batch[1].Frame(), partial) {
			t.Errorf("%s: a frame the channel did not call partial was changed", c.name)
		}
	}
}
