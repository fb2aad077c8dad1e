package haltest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/haltest"
)

// counting counts the rule operations sent to a NIC, atomic batches
// included.
type counting struct {
	haltest.Decorator
	ops int
}

func (c *counting) Apply(ctx context.Context, ops []hal.Op, res []hal.OpResult) error {
	c.ops += len(ops)
	return c.Inner.Apply(ctx, ops, res)
}

func (c *counting) ApplyAtomic(ctx context.Context, ops []hal.Op, res []hal.OpResult) error {
	c.ops += len(ops)
	return c.Inner.(hal.AtomicApplier).ApplyAtomic(ctx, ops, res)
}

// A decorator over the reference NIC keeps its optional interfaces: the
// caller still finds hal.AtomicApplier and hal.SealedAddresses, and atomic
// batches go through the decorator.
func ExampleWrap() {
	soft, _ := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm1", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:0b:00:01")},
		{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MustMAC("02:00:00:00:ff:01")},
	}})
	defer soft.Close()
	c := &counting{Decorator: haltest.Decorator{Inner: soft}}
	nic := haltest.Wrap(c)

	_, atomic := nic.(hal.AtomicApplier)
	_, sealed := nic.(hal.SealedAddresses)
	fmt.Println("atomic:", atomic, "sealed:", sealed)

	r := hal.Rule{ID: 1, Priority: 1, Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}
	r.Match.InPort(1)
	res := make([]hal.OpResult, 1)
	if err := nic.(hal.AtomicApplier).ApplyAtomic(context.Background(), []hal.Op{hal.AddOp(r)}, res); err != nil {
		fmt.Println(err)
	}
	fmt.Println("operations counted:", c.ops)
	// Output:
	// atomic: true sealed: true
	// operations counted: 1
}

// A full table, injected: the add fails with hal.ErrTableFull and never
// reaches the NIC; the delete of another rule goes through.
func ExampleFaultNIC() {
	soft, _ := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "vm1", Kind: hal.PortVPort, MAC: hal.MustMAC("02:00:00:0b:00:01")},
		{Name: "uplink", Kind: hal.PortUplink, MAC: hal.MustMAC("02:00:00:00:ff:01")},
	}})
	defer soft.Close()
	f := haltest.NewFaultNIC(soft)
	f.FailOps(func(op *hal.Op) error {
		if op.Kind == hal.OpAdd {
			return hal.ErrTableFull
		}
		return nil
	})
	r := hal.Rule{ID: 1, Priority: 1, Actions: []hal.Action{hal.Drop(hal.ReasonPolicy)}}
	r.Match.InPort(1)
	res := make([]hal.OpResult, 2)
	err := f.NIC().Apply(context.Background(), []hal.Op{hal.AddOp(r), hal.DeleteOp(9)}, res)
	fmt.Println("table full:", errors.Is(err, hal.ErrTableFull))
	fmt.Println("add:", res[0].Err)
	fmt.Println("delete of an unknown rule, from the NIC itself:", errors.Is(res[1].Err, hal.ErrNotFound))
	fmt.Println("operations failed by the fault:", f.Failed())
	// Output:
	// table full: true
	// add: rule table full
	// delete of an unknown rule, from the NIC itself: true
	// operations failed by the fault: 1
}
