package hal_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/hal"
)

func TestCheckApply(t *testing.T) {
	caps := &hal.Capabilities{Driver: "test", MaxBatch: 3}
	live := context.Background()
	cancelled, cancel := context.WithCancel(live)
	cancel()
	ops := func(n int) []hal.Op {
		out := make([]hal.Op, n)
		for i := range out {
			out[i] = hal.DeleteOp(hal.RuleID(i + 1))
		}
		return out
	}
	cases := []struct {
		name     string
		ctx      context.Context
		closed   bool
		ops, res int
		want     error // nil: the batch may run
	}{
		{"fine", live, false, 3, 3, nil},
		{"more results than ops", live, false, 2, 5, nil},
		{"empty", live, false, 0, 0, nil},
		{"short results", live, false, 3, 2, hal.ErrShortResults},
		{"no results", live, false, 2, 0, hal.ErrShortResults},
		{"too large", live, false, 4, 4, hal.ErrBatchTooLarge},
		{"closed", live, true, 2, 2, hal.ErrClosed},
		{"cancelled", cancelled, false, 2, 2, context.Canceled},
		// The first that holds wins: the caller's bugs, then the NIC's
		// state, then the context.
		{"short beats too large", live, false, 4, 3, hal.ErrShortResults},
		{"too large beats closed", live, true, 4, 4, hal.ErrBatchTooLarge},
		{"closed beats cancelled", cancelled, true, 2, 2, hal.ErrClosed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := make([]hal.OpResult, c.res)
			err := hal.CheckApply(c.ctx, caps, c.closed, ops(c.ops), res)
			if c.want == nil {
				if err != nil {
					t.Fatalf("CheckApply = %v, want nil", err)
				}
				for i := range res {
					if res[i].Err != nil {
						t.Errorf("result %d = %v; a batch that may run has its results untouched", i, res[i].Err)
					}
				}
				return
			}
			var be *hal.BatchError
			if !errors.As(err, &be) {
				t.Fatalf("CheckApply = %v (%T), want a *hal.BatchError", err, err)
			}
			if !errors.Is(err, c.want) {
				t.Errorf("CheckApply = %v; errors.Is(%v) is false", err, c.want)
			}
			if be.Total != c.ops || be.Failed != c.ops || be.Index != 0 {
				t.Errorf("BatchError %+v; want total %d, failed %d, index 0", *be, c.ops, c.ops)
			}
			for i := range res {
				if !errors.Is(res[i].Err, c.want) {
					t.Errorf("result %d = %v, want %v", i, res[i].Err, c.want)
				}
			}
		})
	}
}

func TestCheckApplyUnbounded(t *testing.T) {
	// MaxBatch 0 sets no bound.
	ops := make([]hal.Op, 100)
	if err := hal.CheckApply(context.Background(), &hal.Capabilities{}, false, ops, make([]hal.OpResult, 100)); err != nil {
		t.Fatalf("CheckApply with MaxBatch 0 = %v, want nil", err)
	}
}

func TestCheckApplyAllocatesNothingWhenFine(t *testing.T) {
	caps := &hal.Capabilities{Driver: "test", MaxBatch: 64}
	ops, res := make([]hal.Op, 64), make([]hal.OpResult, 64)
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		if err := hal.CheckApply(ctx, caps, false, ops, res); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("CheckApply allocates %v times on a batch that may run", n)
	}
}

func TestRuleClone(t *testing.T) {
	r := hal.Rule{ID: 7, Priority: 3, Cookie: 9, Scope: 2, Generation: 5, Actions: []hal.Action{
		hal.EncapWith(hal.Encap{Kind: hal.EncapGeneve, VNI: 5, Src: netip.MustParseAddr("198.18.0.1"),
			Dst: netip.MustParseAddr("198.18.0.2"), GeneveOptions: []byte{1, 2, 3, 4}}),
		hal.Output(2),
	}}
	r.Match.IPDst(netip.MustParsePrefix("10.0.0.0/24"))
	c := r.Clone()
	if c.String() != r.String() || c.Match != r.Match || len(c.Actions) != 2 ||
		string(c.Actions[0].Encap.GeneveOptions) != string(r.Actions[0].Encap.GeneveOptions) {
		t.Fatalf("Clone = %v, want %v", c.String(), r.String())
	}
	// The copy shares nothing the caller can write into.
	r.Actions[1] = hal.Drop(hal.ReasonPolicy)
	r.Actions[0].Encap.GeneveOptions[0] = 0xee
	if c.Actions[1].Kind != hal.ActionOutput || c.Actions[0].Encap.GeneveOptions[0] != 1 {
		t.Fatalf("Clone shares memory with the original: %v", c.String())
	}
	if e := (&hal.Rule{ID: 1}).Clone(); e.Actions != nil {
		t.Errorf("Clone of a rule without actions has actions %v", e.Actions)
	}
	if hal.CloneActions(nil) != nil || hal.CloneActions([]hal.Action{}) != nil {
		t.Errorf("CloneActions of an empty list is not nil")
	}
}
