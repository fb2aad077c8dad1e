package hal

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// EncapKind is an encapsulation.
type EncapKind uint8

const (
	EncapNone   EncapKind = iota
	EncapVXLAN            // RFC 7348, UDP port 4789
	EncapGeneve           // RFC 8926, UDP port 6081
	EncapNVGRE            // RFC 7637, GRE with key, protocol 0x6558
	encapEnd
)

func (k EncapKind) String() string {
	switch k {
	case EncapNone:
		return "none"
	case EncapVXLAN:
		return "vxlan"
	case EncapGeneve:
		return "geneve"
	case EncapNVGRE:
		return "nvgre"
	}
	return "encap(" + strconv.Itoa(int(k)) + ")"
}

// Well-known UDP destination ports of the UDP encapsulations.
const (
	PortVXLAN  uint16 = 4789
	PortGeneve uint16 = 6081
)

// EncapSet is a bitmask of encapsulations, indexed by EncapKind.
type EncapSet uint8

// Has reports whether k is in the set.
func (s EncapSet) Has(k EncapKind) bool { return s&(1<<k) != 0 }

// EncapsOf builds a set.
func EncapsOf(kinds ...EncapKind) EncapSet {
	var s EncapSet
	for _, k := range kinds {
		s |= 1 << k
	}
	return s
}

func (s EncapSet) String() string {
	var parts []string
	for k := EncapVXLAN; k < encapEnd; k++ {
		if s.Has(k) {
			parts = append(parts, k.String())
		}
	}
	if parts == nil {
		return "none"
	}
	return strings.Join(parts, "|")
}

// ActionKind is one header operation or a terminal action.
type ActionKind uint8

const (
	ActionInvalid   ActionKind = iota
	ActionDecap                // remove the outer headers of a tunnelled frame
	ActionSetEthSrc            // rewrite the source MAC
	ActionSetEthDst            // rewrite the destination MAC
	ActionSetIPSrc             // rewrite the source IP (checksums fixed)
	ActionSetIPDst             // rewrite the destination IP (checksums fixed)
	ActionSetL4Src             // rewrite the TCP/UDP source port (checksum fixed)
	ActionSetL4Dst             // rewrite the TCP/UDP destination port (checksum fixed)
	ActionDecTTL               // decrement TTL / hop limit; at 0 the packet goes to the host (ReasonTTL)
	ActionPushVLAN             // push an 802.1Q tag
	ActionPopVLAN              // pop the outer 802.1Q tag
	ActionEncap                // add outer headers (Encap says which)
	ActionCount                // keep packet and byte counters for the rule
	ActionOutput               // terminal: send out of OutPort
	ActionDrop                 // terminal: drop, counted under Reason
	ActionToHost               // terminal: hand to the host on the exception path with Reason
	actionEnd
)

var actionNames = [...]string{"invalid", "decap", "set_eth_src", "set_eth_dst", "set_ip_src", "set_ip_dst",
	"set_l4_src", "set_l4_dst", "dec_ttl", "push_vlan", "pop_vlan", "encap", "count", "output", "drop", "to_host"}

func (k ActionKind) String() string {
	if int(k) < len(actionNames) {
		return actionNames[k]
	}
	return "action(" + strconv.Itoa(int(k)) + ")"
}

// Terminal reports whether k ends a rule's action list.
func (k ActionKind) Terminal() bool {
	return k == ActionOutput || k == ActionDrop || k == ActionToHost
}

// ActionSet is a bitmask of action kinds.
type ActionSet uint32

// Has reports whether k is in the set.
func (s ActionSet) Has(k ActionKind) bool { return s&(1<<k) != 0 }

// ActionsOf builds a set.
func ActionsOf(kinds ...ActionKind) ActionSet {
	var s ActionSet
	for _, k := range kinds {
		s |= 1 << k
	}
	return s
}

// AllActions is every action kind.
var AllActions = func() ActionSet {
	var s ActionSet
	for k := ActionDecap; k < actionEnd; k++ {
		s |= 1 << k
	}
	return s
}()

