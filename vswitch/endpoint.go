package vswitch

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/nicpath/nicpath/hal"
)

// The tunnel endpoint.
//
// A host accepts tunnelled frames only for its own provider address(es)
// and, on the wire, its uplink's MAC. Where the NIC filters them itself
// (Capabilities.TunnelFilter, hal.TunnelTerminator) the switch gives it the
// endpoint of every uplink when it starts and whenever the host's PA
// changes, and the NIC drops frames for another endpoint on its fast path
// (hal.ReasonNotLocal). Whatever the NIC, the slow path drops those that
// reach it (Switch.notLocal, DropNotLocal), and unified decap flows match
// the outer destination exactly (hal.Exact: a NIC that cannot match
// tun_dst refuses them, and they stay in the host), so no NIC decapsulates
// a frame for another PA by a rule of ours. A NIC without the filter cannot
// match the outer MAC, though: a frame for our PA but another station's
// MAC that hits one of our decap rules is delivered by such a NIC, and
// dropped only when it reaches the host.

// endpoint is what the switch told the NIC about its tunnel endpoint.
type endpoint struct {
	tt      hal.TunnelTerminator // nil: the NIC does not filter
	uplinks []hal.Port           // the NIC's uplinks (the switch's own among them)
	set     []netip.Addr         // the addresses given to the NIC, once it took them
	synced  bool                 // set holds what the NIC has
	err     error                // the last failure; Maintain tries again
}

// initEndpoint finds out whether the NIC filters tunnelled frames and which
// ports are its uplinks.
func (s *Switch) initEndpoint() {
	for _, p := range s.nic.Ports() {
		if p.Kind == hal.PortUplink || p.ID == s.cfg.Uplink {
			s.ep.uplinks = append(s.ep.uplinks, p)
		}
	}
	tt, ok := s.nic.(hal.TunnelTerminator)
	switch {
	case s.caps.TunnelFilter && ok:
		s.ep.tt = tt
	case s.caps.TunnelFilter:
		s.log.Warn("the NIC advertises a tunnel filter but does not implement hal.TunnelTerminator: the host drops tunnelled frames for another endpoint itself")
	}
}

// tunnelFilter reports whether the NIC drops tunnelled frames for another
// endpoint itself.
func (s *Switch) tunnelFilter() bool { return s.ep.tt != nil }

// syncEndpoint gives the NIC the tunnel endpoint of every uplink (this
// host's PAs, the uplink's MAC) when it differs from what the NIC has, or
// when the last attempt failed. The caller holds s.mu.
func (s *Switch) syncEndpoint(ctx context.Context) error {
	if s.ep.tt == nil {
		return nil
	}
	addrs := s.cur.endpoint
	if s.ep.synced && slices.Equal(s.ep.set, addrs) {
		return nil
	}
	if len(addrs) == 0 {
		// Removing the endpoint turns the NIC's filter off; the host
		// still drops every tunnelled frame (it terminates none).
		s.log.Warn("host has no provider address in the policy: the NIC's tunnel filter is removed", "host", s.cfg.Host)
	}
	var errs []error
	for _, p := range s.ep.uplinks {
		ep := hal.TunnelEndpoint{Port: p.ID, MAC: p.MAC, Addrs: slices.Clone(addrs)}
		if err := s.ep.tt.SetTunnelEndpoint(ctx, ep); err != nil {
			errs = append(errs, fmt.Errorf("tunnel endpoint of port %d (%s): %w", p.ID, p.Name, err))
		}
	}
	s.ep.err = errors.Join(errs...)
	s.ep.synced = s.ep.err == nil
	if s.ep.synced {
		s.ep.set = slices.Clone(addrs)
	}
	return s.ep.err
}
