package sealede2e_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/securechan/sealtest"
	"github.com/nicpath/nicpath/vswitch"
)

// routesPolicy: a1 has a sealing key in the policy; the VNET is dual
// stack; a2 is local, b1 on host-b.
const routesPolicy = `
hosts:
  - name: host-a
    pa: 198.19.0.1
  - name: host-b
    pa: 198.19.0.2
tenants:
  - name: blue
    vnets:
      - name: web
        vni: 5001
        subnets: [198.18.10.0/24, "2001:db8:10::/64"]
        vms:
          - name: a1
            mac: 02:00:00:0a:00:01
            ca: [198.18.10.1, "2001:db8:10::1"]
            host: host-a
            seal_keys:
              - id: 1
                public: %s
          - name: a2
            mac: 02:00:00:0a:00:02
            ca: [198.18.10.2, "2001:db8:10::2"]
            host: host-a
          - name: b1
            mac: 02:00:00:0b:00:01
            ca: [198.18.10.20, "2001:db8:10::20"]
            host: host-b
`

var (
	ca6A1 = netip.MustParseAddr("2001:db8:10::1")
	ca6A2 = netip.MustParseAddr("2001:db8:10::2")
	ca6B1 = netip.MustParseAddr("2001:db8:10::20")
	paA   = netip.MustParseAddr("198.19.0.1")
)

// routeSecrets are every destination a1 seals in TestSealedRoutesNoFirstPacket:
// local and remote, both families.
var routeSecrets = []sealtest.Secret{{IP: caA2, MAC: macA2}, {IP: ca6A2}, {IP: caB1, MAC: macB1}, {IP: ca6B1}, {IP: caNone, MAC: macNone}}

