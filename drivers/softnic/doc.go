// Package softnic is nicpath's pure-software reference NIC. It implements
// every capability of the hal (exact and masked rules with priorities,
// every action and encapsulation, generations, counters, the exception path,
// all-or-nothing batches) in process memory, and is the model the other
// drivers are held to: where a driver and softnic disagree on a packet,
// softnic's behaviour, documented case by case below, is the reference.
//
// # Using it
//
//	nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
//		{Name: "vm1", Kind: hal.PortVPort, MAC: mac1},      // port 1
//		{Name: "uplink", Kind: hal.PortUplink, MTU: 1600}, // port 2
//	}})
//	vm, _ := nic.Port(1)          // the VM's side of port 1
//	vm.Send(frames)               // frames the VM transmits into the NIC
//	up, _ := nic.Port(2)
//	n, _ := up.Recv(bufs, sizes)  // frames the NIC put on the wire
//
// Ports are in-memory rings. [Port.Send] runs frames through the NIC on the
// caller's goroutine before it returns (run to completion, like a poll-mode
// driver), so a test can Send and then Recv without waiting. [NIC.Process]
// is the same path on caller-owned buffers that leave [Headroom] bytes in
// front of each frame, for encapsulation in place without allocating; it
// processes bursts of up to [MaxBurst] frames. What the NIC emits on a port
// waits in that port's transmit ring (Config.RingSize frames) until Recv;
// a frame for a full ring is dropped and counted (ReasonQueueFull).
// [Config.Disable] removes capabilities, to test fallbacks against "a NIC
// that can do less": disabled features are missing from Capabilities,
// refused by Validate, and never done by the datapath.
//
// # Rule table and concurrency
//
// Rules are grouped by mask (tuple space search, as in Open vSwitch): one
// open-addressing hash table per distinct mask, of 64-byte buckets holding
// eight signature/index pairs (any number of buckets, grown by half, so
// that a table stays half to three quarters full), probed in decreasing order of the highest
// priority each table holds, so that an exact-match table of a million
// flows costs one bucket and one entry read per packet. Lookups are done a
// burst at a time, hashing every packet first and prefetching buckets, then
// entries (and the next bucket of a probe chain that goes on, with its
// entries), before comparing, so that the cache misses of a burst overlap;
// each hit's program, and the encapsulation template stored right after
// it, are prefetched as the compare finds the hit: the fields the datapath
// reads of a program lie in one cache line, and a VXLAN-over-IPv4
// template's fields and headers in the next (TestEncapProgramLayout).
// A bucket's signatures are compared two to a word, without a branch per
// slot; a home bucket that names one rule and ends its probe chain hands
// that entry to the compare, which checks it with a few word compares in
// line. A chain goes on past a bucket only for the signatures whose
// overflow bit the bucket has (one of seven, set by the inserts that went
// past it): at a million rules some 8% of lookups read a second bucket,
// where one bit for all sent 20% on. BenchmarkStage times
// each stage of the datapath alone on cached rules. Frames of the common shape (Ethernet with at most one 802.1Q tag,
// IPv4 without options, TCP or UDP) are keyed by a parse of softnic's own
// straight into the lookup's words, their layout (header offsets) filled
// from the frame only when a program needs more of it than the words say
// (the common MAC-rewrite, encapsulate, output program does not); every
// other frame goes through hal/wire.Parse, whose result the short one
// reproduces (TestParseFast). The mask of an exact IPv4 flow that is not
// tunnelled (hal.Exact, as a vswitch offloads connections) is known in
// advance: its table is hashed with the key words and masks as constants
// (TestHashExact4), any other mask by a loop over the mask's own words.
// When the first table probed is such a table, the parse does its
// lookup's first pass as it goes: it hashes and lists each IPv4 frame for
// it, the frames wire.Parse takes included, and asks for its home bucket
// then (TestParseBurstLists): those misses are in flight while the rest
// of the burst is parsed (the burst is parsed inside the table's read
// section for that).
// Each rule is an entry of 64 bytes when its mask leaves at most five key
// words to compare (a mapping's per-destination rule: in_port, source
// MAC, EthType, addresses), 128 otherwise (an exact 5-tuple with tunnel
// fields); its ID sits beside it (4 bytes while IDs fit in 32 bits), its
// counter only in chunks of entries where a rule counts, and a chunk's
// cookies are one value until two differ. Rules with identical action lists
// share one compiled program (precomputed encapsulation headers included),
// the MAC of a first set_eth_dst apart, which each rule keeps in its entry:
// a mapping's per-destination rules, one destination MAC each, share the
// program of their remote host. Tables of more than a few thousand rules
// take their bucket arrays and entry chunks from mappings advised for
// transparent huge pages, so that the two random reads of a lookup among a
// million rules do not each walk the page tables.
//
// Each mask's hash table exists once; the active generations and the
// tables' headers exist in two copies, two views (left-right): the
// datapath reads the active view without locks or allocation; a writer
// (Apply, ApplyAtomic, Activate) changes the inactive one, switches views
// with one atomic store, waits for the bursts still reading the old view
// (microseconds) and updates it too. The slots a batch adds to or removes
// from a table carry a bit per view that hides them from that view's
// readers until the switch, cleared (or turned into deleted slots) once
// the old view has no reader. A burst therefore sees the rule set before
// or after a whole Apply batch or Activate, never a mix, and Activate
// costs the same whatever the number of rules. A large batch (4096
// operations or more) makes its table changes in signature order, the
// order of the home buckets, so that its passes over a table go through
// the buckets in address order; the changes to one rule keep the batch's
// order, and the table is sized for the batch's adds before them.
//
// # Cases
//
//	case                         behaviour
//	----                         ---------
//	miss                         to the host: ReasonMiss, Exception.Rule 0, VNI set when tunnelled
//	several rules match          highest Priority wins; equal priorities: lowest RuleID, whatever the masks
//	same match, several gens     only the rule whose Generation is its scope's active one is live
//	Activate                     one switch; bursts in flight finish on the old generation
//	Apply while packets flow     a burst sees the table before or after the batch, never part of it
//	invalid op in a batch        that op fails alone (its own error); the rest land (Apply) or
//	                             none lands and the others get ErrNotApplied (ApplyAtomic)
//	add beyond MaxRules          ErrTableFull for that op; deletes earlier in the batch make room
//	batch > MaxBatch             every op fails with ErrBatchTooLarge; nothing lands
//	results shorter than ops,    every op fails (hal.ErrShortResults, hal.ErrClosed, the
//	NIC closed, context done     context's error); nothing lands (hal.CheckApply)
//	to_host action               to the host with the rule's reason and ID; the frame as it
//	                             arrived (the rule's rewrites are not applied)
//	drop action                  dropped, counted under the rule's reason
//	truncated/inconsistent frame dropped, ReasonMalformed (never matched, never reaches a VM)
//	frame > in-port MTU + 22     dropped, ReasonMalformed (header and two tags over the MTU); GSO
//	                             super-frames never get here: the binding cuts them (see Offloads)
//	tunnelled frame on an uplink dropped, ReasonNotLocal (NIC Stats.Drops and the port's Drops):
//	with an endpoint, for another outer dst IP not in Addrs/Groups, or outer dst MAC not the endpoint's
//	MAC or address                (the port's when zero) / the group's multicast MAC; checked first,
//	                             never matched, never to the host (see Tunnel endpoints)
//	unsupported header           to the host, ReasonUnsupported (more than two VLAN tags, Geneve
//	                             critical options or O bit, a tunnel kind whose decap is disabled)
//	non-first IP fragment        to the host, ReasonFragment; first fragments match on their ports
//	fragmented tunnel packet     to the host, ReasonFragment
//	dec_ttl, TTL/hop limit <= 1  to the host, ReasonTTL, frame as it arrived, Exception.Rule set
//	over the out-port MTU        to the host, ReasonMTU, frame as it arrived, Exception.Rule set;
//	                             MTU counts the L3 packet (the outer one when encapsulated)
//	pop_vlan on a frame without  to the host, ReasonUnsupported
//	a tag
//	push_vlan                    802.1Q tag, priority 0, in front of existing tags; at most two
//	                             pushes per rule (Validate refuses more)
//	VLAN match                   the outermost tag's VID (hal.VLANPresent when tagged)
//	tunnelled frame, rule with   output with the outer headers kept (or a second encapsulation
//	no decap                     added); a rule that also rewrites headers sends it to the host,
//	                             ReasonUnsupported, as the outer checksums would go stale
//	decap                        the inner frame from its Ethernet header to the end of the outer
//	                             IP packet (inner padding kept, outer padding dropped)
//	encap                        outer headers from hal/wire templates: UDP source port (IPv6
//	                             flow label, NVGRE FlowID unless fixed) from the inner flow hash;
//	                             IPv4 DF set; UDP checksum 0 over IPv4, computed over IPv6
//	rewrites                     IP/port rewrites fix IPv4, TCP and UDP checksums incrementally;
//	                             a UDP/IPv4 checksum of 0 stays 0
//	sealed frame (0x88B5),       dropped, ReasonSealed; Capabilities.Crypto is false and
//	Config.Crypto off            RegisterSealKey fails with ErrNotSupported
//	sealed frame from a vport,   opened (securechan.OpenFrame, the vport's live key) into
//	Crypto on                    the burst's scratch buffer and parsed; a sealed route of the
//	                             vport for its source and destination (SetSealedRoutes) forwards
//	                             it without the flow table and without a per-route counter
//	                             (SealedStats.Routed); otherwise it is matched and executed
//	                             like the frame the VM sealed (rule counters count that frame);
//	                             the scratch is wiped after the burst
//	miss that is a sealed        forwarded by the route's Reply entry (in-port, addresses,
//	route's reply                source MAC or tunnel source, kind and VNI), not counted per
//	                             route (SealedStats.Replied); re-parsed on the miss path only
//	sealed, cannot be opened     dropped, ReasonSealed, SealedStats.Refused by
//	                             securechan.ReasonOf (unknown or expired key id, tampered,
//	                             truncated, malformed …); never routed, never to the host
//	sealed, opened, would go to  (miss, to_host rule, TTL, MTU, unsupported header) dropped,
//	the host                     ReasonSealed, SealedStats.NoFlow: neither the clear frame nor
//	                             the sealed one is put on the exception path (the host could
//	                             not open the latter); the VM retries once a rule exists
//	sealed, VLAN-tagged          dropped, ReasonSealed, SealedStats.Tagged (not opened)
//	sealed, from the uplink      dropped, ReasonSealed, SealedStats.NotVPort (only VMs seal)
//	key rotation                 a new key id is live at once; the previous one until
//	                             Config.SealRotationGrace after the new registration, then
//	                             refused (unknown_key); at most two keys per vport
//	exception queue full         dropped, ReasonQueueFull (counted in Stats.Drops)
//	transmit ring full           dropped, ReasonQueueFull, counted on the out port
//	Inject                       copied to the port's ring as is; runts and frames over the MTU
//	                             refused, full ring reported with ErrRingFull
//	Close                        every later call returns ErrClosed; blocked ReadExceptions
//	                             return ErrClosed; frames already in rings can still be Recv'd
//
// # Address learning
//
// The NIC implements hal.AddressLearner with hal/learn, which xdp and
// tcflower share: the datapath learns from every frame of a vport it puts
// on the exception path (a first packet's source, an ARP's sender, a
// gratuitous ARP or unsolicited neighbour advertisement as an
// announcement), after the frame is queued and whether or not the host
// reads it; a sealed frame's source is read from the frame as it arrived,
// never from what was opened. ReadLearned hands the reports out.
//
// # Sealed addresses
//
// With Config.Crypto the NIC implements hal.SealedAddresses: it holds a
// securechan.KeyTable with its private key (Config.SealKey, or generated;
// SealPublicKey is the public half VMs seal to), and per vport the VM keys
// the host registers (RegisterSealKey, or HandleKeyMessage for a
// MsgKeyRegister/MsgKeyRevoke received over the secure channel). Opening
// costs one secretbox.Open with the precomputed per-VM key, takes no lock
// and allocates nothing (TestZeroAllocSealed, BenchmarkSealedOpenRoute).
// Retired keys are refused on the fast path as soon as their window ends
// (the table checks the clock for them); RegisterSealKey, RevokeSealKey and
// SweepSealKeys free them. The clear destination never leaves the NIC
// toward the host: see the sealed rows of the case table.
//
// Sealed routes (SetSealedRoutes, hal.SealedRoute) are where the host tells
// the NIC, ahead of traffic, what each destination a vport's VM may seal
// gets: the table is replaced per vport in one step (copy on write, read
// without a lock on the fast path), checked like rule actions first, and
// never shown to the host by a counter. A route's Reply forwards the
// destination's answers, which would otherwise be misses naming the secret
// as their source.
//
// # Tunnel endpoints
//
// The NIC implements hal.TunnelTerminator (Capabilities.TunnelFilter;
// Config.Disable.TunnelFilter removes it). SetTunnelEndpoint gives an uplink
// its provider addresses, multicast groups and MAC; from then on a
// tunnelled frame (VXLAN, Geneve, NVGRE) arriving there is processed only
// when its outer destination is one of the addresses with the endpoint's
// MAC, or one of the groups with the group's multicast MAC
// (01:00:5e:… or 33:33:…). The check runs right after the parse, before
// the decap capability check, a frame with broken inner headers included:
// one pointer compare on frames of a port without an endpoint, and none on
// untunnelled frames (the fast parse takes no tunnelled frame); with one,
// a compare of the MAC and of each address (a handful) against the key.
// An endpoint without addresses turns the filter off; vports take none.
//
// # Offloads
//
// VMs send with the kernel's default offloads: partial checksums
// (CHECKSUM_PARTIAL) and TSO/GSO super-frames of up to 64 KB. The NIC
// itself sees neither: the port binding (drivers/softnic/afpacket) reads
// each frame's virtio-net header, completes the partial checksums it
// names and cuts GSO super-frames into MTU-sized segments (hal/wire's
// CompleteChecksum and Segmenter), on every port, so that rules match,
// counters count and rings carry frames as the wire would, decapsulated
// inner frames carry complete checksums, and the fixed-size buffers stay
// MTU-sized. A segment that does not fit its egress after encapsulation
// goes to the host with ReasonMTU like any frame. Callers of Port.Send and
// Process that are not the binding hand over frames with complete
// checksums and within the port's MTU.
//
// # Counters
//
// Rule counters (rules with a Count action; others read zero) count packets
// and bytes of the frame as it matched, Ethernet header and tags included
// (Capabilities.Counters.BytesIncludeL2 is true), before any rewrite or
// encapsulation; a Modify keeps the rule's counts. Port Rx counts every frame
// handed to the port (bytes as given); Tx every frame put in its ring (bytes
// as sent, outer headers included); Drops the frames from this port that
// were dropped, plus frames for this port that found its ring full;
// Exceptions the frames from this port handed to the host. Stats counts
// exceptions and drops NIC-wide by reason. For every frame sent in,
// exactly one of: delivered to a ring, dropped, or handed to the host.
//
// # Limits
//
// Config.MaxRules rules (1M by default), Config.MaxBatch operations per
// Apply, Config.MaxScopes scopes, 65536 distinct masks (a rule with one
// more is refused with ErrNotSupported). Frames up to the largest port MTU plus 22
// bytes. Memory is about 81 bytes per mapping's per-destination rule at 8M
// of them (the 48-byte entry of a three-word key, its 4-byte ID, both hash
// table copies, the ID index: BenchmarkMappingMemory) and about 111 per
// exact-match IPv4 rule (a 64-byte entry; 128 with tunnel fields:
// BenchmarkRuleMemory), 16 more for a rule that counts. Identical action
// lists are stored once. The ID
// index is a paged dense array (4 bytes per ID, pages of 1024 IDs freed
// when empty) for IDs below 2^26, as controllers hand out IDs in sequence,
// and a map above.
package softnic
