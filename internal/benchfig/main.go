// Command benchfig runs nicpath's benchmarks and prints the figures named in
// DESIGN.md, one a line, as "name value unit target", so that runs can be
// compared side by side.
//
// A figure comes from a metric that a benchmark reports (b.ReportMetric or the
// standard ns/op, allocs/op). A figure whose benchmark does not exist yet, or
// that needs root when not run as root, is absent from the output rather than
// replaced by a constant; a note on stderr says why.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// figure maps one benchmark metric to a named figure.
type figure struct {
	Name   string // as in DESIGN.md
	Dir    string // the module's directory, relative to the repository's root ("" for the core module)
	Pkg    string // package path relative to the module's directory
	Bench  string // benchmark name, without "Benchmark" and the -N suffix; sub-benchmarks with '/'
	Metric string // the unit of the metric on the benchmark line
	Unit   string // the unit printed
	Target string // the target, printed after the value
	Root   bool   // needs root (namespaces, BPF, the VM)
	// Benchtime, when set, is the package's -benchtime unless -benchtime
	// is given (a migration benchmark needs a count, not a duration).
	Benchtime string
}

// figures lists every figure make bench prints, in DESIGN.md's order.
var figures = []figure{
	{Name: "softnic.hit_encap_ns", Pkg: "./drivers/softnic", Bench: "HitEncap/uniform", Metric: "ns/pkt", Unit: "ns", Target: "<= 40 (1M rules, each packet a random flow)"},
	{Name: "softnic.hit_encap_ns.hotset", Pkg: "./drivers/softnic", Bench: "HitEncap/hotset", Metric: "ns/pkt", Unit: "ns", Target: "<= 40 (1M rules, 4096 hot flows)"},
	{Name: "softnic.hit_encap_cpu_ns", Pkg: "./drivers/softnic", Bench: "HitEncap/uniform", Metric: "cpu-ns/pkt", Unit: "ns", Target: "<= 40 (CPU time)"},
	{Name: "softnic.hit_encap_rxcopy_ns", Pkg: "./drivers/softnic", Bench: "HitEncap/uniform", Metric: "rxcopy-ns/pkt", Unit: "ns", Target: "reported (the harness's copy into the receive buffers, a NIC's DMA, in the figures above; timed alone in the same run)"},
	{Name: "softnic.hit_encap_net_ns", Pkg: "./drivers/softnic", Bench: "HitEncap/uniform", Metric: "net-ns/pkt", Unit: "ns", Target: "reported (hit_encap_ns without the harness's receive copy)"},
	{Name: "softnic.hit_encap_net_cpu_ns", Pkg: "./drivers/softnic", Bench: "HitEncap/uniform", Metric: "net-cpu-ns/pkt", Unit: "ns", Target: "reported (hit_encap_cpu_ns without the harness's receive copy)"},
	{Name: "softnic.allocs_per_packet", Pkg: "./drivers/softnic", Bench: "HitEncap/uniform", Metric: "allocs/pkt", Unit: "allocs", Target: "0"},
	{Name: "softnic.rule_ops_per_s", Pkg: "./drivers/softnic", Bench: "RuleOps", Metric: "ops/s", Unit: "ops/s", Target: ">= 10000000"},
	{Name: "softnic.rule_ops_per_cpu_s", Pkg: "./drivers/softnic", Bench: "RuleOps", Metric: "ops/cpu-s", Unit: "ops/s", Target: ">= 10000000 (CPU time)"},
	{Name: "softnic.bytes_per_rule", Pkg: "./drivers/softnic", Bench: "RuleMemory", Metric: "bytes/rule", Unit: "bytes", Target: "reported"},
	{Name: "softnic.activate_us", Pkg: "./drivers/softnic", Bench: "Activate", Metric: "us/activate", Unit: "us", Target: "<= 100"},
	{Name: "softnic.bytes_per_mapping", Pkg: "./drivers/softnic", Bench: "MappingMemory", Metric: "bytes/mapping", Unit: "bytes", Target: "<= 64 (8M mappings, each a per-destination rule of its own VM)"},
	{Name: "softnic.mappings_measured", Pkg: "./drivers/softnic", Bench: "MappingMemory", Metric: "mappings", Unit: "mappings", Target: "8388608 (SOFTNIC_BENCH_MAPPINGS changes it)"},
	{Name: "softnic.apply_slowpath_cpu_ns", Pkg: "./drivers/softnic", Bench: "ApplySlowPath", Metric: "apply_cpu_ns/add", Unit: "ns", Target: "reported (Apply per rule as the vswitch's slow path calls it: batches of 64, caches evicted between, a table of steady size)"},
	{Name: "policy.build_bytes_per_mapping", Pkg: "./policy", Bench: "LoadMappings", Metric: "state_bytes/mapping", Unit: "bytes", Target: "reported (heap Build adds; the VM records stay the Builder's)"},
	{Name: "policy.live_bytes_per_mapping", Pkg: "./policy", Bench: "LoadMappings", Metric: "live_bytes/mapping", Unit: "bytes", Target: "<= 512 (everything live after Build, Builder included)"},
	{Name: "policy.table_bytes_per_mapping", Pkg: "./policy", Bench: "LoadMappings", Metric: "table_bytes/mapping", Unit: "bytes", Target: "<= 64 (the CA->PA table alone, rebuilt)"},
	{Name: "policy.mappings_per_s", Pkg: "./policy", Bench: "LoadMappings", Metric: "mappings/s", Unit: "mappings/s", Target: ">= 1000000"},
	{Name: "policy.mappings_per_cpu_s", Pkg: "./policy", Bench: "LoadMappings", Metric: "mappings/cpu_s", Unit: "mappings/s", Target: ">= 1000000 (CPU time)"},
	{Name: "policy.load_1m_s", Pkg: "./policy", Bench: "LoadFile1M", Metric: "s/load", Unit: "s", Target: "<= 3 (LoadFile of a 1M-mapping file, checks included)"},
	{Name: "policy.load_1m_cpu_s", Pkg: "./policy", Bench: "LoadFile1M", Metric: "cpu_s/load", Unit: "s", Target: "reported (CPU time of the same)"},
	{Name: "policy.load_peak_bytes_per_mapping", Pkg: "./policy", Bench: "LoadFile1M", Metric: "peak_bytes/mapping", Unit: "bytes", Target: "<= 512 (heap peak during that load)"},
	{Name: "vswitchd.rss_bytes_per_mapping", Pkg: "./agent", Bench: "Daemon1M", Metric: "rss_bytes/mapping", Unit: "bytes", Target: "reported (daemon resident after starting on a 1M-mapping file)", Benchtime: "1x"},
	{Name: "vswitchd.rss_after_reload_bytes_per_mapping", Pkg: "./agent", Bench: "Daemon1M", Metric: "rss_after_reload_bytes/mapping", Unit: "bytes", Target: "reported (resident after reloading a changed 1M-mapping file)", Benchtime: "1x"},
	{Name: "vswitchd.peak_rss_bytes_per_mapping", Pkg: "./agent", Bench: "Daemon1M", Metric: "peak_rss_bytes/mapping", Unit: "bytes", Target: "reported (VmHWM over the start and the reload)", Benchtime: "1x"},
	{Name: "vswitchd.reload_1m_s", Pkg: "./agent", Bench: "Daemon1M", Metric: "reload_s", Unit: "s", Target: "reported (reload of a changed 1M-mapping file, applied)", Benchtime: "1x"},
	{Name: "vswitchd.reload_1m_cpu_s", Pkg: "./agent", Bench: "Daemon1M", Metric: "reload_cpu_s", Unit: "s", Target: "reported (the daemon's CPU time for that reload)", Benchtime: "1x"},
	{Name: "policy.route_lookup_ns", Pkg: "./policy/match", Bench: "RouteLookup/100k", Metric: "ns/lookup", Unit: "ns", Target: "reported (LPM: trie, IPv4 as sorted intervals; 100k routes)"},
	{Name: "policy.route_lookup_cpu_ns", Pkg: "./policy/match", Bench: "RouteLookup/100k", Metric: "cpu_ns/lookup", Unit: "ns", Target: "reported (LPM: trie, IPv4 as sorted intervals; 100k routes, CPU time)"},
	{Name: "policy.route_lookup_linear_ns", Pkg: "./policy/match", Bench: "RouteLookup/100k", Metric: "linear_ns/lookup", Unit: "ns", Target: "reported (linear scan, same routes, same run)"},
	{Name: "policy.route_lookup_speedup", Pkg: "./policy/match", Bench: "RouteLookup/100k", Metric: "speedup_cpu", Unit: "x", Target: "reported (linear / LPM, CPU time)"},
	{Name: "policy.acl_eval_ns", Pkg: "./policy/match", Bench: "ACLEval/1000", Metric: "ns/eval", Unit: "ns", Target: "reported (classifier, 1,000 rules)"},
	{Name: "policy.acl_eval_cpu_ns", Pkg: "./policy/match", Bench: "ACLEval/1000", Metric: "cpu_ns/eval", Unit: "ns", Target: "reported (classifier, 1,000 rules, CPU time)"},
	{Name: "policy.acl_eval_linear_ns", Pkg: "./policy/match", Bench: "ACLEval/1000", Metric: "linear_ns/eval", Unit: "ns", Target: "reported (linear scan, same rules, same run)"},
	{Name: "policy.acl_eval_speedup", Pkg: "./policy/match", Bench: "ACLEval/1000", Metric: "speedup_cpu", Unit: "x", Target: "reported (linear / classifier, CPU time)"},
	{Name: "xdp.hit_encap_ns", Pkg: "./drivers/xdp", Bench: "HitEncap/cached", Metric: "ns/pkt", Unit: "ns", Target: "<= 40 (the program's instructions and helper calls: 1M rules, one flow repeated so that its table lines stay cached, net of the test-run harness measured in the same run)", Root: true},
	{Name: "xdp.hit_encap_ns.hotset", Pkg: "./drivers/xdp", Bench: "HitEncap/hotset", Metric: "ns/pkt", Unit: "ns", Target: "reported (the same, 4096 flows of the 1M in a pseudo-random order)", Root: true},
	{Name: "xdp.hit_encap_ns.uniform", Pkg: "./drivers/xdp", Bench: "HitEncap/uniform", Metric: "ns/pkt", Unit: "ns", Target: "reported (the same, each packet a random flow of the 1M: its table4 slot a cache and TLB miss)", Root: true},
	{Name: "xdp.rule_ops_per_s", Pkg: "./drivers/xdp", Bench: "RuleOps", Metric: "ops/s", Unit: "ops/s", Target: ">= 2000000", Root: true},
	{Name: "tcflower.rule_rate_vs_tc_batch", Pkg: "./drivers/tcflower", Bench: "VMRuleRate", Metric: "vs_tc_batch", Unit: "x", Target: ">= 1", Root: true},
	{Name: "vswitch.slowpath_flows_per_s", Pkg: "./vswitch", Bench: "SlowPath/realistic/memo=off", Metric: "flows/s", Unit: "flows/s", Target: ">= 500000 (realistic policy, distinct endpoints, memo off; steady table size: flows idle out as new ones arrive, Maintain's expiry counted)"},
	{Name: "vswitch.slowpath_flows_per_cpu_s", Pkg: "./vswitch", Bench: "SlowPath/realistic/memo=off", Metric: "cpu_flows/s", Unit: "flows/s", Target: ">= 500000 (CPU time, memo off, steady table size, Maintain's expiry counted)"},
	{Name: "vswitch.slowpath_apply_cpu_ns", Pkg: "./vswitch", Bench: "SlowPath/realistic/memo=off", Metric: "apply_cpu_ns/flow", Unit: "ns", Target: "reported (softnic's Apply per flow: its add and the deletion of an idle flow, counted in the figures above)"},
	{Name: "vswitch.slowpath_maintain_cpu_ns", Pkg: "./vswitch", Bench: "SlowPath/realistic/memo=off", Metric: "maintain_cpu_ns/flow", Unit: "ns", Target: "reported (Maintain per flow: counter reads, idle expiry, its Apply of deletions; counted in the figures above)"},
	{Name: "vswitch.slowpath_switch_flows_per_cpu_s", Pkg: "./vswitch", Bench: "SlowPath/realistic/memo=off", Metric: "switch_cpu_flows/s", Unit: "flows/s", Target: "reported (CPU time net of the NIC's Apply, memo off, steady table size)"},
	{Name: "vswitch.slowpath_growing_flows_per_cpu_s", Pkg: "./vswitch", Bench: "SlowPath/growing/memo=off", Metric: "cpu_flows/s", Unit: "flows/s", Target: "reported (CPU time, memo off, tables growing from empty to 262,144 flows, nothing expiring, replaced between cycles untimed)"},
	{Name: "vswitch.slowpath_memo_flows_per_s", Pkg: "./vswitch", Bench: "SlowPath/realistic/memo=on", Metric: "flows/s", Unit: "flows/s", Target: "reported (realistic policy, memo on, steady table size)"},
	{Name: "vswitch.slowpath_memo_flows_per_cpu_s", Pkg: "./vswitch", Bench: "SlowPath/realistic/memo=on", Metric: "cpu_flows/s", Unit: "flows/s", Target: "reported (CPU time, memo on, steady table size)"},
	{Name: "vswitch.slowpath_onepair_flows_per_cpu_s", Pkg: "./vswitch", Bench: "SlowPath/onepair", Metric: "cpu_flows/s", Unit: "flows/s", Target: "reported (one pair of VMs, no ACL: the memo's best case)"},
	{Name: "gateway.flows_per_s", Pkg: "./gateway", Bench: "SlowPath", Metric: "flows/s", Unit: "flows/s", Target: "reported (new translated connections through the gateway's slow path, both rules offloaded to softnic; VM ports kept)", Benchtime: "50000x"},
	{Name: "gateway.flows_per_cpu_s", Pkg: "./gateway", Bench: "SlowPath", Metric: "cpu_flows/s", Unit: "flows/s", Target: "reported (the same, CPU time of the process)", Benchtime: "50000x"},
	{Name: "gateway.flows_per_cpu_s.rewrite", Pkg: "./gateway", Bench: "SlowPathRewrite", Metric: "cpu_flows/s", Unit: "flows/s", Target: "reported (the same, every connection's port rewritten: unique rules)", Benchtime: "50000x"},
	{Name: "vswitch.walk_cpu_ns", Pkg: "./vswitch", Bench: "Walk", Metric: "cpu_ns/walk", Unit: "ns", Target: "reported (the layer walk alone, realistic policy)"},
	{Name: "vswitch.first_packet_p50_us", Pkg: "./vswitch", Bench: "FirstPacketLatency", Metric: "p50_us", Unit: "us", Target: "reported (realistic policy, memo off)"},
	{Name: "vswitch.first_packet_p99_us", Pkg: "./vswitch", Bench: "FirstPacketLatency", Metric: "p99_us", Unit: "us", Target: "reported (realistic policy, memo off)"},
	{Name: "vswitch.bytes_per_flow", Pkg: "./vswitch", Bench: "FlowMemory/host", Metric: "bytes/flow", Unit: "bytes", Target: "reported (flow kept in the host)"},
	{Name: "vswitch.bytes_per_offloaded_flow", Pkg: "./vswitch", Bench: "FlowMemory/offloaded", Metric: "bytes/flow", Unit: "bytes", Target: "reported (the switch's own; the NIC's rule apart)"},
	{Name: "shadow.activate_10k_us.softnic", Pkg: "./vswitch", Bench: "ShadowActivate/10k", Metric: "us/activate", Unit: "us", Target: "<= 100, flat"},
	{Name: "shadow.activate_100k_us.softnic", Pkg: "./vswitch", Bench: "ShadowActivate/100k", Metric: "us/activate", Unit: "us", Target: "<= 100, flat"},
	{Name: "shadow.activate_1m_us.softnic", Pkg: "./vswitch", Bench: "ShadowActivate/1M", Metric: "us/activate", Unit: "us", Target: "<= 100"},
	{Name: "shadow.activate_1m_us.xdp", Pkg: "./drivers/xdp", Bench: "Activate/1M", Metric: "us/activate", Unit: "us", Target: "<= 1000 (1M rules and their shadows through Apply)", Root: true},
	{Name: "shadow.activate_100k_us.tcflower", Pkg: "./drivers/tcflower", Bench: "VMActivate", Metric: "us/activate_worst", Unit: "us", Target: "<= 1000 (worst of 100, 100k rules in the VM tier)", Root: true},
	{Name: "sealed.open_vs_secretbox", Pkg: "./securechan", Bench: "SealedOpen", Metric: "open_vs_secretbox", Unit: "x", Target: "<= 1.1"},
	{Name: "sealed.open_route_cpu_ns.softnic", Pkg: "./drivers/softnic", Bench: "SealedOpenRoute/sealed", Metric: "cpu-ns/pkt", Unit: "ns", Target: "reported (clear frames beside it)"},
	{Name: "sealed.clear_route_cpu_ns.softnic", Pkg: "./drivers/softnic", Bench: "SealedOpenRoute/clear", Metric: "cpu-ns/pkt", Unit: "ns", Target: "reported"},
	{Name: "sealed.allocs_per_pkt.softnic", Pkg: "./drivers/softnic", Bench: "SealedOpenRoute/sealed", Metric: "allocs/pkt", Unit: "allocs", Target: "0"},
	{Name: "sealed.allocs_per_open", Pkg: "./securechan", Bench: "SealedOpen", Metric: "allocs/op", Unit: "allocs", Target: "0"},
	{Name: "sealed.e2e_route_ns", Pkg: "./drivers/softnic", Bench: "SealedE2ERoute/sealed", Metric: "cpu-ns/pkt", Unit: "ns", Target: "reported (thread CPU per sealed frame opened and forwarded on its sealed route; clear beside it)"},
	{Name: "sealed.e2e_route_ns.clear", Pkg: "./drivers/softnic", Bench: "SealedE2ERoute/clear", Metric: "cpu-ns/pkt", Unit: "ns", Target: "reported (the same frames in clear, on their flows)"},
	{Name: "securechan.msgs_per_s", Pkg: "./securechan", Bench: "ChannelUnix", Metric: "msgs_per_s", Unit: "msgs/s", Target: ">= 500000"},
	{Name: "remote.apply_ops_ratio", Pkg: "./drivers/remote", Bench: "Apply", Metric: "apply_ops_ratio", Unit: "x", Target: ">= 0.5 (remote(softnic) over a unix socket vs softnic, same run)"},
	{Name: "remote.apply_cpu_ratio", Pkg: "./drivers/remote", Bench: "Apply", Metric: "apply_cpu_ratio", Unit: "x", Target: "reported (the same in ops per CPU second, both ends)"},
	{Name: "remote.exceptions_per_s", Pkg: "./drivers/remote", Bench: "Exceptions", Metric: "exceptions/s", Unit: "exc/s", Target: "reported"},
	{Name: "remote.first_packet_p50_us", Pkg: "./drivers/remote", Bench: "FirstPacket", Metric: "p50_us", Unit: "us", Target: "reported (added by the channel)"},
	{Name: "remote.first_packet_p99_us", Pkg: "./drivers/remote", Bench: "FirstPacket", Metric: "p99_us", Unit: "us", Target: "reported (added by the channel)"},
	{Name: "veth.xdp_vs_kernel_vxlan", Pkg: "./drivers/xdp", Bench: "VethVsKernel", Metric: "xdp_vs_kernel", Unit: "x", Target: ">= 2", Root: true},
	{Name: "veth.tcp_bulk_gbps.softnic", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "TCPStreamTwoNicpathHosts/softnic", Metric: "gbps", Unit: "Gbit/s", Target: "reported (one TCP stream VM->VM, both hosts nicpath, default offloads)", Root: true, Benchtime: "32x"},
	{Name: "veth.tcp_bulk_gbps.xdp", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "TCPStreamTwoNicpathHosts/xdp", Metric: "gbps", Unit: "Gbit/s", Target: "reported (one TCP stream VM->VM, both hosts nicpath, default offloads)", Root: true, Benchtime: "32x"},
	{Name: "veth.tcp_vs_kernel_vxlan.softnic", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "TCPStreamTwoNicpathHosts/softnic", Metric: "vs_kernel_vxlan", Unit: "x", Target: "reported (vs kernel VXLAN + bridge hosts, same run)", Root: true, Benchtime: "32x"},
	{Name: "veth.tcp_vs_kernel_vxlan.xdp", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "TCPStreamTwoNicpathHosts/xdp", Metric: "vs_kernel_vxlan", Unit: "x", Target: ">= 1 (vs kernel VXLAN + bridge hosts, same run)", Root: true, Benchtime: "32x"},
	{Name: "peer.cps_vs_ovs.softnic", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerCPS", Metric: "softnic_vs_ovs", Unit: "x", Target: ">= 2 (new TCP connections/s VM->VM across hosts, connect + 1-byte answer + close, load in its own processes, each one epoll loop over non-blocking sockets with 8 transactions in flight; policy without ACL: nicpath's port-wildcard rules and OVS's megaflows carry new connections without their slow path; median of 20 per-round ratios vs OVS userspace datapath, same run)", Root: true, Benchtime: "20x"},
	{Name: "peer.cps_vs_ovs.xdp", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerCPS", Metric: "xdp_vs_ovs", Unit: "x", Target: ">= 2 (the same, nicpath on xdp)", Root: true, Benchtime: "20x"},
	{Name: "peer.cps.softnic", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerCPS", Metric: "softnic_cps", Unit: "conns/s", Target: "reported", Root: true, Benchtime: "20x"},
	{Name: "peer.cps.xdp", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerCPS", Metric: "xdp_cps", Unit: "conns/s", Target: "reported", Root: true, Benchtime: "20x"},
	{Name: "peer.cps.ovs", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerCPS", Metric: "ovs_cps", Unit: "conns/s", Target: "reported (OVS userspace datapath, same run)", Root: true, Benchtime: "20x"},
	{Name: "peer.cpu_us_per_conn.softnic", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerCPS", Metric: "softnic_cpu_us/conn", Unit: "us", Target: "reported (CPU per connection of the load's client and server and nicpath's process, softirq work where it ran)", Root: true, Benchtime: "20x"},
	{Name: "peer.cpu_us_per_conn.xdp", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerCPS", Metric: "xdp_cpu_us/conn", Unit: "us", Target: "reported (the same, nicpath on xdp)", Root: true, Benchtime: "20x"},
	{Name: "peer.cpu_us_per_conn.ovs", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerCPS", Metric: "ovs_cpu_us/conn", Unit: "us", Target: "reported (the same with OVS's daemons, same run)", Root: true, Benchtime: "20x"},
	{Name: "peer.load_cpu_us_per_conn.softnic", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerCPS", Metric: "softnic_load_cpu_us/conn", Unit: "us", Target: "reported (the part of peer.cpu_us_per_conn.softnic the load's client and server took, softirq work in them included)", Root: true, Benchtime: "20x"},
	{Name: "peer.load_cpu_us_per_conn.ovs", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerCPS", Metric: "ovs_load_cpu_us/conn", Unit: "us", Target: "reported (the same on the OVS bed)", Root: true, Benchtime: "20x"},
	{Name: "peer.busy_cores.softnic", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerCPS", Metric: "softnic_busy_cores", Unit: "cores", Target: "reported (the machine's CPUs busy during the softnic bed's turns, anyone's work: all of them means the CPS figures follow CPU per connection)", Root: true, Benchtime: "20x"},
	{Name: "peer.pps_vs_ovs.xdp", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerPPS", Metric: "xdp_vs_ovs", Unit: "x", Target: ">= 2 (64-byte frames VM->VM through VXLAN, counted by the receiving VM; median of 10 per-round ratios vs OVS userspace datapath, same run)", Root: true, Benchtime: "10x"},
	{Name: "peer.pps_vs_ovs.softnic", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerPPS", Metric: "softnic_vs_ovs", Unit: "x", Target: ">= 1 (the same, nicpath on softnic over AF_PACKET)", Root: true, Benchtime: "10x"},
	{Name: "peer.pps.xdp", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerPPS", Metric: "xdp_pps", Unit: "pkts/s", Target: "reported", Root: true, Benchtime: "10x"},
	{Name: "peer.pps.softnic", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerPPS", Metric: "softnic_pps", Unit: "pkts/s", Target: "reported", Root: true, Benchtime: "10x"},
	{Name: "peer.pps.ovs", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerPPS", Metric: "ovs_pps", Unit: "pkts/s", Target: "reported (OVS userspace datapath, same run)", Root: true, Benchtime: "10x"},
	{Name: "peer.rule_install_vs_ovs.softnic", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerRuleInstall", Metric: "softnic_vs_ovs", Unit: "x", Target: "reported (Apply of 20000 exact rules vs ovs-ofctl add-flows of the same from a file)", Root: true, Benchtime: "5x"},
	{Name: "peer.rule_install_vs_ovs.xdp", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerRuleInstall", Metric: "xdp_vs_ovs", Unit: "x", Target: "reported (the same, nicpath on xdp)", Root: true, Benchtime: "5x"},
	{Name: "peer.rules_per_s.softnic", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerRuleInstall", Metric: "softnic_rules_per_s", Unit: "rules/s", Target: "reported", Root: true, Benchtime: "5x"},
	{Name: "peer.rules_per_s.xdp", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerRuleInstall", Metric: "xdp_rules_per_s", Unit: "rules/s", Target: "reported", Root: true, Benchtime: "5x"},
	{Name: "peer.rules_per_s.ovs", Pkg: "./vswitch/vswitchtest/peerbed", Bench: "PeerRuleInstall", Metric: "ovs_rules_per_s", Unit: "rules/s", Target: "reported (ovs-ofctl add-flows, the command's whole run)", Root: true, Benchtime: "5x"},
	{Name: "migration.downtime_ms", Pkg: "./vswitch/vswitchtest/multihost", Bench: "Migration", Metric: "downtime_ms", Unit: "ms", Target: "<= 10 (worst migration of the run, in process)", Benchtime: "20x"},
	{Name: "migration.downtime_p50_ms", Pkg: "./vswitch/vswitchtest/multihost", Bench: "Migration", Metric: "downtime_p50_ms", Unit: "ms", Target: "<= 10 (median migration, in process)", Benchtime: "20x"},
	{Name: "migration.misdelivered", Pkg: "./vswitch/vswitchtest/multihost", Bench: "Migration", Metric: "misdelivered", Unit: "packets", Target: "0", Benchtime: "20x"},
	{Name: "migration.ns_downtime_ms", Pkg: "./vswitch/vswitchtest/multihost", Bench: "NSMigration", Metric: "downtime_ms", Unit: "ms", Target: "<= 10 (worst, namespaces, in-process store)", Root: true, Benchtime: "20x"},
	{Name: "migration.ns_misdelivered", Pkg: "./vswitch/vswitchtest/multihost", Bench: "NSMigration", Metric: "misdelivered", Unit: "packets", Target: "0 (namespaces)", Root: true, Benchtime: "20x"},
	{Name: "migration.ns_xdp_downtime_ms", Pkg: "./vswitch/vswitchtest/multihost", Bench: "NSMigrationXDP", Metric: "downtime_ms", Unit: "ms", Target: "<= 10 (worst, namespaces, every host on XDP)", Root: true, Benchtime: "20x"},
	{Name: "migration.ns_xdp_misdelivered", Pkg: "./vswitch/vswitchtest/multihost", Bench: "NSMigrationXDP", Metric: "misdelivered", Unit: "packets", Target: "0 (namespaces, every host on XDP)", Root: true, Benchtime: "20x"},
	{Name: "migration.etcd_downtime_ms", Dir: "store/etcd", Pkg: ".", Bench: "Migration", Metric: "downtime_ms", Unit: "ms", Target: "<= 10 (worst, in process, over etcd)", Benchtime: "20x"},
	{Name: "migration.etcd_downtime_p50_ms", Dir: "store/etcd", Pkg: ".", Bench: "Migration", Metric: "downtime_p50_ms", Unit: "ms", Target: "<= 10 (median, in process, over etcd)", Benchtime: "20x"},
	{Name: "migration.etcd_ns_downtime_ms", Dir: "store/etcd", Pkg: ".", Bench: "NSMigration", Metric: "downtime_ms", Unit: "ms", Target: "<= 10 (worst, namespaces, over etcd)", Root: true, Benchtime: "20x"},
	{Name: "migration.etcd_ns_downtime_p50_ms", Dir: "store/etcd", Pkg: ".", Bench: "NSMigration", Metric: "downtime_p50_ms", Unit: "ms", Target: "<= 10 (median, namespaces, over etcd)", Root: true, Benchtime: "20x"},
	{Name: "migration.etcd_ns_misdelivered", Dir: "store/etcd", Pkg: ".", Bench: "NSMigration", Metric: "misdelivered", Unit: "packets", Target: "0 (namespaces, over etcd)", Root: true, Benchtime: "20x"},
	{Name: "tether.rebind_recovery_ms", Pkg: "./tether/tethertest", Bench: "RebindRecovery", Metric: "recovery_ms", Unit: "ms", Target: "<= 3000 (NAT mappings flushed -> first datagram delivered again, anchor to tether, default 2 s probe, mean)", Root: true, Benchtime: "5x"},
	{Name: "tether.throughput_ratio", Pkg: "./tether/tethertest", Bench: "ThroughputRatio", Metric: "ratio", Unit: "x", Target: ">= 0.5 (UDP through the tunnel / plain kernel VXLAN, remote site to the anchor's namespace through the same NAT, same run)", Root: true, Benchtime: "2x"},
	{Name: "dht.lookup_p99_ms", Dir: "directory/dht", Pkg: ".", Bench: "Lookup", Metric: "p99_ms", Unit: "ms", Target: "<= 20 (20 nodes, loopback, one process)", Benchtime: "200x"},
	{Name: "dht.lookup_p50_ms", Dir: "directory/dht", Pkg: ".", Bench: "Lookup", Metric: "p50_ms", Unit: "ms", Target: "reported (20 nodes, loopback, one process)", Benchtime: "200x"},
	{Name: "dht.first_packet_cold_p50_us", Dir: "directory/dht", Pkg: ".", Bench: "FirstPacket", Metric: "cold_p50_us", Unit: "us", Target: "reported (destination resolved through the DHT on this packet)", Benchtime: "100x"},
	{Name: "dht.first_packet_cold_p99_us", Dir: "directory/dht", Pkg: ".", Bench: "FirstPacket", Metric: "cold_p99_us", Unit: "us", Target: "reported (same)", Benchtime: "100x"},
	{Name: "dht.first_packet_cached_p50_us", Dir: "directory/dht", Pkg: ".", Bench: "FirstPacket", Metric: "cached_p50_us", Unit: "us", Target: "reported (new flow, mapping cached; same bed, same run)", Benchtime: "100x"},
	{Name: "dht.host_bytes_per_1m_from_500", Dir: "directory/dht", Pkg: ".", Bench: "HostBytes/repl=20", Metric: "host_bytes_per_1m", Unit: "bytes", Target: "reported (measured at 500 mappings, scaled; 20 nodes, every node stores every record)", Benchtime: "1x"},
	{Name: "dht.host_bytes_vs_replicated_500", Dir: "directory/dht", Pkg: ".", Bench: "HostBytes/repl=20", Metric: "vs_replicated", Unit: "x", Target: "reported (directory / replicated state per host, 20 of 20 nodes store each record)", Benchtime: "1x"},
	{Name: "dht.host_bytes_vs_replicated_500.repl4", Dir: "directory/dht", Pkg: ".", Bench: "HostBytes/repl=4", Metric: "vs_replicated", Unit: "x", Target: "reported (same, 4 of 20 nodes store each record)", Benchtime: "1x"},
}

// pkgKey is where a group of figures' benchmarks run, and with which
// -benchtime: figures of one package whose benchmarks want different
// counts run in separate go test runs, so that each gets its own.
type pkgKey struct{ dir, pkg, benchtime string }

func main() {
	benchtime := flag.String("benchtime", "", "passed to go test -benchtime (default: the benchmarks' own)")
	only := flag.String("only", "", "run only figures whose name contains this")
	verbose := flag.Bool("v", false, "echo the benchmark output on stderr")
	flag.Parse()

	root := os.Geteuid() == 0
	byPkg := map[pkgKey][]figure{}
	for _, f := range figures {
		if *only != "" && !strings.Contains(f.Name, *only) {
			continue
		}
		if f.Root && !root {
			fmt.Fprintf(os.Stderr, "# %s: absent: needs root\n", f.Name)
			continue
		}
		k := pkgKey{f.Dir, f.Pkg, f.Benchtime}
		byPkg[k] = append(byPkg[k], f)
	}
	pkgs := make([]pkgKey, 0, len(byPkg))
	for p := range byPkg {
		pkgs = append(pkgs, p)
	}
	sort.Slice(pkgs, func(i, j int) bool {
		if pkgs[i].dir != pkgs[j].dir {
			return pkgs[i].dir < pkgs[j].dir
		}
		if pkgs[i].pkg != pkgs[j].pkg {
			return pkgs[i].pkg < pkgs[j].pkg
		}
		return pkgs[i].benchtime < pkgs[j].benchtime
	})

	results := map[string]string{}
	for _, pkg := range pkgs {
		if _, err := os.Stat(filepath.Join(pkg.dir, pkg.pkg)); err != nil {
			for _, f := range byPkg[pkg] {
				fmt.Fprintf(os.Stderr, "# %s: absent: %s does not exist yet\n", f.Name, pkg)
			}
			continue
		}
		names := map[string]bool{}
		bt := cmp.Or(*benchtime, pkg.benchtime)
		for _, f := range byPkg[pkg] {
			names[strings.SplitN(f.Bench, "/", 2)[0]] = true
		}
		var top []string
		for n := range names {
			top = append(top, regexp.QuoteMeta(n))
		}
		sort.Strings(top)
		// -v: a benchmark that skips in its first run says why only then.
		args := []string{"test", "-v", "-run", "^$", "-bench", "^Benchmark(" + strings.Join(top, "|") + ")$", "-benchmem", "-count", "1"}
		if bt != "" {
			args = append(args, "-benchtime", bt)
		}
		args = append(args, pkg.pkg)
		out, err := run(pkg.dir, args, *verbose)
		if err != nil {
			fmt.Fprintf(os.Stderr, "# %s: (cd %s && go %s): %v\n", pkg.pkg, cmp.Or(pkg.dir, "."), strings.Join(args, " "), err)
		}
		lines := parse(out)
		why := outcomes(out)
		for _, f := range byPkg[pkg] {
			v, ok := lines[f.Bench][f.Metric]
			if !ok {
				reason := cmp.Or(why[f.Bench], why[strings.SplitN(f.Bench, "/", 2)[0]])
				if reason != "" {
					reason = ": " + reason
				}
				fmt.Fprintf(os.Stderr, "# %s: absent: no metric %q from Benchmark%s%s\n", f.Name, f.Metric, f.Bench, reason)
				continue
			}
			results[f.Name] = v
		}
	}
	for _, f := range figures {
		if v, ok := results[f.Name]; ok {
			fmt.Printf("%-34s %14s %-8s target %s\n", f.Name, v, f.Unit, f.Target)
		}
	}
}

func run(dir string, args []string, verbose bool) ([]byte, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var buf bytes.Buffer
	cmd.Stdout = &buf
	if verbose {
		cmd.Stderr = os.Stderr
	} else {
		cmd.Stderr = &buf
	}
	err := cmd.Run()
	if verbose {
		os.Stderr.Write(buf.Bytes())
	}
	return buf.Bytes(), err
}

var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+\d+\s+(.*)$`)

// parse reads "go test -bench" output into benchmark name -> unit -> value.
func parse(out []byte) map[string]map[string]string {
	res := map[string]map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		fields := strings.Fields(m[3])
		metrics := map[string]string{}
		for i := 0; i+1 < len(fields); i += 2 {
			if _, err := strconv.ParseFloat(fields[i], 64); err == nil {
				metrics[fields[i+1]] = fields[i]
			}
		}
		res[m[1]] = metrics
	}
	return res
}

// The lines of "go test -v -bench" output that say why a benchmark gave no
// figures: its verdict (which may end the line that began with its name),
// a result line with no iterations (it stopped in a later run), a line
// naming it (its log follows), and a line of its log.
var (
	outcomeLine = regexp.MustCompile(`--- (SKIP|FAIL): Benchmark(\S+?)(-\d+)?(\s|$)`)
	notRunLine  = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+0\s+NaN ns/op`)
	nameLine    = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?(\s|$)`)
	logLine     = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)
)

// outcomes reads why benchmarks skipped, failed or stopped from "go test
// -v -bench" output: benchmark name -> "skipped: <the first line it
// logged>" ("failed: …", "did not run: …"), so that an absent figure says
// why (a peer that could not start, a machine without root). Its log may
// come before its verdict (as -v prints it) or after (as go test prints a
// failure without -v).
func outcomes(out []byte) map[string]string {
	verdict, first := map[string]string{}, map[string]string{}
	cur := ""
	for _, l := range strings.Split(string(out), "\n") {
		if m := outcomeLine.FindStringSubmatch(l); m != nil {
			cur = m[2]
			verdict[cur] = map[string]string{"SKIP": "skipped", "FAIL": "failed"}[m[1]]
		} else if m := notRunLine.FindStringSubmatch(l); m != nil {
			cur = m[1]
			verdict[cur] = "did not run"
		} else if m := nameLine.FindStringSubmatch(l); m != nil {
			cur = m[1]
		} else if m := logLine.FindStringSubmatch(l); m != nil && cur != "" && first[cur] == "" {
			first[cur] = m[1]
		}
	}
	res := map[string]string{}
	for name, v := range verdict {
		res[name] = strings.TrimSpace(v + ": " + first[name])
	}
	return res
}
