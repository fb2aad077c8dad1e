package wire

import (
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

func TestQuickRoundTrip(t *testing.T) {
	spec := FrameSpec{SrcMAC: hal.MustMAC("02:00:00:00:00:01"), DstMAC: hal.MustMAC("02:00:00:00:00:02"),
		Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"), Proto: hal.ProtoUDP,
		SrcPort: 1000, DstPort: 2000, Payload: []byte("hello")}
	f := Build(spec)
	var k hal.FlowKey
	var l Layout
	if err := Parse(f, 3, &k, &l); err != nil {
		t.Fatal(err)
	}
	t.Log(k.String(), l)
	e := hal.Encap{Kind: hal.EncapVXLAN, VNI: 5000, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2")}
	enc := BuildEncap(&e, f)
	var k2 hal.FlowKey
	if err := Parse(enc, 3, &k2, &l); err != nil {
		t.Fatal(err)
	}
	t.Log(k2.String(), l)
	k2.TunKind, k2.VNI, k2.TunSrc, k2.TunDst = 0, 0, [16]byte{}, [16]byte{}
	if k2 != k {
		t.Fatalf("%v != %v", k2, k)
	}
}
