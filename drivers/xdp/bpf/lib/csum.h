// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* Checksums: folding, sums of packet bytes (in place and with
 * bpf_csum_diff), partial-checksum detection and completion, and RFC 1624
 * incremental updates. */
#ifndef NICPATH_CSUM_H
#define NICPATH_CSUM_H

#include "common.h"
#include "maps.h"

/* The outer UDP checksum over IPv6 covers the whole inner frame, summed in
 * 512-byte chunks by bpf_csum_diff (older kernels' bpf_csum_diff takes at
 * most 512 bytes) and the rest in place. 126 chunks keep every packet
 * offset the verifier checks within its 64 KiB bound. */
#define CSUM_CHUNK 512
#define CSUM_CHUNKS 126

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
		len = len16(*(__u16 *)(ip + 4)); /* no extension headers: the parser sends those to the host */
	} else {
		if ((void *)(ip + 20) > data_end)
			return -1;
		psum = (__u64)*(__u32 *)(ip + 12) + *(__u32 *)(ip + 16);
		proto = ip[9];
		len = len16(*(__u16 *)(ip + 2)) - (l4 - l3);
	}
	__u8 *h = data + l4;
	if ((void *)(h + 8) > data_end)
		return -1;
	__u32 co = 6;
	if (proto == 17)
		len = len16(*(__u16 *)(h + 4));
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

#endif
