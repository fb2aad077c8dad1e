package conformance

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nicpath/nicpath/hal"
)

func init() {
	register("exception", "misses, fragments and sealed frames reach the host with the right reason, in-port and VNI; Inject sends frames out unchanged", caseException)
	register("generations", "Activate switches a scope's live rules in one step: before, after and while traffic flows, no frame sees a mix", caseGenerations)
	register("malformed", "truncated and inconsistent frames never reach a port, are counted, and do no harm", caseMalformed)
	register("sealed", "sealed-address frames the NIC cannot open never reach a port; a crypto NIC exposes its key", caseSealed)
}

func caseException(t T, tg *Target) {
	t.Run("miss", func(t T) {
		e := open(t, tg)
		if !e.caps.ExceptionPath {
			e.send(e.in, build(udpSpec()))
			e.silent()
			need(t, "exception path", "the NIC has no exception path (misses checked to go nowhere)")
		}
		before := e.stats()
		frames := [][]byte{build(udpSpec()), build(tcpSpec()), build(udp6Spec())}
		e.send(e.in, frames...)
		e.silent()
		xs := e.expectExceptions(len(frames))
		for i, x := range xs {
			if x.Reason != hal.ReasonMiss || x.InPort != e.in.ID || x.Rule != 0 || x.VNI != 0 || x.Truncated {
				t.Errorf("miss %d: reason %v in-port %d rule %d vni %d truncated %v; want miss, %d, 0, 0, false",
					i, x.Reason, x.InPort, x.Rule, x.VNI, x.Truncated, e.in.ID)
			}
			if !bytes.Equal(x.Frame(), frames[i]) {
				t.Errorf("miss %d: frame differs from the one sent (or the order changed)", i)
			}
		}
		if d := e.stats().Exceptions[hal.ReasonMiss] - before.Exceptions[hal.ReasonMiss]; d != uint64(len(frames)) {
			t.Errorf("Stats.Exceptions[miss] went up by %d for %d misses", d, len(frames))
		}
		if e.caps.Counters.PerPort {
			ctx, cancel := e.ctx()
			defer cancel()
			pc, err := e.nic.PortCounters(ctx, e.in.ID)
			if err != nil {
				t.Fatalf("PortCounters: %v", err)
			}
			if pc.Exceptions != uint64(len(frames)) {
				t.Errorf("port %d counts %d exceptions, want %d", e.in.ID, pc.Exceptions, len(frames))
			}
		}
	})
	t.Run("truncated-buffer", func(t T) {
		e := open(t, tg)
		if !e.caps.ExceptionPath {
			need(t, "exception path", "a truncated exception needs the exception path")
		}
		f := build(udpSpec())
		e.send(e.in, f)
		ctx, cancel := e.ctx()
		defer cancel()
		batch := []hal.Exception{{Buf: make([]byte, 32)}}
		n, err := e.nic.ReadExceptions(ctx, batch)
		if err != nil || n != 1 {
			t.Fatalf("ReadExceptions: %d, %v", n, err)
		}
		x := batch[0]
		if !x.Truncated || x.Len != 32 || !bytes.Equal(x.Frame(), f[:32]) {
			t.Errorf("a %d-byte frame in a 32-byte buffer: truncated %v len %d; want true, 32, the frame's first 32 bytes", len(f), x.Truncated, x.Len)
		}
	})
	t.Run("inject", func(t T) {
		e := open(t, tg)
		for _, p := range []hal.Port{e.out, e.in} {
			frames := [][]byte{build(udpSpec()), build(tcpSpec())}
			ctx, cancel := e.ctx()
			err := e.nic.Inject(ctx, p.ID, frames)
			cancel()
			if err != nil {
				t.Fatalf("Inject on port %d: %v", p.ID, err)
			}
			got := e.expect(p, len(frames))
			for i := range got {
				if !bytes.Equal(got[i], frames[i]) {
					t.Errorf("port %d: injected frame %d came out changed:\n got % x\nwant % x", p.ID, i, got[i], frames[i])
				}
			}
		}
		ctx, cancel := e.ctx()
		defer cancel()
		if err := e.nic.Inject(ctx, 0xfffffff0, [][]byte{build(udpSpec())}); !errors.Is(err, hal.ErrNotFound) {
			t.Errorf("Inject on a port the NIC lacks: %v, want ErrNotFound", err)
		}
	})
	t.Run("fragment", func(t T) {
		e := open(t, tg)
		var m hal.Match
		m.EthType(hal.EtherTypeIPv4).Proto(hal.ProtoUDP).L4Dst(7000)
		if missing := m.Fields() &^ e.caps.MatchFields; missing != 0 {
			need(t, matchNeed(missing), "a fragment is told apart by a rule on its L4 port")
		}
		e.add(e.rule(100, m, hal.Output(e.out.ID)))
		// A non-first fragment carries no UDP header: the NIC cannot know its
		// ports, so it must not forward it by a port rule.
		frag := build(udpSpec())
		ip := frag[14:]
		binary.BigEndian.PutUint16(ip[6:], 185) // offset 185*8, MF clear
		fixIPv4Checksum(ip)
		e.send(e.in, frag)
		e.silent()
		if e.caps.ExceptionPath {
			x := e.expectExceptions(1)[0]
			if x.Reason != hal.ReasonFragment {
				t.Errorf("a non-first fragment reached the host with reason %v, want fragment", x.Reason)
			}
		}
	})
}

