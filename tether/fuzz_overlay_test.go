package tether

import (
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
)

// countConn counts what the overlay sends to the underlay.
type countConn struct {
	nopConn
	n *int
}

func (c countConn) WriteToUDPAddrPort(b []byte, _ netip.AddrPort) (int, error) {
	*c.n++
	return len(b), nil
}

// FuzzOverlay: arbitrary VXLAN datagrams from the underlay and arbitrary
// frames from the tunnel never panic the anchor's overlay side, and a frame
// from the tunnel whose source is not in the tether's pool never reaches
// the underlay.
func FuzzOverlay(f *testing.F) {
	r := &Relocated{Name: "branch", Tenant: "blue", VNET: "web", Prefix: netip.MustParsePrefix("10.0.1.0/24"),
		PoolFirst: netip.MustParseAddr("10.0.1.10"), PoolLast: netip.MustParseAddr("10.0.1.11"), AnchorHost: "anchor", TetherName: "t1"}
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "anchor", PA: netip.MustParseAddr("198.18.0.10")})
	b.AddHost(policy.Host{Name: "host-a", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddTenant(policy.Tenant{Name: "blue"})
	b.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 1001, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}})
	vmMAC := policy.MAC{2, 0, 0, 0xb, 0, 0xa}
	b.AddVM(policy.VM{Name: "vm", Tenant: "blue", VNET: "web", MAC: vmMAC, CAs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}, Host: "host-a"})
	for _, vm := range PoolVMs(r) {
		b.AddVM(vm)
	}
	st, err := b.Build()
	if err != nil {
		f.Fatal(err)
	}
	// newOverlay is the anchor's overlay side over st, and what it sent
	// to the underlay.
	newOverlay := func(t testing.TB) (*Overlay, *int) {
		sent := new(int)
		o := NewOverlay(OverlayConfig{Host: "anchor", Subnets: []Subnet{r.Subnet()}, Underlay: countConn{n: sent}, Logger: quiet()})
		if err := o.SetState(st); err != nil {
			t.Fatal(err)
		}
		return o, sent
	}
	node := udpFrame(hal.MAC{2, 0, 0, 0, 0, 1}, netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.0.10"), 5000, 53, []byte("x"))
	copy(node[0:6], vmMAC[:])
	vx := append([]byte{8, 0, 0, 0, 0, 0x03, 0xe9, 0}, udpFrame(hal.MAC(vmMAC), netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("10.0.1.10"), 53, 5000, []byte("y"))...)
	copy(vx[8:14], []byte{2, 0x74, 10, 0, 1, 10})
	f.Add(node, vx)
	f.Add([]byte{}, []byte{8, 0, 0, 0})
	// The seeds do what they should: the node's frame goes to host-a.
	o, sent := newOverlay(f)
	o.FromTunnel("t1", 1001, append([]byte(nil), node...))
	if *sent != 1 {
		f.Fatalf("the pool address's frame was not sent on (%d)", *sent)
	}
	f.Fuzz(func(t *testing.T, fromTunnel, fromUnderlay []byte) {
		// An overlay of its own for every input, so that an input's path
		// depends on the input alone: one overlay shared by all inputs
		// carried each input's connections and cached verdicts into the
		// next, and a datagram from the underlay was let in or not by
		// what earlier inputs had sent from the tunnel.
		o, sent := newOverlay(t)
		src := netip.Addr{}
		if len(fromTunnel) >= 34 && fromTunnel[12] == 8 && fromTunnel[13] == 0 {
			src = netip.AddrFrom4([4]byte(fromTunnel[26:30]))
		}
		o.FromTunnel("t1", 1001, fromTunnel)
		if *sent > 0 && !r.Prefix.Contains(src) {
			t.Fatalf("a frame from %v went to the underlay", src)
		}
		o.FromUnderlay(fromUnderlay, netip.MustParseAddrPort("198.18.0.1:4789"))
	})
}
