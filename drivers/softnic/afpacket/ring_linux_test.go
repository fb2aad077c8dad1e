//go:build linux

package afpacket

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	rawsock "github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// The binding reads through its receive ring: frames wrap around the
// ring's slots and reach the far port whole and in order, and a frame
// longer than a slot (the interface's MTU is larger than the port's)
// takes the copy path and reaches the NIC whole (here the NIC counts it
// too long for the port and drops it: nothing of the binding's).
func TestRingCarriesBurstsInOrderAndLongFrames(t *testing.T) {
	skipUnlessRoot(t)
	burstsAndLongFrames(t, true)
}

// The same with recvmsg and sendmmsg, the paths of a kernel that refuses
// the rings.
func TestRecvmsgCarriesBurstsInOrderAndLongFrames(t *testing.T) {
	skipUnlessRoot(t)
	testNoRing, testNoTxRing = true, true
	defer func() { testNoRing, testNoTxRing = false, false }()
	burstsAndLongFrames(t, false)
}

func burstsAndLongFrames(t *testing.T, ring bool) {
	ns := fmt.Sprintf("npring-%d", os.Getpid())
	ip(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, pair := range [][2]string{{"vm0", "vm0p"}, {"up0", "up0p"}} {
		ip(t, "-n", ns, "link", "add", pair[0], "mtu", "9000", "type", "veth", "peer", "name", pair[1], "mtu", "9000")
		ip(t, "-n", ns, "link", "set", pair[0], "up")
		ip(t, "-n", ns, "link", "set", pair[1], "up")
	}
	nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm0", Kind: hal.PortVPort, MTU: 1500}, {Name: "up0", Kind: hal.PortUplink, MTU: 1500},
	}, RingSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	var m hal.Match
	m.InPort(1)
	apply(t, nic, hal.Rule{ID: 1, Match: m, Actions: []hal.Action{hal.Output(2)}})
	bs := bind(t, ns, nic, "vm0", "up0")
	for _, b := range bs {
		if ring != (b.ring != nil) || ring != (b.wait != nil) || ring != (b.txr != nil) {
			t.Fatalf("%s: receive ring %v, waiter in the Go poller %v, transmit ring %v; want %v", b.Interface(), b.ring != nil, b.wait != nil, b.txr != nil, ring)
		}
	}
	var vmPeer, upPeer *rawsock.Socket
	err = nsexec.Do(nsPath(ns), func() error {
		var err error
		if vmPeer, err = rawsock.Open("vm0p", rawsock.Options{SendOnly: true}); err != nil {
			return err
		}
		upPeer, err = rawsock.Open("up0p", rawsock.Options{SkipOutgoing: true, RecvBuffer: 16 << 20})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer vmPeer.Close()
	defer upPeer.Close()

	frame := func(seq uint32, size int) []byte {
		p := make([]byte, size)
		binary.BigEndian.PutUint32(p, seq)
		return wire.Build(wire.FrameSpec{SrcMAC: macVMA, DstMAC: macVMB, Src: netip.MustParseAddr("198.18.7.1"),
			Dst: netip.MustParseAddr("198.18.7.2"), Proto: hal.ProtoUDP, SrcPort: 7, DstPort: 7, Payload: p})
	}
	// Three times the ring's slots, in steps the binding keeps up with.
	const total, step = 3 * ringFrames, 128
	vm := bs[0]
	for sent := 0; sent < total; sent += step {
		var fs [][]byte
		for i := range step {
			fs = append(fs, frame(uint32(sent+i), 32))
		}
		if n, err := vmPeer.SendBatch(fs); err != nil || n != step {
			t.Fatalf("sent %d of %d: %v", n, step, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for vm.Stats().RxFrames < uint64(sent+step) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	buf := make([]byte, 1<<16)
	want := len(frame(0, 32))
	next := uint32(0)
	for deadline := time.Now().Add(10 * time.Second); next < total && time.Now().Before(deadline); {
		f, err := upPeer.Recv(buf)
		// Not ours: what a fresh link's kernel sends (IPv6 MLD reports).
		if err != nil || len(f) != want || f[23] != byte(hal.ProtoUDP) {
			continue
		}
		if got := binary.BigEndian.Uint32(f[42:]); got != next {
			t.Fatalf("frame %d arrived where %d was due", got, next)
		}
		next++
	}
	if next != total {
		t.Fatalf("%d of %d frames arrived; binding %+v", next, total, vm.Stats())
	}

	// Longer than a slot: the copy path, and the NIC sees all of it.
	pc0, err := nic.PortCounters(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	dropped := vm.Stats().RxDropped
	long := frame(0, 4000)
	if err := vmPeer.Send(long); err != nil {
		t.Fatal(err)
	}
	var pc hal.PortCounters
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if pc, err = nic.PortCounters(t.Context(), 1); err != nil {
			t.Fatal(err)
		}
		if pc.Rx.Bytes-pc0.Rx.Bytes >= uint64(len(long)) {
			break
		}
	}
	if got := pc.Rx.Bytes - pc0.Rx.Bytes; got < uint64(len(long)) || vm.Stats().RxDropped != dropped {
		t.Fatalf("after a %d-byte frame the NIC's port counted %d bytes more, the binding %+v", len(long), got, vm.Stats())
	}
}

// The ring's waiter wakes when its descriptor turns readable, returns at
// once when the condition already holds, allocates nothing for a wait,
// leaves the descriptor it watches open when it closes, and wakes a wait
// in progress with an error when it closes.
func TestRingWaiter(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	w, err := newRingWaiter(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Bool
	readable := func(uintptr) bool {
		n, _, err := unix.Recvfrom(fds[0], make([]byte, 1), unix.MSG_DONTWAIT|unix.MSG_PEEK)
		got.Store(err == nil && n == 1)
		return got.Load()
	}
	woke := make(chan error, 1)
	go func() { woke <- w.wait(readable) }()
	if _, err := unix.Write(fds[1], []byte{1}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woke:
		if err != nil || !got.Load() {
			t.Fatalf("wait returned %v with the condition %v", err, got.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a datagram did not wake the wait")
	}
	always := func(uintptr) bool { return true }
	if a := testing.AllocsPerRun(100, func() { w.wait(always) }); a != 0 {
		t.Errorf("a wait allocates %v times", a)
	}
	never := func(uintptr) bool { return false }
	go func() { woke <- w.wait(never) }()
	// Whether the wait is parked yet or not, close ends it.
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woke:
		if err == nil {
			t.Fatal("a wait ended by close returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("close did not wake the wait")
	}
	// The socket's own descriptor stays open.
	if _, err := unix.Write(fds[1], []byte{2}); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Read(fds[0], make([]byte, 1)); err != nil {
		t.Fatalf("the watched descriptor after close: %v", err)
	}
}
