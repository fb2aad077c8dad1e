//go:build linux

package multihost

import (
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/nicpath/nicpath/internal/nsexec"
)

// attachXDPPass attaches an XDP_PASS program to interface dev of the
// namespace at nsPath: the far end of a veth whose near end an XDP host
// sends on (a VM's eth0 behind the host's vport, the underlay router's
// side of the host's uplink). A veth delivers the frames its peer sends by
// XDP redirect only when NAPI runs on it, which an attached XDP program
// turns on (GRO would too, but turning it on would change the interface's
// default offloads, and the program changes none). A real VM's port or a
// real router's NIC needs nothing of the kind. The interface keeps its
// other defaults, its checksum offload included (the XDP program completes
// partial checksums); the kernel itself takes the software GSO features
// off the veth's peer, as it does for the XDP driver's own ports.
//
// The returned function detaches the program (deleting the namespace does
// too).
func attachXDPPass(nsPath, dev string) (func(), error) {
	var l link.Link
	var prog *ebpf.Program
	err := nsexec.Do(nsPath, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}}) // XDP_PASS
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index})
		if err != nil {
			prog.Close()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nsbed: XDP_PASS on %s in %s: %w", dev, nsPath, err)
	}
	return func() { l.Close(); prog.Close() }, nil
}
