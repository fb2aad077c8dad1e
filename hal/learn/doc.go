// Package learn is address learning for NIC drivers (hal.AddressLearner):
// a Learner takes the frames a driver's vports send that reach its
// exception path (first packets of flows, ARP, neighbour discovery),
// reads each one's source address, and queues deduplicated reports for the
// driver's ReadLearned. softnic learns in its datapath, xdp and tcflower in
// their exception readers; all three share this code, so that a vswitch
// learns the same addresses on every driver.
//
// It reads only a frame's source: the sender of an ARP, the source of an
// IPv4 or IPv6 packet, the target of a neighbour advertisement (the
// sender's own address). A gratuitous ARP (sender address = target
// address) and an unsolicited neighbour advertisement (no solicited flag)
// are announcements (hal.LearnAnnounced), what a VM sends once it runs
// somewhere new; every other source is seen (hal.LearnSeen). Frames of
// other EtherTypes (a sealed frame among them) teach nothing.
//
// Reports are deduplicated per (port, kind, MAC, address): a seen address
// is reported again after SeenRefresh, an announcement after
// AnnounceRefresh (a VM that moves sends a few in a row). The table is
// bounded (TableMax; it is cleared when full, which only brings reports
// forward) and so is the report queue (QueueMax): reports that find it full
// are dropped and counted (Dropped), never the frames they came from, and
// the address is reported again on its next frame. Learning a frame costs
// its parse and one map lookup under a mutex.
package learn
