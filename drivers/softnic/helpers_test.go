package softnic

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// The standard test NIC: two VMs and an uplink.
const (
	pVM1    hal.PortID = 1
	pVM2    hal.PortID = 2
	pUplink hal.PortID = 3
)

var (
	macVM1  = hal.MustMAC("02:00:00:00:00:01")
	macVM2  = hal.MustMAC("02:00:00:00:00:02")
	macGW   = hal.MustMAC("02:00:00:00:00:fe")
	macUp   = hal.MustMAC("02:00:00:00:01:00")
	macNext = hal.MustMAC("02:00:00:00:02:00")
	caVM1   = netip.MustParseAddr("198.18.10.1")
	caVM2   = netip.MustParseAddr("198.18.10.2")
	caRem   = netip.MustParseAddr("198.18.20.7")
	paLocal = netip.MustParseAddr("198.19.0.1")
	paRem   = netip.MustParseAddr("198.19.0.2")
	pa6Loc  = netip.MustParseAddr("2001:db8::1")
	pa6Rem  = netip.MustParseAddr("2001:db8::2")
)

func testConfig() Config {
	return Config{Ports: []PortConfig{
		{Name: "vm1", Kind: hal.PortVPort, MAC: macVM1},
		{Name: "vm2", Kind: hal.PortVPort, MAC: macVM2},
		{Name: "uplink", Kind: hal.PortUplink, MAC: macUp, MTU: 1600},
	}, MaxRules: 1 << 12, RingSize: 256, ExceptionQueue: 256}
}

func newNIC(t testing.TB, mod ...func(*Config)) *NIC {
	t.Helper()
	cfg := testConfig()
	for _, m := range mod {
		m(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func mustApply(t testing.TB, n *NIC, ops ...hal.Op) {
	t.Helper()
	res := make([]hal.OpResult, len(ops))
	if err := n.Apply(context.Background(), ops, res); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

func mustPort(t testing.TB, n *NIC, id hal.PortID) *Port {
	t.Helper()
	p, err := n.Port(id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// send puts frames into the NIC on port id.
func send(t testing.TB, n *NIC, id hal.PortID, frames ...[]byte) {
	t.Helper()
	if k, err := mustPort(t, n, id).Send(frames); err != nil || k != len(frames) {
		t.Fatalf("send: %d, %v", k, err)
	}
}

// recvAll drains the frames the NIC sent out of port id.
func recvAll(t testing.TB, n *NIC, id hal.PortID) [][]byte {
	t.Helper()
	p := mustPort(t, n, id)
	var out [][]byte
	bufs := make([][]byte, 16)
	sizes := make([]int, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 4096) // more than any test port's MTU allows
	}
	for {
		k, err := p.Recv(bufs, sizes)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < k; i++ {
			out = append(out, append([]byte(nil), bufs[i][:sizes[i]]...))
		}
		if k < len(bufs) {
			return out
		}
	}
}

// readExc reads the exceptions waiting in the queue without blocking long.
func readExc(t testing.TB, n *NIC) []hal.Exception {
	t.Helper()
	var out []hal.Exception
	for {
		batch := make([]hal.Exception, 8)
		for i := range batch {
			batch[i].Buf = make([]byte, 1<<16)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		k, err := n.ReadExceptions(ctx, batch)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, batch[:k]...)
	}
}

// udp4 builds a UDP/IPv4 frame from VM1 toward dst.
func udp4(src, dst netip.Addr, sp, dp uint16, payload int) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: macVM1, DstMAC: macGW, Src: src, Dst: dst, Proto: hal.ProtoUDP,
		SrcPort: sp, DstPort: dp, Payload: make([]byte, payload)})
}

func parse(t testing.TB, f []byte) (hal.FlowKey, wire.Layout) {
	t.Helper()
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(f, 0, &k, &l); err != nil {
		t.Fatalf("output does not parse: %v\n% x", err, f)
	}
	return k, l
}

func vxlanTo(pa netip.Addr, vni uint32) hal.Encap {
	src := paLocal
	if pa.Is6() {
		src = pa6Loc
	}
	return hal.Encap{Kind: hal.EncapVXLAN, VNI: vni, Src: src, Dst: pa, SrcMAC: macUp, DstMAC: macNext}
}

// dstRule is the usual CA→PA mapping: frames from vm1 to dst go out
// encapsulated.
func dstRule(id hal.RuleID, dst netip.Addr, e hal.Encap, extra ...hal.Action) hal.Rule {
	var m hal.Match
	m.InPort(pVM1).IPDst(netip.PrefixFrom(dst, dst.BitLen()))
	acts := append(extra, hal.EncapWith(e), hal.Output(pUplink))
	return hal.Rule{ID: id, Priority: 10, Match: m, Actions: acts}
}

func stats(t testing.TB, n *NIC) hal.Stats {
	t.Helper()
	s, err := n.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}
