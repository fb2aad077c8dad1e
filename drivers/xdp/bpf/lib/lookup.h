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

/* lookup finds the best live rule for key by tuple-space search over the
 * mask shapes, highest max_prio first, and copies it into out. An
 * untunnelled IPv4 frame first looks up its compact key in flows4, which
 * holds what the exact4 shapes have for it; the search then skips those
 * shapes and stops at the first whose max_prio is below the best found. */
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
	struct rule *best = 0;
	struct flow_key mk;
	int v4 = key->eth_type == 0x0800 && key->tun_kind == TUN_NONE;
	if (v4) {
		/* mk's room holds the compact key: the stack is short */
		struct flow_key4 *k4 = (struct flow_key4 *)&mk;
		k4->in_port = key->in_port;
		*(__u32 *)k4->ip_src = *(const __u32 *)(key->ip_src + 12);
		*(__u32 *)k4->ip_dst = *(const __u32 *)(key->ip_dst + 12);
		k4->l4_src = key->l4_src;
		k4->l4_dst = key->l4_dst;
		__builtin_memcpy(k4->eth_src, key->eth_src, 12);
		k4->vlan = key->vlan;
		k4->proto = key->proto;
		k4->pad = 0;
		struct flow_val *v = bpf_map_lookup_elem(&flows4, k4);
		if (v)
			best_of(v, &best);
	}
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
	__builtin_memcpy(out, best, sizeof(*out));
	return 1;
}

#endif
