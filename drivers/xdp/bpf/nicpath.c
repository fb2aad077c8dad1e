// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * nicpath's XDP datapath: parse a frame into a flow key (the inner frame when
 * it arrived tunnelled), find the best live rule by tuple-space search over
 * the rule table's mask shapes, and run the rule's actions: decapsulation,
 * VLAN pop/push, MAC/IP/port rewrites with incremental checksums, TTL
 * decrement, VXLAN/Geneve/NVGRE encapsulation over IPv4 or IPv6, then output
 * through a devmap, drop, or hand to the host on the exception path (a perf
 * event carrying the frame as it arrived and its reason).
 *
 * Every structure shared with Go is mirrored in abi.go; keep them in step.
 */
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
	__u32 id;        /* stable mask_id of the shape */
};

/* The mask shapes in search order (highest max_prio first). Two banks: the
 * writer fills the idle one and flips cfg.bank, so a packet sees one
 * consistent set. */
struct mask_set {
	__u32 n;
	__u32 pad;
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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mask_set);
	__uint(max_entries, 2);
} mask_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct cfg);
	__uint(max_entries, 1);
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

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct trace_rec);
	__uint(max_entries, 1);
} trace SEC(".maps");

/* The outer UDP checksum over IPv6 covers the whole inner frame, summed in
 * 512-byte chunks by bpf_csum_diff (older kernels' bpf_csum_diff takes at
 * most 512 bytes) and the rest in place. 126 chunks keep every packet
 * offset the verifier checks within its 64 KiB bound. */
#define CSUM_CHUNK 512
#define CSUM_CHUNKS 126

/* Set per loaded instance: the port this instance is attached to, and
 * whether it records its verdict in trace (the instance behind NIC.Run). */
volatile const __u32 in_port = 0;
volatile const __u32 trace_on = 0;

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

static __always_inline void count_reason(__u32 idx, __u32 port, int drop)
{
	__u64 *c = bpf_map_lookup_elem(&reason_stats, &idx);
	if (c)
		*c += 1;
	struct port_stats *ps = bpf_map_lookup_elem(&port_stats, &port);
	if (ps) {
		if (drop)
			ps->drops++;
		else
			ps->exceptions++;
	}
}

static __always_inline void record(__u32 verdict, __u32 port, __u32 reason, __u64 rule)
{
	if (!trace_on)
		return;
	__u32 zero = 0;
	struct trace_rec *t = bpf_map_lookup_elem(&trace, &zero);
	if (t) {
		t->verdict = verdict;
		t->port = port;
		t->reason = reason;
		t->rule = rule;
	}
}

static __always_inline int drop(__u32 reason, __u64 rule)
{
	count_reason(NUM_REASONS + (reason % NUM_REASONS), in_port, 1);
	record(V_DROP, 0, reason, rule);
	return XDP_DROP;
}

#define __global __attribute__((noinline))

/* to_host hands the frame, as it arrived, to the host: a perf event with the
 * metadata followed by the frame bytes; the frame itself is then dropped.
 * A function of its own, so that the event's header takes no room on the
 * fast path's stack (the main program and lookup together stay within
 * BPF's 512 bytes). */
__global int to_host(struct xdp_md *ctx, __u32 reason, __u32 vni, __u64 rule)
{
	if (!ctx)
		return XDP_DROP;
	__u32 len = ctx->data_end - ctx->data;
	struct exc_meta m = { .rule = rule, .in_port = in_port, .reason = reason, .vni = vni, .len = len };
	__u64 flags = BPF_F_CURRENT_CPU | ((__u64)(len & 0xffff) << 32);
	if (bpf_perf_event_output(ctx, &exceptions, flags, &m, sizeof(m)) != 0)
		return drop(R_QUEUEFULL, rule);
	count_reason(reason % NUM_REASONS, in_port, 0);
	record(V_TOHOST, 0, reason, rule);
	return XDP_DROP;
}

static __always_inline void set_mapped4(__u8 *dst, const void *src)
{
	*(__u64 *)dst = 0;
	*(__u32 *)(dst + 8) = htonl(0xffff);
	*(__u32 *)(dst + 12) = *(const __u32 *)src;
}

static __always_inline void copy16(__u8 *dst, const void *src)
{
	*(__u64 *)dst = *(const __u64 *)src;
	*(__u64 *)(dst + 8) = *(const __u64 *)(src + 8);
}

/*
 * parse fills k from the Ethernet frame at off. With tunnels set it
 * recognises VXLAN (UDP 4789), Geneve (UDP 6081) and NVGRE (GRE with key,
 * 0x6558) and returns -1 with st->inner set; the caller then parses the
 * inner frame with tunnels clear. It returns 0 or a reason.
 */
static __always_inline __u16 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* sum_words adds the n bytes at p (n a constant multiple of 4) as 32-bit
 * words in memory order; a 64-bit accumulator keeps every carry. */
static __always_inline __u64 sum_words(const __u8 *p, const int n)
{
	__u64 s = 0;
#pragma unroll
	for (int i = 0; i + 8 <= n; i += 8) {
		__u64 w = *(const __u64 *)(p + i);
		s += (w & 0xffffffff) + (w >> 32);
	}
	if (n % 8)
		s += *(const __u32 *)(p + n - 4);
	return s;
}

