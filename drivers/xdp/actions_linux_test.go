//go:build linux

package xdp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

const (
	pVM1   hal.PortID = 1
	pUp    hal.PortID = 2
	pVM2   hal.PortID = 3
	testVN uint32     = 5001
)

var (
	macVM1  = hal.MAC{0x02, 0, 0, 0, 0, 1}
	macVM2  = hal.MAC{0x02, 0, 0, 0, 0, 2}
	macGW   = hal.MAC{0x02, 0, 0, 0, 0, 0xfe}
	macPA1  = hal.MAC{0x02, 0, 0, 0, 1, 1}
	macPA2  = hal.MAC{0x02, 0, 0, 0, 1, 2}
	ca1     = netip.MustParseAddr("198.19.0.1")
	ca2     = netip.MustParseAddr("198.19.0.2")
	pa1     = netip.MustParseAddr("198.18.0.1")
	pa2     = netip.MustParseAddr("198.18.0.2")
	ca6a    = netip.MustParseAddr("2001:db8::1")
	ca6b    = netip.MustParseAddr("2001:db8::2")
	pa6a    = netip.MustParseAddr("2001:db8:1::1")
	pa6b    = netip.MustParseAddr("2001:db8:1::2")
	vxlanTo = hal.Encap{Kind: hal.EncapVXLAN, VNI: testVN, Src: pa1, Dst: pa2, SrcMAC: macPA1, DstMAC: macPA2}
)

