package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// insideKey is a connection as the tenant sends it: its VNET (VNI), the
// VM's address and port, the remote address and port, the protocol. For
// ICMP echo the port is the echo identifier and the remote port zero.
type insideKey struct {
	vni        uint32
	src, dst   netip.Addr
	sport      uint16
	dport      uint16
	proto      uint8
	encapKind  policy.EncapKind
	outerSrcPA netip.Addr
}

// outsideKey is a connection as the external port sees it: the remote
// endpoint, the gateway's address (its own, or a published one) and port.
type outsideKey struct {
	local      netip.Addr
	remote     netip.Addr
	remotePort uint16
	extPort    uint16
	proto      uint8
}

// conn is one tracked, translated connection.
type conn struct {
	inside  insideKey
	outside outsideKey
	in      policy.InPort
	pkt     policy.Packet // the first packet, as the policy judged it
	tenant  string
	vnet    string
	vm      string
	host    string
	hostPA  netip.Addr
	gwPA    netip.Addr
	vmMAC   hal.MAC
	nhMAC   hal.MAC // the external next hop's MAC
	icmp    bool
	// inbound: opened from the external network toward a published
	// address; its rule from the tenant waits for the VM's first answer
	// (fwdKey zero until then).
	inbound bool

	fwdKey, revKey hal.FlowKey
	fwd, rev       []hal.Action
	fwdID, revID   hal.RuleID // 0: not on the NIC
	why            string     // why the connection is on the host path; empty when offloaded

	created, seen int64
	counted       uint64 // packets of both rules at the last Expire
}

// Conn describes one connection for listings (vswitchctl-like tools, an
// anchor built on the gateway).
type Conn struct {
	Tenant, VNET, VM, Host string
	Proto                  uint8
	Inside                 string // VM address:port > remote address:port
	Outside                string // external address:port > remote address:port
	Where                  string // "nic" or "host: <why>"
	Age                    time.Duration
}

func (c *conn) where() string {
	if c.why == "" {
		return "nic"
	}
	return "host: " + c.why
}

type refusal struct {
	rule   hal.RuleID
	reason policy.Reason
	why    string // why the drop is not on the NIC; empty when it is
}

type opOwner struct {
	c       *conn
	r       *refusal
	reverse bool
}

// icmpEcho reports whether the frame is an ICMP echo request or reply,
// which, and its identifier.
func icmpEcho(frame []byte, l *wire.Layout) (id uint16, request, ok bool) {
	if l.L4 < 0 || l.L4+8 > l.End {
		return 0, false, false
	}
	t := frame[l.L4]
	switch {
	case l.Proto == hal.ProtoICMP && (t == 8 || t == 0), l.Proto == hal.ProtoICMPv6 && (t == 128 || t == 129):
		return binary.BigEndian.Uint16(frame[l.L4+4:]), t == 8 || t == 128, true
	}
	return 0, false, false
}

func policyPacket(k *hal.FlowKey, ttl uint8) policy.Packet {
	p := policy.Packet{SrcMAC: policy.MAC(k.EthSrc), DstMAC: policy.MAC(k.EthDst), EtherType: k.EthType,
		Protocol: k.Proto, TTL: ttl}
	if k.IsIP() {
		p.Src, p.Dst = k.Src(), k.Dst()
	}
	switch k.Proto {
	case policy.ProtoTCP, policy.ProtoUDP, policy.ProtoSCTP:
		p.SrcPort, p.DstPort = k.L4Src, k.L4Dst
	case policy.ProtoICMP, policy.ProtoICMPv6:
		p.ICMPType, p.ICMPCode = uint8(k.L4Src), uint8(k.L4Dst)
	}
	return p
}

func ttlOf(frame []byte, l *wire.Layout) uint8 {
	if l.L3 < 0 {
		return 0
	}
	if l.EthType == hal.EtherTypeIPv4 {
		return frame[l.L3+8]
	}
	return frame[l.L3+7]
}

func encapKind(k hal.EncapKind) (policy.EncapKind, bool) {
	switch k {
	case hal.EncapVXLAN:
		return policy.EncapVXLAN, true
	case hal.EncapGeneve:
		return policy.EncapGeneve, true
	case hal.EncapNVGRE:
		return policy.EncapNVGRE, true
	}
	return 0, false
}

