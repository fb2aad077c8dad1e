package afpacket

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// A frame whose checksum field holds garbage (as offload leaves it) gets
// the checksum wire.Build computes for the same frame.
func TestCompleteChecksum(t *testing.T) {
	for _, tc := range []struct {
		proto    uint8
		src, dst string
		off      int
	}{
		{hal.ProtoUDP, "192.0.2.1", "192.0.2.2", 6},
		{hal.ProtoTCP, "192.0.2.1", "192.0.2.2", 16},
		{hal.ProtoUDP, "2001:db8::1", "2001:db8::2", 6},
		{hal.ProtoTCP, "2001:db8::1", "2001:db8::2", 16},
	} {
		want := wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:00:00:01"), DstMAC: hal.MustMAC("02:00:00:00:00:02"),
			Src: netip.MustParseAddr(tc.src), Dst: netip.MustParseAddr(tc.dst), Proto: tc.proto, SrcPort: 1, DstPort: 2,
			Payload: []byte("checksum me")})
		got := append([]byte(nil), want...)
		l4 := 14 + 20
		if netip.MustParseAddr(tc.src).Is6() {
			l4 = 14 + 40
		}
		binary.BigEndian.PutUint16(got[l4+tc.off:], 0x1234)
		completeChecksum(got)
		if string(got) != string(want) {
			t.Errorf("%d %s: checksum %#04x, want %#04x", tc.proto, tc.src,
				binary.BigEndian.Uint16(got[l4+tc.off:]), binary.BigEndian.Uint16(want[l4+tc.off:]))
		}
	}
	// Not a transport frame: untouched.
	arp := wire.Build(wire.FrameSpec{EthType: 0x0806, Payload: make([]byte, 28)})
	before := string(arp)
	completeChecksum(arp)
	if string(arp) != before {
		t.Error("a non-IP frame was changed")
	}
}
