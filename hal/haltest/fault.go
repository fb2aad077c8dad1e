package haltest

import (
	"context"
	"fmt"
	"sync"

	"github.com/nicpath/nicpath/hal"
)

// Method names a method of hal.NIC or of an optional interface, for
// FaultNIC.FailCall.
type Method string

// The methods a FaultNIC can fail: every one that returns an error.
const (
	MethodValidate          Method = "Validate"
	MethodApply             Method = "Apply"
	MethodApplyAtomic       Method = "ApplyAtomic"
	MethodDump              Method = "Dump"
	MethodActivate          Method = "Activate"
	MethodActiveGeneration  Method = "ActiveGeneration"
	MethodReadExceptions    Method = "ReadExceptions"
	MethodInject            Method = "Inject"
	MethodRuleCounters      Method = "RuleCounters"
	MethodPortCounters      Method = "PortCounters"
	MethodStats             Method = "Stats"
	MethodClose             Method = "Close"
	MethodRegisterSealKey   Method = "RegisterSealKey"
	MethodRevokeSealKey     Method = "RevokeSealKey"
	MethodSetSealedRoutes   Method = "SetSealedRoutes"
	MethodSetTunnelEndpoint Method = "SetTunnelEndpoint"
)

// FaultNIC injects failures into a NIC: the failures are set on it, and
// NIC returns the decorated NIC to hand to the code under test, with the
// optional interfaces of the NIC it wraps. Calls that are not set to fail
// reach the wrapped NIC unchanged. Its methods may be called while the NIC
// is in use.
type FaultNIC struct {
	nic hal.NIC

	mu       sync.Mutex
	op       func(op *hal.Op) error
	validate func(r *hal.Rule) error
	calls    map[Method]error
	failed   int // operations failed by op
}

// NewFaultNIC returns a FaultNIC over nic that fails nothing yet.
func NewFaultNIC(nic hal.NIC) *FaultNIC {
	f := &FaultNIC{calls: map[Method]error{}}
	f.nic = Wrap(&faulty{Decorator: Decorator{Inner: nic}, f: f})
	return f
}

// NIC is the decorated NIC.
func (f *FaultNIC) NIC() hal.NIC { return f.nic }

// FailOps makes Apply and ApplyAtomic fail the operations for which fn
// returns an error, with that error; nil fn fails none. Apply passes the
// other operations of the batch to the NIC, in order; ApplyAtomic passes
// none when one fails and marks the others hal.ErrNotApplied, as an atomic
// batch that is rolled back does. Both return the batch's *hal.BatchError.
func (f *FaultNIC) FailOps(fn func(op *hal.Op) error) {
	f.mu.Lock()
	f.op = fn
	f.mu.Unlock()
}

// FailValidate makes Validate return fn's error for the rules it refuses
// (nil: ask the NIC); nil fn refuses none.
func (f *FaultNIC) FailValidate(fn func(r *hal.Rule) error) {
	f.mu.Lock()
	f.validate = fn
	f.mu.Unlock()
}

// FailCall makes every call of m return err without reaching the NIC, until
// it is called again with a nil err. A failed Apply or ApplyAtomic fills
// every result with err and returns a *hal.BatchError, as a batch the
// driver refuses whole does (hal.CheckApply); a failed ReadExceptions
// returns no exceptions.
func (f *FaultNIC) FailCall(m Method, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.calls, m)
		return
	}
	f.calls[m] = err
}

// Failed returns how many operations FailOps' function has failed.
func (f *FaultNIC) Failed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *FaultNIC) callErr(m Method) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[m]
}

// faulty is the decorator FaultNIC hands out.
type faulty struct {
	Decorator
	f *FaultNIC
}

func (d *faulty) Validate(r *hal.Rule) error {
	if err := d.f.callErr(MethodValidate); err != nil {
		return err
	}
	d.f.mu.Lock()
	fn := d.f.validate
	d.f.mu.Unlock()
	if fn != nil {
		if err := fn(r); err != nil {
			return err
		}
	}
	return d.Inner.Validate(r)
}

func (d *faulty) Apply(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	return d.apply(ctx, MethodApply, ops, results, d.Inner.Apply)
}

func (d *faulty) ApplyAtomic(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	aa, ok := d.Inner.(hal.AtomicApplier)
	if !ok {
		return unsupported(d.Inner, MethodApplyAtomic)
	}
	return d.apply(ctx, MethodApplyAtomic, ops, results, aa.ApplyAtomic)
}

