package gateway_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/gateway"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/vswitch/vswitchtest"
)

// A next hop that announces a new MAC (a gratuitous ARP: a router replaced
// or failed over) takes its connections with it: packets toward it leave
// for the new MAC and its answers from the new MAC reach the VM, on the
// NIC's rules (the rule from the tenant modified, the one for answers
// replaced). A NIC that refuses the modification leaves the connection on
// the host path, with no rule left behind, still reaching the new MAC.
func TestNeighborMove(t *testing.T) {
	newMAC := hal.MustMAC("02:00:00:00:fe:11")
	errRefused := errors.New("modify refused (test)")
	for _, refuse := range []bool{false, true} {
		name := "NIC takes the change"
		if refuse {
			name = "NIC refuses the change"
		}
		t.Run(name, func(t *testing.T) {
			var fail func(op *hal.Op) error
			if refuse {
				fail = func(op *hal.Op) error {
					if op.Kind == hal.OpModify {
						return errRefused
					}
					return nil
				}
			}
			// remote is learned (a static neighbour keeps its MAC:
			// TestStaticNeighborStays).
			bd := nicBed(t, "host-b", faultyNIC(fail), gateway.Config{Address: extAddr})
			b, gw := bd.b, bd.gw
			resolved := false
			// exchange sends a datagram from red-web-1 (the first one
			// resolves remote) and its answer from the remote at mac; it
			// returns the MAC the datagram left for.
			exchange := func(mac hal.MAC) hal.MAC {
				t.Helper()
				ext, _ := bd.send(b, "red-web-1", vmFrame(redMAC, remote, hal.ProtoUDP, 40000, 53))
				if !resolved {
					ext, resolved = bd.resolve(gw, ext), true
				}
				if len(ext) != 1 {
					t.Fatalf("%d frames out", len(ext))
				}
				k, _ := parse(t, ext[0])
				ans := wire.Build(wire.FrameSpec{SrcMAC: mac, DstMAC: extMAC, Src: k.Dst(), Dst: k.Src(), Proto: k.Proto,
					SrcPort: k.L4Dst, DstPort: k.L4Src, Payload: []byte("ok")})
				if _, vms := bd.send(gw, vswitchtest.ExternalPort, ans); len(vms) != 1 || vms[0].VM != "red-web-1" {
					t.Fatalf("the answer from %s reached %v", mac, vms)
				}
				return k.EthDst
			}
			if got := exchange(remoteMAC); got != remoteMAC {
				t.Fatalf("the first datagram left for %s, want %s", got, remoteMAC)
			}
			if n := ruleCount(t, gw.NIC); n != 2 {
				t.Fatalf("%d rules on the NIC, want the connection's 2", n)
			}
			before := gw.Gateway.Stats()
			// The remote announces its new MAC.
			if _, vms := bd.send(gw, vswitchtest.ExternalPort, gateway.BuildARP(1, newMAC, remote, hal.MAC{}, remote)); len(vms) != 0 {
				t.Fatalf("the gratuitous ARP reached VMs: %v", vms)
			}
			if s := gw.Gateway.Stats(); s.NeighborMoves != 1 {
				t.Fatalf("neighbour moves %d, want 1", s.NeighborMoves)
			}
			for range 2 {
				if got := exchange(newMAC); got != newMAC {
					t.Fatalf("after the move a datagram left for %s, want %s", got, newMAC)
				}
			}
			after, conns := gw.Gateway.Stats(), gw.Gateway.Conns()
			if len(conns) != 1 {
				t.Fatalf("connections %+v", conns)
			}
			if !refuse {
				if conns[0].Where != "nic" || ruleCount(t, gw.NIC) != 2 || after.HostPackets != before.HostPackets {
					t.Fatalf("after the move: %s, %d rules, host packets %d -> %d; want both directions on the NIC's 2 rules",
						conns[0].Where, ruleCount(t, gw.NIC), before.HostPackets, after.HostPackets)
				}
				return
			}
			if !strings.Contains(conns[0].Where, "NIC did not take the rule's change: "+errRefused.Error()) || ruleCount(t, gw.NIC) != 0 ||
				after.HostPackets != before.HostPackets+4 {
				t.Fatalf("after a refused move: %s, %d rules, host packets %d -> %d; want the host path, no rule, 4 packets there",
					conns[0].Where, ruleCount(t, gw.NIC), before.HostPackets, after.HostPackets)
			}
		})
	}
}

