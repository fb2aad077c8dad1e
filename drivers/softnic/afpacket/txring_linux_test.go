//go:build linux

package afpacket

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	rawsock "github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// Frames sent through the transmit ring go through the interface's taps
// (a capture on it sees them) and its qdiscs: a qdisc that drops them
// does, each dropped frame counts in TxErrors, and the ring goes on with
// the frames after it once the qdisc is gone (a frame the kernel left
// marked does not stop the ring, nor does it leave later).
func TestTxRingGoesThroughTapsAndQdiscs(t *testing.T) {
	skipUnlessRoot(t)
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("needs iproute2's tc for a qdisc that drops")
	}
	ns := fmt.Sprintf("nptxr-%d", os.Getpid())
	ip(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	// No IPv6: the links send nothing of their own, so the counts below
	// are of the test's frames alone.
	ip(t, "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	for _, pair := range [][2]string{{"vm0", "vm0p"}, {"up0", "up0p"}} {
		ip(t, "-n", ns, "link", "add", pair[0], "type", "veth", "peer", "name", pair[1])
		ip(t, "-n", ns, "link", "set", pair[0], "up")
		ip(t, "-n", ns, "link", "set", pair[1], "up")
	}
	tc := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("tc", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("tc %v: %v\n%s", args, err, out)
		}
	}
	nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm0", Kind: hal.PortVPort, MTU: 1500}, {Name: "up0", Kind: hal.PortUplink, MTU: 1500},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	var m hal.Match
	m.InPort(1)
	apply(t, nic, hal.Rule{ID: 1, Match: m, Actions: []hal.Action{hal.Output(2)}})
	bs := bind(t, ns, nic, "vm0", "up0")
	vm, up := bs[0], bs[1]
	if up.txr == nil {
		t.Fatal("no transmit ring")
	}
	var vmPeer, upPeer, tap *rawsock.Socket
	err = nsexec.Do(nsPath(ns), func() error {
		var err error
		if vmPeer, err = rawsock.Open("vm0p", rawsock.Options{SendOnly: true}); err != nil {
			return err
		}
		if upPeer, err = rawsock.Open("up0p", rawsock.Options{SkipOutgoing: true}); err != nil {
			return err
		}
		// As tcpdump on up0: it sees what the host sends out of it.
		tap, err = rawsock.Open("up0", rawsock.Options{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer vmPeer.Close()
	defer upPeer.Close()
	defer tap.Close()

	frame := func(seq uint32) []byte {
		p := make([]byte, 32)
		binary.BigEndian.PutUint32(p, seq)
		return wire.Build(wire.FrameSpec{SrcMAC: macVMA, DstMAC: macVMB, Src: netip.MustParseAddr("198.18.7.1"),
			Dst: netip.MustParseAddr("198.18.7.2"), Proto: hal.ProtoUDP, SrcPort: 7, DstPort: 7, Payload: p})
	}
	// next returns the sequence number of the next of our frames s
	// receives within 10 s, or -1.
	next := func(s *rawsock.Socket) int64 {
		buf := make([]byte, 1<<16)
		want := len(frame(0))
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			f, err := s.Recv(buf)
			if err != nil || len(f) != want || f[23] != byte(hal.ProtoUDP) {
				continue
			}
			return int64(binary.BigEndian.Uint32(f[42:]))
		}
		return -1
	}
	send := func(seq uint32) {
		t.Helper()
		if err := vmPeer.Send(frame(seq)); err != nil {
			t.Fatal(err)
		}
	}

	send(1)
	if got := next(upPeer); got != 1 {
		t.Fatalf("the wire got frame %d, want 1", got)
	}
	if got := next(tap); got != 1 {
		t.Fatalf("a capture on the interface saw frame %d, want 1", got)
	}
	// Counted once the send returned.
	waitFor(t, "one frame sent", func() bool { return up.Stats().TxFrames == 1 })

	// A queue that holds nothing: the qdisc drops every frame.
	tc("qdisc", "add", "dev", "up0", "root", "pfifo", "limit", "0")
	send(2)
	send(3)
	waitFor(t, "two refusals", func() bool { return up.Stats().TxErrors == 2 })
	tc("qdisc", "del", "dev", "up0", "root")
	send(4)
	if got := next(upPeer); got != 4 {
		t.Fatalf("after the drop rule went, the wire got frame %d, want 4", got)
	}
	waitFor(t, "two frames sent", func() bool { return up.Stats().TxFrames == 2 })
	if st := up.Stats(); st.TxErrors != 2 || vm.Stats().RxFrames != 4 {
		t.Fatalf("uplink's binding %+v, VM's %+v: want 2 frames sent, 2 refused, of 4", st, vm.Stats())
	}
	if up.txr.next == 0 || up.txr.unsent != up.txr.next {
		t.Fatalf("transmit ring at slot %d, %d not taken", up.txr.next, up.txr.unsent)
	}
}