func (d *faulty) apply(ctx context.Context, m Method, ops []hal.Op, results []hal.OpResult,
	next func(context.Context, []hal.Op, []hal.OpResult) error) error {
	if err := d.f.callErr(m); err != nil {
		n := min(len(ops), len(results))
		for i := range results[:n] {
			results[i].Err = err
		}
		return &hal.BatchError{Total: len(ops), Failed: len(ops), First: err}
	}
	d.f.mu.Lock()
	fail := d.f.op
	d.f.mu.Unlock()
	if fail == nil || len(results) < len(ops) {
		// The NIC refuses a short results slice itself.
		return next(ctx, ops, results)
	}
	var pass []hal.Op
	var idx []int
	failed := 0
	for i := range ops {
		if err := fail(&ops[i]); err != nil {
			results[i].Err = err
			failed++
			continue
		}
		pass = append(pass, ops[i])
		idx = append(idx, i)
	}
	d.f.mu.Lock()
	d.f.failed += failed
	d.f.mu.Unlock()
	if failed == 0 {
		return next(ctx, ops, results)
	}
	if m == MethodApplyAtomic {
		// Rolled back: nothing of the batch lands.
		for _, i := range idx {
			results[i].Err = hal.ErrNotApplied
		}
		return hal.Summarize(results[:len(ops)])
	}
	if len(pass) > 0 {
		res := make([]hal.OpResult, len(pass))
		next(ctx, pass, res)
		for j, i := range idx {
			results[i] = res[j]
		}
	}
	return hal.Summarize(results[:len(ops)])
}

func (d *faulty) Dump(ctx context.Context, fn func(*hal.RuleInfo) error) error {
	if err := d.f.callErr(MethodDump); err != nil {
		return err
	}
	return d.Inner.Dump(ctx, fn)
}

func (d *faulty) Activate(ctx context.Context, scope hal.Scope, gen hal.Generation) error {
	if err := d.f.callErr(MethodActivate); err != nil {
		return err
	}
	return d.Inner.Activate(ctx, scope, gen)
}

func (d *faulty) ActiveGeneration(scope hal.Scope) (hal.Generation, error) {
	if err := d.f.callErr(MethodActiveGeneration); err != nil {
		return 0, err
	}
	return d.Inner.ActiveGeneration(scope)
}

func (d *faulty) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	if err := d.f.callErr(MethodReadExceptions); err != nil {
		return 0, err
	}
	return d.Inner.ReadExceptions(ctx, batch)
}

func (d *faulty) Inject(ctx context.Context, port hal.PortID, frames [][]byte) error {
	if err := d.f.callErr(MethodInject); err != nil {
		return err
	}
	return d.Inner.Inject(ctx, port, frames)
}

func (d *faulty) RuleCounters(ctx context.Context, ids []hal.RuleID, out []hal.Counters) error {
	if err := d.f.callErr(MethodRuleCounters); err != nil {
		return err
	}
	return d.Inner.RuleCounters(ctx, ids, out)
}

func (d *faulty) PortCounters(ctx context.Context, port hal.PortID) (hal.PortCounters, error) {
	if err := d.f.callErr(MethodPortCounters); err != nil {
		return hal.PortCounters{}, err
	}
	return d.Inner.PortCounters(ctx, port)
}

func (d *faulty) Stats(ctx context.Context) (hal.Stats, error) {
	if err := d.f.callErr(MethodStats); err != nil {
		return hal.Stats{}, err
	}
	return d.Inner.Stats(ctx)
}

func (d *faulty) Close() error {
	if err := d.f.callErr(MethodClose); err != nil {
		return err
	}
	return d.Inner.Close()
}

func (d *faulty) SealPublicKey() [32]byte {
	if s, ok := d.Inner.(hal.SealedAddresses); ok {
		return s.SealPublicKey()
	}
	return [32]byte{}
}

func (d *faulty) RegisterSealKey(ctx context.Context, port hal.PortID, keyID uint8, vmPublic [32]byte) error {
	s, ok := d.Inner.(hal.SealedAddresses)
	if !ok {
		return unsupported(d.Inner, MethodRegisterSealKey)
	}
	if err := d.f.callErr(MethodRegisterSealKey); err != nil {
		return err
	}
	return s.RegisterSealKey(ctx, port, keyID, vmPublic)
}

func (d *faulty) RevokeSealKey(ctx context.Context, port hal.PortID, keyID uint8) error {
	s, ok := d.Inner.(hal.SealedAddresses)
	if !ok {
		return unsupported(d.Inner, MethodRevokeSealKey)
	}
	if err := d.f.callErr(MethodRevokeSealKey); err != nil {
		return err
	}
	return s.RevokeSealKey(ctx, port, keyID)
}

func (d *faulty) SetSealedRoutes(ctx context.Context, port hal.PortID, routes []hal.SealedRoute) error {
	s, ok := d.Inner.(hal.SealedAddresses)
	if !ok {
		return unsupported(d.Inner, MethodSetSealedRoutes)
	}
	if err := d.f.callErr(MethodSetSealedRoutes); err != nil {
		return err
	}
	return s.SetSealedRoutes(ctx, port, routes)
}

func (d *faulty) SetTunnelEndpoint(ctx context.Context, ep hal.TunnelEndpoint) error {
	t, ok := d.Inner.(hal.TunnelTerminator)
	if !ok {
		return unsupported(d.Inner, MethodSetTunnelEndpoint)
	}
	if err := d.f.callErr(MethodSetTunnelEndpoint); err != nil {
		return err
	}
	return t.SetTunnelEndpoint(ctx, ep)
}

// unsupported is the answer of an optional method the wrapped NIC lacks;
// Wrap hides such methods, so only a caller holding the decorator itself
// meets it.
func unsupported(n hal.NIC, m Method) error {
	return fmt.Errorf("%s: %s: %w", n.Capabilities().Driver, m, hal.ErrNotSupported)
}
