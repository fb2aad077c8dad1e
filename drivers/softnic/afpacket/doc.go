// Package afpacket binds a softnic port to a Linux network interface through
// an AF_PACKET socket, so that the software NIC can carry real traffic: the
// frames that arrive on the interface enter the NIC on the port (Port.Send),
// and the frames the NIC sends out of the port leave on the interface.
//
// A vport is bound to the host side of a VM's veth or tap; the uplink to the
// interface toward the physical network. The interface should carry no
// addresses of its own: the host's stack still sees the frames it receives
// (AF_PACKET taps the traffic, it does not steal it), which is harmless on an
// interface without addresses and without forwarding.
//
// Contracts:
//   - Frames the binding itself transmits are not read back
//     (PACKET_IGNORE_OUTGOING, and the outgoing packet type as a fallback on
//     kernels without it).
//   - A VLAN tag the kernel moved into packet metadata is put back in the
//     frame before the NIC sees it (PACKET_AUXDATA), so that the NIC keys on
//     the frame as it was on the wire.
//   - A frame whose transport checksum the kernel left for offload
//     (TP_STATUS_CSUMNOTREADY: sent by a local socket through a veth or tap)
//     gets its TCP or UDP checksum completed before the NIC sees it, as a
//     NIC with checksum offload would; otherwise it would leave the host
//     with a partial sum.
//   - The interface is put in promiscuous mode for the socket's lifetime
//     (a membership, dropped when the socket closes), since a vport receives
//     frames for addresses that are not the interface's.
//   - The transmit side waits on the port's wake-up (softnic.Port.Ready)
//     when the ring is empty, so the first frame after a quiet period goes
//     out at once and an idle binding costs nothing; a busy one drains the
//     ring without waiting.
//   - Close stops both directions and closes the socket; frames still in the
//     port's ring stay there.
//
// Linux only; elsewhere Bind returns an error wrapping hal.ErrNotSupported.
// Binding needs CAP_NET_RAW.
package afpacket