// openVirtual opens a NIC with three ports without devices, driven by Run.
func openVirtual(t *testing.T, cfg Config) *NIC {
	t.Helper()
	requireRoot(t)
	if cfg.Ports == nil {
		cfg.Ports = []PortConfig{{Kind: hal.PortVPort}, {Kind: hal.PortUplink}, {Kind: hal.PortVPort}}
	}
	n, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func mustApply(t *testing.T, n *NIC, ops ...hal.Op) {
	t.Helper()
	res := make([]hal.OpResult, len(ops))
	if err := n.Apply(context.Background(), ops, res); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func mustRun(t *testing.T, n *NIC, port hal.PortID, frame []byte) RunResult {
	t.Helper()
	r, err := n.Run(port, frame)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return r
}

func udp4(src, dst netip.Addr, sp, dp uint16) wire.FrameSpec {
	return wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: src, Dst: dst, Proto: hal.ProtoUDP,
		SrcPort: sp, DstPort: dp, Payload: []byte("nicpath-xdp-test: no Ethernet padding")}
}

// exactRule matches the frame's parsed key exactly on in-port and 5-tuple.
func exactRule(t *testing.T, id hal.RuleID, in hal.PortID, frame []byte, acts ...hal.Action) hal.Rule {
	t.Helper()
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(frame, in, &k, &l); err != nil {
		t.Fatalf("wire.Parse: %v", err)
	}
	m := hal.Exact(&k)
	if !k.IsIP() {
		// hal.Exact masks the IP fields even for a non-IP key, which
		// CheckShape refuses; a non-IP flow is its L2 fields.
		m.Mask.IPSrc, m.Mask.IPDst, m.Mask.Proto, m.Mask.L4Src, m.Mask.L4Dst = [16]byte{}, [16]byte{}, 0, 0, 0
		m.Normalize()
	}
	return hal.Rule{ID: id, Priority: 1, Match: m, Actions: acts}
}

func expectOutput(t *testing.T, r RunResult, port hal.PortID, want []byte) {
	t.Helper()
	if r.Verdict != VerdictOutput || r.Port != port {
		t.Fatalf("verdict %v port %d reason %v, want output to %d", r.Verdict, r.Port, r.Reason, port)
	}
	if want != nil && !bytes.Equal(r.Frame, want) {
		t.Fatalf("frame differs\n got %x\nwant %x", r.Frame, want)
	}
}

// checkIPv4Checksums verifies, with gopacket decoding the frame on its own,
// that every IPv4 header checksum and the TCP/UDP checksums are right.
func checkIPv4Checksums(t *testing.T, frame []byte) {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	for _, l := range pkt.Layers() {
		if ip, ok := l.(*layers.IPv4); ok {
			if c := wire.Checksum(ip.Contents, 0); c != 0 {
				t.Fatalf("IPv4 header checksum wrong (%#04x residue) in %x", c, ip.Contents)
			}
		}
	}
}

func TestRunOutputAndMiss(t *testing.T) {
	n := openVirtual(t, Config{})
	f := wire.Build(udp4(ca1, ca2, 1000, 2000))
	r := mustRun(t, n, pVM1, f)
	if r.Verdict != VerdictToHost || r.Reason != hal.ReasonMiss || r.Rule != 0 {
		t.Fatalf("empty table: %+v, want to_host miss", r)
	}
	mustApply(t, n, hal.AddOp(exactRule(t, 7, pVM1, f, hal.Output(pVM2))))
	expectOutput(t, mustRun(t, n, pVM1, f), pVM2, f)
	// The same frame on another port is another flow.
	if r := mustRun(t, n, pVM2, f); r.Verdict != VerdictToHost || r.Reason != hal.ReasonMiss {
		t.Fatalf("other in-port: %+v", r)
	}

	// The miss reached the exception path with its metadata and the frame
	// as it arrived.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	batch := make([]hal.Exception, 4)
	for i := range batch {
		batch[i].Buf = make([]byte, 2048)
	}
	got := 0
	for got < 2 {
		k, err := n.ReadExceptions(ctx, batch[got:])
		if err != nil {
			t.Fatalf("ReadExceptions after %d: %v", got, err)
		}
		got += k
	}
	// Exceptions come through per-CPU rings, so two packets run on
	// different CPUs may be read in either order.
	if batch[0].InPort == pVM2 {
		batch[0], batch[1] = batch[1], batch[0]
	}
	if e := batch[0]; e.InPort != pVM1 || e.Reason != hal.ReasonMiss || !bytes.Equal(e.Frame(), f) {
		t.Fatalf("exception 0: port %d reason %v frame %x", e.InPort, e.Reason, e.Frame())
	}
	if e := batch[1]; e.InPort != pVM2 || e.Reason != hal.ReasonMiss || !bytes.Equal(e.Frame(), f) {
		t.Fatalf("exception 1: port %d reason %v frame %x", e.InPort, e.Reason, e.Frame())
	}
	st, err := n.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Exceptions[hal.ReasonMiss] != 2 {
		t.Fatalf("miss exceptions %d, want 2", st.Exceptions[hal.ReasonMiss])
	}
	pc, err := n.PortCounters(context.Background(), pVM1)
	if err != nil {
		t.Fatal(err)
	}
	if pc.Rx.Packets != 2 || pc.Rx.Bytes != uint64(2*len(f)) || pc.Exceptions != 1 {
		t.Fatalf("port counters %+v", pc)
	}
	pc2, _ := n.PortCounters(context.Background(), pVM2)
	if pc2.Tx.Packets != 1 || pc2.Tx.Bytes != uint64(len(f)) {
		t.Fatalf("vm2 tx counters %+v", pc2)
	}
}

func TestRunEncap(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    hal.Encap
	}{
		{"vxlan", vxlanTo},
		{"vxlan-port-ttl", hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: pa1, Dst: pa2, SrcMAC: macPA1, DstMAC: macPA2, TTL: 9, DstPort: 8472}},
		{"geneve", hal.Encap{Kind: hal.EncapGeneve, VNI: 0xabcdef, Src: pa1, Dst: pa2, SrcMAC: macPA1, DstMAC: macPA2}},
		{"nvgre", hal.Encap{Kind: hal.EncapNVGRE, VNI: 0x123456, Src: pa1, Dst: pa2, SrcMAC: macPA1, DstMAC: macPA2}},
		{"nvgre-flowid", hal.Encap{Kind: hal.EncapNVGRE, VNI: 0x123456, Src: pa1, Dst: pa2, SrcMAC: macPA1, DstMAC: macPA2, FlowID: 0x5a}},
		{"vxlan-ipv6", hal.Encap{Kind: hal.EncapVXLAN, VNI: testVN, Src: pa6a, Dst: pa6b, SrcMAC: macPA1, DstMAC: macPA2}},
		{"vxlan-ipv6-port-ttl", hal.Encap{Kind: hal.EncapVXLAN, VNI: 7, Src: pa6a, Dst: pa6b, SrcMAC: macPA1, DstMAC: macPA2, TTL: 9, DstPort: 8472}},
		{"geneve-ipv6", hal.Encap{Kind: hal.EncapGeneve, VNI: 0xabcdef, Src: pa6a, Dst: pa6b, SrcMAC: macPA1, DstMAC: macPA2}},
		{"nvgre-ipv6", hal.Encap{Kind: hal.EncapNVGRE, VNI: 0x123456, Src: pa6a, Dst: pa6b, SrcMAC: macPA1, DstMAC: macPA2}},
		{"nvgre-ipv6-flowid", hal.Encap{Kind: hal.EncapNVGRE, VNI: 0x123456, Src: pa6a, Dst: pa6b, SrcMAC: macPA1, DstMAC: macPA2, FlowID: 0x5a}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := openVirtual(t, Config{})
			v6 := tc.e.Src.Is6()
			hdr := 14 + 20
			if v6 {
				hdr = 14 + 40
			}
			for i, spec := range []wire.FrameSpec{
				udp4(ca1, ca2, 31000, 32000),
				{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoTCP, SrcPort: 40000, DstPort: 443, Payload: make([]byte, 300)},
				{SrcMAC: macVM1, DstMAC: macVM2, Src: ca6a, Dst: ca6b, Proto: hal.ProtoICMPv6, ICMPType: 128},
				{SrcMAC: macVM1, DstMAC: macVM2, EthType: hal.EtherTypeARP, Payload: make([]byte, 28)},
				// Odd lengths, and frames longer than one 512-byte chunk of
				// the program's IPv6 UDP checksum, up to the port's MTU
				// after the largest encapsulation.
				{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2, Payload: oddBytes(21)},
				{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoUDP, SrcPort: 3, DstPort: 4, Payload: oddBytes(512 - 42 + 3)},
				{SrcMAC: macVM1, DstMAC: macVM2, Src: ca6a, Dst: ca6b, Proto: hal.ProtoUDP, SrcPort: 5, DstPort: 6, Payload: oddBytes(1024 - 62)},
				{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoUDP, SrcPort: 7, DstPort: 8, Payload: oddBytes(1500 - 70 - 42 + 14)},
			} {
				f := wire.Build(spec)
				mustApply(t, n, hal.AddOp(exactRule(t, hal.RuleID(i+1), pVM1, f, hal.EncapWith(tc.e), hal.Output(pUp))))
				r := mustRun(t, n, pVM1, f)
				// hal/wire builds the reference encapsulation, with the
				// same flow hash for the UDP source port / FlowID.
				expectOutput(t, r, pUp, wire.BuildEncap(&tc.e, f))
				checkIPv4Checksums(t, r.Frame)
				pkt := gopacket.NewPacket(r.Frame, layers.LayerTypeEthernet, gopacket.Default)
				if v6 {
					ip := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
					if int(ip.Length) != len(r.Frame)-hdr || ip.SrcIP.String() != tc.e.Src.String() || ip.DstIP.String() != tc.e.Dst.String() ||
						ip.FlowLabel == 0 || ip.HopLimit != hopLimit(tc.e.TTL) {
						t.Fatalf("outer IPv6 %+v", ip)
					}
				} else {
					ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
					if int(ip.Length) != len(r.Frame)-14 || ip.SrcIP.String() != pa1.String() || ip.DstIP.String() != pa2.String() {
						t.Fatalf("outer IPv4 %+v", ip)
					}
				}
				switch tc.e.Kind {
				case hal.EncapVXLAN, hal.EncapGeneve:
					udp := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
					if int(udp.Length) != len(r.Frame)-hdr || udp.SrcPort < 49152 || (udp.Checksum == 0) != !v6 {
						t.Fatalf("outer UDP %+v", udp)
					}
					if v6 {
						// The checksum, summed here on its own: the
						// pseudo-header and the whole UDP datagram fold to 0.
						src, dst := tc.e.Src.As16(), tc.e.Dst.As16()
						if c := wire.Checksum(r.Frame[hdr:], wire.PseudoHeaderSum(src[:], dst[:], hal.ProtoUDP, len(r.Frame)-hdr)); c != 0 {
							t.Fatalf("outer UDP checksum %#04x leaves residue %#04x", udp.Checksum, c)
						}
					}
					if tc.e.Kind == hal.EncapVXLAN && tc.e.DstPort == 0 {
						vx := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
						if vx.VNI != tc.e.VNI || !bytes.Equal(vx.Payload, f) {
							t.Fatalf("VXLAN %+v", vx)
						}
					}
				case hal.EncapNVGRE:
					gre := pkt.Layer(layers.LayerTypeGRE).(*layers.GRE)
					if gre.Key>>8 != tc.e.VNI || !bytes.Equal(gre.Payload, f) {
						t.Fatalf("GRE %+v", gre)
					}
				}
			}
		})
	}
}

