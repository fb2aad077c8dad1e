package haltest

import (
	"context"

	"github.com/nicpath/nicpath/hal"
)

// OptionalInterfaces are the names of hal's optional interfaces: the ones a
// caller finds by type assertion on a hal.NIC. Wrap keeps each of them.
var OptionalInterfaces = []string{"AddressLearner", "AtomicApplier", "SealedAddresses", "TunnelTerminator"}

// Decorator forwards every method of hal.NIC to Inner. Embed it in a
// decorator, override what the decorator observes or changes, and hand on
// Wrap(decorator). It forwards none of the optional interfaces: Wrap takes
// those from Inner, or from the decorator where it overrides them.
type Decorator struct {
	Inner hal.NIC
}

// Unwrap returns the decorated NIC.
func (d *Decorator) Unwrap() hal.NIC { return d.Inner }

func (d *Decorator) Capabilities() hal.Capabilities { return d.Inner.Capabilities() }
func (d *Decorator) Ports() []hal.Port              { return d.Inner.Ports() }
func (d *Decorator) Validate(r *hal.Rule) error     { return d.Inner.Validate(r) }

func (d *Decorator) Apply(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	return d.Inner.Apply(ctx, ops, results)
}

func (d *Decorator) Dump(ctx context.Context, fn func(*hal.RuleInfo) error) error {
	return d.Inner.Dump(ctx, fn)
}

func (d *Decorator) Activate(ctx context.Context, scope hal.Scope, gen hal.Generation) error {
	return d.Inner.Activate(ctx, scope, gen)
}

func (d *Decorator) ActiveGeneration(scope hal.Scope) (hal.Generation, error) {
	return d.Inner.ActiveGeneration(scope)
}

func (d *Decorator) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	return d.Inner.ReadExceptions(ctx, batch)
}

func (d *Decorator) Inject(ctx context.Context, port hal.PortID, frames [][]byte) error {
	return d.Inner.Inject(ctx, port, frames)
}

func (d *Decorator) RuleCounters(ctx context.Context, ids []hal.RuleID, out []hal.Counters) error {
	return d.Inner.RuleCounters(ctx, ids, out)
}

func (d *Decorator) PortCounters(ctx context.Context, port hal.PortID) (hal.PortCounters, error) {
	return d.Inner.PortCounters(ctx, port)
}

func (d *Decorator) Stats(ctx context.Context) (hal.Stats, error) { return d.Inner.Stats(ctx) }
func (d *Decorator) Close() error                                 { return d.Inner.Close() }

var _ Wrapper = (*Decorator)(nil)

// Wrapper is a hal.NIC that decorates another, which Unwrap returns. A type
// that embeds Decorator is one.
type Wrapper interface {
	hal.NIC
	Unwrap() hal.NIC
}

// The values Wrap returns: the decorator for hal.NIC (and Unwrap), and one
// field per optional interface the wrapped NIC has. Four optional
// interfaces make sixteen combinations, written out: a type's method set is
// fixed when it is compiled.
type (
	wrapped     struct{ Wrapper }
	wrappedASTL struct {
		Wrapper
		hal.AtomicApplier
		hal.SealedAddresses
		hal.TunnelTerminator
		hal.AddressLearner
	}
	wrappedAST struct {
		Wrapper
		hal.AtomicApplier
		hal.SealedAddresses
		hal.TunnelTerminator
	}
	wrappedASL struct {
		Wrapper
		hal.AtomicApplier
		hal.SealedAddresses
		hal.AddressLearner
	}
	wrappedATL struct {
		Wrapper
		hal.AtomicApplier
		hal.TunnelTerminator
		hal.AddressLearner
	}
	wrappedSTL struct {
		Wrapper
		hal.SealedAddresses
		hal.TunnelTerminator
		hal.AddressLearner
	}
	wrappedAS struct {
		Wrapper
		hal.AtomicApplier
		hal.SealedAddresses
	}
	wrappedAT struct {
		Wrapper
		hal.AtomicApplier
		hal.TunnelTerminator
	}
	wrappedAL struct {
		Wrapper
		hal.AtomicApplier
		hal.AddressLearner
	}
	wrappedST struct {
		Wrapper
		hal.SealedAddresses
		hal.TunnelTerminator
	}
	wrappedSL struct {
		Wrapper
		hal.SealedAddresses
		hal.AddressLearner
	}
	wrappedTL struct {
		Wrapper
		hal.TunnelTerminator
		hal.AddressLearner
	}
	wrappedA struct {
		Wrapper
		hal.AtomicApplier
	}
	wrappedS struct {
		Wrapper
		hal.SealedAddresses
	}
	wrappedT struct {
		Wrapper
		hal.TunnelTerminator
	}
	wrappedL struct {
		Wrapper
		hal.AddressLearner
	}
)

// Wrap returns d as a hal.NIC with exactly the optional interfaces of the
// NIC it decorates (d.Unwrap()): each is d's own method set where d
// implements the interface, the decorated NIC's otherwise. Unwrap on the
// result returns d.Unwrap(), so that a chain of decorators can be walked
// down to the device.
func Wrap(d Wrapper) hal.NIC {
	inner := d.Unwrap()
	a, hasA := inner.(hal.AtomicApplier)
	if da, ok := d.(hal.AtomicApplier); ok {
		a = da
	}
	s, hasS := inner.(hal.SealedAddresses)
	if ds, ok := d.(hal.SealedAddresses); ok {
		s = ds
	}
	t, hasT := inner.(hal.TunnelTerminator)
	if dt, ok := d.(hal.TunnelTerminator); ok {
		t = dt
	}
	l, hasL := inner.(hal.AddressLearner)
	if dl, ok := d.(hal.AddressLearner); ok {
		l = dl
	}
	switch {
	case hasA && hasS && hasT && hasL:
		return wrappedASTL{d, a, s, t, l}
	case hasA && hasS && hasT:
		return wrappedAST{d, a, s, t}
	case hasA && hasS && hasL:
		return wrappedASL{d, a, s, l}
	case hasA && hasT && hasL:
		return wrappedATL{d, a, t, l}
	case hasS && hasT && hasL:
		return wrappedSTL{d, s, t, l}
	case hasA && hasS:
		return wrappedAS{d, a, s}
	case hasA && hasT:
		return wrappedAT{d, a, t}
	case hasA && hasL:
		return wrappedAL{d, a, l}
	case hasS && hasT:
		return wrappedST{d, s, t}
	case hasS && hasL:
		return wrappedSL{d, s, l}
	case hasT && hasL:
		return wrappedTL{d, t, l}
	case hasA:
		return wrappedA{d, a}
	case hasS:
		return wrappedS{d, s}
	case hasT:
		return wrappedT{d, t}
	case hasL:
		return wrappedL{d, l}
	}
	return wrapped{d}
}
