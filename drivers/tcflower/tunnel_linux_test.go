//go:build linux

package tcflower

import (
	"context"
	"encoding/binary"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// tunnel4Frame wraps inner in Ethernet/IPv4/UDP/VXLAN or Geneve (UDP
// checksum 0, as IPv4 allows), with vlan tags (VIDs, 802.1Q) after the
// MACs when given.
func tunnel4Frame(kind hal.EncapKind, srcMAC, dstMAC hal.MAC, src, dst string, vni uint32, inner []byte, vlans ...uint16) []byte {
	b := vxlanFrame(srcMAC, dstMAC, src, dst, vni, inner)
	if kind == hal.EncapGeneve {
		u := b[34:]
		binary.BigEndian.PutUint16(u[2:], hal.PortGeneve)
		g := u[8:16]
		g[0], g[1] = 0, 0
		binary.BigEndian.PutUint16(g[2:], hal.EtherTypeTEB)
	}
	for i := len(vlans) - 1; i >= 0; i-- {
		tag := []byte{0x81, 0x00, byte(vlans[i] >> 8), byte(vlans[i])}
		b = append(append(append([]byte(nil), b[:12]...), tag...), b[12:]...)
	}
	return b
}

func notLocal(t *testing.T, n *NIC) uint64 {
	t.Helper()
	st, err := n.Stats(context.Background())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st.Drops[hal.ReasonNotLocal]
}

// TestKernelTunnelEndpoint: the uplink's tunnel endpoint on a real kernel.
// Without it the kernel's own VXLAN device decapsulates a frame for the
// subnet's broadcast, and a decap rule that does not look at the outer
// destination delivers it; with it, every tunnelled frame for another
// endpoint is dropped at the uplink's ingress and counted, and the
// endpoint's own frames and its group's are delivered.
func TestKernelTunnelEndpoint(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	if c := n.Capabilities(); !c.TunnelFilter {
		t.Fatalf("no tunnel filter on a kernel with VXLAN and Geneve devices:\n%s", c.String())
	}
	vm1 := openPacketSock(t, tp.ns, "vm1")
	up1 := openPacketSock(t, tp.remote, "up1")
	const vni = 0x4242
	for i, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve} {
		var m hal.Match
		m.Tunnel(kind, vni)
		apply(t, n, hal.AddOp(hal.Rule{ID: hal.RuleID(i + 1), Priority: 1, Match: m, Actions: []hal.Action{hal.Decap(), hal.Output(1)}}))
	}
	remoteMAC := hal.MustMAC("02:4e:50:00:00:a2")
	bcastMAC := hal.MustMAC("ff:ff:ff:ff:ff:ff")
	sport := uint16(100)
	// frameTo is a tunnelled frame from the remote host to dst and dstMAC,
	// its inner frame told apart by its source port.
	frameTo := func(kind hal.EncapKind, dst string, dstMAC hal.MAC, vlans ...uint16) (outer, inner []byte) {
		sport++
		inner = udpFrame(macVM2, macVM1, "192.0.2.2", "192.0.2.1", sport, 7)
		return tunnel4Frame(kind, remoteMAC, dstMAC, underlayRemote, dst, vni, inner, vlans...), inner
	}
	delivered := func(what string, outer, inner []byte) {
		t.Helper()
		up1.send(t, outer)
		got := vm1.recv(t, 1, wait, hasMagic)
		if len(got) != 1 || string(got[0].data) != string(inner) {
			t.Errorf("%s: not delivered to vm1 (%d frames)", what, len(got))
		}
	}
	dropped := func(what string, outer []byte) {
		t.Helper()
		before := notLocal(t, n)
		up1.send(t, outer)
		if got := vm1.recv(t, 1, 300*time.Millisecond, hasMagic); len(got) != 0 {
			t.Errorf("%s: delivered to vm1", what)
		}
		if d := notLocal(t, n) - before; d != 1 {
			t.Errorf("%s: Stats.Drops[not_local] went up by %d, want 1", what, d)
		}
	}

	// Without an endpoint: the kernel takes the broadcast frame.
	o, in := frameTo(hal.EncapVXLAN, "198.18.0.255", bcastMAC)
	delivered("without a tunnel filter, a frame for the subnet's broadcast (the kernel's own behaviour)", o, in)

	group, otherGroup := netip.MustParseAddr("233.252.0.11"), netip.MustParseAddr("233.252.0.12")
	ctx := context.Background()
	ep := hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{netip.MustParseAddr(underlayLocal)}, Groups: []netip.Addr{group}}
	if err := n.SetTunnelEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if out, err := tp.ns.tc("filter", "show", "block", itoa(n.Block()), "chain", "0"); err == nil {
		t.Logf("chain 0 with the endpoint:\n%s", out)
	}
	for _, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve} {
		o, in := frameTo(kind, underlayLocal, tp.upMAC)
		delivered(kind.String()+" for our PA and MAC", o, in)
		o, in = frameTo(kind, group.String(), groupMAC(group))
		delivered(kind.String()+" for the group the endpoint joined", o, in)
	}
	foreign := []struct {
		what  string
		kind  hal.EncapKind
		dst   string
		mac   hal.MAC
		vlans []uint16
	}{
		{"another host's PA", hal.EncapVXLAN, "198.18.0.3", tp.upMAC, nil},
		{"the subnet's broadcast", hal.EncapVXLAN, "198.18.0.255", bcastMAC, nil},
		{"the limited broadcast", hal.EncapVXLAN, "255.255.255.255", bcastMAC, nil},
		{"a group the endpoint was not given", hal.EncapVXLAN, otherGroup.String(), groupMAC(otherGroup), nil},
		{"our PA with another station's MAC", hal.EncapVXLAN, underlayLocal, hal.MustMAC("02:4e:50:00:00:a3"), nil},
		{"our PA with the broadcast MAC", hal.EncapVXLAN, underlayLocal, bcastMAC, nil},
		{"the subnet's broadcast, priority-tagged (VID 0)", hal.EncapVXLAN, "198.18.0.255", bcastMAC, []uint16{0}},
		{"the subnet's broadcast, tagged twice (VID 0, VID 0)", hal.EncapVXLAN, "198.18.0.255", bcastMAC, []uint16{0, 0}},
		{"Geneve to the subnet's broadcast", hal.EncapGeneve, "198.18.0.255", bcastMAC, nil},
		{"Geneve to another host's PA", hal.EncapGeneve, "198.18.0.3", tp.upMAC, nil},
	}
	total := notLocal(t, n)
	for _, f := range foreign {
		o, _ := frameTo(f.kind, f.dst, f.mac, f.vlans...)
		dropped(f.what, o)
	}
	total = notLocal(t, n) - total
	pc, err := n.PortCounters(ctx, 3)
	if err != nil || pc.Drops < total {
		t.Errorf("PortCounters(uplink) = %+v, %v; want at least the %d not_local drops", pc, err, total)
	}

	// Replaced without the group: its frames are someone else's now.
	ep.Groups = nil
	if err := n.SetTunnelEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	o, _ = frameTo(hal.EncapVXLAN, group.String(), groupMAC(group))
	dropped("the group after the endpoint left it", o)
	o, in = frameTo(hal.EncapVXLAN, underlayLocal, tp.upMAC)
	delivered("our PA after the replace", o, in)

	// Removed: the kernel decides again, and the count stays.
	before := notLocal(t, n)
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 3}); err != nil {
		t.Fatal(err)
	}
	if got := notLocal(t, n); got != before {
		t.Errorf("Stats.Drops[not_local] went from %d to %d when the endpoint was removed", before, got)
	}
	o, in = frameTo(hal.EncapVXLAN, "198.18.0.255", bcastMAC)
	delivered("the subnet's broadcast once the endpoint is removed", o, in)
	if out, err := tp.ns.tc("filter", "show", "block", itoa(n.Block()), "chain", "0"); err != nil || strings.Contains(out, "pref 2 ") || strings.Contains(out, "pref 3 ") {
		t.Errorf("endpoint filters left after the removal:\n%s (%v)", out, err)
	}

	// Close leaves the groups.
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 3, Addrs: ep.Addrs, Groups: []netip.Addr{group}}); err != nil {
		t.Fatal(err)
	}
	if !joined(t, tp.ns, "up0", group) {
		t.Errorf("%s is not joined on up0", group)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if joined(t, tp.ns, "up0", group) {
		t.Errorf("%s is still joined on up0 after Close", group)
	}
}

// joined reports whether the namespace's ifname is a member of group
// (ip maddr).
func joined(t *testing.T, ns *netNS, ifname string, group netip.Addr) bool {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns.Name, "maddr", "show", "dev", ifname).CombinedOutput()
	if err != nil {
		t.Fatalf("ip maddr: %v: %s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && (f[0] == "inet" || f[0] == "inet6") && f[1] == group.String() {
			return true
		}
	}
	return false
}
