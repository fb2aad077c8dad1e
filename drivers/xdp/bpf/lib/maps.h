// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* The structures the program shares with Go (mirrored in abi.go; keep them
 * in step), its maps, the per-instance constants and the parse state. */
#ifndef NICPATH_MAPS_H
#define NICPATH_MAPS_H

#include "common.h"

#define MAX_MASKS 16    /* mask shapes searched per packet; see abi.go */
#define MAX_PORTS 64    /* port IDs are < MAX_PORTS */
#define NUM_REASONS 13  /* hal.NumReasons */
#define MAX_L2_OFF 256  /* tunnel headers end within the first 256 bytes */

enum reason {
	R_NONE, R_MISS, R_ACTION, R_UNSUPPORTED, R_MALFORMED, R_TTL, R_FRAGMENT,
	R_MTU, R_SEALED, R_POLICY, R_NOPORT, R_QUEUEFULL, R_NOTLOCAL,
};

enum tun_kind { TUN_NONE, TUN_VXLAN, TUN_GENEVE, TUN_NVGRE };

/* Action flags of a rule (abi.go: act*). */
#define ACT_DECAP      (1 << 0)
#define ACT_SET_ETH_SRC (1 << 1)
#define ACT_SET_ETH_DST (1 << 2)
#define ACT_SET_IP_SRC (1 << 3)
#define ACT_SET_IP_DST (1 << 4)
#define ACT_SET_L4_SRC (1 << 5)
#define ACT_SET_L4_DST (1 << 6)
#define ACT_DEC_TTL    (1 << 7)
#define ACT_PUSH_VLAN  (1 << 8)
#define ACT_POP_VLAN   (1 << 9)
#define ACT_ENCAP      (1 << 10)
#define ACT_COUNT      (1 << 11)
#define ACT_FIXED_FLOWID (1 << 12)
/* The actions that edit the frame before encapsulation, or may send it to
 * the host first (an expiring TTL): a rule without any takes the short
 * path to the MTU check and the encapsulation. Every flag but ENCAP, COUNT
 * and FIXED_FLOWID; a new action that changes the frame belongs here. */
#define ACT_EDITS (ACT_DECAP | ACT_SET_ETH_SRC | ACT_SET_ETH_DST | ACT_SET_IP_SRC | ACT_SET_IP_DST | \
		   ACT_SET_L4_SRC | ACT_SET_L4_DST | ACT_DEC_TTL | ACT_PUSH_VLAN | ACT_POP_VLAN)

enum terminal { TERM_OUTPUT = 1, TERM_DROP, TERM_TOHOST };

/* The verdicts the tracing instance records (abi.go: Verdict). */
enum verdict { V_OUTPUT = 1, V_DROP, V_TOHOST };

/* struct flow_key mirrors hal.FlowKey; scalar fields in host order,
 * addresses as 16 bytes (IPv4 mapped). mask_id names the mask shape the key
 * was masked with, so that one hash holds every shape. */
struct flow_key {
	__u8 tun_src[16];
	__u8 tun_dst[16];
	__u8 ip_src[16];
	__u8 ip_dst[16];
	__u32 in_port;
	__u32 vni;
	__u8 eth_src[6];
	__u8 eth_dst[6];
	__u16 eth_type;
	__u16 vlan;
	__u16 l4_src;
	__u16 l4_dst;
	__u8 proto;
	__u8 tun_kind;
	__u8 mask_id;
	__u8 pad;
};

/* struct flow_key4 is the compact key of an untunnelled IPv4 frame, for
 * the rules that pin every field of such a frame (hal.Exact: the
 * per-connection flows a vswitch offloads): a third of flow_key, so that
 * the lookup hashes 32 bytes rather than 96. Addresses in network order,
 * the low 4 bytes of their IPv4-mapped form; every other field as in
 * flow_key. A key whose eth_type, tunnel fields and address prefixes are
 * implied (0x0800, none, ::ffff:0:0/96) is all it needs. */
struct flow_key4 {
	__u32 in_port;
	__u8 ip_src[4];
	__u8 ip_dst[4];
	__u16 l4_src;
	__u16 l4_dst;
	__u8 eth_src[6];
	__u8 eth_dst[6];
	__u16 vlan;
	__u8 proto;
	__u8 pad;
};

