package softnic

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/internal/testclock"
	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/securechan/sealtest"
)

const testGrace = 10 * time.Second

// cryptoNIC is the test NIC with sealed addresses, a fixed clock and the
// grace testGrace.
func cryptoNIC(t testing.TB) (*NIC, *testclock.Clock) {
	clk := testclock.New(time.Unix(1_700_000_000, 0))
	n := newNIC(t, func(c *Config) {
		c.Crypto = true
		c.SealRotationGrace = testGrace
		c.SealClock = clk.Now
	})
	return n, clk
}

// vmSealer registers a fresh VM key for port under keyID and returns the
// VM's sealer.
func vmSealer(t testing.TB, n *NIC, port hal.PortID, keyID uint8) *securechan.Sealer {
	t.Helper()
	pub, priv, err := securechan.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.RegisterSealKey(context.Background(), port, keyID, pub); err != nil {
		t.Fatal(err)
	}
	s, err := securechan.NewSealer(priv, n.SealPublicKey(), keyID, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func seal(t testing.TB, s *securechan.Sealer, frame []byte) []byte {
	t.Helper()
	f, err := s.SealFrame(nil, frame)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// sealedExceptionsClean reads every exception and fails if one reveals
// any of the secrets.
func sealedExceptionsClean(t *testing.T, n *NIC, secrets ...sealtest.Secret) []hal.Exception {
	t.Helper()
	exc := readExc(t, n)
	for _, e := range exc {
		for _, s := range secrets {
			if leak := sealtest.FindLeak(e.Frame(), s); leak != "" {
				t.Fatalf("exception (%v) reveals %v: %s", e.Reason, s.IP, leak)
			}
		}
	}
	return exc
}

func TestSealedCapability(t *testing.T) {
	plain := newNIC(t)
	if plain.Capabilities().Crypto {
		t.Fatal("Crypto reported without Config.Crypto")
	}
	if err := plain.RegisterSealKey(context.Background(), pVM1, 1, [32]byte{9}); !errors.Is(err, hal.ErrNotSupported) {
		t.Fatalf("RegisterSealKey without crypto: %v", err)
	}
	if plain.SealPublicKey() != ([32]byte{}) {
		t.Fatal("a NIC without crypto has a sealing key")
	}
	priv := securechan.PrivateKey{1, 2, 3}
	n := newNIC(t, func(c *Config) { c.Crypto, c.SealKey = true, &priv })
	if !n.Capabilities().Crypto {
		t.Fatal("Crypto not reported")
	}
	if n.SealPublicKey() != priv.Public() {
		t.Fatal("SealPublicKey is not the configured key's public half")
	}
	ctx := context.Background()
	if err := n.RegisterSealKey(ctx, pUplink, 1, [32]byte{9}); err == nil {
		t.Fatal("a key was registered on the uplink")
	}
	if err := n.RegisterSealKey(ctx, 42, 1, [32]byte{9}); !errors.Is(err, hal.ErrNotFound) {
		t.Fatalf("unknown port: %v", err)
	}
	pub, _, _ := securechan.GenerateKey(nil)
	// Over the channel: a registration message, then its revocation.
	ack := n.HandleKeyMessage(ctx, &securechan.Message{Type: securechan.MsgKeyRegister, Seq: 7, Vport: uint32(pVM1), KeyID: 3, Key: pub})
	if ack.Type != securechan.MsgAck || ack.AckSeq != 7 || ack.Status != securechan.AckOK {
		t.Fatalf("register ack %+v", ack)
	}
	if k := n.SealKeys(pVM1); len(k) != 1 || k[0].KeyID != 3 || k[0].Public != pub {
		t.Fatalf("keys %+v", k)
	}
	if ack := n.HandleKeyMessage(ctx, &securechan.Message{Type: securechan.MsgKeyRegister, Seq: 8, Vport: uint32(pUplink), KeyID: 3, Key: pub}); ack.Status != securechan.AckRefused {
		t.Fatalf("uplink registration ack %+v", ack)
	}
	if ack := n.HandleKeyMessage(ctx, &securechan.Message{Type: securechan.MsgKeyRevoke, Seq: 9, Vport: uint32(pVM1), KeyID: 3}); ack.Status != securechan.AckOK {
		t.Fatalf("revoke ack %+v", ack)
	}
	if k := n.SealKeys(pVM1); len(k) != 0 {
		t.Fatalf("keys after revoke %+v", k)
	}
	_ = n.Close()
	if err := n.RegisterSealKey(ctx, pVM1, 1, pub); !errors.Is(err, hal.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestSealedRoute: a sealed frame is opened on the NIC and routed like the
// frame the VM sealed: encapsulated toward the remote PA, or delivered to
// the local VM, with the clear destination and correct checksums.
func TestSealedRoute(t *testing.T) {
	n, _ := cryptoNIC(t)
	s := vmSealer(t, n, pVM1, 1)
	var local hal.Match
	local.InPort(pVM1).IPDst(netip.PrefixFrom(caVM2, 32))
	mustApply(t, n,
		hal.AddOp(dstRule(1, caRem, vxlanTo(paRem, 77), hal.Count())),
		hal.AddOp(hal.Rule{ID: 2, Priority: 10, Match: local, Actions: []hal.Action{hal.SetEthDst(macVM2), hal.Output(pVM2)}}),
	)
	remoteFrame := udp4(caVM1, caRem, 1000, 53, 40)
	localFrame := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: caVM1, Dst: caVM2, Proto: hal.ProtoTCP,
		SrcPort: 4000, DstPort: 80, Payload: []byte("hello")})
	sealedRemote, sealedLocal := seal(t, s, remoteFrame), seal(t, s, localFrame)
	if sealtest.FindLeak(sealedRemote, sealtest.Secret{IP: caRem}) != "" {
		t.Fatal("the sealed frame itself carries the destination")
	}
	send(t, n, pVM1, sealedRemote, sealedLocal)

	up := recvAll(t, n, pUplink)
	if len(up) != 1 {
		t.Fatalf("%d frames on the uplink", len(up))
	}
	k, l := parse(t, up[0])
	if k.TunKind != hal.EncapVXLAN || k.VNI != 77 || hal.AddrFrom16(k.TunDst) != paRem {
		t.Fatalf("outer headers: %+v", k)
	}
	if inner := up[0][l.L2:]; !bytes.Equal(inner, remoteFrame) {
		t.Fatalf("inner frame differs from the one the VM sealed:\n got % x\nwant % x", inner, remoteFrame)
	}
	vm2 := recvAll(t, n, pVM2)
	if len(vm2) != 1 {
		t.Fatalf("%d frames at vm2", len(vm2))
	}
	want := append([]byte(nil), localFrame...)
	copy(want[0:6], macVM2[:])
	if !bytes.Equal(vm2[0], want) {
		t.Fatalf("local delivery:\n got % x\nwant % x", vm2[0], want)
	}
	var c [1]hal.Counters
	if err := n.RuleCounters(context.Background(), []hal.RuleID{1}, c[:]); err != nil || c[0].Packets != 1 || c[0].Bytes != uint64(len(remoteFrame)) {
		t.Fatalf("rule counters %+v %v (the opened frame is what matched)", c[0], err)
	}
	if st := n.SealedStats(); st.Opened != 2 || st.NoFlow != 0 {
		t.Fatalf("sealed stats %+v", st)
	}
	if len(readExc(t, n)) != 0 {
		t.Fatal("a routed sealed frame reached the host")
	}
}

// TestSealedNoHost: whatever would send an opened frame to the host (a
// miss, a ToHost rule, TTL, MTU) drops it, counted; nothing of it reaches
// the exception path, while ordinary frames of the same cases still do.
func TestSealedNoHost(t *testing.T) {
	n, _ := cryptoNIC(t)
	s := vmSealer(t, n, pVM1, 1)
	toHost := netip.MustParseAddr("198.18.30.1")
	ttlDst := netip.MustParseAddr("198.18.30.2")
	missDst := netip.MustParseAddr("198.18.30.3")
	var mh, mt hal.Match
	mh.InPort(pVM1).IPDst(netip.PrefixFrom(toHost, 32))
	mt.InPort(pVM1).IPDst(netip.PrefixFrom(ttlDst, 32))
	mustApply(t, n,
		hal.AddOp(hal.Rule{ID: 1, Priority: 10, Match: mh, Actions: []hal.Action{hal.ToHost(hal.ReasonAction)}}),
		hal.AddOp(hal.Rule{ID: 2, Priority: 10, Match: mt, Actions: []hal.Action{hal.DecTTL(), hal.Output(pVM2)}}),
	)
	ttl1 := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: caVM1, Dst: ttlDst, Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2, TTL: 1})
	clearFrames := [][]byte{udp4(caVM1, missDst, 1, 2, 10), udp4(caVM1, toHost, 1, 2, 10), ttl1}
	var sealed [][]byte
	for _, f := range clearFrames {
		sealed = append(sealed, seal(t, s, f))
	}
	send(t, n, pVM1, sealed...)
	secrets := []sealtest.Secret{{IP: missDst, MAC: macGW}, {IP: toHost}, {IP: ttlDst}}
	if exc := sealedExceptionsClean(t, n, secrets...); len(exc) != 0 {
		t.Fatalf("%d sealed frames reached the host", len(exc))
	}
	if out := recvAll(t, n, pVM2); len(out) != 0 {
		t.Fatal("a TTL-expired frame was forwarded")
	}
	st := stats(t, n)
	if st.Drops[hal.ReasonSealed] != 3 {
		t.Fatalf("sealed drops %d", st.Drops[hal.ReasonSealed])
	}
	if ss := n.SealedStats(); ss.Opened != 3 || ss.NoFlow != 3 {
		t.Fatalf("sealed stats %+v", ss)
	}
	// The same frames unsealed take the exception path as usual.
	send(t, n, pVM1, clearFrames...)
	if exc := readExc(t, n); len(exc) != 3 {
		t.Fatalf("%d unsealed exceptions", len(exc))
	}
}

// TestSealedRefused: frames that cannot be opened are dropped and counted
// by reason, never routed, never handed to the host.
func TestSealedRefused(t *testing.T) {
	n, _ := cryptoNIC(t)
	s := vmSealer(t, n, pVM1, 1)
	catchAll(t, n) // a rule that would deliver anything parsed to vm2
	frame := udp4(caVM1, caRem, 1, 2, 10)
	good := seal(t, s, frame)
	tampered := append([]byte(nil), good...)
	tampered[60] ^= 1
	unknownKey := append([]byte(nil), good...)
	unknownKey[15] = 9
	short := good[:40]
	tagged := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: securechan.SealedDstMAC, VLAN: 5,
		EthType: hal.EtherTypeSealed, Payload: good[14:]})
	send(t, n, pVM1, tampered, unknownKey, short, tagged)
	send(t, n, pVM2, good) // vm2 has no key (and the frame is vm1's)
	send(t, n, pUplink, good)
	if out := recvAll(t, n, pVM2); len(out) != 0 {
		t.Fatalf("%d refused sealed frames were delivered", len(out))
	}
	if exc := sealedExceptionsClean(t, n, sealtest.Secret{IP: caRem}); len(exc) != 0 {
		t.Fatalf("%d refused sealed frames reached the host", len(exc))
	}
	ss := n.SealedStats()
	if ss.Opened != 0 || ss.Refused[securechan.DropTampered] != 1 || ss.Refused[securechan.DropUnknownKey] != 2 ||
		ss.Refused[securechan.DropTruncated] != 1 || ss.Tagged != 1 || ss.NotVPort != 1 {
		t.Fatalf("sealed stats %+v", ss)
	}
	if st := stats(t, n); st.Drops[hal.ReasonSealed] != 6 {
		t.Fatalf("sealed drops %d", st.Drops[hal.ReasonSealed])
	}
	// The good frame still opens.
	send(t, n, pVM1, good)
	if out := recvAll(t, n, pVM2); len(out) != 1 || !bytes.Equal(out[0], frame) {
		t.Fatalf("good frame after refusals: %d frames", len(out))
	}
}

