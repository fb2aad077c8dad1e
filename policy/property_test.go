package policy_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/policy/policytest"
)

// Fixed seeds: a failure names its seed and is reproduced by running again.
var propertySeeds = []uint64{1, 2, 3, 42, 1000, 4242, 77777, 31337}

func propertyConfig(seed uint64) policytest.Config {
	return policytest.Config{Seed: seed, Hosts: 3, Tenants: 3, VNETsPerTenant: 2, VMsPerVNET: 5, IPv6: seed%2 == 0, Routes: true}
}

func tenantOf(t *testing.T, s *policy.State, vm string) string {
	t.Helper()
	v, ok := s.VM(vm)
	if !ok {
		t.Fatalf("verdict names unknown VM %q", vm)
	}
	return v.Tenant
}

// Two tenants with the same CA ranges never reach each other: follow every
// packet from its sender through the wire to the receiving host and check
// that whoever gets it belongs to the sender's tenant. Then throw forged
// uplink packets at every host: a delivered one must come from a host or
// gateway entitled to the inner source in the VNI's tenant.
func TestPropertyTenantIsolation(t *testing.T) {
	for _, seed := range propertySeeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			cfg := propertyConfig(seed)
			s := policytest.MustGenerate(cfg)
			r := rand.New(rand.NewPCG(seed, 1))
			delivered := 0
			for _, vm := range s.VMs() {
				for range 40 {
					p := policytest.RandomOutbound(r, cfg, vm)
					v := s.Evaluate(vm.Host, policy.FromVM(vm.Name), p)
					switch v.Action {
					case policy.Deliver:
						delivered++
						if got := tenantOf(t, s, v.VM); got != vm.Tenant {
							t.Fatalf("%s (%s) delivered to %s of %s: %s", vm.Name, vm.Tenant, v.VM, got, p)
						}
					case policy.Encap:
						if got := tenantOf(t, s, v.VM); got != vm.Tenant {
							t.Fatalf("%s (%s) encapsulated toward %s of %s", vm.Name, vm.Tenant, v.VM, got)
						}
						vn, _ := s.VNETByVNI(v.VNI)
						if vn.Tenant != vm.Tenant {
							t.Fatalf("%s encapsulated with VNI %d of tenant %s", vm.Name, v.VNI, vn.Tenant)
						}
						if v.Encap != vn.Encap {
							t.Fatalf("%s encapsulated VNI %d in %s, its VNET is carried in %s", vm.Name, v.VNI, v.Encap, vn.Encap)
						}
						// On the wire and into the receiving host.
						src, _ := s.Host(vm.Host)
						rv := s.Evaluate(v.Host, policy.FromTunnel(v.Encap, v.VNI, src.PA), v.Rewrite.Apply(p))
						if rv.Action == policy.Deliver {
							delivered++
							if rv.VM != v.VM {
								t.Fatalf("sent toward %s, received by %s", v.VM, rv.VM)
							}
						} else if rv.Reason != policy.ReasonACLDeny {
							t.Fatalf("a packet the sender encapsulated was refused for %s:\n%s\n%s", rv.Reason, v.Explain(), rv.Explain())
						}
					case policy.ToGateway:
						g, _ := s.Gateway(v.Gateway)
						if g.Tenant != "" && g.Tenant != vm.Tenant {
							t.Fatalf("%s sent to gateway %s of tenant %s", vm.Name, g.Name, g.Tenant)
						}
					}
				}
			}
			if delivered == 0 {
				t.Fatal("no packet was delivered: the generator or the evaluator is broken")
			}

			accepted := 0
			for range 3000 {
				in, p := policytest.RandomInbound(r, cfg)
				host := policytest.HostName(r.IntN(cfg.Hosts))
				v := s.Evaluate(host, in, p)
				if v.Action != policy.Deliver {
					continue
				}
				accepted++
				vn, _ := s.VNETByVNI(in.VNI)
				if got := tenantOf(t, s, v.VM); got != vn.Tenant {
					t.Fatalf("VNI %d (tenant %s) delivered to %s of %s", in.VNI, vn.Tenant, v.VM, got)
				}
				if !entitled(s, vn.Tenant, in.OuterSrc, p.Src) {
					t.Fatalf("%s accepted %s from %s in tenant %s:\n%s", host, p, in.OuterSrc, vn.Tenant, v.Explain())
				}
			}
			if accepted == 0 {
				t.Fatal("no forged-or-genuine uplink packet was delivered: the property checked nothing")
			}
		})
	}
}

