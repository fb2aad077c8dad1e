package softnic

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/nicpath/nicpath/hal"
)

var _ hal.TunnelTerminator = (*NIC)(nil)

// tunFilter is the tunnel endpoint of one uplink, as the datapath checks
// it: the outer destination MAC and IP addresses a tunnelled frame must
// carry to be processed. Read-only once published.
type tunFilter struct {
	mac    hal.MAC    // unicast: the endpoint's MAC, or the port's
	addrs  [][16]byte // unicast addresses, IPv4 ones IPv4-mapped (as in FlowKey.TunDst)
	groups []tunGroup
}

type tunGroup struct {
	addr [16]byte
	mac  hal.MAC // the group's multicast MAC (RFC 1112 §6.4, RFC 2464 §7)
}

// accepts reports whether a tunnelled frame whose outer Ethernet
// destination is dstMAC (6 bytes) and outer IP destination dst is for this
// endpoint. A NIC terminates tunnels for a handful of addresses: a linear
// walk is a compare or two.
func (f *tunFilter) accepts(dstMAC []byte, dst *[16]byte) bool {
	mac := hal.MAC(dstMAC[:6])
	for i := range f.addrs {
		if f.addrs[i] == *dst {
			return mac == f.mac
		}
	}
	for i := range f.groups {
		if f.groups[i].addr == *dst {
			return mac == f.groups[i].mac
		}
	}
	return false
}

// multicastMAC is the Ethernet address an IP multicast group maps to.
func multicastMAC(a netip.Addr) hal.MAC {
	if a.Is4() {
		b := a.As4()
		return hal.MAC{0x01, 0x00, 0x5e, b[1] & 0x7f, b[2], b[3]}
	}
	b := a.As16()
	return hal.MAC{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// SetTunnelEndpoint sets what the uplink ep.Port terminates tunnels for
// (hal.TunnelTerminator): from the next burst on, a tunnelled frame
// arriving there (VXLAN, Geneve or NVGRE, whatever the rules and
// Config.Disable.Decaps say of its kind) whose outer destination IP is
// none of ep.Addrs and ep.Groups, or whose outer destination MAC is not
// ep.MAC (the port's MAC when zero) for an address or the group's
// multicast MAC for a group, is dropped with hal.ReasonNotLocal: counted
// in Stats.Drops and the port's Drops, never matched, never handed to the
// host. Frames that are not tunnelled, and frames on other ports, are not
// looked at. An endpoint without Addrs turns filtering off for the port.
// It fails with ErrNotFound for an unknown port, ErrNotSupported for a
// vport (tunnels end on uplinks) or when Config.Disable.TunnelFilter is
// set, and ErrInvalidRule for an address that is not a unicast one (Addrs)
// or not a multicast one (Groups).
func (n *NIC) SetTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	if n.closed.Load() {
		return hal.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !n.caps.TunnelFilter {
		return fmt.Errorf("%s: tunnel endpoint: %w", DriverName, hal.ErrNotSupported)
	}
	p := n.port(ep.Port)
	if p == nil {
		return fmt.Errorf("%s: tunnel endpoint: port %d: %w", DriverName, ep.Port, hal.ErrNotFound)
	}
	if p.info.Kind != hal.PortUplink {
		return fmt.Errorf("%s: tunnel endpoint on %s port %d: tunnels end on uplinks: %w", DriverName, p.info.Kind, ep.Port, hal.ErrNotSupported)
	}
	if len(ep.Addrs) == 0 {
		p.tun.Store(nil)
		return nil
	}
	f := &tunFilter{mac: ep.MAC}
	if f.mac.IsZero() {
		f.mac = p.info.MAC
	}
	for _, a := range ep.Addrs {
		a = a.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
			return fmt.Errorf("%s: tunnel endpoint address %v: not a unicast address: %w", DriverName, a, hal.ErrInvalidRule)
		}
		f.addrs = append(f.addrs, a.As16())
	}
	for _, g := range ep.Groups {
		g = g.Unmap()
		if !g.IsMulticast() || g.Zone() != "" {
			return fmt.Errorf("%s: tunnel endpoint group %v: not a multicast address: %w", DriverName, g, hal.ErrInvalidRule)
		}
		f.groups = append(f.groups, tunGroup{addr: g.As16(), mac: multicastMAC(g)})
	}
	p.tun.Store(f)
	return nil
}