func (s ActionSet) String() string {
	var parts []string
	for k := ActionDecap; k < actionEnd; k++ {
		if s.Has(k) {
			parts = append(parts, k.String())
		}
	}
	if parts == nil {
		return "none"
	}
	return strings.Join(parts, "|")
}

// Encap describes the outer headers an ActionEncap writes.
type Encap struct {
	Kind     EncapKind
	VNI      uint32     // 24 bits (VXLAN VNI, Geneve VNI, NVGRE VSID)
	Src, Dst netip.Addr // outer IP addresses (both IPv4 or both IPv6)
	SrcMAC   MAC        // outer Ethernet source
	DstMAC   MAC        // outer Ethernet destination (next hop's MAC)
	TTL      uint8      // outer TTL / hop limit; 0 means 64
	DstPort  uint16     // UDP destination port; 0 means the IANA port of Kind
	// GeneveOptions holds raw Geneve option TLVs (a multiple of 4 bytes, at
	// most 252). Only for EncapGeneve.
	GeneveOptions []byte
	// FlowID is NVGRE's 8-bit FlowID (entropy for ECMP); only for EncapNVGRE.
	FlowID uint8
}

// Action is one step of a rule. Only the fields its Kind uses are read.
type Action struct {
	Kind    ActionKind
	MAC     MAC        // SetEthSrc, SetEthDst
	Addr    netip.Addr // SetIPSrc, SetIPDst
	L4Port  uint16     // SetL4Src, SetL4Dst
	VLAN    uint16     // PushVLAN: the VLAN ID
	OutPort PortID     // Output
	Reason  Reason     // Drop, ToHost
	Encap   Encap      // Encap
}

// Constructors for each action, so call sites read like an action list.

func Decap() Action                { return Action{Kind: ActionDecap} }
func SetEthSrc(m MAC) Action       { return Action{Kind: ActionSetEthSrc, MAC: m} }
func SetEthDst(m MAC) Action       { return Action{Kind: ActionSetEthDst, MAC: m} }
func SetIPSrc(a netip.Addr) Action { return Action{Kind: ActionSetIPSrc, Addr: a} }
func SetIPDst(a netip.Addr) Action { return Action{Kind: ActionSetIPDst, Addr: a} }
func SetL4Src(p uint16) Action     { return Action{Kind: ActionSetL4Src, L4Port: p} }
func SetL4Dst(p uint16) Action     { return Action{Kind: ActionSetL4Dst, L4Port: p} }
func DecTTL() Action               { return Action{Kind: ActionDecTTL} }
func PushVLAN(vid uint16) Action   { return Action{Kind: ActionPushVLAN, VLAN: vid} }
func PopVLAN() Action              { return Action{Kind: ActionPopVLAN} }
func EncapWith(e Encap) Action     { return Action{Kind: ActionEncap, Encap: e} }
func Count() Action                { return Action{Kind: ActionCount} }
func Output(p PortID) Action       { return Action{Kind: ActionOutput, OutPort: p} }
func Drop(r Reason) Action         { return Action{Kind: ActionDrop, Reason: r} }
func ToHost(r Reason) Action       { return Action{Kind: ActionToHost, Reason: r} }

func (a Action) String() string {
	switch a.Kind {
	case ActionSetEthSrc, ActionSetEthDst:
		return a.Kind.String() + "(" + a.MAC.String() + ")"
	case ActionSetIPSrc, ActionSetIPDst:
		return a.Kind.String() + "(" + a.Addr.String() + ")"
	case ActionSetL4Src, ActionSetL4Dst:
		return a.Kind.String() + "(" + itoa(uint64(a.L4Port)) + ")"
	case ActionPushVLAN:
		return "push_vlan(" + itoa(uint64(a.VLAN)) + ")"
	case ActionEncap:
		e := &a.Encap
		return fmt.Sprintf("encap(%s vni=%d src=%s dst=%s)", e.Kind, e.VNI, e.Src, e.Dst)
	case ActionOutput:
		return "output(" + itoa(uint64(a.OutPort)) + ")"
	case ActionDrop, ActionToHost:
		return a.Kind.String() + "(" + a.Reason.String() + ")"
	}
	return a.Kind.String()
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

func hex16(v uint16) string { return fmt.Sprintf("%04x", v) }