// TestSealedRoutesNoFirstPacket: with a1's key in the policy and no
// per-destination rules, no first unsealed packet and no flow, a1's sealed
// frames reach a2 (local) and b1 (remote), over IPv4 and IPv6: the vswitch
// pushed sealed routes and the NIC forwards on them. The replies (a2's
// from its vport, b1's through the tunnel) reach a1 on the NIC too. The
// host receives nothing about any of it: no exception, no flow, no rule
// counter, no log line, no explanation names a sealed destination.
func TestSealedRoutesNoFirstPacket(t *testing.T) {
	pub, priv, err := securechan.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := policy.Parse("routes.yaml", []byte(fmt.Sprintf(routesPolicy, hex.EncodeToString(pub[:]))))
	if err != nil {
		t.Fatal(err)
	}
	h := startHost(t, st, softnic.Config{Crypto: true}, func(h *host) {
		// The agent's part: the key from the policy, registered with the NIC.
		vm, _ := st.VM("a1")
		if err := h.nic.RegisterSealKey(context.Background(), pA1, vm.SealKeys[0].ID, vm.SealKeys[0].Public); err != nil {
			t.Fatal(err)
		}
	}, func(h *host, c *vswitch.Config) {
		// The switch sees the NIC through the recorder, with its optional
		// interface for sealed addresses.
		c.NIC = struct {
			*recordingNIC
			hal.SealedAddresses
		}{h.rec, h.nic}
		c.NextHopMAC = macB1
	})
	nic := h.nic
	if n := h.sw.Stats().SealedRoutes; n != 4 {
		t.Fatalf("sealed routes %d, want 4 (a2 and b1, IPv4 and IPv6)", n)
	}
	sealer, err := securechan.NewSealer(priv, nic.SealPublicKey(), 1, nil)
	if err != nil {
		t.Fatal(err)
	}

	toA2 := udp(macA1, macA2, caA1, caA2, 4000, 53, "to a2")
	toA2v6 := udp(macA1, macA2, ca6A1, ca6A2, 4001, 53, "to a2 over IPv6")
	toB1 := udp(macA1, macB1, caA1, caB1, 5000, 80, "to b1")
	toB1v6 := udp(macA1, macB1, ca6A1, ca6B1, 5001, 80, "to b1 over IPv6")
	toNone := udp(macA1, macNone, caA1, caNone, 6000, 80, "to nobody")
	var sealed [][]byte
	for _, f := range [][]byte{toA2, toA2v6, toB1, toB1v6, toNone} {
		sealed = append(sealed, seal(t, sealer, f))
	}
	h.send(pA1, sealed...)

	a2 := h.recv(pA2)
	if len(a2) != 2 || !bytes.Equal(a2[0], toA2) || !bytes.Equal(a2[1], toA2v6) {
		t.Fatalf("a2 received %d frames, want the two it was sent as sealed, unchanged", len(a2))
	}
	up := h.recv(pUplink)
	if len(up) != 2 {
		t.Fatalf("%d frames on the uplink, want 2", len(up))
	}
	for i, want := range [][]byte{toB1, toB1v6} {
		k, l := key(t, up[i])
		if k.TunKind != hal.EncapVXLAN || k.VNI != vni || hal.AddrFrom16(k.TunDst) != paHostB || hal.AddrFrom16(k.TunSrc) != paA {
			t.Fatalf("uplink frame %d not encapsulated toward host-b: %v", i, k)
		}
		if !bytes.Equal(up[i][l.L2:], want) {
			t.Fatalf("uplink frame %d carries\n% x\nwant\n% x", i, up[i][l.L2:], want)
		}
	}

	// The replies, unsealed: a2's on its vport, b1's from host-b.
	fromA2 := udp(macA2, macA1, caA2, caA1, 53, 4000, "reply from a2")
	fromA2v6 := udp(macA2, macA1, ca6A2, ca6A1, 53, 4001, "reply from a2 over IPv6")
	h.send(pA2, fromA2, fromA2v6)
	fromB1 := udp(macB1, macA1, caB1, caA1, 80, 5000, "reply from b1")
	fromB1v6 := udp(macB1, macA1, ca6B1, ca6A1, 80, 5001, "reply from b1 over IPv6")
	var tunnelled [][]byte
	for _, f := range [][]byte{fromB1, fromB1v6} {
		tunnelled = append(tunnelled, wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: vni, Src: paHostB, Dst: paA,
			SrcMAC: macB1, DstMAC: macUplnk}, f))
	}
	h.send(pUplink, tunnelled...)
	a1 := h.recv(pA1)
	if len(a1) != 4 {
		t.Fatalf("a1 received %d replies, want 4", len(a1))
	}
	for i, want := range [][]byte{fromA2, fromA2v6, fromB1, fromB1v6} {
		if !bytes.Equal(a1[i], want) {
			t.Fatalf("reply %d:\n% x\nwant\n% x", i, a1[i], want)
		}
	}

	ss := nic.SealedStats()
	if ss.Opened != 5 || ss.Routed != 4 || ss.NoFlow != 1 || ss.Replied != 4 {
		t.Fatalf("sealed stats %+v: want 5 opened, 4 routed, 1 without a route, 4 replies", ss)
	}
	time.Sleep(50 * time.Millisecond) // anything queued for the switch would show
	if n := len(h.rec.exceptions()); n != 0 {
		t.Errorf("%d frames reached the host's exception path", n)
	}
	if f := h.sw.Flows(); len(f) != 0 {
		t.Errorf("the host has %d flows", len(f))
	}
	view := h.hostView(nil, sealed)
	// What the NIC tells the host about its rules: their dump and counters.
	var dump strings.Builder
	if err := h.rec.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		fmt.Fprintf(&dump, "%+v\n", *ri)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	nst, err := h.rec.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&dump, "%+v\n", nst)
	view["NIC dump and stats"] = []byte(dump.String())
	for where, data := range view {
		for _, s := range routeSecrets {
			if leak := sealtest.FindLeak(data, s); leak != "" {
				t.Errorf("%s reveals sealed destination %v: %s", where, s.IP, leak)
			}
		}
	}
	if !strings.Contains(h.sw.ExplainFrame(pA1, sealed[0]).String(), "sealed routes") {
		t.Errorf("explanation of a sealed frame:\n%s", h.sw.ExplainFrame(pA1, sealed[0]))
	}
	// The check can fail: the host's own clear view of a frame does show.
	if sealtest.FindLeak(fromA2, routeSecrets[0]) == "" || sealtest.FindLeak(toB1v6, routeSecrets[3]) == "" {
		t.Fatal("FindLeak does not see the destinations in their clear frames")
	}
}
