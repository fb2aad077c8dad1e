//go:build linux

package tcflower

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/vmtest"
)

// envHostKernel lets the kernel tests run on the machine's own kernel when
// it has cls_flower and the actions (this project's build machine does not).
const envHostKernel = "NICPATH_TCFLOWER_HOST"

// requireKernel skips unless this is root on a kernel the tests are meant
// for: inside the VM tier, or where envHostKernel says so. Inside the VM the
// tests must run, so nothing else skips them.
func requireKernel(t testing.TB) {
	t.Helper()
	if !vmtest.InVM() && os.Getenv(envHostKernel) == "" {
		t.Skipf("needs cls_flower and tc actions: runs inside the VM tier (TestVM), or on this kernel with %s=1", envHostKernel)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and tc")
	}
}

// requireRoot skips when not root (namespaces).
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
}

// netNS is a network namespace the test created; Cleanup deletes it.
type netNS struct {
	t    testing.TB
	Name string
	Path string
}

func randName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func newNetNS(t testing.TB, prefix string) *netNS {
	t.Helper()
	name := randName(prefix)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &netNS{t: t, Name: name, Path: "/run/netns/" + name}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	// No IPv6 autoconfiguration chatter on the test links.
	ns.sh("echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6")
	return ns
}

// ip runs `ip -n NS args...` and fails the test on error.
func (n *netNS) ip(args ...string) string {
	n.t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("ip -n %s %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tc runs `tc -n NS args...` and returns its output and error.
func (n *netNS) tc(args ...string) (string, error) {
	out, err := exec.Command("tc", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	return string(out), err
}

func (n *netNS) sh(script string) {
	n.t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", n.Name, "sh", "-c", script).CombinedOutput(); err != nil {
		n.t.Fatalf("in %s: %s: %v: %s", n.Name, script, err, out)
	}
}

// topology is the standard test bed: two vports (p1, p2 with VM-side peers
// vm1, vm2), an uplink up0 whose peer up1 sits in a second namespace (the
// remote host, 198.18.0.2), and flow-based VXLAN and Geneve devices.
type topology struct {
	ns, remote *netNS
	upMAC      hal.MAC
}

const (
	underlayLocal  = "198.18.0.1"
	underlayRemote = "198.18.0.2"
)

func newTopology(t testing.TB) *topology {
	t.Helper()
	tp := &topology{ns: newNetNS(t, "tcf"), remote: newNetNS(t, "tcr")}
	ns := tp.ns
	ns.ip("link", "add", "p1", "type", "veth", "peer", "name", "vm1")
	ns.ip("link", "add", "p2", "type", "veth", "peer", "name", "vm2")
	ns.ip("link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", tp.remote.Name)
	ns.ip("link", "set", "up0", "address", "02:4e:50:00:00:a1")
	tp.remote.ip("link", "set", "up1", "address", "02:4e:50:00:00:a2")
	ns.ip("addr", "replace", underlayLocal+"/24", "dev", "up0")
	tp.remote.ip("addr", "replace", underlayRemote+"/24", "dev", "up1")
	ns.ip("link", "add", "vx0", "type", "vxlan", "external", "dstport", "4789")
	ns.ip("link", "add", "gnv0", "type", "geneve", "external")
	for _, l := range []string{"lo", "p1", "vm1", "p2", "vm2", "up0", "vx0", "gnv0"} {
		ns.ip("link", "set", l, "up")
	}
	tp.remote.ip("link", "set", "lo", "up")
	tp.remote.ip("link", "set", "up1", "up")
	// Static neighbours: no ARP exchange between the test's frames.
	ns.ip("neigh", "replace", underlayRemote, "lladdr", "02:4e:50:00:00:a2", "dev", "up0", "nud", "permanent")
	tp.remote.ip("neigh", "replace", underlayLocal, "lladdr", "02:4e:50:00:00:a1", "dev", "up1", "nud", "permanent")
	tp.upMAC = hal.MustMAC("02:4e:50:00:00:a1")
	return tp
}

func (tp *topology) config(p Placement) Config {
	return Config{
		Ports: []PortConfig{
			{Name: "p1", Kind: hal.PortVPort},
			{Name: "p2", Kind: hal.PortVPort},
			{Name: "up0", Kind: hal.PortUplink},
		},
		Tunnels:   map[hal.EncapKind]string{hal.EncapVXLAN: "vx0", hal.EncapGeneve: "gnv0"},
		Placement: p,
		NetNS:     tp.ns.Path,
	}
}

func (tp *topology) open(t testing.TB, p Placement) *NIC {
	t.Helper()
	n, err := Open(context.Background(), tp.config(p))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil && !errors.Is(err, hal.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

// leftovers lists clsact qdiscs on the topology's links: after Close there
// must be none.
func (tp *topology) leftovers(t testing.TB) string {
	t.Helper()
	out, err := tp.ns.tc("qdisc", "show")
	if err != nil {
		t.Fatalf("tc qdisc show: %v: %s", err, out)
	}
	var bad []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "clsact") {
			bad = append(bad, l)
		}
	}
	return strings.Join(bad, "\n")
}

// packetSock is an AF_PACKET socket on one interface of a namespace: what
// a VM or a remote host sends and sees. It carries a virtio-net header
// (PACKET_VNET_HDR) on every frame, which says when the kernel left a
// frame's checksum to the device (a veth passes such frames on as they
// are, with the pseudo-header sum in the checksum field, where a real NIC
// would complete it on the wire): recv completes it there, as that NIC
// would, so that what the test checks is what the wire would carry.
type packetSock struct {
	fd      int
	ifindex int
}

func openPacketSock(t testing.TB, ns *netNS, ifname string) *packetSock {
	t.Helper()
	ps := &packetSock{fd: -1}
	err := inNetNS(ns.Path, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		ps.fd = fd
		idx, err := ifIndex(fd, ifname)
		if err != nil {
			return err
		}
		ps.ifindex = idx
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return fmt.Errorf("PACKET_VNET_HDR: %w", err)
		}
		// The VLAN tag the kernel strips on receive comes back as
		// auxiliary data.
		return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1)
	})
	if err != nil {
		if ps.fd >= 0 {
			unix.Close(ps.fd)
		}
		t.Fatalf("packet socket on %s in %s: %v", ifname, ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(ps.fd) })
	return ps
}

