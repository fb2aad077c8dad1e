package tcflower

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// --- a fake kernel for nltest ---

// fakeKernel answers the driver's netlink messages the way rtnetlink does:
// nothing for a message that succeeds without NLM_F_ACK, an error message
// (with an extended-ack reason) for one that fails, and an acknowledgement
// for one that asks. It records every sendmsg.
type fakeKernel struct {
	mu      sync.Mutex
	sends   [][]netlink.Message
	queue   []netlink.Message
	refuse  func(m netlink.Message) (errno int32, reason string)
	dumpOut func(m netlink.Message) []netlink.Message
}

func (k *fakeKernel) fn(req []netlink.Message) ([]netlink.Message, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if req == nil {
		// A Receive after the queued replies ran out: hand out the next
		// one, one datagram at a time as the kernel does.
		if len(k.queue) == 0 {
			return nil, errors.New("fake kernel: nothing to receive")
		}
		m := k.queue[0]
		k.queue = k.queue[1:]
		return []netlink.Message{m}, nil
	}
	k.sends = append(k.sends, append([]netlink.Message(nil), req...))
	for _, m := range req {
		if m.Header.Type == rtmGetFilter && m.Header.Flags&netlink.Dump == netlink.Dump {
			var out []netlink.Message
			if k.dumpOut != nil {
				out = k.dumpOut(m)
			}
			for i := range out {
				out[i].Header.Sequence = m.Header.Sequence
				out[i].Header.Flags |= netlink.Multi
			}
			out = append(out, netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi, Sequence: m.Header.Sequence}, Data: make([]byte, 4)})
			return out, nil
		}
		var errno int32
		var reason string
		if k.refuse != nil {
			errno, reason = k.refuse(m)
		}
		if errno == 0 && m.Header.Flags&netlink.Acknowledge == 0 {
			continue
		}
		k.queue = append(k.queue, errorMessage(m, errno, reason))
	}
	// Replies come one per Receive, like separate datagrams.
	return nil, nil
}

// errorMessage builds NLMSG_ERROR: -errno, the request echoed, and the
// reason as NLMSGERR_ATTR_MSG.
func errorMessage(req netlink.Message, errno int32, reason string) netlink.Message {
	data := make([]byte, 4, 4+16+len(req.Data)+8+len(reason))
	binary.NativeEndian.PutUint32(data, uint32(-errno))
	var h [16]byte
	binary.NativeEndian.PutUint32(h[0:], req.Header.Length)
	binary.NativeEndian.PutUint16(h[4:], uint16(req.Header.Type))
	binary.NativeEndian.PutUint16(h[6:], uint16(req.Header.Flags))
	binary.NativeEndian.PutUint32(h[8:], req.Header.Sequence)
	binary.NativeEndian.PutUint32(h[12:], req.Header.PID)
	data = append(data, h[:]...)
	data = append(data, req.Data...)
	flags := netlink.HeaderFlags(0)
	if reason != "" && errno != 0 {
		ae := netlink.NewAttributeEncoder()
		ae.String(1, reason)
		b, _ := ae.Encode()
		data = append(data, b...)
		flags = netlink.AcknowledgeTLVs
	}
	return netlink.Message{Header: netlink.Header{Type: netlink.Error, Flags: flags, Sequence: req.Header.Sequence}, Data: data}
}

func (k *fakeKernel) allSent() []netlink.Message {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []netlink.Message
	for _, s := range k.sends {
		out = append(out, s...)
	}
	return out
}

func (k *fakeKernel) reset() {
	k.mu.Lock()
	k.sends = nil
	k.mu.Unlock()
}

const testBlock = 0x4e500001