/* One rule: the generation it belongs to, its priority and its actions. */
struct rule {
	__u64 id;
	__u32 scope;
	__u32 gen;
	__u32 counter;    /* index into rule_counters when ACT_COUNT */
	__u16 prio;
	__u16 flags;
	__u8 terminal;
	__u8 reason;
	__u8 encap_len;   /* IPv4 outer: 50 (VXLAN, Geneve) or 42 (NVGRE); IPv6: 70 or 62 */
	__u8 encap_kind;
	__u32 out_port;
	__u16 vlan_tci;
	__u16 l4_src;
	__u16 l4_dst;
	__u16 pad;
	/* IPv4: running sum of the outer header, total length 0. IPv6 UDP:
	 * running sum of the pseudo-header addresses and protocol, the UDP
	 * header (source port, length, checksum 0) and the tunnel header. */
	__u32 encap_sum;
	__u8 eth_src[6];
	__u8 eth_dst[6];
	__u8 ip_src[16];
	__u8 ip_dst[16];
	__u8 encap_hdr[72];
};

/* Two slots per match: the same match in two generations (a shadow policy
 * next to the live one), or at two priorities. */
struct flow_val {
	struct rule slot[2];
};

struct mask_entry {
	struct flow_key mask;
	__u32 max_prio;  /* highest priority among the rules of this shape */
	__u8 id;         /* stable mask_id of the shape */
	/* The shape pins every field of an untunnelled IPv4 frame: its
	 * entries for such frames live in flows4, which lookup reads first. */
	__u8 exact4;
	__u16 pad;
};

/* The mask shapes in search order (highest max_prio first). Two banks: the
 * writer fills the idle one and flips cfg.bank, so a packet sees one
 * consistent set. */
struct mask_set {
	__u32 n;
	/* 1 + the highest max_prio among the shapes that are not exact4; 0
	 * when every shape is */
	__u32 other_max;
	struct mask_entry m[MAX_MASKS];
};

struct cfg {
	__u32 bank;
};

struct port_cfg {
	__u32 mtu;     /* L3 MTU of the port; 0: unchecked */
	__u32 ifindex;
};

struct counters {
	__u64 packets;
	__u64 bytes;
};

struct port_stats {
	__u64 rx_packets, rx_bytes, tx_packets, tx_bytes, drops, exceptions;
};

struct exc_meta {
	__u64 rule;
	__u32 in_port;
	__u32 reason;
	__u32 vni;
	__u32 len;
};

/* The tunnel endpoint of an uplink (hal.TunnelEndpoint): the outer
 * destinations its tunnelled frames may carry. Each entry pairs an address
 * (IPv4 mapped) with the destination MAC that goes with it: the endpoint's
 * for a unicast address, the group's for a multicast one. */
#define MAX_EP_ADDRS 16

struct tun_ep_addr {
	__u8 addr[16];
	__u8 mac[6];
	__u16 pad;
};

struct tun_ep {
	__u32 n;
	__u32 pad;
	struct tun_ep_addr a[MAX_EP_ADDRS];
};

struct trace_rec {
	__u64 rule;
	__u32 verdict;
	__u32 port;
	__u32 reason;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	__uint(max_entries, 65536); /* resized by the loader */
} flows SEC(".maps");

/* The entries of exact4 mask shapes for untunnelled IPv4 frames. An entry
 * lives in flows or here, never both. Preallocated like flows, which
 * reserves room for MaxRules entries in each map: without it every update
 * allocates, and a bulk load of exact rules costs the kernel about twice
 * the CPU (BenchmarkRuleOps: map_cpu_ns/op about 2000 instead of 800). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key4);
	__type(value, struct flow_val);
	__uint(max_entries, 65536); /* resized by the loader */
	__uint(map_flags, BPF_F_NO_PREALLOC);
} flows4 SEC(".maps");

/* One slot of table4, the open-addressing table of exact IPv4 entries that
 * user space writes through an mmap, without a system call per rule. seq
 * says what the slot holds: SEQ_VALID when key, ref and side are a
 * published entry; every change to the slot (publish, retire) gives seq a
 * new value (its upper bits count the slot's changes), so a reader that
 * finds seq unchanged after reading key, ref, the side entry side names
 * and the programs they name read one version of them. A slot is never
 * rewritten while it holds a published entry: a new version of an entry is
 * published in another slot (or in flows4) before the old slot is retired,
 * so a reader finds the old version, the new one, or both. */
#define SEQ_VALID 2
#define PROBE4 8   /* slots probed per key: base .. base+PROBE4-1 */

/* One rule of a table4 entry: what picking the better live rule needs
 * (id, scope, generation, priority), its counter, and its program: the
 * index in progs4 of its actions. id 0: no rule. scope in 16 bits: the
 * driver takes at most 65536 scopes (abi.go: MostScopes). */
struct ref4 {
	__u64 id;
	__u32 gen;
	__u32 counter;
	__u32 prog;
	__u16 scope;
	__u16 prio;
};

/* 64 bytes, one cache line (the array's values start on a page): the key,
 * the entry's first rule inline, and side, the index in sides4 of its
 * second rule (0: none), so that a hit on a one-rule entry reads one
 * line and one on a shadow or two-priority entry two. */
