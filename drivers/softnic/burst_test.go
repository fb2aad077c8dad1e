package softnic

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// burstNIC is a NIC whose rules reach every stage of the staged lookup:
// thousands of exact rules in one tuple (enough that probe chains run past
// their home buckets), masked rules of lower priority in other tuples,
// an exact rule that ties a masked one on priority (the lower ID wins),
// rules that count, one to the host, one that drops, rewrites with
// dec_ttl, an IPv6 encapsulation, a VLAN pop and a decapsulation.
func burstNIC(t testing.TB, exact int) *NIC {
	n := newNIC(t, func(c *Config) { c.MaxRules = 1 << 13; c.RingSize = 1024; c.ExceptionQueue = 1024 })
	ops := make([]hal.Op, 0, exact+16)
	for f := 0; f < exact; f++ {
		r := flowRule(f)
		if f%5 == 0 {
			r.Actions = append([]hal.Action{hal.Count()}, r.Actions...)
		}
		ops = append(ops, hal.AddOp(r))
	}
	var udp, tcp6, vlan, toHost, drop, tie, tun hal.Match
	udp.IPDst(hal.MustPrefix("198.18.0.0/15")).Proto(hal.ProtoUDP)
	tcp6.IPSrc(hal.MustPrefix("2001:db8::/32")).Proto(hal.ProtoTCP)
	vlan.VLAN(5)
	toHost.IPDst(hal.MustPrefix("203.0.113.0/28"))
	drop.IPDst(hal.MustPrefix("203.0.113.16/28"))
	tie.InPort(pVM1).IPDst(hal.MustPrefix("198.18.0.0/20"))
	tun.Tunnel(hal.EncapVXLAN, 7)
	ops = append(ops,
		hal.AddOp(hal.Rule{ID: 1 << 20, Priority: 20, Match: udp, Actions: []hal.Action{hal.SetIPDst(caVM2), hal.SetL4Dst(99),
			hal.DecTTL(), hal.Count(), hal.Output(pVM2)}}),
		hal.AddOp(hal.Rule{ID: 1<<20 + 1, Priority: 20, Match: tcp6, Actions: []hal.Action{hal.SetIPSrc(pa6Loc), hal.SetL4Src(1),
			hal.EncapWith(hal.Encap{Kind: hal.EncapVXLAN, VNI: 3, Src: pa6Loc, Dst: pa6Rem}), hal.Output(pUplink)}}),
		hal.AddOp(hal.Rule{ID: 1<<20 + 2, Priority: 30, Match: vlan, Actions: []hal.Action{hal.PopVLAN(), hal.SetEthSrc(macGW), hal.Output(pVM1)}}),
		hal.AddOp(hal.Rule{ID: 1<<20 + 3, Priority: 40, Match: toHost, Actions: []hal.Action{hal.ToHost(hal.ReasonAction)}}),
		hal.AddOp(hal.Rule{ID: 1<<20 + 4, Priority: 40, Match: drop, Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}),
		// Same priority as the exact rules, lower ID than all but the
		// first: it wins over every exact rule under 198.18.0.0/20 but
		// flow 0's.
		hal.AddOp(hal.Rule{ID: 1, Priority: 100, Match: tie, Actions: []hal.Action{hal.Count(), hal.Output(pVM2)}}),
		hal.AddOp(hal.Rule{ID: 1<<20 + 5, Priority: 10, Match: tun, Actions: []hal.Action{hal.Decap(), hal.Output(pVM2)}}),
	)
	// flowRule's IDs start at 1: the tie rule takes ID 1, flow 0's is
	// moved out of the way (it keeps its key, with a higher ID).
	ops[0].Rule.ID = 1<<20 + 6
	mustApply(t, n, ops...)
	return n
}

