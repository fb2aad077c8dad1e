package learn

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

var (
	macVM = hal.MustMAC("02:00:00:00:00:01")
	macGW = hal.MustMAC("02:00:00:00:00:fe")
	caVM  = netip.MustParseAddr("198.18.10.1")
	caVM2 = netip.MustParseAddr("198.18.10.2")
	caRem = netip.MustParseAddr("198.18.20.1")
)

const port hal.PortID = 3

// arpFrame is an ARP request from mac/spa for tpa (a gratuitous one when
// tpa == spa).
func arpFrame(mac hal.MAC, spa, tpa netip.Addr) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:2], 1)
	binary.BigEndian.PutUint16(p[2:4], 0x0800)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], 1)
	copy(p[8:14], mac[:])
	s, t := spa.As4(), tpa.As4()
	copy(p[14:18], s[:])
	copy(p[24:28], t[:])
	return wire.Build(wire.FrameSpec{SrcMAC: mac, DstMAC: hal.MustMAC("ff:ff:ff:ff:ff:ff"), EthType: 0x0806, Payload: p})
}

// naFrame is a neighbour advertisement of target from mac; solicited sets
// the S flag.
func naFrame(mac hal.MAC, src, target netip.Addr, solicited bool) []byte {
	t := target.As16()
	f := wire.Build(wire.FrameSpec{SrcMAC: mac, DstMAC: hal.MustMAC("33:33:00:00:00:01"), Src: src, Dst: netip.MustParseAddr("ff02::1"),
		Proto: hal.ProtoICMPv6, ICMPType: 136, Payload: t[:]})
	f[14+40+4] = 0
	if solicited {
		f[14+40+4] = 0x40
	}
	return f
}

func udp(src netip.Addr, sport uint16) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: macVM, DstMAC: macGW, Src: src, Dst: caRem, Proto: hal.ProtoUDP, SrcPort: sport, DstPort: 53})
}

// read takes want reports from l and checks that no more follow.
func read(t *testing.T, l *Learner, want int) []hal.LearnedAddress {
	t.Helper()
	var got []hal.LearnedAddress
	batch := make([]hal.LearnedAddress, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for len(got) < want {
		k, err := l.Read(ctx, batch)
		if err != nil {
			t.Fatalf("after %d of %d reports: %v", len(got), want, err)
		}
		got = append(got, batch[:k]...)
	}
	if len(got) != want {
		t.Fatalf("%d reports, want %d: %+v", len(got), want, got)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if k, _ := l.Read(ctx2, batch); k != 0 {
		t.Fatalf("unexpected reports %v", batch[:k])
	}
	return got
}

// Sources and announcements are read from each kind of frame, deduplicated,
// and nothing is learned from a frame that carries no source address.
func TestFrames(t *testing.T) {
	l := New()
	v6 := netip.MustParseAddr("2001:db8:10::1")
	ll := netip.MustParseAddr("fe80::1")
	for _, f := range [][]byte{
		udp(caVM, 1000), udp(caVM, 1001), // the same source twice: reported once
		arpFrame(macVM, caVM, caVM),  // gratuitous
		arpFrame(macVM, caVM, caVM2), // an ordinary request: its sender, seen (already)
		naFrame(macVM, ll, v6, false),
		naFrame(macVM, ll, netip.MustParseAddr("2001:db8:10::2"), true), // solicited: its source only
		wire.Build(wire.FrameSpec{SrcMAC: macVM, DstMAC: macGW, EthType: hal.EtherTypeSealed, Payload: make([]byte, 80)}),
		wire.Build(wire.FrameSpec{SrcMAC: macVM, DstMAC: macGW, VLAN: 7, Src: caVM2, Dst: caRem, Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 2}),
		wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("03:00:00:00:00:01"), DstMAC: macGW, Src: caRem, Dst: caVM, Proto: hal.ProtoUDP}), // group source MAC
		wire.Build(wire.FrameSpec{SrcMAC: macVM, DstMAC: macGW, Src: netip.IPv4Unspecified(), Dst: caRem, Proto: hal.ProtoUDP}),
		arpFrame(macVM, netip.AddrFrom4([4]byte{255, 255, 255, 255}), caVM),
		{1, 2, 3},
	} {
		l.Frame(port, f)
	}
	got := read(t, l, 5)
	want := []hal.LearnedAddress{
		{Port: port, Kind: hal.LearnSeen, MAC: macVM, Addr: caVM},
		{Port: port, Kind: hal.LearnAnnounced, MAC: macVM, Addr: caVM},
		{Port: port, Kind: hal.LearnAnnounced, MAC: macVM, Addr: v6},
		{Port: port, Kind: hal.LearnSeen, MAC: macVM, Addr: ll},
		{Port: port, Kind: hal.LearnSeen, MAC: macVM, Addr: caVM2},
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("report %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	// The same address on another port is another report.
	l.Frame(port+1, udp(caVM, 1))
	if got := read(t, l, 1); got[0].Port != port+1 {
		t.Fatalf("%+v", got[0])
	}
}

// An announcement repeated at once is one report, a second later another;
// a seen address comes back after SeenRefresh.
func TestRefresh(t *testing.T) {
	l := New()
	clock := time.Now()
	l.now = func() time.Time { return clock }
	g := arpFrame(macVM, caVM, caVM)
	l.Frame(port, g)
	l.Frame(port, g)
	l.Frame(port, udp(caVM, 1))
	read(t, l, 2)
	clock = clock.Add(AnnounceRefresh)
	l.Frame(port, g)
	l.Frame(port, udp(caVM, 1))
	if got := read(t, l, 1); got[0].Kind != hal.LearnAnnounced {
		t.Fatalf("%+v", got[0])
	}
	clock = clock.Add(SeenRefresh)
	l.Frame(port, udp(caVM, 1))
	if got := read(t, l, 1); got[0].Kind != hal.LearnSeen {
		t.Fatalf("%+v", got[0])
	}
}

// A reader that does not keep up loses reports, counted, and the address
// comes back on its next frame; a full table only brings reports forward.
func TestBounds(t *testing.T) {
	l := New()
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}) }
	for i := range QueueMax + 10 {
		l.Frame(port, udp(addr(i), 1))
	}
	if d := l.Dropped(); d != 10 {
		t.Fatalf("%d reports dropped, want 10", d)
	}
	read(t, l, QueueMax)
	last := addr(QueueMax + 9)
	l.Frame(port, udp(last, 1))
	if got := read(t, l, 1); got[0].Addr != last {
		t.Fatalf("the dropped report did not come back: %+v", got[0])
	}
	// Fill the table past TableMax (reading as we go): the first address
	// is reported again once the table was cleared.
	for i := range TableMax + 1 {
		l.Frame(port, udp(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), 1))
		if i%512 == 511 {
			read(t, l, 512)
		}
	}
	l.Frame(port, udp(addr(0), 1))
	read(t, l, 1+(TableMax+1)%512)
}

