//go:build linux

package afpacket_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// vethNS creates a network namespace holding a veth pair npa–npb, both up, and
// returns the namespace's path; the namespace goes when the test ends.
func vethNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace with a veth pair")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip to create the namespace")
	}
	name := fmt.Sprintf("nicpath-afpacket-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	run("-n", name, "link", "add", "name", "npa", "type", "veth", "peer", "name", "npb")
	run("-n", name, "link", "set", "npa", "up")
	run("-n", name, "link", "set", "npb", "up")
	// The kernel attaches a veth's qdisc once it sees the carrier, in its
	// link-watch work, a moment after ip returns (later under load): until
	// then the link drops what is sent on it. Wait for it rather than lose
	// a test's first frame.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("ip", "-n", name, "-o", "link", "show").CombinedOutput()
		if err != nil {
			t.Fatalf("ip link show: %v\n%s", err, out)
		}
		if ready := vethReady(string(out)); ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the veth pair is not up after 10s:\n%s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "/run/netns/" + name
}

// vethReady says whether ip -o link show lists npa and npb up, each with
// its qdisc attached.
func vethReady(links string) bool {
	up := 0
	for _, l := range strings.Split(links, "\n") {
		if (strings.Contains(l, " npa@") || strings.Contains(l, " npb@")) && strings.Contains(l, " state UP ") && !strings.Contains(l, " qdisc noop ") {
			up++
		}
	}
	return up == 2
}

func open(t *testing.T, ns, ifname string, o afpacket.Options) *afpacket.Socket {
	t.Helper()
	var s *afpacket.Socket
	err := nsexec.Do(ns, func() error {
		var err error
		s, err = afpacket.Open(ifname, o)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// frame is an Ethernet frame from 02:00:00:00:00:0a to 02:00:00:00:00:0b
// with an experimental ethertype, the payload made unique by seq, and a tag
// after the MAC addresses when tpid is not 0.
func frame(seq byte, tpid, tci uint16) []byte {
	f := []byte{2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa}
	if tpid != 0 {
		f = append(f, byte(tpid>>8), byte(tpid), byte(tci>>8), byte(tci))
	}
	f = append(f, 0x88, 0xb5, 'n', 'i', 'c', 'p', 'a', 't', 'h', seq)
	for len(f) < 60 {
		f = append(f, 0)
	}
	return f
}

// seen reads s into buf for up to d and says whether a frame equal to want
// arrived; others (such as the IPv6 solicitations of a fresh link) are
// passed over.
func seen(t *testing.T, s *afpacket.Socket, buf, want []byte, d time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		f, err := s.Recv(buf)
		if errors.Is(err, afpacket.ErrTimeout) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(f, want) {
			return true
		}
	}
	return false
}

// await fails unless want arrives on s within 3s.
func await(t *testing.T, s *afpacket.Socket, buf, want []byte) {
	t.Helper()
	if !seen(t, s, buf, want, 3*time.Second) {
		t.Fatalf("% x never arrived on %s", want, s.Name())
	}
}

// Frames sent on one end of a veth arrive on the other as they were sent,
// VLAN tags included (the kernel strips them into auxdata on the way in).
func TestSendRecvAcrossVeth(t *testing.T) {
	ns := vethNS(t)
	a := open(t, ns, "npa", afpacket.Options{SkipOutgoing: true})
	b := open(t, ns, "npb", afpacket.Options{SkipOutgoing: true, Promisc: true, PollInterval: 20 * time.Millisecond})
	if a.Ifindex() == 0 || a.Ifindex() == b.Ifindex() || a.FD() < 0 {
		t.Fatalf("ifindexes %d, %d; fd %d", a.Ifindex(), b.Ifindex(), a.FD())
	}
	cases := []struct {
		name string
		f    []byte
	}{
		{"untagged", frame(1, 0, 0)},
		{"802.1Q", frame(2, 0x8100, 100)},
		{"802.1ad", frame(3, 0x88a8, 0x2007)},
	}
	buf := make([]byte, 1<<16)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := a.Send(c.f); err != nil {
				t.Fatal(err)
			}
			await(t, b, buf, c.f)
		})
	}
	// A buffer with no room for the tag: the frame comes back whole in a
	// new slice.
	tagged := frame(4, 0x8100, 7)
	if err := a.Send(tagged); err != nil {
		t.Fatal(err)
	}
	await(t, b, make([]byte, len(tagged)-4), tagged)

	// Send is on the data path: no allocation per frame.
	if n := testing.AllocsPerRun(100, func() {
		if err := a.Send(tagged); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Send allocates %v times per frame", n)
	}
}

