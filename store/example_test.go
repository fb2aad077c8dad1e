package store_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
)

// A VM migrates through the store every host follows: the VM manager
// writes the shadow location (installed inactive everywhere), then one
// activation record, and a host watching the store sees each step as a
// complete, checked state.
func ExampleKVStore() {
	ctx := context.Background()
	b := policy.NewBuilder()
	b.AddHost(policy.Host{Name: "host-a", PA: netip.MustParseAddr("198.18.0.1")})
	b.AddHost(policy.Host{Name: "host-b", PA: netip.MustParseAddr("198.18.0.2")})
	b.AddTenant(policy.Tenant{Name: "blue"})
	b.AddVNET(policy.VNET{Tenant: "blue", Name: "web", VNI: 1001, Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})
	b.AddVM(policy.VM{Name: "web-1", Tenant: "blue", VNET: "web", Host: "host-a", Generation: 1,
		MAC: policy.MAC{2, 0, 0, 0xb, 0, 1}, CAs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}})
	st, err := b.Build()
	if err != nil {
		fmt.Println(err)
		return
	}

	s := store.NewKV(store.NewMemory(), "") // store/etcd keeps the same keys in etcd
	defer s.Close()
	if _, err := s.Publish(ctx, st); err != nil {
		fmt.Println(err)
		return
	}
	snap, err := s.Load(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	events, err := s.Watch(ctx, snap)
	if err != nil {
		fmt.Println(err)
		return
	}
	where := func(st *policy.State) {
		host, pa, gen, _ := st.Location("web-1")
		var hosted []string
		for _, vm := range st.HostedVMs("host-b") {
			hosted = append(hosted, vm.Name)
		}
		fmt.Printf("web-1 on %s (%s, generation %d); host-b hosts %v\n", host, pa, gen, hosted)
	}
	where(snap.State)

	for _, c := range []*store.Change{
		new(store.Change).Put(policy.Shadow{VM: "web-1", Host: "host-b", Generation: 2}),
		new(store.Change).Put(policy.Activation{VM: "web-1", Generation: 2}),
	} {
		if _, err := s.Commit(ctx, c); err != nil {
			fmt.Println(err)
			return
		}
		ev := <-events
		if ev.Err != nil || ev.Invalid != nil {
			fmt.Println(ev.Err, ev.Invalid)
			return
		}
		where(ev.Snapshot.State)
	}
	// Output:
	// web-1 on host-a (198.18.0.1, generation 1); host-b hosts []
	// web-1 on host-a (198.18.0.1, generation 1); host-b hosts [web-1]
	// web-1 on host-b (198.18.0.2, generation 2); host-b hosts [web-1]
}
