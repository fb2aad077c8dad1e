package softnic

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// catchAll installs rules that would deliver anything to a VM: a decap rule
// for every tunnel kind and VNI 7, and a lowest-priority rule for the rest.
func catchAll(t testing.TB, n *NIC) {
	t.Helper()
	var ops []hal.Op
	for i, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE} {
		var m hal.Match
		m.Tunnel(kind, 7)
		ops = append(ops, hal.AddOp(hal.Rule{ID: hal.RuleID(100 + i), Priority: 10, Match: m,
			Actions: []hal.Action{hal.Decap(), hal.Output(pVM2)}}))
	}
	ops = append(ops, hal.AddOp(hal.Rule{ID: 1, Priority: 0, Actions: []hal.Action{hal.Output(pVM2)}}))
	mustApply(t, n, ops...)
}

// TestTruncatedTunnelFrames cuts encapsulated frames at every length: no
// cut frame reaches the VM as a decapsulated frame, none panics, and every
// one is accounted for as a drop or an exception.
func TestTruncatedTunnelFrames(t *testing.T) {
	inner := wire.Build(wire.FrameSpec{SrcMAC: macGW, DstMAC: macVM2, Src: caRem, Dst: caVM2, Proto: hal.ProtoTCP,
		SrcPort: 1, DstPort: 2, Payload: []byte("0123456789")})
	for _, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE} {
		for _, outer6 := range []bool{false, true} {
			e := hal.Encap{Kind: kind, VNI: 7, Src: paRem, Dst: paLocal}
			if outer6 {
				e.Src, e.Dst = pa6Rem, pa6Loc
			}
			full := wire.BuildEncap(&e, inner)
			n := newNIC(t)
			catchAll(t, n)
			send(t, n, pUplink, full)
			if out := recvAll(t, n, pVM2); len(out) != 1 || !bytes.Equal(out[0], inner) {
				t.Fatalf("%v: the whole frame is not decapsulated: %d frames", kind, len(out))
			}
			for cut := 0; cut < len(full); cut++ {
				send(t, n, pUplink, full[:cut])
				for _, f := range recvAll(t, n, pVM2) {
					// Only the catch-all may pass a cut frame, and only one
					// that is a whole, plain frame: never a decapsulated part.
					var k hal.FlowKey
					var l wire.Layout
					if wire.Parse(f, 0, &k, &l) != nil || !bytes.Equal(f, full[:cut]) {
						t.Fatalf("%v cut at %d: frame reached the VM:\n% x", kind, cut, f)
					}
				}
			}
			s := stats(t, n)
			pc, _ := n.PortCounters(context.Background(), pUplink)
			vm, _ := n.PortCounters(context.Background(), pVM2)
			if pc.Rx.Packets != uint64(len(full)+1) || pc.Drops+pc.Exceptions+vm.Tx.Packets != pc.Rx.Packets {
				t.Fatalf("%v: rx %d = drops %d + exceptions %d + delivered %d?", kind, pc.Rx.Packets, pc.Drops, pc.Exceptions, vm.Tx.Packets)
			}
			if s.Drops[hal.ReasonMalformed] == 0 {
				t.Fatalf("%v: no malformed drops counted", kind)
			}
			readExc(t, n)
		}
	}
}

func TestOversizedAndRunt(t *testing.T) {
	n := newNIC(t)
	catchAll(t, n)
	big := udp4(caVM1, caVM2, 1, 2, 1500) // 1542 bytes: over vm1's 1500 MTU
	ok := udp4(caVM1, caVM2, 1, 2, 1400)
	send(t, n, pVM1, big, ok, []byte{1, 2, 3}, nil)
	out := recvAll(t, n, pVM2)
	if len(out) != 1 || !bytes.Equal(out[0], ok) {
		t.Fatalf("%d frames passed", len(out))
	}
	if s := stats(t, n); s.Drops[hal.ReasonMalformed] != 3 {
		t.Fatalf("malformed drops %d", s.Drops[hal.ReasonMalformed])
	}
	// Process refuses a frame that claims more bytes than its buffer has.
	bufs := [][]byte{make([]byte, Headroom+100)}
	if err := n.Process(pVM1, bufs, []int{200}, Headroom); err != nil {
		t.Fatal(err)
	}
	if err := n.Process(pVM1, bufs, []int{60}, 10); err == nil {
		t.Fatal("Process accepted an offset below Headroom")
	}
	if s := stats(t, n); s.Drops[hal.ReasonMalformed] != 4 {
		t.Fatalf("malformed drops %d", s.Drops[hal.ReasonMalformed])
	}
}

