//go:build linux

package afpacket

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
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
// hostTake), and the host's stack sees the frames as before. Kernels
// before 6.6 have no tcx: why not is returned too.
//
// While the program is attached, a watch (see hostTake.watch) lifts it
// for good as soon as the host's stack can use the interface: an address
// appears on it, or IPv6 comes on. The watch's netlink socket is opened
// first, in the calling thread's namespace, so that a change between the
// check and the attachment is seen too; without the watch nothing is
// taken (why not is returned). The returned hostTake's Close stops the
// watch and detaches the program; so does the process's end (a link held
// by a file descriptor). released counts the lifts (Stats.ReturnedToHost).
func takeFromHost(ifname string, ifindex int, log *slog.Logger, released *atomic.Uint64) (_ *hostTake, whyNot string, _ error) {
	nl, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: watchGroups})
	if err != nil {
		return nil, fmt.Sprintf("its addresses cannot be watched: %v", err), nil
	}
	if why := hostUses(ifname, ifindex); why != "" {
		nl.Close()
		return nil, why, nil
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "nicpath_uplink", Type: ebpf.SchedCLS, License: "Apache-2.0",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, tcxDrop), asm.Return()},
	})
	if err != nil {
		nl.Close()
		return nil, "", fmt.Errorf("afpacket: the uplink's drop program: %w", err)
	}
	// The link holds the program.
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
	if errors.Is(err, ebpf.ErrNotSupported) {
		nl.Close()
		return nil, "this kernel has no tcx", nil
	}
	if err != nil {
		nl.Close()
		return nil, "", fmt.Errorf("afpacket: tcx ingress on %s: %w", ifname, err)
	}
	h := &hostTake{ifindex: ifindex, log: log, released: released, nl: nl, drop: l, stop: make(chan struct{})}
	h.wg.Add(1)
	go h.watch()
	return h, "", nil
}

// watchGroups are the rtnetlink groups whose messages may tell that the
// host's stack can now use an interface: new IPv4 and IPv6 addresses (a
// link-local one included), and IPv6's per-interface state, which the
// kernel announces when IPv6 starts on an interface that is up (also
// when no address follows, as with addr_gen_mode none).
const watchGroups = unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR | unix.RTMGRP_IPV6_IFINFO

// hostTake is an uplink's frames kept from the host's stack: the tcx drop
// program's link and the watch that detaches it once the host's stack
// can use the interface.
//
// Once detached, the drop stays off for the binding's life, even should
// the address go away again: an address removed is most often one being
// replaced (a renumbering, a DHCP lease), and putting the drop back would
// take, for as long as the watch needs to see the next address, the
// frames of an interface the operator has just shown the host uses. The
// binding then behaves as one made on an interface with an address; a new
// binding (Close, Bind) on the address-less uplink takes its frames again.
type hostTake struct {
	ifindex  int
	log      *slog.Logger
	released *atomic.Uint64
	nl       *netlink.Conn // the watch's subscription (watchGroups)

	mu   sync.Mutex
	drop io.Closer // the program's link; nil once detached

	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// takes says whether the drop is still attached.
func (h *hostTake) takes() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.drop != nil
}

// watch reads the subscription until a message says the host's stack can
// use the interface (see hostEvent), then detaches the drop and returns;
// or until Close. Should the kernel have dropped messages for a full
// socket (ENOBUFS), or the socket fail, the drop is detached too: what
// the host's stack may use can no longer be known, and the host's stack
// seeing the frames costs only CPU, where their loss under an address
// would cut the host off the network.
func (h *hostTake) watch() {
	defer h.wg.Done()
	defer h.nl.Close()
	for {
		msgs, err := h.nl.Receive()
		select {
		case <-h.stop:
			return
		default:
		}
		if err != nil {
			h.release(fmt.Sprintf("its addresses can no longer be watched: %v", err))
			return
		}
		for _, m := range msgs {
			if why := hostEvent(m.Header.Type, m.Data, h.ifindex); why != "" {
				h.release(why)
				return
			}
		}
	}
}

