package softnic

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/securechan"
)

// Sealed addresses (EtherType 0x88B5). With Config.Crypto the NIC holds a
// securechan.KeyTable: its own private key, which never leaves it, and per
// vport up to two VM keys with their shared keys precomputed. A sealed frame
// from a vport is opened on the fast path into the burst's scratch buffer
// (with Headroom in front, so that encapsulation happens in place there),
// parsed and looked up like any other frame. The clear frame exists only in
// that scratch buffer, which is wiped when the burst is delivered; whatever
// would hand the opened packet to the host (a miss, a ToHost rule, TTL, MTU,
// an unsupported header) drops it instead, counted under ReasonSealed and in
// SealedStats.NoFlow: the host cannot open the still-sealed frame either, so
// giving it that would only spend the exception path on a frame it must drop
// (the vswitch drops them too), and the VM's retry succeeds once the
// vswitch has installed the destination's flow from unsealed traffic or its
// per-destination rules.

var _ hal.SealedAddresses = (*NIC)(nil)

// sealState is the NIC's sealed-address support; nil without Config.Crypto.
type sealState struct {
	table *securechan.KeyTable

	// routes is the sealed route table (SetSealedRoutes), replaced whole
	// on every change and read without locks on the fast path.
	routes  atomic.Pointer[sealRoutes]
	rmu     sync.Mutex // serialises writers of routes
	routed  atomic.Uint64
	replied atomic.Uint64

	opened  atomic.Uint64
	noFlow  atomic.Uint64
	tagged  atomic.Uint64
	notVM   atomic.Uint64
	refused [securechan.NumDropReasons]atomic.Uint64
}

// SealedStats are the counters of sealed-address frames. Every sealed frame
// a NIC with crypto refuses is also in Stats.Drops[hal.ReasonSealed] and in
// its in-port's Drops; the fields here say why.
type SealedStats struct {
	// Opened counts frames opened and routed like any other frame (they
	// may still be dropped later, e.g. by a drop rule, under that reason).
	Opened uint64
	// Routed counts opened frames that took a sealed route
	// (SetSealedRoutes) rather than a rule of the flow table.
	Routed uint64
	// Replied counts ordinary frames forwarded by a sealed route's Reply
	// entry (no rule matched them).
	Replied uint64
	// NoFlow counts opened frames that the NIC would have handed to the
	// host (a miss, a ToHost rule, TTL, MTU, an unsupported header): they
	// are dropped, since the clear frame must not reach the host.
	NoFlow uint64
	// Tagged counts sealed frames behind VLAN tags, which are not opened.
	Tagged uint64
	// NotVPort counts sealed frames that arrived on the uplink: only a VM
	// seals, and only on its own vport.
	NotVPort uint64
	// Refused counts frames securechan.OpenFrame refused, by its reason
	// (unknown or expired key, tampered, truncated, malformed …).
	Refused [securechan.NumDropReasons]uint64
}

// newSealState builds the key table for cfg, generating the NIC's key when
// Config.SealKey is nil.
func newSealState(cfg *Config) (*sealState, error) {
	var priv securechan.PrivateKey
	if cfg.SealKey != nil {
		priv = *cfg.SealKey
	} else {
		var err error
		if _, priv, err = securechan.GenerateKey(nil); err != nil {
			return nil, fmt.Errorf("%s: %w", DriverName, err)
		}
	}
	var opts []securechan.KeyTableOption
	if cfg.SealRotationGrace > 0 {
		opts = append(opts, securechan.WithRotationGrace(cfg.SealRotationGrace))
	}
	if cfg.SealClock != nil {
		opts = append(opts, securechan.WithClock(cfg.SealClock))
	}
	s := &sealState{table: securechan.NewKeyTable(priv, opts...)}
	clear(priv[:])
	return s, nil
}