func fixIPv4Checksum(ip []byte) {
	ip[10], ip[11] = 0, 0
	ihl := int(ip[0]&0x0f) * 4
	if ihl > len(ip) || ihl < 20 {
		ihl = 20
	}
	binary.BigEndian.PutUint16(ip[10:], ^csumFold(csumAdd(0, ip[:ihl])))
}

// genActions returns two action lists that rewrite two header fields
// differently, so that a frame processed half by one generation and half by
// the other is recognisable: set_eth_src and set_eth_dst, or set_eth_dst
// and an encapsulation. It skips the case when the NIC has neither.
func (e *env) genActions() (a, b []hal.Action) {
	e.t.Helper()
	switch {
	case e.caps.HasAction(hal.ActionSetEthSrc) && e.caps.HasAction(hal.ActionSetEthDst):
		return []hal.Action{hal.SetEthSrc(macX), hal.SetEthDst(macX), hal.Output(e.out.ID)},
			[]hal.Action{hal.SetEthSrc(macY), hal.SetEthDst(macY), hal.Output(e.out.ID)}
	case e.caps.HasAction(hal.ActionSetEthDst) && e.caps.Encaps != 0:
		ea, eb := encapFor(e.firstEncap(), false), encapFor(e.firstEncap(), false)
		ea.VNI, eb.VNI = 100, 200
		return []hal.Action{hal.SetEthDst(macX), hal.EncapWith(ea), hal.Output(e.out.ID)},
			[]hal.Action{hal.SetEthDst(macY), hal.EncapWith(eb), hal.Output(e.out.ID)}
	case !e.caps.HasAction(hal.ActionSetEthDst):
		need(e.t, "action set_eth_dst", "generations are told apart by the MACs their rules write")
	default:
		need(e.t, "action set_eth_src", "generations are told apart by the MACs their rules write (or set_eth_dst and an encapsulation)")
	}
	return nil, nil
}

func (e *env) firstEncap() hal.EncapKind {
	for _, k := range allEncaps {
		if e.caps.Encaps.Has(k) {
			return k
		}
	}
	return hal.EncapNone
}

