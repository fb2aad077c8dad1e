// Package policytest generates random valid policies and packets for
// tests: property tests of the policy package itself, and differential
// tests that hold a datapath (the vswitch, a driver) to the reference
// evaluator.
//
// Every generated policy has the shape that makes isolation bugs visible:
// all tenants use the same customer address plan (VNET j of every tenant
// is 10.j.0.0/24 and fd00:0:0:j::/64, VM k is .k+10 in it), so the same CA
// exists in every tenant and only the VNI tells them apart. Provider
// addresses come from 198.18.0.0/15. The same Config and seed always give
// the same policy.
package policytest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/nicpath/nicpath/policy"
)

// Config sizes a generated policy. Zero fields take the defaults noted.
type Config struct {
	Seed           uint64
	Hosts          int  // default 3
	Tenants        int  // default 2
	VNETsPerTenant int  // default 2 (at most 200)
	VMsPerVNET     int  // default 4 (at most 200)
	IPv6           bool // give every VM an IPv6 CA too
	ACLsPerTenant  int  // default 6; negative: none
	// Routes adds, per tenant, a default route to a shared gateway, a
	// drop route, a to-host route, a route through an appliance VM and a
	// gateway rule with NAT to a gateway dedicated to the tenant.
	Routes bool
	// Shadows gives that many random VMs a shadow mapping on another host
	// (generation 2), inactive.
	Shadows int
	// Encaps are the encapsulations VNETs are given, in turn (see
	// EncapOf); nil gives all three, so that every policy with three
	// VNETs or more has each kind. []policy.EncapKind{policy.EncapVXLAN}
	// keeps every VNET on the default.
	Encaps []policy.EncapKind
}

func (c *Config) defaults() {
	if c.Hosts <= 0 {
		c.Hosts = 3
	}
	if c.Tenants <= 0 {
		c.Tenants = 2
	}
	if c.VNETsPerTenant <= 0 {
		c.VNETsPerTenant = 2
	}
	if c.VMsPerVNET <= 0 {
		c.VMsPerVNET = 4
	}
	if c.ACLsPerTenant == 0 {
		c.ACLsPerTenant = 6
	}
	c.VNETsPerTenant = min(c.VNETsPerTenant, 200)
	c.VMsPerVNET = min(c.VMsPerVNET, 200)
}

// Names, numbers and addresses of generated objects, so tests can aim at
// them.
func HostName(i int) string     { return fmt.Sprintf("host-%d", i) }
func TenantName(t int) string   { return fmt.Sprintf("tenant-%d", t) }
func VNETName(j int) string     { return fmt.Sprintf("vnet-%d", j) }
func VMName(t, j, k int) string { return fmt.Sprintf("vm-%d-%d-%d", t, j, k) }
func GatewayName(t int) string  { return fmt.Sprintf("gw-%d", t) } // t < 0: the shared one
func VNI(t, j int) uint32       { return uint32(1000*(t+1) + j) }

// EncapOf is the encapsulation of VNET j of tenant t: the VNETs of the
// policy, counted across tenants, take cfg.Encaps in turn, starting at the
// seed's.
func EncapOf(cfg Config, t, j int) policy.EncapKind {
	cfg.defaults()
	kinds := cfg.Encaps
	if len(kinds) == 0 {
		kinds = policy.EncapKinds()
	}
	return kinds[(cfg.Seed+uint64(t*cfg.VNETsPerTenant+j))%uint64(len(kinds))]
}
func HostPA(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte((i + 1) >> 8), byte(i + 1)})
}
func gatewayPA(t int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, 0, byte(t + 2)}) }
func subnet4(j int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(j), 0, 0}), 24)
}
func ca4(j, k int) netip.Addr    { return netip.AddrFrom4([4]byte{10, byte(j), 0, byte(k + 10)}) }
func subnet6(j int) netip.Prefix { return netip.PrefixFrom(ca6(j, -10), 64) }
func vmMAC(t, j, k int) policy.MAC {
	return policy.MAC{0x02, byte(t >> 8), byte(t), byte(j), byte(k >> 8), byte(k)}
}

func ca6(j, k int) netip.Addr {
	b := [16]byte{0: 0xfd, 7: byte(j), 15: byte(k + 10)}
	return netip.AddrFrom16(b)
}

