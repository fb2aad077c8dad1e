//go:build linux

package xdp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
)

// documented lists, case by case, where this driver differs from softnic
// on purpose (see the package doc). The suite fails a listed case that
// passes and a name that matches no case, so the list is exactly what
// differs on veth; TestConformance and TestDifferentialSoftnic both hold
// it.
var documented = []conformance.Difference{
	{Case: "encap/geneve/options", Capability: "encap geneve", Reason: "Geneve options are not written: Validate refuses them (the program writes a fixed 8-byte Geneve header)"},
}

// vethTarget opens the XDP NIC on three veth pairs in a namespace of its
// own: ports 1 and 2 are vports, port 3 the uplink; the harness sends and
// receives on the far ends with AF_PACKET sockets.
func vethTarget(t *testing.T) conformance.Target {
	requireRoot(t)
	return conformance.Target{
		Name:       "xdp on veth",
		Documented: documented,
		Quiet:      150 * time.Millisecond,
		// A packet socket cannot send a frame shorter than the link
		// header of a veth.
		MinFrame: 14,
		// Each subcase opens the NIC, and the verifier's walk of the
		// program takes seconds; under CI's load a case of four subcases
		// came within 2 s of the 3-minute default.
		CaseTimeout: 10 * time.Minute,
		Open: func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
			h, err := newVethHarness()
			if err != nil {
				return nil, nil, err
			}
			// A small MaxBatch, so that the suite can build a batch
			// one larger (apply/*/too-large).
			n, err := Open(ctx, Config{NetNS: "/var/run/netns/" + h.ns, MaxRules: 4096, MaxBatch: 256, Ports: []PortConfig{
				{ID: 1, Name: "p1", Kind: hal.PortVPort}, {ID: 2, Name: "p2", Kind: hal.PortVPort}, {ID: 3, Name: "p3", Kind: hal.PortUplink}}})
			if err != nil {
				h.Close()
				return nil, nil, err
			}
			return n, h, nil
		},
	}
}

func TestConformance(t *testing.T) {
	conformance.Run(t, vethTarget(t))
}

// TestDifferentialSoftnic sends the same rules and frames to softnic and to
// this driver and compares every port's output byte for byte.
func TestDifferentialSoftnic(t *testing.T) {
	ref := conformance.Target{
		Name: "softnic",
		Open: func(ctx context.Context) (hal.NIC, conformance.Harness, error) {
			n, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
				{Name: "p1", Kind: hal.PortVPort}, {Name: "p2", Kind: hal.PortVPort}, {Name: "p3", Kind: hal.PortUplink}},
				MaxRules: 4096})
			if err != nil {
				return nil, nil, err
			}
			return n, softnic.FarSide{NIC: n}, nil
		},
		Quiet: 20 * time.Millisecond,
	}
	conformance.RunDifferential(t, ref, vethTarget(t))
}

// vethHarness owns the namespace and the far ends w1..w3 of the NIC's ports.
type vethHarness struct {
	ns    string
	socks map[hal.PortID]int
}

// harnessSeq numbers the harnesses' namespaces. Atomic: a case the
// conformance runner gave up on (its deadline passed while the NIC was
// still opening) goes on building its harness beside the next case's.
var harnessSeq atomic.Int64

