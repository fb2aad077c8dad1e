package tcflower

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"

	"github.com/nicpath/nicpath/hal"
)

// device is a Linux interface the driver attached its block to: a port, or
// a flow-based tunnel device.
type device struct {
	ID      hal.PortID // 0 for tunnel devices
	Name    string
	Ifindex uint32
	Kind    hal.PortKind
	MAC     hal.MAC
	MTU     int
}

// layout is what compiling a rule needs to know about the opened device.
type layout struct {
	ports   map[hal.PortID]*device
	tunnels map[hal.EncapKind]*device
	// outer6 are the tunnel kinds whose device takes outer IPv6 headers:
	// a flow-based device opens a UDP/IPv6 socket beside its IPv4 one only
	// where the kernel has IPv6, and without it drops what tunnel_key
	// addressed over IPv6 and never receives it. Open finds the socket.
	outer6 hal.EncapSet
	// hostChain is the exception path's chain ToHost rules jump to; 0
	// when there is no exception path.
	hostChain uint32
	// nat: the kernel has act_nat, which rewrites an IPv4 address it
	// knows the old value of and fixes the checksums the address is in
	// whatever the frame's checksum state (see compileActions).
	nat bool
	// numVLANs: flower takes TCA_FLOWER_KEY_NUM_OF_VLANS (Linux 5.19 on;
	// Open checks that a filter with it dumps back with it), which is how
	// a rule says "no VLAN tag": flower's EtherType key is the one after
	// the tags, so without it a tagged frame matches too.
	numVLANs bool
}

// protoSCTP is SCTP's IP protocol number: hal/wire reads its ports.
const protoSCTP = 132

// maxRulePriority is the highest hal priority that maps onto a tc priority:
// tc priorities are 16 bits, lower wins, 0 means "pick one", and 65535 is
// kept for the chain tails that pass a miss on to the next scope.
const maxRulePriority = 65533

func tcPrio(p uint16) uint16 { return uint16(maxRulePriority + 1 - uint32(p)) }

// compiled is a rule translated to flower: keys and actions. Chain, prio and
// handle are filled in when it is placed.
type compiled struct {
	keys    []byte
	actions []tcAction
	// hostAct is the index in actions of a ToHost rule's reason-tag push,
	// which Apply fills in with the rule's tag value; -1 for other rules.
	hostAct int
	// ttl is set for a rule with DecTTL: its filter jumps to a chain of its
	// own that hands frames whose TTL runs out to the host before the
	// actions run (see ttlFilters).
	ttl bool
}

func unsupported(field, format string, args ...any) error {
	return hal.Unsupported(driverName, field, format, args...)
}

// compileRule translates r. It assumes hal.CheckRule passed.
func compileRule(l *layout, r *hal.Rule) (*compiled, error) {
	if r.Priority > maxRulePriority {
		return nil, unsupported("priority", "tc priorities leave %d usable values; %d is above the highest, %d", maxRulePriority+1, r.Priority, maxRulePriority)
	}
	decaps := len(r.Actions) > 0 && r.Actions[0].Kind == hal.ActionDecap
	// A rule that only drops (and counts) a tunnelled frame does not care
	// whether the outer headers are still there: it may match them on the
	// tunnel device as a decap rule does.
	dropOnly := len(r.Actions) > 0
	for _, a := range r.Actions {
		if a.Kind != hal.ActionDrop && a.Kind != hal.ActionCount {
			dropOnly = false
		}
	}
	keys, err := compileMatch(l, &r.Match, decaps, dropOnly)
	if err != nil {
		return nil, err
	}
	acts, hostAct, err := compileActions(l, r)
	if err != nil {
		return nil, err
	}
	c := &compiled{keys: keys, actions: acts, hostAct: hostAct}
	for i := range r.Actions {
		if r.Actions[i].Kind == hal.ActionDecTTL {
			if l.hostChain == 0 {
				return nil, unsupported(fmt.Sprintf("actions[%d] dec_ttl", i), "a frame whose TTL runs out goes to the host, and the NIC has no exception path")
			}
			c.ttl = true
		}
	}
	return c, nil
}

