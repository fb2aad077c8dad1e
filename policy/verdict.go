package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// EtherTypes the evaluator distinguishes.
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeARP  uint16 = 0x0806
	EtherTypeIPv6 uint16 = 0x86DD
)

// InPort says where a packet entered the host: a local VM's vport, or the
// uplink (already decapsulated, with the kind, VNI and outer source address
// of its encapsulation).
type InPort struct {
	// VM names the local VM whose vport the packet came from. Empty for the
	// uplink.
	VM string
	// Uplink is set for packets from the physical network.
	Uplink bool
	// Encap, VNI and OuterSrc come from the encapsulation header (uplink
	// only). The zero Encap is VXLAN.
	Encap    EncapKind
	VNI      uint32
	OuterSrc netip.Addr
}

// FromVM is the in-port of a local VM's vport.
func FromVM(vm string) InPort { return InPort{VM: vm} }

// FromUplink is the in-port of a decapsulated VXLAN packet from the uplink.
func FromUplink(vni uint32, outerSrc netip.Addr) InPort {
	return InPort{Uplink: true, VNI: vni, OuterSrc: outerSrc}
}

// FromTunnel is the in-port of a packet from the uplink decapsulated from
// the given kind of encapsulation.
func FromTunnel(kind EncapKind, vni uint32, outerSrc netip.Addr) InPort {
	return InPort{Uplink: true, Encap: kind, VNI: vni, OuterSrc: outerSrc}
}

func (p InPort) String() string {
	if p.Uplink {
		return fmt.Sprintf("uplink(%s vni %d from %s)", p.Encap, p.VNI, p.OuterSrc)
	}
	return "vm " + p.VM
}

// Packet is the inner packet as the evaluator sees it: the header fields the
// policy can match or rewrite. Ports are set for TCP, UDP and SCTP; ICMP
// type and code for ICMP and ICMPv6. TTL is the IPv4 TTL or IPv6 hop limit.
type Packet struct {
	SrcMAC, DstMAC     MAC
	EtherType          uint16
	Src, Dst           netip.Addr
	Protocol           uint8
	SrcPort, DstPort   uint16
	ICMPType, ICMPCode uint8
	TTL                uint8
}

// Reverse returns the reply direction of p: MACs, addresses and ports
// swapped, everything else kept.
func (p Packet) Reverse() Packet {
	p.SrcMAC, p.DstMAC = p.DstMAC, p.SrcMAC
	p.Src, p.Dst = p.Dst, p.Src
	p.SrcPort, p.DstPort = p.DstPort, p.SrcPort
	return p
}

// HasPorts reports whether the protocol carries L4 ports.
func (p Packet) HasPorts() bool { return hasPorts(p.Protocol) }

func hasPorts(proto uint8) bool {
	return proto == ProtoTCP || proto == ProtoUDP || proto == ProtoSCTP
}

func (p Packet) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s > %s ethertype %#04x", p.SrcMAC, p.DstMAC, p.EtherType)
	if p.Src.IsValid() || p.Dst.IsValid() {
		fmt.Fprintf(&b, " %s > %s proto %d", p.Src, p.Dst, p.Protocol)
		if p.HasPorts() {
			fmt.Fprintf(&b, " ports %d > %d", p.SrcPort, p.DstPort)
		}
		fmt.Fprintf(&b, " ttl %d", p.TTL)
	}
	return b.String()
}

// Action is the evaluator's answer: what must happen to a packet.
type Action uint8

const (
	// Drop discards the packet; Verdict.Reason says why. It is the zero
	// value so that an unset verdict fails closed.
	Drop Action = iota
	// Deliver hands the packet to the local VM Verdict.VM after
	// Verdict.Rewrite.
	Deliver
	// Encap sends the packet, after Verdict.Rewrite, encapsulated with
	// Verdict.VNI toward the host at Verdict.PA.
	Encap
	// ToGateway sends the packet, after Verdict.Rewrite (NAT included),
	// encapsulated with Verdict.VNI toward the gateway at Verdict.PA.
	ToGateway
	// ToHost hands the packet to the host (parent partition); Verdict.Reason
	// says why.
	ToHost
)

