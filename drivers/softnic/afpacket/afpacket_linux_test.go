//go:build linux

package afpacket

import (
	"context"
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

func skipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace with veth pairs")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip to create the namespace")
	}
}

func ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v\n%s", args, err, out)
	}
}

// peerSock is a raw socket on the far end of a veth: what the VM (or the
// wire) sees, tags included.
type peerSock struct{ *rawsock.Socket }

func (p peerSock) send(t *testing.T, f []byte) {
	t.Helper()
	if err := p.Send(f); err != nil {
		t.Fatal(err)
	}
}

// recvMatching waits up to 10s for a frame equal to want, ignoring others
// (IPv6 router solicitations and the like that a fresh link sends).
func (p peerSock) recvMatching(t *testing.T, want []byte) {
	t.Helper()
	buf := make([]byte, 1<<16)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		f, err := p.Recv(buf)
		if err != nil {
			continue
		}
		if string(f) == string(want) {
			return
		}
	}
	t.Fatalf("the frame never arrived on the peer")
}

// A frame written on a VM's side of a veth reaches the NIC on the bound
// port (here: the exception path, as the table is empty), and a frame the
// NIC sends out of a port leaves on its interface, VLAN tags included.
func TestBindMovesFramesBothWays(t *testing.T) {
	skipUnlessRoot(t)
	ns := fmt.Sprintf("npafp-%d", os.Getpid())
	ip(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, pair := range [][2]string{{"vm0", "vm0p"}, {"up0", "up0p"}} {
		ip(t, "-n", ns, "link", "add", pair[0], "type", "veth", "peer", "name", pair[1])
		ip(t, "-n", ns, "link", "set", pair[0], "up")
		ip(t, "-n", ns, "link", "set", pair[1], "up")
	}
	nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm0", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:00:00:01")},
		{Name: "up0", Kind: hal.PortUplink, MAC: hal.MustMAC("02:00:00:00:00:02"), MTU: 1500},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	vmPort, _ := nic.Port(1)
	upPort, _ := nic.Port(2)
	var vmPeer, upPeer peerSock
	var bindings []*Binding
	defer func() {
		for _, b := range bindings {
			b.Close()
		}
		for _, p := range []peerSock{vmPeer, upPeer} {
			if p.Socket != nil {
				p.Close()
			}
		}
	}()
	err = nsexec.Do("/run/netns/"+ns, func() error {
		for _, x := range []struct {
			p      *softnic.Port
			ifname string
		}{{vmPort, "vm0"}, {upPort, "up0"}} {
			b, err := Bind(x.p, x.ifname, Options{})
			if err != nil {
				return err
			}
			bindings = append(bindings, b)
		}
		var err error
		peer := rawsock.Options{SkipOutgoing: true}
		if vmPeer.Socket, err = rawsock.Open("vm0p", peer); err != nil {
			return err
		}
		upPeer.Socket, err = rawsock.Open("up0p", peer)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	frame := wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:0b:00:01"), DstMAC: hal.MustMAC("02:00:00:0b:00:02"),
		Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), Proto: hal.ProtoUDP,
		SrcPort: 1000, DstPort: 2000, Payload: []byte("afpacket")})
	vmPeer.send(t, frame)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	batch := []hal.Exception{{Buf: make([]byte, 2048)}}
	for {
		n, err := nic.ReadExceptions(ctx, batch)
		if err != nil {
			t.Fatalf("no exception for the VM's frame: %v", err)
		}
		if n == 1 && string(batch[0].Frame()) == string(frame) {
			break
		}
	}
	if batch[0].InPort != 1 || batch[0].Reason != hal.ReasonMiss {
		t.Fatalf("exception on port %d reason %s, want port 1 miss", batch[0].InPort, batch[0].Reason)
	}

	tagged := wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:00:00:02"), DstMAC: hal.MustMAC("02:00:00:00:00:03"),
		VLAN: 42, Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"), Proto: hal.ProtoUDP,
		SrcPort: 3000, DstPort: 4000, Payload: []byte("out of the uplink")})
	if err := nic.Inject(ctx, 2, [][]byte{tagged}); err != nil {
		t.Fatal(err)
	}
	upPeer.recvMatching(t, tagged)

	// The tag the far side's kernel strips is given back to the NIC. The
	// peer's own kernel sends on that link too (IPv6 multicast listener
	// reports, router solicitations), so the uplink's other frames are
	// passed over and the last one is shown if ours never comes.
	upPeer.send(t, tagged)
	var other []byte
	for {
		n, err := nic.ReadExceptions(ctx, batch)
		if err != nil {
			t.Fatalf("no exception for the tagged frame (%v); the uplink's last other frame: % x", err, other)
		}
		if n == 1 && batch[0].InPort == 2 {
			if string(batch[0].Frame()) == string(tagged) {
				break
			}
			other = append(other[:0], batch[0].Frame()...)
		}
	}
	// A binding counts a frame after the write that delivered it returns:
	// the peer can have it first.
	for i, b := range bindings {
		deadline := time.Now().Add(10 * time.Second)
		s := b.Stats()
		for (s.RxFrames == 0 || (i == 1 && s.TxFrames == 0)) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			s = b.Stats()
		}
		if s.RxFrames == 0 || (i == 1 && s.TxFrames == 0) {
			t.Errorf("binding %s counters: %+v", b.Interface(), s)
		}
	}
}