/* csum_partial says whether a TCP/UDP checksum field looks partial: a sender
 * that leaves the checksum to the NIC (CHECKSUM_PARTIAL, a veth's default
 * offload) puts the folded pseudo-header sum there, not inverted, and XDP
 * sees no ip_summed to tell. psum is the sum of the addresses as 32-bit
 * words in memory order; the field is compared in memory order too. A
 * complete checksum equal to that sum by chance is recomputed to the same
 * value, so the test needs no other evidence. */
static __always_inline int csum_partial(__u64 psum, __u8 proto, __u32 len, __u16 field)
{
	psum += htons((__u16)proto) + htons((__u16)len);
	psum = (psum & 0xffffffff) + (psum >> 32);
	psum = (psum & 0xffffffff) + (psum >> 32);
	return fold((__u32)psum) == field;
}

/* Global (non-static) functions are verified once each, on their own; that
 * keeps the verifier's work linear in the number of actions instead of
 * exponential in their combinations. */
__global int parse_one(struct xdp_md *ctx, __u32 off, struct flow_key *k, struct pstate *st, __u32 tunnels)
{
	if (!ctx || !k || !st)
		return R_MALFORMED;
	__u32 limit = st->inner_end;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (off > MAX_L2_OFF)
		return R_UNSUPPORTED;
	__u8 *eth = data + off;
	if ((void *)(eth + 14) > data_end || off + 14 > limit)
		return R_MALFORMED;
	__builtin_memcpy(k->eth_dst, eth, 6);
	__builtin_memcpy(k->eth_src, eth + 6, 6);
	__u16 et = ntohs(*(__u16 *)(eth + 12));
	off += 14;
	/* Up to two tags (QinQ); the first is keyed, as hal/wire does. */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (et != 0x8100 && et != 0x88a8)
			break;
		__u8 *tag = data + off;
		if ((void *)(tag + 4) > data_end || off + 4 > limit)
			return R_MALFORMED;
		if (i == 0) {
			k->vlan = 0x1000 | (ntohs(*(__u16 *)tag) & 0x0fff);
			st->vlan_off = off;
		}
		et = ntohs(*(__u16 *)(tag + 2));
		off += 4;
	}
	if (et == 0x8100 || et == 0x88a8)
		return R_UNSUPPORTED; /* more than two tags */
	k->eth_type = et;
	/* A sealed-address frame: this program has no keys to open it, and the
	 * host must never see it in clear, so it is dropped and counted. */
	if (et == 0x88b5)
		return R_SEALED;

	__u32 end;
	__u8 proto;
	__u64 psum;       /* the addresses' sum, for csum_partial */
	/* An IPv4 first fragment: its transport checksum and UDP length
	 * cover the whole datagram, more than the frame carries. */
	__u32 first_frag = 0;
	if (et == 0x0800) {
		__u8 *ip = data + off;
		if ((void *)(ip + 20) > data_end)
			return R_MALFORMED;
		if ((ip[0] >> 4) != 4)
			return R_MALFORMED;
		__u32 ihl = (ip[0] & 0x0f) * 4;
		__u32 tot = ntohs(*(__u16 *)(ip + 2));
		if (ihl < 20 || tot < ihl || (void *)(ip + tot) > data_end || off + tot > limit)
			return R_MALFORMED;
		/* The header checksum must hold, as hal/wire checks: a frame
		 * with a corrupt header is malformed, not forwarded. */
		__u64 sum = (__u64)*(__u32 *)ip + *(__u32 *)(ip + 4) + *(__u32 *)(ip + 8) +
			    *(__u32 *)(ip + 12) + *(__u32 *)(ip + 16);
		for (int w = 5; w < 15; w++) { /* options */
			if (w * 4 >= ihl)
				break;
			__u32 *ow = (__u32 *)(ip + w * 4);
			if ((void *)(ow + 1) > data_end)
				return R_MALFORMED;
			sum += *ow;
		}
		sum = (sum & 0xffffffff) + (sum >> 32);
		sum = (sum & 0xffffffff) + (sum >> 32);
		if (fold((__u32)sum) != 0xffff)
			return R_MALFORMED;
		set_mapped4(k->ip_src, ip + 12);
		set_mapped4(k->ip_dst, ip + 16);
		psum = (__u64)*(__u32 *)(ip + 12) + *(__u32 *)(ip + 16);
		proto = ip[9];
		k->proto = proto;
		st->l3 = off;
		__u16 frag = ntohs(*(__u16 *)(ip + 6));
		if (frag & 0x1fff) {
			st->later_frag = 1;
			return R_FRAGMENT;
		}
		first_frag = frag & 0x2000;
		end = off + tot;
		off += ihl;
	} else if (et == 0x86dd) {
		__u8 *ip6 = data + off;
		if ((void *)(ip6 + 40) > data_end)
			return R_MALFORMED;
		if ((ip6[0] >> 4) != 6)
			return R_MALFORMED;
		__u32 plen = ntohs(*(__u16 *)(ip6 + 4));
		if ((void *)(ip6 + 40 + plen) > data_end || off + 40 + plen > limit)
			return R_MALFORMED;
		copy16(k->ip_src, ip6 + 8);
		copy16(k->ip_dst, ip6 + 24);
		psum = sum_words(ip6 + 8, 32);
		proto = ip6[6];
		k->proto = proto;
		st->l3 = off;
		st->v6 = 1;
		/* Extension headers are left to the host (documented in doc.go). */
		switch (proto) {
		case 0: case 43: case 60: case 51: case 135: case 139: case 140:
			return R_UNSUPPORTED;
		case 44:
			return R_FRAGMENT;
		}
		end = off + 40 + plen;
		off += 40;
	} else {
		return 0;
	}
	if (off > 512 || end > 0xffff)
		return R_UNSUPPORTED;
	__u8 *l4 = data + off;
	st->l4 = off;
	if (proto == 6) {
		if ((void *)(l4 + 20) > data_end || off + 20 > end)
			return R_MALFORMED;
		__u32 doff = (l4[12] >> 4) * 4;
		if (doff < 20 || off + doff > end)
			return R_MALFORMED;
		k->l4_src = ntohs(*(__u16 *)l4);
		k->l4_dst = ntohs(*(__u16 *)(l4 + 2));
		if (!first_frag && csum_partial(psum, 6, end - off, *(__u16 *)(l4 + 16)))
			st->partial |= PARTIAL_L4;
	} else if (proto == 17) {
		if ((void *)(l4 + 8) > data_end || off + 8 > end)
			return R_MALFORMED;
		__u32 ulen = ntohs(*(__u16 *)(l4 + 4));
		if (ulen < 8 || (off + ulen > end && !first_frag))
			return R_MALFORMED;
		k->l4_src = ntohs(*(__u16 *)l4);
		k->l4_dst = ntohs(*(__u16 *)(l4 + 2));
		/* 0 over IPv4: no checksum; the pseudo-header sum is never 0 */
		int part = !first_frag && csum_partial(psum, 17, ulen, *(__u16 *)(l4 + 6));
		if (tunnels && (k->l4_dst == 4789 || k->l4_dst == 6081)) {
			if (first_frag)
				return R_FRAGMENT; /* a fragmented tunnel packet: the host's, as hal/wire says */
			if (part)
				st->partial |= PARTIAL_OUTER;
			__u8 *t = l4 + 8;
			if ((void *)(t + 8) > data_end || ulen < 16)
				return R_MALFORMED;
			k->vni = ntohl(*(__u32 *)(t + 4)) >> 8;
			if (k->l4_dst == 4789) {
				if (!(t[0] & 0x08))
					return R_MALFORMED;
				k->tun_kind = TUN_VXLAN;
				st->inner = off + 16;
				st->inner_end = off + ulen;
			} else {
				if ((t[0] >> 6) != 0)
					return R_UNSUPPORTED;
				if (ntohs(*(__u16 *)(t + 2)) != 0x6558)
					return R_UNSUPPORTED;
				__u32 optlen = (t[0] & 0x3f) * 4;
				if (16 + optlen > ulen)
					return R_MALFORMED;
				k->tun_kind = TUN_GENEVE;
				st->inner = off + 16 + optlen;
				st->inner_end = off + ulen;
			}
			return -1;
		}
		if (part)
			st->partial |= PARTIAL_L4;
	} else if (proto == 1 || proto == 58) {
		if ((void *)(l4 + 4) > data_end || off + 4 > end)
			return R_MALFORMED;
		k->l4_src = l4[0];
		k->l4_dst = l4[1];
	} else if (proto == 47 && tunnels) {
		if ((void *)(l4 + 4) > data_end || off + 4 > end)
			return R_MALFORMED;
		__u16 gflags = ntohs(*(__u16 *)l4);
		if (ntohs(*(__u16 *)(l4 + 2)) == 0x6558 && (gflags & 0x2000)) {
			if (first_frag)
				return R_FRAGMENT;
			if ((gflags & 0xd007) != 0)
				return R_UNSUPPORTED; /* checksum, sequence or a version: not NVGRE */
			if ((void *)(l4 + 8) > data_end || off + 8 > end)
				return R_MALFORMED;
			k->vni = ntohl(*(__u32 *)(l4 + 4)) >> 8;
			k->tun_kind = TUN_NVGRE;
			st->inner = off + 8;
			st->inner_end = end;
			return -1;
		}
	}
	return 0;
}