// compileMatch translates m. A match on tunnel fields needs a rule that
// decaps, or one that only drops (dropOnly): tc sees the frame after the
// kernel removed the outer headers.
func compileMatch(l *layout, m *hal.Match, decaps, dropOnly bool) ([]byte, error) {
	k, mk := &m.Key, &m.Mask
	e := netlink.NewAttributeEncoder()
	tunnelled := mk.TunKind != 0 && k.TunKind != hal.EncapNone
	if mk.TunKind != 0 && !tunnelled {
		// "Not tunnelled": a port's ingress never carries tunnel
		// metadata (a frame the kernel received from the wire or from a
		// veth has none; only a tunnel device's ingress does), so a rule
		// on a port's frames needs no key for it. Without an in-port
		// match the rule would also take frames decapsulated on the
		// tunnel devices, which share the block, and flower has no key
		// for the absence of tunnel metadata.
		if mk.VNI != 0 || mk.TunSrc != ([16]byte{}) || mk.TunDst != ([16]byte{}) {
			return nil, unsupported("match.tunnel", "a rule for frames that did not arrive tunnelled matches no VNI nor outer address")
		}
		if mk.InPort == 0 {
			return nil, unsupported("match.tun_kind", "\"not tunnelled\" is what every port's ingress carries, but the tunnel devices share the block and flower has no key for the absence of tunnel metadata: the rule must match an in-port")
		}
		if decaps {
			return nil, unsupported("actions[0] decap", "the rule matches frames that did not arrive tunnelled")
		}
	}
	if tunnelled && !decaps && !dropOnly {
		return nil, unsupported("match.tunnel", "the kernel removes the outer headers before tc sees a tunnelled frame: a rule matching tunnel fields must decap, or only drop")
	}
	if tunnelled {
		dev := l.tunnels[k.TunKind]
		if k.TunKind == hal.EncapNVGRE {
			return nil, unsupported("match.tun_kind", "no NVGRE decap: flower's enc_key_id has no mask, so a rule would match one of the 256 FlowIDs a sender spreads a VSID's flows over")
		}
		if dev == nil {
			return nil, unsupported("match.tun_kind", "no %s device was given to the driver (Config.Tunnels)", k.TunKind)
		}
		// A decapsulated frame reaches the block on the tunnel device's
		// ingress with the outer headers as metadata, not on the uplink.
		if mk.InPort != 0 {
			p := l.ports[k.InPort]
			if p == nil || p.Kind != hal.PortUplink {
				return nil, unsupported("match.in_port", "a tunnelled frame arrives through an uplink; port %d is not one", k.InPort)
			}
		}
		e.String(flowerIndev, dev.Name)
		if mk.VNI != 0 {
			if mk.VNI != 0x00ffffff {
				return nil, unsupported("match.vni", "the VNI is matched exactly or not at all")
			}
			e.Bytes(flowerEncKeyID, be32(k.VNI))
		}
		for _, a := range []struct {
			name      string
			key, mask [16]byte
		}{{"match.tun_src", k.TunSrc, mk.TunSrc}, {"match.tun_dst", k.TunDst, mk.TunDst}} {
			if a.mask != ([16]byte{}) && !hal.AddrFrom16(a.key).Is4() && !l.outer6.Has(k.TunKind) {
				return nil, unsupported(a.name, "%s has no UDP/IPv6 socket: no frame with an outer IPv6 header reaches it", dev.Name)
			}
		}
		if err := encAddr(e, k.TunSrc, mk.TunSrc, flowerEncIPv4Src, flowerEncIPv4SrcM, flowerEncIPv6Src, flowerEncIPv6SrcM); err != nil {
			return nil, err
		}
		if err := encAddr(e, k.TunDst, mk.TunDst, flowerEncIPv4Dst, flowerEncIPv4DstM, flowerEncIPv6Dst, flowerEncIPv6DstM); err != nil {
			return nil, err
		}
	} else if mk.InPort != 0 {
		if mk.InPort != ^hal.PortID(0) {
			return nil, unsupported("match.in_port", "the in-port is matched exactly or not at all")
		}
		p := l.ports[k.InPort]
		if p == nil {
			return nil, fmt.Errorf("match.in_port: port %d: %w", k.InPort, hal.ErrNotFound)
		}
		e.String(flowerIndev, p.Name)
	}
	if !mk.EthDst.IsZero() {
		e.Bytes(flowerEthDst, k.EthDst[:])
		e.Bytes(flowerEthDstMask, mk.EthDst[:])
	}
	if !mk.EthSrc.IsZero() {
		e.Bytes(flowerEthSrc, k.EthSrc[:])
		e.Bytes(flowerEthSrcMask, mk.EthSrc[:])
	}
	// FlowKey.VLAN holds the tag bit and the VID (13 bits): mask bits
	// above them select nothing (a parsed key has them clear).
	vm := mk.VLAN & (hal.VLANPresent | 0x0fff)
	if k.VLAN&^(hal.VLANPresent|0x0fff)&mk.VLAN != 0 {
		return nil, &hal.RuleError{Field: "match.vlan", Reason: "bits above the VLAN ID and the tag bit are never set in a frame's key"}
	}
	switch {
	case vm == 0:
		if mk.EthType != 0 {
			if mk.EthType != 0xffff {
				return nil, unsupported("match.eth_type", "the EtherType is matched exactly or not at all")
			}
			e.Bytes(flowerEthType, be16(k.EthType))
		}
	case vm&hal.VLANPresent == 0:
		return nil, unsupported("match.vlan", "a VLAN ID is matched together with the tag's presence")
	case k.VLAN&hal.VLANPresent == 0:
		// No tag: flower's EtherType is the one after any tags, so the
		// number of tags says it.
		if !l.numVLANs {
			return nil, unsupported("match.vlan", "the absence of a tag needs flower's num_of_vlans key, which this kernel lacks (Linux 5.19 on): its EtherType key is the one after any tags")
		}
		e.Uint8(flowerNumOfVLANs, 0)
		if mk.EthType != 0 {
			if mk.EthType != 0xffff {
				return nil, unsupported("match.eth_type", "the EtherType is matched exactly or not at all")
			}
			e.Bytes(flowerEthType, be16(k.EthType))
		}
	default:
		if vm&0x0fff != 0 && vm&0x0fff != 0x0fff {
			return nil, unsupported("match.vlan", "the VLAN ID is matched exactly or not at all")
		}
		e.Bytes(flowerEthType, be16(hal.EtherTypeVLAN))
		if vm&0x0fff != 0 {
			e.Uint16(flowerVLANID, k.VLAN&0x0fff)
		}
		if mk.EthType != 0 {
			if mk.EthType != 0xffff {
				return nil, unsupported("match.eth_type", "the EtherType is matched exactly or not at all")
			}
			e.Bytes(flowerVLANEthType, be16(k.EthType))
		}
	}
	v6 := k.EthType == hal.EtherTypeIPv6
	if mk.Proto != 0 {
		if mk.Proto != 0xff {
			return nil, unsupported("match.ip_proto", "the IP protocol is matched exactly or not at all")
		}
		e.Uint8(flowerIPProto, k.Proto)
	}
	if v6 {
		ipAttr(e, k.IPSrc, mk.IPSrc, true, flowerIPv6Src, flowerIPv6SrcMask)
		ipAttr(e, k.IPDst, mk.IPDst, true, flowerIPv6Dst, flowerIPv6DstMask)
	} else {
		ipAttr(e, k.IPSrc, mk.IPSrc, false, flowerIPv4Src, flowerIPv4SrcMask)
		ipAttr(e, k.IPDst, mk.IPDst, false, flowerIPv4Dst, flowerIPv4DstMask)
	}
	if mk.L4Src != 0 || mk.L4Dst != 0 {
		switch k.Proto {
		case hal.ProtoTCP:
			portAttr(e, k.L4Src, mk.L4Src, flowerTCPSrc, flowerTCPSrcMask)
			portAttr(e, k.L4Dst, mk.L4Dst, flowerTCPDst, flowerTCPDstMask)
		case hal.ProtoUDP:
			portAttr(e, k.L4Src, mk.L4Src, flowerUDPSrc, flowerUDPSrcMask)
			portAttr(e, k.L4Dst, mk.L4Dst, flowerUDPDst, flowerUDPDstMask)
		case hal.ProtoICMP:
			icmpAttr(e, k.L4Src, mk.L4Src, flowerICMPv4Type, flowerICMPv4TypeM)
			icmpAttr(e, k.L4Dst, mk.L4Dst, flowerICMPv4Code, flowerICMPv4CodeM)
		case hal.ProtoICMPv6:
			icmpAttr(e, k.L4Src, mk.L4Src, flowerICMPv6Type, flowerICMPv6TypeM)
			icmpAttr(e, k.L4Dst, mk.L4Dst, flowerICMPv6Code, flowerICMPv6CodeM)
		default:
			// A frame's key has no ports for other protocols but SCTP
			// (hal/wire leaves them 0): with the protocol pinned, a match
			// of both as 0 (an exact-match flow of, say, IGMP) takes every
			// such frame, and needs no key.
			if mk.Proto == 0xff && k.Proto != protoSCTP && k.L4Src&mk.L4Src == 0 && k.L4Dst&mk.L4Dst == 0 {
				break
			}
			return nil, unsupported("match.l4", "flower matches ports of TCP and UDP and type/code of ICMP, not of protocol %d", k.Proto)
		}
	}
	return e.Encode()
}