// openSealed opens sealed frame i of the burst (frame is where it sits in
// the caller's buffer) into the burst's scratch buffer and re-parses it
// there. It reports whether the packet goes on to the lookup; otherwise its
// fate is set (a drop, never the host).
func (n *NIC) openSealed(b *burst, in *Port, i int, frame []byte) bool {
	b.fate[i], b.why[i] = fateDrop, hal.ReasonSealed
	s := n.seal
	if s == nil {
		return false
	}
	if in.info.Kind != hal.PortVPort {
		s.notVM.Add(1)
		return false
	}
	if b.lays[i].VLANs > 0 {
		// OpenFrame takes untagged frames; a VM does not tag its own
		// frames toward its vport.
		s.tagged.Add(1)
		return false
	}
	buf := b.open[i]
	clearFrame, err := s.table.OpenFrame(uint32(in.info.ID), frame, buf[Headroom:])
	if err != nil {
		s.refused[securechan.ReasonOf(err)].Add(1)
		return false
	}
	s.opened.Add(1)
	b.sealed[i] = true
	b.osz[i] = len(clearFrame)
	key, lay := &b.key, &b.lays[i]
	if err := wire.Parse(clearFrame, in.info.ID, key, lay); err != nil {
		s.noFlow.Add(1)
		return false
	}
	if key.TunKind != hal.EncapNone && !n.caps.Decaps.Has(key.TunKind) {
		s.noFlow.Add(1)
		return false
	}
	if key.EthType == hal.EtherTypeSealed {
		s.refused[securechan.DropMalformed].Add(1) // a seal inside a seal
		return false
	}
	if rt := s.routes.Load(); rt != nil && key.TunKind == hal.EncapNone {
		if r := rt.m[sealRouteKey{port: in.info.ID, v6: key.EthType == hal.EtherTypeIPv6, src: key.IPSrc, dst: key.IPDst}]; r != nil && r.srcMAC == key.EthSrc {
			// The sealed route decides: the flow table is not consulted,
			// so that no rule's counter moves with the secret.
			b.fate[i], b.prog[i] = fateSealedRoute, r.prog
			return true
		}
	}
	return true
}

// sealRoutes is one version of the sealed route table.
type sealRoutes struct {
	m       map[sealRouteKey]*sealRoute
	replies map[sealReplyKey]*sealRoute      // the routes' Reply entries
	byPort  map[hal.PortID][]hal.SealedRoute // as given, for SealedRoutes
}

type sealRouteKey struct {
	port hal.PortID
	v6   bool     // an IPv4-mapped IPv6 destination is not the IPv4 one
	src  [16]byte // as in FlowKey.IPSrc (IPv4 mapped)
	dst  [16]byte // as in FlowKey.IPDst
}

type sealReplyKey struct {
	inPort hal.PortID
	kind   hal.EncapKind
	vni    uint32
	v6     bool
	tunSrc [16]byte
	src    [16]byte
	dst    [16]byte
}

type sealRoute struct {
	prog   *program
	srcMAC hal.MAC    // zero: any (a reply from the uplink)
	owner  hal.PortID // the vport whose routes these are
}

// SetSealedRoutes replaces the sealed routes of vport port
// (hal.SealedAddresses): an opened frame from port toward a route's Dst
// gets its actions, without a lookup in the flow table and without a
// per-route counter. Every route is checked like a rule's actions first;
// on an error nothing changes.
func (n *NIC) SetSealedRoutes(ctx context.Context, port hal.PortID, routes []hal.SealedRoute) error {
	if err := n.sealCheck(ctx, "route", port); err != nil {
		return err
	}
	progs := make([]*program, len(routes))
	for i := range routes {
		r := &routes[i]
		if !r.Dst.IsValid() || r.Dst.IsMulticast() || r.Dst.IsUnspecified() || r.Dst.Is4In6() {
			return fmt.Errorf("%s: sealed route %d: destination %v is not a unicast address", DriverName, i, r.Dst)
		}
		if !r.Src.IsValid() || r.Src.Is4() != r.Dst.Is4() || r.Src.Is4In6() || r.SrcMAC.IsZero() {
			return fmt.Errorf("%s: sealed route %d: source %v / %v is not a unicast address of the destination's family and a MAC", DriverName, i, r.Src, r.SrcMAC)
		}
		rule := hal.Rule{ID: 1, Actions: r.Actions}
		rule.Match.InPort(port).EthSrc(r.SrcMAC).IPSrc(netip.PrefixFrom(r.Src, r.Src.BitLen())).IPDst(netip.PrefixFrom(r.Dst, r.Dst.BitLen()))
		if err := n.validate(&rule, nil); err != nil {
			return fmt.Errorf("%s: sealed route %d (%v): %w", DriverName, i, r.Dst, err)
		}
		p, err := n.compile(r.Actions, -1)
		if err != nil {
			return fmt.Errorf("%s: sealed route %d (%v): %w", DriverName, i, r.Dst, err)
		}
		switch p.term {
		case hal.ActionOutput, hal.ActionDrop:
		default:
			return fmt.Errorf("%s: sealed route %d (%v): a sealed route ends in an output or a drop (the host may not see the frame)", DriverName, i, r.Dst)
		}
		p.count = false
		progs[i] = p
		if rp := r.Reply; rp != nil {
			if err := n.checkReply(port, r, rp); err != nil {
				return fmt.Errorf("%s: sealed route %d (%v) reply: %w", DriverName, i, r.Dst, err)
			}
		}
	}
	replies := make([]*program, len(routes))
	for i := range routes {
		if rp := routes[i].Reply; rp != nil {
			p, err := n.compile(rp.Actions, -1)
			if err != nil {
				return fmt.Errorf("%s: sealed route %d (%v) reply: %w", DriverName, i, routes[i].Dst, err)
			}
			p.count = false
			replies[i] = p
		}
	}
	s := n.seal
	s.rmu.Lock()
	defer s.rmu.Unlock()
	next := &sealRoutes{m: map[sealRouteKey]*sealRoute{}, replies: map[sealReplyKey]*sealRoute{}, byPort: map[hal.PortID][]hal.SealedRoute{}}
	if old := s.routes.Load(); old != nil {
		for k, p := range old.m {
			if k.port != port {
				next.m[k] = p
			}
		}
		for k, p := range old.replies {
			if p.owner != port {
				next.replies[k] = p
			}
		}
		for p, rs := range old.byPort {
			if p != port {
				next.byPort[p] = rs
			}
		}
	}
	if len(routes) > 0 {
		given := make([]hal.SealedRoute, len(routes))
		for i := range routes {
			r := &routes[i]
			next.m[sealRouteKey{port: port, v6: r.Dst.Is6(), src: r.Src.As16(), dst: r.Dst.As16()}] = &sealRoute{prog: progs[i], srcMAC: r.SrcMAC}
			given[i] = hal.SealedRoute{SrcMAC: r.SrcMAC, Src: r.Src, Dst: r.Dst, Actions: hal.CloneActions(r.Actions)}
			if rp := r.Reply; rp != nil {
				k := sealReplyKey{inPort: rp.InPort, v6: r.Dst.Is6(), src: r.Dst.As16(), dst: r.Src.As16()}
				if rp.TunSrc.IsValid() {
					k.kind, k.vni, k.tunSrc = rp.TunKind, rp.VNI, rp.TunSrc.As16()
				}
				next.replies[k] = &sealRoute{prog: replies[i], srcMAC: rp.SrcMAC, owner: port}
				c := *rp
				c.Actions = hal.CloneActions(rp.Actions)
				given[i].Reply = &c
			}
		}
		next.byPort[port] = given
	}
	s.routes.Store(next)
	return nil
}