var actionNames = [...]string{Drop: "drop", Deliver: "deliver", Encap: "encap", ToGateway: "gateway", ToHost: "to-host"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// Reason says why a packet is dropped or handed to the host.
type Reason uint8

const (
	// ReasonNone: the packet is neither dropped nor handed to the host.
	ReasonNone Reason = iota
	// ReasonUnknownHost: the evaluating host is not in the state.
	ReasonUnknownHost
	// ReasonUnknownPort: the in-port VM does not exist or is not (or not
	// yet, for a shadow) on this host.
	ReasonUnknownPort
	// ReasonUnsupportedEtherType: neither IPv4, IPv6 nor address resolution.
	ReasonUnsupportedEtherType
	// ReasonMalformed: addresses missing or of the wrong family for the
	// EtherType.
	ReasonMalformed
	// ReasonSpoofedSource: a VM sent from a MAC or IP that is not its own.
	ReasonSpoofedSource
	// ReasonACLDeny: an ACL denied the packet (Verdict.ACLs names it).
	ReasonACLDeny
	// ReasonNoRoute: no route of the tenant covers the destination.
	ReasonNoRoute
	// ReasonRouteDrop: the matching route's next hop is drop.
	ReasonRouteDrop
	// ReasonRouteLoop: following next-hop addresses did not terminate.
	ReasonRouteLoop
	// ReasonUnknownDestination: the route leads to a VNET that has no
	// mapping for the destination address.
	ReasonUnknownDestination
	// ReasonTTLExpired: a routed packet arrived with TTL (hop limit) ≤ 1.
	ReasonTTLExpired
	// ReasonUnknownVNI: an uplink packet carries a VNI no VNET has.
	ReasonUnknownVNI
	// ReasonNotLocal: an uplink packet is for a VM that does not run on
	// this host.
	ReasonNotLocal
	// ReasonTenantIsolation: an uplink packet's outer source is neither the
	// host of the tenant's VM owning the inner source address nor a gateway
	// serving the tenant.
	ReasonTenantIsolation
	// ReasonRouteToHost (ToHost): the matching route's next hop is the host.
	ReasonRouteToHost
	// ReasonAddressResolution (ToHost): ARP or IPv6 neighbor discovery,
	// which the host answers from the mappings.
	ReasonAddressResolution
	// ReasonEncapMismatch: an uplink packet's VNI names a VNET carried in
	// another encapsulation (a VXLAN frame for a Geneve VNET).
	ReasonEncapMismatch
)

var reasonNames = [...]string{
	ReasonNone:                 "none",
	ReasonUnknownHost:          "unknown-host",
	ReasonUnknownPort:          "unknown-port",
	ReasonUnsupportedEtherType: "unsupported-ethertype",
	ReasonMalformed:            "malformed",
	ReasonSpoofedSource:        "spoofed-source",
	ReasonACLDeny:              "acl-deny",
	ReasonNoRoute:              "no-route",
	ReasonRouteDrop:            "route-drop",
	ReasonRouteLoop:            "route-loop",
	ReasonUnknownDestination:   "unknown-destination",
	ReasonTTLExpired:           "ttl-expired",
	ReasonUnknownVNI:           "unknown-vni",
	ReasonNotLocal:             "not-local",
	ReasonTenantIsolation:      "tenant-isolation",
	ReasonRouteToHost:          "route-to-host",
	ReasonAddressResolution:    "address-resolution",
	ReasonEncapMismatch:        "encap-mismatch",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Rewrite lists the header changes to make before the packet leaves. Zero
// fields mean "unchanged".
type Rewrite struct {
	SrcMAC, DstMAC MAC
	Src, Dst       netip.Addr
	// DecTTL: decrement the TTL (hop limit); set on routed packets.
	DecTTL bool
}

// IsZero reports whether the rewrite changes nothing.
func (r Rewrite) IsZero() bool { return r == Rewrite{} }

// Apply returns p with the rewrite applied.
func (r Rewrite) Apply(p Packet) Packet {
	if !r.SrcMAC.IsZero() {
		p.SrcMAC = r.SrcMAC
	}
	if !r.DstMAC.IsZero() {
		p.DstMAC = r.DstMAC
	}
	if r.Src.IsValid() {
		p.Src = r.Src
	}
	if r.Dst.IsValid() {
		p.Dst = r.Dst
	}
	if r.DecTTL && p.TTL > 0 {
		p.TTL--
	}
	return p
}

func (r Rewrite) String() string {
	var parts []string
	if !r.SrcMAC.IsZero() {
		parts = append(parts, "src-mac "+r.SrcMAC.String())
	}
	if !r.DstMAC.IsZero() {
		parts = append(parts, "dst-mac "+r.DstMAC.String())
	}
	if r.Src.IsValid() {
		parts = append(parts, "src "+r.Src.String())
	}
	if r.Dst.IsValid() {
		parts = append(parts, "dst "+r.Dst.String())
	}
	if r.DecTTL {
		parts = append(parts, "dec-ttl")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// ACLLayer is one ACL check point: the ACLs of one VM in one direction.
type ACLLayer struct {
	VM        string
	Direction Direction
}

// ACLDecision is the outcome of one ACL layer for a packet.
type ACLDecision struct {
	ACLLayer
	// ACL is the ID of the deciding ACL; empty when no ACL matched (the
	// default allow) or when Established.
	ACL      string
	Priority uint32
	Action   ACLAction
	// Stateful: the deciding ACL is a stateful allow, so the caller should
	// track the connection: the reply is then allowed through the layer
	// (VM, Direction.Opposite()) without an ACL check.
	Stateful bool
	// Established: the layer was passed because EvalOptions.Established
	// said the packet belongs to a tracked connection.
	Established bool
}

// Verdict is the evaluator's answer for one packet.
type Verdict struct {
	Action Action
	// Reason is set for Drop and ToHost.
	Reason Reason
	// VM is the receiving local VM (Deliver) or the remote VM (Encap).
	VM string
	// Host is the destination host (Encap).
	Host string
	// PA is the outer destination: the remote host (Encap) or the gateway
	// (ToGateway).
	PA netip.Addr
	// VNI is the VNI to encapsulate with (Encap, ToGateway).
	VNI uint32
	// Encap is the encapsulation to send in (Encap, ToGateway): that of
	// the VNET the VNI names.
	Encap EncapKind
	// Gateway names the gateway (ToGateway).
	Gateway string
	// Rewrite is applied to the inner packet before it leaves.
	Rewrite Rewrite
	// Routes are the routes the walk used, in order (more than one when a
	// next hop is an address that is routed again).
	Routes []Route
	// ACLs are the ACL layers the packet went through, in order.
	ACLs []ACLDecision
	// Trace is the walk in words, for "explain".
	Trace []string
}

func (v Verdict) String() string {
	switch v.Action {
	case Drop:
		return "drop (" + v.Reason.String() + ")"
	case ToHost:
		return "to-host (" + v.Reason.String() + ")"
	case Deliver:
		return "deliver to " + v.VM + " [" + v.Rewrite.String() + "]"
	case Encap:
		return fmt.Sprintf("encap %s vni %d to %s (%s, vm %s) [%s]", v.Encap, v.VNI, v.PA, v.Host, v.VM, v.Rewrite)
	case ToGateway:
		return fmt.Sprintf("gateway %s at %s %s vni %d [%s]", v.Gateway, v.PA, v.Encap, v.VNI, v.Rewrite)
	}
	return v.Action.String()
}

// Explain prints the walk, one step a line, then the verdict.
func (v Verdict) Explain() string {
	var b strings.Builder
	for i, s := range v.Trace {
		fmt.Fprintf(&b, "%2d. %s\n", i+1, s)
	}
	fmt.Fprintf(&b, "=> %s\n", v)
	return b.String()
}

// EvalOptions tune one evaluation.
type EvalOptions struct {
	// Established, when set, is asked at every ACL layer whether the packet
	// belongs to a connection the caller tracks (a reply to a packet that a
	// stateful allow let through the opposite layer of the same VM). A true
	// answer passes the layer without consulting the ACLs.
	Established func(layer ACLLayer, pkt Packet) bool
}
