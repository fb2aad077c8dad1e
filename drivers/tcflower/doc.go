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
// Actions: Output is mirred egress redirect; Drop is gact shot; header
// rewrites are one pedit (extended keys, encoded here since go-tc has no
// pedit) followed by csum, because pedit leaves checksums stale; PushVLAN
// and PopVLAN are act_vlan; Encap is tunnel_key set and a redirect to the
// flow-based VXLAN or Geneve device named in [Config].Tunnels, which writes
// the outer headers along the kernel's route; Decap matches the frame on
// that device's ingress (where the kernel delivers it with the outer headers
// as metadata: enc_key_id, enc_src_ip, enc_dst_ip) and unsets the tunnel
// key. Count needs nothing: every tc action counts.
//
// # Generations
//
// Every (scope, generation) has a chain of its own. Chain 0 jumps to the
// first scope's dispatch chain, which holds a single filter jumping to the
// active generation's chain; each generation chain ends with a catch-all
// that jumps to the next scope's dispatch chain. Activate replaces one
// filter, the dispatch filter, whatever the number of rules: the figure
// shadow.activate_1m_us.tcflower measures it. The kernel allows 16 chain
// jumps per packet, hence at most 7 scopes (Capabilities.MaxScopes), and
// rules of a lower scope are tried before those of a higher one whatever
// their priorities.
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
// way; an action the kernel lacks is absent from Capabilities.Actions.
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
// # Not done, and known differences
//
//   - No exception path: a packet no filter takes continues into the port's
//     kernel stack; ReadExceptions returns hal.ErrNotSupported, ToHost and
//     DecTTL are refused. Inject works (AF_PACKET).
//   - Overlapping rules of equal priority are not ordered by RuleID, and
//     flower refuses two rules with the same match and priority (EEXIST).
//   - The outer MACs of an encapsulation come from the kernel's route and
//     neighbour table, not from Encap.SrcMAC/DstMAC.
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
// against mdlayher/netlink's nltest, and run anywhere. The kernel tests
// (TestKernel*, and TestConformance running the conformance suite) need
// cls_flower and the tc actions, which this project's build machine lacks:
// TestVM builds them into a static test binary and runs them in a VM booted
// on Debian's 6.1 kernel (internal/vmtest), with real namespaces, veths,
// VXLAN and Geneve devices and real frames. BenchmarkVMRuleRate and
// BenchmarkVMActivate boot the VM for the figures.
package tcflower