// A static neighbour (Config.Neighbors) keeps its configured MAC when
// something on the external network claims its address: a gratuitous ARP,
// an ARP reply, an ARP request for the gateway's address. Its connections
// go on leaving for the configured MAC, on the NIC, and no move is
// counted; a learned neighbour beside it still moves.
func TestStaticNeighborStays(t *testing.T) {
	other := netip.MustParseAddr("203.0.113.11")
	otherMAC, newMAC := hal.MustMAC("02:00:00:00:fe:20"), hal.MustMAC("02:00:00:00:fe:11")
	bd := faultyBed(t, nil)
	b, gw := bd.b, bd.gw
	// out sends a datagram from red-web-1 to dst and returns the MAC it
	// left for.
	out := func(dst netip.Addr, sport uint16) hal.MAC {
		t.Helper()
		ext, _ := bd.send(b, "red-web-1", vmFrame(redMAC, dst, hal.ProtoUDP, sport, 53))
		if len(ext) != 1 {
			t.Fatalf("%d frames out", len(ext))
		}
		k, _ := parse(t, ext[0])
		return k.EthDst
	}
	if got := out(remote, 40000); got != remoteMAC {
		t.Fatalf("the first datagram left for %s, want the configured %s", got, remoteMAC)
	}
	for _, claim := range []struct {
		name  string
		frame []byte
	}{
		{"gratuitous ARP", gateway.BuildARP(1, newMAC, remote, hal.MAC{}, remote)},
		{"ARP reply", gateway.BuildARP(2, newMAC, remote, extMAC, extAddr.Addr())},
		{"ARP request for the gateway", gateway.BuildARP(1, newMAC, remote, hal.MAC{}, extAddr.Addr())},
	} {
		bd.send(gw, vswitchtest.ExternalPort, claim.frame)
		if got := out(remote, 40000); got != remoteMAC {
			t.Fatalf("after a %s from %s: the datagram left for %s, want the configured %s", claim.name, newMAC, got, remoteMAC)
		}
		if s := gw.Gateway.Stats(); s.NeighborMoves != 0 {
			t.Fatalf("after a %s: neighbour moves %d, want 0", claim.name, s.NeighborMoves)
		}
	}
	if conns := gw.Gateway.Conns(); len(conns) != 1 || conns[0].Where != "nic" || ruleCount(t, gw.NIC) != 2 {
		t.Fatalf("connections %+v, %d rules: want the one connection on the NIC", conns, ruleCount(t, gw.NIC))
	}
	// A learned neighbour still moves.
	bd.send(gw, vswitchtest.ExternalPort, gateway.BuildARP(1, otherMAC, other, hal.MAC{}, extAddr.Addr()))
	if got := out(other, 40001); got != otherMAC {
		t.Fatalf("a datagram to the learned %s left for %s, want %s", other, got, otherMAC)
	}
	bd.send(gw, vswitchtest.ExternalPort, gateway.BuildARP(1, newMAC, other, hal.MAC{}, other))
	if got := out(other, 40001); got != newMAC {
		t.Fatalf("after the learned %s moved, a datagram left for %s, want %s", other, got, newMAC)
	}
	if s := gw.Gateway.Stats(); s.NeighborMoves != 1 {
		t.Fatalf("neighbour moves %d, want the learned one's 1", s.NeighborMoves)
	}
}

