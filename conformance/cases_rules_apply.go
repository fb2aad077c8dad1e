package conformance

import (
	"context"
	"errors"
	"fmt"

	"github.com/nicpath/nicpath/hal"
)

func init() {
	register("apply", "a batch Apply cannot run (too large, too few results, NIC closed, context done) is refused whole: a *hal.BatchError, every result filled with the sentinel, nothing applied", caseApply)
}

// applier is Apply or ApplyAtomic.
type applier struct {
	name string
	fn   func(ctx context.Context, ops []hal.Op, results []hal.OpResult) error
}

func (e *env) appliers() []applier {
	out := []applier{{"Apply", e.nic.Apply}}
	if aa, ok := e.nic.(hal.AtomicApplier); ok && e.caps.AtomicBatch {
		out = append(out, applier{"ApplyAtomic", aa.ApplyAtomic})
	}
	return out
}

// refusedWhole checks that a batch of n operations was refused as
// hal.CheckApply refuses it: a *hal.BatchError counting all n as failed,
// every result there is filled with an error errors.Is matches to want.
func refusedWhole(t T, what string, err error, res []hal.OpResult, n int, want error) {
	t.Helper()
	var be *hal.BatchError
	if !errors.As(err, &be) {
		t.Errorf("%s: returned %v (%T), want a *hal.BatchError", what, err, err)
		return
	}
	if !errors.Is(err, want) {
		t.Errorf("%s: returned %v; errors.Is(%v) is false", what, err, want)
	}
	if be.Total != n || be.Failed != n {
		t.Errorf("%s: BatchError total %d, failed %d; want %d and %d: nothing of the batch ran", what, be.Total, be.Failed, n, n)
	}
	for i := range res {
		if !errors.Is(res[i].Err, want) {
			t.Errorf("%s: result %d = %v, want %v", what, i, res[i].Err, want)
			break
		}
	}
}

// batchMaker builds n adds of distinct, well-formed rules that must not land.
type batchMaker struct {
	e    *env
	base hal.Match
	acts []hal.Action
}

func (b *batchMaker) adds(n int) []hal.Op {
	ops := make([]hal.Op, n)
	for i := range ops {
		// One action list for all: the suite builds up to 64k of them.
		ops[i] = hal.AddOp(hal.Rule{ID: b.e.nextID, Priority: 1, Match: b.base, Actions: b.acts})
		b.e.nextID++
	}
	return ops
}

// noneLanded checks that no rule of ops is installed.
func (b *batchMaker) noneLanded(t T, what string, ops []hal.Op) {
	t.Helper()
	d := b.e.dump()
	for i := range ops {
		if _, ok := d[ops[i].Rule.ID]; ok {
			t.Errorf("%s: rule %d of a refused batch was installed", what, ops[i].Rule.ID)
			return
		}
	}
}

func caseApply(t T, tg *Target) {
	e := open(t, tg)
	b := &batchMaker{e: e, base: e.baseMatch(0, 0), acts: []hal.Action{hal.Output(e.out.ID)}}
	aps := e.appliers()
	for _, ap := range aps {
		t.Run(ap.name, func(t T) {
			t.Run("too-large", func(t T) {
				mb := e.caps.MaxBatch
				if mb <= 0 || mb >= 1<<16 {
					need(t, "max batch", "a batch limit the suite can exceed: MaxBatch %d, and a batch one larger is more than the suite builds", mb)
				}
				ops := b.adds(mb + 1)
				res := make([]hal.OpResult, len(ops))
				ctx, cancel := e.ctx()
				defer cancel()
				err := ap.fn(ctx, ops, res)
				what := fmt.Sprintf("%s of %d operations, MaxBatch %d", ap.name, len(ops), mb)
				refusedWhole(t, what, err, res, len(ops), hal.ErrBatchTooLarge)
				b.noneLanded(t, what, ops)
			})
			t.Run("short-results", func(t T) {
				ops := b.adds(2)
				res := make([]hal.OpResult, 1)
				ctx, cancel := e.ctx()
				defer cancel()
				err := ap.fn(ctx, ops, res)
				what := ap.name + " of 2 operations with 1 result"
				refusedWhole(t, what, err, res, len(ops), hal.ErrShortResults)
				b.noneLanded(t, what, ops)
			})
			t.Run("cancelled", func(t T) {
				ops := b.adds(2)
				res := make([]hal.OpResult, 2)
				ctx, cancel := context.WithCancel(t.Context())
				cancel()
				err := ap.fn(ctx, ops, res)
				what := ap.name + " with a cancelled context"
				refusedWhole(t, what, err, res, len(ops), context.Canceled)
				b.noneLanded(t, what, ops)
			})
		})
	}
	t.Run("closed", func(t T) {
		e.closed = true
		if err := e.nic.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for _, ap := range aps {
			ops := b.adds(2)
			res := make([]hal.OpResult, 2)
			ctx, cancel := e.ctx()
			err := ap.fn(ctx, ops, res)
			cancel()
			refusedWhole(t, ap.name+" after Close", err, res, len(ops), hal.ErrClosed)
		}
	})
}
