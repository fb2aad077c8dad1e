// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* The rule lookup: tuple-space search over the mask shapes. */
#ifndef NICPATH_LOOKUP_H
#define NICPATH_LOOKUP_H

#include "common.h"
#include "maps.h"

/* best keeps the better of the live rules of v: a higher priority, or the
 * lower rule ID at the same priority, as hal requires. */
static __always_inline void best_of(struct flow_val *v, struct rule **best)
{
#pragma unroll
	for (int s = 0; s < 2; s++) {
		struct rule *ru = &v->slot[s];
		if (!ru->id)
			continue;
		__u32 scope = ru->scope;
		__u32 *ag = bpf_map_lookup_elem(&active_gen, &scope);
		if (!ag || *ag != ru->gen)
			continue;
		struct rule *b = *best;
		if (!b || ru->prio > b->prio || (ru->prio == b->prio && ru->id < b->id))
			*best = ru;
	}
}

#define HASH4_M 0x9E3779B97F4A7C15ULL

/* hash4 is table4's hash of a compact key (abi.go: hash4): four 64-bit
 * words, multiplied in, seeded per NIC. */
static __always_inline __u64 hash4(const struct flow_key4 *k)
{
	const __u64 *w = (const __u64 *)k;
	__u64 h = seed4;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		h = (h ^ w[i]) * HASH4_M;
		h ^= h >> 29;
	}
	return h;
}

#define barrier() asm volatile("" ::: "memory")

/* probe4 looks the compact key k up in table4 and, when a slot holds it
 * with a live rule, copies the better live rule into out and returns 1.
 * A slot whose seq changed while it was read (being retired or reused) is
 * read again from the first slot: its new version, if any, was published
 * before it was retired. Loads are ordered as written (compiler barriers;
 * x86 keeps loads in order). */
static __always_inline int probe4(const struct flow_key4 *k, struct rule *out)
{
	__u64 h = hash4(k);
	__u32 base = (__u32)(((h >> 32) * (__u64)slots4) >> 32);
	const __u64 *kw = (const __u64 *)k;
	for (int attempt = 0; attempt < 3; attempt++) {
		int again = 0;
		for (__u32 i = 0; i < PROBE4; i++) {
			__u32 idx = base + i;
			struct slot4 *s = bpf_map_lookup_elem(&table4, &idx);
			if (!s)
				return 0;
			__u32 s1 = *(volatile __u32 *)&s->seq;
			if (!(s1 & SEQ_VALID))
				continue;
			barrier();
			const __u64 *sw = (const __u64 *)&s->key;
			if (sw[0] != kw[0] || sw[1] != kw[1] || sw[2] != kw[2] || sw[3] != kw[3]) {
				barrier();
				if (*(volatile __u32 *)&s->seq != s1) {
					again = 1; /* the slot changed: it may hold k now */
					break;
				}
				continue;
			}
			struct rule *best = 0;
			best_of(&s->val, &best);
			if (best)
				__builtin_memcpy(out, best, sizeof(*out));
			barrier();
			if (*(volatile __u32 *)&s->seq != s1) {
				again = 1;
				break;
			}
			return best ? 1 : 0;
		}
		if (!again)
			return 0;
	}
	return 0;
}

/* lookup4 looks an untunnelled IPv4 frame's compact key up in table4, and
 * in flows4 (table4's overflow) when that has entries: what the exact4
 * shapes hold for it. It copies the better live rule into out and returns
 * LOOKUP_FINAL when no other shape can beat it (none holds a priority as
 * high), LOOKUP_FOUND when lookup must still search the other shapes, or
 * 0. A function of its own: the compact key's room is on its stack, not
 * on lookup's. */
#define LOOKUP_FOUND 1
#define LOOKUP_FINAL 2

__global int lookup4(struct flow_key *key, struct rule *out)
{
	if (!key || !out)
		return 0;
	struct flow_key4 k4;
	k4.in_port = key->in_port;
	*(__u32 *)k4.ip_src = *(const __u32 *)(key->ip_src + 12);
	*(__u32 *)k4.ip_dst = *(const __u32 *)(key->ip_dst + 12);
	k4.l4_src = key->l4_src;
	k4.l4_dst = key->l4_dst;
	__builtin_memcpy(k4.eth_src, key->eth_src, 12);
	k4.vlan = key->vlan;
	k4.proto = key->proto;
	k4.pad = 0;
	__u32 zero = 0, one = 1;
	int found = probe4(&k4, out);
	if (!found) {
		struct cfg *ov = bpf_map_lookup_elem(&config, &one);
		if (!ov || !ov->bank)
			return 0;
		struct flow_val *v = bpf_map_lookup_elem(&flows4, &k4);
		if (!v)
			return 0;
		struct rule *best = 0;
		best_of(v, &best);
		if (!best)
			return 0;
		__builtin_memcpy(out, best, sizeof(*out));
	}
	struct cfg *cf = bpf_map_lookup_elem(&config, &zero);
	if (!cf)
		return LOOKUP_FOUND;
	__u32 bank = cf->bank & 1;
	struct mask_set *ms = bpf_map_lookup_elem(&mask_sets, &bank);
	if (!ms)
		return LOOKUP_FOUND;
	/* other_max: 1 + the highest priority of the shapes that are not
	 * exact4, 0 when there are none */
	if (out->prio >= ms->other_max)
		return LOOKUP_FINAL;
	return LOOKUP_FOUND;
}

/* lookup finds the best live rule for key by tuple-space search over the
 * mask shapes, highest max_prio first, and copies it into out. When have is
 * set, out already holds what lookup4 found for an untunnelled IPv4 frame:
 * the search then skips the exact4 shapes and stops at the first whose
 * max_prio is below the best found. */
__global int lookup(struct flow_key *key, struct rule *out, int have)
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
	struct rule *best = have ? out : 0;
	struct flow_key mk;
	int v4 = key->eth_type == 0x0800 && key->tun_kind == TUN_NONE;
	__u32 nmasks = ms->n;
	for (__u32 i = 0; i < MAX_MASKS; i++) {
		if (i >= nmasks)
			break;
		struct mask_entry *me = &ms->m[i];
		if (best && best->prio > me->max_prio)
			break;
		if (v4 && me->exact4)
			continue;
		__u64 *kw = (__u64 *)key, *mw = (__u64 *)&me->mask, *ow = (__u64 *)&mk;
#pragma unroll
		for (int j = 0; j < 12; j++)
			ow[j] = kw[j] & mw[j];
		mk.mask_id = me->id;
		struct flow_val *v = bpf_map_lookup_elem(&flows, &mk);
		if (v)
			best_of(v, &best);
	}
	if (!best)
		return 0;
	if (best != out)
		__builtin_memcpy(out, best, sizeof(*out));
	return 1;
}

#endif
