package remote

import (
	"context"

	"github.com/nicpath/nicpath/hal"
)

// The NIC Open returns has an optional interface exactly when the served
// NIC has it, since callers find them by type assertion (the vswitch looks
// for hal.AtomicApplier, the conformance suite checks that the assertion
// and Capabilities agree). Each optional interface is a small method set
// over the Client; the sixteen combinations embed them.

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

type learnM struct{ c *Client }

func (m learnM) ReadLearned(ctx context.Context, batch []hal.LearnedAddress) (int, error) {
	return m.c.readLearned(ctx, batch)
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
	nicL struct {
		*Client
		learnM
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
	nicAL struct {
		*Client
		atomicM
		learnM
	}
	nicST struct {
		*Client
		sealedM
		tunnelM
	}
	nicSL struct {
		*Client
		sealedM
		learnM
	}
	nicTL struct {
		*Client
		tunnelM
		learnM
	}
	nicAST struct {
		*Client
		atomicM
		sealedM
		tunnelM
	}
	nicASL struct {
		*Client
		atomicM
		sealedM
		learnM
	}
	nicATL struct {
		*Client
		atomicM
		tunnelM
		learnM
	}
	nicSTL struct {
		*Client
		sealedM
		tunnelM
		learnM
	}
	nicASTL struct {
		*Client
		atomicM
		sealedM
		tunnelM
		learnM
	}
)

var (
	_ hal.AtomicApplier    = nicA{}
	_ hal.SealedAddresses  = nicS{}
	_ hal.TunnelTerminator = nicT{}
	_ hal.AddressLearner   = nicL{}
	_ hal.NIC              = nicASTL{}
	_ hal.AtomicApplier    = nicASTL{}
	_ hal.SealedAddresses  = nicASTL{}
	_ hal.TunnelTerminator = nicASTL{}
	_ hal.AddressLearner   = nicASTL{}
)

// wrap returns c with the served NIC's optional interfaces, as of the
// first hello (a type cannot change its methods later; a NIC side that
// comes back with fewer refuses the calls with hal.ErrNotSupported).
func (c *Client) wrap() hal.NIC {
	c.mu.Lock()
	o := c.opts
	c.mu.Unlock()
	a, s, t, l := atomicM{c}, sealedM{c}, tunnelM{c}, learnM{c}
	switch o & optAll {
	case optAtomic:
		return nicA{c, a}
	case optSealed:
		return nicS{c, s}
	case optTunnel:
		return nicT{c, t}
	case optLearn:
		return nicL{c, l}
	case optAtomic | optSealed:
		return nicAS{c, a, s}
	case optAtomic | optTunnel:
		return nicAT{c, a, t}
	case optAtomic | optLearn:
		return nicAL{c, a, l}
	case optSealed | optTunnel:
		return nicST{c, s, t}
	case optSealed | optLearn:
		return nicSL{c, s, l}
	case optTunnel | optLearn:
		return nicTL{c, t, l}
	case optAtomic | optSealed | optTunnel:
		return nicAST{c, a, s, t}
	case optAtomic | optSealed | optLearn:
		return nicASL{c, a, s, l}
	case optAtomic | optTunnel | optLearn:
		return nicATL{c, a, t, l}
	case optSealed | optTunnel | optLearn:
		return nicSTL{c, s, t, l}
	case optAtomic | optSealed | optTunnel | optLearn:
		return nicASTL{c, a, s, t, l}
	}
	return c
}
