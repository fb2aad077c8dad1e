package gateway

import (
	"encoding/binary"
	"net/netip"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// ICMPv6 neighbour discovery (RFC 4861) on the external port: the IPv6
// counterpart of ARP.
const (
	ndSolicit = 135 // neighbour solicitation
	ndAdvert  = 136 // neighbour advertisement

	ndOptSourceLL = 1 // source link-layer address option
	ndOptTargetLL = 2 // target link-layer address option

	naRouter    = 0x80
	naSolicited = 0x40
	naOverride  = 0x20
)

// ND is one neighbour solicitation or advertisement as ParseND reads it.
type ND struct {
	Type     uint8      // 135 solicitation, 136 advertisement
	Src, Dst netip.Addr // the IPv6 header's addresses
	Target   netip.Addr // the address solicited or advertised
	Flags    uint8      // an advertisement's R, S and O bits (0x80, 0x40, 0x20)
	// LL is the link-layer address option's MAC: the sender's (source
	// option) in a solicitation, the target's (target option) in an
	// advertisement; HasLL says whether the message had one.
	LL     hal.MAC
	HasLL  bool
	SrcMAC hal.MAC // the Ethernet source
}

// ParseND reads a neighbour solicitation or advertisement in an Ethernet
// frame (IPv6 without extension headers, as RFC 4861 messages are sent).
// It checks what RFC 4861 §7.1 asks a receiver to check: hop limit 255,
// code 0, a valid ICMPv6 checksum, length, a target that is not multicast,
// option lengths that are not zero, no source link-layer option in a
// solicitation from the unspecified address.
func ParseND(frame []byte) (ND, bool) {
	var nd ND
	if len(frame) < 14+40+24 || binary.BigEndian.Uint16(frame[12:]) != hal.EtherTypeIPv6 {
		return nd, false
	}
	ip := frame[14:]
	if ip[0]>>4 != 6 || ip[6] != hal.ProtoICMPv6 || ip[7] != 255 {
		return nd, false
	}
	plen := int(binary.BigEndian.Uint16(ip[4:]))
	if plen < 24 || 40+plen > len(ip) {
		return nd, false
	}
	m := ip[40 : 40+plen]
	nd.Type = m[0]
	if (nd.Type != ndSolicit && nd.Type != ndAdvert) || m[1] != 0 {
		return nd, false
	}
	if wire.Checksum(m, wire.PseudoHeaderSum(ip[8:24], ip[24:40], hal.ProtoICMPv6, plen)) != 0 {
		return nd, false
	}
	copy(nd.SrcMAC[:], frame[6:12])
	nd.Src = netip.AddrFrom16([16]byte(ip[8:24]))
	nd.Dst = netip.AddrFrom16([16]byte(ip[24:40]))
	nd.Target = netip.AddrFrom16([16]byte(m[8:24]))
	if nd.Type == ndAdvert {
		nd.Flags = m[4] & (naRouter | naSolicited | naOverride)
	}
	if nd.Target.IsMulticast() {
		return nd, false
	}
	want := uint8(ndOptSourceLL)
	if nd.Type == ndAdvert {
		want = ndOptTargetLL
	}
	for o := m[24:]; len(o) > 0; {
		if len(o) < 8 || o[1] == 0 || int(o[1])*8 > len(o) {
			return nd, false
		}
		n := int(o[1]) * 8
		if o[0] == want && n == 8 {
			copy(nd.LL[:], o[2:8])
			nd.HasLL = true
		}
		o = o[n:]
	}
	if nd.Type == ndSolicit && nd.Src.IsUnspecified() && (nd.HasLL || !isSolicitedNode(nd.Dst)) {
		return nd, false
	}
	return nd, true
}

func isSolicitedNode(a netip.Addr) bool {
	b := a.As16()
	return a.Is6() && b[0] == 0xff && b[1] == 0x02 && b[11] == 1 && b[12] == 0xff &&
		binary.BigEndian.Uint64(b[2:10]) == 0 && b[10] == 0
}

// solicitedNode is the solicited-node multicast address of a (RFC 4291
// §2.7.1) and its Ethernet multicast MAC (RFC 2464 §7).
func solicitedNode(a netip.Addr) (netip.Addr, hal.MAC) {
	t := a.As16()
	m := [16]byte{0: 0xff, 1: 0x02, 11: 1, 12: 0xff, 13: t[13], 14: t[14], 15: t[15]}
	return netip.AddrFrom16(m), hal.MAC{0x33, 0x33, 0xff, t[13], t[14], t[15]}
}

// BuildNS builds a neighbour solicitation for target from src (address
// srcIP), with a source link-layer option, to target's solicited-node
// multicast group.
func BuildNS(src hal.MAC, srcIP, target netip.Addr) []byte {
	dst, dmac := solicitedNode(target)
	return buildND(ndSolicit, 0, src, srcIP, dmac, dst, target, ndOptSourceLL)
}

// BuildNA builds a solicited neighbour advertisement of target (at MAC
// src) from srcIP to dstIP at MAC dst, with a target link-layer option and
// the override bit.
func BuildNA(src hal.MAC, srcIP netip.Addr, dst hal.MAC, dstIP, target netip.Addr) []byte {
	return buildND(ndAdvert, naSolicited|naOverride, src, srcIP, dst, dstIP, target, ndOptTargetLL)
}

func buildND(typ, flags uint8, src hal.MAC, srcIP netip.Addr, dst hal.MAC, dstIP, target netip.Addr, opt uint8) []byte {
	const plen = 24 + 8
	b := make([]byte, 14+40+plen)
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:], hal.EtherTypeIPv6)
	ip := b[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], plen)
	ip[6], ip[7] = hal.ProtoICMPv6, 255
	s, d, t := srcIP.As16(), dstIP.As16(), target.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	m := ip[40:]
	m[0] = typ
	m[4] = flags
	copy(m[8:24], t[:])
	m[24], m[25] = opt, 1
	copy(m[26:32], src[:])
	binary.BigEndian.PutUint16(m[2:], wire.Checksum(m, wire.PseudoHeaderSum(s[:], d[:], hal.ProtoICMPv6, plen)))
	return b
}

