/* Minimal definitions the nicpath XDP program needs, so that building it
 * depends on nothing but clang: no kernel or libbpf headers. The values are
 * the kernel's stable UAPI. */
#ifndef NICPATH_COMMON_H
#define NICPATH_COMMON_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))
/* Global (non-static) functions: verified once each, on their own. */
#define __global __attribute__((noinline))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

enum xdp_action { XDP_ABORTED = 0, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_DEVMAP = 14,
};

#define BPF_F_CURRENT_CPU 0xffffffffULL
#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_F_MMAPABLE (1U << 10)

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_perf_event_output)(void *ctx, void *map, __u64 flags, void *data, __u64 size) = (void *)25;
static __s64 (*bpf_csum_diff)(__be32 *from, __u32 from_size, __be32 *to, __u32 to_size, __wsum seed) = (void *)28;
static long (*bpf_xdp_adjust_head)(struct xdp_md *xdp_md, int delta) = (void *)44;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;

#define bswap16(x) __builtin_bswap16(x)
#define bswap32(x) __builtin_bswap32(x)
/* The program is built for little-endian targets only (bpfel). */
#define htons(x) ((__be16)bswap16((__u16)(x)))
#define ntohs(x) ((__u16)bswap16((__u16)(x)))
#define htonl(x) ((__be32)bswap32((__u32)(x)))
#define ntohl(x) ((__u32)bswap32((__u32)(x)))

/* len16 reads a 16-bit length field (network order) as a number below
 * 65536 that every verifier knows to be so: before Linux 6.3 or so the
 * verifier does not bound the result of a byte swap, and refuses packet
 * pointer arithmetic with it. The empty asm keeps clang from dropping the
 * mask it believes redundant. */
static inline __attribute__((always_inline)) __u32 len16(__u16 v)
{
	__u32 x = bswap16(v);
	asm volatile("" : "+r"(x));
	return x & 0xffff;
}

#endif
