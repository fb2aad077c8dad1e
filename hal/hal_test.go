package hal_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

func key4(src, dst string, proto uint8, sp, dp uint16) hal.FlowKey {
	return hal.FlowKey{
		InPort: 1, EthType: hal.EtherTypeIPv4, Proto: proto, L4Src: sp, L4Dst: dp,
		IPSrc: hal.Addr16(netip.MustParseAddr(src)), IPDst: hal.Addr16(netip.MustParseAddr(dst)),
	}
}

func TestMatchPrefixAndPorts(t *testing.T) {
	var m hal.Match
	m.IPDst(hal.MustPrefix("198.18.4.0/22")).Proto(hal.ProtoUDP).L4Dst(53)
	cases := []struct {
		k    hal.FlowKey
		want bool
	}{
		{key4("192.0.2.1", "198.18.5.9", hal.ProtoUDP, 1000, 53), true},
		{key4("192.0.2.1", "198.18.8.1", hal.ProtoUDP, 1000, 53), false},
		{key4("192.0.2.1", "198.18.5.9", hal.ProtoTCP, 1000, 53), false},
		{key4("192.0.2.1", "198.18.5.9", hal.ProtoUDP, 1000, 54), false},
	}
	for i, c := range cases {
		if got := m.Matches(&c.k); got != c.want {
			t.Errorf("case %d %v: Matches=%v want %v", i, c.k, got, c.want)
		}
	}
	if f := m.Fields(); f != hal.MatchEthType|hal.MatchIPv4Dst|hal.MatchIPProto|hal.MatchL4Dst {
		t.Errorf("Fields = %v", f)
	}
	if f := m.PartialFields(); f != hal.MatchIPv4Dst {
		t.Errorf("PartialFields = %v, want ipv4_dst", f)
	}
	if s := m.String(); !strings.Contains(s, "ip_dst=198.18.4.0/22") {
		t.Errorf("String = %q", s)
	}
}

func TestExactMatchAndIPv6(t *testing.T) {
	k := hal.FlowKey{InPort: 3, EthType: hal.EtherTypeIPv6, Proto: hal.ProtoTCP, L4Src: 4000, L4Dst: 443,
		IPSrc: hal.Addr16(netip.MustParseAddr("2001:db8::1")), IPDst: hal.Addr16(netip.MustParseAddr("2001:db8::2"))}
	m := hal.Exact(&k)
	if !m.Matches(&k) {
		t.Fatal("exact match does not match its own key")
	}
	other := k
	other.L4Src++
	if m.Matches(&other) {
		t.Fatal("exact match matches another source port")
	}
	if m.PartialFields() != 0 {
		t.Fatalf("exact match has partial fields %v", m.PartialFields())
	}
	if f := m.Fields(); f&hal.MatchIPv6Src == 0 || f&hal.MatchIPv4Src != 0 {
		t.Fatalf("Fields = %v", f)
	}
	r := k.Reverse()
	if r.L4Src != 443 || r.L4Dst != 4000 || r.Src() != k.Dst() {
		t.Fatalf("Reverse = %v", r)
	}
}

func TestNormalize(t *testing.T) {
	var a, b hal.Match
	a.IPSrc(netip.MustParsePrefix("198.18.0.77/16"))
	b.IPSrc(netip.MustParsePrefix("198.18.0.0/16"))
	if a != b {
		t.Fatalf("prefixes with host bits should normalise equal:\n%v\n%v", a.String(), b.String())
	}
}