#define HASH_M1 0x9E3779B97F4A7C15ULL
#define HASH_M2 0xC2B2AE3D27D4EB4FULL

static __always_inline __u64 mix(__u64 h, __u64 v)
{
	h ^= v * HASH_M1;
	h = ((h << 31) | (h >> 33)) * HASH_M2;
	return h;
}

/* flow_hash is hal/wire.FlowHash: the entropy of the UDP source port and of
 * NVGRE's FlowID. */
static __always_inline __u32 flow_hash(const struct flow_key *k)
{
	__u64 h = 0;
	if (k->eth_type == 0x0800) {
		/* only the low 4 bytes of IPv4-mapped addresses vary: one word */
		h = mix(h, (__u64)*(const __u32 *)(k->ip_src + 12) | (__u64)*(const __u32 *)(k->ip_dst + 12) << 32);
		h = mix(h, (__u64)k->l4_src | (__u64)k->l4_dst << 16 | (__u64)k->proto << 32);
	} else if (k->eth_type == 0x86dd) {
		h = mix(h, *(const __u64 *)k->ip_src);
		h = mix(h, *(const __u64 *)(k->ip_src + 8));
		h = mix(h, *(const __u64 *)k->ip_dst);
		h = mix(h, *(const __u64 *)(k->ip_dst + 8));
		h = mix(h, (__u64)k->l4_src | (__u64)k->l4_dst << 16 | (__u64)k->proto << 32);
	} else {
		const __u8 *s = k->eth_src, *d = k->eth_dst;
		h = mix(h, (__u64)s[0] | (__u64)s[1] << 8 | (__u64)s[2] << 16 | (__u64)s[3] << 24 |
			   (__u64)s[4] << 32 | (__u64)s[5] << 40 | (__u64)k->eth_type << 48);
		h = mix(h, (__u64)d[0] | (__u64)d[1] << 8 | (__u64)d[2] << 16 | (__u64)d[3] << 24 |
			   (__u64)d[4] << 32 | (__u64)d[5] << 40);
	}
	h ^= h >> 33;
	h *= HASH_M2;
	h ^= h >> 29;
	h *= 0x165667B19E3779F9ULL;
	h ^= h >> 32;
	return (__u32)h;
}


