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
 *	59  u8  zero
 *	60  the options (Geneve's, as on the wire), then the frame
 *
 * Only the kernel's stable UAPI is used (struct bpf_tunnel_key with the
 * local address, Linux 6.0 on); no kernel or libbpf headers are needed.
 */

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

struct __sk_buff;

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
static long (*bpf_skb_get_tunnel_key)(struct __sk_buff *skb, struct bpf_tunnel_key *key, __u32 size, __u64 flags) = (void *)20;
static long (*bpf_skb_get_tunnel_opt)(struct __sk_buff *skb, void *opt, __u32 size) = (void *)29;
static long (*bpf_skb_change_head)(struct __sk_buff *skb, __u32 len, __u64 flags) = (void *)43;

#define HDR_LEN 60
#define OPT_MAX 252 /* Geneve: 63 words */

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
	__u8 opts[OPT_MAX];
	__u8 flags = 0;
	long olen;
	int i;

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0) {
		if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6) < 0)
			return TC_ACT_SHOT; /* no tunnel metadata: not ours */
		flags |= 1;
	}
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
		/* IPv6 addresses are in network byte order already. */
		for (i = 0; i < 4; i++) {
			*(__u32 *)(hdr + 22 + 4 * i) = key.remote_ipv6[i];
			*(__u32 *)(hdr + 38 + 4 * i) = key.local_ipv6[i];
		}
	} else {
		put32(hdr + 22, key.remote_ipv4);
		put32(hdr + 38, key.local_ipv4);
	}
	put32(hdr + 54, key.tunnel_label);
	hdr[58] = olen >> 2;
	if (bpf_skb_change_head(skb, HDR_LEN + olen, 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, hdr, HDR_LEN, 0) < 0)
		return TC_ACT_SHOT;
	if (olen > 0 && olen <= OPT_MAX && bpf_skb_store_bytes(skb, HDR_LEN, opts, olen, 0) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_PIPE;
}

char __license[] SEC("license") = "GPL";
