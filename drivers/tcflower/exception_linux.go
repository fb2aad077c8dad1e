//go:build linux

package tcflower

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/afpacket"
)

// openExceptionPath builds the exception path (see exception.go): the veth
// pair, the socket on its receive end and the filters. Without it the NIC
// still works, with misses going into the ports' kernel stacks as before:
// Capabilities say so (ExceptionPath false, no ToHost) and the notes say
// why.
func (n *NIC) openExceptionPath() {
	note, err := n.buildExceptionPath()
	if err != nil {
		n.caps.Notes = append(n.caps.Notes, "exception path: unavailable, a packet no rule takes continues into the port's kernel stack: "+err.Error())
		return
	}
	n.caps.Notes = append(n.caps.Notes, note)
}

func (n *NIC) buildExceptionPath() (string, error) {
	if !n.caps.HasAction(hal.ActionOutput) || !n.caps.HasAction(hal.ActionPushVLAN) {
		return "", errors.New("it needs the mirred and vlan actions")
	}
	if len(n.ports) > 4094 {
		return "", fmt.Errorf("%d ports: the port tag names at most 4094", len(n.ports))
	}
	txName := fmt.Sprintf("tcfx%08x", n.block)
	rxName := fmt.Sprintf("tcfy%08x", n.block)
	b, err := encodeNewVeth(txName, rxName, channelMTU)
	if err != nil {
		return "", err
	}
	if err := n.do(n.request(rtmNewLink, netlink.Create|netlink.Excl, b)); err != nil {
		return "", fmt.Errorf("creating the channel veth pair %s/%s: %w", txName, rxName, kernelError(err))
	}
	var (
		tx, rx *device
		r      excReader
	)
	fail := func(err error) (string, error) {
		if r != nil {
			r.close()
		}
		if tx != nil {
			_ = n.do(n.request(rtmDelLink, 0, encodeDelLink(tx.Ifindex)))
		} else if d, lerr := n.lookupLink(txName); lerr == nil {
			_ = n.do(n.request(rtmDelLink, 0, encodeDelLink(d.Ifindex)))
		}
		return "", err
	}
	if tx, err = n.lookupLink(txName); err != nil {
		return fail(err)
	}
	if rx, err = n.lookupLink(rxName); err != nil {
		return fail(err)
	}
	for _, d := range []*device{rx, tx} {
		if err := n.do(n.request(rtmNewLink, 0, encodeLinkUp(d.Ifindex))); err != nil {
			return fail(fmt.Errorf("setting %s up: %w", d.Name, kernelError(err)))
		}
	}
	err = inNetNS(n.cfg.NetNS, func() error {
		s, err := afpacket.Open(rxName, afpacket.Options{SkipOutgoing: true, PollInterval: excPoll * time.Millisecond})
		if err != nil {
			return err
		}
		r = &packetReader{s: s}
		return nil
	})
	if err != nil {
		return fail(fmt.Errorf("packet socket on %s: %w", rxName, err))
	}
	ports := n.tunPorts
	if err := n.installExceptionPath(tx, rxName, ports, r); err != nil {
		// Closing the qdiscs later removes whatever filters landed.
		return fail(err)
	}
	note := fmt.Sprintf("exception path: misses and to_host frames reach ReadExceptions through the veth pair %s/%s (two 802.1Q tags name the in-port and the reason or rule, mirred egress redirect; AF_PACKET)", txName, rxName)
	if len(n.lay.tunnels) > 0 {
		note += fmt.Sprintf("; on uplinks, UDP to ports %v (the tunnel devices), ARP and IPv6 neighbour discovery that no rule takes pass into the kernel's stack", ports)
		if err := n.openTunnelMisses(); err != nil {
			n.caps.TunnelMissesUnseen = true
			note += "; a tunnelled frame no decap rule takes continues into the tunnel device's stack and never reaches the host (tc sees it after the kernel removed the outer headers, and the BPF action that would carry them on is unavailable: " + err.Error() + ")"
		} else {
			note += "; a tunnelled frame no decap rule takes reaches ReadExceptions rebuilt with its outer headers (a BPF action, act_bpf, reads the tunnel metadata: VNI, outer addresses, TOS, TTL, flow label, Geneve options; the outer destination MAC is the endpoint's, the outer source MAC zero, the UDP source port the inner flow's hash), on the uplink whose endpoint holds its outer destination"
		}
	} else {
		note += "; on uplinks, ARP and IPv6 neighbour discovery that no rule takes pass into the kernel's stack"
	}
	return note, nil
}

// openTunnelMisses loads the BPF action of tunnelled misses
// (bpf/tunmiss.c) and installs the tunnel devices' catch-alls that run it.
// The program stays loaded while the NIC is open (the filters hold it
// too); Close releases it.
func (n *NIC) openTunnelMisses() error {
	spec, err := loadTunmiss()
	if err != nil {
		return err
	}
	var objs tunmissObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return fmt.Errorf("loading the BPF program: %w", err)
	}
	act := tunnelAction{fd: objs.TunnelMiss.FD(), name: "nicpath_tunnel_miss"}
	// act_bpf itself (the module may be missing): a probe in the probe
	// chain, as for every other action.
	if err := n.probeFilter("action bpf", n.flags&^clsFlagsSkipSW|clsFlagsSkipHW, bpfAction(act)); err != nil {
		objs.Close()
		return err
	}
	if err := n.installTunnelMisses(act); err != nil {
		objs.Close()
		return err
	}
	n.exc.closeTunnel = objs.Close
	return nil
}

// tunnelPorts are the UDP ports the tunnel devices receive on, read from
// the kernel (the IANA ports when it does not say).
func (n *NIC) tunnelPorts() []uint16 {
	seen := map[uint16]bool{}
	var out []uint16
	for kind, d := range n.lay.tunnels {
		if kind == hal.EncapNVGRE {
			continue // GRE: no UDP port
		}
		port := n.tunnelPort(kind, d)
		if !seen[port] {
			seen[port] = true
			out = append(out, port)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// tunnelPort is the UDP port tunnel device d receives on (the IANA port of
// its kind when the kernel does not say).
func (n *NIC) tunnelPort(kind hal.EncapKind, d *device) uint16 {
	var port uint16
	b := ifinfomsg(d.Ifindex, 0, 0)
	if msgs, err := n.conn.Execute(n.request(rtmGetLink, 0, b)); err == nil {
		for _, m := range msgs {
			if p := parseTunnelPort(m.Data); p != 0 {
				port = p
			}
		}
	}
	if port == 0 {
		port = hal.PortVXLAN
		if kind == hal.EncapGeneve {
			port = hal.PortGeneve
		}
	}
	return port
}

// packetReader reads the channel's receive end.
type packetReader struct {
	s *afpacket.Socket
}

func (p *packetReader) recv(buf []byte, wait bool) ([]byte, bool, error) {
	flags := 0
	if !wait {
		flags = unix.MSG_DONTWAIT
	}
	f, status, err := p.s.RecvFlags(buf, flags)
	if errors.Is(err, afpacket.ErrTimeout) {
		return nil, false, errNoFrame
	}
	return f, status&unix.TP_STATUS_CSUMNOTREADY != 0, err
}

func (p *packetReader) close() error { return p.s.Close() }