// fakeNIC is a NIC on the fake kernel with ports p1 (1), p2 (2), uplink
// up0 (3) and a VXLAN device vx0.
func fakeNIC(t *testing.T, k *fakeKernel) *NIC {
	t.Helper()
	conn := nltest.Dial(k.fn)
	devs := []*device{
		{ID: 1, Name: "p1", Ifindex: 11, Kind: hal.PortVPort},
		{ID: 2, Name: "p2", Ifindex: 12, Kind: hal.PortVPort},
		{ID: 3, Name: "up0", Ifindex: 13, Kind: hal.PortUplink},
		{Name: "vx0", Ifindex: 20},
	}
	lay := layout{ports: map[hal.PortID]*device{1: devs[0], 2: devs[1], 3: devs[2]}, tunnels: map[hal.EncapKind]*device{hal.EncapVXLAN: devs[3]}, outer6: hal.EncapsOf(hal.EncapVXLAN)}
	n := newNIC(conn, Config{}, testBlock, clsFlagsSkipHW, lay, devs)
	n.caps = hal.Capabilities{
		Driver: driverName, MaxBatch: DefaultMaxBatch, MaxRules: DefaultMaxRules,
		MatchFields: hal.MatchAll&^hal.MatchTunKind | hal.MatchTunKind, MaskedFields: hal.MatchAll,
		Actions: hal.AllActions &^ hal.ActionsOf(hal.ActionToHost, hal.ActionDecTTL),
		Encaps:  hal.EncapsOf(hal.EncapVXLAN), Decaps: hal.EncapsOf(hal.EncapVXLAN),
		Generations: true, MaxScopes: maxScopes, Priorities: true,
	}
	t.Cleanup(func() { conn.Close() })
	return n
}

// --- attribute-by-attribute decoding for the checks ---

type attrs map[uint16][]byte

func decodeAttrs(t *testing.T, b []byte) (attrs, []uint16) {
	t.Helper()
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		t.Fatal(err)
	}
	m := attrs{}
	var order []uint16
	for ad.Next() {
		m[ad.Type()] = ad.Bytes()
		order = append(order, ad.Type())
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	return m, order
}

func wantAttr(t *testing.T, a attrs, typ uint16, want []byte, what string) {
	t.Helper()
	got, ok := a[typ]
	if !ok {
		t.Errorf("%s (attribute %d) missing", what, typ)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s = % x, want % x", what, got, want)
	}
}

func u32(v uint32) []byte  { b := make([]byte, 4); binary.NativeEndian.PutUint32(b, v); return b }
func u16(v uint16) []byte  { b := make([]byte, 2); binary.NativeEndian.PutUint16(b, v); return b }
func cstr(s string) []byte { return append([]byte(s), 0) }

