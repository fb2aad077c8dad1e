package vswitch

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/policy/policytest"
)

// TestDifferentialManyACLs holds the switch to the reference evaluator with
// hundreds of ACLs per tenant, so that the classifier's rule sets span
// several 64-bit words: 150 ACLs per direction that match no generated
// packet come first (they name 192.0.2.0/24 or a port range the traffic
// leaves alone, some of them the packets' own addresses), so every
// decision lies in the third word or later. It runs with the random ACLs
// stateful (the connection table in play) and all stateless (the walk
// memo in play, which relies on the classifier's word on whether an answer
// depends on the ports).
func TestDifferentialManyACLs(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 500
	}
	for _, stateless := range []bool{false, true} {
		seed := uint64(21)
		if stateless {
			seed = 22
		}
		cfg := policytest.Config{Seed: seed, Hosts: 3, Tenants: 2, VNETsPerTenant: 2, VMsPerVNET: 3, IPv6: true, Routes: true, ACLsPerTenant: 40}
		random := policytest.MustGenerate(cfg)
		noACLs := cfg
		noACLs.ACLsPerTenant = -1
		b := policytest.MustGenerate(noACLs).Builder()
		for _, tn := range random.Tenants() {
			for i := range 300 {
				a := policy.ACL{Tenant: tn.Name, ID: fmt.Sprintf("filler-%03d", i), Priority: uint32(i),
					Direction: policy.Direction(1 + i%2), Action: policy.Deny}
				switch i % 3 {
				case 0:
					a.Dst = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32)}
				case 1:
					a.Src = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
					a.Protocol = policy.ProtoUDP
					a.DstPorts = []policy.PortRange{{Lo: 1200 + uint16(i), Hi: 1200 + uint16(i)}}
				default:
					a.Protocol = policy.ProtoSCTP
				}
				b.AddACL(a)
			}
			for _, a := range random.ACLs(tn.Name) {
				a.Priority += 1000
				a.Stateful = a.Stateful && !stateless
				b.AddACL(a)
			}
		}
		st, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		tp := runDifferentialOn(t, topoOpts{newPorts: true}, cfg, st, seed, n)
		var remembered uint64
		for _, h := range tp.hosts {
			h.sw.mu.Lock()
			remembered += h.sw.stats.walksRemembered
			h.sw.mu.Unlock()
		}
		t.Logf("stateless %v: %d ACLs in tenant 0, %d walks remembered", stateless, len(st.ACLs(policytest.TenantName(0))), remembered)
	}
}
