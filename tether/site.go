package tether

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/tether/lease"
)

// FrameSender puts a frame on a port's wire (toward a node).
type FrameSender interface {
	Send(frame []byte) error
}

// SiteConfig configures a Site.
type SiteConfig struct {
	// VNI is the relocated subnet's VNET's VNI.
	VNI uint32
	// Prefix and Gateway as in Relocated: the tether answers ARP for every
	// address but the asker's own, and is the nodes' router.
	Prefix  netip.Prefix
	Gateway netip.Addr
	// MTU is the nodes' MTU (the tunnel's inner MTU, offered by DHCP):
	// larger packets get an ICMP "fragmentation needed" back.
	MTU    int
	Broker *lease.Broker
	DHCP   *lease.Server
	// Tunnel sends a node's frame to the anchor (Tether.Send).
	Tunnel func(vni uint32, frame []byte) error
	Logger *slog.Logger
}

// Site is the tether's side toward the nodes: its ports, each a wire to
// nodes of the relocated subnet. It answers the nodes' DHCP (from the
// lease broker) and ARP (with the port's MAC: the tether is the nodes' next
// hop for everything), forwards between nodes of the site directly and
// sends everything else through the tunnel; frames from the tunnel go to
// the node that holds the destination's lease. A node may only send from
// the address leased to its MAC (anything else is dropped and counted).
type Site struct {
	cfg   SiteConfig
	log   *slog.Logger
	ports map[string]*SitePort

	stats SiteStats
}

// SiteStats counts what the site did.
type SiteStats struct {
	ToTunnel, FromTunnel, Local atomic.Uint64
	DHCP, ARP                   atomic.Uint64
	TooBig, Spoofed, NoLease    atomic.Uint64
	Dropped                     atomic.Uint64
}

// SitePort is one of the tether's ports toward the nodes.
type SitePort struct {
	Name   string
	MAC    hal.MAC
	mu     sync.Mutex // serializes sends, and closing with them
	out    FrameSender
	buf    []byte
	closed bool
}

func (p *SitePort) send(frame []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.out.Send(frame)
	}
}

// close runs f (which closes the port's socket) once no send is in
// progress, and stops every later send.
func (p *SitePort) close(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	f()
}