func hopLimit(ttl uint8) uint8 {
	if ttl == 0 {
		return wire.DefaultTTL
	}
	return ttl
}

// oddBytes is n bytes of payload that no two positions share in a row, so
// that a checksum summing a byte in the wrong place or twice shows.
func oddBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

func TestRunDecap(t *testing.T) {
	n := openVirtual(t, Config{})
	inner := wire.Build(udp4(ca2, ca1, 2000, 1000))
	for i, e := range []hal.Encap{
		{Kind: hal.EncapVXLAN, VNI: testVN, Src: pa2, Dst: pa1, SrcMAC: macPA2, DstMAC: macPA1},
		{Kind: hal.EncapGeneve, VNI: testVN + 1, Src: pa2, Dst: pa1, SrcMAC: macPA2, DstMAC: macPA1},
		{Kind: hal.EncapNVGRE, VNI: testVN + 2, Src: pa2, Dst: pa1, SrcMAC: macPA2, DstMAC: macPA1},
		{Kind: hal.EncapVXLAN, VNI: testVN + 3, Src: netip.MustParseAddr("2001:db8:1::2"), Dst: netip.MustParseAddr("2001:db8:1::1"), SrcMAC: macPA2, DstMAC: macPA1},
		{Kind: hal.EncapGeneve, VNI: testVN + 4, Src: pa6b, Dst: pa6a, SrcMAC: macPA2, DstMAC: macPA1},
		{Kind: hal.EncapNVGRE, VNI: testVN + 5, Src: pa6b, Dst: pa6a, SrcMAC: macPA2, DstMAC: macPA1},
	} {
		outer := wire.BuildEncap(&e, inner)
		var m hal.Match
		m.InPort(pUp).Tunnel(e.Kind, e.VNI).IPDst(netip.PrefixFrom(ca1, 32))
		mustApply(t, n, hal.AddOp(hal.Rule{ID: hal.RuleID(10 + i), Match: m,
			Actions: []hal.Action{hal.Decap(), hal.SetEthDst(macVM1), hal.Output(pVM1)}}))
		r := mustRun(t, n, pUp, outer)
		want := bytes.Clone(inner)
		copy(want[0:6], macVM1[:])
		expectOutput(t, r, pVM1, want)
	}
	// Another VNI misses, and the exception says which VNI it came with.
	e := vxlanTo
	e.VNI = 999
	r := mustRun(t, n, pUp, wire.BuildEncap(&e, inner))
	if r.Verdict != VerdictToHost || r.Reason != hal.ReasonMiss {
		t.Fatalf("unknown VNI: %+v", r)
	}
}

