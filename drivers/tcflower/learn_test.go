package tcflower

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

// garp is a gratuitous ARP request from mac for addr.
func garp(mac hal.MAC, addr netip.Addr) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:2], 1)
	binary.BigEndian.PutUint16(p[2:4], 0x0800)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], 1)
	copy(p[8:14], mac[:])
	a := addr.As4()
	copy(p[14:18], a[:])
	copy(p[24:28], a[:])
	return wire.Build(wire.FrameSpec{SrcMAC: mac, DstMAC: hal.MustMAC("ff:ff:ff:ff:ff:ff"), EthType: hal.EtherTypeARP, Payload: p})
}

// The exception reader learns from what vports send, as the channel
// carries it (two tags in front), even into a buffer too short for the
// frame; an uplink's frames teach nothing; Close ends ReadLearned.
func TestLearnFromChannel(t *testing.T) {
	n, r := fakeExcNIC(t, &fakeKernel{})
	if !n.Capabilities().AddressLearning {
		t.Fatal("AddressLearning is false with an exception path")
	}
	mac := hal.MustMAC("02:00:00:00:00:01")
	vm, vm2, remote := netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("198.18.9.9")
	udp := func(src netip.Addr) []byte {
		return wire.Build(wire.FrameSpec{SrcMAC: mac, DstMAC: hal.MustMAC("02:00:00:00:00:fe"), Src: src, Dst: netip.MustParseAddr("198.18.2.2"),
			Proto: hal.ProtoUDP, SrcPort: 1000, DstPort: 53})
	}
	r.push(
		tagged(garp(mac, vm), 1, uint16(hal.ReasonMiss)),
		tagged(udp(vm2), 2, uint16(hal.ReasonMiss)),
		tagged(udp(remote), 3, uint16(hal.ReasonMiss)), // the uplink
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	batch := newBatch(3, 20) // shorter than every frame: truncated
	for got := 0; got < 3; {
		k, err := n.ReadExceptions(ctx, batch[got:])
		if err != nil {
			t.Fatal(err)
		}
		got += k
	}
	for i := range batch {
		if !batch[i].Truncated {
			t.Fatalf("exception %d not truncated", i)
		}
	}
	var learned []hal.LearnedAddress
	lb := make([]hal.LearnedAddress, 4)
	for len(learned) < 2 {
		k, err := n.ReadLearned(ctx, lb)
		if err != nil {
			t.Fatalf("ReadLearned after %v: %v", learned, err)
		}
		learned = append(learned, lb[:k]...)
	}
	want := []hal.LearnedAddress{
		{Port: 1, Kind: hal.LearnAnnounced, MAC: mac, Addr: vm},
		{Port: 2, Kind: hal.LearnSeen, MAC: mac, Addr: vm2},
	}
	if len(learned) != 2 || learned[0] != want[0] || learned[1] != want[1] {
		t.Fatalf("learned %+v, want %+v", learned, want)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	if k, err := n.ReadLearned(short, lb); k != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a report more: %v, %v (the uplink's source?)", lb[:k], err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := n.ReadLearned(context.Background(), lb)
		errc <- err
	}()
	n.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, hal.ErrClosed) {
			t.Fatalf("ReadLearned across Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end ReadLearned")
	}
}

// Without an exception path there is nothing to learn from.
func TestNoLearningWithoutExceptionPath(t *testing.T) {
	n := fakeNIC(t, &fakeKernel{})
	if n.Capabilities().AddressLearning {
		t.Error("AddressLearning without an exception path")
	}
	if _, err := n.ReadLearned(context.Background(), make([]hal.LearnedAddress, 1)); !errors.Is(err, hal.ErrNotSupported) {
		t.Errorf("ReadLearned without an exception path: %v, want ErrNotSupported", err)
	}
}