// release detaches the drop, counts it and says why.
func (h *hostTake) release(why string) {
	h.mu.Lock()
	l := h.drop
	h.drop = nil
	h.mu.Unlock()
	if l == nil {
		return
	}
	h.released.Add(1)
	if err := l.Close(); err != nil {
		h.log.Warn("detaching the uplink's drop program", "err", err)
	}
	h.log.Info("the host's stack can use the uplink now: it sees its frames again", "why", why)
}

// Close stops the watch (its goroutine has returned when Close does) and
// detaches the drop if it still is attached.
func (h *hostTake) Close() error {
	h.closeOnce.Do(func() {
		close(h.stop)
		// Interrupts a Receive in progress.
		h.nl.Close()
		h.wg.Wait()
		h.mu.Lock()
		l := h.drop
		h.drop = nil
		h.mu.Unlock()
		if l != nil {
			if err := l.Close(); err != nil {
				h.log.Warn("detaching the uplink's drop program", "err", err)
			}
		}
	})
	return nil
}

// devconfDisableIPv6 is DEVCONF_DISABLE_IPV6 (linux/ipv6.h): the index of
// disable_ipv6 in IFLA_INET6_CONF's array of 32-bit values.
const devconfDisableIPv6 = 26

// hostEvent reads one message of the watch's subscription, typ and data
// (the message after its netlink header), and says why it shows that the
// host's stack can use the interface ifindex, or "" when it does not:
//   - RTM_NEWADDR for ifindex, of any family and scope (a tentative IPv6
//     link-local address included: it is about to be used);
//   - RTM_NEWLINK of family AF_INET6 for ifindex (IPv6's ifinfo group: the
//     kernel sends it when IPv6 starts on an interface), unless the
//     IFLA_INET6_CONF it carries says IPv6 is disabled on it.
//
// Anything else, a message for another interface or one too short for its
// header, is not about the interface.
func hostEvent(typ netlink.HeaderType, data []byte, ifindex int) string {
	switch typ {
	case unix.RTM_NEWADDR:
		if len(data) < unix.SizeofIfAddrmsg || int64(binary.NativeEndian.Uint32(data[4:8])) != int64(ifindex) {
			return ""
		}
		// IFA_LOCAL is an IPv4 interface's own address (IFA_ADDRESS its
		// peer's on a point-to-point link); IPv6 gives only IFA_ADDRESS.
		var local, addr netip.Addr
		ad, err := netlink.NewAttributeDecoder(data[unix.SizeofIfAddrmsg:])
		for err == nil && ad.Next() {
			a, ok := netip.AddrFromSlice(ad.Bytes())
			switch {
			case !ok:
			case ad.Type() == unix.IFA_LOCAL:
				local = a
			case ad.Type() == unix.IFA_ADDRESS:
				addr = a
			}
		}
		if local.IsValid() {
			addr = local
		}
		if !addr.IsValid() {
			return "an address was added to it"
		}
		return "the address " + addr.String() + " was added to it"
	case unix.RTM_NEWLINK:
		if len(data) < unix.SizeofIfInfomsg || data[0] != unix.AF_INET6 ||
			int64(int32(binary.NativeEndian.Uint32(data[4:8]))) != int64(ifindex) {
			return ""
		}
		disabled := false
		ad, err := netlink.NewAttributeDecoder(data[unix.SizeofIfInfomsg:])
		for err == nil && ad.Next() {
			if ad.Type() != unix.IFLA_PROTINFO {
				continue
			}
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					if b := nad.Bytes(); nad.Type() == unix.IFLA_INET6_CONF && len(b) >= 4*(devconfDisableIPv6+1) {
						disabled = binary.NativeEndian.Uint32(b[4*devconfDisableIPv6:]) != 0
					}
				}
				return nil
			})
		}
		if disabled {
			return ""
		}
		return "IPv6 came on on it"
	}
	return ""
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