// entitled is the isolation rule restated independently of the evaluator:
// the outer source is a gateway the tenant may use, or the host where the
// tenant's VM owning the inner source runs now.
func entitled(s *policy.State, tenant string, outer, src netip.Addr) bool {
	for _, g := range s.Gateways() {
		if g.PA == outer && (g.Tenant == "" || g.Tenant == tenant) {
			return true
		}
	}
	for _, vn := range s.VNETs() {
		if vn.Tenant != tenant {
			continue
		}
		if m, ok := s.Lookup(vn.VNI, src); ok && m.PA == outer {
			return true
		}
	}
	return false
}

// A deny ACL always wins over a lower-priority (or equal-priority) allow:
// add to a random policy a deny and an allow that both match a packet
// exactly, the allow never at a higher priority, and the allow must never
// decide.
func TestPropertyDenyBeatsLowerPriorityAllow(t *testing.T) {
	for _, seed := range propertySeeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			cfg := propertyConfig(seed)
			base := policytest.MustGenerate(cfg)
			r := rand.New(rand.NewPCG(seed, 2))
			vms := base.VMs()
			denied := 0
			for i := range 150 {
				vm := vms[r.IntN(len(vms))]
				p := policytest.RandomOutbound(r, cfg, vm)
				pd := uint32(r.IntN(1100))
				pa := pd + uint32(r.IntN(3)) // equal priority included
				b := base.Builder()
				exact := func(id string, prio uint32, act policy.ACLAction) policy.ACL {
					a := policy.ACL{Tenant: vm.Tenant, ID: id, Priority: prio, Direction: policy.Out, Action: act,
						Src: []netip.Prefix{netip.PrefixFrom(p.Src, p.Src.BitLen())},
						Dst: []netip.Prefix{netip.PrefixFrom(p.Dst, p.Dst.BitLen())}, Protocol: p.Protocol,
						Stateful: r.IntN(2) == 0}
					if p.HasPorts() {
						a.SrcPorts = []policy.PortRange{{Lo: p.SrcPort, Hi: p.SrcPort}}
						a.DstPorts = []policy.PortRange{{Lo: p.DstPort, Hi: p.DstPort}}
					}
					return a
				}
				// Added allow first, so insertion order cannot be what
				// makes the deny win.
				b.AddACL(exact(fmt.Sprintf("zz-allow-%d", i), pa, policy.Allow))
				b.AddACL(exact(fmt.Sprintf("aa-deny-%d", i), pd, policy.Deny))
				s, err := b.Build()
				if err != nil {
					t.Fatal(err)
				}
				v := s.Evaluate(vm.Host, policy.FromVM(vm.Name), p)
				if len(v.ACLs) == 0 {
					t.Fatalf("no ACL layer ran for %s:\n%s", p, v.Explain())
				}
				d := v.ACLs[0]
				if d.ACL == fmt.Sprintf("zz-allow-%d", i) {
					t.Fatalf("allow at priority %d beat deny at priority %d:\n%s", pa, pd, v.Explain())
				}
				if d.ACL == fmt.Sprintf("aa-deny-%d", i) {
					denied++
					if v.Action != policy.Drop || v.Reason != policy.ReasonACLDeny {
						t.Fatalf("deny decided but verdict is %s", v)
					}
				}
			}
			if denied == 0 {
				t.Fatal("the added deny never decided: the property checked nothing")
			}
		})
	}
}

func sameOutcome(a, b policy.Verdict) bool {
	return a.Action == b.Action && a.Reason == b.Reason && a.VM == b.VM && a.Host == b.Host &&
		a.PA == b.PA && a.VNI == b.VNI && a.Gateway == b.Gateway && a.Rewrite == b.Rewrite
}