func TestCheckShape(t *testing.T) {
	var ip hal.Match
	ip.IPDst(hal.MustPrefix("198.18.0.0/24"))
	var tun hal.Match
	tun.Tunnel(hal.EncapVXLAN, 100)
	enc := hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	cases := []struct {
		name  string
		r     hal.Rule
		field string // "" means valid
	}{
		{"ok output", hal.Rule{ID: 1, Match: ip, Actions: []hal.Action{hal.SetEthDst(hal.MAC{2}), hal.EncapWith(enc), hal.Output(1)}}, ""},
		{"ok decap", hal.Rule{ID: 1, Match: tun, Actions: []hal.Action{hal.Decap(), hal.Count(), hal.Output(2)}}, ""},
		{"id 0", hal.Rule{Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}, "id"},
		{"no actions", hal.Rule{ID: 1}, "actions"},
		{"no terminal", hal.Rule{ID: 1, Actions: []hal.Action{hal.Count()}}, "actions"},
		{"after terminal", hal.Rule{ID: 1, Actions: []hal.Action{hal.Output(1), hal.Count()}}, "actions[1] count"},
		{"decap not first", hal.Rule{ID: 1, Match: tun, Actions: []hal.Action{hal.Count(), hal.Decap(), hal.Output(1)}}, "actions[1] decap"},
		{"decap untunnelled", hal.Rule{ID: 1, Match: ip, Actions: []hal.Action{hal.Decap(), hal.Output(1)}}, "actions[0] decap"},
		{"rewrite after encap", hal.Rule{ID: 1, Match: ip, Actions: []hal.Action{hal.EncapWith(enc), hal.SetEthDst(hal.MAC{1}), hal.Output(1)}}, "actions[1] set_eth_dst"},
		{"two encaps", hal.Rule{ID: 1, Match: ip, Actions: []hal.Action{hal.EncapWith(enc), hal.EncapWith(enc), hal.Output(1)}}, "actions[1] encap"},
		{"ip rewrite wrong family", hal.Rule{ID: 1, Match: ip, Actions: []hal.Action{hal.SetIPDst(netip.MustParseAddr("2001:db8::1")), hal.Output(1)}}, "actions[0] set_ip_dst"},
		{"port rewrite without proto", hal.Rule{ID: 1, Match: ip, Actions: []hal.Action{hal.SetL4Dst(80), hal.Output(1)}}, "actions[0] set_l4_dst"},
		{"output port 0", hal.Rule{ID: 1, Actions: []hal.Action{hal.Output(0)}}, "actions[0] output"},
		{"bad vni", hal.Rule{ID: 1, Actions: []hal.Action{hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 1 << 24, Src: enc.Src, Dst: enc.Dst}), hal.Output(1)}}, "actions[0] encap"},
		{"mixed families", hal.Rule{ID: 1, Actions: []hal.Action{hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, Src: enc.Src, Dst: netip.MustParseAddr("2001:db8::9")}), hal.Output(1)}}, "actions[0] encap"},
		{"geneve options on vxlan", hal.Rule{ID: 1, Actions: []hal.Action{hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, Src: enc.Src, Dst: enc.Dst, GeneveOptions: make([]byte, 4)}), hal.Output(1)}}, "actions[0] encap"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := hal.CheckShape(&c.r)
			if c.field == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var re *hal.RuleError
			if !errors.As(err, &re) || !errors.Is(err, hal.ErrInvalidRule) {
				t.Fatalf("got %v, want a RuleError", err)
			}
			if re.Field != c.field {
				t.Fatalf("field %q, want %q (%v)", re.Field, c.field, err)
			}
		})
	}
}

