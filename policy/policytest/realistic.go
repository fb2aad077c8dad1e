package policytest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/nicpath/nicpath/policy"
)

// Realistic sizes a policy shaped like a busy region's slice of a cloud, for
// measuring a slow path at scale (DESIGN.md: 1,000 VMs, 100 ACL rules per
// tenant, 10,000 routes, 1M mappings). Zero fields take the defaults noted.
//
// The address plan is the same in every tenant (only the VNI tells them
// apart): VNET j of 4 is 10.64j.0.0/10; VM k of a VNET owns the block
// 10.(64j+k).0.0/22 and holds CAsPerVM addresses in it from .1 (a VM
// fronting many addresses, as a container host or an appliance does); so
// 1,000 VMs of 1,000 CAs are 1M mappings. VMs are spread round-robin over
// the hosts.
//
// Each tenant's routing table has RoutesPerTenant routes in all: its 4
// subnet routes, a /22 route per VM block into the VNET, a default route to
// a shared gateway, on-premises /24s in 172.16.0.0/12 to the tenant's own
// gateway, blackholed and host-bound /24s in 192.168.0.0/16 and
// 100.64.0.0/10, routes through an appliance VM (172.31.x.0/24 via VM 0's
// first CA), and a NAT gateway rule.
//
// Each tenant has ACLsPerTenant ACLs, half in each direction: stateful
// allows of service ports between VNETs, denies between VM blocks, denies
// of a few ports tenant-wide, ICMP and any-protocol rules over the whole
// plan, some scoped to one VNET.
type Realistic struct {
	Seed            uint64
	Hosts           int // default 16
	Tenants         int // default 10
	VMsPerTenant    int // default 100 (at most 256)
	CAsPerVM        int // default 1,000 (at most 1,023)
	ACLsPerTenant   int // default 100
	RoutesPerTenant int // default 1,000
}

const realisticVNETs = 4

func (c *Realistic) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Hosts, 16)
	def(&c.Tenants, 10)
	def(&c.VMsPerTenant, 100)
	def(&c.CAsPerVM, 1000)
	def(&c.ACLsPerTenant, 100)
	def(&c.RoutesPerTenant, 1000)
	c.VMsPerTenant = min(c.VMsPerTenant, 64*realisticVNETs)
	c.CAsPerVM = min(c.CAsPerVM, 1023)
}

// RealisticVMName names VM v of tenant t.
func RealisticVMName(t, v int) string { return fmt.Sprintf("r%d-vm%d", t, v) }

// RealisticCA is address i of VM v (of any tenant: the plans overlap).
func RealisticCA(v, i int) netip.Addr {
	j, k := v%realisticVNETs, v/realisticVNETs
	i++
	return netip.AddrFrom4([4]byte{10, byte(64*j + k), byte(i >> 8), byte(i)})
}

func realisticBlock(v int) netip.Prefix {
	return netip.PrefixFrom(RealisticCA(v, -1), 22)
}

func realisticSubnet(j int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 * j), 0, 0}), 10)
}

// Host is the host VM v of tenant t runs on.
func (c Realistic) Host(t, v int) string {
	c.defaults()
	return HostName((t*c.VMsPerTenant + v) % c.Hosts)
}

// Builder returns a Builder holding the policy.
func (c Realistic) Builder() *policy.Builder {
	c.defaults()
	r := rand.New(rand.NewPCG(c.Seed, 0x7265616c))
	b := policy.NewBuilder()
	for i := range c.Hosts {
		b.AddHost(policy.Host{Name: HostName(i), PA: HostPA(i)})
	}
	b.AddGateway(policy.Gateway{Name: GatewayName(-1), PA: gatewayPA(-1)})
	for t := range c.Tenants {
		tn := TenantName(t)
		b.AddTenant(policy.Tenant{Name: tn})
		b.AddGateway(policy.Gateway{Name: GatewayName(t), PA: gatewayPA(t), Tenant: tn})
		for j := range realisticVNETs {
			b.AddVNET(policy.VNET{Tenant: tn, Name: VNETName(j), VNI: VNI(t, j), Subnets: []netip.Prefix{realisticSubnet(j)}})
		}
		for v := range c.VMsPerTenant {
			cas := make([]netip.Addr, c.CAsPerVM)
			for i := range cas {
				cas[i] = RealisticCA(v, i)
			}
			b.AddVM(policy.VM{Name: RealisticVMName(t, v), Tenant: tn, VNET: VNETName(v % realisticVNETs),
				MAC: policy.MAC{0x02, 0x52, byte(t), byte(v >> 8), byte(v), 0}, CAs: cas, Host: c.Host(t, v)})
		}
		c.addRoutes(b, tn, t)
		for i := range c.ACLsPerTenant {
			b.AddACL(c.randomACL(r, tn, i))
		}
	}
	return b
}