// generationOf says which of the two action lists produced frame: 'A', 'B',
// or 0 for a mix or something else.
func generationOf(frame []byte) (byte, string) {
	d, err := decode(frame)
	if err != nil {
		return 0, err.Error()
	}
	src, dst := macOf(d.eth.SrcMAC), macOf(d.eth.DstMAC)
	if d.inner != nil {
		inner, err := decode(d.inner)
		if err != nil {
			return 0, err.Error()
		}
		dst = macOf(inner.eth.DstMAC)
		var vni uint32
		switch {
		case d.vxlan != nil:
			vni = d.vxlan.VNI
		case d.geneve != nil:
			vni = d.geneve.VNI
		case d.gre != nil:
			vni = d.gre.Key >> 8
		}
		switch {
		case dst == macX && vni == 100:
			return 'A', ""
		case dst == macY && vni == 200:
			return 'B', ""
		}
		return 0, "inner dst " + dst.String() + " with VNI " + itoa(vni)
	}
	switch {
	case src == macX && dst == macX:
		return 'A', ""
	case src == macY && dst == macY:
		return 'B', ""
	}
	return 0, "src " + src.String() + " dst " + dst.String()
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func caseGenerations(t T, tg *Target) {
	t.Run("switch", func(t T) {
		e := open(t, tg)
		base := e.baseMatch(0, 0)
		if !e.caps.Generations {
			r := e.rule(100, base, hal.Output(e.out.ID))
			r.Scope, r.Generation = 7, 1
			e.refused(r, "generations")
			ctx, cancel := e.ctx()
			defer cancel()
			if err := e.nic.Activate(ctx, 7, 1); !errors.Is(err, hal.ErrNotSupported) {
				t.Errorf("Activate on a NIC without generations: %v, want ErrNotSupported", err)
			}
			return
		}
		a, b := e.genActions()
		ra := e.rule(100, base, a...)
		ra.Scope, ra.Generation = 7, 0
		rb := e.rule(100, base, b...)
		rb.Scope, rb.Generation = 7, 1
		e.add(ra, rb)
		f := build(udpSpec())
		check := func(want byte) {
			t.Helper()
			e.send(e.in, f)
			if g, why := generationOf(e.expect(e.out, 1)[0]); g != want {
				t.Errorf("frame from generation %q (%s), want %q", g, why, want)
			}
			d := e.dump()
			if d[ra.ID].Live != (want == 'A') || d[rb.ID].Live != (want == 'B') {
				t.Errorf("Dump: live %v/%v with generation %c active", d[ra.ID].Live, d[rb.ID].Live, want)
			}
		}
		check('A')
		e.activate(7, 1)
		if g, err := e.nic.ActiveGeneration(7); g != 1 || err != nil {
			t.Errorf("ActiveGeneration = %d, %v after Activate(7, 1)", g, err)
		}
		check('B')
		e.activate(7, 0)
		check('A')
		// A generation with no rules: the scope's rules stop matching.
		e.activate(7, 9)
		e.send(e.in, f)
		e.silent()
	})
	t.Run("atomic", func(t T) {
		e := open(t, tg)
		if !e.caps.Generations {
			need(t, "generations", "the NIC has no generations")
		}
		base := e.baseMatch(0, 0)
		a, b := e.genActions()
		ra := e.rule(100, base, a...)
		ra.Scope, ra.Generation = 3, 1
		rb := e.rule(100, base, b...)
		rb.Scope, rb.Generation = 3, 2
		e.add(ra, rb)
		e.activate(3, 1)
		seen := checkNoMix(t, e, func(i int) {
			e.activate(3, hal.Generation(1+i%2))
		})
		if seen['A'] == 0 || seen['B'] == 0 {
			t.Logf("only saw generations %v: the switches did not overlap traffic this time", seen)
		}
	})
	t.Run("modify-atomic", func(t T) {
		// Modify replaces a rule in one step as well.
		e := open(t, tg)
		base := e.baseMatch(0, 0)
		a, b := e.genActions()
		r := e.rule(100, base, a...)
		e.add(r)
		checkNoMix(t, e, func(i int) {
			m := r
			if i%2 == 0 {
				m.Actions = b
			}
			if _, err := e.apply(hal.ModifyOp(m)); err != nil {
				t.Errorf("modify: %v", err)
			}
		})
	})
}

// checkNoMix sends frames from one goroutine while flip runs 40 times in
// another, and checks that every frame that came out is wholly A or B.
func checkNoMix(t T, e *env, flip func(i int)) map[byte]int {
	f := build(udpSpec())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var frames [][]byte
	sent := 0
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := e.h.Send(e.in.ID, f, f, f, f); err != nil {
				t.Errorf("send: %v", err)
				return
			}
			mu.Lock()
			sent += 4
			mu.Unlock()
			time.Sleep(200 * time.Microsecond)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			// Not e.recv: it may call Fatalf, which must not run on this
			// goroutine.
			ctx, cancel := context.WithTimeout(e.t.Context(), e.tg.quiet())
			got, err := e.h.Recv(ctx, e.out.ID, 64)
			cancel()
			if err != nil {
				t.Errorf("receiving: %v", err)
				return
			}
			mu.Lock()
			for _, f := range got {
				if ours(f) {
					frames = append(frames, f)
				}
			}
			mu.Unlock()
			select {
			case <-stop:
				if len(got) == 0 {
					return
				}
			default:
			}
		}
	}()
	for i := 0; i < 40; i++ {
		flip(i)
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	seen := map[byte]int{}
	bad := 0
	for _, fr := range frames {
		g, why := generationOf(fr)
		seen[g]++
		if g == 0 {
			if bad++; bad <= 3 {
				t.Errorf("a frame saw a mix of generations: %s", why)
			}
		}
	}
	t.Logf("sent %d frames, received %d: %d from A, %d from B, %d mixed", sent, len(frames), seen['A'], seen['B'], bad)
	if len(frames) == 0 {
		t.Errorf("no frame came out while switching")
	}
	return seen
}

