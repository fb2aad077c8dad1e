//go:build linux

package main

import (
	"fmt"
	"net"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/safchain/ethtool"
	"github.com/vishvananda/netns"
)

// prepareXDPVM readies a VM's eth0 for a host whose NIC is the XDP driver:
//   - an XDP_PASS program, because a veth delivers frames its peer received
//     by XDP redirect only when NAPI runs on it, which an attached XDP
//     program turns on;
//   - no transmit checksum offload, because an xdp_frame carries no
//     checksum state, so a partial checksum would leave the host unfinished
//     (real VMs on virtio or VF ports face the same rule).
//
// The returned function detaches the program (deleting the namespace does
// too).
func prepareXDPVM(ns, dev string) (func(), error) {
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
	e, err := ethtool.NewEthtool()
	if err != nil {
		return nil, err
	}
	err = e.Change(dev, map[string]bool{"tx-checksum-ip-generic": false})
	e.Close()
	if err != nil {
		return nil, fmt.Errorf("turning off checksum offload on %s: %w", dev, err)
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
