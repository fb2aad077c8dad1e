// Package xdp is nicpath's eBPF/XDP driver: a hal.NIC whose rules live in
// BPF maps and whose datapath is an XDP program (bpf/nicpath.c with its headers in
// bpf/lib, compiled by bpf2go; the objects are committed, so building needs no clang) attached to
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
// # Tunnel endpoint filter
//
// The NIC implements hal.TunnelTerminator. SetTunnelEndpoint writes an
// uplink's endpoint into a small BPF hash keyed by port (tun_eps): up to 16
// entries, each an outer destination IP (IPv4 mapped) with the destination
// MAC that goes with it: the endpoint's MAC (the port's own when the zero
// MAC is given) for an address, the group's multicast MAC (01:00:5e/23 or
// 33:33/32) for a group. Right after the outer headers parse, a tunnelled
// frame (VXLAN, Geneve, NVGRE) on a port with an entry must match one
// entry on both IP and MAC, or it is dropped and counted under not_local:
// it is neither decapsulated, nor matched, nor handed to the host. A port
// without an entry filters nothing and pays one hash lookup per tunnelled
// frame; an endpoint without Addrs deletes the entry. One map update
// replaces a whole endpoint, so a frame never meets half of one. A
// tunnelled frame whose outer headers the program does not take (a
// Geneve version it does not know, an outer fragment) goes to the host as
// before, unfiltered.
//
// # Checksum offload and GSO
//
// A sender with checksum offload (a veth's default, and so every VM in the
// tests and the demo) leaves its TCP/UDP checksums partial
// (CHECKSUM_PARTIAL): the field holds the folded pseudo-header sum, not
// inverted, and a NIC is to finish it. XDP sees no ip_summed, and an
// xdp_frame carries no checksum state, so after a redirect nobody else
// would. The program therefore recognises a partial checksum by its value:
// while parsing, it compares each TCP/UDP checksum (the inner frame's,
// and the outer UDP header's of a VXLAN/Geneve frame) with the folded
// pseudo-header sum of its own addresses and length; equal means partial.
// A complete checksum equal to it by chance (one in 65536) is recomputed
// to the same value, so nothing else is needed. A UDP checksum of 0 over
// IPv4 (none) never equals it; an IPv4 first fragment is never taken for
// partial (its checksum covers bytes the frame does not carry).
//
// Only frames so marked pay for it: before any action, a frame that leaves
// (output) or goes to the host has its marked checksums completed in
// place, the transport's first, then the outer UDP checksum that covers it
// (skipped when the rule decapsulates). Completing is one pass: the sum of
// the segment as it is, partial field included, is exactly the sum the
// checksum covers, so the field becomes its complement (UDP's 0 written
// 0xffff, as hal/wire does); the sum is taken with bpf_csum_diff over
// whole 512-byte chunks and in place for the rest, as for the IPv6 outer
// checksum. The rewrites, the TTL decrement and the encapsulation then
// work on a complete checksum as before. Frames the parser does not follow
// to the transport header (IPv6 extension headers, later fragments) reach
// the host as they arrived.
//
// GSO: in driver mode on a veth, attaching a program without XDP fragments
// (this one) makes the kernel cap the peer's MTU at one page (3506 bytes on
// 4 KiB pages) and turn the peer's TSO/USO off (veth_xdp_set), so every
// frame arrives segmented, in one buffer: bulk TCP works at any MTU up to
// that cap, and multi-buffer XDP is not needed for it. Open reads the peer
// and says so in Capabilities.Notes. Generic mode does neither: the
// sender's TSO/GSO frames (up to 64 KiB) reach the program whole, exceed
// the egress MTU and go to the host (mtu), so bulk TCP needs driver mode;
// Open's note says that too.
//
// The rule table is a tuple-space search: one BPF hash keyed by (mask
// shape, masked flow key), and an array of at most 16 mask shapes ordered
// by the highest priority they hold. The program masks the key with each
// shape and looks it up, stopping once no later shape can beat the best
// match; so exact per-connection flows (one shape) cost one lookup, and
// prefixes (per-destination mappings, routes) cost one lookup per distinct
// prefix length in use. Any field takes any bit mask; priorities resolve
// overlaps and equal priorities go to the lower rule ID, as hal says.
// Rules that pin every field of an untunnelled IPv4 frame (hal.Exact of
// such a frame: the flows a vswitch offloads toward the wire) live under a
// 32-byte compact key in table4, an open-addressing array that the driver
// writes through an mmap (BPF_F_MMAPABLE), with no system call per rule:
// a key hashes (seeded per NIC) to a base slot and lives in one of the 8
// slots from there; the program hashes the key, probes those slots with
// inlined array lookups, and looks no further when no other shape holds a
// priority as high as the rule it found. An entry that finds its 8 slots
// taken goes to flows4, a BPF hash under the same key (table4's overflow),
// which the program reads only while it holds entries. A slot is one
// 64-byte cache line: the key and the entry's first rule (its scope, in 16
// bits, generation, priority, ID and counter and the index of its program:
// its actions, in progs4, an mmapped array of programs interned by the
// driver, so that the flows a vswitch offloads toward one host share one),
// and the index of the entry's second rule, if any (a shadow, or a rule at
// another priority), in sides4, an mmapped array of 32-byte entries: a hit
// on a one-rule entry reads one line of table4, on a two-rule entry two,
// and adding a rule whose actions are already there writes nothing else.
// Each slot has a seq word: the driver writes key and rules into a free
// slot (a new program into a free one of progs4, a second rule into a free
// side entry), then publishes it with one atomic store of seq, and never
// rewrites a published slot: a new version of an entry is published in
// another slot (or in flows4) before the old slot is retired, so a packet
// meets the old version, the new one, or both, never a miss between them.
// Apply reserves an add's slot (and interns its program) when it runs the
// add, so that the write can no longer fail, and makes the writes of up to
// 32768 reserved slots together, in slot order, before it returns or
// before any operation on one of their entries: a bulk load of random keys
// then walks the table once from one end to the other rather than jumping
// about it (a key that overflows meanwhile goes to flows4 without cutting
// the run, unless a reserved write would free a slot of its window). The
// program reads seq before and after the key, the rules (the side entry
// too) and the program it copies, and searches again when it changed (a
// slot retired or reused under it); a program or side entry is rewritten
// only once every slot naming it is retired. The loads are ordered by compiler
// barriers, which suffices on x86 (loads are not reordered with loads); a
// weakly ordered CPU (arm64) would need load-acquire (BPF has it from
// Linux 6.15).
//
// table4 and progs4 are in place from Open (the kernel maps an mmapped
// array whole). The driver's own bookkeeping, its rule and entry indexes
// and the chunks rules and entries are kept in, is Go memory made as Apply
// needs it, about 300 bytes a rule. A bulk load writes it a rule at a
// time, so each piece of 32 KiB or more is made present in one system
// call when it is made (MADV_POPULATE_WRITE) rather than by a page fault
// per 4 KiB page; the kernel's work per fresh page (allocating and
// clearing it) remains, and is most of what a bulk load into fresh memory
// spends in the kernel.
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
// DEVMAP redirect (an array indexed by port ID), drop (counted by reason) or to-host. Count keeps
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
// # Cost of a hit
//
// Under perf (BPF_PROG_TEST_RUN, a 64-byte UDP frame hitting an exact rule
// that encapsulates in VXLAN), the time went to calls: on an AMD CPU whose
// kernel applies the SRSO "safe RET" mitigation every return is a
// mispredicted one (about 7.5 ns each on the EPYC the figures come from),
// so each BPF subprogram, helper and kernel function a packet returns from
// costs several nanoseconds. The hash lookup of an exact IPv4 rule was four
// of them (the helper, jhash, the bucket walk, memcmp); table4's probe is
// one, probe4, whose array lookups are inlined by the verifier (a function
// of its own so that the verifier walks it once: Debian 6.1's verifier
// walked four times as many instructions with it inlined), and encapsulation over
// IPv4 is inlined into the program. So are the parse of the frame as it
// arrived (parse_one_inline; the global parse_one, verified once, parses
// only a tunnel's inner frame) and lookup4. What makes room for them
// within BPF's 512 bytes of stack (Linux 6.1's verifier rounds each frame
// up to 32 bytes) is that the rule a packet acts on is copied into a
// per-CPU array value (scratch) rather than onto the stack: 160 bytes
// fewer in the main program's frame, at the price of one per-CPU array
// lookup, which Linux 6.10 and later inline. The cost is verifying time:
// the parser's branches are now explored together with the rest of the
// program (TestVerifierStats logs it). What is left on a hit: the
// adjust_head and redirect helpers. The parser stores the key's MAC words
// as wide as lookup4 loads them (narrow stores under a wide load stall it
// until they reach the cache), and a rule that only encapsulates (and
// counts) skips the checks and length arithmetic of the actions that edit
// the frame. The key's address fields (64 of its 96 bytes) are not zeroed
// up front: the parser writes those a frame has, and the rest are zeroed
// only before the full lookup. BenchmarkHitEncap (xdp.hit_encap_ns)
// times the program back to back in the kernel's test run behind a small
// harness program, with 1M rules installed: one flow repeated (the
// program's own cost), 4096 flows, and every packet a random flow, where
// the miss on the rule's table4 slot (and its page: table4 is a few
// hundred megabytes of 4 KiB pages) outweighs the instructions.
//
// # Exception path (to-host)
//
// A miss, a ToHost action and a frame the program will not process
// (unsupported, a later fragment, an expiring TTL, too big for the egress
// port's MTU after encapsulation: never a silent drop) leave the fast path
// as a perf event (BPF_MAP_TYPE_PERF_EVENT_ARRAY, one ring per CPU): a
// 24-byte header (rule ID, in-port, reason, VNI, length) followed by the
// frame as it arrived, a partial checksum completed (the event carries no
// checksum state either, and the host may forward the frame as it is),
// copied by bpf_perf_event_output. The frame itself is then
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
// # Address learning
//
// The NIC implements hal.AddressLearner with hal/learn, the code softnic
// learns with: ReadExceptions learns from every frame a vport sent that it
// reads (the source of a first packet, an ARP's sender, a gratuitous ARP
// or unsolicited neighbour advertisement as an announcement), before the
// copy into the caller's buffer; ReadLearned hands the reports out. ARP and
// neighbour discovery from a vport need nothing of the program: like any
// frame no rule forwards they are misses (or hit the vswitch's ToHost
// rules), go to the perf ring and are dropped, never passed to the host's
// stack, and the vswitch answers them from its mappings; the program does
// no work for learning. Frames from uplinks and tunnelled frames teach
// nothing. Unlike softnic, which learns in its datapath, learning follows
// the host's reading: a frame is learned when ReadExceptions reads it, and
// one the rings lost is not learned (the vswitch reads exceptions all the
// time it runs).
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
//	Generations    yes, Config.MaxScopes scopes, at most        the active_gen array; table4
//	               MostScopes (65536): Open refuses more     holds a scope in 16 bits
//	ExceptionPath  yes (perf events), AtomicBatch no
//	MaxBatch       Config.MaxBatch operations per Apply     Config (default DefaultMaxBatch, 1<<20)
//	TunnelFilter   yes, 16 addresses and groups per uplink  the tun_eps map
//	AddressLearning yes (hal.AddressLearner)                 the exception reader
//	Notes          the mode each port attached in, and why a driver-mode
//	               attach fell back to generic; per port, the driver
//	               and, for a veth, the peer's MTU and the cap the kernel
//	               put on it (read after the attach), and what that means
//	               for GSO
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
//   - Partial checksums are completed by this datapath, recognised by
//     value (above); softnic's AF_PACKET binding completes them on receive
//     from the socket's metadata, and softnic's datapath, fed crafted
//     frames with complete checksums, leaves them alone. The differential
//     tests send complete checksums, so both give the same bytes.
package xdp
