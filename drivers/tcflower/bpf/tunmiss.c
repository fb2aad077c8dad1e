/* tunnel_miss: a tc action (act_bpf) for the exception path of the
 * tc-flower driver. A flow-based tunnel device hands tc the frame after
 * the kernel removed its outer headers, with the outer headers as tunnel
 * metadata. For a frame no rule took, this action puts that metadata in
 * front of the frame, so that the host's slow path learns what the frame
 * carried on the wire (VNI, outer source and destination, TOS, TTL, flow
 * label, Geneve options): the actions after it push the channel's two
 * 802.1Q tags and redirect to the channel.
 *
 * It prepends an Ethernet header of its own and the record (all fields in
 * network byte order):
 *
 *	0   12 bytes zero (the tags go after them)
 *	12  EtherType 0x88B6 (IEEE local experimental 2)
 *	14  u8  version (1)
 *	15  u8  flags: bit 0 outer IPv6, bit 1 options did not fit
 *	16  u8  outer TOS / traffic class
 *	17  u8  outer TTL / hop limit
 *	18  u32 tunnel ID (VXLAN/Geneve: the VNI in the low 24 bits)
 *	22  16 bytes outer source (IPv4: first 4 bytes)
 *	38  16 bytes outer destination (IPv4: first 4 bytes)
 *	54  u32 outer IPv6 flow label
 *	58  u8  length of the options in 4-byte words
 *	59  u8  number of the frame's VLAN tags below (0 to 2)
 *	60  the tags, outermost first: TPID, TCI (2 bytes each)
 *	68  the options (Geneve's, as on the wire), then the frame
 *
 * The kernel holds a received frame's outer VLAN tag out of the data
 * (hardware-accelerated form), where the channel's own tags would push it
 * in at the wrong place: the action takes the frame's tags off (at most
 * two) and lists them in the record instead. A frame with more tags is
 * dropped.
 *
 * Only the kernel's stable UAPI is used (struct bpf_tunnel_key with the
 * local address, Linux 6.0 on); no kernel or libbpf headers are needed.
 */

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

/* The leading fields of struct __sk_buff (the verifier checks the
 * offsets against the kernel's). */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
};

struct bpf_tunnel_key {
	__u32 tunnel_id;
	union {
		__u32 remote_ipv4;
		__u32 remote_ipv6[4];
	};
	__u8 tunnel_tos;
	__u8 tunnel_ttl;
	__u16 tunnel_ext;
	__u32 tunnel_label;
	union {
		__u32 local_ipv4;
		__u32 local_ipv6[4];
	};
};

#define BPF_F_TUNINFO_IPV6 1ULL
#define TC_ACT_PIPE 3
#define TC_ACT_SHOT 2

static long (*bpf_skb_store_bytes)(struct __sk_buff *skb, __u32 offset, const void *from, __u32 len, __u64 flags) = (void *)9;
static long (*bpf_skb_vlan_pop)(struct __sk_buff *skb) = (void *)19;
static long (*bpf_skb_get_tunnel_key)(struct __sk_buff *skb, struct bpf_tunnel_key *key, __u32 size, __u64 flags) = (void *)20;
static long (*bpf_skb_get_tunnel_opt)(struct __sk_buff *skb, void *opt, __u32 size) = (void *)29;
static long (*bpf_skb_change_head)(struct __sk_buff *skb, __u32 len, __u64 flags) = (void *)43;

#define HDR_LEN 68
#define OPT_MAX 252 /* Geneve: 63 words */
#define OPT_BUF 256 /* the options' buffer: OPT_MAX rounded to a power of two */

#define bswap32(x) __builtin_bswap32(x)

static void put32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

SEC("action")
int tunnel_miss(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	__u8 hdr[HDR_LEN] = {};
	__u8 opts[OPT_BUF];
	__u8 flags = 0;
	long olen;
	int i;

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0) {
		if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6) < 0)
			return TC_ACT_SHOT; /* no tunnel metadata: not ours */
		flags |= 1;
	}
	/* The whole buffer is written (zero past the options). */
	olen = bpf_skb_get_tunnel_opt(skb, opts, sizeof(opts));
	if (olen == -12 /* ENOMEM: more than fits */) {
		flags |= 2;
		olen = 0;
	} else if (olen < 0 || olen > OPT_MAX || (olen & 3)) {
		olen = 0;
	}
	hdr[12] = 0x88;
	hdr[13] = 0xb6;
	hdr[14] = 1;
	hdr[15] = flags;
	hdr[16] = key.tunnel_tos;
	hdr[17] = key.tunnel_ttl;
	put32(hdr + 18, key.tunnel_id);
	if (flags & 1) {
		/* IPv6 addresses are in network byte order already; bytes,
		 * as the record's fields are not 4-byte aligned on the stack. */
		const __u8 *rs = (const __u8 *)key.remote_ipv6;
		const __u8 *ls = (const __u8 *)key.local_ipv6;

		for (i = 0; i < 16; i++) {
			hdr[22 + i] = rs[i];
			hdr[38 + i] = ls[i];
		}
	} else {
		put32(hdr + 22, key.remote_ipv4);
		put32(hdr + 38, key.local_ipv4);
	}
	put32(hdr + 54, key.tunnel_label);
	hdr[58] = olen >> 2;
	for (i = 0; i < 2; i++) {
		if (!skb->vlan_present)
			break;
		/* vlan_proto holds the __be16 as it is in memory. */
		__u32 proto = skb->vlan_proto, tci = skb->vlan_tci;

		hdr[60 + 4 * i] = proto;
		hdr[61 + 4 * i] = proto >> 8;
		hdr[62 + 4 * i] = tci >> 8;
		hdr[63 + 4 * i] = tci;
		if (bpf_skb_vlan_pop(skb) < 0)
			return TC_ACT_SHOT;
		hdr[59] = i + 1;
	}
	if (skb->vlan_present)
		return TC_ACT_SHOT; /* a third tag */
	if (bpf_skb_change_head(skb, HDR_LEN + olen, 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, hdr, HDR_LEN, 0) < 0)
		return TC_ACT_SHOT;
	if (olen > 0) {
		/* n is olen (1..252), in a form older verifiers (Linux 6.1)
		 * see as never zero and within the buffer: the barrier keeps
		 * the compiler from folding it back into olen. */
		__u32 n = olen;

		asm volatile("" : "+r"(n));
		n = ((n - 1) & (OPT_BUF - 1)) + 1;
		if (bpf_skb_store_bytes(skb, HDR_LEN, opts, n, 0) < 0)
			return TC_ACT_SHOT;
	}
	return TC_ACT_PIPE;
}

char __license[] SEC("license") = "GPL";