func halEncap(k policy.EncapKind) hal.EncapKind {
	switch k {
	case policy.EncapGeneve:
		return hal.EncapGeneve
	case policy.EncapNVGRE:
		return hal.EncapNVGRE
	}
	return hal.EncapVXLAN
}

// fromTenant handles a frame from the uplink.
func (g *Gateway) fromTenant(k *hal.FlowKey, l *wire.Layout, frame []byte, now int64) {
	if !l.Tunnelled() {
		g.stats.Drops["not-tunnelled"]++
		return
	}
	if hal.AddrFrom16(k.TunDst) != g.gw.PA {
		g.stats.Drops["not_local"]++
		return
	}
	kind, ok := encapKind(k.TunKind)
	if !ok {
		g.stats.Drops["unsupported"]++
		return
	}
	if r, ok := g.refused[*k]; ok {
		g.stats.Refused[r.reason.String()]++
		return
	}
	in := policy.FromTunnel(kind, k.VNI, hal.AddrFrom16(k.TunSrc))
	ik := insideKey{vni: k.VNI, encapKind: kind, outerSrcPA: in.OuterSrc, proto: k.Proto}
	icmp, request := false, false
	if k.IsIP() {
		ik.src, ik.dst = k.Src(), k.Dst()
		switch k.Proto {
		case hal.ProtoTCP, hal.ProtoUDP:
			ik.sport, ik.dport = k.L4Src, k.L4Dst
		case hal.ProtoICMP, hal.ProtoICMPv6:
			ik.sport, request, icmp = icmpEcho(frame, l)
		}
	}
	c, known := g.conns[ik]
	if known && c.fwdKey == *k {
		c.seen = now
		g.execute(frame, l, c, false)
		return
	}
	pkt := policyPacket(k, ttlOf(frame, l))
	v := g.st.CheckAtGateway(g.gw.Name, in, pkt)
	if !v.Allow {
		g.refuse(k, v)
		return
	}
	if g.icmpErrorFromTenant(k, l, frame, now, in) {
		return
	}
	if known && c.inbound && c.fwdKey == (hal.FlowKey{}) && v.PA == c.hostPA {
		// The VM's first answer on a connection the external network
		// opened: now its rule from the tenant can be made.
		c.in, c.pkt, c.fwdKey, c.seen = in, pkt, *k, now
		g.placeFwd(c)
		g.execute(frame, l, c, false)
		return
	}
	if pkt.TTL <= 1 {
		// The gateway is a hop: a packet that cannot take one more is
		// dropped before it opens a connection (later packets of the same
		// flow, with room, are not refused).
		g.stats.Drops["ttl"]++
		return
	}
	if !(k.Proto == hal.ProtoTCP || k.Proto == hal.ProtoUDP || icmp && request) {
		g.stats.Drops["unsupported-protocol"]++
		return
	}
	if pkt.Src.Is4() != g.cfg.Address.Addr().Is4() {
		g.stats.Drops["address-family"]++
		return
	}
	nh := ik.dst
	if !g.cfg.Address.Contains(nh) {
		if !g.cfg.Router.IsValid() {
			g.stats.Drops["no-route"]++
			return
		}
		nh = g.cfg.Router
	}
	n, ok := g.neigh[nh]
	if !ok {
		g.await(nh, frame)
		return
	}
	mac := n.mac
	if known {
		// The same connection from another inner MAC or TTL-independent
		// key field (a VM's MAC changed): forget the old one.
		g.removeConn(c)
	}
	local := g.cfg.Address.Addr()
	extPort, ok := g.allocPort(k.Proto, local, ik.dst, ik.dport, ik.sport, !icmp)
	if !ok {
		g.stats.Drops["ports-exhausted"]++
		return
	}
	c = &conn{inside: ik, in: in, pkt: pkt, tenant: v.Tenant, vnet: v.VNET, vm: v.VM, host: v.Host,
		hostPA: v.PA, gwPA: g.gw.PA, vmMAC: hal.MAC(v.MAC), nhMAC: mac, icmp: icmp, fwdKey: *k,
		created: now, seen: now}
	c.outside = outsideKey{local: local, remote: ik.dst, remotePort: ik.dport, extPort: extPort, proto: k.Proto}
	g.conns[ik] = c
	g.byOut[c.outside] = c
	g.stats.NewConns++
	g.build(c)
	g.place(c)
	g.execute(frame, l, c, false)
}

