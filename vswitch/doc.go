// Package vswitch is nicpath's host virtual switch: the slow path that
// turns policy into unified flows and offloads them to any hal.NIC.
//
// One Switch runs per host. It owns the host's vports (one per VM, named in
// Config.Ports) and the uplink, and depends on the NIC only through hal (as
// wireguard-go's device depends on tun): it never imports a driver.
//
// # The packet's walk
//
// A packet the NIC does not handle reaches the host on the exception path.
// HandleBatch (Run calls it for every batch it reads) parses it with
// hal/wire and looks its exact key up in the flow cache. The first packet of
// a flow walks the policy layers, compiled from the policy.State into the
// switch's own lookup structures (compile.go): source checks → the
// sender's ACLs (a classifier, policy/match.ACLs: the first match by
// priority without scanning the rules) → the tenant's routing domain
// (longest prefix match in a trie, policy/match.Routes; next hops
// followed) → the VNET's CA→PA mapping → the receiver's ACLs, or for
// the uplink, VNI → routing → mapping → sender/gateway check (with NAT) →
// ACLs. The result is a unified flow: hal.Exact of the key and one list of
// header operations (decap, MAC and address rewrites, dec_ttl, encap, count,
// output or drop). policy.State.Evaluate is the reference the tests compare
// every outcome against; it is never called on the data path. A walk that
// read neither the transport ports nor the connection table is remembered
// (walkmemo.go): the first packets of later connections between the same
// endpoints take its verdict instead of walking again, as long as the
// compiled state is the same and no connection is tracked
// (Config.DisableWalkMemo turns it off). Such a flow is also offloaded as a
// port-wildcard flow (wildcard.go): its rule leaves the ports out, below
// exact flows, so that later connections between the same endpoints never
// reach the host at all; flows that a stateful ACL decides stay exact, so
// that every tracked connection is walked (Config.DisablePortWildcards
// keeps every rule exact).
//
// New flows of one batch are validated against the NIC (answers cached per
// action list and match shape) and offloaded in one Apply. A flow the NIC
// cannot take stays in the host's flow cache with its reason: a missing
// capability (the typed refusal), a full table, a driver error, or the
// policy (packets for the host). The switch then executes every packet of
// the batch in the host (rewrites and encapsulation in place, in an arena
// with headroom) and reinjects it on its output port; later packets of an
// offloaded flow never reach the host. Flows with equal header operations
// share one interned action list.
//
// The slow path takes a flow per first packet from slabs of seventeen
// (allocFlow), which it recycles once every flow of a slab is dead and a
// whole Maintain has dropped every reference to them (at a steady table
// size, first packets then allocate next to nothing), and allocates
// nothing per packet of a known flow: verdicts, rules, operations, results
// and frames live in memory the switch reuses (TestSlowPathAllocs,
// TestHostPathNoAllocs, TestSlabRecycling). The flow cache is an
// open-addressing table of 16-byte (hash, flow) slots (flowtable.go); a
// batch's lookups are hashed and their first slots prefetched together,
// then the CA→PA mapping slots of the packets without a flow, so that the
// cache misses of new flows overlap.
//
// Drops that are the policy's are flows too (a drop rule on the NIC); drops
// that are the host's are counted by reason: sealed-address frames
// (EtherType 0x88B5) that reach the host are dropped there, never opened
// (fail closed; a NIC with Capabilities.Crypto opens them itself and
// forwards them on the sealed routes the switch pushes: sealroute.go, and
// one with Capabilities.SealedDrop drops those it does not forward itself,
// as Explain says), as are expired
// TTLs, malformed frames, non-first fragments and tunnelled frames for
// another tunnel endpoint (below).
//
// # The tunnel endpoint
//
// A host accepts tunnelled frames only for its own provider address (the
// policy's Host.PA) and its uplink's MAC. A frame on the uplink whose outer
// destination is another host's PA, the underlay's broadcast or a
// multicast group, or whose outer destination MAC is another station's
// (flooded by the underlay, or picked up by a promiscuous uplink), is
// "not local": it is never decapsulated, delivered or handed on.
//
//   - On a NIC with Capabilities.TunnelFilter (hal.TunnelTerminator), New
//     gives every uplink its endpoint (the host's PA, the uplink's MAC), and
//     Update gives it again when the host's PA changes; Maintain retries a
//     failed attempt. The NIC drops such frames on its fast path and counts
//     them (hal.Stats.Drops[hal.ReasonNotLocal]); they never reach the host.
//   - Whatever the NIC, the slow path drops those that reach it before it
//     looks for a flow (Stats.Drops["not_local"]): the layer walk refuses
//     an outer destination that is not the host's PA, and the frame's outer
//     destination MAC must be the uplink's. No flow is made for them.
//     Explain and ExplainFrame say so (Explanation.HostDrop "not_local").
//   - Unified decap flows match the outer destination exactly (hal.Exact:
//     tun_dst is the host's PA), so no NIC decapsulates a frame for another
//     PA by a rule of the switch; a NIC that cannot match tun_dst refuses
//     such rules and the flows stay in the host. A NIC without the filter
//     cannot match the outer MAC, though: a frame for this PA but another
//     station's MAC that hits an offloaded decap flow is delivered by it.
//   - After a PA change, flows toward the old PA are removed and
//     encapsulations take the new PA as their outer source.
//
// Encapsulated frames leave with Config.NextHopMAC as their outer
// destination MAC. Its default, broadcast, suits only receivers that accept
// any MAC (a plain Linux VXLAN device does); a nicpath receiver does not,
// so real deployments set the underlay next hop's MAC.
//
// # Encapsulations
//
// Each VNET names its encapsulation in the policy (policy.VNET.Encap:
// VXLAN by default, Geneve or NVGRE), and the switch encapsulates every
// flow in the kind of the VNET whose VNI it carries: toward a remote VM,
// the destination VNET's; toward a gateway, the sender's. Inbound flows
// match the frame's encapsulation and VNI (hal.Exact keeps TunKind), and
// the walk takes a VNET's packets only in the VNET's own kind: the same
// VNI in another encapsulation is a policy drop (policy.ReasonEncapMismatch,
// counted in Stats.PolicyDrops["encap-mismatch"] when the host drops it,
// in the drop rule's counters on the NIC). Predicted reply flows
// (reverse.go) and per-destination rules follow the same rule. There is
// no switch-wide encapsulation any more: nothing set one but the default.
//
// A NIC whose tunnelled misses never reach the host
// (Capabilities.TunnelMissesUnseen; tc-flower where its BPF action is
// unavailable) cannot hand the switch the first packet of a connection a
// remote VM opens: New logs it, and Explain of such a packet says that it
// is never walked (handled nowhere) rather than where its flow would go.
// The switch does not program inbound decapsulation ahead of traffic in
// its place (not done: it could, per remote VM, for a local VM without
// inbound ACLs, as per-destination rules do outbound; for any other VM
// such a rule would bypass the receiver's ACLs).
//
// A NIC that cannot write a kind (Capabilities.Encaps) or strip it
// (Capabilities.Decaps), or whose Validate refuses the rule for another
// reason, leaves the flow on the host path: the switch builds the outer
// headers itself with hal/wire (one template per action list) or strips
// them, and Explain says why ("NIC cannot encapsulate nvgre: kept on the
// host path, ..."). A frame of a kind the NIC does not parse reaches the
// host as an exception; the switch parses its tunnel itself.
//
// # MTU
//
// A packet too big for its egress port once the flow's encapsulation is
// added (VXLAN over IPv4 adds 50 bytes, Geneve as much plus its options,
// NVGRE 42: with 1500-byte uplinks a VM's VXLAN packet toward another host
// may take 1450) is never dropped silently
// (mtu.go). The NIC hands such packets of its rules to the host with
// hal.ReasonMTU; the host executes them like any packet of their flow, and
// checks every packet it executes itself against the egress port's MTU
// (hal.Port.MTU, read again when more than a second old) before
// encapsulating it. One that does not fit is:
//
//   - IPv4 without DF: fragmented on the host path (RFC 791; hal/wire's
//     FragmentIPv4), each fragment sent through the flow's actions,
//     encapsulated; the receiver reassembles;
//   - IPv4 with DF, or IPv6: dropped and answered with ICMP "fragmentation
//     needed" (type 3 code 4, RFC 1191) or ICMPv6 "packet too big" (RFC
//     4443) announcing the egress MTU minus the encapsulation's overhead
//     (for IPv6 at least 1280), quoting the packet up to 576 bytes (IPv4)
//     or 1280 (IPv6) of answer, with its checksums computed (hal/wire's
//     AppendTooBig). The answer comes from the packet's destination: the
//     policy gives subnets no gateway address, and the sender's stack
//     matches the answer by the quoted packet. A local sender gets it on
//     its vport; a remote sender (a packet decapsulated toward a smaller
//     vport) gets it through the policy as a packet from the receiving VM,
//     routed and encapsulated back. Answers are rate limited per sender and
//     in all (token buckets in a table of fixed size);
//   - dropped without an answer when the RFCs forbid one (an ICMP error, a
//     source that is not unicast, an IPv4 broadcast), when the path cannot
//     carry the IP minimum MTU, or when the rate limit holds it back.
//
// Stats.MTU counts each outcome (answers sent and suppressed, fragments,
// unanswered drops by reason) and Stats.Drops["mtu"] every packet not
// forwarded; ExplainFrame says which outcome a frame gets and why.
//
// # Per-destination rules
//
// With Config.Proactive, on a NIC that takes wildcarded rules with
// priorities, the switch also programs DASH-style CA→PA rules ahead of
// traffic: for a local VM without outbound ACLs, one rule per (source CA,
// remote CA of the same VNET) matching in_port, source MAC and both IPv4
// addresses, whose actions set the destination MAC and encapsulate toward
// the destination's PA. First packets of such connections never reach the
// host (BenchmarkFirstPacketProactive against BenchmarkFirstPacketLatency).
// They are used only where they are provably what the layer walk decides
// for every packet they match (see proactive.go); unified flows have a
// higher priority and win. They follow updates, migrations (they live in
// the destination VM's scope with shadow rules) and reconciliation.
//
// # Stateful ACLs
//
// A stateful allow opens a tracked connection at the opposite layer of the
// same VM, keyed like policy.ConnTable. The reply's flow is predicted and
// offloaded together with the request's (reverse.go); a reply that does not
// match the prediction still passes through the tracked connection. A flow
// an ACL denied is re-evaluated when a connection opens through the layer
// that denied it. Connections are kept alive by the counters of the flows
// that opened or used them and removed after Config.ConnIdle without
// traffic, together with those flows.
//
// # Policy changes
//
// Update diffs the old and new states (policy.Diff) and re-evaluates only
// the flows derived from what changed: each flow records its tenant, its
// sending and receiving VMs and whether its walk ended without a mapping.
// A flow whose header operations change is modified in place (one Modify
// per rule: a packet sees the old or the new rule); flows that can no longer
// be offloaded move to the host. The host switches to the new state under
// the switch's lock, between two batches, and the update's operations go to
// the NIC in one ApplyAtomic when the driver implements hal.AtomicApplier
// (within its MaxBatch), so that a packet sees the old policy or the new
// one, never a mix.
//
// # Generations and live migration
//
// Every flow whose result embeds a VM's location (toward the VM, or
// delivered to it; from it, when it is the VM with a pending move) lives in
// that VM's scope (hal.Scope = the VM's stable id in this switch) at the
// scope's active generation. The rare flow that also depends on a second
// moving VM is listed under that VM and re-evaluated when it moves. When the state holds an
// inactive shadow for a VM, the switch compiles the state with the shadow
// activated and installs, for every flow in the VM's scope, a second rule
// with the scope's next generation: inactive. ActivateShadow (or an Update
// whose only change for the VM is its activation) calls Activate once for
// the scope and swaps the host's compiled state; host-path flows pick their
// shadow actions by comparing generations. None of that depends on how many
// flows or mappings move. Until Maintain retires the old generation,
// Rollback flips back just as fast; Maintain then makes the shadow rules the
// flows' rules and deletes the old ones. On a NIC without generations the
// switch re-evaluates the scope's flows instead.
//
// Config.Ports is fixed at New: a VM migrating to this host needs its vport
// named there ahead of time.
//
// # Counters, aging, reconciliation, faults
//
// Maintain merges per-rule counters (rules carry a Count action when the
// NIC counts) into flow statistics, ages out idle flows (Config.FlowIdle)
// and connections, and retries flows a full table or a driver error left in
// the host. Run calls it every quarter of FlowIdle, so each flow is visited
// four or five times in its life: the counters and the idle check share
// one pass over the flows, in the order of their slabs (memory read in
// order, not a cache miss per flow; the rule IDs and deletions come in
// creation order too). The pass reads 48 bytes of each flow, kept apart
// from the rest of it, side by side in its slab (flowHot), prefetched two
// slabs ahead, and the rest only of the flows it removes or whose counters
// moved. The retry pass runs only when a flow went to the host for one of
// those reasons since the last. Every rule carries an owner cookie (a magic and
// Config.CookieTag in the high 48 bits, the policy epoch in the low 16):
// Reconcile (at New, and after any driver error) dumps the NIC, deletes our
// rules no flow wants, repairs drifted ones, re-adds missing ones and
// leaves other owners' rules alone. A failed operation never loses a packet:
// the flow's packets are executed in the host and the case is counted
// (Stats) and explained (Explain).
//
// # Learned addresses and anti-spoofing
//
// A VM may send only from its own MAC and addresses: the walk drops any
// other source (policy.ReasonSpoofedSource), the flow's drop rule goes to
// the NIC, and Stats.Spoofed counts the dropped packets per VM, the host's
// and the NIC's together. When the NIC learns addresses
// (hal.AddressLearner), Run takes its reports and the switch keeps, per
// port, what was seen and whether the policy gives it to the VM, and the
// recent announcements with a migrated VM's first one marked (Learned,
// HandleLearned; learned.go). They inform; the policy decides.
//
// # Explain
//
// Explain, ExplainFrame and ExplainFlow say, like ovs-appctl ofproto/trace,
// which layers a packet walks, the verdict, the unified flow, and where it
// is handled (NIC or host) and why.
package vswitch