func ipAttr(e *netlink.AttributeEncoder, key, mask [16]byte, v6 bool, ka, ma uint16) {
	if mask == ([16]byte{}) {
		return
	}
	if v6 {
		e.Bytes(ka, key[:])
		e.Bytes(ma, mask[:])
		return
	}
	e.Bytes(ka, key[12:])
	e.Bytes(ma, mask[12:])
}

func encAddr(e *netlink.AttributeEncoder, key, mask [16]byte, k4, m4, k6, m6 uint16) error {
	if mask == ([16]byte{}) {
		return nil
	}
	a := hal.AddrFrom16(key)
	if a.Is4() {
		e.Bytes(k4, key[12:])
		e.Bytes(m4, mask[12:])
	} else {
		e.Bytes(k6, key[:])
		e.Bytes(m6, mask[:])
	}
	return nil
}

func portAttr(e *netlink.AttributeEncoder, v, m uint16, ka, ma uint16) {
	if m == 0 {
		return
	}
	e.Bytes(ka, be16(v))
	e.Bytes(ma, be16(m))
}

func icmpAttr(e *netlink.AttributeEncoder, v, m uint16, ka, ma uint16) {
	if m == 0 {
		return
	}
	e.Uint8(ka, uint8(v))
	e.Uint8(ma, uint8(m))
}

