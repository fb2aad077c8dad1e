package hal

import (
	"fmt"
	"net"
	"net/netip"
)

// PortID names a port of a NIC. 0 is never a valid port.
type PortID uint32

// RuleID names a rule. The caller chooses it and keeps it unique per NIC;
// 0 is never a valid rule.
type RuleID uint64

// Cookie tags a rule with its owner so that a reconciler can tell its own rules
// from someone else's. Drivers store it and return it in Dump.
type Cookie uint64

// Scope groups rules that switch generation together (a VM, a tenant).
type Scope uint32

// Generation is a version tag on rules; see Generations.
type Generation uint32

// MAC is an Ethernet address.
type MAC [6]byte

func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

// ParseMAC parses "aa:bb:cc:dd:ee:ff".
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return MAC{}, err
	}
	if len(hw) != 6 {
		return MAC{}, fmt.Errorf("MAC %q: want 6 bytes, got %d", s, len(hw))
	}
	var m MAC
	copy(m[:], hw)
	return m, nil
}

// MustMAC is ParseMAC for constants; it panics on a bad address.
func MustMAC(s string) MAC {
	m, err := ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// EtherTypes the datapath knows.
const (
	EtherTypeIPv4   uint16 = 0x0800
	EtherTypeARP    uint16 = 0x0806
	EtherTypeVLAN   uint16 = 0x8100
	EtherTypeQinQ   uint16 = 0x88A8
	EtherTypeIPv6   uint16 = 0x86DD
	EtherTypeTEB    uint16 = 0x6558 // transparent Ethernet bridging, NVGRE's payload type
	EtherTypeSealed uint16 = 0x88B5 // local experimental: sealed-address frames (see securechan)
)

// IP protocol numbers the datapath knows.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoGRE    uint8 = 47
	ProtoICMPv6 uint8 = 58
)

// VLANPresent is set in FlowKey.VLAN when the frame carries an 802.1Q tag;
// the low 12 bits are the VLAN ID. A key without the bit has no tag.
const VLANPresent uint16 = 0x1000

// FlowKey is what a NIC parses out of a frame and what rules match on. It is a
// plain value: comparable, hashable and free of pointers, so that parsing into
// it allocates nothing.
//
// Addresses are 16 bytes; IPv4 addresses are stored IPv4-mapped
// (::ffff:a.b.c.d) and EthType says which family a key holds. For ICMP and
// ICMPv6, L4Src holds the type and L4Dst the code, as in Open vSwitch.
//
// When a frame arrives encapsulated (VXLAN, Geneve, NVGRE) the outer headers
// become tunnel metadata (TunKind, VNI, TunSrc, TunDst) and every other field
// describes the inner frame.
type FlowKey struct {
	TunSrc  [16]byte
	TunDst  [16]byte
	IPSrc   [16]byte
	IPDst   [16]byte
	InPort  PortID
	VNI     uint32
	EthSrc  MAC
	EthDst  MAC
	EthType uint16
	VLAN    uint16
	L4Src   uint16
	L4Dst   uint16
	Proto   uint8
	TunKind EncapKind
}

// Addr16 returns a as the 16-byte form FlowKey stores.
func Addr16(a netip.Addr) [16]byte { return a.As16() }

// AddrFrom16 turns a FlowKey address back into a netip.Addr, unmapping IPv4.
func AddrFrom16(b [16]byte) netip.Addr { return netip.AddrFrom16(b).Unmap() }

// Src returns the source IP address (inner, when tunnelled).
func (k *FlowKey) Src() netip.Addr { return AddrFrom16(k.IPSrc) }

// Dst returns the destination IP address (inner, when tunnelled).
func (k *FlowKey) Dst() netip.Addr { return AddrFrom16(k.IPDst) }

// IsIP reports whether the key describes an IPv4 or IPv6 packet.
func (k *FlowKey) IsIP() bool { return k.EthType == EtherTypeIPv4 || k.EthType == EtherTypeIPv6 }

// Reverse returns the key of the reply direction: addresses and ports swapped,
// tunnel endpoints swapped, in-port cleared.
func (k FlowKey) Reverse() FlowKey {
	r := k
	r.InPort = 0
	r.EthSrc, r.EthDst = k.EthDst, k.EthSrc
	r.IPSrc, r.IPDst = k.IPDst, k.IPSrc
	r.TunSrc, r.TunDst = k.TunDst, k.TunSrc
	if k.Proto == ProtoTCP || k.Proto == ProtoUDP {
		r.L4Src, r.L4Dst = k.L4Dst, k.L4Src
	}
	return r
}

func (k FlowKey) String() string {
	s := fmt.Sprintf("in_port=%d", k.InPort)
	if k.TunKind != EncapNone {
		s += fmt.Sprintf(" tun=%s vni=%d tun_src=%s tun_dst=%s", k.TunKind, k.VNI, AddrFrom16(k.TunSrc), AddrFrom16(k.TunDst))
	}
	s += fmt.Sprintf(" eth_src=%s eth_dst=%s eth_type=%#04x", k.EthSrc, k.EthDst, k.EthType)
	if k.VLAN&VLANPresent != 0 {
		s += fmt.Sprintf(" vlan=%d", k.VLAN&0x0fff)
	}
	if k.IsIP() {
		s += fmt.Sprintf(" ip_src=%s ip_dst=%s proto=%d l4_src=%d l4_dst=%d", k.Src(), k.Dst(), k.Proto, k.L4Src, k.L4Dst)
	}
	return s
}