// maxActions is the longest action list of a connection (the answer's:
// MACs, address, port, dec_ttl, encap, count, output).
const maxActions = 9

// actsKey names an action list that rewrites no port: the same for every
// connection with the same values, so connections share one copy.
type actsKey struct {
	reverse    bool
	mac        hal.MAC // the next hop's (from the tenant) or the VM's (answers)
	addr       netip.Addr
	kind       policy.EncapKind
	vni        uint32
	gwPA, host netip.Addr
}

// maxSharedActs bounds the shared action lists kept (one per next hop and
// external address, one per VM address and host); past it the cache
// starts again.
const maxSharedActs = 4096

// shared returns the shared copy of a port-free action list, making it
// with mk the first time.
func (g *Gateway) shared(k actsKey, mk func([]hal.Action) []hal.Action) []hal.Action {
	if a, ok := g.acts[k]; ok {
		return a
	}
	if len(g.acts) >= maxSharedActs {
		clear(g.acts)
	}
	a := mk(make([]hal.Action, 0, maxActions))
	g.acts[k] = a
	return a
}

// build writes the connection's two action lists and the reply's key.
// Lists that rewrite no port are shared between connections (never
// modified once made).
func (g *Gateway) build(c *conn) {
	ext := c.outside.local
	rewrite := !c.icmp && c.outside.extPort != c.inside.sport
	fwd := func(a []hal.Action) []hal.Action {
		a = append(a, hal.Decap(), hal.SetEthSrc(g.extMAC), hal.SetEthDst(c.nhMAC), hal.SetIPSrc(ext))
		if rewrite {
			a = append(a, hal.SetL4Src(c.outside.extPort))
		}
		return append(a, hal.DecTTL(), hal.Count(), hal.Output(g.cfg.External))
	}
	rev := func(a []hal.Action) []hal.Action {
		a = append(a, hal.SetEthSrc(hal.MAC(g.st.RouterMAC())), hal.SetEthDst(c.vmMAC), hal.SetIPDst(c.inside.src))
		if rewrite {
			a = append(a, hal.SetL4Dst(c.inside.sport))
		}
		return append(a, hal.DecTTL(), hal.EncapWith(hal.Encap{Kind: halEncap(c.inside.encapKind), VNI: c.inside.vni,
			Src: c.gwPA, Dst: c.hostPA, SrcMAC: g.uplinkMAC, DstMAC: g.nextHopMAC()}), hal.Count(), hal.Output(g.cfg.Uplink))
	}
	if rewrite {
		// Both lists in one allocation, each with room for all its actions.
		acts := make([]hal.Action, 0, 2*maxActions)
		c.fwd, c.rev = fwd(acts[:0:maxActions]), rev(acts[maxActions:maxActions])
	} else {
		c.fwd = g.shared(actsKey{mac: c.nhMAC, addr: ext}, fwd)
		c.rev = g.shared(actsKey{reverse: true, mac: c.vmMAC, addr: c.inside.src, kind: c.inside.encapKind,
			vni: c.inside.vni, gwPA: c.gwPA, host: c.hostPA}, rev)
	}

	et := hal.EtherTypeIPv6
	if c.outside.remote.Is4() {
		et = hal.EtherTypeIPv4
	}
	rk := hal.FlowKey{InPort: g.cfg.External, EthSrc: c.nhMAC, EthDst: g.extMAC, EthType: et,
		IPSrc: hal.Addr16(c.outside.remote), IPDst: hal.Addr16(ext), Proto: c.outside.proto,
		L4Src: c.outside.remotePort, L4Dst: c.outside.extPort}
	if c.icmp {
		// From outside: echo replies (type 0, ICMPv6 129), or requests on
		// a connection opened from outside (8, 128); code 0.
		rk.L4Src, rk.L4Dst = 0, 0
		switch {
		case c.inbound && c.outside.proto == hal.ProtoICMPv6:
			rk.L4Src = 128
		case c.inbound:
			rk.L4Src = 8
		case c.outside.proto == hal.ProtoICMPv6:
			rk.L4Src = 129
		}
	}
	c.revKey = rk
}

