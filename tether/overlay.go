package tether

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
)

// VXLANPort is the underlay UDP port of VXLAN (RFC 7348).
const VXLANPort = 4789

const vxlanHdrLen = 8

// Subnet is one relocated subnet an anchor serves: the tenant's VNET and
// prefix, and the tether (a Peer's name) whose site holds its nodes.
type Subnet struct {
	Name   string
	Tenant string
	VNET   string
	Prefix netip.Prefix
	Tether string
}

// OverlayConfig configures an Overlay.
type OverlayConfig struct {
	// Host is the anchor's host name in the policy: the relocated
	// subnet's addresses are the CAs of the VMs the policy places on it
	// inside a Subnet's prefix (see PoolVMs), so every other host sends
	// their traffic to the anchor's PA.
	Host    string
	Subnets []Subnet
	// Underlay is the anchor's VXLAN socket, bound to its PA and VXLANPort.
	Underlay PacketConn
	Logger   *slog.Logger
}

// Overlay hands frames between the data center's overlay and the anchor's
// tunnels. Toward the tunnel it is the receiving host of the relocated
// subnet's addresses; from the tunnel it is their sending host. Every frame
// is walked through the policy's own evaluator (policy.State.EvaluateWith)
// as if the relocated address were a VM on the anchor: the tenant's routes,
// the VNET's mappings, the ACLs of both ends (stateful ones with a
// connection table) and the sender checks apply exactly as on any host,
// and only the verdict's Encap (toward a data-center host) or Deliver (to a
// relocated address) moves the frame. Verdicts are cached per flow until
// the policy changes.
//
// A frame too big for the tunnel is answered with an ICMP "fragmentation
// needed" (IPv4) or "packet too big" (IPv6) sent back to its sender through
// the overlay, announcing the tunnel's inner MTU.
type Overlay struct {
	cfg    OverlayConfig
	log    *slog.Logger
	tunnel *Anchor

	mu     sync.Mutex
	st     *policy.State
	pool   map[poolKey]poolVM // relocated address → its VM in the policy
	byVM   map[string]*Subnet
	ct     *policy.ConnTable
	cache  map[flowKey]policy.Verdict
	sendBf []byte

	stats OverlayStats
}

// OverlayStats counts what the overlay did with frames.
type OverlayStats struct {
	ToTunnel, FromTunnel     atomic.Uint64
	Dropped, TooBig, Spoofed atomic.Uint64
	Fragmented               atomic.Uint64
}

type poolKey struct {
	vni  uint32
	addr netip.Addr
}

type poolVM struct {
	name string
	mac  policy.MAC
	sub  *Subnet
}

type flowKey struct {
	fromTunnel bool
	vni        uint32
	outer      netip.Addr
	p          policy.Packet
}

// maxCachedFlows bounds the verdict cache: the anchor is a slow path for
// a branch's traffic; past this many flows the cache starts over rather
// than grow.
const maxCachedFlows = 1 << 16

// maxTrackedConns bounds the connection table of stateful ACLs the same way.
const maxTrackedConns = 1 << 16

// NewOverlay returns an overlay; SetTunnel and SetState complete it.
func NewOverlay(cfg OverlayConfig) *Overlay {
	o := &Overlay{cfg: cfg, log: cfg.Logger}
	if o.log == nil {
		o.log = slog.Default()
	}
	return o
}

// SetTunnel sets the anchor the overlay sends relocated traffic through.
func (o *Overlay) SetTunnel(a *Anchor) { o.tunnel = a }

// SetState applies a new policy: the pool of relocated addresses, and a
// fresh verdict cache.
func (o *Overlay) SetState(st *policy.State) error {
	pool := map[poolKey]poolVM{}
	byVM := map[string]*Subnet{}
	for i := range o.cfg.Subnets {
		sub := &o.cfg.Subnets[i]
		vn, ok := st.VNET(sub.Tenant, sub.VNET)
		if !ok {
			return fmt.Errorf("tether: subnet %s: tenant %s has no VNET %s", sub.Name, sub.Tenant, sub.VNET)
		}
		for _, vm := range st.LocalVMs(o.cfg.Host) {
			if vm.Tenant != sub.Tenant || vm.VNET != sub.VNET {
				continue
			}
			for _, ca := range vm.CAs {
				if sub.Prefix.Contains(ca) {
					pool[poolKey{vn.VNI, ca}] = poolVM{name: vm.Name, mac: vm.MAC, sub: sub}
					byVM[vm.Name] = sub
				}
			}
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st, o.pool, o.byVM = st, pool, byVM
	o.cache = map[flowKey]policy.Verdict{}
	if o.ct == nil || o.ct.Len() > maxTrackedConns {
		o.ct = policy.NewConnTable()
	}
	return nil
}

// PoolSize returns how many relocated addresses the policy gives the anchor.
func (o *Overlay) PoolSize() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pool)
}

