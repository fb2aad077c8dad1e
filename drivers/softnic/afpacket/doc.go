// Package afpacket binds a softnic port to a Linux network interface through
// an AF_PACKET socket, so that the software NIC can carry real traffic: the
// frames that arrive on the interface enter the NIC on the port (Port.Send),
// and the frames the NIC sends out of the port leave on the interface.
//
// A vport is bound to the host side of a VM's veth or tap; the uplink to the
// interface toward the physical network. The interface should carry no
// addresses of its own: the host's stack still sees the frames it receives
// (AF_PACKET taps the traffic, it does not steal it), which is harmless on an
// interface without addresses and without forwarding; an uplink's are kept
// from it where it cannot use them (see the contracts).
//
// Contracts:
//   - Frames the binding itself transmits are not read back
//     (PACKET_IGNORE_OUTGOING, and the outgoing packet type as a fallback on
//     kernels without it).
//   - A VLAN tag the kernel moved into packet metadata is put back in the
//     frame before the NIC sees it (PACKET_AUXDATA), so that the NIC keys on
//     the frame as it was on the wire.
//   - The socket asks for the virtio-net header (PACKET_VNET_HDR), the
//     kernel's word on each frame's offloads, and the binding does what a
//     NIC with checksum and segmentation offload does with it, so that
//     VMs and peers keep the kernel's default offloads:
//   - Partial checksums: a frame whose TCP or UDP checksum the kernel left
//     to the device (NEEDS_CSUM: sent by a local stack through a veth or
//     tap; the field holds only the pseudo-header sum) gets it completed at
//     the header's csum_start/csum_offset (wire.CompleteChecksum), whatever
//     the headers around it: plain or tunnelled, the inner checksum (a
//     Linux VXLAN device leaves it partial and computes the outer one from
//     it) or the outer UDP one (left partial when the inner is complete),
//     IPv4 or IPv6. Only frames so marked are touched. So every frame the
//     NIC sees, and everything it sends toward a VM or the wire (a
//     decapsulated inner frame included) or hands to the host, carries
//     complete checksums.
//   - GSO: a super-frame (gso_type TCPV4, TCPV6 or UDP_L4, up to 64 KB: a
//     VM's TSO/USO frame on its veth, or a Linux peer's VXLAN-encapsulated
//     one on the uplink, which Linux 6.18 delivers whole with the inner
//     packet's plain type and csum_start at the inner transport header) is
//     cut into the frames a NIC with TSO/USO would send (wire.Segmenter):
//     gso_size payload bytes each, every length, IPv4 ID, TCP sequence
//     number and flag, and checksum (inner and outer) right, each at most
//     the port's MTU (TCP segments are cut smaller if gso_size would
//     exceed it). The segments enter the NIC like any frames: rules match
//     and count them, and one too big for its egress once encapsulated
//     goes to the host with hal.ReasonMTU. Super-frames are never handed
//     through whole (see readLoop for why). What cannot be cut (UFO, a
//     UDP segment over the MTU, a frame that does not parse) is dropped
//     and counted in Stats.RxDropped, as is a frame longer than the 64 KB
//     receive buffer (an interface with BIG TCP).
//   - Frames come in through a receive ring (PACKET_RX_RING, TPACKET_V2,
//     2 MiB per binding) shared with the kernel: a burst is read with no
//     system call and handed to the NIC without a copy. A frame longer than a ring slot (a GSO
//     super-frame; anything over the port's MTU) is also queued whole on
//     the socket (PACKET_COPY_THRESH) and read from there with recvmsg,
//     in the ring's order. V2 rather than V3's blocks: V3 hands a block
//     over when it is full or its retire timer (≥ 1 ms) fires, which
//     would hold every lone frame of a handshake. The reader waits for
//     the ring in Go's network poller (which watches the socket itself,
//     through a non-blocking duplicate of its descriptor), not in a
//     blocking system call, so an idle binding holds no thread. Should
//     the kernel refuse the ring, frames are read with recvmsg, one call
//     each.
//   - Frames go out through a transmit ring (PACKET_TX_RING, TPACKET_V2,
//     256 slots, 512 KiB per binding for a 1500-byte MTU) on a socket of their own that
//     receives nothing (no one waits on it, so the kernel wakes no one as
//     it frees what was sent): a batch is copied into the ring's slots and
//     sent with one send(2) carrying no data. The frames take the path of
//     any the socket sends: the interface's qdiscs apply and its taps (a
//     tcpdump) see them; there is no PACKET_QDISC_BYPASS. A frame a qdisc
//     drops (or the link refuses) counts in Stats.TxErrors and the frames
//     after it go on, as with sendmmsg. A frame longer than the ring takes
//     (over the interface's MTU at Bind, or a slot), one whose slot the
//     kernel still holds, and every frame when the kernel refuses the ring
//     go out with sendmmsg, up to 64 per call, on a second send-only
//     socket, after those before them. Under peerbed's CPS load (nearly
//     every send one frame) the ring took the binding's process from
//     about 95 to 78 µs of CPU per connection against sendmmsg, while the
//     receiving VMs' processes took about 7 µs more: a veth copies each
//     ring frame out (a page), and the receiver pulls the headers into
//     the buffer (see txRing). Receiving and sending allocate nothing.
//   - The interface is put in promiscuous mode for the socket's lifetime
//     (a membership, dropped when the socket closes), since a vport receives
//     frames for addresses that are not the interface's.
//   - Run to completion: a reader that handed a burst to the NIC then
//     writes out, on its own goroutine, what the burst put in the rings of
//     the process's bindings (a forwarded frame crosses the host with one
//     thread's wake-up, the reader's, not two). Each ring is taken under
//     its binding's transmit lock, so frames leave in the order the NIC
//     queued them; a ring whose writer is busy is left to it.
//   - The transmit side waits when the ring is empty and is woken
//     (softnic.Port.OnReady) when frames land in it that no reader is
//     about to take: frames the vswitch injects or the exception path
//     returns, outside any reader's burst. So the first frame after a
//     quiet period goes out at once, an idle binding costs nothing, and a
//     frame a reader forwards costs no second goroutine's wake-up; a busy
//     writer drains the ring without waiting.
//   - An uplink the host's stack cannot use (no IPv4 address, IPv6 off on
//     it: checked at Bind) has its frames kept from the host's stack while
//     bound: a tcx ingress program drops each one after the interface's
//     AF_PACKET taps (the binding's ring, a tcpdump) had it, as a NIC that
//     owns its port would (TakesFromHost says so). The host's stack did
//     nothing with them but drop them, at a cost paid in the sender's
//     softirq: a tunnel packet for the uplink's MAC was routed (a route
//     built and freed for it) and dropped. On any other interface, and on
//     kernels without tcx (before 6.6), the host's stack sees the frames
//     as before. While the drop is attached, the binding watches the
//     interface (rtnetlink's address and IPv6 notifications, in its
//     namespace) and detaches the drop as soon as the host's stack can use
//     the interface: an address added to it (IPv4, or IPv6 of any scope),
//     or IPv6 turned on (which brings a link-local address). From then on
//     the host's stack sees the frames, as on an uplink bound with an
//     address; TakesFromHost turns false, Stats.ReturnedToHost counts it
//     and the binding logs why. The drop stays off when the address goes
//     away again: a removal is most often half of a replacement (a
//     renumbering, a DHCP renewal), and re-attaching would cut the host
//     off for as long as the watch takes to see the new address; a new
//     binding takes the frames again. Should the watch lose notifications
//     (a full socket), the drop is detached as well, the safe side: the
//     host's stack seeing the frames costs only CPU. Close stops the
//     watch (no goroutine outlives it) and detaches the drop.
//   - Close stops both directions and closes the socket; frames still in the
//     port's ring stay there.
//
// Linux only; elsewhere Bind returns an error wrapping hal.ErrNotSupported.
// Binding needs CAP_NET_RAW.
package afpacket