func TestEncodeFilterAttributes(t *testing.T) {
	k := &fakeKernel{}
	n := fakeNIC(t, k)
	var m hal.Match
	m.InPort(1).IPDst(netip.MustParsePrefix("192.0.2.0/24")).Proto(hal.ProtoUDP).L4Dst(53)
	r := hal.Rule{ID: 0x1122, Priority: 100, Match: m, Cookie: 0xabcd, Actions: []hal.Action{
		hal.SetEthDst(hal.MustMAC("02:00:00:00:00:09")),
		hal.SetIPDst(netip.MustParseAddr("198.51.100.1")),
		hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 0x123456, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}),
		hal.Output(3),
	}}
	if err := n.Validate(&r); err != nil {
		t.Fatal(err)
	}
	c, err := compileRule(&n.lay, &r)
	if err != nil {
		t.Fatal(err)
	}
	in := &installed{rule: r, chain: 7, prio: tcPrio(r.Priority), handle: 42}
	b, err := encodeFilter(testBlock, in.spec(c, clsFlagsSkipHW), true)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := parseTcmsg(b)
	if err != nil {
		t.Fatal(err)
	}
	if tm.Ifindex != tcmIfindexMagicBlock || tm.Parent != testBlock || tm.Handle != 42 {
		t.Errorf("tcmsg %+v: want the block (magic ifindex, parent %#x) and handle 42", tm, testBlock)
	}
	if prio, proto := tm.Info>>16, uint16(tm.Info); prio != uint32(maxRulePriority+1-100) || proto != htons(ethPAll) {
		t.Errorf("tcm_info prio %d proto %#x; want %d and ETH_P_ALL in network order", prio, proto, maxRulePriority+1-100)
	}
	top, _ := decodeAttrs(t, b[tcmsgLen:])
	wantAttr(t, top, tcaKind, cstr("flower"), "TCA_KIND")
	wantAttr(t, top, tcaChain, u32(7), "TCA_CHAIN")
	opts, _ := decodeAttrs(t, top[tcaOptions])
	wantAttr(t, opts, flowerIndev, cstr("p1"), "TCA_FLOWER_INDEV")
	wantAttr(t, opts, flowerEthType, []byte{0x08, 0x00}, "TCA_FLOWER_KEY_ETH_TYPE")
	wantAttr(t, opts, flowerIPProto, []byte{17}, "TCA_FLOWER_KEY_IP_PROTO")
	wantAttr(t, opts, flowerIPv4Dst, []byte{192, 0, 2, 0}, "TCA_FLOWER_KEY_IPV4_DST")
	wantAttr(t, opts, flowerIPv4DstMask, []byte{255, 255, 255, 0}, "TCA_FLOWER_KEY_IPV4_DST_MASK")
	wantAttr(t, opts, flowerUDPDst, []byte{0, 53}, "TCA_FLOWER_KEY_UDP_DST")
	wantAttr(t, opts, flowerUDPDstMask, []byte{0xff, 0xff}, "TCA_FLOWER_KEY_UDP_DST_MASK")
	wantAttr(t, opts, flowerFlags, u32(clsFlagsSkipHW), "TCA_FLOWER_FLAGS")
	for _, absent := range []uint16{flowerIPv4Src, flowerEthSrc, flowerVLANID, flowerEncKeyID} {
		if _, ok := opts[absent]; ok {
			t.Errorf("attribute %d present for a field the rule does not match", absent)
		}
	}
	acts, order := decodeAttrs(t, opts[flowerAct])
	if len(order) != 4 {
		t.Fatalf("%d actions, want pedit, csum, tunnel_key, mirred", len(order))
	}
	kinds := []string{"pedit", "csum", "tunnel_key", "mirred"}
	for i, kind := range kinds {
		a, _ := decodeAttrs(t, acts[uint16(i+1)])
		wantAttr(t, a, actKind, cstr(kind), "action kind")
		if i == 0 {
			wantAttr(t, a, actCookie, ruleCookie(0x1122, 0xabcd), "TCA_ACT_COOKIE")
		} else if _, ok := a[actCookie]; ok {
			t.Errorf("action %d carries a cookie; only the first does", i+1)
		}
		o, _ := decodeAttrs(t, a[actOptions])
		switch kind {
		case "pedit":
			sel := o[pedItParmsEx]
			if len(sel) != 24+3*24 {
				t.Fatalf("pedit selector %d bytes, want 24 + 3 keys", len(sel))
			}
			if ctl := int32(binary.NativeEndian.Uint32(sel[8:])); ctl != tcActPipe || sel[20] != 3 {
				t.Errorf("pedit control %d nkeys %d; want pipe and 3", ctl, sel[20])
			}
			// Key 1: eth dst bytes 0-3; key 2: bytes 4-5 (6-7 kept);
			// key 3: IPv4 dst at 16.
			key := func(i int) []byte { return sel[24+24*i : 48+24*i] }
			wantKey := func(i int, mask, val []byte, off uint32) {
				k := key(i)
				if !bytes.Equal(k[0:4], mask) || !bytes.Equal(k[4:8], val) || binary.NativeEndian.Uint32(k[8:]) != off {
					t.Errorf("pedit key %d: mask % x val % x off %d; want % x, % x, %d", i, k[0:4], k[4:8], binary.NativeEndian.Uint32(k[8:]), mask, val, off)
				}
			}
			wantKey(0, []byte{0, 0, 0, 0}, []byte{2, 0, 0, 0}, 0)
			wantKey(1, []byte{0, 0, 0xff, 0xff}, []byte{0, 9, 0, 0}, 4)
			wantKey(2, []byte{0, 0, 0, 0}, []byte{198, 51, 100, 1}, 16)
			kx, korder := decodeAttrs(t, o[pedItKeysEx])
			if len(korder) != 3 {
				t.Fatalf("%d extended keys, want 3", len(korder))
			}
			_ = kx
			ad, _ := netlink.NewAttributeDecoder(o[pedItKeysEx])
			var htypes []uint16
			for ad.Next() {
				ka, _ := decodeAttrs(t, ad.Bytes())
				htypes = append(htypes, binary.NativeEndian.Uint16(ka[pedItKeyExHType]))
				wantAttr(t, ka, pedItKeyExCmd, u16(pedItCmdSet), "pedit key command")
			}
			if htypes[0] != pedItHTypeEth || htypes[1] != pedItHTypeEth || htypes[2] != pedItHTypeIP4 {
				t.Errorf("pedit header types %v, want eth, eth, ip4", htypes)
			}
		case "csum":
			p := o[csumParms]
			if f := binary.NativeEndian.Uint32(p[20:]); f != csumFlagIPv4Hdr|csumFlagTCP|csumFlagUDP|csumFlagICMP {
				t.Errorf("csum flags %#x, want iph|tcp|udp|icmp (pseudo-headers cover the address)", f)
			}
		case "tunnel_key":
			p := o[tunKeyParms]
			if act := binary.NativeEndian.Uint32(p[20:]); act != tunKeyActSet {
				t.Errorf("tunnel_key action %d, want set", act)
			}
			wantAttr(t, o, tunKeyIPv4Src, []byte{198, 18, 0, 1}, "ENC_IPV4_SRC")
			wantAttr(t, o, tunKeyIPv4Dst, []byte{198, 18, 0, 2}, "ENC_IPV4_DST")
			wantAttr(t, o, tunKeyKeyID, []byte{0, 0x12, 0x34, 0x56}, "ENC_KEY_ID")
			wantAttr(t, o, tunKeyDstPort, []byte{0x12, 0xb5}, "ENC_DST_PORT (4789)")
			wantAttr(t, o, tunKeyTTL, []byte{64}, "ENC_TTL")
		case "mirred":
			p := o[mirredParms]
			if len(p) != 28 {
				t.Fatalf("tc_mirred %d bytes, want 28", len(p))
			}
			if ctl := int32(binary.NativeEndian.Uint32(p[8:])); ctl != tcActStolen {
				t.Errorf("mirred control %d, want stolen", ctl)
			}
			if ea, ifi := binary.NativeEndian.Uint32(p[20:]), binary.NativeEndian.Uint32(p[24:]); ea != tcaEgressRedir || ifi != 20 {
				t.Errorf("mirred eaction %d ifindex %d; want egress redirect to vx0 (20)", ea, ifi)
			}
		}
	}
}

