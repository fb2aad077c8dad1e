package gateway

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// FuzzParseARP: any bytes parse or are refused without a panic; what
// parses is an IPv4-over-Ethernet request or reply, and building it again
// from what was read gives back the same ARP fields.
func FuzzParseARP(f *testing.F) {
	m := hal.MustMAC("02:00:00:00:00:01")
	f.Add(BuildARP(1, m, netip.MustParseAddr("203.0.113.1"), hal.MAC{}, netip.MustParseAddr("203.0.113.10")))
	f.Add(BuildARP(2, m, netip.MustParseAddr("203.0.113.10"), m, netip.MustParseAddr("203.0.113.1")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		op, sha, spa, tpa, ok := ParseARP(b)
		if !ok {
			return
		}
		if op != 1 && op != 2 || !spa.Is4() || !tpa.Is4() {
			t.Fatalf("parsed op %d %s %s", op, spa, tpa)
		}
		var tha hal.MAC
		copy(tha[:], b[14+18:14+24])
		again := BuildARP(op, sha, spa, tha, tpa)
		// The ARP fields (not the Ethernet destination, nor a request's
		// target MAC, which BuildARP leaves zero) round-trip.
		if !bytes.Equal(again[14:14+18], b[14:14+18]) || !bytes.Equal(again[14+24:14+28], b[14+24:14+28]) {
			t.Fatalf("round trip:\n%x\n%x", b[:42], again[:42])
		}
	})
}