func ifIndex(fd int, name string) (int, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("ifindex of %s: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}

// vnetHdrLen is struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size,
// csum_start, csum_offset.
const vnetHdrLen = 10

const (
	vnetNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	vnetDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID
)

// sendRaw writes one frame with a virtio-net header that asks for nothing
// (no checksum, no segmentation): the frame goes out as it is.
func (ps *packetSock) sendRaw(f []byte) error {
	b := make([]byte, vnetHdrLen+len(f))
	copy(b[vnetHdrLen:], f)
	return unix.Sendto(ps.fd, b, 0, &unix.SockaddrLinklayer{Ifindex: ps.ifindex})
}

func (ps *packetSock) send(t testing.TB, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		if err := ps.sendRaw(f); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}

// frame is a received frame, its checksum completed where the kernel left
// it to the device, and with the VLAN tag the kernel stripped, if any.
type frame struct {
	data     []byte
	vlanTCI  uint16
	vlanTPID uint16
	hasVLAN  bool
	// partial: the kernel left the checksum at csumStart+csumOffset to the
	// device; data holds it completed. gso is the virtio GSO type of a
	// frame the device would have segmented (0: none).
	partial    bool
	csumStart  int
	csumOffset int
	gso        uint8
	outgoing   bool // the socket's own interface sent it
}

// completeChecksum does what a device with checksum offload does for a
// CHECKSUM_PARTIAL frame: the one's complement sum from start to the end
// of the frame (the field at start+off holds the pseudo-header's sum) goes,
// complemented, into the field (0 as 0xffff, as skb_checksum_help does).
func completeChecksum(b []byte, start, off int) error {
	if start < 0 || start+off+2 > len(b) {
		return fmt.Errorf("checksum at %d+%d outside a %d-byte frame", start, off, len(b))
	}
	var s uint32
	for i := start; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if (len(b)-start)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	c := ^uint16(s)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(b[start+off:], c)
	return nil
}

// recvFrame receives one frame (flags as recvmsg's) into buf.
func (ps *packetSock) recvFrame(buf, oob []byte, flags int) (frame, error) {
	nr, oobn, _, from, err := unix.Recvmsg(ps.fd, buf, oob, flags)
	if err != nil {
		return frame{}, err
	}
	if nr < vnetHdrLen {
		return frame{}, fmt.Errorf("a %d-byte read, shorter than its virtio-net header", nr)
	}
	f := frame{data: append([]byte(nil), buf[vnetHdrLen:nr]...)}
	if sa, ok := from.(*unix.SockaddrLinklayer); ok && sa.Pkttype == unix.PACKET_OUTGOING {
		f.outgoing = true
	}
	h := buf[:vnetHdrLen]
	f.gso = h[1]
	if h[0]&vnetNeedsCsum != 0 {
		f.partial = true
		f.csumStart = int(binary.NativeEndian.Uint16(h[6:]))
		f.csumOffset = int(binary.NativeEndian.Uint16(h[8:]))
		if err := completeChecksum(f.data, f.csumStart, f.csumOffset); err != nil {
			return frame{}, err
		}
	}
	if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, cm := range cms {
			if cm.Header.Level == unix.SOL_PACKET && cm.Header.Type == unix.PACKET_AUXDATA && len(cm.Data) >= int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
				var aux unix.TpacketAuxdata
				copy(unsafe.Slice((*byte)(unsafe.Pointer(&aux)), unsafe.Sizeof(aux)), cm.Data)
				if aux.Status&unix.TP_STATUS_CSUMNOTREADY != 0 != f.partial {
					return frame{}, fmt.Errorf("auxdata says checksum not ready %v, the virtio-net header says partial %v", aux.Status&unix.TP_STATUS_CSUMNOTREADY != 0, f.partial)
				}
				if aux.Status&unix.TP_STATUS_VLAN_VALID != 0 {
					f.vlanTCI, f.hasVLAN, f.vlanTPID = aux.Vlan_tci, true, hal.EtherTypeVLAN
					if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 && aux.Vlan_tpid != 0 {
						f.vlanTPID = aux.Vlan_tpid
					}
				}
			}
		}
	}
	return f, nil
}

