// Package afpacket is nicpath's one AF_PACKET raw socket: bound to one
// interface, it sends frames as they are and receives them as they were on
// the wire, with the outer VLAN tag the kernel moves into PACKET_AUXDATA put
// back in place.
//
// Open uses the calling thread's network namespace; to open a socket in
// another one, call it inside internal/nsexec.Do. The socket stays in the
// namespace it was opened in.
//
// Recv waits at most Options.PollInterval, so that a reader loop can look
// at its own stop signal between reads; it returns ErrTimeout when nothing
// arrived. A frame longer than the buffer is cut by Recv and RecvFlags, and
// is an ErrTruncated for RecvVnet.
//
// With Options.VnetHdr (PACKET_VNET_HDR) every received frame comes with the
// kernel's virtio-net header (RecvVnet): whether its TCP/UDP checksum is
// partial and where (NEEDS_CSUM, csum_start, csum_offset), and whether it is
// a GSO super-frame (gso_type, gso_size), which is how the kernel hands a
// packet socket the TSO/GSO frames a veth or tap carries. Measured on Linux
// 6.18: a VXLAN-encapsulated super-frame is delivered too, whole (tens of
// KB), with the inner packet's plain type (TCPV4, TCPV6, UDP_L4: the
// tunnel bit is not reported) and csum_start at the inner transport header;
// a tunnelled frame whose inner checksum is complete has csum_start at the
// outer UDP header instead. Offsets count the VLAN tag RecvVnet put back.
// Sends on such a socket go out behind a header that asks for nothing.
//
// Receiving and sending allocate nothing (raw recvmsg and sendmsg/sendmmsg
// with vectors kept in the Socket); SendBatch sends up to 64 frames per
// system call. A send is first tried without waiting as a raw system call,
// outside the Go scheduler (it cannot block, so the processor is not handed
// off); only a full socket buffer makes it wait, as an ordinary call.
package afpacket
