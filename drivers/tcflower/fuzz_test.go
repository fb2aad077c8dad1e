package tcflower

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// FuzzParseFilter feeds arbitrary dump messages to the decoder: it must
// never panic, and what it accepts must be self-consistent.
func FuzzParseFilter(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, tcmsgLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseFilter(b)
		if err != nil {
			return
		}
		if got.Kind != "flower" {
			t.Fatalf("accepted a %q filter", got.Kind)
		}
		if len(b) < tcmsgLen {
			t.Fatalf("accepted %d bytes, shorter than a tcmsg", len(b))
		}
		tm, _ := parseTcmsg(b)
		if got.Handle != tm.Handle || got.Prio != uint16(tm.Info>>16) {
			t.Fatalf("handle/prio %d/%d differ from the tcmsg %+v", got.Handle, got.Prio, tm)
		}
		if id, owner, ok := cookieRule(got.Cookie); ok {
			if !bytes.Equal(ruleCookie(ruleIDOf(id), cookieOf(owner)), got.Cookie) {
				t.Fatalf("cookie % x does not round-trip", got.Cookie)
			}
		} else if len(got.Cookie) == 16 {
			t.Fatalf("a 16-byte cookie was not split")
		}
		if len(got.Actions) == 0 && (got.Packets != 0 || got.Cookie != nil) {
			t.Fatalf("stats or cookie without an action: %+v", got)
		}
	})
}

// FuzzParseLink feeds arbitrary RTM_NEWLINK payloads to the decoder.
func FuzzParseLink(f *testing.F) {
	f.Add(make([]byte, 16))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ifindex, _, _, _, _, err := parseLink(b)
		if err != nil {
			return
		}
		if len(b) < 16 {
			t.Fatalf("accepted %d bytes, shorter than an ifinfomsg", len(b))
		}
		if want := uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16 | uint32(b[7])<<24; ifindex != want {
			t.Fatalf("ifindex %d, want %d", ifindex, want)
		}
	})
}

// FuzzUDP6Ports feeds arbitrary /proc/net/udp6 text to the table parser: it
// must never panic, and every port it lists must stand in the input, in
// hex.
func FuzzUDP6Ports(f *testing.F) {
	f.Add(" 1409: 00000000000000000000000000000000:12B5 00000000000000000000000000000000:0000 07\n")
	f.Add("  sl  local_address remote_address st\n 1: ::x:zz y 07\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, table string) {
		upper := strings.ToUpper(table)
		for p := range udp6Ports(table) {
			if !strings.Contains(upper, fmt.Sprintf("%X", p)) {
				t.Fatalf("port %d (%#x) is not in the table %q", p, p, table)
			}
		}
	})
}

// FuzzDecodeException feeds arbitrary frames from the exception channel to
// the decoder, as left to the device or not: it must never panic, take
// only frames with the two tags, and change nothing of a frame left to the
// device but its transport checksum field (two bytes).
func FuzzDecodeException(f *testing.F) {
	n := &NIC{ports: []hal.Port{{ID: 1}, {ID: 2}}}
	f.Add(tagged(wire.Build(wire.FrameSpec{Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2}), 1, uint16(hal.ReasonMiss)), true)
	f.Add(tagged(wire.Build(wire.FrameSpec{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), Proto: hal.ProtoTCP, SrcPort: 1, DstPort: 2}), 2, uint16(hal.ReasonMiss)), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, partial bool) {
		as := hal.Exception{Buf: make([]byte, 2048)}
		ok := n.decodeException(b, partial, &as)
		plain := hal.Exception{Buf: make([]byte, 2048)}
		if okPlain := n.decodeException(b, false, &plain); ok != okPlain {
			t.Fatalf("taken %v as left to the device, %v otherwise", ok, okPlain)
		}
		if !ok {
			return
		}
		if len(b) < 22 || as.Len != min(len(b)-8, len(as.Buf)) || as.Len != plain.Len {
			t.Fatalf("took a %d-byte frame as %d (%d) bytes", len(b), as.Len, plain.Len)
		}
		var diff []int
		for i := range as.Frame() {
			if as.Buf[i] != plain.Buf[i] {
				diff = append(diff, i)
			}
		}
		if len(diff) > 2 || (len(diff) == 2 && diff[1] != diff[0]+1) || (!partial && len(diff) > 0) {
			t.Fatalf("completing the checksum changed bytes %v", diff)
		}
	})
}
