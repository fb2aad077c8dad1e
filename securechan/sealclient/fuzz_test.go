package sealclient

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

var fuzzMAC = hal.MustMAC("02:00:00:00:07:01")

// FuzzMatchUDP: the reply decoder takes any frame; it never panics, and
// what it accepts is a UDP datagram to the client's MAC and port whose
// payload is the frame's tail.
func FuzzMatchUDP(f *testing.F) {
	f.Add(wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:00:07:02"), DstMAC: fuzzMAC, Src: netip.MustParseAddr("198.18.7.2"),
		Dst: netip.MustParseAddr("198.18.7.1"), Proto: hal.ProtoUDP, SrcPort: 7, DstPort: 40000, Payload: []byte("reply")}), uint16(40000))
	f.Add(wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:00:07:02"), DstMAC: fuzzMAC, Src: netip.MustParseAddr("2001:db8:7::2"),
		Dst: netip.MustParseAddr("2001:db8:7::1"), Proto: hal.ProtoUDP, SrcPort: 7, DstPort: 40000, Payload: []byte("reply6")}), uint16(40000))
	f.Add([]byte{0x02, 0, 0, 0, 7, 1}, uint16(1))
	c := &Client{mac: fuzzMAC}
	f.Fuzz(func(t *testing.T, frame []byte, port uint16) {
		r, ok := c.matchUDP(frame, port)
		if !ok {
			return
		}
		if r.DstPort != port || !bytes.Equal(frame[:6], fuzzMAC[:]) || !bytes.HasSuffix(frame, r.Payload) {
			t.Fatalf("accepted %+v from % x", r, frame)
		}
	})
}

// FuzzParseKey: a key is 64 hex digits with space around, nothing else.
func FuzzParseKey(f *testing.F) {
	f.Add("8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f\n")
	f.Add(" 00")
	f.Add("zz40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			return
		}
		if !bytes.Contains(bytes.ToLower([]byte(s)), []byte(hex.EncodeToString(k[:]))) {
			t.Fatalf("%q parsed as %x", s, k)
		}
	})
}
