// Package gateway is the virtualization gateway role: a host with an
// uplink on the underlay and an external port on a physical network plays
// one gateway of the policy (policy.Gateway, named in Config.Name).
//
// # What it does
//
// Tenant frames that the VMs' hosts encapsulate toward the gateway's PA
// (their routes with next hop "gateway", their gateway rules' destination
// NAT already applied by the sender's host) reach it on its uplink. The
// gateway decapsulates them, checks them against the policy
// (policy.State.EvaluateAtGateway: the VNI's tenant is one it serves, the
// outer source hosts the inner source, the tenant routes the destination
// here), translates the source (network address and port translation to
// Config.Address, with connection tracking) and sends them to the
// non-virtualized host on the external port. Answers arriving on the
// external port for a tracked connection are translated back (destination
// to the VM's address and port) and encapsulated, in the VNET's own
// encapsulation and VNI, toward the host where the VM runs.
//
// The translation is what keeps tenants apart on the physical network: two
// tenants whose customer addresses overlap (both 10.0.0.5, port 40000)
// leave with different external ports, and an answer finds its connection
// by (protocol, remote address, remote port, external port) alone. A VM's
// own source port is kept when it is in the external range (Config.PortLo
// to PortHi) and no other connection to the same remote endpoint holds it;
// only a colliding connection (the second tenant above) takes another.
// Kept ports mean rules that rewrite no port: their action lists are the
// same for all of a VM's connections (shared, never modified), so that a
// NIC that compiles a program per distinct action list (softnic) compiles
// one per VM instead of two per connection. A
// dedicated gateway (policy.Gateway.Tenant set) refuses every other
// tenant's traffic: the frame is dropped, counted (Stats.Refused by
// reason) and its flow becomes a drop rule on the NIC; Explain says why.
//
// # Published addresses
//
// Config.Publish maps addresses of the external network to tenant
// addresses (Target): a non-virtualized host that opens a connection to a
// published address reaches the VM with the target address (its
// destination translated; the VM's host translates the source back into
// the tenant's view when a gateway rule's NAT holds it), and the VM's
// answers leave from the published address with their ports. Two tenants'
// overlapping addresses are published as two addresses. The rule from the
// external network is offloaded with the first packet, the rule from the
// tenant with the VM's first answer (whose inner MACs only the VM's host
// knows).
//
// # Unified flows on the gateway's own NIC
//
// The first packet of a connection is handled on the host. It becomes two
// exact-match rules: from the uplink (decap, MACs, source address and
// port, dec_ttl, count, output to the external port) and, predicted, from
// the external port (MACs, destination address and port, dec_ttl, encap
// toward the VM's host, count, output to the uplink), so that neither
// direction's later packets reach the host. A rule the NIC refuses
// (hal.RuleTable.Validate) leaves its connection on the host path, where
// the gateway executes the same action list in software; Explain gives the
// NIC's reason. ICMP echo is always on the host path: its identifier is
// the connection's "port" and no hal match field or action reads or writes
// it.
//
// # Neighbours
//
// The gateway answers ARP (IPv4) and neighbour solicitations (IPv6, RFC
// 4861: hop limit 255, checksum, options checked; solicited advertisements
// with the override bit and a target link-layer option) for Config.Address
// and the published addresses on the external port, and resolves the next
// hop of an external destination (the destination when Config.Address's
// prefix holds it, Config.Router otherwise; an IPv6 router may be a
// link-local address) with ARP or a solicitation to the solicited-node
// group, holding a few frames per next hop meanwhile and asking again at
// most once a second (Config.Neighbors gives static entries, which keep
// their configured MAC whatever the network announces). Next hops are
// learned from requests and solicitations for the gateway's addresses and
// from replies and advertisements for next hops it asked for. A learned next
// hop that announces a new MAC (a gratuitous ARP, an unsolicited
// advertisement: a router replaced or failed over) takes its connections
// with it: their rule toward it is modified to the new MAC, their rule for
// its answers replaced to match it (Stats.NeighborMoves). A learned next hop
// not heard from for Config.NeighborRefresh (a minute) is asked for again by
// Expire while a connection goes through it (so a router replaced without a
// word is found too), and forgotten when none does.
//
// # ICMP errors and fragments
//
// An ICMP error from the external network (destination unreachable with
// fragmentation needed, time exceeded, parameter problem; ICMPv6 also
// packet too big) that quotes a packet of a translated connection (from
// the gateway's or a published address and the connection's external port
// or echo identifier, to its remote endpoint) goes on to the VM: the
// error's destination becomes the VM's address, the quoted packet's source
// address and port (echo identifier) the VM's, the quoted IPv4 header
// checksum is computed again, the quoted TCP/UDP (or echo) checksum is
// updated when the quote reaches it, and the error's own checksum is
// computed again (ICMPv6 over its new pseudo-header). The error's source
// (the remote host or a router between) and the MTU it announces stay as
// they are: the external path is the VM's path, without encapsulation. So
// path MTU discovery works through the gateway: a VM sending large TCP
// segments with DF (with its kernel's TSO/GSO) across a narrower link
// learns the link's MTU from the router's error. The other way, an error a
// VM sends about a packet of a translated connection it received (a port
// unreachable about a datagram from the external host, a packet too big)
// leaves from the connection's external address, the quoted packet's
// destination address and port made the external ones again, as the
// remote host sent it; the policy judges it as any tenant packet. Errors
// are always handled on the host (Stats.ICMPErrors); errors that quote too little, quote a
// non-first fragment, another protocol, or no tracked connection are
// dropped and counted (Stats.Drops icmp-error-short, icmp-error-fragment,
// icmp-error-protocol, icmp-error-no-connection).
//
// Non-first IP fragments are refused: they carry no ports, so they cannot
// be matched to a connection, and the gateway does not reassemble. They
// are dropped and counted (Stats.Drops["non-first-fragment"]) and Explain
// says so. A first fragment passes with its connection (so a fragmented
// datagram arrives incomplete); TCP and other DF traffic does not fragment,
// since path MTU discovery works through the gateway.
//
// # Using it
//
//	g, err := gateway.New(gateway.Config{NIC: nic, State: st, Name: "gw-shared",
//		Uplink: up, External: ext, Address: netip.MustParsePrefix("203.0.113.1/24")})
//	go g.Run(ctx)           // reads the exception path
//	g.Update(ctx, newState) // a new policy: connections it no longer allows go
//
// A vswitch and a gateway do not share a NIC: the gateway reads the NIC's
// exception path itself. Code that builds on the role (a relocated subnet's
// anchor) calls HandleBatch with the exceptions it reads, Explain to say
// what happens to a frame, and Conns to list the connections.
//
// A packet whose TTL would run out at the gateway is dropped (counted
// "ttl", no ICMP time exceeded) and opens no connection.
//
// Not done yet: reassembling fragments (non-first ones are refused, see
// above); ICMP errors of a tenant whose gateway rule translates addresses
// (the VM's host translates the outer addresses, not the quoted packet, so
// the gateway's translated quote does not match the VM's socket, and a
// VM's own error quotes an address the gateway does not know); time exceeded from the gateway itself; moving an offloaded
// connection when its VM migrates (Update removes it; the next packet
// opens it again); sharing a NIC with a vswitch. The agent's gateway host
// follows a policy file, not a store; its counters are on the metrics
// endpoint (nicpath_gateway_*).
package gateway
