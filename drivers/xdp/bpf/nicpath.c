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
 * Every structure shared with Go (lib/maps.h) is mirrored in abi.go; keep
 * them in step. The entry point is here; the parts are in lib/: maps.h
 * (structures, maps, parse state), csum.h (checksums), parse.h (parsing),
 * lookup.h (the rule lookup), actions.h (verdicts and actions).
 */
#include "common.h"
#include "lib/maps.h"
#include "lib/csum.h"
#include "lib/parse.h"
#include "lib/lookup.h"
#include "lib/actions.h"

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

	/* Only the key's scalar fields start zeroed. Its address fields
	 * (64 bytes) are written by the parser for the frames that have them,
	 * and a hit in table4 reads no others; the rest are zeroed below,
	 * only before the full lookup, which reads the whole key. */
	struct flow_key key;
	struct pstate st = {};
	__builtin_memset(&key.in_port, 0, sizeof(key) - __builtin_offsetof(struct flow_key, in_port));
	key.in_port = port;
	int r = parse_frame(ctx, &key, &st);
	/* Malformed frames are dropped and counted, as softnic does: there is
	 * nothing the host could do with them. A sealed frame cannot be opened
	 * here and the host must never see it in clear. */
	if (r == R_SEALED || r == R_MALFORMED || r == R_NOTLOCAL)
		return drop(r, 0);
	if (r != 0)
		return to_host(ctx, r, key.vni, 0);

	__u32 zero = 0;
	struct rule *rp = bpf_map_lookup_elem(&scratch, &zero);
	if (!rp)
		return drop(R_MALFORMED, 0);
	int have = 0;
	if (key.eth_type == 0x0800 && key.tun_kind == TUN_NONE) {
		have = lookup4(&key, rp);
		if (have == LOOKUP_FINAL)
			goto found;
	}
	if (key.tun_kind == TUN_NONE) {
		/* (A tunnelled frame's parse wrote its outer addresses and
		 * zeroed the inner ones before the inner frame's parse.) */
		__builtin_memset(key.tun_src, 0, 32);
		if (key.eth_type != 0x0800 && key.eth_type != 0x86dd)
			__builtin_memset(key.ip_src, 0, 32);
	}
	if (!lookup(&key, rp, have)) {
		if (st.partial)
			complete_csums(ctx, &st, 0);
		return to_host(ctx, R_MISS, key.vni, 0);
	}
found:;

	__u16 flags = rp->flags;
	if (flags & ACT_COUNT) {
		__u32 ci = rp->counter;
		struct counters *c = bpf_map_lookup_elem(&rule_counters, &ci);
		if (c) {
			c->packets++;
			c->bytes += len;
		}
	}
	if (rp->terminal != TERM_OUTPUT && rp->terminal != TERM_TOHOST)
		return drop(rp->reason, rp->id);
	/* Whatever leaves toward a VM, the wire or the host carries complete
	 * checksums: an xdp_frame (and a perf event) has no checksum state
	 * to finish them later. */
	if (st.partial)
		complete_csums(ctx, &st, rp->terminal == TERM_OUTPUT && (flags & ACT_DECAP));
	if (rp->terminal == TERM_TOHOST)
		return to_host(ctx, rp->reason, key.vni, rp->id);

	/* A rule that only encapsulates (and counts) skips the edits, their
	 * checks and their length arithmetic: the common case of an offloaded
	 * connection toward a remote host. */
	__u32 out = rp->out_port;
	__u32 final_len = len;
	__u32 tagged = st.vlan_off ? 1 : 0;
	__u32 decap_off = 0, pop = 0;
	if (flags & ACT_EDITS) {
		/* An expiring TTL sends the frame to the host as it arrived,
		 * before any change, as a frame too big for the egress port
		 * does below. */
		if ((flags & ACT_DEC_TTL) && st.l3 && ttl_of(ctx, st.l3, st.v6) <= 1)
			return to_host(ctx, R_TTL, key.vni, rp->id);
		decap_off = (flags & ACT_DECAP) ? st.inner : 0;
		final_len -= decap_off;
		pop = (flags & ACT_POP_VLAN) && st.vlan_off;
		if (pop) {
			final_len -= 4;
			tagged = 0;
		}
		if (flags & ACT_PUSH_VLAN) {
			final_len += 4;
			tagged = 1;
		}
	}
	if (flags & ACT_ENCAP) {
		final_len += rp->encap_len;
		tagged = 0;
	}
	struct port_cfg *pc = bpf_map_lookup_elem(&ports, &out);
	if (pc && pc->mtu && final_len > pc->mtu + 14 + 4 * tagged)
		return to_host(ctx, R_MTU, key.vni, rp->id);

	if (flags & ACT_EDITS) {
		if (decap_off || pop) {
			if (strip_head(ctx, decap_off, pop))
				return drop(R_MALFORMED, rp->id);
			__u32 moved = decap_off + (pop ? 4 : 0);
			st.l3 = st.l3 ? st.l3 - moved : 0;
			st.l4 = st.l4 ? st.l4 - moved : 0;
		}
		if (flags & (ACT_SET_ETH_SRC | ACT_SET_ETH_DST | ACT_SET_IP_SRC | ACT_SET_IP_DST |
			     ACT_SET_L4_SRC | ACT_SET_L4_DST | ACT_DEC_TTL)) {
			if (rewrite(ctx, rp, &st, key.proto))
				return drop(R_MALFORMED, rp->id);
		}
		if ((flags & ACT_PUSH_VLAN) && push_vlan(ctx, rp->vlan_tci))
			return drop(R_MTU, rp->id);
	}
	if (flags & ACT_ENCAP) {
		/* 42 and 50: IPv4 outer headers; 62 and 70: IPv6 */
		__u32 h = flow_hash(&key);
		if (rp->encap_len > 50 ? encap6(ctx, rp, h) : encap(ctx, rp, h))
			return drop(R_MTU, rp->id);
	}

	long rc = bpf_redirect_map(&tx_ports, out, XDP_DROP);
	if (rc != XDP_REDIRECT)
		return drop(R_NOPORT, rp->id);
	record(V_OUTPUT, out, 0, rp->id);
	struct port_stats *tx = bpf_map_lookup_elem(&port_stats, &out);
	if (tx) {
		tx->tx_packets++;
		tx->tx_bytes += ctx->data_end - ctx->data;
	}
	return XDP_REDIRECT;
}

char __license[] SEC("license") = "Dual MIT/GPL";