func TestCheckCapabilities(t *testing.T) {
	caps := hal.Capabilities{
		Driver:      "tiny",
		MatchFields: hal.MatchInPort | hal.MatchEthType | hal.MatchIPv4Dst,
		Actions:     hal.ActionsOf(hal.ActionOutput, hal.ActionEncap),
		Encaps:      hal.EncapsOf(hal.EncapVXLAN),
	}
	enc := hal.Encap{Kind: hal.EncapGeneve, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	var exact, prefix, v6 hal.Match
	exact.IPDst(hal.MustPrefix("198.18.0.9/32"))
	prefix.IPDst(hal.MustPrefix("198.18.0.0/24"))
	v6.IPDst(hal.MustPrefix("2001:db8::/64"))
	cases := []struct {
		name, field string
		r           hal.Rule
	}{
		{"ok", "", hal.Rule{ID: 1, Match: exact, Actions: []hal.Action{hal.Output(1)}}},
		{"prefix not maskable", "match.ipv4_dst", hal.Rule{ID: 1, Match: prefix, Actions: []hal.Action{hal.Output(1)}}},
		{"ipv6 field", "match.ipv6_dst", hal.Rule{ID: 1, Match: v6, Actions: []hal.Action{hal.Output(1)}}},
		{"drop action", "actions[0] drop", hal.Rule{ID: 1, Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}},
		{"geneve", "actions[0] encap geneve", hal.Rule{ID: 1, Actions: []hal.Action{hal.EncapWith(enc), hal.Output(1)}}},
		{"generation", "generation", hal.Rule{ID: 1, Generation: 2, Actions: []hal.Action{hal.Output(1)}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := hal.CheckRule(&caps, &c.r)
			if c.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ue *hal.UnsupportedError
			if !errors.As(err, &ue) || !errors.Is(err, hal.ErrNotSupported) {
				t.Fatalf("got %v, want UnsupportedError", err)
			}
			if ue.Field != c.field || ue.Driver != "tiny" {
				t.Fatalf("field %q driver %q, want %q (%v)", ue.Field, ue.Driver, c.field, err)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	if err := hal.Summarize(make([]hal.OpResult, 3)); err != nil {
		t.Fatalf("all landed: %v", err)
	}
	res := []hal.OpResult{{}, {Err: hal.ErrTableFull}, {Err: hal.ErrExists}}
	err := hal.Summarize(res)
	var be *hal.BatchError
	if !errors.As(err, &be) || be.Failed != 2 || be.Index != 1 || be.Total != 3 {
		t.Fatalf("got %#v", err)
	}
	if !errors.Is(err, hal.ErrTableFull) {
		t.Fatal("errors.Is should see the first failure")
	}
	op := &hal.OpError{Driver: "x", Op: "add", Rule: 5, Err: hal.ErrClosed}
	if !errors.Is(op, hal.ErrClosed) || !strings.Contains(op.Error(), "rule 5") {
		t.Fatalf("OpError %v", op)
	}
}

func TestReasonNames(t *testing.T) {
	for r := hal.Reason(0); r < hal.NumReasons; r++ {
		got, ok := hal.ParseReason(r.String())
		if !ok || got != r {
			t.Fatalf("reason %d round trip: %v %v", r, got, ok)
		}
	}
}

func TestExactNonIPPassesCheckShape(t *testing.T) {
	arp := hal.FlowKey{InPort: 2, EthType: hal.EtherTypeARP, EthSrc: hal.MAC{2, 0, 0, 0, 0, 1}, EthDst: hal.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	r := hal.Rule{ID: 9, Match: hal.Exact(&arp), Actions: []hal.Action{hal.ToHost(hal.ReasonAction)}}
	if err := hal.CheckShape(&r); err != nil {
		t.Fatalf("exact ARP rule refused: %v", err)
	}
	if f := r.Match.Fields(); f&(hal.MatchIPv4Src|hal.MatchIPProto|hal.MatchL4Src) != 0 {
		t.Fatalf("exact ARP match uses IP fields: %v", f)
	}
	other := arp
	other.EthSrc[5] = 9
	if !r.Match.Matches(&arp) || r.Match.Matches(&other) {
		t.Fatal("exact ARP match does not select exactly its key")
	}
}

func TestCheckRuleAllocatesNothingOnValidRules(t *testing.T) {
	k := key4("198.18.0.1", "198.18.0.2", hal.ProtoUDP, 1, 2)
	caps := hal.Capabilities{MatchFields: hal.MatchAll, MaskedFields: hal.MatchAll, Actions: hal.AllActions,
		Encaps: hal.EncapsOf(hal.EncapVXLAN), Generations: true}
	enc := hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	r := hal.Rule{ID: 1, Match: hal.Exact(&k), Actions: []hal.Action{hal.SetEthDst(hal.MAC{2}), hal.DecTTL(), hal.EncapWith(enc), hal.Count(), hal.Output(1)}}
	if n := testing.AllocsPerRun(100, func() {
		if err := hal.CheckRule(&caps, &r); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("CheckRule allocated %v times on a valid rule", n)
	}
}

func BenchmarkCheckRule(b *testing.B) {
	k := key4("198.18.0.1", "198.18.0.2", hal.ProtoUDP, 1, 2)
	caps := hal.Capabilities{MatchFields: hal.MatchAll, MaskedFields: hal.MatchAll, Actions: hal.AllActions,
		Encaps: hal.EncapsOf(hal.EncapVXLAN)}
	enc := hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	r := hal.Rule{ID: 1, Match: hal.Exact(&k), Actions: []hal.Action{hal.SetEthDst(hal.MAC{2}), hal.EncapWith(enc), hal.Output(1)}}
	b.ReportAllocs()
	for b.Loop() {
		if err := hal.CheckRule(&caps, &r); err != nil {
			b.Fatal(err)
		}
	}
}