// malformedFrames derives broken frames from a good UDP/IPv4 frame.
func malformedFrames() [][]byte {
	good := build(udpSpec())
	var out [][]byte
	for n := 1; n < len(good); n++ {
		out = append(out, append([]byte(nil), good[:n]...))
	}
	mut := func(f func(ip []byte), fix bool) {
		b := append([]byte(nil), good...)
		f(b[14:])
		if fix {
			fixIPv4Checksum(b[14:])
		}
		out = append(out, b)
	}
	mut(func(ip []byte) { ip[0] = 0x44 }, true)                               // IHL 4: shorter than a header
	mut(func(ip []byte) { ip[0] = 0x4f }, true)                               // IHL 15: longer than the frame's IP part allows for UDP
	mut(func(ip []byte) { ip[0] = 0x65 }, true)                               // version 6 under EtherType IPv4
	mut(func(ip []byte) { binary.BigEndian.PutUint16(ip[2:], 1500) }, true)   // total length beyond the frame
	mut(func(ip []byte) { binary.BigEndian.PutUint16(ip[2:], 12) }, true)     // total length below the header
	mut(func(ip []byte) { binary.BigEndian.PutUint16(ip[20+4:], 200) }, true) // UDP length beyond the packet
	mut(func(ip []byte) { binary.BigEndian.PutUint16(ip[20+4:], 4) }, true)   // UDP length below its header
	// A VLAN tag cut short.
	tagged := udpSpec()
	tagged.VLAN = 100
	out = append(out, build(tagged)[:16])
	// IPv6 with a payload length beyond the frame.
	v6 := build(udp6Spec())
	binary.BigEndian.PutUint16(v6[14+4:], 1400)
	out = append(out, v6)
	return out
}

func caseMalformed(t T, tg *Target) {
	t.Run("vport", func(t T) {
		e := open(t, tg)
		r := e.rule(100, e.baseMatch(0, 0), hal.Output(e.out.ID))
		e.add(r)
		good := build(udpSpec())
		e.send(e.in, good)
		e.expect(e.out, 1)
		bad := e.sendable(malformedFrames())
		before := e.stats()
		e.send(e.in, bad...)
		e.silent()
		checkMalformedCounted(t, e, before, len(bad))
		// No harm done: the NIC still forwards.
		e.send(e.in, good)
		e.expect(e.out, 1)
	})
	t.Run("tunnelled", func(t T) {
		e := open(t, tg)
		if e.caps.Decaps == 0 {
			need(t, "action decap", "the NIC decapsulates nothing")
		}
		kind := e.tunnelKind()
		vp := e.vport()
		up := e.tunnelPort()
		var m hal.Match
		m.Tunnel(kind, 100)
		e.add(e.rule(100, m, hal.Decap(), hal.Output(vp.ID)))
		good := encapsulate(defaultTunnel(kind, 100), build(udpSpec()))
		var bad [][]byte
		// Cut inside the outer headers and the tunnel header, and inside the
		// inner frame's headers.
		for n := 15; n < len(good)-len(udpSpec().Payload)-8; n += 3 {
			bad = append(bad, append([]byte(nil), good[:n]...))
		}
		bad = e.sendable(bad)
		before := e.stats()
		e.send(up, bad...)
		e.silent()
		checkMalformedCounted(t, e, before, len(bad))
		e.send(up, good)
		e.expect(vp, 1)
	})
}