// TestSealedRotation: a new key is accepted at once, the old one for the
// grace period, then refused; no frame of either is lost inside the window.
func TestSealedRotation(t *testing.T) {
	n, clk := cryptoNIC(t)
	s1 := vmSealer(t, n, pVM1, 1)
	mustApply(t, n, hal.AddOp(dstRule(1, caRem, vxlanTo(paRem, 5))))
	frame := udp4(caVM1, caRem, 1, 2, 10)
	send(t, n, pVM1, seal(t, s1, frame))
	s2 := vmSealer(t, n, pVM1, 2)
	if k := n.SealKeys(pVM1); len(k) != 2 || k[0].KeyID != 2 || k[1].KeyID != 1 || k[1].Until.IsZero() {
		t.Fatalf("keys during rotation %+v", k)
	}
	clk.Advance(testGrace - time.Second)
	send(t, n, pVM1, seal(t, s1, frame), seal(t, s2, frame), seal(t, s1, frame))
	if got := len(recvAll(t, n, pUplink)); got != 4 {
		t.Fatalf("%d of 4 frames within the window reached the uplink", got)
	}
	clk.Advance(time.Second)
	send(t, n, pVM1, seal(t, s1, frame), seal(t, s2, frame))
	if got := len(recvAll(t, n, pUplink)); got != 1 {
		t.Fatalf("after the window: %d frames out, want key 2's only", got)
	}
	if ss := n.SealedStats(); ss.Refused[securechan.DropUnknownKey] != 1 || ss.Opened != 5 {
		t.Fatalf("sealed stats %+v", ss)
	}
	// Registering sweeps the retired key away.
	vmSealer(t, n, pVM2, 1)
	if k := n.SealKeys(pVM1); len(k) != 1 || k[0].KeyID != 2 {
		t.Fatalf("keys after the window %+v", k)
	}
}

