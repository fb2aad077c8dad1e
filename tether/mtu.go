package tether

import "golang.org/x/crypto/nacl/secretbox"

// The tunnel's overhead, from the outside in: the underlay's IP header, UDP,
// securechan's sealed-frame header (version, type, flags, epoch, 8-byte
// counter) and its secretbox tag, the message header (kind, VNI) and the
// carried frame's Ethernet header. What is left of the path's MTU is the
// largest IP packet a node may send.
const (
	udpHeaderLen    = 8
	sealedHeaderLen = 12
	// Overhead4 is the tunnel's cost over an IPv4 underlay.
	Overhead4 = 20 + udpHeaderLen + sealedHeaderLen + secretbox.Overhead + frameHdrLen + minEthLen
	// Overhead6 is the same over an IPv6 underlay.
	Overhead6 = Overhead4 + 20
	// DefaultPathMTU is the underlay path's MTU when nothing else is known:
	// Ethernet's 1500 (AWS Outposts' service link assumes the same outside
	// and offers 1300 inside, with more headers than ours).
	DefaultPathMTU = 1500
)

// InnerMTU is the MTU offered to the nodes (DHCP option 26) for a path MTU
// between tether and anchor: the largest IP packet whose tunnelled datagram
// still fits the path unfragmented.
func InnerMTU(pathMTU int, ipv6 bool) int {
	if pathMTU <= 0 {
		pathMTU = DefaultPathMTU
	}
	if ipv6 {
		return pathMTU - Overhead6
	}
	return pathMTU - Overhead4
}

// maxDatagram is the largest securechan frame (one UDP payload) for a path
// MTU.
func maxDatagram(pathMTU int, ipv6 bool) int {
	if pathMTU <= 0 {
		pathMTU = DefaultPathMTU
	}
	if ipv6 {
		return pathMTU - 40 - udpHeaderLen
	}
	return pathMTU - 20 - udpHeaderLen
}