// A shadow mapping changes nothing until activated: a random policy with
// shadows answers every packet on every host exactly like the same policy
// without them; activating changes the answers for the moved VMs.
func TestPropertyShadowInactiveChangesNothing(t *testing.T) {
	for _, seed := range propertySeeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			cfg := propertyConfig(seed)
			plain := policytest.MustGenerate(cfg)
			cfg.Shadows = 6
			shadowed := policytest.MustGenerate(cfg)
			if len(shadowed.Shadows()) != 6 {
				t.Fatalf("%d shadows generated", len(shadowed.Shadows()))
			}
			if c := policy.Diff(plain, shadowed); len(c.Mappings)+len(c.Routes)+len(c.ACLs) != 0 || len(c.Shadows) != 6 {
				t.Fatalf("shadows changed more than shadows: %+v", c)
			}
			r := rand.New(rand.NewPCG(seed, 3))
			hosts := plain.Hosts()
			for range 3000 {
				var in policy.InPort
				var p policy.Packet
				if r.IntN(2) == 0 {
					vms := plain.VMs()
					vm := vms[r.IntN(len(vms))]
					in, p = policy.FromVM(vm.Name), policytest.RandomOutbound(r, cfg, vm)
				} else {
					in, p = policytest.RandomInbound(r, cfg)
				}
				h := hosts[r.IntN(len(hosts))].Name
				a, b := plain.Evaluate(h, in, p), shadowed.Evaluate(h, in, p)
				if !sameOutcome(a, b) {
					t.Fatalf("inactive shadow changed %s on %s from %s to %s", p, h, a, b)
				}
			}
			for m := range plain.Mappings() {
				a, _ := plain.Lookup(m.VNI, m.CA)
				b, _ := shadowed.Lookup(m.VNI, m.CA)
				if a != b {
					t.Fatalf("inactive shadow changed lookup %v: %+v vs %+v", m.CA, a, b)
				}
			}

			// Activation moves exactly the shadowed VMs.
			act := shadowed
			for _, sh := range shadowed.Shadows() {
				var err error
				if act, err = act.Activate(sh.VM, sh.Generation); err != nil {
					t.Fatal(err)
				}
			}
			for _, sh := range shadowed.Shadows() {
				vm, _ := act.VM(sh.VM)
				for _, ca := range vm.CAs {
					vn, _ := act.VNET(vm.Tenant, vm.VNET)
					m, _ := act.Lookup(vn.VNI, ca)
					if m.PA != sh.PA || m.Host != sh.Host || m.Generation != sh.Generation {
						t.Fatalf("after activation %s is at %s (%s), want %s", sh.VM, m.Host, m.PA, sh.Host)
					}
				}
				// The VM now sends from its new host only.
				p := policytest.RandomOutbound(r, cfg, vm)
				if v := act.Evaluate(vm.Host, policy.FromVM(vm.Name), p); v.Reason != policy.ReasonUnknownPort {
					t.Fatalf("%s still sends from its old host %s: %s", vm.Name, vm.Host, v)
				}
				if v := act.Evaluate(sh.Host, policy.FromVM(vm.Name), p); v.Reason == policy.ReasonUnknownPort {
					t.Fatalf("%s cannot send from its new host %s", vm.Name, sh.Host)
				}
			}
		})
	}
}

// The compiled table answers exactly what the model says, for every
// mapping, and nothing for addresses no VM has.
func TestPropertyLookupMatchesModel(t *testing.T) {
	cfg := policytest.Config{Seed: 9, Hosts: 4, Tenants: 5, VNETsPerTenant: 4, VMsPerVNET: 50, IPv6: true}
	s := policytest.MustGenerate(cfg)
	n := 0
	for _, vm := range s.VMs() {
		vn, _ := s.VNET(vm.Tenant, vm.VNET)
		host, _ := s.Host(vm.Host)
		for _, ca := range vm.CAs {
			n++
			m, ok := s.Lookup(vn.VNI, ca)
			if !ok || m.VM != vm.Name || m.MAC != vm.MAC || m.PA != host.PA || m.CA != ca || m.VNI != vn.VNI {
				t.Fatalf("lookup (%d, %s) = %+v, %v; want VM %s", vn.VNI, ca, m, ok, vm.Name)
			}
		}
	}
	if n != s.MappingCount() {
		t.Fatalf("%d CAs, %d mappings", n, s.MappingCount())
	}
	// An IPv4 CA and the same bits as an IPv4-mapped IPv6 address are
	// different keys.
	if _, ok := s.Lookup(policytest.VNI(0, 0), netip.MustParseAddr("::ffff:10.0.0.10")); ok {
		t.Error("IPv4-mapped IPv6 address found an IPv4 mapping")
	}
	if _, ok := s.Lookup(policytest.VNI(0, 0)+77, netip.MustParseAddr("10.0.0.10")); ok {
		t.Error("unknown VNI found a mapping")
	}
}
