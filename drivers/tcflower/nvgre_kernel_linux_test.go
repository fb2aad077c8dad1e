//go:build linux

package tcflower

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// TestKernelNVGREEncap: with a flow-based gretap device in Config.Tunnels,
// NVGRE is an encapsulation (not a decapsulation): a rule's frame leaves
// the uplink as NVGRE (RFC 7637: GRE, K set and C, S clear, protocol
// 0x6558, key VSID<<8 | FlowID), with the VSID and outer addresses the
// rule gave and the inner frame as sent.
func TestKernelNVGREEncap(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	tp.ns.ip("link", "add", "gt0", "type", "gretap", "external")
	tp.ns.ip("link", "set", "gt0", "up")
	cfg := tp.config(PlaceAny)
	cfg.Tunnels[hal.EncapNVGRE] = "gt0"
	n, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil && !errors.Is(err, hal.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	c := n.Capabilities()
	if !c.Encaps.Has(hal.EncapNVGRE) || c.Decaps.Has(hal.EncapNVGRE) || !c.Decaps.Has(hal.EncapVXLAN) {
		t.Fatalf("encaps %v decaps %v: want nvgre an encap only\n%s", c.Encaps, c.Decaps, c.String())
	}
	vm1 := openPacketSock(t, tp.ns, "vm1")
	up1 := openPacketSock(t, tp.remote, "up1")
	var m hal.Match
	m.InPort(1)
	enc := hal.Encap{Kind: hal.EncapNVGRE, VNI: 0x123456, FlowID: 0x5a, Src: netip.MustParseAddr(underlayLocal), Dst: netip.MustParseAddr(underlayRemote), TTL: 17}
	apply(t, n, hal.AddOp(hal.Rule{ID: 1, Priority: 1, Match: m, Actions: []hal.Action{hal.EncapWith(enc), hal.Output(3)}}))
	inner := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.2", 1, 2)
	vm1.send(t, inner)
	got := up1.recv(t, 1, wait, hasMagic)
	if len(got) != 1 {
		t.Fatal("no encapsulated frame on the remote host")
	}
	b := got[0].data
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(b, 3, &k, &l); err != nil {
		t.Fatalf("the NVGRE frame does not parse: %v\n% x", err, b)
	}
	if k.TunKind != hal.EncapNVGRE || k.VNI != 0x123456 || hal.AddrFrom16(k.TunSrc).String() != underlayLocal || hal.AddrFrom16(k.TunDst).String() != underlayRemote {
		t.Errorf("key %v", k)
	}
	ip := b[14:34]
	if ip[9] != hal.ProtoGRE || ip[8] != 17 || ipChecksum(ip) != 0 {
		t.Errorf("outer IPv4: protocol %d ttl %d, checksum ok %v", ip[9], ip[8], ipChecksum(ip) == 0)
	}
	g := b[34:42]
	if !bytes.Equal(g[:4], []byte{0x20, 0x00, 0x65, 0x58}) || !bytes.Equal(g[4:8], []byte{0x12, 0x34, 0x56, 0x5a}) {
		t.Errorf("GRE header % x, want 20 00 65 58 12 34 56 5a (K only, TEB, VSID 0x123456, FlowID 0x5a)", g)
	}
	if !bytes.HasSuffix(b, inner) {
		t.Errorf("inner frame differs:\n got % x\nwant % x", b, inner)
	}
	// No NVGRE decap: refused, naming the tunnel kind.
	var dm hal.Match
	dm.Tunnel(hal.EncapNVGRE, 0x123456)
	if err := n.Validate(&hal.Rule{ID: 2, Match: dm, Actions: []hal.Action{hal.Decap(), hal.Output(1)}}); !errors.Is(err, hal.ErrNotSupported) {
		t.Errorf("NVGRE decap: %v, want a refusal", err)
	}
}
