// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* Verdicts and actions: drop, to the host, head adjustments (decap, VLAN
 * pop and push), rewrites, the flow hash and encapsulation over IPv4 and
 * IPv6. */
#ifndef NICPATH_ACTIONS_H
#define NICPATH_ACTIONS_H

#include "common.h"
#include "maps.h"
#include "csum.h"

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
static __always_inline int encap(struct xdp_md *ctx, struct rule *r, __u32 hash)
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

#endif