func TestTTLAndMTUGoToHost(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.Ports[2].MTU = 1500 })
	var m hal.Match
	m.InPort(pVM1).IPDst(netip.PrefixFrom(caRem, 32))
	mustApply(t, n, hal.AddOp(hal.Rule{ID: 5, Match: m, Actions: []hal.Action{hal.DecTTL(), hal.SetEthDst(macNext),
		hal.EncapWith(vxlanTo(paRem, 9)), hal.Output(pUplink)}}))
	ttl1 := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: caVM1, Dst: caRem, Proto: hal.ProtoUDP, TTL: 1})
	full := udp4(caVM1, caRem, 1, 2, 1500-28) // a 1500-byte IP packet: 1550 after VXLAN
	fits := udp4(caVM1, caRem, 1, 2, 1500-28-50)
	send(t, n, pVM1, ttl1, full, fits)
	out := recvAll(t, n, pUplink)
	if len(out) != 1 || len(out) == 1 && len(out[0]) != len(fits)+50 {
		t.Fatalf("uplink got %d frames", len(out))
	}
	exc := readExc(t, n)
	if len(exc) != 2 || exc[0].Reason != hal.ReasonTTL || exc[1].Reason != hal.ReasonMTU {
		t.Fatalf("exceptions %+v", exc)
	}
	if !bytes.Equal(exc[0].Frame(), ttl1) || !bytes.Equal(exc[1].Frame(), full) || exc[1].Rule != 5 {
		t.Fatal("exceptions must carry the frames as they arrived")
	}
}

func TestVLANCases(t *testing.T) {
	n := newNIC(t)
	var tagged, untagged hal.Match
	tagged.InPort(pVM1).VLAN(10)
	untagged.InPort(pVM1).NoVLAN()
	mustApply(t, n,
		hal.AddOp(hal.Rule{ID: 1, Match: tagged, Actions: []hal.Action{hal.PopVLAN(), hal.Output(pVM2)}}),
		hal.AddOp(hal.Rule{ID: 2, Match: untagged, Actions: []hal.Action{hal.PopVLAN(), hal.Output(pVM2)}}),
	)
	spec := wire.FrameSpec{SrcMAC: macVM1, DstMAC: macVM2, Src: caVM1, Dst: caVM2, Proto: hal.ProtoUDP, VLAN: 10}
	send(t, n, pVM1, wire.Build(spec))
	spec.VLAN = 0
	plain := wire.Build(spec)
	send(t, n, pVM1, plain)
	spec.VLAN = 11
	send(t, n, pVM1, wire.Build(spec))
	out := recvAll(t, n, pVM2)
	spec.VLAN = 0
	if len(out) != 1 || !bytes.Equal(out[0], wire.Build(spec)[:len(out[0])]) {
		t.Fatalf("pop on a tagged frame: %d frames", len(out))
	}
	exc := readExc(t, n)
	if len(exc) != 2 || exc[0].Reason != hal.ReasonUnsupported || exc[1].Reason != hal.ReasonMiss {
		t.Fatalf("exceptions %+v", exc)
	}
}

func TestExceptionQueueAndRingFull(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.ExceptionQueue = 4; c.RingSize = 3 })
	frames := make([][]byte, 10)
	for i := range frames {
		frames[i] = udp4(caVM1, caVM2, uint16(i), 2, 0)
	}
	send(t, n, pVM1, frames...) // all miss
	exc := readExc(t, n)
	if len(exc) != 4 || !bytes.Equal(exc[3].Frame(), frames[3]) {
		t.Fatalf("%d exceptions", len(exc))
	}
	s := stats(t, n)
	if s.Exceptions[hal.ReasonMiss] != 4 || s.Drops[hal.ReasonQueueFull] != 6 {
		t.Fatalf("stats %+v", s)
	}
	// A short Buf gets the frame's head and Truncated.
	send(t, n, pVM1, frames[0])
	batch := []hal.Exception{{Buf: make([]byte, 20)}}
	if k, err := n.ReadExceptions(context.Background(), batch); k != 1 || err != nil || !batch[0].Truncated || batch[0].Len != 20 {
		t.Fatalf("truncated read: %d %v %+v", k, err, batch[0])
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.ReadExceptions(ctx, batch); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}

	mustApply(t, n, hal.AddOp(hal.Rule{ID: 1, Actions: []hal.Action{hal.Output(pVM2)}}))
	send(t, n, pVM1, frames...)
	if out := recvAll(t, n, pVM2); len(out) != 3 {
		t.Fatalf("ring of 3 gave %d frames", len(out))
	}
	pc, _ := n.PortCounters(context.Background(), pVM2)
	if pc.Drops != 7 || pc.Tx.Packets != 3 {
		t.Fatalf("vm2 counters %+v", pc)
	}
	// Inject bypasses the table, and reports a full ring.
	err := n.Inject(context.Background(), pUplink, frames[:5])
	if !errors.Is(err, ErrRingFull) {
		t.Fatalf("inject into a full ring: %v", err)
	}
	out := recvAll(t, n, pUplink)
	if len(out) != 3 || !bytes.Equal(out[2], frames[2]) {
		t.Fatalf("injected frames out: %d", len(out))
	}
	if err := n.Inject(context.Background(), pUplink, [][]byte{{1, 2}}); err == nil {
		t.Fatal("inject of a runt succeeded")
	}
	if err := n.Inject(context.Background(), 9, frames[:1]); !errors.Is(err, hal.ErrNotFound) {
		t.Fatalf("inject on a missing port: %v", err)
	}
	short := [][]byte{make([]byte, 10)}
	if err := n.Inject(context.Background(), pUplink, frames[:1]); err != nil {
		t.Fatal(err)
	}
	if k, err := mustPort(t, n, pUplink).Recv(short, make([]int, 1)); k != 0 || err == nil {
		t.Fatalf("Recv into a short buffer: %d %v", k, err)
	}
}

