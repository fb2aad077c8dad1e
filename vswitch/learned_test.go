package vswitch

import (
	"context"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// garpFrame is a gratuitous ARP from mac for addr.
func garpFrame(mac policy.MAC, addr netip.Addr) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:2], 1)
	binary.BigEndian.PutUint16(p[2:4], 0x0800)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], 1)
	copy(p[8:14], mac[:])
	a := addr.As4()
	copy(p[14:18], a[:])
	copy(p[24:28], a[:])
	return wire.Build(wire.FrameSpec{SrcMAC: hal.MAC(mac), DstMAC: hal.MustMAC("ff:ff:ff:ff:ff:ff"), EthType: 0x0806, Payload: p})
}

// learn hands what h's NIC learned to its switch, as Run does.
func (h *testHost) learn(t *testing.T) int {
	t.Helper()
	batch := make([]hal.LearnedAddress, 64)
	n, err := h.soft.ReadLearned(canceled, batch)
	if err != nil && n == 0 {
		return 0
	}
	h.sw.HandleLearned(batch[:n])
	return n
}

// A VM that sends from an address its policy does not give it: every such
// packet is dropped, the first in the host and the rest on the NIC by the
// flow's drop rule, and all are counted for the VM; explain says why; the
// NIC's reports of the source show it as not the VM's.
func TestAntiSpoofingCounted(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{})
	h1 := tp.byNm["h1"]
	spoof := udp(macU1, macU2, caVB1, caU2, 7, 8) // u1 sends from vb1's address
	for range 5 {
		if got := tp.sendVM("u1", spoof); len(got) != 0 {
			t.Fatal("a spoofed packet was delivered")
		}
	}
	spoofMAC := udp(macVB1, macU2, caU1, caU2, 9, 8) // u1 sends with vb1's MAC
	for range 2 {
		if got := tp.send(h1, h1.ports["u1"], frameOf(spoofMAC)); len(got) != 0 {
			t.Fatal("a packet with a spoofed MAC was delivered")
		}
	}
	if err := h1.sw.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := h1.sw.Stats()
	if st.Spoofed["u1"] != 7 {
		t.Fatalf("spoofed packets counted for u1: %d, want 7 (%v)", st.Spoofed["u1"], st.Spoofed)
	}
	if st.PolicyDrops["spoofed-source"] != 2 {
		t.Errorf("host policy drops: %d, want the 2 first packets", st.PolicyDrops["spoofed-source"])
	}
	// A VM sending from its own address is not counted.
	deliveredTo(t, tp.sendVM("u1", udp(macU1, macU2, caU1, caU2, 7, 8)), tp.byNm["h2"], "u2")
	if n := h1.sw.Stats().Spoofed["u1"]; n != 7 {
		t.Fatalf("spoofed count moved to %d on a clean packet", n)
	}

	if h1.learn(t) == 0 {
		t.Fatal("the NIC learned nothing")
	}
	addrs, _ := h1.sw.Learned()
	var bad, good bool
	for _, a := range addrs {
		switch {
		case a.VM == "u1" && a.Addr == caVB1 && !a.Owned:
			bad = true
		case a.VM == "u1" && a.Addr == caU1 && a.MAC == hal.MAC(macU1) && a.Owned:
			good = true
		}
	}
	if !bad || !good {
		t.Errorf("learned addresses %+v: want u1's own (owned) and vb1's (not owned)", addrs)
	}
	if st := h1.sw.Stats(); st.LearnedNotOwned < 2 || st.Learned < 3 {
		t.Errorf("learned %d, not owned %d", st.Learned, st.LearnedNotOwned)
	}

	ex := h1.sw.Explain(Description{VM: "u1", Packet: spoof})
	s := ex.String()
	for _, want := range []string{"source address " + caVB1.String() + " is not one of VM u1's addresses", "anti-spoofing: VM u1", "7 of its packets were dropped",
		"the NIC reported this source on port"} {
		if !strings.Contains(s, want) {
			t.Errorf("explain lacks %q:\n%s", want, s)
		}
	}
	if ex.Reason != policy.ReasonSpoofedSource || ex.Where != PathNIC {
		t.Errorf("explain: %s on %s", ex.Reason, ex.Where)
	}
}

// A migrating VM announces itself on its new host: before the move is
// activated the announcement is kept but is not the VM's arrival; the
// first one after it is marked First, later ones are not; an announcement
// of an address the VM does not own is kept as not owned.
func TestMigratedVMAnnouncement(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{})
	h3 := tp.byNm["h3"]
	port := h3.ports["vx"]
	announce := func(mac policy.MAC, a netip.Addr) {
		t.Helper()
		if _, err := h3.far[port].Send([][]byte{garpFrame(mac, a)}); err != nil {
			t.Fatal(err)
		}
		h3.pump(t)
		if h3.learn(t) != 1 {
			t.Fatal("the NIC did not report the announcement")
		}
	}
	// Reported before the move is activated (the NIC itself reports
	// the same announcement once a second; this one is handed over).
	h3.sw.HandleLearned([]hal.LearnedAddress{{Port: port, Kind: hal.LearnAnnounced, MAC: hal.MAC(macVX), Addr: caVX}})
	_, anns := h3.sw.Learned()
	if len(anns) != 1 || anns[0].VM != "vx" || anns[0].Local || anns[0].First || !anns[0].Owned {
		t.Fatalf("announcement before the move: %+v", anns)
	}
	for _, h := range tp.hosts {
		if err := h.sw.ActivateShadow(context.Background(), "vx"); err != nil {
			t.Fatal(err)
		}
	}
	announce(macVX, caVX)
	_, anns = h3.sw.Learned()
	if a := anns[len(anns)-1]; !a.Local || !a.First || a.Addr != caVX || a.Port != port {
		t.Fatalf("the arrival: %+v", a)
	}
	h3.sw.HandleLearned([]hal.LearnedAddress{{Port: port, Kind: hal.LearnAnnounced, MAC: hal.MAC(macVX), Addr: caVX}})
	h3.sw.HandleLearned([]hal.LearnedAddress{{Port: port, Kind: hal.LearnAnnounced, MAC: hal.MAC(macVX), Addr: caVA1}})
	_, anns = h3.sw.Learned()
	if len(anns) != 4 || anns[2].First || anns[3].First || anns[3].Owned {
		t.Fatalf("later announcements: %+v", anns)
	}
	if st := h3.sw.Stats(); st.Announcements != 4 {
		t.Errorf("announcements counted: %d", st.Announcements)
	}
}
