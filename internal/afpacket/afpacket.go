package afpacket

import (
	"errors"
	"time"
)

// Options tunes a socket. The zero value receives every frame on the
// interface, skips nothing, and polls every 50ms.
type Options struct {
	// Protocol is the ethertype to receive, in host order; 0 means
	// ETH_P_ALL.
	Protocol uint16
	// SendOnly opens a socket that receives nothing (protocol 0): for
	// injecting frames without the kernel copying every frame on the
	// interface into a queue nobody reads. Protocol, Promisc, PollInterval
	// and RecvBuffer are ignored, and Recv returns an error.
	SendOnly bool
	// Promisc adds a PACKET_MR_PROMISC membership: the interface receives
	// frames addressed to other MACs while the socket is open.
	Promisc bool
	// SkipOutgoing makes Recv drop frames of type PACKET_OUTGOING: this
	// socket's own transmissions and the host's.
	SkipOutgoing bool
	// PollInterval bounds how long Recv blocks (SO_RCVTIMEO); 0 means
	// 50ms. Recv returns ErrTimeout when it expires.
	PollInterval time.Duration
	// RecvBuffer is the receive buffer in bytes (SO_RCVBUFFORCE, best
	// effort: it needs CAP_NET_ADMIN); 0 means 4 MiB.
	RecvBuffer int
	// VnetHdr sets PACKET_VNET_HDR: every frame received comes with a
	// virtio-net header (see RecvVnet) that says whether its transport
	// checksum is partial and where, and whether it is a GSO super-frame
	// (a TCP or UDP packet larger than the MTU, which the kernel hands to
	// packet sockets whole when the interface takes TSO/GSO, as a veth
	// does). Sends go out behind a header that asks for nothing.
	VnetHdr bool
}

// DefaultPollInterval is what Options.PollInterval 0 means: short enough
// that a reader notices Close promptly, long enough to cost nothing when
// idle.
const DefaultPollInterval = 50 * time.Millisecond

// DefaultRecvBuffer is what Options.RecvBuffer 0 means: room for a burst of
// a few thousand frames while the reader is busy.
const DefaultRecvBuffer = 4 << 20

// ErrTimeout is returned by Recv when no frame arrived within the poll
// interval (or, for a non-waiting receive, when none is queued). Callers
// loop on it.
var ErrTimeout = errors.New("afpacket: no frame within the poll interval")

// ErrTruncated is returned by RecvVnet for a frame longer than the buffer;
// the frame is lost.
var ErrTruncated = errors.New("afpacket: frame longer than the receive buffer")

// ErrClosed is returned by calls on a closed socket.
var ErrClosed = errors.New("afpacket: socket closed")
