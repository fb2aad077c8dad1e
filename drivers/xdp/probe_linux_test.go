//go:build linux

package xdp

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func linkMsg(t testing.TB, mtu, maxMTU, peer uint32, nsid int32) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, "vp1")
	ae.Uint32(unix.IFLA_MTU, mtu)
	ae.Uint32(unix.IFLA_MAX_MTU, maxMTU)
	ae.Uint32(unix.IFLA_LINK, peer)
	if nsid >= 0 {
		ae.Int32(unix.IFLA_LINK_NETNSID, nsid)
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	h := make([]byte, 16)
	binary.NativeEndian.PutUint32(h[4:], 7)
	return append(h, b...)
}

func TestParseLink(t *testing.T) {
	li, err := parseLink(linkMsg(t, 1450, 3506, 12, 3))
	if err != nil || li != (linkInfo{mtu: 1450, maxMTU: 3506, peer: 12, peerNS: 3}) {
		t.Fatalf("%+v %v", li, err)
	}
	li, err = parseLink(linkMsg(t, 1500, 65535, 4, -1))
	if err != nil || li.peerNS != -1 || li.peer != 4 {
		t.Fatalf("same namespace: %+v %v", li, err)
	}
	if _, err := parseLink(make([]byte, 15)); err == nil {
		t.Fatal("a short message parsed")
	}
}

// FuzzParseLink: any bytes decode or fail without panicking, and a message
// that decodes keeps peerNS at -1 unless it says otherwise.
func FuzzParseLink(f *testing.F) {
	f.Add(linkMsg(f, 1450, 3506, 12, 3))
	f.Add(linkMsg(f, 1500, 65535, 4, -1))
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, b []byte) {
		li, err := parseLink(b)
		if err == nil && len(b) == 16 && li != (linkInfo{peerNS: -1}) {
			t.Fatalf("an empty message gave %+v", li)
		}
	})
}