func TestEncodeVLANAndTunnelMatch(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	var m hal.Match
	m.Tunnel(hal.EncapVXLAN, 100).TunSrc(netip.MustParseAddr("198.18.0.2"))
	c, err := compileRule(&n.lay, &hal.Rule{ID: 1, Match: m, Actions: []hal.Action{hal.Decap(), hal.PushVLAN(7), hal.Output(1)}})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := decodeAttrs(t, c.keys)
	wantAttr(t, k, flowerIndev, cstr("vx0"), "INDEV: tunnelled frames arrive on the tunnel device")
	wantAttr(t, k, flowerEncKeyID, []byte{0, 0, 0, 100}, "ENC_KEY_ID")
	wantAttr(t, k, flowerEncIPv4Src, []byte{198, 18, 0, 2}, "ENC_IPV4_SRC")
	wantAttr(t, k, flowerEncIPv4SrcM, []byte{255, 255, 255, 255}, "ENC_IPV4_SRC_MASK")
	if len(c.actions) != 3 || c.actions[0].Kind != "tunnel_key" || c.actions[1].Kind != "vlan" || c.actions[2].Kind != "mirred" {
		t.Fatalf("actions %+v", c.actions)
	}
	o, _ := decodeAttrs(t, c.actions[1].Opts)
	wantAttr(t, o, vlanPushID, u16(7), "VLAN_PUSH_VLAN_ID (host order)")
	wantAttr(t, o, vlanPushProto, []byte{0x81, 0x00}, "VLAN_PUSH_VLAN_PROTOCOL")

	var vm hal.Match
	vm.InPort(2).VLAN(300).EthType(hal.EtherTypeIPv4)
	c, err = compileRule(&n.lay, &hal.Rule{ID: 2, Match: vm, Actions: []hal.Action{hal.PopVLAN(), hal.Output(1)}})
	if err != nil {
		t.Fatal(err)
	}
	k, _ = decodeAttrs(t, c.keys)
	wantAttr(t, k, flowerEthType, []byte{0x81, 0x00}, "ETH_TYPE 802.1Q")
	wantAttr(t, k, flowerVLANID, u16(300), "VLAN_ID")
	wantAttr(t, k, flowerVLANEthType, []byte{0x08, 0x00}, "VLAN_ETH_TYPE")
}

