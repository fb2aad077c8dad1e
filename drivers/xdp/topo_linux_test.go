//go:build linux

package xdp

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

var nsSeq atomic.Uint32

// nsName returns a namespace name unique to this process and call, so that
// parallel runs never collide.
func nsName(role string) string {
	return fmt.Sprintf("np-xdp-%d-%d-%s", os.Getpid(), nsSeq.Add(1), role)
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNS creates a network namespace that is deleted when the test ends,
// also on failure.
func newNS(t testing.TB, role string) string {
	t.Helper()
	name := nsName(role)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// veth creates a veth pair with one end in each namespace.
func veth(t testing.TB, nsA, a, nsB, b string) {
	t.Helper()
	run(t, "ip", "-n", nsA, "link", "add", a, "type", "veth", "peer", "name", b, "netns", nsB)
	run(t, "ip", "-n", nsA, "link", "set", a, "up")
	run(t, "ip", "-n", nsB, "link", "set", b, "up")
}

func linkMAC(t testing.TB, ns, dev string) hal.MAC {
	t.Helper()
	var m hal.MAC
	inNS(t, ns, func() {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			t.Error(err)
			return
		}
		copy(m[:], ifi.HardwareAddr)
	})
	return m
}

// inNS runs fn on a locked thread inside namespace ns. fn must not call
// t.Fatal (it runs on another goroutine); it reports with t.Error.
func inNS(t testing.TB, ns string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	var failed error
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			failed = err
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(ns)
		if err != nil {
			failed = err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			failed = err
			return
		}
		fn()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
	if failed != nil {
		t.Fatalf("netns %s: %v", ns, failed)
	}
}

// passProg attaches an XDP_PASS program to a VM-side veth: a veth delivers
// frames that its peer received by XDP redirect only when NAPI runs on it,
// which an attached XDP program turns on. This is test topology, inside a
// test namespace.
func passProg(t testing.TB, ns, dev string) link.Link {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	var l link.Link
	inNS(t, ns, func() {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			t.Error(err)
			return
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index})
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() { l.Close() })
	})
	t.Cleanup(func() { prog.Close() })
	return l
}

// host is one simulated host: a namespace with an uplink veth to the
// underlay and one vport veth to its VM's namespace.
type host struct {
	ns, vmNS     string
	up, vport    string // interfaces in ns
	vmDev        string // the VM's interface, in vmNS
	pa, ca       netip.Addr
	upMAC, vmMAC hal.MAC
	vmXDP        link.Link // the XDP_PASS program on the VM's interface
}

// twoHosts builds VM1—host1 ═underlay═ host2—VM2. The VMs share the overlay
// subnet 198.19.1.0/24 and know each other's MAC (static neighbours), so no
// ARP crosses; the underlay is 198.18.0.0/24 between the hosts' uplinks.
func twoHosts(t testing.TB) (h1, h2 *host) {
	t.Helper()
	mk := func(i int) *host {
		h := &host{ns: newNS(t, fmt.Sprintf("h%d", i)), vmNS: newNS(t, fmt.Sprintf("vm%d", i)),
			up: "up0", vport: fmt.Sprintf("vp%d", i), vmDev: "eth0",
			pa: netip.MustParseAddr(fmt.Sprintf("198.18.0.%d", i)), ca: netip.MustParseAddr(fmt.Sprintf("198.19.1.%d", i))}
		veth(t, h.ns, h.vport, h.vmNS, h.vmDev)
		run(t, "ip", "-n", h.vmNS, "addr", "replace", h.ca.String()+"/24", "dev", h.vmDev)
		h.vmMAC = linkMAC(t, h.vmNS, h.vmDev)
		h.vmXDP = passProg(t, h.vmNS, h.vmDev)
		return h
	}
	h1, h2 = mk(1), mk(2)
	run(t, "ip", "-n", h1.ns, "link", "add", h1.up, "type", "veth", "peer", "name", h2.up, "netns", h2.ns)
	run(t, "ip", "-n", h1.ns, "link", "set", h1.up, "up")
	run(t, "ip", "-n", h2.ns, "link", "set", h2.up, "up")
	for _, h := range []*host{h1, h2} {
		run(t, "ip", "-n", h.ns, "addr", "replace", h.pa.String()+"/24", "dev", h.up)
		h.upMAC = linkMAC(t, h.ns, h.up)
	}
	for _, p := range [][2]*host{{h1, h2}, {h2, h1}} {
		run(t, "ip", "-n", p[0].vmNS, "neigh", "replace", p[1].ca.String(), "lladdr", p[1].vmMAC.String(), "dev", p[0].vmDev, "nud", "permanent")
	}
	return h1, h2
}

