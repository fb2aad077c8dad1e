//go:build linux

package xdp

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// TestTwoHostsTraffic carries real traffic, ping and UDP, between two VMs on
// two hosts through the XDP datapath: VXLAN encapsulation on the sending
// host's vport, a redirect out of its uplink, decapsulation on the receiving
// host's uplink and a redirect into the VM. Then it checks the exception
// path (a miss reaches ReadExceptions, Inject reaches the VM), detach
// detection, Replace, and that Close leaves nothing behind.
func TestTwoHostsTraffic(t *testing.T) {
	requireRoot(t)
	goroutines := runtime.NumGoroutine()
	h1, h2 := twoHosts(t)
	n1 := openHost(t, h1, ModeAuto)
	n2 := openHost(t, h2, ModeAuto)
	closed := false
	defer func() {
		if !closed {
			n1.Close()
			n2.Close()
		}
	}()
	for _, n := range []*NIC{n1, n2} {
		for _, id := range []hal.PortID{1, 2} {
			if m, _ := n.PortMode(id); m != ModeDriver {
				t.Errorf("port %d attached in %v mode; veth supports driver mode", id, m)
			}
		}
	}
	ctx := context.Background()
	const vni = 4242
	mustApply(t, n1, overlayRules(h1, h2, vni)...)
	mustApply(t, n2, overlayRules(h2, h1, vni)...)

	if got := ping(t, h1.vmNS, h2.ca, 5); got != 5 {
		t.Fatalf("ping vm1 -> vm2: %d of 5 replies", got)
	}
	rc := make([]hal.Counters, 2)
	if err := n1.RuleCounters(ctx, []hal.RuleID{1, 2}, rc); err != nil {
		t.Fatal(err)
	}
	if rc[0].Packets < 5 || rc[1].Packets < 5 {
		t.Fatalf("host1 rule counters %+v: the echoes did not take the XDP path", rc)
	}

	const datagrams = 200
	rx := udpSocket(t, h2.vmNS, h2.ca, 9000)
	tx := udpSocket(t, h1.vmNS, h1.ca, 9001)
	payload := make([]byte, 200)
	for i := 0; i < datagrams; i++ {
		if i%20 == 19 {
			// A functional test, not a blast: stay under the veth rings.
			time.Sleep(2 * time.Millisecond)
		}
		if err := unix.Sendto(tx, payload, 0, &unix.SockaddrInet4{Addr: h2.ca.As4(), Port: 9000}); err != nil {
			t.Fatal(err)
		}
	}
	if got := countUDP(rx, 300*time.Millisecond); got != datagrams {
		s1, _ := n1.Stats(ctx)
		s2, _ := n2.Stats(ctx)
		p1, _ := n1.PortCounters(ctx, 1)
		p2, _ := n2.PortCounters(ctx, 2)
		p21, _ := n2.PortCounters(ctx, 1)
		t.Fatalf("UDP: %d of %d datagrams arrived\nhost1 %+v vport %+v\nhost2 %+v uplink %+v vport %+v", got, datagrams, s1, p1, s2, p2, p21)
	}
	up, err := n2.PortCounters(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if up.Rx.Packets < datagrams {
		t.Fatalf("host2 uplink rx %+v", up)
	}

	// A miss: vm1 sends to a CA without a rule. It reaches host1's
	// exception path with its in-port; the host answers by injecting a
	// frame into the vport, which vm1 receives.
	other := netip.MustParseAddr("198.19.1.99")
	run(t, "ip", "-n", h1.vmNS, "neigh", "replace", other.String(), "lladdr", "02:00:00:00:00:99", "dev", h1.vmDev, "nud", "permanent")
	if err := unix.Sendto(tx, []byte("to nowhere"), 0, &unix.SockaddrInet4{Addr: other.As4(), Port: 9000}); err != nil {
		t.Fatal(err)
	}
	batch := make([]hal.Exception, 8)
	for i := range batch {
		batch[i].Buf = make([]byte, 2048)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second) // generous: CI runs loaded
	defer cancel()
	var miss *hal.Exception
	for miss == nil {
		k, err := n1.ReadExceptions(rctx, batch)
		if err != nil {
			t.Fatalf("ReadExceptions: %v", err)
		}
		for i := 0; i < k; i++ {
			var key hal.FlowKey
			var l wire.Layout
			if wire.Parse(batch[i].Frame(), batch[i].InPort, &key, &l) == nil && key.Dst() == other {
				miss = &batch[i]
			}
		}
	}
	if miss.InPort != 1 || miss.Reason != hal.ReasonMiss {
		t.Fatalf("miss exception: port %d reason %v", miss.InPort, miss.Reason)
	}
	back := udpSocket(t, h1.vmNS, h1.ca, 9002)
	reply := wire.Build(wire.FrameSpec{SrcMAC: h2.vmMAC, DstMAC: h1.vmMAC, Src: h2.ca, Dst: h1.ca,
		Proto: hal.ProtoUDP, SrcPort: 9000, DstPort: 9002, Payload: []byte("reinjected by the host")})
	if err := n1.Inject(ctx, 1, [][]byte{reply}); err != nil {
		t.Fatal(err)
	}
	if got := countUDP(back, 300*time.Millisecond); got != 1 {
		t.Fatalf("injected frame: %d arrived", got)
	}

	// Replace swaps the programs on the links; traffic keeps flowing and
	// the old programs are gone.
	old := n1.ProgramIDs()
	if err := n1.Replace(); err != nil {
		t.Fatal(err)
	}
	for _, id := range old {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			t.Fatalf("program %d still loaded after Replace", id)
		}
	}
	if got := ping(t, h1.vmNS, h2.ca, 2); got != 2 {
		t.Fatalf("ping after Replace: %d of 2", got)
	}

	// Someone else detaches host2's uplink program: Attached says so.
	if err := n2.Attached(); err != nil {
		t.Fatalf("Attached before: %v", err)
	}
	info, err := n2.ports[2].link.Info()
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := link.NewFromID(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := foreign.Detach(); err != nil {
		t.Fatal(err)
	}
	foreign.Close()
	if err := n2.Attached(); !errors.Is(err, ErrDetached) {
		t.Fatalf("Attached after a foreign detach: %v", err)
	}

	// Close leaves the interfaces as they were: no XDP program, none of
	// the NIC's programs loaded, no goroutine left.
	ids := append(n1.ProgramIDs(), n2.ProgramIDs()...)
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n2.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	for _, h := range []*host{h1, h2} {
		for _, dev := range []string{h.up, h.vport} {
			if xdpAttached(t, h.ns, dev) {
				t.Errorf("%s/%s still has an XDP program after Close", h.ns, dev)
			}
		}
	}
	for _, id := range ids {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			t.Errorf("program %d still loaded after Close", id)
		}
	}
	if err := n1.Close(); !errors.Is(err, hal.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if _, err := n1.ReadExceptions(ctx, batch); !errors.Is(err, hal.ErrClosed) {
		t.Errorf("ReadExceptions after Close: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > goroutines {
		t.Errorf("%d goroutines after Close, %d before", g, goroutines)
	}
}

// TestGenericMode attaches in generic (skb) mode and still carries traffic.
func TestGenericMode(t *testing.T) {
	requireRoot(t)
	h1, h2 := twoHosts(t)
	n1 := openHost(t, h1, ModeGeneric)
	defer n1.Close()
	n2 := openHost(t, h2, ModeGeneric)
	defer n2.Close()
	if m, _ := n1.PortMode(2); m != ModeGeneric {
		t.Fatalf("mode %v", m)
	}
	// The kernel keeps the VM's TSO in generic mode, and Open says what
	// that means.
	if segmentationOff(t, h1.vmNS, h1.vmDev) {
		t.Error("TSO turned off on the VM's end in generic mode")
	}
	if notes := strings.Join(n1.Capabilities().Notes, "\n"); !strings.Contains(notes, h1.vport+": veth, generic mode") ||
		!strings.Contains(notes, "bulk TCP needs driver mode") {
		t.Errorf("notes:\n%s", notes)
	}
	mustApply(t, n1, overlayRules(h1, h2, 7)...)
	mustApply(t, n2, overlayRules(h2, h1, 7)...)
	if got := ping(t, h1.vmNS, h2.ca, 3); got != 3 {
		t.Fatalf("ping in generic mode: %d of 3", got)
	}
}

// TestOffloadRefused: offload mode is reported only when the attach
// succeeds; veth has no offload, so Open fails and says why.
func TestOffloadRefused(t *testing.T) {
	requireRoot(t)
	h1, _ := twoHosts(t)
	n, err := Open(context.Background(), Config{NetNS: "/var/run/netns/" + h1.ns, Mode: ModeOffload,
		Ports: []PortConfig{{Name: h1.up, Kind: hal.PortUplink}}})
	if err == nil {
		c := n.Capabilities()
		n.Close()
		if c.Location != hal.LocationHardware {
			t.Fatalf("offload attach succeeded but capabilities say %v", c.Location)
		}
		return
	}
	if xdpAttached(t, h1.ns, h1.up) {
		t.Fatal("a failed Open left a program attached")
	}
}