func TestValidateRefusals(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	var ip hal.Match
	ip.IPDst(netip.MustParsePrefix("192.0.2.1/32"))
	cases := []struct {
		name  string
		rule  hal.Rule
		field string
	}{
		{"to_host", hal.Rule{ID: 1, Actions: []hal.Action{hal.ToHost(hal.ReasonAction)}}, "actions[0] to_host"},
		{"priority", hal.Rule{ID: 1, Priority: 65534, Actions: []hal.Action{hal.Output(1)}}, "priority"},
		{"no-vlan", hal.Rule{ID: 1, Match: *new(hal.Match).NoVLAN(), Actions: []hal.Action{hal.Output(1)}}, "match.vlan"},
		{"encap-to-vport", hal.Rule{ID: 1, Actions: []hal.Action{hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}), hal.Output(1)}}, "actions[1] output"},
		{"tunnel-match-without-decap", hal.Rule{ID: 1, Match: *new(hal.Match).Tunnel(hal.EncapVXLAN, 5), Actions: []hal.Action{hal.Output(1)}}, "match.tunnel"},
		{"geneve-without-device", hal.Rule{ID: 1, Actions: []hal.Action{hal.EncapWith(hal.Encap{Kind: hal.EncapGeneve, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}), hal.Output(3)}}, "actions[0] encap geneve"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := n.Validate(&c.rule)
			var ue *hal.UnsupportedError
			if !errors.As(err, &ue) || !errors.Is(err, hal.ErrNotSupported) {
				t.Fatalf("Validate: %v, want an UnsupportedError", err)
			}
			if ue.Field != c.field {
				t.Errorf("refusal names %q, want %q (%v)", ue.Field, c.field, err)
			}
		})
	}
	if err := n.Validate(&hal.Rule{ID: 1, Match: ip, Actions: []hal.Action{hal.Output(99)}}); !errors.Is(err, hal.ErrNotFound) {
		t.Errorf("output to an unknown port: %v, want ErrNotFound", err)
	}
}

func rule(id hal.RuleID, dst string) hal.Rule {
	var m hal.Match
	m.InPort(1).IPDst(netip.MustParsePrefix(dst + "/32"))
	return hal.Rule{ID: id, Priority: 10, Match: m, Actions: []hal.Action{hal.Output(2)}}
}

func TestApplyBatchesIntoOneSendmsg(t *testing.T) {
	k := &fakeKernel{}
	n := fakeNIC(t, k)
	ctx := context.Background()
	// The first rule of scope 0 builds its chains first.
	apply1 := []hal.Op{hal.AddOp(rule(1, "192.0.2.1"))}
	if err := n.Apply(ctx, apply1, make([]hal.OpResult, 1)); err != nil {
		t.Fatal(err)
	}
	k.reset()
	ops := []hal.Op{hal.AddOp(rule(2, "192.0.2.2")), hal.AddOp(rule(3, "192.0.2.3")), hal.DeleteOp(1), hal.ModifyOp(rule(2, "192.0.2.9"))}
	res := make([]hal.OpResult, len(ops))
	if err := n.Apply(ctx, ops, res); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(k.sends) != 1 {
		t.Fatalf("%d sendmsg calls for one batch, want 1", len(k.sends))
	}
	msgs := k.sends[0]
	wantTypes := []netlink.HeaderType{rtmNewFilter, rtmNewFilter, rtmDelFilter, rtmNewFilter}
	wantFlags := []netlink.HeaderFlags{
		netlink.Request | netlink.Create | netlink.Excl,
		netlink.Request | netlink.Create | netlink.Excl,
		netlink.Request,
		netlink.Request | netlink.Replace | netlink.Acknowledge,
	}
	for i, m := range msgs {
		if m.Header.Type != wantTypes[i] || m.Header.Flags != wantFlags[i] {
			t.Errorf("message %d: type %d flags %v, want %d %v", i, m.Header.Type, m.Header.Flags, wantTypes[i], wantFlags[i])
		}
	}
	// The modify replaces rule 2's filter in place: same handle.
	h2, _ := parseTcmsg(msgs[0].Data)
	hm, _ := parseTcmsg(msgs[3].Data)
	if h2.Handle != hm.Handle || h2.Info != hm.Info {
		t.Errorf("modify used handle %d prio %#x, the add %d %#x: want the same filter replaced", hm.Handle, hm.Info, h2.Handle, h2.Info)
	}
	if len(n.rules) != 2 || n.rules[1] != nil {
		t.Errorf("driver state after the batch: %v", n.rules)
	}
}

