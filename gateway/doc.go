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
// by (protocol, remote address, remote port, external port) alone. A
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
// The gateway answers ARP for Config.Address on the external port, and
// resolves the next hop of an external destination (the destination when
// Config.Address's prefix holds it, Config.Router otherwise) with ARP,
// holding a few frames per next hop meanwhile (Config.Neighbors gives
// static entries). IPv6 neighbour discovery is not done: an IPv6 next hop
// needs a static entry.
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
// Not done yet: IPv6 neighbour discovery (an IPv6 next hop needs a static
// entry), non-first IP fragments (dropped: they carry no ports to find
// their connection by), ICMP errors about translated connections (dropped:
// no connection matches them), moving an offloaded connection when its VM
// migrates (Update removes it; the next packet opens it again), and
// sharing a NIC with a vswitch. The agent's gateway host follows a policy
// file, not a store, and has no metrics endpoint.
package gateway
