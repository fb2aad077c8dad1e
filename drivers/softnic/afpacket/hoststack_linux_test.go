//go:build linux

package afpacket

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
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

// watchers counts the goroutines takeFromHost started (its watch) that
// are still running, in the whole process: those whose stack says they
// were created by it, started or not yet.
func watchers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "\ncreated by github.com/nicpath/nicpath/drivers/softnic/afpacket.takeFromHost ")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitFor polls cond for up to 10 s and fails with what when it never
// holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
	}
}

// An address added to an address-less uplink while it is bound gives the
// interface back to the host's stack: the watch detaches the drop (counted
// in Stats.ReturnedToHost), and the host answers a ping on that address,
// where before it dropped every frame. IPv6 turned on does the same. A
// binding closed with the drop attached, or after the watch lifted it,
// leaves no program on the interface and no goroutine running.
func TestUplinkReturnedToHostStack(t *testing.T) {
	l := newLab(t, "hr")
	host, wireNS := l.ns("h"), l.ns("w")
	ipv6Off(t, host)
	upMAC := hal.MustMAC("02:00:00:00:0e:11")
	l.veth(wireNS, "up0p", host, "up0", upMAC)
	l.veth(wireNS, "up1p", host, "up1", hal.MustMAC("02:00:00:00:0e:12"))
	uplink := func(name string, mac hal.MAC) *Binding {
		t.Helper()
		nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{{Name: name, Kind: hal.PortUplink, MAC: mac, MTU: 1500}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nic.Close() })
		return bind(t, host, nic, name)[0]
	}
	base := watchers()

	b := uplink("up0", upMAC)
	if !b.TakesFromHost() || tcxPrograms(t, host, "up0") != 1 || watchers() != base+1 {
		t.Fatalf("bound without an address: TakesFromHost %v, %d programs on its tcx ingress, %d watchers; want true, 1, 1",
			b.TakesFromHost(), tcxPrograms(t, host, "up0"), watchers()-base)
	}
	// The host's stack drops what it is sent while the drop is attached.
	var sender *rawsock.Socket
	err := nsexec.Do(nsPath(wireNS), func() (err error) {
		sender, err = rawsock.Open("up0p", rawsock.Options{SendOnly: true})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sender.Close() })
	f := wire.Build(wire.FrameSpec{SrcMAC: hal.MustMAC("02:00:00:00:0e:1f"), DstMAC: upMAC,
		Src: netip.MustParseAddr("198.18.0.2"), Dst: netip.MustParseAddr("198.18.0.1"), Proto: hal.ProtoUDP,
		SrcPort: 40000, DstPort: 4789, Payload: make([]byte, 64)})
	in0, rx0 := ipIn(t, host), b.Stats().RxFrames
	const frames = 10
	for range frames {
		if err := sender.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the binding never took the frames", func() bool { return b.Stats().RxFrames >= rx0+frames })
	if in := ipIn(t, host) - in0; in != 0 {
		t.Fatalf("the host's stack received %d of the uplink's frames while the drop was attached", in)
	}

	// An address: the watch lifts the drop, and the host answers on it.
	ip(t, "-n", host, "addr", "add", "198.18.0.1/24", "dev", "up0")
	ip(t, "-n", wireNS, "addr", "add", "198.18.0.2/24", "dev", "up0p")
	// The watch returns once it has detached the drop.
	waitFor(t, "the watch never returned after the address was added", func() bool { return watchers() == base })
	if b.TakesFromHost() || b.Stats().ReturnedToHost != 1 {
		t.Fatalf("after the address: TakesFromHost %v, ReturnedToHost %d; want false, 1", b.TakesFromHost(), b.Stats().ReturnedToHost)
	}
	if n := tcxPrograms(t, host, "up0"); n != 0 {
		t.Fatalf("%d programs on the uplink's tcx ingress after the address was added, want 0", n)
	}
	waitFor(t, "the host never answered a ping on the address added", func() bool {
		return exec.Command("ip", "netns", "exec", wireNS, "ping", "-c1", "-W1", "198.18.0.1").Run() == nil
	})
	b.Close()
	// Close has waited for the watch to return; the goroutine may still be
	// on its way out, so allow it a moment. One blocked in
	// its socket never leaves.
	waitFor(t, "a watcher still runs after Close", func() bool { return watchers() == base })

	// Closed with the drop attached: no program and no watcher is left.
	b = uplink("up1", hal.MustMAC("02:00:00:00:0e:12"))
	if !b.TakesFromHost() || watchers() != base+1 {
		t.Fatalf("bound without an address: TakesFromHost %v, %d watchers; want true, 1", b.TakesFromHost(), watchers()-base)
	}
	b.Close()
	if n := tcxPrograms(t, host, "up1"); n != 0 {
		t.Fatalf("%d programs on the uplink's tcx ingress after Close, want 0", n)
	}
	waitFor(t, "the watcher still runs after Close", func() bool { return watchers() == base })
	if b.Stats().ReturnedToHost != 0 {
		t.Fatal("Close counted as the uplink returned to the host's stack")
	}

	// IPv6 turned on (a link-local address follows): the same.
	b = uplink("up1", hal.MustMAC("02:00:00:00:0e:12"))
	if !b.TakesFromHost() {
		t.Fatal("bound again without an address: not TakesFromHost")
	}
	err = nsexec.Do(nsPath(host), func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/up1/disable_ipv6", []byte("0"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watch never returned after IPv6 came on", func() bool { return watchers() == base })
	if n := tcxPrograms(t, host, "up1"); b.TakesFromHost() || n != 0 || b.Stats().ReturnedToHost != 1 {
		t.Fatalf("after IPv6 came on: TakesFromHost %v, %d programs, ReturnedToHost %d; want false, 0, 1",
			b.TakesFromHost(), n, b.Stats().ReturnedToHost)
	}
}
