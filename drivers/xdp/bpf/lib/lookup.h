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

/* better4 makes ru *best when it is live and better, as best_of. */
static __always_inline void better4(struct ref4 *ru, struct ref4 **best)
{
	if (!ru->id)
		return;
	__u32 scope = ru->scope;
	__u32 *ag = bpf_map_lookup_elem(&active_gen, &scope);
	if (!ag || *ag != ru->gen)
		return;
	struct ref4 *b = *best;
	if (!b || ru->prio > b->prio || (ru->prio == b->prio && ru->id < b->id))
		*best = ru;
}

/* best_of4 is best_of over the rules of a table4 slot: the one inline,
 * and the one in sides4 that side names, if any. */
static __always_inline void best_of4(struct slot4 *sl, struct ref4 **best)
{
	better4(&sl->ref, best);
	__u32 side = sl->side;
	if (side) {
		struct side4 *sd = bpf_map_lookup_elem(&sides4, &side);
		if (sd)
			better4(&sd->ref, best);
	}
}

#define HASH4_M 0x9E3779B97F4A7C15ULL

/* hash4 is table4's hash of a compact key's four 64-bit words (abi.go:
 * hash4), seeded per NIC. */
static __always_inline __u64 hash4(__u64 w0, __u64 w1, __u64 w2, __u64 w3)
{
	__u64 h = seed4;
	h = (h ^ w0) * HASH4_M;
	h ^= h >> 29;
	h = (h ^ w1) * HASH4_M;
	h ^= h >> 29;
	h = (h ^ w2) * HASH4_M;
	h ^= h >> 29;
	h = (h ^ w3) * HASH4_M;
	h ^= h >> 29;
	return h;
}

#define barrier() asm volatile("" ::: "memory")

/* probe4 looks the compact key w0..w3 up in table4 and, when a slot holds
 * it with a live rule, copies the better live rule into out and returns 1:
 * its program (progs4) with the rule's own fields from the slot. A slot
 * whose seq changed while it was read (being retired or reused)
 * makes the search start again from the first slot: the new version of an
 * entry, if any, is published before its old slot is retired. The new
 * version may land in a slot the search has already passed while the old
 * one is retired before the search reaches it; so a search that finds
 * nothing reads every seq of the window again, and starts again if their
 * sum moved (a slot's seq only grows). The side entry and the program a
 * slot names are read before the slot's seq is read again: user space
 * rewrites either only after retiring every slot that names it. Loads are ordered as written
 * (compiler barriers; x86 keeps loads in order). A function of its own:
 * the verifier walks it once, not once per path of the main program into
 * it (Debian's 6.1 kernel walked about 490k instructions of the program
 * with it inlined, 121k without). */
__global int probe4(__u64 w0, __u64 w1, __u64 w2, __u64 w3, struct rule *out)
{
	if (!out)
		return 0;
	__u64 h = hash4(w0, w1, w2, w3);
	__u32 base = (__u32)(((h >> 32) * (__u64)slots4) >> 32);
	for (int attempt = 0; attempt < 3; attempt++) {
		int again = 0;
		__u32 sum = 0;
		for (__u32 i = 0; i < PROBE4; i++) {
			__u32 idx = base + i;
			struct slot4 *s = bpf_map_lookup_elem(&table4, &idx);
			if (!s)
				return 0;
			__u32 s1 = *(volatile __u32 *)&s->seq;
			sum += s1;
			if (!(s1 & SEQ_VALID))
				continue;
			barrier();
			const __u64 *sw = (const __u64 *)&s->key;
			if (sw[0] != w0 || sw[1] != w1 || sw[2] != w2 || sw[3] != w3) {
				barrier();
				if (*(volatile __u32 *)&s->seq != s1) {
					again = 1; /* the slot changed: it may hold the key now */
					break;
				}
				continue;
			}
			struct ref4 *best = 0;
			best_of4(s, &best);
			if (best) {
				__u32 p = best->prog;
				struct rule *pr = bpf_map_lookup_elem(&progs4, &p);
				if (!pr) {
					again = 1; /* a torn ref: seq tells */
					break;
				}
				__builtin_memcpy(out, pr, sizeof(*out));
				out->id = best->id;
				out->scope = best->scope;
				out->gen = best->gen;
				out->counter = best->counter;
				out->prio = best->prio;
			}
			barrier();
			if (*(volatile __u32 *)&s->seq != s1) {
				again = 1;
				break;
			}
			return best ? 1 : 0;
		}
		if (!again) {
			barrier();
			__u32 sum2 = 0;
			for (__u32 i = 0; i < PROBE4; i++) {
				__u32 idx = base + i;
				struct slot4 *s = bpf_map_lookup_elem(&table4, &idx);
				if (!s)
					return 0;
				sum2 += *(volatile __u32 *)&s->seq;
			}
			if (sum2 == sum)
				return 0;
		}
	}
	return 0;
}

/* lookup4 looks an untunnelled IPv4 frame's compact key up in table4, and
 * in flows4 (table4's overflow) when that has entries: what the exact4
 * shapes hold for it. It copies the better live rule into out and returns
 * LOOKUP_FINAL when no other shape can beat it (none holds a priority as
 * high), LOOKUP_FOUND when lookup must still search the other shapes, or
 * 0. The key's four words are built in registers (struct flow_key4's
 * layout), not field by field on the stack, whose narrow stores the wide
 * loads of the hash would wait for. */
#define LOOKUP_FOUND 1
#define LOOKUP_FINAL 2

/* lookup4_over looks the compact key w0..w3 up in flows4, table4's
 * overflow, and copies the better live rule into out: 1 when it found one.
 * A function of its own: the key it needs on the stack stays off the main
 * program's frame, and only a key table4 does not hold while flows4 has
 * entries pays the call. */
__global int lookup4_over(__u64 w0, __u64 w1, __u64 w2, __u64 w3, struct rule *out)
{
	if (!out)
		return 0;
	__u64 k4[4] = { w0, w1, w2, w3 };
	struct flow_val *v = bpf_map_lookup_elem(&flows4, k4);
	if (!v)
		return 0;
	struct rule *best = 0;
	best_of(v, &best);
	if (!best)
		return 0;
	__builtin_memcpy(out, best, sizeof(*out));
	return 1;
}

static __always_inline int lookup4(struct flow_key *key, struct rule *out)
{
	__u64 w0 = (__u64)key->in_port | (__u64)*(const __u32 *)(key->ip_src + 12) << 32;
	__u64 w1 = (__u64)*(const __u32 *)(key->ip_dst + 12) | (__u64)key->l4_src << 32 | (__u64)key->l4_dst << 48;
	__u64 w2 = *(const __u64 *)key->eth_src; /* eth_src and eth_dst[0:2] */
	__u64 w3 = (__u64)*(const __u32 *)(key->eth_dst + 2) | (__u64)key->vlan << 32 | (__u64)key->proto << 48;
	__u32 zero = 0, one = 1;
	int found = probe4(w0, w1, w2, w3, out);
	if (!found) {
		struct cfg *ov = bpf_map_lookup_elem(&config, &one);
		if (!ov || !ov->bank)
			return 0;
		if (!lookup4_over(w0, w1, w2, w3, out))
			return 0;
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
