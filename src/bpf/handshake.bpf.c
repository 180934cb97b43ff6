// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The stateless handshake generator of `xdp-conntrack handshake`, and the
 * sink that receives its frames.
 *
 * hs_gen runs through BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES:
 * the kernel feeds it copies of one template frame (TCP or UDP) and
 * transmits whatever it returns XDP_TX for out of the namespace's
 * interface.  Each run writes the next connection's client address and
 * port into the frame and recomputes both checksums.  Page-pool pages are
 * recycled without being reset, so every field that varies is written on
 * every run.
 *
 * hs_sink sits on the receiving namespace ends: it counts frames by TCP
 * flag class (UDP datagrams as one class) and drops them, so the
 * namespaces' stacks never answer with RSTs and userspace can tell when a
 * phase has fully arrived.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "handshake.h"
#include "proto.h"

struct hs_phase phase;

/* Anchors enum hs_kind in BTF for the skeleton's types module. */
const volatile enum hs_kind hs_kind_anchor;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HS_KINDS);
	__type(key, __u32);
	__type(value, __u64);
} sink_counts SEC(".maps");

/*
 * --clash: how far each of the two racers has got (frames started, by
 * racer - 1).  Each racer loads a generator of its own; all of them use
 * this map of the first one.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} race_at SEC(".maps");

/* How long a racer waits for the other at one frame: some tens of us. */
#define PACE_SPINS (1 << 13)

struct pace {
	__u32 other;
	__u64 want;
};

static long pace_wait(__u64 n, void *data)
{
	struct pace *p = data;
	__u64 *at = bpf_map_lookup_elem(&race_at, &p->other);

	return !at || *(volatile __u64 *)at >= p->want;
}

/*
 * Keeps this racer's frame @i level with the other racer's: says that it
 * has got to @i, then waits (a bounded spin) until the other has too.
 * The frames of a batch go to the tracker together when the batch ends,
 * so the two CPUs hand it the same connections' first packets at the
 * same moment.  A racer that does not come in time (preempted, or
 * stopped) is not waited for any longer at this frame.
 */
static __always_inline void keep_pace(__u64 i)
{
	struct pace p = {.other = phase.racer == 1, .want = i + 1};
	__u32 me = phase.racer - 1;
	__u64 *at = bpf_map_lookup_elem(&race_at, &me);

	if (!at)
		return;
	*(volatile __u64 *)at = i + 1;
	bpf_loop(PACE_SPINS, pace_wait, &p, 0);
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* One's complement sum of 16-bit words as they lie in memory: the result
 * is stored back the same way, so no byte swapping is needed (RFC 1071).
 */
static __always_inline __u32 csum_words(const __u16 *w, int n)
{
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < n; i++)
		sum += w[i];
	return sum;
}

/* The one's complement sum of the IPv4 pseudo header (RFC 768, RFC 9293). */
static __always_inline __u32 csum_pseudo(const struct iphdr *iph, __u8 proto,
					 __u16 len)
{
	return csum_words((const __u16 *)&iph->saddr, 4) + bpf_htons(proto) +
	       bpf_htons(len);
}

SEC("xdp")
int hs_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct tcphdr *th = (void *)(iph + 1);
	struct udphdr *uh = (void *)(iph + 1);
	__u32 per, addr, sum;
	__u16 port;
	__u64 i;

	/* The template is built by userspace: IPv4 without options, then TCP
	 * without options or payload, or UDP without payload.  Both start
	 * with the source and destination ports.
	 */
	if ((void *)(uh + 1) > data_end)
		return XDP_ABORTED;

	i = phase.next++;
	if (i >= phase.count)
		return XDP_DROP;
	if (phase.racer)
		keep_pace(i);
	/* Churn runs reuse the client tuples round after round. */
	if (phase.span)
		i %= phase.span;
	i += phase.base;
	per = phase.ports_per_addr ? phase.ports_per_addr : 1;
	addr = phase.client_addr + (__u32)(i / per);
	port = phase.client_port + (__u16)(i % per) * phase.port_step;

	if (phase.client_is_src) {
		iph->saddr = bpf_htonl(addr);
		uh->source = bpf_htons(port);
	} else {
		iph->daddr = bpf_htonl(addr);
		uh->dest = bpf_htons(port);
	}

	iph->check = 0;
	iph->check = csum_fold(csum_words((__u16 *)iph, sizeof(*iph) / 2));

	if (iph->protocol == IPPROTO_TCP) {
		if ((void *)(th + 1) > data_end)
			return XDP_ABORTED;
		th->check = 0;
		sum = csum_pseudo(iph, IPPROTO_TCP, sizeof(*th));
		/* 10 words: the 20-byte header. */
		th->check = csum_fold(sum + csum_words((__u16 *)th, 10));
	} else {
		uh->check = 0;
		sum = csum_pseudo(iph, IPPROTO_UDP, sizeof(*uh));
		/* 4 words: the 8-byte header. */
		uh->check = csum_fold(sum + csum_words((__u16 *)uh, 4));
		/* A sum of zero goes as all ones: zero means "none". */
		if (!uh->check)
			uh->check = 0xffff;
	}
	return XDP_TX;
}

SEC("xdp")
int hs_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct tcphdr *th;
	__u32 kind = HS_OTHER;
	__u64 *n;
	__u8 f;

	if ((void *)(iph + 1) <= data_end &&
	    eth->h_proto == bpf_htons(ETH_P_IP) && iph->ihl == 5) {
		th = (void *)(iph + 1);
		if (iph->protocol == IPPROTO_UDP) {
			kind = HS_UDP;
		} else if (iph->protocol == IPPROTO_TCP &&
			   (void *)(th + 1) <= data_end) {
			f = tcp_flag_byte(th);
			if (f & TH_RST)
				kind = HS_RST;
			else if (f & TH_SYN)
				kind = (f & TH_ACK) ? HS_SYNACK : HS_SYN;
			else if (f & TH_FIN)
				kind = HS_FIN;
			else if (f & TH_ACK)
				kind = HS_ACK;
		}
	}
	n = bpf_map_lookup_elem(&sink_counts, &kind);
	if (n)
		(*n)++;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
