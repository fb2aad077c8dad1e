package remote

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// garp is a gratuitous ARP from mac for addr.
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
	return wire.Build(wire.FrameSpec{SrcMAC: mac, DstMAC: hal.MustMAC("ff:ff:ff:ff:ff:ff"), EthType: 0x0806, Payload: p})
}

func readLearnedN(t *testing.T, l hal.AddressLearner, want int) []hal.LearnedAddress {
	t.Helper()
	var got []hal.LearnedAddress
	batch := make([]hal.LearnedAddress, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for len(got) < want {
		k, err := l.ReadLearned(ctx, batch)
		if err != nil {
			t.Fatalf("after %d of %d learned addresses: %v", len(got), want, err)
		}
		got = append(got, batch[:k]...)
	}
	return got
}

// TestLearnedOverRemote: the addresses the served NIC learns on its vports
// reach the host over the channel, as the served NIC reports them, through
// the driver's hal.AddressLearner; those learned while the channel is down
// wait on the NIC side and arrive after the reconnect.
func TestLearnedOverRemote(t *testing.T) {
	k := newKeys(t)
	soft := newSoftnic(t, false)
	path := sockPath(t)
	s1 := serve(t, soft, k, path, nil)
	n := open(t, clientConfig(k, s1.addr))
	if !n.Capabilities().AddressLearning {
		t.Fatal("the remote NIC does not say it learns addresses")
	}
	l, ok := n.(hal.AddressLearner)
	if !ok {
		t.Fatalf("%T does not implement hal.AddressLearner although the served NIC does", n)
	}
	fs := softnic.FarSide{NIC: soft}
	moved := netip.MustParseAddr("10.0.0.9")
	if err := fs.Send(1, udpFrame(7), garp(macVM1, moved)); err != nil {
		t.Fatal(err)
	}
	got := readLearnedN(t, l, 2)
	want := []hal.LearnedAddress{
		{Port: 1, Kind: hal.LearnSeen, MAC: macVM1, Addr: netip.MustParseAddr("10.0.0.1")},
		{Port: 1, Kind: hal.LearnAnnounced, MAC: macVM1, Addr: moved},
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("learned %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if s1.srv.Stats().LearnedSent != 2 {
		t.Errorf("the server counted %d learned addresses sent", s1.srv.Stats().LearnedSent)
	}

	// Learned while no host is connected: kept on the NIC side.
	cl, _ := AsClient(n)
	s1.stop()
	waitFor(t, "the channel down", 5*time.Second, func() bool { return !cl.Connected() })
	if err := fs.Send(2, garp(macVM2, netip.MustParseAddr("10.0.0.2"))); err != nil {
		t.Fatal(err)
	}
	serve(t, soft, k, path, nil)
	got = readLearnedN(t, l, 1)
	if got[0] != (hal.LearnedAddress{Port: 2, Kind: hal.LearnAnnounced, MAC: macVM2, Addr: netip.MustParseAddr("10.0.0.2")}) {
		t.Errorf("after the reconnect: %+v", got[0])
	}
}

// A served NIC that does not learn: the remote NIC has no AddressLearner.
func TestNoLearnerServed(t *testing.T) {
	k := newKeys(t)
	type plain struct{ hal.NIC } // hides softnic's optional interfaces
	s := serve(t, plain{newSoftnic(t, false)}, k, sockPath(t), nil)
	n := open(t, clientConfig(k, s.addr))
	if _, ok := n.(hal.AddressLearner); ok {
		t.Fatal("the remote NIC claims to learn addresses for a NIC that does not")
	}
	if _, ok := n.(hal.AtomicApplier); ok {
		t.Fatal("the remote NIC claims atomic batches for a NIC without them")
	}
}

// Every capability flag crosses the channel, address learning and unseen
// tunnel misses included.
func TestCapsFlagsRoundTrip(t *testing.T) {
	for _, c := range []hal.Capabilities{
		{Driver: "x", AddressLearning: true},
		{Driver: "x", TunnelMissesUnseen: true},
		{Driver: "x", SealedDrop: true},
		{Driver: "x", Priorities: true, Generations: true, Crypto: true, ExceptionPath: true, AtomicBatch: true, TunnelFilter: true,
			AddressLearning: true, TunnelMissesUnseen: true, SealedDrop: true, Counters: hal.CounterCaps{PerRule: true, PerPort: true, BytesIncludeL2: true}},
	} {
		var e enc
		e.caps(&c)
		d := dec{b: e.b}
		var got hal.Capabilities
		d.caps(&got)
		if err := d.done(); err != nil || got.AddressLearning != c.AddressLearning || got.TunnelMissesUnseen != c.TunnelMissesUnseen || got.SealedDrop != c.SealedDrop ||
			got.AtomicBatch != c.AtomicBatch || got.Counters != c.Counters {
			t.Errorf("caps %+v came back %+v (%v)", c, got, err)
		}
	}
}