func TestSealedFramesDropped(t *testing.T) {
	n := newNIC(t)
	catchAll(t, n)
	f := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, EthType: hal.EtherTypeSealed, Payload: make([]byte, 80)})
	send(t, n, pVM1, f)
	if out := recvAll(t, n, pVM2); len(out) != 0 {
		t.Fatal("a sealed frame was forwarded by a NIC without crypto")
	}
	if len(readExc(t, n)) != 0 {
		t.Fatal("a sealed frame reached the host")
	}
	if s := stats(t, n); s.Drops[hal.ReasonSealed] != 1 {
		t.Fatalf("sealed drops %d", s.Drops[hal.ReasonSealed])
	}
}

func TestCountersExact(t *testing.T) {
	n := newNIC(t)
	var m hal.Match
	m.InPort(pVM1).IPDst(hal.MustPrefix("198.18.20.0/24"))
	mustApply(t, n,
		hal.AddOp(hal.Rule{ID: 1, Match: m, Actions: []hal.Action{hal.Count(), hal.EncapWith(vxlanTo(paRem, 1)), hal.Output(pUplink)}}),
		hal.AddOp(hal.Rule{ID: 2, Priority: 9, Match: hal.Match{Key: hal.FlowKey{InPort: pVM2}, Mask: hal.FlowKey{InPort: ^hal.PortID(0)}},
			Actions: []hal.Action{hal.Count(), hal.Drop(hal.ReasonPolicy)}}),
		hal.AddOp(hal.Rule{ID: 3, Actions: []hal.Action{hal.Output(pVM2)}}), // no Count
	)
	var want1, want2 hal.Counters
	var frames [][]byte
	for i := 0; i < 300; i++ {
		f := udp4(caVM1, netip.AddrFrom4([4]byte{198, 18, 20, byte(i)}), uint16(i), 1, i%50)
		if i%3 == 0 {
			f = udp4(caVM1, caVM2, 1, 1, i%7) // rule 3
		} else {
			want1.Packets++
			want1.Bytes += uint64(len(f))
		}
		frames = append(frames, f)
	}
	for i := 0; i < 300; i += 100 {
		send(t, n, pVM1, frames[i:i+100]...)
		recvAll(t, n, pUplink)
		recvAll(t, n, pVM2)
	}
	for i := 0; i < 77; i++ {
		f := udp4(caVM2, caVM1, 1, 1, i)
		want2.Packets++
		want2.Bytes += uint64(len(f))
		send(t, n, pVM2, f)
	}
	got := make([]hal.Counters, 3)
	if err := n.RuleCounters(context.Background(), []hal.RuleID{1, 2, 3}, got); err != nil {
		t.Fatal(err)
	}
	if got[0] != want1 || got[1] != want2 || got[2] != (hal.Counters{}) {
		t.Fatalf("counters %+v, want %+v %+v {0 0}", got, want1, want2)
	}
	// Modify keeps the rule's counts.
	mustApply(t, n, hal.ModifyOp(hal.Rule{ID: 1, Match: m, Actions: []hal.Action{hal.Count(), hal.Output(pUplink)}}))
	if err := n.RuleCounters(context.Background(), []hal.RuleID{1}, got); err != nil || got[0] != want1 {
		t.Fatalf("after modify: %+v %v", got[0], err)
	}
	if err := n.RuleCounters(context.Background(), []hal.RuleID{4}, got); !errors.Is(err, hal.ErrNotFound) {
		t.Fatalf("unknown rule: %v", err)
	}
	up, _ := n.PortCounters(context.Background(), pUplink)
	if up.Tx.Packets != want1.Packets || up.Tx.Bytes != want1.Bytes+50*want1.Packets {
		t.Fatalf("uplink tx %+v", up.Tx)
	}
	if _, err := n.PortCounters(context.Background(), 0); !errors.Is(err, hal.ErrNotFound) {
		t.Fatal(err)
	}
}

