package gateway

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// ICMPError is an ICMP or ICMPv6 error message as ParseICMPError reads it:
// the error and the packet it quotes, whose first bytes (the IP header and
// at least the 8 bytes after it) name the connection the error is about.
type ICMPError struct {
	Type, Code uint8
	V6         bool // ICMPv6 quoting IPv6; otherwise ICMP quoting IPv4
	// Inner is the offset of the quoted IP header in the message,
	// InnerL4 of its transport header; the quote ends with the message.
	Inner, InnerL4 int
	Src, Dst       netip.Addr // the quoted packet's addresses
	Proto          uint8      // the quoted packet's protocol
	// SrcPort and DstPort are the quoted TCP or UDP ports; for a quoted
	// ICMP echo request or reply, SrcPort is its identifier.
	SrcPort, DstPort uint16
	// Echo: the quoted packet is an ICMP echo request (type 8, ICMPv6 128)
	// or reply (0, 129).
	Echo bool
}

// Why ParseICMPError refuses a message; the gateway counts each under its
// own drop reason.
var (
	// ErrNotICMPError: not an error message (an echo, a redirect, a
	// router advertisement…).
	ErrNotICMPError = errors.New("gateway: not an ICMP error message")
	// ErrICMPErrorShort: the quote ends before the IP header and the 8
	// bytes after it that every error carries (RFC 792, RFC 4443 §2.4(c)),
	// or the quoted header is not one.
	ErrICMPErrorShort = errors.New("gateway: ICMP error quotes no whole IP header and 8 bytes after it")
	// ErrICMPErrorFragment: the quoted packet is a non-first fragment: no
	// ports, so no connection can be found for it.
	ErrICMPErrorFragment = errors.New("gateway: ICMP error about a non-first fragment (no ports to find its connection by)")
	// ErrICMPErrorProto: the quoted packet is not TCP, UDP or ICMP echo
	// (or an IPv6 packet with extension headers before them).
	ErrICMPErrorProto = errors.New("gateway: ICMP error about a packet of no connection the gateway translates")
)

// icmpErrorType reports whether an ICMP (v6: ICMPv6) type is an error that
// quotes the packet it is about: destination unreachable (with
// fragmentation needed), time exceeded and parameter problem; for ICMPv6
// also packet too big.
func icmpErrorType(t uint8, v6 bool) bool {
	if v6 {
		return t >= 1 && t <= 4
	}
	return t == 3 || t == 11 || t == 12
}

// ParseICMPError reads an ICMP error message msg (from its type byte to the
// end of the IP payload), ICMPv6 when v6.
func ParseICMPError(msg []byte, v6 bool) (ICMPError, error) {
	var e ICMPError
	if len(msg) < 8 || !icmpErrorType(msg[0], v6) {
		return e, ErrNotICMPError
	}
	e.Type, e.Code, e.V6, e.Inner = msg[0], msg[1], v6, 8
	q := msg[8:]
	if v6 {
		if len(q) < 40+8 || q[0]>>4 != 6 {
			return e, ErrICMPErrorShort
		}
		e.Src = netip.AddrFrom16([16]byte(q[8:24]))
		e.Dst = netip.AddrFrom16([16]byte(q[24:40]))
		e.Proto, e.InnerL4 = q[6], e.Inner+40
	} else {
		if len(q) < 20 || q[0]>>4 != 4 {
			return e, ErrICMPErrorShort
		}
		ihl := int(q[0]&0xf) * 4
		if ihl < 20 || len(q) < ihl+8 {
			return e, ErrICMPErrorShort
		}
		if binary.BigEndian.Uint16(q[6:8])&0x1fff != 0 {
			return e, ErrICMPErrorFragment
		}
		e.Src = netip.AddrFrom4([4]byte(q[12:16]))
		e.Dst = netip.AddrFrom4([4]byte(q[16:20]))
		e.Proto, e.InnerL4 = q[9], e.Inner+ihl
	}
	l4 := msg[e.InnerL4:]
	switch {
	case e.Proto == hal.ProtoTCP || e.Proto == hal.ProtoUDP:
		e.SrcPort, e.DstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case !v6 && e.Proto == hal.ProtoICMP && (l4[0] == 8 || l4[0] == 0),
		v6 && e.Proto == hal.ProtoICMPv6 && (l4[0] == 128 || l4[0] == 129):
		e.SrcPort, e.Echo = binary.BigEndian.Uint16(l4[4:6]), true
	default:
		return e, ErrICMPErrorProto
	}
	return e, nil
}

// icmpErrorDrop names the drop reason of a refused error.
func icmpErrorDrop(err error) string {
	switch err {
	case ErrICMPErrorShort:
		return "icmp-error-short"
	case ErrICMPErrorFragment:
		return "icmp-error-fragment"
	case ErrICMPErrorProto:
		return "icmp-error-protocol"
	}
	return "no-connection"
}

