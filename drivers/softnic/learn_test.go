package softnic

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/learn"
	"github.com/nicpath/nicpath/hal/wire"
)

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

func readLearned(t *testing.T, n *NIC, want int) []hal.LearnedAddress {
	t.Helper()
	var got []hal.LearnedAddress
	batch := make([]hal.LearnedAddress, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for len(got) < want {
		k, err := n.ReadLearned(ctx, batch)
		if err != nil {
			t.Fatalf("after %d of %d reports: %v", len(got), want, err)
		}
		got = append(got, batch[:k]...)
	}
	// Nothing more.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if k, _ := n.ReadLearned(ctx2, batch); k != 0 {
		t.Fatalf("unexpected reports %v", batch[:k])
	}
	return got
}

// The NIC reports the sources its vports use on the frames its exception
// path carries, and announcements as such; not the uplink's frames, not
// sealed ones, and an address seen again only after a while (hal/learn's
// tests check the refresh times and bounds).
func TestLearnedAddresses(t *testing.T) {
	n := newNIC(t)
	if !n.Capabilities().AddressLearning {
		t.Fatal("Capabilities.AddressLearning is false")
	}
	fs := FarSide{NIC: n}
	spoof := netip.MustParseAddr("198.18.66.6")
	v6 := netip.MustParseAddr("2001:db8:10::1")
	udp := func(src netip.Addr, sport uint16) []byte {
		return wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: src, Dst: caRem, Proto: hal.ProtoUDP, SrcPort: sport, DstPort: 53})
	}
	frames := [][]byte{
		udp(caVM1, 1000), udp(caVM1, 1001), // the same source twice: reported once
		udp(spoof, 1002),
		arpFrame(macVM1, caVM1, caVM1), // gratuitous
		arpFrame(macVM1, caVM1, caVM2), // an ordinary request: its sender, seen (once)
		naFrame(macVM1, netip.MustParseAddr("fe80::1"), v6, false),
		naFrame(macVM1, netip.MustParseAddr("fe80::1"), netip.MustParseAddr("2001:db8:10::2"), true), // solicited: its source only
		wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, EthType: hal.EtherTypeSealed, Payload: make([]byte, 80)}),
	}
	if err := fs.Send(pVM1, frames...); err != nil {
		t.Fatal(err)
	}
	if err := fs.Send(pUplink, udp(caVM2, 7)); err != nil { // the uplink's sources are not a vport's
		t.Fatal(err)
	}
	got := readLearned(t, n, 5)
	want := []hal.LearnedAddress{
		{Port: pVM1, Kind: hal.LearnSeen, MAC: macVM1, Addr: caVM1},
		{Port: pVM1, Kind: hal.LearnSeen, MAC: macVM1, Addr: spoof},
		{Port: pVM1, Kind: hal.LearnAnnounced, MAC: macVM1, Addr: caVM1},
		{Port: pVM1, Kind: hal.LearnAnnounced, MAC: macVM1, Addr: v6},
		{Port: pVM1, Kind: hal.LearnSeen, MAC: macVM1, Addr: netip.MustParseAddr("fe80::1")},
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("report %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// A reader that does not keep up loses reports, never frames: the queue is
// bounded, the drops counted, and the address comes back on its next frame.
func TestLearnedQueueBounded(t *testing.T) {
	n := newNIC(t, func(c *Config) { c.ExceptionQueue = 4 * learn.QueueMax })
	fs := FarSide{NIC: n}
	for i := range learn.QueueMax + 10 {
		src := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		f := wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: src, Dst: caRem, Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 53})
		if err := fs.Send(pVM1, f); err != nil {
			t.Fatal(err)
		}
	}
	if d := n.LearnedDropped(); d != 10 {
		t.Fatalf("%d reports dropped, want 10", d)
	}
	st, _ := n.Stats(context.Background())
	if st.Exceptions[hal.ReasonMiss] != learn.QueueMax+10 {
		t.Fatalf("%d misses reached the exception path, want every frame", st.Exceptions[hal.ReasonMiss])
	}
	readLearned(t, n, learn.QueueMax)
	i := learn.QueueMax + 9
	last := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
	fs.Send(pVM1, wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: last, Dst: caRem, Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 53}))
	if got := readLearned(t, n, 1); got[0].Addr != last {
		t.Fatalf("the dropped report did not come back: %+v", got[0])
	}
}