// Learned next hops are asked for again once not heard from for
// NeighborRefresh while a connection goes through them (an answer with a
// new MAC moves the connection: a router replaced without a word), and
// forgotten when none does (the next connection through one asks first),
// so that the table holds the next hops in use.
func TestNeighborRefresh(t *testing.T) {
	now := time.Unix(1000, 0)
	bd := newBed(t, func(c *gateway.Config) {
		c.Clock = func() time.Time { return now }
		c.NeighborRefresh = time.Minute
		c.Idle = 10 * time.Minute
	}, "gw-shared")
	ctx := context.Background()
	g := bd.gw.Gateway
	other := netip.MustParseAddr("203.0.113.11")
	newMAC := hal.MustMAC("02:00:00:00:fe:11")
	// asks returns the next hops the gateway asked for on the external
	// port in out.
	asks := func(out []vswitchtest.Delivery) []netip.Addr {
		t.Helper()
		var a []netip.Addr
		for _, d := range out {
			if d.VM != vswitchtest.ExternalPort {
				t.Fatalf("a frame reached %s", d.VM)
			}
			op, _, _, tpa, ok := gateway.ParseARP(d.Frame)
			if !ok || op != 1 {
				t.Fatalf("a frame on the external port that is no ARP request: %x", d.Frame)
			}
			a = append(a, tpa)
		}
		return a
	}
	expire := func() []netip.Addr {
		t.Helper()
		if err := g.Expire(ctx); err != nil {
			t.Fatal(err)
		}
		out, err := bd.u.Settle(bd.gw)
		if err != nil {
			t.Fatal(err)
		}
		return asks(out)
	}
	// red's connection to remote, resolved by ARP; other asks for the
	// gateway's address, and is learned.
	ext, _ := bd.send(bd.b, "red-web-1", vmFrame(redMAC, remote, hal.ProtoUDP, 40000, 53))
	if out := bd.resolve(bd.gw, ext); len(out) != 1 {
		t.Fatalf("%d frames after the ARP reply", len(out))
	}
	if out, _ := bd.send(bd.gw, vswitchtest.ExternalPort, gateway.BuildARP(1, hal.MustMAC("02:00:00:00:fe:20"), other, hal.MAC{}, extAddr.Addr())); len(out) != 1 {
		t.Fatalf("the ARP request for the gateway's address was not answered: %d frames", len(out))
	}

	now = now.Add(30 * time.Second)
	if a := expire(); len(a) != 0 {
		t.Fatalf("asked for %v within the refresh period", a)
	}
	now = now.Add(31 * time.Second)
	if a := expire(); len(a) != 1 || a[0] != remote {
		t.Fatalf("after the refresh period: asked for %v, want %s alone (other is in no connection)", a, remote)
	}
	if a := expire(); len(a) != 0 {
		t.Fatalf("asked again for %v in the same refresh period", a)
	}
	// remote answers from a new MAC: its connection moves.
	bd.send(bd.gw, vswitchtest.ExternalPort, gateway.BuildARP(2, newMAC, remote, extMAC, extAddr.Addr()))
	if s := g.Stats(); s.NeighborMoves != 1 {
		t.Fatalf("neighbour moves %d after the answer from a new MAC, want 1", s.NeighborMoves)
	}
	ext, _ = bd.send(bd.b, "red-web-1", vmFrame(redMAC, remote, hal.ProtoUDP, 40000, 53))
	if len(ext) != 1 {
		t.Fatalf("%d frames out", len(ext))
	}
	if k, _ := parse(t, ext[0]); k.EthDst != newMAC {
		t.Fatalf("the connection's datagram left for %s, want the new MAC %s", k.EthDst, newMAC)
	}
	// Heard from just now: not asked for again yet.
	now = now.Add(30 * time.Second)
	if a := expire(); len(a) != 0 {
		t.Fatalf("asked for %v within the refresh period of the answer", a)
	}
	// other was forgotten: a connection to it asks for it first.
	ext, _ = bd.send(bd.b, "red-web-1", vmFrame(redMAC, other, hal.ProtoUDP, 40001, 53))
	if a := asks(deliveries(ext)); len(a) != 1 || a[0] != other {
		t.Fatalf("the first datagram to the forgotten %s: asked for %v, want an ARP request for it", other, a)
	}
}

func deliveries(frames [][]byte) []vswitchtest.Delivery {
	ds := make([]vswitchtest.Delivery, len(frames))
	for i, f := range frames {
		ds[i] = vswitchtest.Delivery{VM: vswitchtest.ExternalPort, Frame: f}
	}
	return ds
}