// Builder returns a Builder holding a random valid policy.
func Builder(cfg Config) *policy.Builder {
	cfg.defaults()
	r := rand.New(rand.NewPCG(cfg.Seed, 0x6e6963706174))
	b := policy.NewBuilder()
	for i := range cfg.Hosts {
		b.AddHost(policy.Host{Name: HostName(i), PA: HostPA(i)})
	}
	if cfg.Routes {
		b.AddGateway(policy.Gateway{Name: GatewayName(-1), PA: gatewayPA(-1)})
	}
	var vms []policy.VM
	for t := range cfg.Tenants {
		tn := TenantName(t)
		b.AddTenant(policy.Tenant{Name: tn})
		if cfg.Routes {
			b.AddGateway(policy.Gateway{Name: GatewayName(t), PA: gatewayPA(t), Tenant: tn})
		}
		for j := range cfg.VNETsPerTenant {
			v := policy.VNET{Tenant: tn, Name: VNETName(j), VNI: VNI(t, j), Subnets: []netip.Prefix{subnet4(j)}, Encap: EncapOf(cfg, t, j)}
			if cfg.IPv6 {
				v.Subnets = append(v.Subnets, subnet6(j))
			}
			b.AddVNET(v)
			for k := range cfg.VMsPerVNET {
				vm := policy.VM{Name: VMName(t, j, k), Tenant: tn, VNET: v.Name, MAC: vmMAC(t, j, k),
					CAs: []netip.Addr{ca4(j, k)}, Host: HostName(r.IntN(cfg.Hosts))}
				if cfg.IPv6 {
					vm.CAs = append(vm.CAs, ca6(j, k))
				}
				b.AddVM(vm)
				vms = append(vms, vm)
			}
		}
		if cfg.Routes {
			addRoutes(b, tn, t)
		}
		for i := range max(cfg.ACLsPerTenant, 0) {
			b.AddACL(RandomACL(r, tn, fmt.Sprintf("acl-%d", i), cfg))
		}
	}
	if cfg.Hosts > 1 {
		for _, i := range r.Perm(len(vms))[:min(cfg.Shadows, len(vms))] {
			vm := vms[i]
			var h int
			for h = r.IntN(cfg.Hosts); HostName(h) == vm.Host; h = r.IntN(cfg.Hosts) {
			}
			b.AddShadow(policy.Shadow{VM: vm.Name, Host: HostName(h), Generation: 2})
		}
	}
	return b
}

func addRoutes(b *policy.Builder, tn string, t int) {
	p := netip.MustParsePrefix
	b.AddRoute(policy.Route{Tenant: tn, Prefix: p("0.0.0.0/0"), NextHop: policy.NextHop{Kind: policy.NextHopGateway, Gateway: GatewayName(-1)}})
	b.AddRoute(policy.Route{Tenant: tn, Prefix: p("10.240.0.0/16"), NextHop: policy.NextHop{Kind: policy.NextHopDrop}})
	b.AddRoute(policy.Route{Tenant: tn, Prefix: p("10.241.0.0/16"), NextHop: policy.NextHop{Kind: policy.NextHopHost}})
	// VM 0 of VNET 0 is the tenant's appliance.
	b.AddRoute(policy.Route{Tenant: tn, Prefix: p("10.250.0.0/16"), NextHop: policy.NextHop{Kind: policy.NextHopAddress, Via: ca4(0, 0)}})
	b.AddGatewayRule(policy.GatewayRule{Tenant: tn, Name: "storage", Prefix: p("10.200.0.0/24"), Gateway: GatewayName(t),
		NAT: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, 0}), 24)})
}

// Generate builds a random valid policy.
func Generate(cfg Config) (*policy.State, error) { return Builder(cfg).Build() }

// MustGenerate is Generate for tests: it panics if the generator produced
// an invalid policy (a bug in this package).
func MustGenerate(cfg Config) *policy.State {
	s, err := Generate(cfg)
	if err != nil {
		panic(fmt.Sprintf("policytest: generated an invalid policy: %v", err))
	}
	return s
}

var protocols = []uint8{policy.ProtoAny, policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP}

// RandomACL returns a random valid ACL for tenant tn drawn from the
// address plan of cfg.
func RandomACL(r *rand.Rand, tn, id string, cfg Config) policy.ACL {
	cfg.defaults()
	a := policy.ACL{Tenant: tn, ID: id, Priority: uint32(r.IntN(1000)), Direction: policy.Direction(1 + r.IntN(2)),
		Action: policy.ACLAction(1 + r.IntN(2)), Stateful: r.IntN(2) == 0, Protocol: protocols[r.IntN(len(protocols))]}
	if r.IntN(2) == 0 {
		a.Src = []netip.Prefix{randomPrefix(r, cfg)}
	}
	if r.IntN(2) == 0 {
		a.Dst = []netip.Prefix{randomPrefix(r, cfg)}
	}
	if a.Protocol == policy.ProtoTCP || a.Protocol == policy.ProtoUDP {
		if r.IntN(2) == 0 {
			lo := uint16(r.IntN(1024))
			a.DstPorts = []policy.PortRange{{Lo: lo, Hi: lo + uint16(r.IntN(64))}}
		}
	}
	if r.IntN(4) == 0 {
		a.VNET = VNETName(r.IntN(cfg.VNETsPerTenant))
	}
	return a
}