/* RFC 1624: HC' = ~(~HC + ~m + m'), for one 32-bit word (two 16-bit words). */
static __always_inline __u16 csum_upd32(__u16 check, __u32 from, __u32 to)
{
	__u32 s = (__u16)~check;
	s += (__u16)~from + (__u16)~(from >> 16) + (to & 0xffff) + (to >> 16);
	return ~fold(s);
}

static __always_inline __u16 csum_upd16(__u16 check, __u16 from, __u16 to)
{
	__u32 s = (__u16)~check;
	s += (__u16)~from + to;
	return ~fold(s);
}

/* l4_csum_off is where the transport checksum that covers addresses lives,
 * or 0 when there is none to fix (ICMPv4, other protocols). */
static __always_inline __u32 l4_csum_off(__u8 proto, int v6)
{
	if (proto == 6)
		return 16;
	if (proto == 17)
		return 6;
	if (proto == 58 && v6)
		return 2;
	return 0;
}

/* fix_l4 applies an address or port change to the transport checksum; a UDP
 * checksum of 0 over IPv4 means "none" and stays 0. */
static __always_inline void fix_l4_32(void *data, void *data_end, __u32 l4, __u8 proto, int v6,
				      __u32 from, __u32 to)
{
	__u32 co = l4_csum_off(proto, v6);
	if (!co)
		return;
	l4 &= 0x3ff;
	__u16 *c = data + l4 + co;
	if ((void *)(c + 1) > data_end)
		return;
	if (proto == 17 && !v6 && *c == 0)
		return;
	__u16 n = csum_upd32(*c, from, to);
	if (proto == 17 && n == 0)
		n = 0xffff;
	*c = n;
}

static __always_inline void set_addr(void *data, void *data_end, struct pstate *st, __u8 proto,
				     const __u8 *addr, __u32 field)
{
	__u32 l3 = st->l3 & 0x3ff;
	if (!st->v6) {
		__u8 *ip = data + l3;
		if ((void *)(ip + 20) > data_end)
			return;
		__u32 *a = (__u32 *)(ip + 12 + field * 4);
		__u32 from = *a, to = *(const __u32 *)(addr + 12);
		*a = to;
		*(__u16 *)(ip + 10) = csum_upd32(*(__u16 *)(ip + 10), from, to);
		if (st->l4)
			fix_l4_32(data, data_end, st->l4, proto, 0, from, to);
		return;
	}
	__u8 *ip6 = data + l3;
	if ((void *)(ip6 + 40) > data_end)
		return;
	__u32 *a = (__u32 *)(ip6 + 8 + field * 16);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 from = a[i], to = *(const __u32 *)(addr + 4 * i);
		a[i] = to;
		if (st->l4)
			fix_l4_32(data, data_end, st->l4, proto, 1, from, to);
	}
}

static __always_inline void set_port(void *data, void *data_end, struct pstate *st, __u8 proto,
				     __u16 port, __u32 field)
{
	__u32 l4 = st->l4 & 0x3ff;
	__u16 *p = data + l4 + field * 2;
	if (!st->l4 || (void *)(p + 1) > data_end)
		return;
	__u16 from = *p, to = htons(port);
	*p = to;
	fix_l4_32(data, data_end, l4, proto, st->v6, from, to);
}

static __always_inline void copy_hdr(__u8 *dst, const __u8 *src, const int n)
{
#pragma unroll
	for (int i = 0; i + 8 <= n; i += 8)
		*(__u64 *)(dst + i) = *(const __u64 *)(src + i);
	if (n % 8 >= 4)
		*(__u32 *)(dst + n - n % 8) = *(const __u32 *)(src + n - n % 8);
	if (n % 4 == 2)
		*(__u16 *)(dst + n - 2) = *(const __u16 *)(src + n - 2);
}

/* tunnel_local says whether the tunnelled frame whose outer headers k holds
 * (its destination MAC and IP) is for this port's tunnel endpoint: true
 * when the port has none. */
static __always_inline int tunnel_local(const struct flow_key *k)
{
	__u32 port = in_port;
	struct tun_ep *ep = bpf_map_lookup_elem(&tun_eps, &port);
	if (!ep)
		return 1;
	__u32 n = ep->n;
	__u64 d0 = *(const __u64 *)k->ip_dst, d1 = *(const __u64 *)(k->ip_dst + 8);
	for (int i = 0; i < MAX_EP_ADDRS; i++) {
		if (i >= n)
			break;
		struct tun_ep_addr *a = &ep->a[i];
		if (*(__u64 *)a->addr != d0 || *(__u64 *)(a->addr + 8) != d1)
			continue;
		return *(__u32 *)a->mac == *(const __u32 *)k->eth_dst &&
		       *(__u16 *)(a->mac + 4) == *(const __u16 *)(k->eth_dst + 4);
	}
	return 0;
}

/* parse_frame parses the frame into k; a tunnelled frame's outer headers
 * become the tunnel fields and the rest of k describes the inner frame. */