// isND reports whether an ICMPv6 frame's type is a solicitation or an
// advertisement (the flow key carries the ICMP type as L4Src).
func isND(k *hal.FlowKey) bool {
	return k.EthType == hal.EtherTypeIPv6 && k.Proto == hal.ProtoICMPv6 && (k.L4Src == ndSolicit || k.L4Src == ndAdvert)
}

// nd answers solicitations for the gateway's addresses and learns next
// hops from solicitations and advertisements on the external network, as
// arp does for IPv4.
func (g *Gateway) nd(frame []byte) {
	m, ok := ParseND(frame)
	if !ok {
		g.stats.Drops["nd"]++
		return
	}
	ours := g.cfg.Address.Addr()
	_, published := g.cfg.Publish[m.Target]
	mine := m.Target == ours || published
	// Who this message tells us about: a solicitation's sender, an
	// advertisement's target.
	who, mac := m.Src, m.LL
	if m.Type == ndAdvert {
		who = m.Target
		if !m.HasLL {
			mac = m.SrcMAC
		}
	}
	if m.HasLL || m.Type == ndAdvert {
		if g.onLink(who) && who != ours && !mac.IsZero() && mac[0]&1 == 0 {
			_, waiting := g.pending[who]
			_, known := g.neigh[who]
			if waiting || known || (m.Type == ndSolicit && mine) {
				g.learn(who, mac)
			}
		}
	}
	if m.Type == ndSolicit && mine && !m.Src.IsUnspecified() && m.HasLL {
		g.stats.NDReplies++
		g.inject(g.cfg.External, BuildNA(g.extMAC, m.Target, m.LL, m.Src, m.Target))
	} else if m.Type == ndSolicit && mine && !m.Src.IsUnspecified() {
		// A unicast solicitation (neighbour unreachability detection)
		// may leave the option out: answer to its Ethernet source.
		g.stats.NDReplies++
		g.inject(g.cfg.External, BuildNA(g.extMAC, m.Target, m.SrcMAC, m.Src, m.Target))
	}
	g.release(who)
}

// onLink says whether a is reached directly on the external network: in
// Address's prefix, or an IPv6 link-local address.
func (g *Gateway) onLink(a netip.Addr) bool {
	return g.cfg.Address.Contains(a) || a.Is6() && g.cfg.Address.Addr().Is6() && a.IsLinkLocalUnicast()
}

// release sends the frames held for next hop nh once its MAC is known.
func (g *Gateway) release(nh netip.Addr) {
	p, ok := g.pending[nh]
	if !ok {
		return
	}
	if _, known := g.neigh[nh]; !known {
		return
	}
	delete(g.pending, nh)
	now := g.cfg.Clock().UnixNano()
	for _, f := range p.frames {
		g.handle(g.cfg.Uplink, f, now)
	}
}
