package gateway

import (
	"encoding/binary"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// execute translates one frame of c on the host, as the connection's rule
// would on the NIC, and queues it for injection: a first packet, a packet
// that arrived before the rules landed, or any packet of a connection kept
// on the host path. frame is modified in place.
func (g *Gateway) execute(frame []byte, l *wire.Layout, c *conn, reverse bool) {
	acts := c.fwd
	if reverse {
		acts = c.rev
	}
	start, end := 0, l.End
	if l.End <= 0 || l.End > len(frame) {
		end = len(frame)
	}
	var out []byte
	var port hal.PortID
	for _, a := range acts {
		var err error
		switch a.Kind {
		case hal.ActionDecap:
			start, err = wire.Decap(frame, l)
		case hal.ActionSetEthSrc:
			wire.SetEthSrc(frame, l, a.MAC)
		case hal.ActionSetEthDst:
			wire.SetEthDst(frame, l, a.MAC)
		case hal.ActionSetIPSrc:
			err = wire.SetIPSrc(frame, l, hal.Addr16(a.Addr))
		case hal.ActionSetIPDst:
			err = wire.SetIPDst(frame, l, hal.Addr16(a.Addr))
		case hal.ActionSetL4Src:
			err = wire.SetL4Src(frame, l, a.L4Port)
		case hal.ActionSetL4Dst:
			err = wire.SetL4Dst(frame, l, a.L4Port)
		case hal.ActionDecTTL:
			var expired bool
			expired, err = wire.DecTTL(frame, l)
			if err == nil && expired {
				g.stats.Drops["ttl"]++
				return
			}
		case hal.ActionEncap:
			var t *wire.EncapTemplate
			t, err = wire.NewEncapTemplate(&a.Encap)
			if err == nil {
				if c.icmp && reverse {
					setEchoID(frame, l, c.inside.sport)
				}
				var k hal.FlowKey
				var il wire.Layout
				inner := frame[start:end]
				_ = wire.Parse(inner, 0, &k, &il)
				buf := make([]byte, t.Len()+len(inner))
				copy(buf[t.Len():], inner)
				var s int
				s, err = t.Push(buf, t.Len(), len(buf), wire.FlowHash(&k))
				out = buf[s:]
			}
		case hal.ActionCount:
		case hal.ActionOutput:
			port = a.OutPort
		}
		if err != nil {
			g.stats.Drops["host-path"]++
			return
		}
	}
	if out == nil {
		if c.icmp && !reverse {
			setEchoID(frame, l, c.outside.extPort)
		}
		out = append([]byte(nil), frame[start:end]...)
	}
	g.stats.HostPackets++
	g.inject(port, out)
}

// setEchoID rewrites an ICMP echo identifier, updating the checksum
// incrementally (RFC 1624); the identifier is not in ICMPv6's pseudo-header,
// so the same update holds for both.
func setEchoID(frame []byte, l *wire.Layout, id uint16) {
	if l.L4 < 0 || l.L4+8 > len(frame) {
		return
	}
	old := binary.BigEndian.Uint16(frame[l.L4+4:])
	binary.BigEndian.PutUint16(frame[l.L4+4:], id)
	c := binary.BigEndian.Uint16(frame[l.L4+2:])
	sum := uint32(^c) + uint32(^old) + uint32(id)
	sum = (sum & 0xffff) + sum>>16
	sum = (sum & 0xffff) + sum>>16
	binary.BigEndian.PutUint16(frame[l.L4+2:], ^uint16(sum))
}
