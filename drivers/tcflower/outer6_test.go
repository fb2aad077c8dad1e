package tcflower

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

var (
	pa6Local  = netip.MustParseAddr("2001:db8:18::1")
	pa6Remote = netip.MustParseAddr("2001:db8:18::2")
)

func enc6(kind hal.EncapKind) hal.Encap {
	return hal.Encap{Kind: kind, VNI: 0x123456, Src: pa6Local, Dst: pa6Remote, TTL: 17}
}

// The encap rule's tunnel_key carries TCA_TUNNEL_KEY_ENC_IPV6_SRC/DST (16
// bytes each, network order) and no IPv4 addresses, and asks for no
// "nocsum": the device writes the outer UDP checksum.
func TestEncodeOuterIPv6Encap(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	var m hal.Match
	m.InPort(1)
	r := hal.Rule{ID: 1, Priority: 10, Match: m, Actions: []hal.Action{hal.EncapWith(enc6(hal.EncapVXLAN)), hal.Output(3)}}
	if err := n.Validate(&r); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	c, err := compileRule(&n.lay, &r)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.actions) != 2 || c.actions[0].Kind != "tunnel_key" || c.actions[1].Kind != "mirred" {
		t.Fatalf("actions %+v, want tunnel_key and mirred", c.actions)
	}
	o, _ := decodeAttrs(t, c.actions[0].Opts)
	if act := binary.NativeEndian.Uint32(o[tunKeyParms][20:]); act != tunKeyActSet {
		t.Errorf("tunnel_key action %d, want set", act)
	}
	s, d := pa6Local.As16(), pa6Remote.As16()
	wantAttr(t, o, tunKeyIPv6Src, s[:], "TCA_TUNNEL_KEY_ENC_IPV6_SRC")
	wantAttr(t, o, tunKeyIPv6Dst, d[:], "TCA_TUNNEL_KEY_ENC_IPV6_DST")
	wantAttr(t, o, tunKeyKeyID, []byte{0, 0x12, 0x34, 0x56}, "ENC_KEY_ID")
	wantAttr(t, o, tunKeyDstPort, []byte{0x12, 0xb5}, "ENC_DST_PORT (4789)")
	wantAttr(t, o, tunKeyTTL, []byte{17}, "ENC_TTL (the hop limit)")
	for _, absent := range []uint16{tunKeyIPv4Src, tunKeyIPv4Dst, tunKeyNoCsum, tunKeyEncOpts} {
		if _, ok := o[absent]; ok {
			t.Errorf("tunnel_key attribute %d present in an IPv6 encap without options", absent)
		}
	}
	mo, _ := decodeAttrs(t, c.actions[1].Opts)
	if ifi := binary.NativeEndian.Uint32(mo[mirredParms][24:]); ifi != 20 {
		t.Errorf("mirred to ifindex %d, want vx0 (20)", ifi)
	}
}

// The decap rule matches TCA_FLOWER_KEY_ENC_IPV6_SRC/DST with their masks
// (an exact source, a /64 destination) on the tunnel device, and no IPv4
// outer keys.
func TestEncodeOuterIPv6Decap(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	var m hal.Match
	m.Tunnel(hal.EncapVXLAN, 100).TunSrc(pa6Remote)
	m.Key.TunDst = netip.MustParseAddr("2001:db8:18::").As16()
	m.Mask.TunDst = netip.MustParseAddr("ffff:ffff:ffff:ffff::").As16()
	r := hal.Rule{ID: 2, Priority: 10, Match: m, Actions: []hal.Action{hal.Decap(), hal.Output(1)}}
	if err := n.Validate(&r); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	c, err := compileRule(&n.lay, &r)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := decodeAttrs(t, c.keys)
	wantAttr(t, k, flowerIndev, cstr("vx0"), "INDEV: tunnelled frames arrive on the tunnel device")
	wantAttr(t, k, flowerEncKeyID, []byte{0, 0, 0, 100}, "ENC_KEY_ID")
	src := pa6Remote.As16()
	wantAttr(t, k, flowerEncIPv6Src, src[:], "TCA_FLOWER_KEY_ENC_IPV6_SRC")
	wantAttr(t, k, flowerEncIPv6SrcM, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "TCA_FLOWER_KEY_ENC_IPV6_SRC_MASK")
	wantAttr(t, k, flowerEncIPv6Dst, []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "TCA_FLOWER_KEY_ENC_IPV6_DST")
	wantAttr(t, k, flowerEncIPv6DstM, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, "TCA_FLOWER_KEY_ENC_IPV6_DST_MASK")
	for _, absent := range []uint16{flowerEncIPv4Src, flowerEncIPv4SrcM, flowerEncIPv4Dst, flowerEncIPv4DstM} {
		if _, ok := k[absent]; ok {
			t.Errorf("flower attribute %d (an IPv4 outer key) present in an IPv6 decap match", absent)
		}
	}
	if len(c.actions) != 2 || c.actions[0].Kind != "tunnel_key" || c.actions[1].Kind != "mirred" {
		t.Fatalf("actions %+v, want tunnel_key unset and mirred", c.actions)
	}
}
