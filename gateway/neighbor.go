package gateway

import (
	"net/netip"

	"github.com/nicpath/nicpath/hal"
)

// learn records mac as next hop a's MAC. When a was known at another MAC
// (a router replaced, or failed over to a standby, announcing itself with
// a gratuitous ARP or an unsolicited neighbour advertisement), the
// connections through a move with it.
func (g *Gateway) learn(a netip.Addr, mac hal.MAC) {
	old, known := g.neigh[a]
	g.neigh[a] = mac
	if known && old != mac {
		g.stats.NeighborMoves++
		g.moveNeighbor(a, mac)
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