func TestRunRewrites(t *testing.T) {
	n := openVirtual(t, Config{})
	newSrc4, newDst4 := netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("192.0.2.9")
	newSrc6 := netip.MustParseAddr("2001:db8::77")
	cases := []struct {
		name string
		in   wire.FrameSpec
		acts []hal.Action
		out  func(s *wire.FrameSpec)
	}{
		{"macs", udp4(ca1, ca2, 1, 2), []hal.Action{hal.SetEthSrc(macGW), hal.SetEthDst(macVM1)},
			func(s *wire.FrameSpec) { s.SrcMAC, s.DstMAC = macGW, macVM1 }},
		{"nat-udp", udp4(ca1, ca2, 1000, 53), []hal.Action{hal.SetIPSrc(newSrc4), hal.SetL4Src(40000), hal.SetIPDst(newDst4), hal.SetL4Dst(5353)},
			func(s *wire.FrameSpec) { s.Src, s.Dst, s.SrcPort, s.DstPort = newSrc4, newDst4, 40000, 5353 }},
		{"nat-tcp", wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoTCP, SrcPort: 33000, DstPort: 80, Payload: []byte("GET /")},
			[]hal.Action{hal.SetIPDst(newDst4), hal.SetL4Dst(8080)},
			func(s *wire.FrameSpec) { s.Dst, s.DstPort = newDst4, 8080 }},
		{"icmp-src", wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoICMP, ICMPType: 8, Payload: []byte("ping")},
			[]hal.Action{hal.SetIPSrc(newSrc4)}, func(s *wire.FrameSpec) { s.Src = newSrc4 }},
		{"v6-udp", wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca6a, Dst: ca6b, Proto: hal.ProtoUDP, SrcPort: 5, DstPort: 6, Payload: []byte("six")},
			[]hal.Action{hal.SetIPSrc(newSrc6), hal.SetL4Dst(7)}, func(s *wire.FrameSpec) { s.Src, s.DstPort = newSrc6, 7 }},
		{"v6-icmp", wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca6a, Dst: ca6b, Proto: hal.ProtoICMPv6, ICMPType: 128, Payload: []byte("echo")},
			[]hal.Action{hal.SetIPSrc(newSrc6)}, func(s *wire.FrameSpec) { s.Src = newSrc6 }},
		{"dec-ttl", udp4(ca1, ca2, 9, 9), []hal.Action{hal.DecTTL()}, func(s *wire.FrameSpec) { s.TTL = 63 }},
		{"dec-hop-limit", wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca6a, Dst: ca6b, Proto: hal.ProtoUDP, SrcPort: 15, DstPort: 16, TTL: 2},
			[]hal.Action{hal.DecTTL()}, func(s *wire.FrameSpec) { s.TTL = 1 }},
		{"push-vlan", udp4(ca1, ca2, 3, 4), []hal.Action{hal.PushVLAN(100)}, func(s *wire.FrameSpec) { s.VLAN = 100 }},
		{"pop-vlan", func() wire.FrameSpec { s := udp4(ca1, ca2, 3, 4); s.VLAN = 42; return s }(), []hal.Action{hal.PopVLAN()},
			func(s *wire.FrameSpec) { s.VLAN = 0 }},
		{"pop-vlan-untagged", udp4(ca1, ca2, 3, 5), []hal.Action{hal.PopVLAN()}, func(s *wire.FrameSpec) {}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := wire.Build(tc.in)
			acts := append(append([]hal.Action(nil), tc.acts...), hal.Output(pVM2))
			mustApply(t, n, hal.AddOp(exactRule(t, hal.RuleID(100+i), pVM1, f, acts...)))
			want := tc.in
			tc.out(&want)
			r := mustRun(t, n, pVM1, f)
			expectOutput(t, r, pVM2, wire.Build(want))
		})
	}
}