// With SkipOutgoing a socket does not see its own transmissions; without it
// a socket on the same interface does.
func TestSkipOutgoing(t *testing.T) {
	ns := vethNS(t)
	skip := open(t, ns, "npa", afpacket.Options{SkipOutgoing: true, PollInterval: 20 * time.Millisecond})
	all := open(t, ns, "npa", afpacket.Options{PollInterval: 20 * time.Millisecond})
	f := frame(9, 0x8100, 5)
	if err := skip.Send(f); err != nil {
		t.Fatal(err)
	}
	await(t, all, make([]byte, 1<<16), f)
	if seen(t, skip, make([]byte, 1<<16), f, 300*time.Millisecond) {
		t.Fatalf("a SkipOutgoing socket received its own frame")
	}
}

// Recv gives up after the poll interval, and at once when told not to wait.
func TestRecvTimeout(t *testing.T) {
	ns := vethNS(t)
	// Only an ethertype nobody sends, so the fresh link's chatter stays out.
	s := open(t, ns, "npb", afpacket.Options{Protocol: 0x88b6, PollInterval: 30 * time.Millisecond})
	buf := make([]byte, 1<<16)
	start := time.Now()
	if _, err := s.Recv(buf); !errors.Is(err, afpacket.ErrTimeout) {
		t.Fatalf("Recv on a quiet socket: %v", err)
	}
	// Not before the interval; the upper bound only tells "gave up" from
	// "blocked", with room for a loaded machine.
	if d := time.Since(start); d < 25*time.Millisecond || d > 10*time.Second {
		t.Errorf("Recv returned after %v, want about 30ms", d)
	}
	// Not waiting is told apart from waiting with an interval no loaded
	// machine's scheduling delay comes near (a fixed 20ms did).
	const long = 20 * time.Second
	sl := open(t, ns, "npb", afpacket.Options{Protocol: 0x88b6, PollInterval: long})
	start = time.Now()
	if _, _, err := sl.RecvFlags(buf, unix.MSG_DONTWAIT); !errors.Is(err, afpacket.ErrTimeout) {
		t.Fatalf("non-waiting RecvFlags on a quiet socket: %v", err)
	}
	if d := time.Since(start); d > long/4 {
		t.Errorf("non-waiting RecvFlags took %v: it waited for the %v poll interval", d, long)
	}
}

// A send-only socket injects frames and receives none.
func TestSendOnly(t *testing.T) {
	ns := vethNS(t)
	tx := open(t, ns, "npa", afpacket.Options{SendOnly: true})
	b := open(t, ns, "npb", afpacket.Options{})
	f := frame(5, 0, 0)
	if err := tx.Send(f); err != nil {
		t.Fatal(err)
	}
	await(t, b, make([]byte, 1<<16), f)
	if _, err := tx.Recv(make([]byte, 1<<16)); err == nil || errors.Is(err, afpacket.ErrTimeout) {
		t.Fatalf("Recv on a send-only socket: %v", err)
	}
	if err := tx.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Send(f); !errors.Is(err, afpacket.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
}

func TestOpenMissingInterface(t *testing.T) {
	ns := vethNS(t)
	err := nsexec.Do(ns, func() error {
		_, err := afpacket.Open("nope0", afpacket.Options{})
		return err
	})
	if err == nil {
		t.Fatal("opened a socket on an interface that does not exist")
	}
}