func (g *Gateway) nextHopMAC() hal.MAC {
	if g.cfg.NextHopMAC.IsZero() {
		return hal.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	}
	return g.cfg.NextHopMAC
}

func (g *Gateway) rule(id hal.RuleID, k *hal.FlowKey, acts []hal.Action) hal.Rule {
	return hal.Rule{ID: id, Priority: 100, Match: hal.Exact(k), Actions: acts, Cookie: cookie}
}

// cookie marks the gateway's rules on the NIC ("gw").
const cookie hal.Cookie = 0x6777

// place offloads both directions when the NIC takes both rules, and keeps
// the connection on the host path with the NIC's reason otherwise.
func (g *Gateway) place(c *conn) {
	if c.icmp {
		c.why = "ICMP echo: connections are told apart (and translated) by the identifier, which no NIC match field or action reads or writes"
		g.stats.HostPath++
		return
	}
	rid := g.newID()
	rr := g.rule(rid, &c.revKey, c.rev)
	if err := g.nic.Validate(&rr); err != nil {
		c.why = "NIC refuses the rule from the external network: " + err.Error()
		g.stats.HostPath++
		return
	}
	if c.fwdKey != (hal.FlowKey{}) {
		fr := g.rule(g.newID(), &c.fwdKey, c.fwd)
		if err := g.nic.Validate(&fr); err != nil {
			c.why = "NIC refuses the rule from the tenant: " + err.Error()
			g.stats.HostPath++
			return
		}
		c.fwdID = fr.ID
		g.queue(hal.AddOp(fr), opOwner{c: c})
	}
	c.revID = rid
	g.queue(hal.AddOp(rr), opOwner{c: c, reverse: true})
}

// placeFwd offloads the rule from the tenant of a connection opened from
// outside, once the VM's first answer gave its key; when the NIC refuses
// it, the connection goes to the host path whole.
func (g *Gateway) placeFwd(c *conn) {
	if c.why != "" {
		return
	}
	fr := g.rule(g.newID(), &c.fwdKey, c.fwd)
	if err := g.nic.Validate(&fr); err != nil {
		c.why = "NIC refuses the rule from the tenant: " + err.Error()
		g.stats.HostPath++
		if c.revID != 0 {
			g.queue(hal.DeleteOp(c.revID), opOwner{})
			c.revID = 0
		}
		return
	}
	c.fwdID = fr.ID
	g.queue(hal.AddOp(fr), opOwner{c: c})
}

func (g *Gateway) newID() hal.RuleID {
	id := g.nextID
	g.nextID++
	return id
}

func (g *Gateway) queue(op hal.Op, o opOwner) {
	g.ops = append(g.ops, op)
	g.owners = append(g.owners, o)
}