// checkReply checks the reply entry of route r of vport port.
func (n *NIC) checkReply(port hal.PortID, r *hal.SealedRoute, rp *hal.SealedReply) error {
	in := n.port(rp.InPort)
	if in == nil {
		return fmt.Errorf("in-port %d: %w", rp.InPort, hal.ErrNotFound)
	}
	rule := hal.Rule{ID: 1, Actions: rp.Actions}
	rule.Match.InPort(rp.InPort).IPSrc(netip.PrefixFrom(r.Dst, r.Dst.BitLen())).IPDst(netip.PrefixFrom(r.Src, r.Src.BitLen()))
	if in.info.Kind == hal.PortUplink {
		if !rp.TunSrc.IsValid() || rp.TunKind == hal.EncapNone {
			return fmt.Errorf("replies from the uplink need the tunnel's kind and outer source")
		}
		rule.Match.Tunnel(rp.TunKind, rp.VNI).TunSrc(rp.TunSrc)
	} else if rp.SrcMAC.IsZero() || rp.InPort == port {
		return fmt.Errorf("replies from a vport need the destination's MAC and its own vport")
	}
	if err := n.validate(&rule, nil); err != nil {
		return err
	}
	var out hal.PortID
	for _, a := range rp.Actions {
		switch a.Kind {
		case hal.ActionOutput:
			out = a.OutPort
		case hal.ActionToHost:
			return fmt.Errorf("a reply may not go to the host")
		}
	}
	if out != port {
		return fmt.Errorf("a reply goes to the route's vport %d, not %d", port, out)
	}
	return nil
}

// sealedReplies forwards the misses among ordinary frames that are replies
// of a sealed route's destination (hal.SealedRoute.Reply). Misses are the
// slow path: the frame is parsed again here rather than keeping every
// frame's key on the fast path.
func (n *NIC) sealedReplies(b *burst, in *Port, bufs [][]byte, sizes []int, offset, k int) {
	rt := n.seal.routes.Load()
	if rt == nil || len(rt.replies) == 0 {
		return
	}
	var replied uint64
	key := &b.key
	for i := 0; i < k; i++ {
		if b.fate[i] != fateHost || b.why[i] != hal.ReasonMiss || b.sealed[i] {
			continue
		}
		frame := bufs[i][offset : offset+sizes[i]]
		if wire.Parse(frame, in.info.ID, key, &b.lays[i]) != nil || !key.IsIP() {
			continue
		}
		rk := sealReplyKey{inPort: in.info.ID, v6: key.EthType == hal.EtherTypeIPv6, src: key.IPSrc, dst: key.IPDst}
		if key.TunKind != hal.EncapNone {
			rk.kind, rk.vni, rk.tunSrc = key.TunKind, key.VNI, key.TunSrc
		}
		r := rt.replies[rk]
		if r == nil || (!r.srcMAC.IsZero() && r.srcMAC != key.EthSrc) {
			continue
		}
		loadWords(key, &b.w[i])
		b.fate[i] = fatePending
		n.execute(b, i, r.prog, bufs[i], offset, sizes[i])
		replied++
	}
	if replied > 0 {
		n.seal.replied.Add(replied)
	}
}

