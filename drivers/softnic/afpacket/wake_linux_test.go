//go:build linux

package afpacket

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	rawsock "github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// Every frame leaves, whoever puts it in a port's ring and when: frames
// injected on the VM's port while that port's reader forwards a flood
// toward the uplink (some land while a reader hands a burst to the NIC,
// when the port is only marked pending and the reader's drain takes them
// or wakes the writer; every other one is injected as a reader's burst
// puts frames there, counted, then drained) all leave on the interface,
// with the writer's idle check, which would send a forgotten frame out
// after a while, set to an hour.
func TestInjectedFramesLeaveDuringBursts(t *testing.T) {
	skipUnlessRoot(t)
	// Restored after the bindings closed (cleanups run last first), so
	// that no writer reads it then.
	idleCheck = time.Hour
	t.Cleanup(func() { idleCheck = 100 * time.Millisecond })
	ns := fmt.Sprintf("npwake-%d", os.Getpid())
	ip(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, pair := range [][2]string{{"vm0", "vm0p"}, {"up0", "up0p"}} {
		ip(t, "-n", ns, "link", "add", pair[0], "type", "veth", "peer", "name", pair[1])
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
	var flood, rx *rawsock.Socket
	err = nsexec.Do(nsPath(ns), func() error {
		var err error
		if flood, err = rawsock.Open("vm0p", rawsock.Options{SendOnly: true}); err != nil {
			return err
		}
		rx, err = rawsock.Open("vm0p", rawsock.Options{SkipOutgoing: true, PollInterval: 100 * time.Millisecond})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	defer rx.Close()

	// The flood: batches of 64 frames from the VM, until the injections
	// are done (at most 100,000 batches).
	f := wire.Build(wire.FrameSpec{SrcMAC: macVMA, DstMAC: macVMB, Src: netip.MustParseAddr("192.0.2.1"),
		Dst: netip.MustParseAddr("192.0.2.2"), Proto: hal.ProtoUDP, SrcPort: 1, DstPort: 9, Payload: make([]byte, 18)})
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = f
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 100000 {
			select {
			case <-stop:
				return
			default:
			}
			flood.SendBatch(frames) // a full veth is backpressure, not an error here
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	// The flood reaches the NIC before the first injection.
	deadline := time.Now().Add(10 * time.Second)
	for bs[0].Stats().RxFrames == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	rx0 := bs[0].Stats().RxFrames
	if rx0 == 0 {
		t.Fatal("no frame of the flood reached the NIC in 10s")
	}

	const injections = 200
	ctx := context.Background()
	buf := make([]byte, 1<<16)
	for i := range injections {
		want := wire.Build(wire.FrameSpec{SrcMAC: macVMB, DstMAC: macVMA, Src: netip.MustParseAddr("192.0.2.2"),
			Dst: netip.MustParseAddr("192.0.2.1"), Proto: hal.ProtoUDP, SrcPort: 9, DstPort: 1, Payload: []byte(fmt.Sprintf("injected %d", i))})
		if i%2 == 1 {
			// As a reader's burst would put it there: counted while the
			// NIC takes it (the port is only marked), then drained.
			bursts.Add(1)
			err = nic.Inject(ctx, 1, [][]byte{want})
			bursts.Add(-1)
			drainPeers()
		} else {
			err = nic.Inject(ctx, 1, [][]byte{want})
		}
		if err != nil {
			t.Fatal(err)
		}
		got := false
		for deadline := time.Now().Add(10 * time.Second); !got && time.Now().Before(deadline); {
			f, err := rx.Recv(buf)
			got = err == nil && string(f) == string(want)
		}
		if !got {
			t.Fatalf("injected frame %d of %d did not leave in 10s (the flood forwarded %d frames meanwhile); binding: %+v",
				i, injections, bs[0].Stats().RxFrames-rx0, bs[0].Stats())
		}
	}
	if bs[0].Stats().RxFrames == rx0 {
		t.Fatal("the flood stopped before the injections: nothing tested them during bursts")
	}
}