// checkMalformedCounted drains the exception path and checks that every
// broken frame was either dropped or handed to the host, and counted.
func checkMalformedCounted(t T, e *env, before hal.Stats, n int) {
	t.Helper()
	if e.caps.ExceptionPath {
		for _, x := range e.exceptions(n, e.tg.quiet()*3) {
			if x.Reason != hal.ReasonMalformed && x.Reason != hal.ReasonUnsupported {
				t.Errorf("a malformed frame reached the host with reason %v (% x)", x.Reason, x.Frame())
			}
		}
	}
	after := e.stats()
	var counted uint64
	for r := hal.Reason(0); r < hal.NumReasons; r++ {
		counted += after.Drops[r] - before.Drops[r] + after.Exceptions[r] - before.Exceptions[r]
	}
	if counted < uint64(n) {
		t.Errorf("%d malformed frames sent, %d counted as drops or exceptions", n, counted)
	}
	t.Logf("%d malformed frames: %d counted; drops[malformed] +%d, exceptions[malformed] +%d", n, counted,
		after.Drops[hal.ReasonMalformed]-before.Drops[hal.ReasonMalformed], after.Exceptions[hal.ReasonMalformed]-before.Exceptions[hal.ReasonMalformed])
}

func caseSealed(t T, tg *Target) {
	e := open(t, tg)
	if e.caps.Crypto {
		sa, ok := e.nic.(hal.SealedAddresses)
		if !ok {
			t.Fatalf("Crypto is advertised, but the NIC does not implement hal.SealedAddresses")
		}
		if sa.SealPublicKey() == ([32]byte{}) {
			t.Errorf("SealPublicKey is all zero")
		}
	}
	// A sealed frame from a VM whose key the NIC does not know: with or
	// without crypto, the NIC cannot open it and must not forward it.
	if e.caps.HasMatch(hal.MatchInPort) {
		e.add(e.rule(100, e.baseMatch(0, 0), hal.Output(e.out.ID)))
	}
	f := build(frameSpec{Src: macA, Dst: macGW, EtherType: hal.EtherTypeSealed, Payload: bytes.Repeat([]byte{0x5e}, 80)})
	before := e.stats()
	e.send(e.in, f)
	e.silent()
	if e.caps.ExceptionPath {
		for _, x := range e.exceptions(1, e.tg.quiet()*2) {
			if x.Reason != hal.ReasonSealed {
				t.Errorf("an unopenable sealed frame reached the host with reason %v, want sealed", x.Reason)
			} else if e.caps.SealedDrop {
				t.Errorf("SealedDrop is advertised, but an unopenable sealed frame reached the host")
			}
		}
	}
	after := e.stats()
	if e.caps.SealedDrop && after.Drops[hal.ReasonSealed] == before.Drops[hal.ReasonSealed] {
		t.Errorf("SealedDrop is advertised, but the NIC counted no drop under reason sealed")
	}
	if after.Drops[hal.ReasonSealed]+after.Exceptions[hal.ReasonSealed] == before.Drops[hal.ReasonSealed]+before.Exceptions[hal.ReasonSealed] {
		t.Errorf("an unopenable sealed frame was not counted under reason sealed")
	}
}

// sendable leaves out the frames the harness cannot send (see
// Target.MinFrame) and says how many.
func (e *env) sendable(frames [][]byte) [][]byte {
	if e.tg.MinFrame <= 0 {
		return frames
	}
	var out [][]byte
	for _, f := range frames {
		if len(f) >= e.tg.MinFrame {
			out = append(out, f)
		}
	}
	if n := len(frames) - len(out); n > 0 {
		e.t.Logf("the harness cannot send frames shorter than %d bytes: %d of %d malformed frames left out", e.tg.MinFrame, n, len(frames))
	}
	return out
}
