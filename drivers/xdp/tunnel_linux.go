//go:build linux

package xdp

import (
	"context"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/nicpath/nicpath/hal"
)

// The tunnel endpoint: the addresses each uplink accepts tunnelled frames for,
// in the tun_eps map (tunnel.go encodes them).

// SetTunnelEndpoint makes an uplink accept tunnelled frames only for ep:
// the program drops any other (ReasonNotLocal) before decapsulating,
// matching or handing it to the host. An endpoint without Addrs turns the
// filter off for the port. See hal.TunnelTerminator.
func (n *NIC) SetTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	p, ok := n.ports[ep.Port]
	if !ok {
		return fmt.Errorf("xdp: tunnel endpoint on port %d: %w", ep.Port, hal.ErrNotFound)
	}
	if p.Kind != hal.PortUplink {
		return hal.Unsupported(DriverName, "tunnel endpoint", "port %d is a %v; tunnels end on uplinks", ep.Port, p.Kind)
	}
	v, on, err := encodeTunnelEndpoint(&ep, p.MAC)
	if err != nil {
		return err
	}
	m := n.maps["tun_eps"]
	if !on {
		if err := m.Delete(uint32(ep.Port)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return &hal.OpError{Driver: DriverName, Op: "tunnel endpoint", Err: err}
		}
		return nil
	}
	// One update replaces the whole entry (a hash element is swapped in),
	// so a frame never meets half an endpoint.
	if err := m.Update(uint32(ep.Port), &v, ebpf.UpdateAny); err != nil {
		return &hal.OpError{Driver: DriverName, Op: "tunnel endpoint", Err: err}
	}
	return nil
}
