package policytest

import (
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/policy"
)

// TestRealistic: the generator's policy is valid and has the sizes it
// promises, and its traffic comes from local VMs' own addresses, each
// packet between a pair of addresses no other packet uses.
func TestRealistic(t *testing.T) {
	cfg := Realistic{Seed: 1, CAsPerVM: 10} // 10,000 mappings: the rest at full size
	st, err := cfg.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(st.VMs()); got != 1000 {
		t.Errorf("%d VMs, want 1000", got)
	}
	if got := st.MappingCount(); got != 10_000 {
		t.Errorf("%d mappings, want 10000", got)
	}
	routes, acls, stateful := 0, 0, 0
	for _, tn := range st.Tenants() {
		routes += len(st.Routes(tn.Name))
		for _, a := range st.ACLs(tn.Name) {
			acls++
			if a.Stateful && a.Action == policy.Allow {
				stateful++
			}
		}
	}
	if routes != 10_000 || acls != 1_000 || stateful == 0 {
		t.Errorf("%d routes (want 10000), %d ACLs (want 1000), %d stateful allows (want some)", routes, acls, stateful)
	}

	host := HostName(3)
	sent := cfg.Traffic(host, 5_000)
	if len(sent) != 5_000 {
		t.Fatalf("%d packets, want 5000", len(sent))
	}
	pairs := map[[2]netip.Addr]bool{}
	actions := map[policy.Action]int{}
	for _, s := range sent {
		vm, ok := st.VM(s.VM)
		if !ok || vm.Host != host {
			t.Fatalf("sender %s is not a VM of %s", s.VM, host)
		}
		p := s.Packet
		if p.SrcMAC != vm.MAC || !ownsCA(vm, p.Src) {
			t.Fatalf("%s sends from %s %s, not its own", s.VM, p.SrcMAC, p.Src)
		}
		k := [2]netip.Addr{p.Src, p.Dst}
		if pairs[k] {
			t.Fatalf("pair %v used twice", k)
		}
		pairs[k] = true
		actions[st.Evaluate(host, policy.FromVM(s.VM), p).Action]++
	}
	// The walk must reach every kind of outcome, mostly encapsulations.
	for _, a := range []policy.Action{policy.Encap, policy.Deliver, policy.Drop, policy.ToGateway, policy.ToHost} {
		if actions[a] == 0 {
			t.Errorf("no packet ends in %v: %v", a, actions)
		}
	}
	if actions[policy.Encap] < len(sent)/2 {
		t.Errorf("only %d of %d packets are encapsulated: %v", actions[policy.Encap], len(sent), actions)
	}
	t.Logf("outcomes: %v", actions)
}

func ownsCA(vm policy.VM, a netip.Addr) bool {
	for _, x := range vm.CAs {
		if x == a {
			return true
		}
	}
	return false
}
