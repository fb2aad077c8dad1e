package xdp

import (
	"fmt"
	"net/netip"

	"github.com/nicpath/nicpath/hal"
)

// multicastMAC is the Ethernet destination of IP multicast group g:
// 01:00:5e and the low 23 bits of an IPv4 group (RFC 1112), 33:33 and the
// low 32 bits of an IPv6 one (RFC 2464).
func multicastMAC(g netip.Addr) hal.MAC {
	if g.Is4() {
		a := g.As4()
		return hal.MAC{0x01, 0x00, 0x5e, a[1] & 0x7f, a[2], a[3]}
	}
	a := g.As16()
	return hal.MAC{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

// encodeTunnelEndpoint turns ep into struct tun_ep for an uplink whose own
// MAC is portMAC: each address with the destination MAC accepted with it.
// ok is false when ep has no Addrs (filtering off).
func encodeTunnelEndpoint(ep *hal.TunnelEndpoint, portMAC hal.MAC) (v bpfTunEP, ok bool, err error) {
	if len(ep.Addrs) == 0 {
		return v, false, nil
	}
	if n := len(ep.Addrs) + len(ep.Groups); n > maxEPAddrs {
		return v, false, hal.Unsupported(DriverName, "tunnel endpoint", "%d addresses and groups; the program holds %d per uplink", n, maxEPAddrs)
	}
	mac := ep.MAC
	if mac == (hal.MAC{}) {
		mac = portMAC
	}
	add := func(a netip.Addr, m hal.MAC) {
		e := &v.A[v.N]
		e.Addr = a.Unmap().As16() // IPv4 as the program keys it: mapped
		e.MAC = m
		v.N++
	}
	for _, a := range ep.Addrs {
		a = a.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
			return v, false, fmt.Errorf("xdp: tunnel endpoint address %v is not a unicast address: %w", a, hal.ErrInvalidRule)
		}
		add(a, mac)
	}
	for _, g := range ep.Groups {
		g = g.Unmap()
		if !g.IsMulticast() || g.Zone() != "" {
			return v, false, fmt.Errorf("xdp: tunnel endpoint group %v is not a multicast address: %w", g, hal.ErrInvalidRule)
		}
		add(g, multicastMAC(g))
	}
	return v, true, nil
}