// Generate builds the policy.
func (c Realistic) Generate() (*policy.State, error) { return c.Builder().Build() }

func (c Realistic) addRoutes(b *policy.Builder, tn string, t int) {
	route := func(p netip.Prefix, nh policy.NextHop) {
		b.AddRoute(policy.Route{Tenant: tn, Prefix: p, NextHop: nh})
	}
	p24 := func(a, b2, c3 int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a), byte(b2), byte(c3), 0}), 24)
	}
	// subnet routes (implicit) and the NAT rule's route count too
	n := c.RoutesPerTenant - realisticVNETs - 1
	add := func(p netip.Prefix, nh policy.NextHop) {
		if n > 0 {
			route(p, nh)
			n--
		}
	}
	add(netip.MustParsePrefix("0.0.0.0/0"), policy.NextHop{Kind: policy.NextHopGateway, Gateway: GatewayName(-1)})
	for v := range c.VMsPerTenant {
		add(realisticBlock(v), policy.NextHop{Kind: policy.NextHopVNET, VNET: VNETName(v % realisticVNETs)})
	}
	for i := range 4 {
		add(p24(172, 31, i), policy.NextHop{Kind: policy.NextHopAddress, Via: RealisticCA(0, 0)})
	}
	for i := range 10 {
		add(p24(192, 168, i), policy.NextHop{Kind: policy.NextHopDrop})
	}
	for i := range 5 {
		add(p24(100, 64, i), policy.NextHop{Kind: policy.NextHopHost})
	}
	for i := 0; n > 0 && i < 15*256; i++ {
		add(p24(172, 16+i/256, i%256), policy.NextHop{Kind: policy.NextHopGateway, Gateway: GatewayName(t)})
	}
	b.AddGatewayRule(policy.GatewayRule{Tenant: tn, Name: "storage", Prefix: netip.MustParsePrefix("192.0.2.0/24"),
		Gateway: GatewayName(t), NAT: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, 0}), 24)})
}

var servicePorts = []uint16{22, 53, 80, 443, 3306, 5432, 6379, 8080, 8443, 9090}

func (c Realistic) randomACL(r *rand.Rand, tn string, i int) policy.ACL {
	a := policy.ACL{Tenant: tn, ID: fmt.Sprintf("acl-%03d", i), Priority: uint32(100 + 10*i + r.IntN(10)),
		Direction: policy.Direction(1 + i%2)}
	vm := func() int { return r.IntN(c.VMsPerTenant) }
	switch x := r.IntN(20); {
	case x < 8: // stateful allow of a service between VNETs
		a.Action, a.Stateful = policy.Allow, true
		a.Protocol = []uint8{policy.ProtoTCP, policy.ProtoUDP}[r.IntN(2)]
		a.Src = []netip.Prefix{realisticSubnet(r.IntN(realisticVNETs))}
		a.Dst = []netip.Prefix{realisticSubnet(r.IntN(realisticVNETs))}
		p := servicePorts[r.IntN(len(servicePorts))]
		a.DstPorts = []policy.PortRange{{Lo: p, Hi: p}}
	case x < 13: // deny between VM blocks
		a.Action = policy.Deny
		a.Src = []netip.Prefix{realisticBlock(vm())}
		a.Dst = []netip.Prefix{realisticBlock(vm()), realisticBlock(vm())}
	case x < 15: // deny a port range tenant-wide
		a.Action = policy.Deny
		a.Protocol = policy.ProtoTCP
		lo := uint16(r.IntN(60000))
		a.DstPorts = []policy.PortRange{{Lo: lo, Hi: lo + uint16(r.IntN(64))}}
	case x < 17: // ICMP over the plan
		a.Action = policy.Allow
		a.Protocol = policy.ProtoICMP
		a.Src = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	case x < 19: // an appliance's block may talk to anything
		a.Action, a.Stateful = policy.Allow, r.IntN(2) == 0
		a.Src = []netip.Prefix{realisticBlock(vm())}
	default: // scoped to one VNET: deny a range of high ports from on premises
		a.Action = policy.Deny
		a.VNET = VNETName(r.IntN(realisticVNETs))
		a.Protocol = policy.ProtoUDP
		a.Src = []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}
		a.DstPorts = []policy.PortRange{{Lo: 40000, Hi: 49999}}
	}
	return a
}