__global int parse_frame(struct xdp_md *ctx, struct flow_key *k, struct pstate *st)
{
	if (!ctx || !k || !st)
		return R_MALFORMED;
	st->inner_end = ctx->data_end - ctx->data;
	int r = parse_one(ctx, 0, k, st, 1);
	if (r != -1)
		return r;
	if (!tunnel_local(k))
		return R_NOTLOCAL;
	/* The outer addresses become the tunnel's; everything else of the key
	 * is the inner frame's (in_port, vni and tun_kind stay). */
	copy16(k->tun_src, k->ip_src);
	copy16(k->tun_dst, k->ip_dst);
	__builtin_memset(k->ip_src, 0, 32);
	__builtin_memset(k->eth_src, 0, 12);
	k->eth_type = 0;
	k->vlan = 0;
	k->l4_src = 0;
	k->l4_dst = 0;
	k->proto = 0;
	__u32 inner = st->inner, inner_end = st->inner_end;
	__u16 ol3 = st->l3, ol4 = st->l4;
	__u8 ov6 = st->v6, part = st->partial;
	__builtin_memset(st, 0, sizeof(*st));
	st->inner = inner;
	st->inner_end = inner_end;
	if (k->tun_kind != TUN_NVGRE) {
		st->outer_l3 = ol3;
		st->outer_l4 = ol4;
		st->outer_v6 = ov6;
		st->partial = part & PARTIAL_OUTER;
	}
	r = parse_one(ctx, inner, k, st, 0);
	return r == -1 ? R_UNSUPPORTED : r;
}

/* lookup finds the best live rule for key by tuple-space search over the
 * mask shapes, highest max_prio first, and copies it into out. Between
 * equal priorities the lower rule ID wins, as hal requires. */
__global int lookup(struct flow_key *key, struct rule *out)
{
	if (!key || !out)
		return 0;
	__u32 zero = 0;
	struct cfg *cf = bpf_map_lookup_elem(&config, &zero);
	if (!cf)
		return 0;
	__u32 bank = cf->bank & 1;
	struct mask_set *ms = bpf_map_lookup_elem(&mask_sets, &bank);
	if (!ms)
		return 0;
	__u32 found = 0, best_prio = 0;
	__u64 best_id = 0;
	__u32 nmasks = ms->n;
	struct flow_key mk;
	for (__u32 i = 0; i < MAX_MASKS; i++) {
		if (i >= nmasks)
			break;
		struct mask_entry *me = &ms->m[i];
		if (found && best_prio > me->max_prio)
			break;
		__u64 *kw = (__u64 *)key, *mw = (__u64 *)&me->mask, *ow = (__u64 *)&mk;
#pragma unroll
		for (int j = 0; j < 12; j++)
			ow[j] = kw[j] & mw[j];
		mk.mask_id = me->id;
		struct flow_val *v = bpf_map_lookup_elem(&flows, &mk);
		if (!v)
			continue;
#pragma unroll
		for (int s = 0; s < 2; s++) {
			struct rule *ru = &v->slot[s];
			if (!ru->id)
				continue;
			__u32 scope = ru->scope;
			__u32 *ag = bpf_map_lookup_elem(&active_gen, &scope);
			if (!ag || *ag != ru->gen)
				continue;
			if (!found || ru->prio > best_prio || (ru->prio == best_prio && ru->id < best_id)) {
				found = 1;
				best_prio = ru->prio;
				best_id = ru->id;
				__builtin_memcpy(out, ru, sizeof(*out));
			}
		}
	}
	return found;
}

/* strip_head removes the outer headers (decap) and a VLAN tag (pop); it
 * returns the number of bytes removed before the frame's IP header moved,
 * or -1. */
__global int strip_head(struct xdp_md *ctx, __u32 decap_off, __u32 pop_tag_at)
{
	if (!ctx)
		return -1;
	if (decap_off && bpf_xdp_adjust_head(ctx, decap_off & 0x3ff))
		return -1;
	if (pop_tag_at) {
		void *data = (void *)(long)ctx->data;
		void *data_end = (void *)(long)ctx->data_end;
		__u8 *d = data;
		if ((void *)(d + 18) > data_end)
			return -1;
		*(__u32 *)(d + 12) = *(__u32 *)(d + 8);
		*(__u32 *)(d + 8) = *(__u32 *)(d + 4);
		*(__u32 *)(d + 4) = *(__u32 *)d;
		if (bpf_xdp_adjust_head(ctx, 4))
			return -1;
	}
	return 0;
}

/* rewrite applies the MAC, address, port and TTL rewrites of r. */
__global int rewrite(struct xdp_md *ctx, struct rule *r, struct pstate *st, __u32 proto)
{
	if (!ctx || !r || !st)
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u16 flags = r->flags;
	if (flags & (ACT_SET_ETH_SRC | ACT_SET_ETH_DST)) {
		__u8 *d = data;
		if ((void *)(d + 14) > data_end)
			return -1;
		if (flags & ACT_SET_ETH_DST)
			__builtin_memcpy(d, r->eth_dst, 6);
		if (flags & ACT_SET_ETH_SRC)
			__builtin_memcpy(d + 6, r->eth_src, 6);
	}
	if (!st->l3)
		return 0;
	if (flags & ACT_SET_IP_SRC)
		set_addr(data, data_end, st, proto, r->ip_src, 0);
	if (flags & ACT_SET_IP_DST)
		set_addr(data, data_end, st, proto, r->ip_dst, 1);
	if (flags & ACT_SET_L4_SRC)
		set_port(data, data_end, st, proto, r->l4_src, 0);
	if (flags & ACT_SET_L4_DST)
		set_port(data, data_end, st, proto, r->l4_dst, 1);
	if (flags & ACT_DEC_TTL) {
		__u8 *ip = data + (st->l3 & 0x3ff);
		if ((void *)(ip + 20) > data_end)
			return -1;
		if (st->v6) {
			ip[7]--;
		} else {
			__u16 from = *(__u16 *)(ip + 8);
			ip[8]--;
			*(__u16 *)(ip + 10) = csum_upd16(*(__u16 *)(ip + 10), from, *(__u16 *)(ip + 8));
		}
	}
	return 0;
}

