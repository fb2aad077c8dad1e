//go:build linux

package tcflower

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// probeChain is where Open's probe filters go: a chain no filter jumps to,
// so no packet ever meets them, and they are removed at once. Chain indexes
// stop at 2^28-1 (TC_ACT_EXT_VAL_MASK).
const probeChain = 0x0ffffffe

// sockBuf is the netlink socket buffer size the driver asks for (as root it
// may exceed net.core.[rw]mem_max): room for a chunk of chunkOps messages.
const sockBuf = 4 << 20

// Open attaches the driver to the interfaces cfg names: it probes what the
// kernel and the devices can do, creates a clsact qdisc on each port and
// tunnel device with the driver's shared block on its ingress, and returns
// the NIC. It changes nothing else on the interfaces; Close removes what it
// added. On a kernel without cls_flower (or without gact, which generations
// need) it returns an error wrapping hal.ErrNotSupported.
func Open(ctx context.Context, cfg Config) (*NIC, error) {
	if len(cfg.Ports) == 0 {
		return nil, errors.New("tcflower: no ports")
	}
	if err := cfg.checkLimits(); err != nil {
		return nil, err
	}
	var nsFD int
	if cfg.NetNS != "" {
		f, err := os.Open(cfg.NetNS)
		if err != nil {
			return nil, fmt.Errorf("tcflower: network namespace: %w", err)
		}
		defer f.Close()
		nsFD = int(f.Fd())
	}
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: nsFD})
	if err != nil {
		return nil, fmt.Errorf("tcflower: netlink: %w", err)
	}
	// Without it kernel refusals lose their reason. (NETLINK_CAP_ACK would
	// keep error messages short, but the netlink package then misplaces
	// the reason; only failures and each chunk's last message are
	// acknowledged, so the echoes stay few.)
	_ = conn.SetOption(netlink.ExtendedAcknowledge, true)
	if rc, err := conn.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf)
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf)
		})
	}
	n, err := open(ctx, conn, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return n, nil
}

