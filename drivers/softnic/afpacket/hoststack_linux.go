//go:build linux

package afpacket

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// tcxDrop is tcx's verdict that ends a frame (TCX_DROP, linux/bpf.h).
const tcxDrop = 2

// takeFromHost keeps the frames that arrive on the uplink ifname (index
// ifindex, in the calling thread's namespace) from the host's stack: a tcx
// ingress program that drops every frame. Ingress runs after the
// interface's AF_PACKET taps (the binding's own receive ring, a tcpdump)
// have their copy, and before the protocol handlers: the frames are the
// NIC's, as a NIC that owns its port never hands them to the host's stack.
//
// Why: an uplink carries no address (see the package doc), so the host's
// stack does nothing with its frames but drop them, at a cost paid in the
// softirq of whoever sent them: a frame for the uplink's own MAC (every
// tunnel packet a peer sends to the NIC's provider address) is routed (no
// route: a route cache entry built and freed for each) and dropped with
// an ICMP error attempt. Profiled under peerbed's CPS load, that was 5 to
// 10% of the vswitchd's CPU (its process sends the tunnel packets, so the
// peer host's softirq runs in it), and the program's run costs next to
// nothing.
//
// It takes the frames only from an interface the host's stack cannot use:
// no IPv4 address and IPv6 off on it (so that no link-local address can
// appear later), checked here; on any other it returns why not (and no
// Closer), and the host's stack sees the frames as before. An address
// added while the binding lives is not seen by the host's stack (the
// uplink should carry none). Kernels before 6.6 have no tcx: why not is
// returned too. The returned Closer detaches the program; so does the
// process's end (a link held by a file descriptor).
func takeFromHost(ifname string, ifindex int) (_ io.Closer, whyNot string, _ error) {
	if why := hostUses(ifname, ifindex); why != "" {
		return nil, why, nil
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "nicpath_uplink", Type: ebpf.SchedCLS, License: "Apache-2.0",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, tcxDrop), asm.Return()},
	})
	if err != nil {
		return nil, "", fmt.Errorf("afpacket: the uplink's drop program: %w", err)
	}
	// The link holds the program.
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
	if errors.Is(err, ebpf.ErrNotSupported) {
		return nil, "this kernel has no tcx", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("afpacket: tcx ingress on %s: %w", ifname, err)
	}
	return l, "", nil
}

// hostUses says why the host's stack may use the interface's frames (it
// has an IPv4 address; IPv6 is on), or "" when it cannot.
func hostUses(ifname string, ifindex int) string {
	// /proc/sys/net is the opening thread's namespace's. No file: no
	// IPv6 in this kernel.
	v6, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6")
	switch {
	case err == nil && strings.TrimSpace(string(v6)) != "1":
		return "IPv6 is on"
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Sprintf("IPv6's state unknown: %v", err)
	}
	ifi, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return fmt.Sprintf("its addresses unknown: %v", err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return fmt.Sprintf("its addresses unknown: %v", err)
	}
	if len(addrs) > 0 {
		return fmt.Sprintf("it has the address %s", addrs[0])
	}
	return ""
}