struct slot4 {
	__u32 seq;
	__u32 side;
	struct flow_key4 key;
	struct ref4 ref;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct slot4);
	__uint(max_entries, 65536 + PROBE4); /* resized by the loader: slots4 + PROBE4 */
	__uint(map_flags, BPF_F_MMAPABLE);
} table4 SEC(".maps");

/* The second rules of table4's two-rule entries, one per slot that names
 * it; entry 0 is never used (side 0: none). 32 bytes, so that an entry
 * never straddles two lines. User space writes an entry through an mmap
 * before it publishes the slot naming it, and rewrites one only after
 * retiring that slot: a reader that read an entry being rewritten sees its
 * slot's seq changed. */
struct side4 {
	struct ref4 ref;
	__u64 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct side4);
	__uint(max_entries, 65536); /* resized by the loader: MaxRules + 2 */
	__uint(map_flags, BPF_F_MMAPABLE);
} sides4 SEC(".maps");

/* The programs of table4's rules: a rule's actions (struct rule with id,
 * scope, gen, counter and prio zero: those are the ref's), interned, so
 * that the rules with the same actions (the flows toward one host) share
 * one. User space writes a program through an mmap before it publishes a
 * slot naming it, and rewrites one only after retiring every slot that
 * named it: a reader that read a program being rewritten sees its slot's
 * seq changed. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct rule);
	__uint(max_entries, 65536); /* resized by the loader */
	__uint(map_flags, BPF_F_MMAPABLE);
} progs4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mask_set);
	__uint(max_entries, 2);
} mask_sets SEC(".maps");

/* [0]: the mask bank the program reads; [1]: nonzero while flows4 holds
 * entries (table4's overflow), so that a key table4 does not hold is looked
 * up there only then. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct cfg);
	__uint(max_entries, 2);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 65536); /* resized by the loader: MaxScopes */
} active_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(max_entries, 65536); /* resized by the loader */
} rule_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct port_stats);
	__uint(max_entries, MAX_PORTS);
} port_stats SEC(".maps");

/* [0, NUM_REASONS): exceptions by reason; [NUM_REASONS, 2*NUM_REASONS): drops. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2 * NUM_REASONS);
} reason_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct port_cfg);
	__uint(max_entries, MAX_PORTS);
} ports SEC(".maps");

/* Port ID → ifindex. An array: port IDs are small and dense, and the
 * redirect's lookup is then an index rather than a hash and a list walk. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MAX_PORTS);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
} exceptions SEC(".maps");

/* Keyed by port; a port without an entry filters nothing. A hash, so that
 * replacing an endpoint swaps the whole value at once for a reader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct tun_ep);
	__uint(max_entries, MAX_PORTS);
} tun_eps SEC(".maps");

/* The rule a packet acts on, copied out of its entry: per CPU, since a
 * program runs to its end on one CPU without another instance of it
 * starting there (softirq, or BPF_PROG_TEST_RUN with bottom halves off).
 * Off the stack, so that the main program, the lookup inlined in it and
 * the functions it calls stay within BPF's 512 bytes of stack (Debian's
 * 6.1 kernel rounds each frame up to 32 bytes). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct rule);
	__uint(max_entries, 1);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct trace_rec);
	__uint(max_entries, 1);
} trace SEC(".maps");

/* Set per loaded instance: the port this instance is attached to, and
 * whether it records its verdict in trace (the instance behind NIC.Run). */
volatile const __u32 in_port = 0;
volatile const __u32 trace_on = 0;
/* table4's geometry, set by the loader: the number of base slots a key
 * hashes to, and the hash's seed. */
volatile const __u32 slots4 = 65536;
volatile const __u64 seed4 = 0;

struct pstate {
	__u32 l3;      /* offset of the IP header (0: not IP) */
	__u32 l4;      /* offset of the transport header (0: none) */
	__u32 inner;   /* offset of the inner Ethernet header (0: not tunnelled) */
	__u32 vlan_off; /* offset of the first VLAN tag (0: untagged) */
	/* In: where the frame being parsed ends. Out, when it is tunnelled:
	 * where its inner frame ends (the UDP or IP payload's end). */
	__u32 inner_end;
	/* The outer IP and UDP headers of a UDP tunnel (0: none). */
	__u16 outer_l3;
	__u16 outer_l4;
	__u8 v6;
	__u8 later_frag;
	__u8 outer_v6;
	/* Checksums that look partial (see csum_partial): PARTIAL_L4 the
	 * frame's TCP/UDP checksum (the inner frame's when tunnelled),
	 * PARTIAL_OUTER the outer UDP checksum of a tunnel. */
	__u8 partial;
};

#define PARTIAL_L4 1
#define PARTIAL_OUTER 2

#endif
