package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/nicpath/nicpath/hal"
)

// bigSpec is a UDP datagram whose IP packet takes ipLen bytes.
func bigSpec(src, dst netip.Addr, ipLen int) FrameSpec {
	hdr := IPv4HeaderLen
	if src.Is6() {
		hdr = IPv6HeaderLen
	}
	p := make([]byte, ipLen-hdr-UDPHeaderLen)
	for i := range p {
		p[i] = byte(i * 7)
	}
	return FrameSpec{SrcMAC: macA, DstMAC: macB, Src: src, Dst: dst, Proto: hal.ProtoUDP, SrcPort: 4000, DstPort: 5000,
		TOS: 0x10, Payload: p}
}

func parsed(t testing.TB, f []byte) Layout {
	t.Helper()
	var k hal.FlowKey
	var l Layout
	if err := Parse(f, 0, &k, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestTooBigIPv4Gopacket: a DF datagram of 1500 bytes is answered with an
// ICMP fragmentation needed that gopacket decodes with valid checksums,
// the MTU in the next-hop MTU field, and 548 bytes of the datagram quoted
// (576 bytes of IP packet in all).
func TestTooBigIPv4Gopacket(t *testing.T) {
	spec := bigSpec(caA4, caB4, 1500)
	spec.DontFragment, spec.VLAN = true, 42
	f := Build(spec)
	l := parsed(t, f)
	ans, err := AppendTooBig(nil, f, &l, &TooBig{MTU: 1450, ID: 7})
	if err != nil {
		t.Fatal(err)
	}
	pkt := gopacket.NewPacket(ans, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	tag, _ := pkt.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if eth == nil || tag == nil || ip == nil || icmp == nil {
		t.Fatalf("gopacket decodes %v", pkt)
	}
	if !bytes.Equal(eth.SrcMAC, macB[:]) || !bytes.Equal(eth.DstMAC, macA[:]) || tag.VLANIdentifier != 42 {
		t.Errorf("ethernet %v -> %v vlan %d", eth.SrcMAC, eth.DstMAC, tag.VLANIdentifier)
	}
	if !ip.SrcIP.Equal(caB4.AsSlice()) || !ip.DstIP.Equal(caA4.AsSlice()) || ip.Protocol != layers.IPProtocolICMPv4 ||
		ip.Length != MaxICMPv4Error || ip.TTL != DefaultTTL || ip.Id != 7 || ip.TOS != 0xc0|0x10 {
		t.Errorf("IP header %+v", ip)
	}
	if _, r := ip.VerifyChecksum(); !r.Valid {
		t.Errorf("IPv4 checksum %#x, want %#x", r.Actual, r.Correct)
	}
	if _, r := icmp.VerifyChecksum(); !r.Valid {
		t.Errorf("ICMP checksum %#x, want %#x", r.Actual, r.Correct)
	}
	if icmp.TypeCode != layers.CreateICMPv4TypeCode(3, 4) || icmp.Seq != 1450 || icmp.Id != 0 {
		t.Errorf("ICMP %v id %d next-hop MTU %d", icmp.TypeCode, icmp.Id, icmp.Seq)
	}
	if q := icmp.Payload; !bytes.Equal(q, f[l.L3:l.L3+MaxICMPv4Error-28]) {
		t.Errorf("quote of %d bytes differs from the datagram's first bytes", len(q))
	}
}

// TestTooBigIPv6Gopacket: an IPv6 datagram is answered with a Packet Too
// Big quoting 1232 bytes (1280 bytes of IPv6 packet).
func TestTooBigIPv6Gopacket(t *testing.T) {
	f := Build(bigSpec(caA6, caB6, 1500))
	l := parsed(t, f)
	ans, err := AppendTooBig(nil, f, &l, &TooBig{MTU: 1430})
	if err != nil {
		t.Fatal(err)
	}
	pkt := gopacket.NewPacket(ans, layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if ip == nil || icmp == nil {
		t.Fatalf("gopacket decodes %v", pkt)
	}
	if !ip.SrcIP.Equal(caB6.AsSlice()) || !ip.DstIP.Equal(caA6.AsSlice()) || int(ip.Length)+IPv6HeaderLen != MaxICMPv6Error {
		t.Errorf("IPv6 header %+v", ip)
	}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	if _, r := icmp.VerifyChecksum(); !r.Valid {
		t.Errorf("ICMPv6 checksum %#x, want %#x", r.Actual, r.Correct)
	}
	if icmp.TypeCode != layers.CreateICMPv6TypeCode(2, 0) {
		t.Errorf("ICMPv6 %v", icmp.TypeCode)
	}
	body := icmp.Payload // the MTU field, then the quote
	if len(body) < 4 || binary.BigEndian.Uint32(body[:4]) != 1430 {
		t.Fatalf("MTU field %x", body[:min(4, len(body))])
	}
	if q := body[4:]; !bytes.Equal(q, f[l.L3:l.L3+MaxICMPv6Error-48]) {
		t.Errorf("quote of %d bytes differs from the datagram's first bytes", len(q))
	}
}

func TestTooBigOptions(t *testing.T) {
	spec := bigSpec(caA4, caB4, 1500)
	spec.DontFragment = true
	f := Build(spec)
	l := parsed(t, f)
	rewritten := append([]byte(nil), f...)
	copy(rewritten[l.L3+16:l.L3+20], []byte{203, 0, 113, 9})
	src := netip.MustParseAddr("192.0.2.254")
	ans, err := AppendTooBig([]byte{0xee}, rewritten, &l, &TooBig{MTU: 1000, Src: src, MaxLen: 100, Quoted: f, TTL: 3})
	if err != nil {
		t.Fatal(err)
	}
	if ans[0] != 0xee {
		t.Fatal("AppendTooBig did not append")
	}
	ans = ans[1:]
	al := parsed(t, ans)
	if al.End-al.L3 != 100 {
		t.Errorf("answer of %d bytes of IP packet, want MaxLen 100", al.End-al.L3)
	}
	if got := netip.AddrFrom4([4]byte(ans[al.L3+12 : al.L3+16])); got != src || ans[al.L3+8] != 3 {
		t.Errorf("source %v ttl %d", got, ans[al.L3+8])
	}
	if !bytes.Equal(ans[al.L4+8:al.End], f[l.L3:l.L3+72]) {
		t.Error("the quote is not of the Quoted frame")
	}
	if _, err := AppendTooBig(nil, f, &l, &TooBig{MTU: 1000, MaxLen: 55}); !errors.Is(err, ErrAnswerTooSmall) {
		t.Errorf("MaxLen 55 (no room for 20+8+28): %v", err)
	}
}

// TestTooBigRefusals: packets the RFCs say are never answered with an ICMP
// error.
func TestTooBigRefusals(t *testing.T) {
	bcast := hal.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	v4 := func(mod func(s *FrameSpec)) []byte {
		s := bigSpec(caA4, caB4, 1500)
		s.DontFragment = true
		mod(&s)
		return Build(s)
	}
	v6 := func(mod func(s *FrameSpec)) []byte {
		s := bigSpec(caA6, caB6, 1500)
		mod(&s)
		return Build(s)
	}
	icmpErr := func(s *FrameSpec) { s.Proto, s.ICMPType, s.ICMPCode = hal.ProtoICMP, 11, 0 }
	cases := []struct {
		name  string
		frame []byte
		src   netip.Addr
		want  error
	}{
		{"icmp4-error", v4(icmpErr), netip.Addr{}, ErrICMPError},
		{"icmp6-error", v6(func(s *FrameSpec) { s.Proto, s.ICMPType = hal.ProtoICMPv6, 1 }), netip.Addr{}, ErrICMPError},
		{"ip4-multicast-dst", v4(func(s *FrameSpec) { s.Dst = netip.MustParseAddr("239.1.1.1") }), netip.Addr{}, ErrNotUnicast},
		{"ip4-broadcast-dst", v4(func(s *FrameSpec) { s.Dst = netip.MustParseAddr("255.255.255.255") }), netip.Addr{}, ErrNotUnicast},
		{"ip4-link-broadcast", v4(func(s *FrameSpec) { s.DstMAC = bcast }), netip.Addr{}, ErrNotUnicast},
		{"ip4-unspecified-src", v4(func(s *FrameSpec) { s.Src = netip.MustParseAddr("0.0.0.0") }), netip.Addr{}, ErrNotUnicast},
		{"ip6-multicast-src", v6(func(s *FrameSpec) { s.Src = netip.MustParseAddr("ff02::1") }), netip.Addr{}, ErrNotUnicast},
		{"ip6-multicast-dst-no-source", v6(func(s *FrameSpec) { s.Dst = netip.MustParseAddr("ff02::1") }), netip.Addr{}, ErrNoICMPSource},
		{"ip4-source-of-other-family", v4(func(*FrameSpec) {}), caB6, ErrNoICMPSource},
		{"arp", Build(FrameSpec{SrcMAC: macA, DstMAC: bcast, EthType: hal.EtherTypeARP, Payload: arpRequest()}), netip.Addr{}, ErrNoHeader},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var k hal.FlowKey
			var l Layout
			if err := Parse(c.frame, 0, &k, &l); err != nil {
				t.Fatal(err)
			}
			b, err := AppendTooBig(nil, c.frame, &l, &TooBig{MTU: 1280, Src: c.src})
			if !errors.Is(err, c.want) || len(b) != 0 {
				t.Fatalf("got %v and %d bytes, want %v", err, len(b), c.want)
			}
		})
	}
	// IPv6 answers a multicast destination with a Packet Too Big (RFC 4443
	// §2.4(e.3)), from a unicast source of its own.
	f := v6(func(s *FrameSpec) { s.Dst = netip.MustParseAddr("ff0e::1") })
	l := parsed(t, f)
	if _, err := AppendTooBig(nil, f, &l, &TooBig{MTU: 1280, Src: caB6}); err != nil {
		t.Errorf("multicast IPv6 destination with a source given: %v", err)
	}
}

// TestTooBigNoAllocs: with room in b, an answer allocates nothing.
func TestTooBigNoAllocs(t *testing.T) {
	spec := bigSpec(caA4, caB4, 1500)
	spec.DontFragment = true
	f := Build(spec)
	l := parsed(t, f)
	buf := make([]byte, 0, 2048)
	tb := &TooBig{MTU: 1450}
	if a := testing.AllocsPerRun(100, func() {
		if _, err := AppendTooBig(buf, f, &l, tb); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("%.1f allocations per answer", a)
	}
}

// BenchmarkAppendTooBig answers a 1500-byte DF datagram with a 576-byte
// ICMP fragmentation needed, into a buffer the caller reuses.
func BenchmarkAppendTooBig(b *testing.B) {
	spec := bigSpec(caA4, caB4, 1500)
	spec.DontFragment = true
	f := Build(spec)
	l := parsed(b, f)
	buf := make([]byte, 0, 2048)
	tb := &TooBig{MTU: 1450}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := AppendTooBig(buf, f, &l, tb); err != nil {
			b.Fatal(err)
		}
	}
}