func open(ctx context.Context, conn *netlink.Conn, cfg Config) (*NIC, error) {
	probe := &NIC{conn: conn} // for the netlink helpers
	lay := layout{ports: map[hal.PortID]*device{}, tunnels: map[hal.EncapKind]*device{}}
	var devs []*device
	seen := map[string]bool{}
	for i, pc := range cfg.Ports {
		id := pc.ID
		if id == 0 {
			id = hal.PortID(i + 1)
		}
		if lay.ports[id] != nil {
			return nil, fmt.Errorf("tcflower: port ID %d given twice", id)
		}
		if pc.Kind != hal.PortVPort && pc.Kind != hal.PortUplink {
			return nil, fmt.Errorf("tcflower: port %s: kind %d is neither vport nor uplink", pc.Name, pc.Kind)
		}
		d, err := probe.lookupLink(pc.Name)
		if err != nil {
			return nil, err
		}
		d.ID, d.Kind = id, pc.Kind
		if seen[d.Name] {
			return nil, fmt.Errorf("tcflower: interface %s given twice", d.Name)
		}
		seen[d.Name] = true
		lay.ports[id] = d
		devs = append(devs, d)
	}
	for kind, name := range cfg.Tunnels {
		if kind != hal.EncapVXLAN && kind != hal.EncapGeneve && kind != hal.EncapNVGRE {
			return nil, hal.Unsupported(driverName, "tunnels "+kind.String(), "the driver takes VXLAN, Geneve and NVGRE (gretap) devices only")
		}
		d, err := probe.lookupLink(name)
		if err != nil {
			return nil, err
		}
		if seen[d.Name] {
			return nil, fmt.Errorf("tcflower: interface %s given twice", d.Name)
		}
		seen[d.Name] = true
		lay.tunnels[kind] = d
		devs = append(devs, d)
	}

	block := cfg.Block
	if block == 0 {
		var err error
		if block, err = probe.freeBlock(); err != nil {
			return nil, err
		}
	}
	n := newNIC(conn, cfg, block, 0, lay, devs)

	// Attach the block everywhere, undoing it all on failure.
	var attached []*device
	undo := func() {
		for _, d := range attached {
			if b, err := encodeQdisc(d.Ifindex, block, false); err == nil {
				_ = n.do(n.request(rtmDelQdisc, 0, b))
			}
		}
	}
	for _, d := range devs {
		b, err := encodeQdisc(d.Ifindex, block, true)
		if err == nil {
			err = n.do(n.request(rtmNewQdisc, netlink.Create|netlink.Excl, b))
		}
		if err != nil {
			undo()
			if errors.Is(kernelError(err), hal.ErrExists) {
				return nil, fmt.Errorf("tcflower: %s already has a clsact qdisc; the driver needs its own: %w", d.Name, kernelError(err))
			}
			return nil, opError("attach clsact to "+d.Name, 0, err)
		}
		attached = append(attached, d)
	}
	if err := n.probe(ctx); err != nil {
		undo()
		return nil, err
	}
	if err := n.installSealedDrop(); err != nil {
		undo()
		return nil, err
	}
	n.base = map[hal.PortID]linkStats{}
	for id, d := range lay.ports {
		st, err := n.linkStats(d.Ifindex)
		if err != nil {
			undo()
			return nil, err
		}
		n.base[id] = st
	}
	sys, err := newLinuxSys(cfg.NetNS, lay.ports)
	if err != nil {
		undo()
		return nil, err
	}
	n.sys, n.groups = sys, sys
	n.tunPorts = n.tunnelPorts()
	n.tunPortByKind = map[hal.EncapKind]uint16{}
	for kind, d := range lay.tunnels {
		if kind != hal.EncapNVGRE {
			n.tunPortByKind[kind] = n.tunnelPort(kind, d)
		}
	}
	if n.caps.Decaps != 0 && len(n.tunPorts) > 0 {
		n.caps.TunnelFilter = true
		n.caps.Notes = append(n.caps.Notes, fmt.Sprintf("tunnel filter: SetTunnelEndpoint puts flower filters on the uplink's ingress ahead of every rule: UDP to ports %v for the endpoint's addresses and MAC (or a group's address and MAC) passes into the kernel's stack, the rest is dropped and counted under not_local; the groups are joined on the uplink", n.tunPorts))
	}
	n.openExceptionPath()
	return n, nil
}

// lookupLink asks the kernel for the interface called name.
func (n *NIC) lookupLink(name string) (*device, error) {
	b := make([]byte, 16)
	ae := netlink.NewAttributeEncoder()
	ae.String(iflaIfname, name)
	attrs, _ := ae.Encode()
	msgs, err := n.conn.Execute(n.request(rtmGetLink, 0, append(b, attrs...)))
	if err != nil {
		err = kernelError(err)
		if errors.Is(err, hal.ErrNotFound) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("tcflower: interface %q: %w", name, hal.ErrNotFound)
		}
		return nil, fmt.Errorf("tcflower: interface %q: %w", name, err)
	}
	for _, m := range msgs {
		ifindex, got, mac, mtu, _, err := parseLink(m.Data)
		if err != nil || got != name {
			continue
		}
		d := &device{Name: got, Ifindex: ifindex, MTU: int(mtu)}
		copy(d.MAC[:], mac)
		return d, nil
	}
	return nil, fmt.Errorf("tcflower: interface %q: %w", name, hal.ErrNotFound)
}

// freeBlock picks a block index that nothing in the namespace uses. A dump
// of an unknown block is empty rather than an error, so it asks for one
// filter instead: the kernel answers EINVAL ("Block of given index was not
// found") only for a block that does not exist.
func (n *NIC) freeBlock() (uint32, error) {
	for try := 0; try < 16; try++ {
		var r [4]byte
		if _, err := rand.Read(r[:]); err != nil {
			return 0, err
		}
		b := binary.LittleEndian.Uint32(r[:])&0x3fffffff | 0x40000000
		req := tcmsg{Ifindex: tcmIfindexMagicBlock, Parent: b, Handle: 1, Info: filterInfo(1)}.marshal(nil)
		ae := netlink.NewAttributeEncoder()
		ae.String(tcaKind, "flower")
		attrs, _ := ae.Encode()
		_, err := n.conn.Execute(n.request(rtmGetFilter, 0, append(req, attrs...)))
		var ke *KernelError
		if errors.As(kernelError(err), &ke) && ke.Errno == errnoEINVAL {
			return b, nil
		}
	}
	return 0, errors.New("tcflower: no free tc block index found")
}