func newVethHarness() (_ *vethHarness, err error) {
	h := &vethHarness{ns: fmt.Sprintf("np-xdp-%d-conf%d", os.Getpid(), harnessSeq.Add(1)), socks: map[hal.PortID]int{}}
	sh := func(args ...string) error {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := sh("ip", "netns", "add", h.ns); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	err = inNetNS("/var/run/netns/"+h.ns, func() error {
		// No IPv6 autoconfiguration chatter: the ports carry only what
		// the suite sends.
		for _, f := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/disable_ipv6", []byte("1"), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := 1; i <= 3; i++ {
		p, w := fmt.Sprintf("p%d", i), fmt.Sprintf("w%d", i)
		if err := sh("ip", "-n", h.ns, "link", "add", p, "type", "veth", "peer", "name", w); err != nil {
			return nil, err
		}
		for _, d := range []string{p, w} {
			if err := sh("ip", "-n", h.ns, "link", "set", d, "up"); err != nil {
				return nil, err
			}
		}
	}
	err = inNetNS("/var/run/netns/"+h.ns, func() error {
		for i := 1; i <= 3; i++ {
			idx, err := netInterfaceByName(fmt.Sprintf("w%d", i))
			if err != nil {
				return err
			}
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(htons(unix.ETH_P_ALL)))
			if err != nil {
				return err
			}
			h.socks[hal.PortID(i)] = fd
			if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: idx, Protocol: htons(unix.ETH_P_ALL)}); err != nil {
				return err
			}
			// The kernel takes a received frame's VLAN tag out into
			// metadata; auxdata gives it back so Recv can restore the
			// frame as it was on the wire.
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The far ends run XDP_PASS so that frames redirected into their
	// peers are delivered (veth needs NAPI on the receiving end).
	for i := 1; i <= 3; i++ {
		if err := attachPass(h.ns, fmt.Sprintf("w%d", i)); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (h *vethHarness) Send(port hal.PortID, frames ...[]byte) error {
	fd, ok := h.socks[port]
	if !ok {
		return fmt.Errorf("harness: no port %d", port)
	}
	for _, f := range frames {
		if err := unix.Send(fd, f, 0); err != nil {
			return err
		}
	}
	return nil
}

func (h *vethHarness) Recv(ctx context.Context, port hal.PortID, max int) ([][]byte, error) {
	fd, ok := h.socks[port]
	if !ok {
		return nil, fmt.Errorf("harness: no port %d", port)
	}
	var out [][]byte
	buf := make([]byte, 1<<16)
	oob := make([]byte, 256)
	for len(out) < max {
		k, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
		if err == nil {
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue // our own Send
			}
			out = append(out, withVLAN(buf[:k], oob[:oobn]))
			continue
		}
		if !errors.Is(err, unix.EAGAIN) {
			return out, err
		}
		if len(out) > 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return out, nil
		case <-time.After(200 * time.Microsecond):
		}
	}
	return out, nil
}

// withVLAN returns a copy of frame with the VLAN tag that the kernel moved
// into the auxdata put back after the MAC addresses.
func withVLAN(frame, oob []byte) []byte {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA || len(m.Data) < int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
			continue
		}
		aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
		if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 || len(frame) < 12 {
			continue
		}
		tpid := uint16(0x8100)
		if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 && aux.Vlan_tpid != 0 {
			tpid = aux.Vlan_tpid
		}
		out := make([]byte, 0, len(frame)+4)
		out = append(out, frame[:12]...)
		out = append(out, byte(tpid>>8), byte(tpid), byte(aux.Vlan_tci>>8), byte(aux.Vlan_tci))
		return append(out, frame[12:]...)
	}
	return append([]byte(nil), frame...)
}

// CheckLeaks reports an XDP program left on the NIC's interfaces.
func (h *vethHarness) CheckLeaks() error {
	for i := 1; i <= 3; i++ {
		out, err := exec.Command("ip", "-n", h.ns, "-d", "link", "show", "dev", fmt.Sprintf("p%d", i)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if strings.Contains(string(out), "prog/xdp") {
			return fmt.Errorf("p%d still has an XDP program", i)
		}
	}
	return nil
}

func (h *vethHarness) Close() error {
	for _, fd := range h.socks {
		unix.Close(fd)
	}
	passLinksMu.Lock()
	for _, c := range passLinks[h.ns] {
		c()
	}
	delete(passLinks, h.ns)
	passLinksMu.Unlock()
	return exec.Command("ip", "netns", "del", h.ns).Run()
}