// compileActions translates the action list. Consecutive header rewrites
// become one pedit action (followed by csum when they touch IP or L4 fields,
// since pedit does not fix checksums).
func compileActions(l *layout, r *hal.Rule) ([]tcAction, int, error) {
	var (
		out      []tcAction
		keys     []peditKey
		nats     []tcAction
		csum     uint32
		encapDev *device
		hostAct  = -1
	)
	k, mk := &r.Match.Key, &r.Match.Mask
	v6 := k.EthType == hal.EtherTypeIPv6
	// The IPv4 addresses the frame is known to carry, as the rule's match
	// pins them and its rewrites change them; invalid when unknown.
	var curSrc, curDst netip.Addr
	if !v6 && k.EthType == hal.EtherTypeIPv4 && mk.EthType == 0xffff {
		if full4(mk.IPSrc) {
			curSrc = hal.AddrFrom16(k.IPSrc)
		}
		if full4(mk.IPDst) {
			curDst = hal.AddrFrom16(k.IPDst)
		}
	}
	flush := func() {
		out = append(out, nats...)
		nats = nil
		if len(keys) > 0 {
			out = append(out, peditAction(keys))
			keys = nil
		}
		if csum != 0 {
			out = append(out, csumAction(csum))
			csum = 0
		}
	}
	l4csum := func() uint32 {
		if k.Proto == hal.ProtoTCP {
			return csumFlagTCP
		}
		return csumFlagUDP
	}
	for i := range r.Actions {
		a := &r.Actions[i]
		field := fmt.Sprintf("actions[%d] %s", i, a.Kind)
		switch a.Kind {
		case hal.ActionDecap:
			out = append(out, tunnelKeyUnset())
		case hal.ActionSetEthDst:
			keys = append(keys, peditBytes(pedItHTypeEth, 0, a.MAC[:])...)
		case hal.ActionSetEthSrc:
			keys = append(keys, peditBytes(pedItHTypeEth, 6, a.MAC[:])...)
		case hal.ActionSetIPSrc, hal.ActionSetIPDst:
			cur := &curSrc
			if a.Kind == hal.ActionSetIPDst {
				cur = &curDst
			}
			if l.nat && !v6 && cur.IsValid() {
				// act_nat rewrites the address and fixes the IPv4 header
				// checksum and the TCP/UDP/ICMP one, also in a frame whose
				// sender left the checksum to the device (the pseudo-
				// header sum it holds follows the address), where pedit
				// and csum cannot: csum leaves a TSO/GSO frame alone, and
				// the device would complete its checksum for the old
				// address.
				nats = append(nats, natAction(*cur, a.Addr, a.Kind == hal.ActionSetIPSrc))
				*cur = a.Addr
				break
			}
			*cur = a.Addr
			off := 12
			if a.Kind == hal.ActionSetIPDst {
				off = 16
			}
			if v6 {
				off = 8
				if a.Kind == hal.ActionSetIPDst {
					off = 24
				}
				b := a.Addr.As16()
				keys = append(keys, peditBytes(pedItHTypeIP6, off, b[:])...)
			} else {
				b := a.Addr.As4()
				keys = append(keys, peditBytes(pedItHTypeIP4, off, b[:])...)
				csum |= csumFlagIPv4Hdr
			}
			// The TCP/UDP/ICMPv6 pseudo-header covers the addresses: let
			// csum fix whichever of them the packet carries (it leaves
			// the others alone), whether or not the rule matched on the
			// protocol.
			csum |= csumFlagTCP | csumFlagUDP | csumFlagICMP
		case hal.ActionDecTTL:
			// pedit's add: ttl + 0xff with the carry lost is ttl - 1, as
			// iproute2's "munge ip ttl add 0xff".
			if v6 {
				keys = append(keys, peditKey{HType: pedItHTypeIP6, Off: 4, Mask: [4]byte{0xff, 0xff, 0xff, 0}, Val: [4]byte{0, 0, 0, 0xff}, Cmd: pedItCmdAdd})
			} else {
				keys = append(keys, peditKey{HType: pedItHTypeIP4, Off: 8, Mask: [4]byte{0, 0xff, 0xff, 0xff}, Val: [4]byte{0xff, 0, 0, 0}, Cmd: pedItCmdAdd})
				csum |= csumFlagIPv4Hdr
			}
		case hal.ActionSetL4Src, hal.ActionSetL4Dst:
			// Linux 6.1's pedit takes "tcp"/"udp" offsets from the transport
			// header, which is not set yet on ingress; offsets from the
			// network header work, for headers without IPv4 options or IPv6
			// extension headers (see the package doc).
			off := 20
			htype := uint16(pedItHTypeIP4)
			if v6 {
				off, htype = 40, pedItHTypeIP6
			}
			if a.Kind == hal.ActionSetL4Dst {
				off += 2
			}
			keys = append(keys, peditBytes(htype, off, be16(a.L4Port))...)
			csum |= l4csum()
		case hal.ActionPushVLAN:
			flush()
			out = append(out, vlanPush(a.VLAN))
		case hal.ActionPopVLAN:
			flush()
			out = append(out, vlanPop())
		case hal.ActionEncap:
			flush()
			en := &a.Encap
			dev := l.tunnels[en.Kind]
			if dev == nil {
				return nil, -1, unsupported(field+" "+en.Kind.String(), "no %s device was given to the driver (Config.Tunnels)", en.Kind)
			}
			if en.Kind == hal.EncapNVGRE {
				if !en.Src.Is4() || !en.Dst.Is4() {
					return nil, -1, unsupported(field+" nvgre", "the flow-based gretap device %s sends over IPv4 only", dev.Name)
				}
				if len(en.GeneveOptions) > 0 {
					return nil, -1, unsupported(field, "options are Geneve's")
				}
				ttl := en.TTL
				if ttl == 0 {
					ttl = 64
				}
				out = append(out, tunnelKeySetNVGRE(en.Src, en.Dst, en.VNI<<8|uint32(en.FlowID), ttl))
				encapDev = dev
				break
			}
			if en.Src.Is6() && !l.outer6.Has(en.Kind) {
				return nil, -1, unsupported(field+" "+en.Kind.String(), "%s has no UDP/IPv6 socket: the kernel drops a frame tunnel_key addresses over IPv6", dev.Name)
			}
			if len(en.GeneveOptions) > 0 && en.Kind != hal.EncapGeneve {
				return nil, -1, unsupported(field, "options are Geneve's")
			}
			opts, err := parseGeneveOptions(en.GeneveOptions)
			if err != nil {
				return nil, -1, fmt.Errorf("%s: %w", field, &hal.RuleError{Field: field, Reason: err.Error()})
			}
			port := en.DstPort
			if port == 0 {
				port = hal.PortVXLAN
				if en.Kind == hal.EncapGeneve {
					port = hal.PortGeneve
				}
			}
			ttl := en.TTL
			if ttl == 0 {
				ttl = 64
			}
			out = append(out, tunnelKeySet(en.Src, en.Dst, en.VNI, port, ttl, opts))
			encapDev = dev
		case hal.ActionCount:
			// Every filter action keeps counters; nothing to add.
		case hal.ActionOutput:
			flush()
			if encapDev != nil {
				p := l.ports[a.OutPort]
				if p == nil {
					return nil, -1, fmt.Errorf("%s: port %d: %w", field, a.OutPort, hal.ErrNotFound)
				}
				if p.Kind != hal.PortUplink {
					return nil, -1, unsupported(field, "an encapsulated frame leaves through the %s device and the kernel's route; port %d is not an uplink", encapDev.Name, a.OutPort)
				}
				out = append(out, mirredRedirect(encapDev.Ifindex))
				break
			}
			p := l.ports[a.OutPort]
			if p == nil {
				return nil, -1, fmt.Errorf("%s: port %d: %w", field, a.OutPort, hal.ErrNotFound)
			}
			out = append(out, mirredRedirect(p.Ifindex))
		case hal.ActionDrop:
			flush()
			out = append(out, gactAction(tcActShot))
		case hal.ActionToHost:
			flush()
			switch {
			case l.hostChain == 0:
				return nil, -1, unsupported(field, "the NIC has no exception path")
			case r.Match.Mask.TunKind != 0 && r.Match.Key.TunKind != hal.EncapNone:
				return nil, -1, unsupported(field, "a tunnelled frame reaches tc after the kernel removed its outer headers: the host would get neither the frame as it arrived nor its VNI")
			case encapDev != nil:
				return nil, -1, unsupported(field, "an encapsulation is written by the tunnel device after tc: the host would not get the encapsulated frame")
			}
			// The reason tag (filled in by Apply), then the port tag and
			// the channel in hostChain.
			hostAct = len(out)
			out = append(out, vlanPush(0), gotoChain(l.hostChain))
		default:
			return nil, -1, unsupported(field, "tc-flower driver has no %s", a.Kind)
		}
	}
	flush()
	return out, hostAct, nil
}

// ruleCookie is the TCA_ACT_COOKIE the driver puts on a rule's first action,
// so that a dump names the rule without the driver's memory: the RuleID and
// the owner's Cookie, 8 bytes each, big endian.
func ruleCookie(id hal.RuleID, c hal.Cookie) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(id))
	binary.BigEndian.PutUint64(b[8:], uint64(c))
	return b
}

// full4 reports whether an address mask covers a whole IPv4 address.
func full4(m [16]byte) bool {
	return m[12] == 0xff && m[13] == 0xff && m[14] == 0xff && m[15] == 0xff
}
