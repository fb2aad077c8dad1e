package hal

import (
	"encoding/binary"
	"net/netip"
	"strings"
)

// MatchField is a bitmask of FlowKey fields, used in Capabilities to say what
// a NIC can match on and by Match.Fields to say what a rule uses.
type MatchField uint32

const (
	MatchInPort MatchField = 1 << iota
	MatchEthSrc
	MatchEthDst
	MatchEthType
	MatchVLAN
	MatchIPv4Src
	MatchIPv4Dst
	MatchIPv6Src
	MatchIPv6Dst
	MatchIPProto
	MatchL4Src
	MatchL4Dst
	MatchVNI
	MatchTunSrc
	MatchTunDst
	MatchTunKind
	matchFieldEnd
)

// MatchAll is every match field.
const MatchAll = matchFieldEnd - 1

var matchFieldNames = [...]string{
	"in_port", "eth_src", "eth_dst", "eth_type", "vlan", "ipv4_src", "ipv4_dst",
	"ipv6_src", "ipv6_dst", "ip_proto", "l4_src", "l4_dst", "vni", "tun_src", "tun_dst", "tun_kind",
}

// String lists the fields separated by '|'.
func (f MatchField) String() string {
	if f == 0 {
		return "none"
	}
	var parts []string
	for i, n := range matchFieldNames {
		if f&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	return strings.Join(parts, "|")
}

// Match is a FlowKey and a mask of the same shape: a packet matches when
// (key & Mask) == (Key & Mask). A zero mask field is a wildcard. Build one
// with the setters, which also set the prerequisites (an IPv4 address match
// sets EthType 0x0800, a port match needs Proto), as Open vSwitch does.
type Match struct {
	Key  FlowKey
	Mask FlowKey
}

var ones16 = [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// InPort matches the port the frame arrived on.
func (m *Match) InPort(p PortID) *Match {
	m.Key.InPort, m.Mask.InPort = p, ^PortID(0)
	return m
}

// EthSrc matches the (inner) source MAC exactly.
func (m *Match) EthSrc(a MAC) *Match {
	m.Key.EthSrc, m.Mask.EthSrc = a, MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	return m
}

// EthDst matches the (inner) destination MAC exactly.
func (m *Match) EthDst(a MAC) *Match {
	m.Key.EthDst, m.Mask.EthDst = a, MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	return m
}

// EthType matches the (inner) EtherType.
func (m *Match) EthType(t uint16) *Match {
	m.Key.EthType, m.Mask.EthType = t, 0xffff
	return m
}

// VLAN matches an 802.1Q tag with the given VLAN ID.
func (m *Match) VLAN(vid uint16) *Match {
	m.Key.VLAN, m.Mask.VLAN = VLANPresent|vid&0x0fff, VLANPresent|0x0fff
	return m
}

// NoVLAN matches frames without an 802.1Q tag.
func (m *Match) NoVLAN() *Match {
	m.Key.VLAN, m.Mask.VLAN = 0, VLANPresent
	return m
}

func (m *Match) family(a netip.Addr) {
	if a.Is4() {
		m.EthType(EtherTypeIPv4)
	} else {
		m.EthType(EtherTypeIPv6)
	}
}

func prefixMask(p netip.Prefix) [16]byte {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	var mk [16]byte
	for i := 0; i < 16; i++ {
		switch {
		case bits >= 8:
			mk[i] = 0xff
			bits -= 8
		case bits > 0:
			mk[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return mk
}

func maskAddr(a, mk [16]byte) [16]byte {
	for i := range a {
		a[i] &= mk[i]
	}
	return a
}

// IPSrc matches the (inner) source address against a prefix; a /32 or /128
// is an exact match. It sets the EtherType of the prefix's family.
func (m *Match) IPSrc(p netip.Prefix) *Match {
	m.family(p.Addr())
	m.Mask.IPSrc = prefixMask(p)
	m.Key.IPSrc = maskAddr(p.Addr().As16(), m.Mask.IPSrc)
	return m
}

// IPDst matches the (inner) destination address against a prefix.
func (m *Match) IPDst(p netip.Prefix) *Match {
	m.family(p.Addr())
	m.Mask.IPDst = prefixMask(p)
	m.Key.IPDst = maskAddr(p.Addr().As16(), m.Mask.IPDst)
	return m
}

// Proto matches the IP protocol.
func (m *Match) Proto(p uint8) *Match {
	m.Key.Proto, m.Mask.Proto = p, 0xff
	return m
}

// L4Src matches the TCP/UDP source port (ICMP type).
func (m *Match) L4Src(port uint16) *Match {
	m.Key.L4Src, m.Mask.L4Src = port, 0xffff
	return m
}

// L4Dst matches the TCP/UDP destination port (ICMP code).
func (m *Match) L4Dst(port uint16) *Match {
	m.Key.L4Dst, m.Mask.L4Dst = port, 0xffff
	return m
}

// Tunnel matches frames that arrived with the given encapsulation and VNI.
func (m *Match) Tunnel(kind EncapKind, vni uint32) *Match {
	m.Key.TunKind, m.Mask.TunKind = kind, 0xff
	m.Key.VNI, m.Mask.VNI = vni, 0x00ffffff
	return m
}

// TunSrc matches the outer source address exactly.
func (m *Match) TunSrc(a netip.Addr) *Match {
	m.Key.TunSrc, m.Mask.TunSrc = a.As16(), ones16
	return m
}

// TunDst matches the outer destination address exactly.
func (m *Match) TunDst(a netip.Addr) *Match {
	m.Key.TunDst, m.Mask.TunDst = a.As16(), ones16
	return m
}

// Exact returns a match on every field of k (the exact-match flow that a
// vswitch installs for one connection). Fields that are zero in k are still
// matched, as zero, except the tunnel fields when k was not tunnelled and the
// IP and transport fields when k is not an IP packet.
func Exact(k *FlowKey) Match {
	var m Match
	m.Key = *k
	m.Mask = FlowKey{
		InPort: ^PortID(0),
		EthSrc: MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EthDst: MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		EthType: 0xffff, VLAN: 0xffff, TunKind: 0xff,
	}
	// IP and transport fields only exist for IP packets; matching them on,
	// say, an ARP key would make a rule CheckShape refuses.
	if k.IsIP() {
		m.Mask.IPSrc, m.Mask.IPDst, m.Mask.Proto = ones16, ones16, 0xff
		m.Mask.L4Src, m.Mask.L4Dst = 0xffff, 0xffff
	}
	if k.TunKind != EncapNone {
		m.Mask.VNI, m.Mask.TunSrc, m.Mask.TunDst = 0x00ffffff, ones16, ones16
	}
	m.Normalize()
	return m
}

// Normalize clears the key bits that the mask does not cover, so that two
// matches that select the same packets compare equal. It works a machine
// word at a time and allocates nothing: a vswitch calls it for every flow it
// offloads.
func (m *Match) Normalize() {
	k, mk := &m.Key, &m.Mask
	and16(&k.TunSrc, &mk.TunSrc)
	and16(&k.TunDst, &mk.TunDst)
	and16(&k.IPSrc, &mk.IPSrc)
	and16(&k.IPDst, &mk.IPDst)
	and6(&k.EthSrc, &mk.EthSrc)
	and6(&k.EthDst, &mk.EthDst)
	k.InPort &= mk.InPort
	k.VNI &= mk.VNI
	k.EthType &= mk.EthType
	k.VLAN &= mk.VLAN
	k.L4Src &= mk.L4Src
	k.L4Dst &= mk.L4Dst
	k.Proto &= mk.Proto
	k.TunKind &= mk.TunKind
}

// and16 clears the bits of a that mk does not cover, 8 bytes at a time.
func and16(a, mk *[16]byte) {
	le := binary.LittleEndian
	le.PutUint64(a[0:8], le.Uint64(a[0:8])&le.Uint64(mk[0:8]))
	le.PutUint64(a[8:16], le.Uint64(a[8:16])&le.Uint64(mk[8:16]))
}

// and6 clears the bits of a MAC that mk does not cover.
func and6(a, mk *MAC) {
	le := binary.LittleEndian
	le.PutUint32(a[0:4], le.Uint32(a[0:4])&le.Uint32(mk[0:4]))
	le.PutUint16(a[4:6], le.Uint16(a[4:6])&le.Uint16(mk[4:6]))
}

// Matches reports whether a packet with key k is selected by m. It is the
// reference semantics every driver implements; it is not the fast path.
func (m *Match) Matches(k *FlowKey) bool {
	mk, mm := &m.Mask, &m.Key
	if k.InPort&mk.InPort != mm.InPort || k.VNI&mk.VNI != mm.VNI ||
		k.EthType&mk.EthType != mm.EthType || k.VLAN&mk.VLAN != mm.VLAN ||
		k.L4Src&mk.L4Src != mm.L4Src || k.L4Dst&mk.L4Dst != mm.L4Dst ||
		k.Proto&mk.Proto != mm.Proto || k.TunKind&mk.TunKind != mm.TunKind {
		return false
	}
	for i := 0; i < 6; i++ {
		if k.EthSrc[i]&mk.EthSrc[i] != mm.EthSrc[i] || k.EthDst[i]&mk.EthDst[i] != mm.EthDst[i] {
			return false
		}
	}
	for i := 0; i < 16; i++ {
		if k.IPSrc[i]&mk.IPSrc[i] != mm.IPSrc[i] || k.IPDst[i]&mk.IPDst[i] != mm.IPDst[i] ||
			k.TunSrc[i]&mk.TunSrc[i] != mm.TunSrc[i] || k.TunDst[i]&mk.TunDst[i] != mm.TunDst[i] {
			return false
		}
	}
	return true
}

func full16(b [16]byte) bool { return b == ones16 }

func fullFrom(b [16]byte, from int) bool {
	for i := from; i < 16; i++ {
		if b[i] != 0xff {
			return false
		}
	}
	return true
}

// nonzero16 reports whether any bit of b is set, 8 bytes at a time.
func nonzero16(b *[16]byte) bool {
	le := binary.LittleEndian
	return le.Uint64(b[0:8])|le.Uint64(b[8:16]) != 0
}

// Fields returns the fields m uses (a non-zero mask).
func (m *Match) Fields() MatchField {
	var f MatchField
	mk := &m.Mask
	v6 := m.Key.EthType == EtherTypeIPv6
	set := func(cond bool, bit MatchField) {
		if cond {
			f |= bit
		}
	}
	set(mk.InPort != 0, MatchInPort)
	set(!mk.EthSrc.IsZero(), MatchEthSrc)
	set(!mk.EthDst.IsZero(), MatchEthDst)
	set(mk.EthType != 0, MatchEthType)
	set(mk.VLAN != 0, MatchVLAN)
	set(nonzero16(&mk.IPSrc) && !v6, MatchIPv4Src)
	set(nonzero16(&mk.IPDst) && !v6, MatchIPv4Dst)
	set(nonzero16(&mk.IPSrc) && v6, MatchIPv6Src)
	set(nonzero16(&mk.IPDst) && v6, MatchIPv6Dst)
	set(mk.Proto != 0, MatchIPProto)
	set(mk.L4Src != 0, MatchL4Src)
	set(mk.L4Dst != 0, MatchL4Dst)
	set(mk.VNI != 0, MatchVNI)
	set(nonzero16(&mk.TunSrc), MatchTunSrc)
	set(nonzero16(&mk.TunDst), MatchTunDst)
	set(mk.TunKind != 0, MatchTunKind)
	return f
}

// PartialFields returns the fields m matches with a partial mask (a prefix
// shorter than the address, a port or MAC mask): those a NIC must support as
// masked matches, not only exact ones.
func (m *Match) PartialFields() MatchField {
	var f MatchField
	mk := &m.Mask
	v6 := m.Key.EthType == EtherTypeIPv6
	partialIP := func(b [16]byte) bool {
		if !nonzero16(&b) {
			return false
		}
		if v6 {
			return !full16(b)
		}
		return !fullFrom(b, 12)
	}
	if mk.InPort != 0 && mk.InPort != ^PortID(0) {
		f |= MatchInPort
	}
	if !mk.EthSrc.IsZero() && mk.EthSrc != (MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
		f |= MatchEthSrc
	}
	if !mk.EthDst.IsZero() && mk.EthDst != (MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
		f |= MatchEthDst
	}
	if partialIP(mk.IPSrc) {
		if v6 {
			f |= MatchIPv6Src
		} else {
			f |= MatchIPv4Src
		}
	}
	if partialIP(mk.IPDst) {
		if v6 {
			f |= MatchIPv6Dst
		} else {
			f |= MatchIPv4Dst
		}
	}
	if mk.L4Src != 0 && mk.L4Src != 0xffff {
		f |= MatchL4Src
	}
	if mk.L4Dst != 0 && mk.L4Dst != 0xffff {
		f |= MatchL4Dst
	}
	if nonzero16(&mk.TunSrc) && !full16(mk.TunSrc) && !fullFrom(mk.TunSrc, 12) {
		f |= MatchTunSrc
	}
	if nonzero16(&mk.TunDst) && !full16(mk.TunDst) && !fullFrom(mk.TunDst, 12) {
		f |= MatchTunDst
	}
	return f
}

// String prints the used fields as name=value[/mask] pairs.
func (m *Match) String() string {
	f := m.Fields()
	if f == 0 {
		return "any"
	}
	k := &m.Key
	var parts []string
	add := func(s string) { parts = append(parts, s) }
	if f&MatchInPort != 0 {
		add("in_port=" + itoa(uint64(k.InPort)))
	}
	if f&MatchTunKind != 0 {
		add("tun=" + k.TunKind.String())
	}
	if f&MatchVNI != 0 {
		add("vni=" + itoa(uint64(k.VNI)))
	}
	if f&MatchTunSrc != 0 {
		add("tun_src=" + AddrFrom16(k.TunSrc).String())
	}
	if f&MatchTunDst != 0 {
		add("tun_dst=" + AddrFrom16(k.TunDst).String())
	}
	if f&MatchEthSrc != 0 {
		add("eth_src=" + k.EthSrc.String())
	}
	if f&MatchEthDst != 0 {
		add("eth_dst=" + k.EthDst.String())
	}
	if f&MatchEthType != 0 {
		add("eth_type=0x" + hex16(k.EthType))
	}
	if f&MatchVLAN != 0 {
		if k.VLAN&VLANPresent == 0 {
			add("vlan=none")
		} else {
			add("vlan=" + itoa(uint64(k.VLAN&0x0fff)))
		}
	}
	if f&(MatchIPv4Src|MatchIPv6Src) != 0 {
		add("ip_src=" + prefixString(k.IPSrc, m.Mask.IPSrc))
	}
	if f&(MatchIPv4Dst|MatchIPv6Dst) != 0 {
		add("ip_dst=" + prefixString(k.IPDst, m.Mask.IPDst))
	}
	if f&MatchIPProto != 0 {
		add("proto=" + itoa(uint64(k.Proto)))
	}
	if f&MatchL4Src != 0 {
		add("l4_src=" + itoa(uint64(k.L4Src)))
	}
	if f&MatchL4Dst != 0 {
		add("l4_dst=" + itoa(uint64(k.L4Dst)))
	}
	return strings.Join(parts, ",")
}

func prefixString(a, mk [16]byte) string {
	ones := 0
	for _, b := range mk {
		for i := 7; i >= 0; i-- {
			if b&(1<<i) != 0 {
				ones++
			}
		}
	}
	addr := AddrFrom16(a)
	if addr.Is4() {
		ones -= 96
	}
	if ones < 0 {
		ones = 0
	}
	return netip.PrefixFrom(addr, ones).String()
}
