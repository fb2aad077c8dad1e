package tether

import (
	"net"
	"net/netip"
)

// PacketConn is the UDP socket an end of the tunnel runs on. *net.UDPConn
// is one; a test wraps one to record or drop datagrams.
type PacketConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
	LocalAddr() net.Addr
	Close() error
}

var _ PacketConn = (*net.UDPConn)(nil)

// canon drops the IPv4-in-IPv6 form a dual-stack socket reports, so that
// one endpoint has one spelling.
func canon(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
