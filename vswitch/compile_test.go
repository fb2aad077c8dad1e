package vswitch

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy/policytest"
)

// TestOwnsManyCAs: the hash set of a VM's many addresses answers as a
// scan of them does, for IPv4, IPv6 (the unspecified address among them),
// IPv4-mapped and zoned addresses. VMs without a vport on the switch have
// no set (the walk never checks their sources) and are scanned.
func TestOwnsManyCAs(t *testing.T) {
	cfg := policytest.Realistic{Seed: 3, Tenants: 1, VMsPerTenant: 8, CAsPerVM: 300, ACLsPerTenant: 4, RoutesPerTenant: 200}
	st, err := cfg.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]hal.PortID{}
	for i, vm := range st.VMs() {
		if i%2 == 0 {
			ports[vm.Name] = hal.PortID(i + 1)
		}
	}
	var ids interner
	c := compile(st, policytest.HostName(0), ports, &ids, &interner{})
	r := rand.New(rand.NewPCG(1, 1))
	sets := 0
	for _, vm := range c.vms {
		if (vm.caSet != nil) != (vm.port != 0) {
			t.Fatalf("VM %s with %d CAs and port %d: set %v", vm.name, len(vm.cas), vm.port, vm.caSet != nil)
		}
		if vm.caSet != nil {
			sets++
		}
		for range 2000 {
			var a netip.Addr
			switch r.IntN(5) {
			case 0:
				a = vm.cas[r.IntN(len(vm.cas))]
			case 1:
				a = policytest.RealisticCA(r.IntN(8), r.IntN(400))
			case 2:
				a = netip.AddrFrom16(policytest.RealisticCA(r.IntN(8), r.IntN(300)).As16()) // IPv4-mapped
			case 3:
				a = netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(r.IntN(4))}).WithZone("z")
			default:
				a = netip.AddrFrom16([16]byte{0: byte(r.IntN(2)) * 0xfd, 15: byte(r.IntN(2))}) // ::, ::1, fd00::, fd00::1
			}
			if got, want := vm.owns(a), slices.Contains(vm.cas, a); got != want {
				t.Fatalf("VM %s owns(%s) = %v, want %v", vm.name, a, got, want)
			}
		}
	}
	if sets == 0 {
		t.Fatal("no VM has a set")
	}
}
