package gateway

import (
	"net/netip"

	"github.com/nicpath/nicpath/hal"
)

// neighbor is a next hop's entry on the external network.
type neighbor struct {
	mac    hal.MAC
	heard  int64 // when it last told its MAC (an answer, a request, an announcement)
	asked  int64 // when Expire last asked for it since (0: not asked)
	static bool  // from Config.Neighbors: never asked for nor forgotten
}

// learn records mac as next hop a's MAC, heard now. When a was known at
// another MAC (a router replaced, or failed over to a standby, announcing
// itself with a gratuitous ARP or an unsolicited neighbour advertisement,
// or answering when refreshNeighbors asked), the connections through a
// move with it. A static neighbour (Config.Neighbors) keeps its configured
// MAC whatever the network says: the configuration is what the operator
// chose over learning (and what a host answering for that address may not
// take over).
func (g *Gateway) learn(a netip.Addr, mac hal.MAC) {
	n, known := g.neigh[a]
	if known && n.static {
		return
	}
	if !known {
		n = &neighbor{}
		g.neigh[a] = n
	}
	old := n.mac
	n.mac, n.heard, n.asked = mac, g.cfg.Clock().UnixNano(), 0
	if known && old != mac {
		g.stats.NeighborMoves++
		g.moveNeighbor(a, mac)
	}
}

// refreshNeighbors asks again for the learned next hops not heard from for
// Config.NeighborRefresh that a connection goes through (once a refresh
// period; an answer is learned, and a new MAC moves the connections), and
// forgets those no connection goes through (the next connection through
// one asks for it first): the table holds the next hops in use, however
// many hosts of the external network once spoke to the gateway.
func (g *Gateway) refreshNeighbors(now int64) {
	refresh := int64(g.cfg.NeighborRefresh)
	var inUse map[netip.Addr]bool
	for a, n := range g.neigh {
		if n.static || now-n.heard <= refresh {
			continue
		}
		if inUse == nil {
			inUse = make(map[netip.Addr]bool)
			for _, c := range g.conns {
				inUse[g.nextHop(c.outside.remote)] = true
			}
		}
		switch {
		case !inUse[a]:
			delete(g.neigh, a)
		case n.asked == 0 || now-n.asked > refresh:
			n.asked = now
			g.ask(a)
		}
	}
}

// nextHop is the neighbour on the external network that a connection's
// packets to remote go to (and its answers come from).
func (g *Gateway) nextHop(remote netip.Addr) netip.Addr {
	if g.onLink(remote) || !g.cfg.Router.IsValid() {
		return remote
	}
	return g.cfg.Router
}

// moveNeighbor points the connections through next hop nh at its new MAC:
// their actions toward the external network rewrite to it and the key of
// their answers matches it. On the NIC, the rule from the tenant is
// modified in place (same match, new actions); the rule for the answers,
// whose match changes, is replaced. When the NIC does not take the
// change, the connection goes to the host path (flush).
func (g *Gateway) moveNeighbor(nh netip.Addr, mac hal.MAC) {
	for _, c := range g.conns {
		if c.nhMAC == mac || g.nextHop(c.outside.remote) != nh {
			continue
		}
		c.nhMAC = mac
		g.build(c)
		if c.fwdID != 0 {
			g.queue(hal.ModifyOp(g.rule(c.fwdID, &c.fwdKey, c.fwd)), opOwner{c: c})
		}
		if c.revID != 0 {
			g.queue(hal.DeleteOp(c.revID), opOwner{})
			rr := g.rule(g.newID(), &c.revKey, c.rev)
			c.revID = rr.ID
			g.queue(hal.AddOp(rr), opOwner{c: c, reverse: true})
		}
	}
}
