// Package haltest holds helpers for code that wraps or fakes a hal.NIC:
// a decorator base that keeps every optional interface of the NIC it wraps,
// and a NIC that fails the calls a test chooses.
//
// # Decorators
//
// Callers find a NIC's optional abilities by type assertion (the vswitch
// looks for hal.AtomicApplier and hal.TunnelTerminator, the conformance
// suite for hal.SealedAddresses). A decorator written as a struct that
// embeds hal.NIC has none of them, whatever it wraps: a NIC that applies
// batches all or nothing loses that promise behind a metrics decorator, and
// the switch falls back to Apply. gVisor's sniffer wraps any link endpoint
// and loses nothing; Wrap does the same for a hal.NIC.
//
// A decorator embeds Decorator, which forwards every method of hal.NIC to
// Inner, and overrides the methods it observes or changes. Wrap returns it
// as the hal.NIC to hand on: a value that has exactly the optional
// interfaces Inner has, each served by the decorator when it overrides it
// (a decorator that counts rule operations overrides ApplyAtomic too), by
// Inner directly otherwise. An optional interface the decorator implements
// but Inner does not is hidden: a decorator cannot promise what the device
// does not do.
//
//	type counting struct {
//		haltest.Decorator
//		ops int
//	}
//
//	func (c *counting) Apply(ctx context.Context, ops []hal.Op, res []hal.OpResult) error {
//		c.ops += len(ops)
//		return c.Inner.Apply(ctx, ops, res)
//	}
//
//	nic := haltest.Wrap(&counting{Decorator: haltest.Decorator{Inner: soft}})
//
// OptionalInterfaces names the interfaces Wrap keeps; its test checks the
// list against hal's declarations, so that an optional interface added to
// hal is not silently dropped here.
//
// # Faults
//
// FaultNIC decorates a NIC with failures a test injects, per method and,
// for Apply and ApplyAtomic, per operation, the way a full table or a
// failing device would fail them. ApplyAtomic keeps its promise under
// injected faults: one failing operation and nothing of the batch lands.
//
// haltest imports hal only, so that a driver's tests, the vswitch's and an
// agent can all use it.
package haltest