func TestRunTTLExpiryAndTerminals(t *testing.T) {
	n := openVirtual(t, Config{})
	s := udp4(ca1, ca2, 1, 1)
	s.TTL = 1
	f := wire.Build(s)
	mustApply(t, n, hal.AddOp(exactRule(t, 1, pVM1, f, hal.DecTTL(), hal.SetEthSrc(macGW), hal.Output(pVM2))))
	r := mustRun(t, n, pVM1, f)
	if r.Verdict != VerdictToHost || r.Reason != hal.ReasonTTL || r.Rule != 1 || !bytes.Equal(r.Frame, f) {
		t.Fatalf("TTL 1: %+v (the frame must reach the host as it arrived)", r)
	}

	drop := wire.Build(udp4(ca1, ca2, 2, 2))
	host := wire.Build(udp4(ca1, ca2, 3, 3))
	mustApply(t, n,
		hal.AddOp(exactRule(t, 2, pVM1, drop, hal.Count(), hal.Drop(hal.ReasonPolicy))),
		hal.AddOp(exactRule(t, 3, pVM1, host, hal.Count(), hal.ToHost(hal.ReasonAction))))
	for i := 0; i < 3; i++ {
		if r := mustRun(t, n, pVM1, drop); r.Verdict != VerdictDrop || r.Reason != hal.ReasonPolicy || r.Rule != 2 {
			t.Fatalf("drop rule: %+v", r)
		}
	}
	if r := mustRun(t, n, pVM1, host); r.Verdict != VerdictToHost || r.Reason != hal.ReasonAction || r.Rule != 3 {
		t.Fatalf("to_host rule: %+v", r)
	}
	out := make([]hal.Counters, 2)
	if err := n.RuleCounters(context.Background(), []hal.RuleID{2, 3}, out); err != nil {
		t.Fatal(err)
	}
	if out[0] != (hal.Counters{Packets: 3, Bytes: uint64(3 * len(drop))}) || out[1] != (hal.Counters{Packets: 1, Bytes: uint64(len(host))}) {
		t.Fatalf("rule counters %+v", out)
	}
	st, _ := n.Stats(context.Background())
	if st.Drops[hal.ReasonPolicy] != 3 || st.Exceptions[hal.ReasonAction] != 1 || st.Exceptions[hal.ReasonTTL] != 1 {
		t.Fatalf("stats %+v", st)
	}
	var seen []hal.RuleID
	err := n.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		seen = append(seen, ri.Rule.ID)
		if ri.Location != hal.LocationKernel || !ri.Live {
			t.Errorf("rule %d: location %v live %v", ri.Rule.ID, ri.Location, ri.Live)
		}
		if ri.Rule.ID == 2 && ri.Counters.Packets != 3 {
			t.Errorf("dump counters of rule 2: %+v", ri.Counters)
		}
		return nil
	})
	if err != nil || len(seen) != 3 {
		t.Fatalf("dump: %v %v", seen, err)
	}
}

func TestRunMTU(t *testing.T) {
	n := openVirtual(t, Config{})
	s := udp4(ca1, ca2, 1, 1)
	s.Payload = make([]byte, 1500-28) // exactly the 1500-byte MTU of the port
	f := wire.Build(s)
	mustApply(t, n, hal.AddOp(exactRule(t, 1, pVM1, f, hal.Output(pVM2))))
	expectOutput(t, mustRun(t, n, pVM1, f), pVM2, f)
	mustApply(t, n, hal.ModifyOp(exactRule(t, 1, pVM1, f, hal.EncapWith(vxlanTo), hal.Output(pUp))))
	if r := mustRun(t, n, pVM1, f); r.Verdict != VerdictToHost || r.Reason != hal.ReasonMTU || !bytes.Equal(r.Frame, f) {
		t.Fatalf("too big after encap: %+v", r)
	}
}

