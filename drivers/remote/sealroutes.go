package remote

import (
	"context"

	"github.com/nicpath/nicpath/hal"
)

// Sealed routes over the channel (hal.SealedAddresses.SetSealedRoutes): one
// request per vport carrying the port's whole table, answered with an
// error. The routes name destinations in clear: the host computed them
// from its own policy, and they say nothing of which one a VM uses.

// msgSealRoutes: port, routes → error. Numbered apart from the other
// requests, which grow from 1.
const msgSealRoutes = 40

func (e *enc) sealRoutesReq(id uint32, port hal.PortID, routes []hal.SealedRoute) {
	st := e.begin(msgSealRoutes, id)
	e.u32(uint32(port))
	e.uv(uint64(len(routes)))
	for i := range routes {
		r := &routes[i]
		e.mac(r.SrcMAC)
		e.addr(r.Src)
		e.addr(r.Dst)
		e.actions(r.Actions)
		e.bool(r.Reply != nil)
		if p := r.Reply; p != nil {
			e.u32(uint32(p.InPort))
			e.mac(p.SrcMAC)
			e.u8(uint8(p.TunKind))
			e.addr(p.TunSrc)
			e.u32(p.VNI)
			e.actions(p.Actions)
		}
	}
	e.end(st)
}

func (e *enc) actions(acts []hal.Action) {
	e.uv(uint64(len(acts)))
	for i := range acts {
		e.action(&acts[i])
	}
}

func (d *dec) actions() []hal.Action {
	n := d.count(1)
	if n == 0 {
		return nil
	}
	acts := make([]hal.Action, n)
	for i := range acts {
		d.action(&acts[i])
	}
	return acts
}

func (d *dec) sealRoutes(r *request) {
	r.port = hal.PortID(d.u32())
	n := d.count(8)
	for range n {
		if d.err != nil {
			return
		}
		var sr hal.SealedRoute
		sr.SrcMAC = d.mac()
		sr.Src = d.addr()
		sr.Dst = d.addr()
		sr.Actions = d.actions()
		if d.bool() {
			p := &hal.SealedReply{InPort: hal.PortID(d.u32()), SrcMAC: d.mac(), TunKind: hal.EncapKind(d.u8())}
			p.TunSrc = d.addr()
			p.VNI = d.u32()
			p.Actions = d.actions()
			sr.Reply = p
		}
		r.routes = append(r.routes, sr)
	}
}

// setSealedRoutes sends a vport's sealed routes to the NIC side.
func (c *Client) setSealedRoutes(ctx context.Context, port hal.PortID, routes []hal.SealedRoute) error {
	return c.simple(ctx, "set sealed routes", msgSealRoutes, func(e *enc, id uint32) error {
		e.sealRoutesReq(id, port, routes)
		return nil
	}, nil)
}

// serveSealRoutes is the NIC side of a msgSealRoutes request.
func serveSealRoutes(ctx context.Context, nic hal.NIC, r *request) error {
	sa, ok := nic.(hal.SealedAddresses)
	if !ok {
		return hal.Unsupported("remote", "sealed routes", "the served NIC has no crypto")
	}
	return sa.SetSealedRoutes(ctx, r.port, r.routes)
}