func TestApplyReportsKernelRefusal(t *testing.T) {
	k := &fakeKernel{}
	n := fakeNIC(t, k)
	ctx := context.Background()
	k.refuse = func(m netlink.Message) (int32, string) {
		if m.Header.Type != rtmNewFilter {
			return 0, ""
		}
		top, _ := netlink.NewAttributeDecoder(m.Data[tcmsgLen:])
		for top.Next() {
			if top.Type() == tcaOptions && bytes.Contains(top.Bytes(), []byte{192, 0, 2, 2}) {
				return errnoEEXIST, "Filter already exists"
			}
		}
		return 0, ""
	}
	ops := []hal.Op{hal.AddOp(rule(1, "192.0.2.1")), hal.AddOp(rule(2, "192.0.2.2")), hal.AddOp(rule(3, "192.0.2.3"))}
	res := make([]hal.OpResult, len(ops))
	err := n.Apply(ctx, ops, res)
	var be *hal.BatchError
	if !errors.As(err, &be) || be.Failed != 1 || be.Index != 1 {
		t.Fatalf("Apply: %v, want one failure at op 1", err)
	}
	var oe *hal.OpError
	var ke *KernelError
	if !errors.As(res[1].Err, &oe) || oe.Rule != 2 || oe.Op != "add" || !errors.As(res[1].Err, &ke) {
		t.Fatalf("op 1: %v, want *hal.OpError{add, rule 2} around a *KernelError", res[1].Err)
	}
	if ke.Errno != errnoEEXIST || ke.Message != "Filter already exists" || !errors.Is(res[1].Err, hal.ErrExists) {
		t.Errorf("kernel error %+v: want EEXIST with the kernel's reason, Is(ErrExists)", ke)
	}
	if res[0].Err != nil || res[2].Err != nil {
		t.Errorf("landed ops report %v / %v", res[0].Err, res[2].Err)
	}
	if _, ok := n.rules[2]; ok || n.rules[1] == nil || n.rules[3] == nil {
		t.Errorf("driver state %v: want rules 1 and 3 only", n.rules)
	}
}

func TestActivateIsOneFilterReplace(t *testing.T) {
	k := &fakeKernel{}
	n := fakeNIC(t, k)
	ctx := context.Background()
	var ops []hal.Op
	for i := 1; i <= 300; i++ {
		r := rule(hal.RuleID(i), netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}).String())
		r.Scope, r.Generation = 4, hal.Generation(i%2)
		ops = append(ops, hal.AddOp(r))
	}
	if err := n.Apply(ctx, ops, make([]hal.OpResult, len(ops))); err != nil {
		t.Fatal(err)
	}
	k.reset()
	if err := n.Activate(ctx, 4, 1); err != nil {
		t.Fatal(err)
	}
	sent := k.allSent()
	if len(sent) != 1 {
		t.Fatalf("Activate sent %d messages, want one filter replace", len(sent))
	}
	m := sent[0]
	if m.Header.Type != rtmNewFilter || m.Header.Flags&netlink.Replace == 0 {
		t.Errorf("activation message type %d flags %v, want a filter replace", m.Header.Type, m.Header.Flags)
	}
	_, st := n.findScope(4)
	top, _ := decodeAttrs(t, m.Data[tcmsgLen:])
	wantAttr(t, top, tcaChain, u32(st.dispatch), "TCA_CHAIN: the scope's dispatch chain")
	opts, _ := decodeAttrs(t, top[tcaOptions])
	acts, _ := decodeAttrs(t, opts[flowerAct])
	a, _ := decodeAttrs(t, acts[1])
	wantAttr(t, a, actKind, cstr("gact"), "jump action")
	o, _ := decodeAttrs(t, a[actOptions])
	if ctl := binary.NativeEndian.Uint32(o[gactParms][8:]); ctl != uint32(tcActGotoChain)|st.gens[1] {
		t.Errorf("gact control %#x, want goto chain %d", ctl, st.gens[1])
	}
	if g, _ := n.ActiveGeneration(4); g != 1 {
		t.Errorf("active generation %d", g)
	}
}

