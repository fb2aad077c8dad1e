package ondemand_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/directory/ondemand"
	"github.com/nicpath/nicpath/directory/ondemand/ondemandtest"
	"github.com/nicpath/nicpath/store/storetest"
)

// Three simulated hosts whose vswitches run on demand: each is given only
// its own part of the policy (Local), and a Layer (ondemand.New, one per
// host, built by the bed) resolves every other destination through the
// directory when a first packet needs it. Here the directory is a
// directory.StateResolver over the whole policy.
func Example() {
	ctx := context.Background()
	st := storetest.ThreeHosts(0)
	moverCA := netip.MustParseAddr("10.0.0.10")

	local, err := ondemand.Local(st, "host-c")
	if err != nil {
		fmt.Println(err)
		return
	}
	_, known := local.Lookup(5001, moverCA)
	fmt.Println("host-c's own state maps the mover:", known)

	bed, err := ondemandtest.New(ctx, st, func(string) directory.Resolver { return directory.StateResolver{State: st} }, ondemand.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bed.Close()

	// The streamer on host-c sends to the mover on host-a: the first packet
	// waits for the lookup, then lands.
	ds, err := bed.Send(ctx, "host-c", "streamer", ondemandtest.Frame(st, "streamer", "mover", 1000, "hello"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, d := range ds {
		fmt.Println("landed on", d.Host.Name, d.VM)
	}
	l := bed.Layers["host-c"]
	fmt.Println(l.Explain(5001, moverCA))
	s := l.Stats()
	fmt.Println("held", s.Held, "released", s.Released, "lookups", s.Cache.Lookups)
	// Output:
	// host-c's own state maps the mover: false
	// landed on host-a mover
	// vni 5001 10.0.0.10: record version 4: VM mover on host-a (198.18.0.1, generation 1)
	// held 1 released 1 lookups 1
}
