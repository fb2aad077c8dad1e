//go:build linux

package tcflower

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// TestKernelTunnelMiss: a VXLAN or Geneve frame for the endpoint that no
// decap rule takes reaches ReadExceptions, rebuilt with its outer headers
// from the tunnel metadata the BPF action carries: the kind, VNI and outer
// addresses it arrived with, the uplink as in-port, the inner frame byte
// for byte. It is not delivered anywhere; once a decap rule takes the VNI,
// the next such frame is delivered and none reaches the host.
func TestKernelTunnelMiss(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	c := n.Capabilities()
	if !c.ExceptionPath || c.TunnelMissesUnseen {
		t.Fatalf("exception path %v, tunnelled misses unseen %v:\n%s", c.ExceptionPath, c.TunnelMissesUnseen, c.String())
	}
	ctx := context.Background()
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{netip.MustParseAddr(underlayLocal)}}); err != nil {
		t.Fatal(err)
	}
	vm1 := openPacketSock(t, tp.ns, "vm1")
	up1 := openPacketSock(t, tp.remote, "up1")
	remoteMAC := hal.MustMAC("02:4e:50:00:00:a2")
	sport := uint16(300)
	for i, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve} {
		vni := uint32(0x5000 + i)
		sport++
		inner := udpFrame(macVM2, macVM1, "192.0.2.2", "192.0.2.1", sport, 7)
		st0, err := n.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		up1.send(t, tunnel4Frame(kind, remoteMAC, tp.upMAC, underlayRemote, underlayLocal, vni, inner))
		got := readExc(t, n, 1, 3*time.Second)
		if len(got) != 1 {
			t.Fatalf("%s: %d exceptions, want the miss", kind, len(got))
		}
		x := got[0]
		if x.InPort != 3 || x.Reason != hal.ReasonMiss || x.VNI != vni || x.Rule != 0 || x.Truncated {
			t.Errorf("%s: in-port %d reason %v vni %#x rule %d truncated %v; want 3, miss, %#x, 0, false", kind, x.InPort, x.Reason, x.VNI, x.Rule, x.Truncated, vni)
		}
		f := x.Frame()
		var k hal.FlowKey
		var l wire.Layout
		if err := wire.Parse(f, x.InPort, &k, &l); err != nil {
			t.Fatalf("%s: the rebuilt frame does not parse: %v\n% x", kind, err, f)
		}
		if k.TunKind != kind || k.VNI != vni || hal.AddrFrom16(k.TunSrc).String() != underlayRemote || hal.AddrFrom16(k.TunDst).String() != underlayLocal {
			t.Errorf("%s: rebuilt frame's key %v", kind, k)
		}
		if !bytes.Equal(f[:6], tp.upMAC[:]) {
			t.Errorf("%s: outer destination MAC % x, want the endpoint's %s", kind, f[:6], tp.upMAC)
		}
		if !bytes.HasSuffix(f, inner) {
			t.Errorf("%s: inner frame\n got % x\nwant % x", kind, f, inner)
		}
		if got := vm1.recv(t, 1, 200*time.Millisecond, hasMagic); len(got) != 0 {
			t.Errorf("%s: a miss was delivered to vm1", kind)
		}
		st1, err := n.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d := st1.Exceptions[hal.ReasonMiss] - st0.Exceptions[hal.ReasonMiss]; d != 1 {
			t.Errorf("%s: Stats.Exceptions[miss] went up by %d, want 1", kind, d)
		}

		// A decap rule for the VNI takes the next one: delivered, and
		// nothing reaches the host.
		var m hal.Match
		m.InPort(3).Tunnel(kind, vni).TunSrc(netip.MustParseAddr(underlayRemote)).TunDst(netip.MustParseAddr(underlayLocal)).NoVLAN().EthDst(macVM1)
		apply(t, n, hal.AddOp(hal.Rule{ID: hal.RuleID(10 + i), Priority: 1, Match: m, Actions: []hal.Action{hal.Decap(), hal.Output(1)}}))
		sport++
		inner = udpFrame(macVM2, macVM1, "192.0.2.2", "192.0.2.1", sport, 7)
		up1.send(t, tunnel4Frame(kind, remoteMAC, tp.upMAC, underlayRemote, underlayLocal, vni, inner))
		if got := vm1.recv(t, 1, wait, hasMagic); len(got) != 1 || !bytes.Equal(got[0].data, inner) {
			t.Errorf("%s: the decap rule did not deliver the frame (%d frames)", kind, len(got))
		}
		if got := readExc(t, n, 1, 300*time.Millisecond); len(got) != 0 {
			t.Errorf("%s: a frame the decap rule took reached the host", kind)
		}
		// The same VNI with a VLAN-tagged inner frame: the rule says no
		// tag, so it is a miss again.
		sport++
		tagged := udpFrame(macVM2, macVM1, "192.0.2.2", "192.0.2.1", sport, 7)
		tagged = append(append(append([]byte(nil), tagged[:12]...), 0x81, 0x00, 0x00, 0x07), tagged[12:]...)
		up1.send(t, tunnel4Frame(kind, remoteMAC, tp.upMAC, underlayRemote, underlayLocal, vni, tagged))
		if got := readExc(t, n, 1, 3*time.Second); len(got) != 1 || !bytes.HasSuffix(got[0].Frame(), tagged) {
			t.Errorf("%s: a tagged inner frame was not a miss (%d exceptions)", kind, len(got))
		}
		if got := vm1.recv(t, 1, 200*time.Millisecond, hasMagic); len(got) != 0 {
			t.Errorf("%s: the no-VLAN decap rule delivered a tagged frame", kind)
		}
	}
}
