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
// arrived.
package afpacket
