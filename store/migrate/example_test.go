package migrate_test

import (
	"context"
	"fmt"
	"time"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/migrate"
	"github.com/nicpath/nicpath/store/storetest"
)

// applyAll stands for a host's switch: it takes every state at once.
type applyAll struct{}

func (applyAll) Update(context.Context, *policy.State) error { return nil }

// A VM moves from host-a to host-c while three hosts follow the store: the
// shadow is installed everywhere, one activation record flips every host,
// and the new location becomes the VM's own.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := store.NewKV(store.NewMemory(), "")
	m := migrate.New(s, nil)
	if _, err := m.Publish(ctx, storetest.ThreeHosts(0)); err != nil {
		fmt.Println(err)
		return
	}
	// Every host follows the store and reports what it applied.
	for _, h := range storetest.Hosts {
		f := store.NewFollower(store.FollowerConfig{Store: s, Host: h.Name, Target: applyAll{},
			Heartbeat: 50 * time.Millisecond, Retry: 10 * time.Millisecond})
		go f.Run(ctx)
	}
	mig, err := m.Migrate(ctx, "mover", "host-c", migrate.Options{BeforeActivate: func() {
		fmt.Println("every host has the shadow: the VM moves now")
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: %s -> %s, generation %d, hosts lagging: %d\n", mig.VM, mig.From, mig.To, mig.Generation, len(mig.Lagging))
	snap, _ := s.Load(ctx)
	vm, _ := snap.State.VM("mover")
	fmt.Printf("stored: %s on %s, %d shadows left\n", vm.Name, vm.Host, len(snap.State.Shadows()))
	// Output:
	// every host has the shadow: the VM moves now
	// mover: host-a -> host-c, generation 2, hosts lagging: 0
	// stored: mover on host-c, 0 shadows left
}
