package vswitch

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy/policytest"
)

// TestOwnsManyCAs: the binary search over a VM's many addresses answers as
// a scan of them does, for IPv4, IPv6, IPv4-mapped and zoned addresses.
func TestOwnsManyCAs(t *testing.T) {
	cfg := policytest.Realistic{Seed: 3, Tenants: 1, VMsPerTenant: 8, CAsPerVM: 300, ACLsPerTenant: 4, RoutesPerTenant: 200}
	st, err := cfg.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var ids interner
	c := compile(st, policytest.HostName(0), map[string]hal.PortID{}, &ids, &interner{})
	r := rand.New(rand.NewPCG(1, 1))
	for _, vm := range c.vms {
		if vm.sorted == nil {
			t.Fatalf("VM %s with %d CAs is scanned", vm.name, len(vm.cas))
		}
		for range 2000 {
			var a netip.Addr
			switch r.IntN(4) {
			case 0:
				a = vm.cas[r.IntN(len(vm.cas))]
			case 1:
				a = policytest.RealisticCA(r.IntN(8), r.IntN(400))
			case 2:
				a = netip.AddrFrom16(policytest.RealisticCA(r.IntN(8), r.IntN(300)).As16()) // IPv4-mapped
			default:
				a = netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(r.IntN(4))}).WithZone("z")
			}
			if got, want := vm.owns(a), slices.Contains(vm.cas, a); got != want {
				t.Fatalf("VM %s owns(%s) = %v, want %v", vm.name, a, got, want)
			}
		}
	}
}
