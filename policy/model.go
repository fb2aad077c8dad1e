package policy

import (
	"fmt"
	"net/netip"
	"strconv"
)

// MAC is an Ethernet address. The zero value means "none" or, in a
// [Rewrite], "leave unchanged".
type MAC [6]byte

// ParseMAC parses the colon-separated form 02:00:00:00:00:01.
func ParseMAC(s string) (MAC, error) {
	var m MAC
	if len(s) != 17 {
		return m, fmt.Errorf("invalid MAC %q: want six colon-separated hex bytes", s)
	}
	for i := range m {
		hi, ok1 := unhex(s[3*i])
		lo, ok2 := unhex(s[3*i+1])
		if !ok1 || !ok2 || (i < 5 && s[3*i+2] != ':') {
			return MAC{}, fmt.Errorf("invalid MAC %q: want six colon-separated hex bytes", s)
		}
		m[i] = hi<<4 | lo
	}
	return m, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// String returns the colon-separated lower-case form.
func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

// IsMulticast reports whether the group bit is set (broadcast included).
func (m MAC) IsMulticast() bool { return m[0]&1 == 1 }

// DefaultRouterMAC is the source MAC of routed packets (between VNETs, to a
// gateway, through an appliance) when the state does not name one. It is
// locally administered so it can never collide with a real NIC's address.
var DefaultRouterMAC = MAC{0x02, 0x6e, 0x69, 0x63, 0x00, 0x01}

// Host is a physical machine running a vswitch, known by name and reached at
// its provider address.
type Host struct {
	Name string
	PA   netip.Addr
}

// Gateway is a virtualization gateway: it decapsulates tenant traffic and
// forwards it to non-virtualized hosts (a physical server, storage), and
// back. A gateway with a Tenant is dedicated to that tenant; only that
// tenant's routes and gateway rules may use it. A gateway without a Tenant is
// shared; the VNI of the encapsulation tells it which tenant a packet is for.
type Gateway struct {
	Name   string
	PA     netip.Addr
	Tenant string
}

// Tenant owns VNETs and one routing domain: every VNET of a tenant can reach
// every other through the implicit subnet routes, and the tenant's routes,
// ACLs and gateway rules apply across all of them.
type Tenant struct {
	Name string
}

// VNET is one virtual network (a virtual subnet in Hyper-V terms) of a
// tenant, carried on the wire with its VNI in its encapsulation. Its subnets
// contribute implicit routes to the tenant's routing domain.
type VNET struct {
	Tenant  string
	Name    string
	VNI     uint32
	Subnets []netip.Prefix
	// Encap is the encapsulation the VNET's packets travel in between
	// hosts and to and from gateways; the zero value is VXLAN. A receiver
	// takes the VNET's packets only in this encapsulation.
	Encap EncapKind
}

// EncapKind is an encapsulation a VNET is carried in. The zero value is
// VXLAN, the default.
type EncapKind uint8

const (
	// EncapVXLAN is VXLAN (RFC 7348, UDP port 4789), the default.
	EncapVXLAN EncapKind = iota
	// EncapGeneve is Geneve (RFC 8926, UDP port 6081).
	EncapGeneve
	// EncapNVGRE is NVGRE (RFC 7637: GRE with the VSID in its key).
	EncapNVGRE
	numEncapKinds
)

var encapNames = [numEncapKinds]string{EncapVXLAN: "vxlan", EncapGeneve: "geneve", EncapNVGRE: "nvgre"}

// String returns the kind's name in the document format (vxlan, geneve,
// nvgre).
func (k EncapKind) String() string {
	if k.Valid() {
		return encapNames[k]
	}
	return "encap(" + strconv.Itoa(int(k)) + ")"
}

// Valid reports whether k is one of the kinds the policy knows.
func (k EncapKind) Valid() bool { return k < numEncapKinds }

// EncapKinds returns every kind, in order.
func EncapKinds() []EncapKind { return []EncapKind{EncapVXLAN, EncapGeneve, EncapNVGRE} }

// ParseEncapKind parses a kind's name as the document format writes it.
func ParseEncapKind(s string) (EncapKind, error) {
	for k, n := range encapNames {
		if s == n {
			return EncapKind(k), nil
		}
	}
	return 0, fmt.Errorf("encapsulation %q is not vxlan, geneve or nvgre", s)
}

// VM is a virtual machine's port: its MAC and customer addresses in one VNET,
// and the host it runs on. Each CA yields one [Mapping].
type VM struct {
	Name   string
	Tenant string
	VNET   string
	MAC    MAC
	CAs    []netip.Addr
	Host   string
	// Generation tags the VM's current location; a [Shadow] for the VM's
	// next location carries a different generation. Zero in the Go API
	// means 1.
	Generation uint64
	// SealKeys are the VM's public keys for sealed addresses (at most two,
	// distinct ids: a rotation in progress; the last is the newest). The
	// agent registers them with a NIC that opens sealed frames.
	SealKeys []SealKey
}

// MaxSealKeys is how many sealing keys a VM may have at once: the current
// one and the next, during a rotation.
const MaxSealKeys = 2

// SealKey is one public key of a VM for sealed addresses: the VM seals its
// destinations with the matching private key and stamps ID on its frames.
type SealKey struct {
	ID     uint8
	Public [32]byte
}

// Mapping is one CA→PA mapping: how to reach customer address CA in the VNET
// with the given VNI. PA is the provider address of the host the VM runs on.
type Mapping struct {
	VNI    uint32
	CA     netip.Addr
	MAC    MAC
	PA     netip.Addr
	Host   string
	VM     string
	Tenant string
	VNET   string
	// Generation is the generation of the location given by Host and PA.
	Generation uint64
}

// MappingKey identifies a mapping on the wire: the VNI and the customer
// address. It is the key of the compiled lookup table and of [Diff].
type MappingKey struct {
	VNI uint32
	CA  netip.Addr
}

// NextHopKind says what a route does with a packet.
type NextHopKind uint8

const (
	// NextHopVNET looks the destination up among the mappings of a VNET of
	// the same tenant. Every subnet has an implicit route of this kind to its
	// own VNET.
	NextHopVNET NextHopKind = iota + 1
	// NextHopAddress sends the packet to the VM owning the customer address
	// Via (a virtual appliance), found by routing Via again. The packet's
	// destination IP is kept; only the MACs change.
	NextHopAddress
	// NextHopGateway sends the packet to a virtualization gateway.
	NextHopGateway
	// NextHopDrop drops the packet.
	NextHopDrop
	// NextHopHost hands the packet to the host (the parent partition).
	NextHopHost
)

var nextHopNames = [...]string{NextHopVNET: "vnet", NextHopAddress: "via", NextHopGateway: "gateway", NextHopDrop: "drop", NextHopHost: "host"}

func (k NextHopKind) String() string {
	if int(k) < len(nextHopNames) && nextHopNames[k] != "" {
		return nextHopNames[k]
	}
	return "nexthop(" + strconv.Itoa(int(k)) + ")"
}

// NextHop is a route's target. Only the field that goes with Kind is set.
type NextHop struct {
	Kind    NextHopKind
	VNET    string     // NextHopVNET
	Via     netip.Addr // NextHopAddress
	Gateway string     // NextHopGateway
	// NAT, for NextHopGateway, rewrites the destination address: the bits of
	// the route's prefix are replaced by NAT's (same length), host bits are
	// kept. Invalid means no rewrite. Set from a [GatewayRule].
	NAT netip.Prefix
}

func (h NextHop) String() string {
	switch h.Kind {
	case NextHopVNET:
		return "vnet " + h.VNET
	case NextHopAddress:
		return "via " + h.Via.String()
	case NextHopGateway:
		if h.NAT.IsValid() {
			return "gateway " + h.Gateway + " nat " + h.NAT.String()
		}
		return "gateway " + h.Gateway
	default:
		return h.Kind.String()
	}
}

// RouteOrigin says where a route of the routing domain comes from.
type RouteOrigin uint8

const (
	// RouteExplicit is a route written in the tenant's routes.
	RouteExplicit RouteOrigin = iota
	// RouteSubnet is the implicit route of a VNET subnet.
	RouteSubnet
	// RouteGatewayRule is the route a [GatewayRule] installs.
	RouteGatewayRule
)

func (o RouteOrigin) String() string {
	switch o {
	case RouteSubnet:
		return "subnet"
	case RouteGatewayRule:
		return "gateway-rule"
	default:
		return "explicit"
	}
}

// Route is one entry of a tenant's routing domain. Routes are chosen by
// longest prefix match over the implicit subnet routes, the explicit routes
// and the gateway rules together; prefixes are unique within a tenant except
// that an explicit route overrides the implicit route of the same subnet.
type Route struct {
	Tenant  string
	Prefix  netip.Prefix
	NextHop NextHop
	Origin  RouteOrigin
	// Rule names the gateway rule for RouteGatewayRule routes.
	Rule string
}

// RouteKey identifies a route in [Diff].
type RouteKey struct {
	Tenant string
	Prefix netip.Prefix
}

// GatewayRule sends a tenant's traffic for Prefix (addresses of
// non-virtualized hosts as the tenant sees them) to a gateway, optionally
// translating the destination 1:1 into NAT. On the way back, a packet
// arriving from that gateway whose source is inside NAT is translated back
// into Prefix.
type GatewayRule struct {
	Tenant  string
	Name    string
	Prefix  netip.Prefix
	Gateway string
	NAT     netip.Prefix // invalid: no translation
}

// Direction is the side of a VM an ACL guards.
type Direction uint8

const (
	// Out: packets a VM sends, checked on the sending VM's host.
	Out Direction = iota + 1
	// In: packets a VM receives, checked on the receiving VM's host.
	In
)

func (d Direction) String() string {
	switch d {
	case Out:
		return "out"
	case In:
		return "in"
	}
	return "direction(" + strconv.Itoa(int(d)) + ")"
}

// Opposite returns In for Out and Out for In.
func (d Direction) Opposite() Direction {
	if d == In {
		return Out
	}
	return In
}

// ACLAction is what an ACL does with the packets it matches.
type ACLAction uint8

const (
	// Allow lets matching packets through the layer.
	Allow ACLAction = iota + 1
	// Deny drops matching packets (ReasonACLDeny).
	Deny
)

func (a ACLAction) String() string {
	switch a {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return "aclaction(" + strconv.Itoa(int(a)) + ")"
}

// IP protocol numbers the policy names.
const (
	ProtoAny    uint8 = 0 // in an ACL: any protocol (0 is never an L4 protocol)
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// PortRange is an inclusive range of L4 ports.
type PortRange struct{ Lo, Hi uint16 }

// Contains reports whether p is within r.
func (r PortRange) Contains(p uint16) bool { return r.Lo <= p && p <= r.Hi }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return strconv.Itoa(int(r.Lo)) + "-" + strconv.Itoa(int(r.Hi))
}

// ACL is one access-control entry of a tenant.
//
// Evaluation: for each (VM, direction) the ACLs of the VM's tenant whose
// scope covers the VM (VNET empty or the VM's VNET) are checked in order of
// ascending Priority (a lower number is checked first); among equal
// priorities Deny comes before Allow, then ID order. The first match decides.
// When no ACL matches, the packet is allowed.
//
// A match needs every given field to match: Src and Dst (any of the
// prefixes; empty means any), Protocol (ProtoAny matches all), SrcPorts and
// DstPorts (any of the ranges; empty means any; only TCP, UDP and SCTP
// packets have ports).
//
// Stateful: when a stateful Allow lets a packet through the layer (VM, D),
// the reply (the packet with source and destination swapped) is allowed
// through the layer (VM, D.Opposite()) without consulting the ACLs, for as
// long as the caller tracks the connection. The evaluator is stateless: it
// reports the decision (Verdict.ACLs) and takes "is this packet part of a
// tracked connection" from EvalOptions.Established; [ConnTable] is a
// reference tracker.
type ACL struct {
	Tenant    string
	ID        string
	Priority  uint32
	Direction Direction
	VNET      string // optional scope: only VMs of this VNET
	Src, Dst  []netip.Prefix
	Protocol  uint8
	SrcPorts  []PortRange
	DstPorts  []PortRange
	Action    ACLAction
	Stateful  bool
}

// ACLKey identifies an ACL in [Diff].
type ACLKey struct {
	Tenant string
	ID     string
}

// Shadow is a migrating VM's next location, installed ahead of time and
// inactive until an activation selects its generation. Until then it changes
// nothing: lookups and the evaluator use the VM's current location.
type Shadow struct {
	VM         string
	Host       string
	PA         netip.Addr // the host's PA (resolved on Build)
	Generation uint64
}

// Activation selects which generation of a VM's location is live: the VM's
// own generation (the default) or its shadow's.
type Activation struct {
	VM         string
	Generation uint64
}

// VNETKey identifies a VNET in [Diff].
type VNETKey struct {
	Tenant string
	Name   string
}

// GatewayRuleKey identifies a gateway rule in [Diff].
type GatewayRuleKey struct {
	Tenant string
	Name   string
}
