// Package peerbed is a two-host overlay test bed on Linux network
// namespaces, where either host is nicpath or a plain Linux host that nobody
// here wrote:
//
//	vm-a ── vp0 [host-a] up0 ═══ up0 [host-b] vp0 ── vm-b
//
// Each VM is a namespace whose eth0 (a veth into its host's namespace)
// carries the policy's MAC and customer address; the hosts' uplinks are the
// two ends of one veth pair (the underlay, 198.18.0.0/24). A host is either
//
//   - nicpath: an in-process vswitchd (package agent) on the
//     softnic driver bound through AF_PACKET, or on the xdp or tcflower
//     driver, following the bed's policy, with the VM's veth as its vport
//     and up0 as its uplink; or
//   - plain Linux ([Linux]): the kernel's own VXLAN device
//     (`ip link add vx0 type vxlan id VNI local PA remote PEER dstport 4789
//     dev up0`) and a bridge with the VM's veth, as a user without nicpath
//     would build it; or
//   - [TCFlowerRules]: the tc-flower driver programmed with the rules the
//     vswitch would install for the two VMs, without a vswitch: the
//     driver's own path, checked beside the vswitch on tc-flower.
//   - Open vSwitch ([OVS]): Debian's openvswitch-switch with its userspace
//     datapath (datapath_type=netdev), ovsdb-server and ovs-vswitchd
//     started by the bed inside the host's namespace with a private run
//     directory, the VM's veth a plain port of a bridge with a VXLAN port,
//     the bed's policy as OpenFlow flows, and OVS's own tunnel route and
//     neighbour tables on a second bridge that owns up0 and the PA. Close
//     stops both daemons (by their pid files) and removes the directory.
//     Its VM is the bed's one exception to default offloads: transmit
//     checksum offload is off on that VM's eth0, because OVS 3.1's
//     userspace datapath forwards a partial checksum read over a veth as
//     it found it (see txChecksumOff). An OVS host facing a host whose
//     kernel writes the outer headers (Linux, tcflower) is refused: OVS
//     3.1 drops the kernel VXLAN device's partial outer UDP checksums.
//
// A bed of two Linux hosts is the kernel's VXLAN + bridge path that
// benchmarks compare nicpath with, on the same topology; a bed of two OVS
// hosts is what the peer benchmarks (make bench-peers: connections,
// 64-byte frames and rules installed per second) compare nicpath with.
//
// The connections-per-second benchmark (BenchmarkPeerCPS) runs its load,
// netperf's TCP_CRR (connect, a 1-byte request, a 1-byte answer, the
// server closes first, the client reads the end of the stream; anything
// else counts as failed), in processes of its own in the VMs' namespaces:
// the test binary started again as a server in vm-b and a client in vm-a,
// each one epoll loop over non-blocking sockets on one goroutine, the
// client with 8 transactions in flight. The load is the same on every
// bed; lean, it takes little CPU beside the datapath it measures (Go's
// net.Dial/Accept, a goroutine per transaction, took about twice as much
// per connection, half of it the scheduler's and poller's wake-ups).
//
// Config.ACLs adds ACLs to the bed's tenant (the VM tier checks stateful
// inbound ACLs on tc-flower with them).
//
// Contracts:
//   - Every interface keeps the kernel's default offloads: checksum
//     offload, TSO and GSO stay on in the VMs, on the hosts and on the
//     underlay (except an OVS host's VM, above). Otherwise the bed only
//     ever turns a feature on: with Config.NAPI (on
//     by itself when a host runs the xdp driver), GRO on the VMs' eth0 and
//     the uplinks, because a veth delivers frames its peer received by XDP
//     redirect only when NAPI runs on it, as it always does on a virtio or
//     VF port.
//   - nicpath's uplink carries no address and answers no ARP (except on
//     tcflower, whose kernel tunnel device writes the outer headers from the
//     uplink's address and neighbours): the Linux peer holds a permanent
//     neighbour entry for nicpath's PA, and nicpath is given its peer's MAC
//     as the next hop. The VMs hold permanent neighbour entries for each
//     other (no ARP crosses the overlay).
//   - Everything lives in namespaces the bed creates, named after the
//     process and a sequence number; Close stops the vswitchds and deletes
//     them. Nothing is added to the namespace the bed is built from.
//
// The traffic helpers ([Ping], [UDP], [TCP] and [TCPStream]) run the VMs' sides as sockets
// opened inside the VM namespaces (internal/nsexec) and check what arrives
// byte for byte; [SNMP] reads a VM's kernel counters (what `nstat -asz`
// prints), where checksum trouble shows as UdpInCsumErrors and
// TcpInCsumErrors.
package peerbed
