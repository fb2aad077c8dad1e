// Package conformance is nicpath's driver-agnostic conformance suite: the
// same cases run against every NIC behind package hal, as cilium/ebpf's
// testLink runs the same subtests for every link type, and as vendors run
// DPDK's flow tests or SONiC DASH's PTF suites against their hardware.
//
// A [Target] brings a NIC in through a factory (Open) together with a
// [Harness] that injects frames into each port from the outside and captures
// what each port emits. The package imports hal only; it never imports a
// driver, and it builds and decodes frames with gopacket rather than with
// nicpath's own hal/wire, so that a bug shared by our builders and our
// parsers cannot hide itself.
//
// # What the suite checks
//
// Every advertised capability is verified with traffic and every missing one
// must be refused by Validate with hal.ErrNotSupported: match fields, partial
// masks, priorities, every action, every encapsulation (outer headers decoded
// field by field, checksums verified by the suite's own arithmetic, inner
// frame byte for byte) and decapsulation. Rule add/modify/delete and their
// error sentinels, batches and atomic batches, counters (packets and bytes,
// L2 or L3 as Capabilities.Counters says), the exception path (misses,
// to_host, TTL expiry, fragments and sealed frames with their reasons),
// a full table, generation switches (no frame sees a mix, checked while
// traffic flows), Close (ErrClosed afterwards, no leaks through an optional
// [LeakChecker]), malformed frames (never delivered, always counted, no
// harm done) and, for a NIC with Capabilities.TunnelFilter, the tunnel
// endpoint: once the uplink is given its provider addresses, MAC and
// groups (hal.TunnelTerminator), tunnelled frames for another PA, the
// underlay's broadcast (IPv6: all-nodes), a group it was not given or
// another station's MAC are dropped and counted under not_local, never
// delivered nor handed to the host, for every encapsulation the NIC
// decapsulates; its own and a given group's frames are delivered as
// before. A NIC without the capability skips that case and says so. A NIC
// with Capabilities.AddressLearning (hal.AddressLearner) reports the
// sources of its vports' first packets and ARP requests once each, a
// solicited neighbour advertisement's source, and gratuitous ARPs and
// unsolicited neighbour advertisements as announcements, nothing of an
// uplink's frames; the frames it learns from reach the exception path,
// which the case reads as a host would before asking for reports.
//
// Each case opens a fresh NIC. A case skips only when the NIC does not
// advertise a capability it needs (a match, an action, an uplink), and the
// skip names it (CaseResult.Missing, one of [CapabilityNames]) and quotes
// what the NIC says of it: the note of hal.Capabilities.Notes whose text
// before its first colon is the capability's name ("atomic batches: no
// (…): tc has no transaction over filters" for "atomic batch"); the
// capability matrix shows the same note beside the row. A rule
// within what the NIC advertises that its Validate refuses fails the case:
// a variant of an advertised capability (IPv6 outer headers, Geneve
// options, an encapsulation TTL) is part of it, not a reason to skip.
//
// # Documented differences
//
// A driver that differs from the reference on purpose lists each case
// that fails because of it in Target.Documented: the exact case name, the
// capability whose behaviour differs, and why ([Difference]). Such a case is
// reported "documented" with the reason instead of failed. The list is held
// to the run: a documented case that passes fails ("documented difference
// X now passes: remove it from the list"), and so do a skipped one, a name
// that matches no case, a pattern, an unknown capability and a missing
// reason, in a last case named "documented". A list only shrinks.
//
// # Running it
//
// A driver's own tests call [Run] with a *testing.T; the nicconform runner
// (cmd/nicconform) and tests of the suite itself call [RunSuite], which
// returns a [Report] that [WriteJUnit], [WriteJSON] and [WriteMarkdown]
// write out, with the run's [Environment] (kernel release, the devices
// behind the ports as Target.Devices describes them, nicpath's version).
// Both share the same case code through the [T] interface: every
// case runs on a recording T, and Run replays the record into subtests of
// the *testing.T (logs, failures, skips), so a case behaves the same under
// go test and under the runner, and documented differences can turn a
// failure into a reported skip. Options.Run selects cases and subcases as
// go test's -run does ("match/vlan").
//
// Each top-level case is bounded by Options.CaseTimeout; a case that
// overruns is failed and abandoned. The suite's frames use MAC addresses
// starting 02:4e:50 and addresses from 198.18.0.0/15 and 2001:db8::/32;
// frames without the suite's MACs, and a kernel's own IPv6 neighbour
// discovery, are ignored, so harnesses on real links need no filtering.
// [Differential] sends the same rules and frames to the reference NIC and to
// a target and compares what comes out of each port byte for byte;
// differences a target documents in Target.Documented ("diff/<scenario>")
// are reported, not failed. A scenario whose rules need a capability a NIC
// does not advertise is skipped and counted, naming it; a rule within what
// it advertises that its Validate refuses fails the scenario.
package conformance
