// Package multihost is the multi-host migration test bed: three hosts, each
// a software NIC (drivers/softnic) programmed by its vswitch, whose uplinks
// are joined by an in-memory underlay keyed by provider address; every
// vswitch follows one store (store.Follower); a VM manager
// (store/migrate) migrates a VM from one host to another while a VM on
// the third host streams UDP to it with sequence numbers.
//
// Fabric.Migrate measures what the streaming VM sees: the longest gap in
// delivery (the downtime), packets lost, and packets delivered to the wrong
// place. The definitions are in Result. BenchmarkMigration reports them as
// downtime_ms and misdelivered; the etcd module runs the same bed over a
// real etcd server.
//
// The bed runs in process: the sender's goroutine sends each packet and
// carries it to the end of its walk (through exception paths, vswitches and
// the underlay) before the next, like a poll-mode datapath, while the
// followers apply the store's changes concurrently, as a real host's control
// plane does. NSBed (Linux, root) is the same test on network namespaces,
// with a vswitchd per host (each on softnic or the XDP driver) and real
// kernels sending and receiving.
package multihost