// sealedBurst builds a burst mixing sealed hits, sealed misses, sealed
// frames under an unknown key and ordinary hits, for the allocation test
// and the benchmark. installFlows must cover flows [0, 1024).
func sealedBurst(t testing.TB, s *securechan.Sealer, bufs [][]byte, sizes []int, mixed bool) {
	clearF := make([]byte, benchFrameLen)
	for i := range bufs {
		f := (i * 7) % 1024
		if mixed && (i%8 == 7 || i%16 == 5) {
			f = 5000 // no rule: sealed, dropped; clear (i%16 == 5), the host
		}
		writeFlowFrame(clearF, f)
		if mixed && i%4 == 1 {
			copy(bufs[i][Headroom:], clearF)
			sizes[i] = benchFrameLen
			continue
		}
		out, err := s.SealFrame(bufs[i][Headroom:Headroom], clearF)
		if err != nil {
			t.Fatal(err)
		}
		if mixed && i%16 == 11 {
			out[15] = 200 // unknown key id
		}
		sizes[i] = len(out)
	}
}

// sealedBed is the NIC of the sealed benchmarks and allocation tests:
// sealed addresses on, flows [0, 1024) installed, vm1's sealer, and a
// burst of buffers each with room for a sealed benchFrameLen frame.
type sealedBed struct {
	n     *NIC
	s     *securechan.Sealer
	bufs  [][]byte
	sizes []int
}