// TestRunMalformed sends every class of bad frame: none reaches a VM; a
// malformed one is dropped and counted, one the program does not handle
// (unsupported, a later fragment) reaches the host as it arrived.
func TestRunMalformed(t *testing.T) {
	n := openVirtual(t, Config{})
	// A catch-all rule: anything that parses goes to vm2.
	mustApply(t, n, hal.AddOp(hal.Rule{ID: 1, Actions: []hal.Action{hal.Output(pVM2)}}))
	good := wire.Build(udp4(ca1, ca2, 1000, 2000))
	tcp := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoTCP, SrcPort: 1, DstPort: 2})
	v6 := func(ext ...uint8) []byte {
		return wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca6a, Dst: ca6b, Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2, ExtHeaders: ext})
	}
	mut := func(b []byte, f func(b []byte)) []byte { c := bytes.Clone(b); f(c); return c }
	vx := wire.BuildEncap(&vxlanTo, good)
	gen := hal.Encap{Kind: hal.EncapGeneve, VNI: 1, Src: pa1, Dst: pa2}
	genOpt := gen
	genOpt.GeneveOptions = []byte{0, 1, 2, 0, 0, 1, 3, 1, 9, 9, 9, 9} // two options, neither critical
	genMany := gen
	genMany.GeneveOptions = bytes.Repeat([]byte{0, 1, 2, 0}, 9)
	genCrit := gen
	genCrit.GeneveOptions = []byte{0, 1, 2, 0, 0, 1, 0x83, 0}
	// firstFragment makes an IPv4 frame the first fragment of a longer
	// datagram: MF set, and a UDP length (when UDP) reaching 1480 bytes
	// past the frame, as the host path's fragments carry it.
	firstFragment := func(b []byte) []byte {
		return mut(b, func(b []byte) {
			b[20] |= 0x20
			binary.BigEndian.PutUint16(b[24:], 0)
			binary.BigEndian.PutUint16(b[24:], wire.Checksum(b[14:34], 0))
			if b[23] == hal.ProtoUDP {
				binary.BigEndian.PutUint16(b[38:], binary.BigEndian.Uint16(b[38:])+1480)
			}
		})
	}
	nvgre := hal.Encap{Kind: hal.EncapNVGRE, VNI: 1, Src: pa1, Dst: pa2}
	cases := []struct {
		name   string
		frame  []byte
		reason hal.Reason // ReasonNone: parses and is output
	}{
		{"good", good, hal.ReasonNone},
		{"eth-only", good[:14], hal.ReasonMalformed}, // EtherType IPv4 and no IPv4 header
		{"ipv4-truncated", good[:14+10], hal.ReasonMalformed},
		{"ipv4-bad-checksum", wire.Build(func() wire.FrameSpec { s := udp4(ca1, ca2, 1000, 2000); s.BadIPChecksum = true; return s }()), hal.ReasonMalformed},
		{"ipv4-bad-version", mut(good, func(b []byte) { b[14] = 0x55 }), hal.ReasonMalformed},
		{"ipv4-ihl-short", mut(good, func(b []byte) { b[14] = 0x44 }), hal.ReasonMalformed},
		{"ipv4-total-too-long", mut(good, func(b []byte) { binary.BigEndian.PutUint16(b[16:], uint16(len(b))) }), hal.ReasonMalformed},
		{"ipv4-total-below-ihl", mut(good, func(b []byte) { binary.BigEndian.PutUint16(b[16:], 12) }), hal.ReasonMalformed},
		{"udp-truncated", good[:14+20+4], hal.ReasonMalformed},
		{"udp-bad-length", mut(good, func(b []byte) { binary.BigEndian.PutUint16(b[38:], 4) }), hal.ReasonMalformed},
		{"udp-length-beyond-ip", mut(good, func(b []byte) { binary.BigEndian.PutUint16(b[38:], 200) }), hal.ReasonMalformed},
		{"tcp-truncated", tcp[:14+20+10], hal.ReasonMalformed},
		{"tcp-bad-offset", mut(tcp, func(b []byte) { b[14+20+12] = 0x30 }), hal.ReasonMalformed},
		{"ip-options", wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoUDP, IPOptions: []byte{1, 1, 1, 1}}), hal.ReasonNone},
		{"later-fragment", wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoUDP, FragOffset: 10, Payload: make([]byte, 16)}), hal.ReasonFragment},
		{"first-fragment", wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: ca1, Dst: ca2, Proto: hal.ProtoUDP, MoreFragments: true, SrcPort: 1, DstPort: 2, Payload: make([]byte, 16)}), hal.ReasonNone},
		{"first-fragment-long-udp", firstFragment(good), hal.ReasonNone},
		{"first-fragment-vxlan", firstFragment(vx), hal.ReasonFragment},
		{"first-fragment-geneve", firstFragment(wire.BuildEncap(&gen, good)), hal.ReasonFragment},
		{"first-fragment-nvgre", firstFragment(wire.BuildEncap(&nvgre, good)), hal.ReasonFragment},
		{"vlan", wire.Build(func() wire.FrameSpec { s := udp4(ca1, ca2, 1, 2); s.VLAN = 7; return s }()), hal.ReasonNone},
		{"qinq", wire.Build(func() wire.FrameSpec { s := udp4(ca1, ca2, 1, 2); s.VLAN = 7; s.OuterVLAN = 8; return s }()), hal.ReasonNone},
		{"vlan-stack-of-3", append(append(bytes.Clone(good[:12]), 0x88, 0xa8, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3), good[12:]...), hal.ReasonUnsupported},
		{"vlan-truncated", append(bytes.Clone(good[:12]), 0x81, 0, 0), hal.ReasonMalformed},
		{"ipv6", v6(), hal.ReasonNone},
		{"ipv6-truncated", v6()[:14+30], hal.ReasonMalformed},
		{"ipv6-payload-too-long", mut(v6(), func(b []byte) { binary.BigEndian.PutUint16(b[18:], 500) }), hal.ReasonMalformed},
		{"ipv6-hop-by-hop", v6(0), hal.ReasonUnsupported},
		{"ipv6-routing", v6(43), hal.ReasonUnsupported},
		{"ipv6-dstopts", v6(60), hal.ReasonUnsupported},
		{"ipv6-fragment", v6(44), hal.ReasonFragment},
		{"vxlan-no-I-flag", mut(vx, func(b []byte) { b[42] = 0 }), hal.ReasonMalformed},
		{"vxlan-truncated", vx[:14+20+8+4], hal.ReasonMalformed},
		{"vxlan-inner-truncated", vx[:14+20+8+8+10], hal.ReasonMalformed},
		{"geneve-version", mut(wire.BuildEncap(&gen, good), func(b []byte) { b[42] |= 0x40 }), hal.ReasonUnsupported},
		{"geneve-options-beyond", mut(wire.BuildEncap(&gen, good), func(b []byte) { b[42] |= 0x3f }), hal.ReasonMalformed},
		// Control packets (O bit) and options the program cannot
		// understand go to the host, as softnic's parser (hal/wire)
		// sends them; the loop below holds every geneve case to it.
		{"geneve-control", mut(wire.BuildEncap(&gen, good), func(b []byte) { b[43] |= 0x80 }), hal.ReasonUnsupported},
		{"geneve-control-with-options", mut(wire.BuildEncap(&genOpt, good), func(b []byte) { b[43] |= 0x80 }), hal.ReasonUnsupported},
		{"geneve-options", wire.BuildEncap(&genOpt, good), hal.ReasonNone},
		{"geneve-C-bit", mut(wire.BuildEncap(&genOpt, good), func(b []byte) { b[43] |= 0x40 }), hal.ReasonUnsupported},
		{"geneve-critical-option", wire.BuildEncap(&genCrit, good), hal.ReasonUnsupported},
		{"geneve-critical-option-no-C-bit", mut(wire.BuildEncap(&genCrit, good), func(b []byte) { b[43] &^= 0x40 }), hal.ReasonUnsupported},
		{"geneve-option-overruns", mut(wire.BuildEncap(&genOpt, good), func(b []byte) { b[53] = 1 }), hal.ReasonMalformed},
		// More options than the program walks (GENEVE_MAX_OPTS): the
		// host's, which walks them all (hal/wire forwards these).
		{"many-options-geneve", wire.BuildEncap(&genMany, good), hal.ReasonUnsupported},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasPrefix(tc.name, "geneve") {
				var k hal.FlowKey
				var l wire.Layout
				if got := wire.ReasonOf(wire.Parse(tc.frame, pVM1, &k, &l)); got != tc.reason {
					t.Fatalf("hal/wire (softnic's parser) says %v, the case %v", got, tc.reason)
				}
			}
			r := mustRun(t, n, pVM1, tc.frame)
			if tc.reason == hal.ReasonNone {
				expectOutput(t, r, pVM2, tc.frame)
				return
			}
			want := VerdictToHost
			if tc.reason == hal.ReasonMalformed {
				want = VerdictDrop
			}
			before, _ := n.Stats(context.Background())
			r = mustRun(t, n, pVM1, tc.frame)
			if r.Verdict != want || r.Reason != tc.reason {
				t.Fatalf("verdict %v reason %v, want %v %v", r.Verdict, r.Reason, want, tc.reason)
			}
			after, _ := n.Stats(context.Background())
			if want == VerdictDrop && after.Drops[tc.reason] != before.Drops[tc.reason]+1 {
				t.Fatalf("drop not counted under %v", tc.reason)
			}
			if want == VerdictToHost && !bytes.Equal(r.Frame, tc.frame) {
				t.Fatalf("the host must get the frame as it arrived")
			}
		})
	}
}

