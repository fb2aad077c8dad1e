// Package xdp is nicpath's eBPF/XDP driver: a hal.NIC whose rules live in
// BPF maps and whose datapath is an XDP program (bpf/nicpath.c, compiled by
// bpf2go; the objects are committed, so building needs no clang) attached to
// the uplink and to every vport.
//
// # Datapath
//
// Each port runs its own instance of the program (the port ID is a load-time
// constant); all instances share the maps. A frame is parsed into a flow key
// that mirrors hal.FlowKey: up to two VLAN tags (the first is keyed), IPv4
// (options allowed) and IPv6, TCP/UDP ports, ICMP type and code. VXLAN (UDP
// 4789), Geneve (UDP 6081) and NVGRE (GRE with key, 0x6558) frames are
// parsed through: the outer headers become TunKind/VNI/TunSrc/TunDst and the
// rest of the key describes the inner frame.
//
// The rule table is a tuple-space search: one BPF hash keyed by (mask
// shape, masked flow key), and an array of at most 16 mask shapes ordered
// by the highest priority they hold. The program masks the key with each
// shape and looks it up, stopping once no later shape can beat the best
// match; so exact per-connection flows (one shape) cost one lookup, and
// prefixes (per-destination mappings, routes) cost one lookup per distinct
// prefix length in use. Any field takes any bit mask; priorities resolve
// overlaps and equal priorities go to the lower rule ID, as hal says.
//
// Each hash entry holds two rule slots: the same match may exist in two
// generations at once (the live rule and its shadow) or at two priorities.
// A slot carries the rule's scope and generation; the program takes it only
// when active_gen[scope] equals its generation. Activate is therefore one
// 4-byte array write, whatever the number of rules. A third rule with an
// identical match, a 17th mask shape, or a full hash gives hal.ErrTableFull.
//
// Actions run in a fixed order, which hal's rule shape allows: decap, pop
// VLAN, MAC/IP/port rewrites (incremental checksums; a zero UDP checksum
// over IPv4 stays zero), TTL decrement, push VLAN, encapsulation
// (bpf_xdp_adjust_head; outer headers are a per-rule template built by
// hal/wire, the per-packet fields are the lengths, the IPv4 checksum, the
// UDP source port from hal/wire.FlowHash of the inner flow, NVGRE's FlowID,
// and over IPv6 the flow label and the UDP checksum), then output through a
// DEVMAP_HASH redirect, drop (counted by reason) or to-host. Count keeps
// per-CPU packet and byte counters (bytes include the Ethernet header as the
// frame matched).
//
// The outer IPv6 UDP checksum is a full one, as hal/wire writes it (RFC 8200
// §8.1; RFC 6935/6936's zero checksum would need udp6zerocsumrx on every
// receiver, and would differ from softnic's bytes). It covers the whole
// inner frame, so the program sums the frame in place before pushing the
// headers: whole 512-byte chunks with bpf_csum_diff, the rest in 64-byte
// blocks and smaller steps; the template's precomputed sum is completed
// with the source port and the lengths. That costs the IPv6 path a pass
// over the frame; the IPv4 path leaves the UDP checksum 0 and does not pay
// it. A frame longer than 126 chunks and a rest (about 64 KiB, more than a
// driver-mode XDP buffer holds) is dropped under ReasonMTU.
//
// # Exception path (to-host)
//
// A miss, a ToHost action and a frame the program will not process
// (unsupported, a later fragment, an expiring TTL, too big for the egress
// port's MTU after encapsulation) leave the fast path as a perf event
// (BPF_MAP_TYPE_PERF_EVENT_ARRAY, one ring per CPU): a 24-byte header (rule
// ID, in-port, reason, VNI, length) followed by the frame exactly as it
// arrived, copied by bpf_perf_event_output. The frame itself is then
// dropped by XDP, so the host's stack never sees it twice. ReadExceptions
// reads the rings; a ring without room drops the frame and counts
// queue_full. Frames keep their order within one CPU's ring only: two
// frames processed on different CPUs may be read in either order. Malformed frames (truncated or inconsistent headers) are
// dropped and counted under malformed, as softnic does; sealed-address frames
// (EtherType 0x88B5) are dropped under sealed, since this program holds no
// keys and the host must never see them. Inject writes frames to an AF_PACKET socket bound to the port's
// interface: they leave the port without meeting the program (which only
// sees received frames). This was chosen over XDP_PASS with metadata (the
// frame would enter the host's own stack, and the metadata is lost before a
// socket can read it) and over AF_XDP (a UMEM and rings per port for a path
// that carries only first packets).
//
// # Capabilities
//
//	field          value                                   from
//	Location       kernel (hardware only after an offload   the attach that succeeded
//	               attach succeeded: ModeOffload)
//	MaxRules       Config.MaxRules hash entries             the map created
//	MatchFields    all; MaskedFields all; Priorities         the program (tuple-space search)
//	Actions        all 15 hal actions                        the verified program
//	Encaps         VXLAN, Geneve, NVGRE (IPv4 or IPv6 outer; the program; Validate refuses
//	               Geneve without options)                   Geneve options
//	Decaps         VXLAN, Geneve, NVGRE (IPv4 or IPv6 outer) the parser
//	Counters       per rule (Count), per port, L2 bytes      per-CPU arrays
//	Generations    yes, Config.MaxScopes scopes               the active_gen array
//	ExceptionPath  yes (perf events), AtomicBatch no
//	Notes          the mode each port attached in, and why a driver-mode
//	               attach fell back to generic
//
// # Lifecycle
//
// Open creates the maps, loads one program instance per port and attaches
// it with a BPF link (driver mode, or generic when the driver refuses, or
// the mode asked for). Nothing is pinned. Replace loads fresh instances and
// swaps them in on the links in one step. Attached reports ports whose
// program someone detached (or whose interface went away). Close detaches
// every link and frees every program and map: the interfaces are left as
// they were. A failed Open releases whatever it had made.
//
// Run passes a frame through a port's program with BPF_PROG_TEST_RUN (an
// instance built with verdict tracing on) and reports the verdict, the
// output port and the frame: the tests, the differential test against
// softnic and the benchmarks use it; a port with no device (empty
// PortConfig.Name) exists for it.
//
// # Documented differences from softnic
//
//   - IPv6 extension headers: the frame goes to the host with
//     ReasonUnsupported (a fragment header with ReasonFragment); softnic
//     walks them and keys the transport header.
//   - Geneve options are refused by Validate.
//   - The MTU checked is that of the egress port's interface at Open.
package xdp
