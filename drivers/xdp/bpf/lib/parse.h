// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* Parsing: a frame into a flow key, its tunnel's outer headers into the
 * key's tunnel fields, and the check that a tunnelled frame is for this
 * port's tunnel endpoint. */
#ifndef NICPATH_PARSE_H
#define NICPATH_PARSE_H

#include "common.h"
#include "maps.h"
#include "csum.h"

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

/* set_macs copies the frame's MAC addresses (destination, then source, at
 * eth) into k's eth_src and eth_dst, which lie next to each other at an
 * 8-byte boundary: one 8-byte store (the source and the destination's first
 * two bytes) and one 4-byte store, the same words lookup4 loads for the
 * compact key. Byte-wise copies took 12 loads and 5 narrow stores, and the
 * wide loads that followed could not be forwarded from the narrow stores:
 * each waited for them to reach the cache. */
static __always_inline void set_macs(struct flow_key *k, const __u8 *eth)
{
	_Static_assert(__builtin_offsetof(struct flow_key, eth_src) % 8 == 0, "eth_src is 8-byte aligned");
	_Static_assert(__builtin_offsetof(struct flow_key, eth_dst) ==
			       __builtin_offsetof(struct flow_key, eth_src) + 6, "eth_dst follows eth_src");
	*(__u64 *)k->eth_src = (__u64)*(const __u32 *)(eth + 6) | (__u64)*(const __u16 *)(eth + 10) << 32 |
			       (__u64)*(const __u16 *)eth << 48;
	*(__u32 *)(k->eth_dst + 2) = *(const __u32 *)(eth + 2);
}

/* GENEVE_MAX_OPTS bounds the options the program walks; a frame with more
 * goes to the host, which walks them all (hal/wire). Each option the
 * verifier follows costs it a pass over the loop body. */
#define GENEVE_MAX_OPTS 8

/* geneve_options walks the optlen bytes of Geneve options at off, as
 * hal/wire does: they must tile the option area exactly (R_MALFORMED
 * otherwise), and a critical option, which this program cannot understand,
 * sends the frame to the host (R_UNSUPPORTED; RFC 8926 §3.5 forbids
 * forwarding it), as do more than GENEVE_MAX_OPTS options. 0 when the
 * options may be skipped. A function of its own, verified once. */
__global int geneve_options(struct xdp_md *ctx, __u32 off, __u32 optlen)
{
	if (!ctx || off > MAX_L2_OFF + 512 || optlen > 252)
		return R_MALFORMED;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 o = 0;
	for (int i = 0; i < GENEVE_MAX_OPTS; i++) {
		if (o >= optlen)
			return 0;
		__u8 *h = data + off + (o & 0xff);
		if ((void *)(h + 4) > data_end)
			return R_MALFORMED;
		if (h[2] & 0x80)
			return R_UNSUPPORTED;
		o += 4 + (h[3] & 0x1f) * 4;
		if (o > optlen)
			return R_MALFORMED;
	}
	return o == optlen ? 0 : R_UNSUPPORTED;
}

/*
 * parse fills k from the Ethernet frame at off. With tunnels set it
 * recognises VXLAN (UDP 4789), Geneve (UDP 6081) and NVGRE (GRE with key,
 * 0x6558) and returns -1 with st->inner set; the caller then parses the
 * inner frame with tunnels clear. It returns 0 or a reason.
 */
/* Global (non-static) functions are verified once each, on their own; that
 * keeps the verifier's work linear in the number of actions instead of
 * exponential in their combinations. */
static __always_inline int parse_one_inline(struct xdp_md *ctx, __u32 off, struct flow_key *k, struct pstate *st,
					    __u32 tunnels)
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
	set_macs(k, eth);
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
		__u32 tot = len16(*(__u16 *)(ip + 2));
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
		__u32 plen = len16(*(__u16 *)(ip6 + 4));
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
		__u32 ulen = len16(*(__u16 *)(l4 + 4));
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
				/* A control packet (O bit) is the host's, as
				 * hal/wire (softnic's parser) says. */
				if (t[1] & 0x80)
					return R_UNSUPPORTED;
				if (ntohs(*(__u16 *)(t + 2)) != 0x6558)
					return R_UNSUPPORTED;
				__u32 optlen = (t[0] & 0x3f) * 4;
				if (16 + optlen > ulen)
					return R_MALFORMED;
				if (optlen) {
					int g = geneve_options(ctx, off + 16, optlen);
					if (g)
						return g;
					/* Critical options present (C bit): this
					 * program understands none. */
					if (t[1] & 0x40)
						return R_UNSUPPORTED;
				}
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

/* parse_inner takes a tunnelled frame on from its outer headers, which
 * parse_frame parsed into k and st: it checks that the frame is for this
 * port's tunnel endpoint, makes the outer addresses the tunnel's, and
 * parses the inner frame into the rest of k. A function of its own,
 * verified once: the inner parse and the endpoint search are explored from
 * one state, not from every path of the outer parse, and the call is the
 * one a tunnelled frame pays (the outer frame, which every packet has, is
 * parsed inline in the main program, without a call and its return, each
 * a mispredicted one under the SRSO mitigation of AMD CPUs, "Safe RET"). */
__global int parse_inner(struct xdp_md *ctx, struct flow_key *k, struct pstate *st)
{
	if (!ctx || !k || !st)
		return R_MALFORMED;
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
	int r = parse_one_inline(ctx, inner, k, st, 0);
	return r == -1 ? R_UNSUPPORTED : r;
}

/* parse_frame parses the frame into k; a tunnelled frame's outer headers
 * become the tunnel fields and the rest of k describes the inner frame. */
static __always_inline int parse_frame(struct xdp_md *ctx, struct flow_key *k, struct pstate *st)
{
	if (!ctx || !k || !st)
		return R_MALFORMED;
	st->inner_end = ctx->data_end - ctx->data;
	int r = parse_one_inline(ctx, 0, k, st, 1);
	if (r != -1)
		return r;
	return parse_inner(ctx, k, st);
}

#endif