func TestGenerationsAndPriorities(t *testing.T) {
	n := openVirtual(t, Config{})
	ctx := context.Background()
	f := wire.Build(udp4(ca1, ca2, 1000, 2000))
	live := exactRule(t, 1, pVM1, f, hal.Output(pVM2))
	live.Scope = 9
	shadow := exactRule(t, 2, pVM1, f, hal.EncapWith(vxlanTo), hal.Output(pUp))
	shadow.Scope, shadow.Generation = 9, 1
	mustApply(t, n, hal.AddOp(live), hal.AddOp(shadow))
	expectOutput(t, mustRun(t, n, pVM1, f), pVM2, f)
	if err := n.Activate(ctx, 9, 1); err != nil {
		t.Fatal(err)
	}
	expectOutput(t, mustRun(t, n, pVM1, f), pUp, wire.BuildEncap(&vxlanTo, f))
	if g, _ := n.ActiveGeneration(9); g != 1 {
		t.Fatalf("active generation %d", g)
	}
	if err := n.Activate(ctx, 9, 2); err != nil {
		t.Fatal(err)
	}
	if r := mustRun(t, n, pVM1, f); r.Verdict != VerdictToHost || r.Reason != hal.ReasonMiss {
		t.Fatalf("generation 2 has no rules: %+v", r)
	}
	if err := n.Activate(ctx, 9, 0); err != nil {
		t.Fatal(err)
	}
	// A third rule with the same match has no slot.
	third := exactRule(t, 3, pVM1, f, hal.Output(pVM2))
	third.Scope, third.Generation = 9, 5
	res := make([]hal.OpResult, 1)
	if err := n.Apply(ctx, []hal.Op{hal.AddOp(third)}, res); !errors.Is(err, hal.ErrTableFull) {
		t.Fatalf("third rule on one match: %v", err)
	}

	// Prefixes and priorities: /24 at priority 10 beats /16 at 5; an
	// exact rule at 20 beats both; equal priorities: lower ID.
	pfx := func(id hal.RuleID, prio uint16, p string, out hal.PortID) hal.Rule {
		var m hal.Match
		m.InPort(pVM2).IPDst(netip.MustParsePrefix(p))
		return hal.Rule{ID: id, Priority: prio, Match: m, Actions: []hal.Action{hal.Output(out)}}
	}
	mustApply(t, n, hal.AddOp(pfx(10, 5, "198.19.0.0/16", pVM1)), hal.AddOp(pfx(11, 10, "198.19.7.0/24", pUp)))
	to := func(dst string) []byte { return wire.Build(udp4(ca2, netip.MustParseAddr(dst), 1, 2)) }
	if r := mustRun(t, n, pVM2, to("198.19.7.5")); r.Rule != 11 || r.Port != pUp {
		t.Fatalf("/24 should win: %+v", r)
	}
	if r := mustRun(t, n, pVM2, to("198.19.8.5")); r.Rule != 10 || r.Port != pVM1 {
		t.Fatalf("/16 should match: %+v", r)
	}
	mustApply(t, n, hal.AddOp(pfx(12, 10, "198.19.7.0/25", pVM1)))
	if r := mustRun(t, n, pVM2, to("198.19.7.5")); r.Rule != 11 {
		t.Fatalf("equal priority: lower ID should win: %+v", r)
	}
	mustApply(t, n, hal.ModifyOp(pfx(12, 30, "198.19.7.0/25", pVM1)))
	if r := mustRun(t, n, pVM2, to("198.19.7.5")); r.Rule != 12 {
		t.Fatalf("raised priority: %+v", r)
	}
	mustApply(t, n, hal.DeleteOp(12), hal.DeleteOp(11))
	if r := mustRun(t, n, pVM2, to("198.19.7.5")); r.Rule != 10 {
		t.Fatalf("after deletes: %+v", r)
	}
}

