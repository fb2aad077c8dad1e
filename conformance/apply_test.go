package conformance_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/conformance"
	"github.com/nicpath/nicpath/hal"
)

// looseApply refuses the batches it cannot run as drivers did before
// hal.CheckApply: a bare error, results left as they were.
type looseApply struct{ hal.NIC }

func (l *looseApply) Apply(ctx context.Context, ops []hal.Op, results []hal.OpResult) error {
	if len(results) < len(ops) {
		return fmt.Errorf("%d results for %d operations", len(results), len(ops))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return l.NIC.Apply(ctx, ops, results)
}

// The apply case holds a NIC to the shape hal.CheckApply gives a refused
// batch, and fails one that refuses it any other way.
func TestApplyCaseCatchesLooseRefusals(t *testing.T) {
	tg := wrap("loose-apply", nil, func(n hal.NIC) hal.NIC { return &looseApply{n} }, nil)
	rep := conformance.RunSuite(context.Background(), tg, conformance.Options{Run: `^apply$`})
	for name, reason := range map[string]string{
		"apply/Apply/short-results": "want a *hal.BatchError",
		"apply/Apply/cancelled":     "want a *hal.BatchError",
	} {
		c, ok := rep.Case(name)
		if !ok || c.Status != conformance.StatusFail || !strings.Contains(c.Reason, reason) {
			t.Errorf("%s: %+v; want a failure mentioning %q", name, c, reason)
		}
	}
	// What the wrapper passes through to softnic still passes.
	for _, name := range []string{"apply/Apply/too-large", "apply/closed"} {
		if c, ok := rep.Case(name); !ok || c.Status != conformance.StatusPass {
			t.Errorf("%s: %+v; want a pass", name, c)
		}
	}
}