func randomPrefix(r *rand.Rand, cfg Config) netip.Prefix {
	j := r.IntN(cfg.VNETsPerTenant)
	if cfg.IPv6 && r.IntN(2) == 0 {
		if r.IntN(2) == 0 {
			return subnet6(j)
		}
		return netip.PrefixFrom(ca6(j, r.IntN(cfg.VMsPerVNET)), 128)
	}
	switch r.IntN(3) {
	case 0:
		return subnet4(j)
	case 1:
		return netip.MustParsePrefix("10.0.0.0/8")
	}
	return netip.PrefixFrom(ca4(j, r.IntN(cfg.VMsPerVNET)), 32)
}

// RandomDestination returns an address a VM might send to: another VM's
// CA (of any tenant: the plans overlap), an unmapped address in a subnet,
// or an address outside every subnet (covered by the generated routes).
func RandomDestination(r *rand.Rand, cfg Config, v6 bool) netip.Addr {
	cfg.defaults()
	j := r.IntN(cfg.VNETsPerTenant + 1) // one past the last VNET: no subnet
	k := r.IntN(cfg.VMsPerVNET + 2)     // past the last VM: unmapped
	if v6 {
		return ca6(j, k)
	}
	switch r.IntN(8) {
	case 0:
		return netip.AddrFrom4([4]byte{203, 0, 113, byte(r.IntN(256))})
	case 1:
		return netip.AddrFrom4([4]byte{10, byte(240 + r.IntN(2)), 0, 1})
	case 2:
		return netip.AddrFrom4([4]byte{10, 250, 0, byte(r.IntN(256))})
	case 3:
		return netip.AddrFrom4([4]byte{10, 200, 0, byte(r.IntN(256))})
	}
	return ca4(j, k)
}

// RandomOutbound returns a random packet sent by vm (from its own MAC and
// one of its CAs) toward a RandomDestination.
func RandomOutbound(r *rand.Rand, cfg Config, vm policy.VM) policy.Packet {
	src := vm.CAs[r.IntN(len(vm.CAs))]
	p := policy.Packet{SrcMAC: vm.MAC, DstMAC: policy.DefaultRouterMAC, Src: src,
		Dst: RandomDestination(r, cfg, src.Is6()), TTL: uint8(1 + r.IntN(64))}
	p.EtherType = policy.EtherTypeIPv4
	if src.Is6() {
		p.EtherType = policy.EtherTypeIPv6
	}
	randomL4(r, &p)
	return p
}

func randomL4(r *rand.Rand, p *policy.Packet) {
	switch r.IntN(3) {
	case 0:
		p.Protocol = policy.ProtoTCP
	case 1:
		p.Protocol = policy.ProtoUDP
	default:
		p.Protocol = policy.ProtoICMP
		if p.Src.Is6() {
			p.Protocol = policy.ProtoICMPv6
		}
		p.ICMPType = uint8(r.IntN(4)) * 8 // echo reply/request-ish, never ND
		return
	}
	p.SrcPort = uint16(1024 + r.IntN(60000))
	p.DstPort = uint16(r.IntN(1100))
}

// RandomInbound returns a random decapsulated packet as it might arrive on
// a host's uplink: any tenant's VNI, mostly in its VNET's encapsulation and
// sometimes in another, any host or gateway as outer source, inner
// addresses from the shared plan. Most of them must be dropped; the ones
// delivered must satisfy isolation.
func RandomInbound(r *rand.Rand, cfg Config) (policy.InPort, policy.Packet) {
	cfg.defaults()
	t, j := r.IntN(cfg.Tenants+1), r.IntN(cfg.VNETsPerTenant)
	outer := HostPA(r.IntN(cfg.Hosts))
	if cfg.Routes && r.IntN(6) == 0 {
		outer = gatewayPA(r.IntN(cfg.Tenants+1) - 1)
	}
	v6 := cfg.IPv6 && r.IntN(2) == 0
	src := RandomDestination(r, cfg, v6)
	if r.IntN(6) == 0 && !v6 {
		src = netip.AddrFrom4([4]byte{198, 51, 100, byte(r.IntN(256))})
	}
	p := policy.Packet{Src: src, Dst: RandomDestination(r, cfg, v6), TTL: uint8(1 + r.IntN(64))}
	p.EtherType = policy.EtherTypeIPv4
	if v6 {
		p.EtherType = policy.EtherTypeIPv6
	}
	randomL4(r, &p)
	kind := EncapOf(cfg, t, j)
	if r.IntN(6) == 0 {
		kind = policy.EncapKinds()[r.IntN(3)]
	}
	return policy.FromTunnel(kind, VNI(t, j), outer), p
}
