//go:build linux

package tcflower

import (
	"bytes"
	"context"
	"encoding/binary"
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

// withGeneveOption inserts one Geneve option (class 0x0102, type 3, 4
// bytes of data) into a Geneve frame over IPv4 from tunnel4Frame, fixing
// the lengths and the IPv4 header checksum (the UDP checksum stays 0).
func withGeneveOption(f []byte) (out, opt []byte) {
	opt = []byte{0x01, 0x02, 0x03, 0x01, 0xde, 0xad, 0xbe, 0xef}
	const g = 14 + 20 + 8 // the Geneve header
	out = append(append(append([]byte(nil), f[:g+8]...), opt...), f[g+8:]...)
	out[g] = byte(len(opt) / 4)
	ip := out[14:34]
	binary.BigEndian.PutUint16(ip[2:], binary.BigEndian.Uint16(ip[2:])+uint16(len(opt)))
	binary.BigEndian.PutUint16(out[34+4:], binary.BigEndian.Uint16(out[34+4:])+uint16(len(opt)))
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	return out, opt
}

// TestKernelTunnelMissOuter6AndOptions: the BPF action's other paths on a
// real kernel: a VXLAN frame over IPv6 comes back with its IPv6 outer
// addresses, and a Geneve frame's option comes back as it was.
func TestKernelTunnelMissOuter6AndOptions(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	tp.withOuter6()
	n := tp.open(t, PlaceAny)
	ctx := context.Background()
	if err := n.SetTunnelEndpoint(ctx, hal.TunnelEndpoint{Port: 3, Addrs: []netip.Addr{netip.MustParseAddr(underlayLocal), pa6Local}}); err != nil {
		t.Fatal(err)
	}
	up1 := openPacketSock(t, tp.remote, "up1")
	remoteMAC := hal.MustMAC("02:4e:50:00:00:a2")

	inner := udpFrame(macVM2, macVM1, "192.0.2.2", "192.0.2.1", 401, 7)
	up1.send(t, tunnel6Frame(hal.EncapVXLAN, remoteMAC, tp.upMAC, pa6Remote, pa6Local, 0x606, inner))
	got := readExc(t, n, 1, 3*time.Second)
	if len(got) != 1 {
		t.Fatalf("outer IPv6: %d exceptions, want the miss", len(got))
	}
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(got[0].Frame(), 3, &k, &l); err != nil {
		t.Fatalf("outer IPv6: the rebuilt frame does not parse: %v", err)
	}
	if k.TunKind != hal.EncapVXLAN || k.VNI != 0x606 || hal.AddrFrom16(k.TunSrc) != pa6Remote || hal.AddrFrom16(k.TunDst) != pa6Local || got[0].InPort != 3 {
		t.Errorf("outer IPv6: key %v in-port %d", k, got[0].InPort)
	}
	if !bytes.HasSuffix(got[0].Frame(), inner) {
		t.Error("outer IPv6: the inner frame changed")
	}

	inner = udpFrame(macVM2, macVM1, "192.0.2.2", "192.0.2.1", 402, 7)
	f, opt := withGeneveOption(tunnel4Frame(hal.EncapGeneve, remoteMAC, tp.upMAC, underlayRemote, underlayLocal, 0x707, inner))
	up1.send(t, f)
	got = readExc(t, n, 1, 3*time.Second)
	if len(got) != 1 {
		t.Fatalf("Geneve option: %d exceptions, want the miss", len(got))
	}
	fr := got[0].Frame()
	if err := wire.Parse(fr, 3, &k, &l); err != nil || k.TunKind != hal.EncapGeneve || k.VNI != 0x707 {
		t.Fatalf("Geneve option: key %v (%v)", k, err)
	}
	const g = 14 + 20 + 8
	if len(fr) < g+8+len(opt) || fr[g]&0x3f != byte(len(opt)/4) || !bytes.Equal(fr[g+8:g+8+len(opt)], opt) {
		t.Errorf("Geneve option: header and options % x, want the option % x", fr[g:min(len(fr), g+8+len(opt))], opt)
	}
	if !bytes.HasSuffix(fr, inner) {
		t.Error("Geneve option: the inner frame changed")
	}
}
