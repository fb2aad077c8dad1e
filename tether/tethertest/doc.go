// Package tethertest is the relocated subnet's test bed on network
// namespaces (Linux, root): a data center of two hosts, each a vswitchd
// (agent on softnic) with a VM, joined by a routed underlay to an anchor;
// a NAT (nftables masquerade) between the anchor and the remote site; the
// remote site's tether with two nodes that take their addresses by DHCP.
// The tests, the figures (tether.rebind_recovery_ms, tether.throughput_ratio)
// and the demo's relocated-subnet story run on it.
//
//	            underlay (routed)              inet (bridge)             site
//	host-a ─┐                          ┌─ anchor wan0 203.0.113.1
//	host-b ─┼─ ul ── anchor dc0        ├─ nat out0 203.0.113.2 ── nat in0 198.51.100.1 ── tether wan0 198.51.100.2
//	        │       198.18.0.10        └─ forger 203.0.113.66                             tether p1 ── node n1
//	                                                                                      tether p2 ── node n2
//
// Everything lives in namespaces named after the process id, removed by
// Close.
package tethertest
