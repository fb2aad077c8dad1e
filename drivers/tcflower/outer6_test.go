package tcflower

import (
	"encoding/binary"
	"errors"
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

// Where the tunnel device has no UDP/IPv6 socket, Validate refuses outer
// IPv6 addresses, naming the field, and still takes IPv4 ones and decap
// rules that match no outer address.
func TestValidateRefusesOuterIPv6WithoutSocket(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	n.lay.outer6 = 0
	var in hal.Match
	in.InPort(1)
	var d6 hal.Match
	d6.Tunnel(hal.EncapVXLAN, 100).TunDst(pa6Local)
	for _, c := range []struct {
		name, field string
		rule        hal.Rule
	}{
		{"encap", "actions[0] encap vxlan", hal.Rule{ID: 1, Match: in, Actions: []hal.Action{hal.EncapWith(enc6(hal.EncapVXLAN)), hal.Output(3)}}},
		{"decap", "match.tun_dst", hal.Rule{ID: 2, Match: d6, Actions: []hal.Action{hal.Decap(), hal.Output(1)}}},
	} {
		err := n.Validate(&c.rule)
		var ue *hal.UnsupportedError
		if !errors.As(err, &ue) || !errors.Is(err, hal.ErrNotSupported) {
			t.Errorf("%s: Validate: %v, want an UnsupportedError", c.name, err)
			continue
		}
		if ue.Field != c.field {
			t.Errorf("%s: refusal names %q, want %q (%v)", c.name, ue.Field, c.field, err)
		}
	}
	enc4 := hal.Encap{Kind: hal.EncapVXLAN, VNI: 1, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2")}
	if err := n.Validate(&hal.Rule{ID: 3, Match: in, Actions: []hal.Action{hal.EncapWith(enc4), hal.Output(3)}}); err != nil {
		t.Errorf("IPv4 encap: %v", err)
	}
	var vni hal.Match
	vni.Tunnel(hal.EncapVXLAN, 100)
	if err := n.Validate(&hal.Rule{ID: 4, Match: vni, Actions: []hal.Action{hal.Decap(), hal.Output(1)}}); err != nil {
		t.Errorf("decap on the VNI alone: %v", err)
	}
}

func TestUDP6Ports(t *testing.T) {
	// As Linux 6.1 prints it: a VXLAN device's socket on 4789, a Geneve
	// one on 6081, a bound client socket elsewhere.
	table := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 1409: 00000000000000000000000000000000:12B5 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 0 2 0000000000000000 0
 2697: 00000000000000000000000000000000:17C1 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 0 2 0000000000000000 0
 4000: B80D0120000000000000000001000000:A9F2 B80D0120000000000000000002000000:0035 01 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 0
`
	got := udp6Ports(table)
	for _, p := range []uint16{4789, 6081, 0xa9f2} {
		if !got[p] {
			t.Errorf("port %d not found in %v", p, got)
		}
	}
	if len(got) != 3 {
		t.Errorf("ports %v, want 3", got)
	}
	if len(udp6Ports("")) != 0 || len(udp6Ports("garbage\n 1: x:zz y 07\n")) != 0 {
		t.Errorf("an empty or unreadable table lists ports")
	}
}