// NewSite returns a site; AddPort gives it its ports.
func NewSite(cfg SiteConfig) *Site {
	s := &Site{cfg: cfg, log: cfg.Logger, ports: map[string]*SitePort{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// AddPort adds a port whose frames go out through out.
func (s *Site) AddPort(name string, mac hal.MAC, out FrameSender) *SitePort {
	p := &SitePort{Name: name, MAC: mac, out: out}
	s.ports[name] = p
	return p
}

// Stats returns the site's counters.
func (s *Site) Stats() *SiteStats { return &s.stats }

// FromNode handles a frame a node sent on port p. The frame's checksums
// must be complete and it must not be a GSO super-frame (the port's reader
// completes and segments them).
func (s *Site) FromNode(ctx context.Context, p *SitePort, frame []byte) {
	if len(frame) < 14 {
		s.stats.Dropped.Add(1)
		return
	}
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case hal.EtherTypeARP:
		s.arp(p, frame)
		return
	case hal.EtherTypeIPv4:
	default:
		s.stats.Dropped.Add(1) // IPv6 and the rest: the relocated subnet is IPv4
		return
	}
	var k hal.FlowKey
	var l wire.Layout
	if err := parseFrame(frame, &k, &l); err != nil || l.L3 < 0 || l.VLANs != 0 {
		s.stats.Dropped.Add(1)
		return
	}
	frame = frame[:l.End]
	src, dst := k.Src(), k.Dst()
	if k.Proto == hal.ProtoUDP && k.L4Dst == dhcpv4.ServerPort && l.Payload > 0 {
		s.dhcp(ctx, p, frame, &l, k.EthSrc)
		return
	}
	ls, ok := s.cfg.Broker.Lookup(src)
	if !ok || ls.MAC != net.HardwareAddr(k.EthSrc[:]).String() || ls.Port != p.Name {
		s.stats.Spoofed.Add(1)
		return
	}
	if dst == s.cfg.Gateway {
		s.stats.Dropped.Add(1)
		return
	}
	if s.cfg.Prefix.Contains(dst) {
		if ld, ok := s.cfg.Broker.Lookup(dst); ok {
			if q := s.ports[ld.Port]; q != nil {
				s.toNode(q, ld, frame)
				s.stats.Local.Add(1)
				return
			}
		}
	}
	if l.End-l.L3 > s.cfg.MTU {
		s.tooBig(p, frame, &l)
		return
	}
	err := s.cfg.Tunnel(s.cfg.VNI, frame)
	switch {
	case err == nil:
		s.stats.ToTunnel.Add(1)
	case errors.Is(err, ErrTooBig):
		s.tooBig(p, frame, &l)
	default:
		s.stats.Dropped.Add(1)
	}
}

// tooBig answers an oversized packet with an ICMP error announcing the
// nodes' MTU, from the gateway.
func (s *Site) tooBig(p *SitePort, frame []byte, l *wire.Layout) {
	s.stats.TooBig.Add(1)
	p.mu.Lock()
	ans, err := wire.AppendTooBig(p.buf[:0], frame, l, &wire.TooBig{MTU: s.cfg.MTU, Src: s.cfg.Gateway})
	if err == nil && !p.closed {
		p.buf = ans
		p.out.Send(ans)
	}
	p.mu.Unlock()
}

func (s *Site) toNode(q *SitePort, ld lease.Lease, frame []byte) {
	mac, err := net.ParseMAC(ld.MAC)
	if err != nil {
		s.stats.Dropped.Add(1)
		return
	}
	copy(frame[0:6], mac)
	copy(frame[6:12], q.MAC[:])
	q.send(frame)
}

// FromTunnel delivers a frame from the anchor to the node that holds its
// destination's lease (the Tether's Deliver).
func (s *Site) FromTunnel(vni uint32, frame []byte) {
	if vni != s.cfg.VNI || len(frame) < 34 || binary.BigEndian.Uint16(frame[12:14]) != hal.EtherTypeIPv4 {
		s.stats.Dropped.Add(1)
		return
	}
	dst := netip.AddrFrom4([4]byte(frame[30:34]))
	ld, ok := s.cfg.Broker.Lookup(dst)
	q := s.ports[ld.Port]
	if !ok || q == nil {
		s.stats.NoLease.Add(1)
		return
	}
	s.toNode(q, ld, frame)
	s.stats.FromTunnel.Add(1)
}

// arp answers a request for any address but the asker's own with the
// port's MAC (the tether is every node's next hop), and ignores probes
// (sender address 0) and announcements.
func (s *Site) arp(p *SitePort, frame []byte) {
	a := frame[14:]
	if len(a) < 28 || binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != hal.EtherTypeIPv4 ||
		a[4] != 6 || a[5] != 4 || binary.BigEndian.Uint16(a[6:8]) != 1 {
		return
	}
	spa, tpa := netip.AddrFrom4([4]byte(a[14:18])), netip.AddrFrom4([4]byte(a[24:28]))
	if spa.IsUnspecified() || spa == tpa || !s.cfg.Prefix.Contains(tpa) {
		return
	}
	s.stats.ARP.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.buf[:0]
	b = append(b, frame[6:12]...) // to the asker
	b = append(b, p.MAC[:]...)
	b = append(b, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2)
	b = append(b, p.MAC[:]...)
	b = append(b, tpa.AsSlice()...)
	b = append(b, a[8:14]...)
	b = append(b, spa.AsSlice()...)
	p.buf = b
	if !p.closed {
		p.out.Send(b)
	}
}

func (s *Site) dhcp(ctx context.Context, p *SitePort, frame []byte, l *wire.Layout, from hal.MAC) {
	req, err := dhcpv4.FromBytes(frame[l.Payload:l.End])
	if err != nil {
		s.stats.Dropped.Add(1)
		return
	}
	rep, err := s.cfg.DHCP.Handle(ctx, req, p.Name)
	if err != nil {
		s.log.Info("DHCP request not served", "port", p.Name, "mac", req.ClientHWAddr, "err", err)
		return
	}
	if rep == nil {
		return
	}
	s.stats.DHCP.Add(1)
	msg := rep.ToBytes()
	// To the client's MAC and the broadcast address: it has no address
	// yet (RFC 2131 §4.1 allows broadcast whatever the flag says).
	b := make([]byte, 0, 42+len(msg))
	b = append(b, req.ClientHWAddr...)
	b = append(b, p.MAC[:]...)
	b = append(b, 0x08, 0x00)
	ip := len(b)
	b = append(b, 0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, hal.ProtoUDP, 0, 0)
	b = append(b, s.cfg.Gateway.AsSlice()...)
	b = append(b, 255, 255, 255, 255)
	binary.BigEndian.PutUint16(b[ip+2:], uint16(28+len(msg)))
	binary.BigEndian.PutUint16(b[ip+10:], wire.Checksum(b[ip:ip+20], 0))
	b = binary.BigEndian.AppendUint16(b, dhcpv4.ServerPort)
	b = binary.BigEndian.AppendUint16(b, dhcpv4.ClientPort)
	b = binary.BigEndian.AppendUint16(b, uint16(8+len(msg)))
	b = append(b, 0, 0) // no UDP checksum (IPv4 allows it)
	b = append(b, msg...)
	p.send(b)
	_ = from
}
