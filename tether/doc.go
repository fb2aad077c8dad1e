// Package tether relocates a tenant's subnet to a remote site behind NAT:
// the nodes there keep addresses of the tenant's VNET, and the data
// center's VMs reach them by those addresses, and back, with the tenant's
// routes and ACLs applied as for any VNET.
//
// Three parts, each usable alone:
//
//   - The tunnel. A Tether (the remote site's end) dials an Anchor (a data
//     center host) over UDP through the site's NAT. Both ends pin each
//     other's static keys and run securechan's handshake, sealed frames,
//     replay window and rekeying in its datagram mode; the overlay's
//     Ethernet frames travel as the plaintext of sealed data frames
//     (message.go). The tether probes the anchor every Probe (2 s) and
//     stays never silent longer than Keepalive (25 s, WireGuard's value) so
//     the NAT keeps its mapping; with no authenticated answer for
//     DeadAfter it runs a new handshake. The anchor learns the tether's
//     public endpoint only from datagrams that authenticate under the
//     session's keys and are newer than every frame before them (frameOrder):
//     a NAT rebinding (new port or address) moves it with the tether's next
//     probe; a forged datagram fails authentication, a replayed one the
//     replay window, a replayed Init the handshake's timestamp, and an
//     authentic but older frame (lost on its way, replayed from elsewhere)
//     is delivered without moving anything.
//   - The anchor's overlay side (Overlay). The policy names the relocated
//     subnet (its relocated entries, policy.Relocated) and compiles its
//     pool into VMs placed on the anchor's host (one mapping CA → the
//     anchor's PA per address, as PoolVMs lists them), so every host
//     following the policy or the store encapsulates their traffic to the
//     anchor and accepts their traffic from it. The anchor terminates VXLAN on its PA and walks
//     every frame through the policy's reference evaluator as if the
//     relocated address were a local VM whose vport is the tunnel: from the
//     tunnel it is the VM's outbound walk (its ACLs, the tenant's routing
//     domain, the destination's mapping → encapsulate to that host), from
//     the underlay the inbound walk (the sender's entitlement, the
//     receiver's ACLs → deliver, that is, into the tunnel). Verdicts are
//     cached per flow until the policy changes; stateful ACLs use a
//     connection table. See DESIGN.md for why it is not a port of a
//     vswitch.
//   - The site (Site) and its lease broker (package lease). The tether owns
//     its ports toward the nodes (AF_PACKET, no address on them): it answers
//     DHCP from the broker (leases with expiry, kept in a store.KV so that a
//     restart keeps them), answers ARP for every address with the port's
//     MAC (it is the nodes' router), switches between the site's nodes
//     directly, checks that a node sends only from its leased address, and
//     sends the rest through the tunnel.
//
// The tunnel's overhead (Overhead4: outer IPv4 and UDP, securechan's
// header and tag, the message header, the carried Ethernet header: 74
// bytes) is accounted: the MTU offered to nodes (DHCP option 26) is
// InnerMTU(path MTU), and a packet too big for the tunnel, from either
// side, is answered with an ICMP "fragmentation needed" (IPv4) or "packet
// too big" (IPv6) announcing it (hal/wire.AppendTooBig), never dropped
// silently; an IPv4 packet without DF from the data center is split by the
// anchor instead (hal/wire.FragmentIPv4), as a router does. Non-first
// fragments are walked by addresses and protocol (they carry no ports).
//
// The policy names each relocated subnet: tenant, VNET, prefix, gateway,
// pool, the anchor host and the tether (name, key or key file, timers); its
// checker refuses a bad entry with file, line and field. A Config
// (LoadConfig) holds what only the two ends know, by the subnet's name: the
// anchor's public endpoint and key, the tether's ports, path MTU and lease
// time (the fields the policy now gives are refused, saying so). A file
// with any problem is refused whole with file, line and field; CheckPolicy
// takes each subnet from the policy, and refuses a later policy that would
// move a running one. StartAnchorNode
// and StartTetherNode assemble the parts; examples/tetherd is their
// command line, and vswitchctl's tether and leases commands read their
// control sockets (ServeControl).
//
// Relocated subnets are IPv4 (the leases are DHCPv4); the underlay between
// tether and anchor may be either family. Package tethertest is the
// namespace bed (a data center of vswitchds, an nftables NAT, a remote
// site) its tests, figures and demo run on.
//
// # Figures
//
//	go test -run '^$' -bench . ./tether/tethertest   (root)
//
// tether.rebind_recovery_ms: from a NAT rebinding to the first datagram
// delivered again (target ≤ 3,000: within one liveness interval);
// tether.throughput_ratio: UDP through the tunnel over plain kernel VXLAN
// between the same namespaces, same run (target ≥ 0.5).
package tether