func newSealedBed(t testing.TB) *sealedBed {
	t.Helper()
	n, _ := cryptoNIC(t)
	installFlows(t, n, 1024)
	bed := &sealedBed{n: n, s: vmSealer(t, n, pVM1, 1), bufs: make([][]byte, MaxBurst), sizes: make([]int, MaxBurst)}
	for i := range bed.bufs {
		bed.bufs[i] = make([]byte, Headroom+benchFrameLen+securechan.SealedHeaderLen)
	}
	return bed
}

// routes are sealed routes from vm1 to every destination of flows
// [0, 1024), each with its flow's actions and the reply entry reply
// (none if nil).
func (bed *sealedBed) routes(reply *hal.SealedReply) []hal.SealedRoute {
	var routes []hal.SealedRoute
	seen := map[netip.Addr]bool{}
	for f := 0; f < 1024; f++ {
		k := flowKey(f)
		if d := k.Dst(); !seen[d] {
			seen[d] = true
			routes = append(routes, hal.SealedRoute{SrcMAC: macVM1, Src: caVM1, Dst: d, Actions: flowRule(f).Actions, Reply: reply})
		}
	}
	return routes
}

// keep copies bufs as they are now; the returned function puts the copies
// back (Process rewrites frames in place) and allocates nothing.
func keep(bufs [][]byte) (restore func()) {
	orig := make([][]byte, len(bufs))
	for i := range bufs {
		orig[i] = append([]byte(nil), bufs[i]...)
	}
	return func() {
		for i := range bufs {
			copy(bufs[i], orig[i])
		}
	}
}