// Stats returns the overlay's counters.
func (o *Overlay) Stats() *OverlayStats { return &o.stats }

// packetOf turns a parsed key into the packet the policy looks at.
func packetOf(k *hal.FlowKey, ttl uint8) policy.Packet {
	p := policy.Packet{SrcMAC: policy.MAC(k.EthSrc), DstMAC: policy.MAC(k.EthDst), EtherType: k.EthType, Protocol: k.Proto, TTL: ttl}
	switch k.EthType {
	case hal.EtherTypeIPv4, hal.EtherTypeIPv6:
		p.Src, p.Dst = k.Src(), k.Dst()
	default:
		p.Protocol = 0
		return p
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
	switch l.EthType {
	case hal.EtherTypeIPv4:
		return frame[l.L3+8]
	case hal.EtherTypeIPv6:
		return frame[l.L3+7]
	}
	return 0
}

// verdict evaluates (or finds cached) what the policy does with p.
func (o *Overlay) verdict(k flowKey, in policy.InPort) (policy.Verdict, *policy.State) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if v, ok := o.cache[k]; ok {
		return v, o.st
	}
	v := o.st.EvaluateWith(o.cfg.Host, in, k.p, o.ct.Options())
	o.ct.Record(k.p, v)
	v.Trace, v.Routes, v.ACLs = nil, nil, nil
	if len(o.cache) >= maxCachedFlows {
		clear(o.cache)
		if o.ct.Len() > maxTrackedConns {
			// The reference tracker never forgets; starting over bounds
			// it, at the price of replies of older stateful connections
			// being walked again (and denied, if only the state let
			// them through, until their next forward packet).
			o.ct = policy.NewConnTable()
		}
	}
	o.cache[k] = v
	return v, o.st
}

// rewrite applies a verdict's header changes to an Ethernet frame in place.
// Address translation belongs to gateways, not to relocated subnets: a
// verdict that asks for it is refused.
func rewrite(frame []byte, l *wire.Layout, rw policy.Rewrite) bool {
	if rw.Src.IsValid() || rw.Dst.IsValid() {
		return false
	}
	if !rw.DstMAC.IsZero() {
		copy(frame[l.L2:l.L2+6], rw.DstMAC[:])
	}
	if !rw.SrcMAC.IsZero() {
		copy(frame[l.L2+6:l.L2+12], rw.SrcMAC[:])
	}
	if rw.DecTTL {
		switch l.EthType {
		case hal.EtherTypeIPv4:
			ip := frame[l.L3:]
			old := binary.BigEndian.Uint16(ip[8:10])
			ip[8]--
			now := binary.BigEndian.Uint16(ip[8:10])
			// RFC 1624 incremental update.
			sum := uint32(^binary.BigEndian.Uint16(ip[10:12])) + uint32(^old) + uint32(now)
			sum = (sum & 0xffff) + sum>>16
			sum = (sum & 0xffff) + sum>>16
			binary.BigEndian.PutUint16(ip[10:12], ^uint16(sum))
		case hal.EtherTypeIPv6:
			frame[l.L3+7]--
		}
	}
	return true
}

// FromTunnel takes a frame a tether sent (the Anchor's Deliver).
func (o *Overlay) FromTunnel(peer string, vni uint32, frame []byte) {
	var k hal.FlowKey
	var l wire.Layout
	if err := parseFrame(frame, &k, &l); err != nil || l.L3 < 0 || l.VLANs != 0 {
		o.stats.Dropped.Add(1)
		return
	}
	src := k.Src()
	o.mu.Lock()
	vm, ok := o.pool[poolKey{vni, src}]
	o.mu.Unlock()
	if !ok || vm.sub.Tether != peer {
		// Only a relocated address of the tether's own subnet may send
		// through its tunnel.
		o.stats.Spoofed.Add(1)
		return
	}
	// The tether stands for the relocated node's vport: the frame leaves
	// with the source MAC the policy gives the address.
	copy(frame[l.L2+6:l.L2+12], vm.mac[:])
	k.EthSrc = hal.MAC(vm.mac)
	p := packetOf(&k, ttlOf(frame, &l))
	v, st := o.verdict(flowKey{fromTunnel: true, vni: vni, p: p}, policy.FromVM(vm.name))
	if !rewrite(frame, &l, v.Rewrite) {
		o.stats.Dropped.Add(1)
		return
	}
	switch v.Action {
	case policy.Encap:
		if v.Encap != policy.EncapVXLAN {
			o.stats.Dropped.Add(1)
			return
		}
		o.sendVXLAN(v.PA, v.VNI, frame[:l.End])
		o.stats.FromTunnel.Add(1)
	case policy.Deliver:
		// Another relocated address on this anchor (another site's node).
		o.toTunnel(st, v, vni, frame[:l.End], &l, netip.Addr{})
	default:
		o.stats.Dropped.Add(1)
	}
}