// flush applies the queued operations in batches the NIC takes; an add that
// fails leaves its connection (or refusal) on the host path with the error.
func (g *Gateway) flush(ctx context.Context) error {
	max := g.nic.Capabilities().MaxBatch
	if max <= 0 {
		max = 256
	}
	var errs []error
	// Deletes queued while settling failures go to fresh slices: the ones
	// being applied must not be written over.
	ops, owners := g.ops, g.owners
	g.ops, g.owners = nil, nil
	defer func(ops []hal.Op, owners []opOwner) {
		// Nothing was queued meanwhile: the slices serve again (cleared,
		// so that they keep no connection alive).
		if g.ops == nil && cap(ops) > 0 {
			clear(ops)
			clear(owners)
			g.ops, g.owners = ops[:0], owners[:0]
		}
	}(ops, owners)
	for len(ops) > 0 {
		n := min(len(ops), max)
		res := make([]hal.OpResult, n)
		err := g.nic.Apply(ctx, ops[:n], res)
		var be *hal.BatchError
		for i := range n {
			if err != nil && res[i].Err == nil && !errors.As(err, &be) {
				res[i].Err = err // a failure that is no batch's: nothing is known to have landed
			}
			if res[i].Err == nil {
				if ops[i].Kind == hal.OpAdd && owners[i].c != nil && !owners[i].reverse && owners[i].c.why == "" {
					g.stats.Offloaded++
				}
				continue
			}
			if ops[i].Kind == hal.OpModify && owners[i].c != nil {
				// A connection's rule that did not take its change
				// (moveNeighbor) kept its old actions, or is gone:
				// both rules are taken back, so that the connection
				// goes through the host.
				c := owners[i].c
				if c.why == "" {
					c.why = "NIC did not take the rule's change: " + res[i].Err.Error()
					g.stats.HostPath++
				}
				for _, id := range []hal.RuleID{c.fwdID, c.revID} {
					if id != 0 {
						g.ops = append(g.ops, hal.DeleteOp(id))
						g.owners = append(g.owners, opOwner{})
					}
				}
				c.fwdID, c.revID = 0, 0
				continue
			}
			if ops[i].Kind != hal.OpAdd {
				if !errors.Is(res[i].Err, hal.ErrNotFound) {
					errs = append(errs, res[i].Err)
				}
				continue
			}
			o := owners[i]
			switch {
			case o.c != nil:
				// One direction landed, the other did not: take the
				// landed one back, so that both go through the host.
				if o.c.why == "" {
					o.c.why = "NIC did not take the rule: " + res[i].Err.Error()
					g.stats.HostPath++
				}
				other := o.c.revID
				if o.reverse {
					other = o.c.fwdID
				}
				o.c.fwdID, o.c.revID = 0, 0
				if other != 0 {
					g.ops = append(g.ops, hal.DeleteOp(other))
					g.owners = append(g.owners, opOwner{})
				}
			case o.r != nil:
				o.r.rule, o.r.why = 0, "NIC did not take the drop rule: "+res[i].Err.Error()
			}
		}
		ops, owners = ops[n:], owners[n:]
	}
	if len(g.ops) > 0 {
		if err := g.flush(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// allocPort picks an external port for a connection to remote:rport that
// no other connection to the same remote endpoint holds (endpoint-dependent
// translation: an answer is told apart by the remote endpoint and the
// external port together). The VM's own port (inside, when preserve) is
// kept when it is in the range and free: the connection's rules then
// rewrite no port, so that its action lists are those of every other such
// connection of the VM and the NIC shares one program between them (a
// rule's program is the expensive part of placing it). Otherwise it goes
// round the range from where the last allocation of the protocol stopped.
func (g *Gateway) allocPort(proto uint8, local, remote netip.Addr, rport, inside uint16, preserve bool) (uint16, bool) {
	lo, hi := g.cfg.PortLo, g.cfg.PortHi
	if preserve && inside >= lo && inside <= hi {
		if _, used := g.byOut[outsideKey{local: local, remote: remote, remotePort: rport, extPort: inside, proto: proto}]; !used {
			return inside, true
		}
	}
	span := int(hi-lo) + 1
	cur := g.cursor[proto]
	if cur < lo || cur > hi {
		cur = lo
	}
	for range span {
		p := cur
		if cur == hi {
			cur = lo
		} else {
			cur++
		}
		if _, used := g.byOut[outsideKey{local: local, remote: remote, remotePort: rport, extPort: p, proto: proto}]; !used {
			g.cursor[proto] = cur
			return p, true
		}
	}
	return 0, false
}

func (g *Gateway) removeConn(c *conn) {
	if c.fwdID != 0 {
		g.queue(hal.DeleteOp(c.fwdID), opOwner{})
	}
	if c.revID != 0 {
		g.queue(hal.DeleteOp(c.revID), opOwner{})
	}
	c.fwdID, c.revID = 0, 0
	delete(g.conns, c.inside)
	delete(g.byOut, c.outside)
	g.stats.Expired++
}

// refuse drops a tenant frame the policy refuses, and makes its flow a drop
// rule on the NIC so that the next ones never reach the host.
func (g *Gateway) refuse(k *hal.FlowKey, v policy.GatewayVerdict) {
	g.stats.Refused[v.Reason.String()]++
	r := &refusal{reason: v.Reason}
	g.refused[*k] = r
	id := g.newID()
	rule := hal.Rule{ID: id, Priority: 100, Match: hal.Exact(k), Actions: []hal.Action{hal.Count(), hal.Drop(hal.ReasonPolicy)}, Cookie: cookie}
	if err := g.nic.Validate(&rule); err != nil {
		r.why = "NIC refuses the drop rule: " + err.Error()
		return
	}
	r.rule = id
	g.queue(hal.AddOp(rule), opOwner{r: r})
}

// fromExternal handles a frame from the external port: ARP, or an answer
// to a tracked connection.
func (g *Gateway) fromExternal(k *hal.FlowKey, l *wire.Layout, frame []byte, now int64) {
	if k.EthType == hal.EtherTypeARP {
		g.arp(frame)
		return
	}
	if isND(k) {
		g.nd(frame)
		return
	}
	if !k.IsIP() {
		g.stats.Drops["not-ip"]++
		return
	}
	local := k.Dst()
	target, published := g.cfg.Publish[local]
	if local != g.cfg.Address.Addr() && !published {
		g.stats.Drops["not-ours"]++
		return
	}
	ok := outsideKey{local: local, remote: k.Src(), proto: k.Proto}
	icmp, request := false, false
	switch k.Proto {
	case hal.ProtoTCP, hal.ProtoUDP:
		ok.remotePort, ok.extPort = k.L4Src, k.L4Dst
	case hal.ProtoICMP, hal.ProtoICMPv6:
		if g.icmpErrorFromExternal(k, l, frame, now) {
			return
		}
		var id uint16
		if id, request, icmp = icmpEcho(frame, l); !icmp {
			g.stats.Drops["no-connection"]++
			return
		}
		ok.extPort = id
	}
	c, found := g.byOut[ok]
	if !found && published && (k.Proto == hal.ProtoTCP || k.Proto == hal.ProtoUDP || icmp && request) {
		c, found = g.openInbound(k, ok, target, icmp, now)
	}
	if !found {
		g.stats.Drops["no-connection"]++
		return
	}
	c.seen = now
	g.execute(frame, l, c, true)
}

// Conns lists the tracked connections, oldest first.
func (g *Gateway) Conns() []Conn {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.cfg.Clock().UnixNano()
	out := make([]Conn, 0, len(g.conns))
	var created []int64
	for _, c := range g.conns {
		ext := c.outside.local
		out = append(out, Conn{Tenant: c.tenant, VNET: c.vnet, VM: c.vm, Host: c.host, Proto: c.inside.proto,
			Inside:  fmt.Sprintf("%s > %s", netip.AddrPortFrom(c.inside.src, c.inside.sport), netip.AddrPortFrom(c.inside.dst, c.inside.dport)),
			Outside: fmt.Sprintf("%s > %s", netip.AddrPortFrom(ext, c.outside.extPort), netip.AddrPortFrom(c.outside.remote, c.outside.remotePort)),
			Where:   c.where(), Age: time.Duration(now - c.created)})
		created = append(created, c.created)
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		if created[idx[a]] != created[idx[b]] {
			return created[idx[a]] < created[idx[b]]
		}
		return out[idx[a]].Inside < out[idx[b]].Inside
	})
	sorted := make([]Conn, len(out))
	for i, j := range idx {
		sorted[i] = out[j]
	}
	return sorted
}

// Expire removes connections idle for longer than Config.Idle: no packet on
// the host path, and no packet counted by either of their rules on the NIC,
// since then.
func (g *Gateway) Expire(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.cfg.Clock().UnixNano()
	idle := int64(g.cfg.Idle)
	var errs []error
	for nh, p := range g.pending {
		if now-p.asked > int64(neighborTimeout) {
			g.stats.Drops["neighbor-unresolved"] += uint64(len(p.frames))
			delete(g.pending, nh)
		}
	}
	g.refreshNeighbors(now)
	for _, c := range g.conns {
		if c.fwdID != 0 {
			var cs [2]hal.Counters
			if err := g.nic.RuleCounters(ctx, []hal.RuleID{c.fwdID, c.revID}, cs[:]); err != nil {
				errs = append(errs, err)
				continue
			}
			if n := cs[0].Packets + cs[1].Packets; n != c.counted {
				c.counted, c.seen = n, now
			}
		}
		if now-c.seen > idle {
			g.removeConn(c)
		}
	}
	if err := g.flush(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := g.flushInjects(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