__global int push_vlan(struct xdp_md *ctx, __u32 tci)
{
	if (!ctx)
		return -1;
	if (bpf_xdp_adjust_head(ctx, -4))
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *d = data;
	if ((void *)(d + 18) > data_end)
		return -1;
	*(__u32 *)d = *(__u32 *)(d + 4);
	*(__u32 *)(d + 4) = *(__u32 *)(d + 8);
	*(__u32 *)(d + 8) = *(__u32 *)(d + 12);
	*(__u16 *)(d + 12) = htons(0x8100);
	*(__u16 *)(d + 14) = htons(tci & 0x0fff);
	return 0;
}

/* encap writes r's outer headers in front of the frame and fills the
 * per-packet fields: lengths, the IPv4 checksum, the UDP source port (or
 * NVGRE FlowID) from the flow hash. UDP checksums stay 0 over IPv4. */
__global int encap(struct xdp_md *ctx, struct rule *r, __u32 hash)
{
	if (!ctx || !r)
		return -1;
	__u32 inner_len = (ctx->data_end - ctx->data) & 0xffff;
	if (r->encap_len == 50) {
		if (bpf_xdp_adjust_head(ctx, -50))
			return -1;
		void *data = (void *)(long)ctx->data;
		void *data_end = (void *)(long)ctx->data_end;
		__u8 *d = data;
		if ((void *)(d + 50) > data_end)
			return -1;
		copy_hdr(d, r->encap_hdr, 50);
		__u32 tot = inner_len + 36;
		*(__u16 *)(d + 16) = htons(tot);
		*(__u16 *)(d + 24) = htons((__u16)~fold(r->encap_sum + tot));
		*(__u16 *)(d + 34) = htons(0xC000 | (hash >> 18));
		*(__u16 *)(d + 38) = htons(inner_len + 16);
		return 0;
	}
	if (bpf_xdp_adjust_head(ctx, -42))
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *d = data;
	if ((void *)(d + 42) > data_end)
		return -1;
	copy_hdr(d, r->encap_hdr, 42);
	__u32 tot = inner_len + 28;
	*(__u16 *)(d + 16) = htons(tot);
	*(__u16 *)(d + 24) = htons((__u16)~fold(r->encap_sum + tot));
	if (!(r->flags & ACT_FIXED_FLOWID))
		d[41] = (__u8)hash;
	return 0;
}

/* sum_rest returns the one's-complement sum of the len (< 512) bytes of the
 * frame from off, taken as 16-bit words in memory order (so the
 * byte-swapped network-order sum; an odd last byte is padded with zero),
 * folded to 16 bits; or -1. A function of its own so that the verifier
 * checks it once, for any offset, rather than after every chunk of
 * frame_sum. The bytes are read in place at constant sizes: 64-byte blocks,
 * then one step for each lower bit of the length. */
__global int sum_rest(struct xdp_md *ctx, __u32 off, __u32 len)
{
	if (!ctx || len >= CSUM_CHUNK || off > 0x10000 - CSUM_CHUNK)
		return -1;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *p = (void *)(long)ctx->data + off;
	__u64 acc = 0;
	for (int i = 0; i < CSUM_CHUNK / 64; i++) {
		if (len < 64)
			break;
		/* keeps clang from deriving a trip count from data_end,
		 * arithmetic on which the verifier forbids */
		asm volatile("" : "+r"(p));
		if ((void *)(p + 64) > data_end)
			return -1;
		acc += sum_words(p, 64);
		p += 64;
		len -= 64;
	}
#define SUM_STEP(N)                                        \
	if (len & (N)) {                                   \
		if ((void *)(p + (N)) > data_end)          \
			return -1;                         \
		acc += sum_words(p, N);                    \
		p += (N);                                  \
	}
	SUM_STEP(32)
	SUM_STEP(16)
	SUM_STEP(8)
	SUM_STEP(4)
#undef SUM_STEP
	if (len & 2) {
		if ((void *)(p + 2) > data_end)
			return -1;
		acc += *(__u16 *)p;
		p += 2;
	}
	if (len & 1) {
		if ((void *)(p + 1) > data_end)
			return -1;
		acc += *p; /* the low byte of a word in memory order: padded with zero */
	}
	acc = (acc & 0xffffffff) + (acc >> 32);
	acc = (acc & 0xffffffff) + (acc >> 32);
	return fold((__u32)acc);
}

/* frame_sum is sum_rest for the len bytes of the frame from off (at most
 * 512: a transport header's offset), of any length up to CSUM_CHUNKS chunks
 * and a rest: whole 512-byte chunks are summed by bpf_csum_diff straight
 * from the packet, at offsets the verifier follows one iteration at a
 * time, and sum_rest adds what remains. */