// errorConn finds the connection an ICMP error from the external network
// is about: the quoted packet is one the gateway sent, from its (or a
// published) address and the connection's external port to the remote
// endpoint.
func (g *Gateway) errorConn(e *ICMPError) (*conn, bool) {
	if e.Echo {
		c, ok := g.byOut[outsideKey{local: e.Src, remote: e.Dst, extPort: e.SrcPort, proto: e.Proto}]
		return c, ok
	}
	c, ok := g.byOut[outsideKey{local: e.Src, remote: e.Dst, remotePort: e.DstPort, extPort: e.SrcPort, proto: e.Proto}]
	return c, ok
}

// icmpErrorFromExternal translates an ICMP error about a translated
// connection back toward its VM, as the VM's own packet would have drawn
// it: the error's destination becomes the VM's address, the quoted packet's
// source address and port (or echo identifier) the VM's, with the quoted IP
// header's checksum, the quoted transport checksum (when quoted) and the
// error's own checksum made right; then it is encapsulated toward the VM's
// host like the connection's answers. The error's source (the remote host,
// or a router on the way) and the MTU a "fragmentation needed" or "packet
// too big" announces are left as they are: the external path is the VM's
// path, without encapsulation.
func (g *Gateway) icmpErrorFromExternal(k *hal.FlowKey, l *wire.Layout, frame []byte, now int64) bool {
	v6 := k.Proto == hal.ProtoICMPv6
	if l.L4 < 0 || l.End > len(frame) || l.L4 >= l.End || !icmpErrorType(frame[l.L4], v6) {
		return false
	}
	msg := frame[l.L4:l.End]
	e, err := ParseICMPError(msg, v6)
	if err != nil {
		g.stats.Drops[icmpErrorDrop(err)]++
		return true
	}
	c, ok := g.errorConn(&e)
	if !ok || e.Src != k.Dst() {
		g.stats.Drops["icmp-error-no-connection"]++
		return true
	}
	c.seen = now
	out := append([]byte(nil), frame[:l.End]...)
	var ol wire.Layout
	var ok2 hal.FlowKey
	if err := wire.Parse(out, g.cfg.External, &ok2, &ol); err != nil {
		g.stats.Drops["host-path"]++
		return true
	}
	rewriteQuote(out[ol.L4:ol.End], &e, false, c.inside.src, c.inside.sport)
	// The error's destination: the gateway's address becomes the VM's.
	if err := wire.SetIPDst(out, &ol, c.inside.src.As16()); err != nil {
		g.stats.Drops["host-path"]++
		return true
	}
	// The message's own checksum, over everything rewritten (ICMPv6's
	// pseudo-header has the new destination).
	if live, err := finishError(out, &ol); err != nil || !live {
		g.stats.Drops["ttl"]++
		return true
	}
	wire.SetEthSrc(out, &ol, hal.MAC(g.st.RouterMAC()))
	wire.SetEthDst(out, &ol, c.vmMAC)
	t, err := wire.NewEncapTemplate(&hal.Encap{Kind: halEncap(c.inside.encapKind), VNI: c.inside.vni,
		Src: c.gwPA, Dst: c.hostPA, SrcMAC: g.uplinkMAC, DstMAC: g.nextHopMAC()})
	if err != nil {
		g.stats.Drops["host-path"]++
		return true
	}
	buf := make([]byte, t.Len()+len(out))
	copy(buf[t.Len():], out)
	s, err := t.Push(buf, t.Len(), len(buf), wire.FlowHash(&ok2))
	if err != nil {
		g.stats.Drops["host-path"]++
		return true
	}
	g.stats.ICMPErrors++
	g.inject(g.cfg.Uplink, buf[s:])
	return true
}

// rewriteQuote rewrites the quoted packet in error message m: its source
// address and port (echo identifier) when !dst, its destination address
// and port when dst. The quoted IPv4 header checksum is computed again and
// the quoted transport checksum updated when the quote reaches it; the
// message's own checksum is the caller's.
func rewriteQuote(m []byte, e *ICMPError, dst bool, addr netip.Addr, port uint16) {
	q := m[e.Inner:]
	l4 := m[e.InnerL4:]
	a := addr.As16()
	var oldAddr, newAddr []byte
	if e.V6 {
		f := q[8:24]
		if dst {
			f = q[24:40]
		}
		oldAddr, newAddr = append([]byte(nil), f...), a[:]
		copy(f, newAddr)
	} else {
		ihl := e.InnerL4 - e.Inner
		f := q[12:16]
		if dst {
			f = q[16:20]
		}
		oldAddr, newAddr = append([]byte(nil), f...), a[12:16]
		copy(f, newAddr)
		binary.BigEndian.PutUint16(q[10:12], 0)
		binary.BigEndian.PutUint16(q[10:12], wire.Checksum(q[:ihl], 0))
	}
	// Where the port is: TCP/UDP source or destination port, an echo's
	// identifier (either way: the identifier is both ends' "port").
	at := 0
	switch {
	case e.Echo:
		at = 4
	case dst:
		at = 2
	}
	var oldPort, newPort [2]byte
	copy(oldPort[:], l4[at:at+2])
	binary.BigEndian.PutUint16(newPort[:], port)
	// The quoted transport checksum, when the quote reaches it: TCP and
	// UDP cover the addresses (pseudo-header) and the ports, an echo its
	// identifier (and, for ICMPv6, the addresses).
	csum := -1
	switch {
	case e.Proto == hal.ProtoTCP:
		csum = 16
	case e.Proto == hal.ProtoUDP:
		csum = 6
	case e.Echo:
		csum = 2
	}
	covered := e.Proto != hal.ProtoICMP // ICMPv4 has no pseudo-header
	if csum >= 0 && len(l4) >= csum+2 {
		c16 := binary.BigEndian.Uint16(l4[csum:])
		if !(e.Proto == hal.ProtoUDP && c16 == 0 && !e.V6) {
			if covered {
				c16 = csumUpdate(c16, oldAddr, newAddr)
			}
			c16 = csumUpdate(c16, oldPort[:], newPort[:])
			if e.Proto == hal.ProtoUDP && c16 == 0 {
				c16 = 0xffff
			}
			binary.BigEndian.PutUint16(l4[csum:], c16)
		}
	}
	copy(l4[at:at+2], newPort[:])
}

