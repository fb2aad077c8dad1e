//go:build linux

package xdp

import (
	"context"
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// blastTime is how long each datapath is offered traffic.
const blastTime = 2 * time.Second

// counterProg counts every frame into a per-CPU array and drops it: the
// receiving VM's interface, so that the receiver costs the same whatever
// path delivered the frames.
func counterProg(tb testing.TB) (*ebpf.Program, *ebpf.Map) {
	tb.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		tb.Fatal(err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT", Instructions: asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("out"), // XDP_DROP
		asm.Return(),
	}})
	if err != nil {
		m.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { prog.Close(); m.Close() })
	return prog, m
}

func counted(tb testing.TB, m *ebpf.Map) uint64 {
	var vals []uint64
	if err := m.Lookup(uint32(0), &vals); err != nil {
		tb.Fatal(err)
	}
	var s uint64
	for _, v := range vals {
		s += v
	}
	return s
}

type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// blast sends 64-byte UDP frames from vm1 to vm2 with AF_PACKET and
// sendmmsg (64 a call, qdisc bypassed) for d, and returns how many frames
// vm2's interface received.
func blast(tb testing.TB, h1, h2 *host, m *ebpf.Map, d time.Duration) uint64 {
	tb.Helper()
	fd := -1
	inNS(tb, h1.vmNS, func() {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			tb.Error(err)
			return
		}
		ifi, err := netInterface(h1.vmDev)
		if err != nil {
			tb.Error(err)
			return
		}
		unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi}); err != nil {
			tb.Error(err)
		}
	})
	if fd < 0 {
		tb.FailNow()
	}
	defer unix.Close(fd)
	const burst = 64
	frames := make([][]byte, burst)
	iov := make([]unix.Iovec, burst)
	msgs := make([]mmsghdr, burst)
	for i := range frames {
		frames[i] = wire.Build(wire.FrameSpec{SrcMAC: h1.vmMAC, DstMAC: h2.vmMAC, Src: h1.ca, Dst: h2.ca, Proto: hal.ProtoUDP,
			SrcPort: uint16(20000 + i), DstPort: 9000, Payload: make([]byte, 64-42)})
		iov[i].Base = &frames[i][0]
		iov[i].SetLen(len(frames[i]))
		msgs[i].hdr.Iov = &iov[i]
		msgs[i].hdr.Iovlen = 1
	}
	before := counted(tb, m)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), burst, 0, 0, 0)
	}
	time.Sleep(100 * time.Millisecond) // let the rings drain
	return counted(tb, m) - before
}

func netInterface(name string) (int, error) { return netInterfaceByName(name) }

// kernelVXLAN gives each host the Linux way: a bridge with the VM's veth
// and a VXLAN device toward the other host.
func kernelVXLAN(tb testing.TB, h, remote *host, vni uint32) {
	tb.Helper()
	run(tb, "ip", "-n", h.ns, "link", "add", "br0", "type", "bridge")
	run(tb, "ip", "-n", h.ns, "link", "add", "vx0", "type", "vxlan", "id", fmt.Sprint(vni), "local", h.pa.String(),
		"remote", remote.pa.String(), "dstport", "4789", "dev", h.up)
	run(tb, "ip", "-n", h.ns, "link", "set", "vx0", "master", "br0")
	run(tb, "ip", "-n", h.ns, "link", "set", h.vport, "master", "br0")
	run(tb, "ip", "-n", h.ns, "link", "set", "vx0", "up")
	run(tb, "ip", "-n", h.ns, "link", "set", "br0", "up")
}

// BenchmarkVethVsKernel is veth.xdp_vs_kernel_vxlan: frames per second
// between two VMs on two hosts (namespaces joined by veth pairs) through
// this driver, against the same topology forwarding with the kernel's own
// VXLAN device and bridge, measured in the same run with the same sender
// and the same counting receiver.
func BenchmarkVethVsKernel(b *testing.B) {
	requireRoot(b)
	var xdpPkts, kernPkts uint64
	for i := 0; i < b.N; i++ {
		xdpPkts += func() uint64 {
			h1, h2 := twoHosts(b)
			prog, m := counterProg(b)
			if err := h2.vmXDP.Update(prog); err != nil {
				b.Fatal(err)
			}
			n1 := openHost(b, h1, ModeAuto)
			defer n1.Close()
			n2 := openHost(b, h2, ModeAuto)
			defer n2.Close()
			applyOps(b, n1, overlayRules(h1, h2, 42))
			applyOps(b, n2, overlayRules(h2, h1, 42))
			return blast(b, h1, h2, m, blastTime)
		}()
		kernPkts += func() uint64 {
			h1, h2 := twoHosts(b)
			prog, m := counterProg(b)
			if err := h2.vmXDP.Update(prog); err != nil {
				b.Fatal(err)
			}
			kernelVXLAN(b, h1, h2, 42)
			kernelVXLAN(b, h2, h1, 42)
			// The bridge floods until it learns; give it the first frames.
			blast(b, h1, h2, m, 50*time.Millisecond)
			return blast(b, h1, h2, m, blastTime)
		}()
	}
	secs := blastTime.Seconds() * float64(b.N)
	xdpPPS, kernPPS := float64(xdpPkts)/secs, float64(kernPkts)/secs
	b.ReportMetric(xdpPPS, "xdp_pps")
	b.ReportMetric(kernPPS, "kernel_pps")
	if kernPPS > 0 {
		b.ReportMetric(xdpPPS/kernPPS, "xdp_vs_kernel")
	}
}

func applyOps(tb testing.TB, n *NIC, ops []hal.Op) {
	tb.Helper()
	res := make([]hal.OpResult, len(ops))
	if err := n.Apply(context.Background(), ops, res); err != nil {
		tb.Fatal(err)
	}
}