func TestTableFullAndValidate(t *testing.T) {
	n := openVirtual(t, Config{MaxRules: 8})
	ctx := context.Background()
	var ops []hal.Op
	for i := 0; i < 10; i++ {
		f := wire.Build(udp4(ca1, ca2, uint16(1000+i), 53))
		ops = append(ops, hal.AddOp(exactRule(t, hal.RuleID(i+1), pVM1, f, hal.Output(pVM2))))
	}
	res := make([]hal.OpResult, len(ops))
	err := n.Apply(ctx, ops, res)
	if !errors.Is(err, hal.ErrTableFull) {
		t.Fatalf("10 flows in 8 entries: %v", err)
	}
	landed := 0
	for i, r := range res {
		if r.Err == nil {
			landed++
			f := wire.Build(udp4(ca1, ca2, uint16(1000+i), 53))
			expectOutput(t, mustRun(t, n, pVM1, f), pVM2, f)
		} else if !errors.Is(r.Err, hal.ErrTableFull) {
			t.Fatalf("op %d: %v", i, r.Err)
		}
	}
	if landed != 8 {
		t.Fatalf("%d landed, want 8", landed)
	}

	n2 := openVirtual(t, Config{})
	for i := 0; i < maxMasks; i++ {
		var m hal.Match
		m.IPDst(netip.PrefixFrom(ca2, 8+i))
		mustApply(t, n2, hal.AddOp(hal.Rule{ID: hal.RuleID(i + 1), Match: m, Actions: []hal.Action{hal.Output(pVM2)}}))
	}
	var m hal.Match
	m.IPDst(netip.PrefixFrom(ca2, 30))
	r := hal.Rule{ID: 99, Match: m, Actions: []hal.Action{hal.Output(pVM2)}}
	if err := n2.Validate(&r); !errors.Is(err, hal.ErrTableFull) {
		t.Fatalf("17th mask shape: Validate %v", err)
	}

	v6enc := hal.Encap{Kind: hal.EncapVXLAN, VNI: 1, Src: netip.MustParseAddr("2001:db8::a"), Dst: netip.MustParseAddr("2001:db8::b")}
	genOpt := hal.Encap{Kind: hal.EncapGeneve, VNI: 1, Src: pa1, Dst: pa2, GeneveOptions: []byte{0, 1, 2, 0}}
	for _, tc := range []struct {
		name, field string
		r           hal.Rule
	}{
		{"geneve-options", "actions[0] encap geneve", hal.Rule{ID: 1000, Actions: []hal.Action{hal.EncapWith(genOpt), hal.Output(pUp)}}},
		{"push-and-pop", "actions", hal.Rule{ID: 1000, Actions: []hal.Action{hal.PopVLAN(), hal.PushVLAN(3), hal.Output(pUp)}}},
		{"scope", "scope", hal.Rule{ID: 1000, Scope: 1 << 20, Actions: []hal.Action{hal.Output(pUp)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := n.Validate(&tc.r)
			var ue *hal.UnsupportedError
			if !errors.As(err, &ue) || !errors.Is(err, hal.ErrNotSupported) || ue.Field != tc.field || ue.Reason == "" {
				t.Fatalf("got %v, want an UnsupportedError on %q with a reason", err, tc.field)
			}
			res := make([]hal.OpResult, 1)
			if err := n.Apply(ctx, []hal.Op{hal.AddOp(tc.r)}, res); !errors.Is(err, hal.ErrNotSupported) {
				t.Fatalf("Apply took what Validate refused: %v", err)
			}
		})
	}
	for _, k := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE} {
		e := v6enc
		e.Kind = k
		if err := n.Validate(&hal.Rule{ID: 1000, Actions: []hal.Action{hal.EncapWith(e), hal.Output(pUp)}}); err != nil {
			t.Fatalf("%s over IPv6: %v", k, err)
		}
	}
	bad := hal.Rule{ID: 1, Actions: []hal.Action{hal.Output(42)}}
	if err := n.Validate(&bad); !errors.Is(err, hal.ErrNotFound) {
		t.Fatalf("output to a missing port: %v", err)
	}
}
