//go:build linux

package xdp

import (
	"context"

	"github.com/cilium/ebpf"
	"github.com/nicpath/nicpath/hal"
)

// Generations: a scope's live generation is one entry of the active_gen map,
// read by the program per packet.

// Activate makes gen the live generation of scope: one write to the
// active-generation array, whatever the number of rules.
func (n *NIC) Activate(ctx context.Context, scope hal.Scope, gen hal.Generation) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return err
	}
	if int(scope) >= n.cfg.MaxScopes {
		return hal.Unsupported(DriverName, "scope", "scope %d is beyond the %d scopes of the generation map", scope, n.cfg.MaxScopes)
	}
	if err := n.maps["active_gen"].Update(uint32(scope), uint32(gen), ebpf.UpdateAny); err != nil {
		return &hal.OpError{Driver: DriverName, Op: "activate", Err: err}
	}
	n.active[scope] = gen
	return nil
}

// ActiveGeneration returns the live generation of scope (0 at first).
func (n *NIC) ActiveGeneration(scope hal.Scope) (hal.Generation, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return 0, err
	}
	return n.active[scope], nil
}