__global int frame_sum(struct xdp_md *ctx, __u32 off, __u32 len)
{
	if (!ctx || off > 512)
		return -1;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *p = (void *)(long)ctx->data + off;
	__u64 acc = 0;
	for (int i = 0; i < CSUM_CHUNKS; i++) {
		if (len < CSUM_CHUNK)
			break;
		asm volatile("" : "+r"(p));
		if ((void *)(p + CSUM_CHUNK) > data_end)
			return -1;
		__s64 s = bpf_csum_diff(0, 0, (__be32 *)p, CSUM_CHUNK, 0);
		if (s < 0)
			return -1;
		acc += (__u32)s;
		p += CSUM_CHUNK;
		off += CSUM_CHUNK;
		len -= CSUM_CHUNK;
	}
	int rest = sum_rest(ctx, off, len);
	if (rest < 0)
		return -1;
	acc += (__u32)rest;
	acc = (acc & 0xffffffff) + (acc >> 32);
	acc = (acc & 0xffffffff) + (acc >> 32);
	return fold((__u32)acc);
}

/* complete_l4 completes the partial TCP/UDP checksum of the IP header at
 * l3 and the transport header at l4 (see csum_partial): the field holds the
 * pseudo-header sum, so the sum of the segment as it is, field included, is
 * the sum the checksum covers, and the field becomes its complement (UDP's
 * 0 written 0xffff, as hal/wire does). It returns 1 when it completed one,
 * 0 when the field is not partial, -1 when the frame cannot be summed. */
__global int complete_l4(struct xdp_md *ctx, __u32 l3, __u32 l4, __u32 v6)
{
	if (!ctx || l3 > 512 || l4 > 512 || l4 <= l3)
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *ip = data + l3;
	__u64 psum;
	__u32 len;
	__u8 proto;
	if (v6) {
		if ((void *)(ip + 40) > data_end)
			return -1;
		psum = sum_words(ip + 8, 32);
		proto = ip[6];
		len = ntohs(*(__u16 *)(ip + 4)); /* no extension headers: the parser sends those to the host */
	} else {
		if ((void *)(ip + 20) > data_end)
			return -1;
		psum = (__u64)*(__u32 *)(ip + 12) + *(__u32 *)(ip + 16);
		proto = ip[9];
		len = ntohs(*(__u16 *)(ip + 2)) - (l4 - l3);
	}
	__u8 *h = data + l4;
	if ((void *)(h + 8) > data_end)
		return -1;
	__u32 co = 6;
	if (proto == 17)
		len = ntohs(*(__u16 *)(h + 4));
	else if (proto == 6)
		co = 16;
	else
		return 0;
	if (len > 0xffff)
		return -1;
	__u16 *c = (__u16 *)(h + co);
	if ((void *)(c + 1) > data_end)
		return -1;
	if (!csum_partial(psum, proto, len, *c))
		return 0;
	int s = frame_sum(ctx, l4, len);
	if (s < 0)
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	c = data + l4 + co;
	if ((void *)(c + 1) > data_end)
		return -1;
	__u16 v = ~(__u16)s;
	if (proto == 17 && v == 0)
		v = 0xffff;
	*c = v;
	return 1;
}

/* complete_csums completes the partial checksums parse found: the
 * transport's (the inner frame's when tunnelled) first, then the outer
 * UDP checksum, which covers it, unless the outer headers are about to be
 * removed. */
static __always_inline void complete_csums(struct xdp_md *ctx, struct pstate *st, __u32 decap)
{
	if (st->partial & PARTIAL_L4)
		complete_l4(ctx, st->l3, st->l4, st->v6);
	if ((st->partial & PARTIAL_OUTER) && !decap)
		complete_l4(ctx, st->outer_l3, st->outer_l4, st->outer_v6);
}

/* encap6 is encap with an IPv6 outer header, as hal/wire writes it: the
 * flow label from the flow hash, the payload length, and a full UDP
 * checksum (hal/wire computes one over IPv6, RFC 8200 §8.1, rather than
 * relying on RFC 6935's zero checksum). The inner frame is summed before
 * anything changes, so a failure leaves the frame as it arrived. */
__global int encap6(struct xdp_md *ctx, struct rule *r, __u32 hash)
{
	if (!ctx || !r)
		return -1;
	__u32 inner_len = (ctx->data_end - ctx->data) & 0xffff;
	__u32 label = htonl(0x60000000 | (hash & 0xfffff));
	if (r->encap_len == 70) {
		__u32 l4len = inner_len + 16;
		if (l4len > 0xffff)
			return -1;
		int isum = frame_sum(ctx, 0, inner_len);
		if (isum < 0)
			return -1;
		if (bpf_xdp_adjust_head(ctx, -70))
			return -1;
		void *data = (void *)(long)ctx->data;
		void *data_end = (void *)(long)ctx->data_end;
		__u8 *d = data;
		if ((void *)(d + 70) > data_end)
			return -1;
		copy_hdr(d, r->encap_hdr, 70);
		__u32 sport = 0xC000 | (hash >> 18);
		*(__u32 *)(d + 14) = label;
		*(__u16 *)(d + 18) = htons(l4len);
		*(__u16 *)(d + 54) = htons(sport);
		*(__u16 *)(d + 58) = htons(l4len);
		__u16 c = ~fold(r->encap_sum + sport + 2 * l4len + bswap16((__u16)isum));
		*(__u16 *)(d + 60) = htons(c ? c : 0xffff);
		return 0;
	}
	__u32 l4len = inner_len + 8;
	if (l4len > 0xffff)
		return -1;
	if (bpf_xdp_adjust_head(ctx, -62))
		return -1;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *d = data;
	if ((void *)(d + 62) > data_end)
		return -1;
	copy_hdr(d, r->encap_hdr, 62);
	*(__u32 *)(d + 14) = label;
	*(__u16 *)(d + 18) = htons(l4len);
	if (!(r->flags & ACT_FIXED_FLOWID))
		d[61] = (__u8)hash;
	return 0;
}

