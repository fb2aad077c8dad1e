package sealtest

import (
	"net/netip"
	"testing"
)

func TestFindLeak(t *testing.T) {
	s := Secret{IP: netip.MustParseAddr("203.0.113.77"), MAC: [6]byte{2, 0, 0, 0, 2, 0x99}}
	for name, data := range map[string][]byte{
		"raw":    {9, 9, 203, 0, 113, 77, 1},
		"text":   []byte("dst=203.0.113.77;"),
		"mac":    {1, 2, 0, 0, 0, 2, 0x99, 3},
		"mapped": append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 203, 0, 113, 77),
		"le":     {77, 113, 0, 203},
	} {
		if FindLeak(data, s) == "" {
			t.Errorf("%s: leak not found", name)
		}
	}
	if got := FindLeak([]byte{203, 0, 113, 78, 2, 0, 0, 0, 2, 0x98}, s); got != "" {
		t.Errorf("false positive: %s", got)
	}
	v6 := Secret{IP: netip.MustParseAddr("2001:db8::77")}
	if FindLeak(v6.IP.AsSlice(), v6) == "" || FindLeak([]byte("2001:db8::77"), v6) == "" {
		t.Error("IPv6 leak not found")
	}
}