// inNetNS runs fn on a thread switched into the namespace at path (the
// caller's own when path is empty); see nsexec.Do.
func inNetNS(path string, fn func() error) error { return nsexec.Do(path, fn) }

// linuxSys injects frames with an AF_PACKET socket per port, opened in the
// ports' namespace, and joins multicast groups there.
type linuxSys struct {
	ns    string
	socks map[uint32]*afpacket.Socket // by ifindex
}

func newLinuxSys(ns string, ports map[hal.PortID]*device) (*linuxSys, error) {
	s := &linuxSys{ns: ns, socks: map[uint32]*afpacket.Socket{}}
	err := inNetNS(ns, func() error {
		for _, d := range ports {
			// Send only: a socket that received would copy every frame on
			// the port into a queue nobody reads.
			sock, err := afpacket.Open(d.Name, afpacket.Options{SendOnly: true})
			if err != nil {
				return fmt.Errorf("tcflower: packet socket for Inject on %s: %w", d.Name, err)
			}
			s.socks[d.Ifindex] = sock
			if sock.Ifindex() != int(d.Ifindex) {
				return fmt.Errorf("tcflower: packet socket for Inject: %s is ifindex %d, not %d", d.Name, sock.Ifindex(), d.Ifindex)
			}
		}
		return nil
	})
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *linuxSys) inject(ifindex uint32, frames [][]byte) error {
	sock := s.socks[ifindex]
	if sock == nil {
		return fmt.Errorf("no packet socket for ifindex %d: %w", ifindex, hal.ErrNotFound)
	}
	for _, f := range frames {
		if err := sock.Send(f); err != nil {
			return err
		}
	}
	return nil
}

func (s *linuxSys) close() error {
	var errs []error
	for ifindex, sock := range s.socks {
		errs = append(errs, sock.Close())
		delete(s.socks, ifindex)
	}
	return errors.Join(errs...)
}

// memberships are UDP sockets that hold multicast group memberships on an
// interface; Close leaves the groups.
type memberships []int

func (m memberships) Close() error {
	var errs []error
	for _, fd := range m {
		errs = append(errs, unix.Close(fd))
	}
	return errors.Join(errs...)
}

// joinGroups joins groups on the interface ifindex of the namespace, one
// unbound UDP socket per group: the kernel then takes the group's frames
// on that interface (a tunnel device's socket, bound to the port on any
// address, receives them), and the socket itself receives nothing.
func (s *linuxSys) joinGroups(ifindex uint32, groups []netip.Addr) (io.Closer, error) {
	var m memberships
	err := inNetNS(s.ns, func() error {
		for _, g := range groups {
			family, level := unix.AF_INET, unix.IPPROTO_IP
			if g.Is6() {
				family, level = unix.AF_INET6, unix.IPPROTO_IPV6
			}
			fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
			if err != nil {
				return err
			}
			m = append(m, fd)
			if g.Is4() {
				err = unix.SetsockoptIPMreqn(fd, level, unix.IP_ADD_MEMBERSHIP, &unix.IPMreqn{Multiaddr: g.As4(), Ifindex: int32(ifindex)})
			} else {
				err = unix.SetsockoptIPv6Mreq(fd, level, unix.IPV6_JOIN_GROUP, &unix.IPv6Mreq{Multiaddr: g.As16(), Interface: ifindex})
			}
			if err != nil {
				return fmt.Errorf("group %s: %w", g, err)
			}
		}
		return nil
	})
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}