// finishError decrements the TTL of the rewritten error in out (parsed as
// l) and computes its checksum again; false when the TTL ran out.
func finishError(out []byte, l *wire.Layout) (bool, error) {
	expired, err := wire.DecTTL(out, l)
	if err != nil || expired {
		return false, err
	}
	m := out[l.L4:l.End]
	binary.BigEndian.PutUint16(m[2:], 0)
	var init uint32
	if l.EthType == hal.EtherTypeIPv6 {
		ip := out[l.L3:]
		init = wire.PseudoHeaderSum(ip[8:24], ip[24:40], hal.ProtoICMPv6, len(m))
	}
	binary.BigEndian.PutUint16(m[2:], wire.Checksum(m, init))
	return true, nil
}

// icmpErrorFromTenant sends on an ICMP error a VM sends about a packet of
// a translated connection it received (a port unreachable about a
// datagram from the external host, a packet too big…): the error leaves
// from the connection's external address, the quoted packet's destination
// address and port become the external ones, as the remote host sent it.
// The policy judges the error as any tenant packet (the caller did); it
// must come from the connection's VM, on its host. It reports whether the
// frame was an error (handled or dropped).
func (g *Gateway) icmpErrorFromTenant(k *hal.FlowKey, l *wire.Layout, frame []byte, now int64, in policy.InPort) bool {
	v6 := k.Proto == hal.ProtoICMPv6
	if !(v6 || k.Proto == hal.ProtoICMP) || l.L4 < 0 || l.End > len(frame) || l.L4 >= l.End || !icmpErrorType(frame[l.L4], v6) {
		return false
	}
	e, err := ParseICMPError(frame[l.L4:l.End], v6)
	if err != nil {
		g.stats.Drops[icmpErrorDrop(err)]++
		return true
	}
	kind, _ := encapKind(k.TunKind)
	ik := insideKey{vni: k.VNI, encapKind: kind, outerSrcPA: in.OuterSrc, src: e.Dst, dst: e.Src, sport: e.DstPort,
		dport: e.SrcPort, proto: e.Proto}
	if e.Echo {
		ik.sport, ik.dport = e.SrcPort, 0
	}
	c, ok := g.conns[ik]
	if !ok || k.Src() != c.inside.src || k.Dst() != c.outside.remote {
		g.stats.Drops["icmp-error-no-connection"]++
		return true
	}
	if !g.cfg.Address.Contains(c.outside.remote) && !g.cfg.Router.IsValid() {
		g.stats.Drops["no-route"]++
		return true
	}
	start, err := wire.Decap(frame, l)
	if err != nil {
		g.stats.Drops["host-path"]++
		return true
	}
	out := append([]byte(nil), frame[start:l.End]...)
	var ok2 hal.FlowKey
	var ol wire.Layout
	if err := wire.Parse(out, g.cfg.External, &ok2, &ol); err != nil || ol.L4 < 0 {
		g.stats.Drops["host-path"]++
		return true
	}
	c.seen = now
	port := c.outside.extPort
	rewriteQuote(out[ol.L4:ol.End], &e, true, c.outside.local, port)
	if err := wire.SetIPSrc(out, &ol, c.outside.local.As16()); err != nil {
		g.stats.Drops["host-path"]++
		return true
	}
	if live, err := finishError(out, &ol); err != nil || !live {
		g.stats.Drops["ttl"]++
		return true
	}
	wire.SetEthSrc(out, &ol, g.extMAC)
	wire.SetEthDst(out, &ol, c.nhMAC)
	g.stats.ICMPErrors++
	g.inject(g.cfg.External, out)
	return true
}

// csumUpdate is RFC 1624's incremental update of checksum field c for
// covered bytes (an even number) changing from old to new.
func csumUpdate(c uint16, old, new []byte) uint16 {
	s := uint32(^c)
	for i := 0; i+1 < len(old); i += 2 {
		s += uint32(^binary.BigEndian.Uint16(old[i:])) & 0xffff
		s += uint32(binary.BigEndian.Uint16(new[i:]))
	}
	for s>>16 != 0 {
		s = (s & 0xffff) + s>>16
	}
	return ^uint16(s)
}