// allocsPerBurst is the allocations of one call of burst, which processes
// frames, followed by reading the exceptions they raised.
func allocsPerBurst(t *testing.T, n *NIC, burst func()) float64 {
	t.Helper()
	batch := make([]hal.Exception, MaxBurst)
	for i := range batch {
		batch[i].Buf = make([]byte, 256)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return testing.AllocsPerRun(200, func() {
		burst()
		if _, err := n.ReadExceptions(ctx, batch); err != nil {
			t.Fatal(err)
		}
	})
}

// TestZeroAllocSealed: opening, routing and refusing sealed frames
// allocates nothing, next to ordinary frames and the exception path.
func TestZeroAllocSealed(t *testing.T) {
	bed := newSealedBed(t)
	n := bed.n
	sealedBurst(t, bed.s, bed.bufs, bed.sizes, true)
	restore := keep(bed.bufs)
	up := mustPort(t, n, pUplink)
	allocs := allocsPerBurst(t, n, func() {
		restore()
		if err := n.Process(pVM1, bed.bufs, bed.sizes, Headroom); err != nil {
			t.Fatal(err)
		}
		up.Discard()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per burst", allocs)
	}
	ss := n.SealedStats()
	if ss.Opened == 0 || ss.NoFlow == 0 || ss.Refused[securechan.DropUnknownKey] == 0 || up.counters().Tx.Packets == 0 {
		t.Fatalf("the burst did not take every sealed path: %+v", ss)
	}
}

// benchSealedVsClear runs the sealed frames of sealedBurst from vm1 in
// bursts ("sealed"), and the same flows' frames unsealed ("clear"),
// reporting wall (ns/pkt) and thread CPU (cpu-ns/pkt) time per frame and
// allocs/pkt. Every frame must reach the uplink; with routed, every sealed
// one on a sealed route.
func benchSealedVsClear(b *testing.B, bed *sealedBed, routed bool) {
	n, bufs, sizes := bed.n, bed.bufs, bed.sizes
	for _, sealedCase := range []bool{true, false} {
		name := "sealed"
		if !sealedCase {
			name = "clear"
		}
		b.Run(name, func(b *testing.B) {
			if sealedCase {
				sealedBurst(b, bed.s, bufs, sizes, false)
			} else {
				for i := range bufs {
					writeFlowFrame(bufs[i][Headroom:], (i*7)%1024)
					sizes[i] = benchFrameLen
				}
			}
			orig := make([][]byte, len(bufs))
			for i := range bufs {
				orig[i] = append([]byte(nil), bufs[i][Headroom:Headroom+sizes[i]]...)
			}
			up := mustPort(b, n, pUplink)
			// Warm the burst pool: its first use allocates the scratch.
			if err := n.Process(pVM1, bufs[:1], sizes[:1], Headroom); err != nil {
				b.Fatal(err)
			}
			up.Discard()
			copy(bufs[0][Headroom:], orig[0])
			before := up.counters().Tx.Packets
			routed0 := n.SealedStats().Routed
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0, cpuOK := threadCPU()
			b.ResetTimer()
			for done := 0; done < b.N; done += MaxBurst {
				k := min(MaxBurst, b.N-done)
				for i := 0; i < k; i++ {
					copy(bufs[i][Headroom:], orig[i])
				}
				if err := n.Process(pVM1, bufs[:k], sizes[:k], Headroom); err != nil {
					b.Fatal(err)
				}
				up.Discard()
			}
			b.StopTimer()
			cpu1, _ := threadCPU()
			runtime.ReadMemStats(&ms1)
			if sent := up.counters().Tx.Packets - before; sent != uint64(b.N) {
				b.Fatalf("%d of %d packets reached the uplink", sent, b.N)
			}
			if got := n.SealedStats().Routed - routed0; routed && sealedCase && got != uint64(b.N) {
				b.Fatalf("%d of %d sealed frames took a sealed route", got, b.N)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/pkt")
			if cpuOK {
				// Thread CPU time: on a shared machine wall time also
				// counts other processes' turns.
				b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/pkt")
			}
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N), "allocs/pkt")
		})
	}
}

// BenchmarkSealedOpenRoute: 64-byte inner frames sealed by a VM, opened on
// the fast path and routed by an exact rule with VXLAN encapsulation (1024
// flows), against the same frames unsealed in the same run.
func BenchmarkSealedOpenRoute(b *testing.B) {
	benchSealedVsClear(b, newSealedBed(b), false)
}

// sealedFuzzBed is FuzzSealed's NIC, with crypto and rules on every stage,
// and a sealer for vm1's registered key. FuzzSealed makes one per input and
// sends it one frame, so its rings, exception queue and table are small.
type sealedFuzzBed struct {
	n      *NIC
	sealer *securechan.Sealer
	ports  []*Port
}

func newSealedFuzzBed(t testing.TB) *sealedFuzzBed {
	n := newNIC(t, func(c *Config) {
		c.RingSize, c.ExceptionQueue, c.MaxRules, c.Crypto = 8, 8, 64, true
		c.SealKey = &securechan.PrivateKey{7}
	})
	catchAll(t, n)
	var udp hal.Match
	udp.IPDst(hal.MustPrefix("198.18.0.0/15")).Proto(hal.ProtoUDP)
	mustApply(t, n, hal.AddOp(hal.Rule{ID: 200, Priority: 20, Match: udp, Actions: []hal.Action{hal.SetL4Dst(99),
		hal.DecTTL(), hal.Count(), hal.EncapWith(vxlanTo(paRem, 5)), hal.Output(pUplink)}}))
	vmPriv := securechan.PrivateKey{9}
	if err := n.RegisterSealKey(context.Background(), pVM1, 1, vmPriv.Public()); err != nil {
		t.Fatal(err)
	}
	// A zero nonce prefix, and the sealer's counter starts afresh: the same
	// clear frame seals to the same bytes in every run.
	sealer, err := securechan.NewSealer(vmPriv, n.SealPublicKey(), 1, bytes.NewReader(make([]byte, 16)))
	if err != nil {
		t.Fatal(err)
	}
	return &sealedFuzzBed{n: n, sealer: sealer, ports: []*Port{mustPort(t, n, pVM1), mustPort(t, n, pVM2), mustPort(t, n, pUplink)}}
}

// FuzzSealed seals arbitrary frames as vm1 (those SealFrame refuses are
// sent as they are), optionally flips one byte of the result, and sends it
// from vm1 to a NIC with crypto and rules on every stage. Promises: no
// panic; every frame is accounted for once; a sealed frame (0x88B5) never
// reaches the host, opened or not; an unmodified seal of a frame the NIC
// can parse is opened.
func FuzzSealed(f *testing.F) {
	f.Add(udp4(caVM1, caVM2, 1, 2, 10), uint16(0), byte(0))
	f.Add(udp4(caVM1, caRem, 1, 2, 0), uint16(50), byte(1))
	f.Add(wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: pa6Loc, Dst: pa6Rem, Proto: hal.ProtoTCP, SrcPort: 3, DstPort: 4}), uint16(15), byte(7))
	f.Add([]byte{}, uint16(0), byte(0))
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, clearFrame []byte, pos uint16, xor byte) {
		// A NIC and a sealer of their own for every input, so that its
		// outcome depends on the input alone. Shared by all inputs, they
		// carried each input's history into the next: the sealer's nonce
		// counter (the sealed bytes, and so the byte the input flips,
		// changed from one run to the next) and the NIC's address learner
		// (see FuzzProcess).
		bed := newSealedFuzzBed(t)
		n, sealer, ports := bed.n, bed.sealer, bed.ports
		frame, err := sealer.SealFrame(nil, clearFrame)
		sealedOK := err == nil
		if !sealedOK {
			frame = clearFrame
		}
		if xor != 0 && len(frame) > 0 {
			frame[int(pos)%len(frame)] ^= xor
		}
		in := ports[0]
		before := in.counters()
		opened := n.SealedStats().Opened
		var txBefore uint64
		for _, p := range ports {
			txBefore += p.counters().Tx.Packets
		}
		if _, err := in.Send([][]byte{frame}); err != nil {
			t.Fatal(err)
		}
		var txAfter uint64
		for _, p := range ports {
			txAfter += p.counters().Tx.Packets
			p.Discard()
		}
		after := in.counters()
		excs := after.Exceptions - before.Exceptions
		if got := (txAfter - txBefore) + (after.Drops - before.Drops) + excs; got != 1 {
			t.Fatalf("frame accounted for %d times", got)
		}
		if excs > 0 {
			if securechan.IsSealedFrame(frame) {
				t.Fatal("a sealed frame reached the host")
			}
			var batch [1]hal.Exception
			batch[0].Buf = make([]byte, 1<<16)
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			k, err := n.ReadExceptions(cctx, batch[:])
			cancel()
			if err != nil || k != 1 || !bytes.Equal(batch[0].Frame(), frame) {
				t.Fatalf("exception: %d %v; the host must get the frame as it arrived", k, err)
			}
		}
		if sealedOK && xor == 0 && len(frame) <= 1500+14 {
			var k hal.FlowKey
			var l wire.Layout
			if wire.Parse(clearFrame, pVM1, &k, &l) == nil && k.EthType != hal.EtherTypeSealed && n.SealedStats().Opened != opened+1 {
				t.Fatalf("an intact seal of a parsable frame was not opened: %+v", n.SealedStats())
			}
		}
	})
}