func TestScopesLimit(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	ctx := context.Background()
	for s := 1; s <= maxScopes; s++ {
		if err := n.Activate(ctx, hal.Scope(s), 0); err != nil {
			t.Fatalf("scope %d: %v", s, err)
		}
	}
	if err := n.Activate(ctx, 99, 0); !errors.Is(err, hal.ErrNotSupported) {
		t.Errorf("scope %d beyond the limit: %v, want ErrNotSupported", maxScopes+1, err)
	}
}

func TestParseFilterDump(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	r := rule(77, "192.0.2.7")
	r.Cookie = 0x5151
	c, _ := compileRule(&n.lay, &r)
	in := &installed{rule: r, chain: 3, prio: 9, handle: 5}
	b, _ := encodeFilter(testBlock, in.spec(c, clsFlagsSkipHW|clsFlagsNotInHW), true)
	b = withStats(t, b, 12, 3456)
	f, err := parseFilter(b)
	if err != nil {
		t.Fatal(err)
	}
	id, owner, ok := cookieRule(f.Cookie)
	if !ok || id != 77 || owner != 0x5151 || f.Chain != 3 || f.Prio != 9 || f.Handle != 5 {
		t.Errorf("parsed %+v (rule %d cookie %#x)", f, id, owner)
	}
	if f.Packets != 12 || f.Bytes != 3456 {
		t.Errorf("stats %d packets %d bytes, want 12 and 3456", f.Packets, f.Bytes)
	}
	if n.location(&f) != hal.LocationKernel {
		t.Errorf("not_in_hw filter located %v", n.location(&f))
	}
	f.Flags = clsFlagsInHW
	if n.location(&f) != hal.LocationHardware {
		t.Errorf("in_hw filter located %v", n.location(&f))
	}
}

// withStats adds TCA_ACT_STATS{TCA_STATS_BASIC} to the first action of an
// encoded filter, as a dump has it.
func withStats(t *testing.T, b []byte, packets uint32, nbytes uint64) []byte {
	t.Helper()
	top, order := decodeAttrs(t, b[tcmsgLen:])
	opts, oorder := decodeAttrs(t, top[tcaOptions])
	acts, aorder := decodeAttrs(t, opts[flowerAct])
	first := acts[1]
	basic := make([]byte, 16)
	binary.NativeEndian.PutUint64(basic, nbytes)
	binary.NativeEndian.PutUint32(basic[8:], packets)
	se := netlink.NewAttributeEncoder()
	se.Bytes(statsBasic, basic)
	sb, _ := se.Encode()
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(actStats, sb)
	extra, _ := ae.Encode()
	acts[1] = append(append([]byte(nil), first...), extra...)
	reenc := func(m attrs, order []uint16) []byte {
		e := netlink.NewAttributeEncoder()
		for _, typ := range order {
			e.Bytes(typ, m[typ])
		}
		out, _ := e.Encode()
		return out
	}
	opts[flowerAct] = reenc(acts, aorder)
	top[tcaOptions] = reenc(opts, oorder)
	return append(append([]byte(nil), b[:tcmsgLen]...), reenc(top, order)...)
}

func TestPeditBytesSplitsWords(t *testing.T) {
	keys := peditBytes(pedItHTypeEth, 6, []byte{1, 2, 3, 4, 5, 6})
	if len(keys) != 2 {
		t.Fatalf("%d keys for a source MAC at offset 6, want 2", len(keys))
	}
	if keys[0].Off != 4 || keys[0].Mask != [4]byte{0xff, 0xff, 0, 0} || keys[0].Val != [4]byte{0, 0, 1, 2} {
		t.Errorf("first key %+v", keys[0])
	}
	if keys[1].Off != 8 || keys[1].Mask != [4]byte{} || keys[1].Val != [4]byte{3, 4, 5, 6} {
		t.Errorf("second key %+v", keys[1])
	}
}

