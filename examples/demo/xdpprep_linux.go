//go:build linux

package main

import (
	"net"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
)

// prepareXDPPeer readies the far end of a veth whose near end a host's XDP
// driver sends on (a VM's eth0 behind a vport, or, when the hosts' drivers
// differ, the softnic host's uplink cabled to the XDP host's): an XDP_PASS
// program, because a veth delivers the frames its peer sends by XDP
// redirect only when NAPI runs on it, which an attached XDP program turns
// on (GRO would too, but turning it on would change the interface's
// default offloads, and the program changes none). A real VM's virtio or
// VF port, or a real NIC at the other end of a cable, needs nothing of the
// kind. The interface keeps every other default, its checksum offload
// included: the XDP host's program completes the checksums it leaves
// partial. (The kernel itself takes the software GSO features off the
// peer of a veth that runs an XDP program, as it does for the XDP driver's
// own ports: the stack then segments before the veth.)
//
// The returned function detaches the program (deleting the namespace does
// too).
func prepareXDPPeer(ns, dev string) (func(), error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return nil, err
	}
	defer netns.Set(orig)
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}}) // XDP_PASS
	if err != nil {
		return nil, err
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index})
	if err != nil {
		prog.Close()
		return nil, err
	}
	return func() { l.Close(); prog.Close() }, nil
}
