package lease

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// ServerConfig is what the DHCP server tells the nodes besides their
// address.
type ServerConfig struct {
	// Prefix is the relocated subnet; its mask is the nodes'.
	Prefix netip.Prefix
	// Gateway is the nodes' router and the server's identifier: the tether
	// answers for it on its ports.
	Gateway netip.Addr
	// MTU is offered as option 26 (interface MTU): the tunnel's inner
	// MTU, so that nodes never send what the tunnel cannot carry.
	MTU int
}

// Server answers DHCPv4 messages from the broker's leases.
type Server struct {
	cfg ServerConfig
	b   *Broker
}

// NewServer returns a server for b.
func NewServer(b *Broker, cfg ServerConfig) *Server { return &Server{cfg: cfg, b: b} }

// Handle answers one request that arrived on the tether's port; a nil reply
// means none is due (a release, a request for another server).
func (s *Server) Handle(ctx context.Context, req *dhcpv4.DHCPv4, port string) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, errors.New("lease: not a request")
	}
	mac := req.ClientHWAddr
	if len(mac) != 6 {
		return nil, fmt.Errorf("lease: hardware address %v", mac)
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		want, _ := netip.AddrFromSlice(req.RequestedIPAddress().To4())
		a, err := s.b.Offer(mac, want)
		if err != nil {
			return nil, err
		}
		return s.reply(req, dhcpv4.MessageTypeOffer, a)
	case dhcpv4.MessageTypeRequest:
		if sid := req.ServerIdentifier(); sid != nil && !sid.IsUnspecified() {
			if a, _ := netip.AddrFromSlice(sid.To4()); a != s.cfg.Gateway {
				return nil, nil // the node chose another server
			}
		}
		want, _ := netip.AddrFromSlice(req.RequestedIPAddress().To4())
		if !want.IsValid() || want.IsUnspecified() {
			want, _ = netip.AddrFromSlice(req.ClientIPAddr.To4()) // renewing
		}
		l, err := s.b.Acquire(ctx, mac, want, port, req.HostName())
		if errors.Is(err, ErrNotOffered) {
			return dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.Gateway.AsSlice())))
		}
		if err != nil {
			return nil, err
		}
		return s.reply(req, dhcpv4.MessageTypeAck, l.Addr)
	case dhcpv4.MessageTypeRelease:
		a, _ := netip.AddrFromSlice(req.ClientIPAddr.To4())
		return nil, s.b.Release(ctx, mac, a)
	}
	return nil, nil
}

func (s *Server) reply(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType, a netip.Addr) (*dhcpv4.DHCPv4, error) {
	mask := net.CIDRMask(s.cfg.Prefix.Bits(), 32)
	gw := s.cfg.Gateway.AsSlice()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithYourIP(a.AsSlice()),
		dhcpv4.WithServerIP(gw),
		dhcpv4.WithNetmask(mask),
		dhcpv4.WithRouter(gw),
		dhcpv4.WithLeaseTime(uint32(s.b.LeaseTime().Seconds())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gw)),
	}
	if s.cfg.MTU > 0 {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, []byte{byte(s.cfg.MTU >> 8), byte(s.cfg.MTU)}))
	}
	return dhcpv4.NewReplyFromRequest(req, mods...)
}