func TestGeneveOptions(t *testing.T) {
	opts, err := parseGeneveOptions([]byte{0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef})
	if err != nil || len(opts) != 1 || opts[0].Class != 0x0102 || opts[0].Type != 0x80 || !bytes.Equal(opts[0].Data, []byte{0xde, 0xad, 0xbe, 0xef}) {
		t.Errorf("parsed %+v, %v", opts, err)
	}
	if _, err := parseGeneveOptions([]byte{0, 1, 2, 3}); err == nil {
		t.Errorf("an option claiming 12 data bytes in 0 accepted")
	}
}

func ruleIDOf(v uint64) hal.RuleID { return hal.RuleID(v) }
func cookieOf(v uint64) hal.Cookie { return hal.Cookie(v) }

// TestWriteFuzzSeeds regenerates the committed seed corpora from real
// encodings when NICPATH_WRITE_SEEDS is set.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("NICPATH_WRITE_SEEDS") == "" {
		t.Skip("set NICPATH_WRITE_SEEDS=1 to regenerate testdata/fuzz seeds")
	}
	n := fakeNIC(t, &fakeKernel{})
	r := rule(77, "192.0.2.7")
	r.Cookie = 0x5151
	r.Actions = []hal.Action{hal.SetEthDst(hal.MustMAC("02:00:00:00:00:01")), hal.PushVLAN(5), hal.Output(2)}
	c, _ := compileRule(&n.lay, &r)
	b, _ := encodeFilter(testBlock, (&installed{rule: r, chain: 3, prio: 9, handle: 5}).spec(c, clsFlagsSkipHW|clsFlagsNotInHW), true)
	full := withStats(t, b, 12, 3456)
	jump, _ := encodeFilter(testBlock, n.jumpFilter(1, 1, 2), true)
	write := func(dir, name string, data []byte) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("testdata/fuzz/FuzzParseFilter", "rule-with-stats", full)
	write("testdata/fuzz/FuzzParseFilter", "jump", jump)
	write("testdata/fuzz/FuzzParseFilter", "truncated", full[:len(full)/2])
	link := make([]byte, 16)
	binary.NativeEndian.PutUint32(link[4:], 7)
	ae := netlink.NewAttributeEncoder()
	ae.String(iflaIfname, "p1")
	ae.Bytes(iflaAddress, []byte{2, 0, 0, 0, 0, 1})
	ae.Uint32(iflaMTU, 1500)
	ae.Bytes(iflaStats64, make([]byte, 200))
	la, _ := ae.Encode()
	write("testdata/fuzz/FuzzParseLink", "link", append(link, la...))
	inner := wire.Build(wire.FrameSpec{Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddr("192.0.2.1"), Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2})
	writeBool := func(dir, name string, data []byte, b bool) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbool(%v)\n", data, b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeBool("testdata/fuzz/FuzzDecodeTunnelMiss", "vxlan", tunnelRecord(hal.EncapVXLAN, hal.ReasonMiss, 5001, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.1"), 0x28, 61, 0, nil, inner), true)
	writeBool("testdata/fuzz/FuzzDecodeTunnelMiss", "geneve-ipv6-options", tunnelRecord(hal.EncapGeneve, hal.ReasonMiss, 7, netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::1"), 0, 64, 1, []byte{1, 2, 3, 1, 4, 5, 6, 7}, inner), false)
}

func TestApplyTableFull(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	n.caps.MaxRules = 3
	ctx := context.Background()
	ops := []hal.Op{hal.AddOp(rule(1, "192.0.2.1")), hal.AddOp(rule(2, "192.0.2.2")), hal.DeleteOp(1),
		hal.AddOp(rule(3, "192.0.2.3")), hal.AddOp(rule(4, "192.0.2.4")), hal.AddOp(rule(5, "192.0.2.5"))}
	res := make([]hal.OpResult, len(ops))
	err := n.Apply(ctx, ops, res)
	if !errors.Is(err, hal.ErrTableFull) {
		t.Fatalf("Apply: %v, want ErrTableFull for the fourth live rule", err)
	}
	for i, r := range res[:5] {
		if r.Err != nil {
			t.Errorf("op %d: %v (the delete made room)", i, r.Err)
		}
	}
	if !errors.Is(res[5].Err, hal.ErrTableFull) || len(n.rules) != 3 {
		t.Errorf("op 5: %v with %d rules installed; want ErrTableFull and 3", res[5].Err, len(n.rules))
	}
}