// mixedFrames is a burst's worth (and more) of frames of every kind the
// datapath tells apart, interleaved: exact hits (with and without
// counters), frames that miss every exact rule (some caught by a masked
// rule, some by none), to-host and drop verdicts, TTL 1 under dec_ttl,
// IPv6, VLAN-tagged, VXLAN-tunnelled (a VNI with a rule and one without),
// and malformed frames (truncated, a bad IPv4 checksum, too short for
// Ethernet).
func mixedFrames(t testing.TB, exact int, count int) [][]byte {
	t.Helper()
	var out [][]byte
	inner := wire.Build(wire.FrameSpec{SrcMAC: macGW, DstMAC: macVM2, Src: caRem, Dst: caVM2, Proto: hal.ProtoUDP,
		SrcPort: 1, DstPort: 2, Payload: []byte("inner")})
	for i := 0; len(out) < count; i++ {
		var f []byte
		switch i % 16 {
		case 0, 1, 2, 3, 4, 5:
			f = make([]byte, benchFrameLen)
			writeFlowFrame(f, (i*7919)%exact) // an exact hit
		case 6:
			f = make([]byte, benchFrameLen)
			writeFlowFrame(f, exact+i) // no exact rule: the masked UDP rule
		case 7:
			f = udp4(caVM1, netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 32)}), 7, 8, 10) // to host or dropped
		case 8:
			f = udp4(caVM1, netip.MustParseAddr("192.0.2.9"), uint16(i), 9, 3) // a miss
		case 9:
			f = wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: pa6Rem, Dst: pa6Loc, Proto: hal.ProtoTCP,
				SrcPort: uint16(i), DstPort: 443, Payload: []byte("six")})
		case 10:
			f = wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, VLAN: 5, Src: caVM1, Dst: caRem,
				Proto: hal.ProtoTCP, SrcPort: uint16(i), DstPort: 4})
		case 11:
			e := hal.Encap{Kind: hal.EncapVXLAN, VNI: 7 + uint32(i%2), Src: paRem, Dst: paLocal}
			f = wire.BuildEncap(&e, inner)
		case 12:
			f = make([]byte, benchFrameLen)
			writeFlowFrame(f, (i*31)%exact)
			f = f[:30] // truncated inside the IPv4 header
		case 13:
			f = make([]byte, benchFrameLen)
			writeFlowFrame(f, (i*31)%exact)
			f[24] ^= 0xff // bad IPv4 header checksum: not parseFast's
		case 14:
			f = []byte{1, 2, 3}
		case 15:
			f = wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: caVM1, Dst: caRem, Proto: hal.ProtoUDP,
				SrcPort: 5, DstPort: 6, TTL: 1}) // dec_ttl on TTL 1: to the host
		}
		out = append(out, f)
	}
	return out
}

// TestBurstSameAsOneByOne: a mixed burst through the staged lookup (every
// frame's bucket and entry fetched before any is compared) gives every
// frame the verdict it gets alone, in a burst of one: the same frames out
// of each port in the same order, the same exceptions (frame, reason,
// rule, VNI), the same drop and exception counts and rule counters.
func TestBurstSameAsOneByOne(t *testing.T) {
	const exact = 3000
	for _, in := range []hal.PortID{pVM1, pUplink} {
		for _, count := range []int{MaxBurst, 3*MaxBurst + 17} {
			t.Run(fmt.Sprintf("port%d/%d", in, count), func(t *testing.T) {
				frames := mixedFrames(t, exact, count)
				burst, single := burstNIC(t, exact), burstNIC(t, exact)
				send(t, burst, in, frames...)
				for _, f := range frames {
					send(t, single, in, f)
				}
				for _, p := range []hal.PortID{pVM1, pVM2, pUplink} {
					got, want := recvAll(t, burst, p), recvAll(t, single, p)
					if len(got) != len(want) {
						t.Fatalf("port %d: %d frames in a burst, %d one by one", p, len(got), len(want))
					}
					for i := range got {
						if !bytes.Equal(got[i], want[i]) {
							t.Fatalf("port %d frame %d:\nburst  % x\nsingle % x", p, i, got[i], want[i])
						}
					}
				}
				ge, we := readExc(t, burst), readExc(t, single)
				if len(ge) != len(we) {
					t.Fatalf("%d exceptions in a burst, %d one by one", len(ge), len(we))
				}
				for i := range ge {
					g, w := &ge[i], &we[i]
					if g.Reason != w.Reason || g.Rule != w.Rule || g.VNI != w.VNI || g.InPort != w.InPort ||
						!bytes.Equal(g.Frame(), w.Frame()) {
						t.Fatalf("exception %d: burst %v rule %d vni %d, single %v rule %d vni %d",
							i, g.Reason, g.Rule, g.VNI, w.Reason, w.Rule, w.VNI)
					}
				}
				if gs, ws := stats(t, burst), stats(t, single); gs != ws {
					t.Fatalf("stats: burst %+v, single %+v", gs, ws)
				}
				ids := []hal.RuleID{1, 1 << 20, 1<<20 + 6}
				for f := 5; f < exact; f += 5 {
					ids = append(ids, hal.RuleID(f+1))
				}
				gc, wc := make([]hal.Counters, len(ids)), make([]hal.Counters, len(ids))
				ctx := context.Background()
				if err := burst.RuleCounters(ctx, ids, gc); err != nil {
					t.Fatal(err)
				}
				if err := single.RuleCounters(ctx, ids, wc); err != nil {
					t.Fatal(err)
				}
				var hits uint64
				for i := range ids {
					if gc[i] != wc[i] {
						t.Fatalf("rule %d counters: burst %+v, single %+v", ids[i], gc[i], wc[i])
					}
					hits += gc[i].Packets
				}
				// The mix reached what it is meant to: exact hits that
				// count, misses, exceptions and drops of several kinds.
				s := stats(t, burst)
				if in == pVM1 && (hits == 0 || s.Exceptions[hal.ReasonMiss] == 0 || s.Exceptions[hal.ReasonTTL] == 0 ||
					s.Drops[hal.ReasonMalformed] == 0 || s.Exceptions[hal.ReasonAction] == 0) {
					t.Fatalf("the mix missed a case: counted hits %d, stats %+v", hits, s)
				}
			})
		}
	}
}

