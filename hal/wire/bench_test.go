package wire

import (
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

func udp4Frame64() []byte {
	// 14 + 20 + 8 + 22 payload = 64 bytes (without FCS).
	return Build(FrameSpec{SrcMAC: hal.MustMAC("02:00:00:00:00:01"), DstMAC: hal.MustMAC("02:00:00:00:00:02"),
		Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"), Proto: hal.ProtoUDP,
		SrcPort: 1000, DstPort: 2000, Payload: make([]byte, 22)})
}

func BenchmarkParseUDP4(b *testing.B) {
	f := udp4Frame64()
	if len(f) != 64 {
		b.Fatalf("frame is %d bytes", len(f))
	}
	var k hal.FlowKey
	var l Layout
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	for b.Loop() {
		if err := Parse(f, 1, &k, &l); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPushVXLAN4(b *testing.B) {
	f := udp4Frame64()
	t, err := NewEncapTemplate(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 5000,
		Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2")})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, MaxEncapHeadroom+len(f))
	copy(buf[MaxEncapHeadroom:], f)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := t.Push(buf, MaxEncapHeadroom, len(buf), 0x12345678); err != nil {
			b.Fatal(err)
		}
	}
}