// openHost opens the XDP NIC on h: port 1 the vport, port 2 the uplink.
func openHost(t testing.TB, h *host, mode Mode) *NIC {
	t.Helper()
	n, err := Open(context.Background(), Config{NetNS: "/var/run/netns/" + h.ns, Mode: mode,
		Ports: []PortConfig{{ID: 1, Name: h.vport, Kind: hal.PortVPort}, {ID: 2, Name: h.up, Kind: hal.PortUplink}}})
	if err != nil {
		t.Fatalf("Open on %s: %v", h.ns, err)
	}
	return n
}

// overlayRules are what a vswitch offloads for VM-to-VM traffic between the
// hosts: on the vport, traffic to the remote CA is VXLAN encapsulated to the
// remote PA; on the uplink, VXLAN for the local CA is decapsulated to the
// vport.
func overlayRules(local, remote *host, vni uint32) []hal.Op {
	var out, in hal.Match
	out.InPort(1).IPDst(netip.PrefixFrom(remote.ca, 32))
	in.InPort(2).Tunnel(hal.EncapVXLAN, vni).IPDst(netip.PrefixFrom(local.ca, 32))
	e := hal.Encap{Kind: hal.EncapVXLAN, VNI: vni, Src: local.pa, Dst: remote.pa, SrcMAC: local.upMAC, DstMAC: remote.upMAC}
	return []hal.Op{
		hal.AddOp(hal.Rule{ID: 1, Priority: 10, Match: out, Actions: []hal.Action{hal.Count(), hal.EncapWith(e), hal.Output(2)}}),
		hal.AddOp(hal.Rule{ID: 2, Priority: 10, Match: in, Actions: []hal.Action{hal.Decap(), hal.Count(), hal.Output(1)}}),
	}
}

// ping sends count ICMP echo requests from ns to dst and returns how many
// replies came back (a raw ICMP socket: the machine may have no ping).
func ping(t *testing.T, ns string, dst netip.Addr, count int) int {
	t.Helper()
	got := 0
	inNS(t, ns, func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		sa := &unix.SockaddrInet4{Addr: dst.As4()}
		id := uint16(os.Getpid())
		buf := make([]byte, 1500)
		for seq := 1; seq <= count; seq++ {
			msg := make([]byte, 8+32)
			msg[0] = 8
			binary.BigEndian.PutUint16(msg[4:], id)
			binary.BigEndian.PutUint16(msg[6:], uint16(seq))
			binary.BigEndian.PutUint16(msg[2:], wire.Checksum(msg, 0))
			if err := unix.Sendto(fd, msg, 0, sa); err != nil {
				t.Error(err)
				return
			}
			deadline := time.Now().Add(5 * time.Second) // the kernel answers at once; a loaded machine runs this loop late
			for time.Now().Before(deadline) {
				k, _, err := unix.Recvfrom(fd, buf, 0)
				if err != nil {
					continue
				}
				ihl := int(buf[0]&0x0f) * 4
				if k >= ihl+8 && buf[ihl] == 0 && binary.BigEndian.Uint16(buf[ihl+4:]) == id &&
					binary.BigEndian.Uint16(buf[ihl+6:]) == uint16(seq) {
					got++
					break
				}
			}
		}
	})
	return got
}

// udpSocket opens a UDP socket in ns bound to addr:port.
func udpSocket(t *testing.T, ns string, addr netip.Addr, port int) int {
	t.Helper()
	fd := -1
	inNS(t, ns, func() {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Error(err)
			return
		}
		// Frames that came by XDP redirect are charged a page each
		// against the receive buffer: make room for a burst.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: addr.As4(), Port: port}); err != nil {
			t.Error(err)
		}
	})
	if fd < 0 {
		t.FailNow()
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// countUDP reads datagrams from fd until it has been quiet for quiet.
func countUDP(fd int, quiet time.Duration) int {
	tv := unix.NsecToTimeval(int64(quiet))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 2048)
	n := 0
	for {
		if _, _, err := unix.Recvfrom(fd, buf, 0); err != nil {
			return n
		}
		n++
	}
}

// xdpAttached reports whether ip shows an XDP program on dev in ns.
func xdpAttached(t *testing.T, ns, dev string) bool {
	t.Helper()
	out := run(t, "ip", "-n", ns, "-d", "link", "show", "dev", dev)
	return strings.Contains(out, "prog/xdp")
}

func netInterfaceByName(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return ifi.Index, nil
}

var (
	passLinksMu sync.Mutex
	passLinks   = map[string][]func(){} // namespace → closers
)

// attachPass is passProg for code without a testing.TB: the program and
// link are released by the harness's Close.
func attachPass(ns, dev string) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		return err
	}
	return inNetNS("/var/run/netns/"+ns, func() error {
		idx, err := netInterfaceByName(dev)
		if err != nil {
			prog.Close()
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: idx})
		if err != nil {
			prog.Close()
			return err
		}
		passLinksMu.Lock()
		passLinks[ns] = append(passLinks[ns], func() { l.Close(); prog.Close() })
		passLinksMu.Unlock()
		return nil
	})
}
