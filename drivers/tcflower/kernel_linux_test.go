//go:build linux

package tcflower

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// These tests program a real kernel's tc and send real frames through it.
// They run inside the VM tier (TestVM boots it) and skip elsewhere.

const wait = 3 * time.Second

func fwdRule(id hal.RuleID, prio uint16, in hal.PortID, dst string, out hal.PortID) hal.Rule {
	var m hal.Match
	m.InPort(in).IPDst(netip.MustParsePrefix(dst + "/32"))
	return hal.Rule{ID: id, Priority: prio, Match: m, Actions: []hal.Action{hal.Output(out)}}
}

func apply(t *testing.T, n *NIC, ops ...hal.Op) []hal.OpResult {
	t.Helper()
	res := make([]hal.OpResult, len(ops))
	if err := n.Apply(context.Background(), ops, res); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return res
}

func dumpAll(t *testing.T, n *NIC) map[hal.RuleID]hal.RuleInfo {
	t.Helper()
	got := map[hal.RuleID]hal.RuleInfo{}
	if err := n.Dump(context.Background(), func(ri *hal.RuleInfo) error {
		got[ri.Rule.ID] = *ri
		return nil
	}); err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return got
}

func TestKernelOpenReportsNoHardware(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	c := n.Capabilities()
	t.Logf("capabilities:\n%s", c.String())
	if c.Location != hal.LocationKernel {
		t.Errorf("veth has no tc offload, yet Location is %v", c.Location)
	}
	if !strings.Contains(strings.Join(c.Notes, "\n"), "skip_sw refused") {
		t.Errorf("notes do not say that skip_sw was refused: %q", c.Notes)
	}
	for _, k := range []hal.ActionKind{hal.ActionOutput, hal.ActionDrop, hal.ActionSetIPDst, hal.ActionSetEthDst, hal.ActionPushVLAN, hal.ActionPopVLAN, hal.ActionEncap, hal.ActionDecap} {
		if !c.HasAction(k) {
			t.Errorf("action %v missing on a kernel that has its tc action", k)
		}
	}
	if !c.Encaps.Has(hal.EncapVXLAN) || !c.Encaps.Has(hal.EncapGeneve) {
		t.Errorf("encaps %v, want vxlan|geneve", c.Encaps)
	}
	if n.flags != clsFlagsSkipHW {
		t.Errorf("filter flags %#x; without hardware, placement any must program skip_hw", n.flags)
	}
	if got := len(n.Ports()); got != 3 {
		t.Errorf("%d ports, want 3", got)
	}
	if n.Ports()[2].MAC != tp.upMAC {
		t.Errorf("uplink MAC %v, want %v", n.Ports()[2].MAC, tp.upMAC)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left := tp.leftovers(t); left != "" {
		t.Errorf("Close left qdiscs behind:\n%s", left)
	}
	if out, err := tp.ns.tc("filter", "show", "block", itoa(n.Block())); err == nil && strings.TrimSpace(out) != "" {
		t.Errorf("block %d still has filters after Close:\n%s", n.Block(), out)
	}
	if err := n.Close(); !errors.Is(err, hal.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
	if err := n.Apply(context.Background(), []hal.Op{hal.AddOp(fwdRule(1, 1, 1, "192.0.2.2", 2))}, make([]hal.OpResult, 1)); !errors.Is(err, hal.ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}
}

func TestKernelHardwareOnlyRefused(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	_, err := Open(context.Background(), tp.config(PlaceHardware))
	if !errors.Is(err, hal.ErrNotSupported) {
		t.Fatalf("Open with hardware-only placement on veth: %v, want ErrNotSupported", err)
	}
	if !strings.Contains(err.Error(), "skip_sw") {
		t.Errorf("the refusal does not say why: %v", err)
	}
	t.Logf("refusal: %v", err)
	if left := tp.leftovers(t); left != "" {
		t.Errorf("a failed Open left qdiscs behind:\n%s", left)
	}
}

func TestKernelForwardCountAndDump(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceSoftware)
	vm1, vm2 := openPacketSock(t, tp.ns, "vm1"), openPacketSock(t, tp.ns, "vm2")
	r := fwdRule(10, 100, 1, "192.0.2.2", 2)
	r.Cookie = 0xc0ffee
	apply(t, n, hal.AddOp(r))

	f := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.2", 1000, 2000)
	vm1.send(t, f, f, f)
	got := vm2.recv(t, 3, wait, hasMagic)
	if len(got) != 3 {
		t.Fatalf("vm2 received %d of 3 frames", len(got))
	}
	if !bytes.Equal(got[0].data, f) {
		t.Errorf("forwarded frame changed:\n got % x\nwant % x", got[0].data, f)
	}
	// A frame for another address misses and must not be forwarded.
	vm1.send(t, udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.3", 1000, 2000))
	if extra := vm2.recv(t, 1, 300*time.Millisecond, hasMagic); len(extra) != 0 {
		t.Errorf("a frame no rule matches was forwarded")
	}

	d := dumpAll(t, n)
	ri, ok := d[10]
	if !ok {
		t.Fatalf("Dump lacks rule 10: %v", d)
	}
	if ri.Location != hal.LocationKernel {
		t.Errorf("rule location %v; on veth it is not in hardware", ri.Location)
	}
	if !ri.Live || ri.Rule.Cookie != 0xc0ffee || ri.Rule.Priority != 100 {
		t.Errorf("dumped rule %+v", ri)
	}
	if ri.Counters.Packets != 3 {
		t.Errorf("rule counted %d packets, want 3", ri.Counters.Packets)
	}
	// Counted from L3 at tc ingress: the frame without its Ethernet header.
	if want := uint64(3 * (len(f) - 14)); ri.Counters.Bytes != want {
		t.Errorf("rule counted %d bytes, want %d (L3 bytes, as Capabilities.Counters says)", ri.Counters.Bytes, want)
	}
	cs := make([]hal.Counters, 1)
	if err := n.RuleCounters(context.Background(), []hal.RuleID{10}, cs); err != nil || cs[0].Packets != 3 {
		t.Errorf("RuleCounters = %+v, %v", cs, err)
	}
	pc, err := n.PortCounters(context.Background(), 1)
	if err != nil || pc.Rx.Packets < 4 {
		t.Errorf("PortCounters(1) = %+v, %v; want at least 4 received", pc, err)
	}
	// Modify in place (same priority): now drop.
	r.Actions = []hal.Action{hal.Drop(hal.ReasonPolicy)}
	apply(t, n, hal.ModifyOp(r))
	vm1.send(t, f, f)
	if extra := vm2.recv(t, 1, 300*time.Millisecond, hasMagic); len(extra) != 0 {
		t.Errorf("the modified (drop) rule still forwards")
	}
	st, err := n.Stats(context.Background())
	if err != nil || st.Drops[hal.ReasonPolicy] != 2 {
		t.Errorf("Stats drops[policy] = %d, %v; want 2", st.Drops[hal.ReasonPolicy], err)
	}
	// Modify to another priority: the rule moves, still one rule.
	r.Priority = 7
	r.Actions = []hal.Action{hal.Output(2)}
	apply(t, n, hal.ModifyOp(r))
	vm1.send(t, f)
	if got := vm2.recv(t, 1, wait, hasMagic); len(got) != 1 {
		t.Errorf("after a priority change the rule does not forward")
	}
	if d := dumpAll(t, n); len(d) != 1 || d[10].Rule.Priority != 7 {
		t.Errorf("after moving the rule the dump holds %v", d)
	}
	apply(t, n, hal.DeleteOp(10))
	if d := dumpAll(t, n); len(d) != 0 {
		t.Errorf("after delete the dump holds %v", d)
	}
}

func TestKernelRewrite(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	vm1, vm2 := openPacketSock(t, tp.ns, "vm1"), openPacketSock(t, tp.ns, "vm2")
	var m hal.Match
	m.InPort(1).IPDst(netip.MustParsePrefix("192.0.2.2/32")).Proto(hal.ProtoUDP)
	newDst := hal.MustMAC("02:4e:50:00:09:09")
	newSrc := hal.MustMAC("02:4e:50:00:08:08")
	r := hal.Rule{ID: 1, Priority: 1, Match: m, Actions: []hal.Action{
		hal.SetEthDst(newDst), hal.SetEthSrc(newSrc),
		hal.SetIPSrc(netip.MustParseAddr("198.51.100.7")), hal.SetIPDst(netip.MustParseAddr("203.0.113.9")),
		hal.SetL4Src(5555), hal.SetL4Dst(6666), hal.Output(2),
	}}
	apply(t, n, hal.AddOp(r))
	vm1.send(t, udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.2", 1000, 2000))
	got := vm2.recv(t, 1, wait, hasMagic)
	if len(got) != 1 {
		t.Fatal("rewritten frame not received")
	}
	b := got[0].data
	want := udpFrame(newSrc, newDst, "198.51.100.7", "203.0.113.9", 5555, 6666)
	if !bytes.Equal(b, want) {
		t.Errorf("rewritten frame (checksums included):\n got % x\nwant % x", b, want)
	}
	if ipChecksum(b[14:34]) != 0 {
		t.Errorf("IPv4 header checksum wrong after rewrite")
	}
}

func TestKernelDropAndVLAN(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	vm1, vm2 := openPacketSock(t, tp.ns, "vm1"), openPacketSock(t, tp.ns, "vm2")
	var drop hal.Match
	drop.InPort(1).IPDst(netip.MustParsePrefix("192.0.2.66/32"))
	apply(t, n,
		hal.AddOp(hal.Rule{ID: 1, Priority: 5, Match: drop, Actions: []hal.Action{hal.Count(), hal.Drop(hal.ReasonPolicy)}}),
		hal.AddOp(hal.Rule{ID: 2, Priority: 1, Match: *new(hal.Match).InPort(1), Actions: []hal.Action{hal.PushVLAN(100), hal.Output(2)}}),
	)
	vm1.send(t, udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.66", 1, 2))
	vm1.send(t, udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.2", 1, 2))
	got := vm2.recv(t, 2, wait, hasMagic)
	if len(got) != 1 {
		t.Fatalf("vm2 received %d frames, want 1 (the other dropped)", len(got))
	}
	if !got[0].hasVLAN || got[0].vlanTCI&0xfff != 100 {
		t.Errorf("pushed VLAN: has %v tci %#x, want VLAN 100", got[0].hasVLAN, got[0].vlanTCI)
	}
	if d := dumpAll(t, n); d[1].Counters.Packets != 1 || d[2].Counters.Packets != 1 {
		t.Errorf("counters: drop %d, push %d; want 1 and 1", d[1].Counters.Packets, d[2].Counters.Packets)
	}
	// Sealed-address frames never pass, whatever rule would take them.
	sealed := append(append([]byte(nil), macVM2[:]...), macVM1[:]...)
	sealed = append(append(sealed, 0x88, 0xb5), testMagic...)
	sealed = append(sealed, make([]byte, 60-len(sealed))...)
	vm1.send(t, sealed)
	if got := vm2.recv(t, 1, 500*time.Millisecond, hasMagic); len(got) != 0 {
		t.Errorf("a sealed frame was forwarded")
	}
	if st, err := n.Stats(context.Background()); err != nil || st.Drops[hal.ReasonSealed] != 1 {
		t.Errorf("Stats drops[sealed] = %d, %v; want 1", st.Drops[hal.ReasonSealed], err)
	}
	// Pop: a tagged frame from vm1 leaves untagged.
	var tagged hal.Match
	tagged.InPort(1).VLAN(100)
	apply(t, n, hal.AddOp(hal.Rule{ID: 3, Priority: 9, Match: tagged, Actions: []hal.Action{hal.PopVLAN(), hal.Output(2)}}))
	plain := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.2", 1, 2)
	tag := append(append(append([]byte(nil), plain[:12]...), 0x81, 0x00, 0x00, 100), plain[12:]...)
	vm1.send(t, tag)
	got = vm2.recv(t, 1, wait, hasMagic)
	if len(got) != 1 || got[0].hasVLAN || !bytes.Equal(got[0].data, plain) {
		t.Errorf("popped frame: %+v", got)
	}
}

func TestKernelEncapDecap(t *testing.T) {
	requireKernel(t)
	for _, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve} {
		t.Run(kind.String(), func(t *testing.T) {
			tp := newTopology(t)
			n := tp.open(t, PlaceAny)
			vm1 := openPacketSock(t, tp.ns, "vm1")
			up1 := openPacketSock(t, tp.remote, "up1")
			var m hal.Match
			m.InPort(1)
			enc := hal.Encap{Kind: kind, VNI: 0x123456, Src: netip.MustParseAddr(underlayLocal), Dst: netip.MustParseAddr(underlayRemote), TTL: 17}
			apply(t, n, hal.AddOp(hal.Rule{ID: 1, Priority: 1, Match: m, Actions: []hal.Action{hal.EncapWith(enc), hal.Output(3)}}))
			inner := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.2", 1, 2)
			vm1.send(t, inner)
			got := up1.recv(t, 1, wait, hasMagic)
			if len(got) != 1 {
				t.Fatal("no encapsulated frame on the remote host")
			}
			b := got[0].data
			if len(b) < 14+20+8+8+len(inner) {
				t.Fatalf("short frame % x", b)
			}
			ip := b[14:34]
			if ip[8] != 17 || !bytes.Equal(ip[12:16], []byte{198, 18, 0, 1}) || !bytes.Equal(ip[16:20], []byte{198, 18, 0, 2}) {
				t.Errorf("outer IPv4 ttl %d %v -> %v", ip[8], ip[12:16], ip[16:20])
			}
			if ipChecksum(ip) != 0 {
				t.Errorf("outer IPv4 checksum wrong")
			}
			udp := b[34:42]
			wantPort := hal.PortVXLAN
			if kind == hal.EncapGeneve {
				wantPort = hal.PortGeneve
			}
			if p := binary.BigEndian.Uint16(udp[2:]); p != wantPort {
				t.Errorf("outer UDP port %d, want %d", p, wantPort)
			}
			// tunnel_key asks for the checksum (no nocsum), and the device
			// writes it over IPv4 too. With the uplink's checksum offload
			// (a veth's default) the kernel leaves it to the device, and
			// recv completed it as a NIC would: then it must be the outer
			// UDP header's.
			if g := got[0]; g.partial && (g.csumStart != 34 || g.csumOffset != 6) {
				t.Errorf("the checksum left to the device is at %d+%d, want the outer UDP header's (34+6)", g.csumStart, g.csumOffset)
			}
			t.Logf("outer UDP checksum left to the device: %v", got[0].partial)
			if ck := binary.BigEndian.Uint16(udp[6:]); ck == 0 || ck != udpChecksum(ip, b[34:]) {
				t.Errorf("outer UDP checksum %#04x, want %#04x", ck, udpChecksum(ip, b[34:]))
			}
			hdr := b[42:50]
			vni := binary.BigEndian.Uint32(hdr[4:]) >> 8
			if vni != 0x123456 {
				t.Errorf("VNI %#x, want 0x123456", vni)
			}
			if !bytes.Equal(b[len(b)-len(inner):], inner) {
				t.Errorf("inner frame differs:\n got % x\nwant % x", b[len(b)-len(inner):], inner)
			}
			if want := hal.MustMAC("02:4e:50:00:00:a2"); !bytes.Equal(b[0:6], want[:]) {
				t.Errorf("outer destination MAC % x, want the neighbour's %v", b[0:6], want)
			}
			if !bytes.Equal(b[6:12], tp.upMAC[:]) {
				t.Errorf("outer source MAC % x, want the uplink's %v", b[6:12], tp.upMAC)
			}

			if kind != hal.EncapVXLAN {
				return
			}
			// Decap: the remote sends VNI 0x123456 to us.
			var dm hal.Match
			dm.Tunnel(hal.EncapVXLAN, 0x123456)
			dm.TunSrc(netip.MustParseAddr(underlayRemote))
			apply(t, n, hal.AddOp(hal.Rule{ID: 2, Priority: 1, Match: dm, Actions: []hal.Action{hal.Decap(), hal.Output(1)}}))
			back := udpFrame(macVM2, macVM1, "192.0.2.2", "192.0.2.1", 2, 1)
			up1.send(t, vxlanFrame(hal.MustMAC("02:4e:50:00:00:a2"), tp.upMAC, underlayRemote, underlayLocal, 0x123456, back))
			rx := vm1.recv(t, 1, wait, hasMagic)
			if len(rx) != 1 || !bytes.Equal(rx[0].data, back) {
				t.Fatalf("decapsulated frame on vm1: %+v", rx)
			}
			// Another VNI misses.
			up1.send(t, vxlanFrame(hal.MustMAC("02:4e:50:00:00:a2"), tp.upMAC, underlayRemote, underlayLocal, 77, back))
			if rx := vm1.recv(t, 1, 300*time.Millisecond, hasMagic); len(rx) != 0 {
				t.Errorf("a frame of another VNI was decapsulated to vm1")
			}
			if d := dumpAll(t, n); d[2].Counters.Packets != 1 {
				t.Errorf("decap rule counted %d packets, want 1", d[2].Counters.Packets)
			}
		})
	}
}

func TestKernelGenerations(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	vm1, vm2 := openPacketSock(t, tp.ns, "vm1"), openPacketSock(t, tp.ns, "vm2")
	ctx := context.Background()
	// Scope 5: gen 0 forwards, gen 1 drops. Scope 9 (tried after scope 5)
	// forwards another address.
	g0 := fwdRule(1, 10, 1, "192.0.2.2", 2)
	g0.Scope = 5
	g1 := g0
	g1.ID, g1.Generation, g1.Actions = 2, 1, []hal.Action{hal.Drop(hal.ReasonPolicy)}
	other := fwdRule(3, 10, 1, "192.0.2.3", 2)
	other.Scope = 9
	apply(t, n, hal.AddOp(g0), hal.AddOp(g1), hal.AddOp(other))
	f := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.2", 1, 2)
	f3 := udpFrame(macVM1, macVM2, "192.0.2.1", "192.0.2.3", 1, 2)
	check := func(wantF, wantF3 int) {
		t.Helper()
		vm1.send(t, f, f3)
		got := vm2.recv(t, 2, 700*time.Millisecond, hasMagic)
		var nf, nf3 int
		for _, g := range got {
			switch {
			case bytes.Equal(g.data, f):
				nf++
			case bytes.Equal(g.data, f3):
				nf3++
			}
		}
		if nf != wantF || nf3 != wantF3 {
			t.Errorf("forwarded %d / %d frames, want %d / %d", nf, nf3, wantF, wantF3)
		}
	}
	check(1, 1)
	if d := dumpAll(t, n); !d[1].Live || d[2].Live || !d[3].Live {
		t.Errorf("liveness before activation: %v %v %v", d[1].Live, d[2].Live, d[3].Live)
	}
	if err := n.Activate(ctx, 5, 1); err != nil {
		t.Fatal(err)
	}
	if g, _ := n.ActiveGeneration(5); g != 1 {
		t.Errorf("active generation %d, want 1", g)
	}
	check(0, 1)
	if err := n.Activate(ctx, 5, 0); err != nil {
		t.Fatal(err)
	}
	check(1, 1)
	// A generation with no rules: the scope's traffic passes on to the
	// next scope and the kernel.
	if err := n.Activate(ctx, 5, 7); err != nil {
		t.Fatal(err)
	}
	check(0, 1)
}

func TestKernelBatchReportsWhatLanded(t *testing.T) {
	requireKernel(t)
	tp := newTopology(t)
	n := tp.open(t, PlaceAny)
	a := fwdRule(1, 10, 1, "192.0.2.2", 2)
	dup := a // same match, same priority: flower refuses a second one
	dup.ID = 2
	c := fwdRule(3, 10, 1, "192.0.2.3", 2)
	bad := fwdRule(4, 10, 1, "192.0.2.4", 99) // no such port
	ops := []hal.Op{hal.AddOp(a), hal.AddOp(dup), hal.AddOp(c), hal.AddOp(bad), hal.DeleteOp(42)}
	res := make([]hal.OpResult, len(ops))
	err := n.Apply(context.Background(), ops, res)
	var be *hal.BatchError
	if !errors.As(err, &be) || be.Failed != 3 || be.Index != 1 {
		t.Fatalf("Apply: %v, want a BatchError with 3 failures, first op 1", err)
	}
	if res[0].Err != nil || res[2].Err != nil {
		t.Errorf("valid ops failed: %v / %v", res[0].Err, res[2].Err)
	}
	var oe *hal.OpError
	var ke *KernelError
	if !errors.As(res[1].Err, &oe) || oe.Rule != 2 || !errors.As(res[1].Err, &ke) || !errors.Is(res[1].Err, hal.ErrExists) {
		t.Fatalf("duplicate: %v, want a hal.OpError naming rule 2 around a KernelError that Is ErrExists", res[1].Err)
	}
	t.Logf("duplicate refused: %v", res[1].Err)
	if !errors.Is(res[3].Err, hal.ErrNotFound) || !errors.Is(res[4].Err, hal.ErrNotFound) {
		t.Errorf("bad port / unknown delete: %v / %v", res[3].Err, res[4].Err)
	}
	d := dumpAll(t, n)
	if len(d) != 2 || d[1].Rule.ID != 1 || d[3].Rule.ID != 3 {
		t.Errorf("dump after a partly failed batch: %v; want rules 1 and 3", d)
	}

	// The kernel's own words come through: a second NIC on the same
	// interfaces is refused with the qdisc's extended acknowledgement.
	_, err = Open(context.Background(), tp.config(PlaceAny))
	if !errors.As(err, &ke) || ke.Errno != errnoEEXIST || ke.Message == "" {
		t.Errorf("a second Open on the same links: %v, want EEXIST with the kernel's reason", err)
	}
	t.Logf("second Open refused: %v", err)

	// A fault under the driver: port 2's interface disappears. The kernel
	// refuses a redirect to it and says why.
	tp.ns.ip("link", "del", "p2")
	gone := fwdRule(5, 10, 1, "192.0.2.5", 2)
	res = make([]hal.OpResult, 2)
	err = n.Apply(context.Background(), []hal.Op{hal.AddOp(gone), hal.AddOp(fwdRule(6, 10, 1, "192.0.2.6", 3))}, res)
	if !errors.As(err, &be) || be.Failed != 1 || be.Index != 0 {
		t.Fatalf("Apply with a vanished port: %v", err)
	}
	if !errors.As(res[0].Err, &oe) || oe.Rule != 5 || !errors.As(res[0].Err, &ke) || ke.Errno != errnoENODEV {
		t.Fatalf("vanished port: %v, want a hal.OpError naming rule 5 around the kernel's ENODEV", res[0].Err)
	}
	t.Logf("vanished port refused: %v", res[0].Err)
	if res[1].Err != nil {
		t.Errorf("the other rule of the batch failed: %v", res[1].Err)
	}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