// Close wakes a blocked reader with hal.ErrClosed.
func TestClose(t *testing.T) {
	l := New()
	errc := make(chan error, 1)
	go func() {
		_, err := l.Read(context.Background(), make([]hal.LearnedAddress, 1))
		errc <- err
	}()
	l.Close()
	l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, hal.ErrClosed) {
			t.Fatalf("Read after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake Read")
	}
	if _, err := l.Read(context.Background(), nil); !errors.Is(err, hal.ErrClosed) {
		t.Fatalf("Read on a closed Learner: %v", err)
	}
}

// FuzzLearnFrom: any frame is read without panicking, and what is learned
// is a unicast source address the frame carries.
func FuzzLearnFrom(f *testing.F) {
	f.Add(arpFrame(macVM, caVM, caVM))
	f.Add(naFrame(macVM, netip.MustParseAddr("fe80::1"), netip.MustParseAddr("2001:db8::5"), false))
	f.Add(wire.Build(wire.FrameSpec{SrcMAC: macVM, DstMAC: macGW, VLAN: 5, Src: caVM, Dst: caRem, Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 53}))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := From(b)
		if !ok {
			return
		}
		if !a.Addr.IsValid() || a.Addr.IsMulticast() || a.Addr.IsUnspecified() || a.MAC[0]&1 != 0 || a.Port != 0 {
			t.Fatalf("learned %+v", a)
		}
		if a.Kind != hal.LearnSeen && a.Kind != hal.LearnAnnounced {
			t.Fatalf("kind %v", a.Kind)
		}
		if [6]byte(b[6:12]) != [6]byte(a.MAC) {
			t.Fatalf("MAC %v is not the frame's source", a.MAC)
		}
	})
}

// A frame whose address was reported a moment ago, what almost every
// exception is, costs its parse and a map lookup: no allocation.
func TestFrameSeenAllocatesNothing(t *testing.T) {
	l := New()
	f := udp(caVM, 1)
	l.Frame(port, f)
	if allocs := testing.AllocsPerRun(1000, func() { l.Frame(port, f) }); allocs != 0 {
		t.Fatalf("%.1f allocations per frame already reported", allocs)
	}
}

// BenchmarkFrameSeen is the learner's cost on an exception reader per
// frame whose source was reported a moment ago.
func BenchmarkFrameSeen(b *testing.B) {
	l := New()
	f := udp(caVM, 1)
	l.Frame(port, f)
	b.ReportAllocs()
	for b.Loop() {
		l.Frame(port, f)
	}
}
