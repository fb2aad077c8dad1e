package softnic

import (
	"bytes"
	"context"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/securechan/sealtest"
)

// TestSealedRoutesTable: with no rule at all in the flow table, sealed
// frames toward local and remote destinations, IPv4 and IPv6, are opened
// and forwarded by the sealed routes alone; nothing reaches the host, no
// rule counter moves, a destination without a route is dropped and
// counted, and replacing a port's routes takes effect at once.
func TestSealedRoutesTable(t *testing.T) {
	n, _ := cryptoNIC(t)
	s := vmSealer(t, n, pVM1, 1)
	ca6VM2 := netip.MustParseAddr("2001:db8:10::2")
	ca6Rem := netip.MustParseAddr("2001:db8:20::7")
	ca6VM1 := netip.MustParseAddr("2001:db8:10::1")
	routes := []hal.SealedRoute{
		{SrcMAC: macVM1, Src: caVM1, Dst: caVM2, Actions: []hal.Action{hal.SetEthDst(macVM2), hal.Output(pVM2)}},
		{SrcMAC: macVM1, Src: ca6VM1, Dst: ca6VM2, Actions: []hal.Action{hal.SetEthDst(macVM2), hal.Output(pVM2)}},
		{SrcMAC: macVM1, Src: caVM1, Dst: caRem, Actions: []hal.Action{hal.SetEthDst(macNext), hal.EncapWith(vxlanTo(paRem, 77)), hal.Output(pUplink)}},
		{SrcMAC: macVM1, Src: ca6VM1, Dst: ca6Rem, Actions: []hal.Action{hal.EncapWith(vxlanTo(pa6Rem, 78)), hal.Output(pUplink)}},
	}
	// Replies: vm2's from its vport, the remote IPv4 destination's from
	// the uplink.
	routes[0].Reply = &hal.SealedReply{InPort: pVM2, SrcMAC: macVM2, Actions: []hal.Action{hal.SetEthDst(macVM1), hal.Output(pVM1)}}
	routes[2].Reply = &hal.SealedReply{InPort: pUplink, TunKind: hal.EncapVXLAN, TunSrc: paRem, VNI: 77, Actions: []hal.Action{hal.Decap(), hal.Output(pVM1)}}
	ctx := context.Background()
	if err := n.SetSealedRoutes(ctx, pVM1, routes); err != nil {
		t.Fatal(err)
	}
	if got := n.SealedRoutes(pVM1); len(got) != len(routes) || got[2].Reply == nil || got[2].Reply.VNI != 77 {
		t.Fatalf("routes read back: %v", got)
	}
	frame := func(src, dst netip.Addr, dp uint16) []byte {
		return wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: src, Dst: dst, Proto: hal.ProtoUDP,
			SrcPort: 999, DstPort: dp, Payload: []byte("sealed payload")})
	}
	toVM2, toVM2v6 := frame(caVM1, caVM2, 1), frame(ca6VM1, ca6VM2, 2)
	toRem, toRem6 := frame(caVM1, caRem, 3), frame(ca6VM1, ca6Rem, 4)
	caNone := netip.MustParseAddr("198.18.10.77")
	toNone := frame(caVM1, caNone, 5)
	// An IPv6 packet to the IPv4-mapped form of a routed IPv4 address is
	// not that destination.
	toMapped := frame(ca6VM1, netip.AddrFrom16(caVM2.As16()), 6)
	// A source that is not the route's (another address, or another
	// MAC) takes no route.
	spoofed := frame(netip.MustParseAddr("198.18.10.66"), caVM2, 7)
	spoofedMAC := frame(caVM1, caVM2, 8)
	copy(spoofedMAC[6:12], macGW[:])
	send(t, n, pVM1, seal(t, s, toVM2), seal(t, s, toVM2v6), seal(t, s, toRem), seal(t, s, toRem6), seal(t, s, toNone), seal(t, s, toMapped),
		seal(t, s, spoofed), seal(t, s, spoofedMAC))

	vm2 := recvAll(t, n, pVM2)
	if len(vm2) != 2 {
		t.Fatalf("%d frames at vm2, want 2", len(vm2))
	}
	for i, want := range [][]byte{toVM2, toVM2v6} {
		w := bytes.Clone(want)
		copy(w[0:6], macVM2[:])
		if !bytes.Equal(vm2[i], w) {
			t.Fatalf("vm2 frame %d:\n got % x\nwant % x", i, vm2[i], w)
		}
	}
	up := recvAll(t, n, pUplink)
	if len(up) != 2 {
		t.Fatalf("%d frames on the uplink, want 2", len(up))
	}
	for i, c := range []struct {
		pa    netip.Addr
		vni   uint32
		inner []byte
	}{{paRem, 77, toRem}, {pa6Rem, 78, toRem6}} {
		k, l := parse(t, up[i])
		if k.TunKind != hal.EncapVXLAN || k.VNI != c.vni || hal.AddrFrom16(k.TunDst) != c.pa {
			t.Fatalf("uplink frame %d outer: %+v", i, k)
		}
		want := bytes.Clone(c.inner)
		if i == 0 {
			copy(want[0:6], macNext[:])
		}
		if !bytes.Equal(up[i][l.L2:], want) {
			t.Fatalf("uplink frame %d inner:\n got % x\nwant % x", i, up[i][l.L2:], want)
		}
	}
	// The replies, unsealed, are forwarded on the NIC too; a reply from
	// another host, on another VNI or from another MAC is a miss as usual.
	replyLocal := wire.Build(wire.FrameSpec{SrcMAC: macVM2, DstMAC: macVM1, Src: caVM2, Dst: caVM1, Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 999, Payload: []byte("reply")})
	replyLocalSpoofed := bytes.Clone(replyLocal)
	copy(replyLocalSpoofed[6:12], macGW[:])
	innerRem := wire.Build(wire.FrameSpec{SrcMAC: macNext, DstMAC: macVM1, Src: caRem, Dst: caVM1, Proto: hal.ProtoUDP, SrcPort: 3, DstPort: 999, Payload: []byte("reply")})
	replyRem := wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 77, Src: paRem, Dst: paLocal, SrcMAC: macNext, DstMAC: macUp}, innerRem)
	replyRemOtherVNI := wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 78, Src: paRem, Dst: paLocal, SrcMAC: macNext, DstMAC: macUp}, innerRem)
	replyRemOtherHost := wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 77, Src: netip.MustParseAddr("198.19.0.9"), Dst: paLocal, SrcMAC: macNext, DstMAC: macUp}, innerRem)
	send(t, n, pVM2, replyLocal, replyLocalSpoofed)
	send(t, n, pUplink, replyRem, replyRemOtherVNI, replyRemOtherHost)
	got := recvAll(t, n, pVM1)
	if len(got) != 2 || !bytes.Equal(got[0], replyLocal) || !bytes.Equal(got[1], innerRem) {
		t.Fatalf("vm1 received %d replies, want the local and the remote one:\n% x", len(got), got)
	}
	if exc := readExc(t, n); len(exc) != 3 {
		t.Fatalf("%d misses reached the host, want 3 (spoofed MAC, other VNI, other host)", len(exc))
	}

	st := n.SealedStats()
	if st.Replied != 2 {
		t.Fatalf("sealed stats %+v: want 2 replies", st)
	}
	if st.Opened != 8 || st.Routed != 4 || st.NoFlow != 4 {
		t.Fatalf("sealed stats %+v: want 8 opened, 4 routed, 4 without a route", st)
	}
	if exc := sealedExceptionsClean(t, n, sealtest.Secret{IP: caNone}, sealtest.Secret{IP: caRem}, sealtest.Secret{IP: ca6Rem}); len(exc) != 0 {
		t.Fatalf("%d exceptions", len(exc))
	}
	var rules int
	if err := n.Dump(ctx, func(*hal.RuleInfo) error { rules++; return nil }); err != nil || rules != 0 {
		t.Fatalf("the flow table holds %d rules (%v): the routes must not be rules", rules, err)
	}

	// Replacing the port's routes: the remote IPv4 one is gone.
	if err := n.SetSealedRoutes(ctx, pVM1, routes[:2]); err != nil {
		t.Fatal(err)
	}
	send(t, n, pVM1, seal(t, s, toRem), seal(t, s, toVM2))
	if up := recvAll(t, n, pUplink); len(up) != 0 {
		t.Fatalf("%d frames took a removed route", len(up))
	}
	if vm2 := recvAll(t, n, pVM2); len(vm2) != 1 {
		t.Fatalf("%d frames at vm2 after the replacement, want 1", len(vm2))
	}
	if err := n.SetSealedRoutes(ctx, pVM1, nil); err != nil {
		t.Fatal(err)
	}
	if got := n.SealedRoutes(pVM1); len(got) != 0 {
		t.Fatalf("routes after removal: %v", got)
	}
	// Unsealed traffic never takes a sealed route.
	if err := n.SetSealedRoutes(ctx, pVM1, routes); err != nil {
		t.Fatal(err)
	}
	send(t, n, pVM1, toRem)
	if up := recvAll(t, n, pUplink); len(up) != 0 {
		t.Fatal("an unsealed frame took a sealed route")
	}
	if exc := readExc(t, n); len(exc) != 1 || exc[0].Reason != hal.ReasonMiss {
		t.Fatalf("the unsealed frame's exceptions: %v", exc)
	}
}