func (o *Overlay) sendVXLAN(pa netip.Addr, vni uint32, frame []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	b := append(o.sendBf[:0], 0x08, 0, 0, 0, byte(vni>>16), byte(vni>>8), byte(vni), 0)
	b = append(b, frame...)
	o.sendBf = b
	o.cfg.Underlay.WriteToUDPAddrPort(b, netip.AddrPortFrom(pa, VXLANPort))
}

// FromUnderlay takes one VXLAN datagram from the underlay.
func (o *Overlay) FromUnderlay(pkt []byte, from netip.AddrPort) {
	if len(pkt) < vxlanHdrLen+14 || pkt[0]&0x08 == 0 {
		o.stats.Dropped.Add(1)
		return
	}
	vni := uint32(pkt[4])<<16 | uint32(pkt[5])<<8 | uint32(pkt[6])
	frame := pkt[vxlanHdrLen:]
	var k hal.FlowKey
	var l wire.Layout
	if err := parseFrame(frame, &k, &l); err != nil || l.L3 < 0 || l.VLANs != 0 {
		o.stats.Dropped.Add(1)
		return
	}
	outer := from.Addr().Unmap()
	p := packetOf(&k, ttlOf(frame, &l))
	v, st := o.verdict(flowKey{vni: vni, outer: outer, p: p}, policy.FromUplink(vni, outer))
	if v.Action != policy.Deliver || !rewrite(frame, &l, v.Rewrite) {
		o.stats.Dropped.Add(1)
		return
	}
	o.toTunnel(st, v, vni, frame[:l.End], &l, outer)
}

// toTunnel sends a frame the policy delivers to a relocated address through
// its tether, or answers it with an ICMP error when it is too big.
func (o *Overlay) toTunnel(st *policy.State, v policy.Verdict, vni uint32, frame []byte, l *wire.Layout, outer netip.Addr) {
	o.mu.Lock()
	sub := o.byVM[v.VM]
	o.mu.Unlock()
	if sub == nil || o.tunnel == nil {
		o.stats.Dropped.Add(1)
		return
	}
	err := o.tunnel.Send(sub.Tether, vni, frame)
	switch {
	case err == nil:
		o.stats.ToTunnel.Add(1)
	case err == ErrTooBig && fragmentable(frame, l):
		// IPv4 without DF: split, as a router does (RFC 791).
		mtu := o.tunnel.MaxFrame() - 14
		var frags [][]byte
		wire.FragmentIPv4(frame, l, mtu, func(n int) []byte {
			b := make([]byte, n) // a rare path: allocating is fine
			frags = append(frags, b)
			return b
		})
		for _, f := range frags {
			if o.tunnel.Send(sub.Tether, vni, f) == nil {
				o.stats.ToTunnel.Add(1)
			}
		}
		o.stats.Fragmented.Add(1)
	case err == ErrTooBig:
		o.stats.TooBig.Add(1)
		mtu := o.tunnel.MaxFrame() - 14
		ans, aerr := wire.AppendTooBig(nil, frame, l, &wire.TooBig{MTU: mtu})
		if aerr != nil {
			return
		}
		if outer.IsValid() {
			o.sendVXLAN(outer, vni, ans)
		} else {
			// From another relocated address: back through the overlay.
			o.FromTunnel(sub.Tether, vni, ans)
		}
	default:
		o.stats.Dropped.Add(1)
	}
}

// RunUnderlay reads the VXLAN socket until it is closed.
func (o *Overlay) RunUnderlay() error {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := o.cfg.Underlay.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		o.FromUnderlay(buf[:n], canon(from))
	}
}

// fragmentable reports whether an oversized frame is an IPv4 packet
// without DF (nor a fragment of a DF packet): a router splits it instead of
// answering it.
func fragmentable(frame []byte, l *wire.Layout) bool {
	return l.EthType == hal.EtherTypeIPv4 && l.L3 >= 0 && l.L3+8 <= len(frame) && frame[l.L3+6]&0x40 == 0
}

// parseFrame is wire.Parse, except that a non-first IP fragment (which has
// no transport header, so no ports) is a frame like any other: the policy
// walks it by addresses and protocol, and the tunnel carries it.
func parseFrame(frame []byte, k *hal.FlowKey, l *wire.Layout) error {
	err := wire.Parse(frame, 0, k, l)
	if err != nil && l.Flags&wire.FlagLaterFragment != 0 && l.L3 >= 0 && l.End <= len(frame) {
		return nil
	}
	return err
}