// TestZeroAllocFastPath guards the batched fast path: hit, rewrite, encap,
// ring, and the exception path.
func TestZeroAllocFastPath(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.MaxRules = 1 << 12 })
	installFlows(t, n, 1024)
	bufs := make([][]byte, MaxBurst)
	sizes := make([]int, MaxBurst)
	for i := range bufs {
		bufs[i] = make([]byte, Headroom+benchFrameLen)
		f := i * 3
		if i%8 == 7 {
			f = 5000 // no rule: exception path
		}
		writeFlowFrame(bufs[i][Headroom:], f)
		sizes[i] = benchFrameLen
		switch i % 16 {
		case 5:
			sizes[i] = 30 // truncated: dropped as malformed
		case 9:
			bufs[i][Headroom+24]++ // bad IPv4 header checksum
		case 13: // a later fragment: to the host
			ip := bufs[i][Headroom+14 : Headroom+34]
			ip[6], ip[10], ip[11] = 0x01, 0, 0
			binary.BigEndian.PutUint16(ip[10:12], wire.Checksum(ip, 0))
		}
	}
	up := mustPort(t, n, pUplink)
	batch := make([]hal.Exception, MaxBurst)
	for i := range batch {
		batch[i].Buf = make([]byte, 128)
	}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(200, func() {
		if err := n.Process(pVM1, bufs, sizes, Headroom); err != nil {
			t.Fatal(err)
		}
		up.Discard()
		if _, err := n.ReadExceptions(ctx, batch); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per burst", allocs)
	}
	if up.counters().Tx.Packets == 0 {
		t.Fatal("nothing was sent")
	}
	s := stats(t, n)
	if s.Drops[hal.ReasonMalformed] == 0 || s.Exceptions[hal.ReasonFragment] == 0 || s.Exceptions[hal.ReasonMiss] == 0 {
		t.Fatalf("the burst did not take every path: %+v", s)
	}
}

// TestTunnelTransit: a tunnelled frame hitting a rule without decap goes
// out with its outer headers (or a second encapsulation); a rule that would
// rewrite the inner headers under kept outer ones sends it to the host.
func TestTunnelTransit(t *testing.T) {
	n := newNIC(t)
	var keep, rewrite, wrap hal.Match
	keep.InPort(pUplink).Tunnel(hal.EncapVXLAN, 1)
	rewrite.InPort(pUplink).Tunnel(hal.EncapVXLAN, 2)
	wrap.InPort(pUplink).Tunnel(hal.EncapVXLAN, 3)
	mustApply(t, n,
		hal.AddOp(hal.Rule{ID: 1, Match: keep, Actions: []hal.Action{hal.Output(pVM1)}}),
		hal.AddOp(hal.Rule{ID: 2, Match: rewrite, Actions: []hal.Action{hal.SetEthDst(macVM2), hal.Output(pVM1)}}),
		hal.AddOp(hal.Rule{ID: 3, Match: wrap, Actions: []hal.Action{hal.EncapWith(vxlanTo(paRem, 9)), hal.Output(pUplink)}}),
	)
	inner := udp4(caRem, caVM1, 1, 2, 10)
	frames := make([][]byte, 3)
	for i := range frames {
		e := hal.Encap{Kind: hal.EncapVXLAN, VNI: uint32(i + 1), Src: paRem, Dst: paLocal}
		frames[i] = wire.BuildEncap(&e, inner)
	}
	send(t, n, pUplink, frames...)
	if out := recvAll(t, n, pVM1); len(out) != 1 || !bytes.Equal(out[0], frames[0]) {
		t.Fatalf("transit frame: %d out", len(out))
	}
	out := recvAll(t, n, pUplink)
	if len(out) != 1 || !bytes.Equal(out[0][50:], frames[2]) {
		t.Fatalf("double encapsulation: %d out", len(out))
	}
	if k, _ := parse(t, out[0]); k.VNI != 9 || k.TunKind != hal.EncapVXLAN {
		t.Fatalf("outer key %v", k)
	}
	exc := readExc(t, n)
	if len(exc) != 1 || exc[0].Reason != hal.ReasonUnsupported || exc[0].Rule != 2 || exc[0].VNI != 2 {
		t.Fatalf("exceptions %+v", exc)
	}
}