/* ttl_of returns the TTL / hop limit of the IP header at l3, or 0. */
__global int ttl_of(struct xdp_md *ctx, __u32 l3, __u32 v6)
{
	if (!ctx)
		return 0;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *ip = data + (l3 & 0x3ff);
	if ((void *)(ip + 20) > data_end)
		return 0;
	return v6 ? ip[7] : ip[8];
}

SEC("xdp")
int nicpath_xdp(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u32 port = in_port;

	struct port_stats *ps = bpf_map_lookup_elem(&port_stats, &port);
	if (ps) {
		ps->rx_packets++;
		ps->rx_bytes += len;
	}

	struct flow_key key = {};
	struct pstate st = {};
	key.in_port = port;
	int r = parse_frame(ctx, &key, &st);
	/* Malformed frames are dropped and counted, as softnic does: there is
	 * nothing the host could do with them. A sealed frame cannot be opened
	 * here and the host must never see it in clear. */
	if (r == R_SEALED || r == R_MALFORMED || r == R_NOTLOCAL)
		return drop(r, 0);
	if (r != 0)
		return to_host(ctx, r, key.vni, 0);

	struct rule ru;
	if (!lookup(&key, &ru)) {
		if (st.partial)
			complete_csums(ctx, &st, 0);
		return to_host(ctx, R_MISS, key.vni, 0);
	}

	__u16 flags = ru.flags;
	if (flags & ACT_COUNT) {
		__u32 ci = ru.counter;
		struct counters *c = bpf_map_lookup_elem(&rule_counters, &ci);
		if (c) {
			c->packets++;
			c->bytes += len;
		}
	}
	if (ru.terminal != TERM_OUTPUT && ru.terminal != TERM_TOHOST)
		return drop(ru.reason, ru.id);
	/* Whatever leaves toward a VM, the wire or the host carries complete
	 * checksums: an xdp_frame (and a perf event) has no checksum state
	 * to finish them later. */
	if (st.partial)
		complete_csums(ctx, &st, ru.terminal == TERM_OUTPUT && (flags & ACT_DECAP));
	if (ru.terminal == TERM_TOHOST)
		return to_host(ctx, ru.reason, key.vni, ru.id);

	/* Checks that send the frame to the host as it arrived, before any
	 * change: an expiring TTL, a frame too big for the egress port. */
	if ((flags & ACT_DEC_TTL) && st.l3 && ttl_of(ctx, st.l3, st.v6) <= 1)
		return to_host(ctx, R_TTL, key.vni, ru.id);
	__u32 out = ru.out_port;
	__u32 final_len = len;
	__u32 tagged = st.vlan_off ? 1 : 0;
	__u32 decap_off = (flags & ACT_DECAP) ? st.inner : 0;
	final_len -= decap_off;
	__u32 pop = (flags & ACT_POP_VLAN) && st.vlan_off;
	if (pop) {
		final_len -= 4;
		tagged = 0;
	}
	if (flags & ACT_PUSH_VLAN) {
		final_len += 4;
		tagged = 1;
	}
	if (flags & ACT_ENCAP) {
		final_len += ru.encap_len;
		tagged = 0;
	}
	struct port_cfg *pc = bpf_map_lookup_elem(&ports, &out);
	if (pc && pc->mtu && final_len > pc->mtu + 14 + 4 * tagged)
		return to_host(ctx, R_MTU, key.vni, ru.id);

	if (decap_off || pop) {
		if (strip_head(ctx, decap_off, pop))
			return drop(R_MALFORMED, ru.id);
		__u32 moved = decap_off + (pop ? 4 : 0);
		st.l3 = st.l3 ? st.l3 - moved : 0;
		st.l4 = st.l4 ? st.l4 - moved : 0;
	}
	if (flags & (ACT_SET_ETH_SRC | ACT_SET_ETH_DST | ACT_SET_IP_SRC | ACT_SET_IP_DST |
		     ACT_SET_L4_SRC | ACT_SET_L4_DST | ACT_DEC_TTL)) {
		if (rewrite(ctx, &ru, &st, key.proto))
			return drop(R_MALFORMED, ru.id);
	}
	if ((flags & ACT_PUSH_VLAN) && push_vlan(ctx, ru.vlan_tci))
		return drop(R_MTU, ru.id);
	if (flags & ACT_ENCAP) {
		/* 42 and 50: IPv4 outer headers; 62 and 70: IPv6 */
		__u32 h = flow_hash(&key);
		if (ru.encap_len > 50 ? encap6(ctx, &ru, h) : encap(ctx, &ru, h))
			return drop(R_MTU, ru.id);
	}

	long rc = bpf_redirect_map(&tx_ports, out, XDP_DROP);
	if (rc != XDP_REDIRECT)
		return drop(R_NOPORT, ru.id);
	record(V_OUTPUT, out, 0, ru.id);
	struct port_stats *tx = bpf_map_lookup_elem(&port_stats, &out);
	if (tx) {
		tx->tx_packets++;
		tx->tx_bytes += ctx->data_end - ctx->data;
	}
	return XDP_REDIRECT;
}

char __license[] SEC("license") = "Dual MIT/GPL";