// TestSealedRoutesRefused: routes that could hand the frame to the host,
// that name no unicast destination or port, or that are set for a port
// other than a vport, are refused and change nothing.
func TestSealedRoutesRefused(t *testing.T) {
	n, _ := cryptoNIC(t)
	ctx := context.Background()
	good := hal.SealedRoute{SrcMAC: macVM1, Src: caVM1, Dst: caVM2, Actions: []hal.Action{hal.Output(pVM2)}}
	if err := n.SetSealedRoutes(ctx, pVM1, []hal.SealedRoute{good}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		port hal.PortID
		r    hal.SealedRoute
	}{
		"to host":       {pVM1, hal.SealedRoute{SrcMAC: macVM1, Src: caVM1, Dst: caVM2, Actions: []hal.Action{hal.ToHost(hal.ReasonMiss)}}},
		"no address":    {pVM1, hal.SealedRoute{SrcMAC: macVM1, Src: caVM1, Actions: []hal.Action{hal.Output(pVM2)}}},
		"no source":     {pVM1, hal.SealedRoute{Dst: caVM2, Actions: []hal.Action{hal.Output(pVM2)}}},
		"families":      {pVM1, hal.SealedRoute{SrcMAC: macVM1, Src: netip.MustParseAddr("2001:db8::1"), Dst: caVM2, Actions: []hal.Action{hal.Output(pVM2)}}},
		"multicast":     {pVM1, hal.SealedRoute{SrcMAC: macVM1, Src: caVM1, Dst: netip.MustParseAddr("239.1.1.1"), Actions: []hal.Action{hal.Output(pVM2)}}},
		"no such port":  {pVM1, hal.SealedRoute{SrcMAC: macVM1, Src: caVM1, Dst: caVM2, Actions: []hal.Action{hal.Output(99)}}},
		"uplink source": {pUplink, good},
	} {
		if err := n.SetSealedRoutes(ctx, c.port, []hal.SealedRoute{good, c.r}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got := n.SealedRoutes(pVM1); len(got) != 1 {
		t.Fatalf("a refused call changed the routes: %v", got)
	}
	plain := newNIC(t)
	if err := plain.SetSealedRoutes(ctx, pVM1, []hal.SealedRoute{good}); err == nil {
		t.Fatal("a NIC without crypto took sealed routes")
	}
}

// BenchmarkSealedE2ERoute: a burst of sealed frames opened and forwarded by
// the sealed routes the host pushed (the product's path: no flow-table
// lookup, no first packet), beside the same frames in clear hitting their
// flows. 64 destinations, 1024 flows, 64-byte frames, encapsulated toward
// remote hosts; ns/pkt is wall time per frame, cpu-ns/pkt the thread's.
func BenchmarkSealedE2ERoute(b *testing.B) {
	bed := newSealedBed(b)
	if err := bed.n.SetSealedRoutes(context.Background(), pVM1, bed.routes(nil)); err != nil {
		b.Fatal(err)
	}
	benchSealedVsClear(b, bed, true)
}

// TestZeroAllocSealedRoutes: sealed frames on their routes, and misses
// looked up among the routes' replies, allocate nothing.
func TestZeroAllocSealedRoutes(t *testing.T) {
	bed := newSealedBed(t)
	n := bed.n
	routes := bed.routes(&hal.SealedReply{InPort: pVM2, SrcMAC: macVM2, Actions: []hal.Action{hal.Output(pVM1)}})
	if err := n.SetSealedRoutes(context.Background(), pVM1, routes); err != nil {
		t.Fatal(err)
	}
	// mixed: sealed frames on routes, sealed without a route, clear hits
	// and clear misses (no reply entry: vm1's own).
	sealedBurst(t, bed.s, bed.bufs, bed.sizes, true)
	restore := keep(bed.bufs)
	// A reply burst from vm2: misses that the replies forward.
	rep := make([][]byte, 8)
	rsz := make([]int, len(rep))
	for i := range rep {
		k := flowKey(i * 16)
		f := wire.Build(wire.FrameSpec{SrcMAC: macVM2, DstMAC: macVM1, Src: k.Dst(), Dst: caVM1, Proto: hal.ProtoUDP, SrcPort: 80, DstPort: 10000, Payload: make([]byte, 22)})
		rep[i] = make([]byte, Headroom+len(f))
		copy(rep[i][Headroom:], f)
		rsz[i] = len(f)
	}
	restoreRep := keep(rep)
	up, vm1 := mustPort(t, n, pUplink), mustPort(t, n, pVM1)
	allocs := allocsPerBurst(t, n, func() {
		restore()
		restoreRep()
		if err := n.Process(pVM1, bed.bufs, bed.sizes, Headroom); err != nil {
			t.Fatal(err)
		}
		if err := n.Process(pVM2, rep, rsz, Headroom); err != nil {
			t.Fatal(err)
		}
		up.Discard()
		vm1.Discard()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per burst", allocs)
	}
	if ss := n.SealedStats(); ss.Routed == 0 || ss.Replied == 0 || ss.NoFlow == 0 {
		t.Fatalf("the bursts did not take every path: %+v", ss)
	}
}