// SealedRoutes returns the sealed routes of port as last set (for
// inspection and reconciliation).
func (n *NIC) SealedRoutes(port hal.PortID) []hal.SealedRoute {
	if n.seal == nil {
		return nil
	}
	rt := n.seal.routes.Load()
	if rt == nil {
		return nil
	}
	return append([]hal.SealedRoute(nil), rt.byPort[port]...)
}

// SealPublicKey is the NIC's public key, which VMs seal their destinations
// to. It is the zero key on a NIC without Config.Crypto.
func (n *NIC) SealPublicKey() [32]byte {
	if n.seal == nil {
		return [32]byte{}
	}
	return n.seal.table.PublicKey()
}

// RegisterSealKey accepts sealed frames from vport port under keyID, sealed
// by the VM whose public key is vmPublic. A new key id becomes the newest;
// the previous one stays valid for Config.SealRotationGrace, then is refused
// (counted in SealedStats.Refused[unknown_key]).
func (n *NIC) RegisterSealKey(ctx context.Context, port hal.PortID, keyID uint8, vmPublic [32]byte) error {
	if err := n.sealCheck(ctx, "register", port); err != nil {
		return err
	}
	// Keys past their rotation window are refused on the fast path already;
	// sweeping here frees them without a timer of its own.
	n.seal.table.Sweep()
	if err := n.seal.table.Register(uint32(port), keyID, securechan.PublicKey(vmPublic)); err != nil {
		return fmt.Errorf("%s: %w", DriverName, err)
	}
	return nil
}

// RevokeSealKey stops accepting keyID on port at once.
func (n *NIC) RevokeSealKey(ctx context.Context, port hal.PortID, keyID uint8) error {
	if err := n.sealCheck(ctx, "revoke", port); err != nil {
		return err
	}
	n.seal.table.Revoke(uint32(port), keyID)
	n.seal.table.Sweep()
	return nil
}

// SealKeys lists the live keys of port, newest first (for inspection).
func (n *NIC) SealKeys(port hal.PortID) []securechan.KeyInfo {
	if n.seal == nil {
		return nil
	}
	return n.seal.table.Keys(uint32(port))
}

// HandleKeyMessage is the NIC's side of key registration over the secure
// channel: it applies a MsgKeyRegister or MsgKeyRevoke through
// RegisterSealKey and RevokeSealKey (so that only vports of this NIC get
// keys) and returns the Ack to send back.
func (n *NIC) HandleKeyMessage(ctx context.Context, m *securechan.Message) securechan.Message {
	ack := securechan.Message{Type: securechan.MsgAck, AckSeq: m.Seq, Status: securechan.AckOK}
	var err error
	switch m.Type {
	case securechan.MsgKeyRegister:
		err = n.RegisterSealKey(ctx, hal.PortID(m.Vport), m.KeyID, m.Key)
	case securechan.MsgKeyRevoke:
		err = n.RevokeSealKey(ctx, hal.PortID(m.Vport), m.KeyID)
	default:
		ack.Status = securechan.AckUnknown
	}
	if err != nil {
		ack.Status = securechan.AckRefused
	}
	return ack
}

// SweepSealKeys drops keys whose rotation window ended. Register and Revoke
// sweep too; an agent may call it now and then to free memory sooner.
func (n *NIC) SweepSealKeys() {
	if n.seal != nil {
		n.seal.table.Sweep()
	}
}

// SealedStats returns the counters of sealed-address frames.
func (n *NIC) SealedStats() SealedStats {
	var st SealedStats
	if s := n.seal; s != nil {
		st.Opened, st.NoFlow, st.Tagged, st.NotVPort = s.opened.Load(), s.noFlow.Load(), s.tagged.Load(), s.notVM.Load()
		st.Routed, st.Replied = s.routed.Load(), s.replied.Load()
		for i := range s.refused {
			st.Refused[i] = s.refused[i].Load()
		}
	}
	return st
}

func (n *NIC) sealCheck(ctx context.Context, op string, port hal.PortID) error {
	if n.closed.Load() {
		return hal.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if n.seal == nil {
		return hal.Unsupported(DriverName, "crypto", "Config.Crypto is off: this NIC has no sealing key")
	}
	p := n.port(port)
	if p == nil {
		return fmt.Errorf("%s: %s seal key: port %d: %w", DriverName, op, port, hal.ErrNotFound)
	}
	if p.info.Kind != hal.PortVPort {
		return fmt.Errorf("%s: %s seal key: port %d is not a vport: only VMs seal, on their own vport", DriverName, op, port)
	}
	return nil
}
