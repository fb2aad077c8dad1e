package remote

import (
	"context"

	"github.com/nicpath/nicpath/hal"
)

// The NIC Open returns has an optional interface exactly when the served
// NIC has it, since callers find them by type assertion (the vswitch looks
// for hal.AtomicApplier, the conformance suite checks that the assertion
// and Capabilities agree). Each optional interface is a small method set
// over the Client; the eight combinations embed them.

type atomicM struct{ c *Client }

func (m atomicM) ApplyAtomic(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	return m.c.applyAtomic(ctx, ops, results)
}

type sealedM struct{ c *Client }

func (m sealedM) SealPublicKey() [32]byte { return m.c.sealPublicKey() }
func (m sealedM) RegisterSealKey(ctx context.Context, port hal.PortID, keyID uint8, vmPublic [32]byte) error {
	return m.c.registerSealKey(ctx, port, keyID, vmPublic)
}
func (m sealedM) RevokeSealKey(ctx context.Context, port hal.PortID, keyID uint8) error {
	return m.c.revokeSealKey(ctx, port, keyID)
}
func (m sealedM) SetSealedRoutes(ctx context.Context, port hal.PortID, routes []hal.SealedRoute) error {
	return m.c.setSealedRoutes(ctx, port, routes)
}

type tunnelM struct{ c *Client }

func (m tunnelM) SetTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	return m.c.setTunnelEndpoint(ctx, ep)
}

type (
	nicA struct {
		*Client
		atomicM
	}
	nicS struct {
		*Client
		sealedM
	}
	nicT struct {
		*Client
		tunnelM
	}
	nicAS struct {
		*Client
		atomicM
		sealedM
	}
	nicAT struct {
		*Client
		atomicM
		tunnelM
	}
	nicST struct {
		*Client
		sealedM
		tunnelM
	}
	nicAST struct {
		*Client
		atomicM
		sealedM
		tunnelM
	}
)

var (
	_ hal.AtomicApplier    = nicA{}
	_ hal.SealedAddresses  = nicS{}
	_ hal.TunnelTerminator = nicT{}
	_ hal.NIC              = nicAST{}
	_ hal.AtomicApplier    = nicAST{}
	_ hal.SealedAddresses  = nicAST{}
	_ hal.TunnelTerminator = nicAST{}
)

// wrap returns c with the served NIC's optional interfaces, as of the
// first hello (a type cannot change its methods later; a NIC side that
// comes back with fewer refuses the calls with hal.ErrNotSupported).
func (c *Client) wrap() hal.NIC {
	c.mu.Lock()
	o := c.opts
	c.mu.Unlock()
	a, s, t := atomicM{c}, sealedM{c}, tunnelM{c}
	switch o & optAll {
	case optAtomic:
		return nicA{c, a}
	case optSealed:
		return nicS{c, s}
	case optTunnel:
		return nicT{c, t}
	case optAtomic | optSealed:
		return nicAS{c, a, s}
	case optAtomic | optTunnel:
		return nicAT{c, a, t}
	case optSealed | optTunnel:
		return nicST{c, s, t}
	case optAll:
		return nicAST{c, a, s, t}
	}
	return c
}
