// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/* The rule lookup: tuple-space search over the mask shapes. */
#ifndef NICPATH_LOOKUP_H
#define NICPATH_LOOKUP_H

#include "common.h"
#include "maps.h"

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

#endif