// recv collects frames that want accepts until it has n or d passes.
func (ps *packetSock) recv(t testing.TB, n int, d time.Duration, want func([]byte) bool) []frame {
	t.Helper()
	deadline := time.Now().Add(d)
	var got []frame
	buf := make([]byte, 65536+vnetHdrLen)
	oob := make([]byte, 256)
	for len(got) < n {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		_ = unix.SetsockoptTimeval(ps.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		f, err := ps.recvFrame(buf, oob, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			t.Fatalf("recv: %v", err)
		}
		if f.outgoing {
			continue // our own transmissions
		}
		if want == nil || want(f.data) {
			got = append(got, f)
		}
	}
	return got
}

// --- frames ---

var (
	macVM1 = hal.MustMAC("02:4e:50:00:01:01")
	macVM2 = hal.MustMAC("02:4e:50:00:01:02")
)

// testMagic marks the test's frames in their UDP payload, so that the
// receivers ignore anything else the kernel sends.
var testMagic = []byte("nicpath-tcflower")

func ipChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// udpFrame builds Ethernet/IPv4/UDP with the test magic and a checksum.
func udpFrame(src, dst hal.MAC, ipSrc, ipDst string, sport, dport uint16) []byte {
	payload := append(append([]byte(nil), testMagic...), make([]byte, 14)...)
	udpLen := 8 + len(payload)
	b := make([]byte, 14+20+udpLen)
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:], hal.EtherTypeIPv4)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
	ip[8] = 64
	ip[9] = hal.ProtoUDP
	s4, d4 := mustAddr4(ipSrc), mustAddr4(ipDst)
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	u := b[34:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	copy(u[8:], payload)
	binary.BigEndian.PutUint16(u[6:], udpChecksum(ip, u))
	return b
}

func udpChecksum(ip, u []byte) uint16 {
	ph := make([]byte, 0, 12+len(u))
	ph = append(ph, ip[12:20]...)
	ph = append(ph, 0, hal.ProtoUDP, byte(len(u)>>8), byte(len(u)))
	uu := append([]byte(nil), u...)
	uu[6], uu[7] = 0, 0
	c := ipChecksum(append(ph, uu...))
	if c == 0 {
		c = 0xffff
	}
	return c
}

func mustAddr4(s string) [4]byte {
	var a [4]byte
	if _, err := fmt.Sscanf(s, "%d.%d.%d.%d", &a[0], &a[1], &a[2], &a[3]); err != nil {
		panic(err)
	}
	return a
}

// hasMagic accepts frames that carry the test magic anywhere (inner frames
// of a tunnel included).
func hasMagic(b []byte) bool { return strings.Contains(string(b), string(testMagic)) }

// vxlanFrame wraps inner in Ethernet/IPv4/UDP/VXLAN from the remote host to
// this one.
func vxlanFrame(srcMAC, dstMAC hal.MAC, src, dst string, vni uint32, inner []byte) []byte {
	vx := make([]byte, 8+len(inner))
	vx[0] = 0x08
	binary.BigEndian.PutUint32(vx[4:], vni<<8)
	copy(vx[8:], inner)
	udpLen := 8 + len(vx)
	b := make([]byte, 14+20+udpLen)
	copy(b[0:6], dstMAC[:])
	copy(b[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(b[12:], hal.EtherTypeIPv4)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
	ip[8] = 64
	ip[9] = hal.ProtoUDP
	s4, d4 := mustAddr4(src), mustAddr4(dst)
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	u := b[34:]
	binary.BigEndian.PutUint16(u[0:], 40000)
	binary.BigEndian.PutUint16(u[2:], hal.PortVXLAN)
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	copy(u[8:], vx)
	return b
}
