//go:build linux

package afpacket

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	rawsock "github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// ipv6Off turns IPv6 off in ns for the interfaces created after it.
func ipv6Off(t *testing.T, ns string) {
	t.Helper()
	err := nsexec.Do(nsPath(ns), func() error {
		for _, k := range []string{"all", "default"} {
			// /proc/sys/net is the opening thread's namespace's.
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ipIn is the IPv4 packets ns's stack received (IpInReceives: counted
// before routing, the drop of a frame for no address included).
func ipIn(t *testing.T, ns string) uint64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nstat", "-asz", "IpInReceives").CombinedOutput()
	if err != nil {
		t.Fatalf("nstat in %s: %v\n%s", ns, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "IpInReceives" {
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("nstat line %q: %v", line, err)
			}
			return v
		}
	}
	t.Fatalf("nstat in %s printed no IpInReceives:\n%s", ns, out)
	return 0
}

// tcxPrograms counts the programs on ifname's tcx ingress in ns.
func tcxPrograms(t *testing.T, ns, ifname string) int {
	t.Helper()
	var n int
	err := nsexec.Do(nsPath(ns), func() error {
		ifi, err := netInterface(ifname)
		if err != nil {
			return err
		}
		r, err := link.QueryPrograms(link.QueryOptions{Target: ifi, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		n = len(r.Programs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// An uplink the host's stack cannot use (no address, IPv6 off) keeps its
// frames from the host's stack while it is bound: the NIC gets every
// frame sent to the uplink's MAC and the host's IPv4 stack none; once the
// binding closes, its program is gone and the host's stack sees them
// again. A vport, and an uplink with an address or with IPv6 on, leave the
// host's stack as it was.
func TestUplinkFramesKeptFromHostStack(t *testing.T) {
	l := newLab(t, "hs")
	host, host6, wireNS := l.ns("h"), l.ns("h6"), l.ns("w")
	ipv6Off(t, host)
	upMAC := hal.MustMAC("02:00:00:00:0e:01")
	l.veth(wireNS, "up0p", host, "up0", upMAC)
	l.veth(wireNS, "vp0p", host, "vp0", hal.MustMAC("02:00:00:00:0e:02"))
	l.veth(wireNS, "up6p", host6, "up0", upMAC)
	newNIC := func() *softnic.NIC {
		nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
			{Name: "up0", Kind: hal.PortUplink, MAC: upMAC, MTU: 1500},
			{Name: "vp0", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:00:0e:02")},
		}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nic.Close() })
		return nic
	}
	var senders = map[string]*rawsock.Socket{}
	err := nsexec.Do(nsPath(wireNS), func() error {
		for _, dev := range []string{"up0p", "up6p"} {
			s, err := rawsock.Open(dev, rawsock.Options{SendOnly: true})
			if err != nil {
				return err
			}
			t.Cleanup(func() { s.Close() })
			senders[dev] = s
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Tunnel packets to the uplink's MAC and the NIC's provider address,
	// as a peer sends them.
	f := wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:00:0e:0f"), DstMAC: upMAC,
		Src: netip.MustParseAddr("198.18.0.2"), Dst: netip.MustParseAddr("198.18.0.1"), Proto: hal.ProtoUDP,
		SrcPort: 40000, DstPort: 4789, Payload: make([]byte, 64)})
	const frames = 20
	// send sends the frames to the uplink on dev, and waits until b took
	// them all.
	send := func(dev string, b *Binding) {
		t.Helper()
		rx0 := b.Stats().RxFrames
		for range frames {
			if err := senders[dev].Send(f); err != nil {
				t.Fatal(err)
			}
		}
		for deadline := time.Now().Add(10 * time.Second); b.Stats().RxFrames < rx0+frames; {
			if time.Now().After(deadline) {
				t.Fatalf("the binding on %s took %d of %d frames", b.Interface(), b.Stats().RxFrames-rx0, frames)
			}
			time.Sleep(time.Millisecond)
		}
	}

	nic := newNIC()
	bs := bind(t, host, nic, "up0", "vp0")
	up, vp := bs[0], bs[1]
	if !up.TakesFromHost() || vp.TakesFromHost() {
		t.Fatalf("TakesFromHost: uplink %v, vport %v; want true, false", up.TakesFromHost(), vp.TakesFromHost())
	}
	if n := tcxPrograms(t, host, "up0"); n != 1 {
		t.Fatalf("%d programs on the uplink's tcx ingress, want 1", n)
	}
	if n := tcxPrograms(t, host, "vp0"); n != 0 {
		t.Fatalf("%d programs on the vport's tcx ingress, want 0", n)
	}
	in0 := ipIn(t, host)
	send("up0p", up)
	if in := ipIn(t, host) - in0; in != 0 {
		t.Errorf("the host's stack received %d of the uplink's frames while bound", in)
	}
	up.Close()
	if n := tcxPrograms(t, host, "up0"); n != 0 {
		t.Fatalf("%d programs on the uplink's tcx ingress after Close, want 0", n)
	}
	in0 = ipIn(t, host)
	for range frames {
		if err := senders["up0p"].Send(f); err != nil {
			t.Fatal(err)
		}
	}
	waitIPIn(t, host, in0+frames)

	// With an address, the host's stack may use the uplink: it sees the
	// frames, and the NIC too.
	ip(t, "-n", host, "addr", "replace", "198.18.0.1/24", "dev", "up0")
	bs = bind(t, host, newNIC(), "up0")
	if bs[0].TakesFromHost() {
		t.Fatal("an uplink with an address: TakesFromHost")
	}
	in0 = ipIn(t, host)
	send("up0p", bs[0])
	waitIPIn(t, host, in0+frames)

	// With IPv6 on (a link-local address may come at any time), too.
	bs = bind(t, host6, newNIC(), "up0")
	if bs[0].TakesFromHost() {
		t.Fatal("an uplink with IPv6 on: TakesFromHost")
	}
	in0 = ipIn(t, host6)
	send("up6p", bs[0])
	waitIPIn(t, host6, in0+frames)
}

// waitIPIn waits until ns's IpInReceives reaches want.
func waitIPIn(t *testing.T, ns string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		in := ipIn(t, ns)
		if in >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's stack received %d IPv4 packets, want %d", ns, in, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// netInterface is the index of the interface name in the calling
// thread's namespace.
func netInterface(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return ifi.Index, nil
}