// Sent is one packet and the VM that sends it.
type Sent struct {
	VM     string
	Packet policy.Packet
}

// Traffic returns n first packets sent by the VMs that run on host, no two
// between the same pair of addresses: senders take turns, each from one
// of its CAs after another; destinations are random: mostly another CA of
// the tenant (any VNET, so some are routed), some on-premises addresses
// behind the tenant's gateway, a few to blackholed, host-bound and
// appliance-routed prefixes. 7 in 10 are TCP, 1 in 4 UDP, the rest ICMP
// echo requests; destination ports are mostly well-known services, never
// VXLAN's or Geneve's.
func (c Realistic) Traffic(host string, n int) []Sent {
	c.defaults()
	r := rand.New(rand.NewPCG(c.Seed, 0x74726166))
	type vmAt struct{ t, v int }
	var local []vmAt
	for t := range c.Tenants {
		for v := range c.VMsPerTenant {
			if c.Host(t, v) == host {
				local = append(local, vmAt{t, v})
			}
		}
	}
	if len(local) == 0 {
		return nil
	}
	seen := make(map[[2]netip.Addr]bool, n)
	out := make([]Sent, 0, n)
	for i := 0; len(out) < n; i++ {
		s := local[i%len(local)]
		src := RealisticCA(s.v, (i/len(local))%c.CAsPerVM)
		var dst netip.Addr
		switch x := r.IntN(100); {
		case x < 85:
			dst = RealisticCA(r.IntN(c.VMsPerTenant), r.IntN(c.CAsPerVM))
		case x < 95:
			dst = netip.AddrFrom4([4]byte{172, byte(16 + r.IntN(3)), byte(r.IntN(256)), byte(1 + r.IntN(254))})
		case x < 97:
			dst = netip.AddrFrom4([4]byte{192, 168, byte(r.IntN(10)), byte(1 + r.IntN(254))})
		case x < 98:
			dst = netip.AddrFrom4([4]byte{100, 64, byte(r.IntN(5)), byte(1 + r.IntN(254))})
		default:
			dst = netip.AddrFrom4([4]byte{172, 31, byte(r.IntN(4)), byte(1 + r.IntN(254))})
		}
		if dst == src || seen[[2]netip.Addr{src, dst}] {
			continue
		}
		seen[[2]netip.Addr{src, dst}] = true
		p := policy.Packet{SrcMAC: policy.MAC{0x02, 0x52, byte(s.t), byte(s.v >> 8), byte(s.v), 0}, DstMAC: policy.DefaultRouterMAC,
			EtherType: policy.EtherTypeIPv4, Src: src, Dst: dst, TTL: 64}
		switch x := r.IntN(20); {
		case x < 14:
			p.Protocol = policy.ProtoTCP
		case x < 19:
			p.Protocol = policy.ProtoUDP
		default:
			p.Protocol, p.ICMPType = policy.ProtoICMP, 8
		}
		if p.HasPorts() {
			p.SrcPort = uint16(1024 + r.IntN(64512))
			p.DstPort = servicePorts[r.IntN(len(servicePorts))]
			if r.IntN(3) == 0 {
				p.DstPort = uint16(1024 + r.IntN(64512))
				if p.DstPort == 4789 || p.DstPort == 6081 {
					p.DstPort++ // a tunnel's port: the frame would parse as tunnelled
				}
			}
		}
		out = append(out, Sent{VM: RealisticVMName(s.t, s.v), Packet: p})
	}
	return out
}
