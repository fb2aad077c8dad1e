// Command demo is nicpath's first-run story, what `make demo` runs: two
// hosts, each with VMs of two tenants whose customer addresses overlap, real
// traffic (ping, UDP, TCP), flows moving from the host's slow path to the
// NIC, the explain output, and proof that the tenants are isolated.
//
// As root (on Linux, with iproute2) it builds vswitchd and vswitchctl into a
// temporary directory, creates network namespaces for the two hosts and for
// every VM (names starting npd<pid>-), cables the hosts' uplinks with a veth
// pair and each VM's eth0 to its host with another, runs one vswitchd per
// host inside its namespace on the software NIC bound to those interfaces
// through AF_PACKET (or DRIVER=xdp), and has the VMs talk with ping, UDP and
// TCP through this same binary (subcommands traffic and serve), TCP
// including bulk exchanges of a few megabytes each way whose every byte is
// checked (the VMs keep their default offloads: TSO, GSO, partial
// checksums). It shows vswitchctl's flows, stats and explain, checks
// isolation, and removes every namespace it created, also on failure or
// interrupt. Nothing touches the root namespace.
//
// DRIVER names one driver for every host (softnic, the default, xdp or
// tcflower) or a driver per host, each host running its own vswitchd:
// DRIVER=host-a=xdp,host-b=softnic (or DRIVER=softnic,host-a=xdp, a
// default and the exceptions) puts an XDP host and a softnic host on the
// two ends of one cable. A tc-flower host gets a flow-based VXLAN device
// and its provider address on its uplink (the kernel's tunnel device
// writes and strips the outer headers); it needs cls_flower and the tc
// actions, which the VM tier has (TestNamespaceStoryVM tells the story on
// Debian's 6.1 kernel, tc-flower on both hosts and beside softnic).
//
// Every driver pairing shows the same checks, among them a TCP connection
// that a VM on host-a opens to a VM on host-b through host-b's stateful
// inbound ACL: host-b walks its first packet, which arrives tunnelled, and
// then carries the connection on its NIC both ways; a port the ACL denies
// stays silent, its drop on the NIC.
//
// Otherwise (or with NICPATH_DEMO=inprocess) it tells the same story in
// process and says so: software NICs joined by an in-memory wire, VMs as the
// far sides of their ports, each host's vswitch handling its NIC's
// exception path.
//
// STORE=etcd (namespace story only) keeps the desired state in etcd: the
// demo builds vswitchd and nicstore from the etcd module, runs a one-member
// etcd in a control namespace on a management network (192.0.2.0/24) that
// reaches the hosts, publishes the policy there, and starts every vswitchd
// following it. After the traffic it shows the hosts' reports, stops etcd
// (the hosts say they are stale and keep forwarding), starts it again on
// the same data, and checks that the hosts resync.
//
// Sealed addresses (namespace story): the hosts run the embedded policy
// with a small tenant added, green, whose VM green-1 seals its
// destinations; its key pair is made at start, the public half in the
// policy copy's seal_keys. green-1 (subcommand seal: securechan/sealclient
// in its namespace) seals UDP datagrams to green-2 beside it and to green-3
// on host-b, over IPv4 and IPv6 (green's namespaces have IPv6), with the key host-a's vswitchd publishes (seal_public_key); the
// replies arrive, and host-a's exception capture, its vswitchd logs and
// vswitchctl's output (learned included, what nicd reports with NIC=remote)
// are checked on the bytes: none holds the clear destination. On XDP,
// which has no crypto, the sealed frames are dropped and counted on the NIC
// (fail closed), and vswitchctl seal says so.
//
// Learned addresses (namespace story, every driver): after the ping,
// blue-web-1 sends a gratuitous ARP for its address on its eth0, and
// vswitchctl learned on host-a shows the address, owned by its policy, and
// the announcement (the NIC's report through its exception path).
//
// NICPATH_DEMO_VERBOSE=1 prints every ip command the namespace story runs.
//
// It exits 0 only when every check of the story held, so it doubles as a
// smoke test (TestInProcessStory runs it).
//
// The policy is the embedded default, a copy of
// examples/policies/two-tenants.yaml (the namespace story's hosts run it
// with the sealed step's tenant added).
package main

//go:generate cp ../policies/two-tenants.yaml default-policy.yaml
