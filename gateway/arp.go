package gateway

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// maxPending bounds the frames held for one unresolved next hop: enough for
// the first packets of a few connections, not a queue an attacker can grow;
// maxPendingHops bounds the next hops waiting at once (a tenant sending to
// every address of a large on-link network).
const (
	maxPending     = 8
	maxPendingHops = 256
	// neighborTimeout is how long frames wait for a next hop that does not
	// answer before Expire drops them (ARP asks again every second
	// meanwhile, as a new frame for it comes).
	neighborTimeout = 3 * time.Second
)

type pendingFrames struct {
	frames [][]byte
	asked  int64 // when the last request went out
}

// arpLen is an Ethernet header and an IPv4-over-Ethernet ARP packet.
const arpLen = 14 + 28

// ParseARP reads an IPv4-over-Ethernet ARP packet: its operation (1 request,
// 2 reply), the sender's MAC and address and the target address.
func ParseARP(frame []byte) (op uint16, sha hal.MAC, spa, tpa netip.Addr, ok bool) {
	if len(frame) < arpLen || binary.BigEndian.Uint16(frame[12:]) != hal.EtherTypeARP {
		return 0, sha, spa, tpa, false
	}
	a := frame[14:arpLen]
	if binary.BigEndian.Uint16(a[0:]) != 1 || binary.BigEndian.Uint16(a[2:]) != hal.EtherTypeIPv4 || a[4] != 6 || a[5] != 4 {
		return 0, sha, spa, tpa, false
	}
	op = binary.BigEndian.Uint16(a[6:])
	copy(sha[:], a[8:14])
	spa = netip.AddrFrom4([4]byte(a[14:18]))
	tpa = netip.AddrFrom4([4]byte(a[24:28]))
	return op, sha, spa, tpa, op == 1 || op == 2
}

// BuildARP builds an ARP request (op 1, tha zero, to broadcast) or reply
// (op 2, to dst).
func BuildARP(op uint16, src hal.MAC, spa netip.Addr, dst hal.MAC, tpa netip.Addr) []byte {
	b := make([]byte, 60) // padded to the minimum frame
	if op == 1 {
		copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	} else {
		copy(b[0:6], dst[:])
	}
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:], hal.EtherTypeARP)
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], hal.EtherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], op)
	copy(a[8:14], src[:])
	s4 := spa.As4()
	copy(a[14:18], s4[:])
	if op == 2 {
		copy(a[18:24], dst[:])
	}
	t4 := tpa.As4()
	copy(a[24:28], t4[:])
	return b
}

// arp answers requests for the gateway's address and learns next hops
// from requests and replies on the external network.
func (g *Gateway) arp(frame []byte) {
	op, sha, spa, tpa, ok := ParseARP(frame)
	if !ok {
		g.stats.Drops["arp"]++
		return
	}
	ours := g.cfg.Address.Addr()
	_, published := g.cfg.Publish[tpa]
	if g.cfg.Address.Contains(spa) && spa != ours && !sha.IsZero() && sha[0]&1 == 0 {
		_, waiting := g.pending[spa]
		_, known := g.neigh[spa]
		if waiting || known || tpa == ours || published {
			g.learn(spa, sha)
		}
	}
	if op == 1 && (tpa == ours || published) {
		g.stats.ARPReplies++
		g.inject(g.cfg.External, BuildARP(2, g.extMAC, tpa, sha, spa))
	}
	g.release(spa)
}

// await holds a tenant frame until next hop nh is resolved, asking for it
// (again, at most once a second): ARP for IPv4, a neighbour solicitation
// for IPv6.
func (g *Gateway) await(nh netip.Addr, frame []byte) {
	now := g.cfg.Clock().UnixNano()
	p := g.pending[nh]
	if p == nil {
		if len(g.pending) >= maxPendingHops {
			g.stats.Drops["neighbor-table-full"]++
			return
		}
		p = &pendingFrames{}
		g.pending[nh] = p
	}
	if len(p.frames) < maxPending {
		p.frames = append(p.frames, append([]byte(nil), frame...))
	} else {
		g.stats.Drops["neighbor-queue-full"]++
	}
	if p.asked == 0 || now-p.asked > 1e9 {
		p.asked = now
		g.ask(nh)
	}
}

// ask asks the external network for next hop nh's MAC: an ARP request
// (broadcast) for IPv4, a neighbour solicitation (to its solicited-node
// group) for IPv6.
func (g *Gateway) ask(nh netip.Addr) {
	if nh.Is4() {
		g.stats.ARPRequests++
		g.inject(g.cfg.External, BuildARP(1, g.extMAC, g.cfg.Address.Addr(), hal.MAC{}, nh))
	} else {
		g.stats.NDRequests++
		g.inject(g.cfg.External, BuildNS(g.extMAC, g.cfg.Address.Addr(), nh))
	}
}
