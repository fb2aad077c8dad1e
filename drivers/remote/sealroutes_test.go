package remote

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

func sealRoutesSample() []hal.SealedRoute {
	src, src6 := netip.MustParseAddr("198.18.10.1"), netip.MustParseAddr("2001:db8:10::1")
	return []hal.SealedRoute{
		{SrcMAC: macVM1, Src: src, Dst: netip.MustParseAddr("198.18.10.2"), Actions: []hal.Action{hal.SetEthDst(macVM2), hal.Output(2)},
			Reply: &hal.SealedReply{InPort: 2, SrcMAC: macVM2, Actions: []hal.Action{hal.SetEthDst(macVM1), hal.Output(1)}}},
		{SrcMAC: macVM1, Src: src6, Dst: netip.MustParseAddr("2001:db8:10::20"), Actions: []hal.Action{
			hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 5001, Src: netip.MustParseAddr("198.19.0.1"), Dst: netip.MustParseAddr("198.19.0.2")}), hal.Output(3)},
			Reply: &hal.SealedReply{InPort: 3, TunKind: hal.EncapVXLAN, TunSrc: netip.MustParseAddr("198.19.0.2"), VNI: 5001,
				Actions: []hal.Action{hal.Decap(), hal.Output(1)}}},
	}
}

// TestSealedRoutesOverChannel: a vport's sealed routes set through the
// remote NIC land on the served NIC as given; the served NIC's refusal
// comes back as the call's error; a served NIC without crypto refuses.
func TestSealedRoutesOverChannel(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, true)
	s := serve(t, soft, k, sockPath(t), nil)
	n := open(t, clientConfig(k, s.addr))
	ctx := context.Background()
	sa := n.(hal.SealedAddresses)
	routes := sealRoutesSample()
	if err := sa.SetSealedRoutes(ctx, 1, routes); err != nil {
		t.Fatal(err)
	}
	if got := soft.SealedRoutes(1); !reflect.DeepEqual(got, routes) {
		t.Fatalf("served NIC's routes:\n%+v\nwant\n%+v", got, routes)
	}
	bad := []hal.SealedRoute{{SrcMAC: macVM1, Src: routes[0].Src, Dst: routes[0].Dst, Actions: []hal.Action{hal.ToHost(hal.ReasonMiss)}}}
	if err := sa.SetSealedRoutes(ctx, 1, bad); err == nil || !strings.Contains(err.Error(), "output or a drop") {
		t.Fatalf("a route to the host: %v", err)
	}
	if err := sa.SetSealedRoutes(ctx, 1, nil); err != nil || len(soft.SealedRoutes(1)) != 0 {
		t.Fatalf("removing the routes: %v, %d left", err, len(soft.SealedRoutes(1)))
	}
}

// TestSealedRoutesSeed writes the FuzzDecode seed of a sealed-routes
// request when NICPATH_WRITE_SEEDS is set, and otherwise checks that the
// committed seed still decodes to the sample.
func TestSealedRoutesSeed(t *testing.T) {
	var e enc
	e.sealRoutesReq(7, 1, sealRoutesSample())
	seed := append([]byte{e.b[4]}, e.b[msgHeaderLen:]...)
	path := filepath.Join("testdata", "fuzz", "FuzzDecode", "sealed-routes")
	if os.Getenv("NICPATH_WRITE_SEEDS") != "" {
		if err := os.WriteFile(path, []byte("go test fuzz v1\n[]byte("+goQuote(seed)+")\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var r request
	if err := decodeRequest(seed[0], 7, seed[1:], &r); err != nil || r.port != 1 || !reflect.DeepEqual(r.routes, sealRoutesSample()) {
		t.Fatalf("the seed decodes to %+v (%v)", r, err)
	}
	data, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), goQuote(seed)) {
		t.Fatalf("the committed seed %s is not the sample's encoding (%v): rerun with NICPATH_WRITE_SEEDS=1", path, err)
	}
}

func goQuote(b []byte) string {
	var s strings.Builder
	s.WriteByte('"')
	for _, c := range b {
		s.WriteString("\\x")
		s.WriteByte("0123456789abcdef"[c>>4])
		s.WriteByte("0123456789abcdef"[c&15])
	}
	s.WriteByte('"')
	return s.String()
}
