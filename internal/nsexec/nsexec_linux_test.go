//go:build linux

package nsexec_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// dummyNS creates a network namespace with a veth pair ifname–ifname+"p"
// and returns its path; the namespace goes when the test ends.
func dummyNS(t *testing.T, ifname string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip to create the namespace")
	}
	name := fmt.Sprintf("nicpath-nsexec-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "add", "name", ifname, "type", "veth", "peer", "name", ifname+"p").CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v\n%s", err, out)
	}
	return "/run/netns/" + name
}

// fn sees the namespace's interfaces, a socket opened there stays bound to
// the namespace's interface, and the caller's thread is in its own
// namespace afterwards.
func TestDoEntersAndLeaves(t *testing.T) {
	const ifname = "npnsx0"
	ns := dummyNS(t, ifname)
	if _, err := net.InterfaceByName(ifname); err == nil {
		t.Skipf("the test's namespace already has an interface %s", ifname)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	var inside *net.Interface
	var sock *afpacket.Socket
	err = nsexec.Do(ns, func() error {
		var err error
		if inside, err = net.InterfaceByName(ifname); err != nil {
			return err
		}
		sock, err = afpacket.Open(ifname, afpacket.Options{SendOnly: true})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	if sock.Ifindex() != inside.Index {
		t.Errorf("socket on ifindex %d, the namespace's %s is %d", sock.Ifindex(), ifname, inside.Index)
	}

	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !before.Equal(after) {
		t.Errorf("the caller's thread moved from %v to %v", before, after)
	}
	if _, err := net.InterfaceByName(ifname); err == nil {
		t.Errorf("%s is visible outside the namespace after Do", ifname)
	}
	// Other goroutines' threads are back too: none of them sees it.
	for range 8 {
		errc := make(chan error)
		go func() {
			_, err := net.InterfaceByName(ifname)
			errc <- err
		}()
		if <-errc == nil {
			t.Fatalf("%s is visible from another goroutine after Do", ifname)
		}
	}
}

func TestDoEmptyPathRunsDirectly(t *testing.T) {
	ran := false
	want := errors.New("fn's error")
	if err := nsexec.Do("", func() error { ran = true; return want }); !errors.Is(err, want) || !ran {
		t.Fatalf("Do(\"\"): ran %v, err %v", ran, err)
	}
}

func TestDoReturnsFnError(t *testing.T) {
	ns := dummyNS(t, "npnsx1")
	want := errors.New("fn's error")
	if err := nsexec.Do(ns, func() error { return want }); !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
}

func TestDoMissingNamespace(t *testing.T) {
	ran := false
	err := nsexec.Do("/run/netns/nicpath-no-such-namespace", func() error { ran = true; return nil })
	if err == nil || ran {
		t.Fatalf("ran %v, err %v", ran, err)
	}
}
