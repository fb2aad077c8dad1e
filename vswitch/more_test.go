package vswitch

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// TestRun drives the switches with Run, as a host does: packets cross
// hosts while the exception loops run in their own goroutines.
func TestRun(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{})
	h1, h2 := tp.byNm["h1"], tp.byNm["h2"]
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, h := range tp.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.sw.Run(ctx)
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	frame := frameOf(udp(macVA1, macVA2, caVA1, caVA2, 7, 7))
	up1, up2 := h1.far[h1.uplink], h2.far[h2.uplink]
	va2 := h2.far[h2.ports["va2"]]
	buf, sizes := [][]byte{make([]byte, 4096)}, []int{0}
	got := 0
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 20 && time.Now().Before(deadline); {
		if _, err := h1.far[h1.ports["va1"]].Send([][]byte{frame}); err != nil {
			t.Fatal(err)
		}
		i++
		// Carry h1's uplink to h2's and wait for va2 to receive.
		for time.Now().Before(deadline) {
			if n, _ := up1.Recv(buf, sizes); n == 1 {
				up2.Send([][]byte{buf[0][:sizes[0]]})
			}
			if n, _ := va2.Recv(buf, sizes); n == 1 {
				got++
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	if got != 20 {
		t.Fatalf("%d of 20 packets delivered under Run", got)
	}
	if s := h1.sw.Stats(); s.Packets != 1 || s.FlowsNIC != 1 {
		t.Fatalf("h1 under Run:\n%s", s)
	}
}

// TestHostPathAllocationFree: packets of a flow kept in the host are
// executed and reinjected without allocating.
func TestHostPathAllocationFree(t *testing.T) {
	tp := newTopo(t, smallPolicy(t, nil), topoOpts{noOffload: true})
	h1 := tp.byNm["h1"]
	frame := frameOf(udp(macVA1, macVA2, caVA1, caVA2, 7, 7))
	batch := make([]hal.Exception, 16)
	for i := range batch {
		batch[i] = hal.Exception{InPort: h1.ports["va1"], Reason: hal.ReasonMiss, Buf: frame, Len: len(frame)}
	}
	ctx := context.Background()
	if err := h1.sw.HandleBatch(ctx, batch); err != nil { // creates the flow
		t.Fatal(err)
	}
	up := h1.far[h1.uplink]
	up.Discard()
	allocs := testing.AllocsPerRun(100, func() {
		if err := h1.sw.HandleBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		up.Discard()
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per batch on the host path", allocs)
	}
	if s := h1.sw.Stats(); s.Injected != 101*16+16 {
		t.Fatalf("injected %d", s.Injected)
	}
}

// FuzzHandleBatch feeds arbitrary frames to the exception path from a
// vport and from the uplink. Whatever the bytes, the switch must not
// panic, must account for every packet, and must only ever emit frames that
// parse, on real ports.
func FuzzHandleBatch(f *testing.F) {
	f.Add(frameOf(udp(macVA1, macVA2, caVA1, caVA2, 7, 7)), false)
	f.Add(frameOf(tcp(macVA1, macVB1, caVA1, caVB1, 7, 7)), false)
	e := hal.Encap{Kind: hal.EncapVXLAN, VNI: 100, Src: pa2, Dst: pa1, SrcMAC: uplinkMAC, DstMAC: uplinkMAC}
	f.Add(wire.BuildEncap(&e, frameOf(udp(macVA2, macVA1, caVA2, caVA1, 7, 7))), true)
	f.Add([]byte{}, false)
	f.Add(wire.Build(wire.FrameSpec{SrcMAC: hal.MAC(macVA1), EthType: hal.EtherTypeSealed, Payload: make([]byte, 40)}), false)
	st := smallPolicy(f, nil)
	f.Fuzz(func(t *testing.T, frame []byte, uplink bool) {
		// A topology of its own for every input (closed by t.Cleanup), so
		// that an input's path depends on the input alone. One switch and
		// NIC shared by all inputs carried each input's history into the
		// next: flows and their offloaded rules, connection state, learned
		// addresses. The fuzzer could not reproduce coverage found that
		// way, and a failure that needed the history would not fail when
		// rerun alone. Small rings and table: it carries one frame.
		tp := newTopo(t, st, topoOpts{maxRules: 64, ringSize: 8})
		h1 := tp.byNm["h1"]
		port := h1.ports["va1"]
		if uplink {
			port = h1.uplink
		}
		before := h1.sw.Stats()
		buf := append([]byte(nil), frame...)
		exc := []hal.Exception{{InPort: port, Reason: hal.ReasonMiss, Buf: buf, Len: len(buf)}}
		if err := h1.sw.HandleBatch(context.Background(), exc); err != nil {
			t.Fatal(err)
		}
		after := h1.sw.Stats()
		if after.Packets != before.Packets+1 {
			t.Fatalf("packet not accounted: %d -> %d", before.Packets, after.Packets)
		}
		bufs, sizes := [][]byte{make([]byte, 16384)}, []int{0}
		for id, fp := range h1.far {
			for {
				n, err := fp.Recv(bufs, sizes)
				if err != nil || n == 0 {
					break
				}
				var k hal.FlowKey
				var l wire.Layout
				if err := wire.Parse(bufs[0][:sizes[0]], id, &k, &l); err != nil {
					t.Fatalf("emitted a frame on port %d that does not parse: %v", id, err)
				}
			}
		}
	})
}