// TestEncapProgramLayout: an encapsulating program's template lies
// tmplOffset bytes after the program, where compare prefetches it from the
// program's address alone; a program without an encapsulation has none.
// Every program's fields that the datapath reads (progHotBytes) lie in
// one cache line, and a template starts on a line of its own, so that a
// VXLAN-over-IPv4 hit reads two lines of program: what the allocator does
// with the sizes program.go gives (mallocHeader) is checked here, on many
// programs.
func TestEncapProgramLayout(t *testing.T) {
	n := newNIC(t)
	oneLine := func(what string, p unsafe.Pointer, size uintptr) {
		t.Helper()
		if a := uintptr(p); a>>6 != (a+size-1)>>6 {
			t.Fatalf("%s at %#x (%d bytes) crosses a cache line", what, a, size)
		}
	}
	for i := range remoteActions {
		p, err := n.compile(remoteActions[i], -1)
		if err != nil {
			t.Fatal(err)
		}
		if p.encap == nil || uintptr(unsafe.Pointer(p.encap)) != uintptr(unsafe.Pointer(p))+tmplOffset {
			t.Fatalf("template at %p, program at %p, want it %d bytes after", p.encap, p, tmplOffset)
		}
		if got, want := p.encap.Encap(), remoteActions[i][0].Encap; got.Dst != want.Dst || got.VNI != want.VNI || int(p.encapLen) != p.encap.Len() {
			t.Fatalf("template of %+v, want %+v", got, want)
		}
		oneLine("an encapsulating program's hot fields", unsafe.Pointer(p), progHotBytes)
		oneLine("a VXLAN-over-IPv4 template's fields and headers", unsafe.Pointer(p.encap), wire.EncapHotFields+uintptr(p.encapLen))
		if uintptr(unsafe.Pointer(p.encap))&63 != 0 {
			t.Fatalf("template at %p, not on a cache line boundary", p.encap)
		}
		if p.encapTail {
			t.Fatal("a VXLAN-over-IPv4 template's headers marked as running past its first line")
		}
		q, err := n.compile([]hal.Action{hal.SetEthDst(macVM2), hal.Output(pVM2)}, -1)
		if err != nil {
			t.Fatal(err)
		}
		if q.encap != nil {
			t.Fatal("a program without an encapsulation has a template")
		}
		oneLine("a program's hot fields", unsafe.Pointer(q), progHotBytes)
	}
	// Until a program with a tail is compiled, the execute pass does not
	// look for one (NIC.encapTails).
	if n.encapTails.Load() {
		t.Fatal("encapTails set with VXLAN-over-IPv4 programs only")
	}
	// Outer IPv6 headers run on past the template's first line: the
	// execute pass asks for their last line (encapTail).
	for _, kind := range []hal.EncapKind{hal.EncapVXLAN, hal.EncapGeneve, hal.EncapNVGRE} {
		p, err := n.compile([]hal.Action{
			hal.EncapWith(hal.Encap{Kind: kind, VNI: 5000, Src: pa6Loc, Dst: pa6Rem, SrcMAC: macUp, DstMAC: macNext}),
			hal.Output(pUplink)}, -1)
		if err != nil {
			t.Fatal(err)
		}
		a, last := uintptr(unsafe.Pointer(p.encap)), p.encapLastLine()
		if !p.encapTail || last>>6 == a>>6 || last != a+wire.EncapHotFields+uintptr(p.encap.Len())-1 {
			t.Fatalf("%v over IPv6: template at %#x, headers' last byte at %#x, encapTail %v", kind, a, last, p.encapTail)
		}
		if !n.encapTails.Load() {
			t.Fatalf("%v over IPv6 compiled, encapTails not set", kind)
		}
	}
}
