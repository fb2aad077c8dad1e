// Package tcflower is a nicpath NIC driver on Linux tc: rules become flower
// filters on the ingress (clsact) of the ports, programmed over rtnetlink,
// and land in the NIC's hardware where its driver offloads tc, or stay in
// the kernel's software path where it does not. It implements hal.NIC.
//
// # Layout in the kernel
//
// [Open] creates a clsact qdisc on every port and tunnel device, all with
// the same shared ingress block (an index no one else in the namespace
// uses), so that one filter serves every port and hal's InPort becomes the
// flower key indev. Rules are flower filters with protocol ETH_P_ALL (the
// EtherType is a flower key), tc priority 65534−Priority (higher hal
// priority wins, as lower tc priority does) and a cookie on their first
// action holding the RuleID and the owner's Cookie, so that a dump names its
// rules by itself.
//
// Exact-match flows (hal.Exact) match "not tunnelled" and "no VLAN tag".
// The first needs no key on a port's frames: only a tunnel device's
// ingress carries tunnel metadata (the kernel drops it when a frame
// crosses a veth, and a NIC's frames never had any), so a rule with an
// in-port and tun=none is the in-port match alone; without an in-port it
// would take the tunnel devices' frames too, which share the block, and
// Validate refuses it (flower has no key for the absence of tunnel
// metadata). "No VLAN tag" is flower's num_of_vlans 0 (Linux 5.19 on;
// Open checks that a probe filter dumps back with the key, since an older
// flower ignores keys it does not know): flower's EtherType key is the one
// after the tags, so a rule on the EtherType alone takes tagged frames
// too. Without the key Validate refuses "no tag" and the notes say so.
//
// Actions: Output is mirred egress redirect; Drop is gact shot; header
// rewrites are one pedit (extended keys, encoded here since go-tc has no
// pedit) followed by csum, because pedit leaves checksums stale, except an
// IPv4 address the rule's match pins exactly, which act_nat rewrites (see
// Checksums below); PushVLAN
// and PopVLAN are act_vlan; Encap is tunnel_key set and a redirect to the
// flow-based VXLAN, Geneve or NVGRE (gretap) device named in
// [Config].Tunnels, which writes the outer headers along the kernel's
// route; Decap matches the frame on
// that device's ingress (where the kernel delivers it with the outer headers
// as metadata: enc_key_id, enc_src_ip, enc_dst_ip) and unsets the tunnel
// key. Count needs nothing: every tc action counts. ToHost and DecTTL go
// through the exception path (below).
//
// Outer headers may be IPv4 or IPv6: tunnel_key set carries
// TCA_TUNNEL_KEY_ENC_IPV4_* or ENC_IPV6_* addresses, and a decap rule
// matches TCA_FLOWER_KEY_ENC_IPV4_* or ENC_IPV6_* (with masks). A
// flow-based device sends and receives over IPv6 only through a UDP/IPv6
// socket of its own, which it opens beside its IPv4 one when it comes up,
// where the kernel has IPv6. Open looks for that socket on each device's
// port (in the namespace's /proc/net/udp6): for a kind whose device has
// none (down when Open ran, or a kernel without IPv6), Validate refuses
// outer IPv6 addresses in encaps and decap matches, and the notes say so.
// Capabilities.Encaps has no address family, so that refusal is where a
// caller learns it. Routes, addresses and neighbours for the outer
// addresses are the user's, over IPv6 as over IPv4. tunnel_key is set
// without "nocsum", so the device writes the outer UDP checksum (IPv6
// requires one; over IPv4 the kernel writes one too).
//
// # Checksums
//
// A VM's kernel with checksum offload (a virtio NIC, a veth) leaves its
// transport checksums to the device: the frame reaches the port with the
// pseudo-header's sum in the checksum field (CHECKSUM_PARTIAL), often as a
// TSO/GSO segment of up to 64 KiB, and a real NIC completes it on the wire.
// The driver keeps that working: csum recomputes a rewritten frame's
// checksums in full, but leaves a TSO/GSO frame alone, whose checksum then
// stays the old addresses' pseudo-header sum; so an IPv4 address rewrite of
// a rule whose match pins the old address (every unified flow of the
// vswitch) is act_nat, which moves that sum with the address as the
// kernel's own NAT does, whatever the frame's checksum state. Port rewrites
// do not touch the pseudo-header. An IPv6 address rewrite, or an IPv4 one
// of a rule that matches the address with a prefix (or on a kernel without
// act_nat, which the notes say), is pedit and csum: right for every frame
// but a TSO/GSO one, which leaves with wrong checksums. Encapsulation and
// decapsulation are the kernel's tunnel devices', which handle both. The
// exception path completes a checksum the sender left to the device before
// the host sees the frame (the channel's socket says which frames), so
// that the host gets it as the wire would carry it and can reinject it as
// it is. The VM-tier tests run VMs' namespaces with their default offloads
// through rewrite, encap, decap and the exception path, and check nstat's
// UdpInCsumErrors and TcpInCsumErrors there, and every frame captured on
// the way completed as a NIC would (a packet socket's virtio-net header
// says which checksum the kernel left to the device); no test turns an
// offload off.
//
// # The tunnel endpoint
//
// The driver implements hal.TunnelTerminator (Capabilities.TunnelFilter,
// wherever it has a tunnel device): SetTunnelEndpoint makes an uplink
// accept tunnelled frames only for the endpoint's addresses and MAC, and
// for its multicast groups with the group's MAC. The uplink is a real
// kernel interface, and the kernel keeps some foreign frames from its
// tunnel devices by itself: one for another station's MAC
// (PACKET_OTHERHOST, which a veth or a promiscuous NIC delivers) and one
// for an address that is not local (forwarded instead, where the namespace
// forwards) never reach a tunnel device's socket. But one for the subnet's
// broadcast, the limited broadcast or a group anything on the host joined
// does, and so does one for our address with a broadcast or multicast MAC:
// the device decapsulates it and a decap rule that does not match the outer
// destination delivers it. So the endpoint is filters in chain 0, on the
// uplink's ingress, ahead of every rule:
//
//	prio 1  sealed-address frames: drop
//	prio 2  UDP to a tunnel device's port, for one of the endpoint's addresses
//	        and its MAC, or one of its groups and the group's MAC: gact ok,
//	        into the kernel's stack (and so to the tunnel device and the
//	        decap rules there), past the rules of the uplink
//	prio 3  the rest of the UDP to the tunnel ports, IPv4 and IPv6: gact shot,
//	        counted as hal.ReasonNotLocal in Stats and in the uplink's
//	        PortCounters.Drops
//	prio 4  the jump to the rules (generations, below)
//
// flower's EtherType is the one after up to two VLAN tags, so tagged
// frames are filtered alike. An outer IP fragment has no UDP header to
// match: it is a miss (a later fragment goes to the host with reason
// fragment), and no fragment reaches a tunnel device. The groups are
// joined on the uplink (one UDP socket per group holds the membership), so
// that the kernel takes their frames at all; a replaced endpoint's new
// accept filters land before the old ones go, and an endpoint without
// addresses removes the filters and leaves the groups, as Close does.
// Frames for other endpoints thus never reach a decap rule, a VM or the
// host; without an endpoint the kernel's behaviour above is all there is.
//
// # Generations
//
// Every (scope, generation) has a chain of its own. Chain 0 jumps to the
// first scope's dispatch chain, which holds a single filter jumping to the
// active generation's chain; each generation chain ends with a catch-all
// that jumps to the next scope's dispatch chain, and after the last scope
// to the exception path's miss chain. Activate replaces one filter, the
// dispatch filter, whatever the number of rules: the figure
// shadow.activate_1m_us.tcflower measures it. The kernel allows 16 chain
// jumps per packet, hence at most 7 scopes (Capabilities.MaxScopes: 14 jumps
// reach the last scope's rules, one more the miss chain, the to-host chain
// or a DecTTL rule's chain, and one more from there to the to-host chain),
// and rules of a lower scope are tried before those of a higher one
// whatever their priorities.
//
// # Exception path
//
// Open creates a veth pair in the ports' namespace, tcfx<block>/tcfy<block>
// (MTU 65535), the channel to the host, and Close deletes it. A frame for the
// host gets two 802.1Q tags pushed by act_vlan and leaves by mirred egress
// redirect to tcfx; the driver reads tcfy with an AF_PACKET socket
// (internal/afpacket, which puts back the tag the kernel moves into
// auxdata), takes the tags off and hands ReadExceptions the frame as it
// arrived. The outer tag's VID is the in-port's position in Ports; the
// inner tag's TCI (VID and priority bits) is a hal.Reason (miss, fragment)
// or, from 16 up, the value Apply gave a ToHost rule, which names the rule
// and its reason (32744 to_host rules at most).
//
// Misses: chain 0 (while no scope exists) and the last scope's generation
// chains end in a jump to the miss chain, which holds, per port, a
// catch-all on indev that tags the frame "miss" and redirects it, and ahead
// of it a filter that tags later IP fragments "fragment" (flower cannot see
// their ports). On uplinks, frames the kernel's own underlay needs pass into
// its stack instead: UDP to the tunnel devices' ports (read from the
// devices), so that the kernel decapsulates them for the decap rules, and ARP
// and IPv6 neighbour solicitations and advertisements, so that the tunnel
// devices resolve their next hops. A ToHost rule pushes its inner tag and
// jumps to the host chain, which pushes the port tag per indev and
// redirects. A DecTTL rule's filter jumps to a chain of its own, where a
// frame whose TTL or hop limit is 0 or 1 goes to the host with reason ttl
// as it arrived, and the others get the rule's actions (DecTTL is pedit's
// "ip ttl add 0xff", and csum for IPv4). Stats and PortCounters count
// exceptions from these filters', the TTL checks' and the ToHost rules'
// counters. Without act_vlan, act_mirred or veth, Open still succeeds:
// Capabilities report no exception path, no ToHost and no DecTTL, the notes
// say why, and a packet no rule takes continues into the port's kernel
// stack.
//
// Tunnelled misses: after the ports' filters, the miss chain holds one
// catch-all per tunnel device (indev vx0, gnv0): a frame the device
// decapsulated and no decap rule took. tc sees it after the kernel removed
// the outer headers, so its first action is a BPF program (act_bpf,
// bpf/tunmiss.c, committed as tunmiss_bpfel.o like the xdp driver's) that
// reads the tunnel metadata with bpf_skb_get_tunnel_key and
// bpf_skb_get_tunnel_opt and puts it in front of the frame as a record
// (EtherType 0x88B6: tunnel ID, outer source and destination, TOS, TTL,
// flow label, Geneve options); then the two tags (the port tag's VID 0,
// its priority bits the tunnel's kind) and the redirect. decodeException
// rebuilds the frame as the wire carried it, with the outer headers the
// metadata gives (wire.NewEncapTemplate) and InPort the uplink whose
// tunnel endpoint holds the outer destination (the first uplink without
// one); what the kernel does not keep is filled in: the outer destination
// MAC is that endpoint's (which the endpoint filter made every such frame
// carry), the outer source MAC zero, the UDP source port the inner flow's
// hash, the IPv4 identification, flags and UDP checksum zero, Geneve's
// O and C bits clear. Exception.VNI is set. A slow path thus walks the
// first packet of a connection a remote VM opens, as on any NIC.
// Capabilities.TunnelMissesUnseen is false; where the program does not
// load or the kernel lacks act_bpf, it is true, the notes say why, and
// such a frame continues into the tunnel device's stack as before.
//
// # Address learning
//
// Where it has an exception path, the NIC implements hal.AddressLearner
// with hal/learn (Capabilities.AddressLearning; without one it reports
// the capability absent and ReadLearned fails with hal.ErrNotSupported):
// ReadExceptions learns from every frame a vport sent that it reads from
// the channel (a first packet's source, an ARP's sender, a gratuitous ARP
// or unsolicited neighbour advertisement as an announcement), and
// ReadLearned hands the reports out. A vport's ARP and neighbour discovery
// are misses like any other frame no rule takes (or hit the vswitch's
// ToHost rules) and reach the channel; only an uplink's pass to the
// kernel's stack, for the tunnel devices' next hops, and an uplink's frames
// teach nothing anyway. No filter does any work for learning. Learning
// follows the host's reading: a frame is learned when ReadExceptions reads
// it.
//
// # Placement and honesty
//
// [Placement] says where rules may live: hardware only (skip_sw), software
// only (skip_hw) or either. Open probes with a skip_sw filter in a chain no
// packet reaches: on a device without tc offload (veth, or a NIC whose
// hw-tc-offload feature is fixed off) the kernel refuses it, and the driver
// reports that it has no hardware tables: hardware-only placement fails with
// hal.ErrNotSupported, and placement "any" programs skip_hw rules and reports
// Capabilities.Location kernel. Per rule, Dump reads in_hw / not_in_hw and
// in_hw_count back from the kernel. The hw-tc-offload feature is read with
// ethtool (and turned on where hardware placement is allowed and the device
// can change it, then read back). Each tc action kind is probed the same
// way; an action the kernel lacks is absent from Capabilities.Actions. A
// probe answers three ways: the kernel took the filter (supported), refused
// it for want of the feature (ENOENT, EOPNOTSUPP, EINVAL: not supported,
// said in Capabilities.Notes), or the probe itself failed (EPERM, ENOBUFS,
// a socket error, …): Open then fails with a *[ProbeError] giving the
// reason, and never reads the failure as a missing feature.
//
// # Batches and errors
//
// Apply sends its operations in as few sendmsg calls as possible (1024
// messages each), asking only the last message of each for an
// acknowledgement: the kernel answers each failing message with its own
// error, so results say exactly which operations landed. A kernel refusal
// is a *hal.OpError naming the operation and the rule around a
// *[KernelError] carrying the errno and the kernel's reason (extended
// acknowledgement); errors.Is maps EOPNOTSUPP, ENOSPC/ENOMEM, EEXIST and
// ENOENT to hal's sentinels. A modify that keeps its priority and
// generation replaces the filter in place (one step); one that moves adds
// the new filter before removing the old. Close deletes the qdiscs, which
// destroys the block and every filter in it.
//
// Config.MaxBatch bounds one Apply (Capabilities.MaxBatch; a larger batch
// is refused whole with hal.ErrBatchTooLarge) and Config.MaxRules is the
// table size (Capabilities.MaxRules; an add beyond it fails with
// hal.ErrTableFull and touches nothing installed); both default to 1<<20
// (DefaultMaxBatch, DefaultMaxRules). Batches are not atomic
// (Capabilities.AtomicBatch false, no hal.AtomicApplier, and a note says
// why): tc has no transaction over filters, the kernel runs and answers
// each filter message on its own, so a failed batch may have applied part
// of itself, and its results say which operations landed. An undo would
// be more messages that can fail in turn, and packets would meet the
// partial batch meanwhile.
//
// # Not done, and known differences
//
//   - A tunnelled miss reaches the host rebuilt, not as it arrived (see
//     Exception path): the outer MACs, the UDP source port, the IPv4
//     identification and flags and Geneve's O/C bits are not the wire's.
//     A later inner fragment is reason miss, not fragment. ToHost is still
//     refused in decap rules and after an encap (the BPF action runs only
//     in the miss chain), and a decapsulated frame that a rule without an
//     in-port match hands to the host (ToHost, or an expiring TTL)
//     continues into the tunnel device's stack.
//   - NVGRE is an encapsulation only. With a flow-based gretap device
//     ("ip link add gt0 type gretap external") in Config.Tunnels, Encap
//     NVGRE is tunnel_key set (key VSID<<8 | FlowID, nocsum: RFC 7637's
//     GRE has K set and C, S clear; gretap writes protocol 0x6558) and a
//     redirect to it, over IPv4 only (gretap; ip6gretap would be another
//     device). The FlowID is the Encap's (0 unless set), not a per-flow
//     hash as nicpath's host path writes. There is no NVGRE decap
//     (Decaps lacks it, Validate refuses the match): flower's enc_key_id
//     has no mask, so a decap rule would match one FlowID only, while a
//     sender spreads a VSID's flows over all 256. GRE frames on an uplink
//     are misses, which reach the host as they arrived, and the vswitch
//     decapsulates them on its host path.
//   - A rule matching "not tunnelled" needs an in-port, and one matching
//     "no VLAN tag" needs num_of_vlans (see Layout in the kernel). On an
//     uplink, such a rule whose match also fits the outer headers of a
//     tunnelled frame (UDP to a tunnel port) takes that frame before the
//     kernel decapsulates it, unless the tunnel endpoint's filter passed
//     it first; an exact match of a frame that did not arrive tunnelled
//     (every flow of the vswitch) never fits one that did.
//   - On uplinks, UDP to the tunnel ports, ARP and IPv6 neighbour discovery
//     no rule takes go to the kernel's stack, not to the host's slow path;
//     any other traffic of the host's own on the uplink is a miss.
//   - Exceptions keep their order per port, but two ports' frames may
//     interleave; a frame the port's driver merged (GRO), or a VM's TSO
//     segment, reaches the host as one frame of up to 64 KiB (its checksum
//     completed).
//   - An IPv6 address rewrite, and an IPv4 one whose old address the rule
//     does not pin, leave a TSO/GSO frame with its old pseudo-header sum
//     (see Checksums): the device that segments it writes wrong checksums.
//   - Overlapping rules of equal priority are not ordered by RuleID, and
//     flower refuses two rules with the same match and priority (EEXIST).
//   - The outer MACs of an encapsulation come from the kernel's route and
//     neighbour table, not from Encap.SrcMAC/DstMAC, for IPv4 and IPv6
//     outer headers alike.
//   - Outer IPv6 is decided per tunnel kind when Open runs (the device's
//     UDP/IPv6 socket, above): a device brought up later, or IPv6 enabled
//     later, is not seen until the NIC is opened again.
//   - L4 port rewrites assume IPv4 without options and IPv6 without
//     extension headers: Linux 6.1's pedit takes "tcp"/"udp" offsets from
//     the transport header, which is not set yet at tc ingress.
//   - A decap rule counts the inner frame (it matches after the kernel
//     removed the outer headers).
//   - Byte counters count from L3 (Capabilities.Counters.BytesIncludeL2
//     false): at tc ingress the Ethernet header is already pulled.
//
// # Tests
//
// The unit tests check the encoded netlink messages attribute by attribute
// against mdlayher/netlink's nltest (the exception path's filters and tags
// included, with a fake channel for ReadExceptions), and run anywhere. The
// kernel tests (TestKernel*, and TestConformance running the conformance
// suite) need cls_flower and the tc actions, which this project's build
// machine lacks:
// TestVM builds them into a static test binary and runs them in a VM booted
// on Debian's 6.1 kernel (internal/vmtest), with real namespaces, veths,
// VXLAN and Geneve devices and real frames, over IPv4 and IPv6 underlays
// (2001:db8::/32; TestKernelOuterIPv6 checks every outer IPv6 field the
// kernel writes, its UDP checksum included), the tunnel endpoint
// (TestKernelTunnelEndpoint: what the kernel decapsulates without it, what
// it drops and counts with it) and checksums with default offloads
// (TestKernelPartialChecksums*, TestKernelExceptionPartialChecksums),
// tunnelled misses (TestKernelTunnelMiss*: rebuilt with their VNI and
// outer addresses over IPv4 and IPv6, Geneve options, inner VLAN tags; a
// no-VLAN decap rule leaves a tagged inner frame to the host) and NVGRE's
// framing (TestKernelNVGREEncap). TestTunnelMissProgramLoads loads the BPF
// action on this machine's kernel, and TestGenerated checks the committed
// object against its source. vswitch/vswitchtest/peerbed runs the vswitch on this driver in the VM tier against
// a plain Linux VXLAN host: a remote VM opens connections to the local one
// through stateful inbound ACLs, and the allowed one runs on tc filters
// both ways.
// `go test -run TestVM -args -vm.run PATTERN` runs a part of them.
// BenchmarkVMRuleRate and BenchmarkVMActivate boot the VM for the figures.
package tcflower
