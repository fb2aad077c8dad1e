//go:build linux

package afpacket

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// The binding's per-frame work on a GSO super-frame (cutting it, handing
// the segments to the NIC in batches) allocates nothing, and every
// segment reaches the egress port.
func TestSegmentPathDoesNotAllocate(t *testing.T) {
	nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm1", Kind: hal.PortVPort}, {Name: "vm2", Kind: hal.PortVPort},
	}, RingSize: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	var m hal.Match
	m.InPort(1)
	apply(t, nic, hal.Rule{ID: 1, Match: m, Actions: []hal.Action{hal.Output(2)}})
	in, _ := nic.Port(1)
	out, _ := nic.Port(2)
	b := &Binding{port: in, log: slog.New(slog.DiscardHandler)}
	r := newReader(b)
	// A VM's 64 KB TSO frame: 45 segments of 1448 bytes, more than one
	// batch with the frames already gathered.
	f := wire.Build(wire.FrameSpec{SrcMAC: macVMA, DstMAC: macVMB, Src: netip.MustParseAddr("198.18.5.1"),
		Dst: netip.MustParseAddr("198.18.5.2"), Proto: hal.ProtoTCP, SrcPort: 1, DstPort: 2, Payload: make([]byte, 45*1448)})
	h := wire.VirtioNetHdr{Flags: wire.VirtioNetHdrFNeedsCsum, GSOType: wire.VirtioNetHdrGSOTCPv4, GSOSize: 1448,
		CsumStart: 34, CsumOffset: 16, HdrLen: 54}
	small := wire.Build(wire.FrameSpec{SrcMAC: macVMA, DstMAC: macVMB, Src: netip.MustParseAddr("198.18.5.1"),
		Dst: netip.MustParseAddr("198.18.5.2"), Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2, Payload: []byte("x")})
	binary.BigEndian.PutUint16(small[34+6:], 0x1234) // a partial checksum
	runs := 0
	allocs := testing.AllocsPerRun(20, func() {
		for i := 0; i < 30; i++ { // 30 frames gathered before the GSO one
			copy(r.rbufs[r.ri], small)
			fr := r.rbufs[r.ri][:len(small)]
			if err := wire.CompleteChecksum(fr, 34, 6); err != nil {
				t.Fatal(err)
			}
			r.frames = append(r.frames, fr)
			r.ri++
		}
		if !r.segment(f, &h) || !r.flush() {
			t.Fatal("the NIC is closed")
		}
		out.Discard()
		runs++
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per GSO frame", allocs)
	}
	if got := b.Stats(); got.RxGSO != uint64(runs) || got.RxFrames != uint64(runs*(30+45)) || got.RxDropped != 0 {
		t.Fatalf("binding counters %+v after %d runs", got, runs)
	}
	pc, err := nic.PortCounters(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if pc.Tx.Packets != uint64(runs*(30+45)) {
		t.Fatalf("%d frames reached vm2, want %d", pc.Tx.Packets, runs*(30+45))
	}
}
