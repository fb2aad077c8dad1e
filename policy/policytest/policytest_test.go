package policytest

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/nicpath/nicpath/policy"
)

func TestGenerateIsValidAndDeterministic(t *testing.T) {
	for seed := range uint64(20) {
		cfg := Config{Seed: seed, Hosts: 1 + int(seed%4), Tenants: 1 + int(seed%3), IPv6: seed%2 == 0, Routes: seed%3 != 0, Shadows: int(seed % 5)}
		a, err := Generate(cfg)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		b := MustGenerate(cfg)
		if c := policy.Diff(a, b); !c.Empty() {
			t.Fatalf("seed %d: two runs differ: %+v", seed, c)
		}
		perVM := 1
		if cfg.IPv6 {
			perVM = 2
		}
		if want := cfg.Tenants * 2 * 4 * perVM; a.MappingCount() != want {
			t.Errorf("seed %d: %d mappings, want %d", seed, a.MappingCount(), want)
		}
		if cfg.Hosts > 1 && len(a.Shadows()) != cfg.Shadows {
			t.Errorf("seed %d: %d shadows, want %d", seed, len(a.Shadows()), cfg.Shadows)
		}
	}
}

// The point of the generator: every tenant has the same CAs.
func TestTenantsOverlap(t *testing.T) {
	s := MustGenerate(Config{Seed: 1, Tenants: 3})
	for _, vm := range s.VMs() {
		for t2 := range 3 {
			m, ok := s.Lookup(VNI(t2, 0), vm.CAs[0])
			if vm.VNET == VNETName(0) && (!ok || m.Tenant != TenantName(t2)) {
				t.Fatalf("%s of %s: tenant %d has no VM with the same CA", vm.Name, vm.Tenant, t2)
			}
		}
	}
}

func TestRandomPacketsAreWellFormed(t *testing.T) {
	cfg := Config{Seed: 3, IPv6: true, Routes: true}
	s := MustGenerate(cfg)
	r := rand.New(rand.NewPCG(3, 3))
	spoofed := 0
	for _, vm := range s.VMs() {
		for range 20 {
			p := RandomOutbound(r, cfg, vm)
			if p.Src.Is4() != p.Dst.Is4() || (p.EtherType == policy.EtherTypeIPv4) != p.Src.Is4() {
				t.Fatalf("mixed families: %s", p)
			}
			if v := s.Evaluate(vm.Host, policy.FromVM(vm.Name), p); v.Reason == policy.ReasonSpoofedSource || v.Reason == policy.ReasonMalformed {
				spoofed++
			}
		}
	}
	if spoofed > 0 {
		t.Errorf("%d outbound packets were not the sender's own", spoofed)
	}
}

// Generated policies carry every encapsulation, each VNET in the kind
// EncapOf says; Encaps narrows them.
func TestEncapsulations(t *testing.T) {
	for seed := range uint64(3) {
		cfg := Config{Seed: seed}
		s := MustGenerate(cfg)
		seen := map[policy.EncapKind]int{}
		for _, v := range s.VNETs() {
			seen[v.Encap]++
			var ti, j int
			if _, err := fmt.Sscanf(v.Tenant+" "+v.Name, "tenant-%d vnet-%d", &ti, &j); err != nil {
				t.Fatal(err)
			}
			if want := EncapOf(cfg, ti, j); v.Encap != want {
				t.Errorf("seed %d: %s/%s in %s, EncapOf says %s", seed, v.Tenant, v.Name, v.Encap, want)
			}
		}
		if len(seen) != 3 {
			t.Errorf("seed %d: kinds %v, want all three", seed, seen)
		}
		only := MustGenerate(Config{Seed: seed, Encaps: []policy.EncapKind{policy.EncapVXLAN}})
		for _, v := range only.VNETs() {
			if v.Encap != policy.EncapVXLAN {
				t.Errorf("seed %d: VXLAN only, %s/%s in %s", seed, v.Tenant, v.Name, v.Encap)
			}
		}
	}
	// Random inbound packets come mostly in their VNET's kind, some in
	// another.
	cfg := Config{Seed: 4}
	r := rand.New(rand.NewPCG(4, 4))
	own, other := 0, 0
	for range 600 {
		in, _ := RandomInbound(r, cfg)
		t0, j := int(in.VNI/1000)-1, int(in.VNI%1000)
		if t0 >= 2 {
			continue // no such tenant: any kind
		}
		if in.Encap == EncapOf(cfg, t0, j) {
			own++
		} else {
			other++
		}
	}
	if own < 3*other || other == 0 {
		t.Errorf("%d inbound packets in their VNET's encapsulation, %d in another", own, other)
	}
}
