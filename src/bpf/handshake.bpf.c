// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The stateless handshake generator of `xdp-conntrack handshake`, and the
 * sink that receives its frames.
 *
 * hs_gen runs through BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES:
 * the kernel feeds it copies of one template frame (TCP or UDP, over IPv4
 * or IPv6) and transmits whatever it returns XDP_TX for out of the
 * namespace's interface.  Each run writes the next connection's client
 * address and port into the frame and recomputes the checksums (IPv4's
 * header and TCP's or UDP's, with the pseudo header of the frame's
 * family).  Page-pool pages are
 * recycled without being reset, so every field that varies is written on
 * every run.
 *
 * hs_sink sits on the receiving namespace ends: it counts IPv4 and IPv6
 * frames by TCP flag class (UDP datagrams as one class) and drops them, so the
 * namespaces' stacks never answer with RSTs and userspace can tell when a
 * phase has fully arrived.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "handshake.h"
#include "proto.h"

struct hs_phase phase;

/*
 * --clash: both racers send through this one program, each from its own
 * CPU (race_cpu[r]) with its own phase (racers[r]).  One program, not one
 * each: BPF_PROG_TEST_RUN puts the program it runs into the XDP
 * dispatcher, and a program new to the dispatcher waits for an RCU grace
 * period there, which the other racer, already spinning in keep_pace(),
 * holds up for whole ticks; the two would not overlap at all.
 */
struct hs_phase racers[2];
__u32 race_cpu[2];
__u8 racing;

/*
 * --window: what the sinks have counted, by kind, for the generator to
 * read from another CPU.  Counted (atomically) only while `windowed` is
 * set, so that an open-loop run's sinks stay on their per-CPU counters.
 */
__u64 arrived[HS_KINDS];
__u8 windowed;

/* Anchors enum hs_kind in BTF for the skeleton's types module. */
const volatile enum hs_kind hs_kind_anchor;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HS_KINDS);
	__type(key, __u32);
	__type(value, __u64);
} sink_counts SEC(".maps");

/* --clash: how far each of the two racers has got (frames started, by
 * racer - 1).
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
 * Racers run in batches of one frame, each handed to the tracker on this
 * CPU as soon as it is made, so the two CPUs hand it the same
 * connections' first packets at the same moment (in batches of 64, a
 * constant skew between the CPUs' flushes could keep one always first).
 * A racer that does not come in time (preempted, or stopped) is not
 * waited for any longer at this frame.
 */
static __always_inline void keep_pace(const struct hs_phase *ph, __u64 i)
{
	struct pace p = {.other = ph->racer == 1, .want = i + 1};
	__u32 me = ph->racer - 1;
	__u64 *at = bpf_map_lookup_elem(&race_at, &me);

	if (!at)
		return;
	*(volatile __u64 *)at = i + 1;
	bpf_loop(PACE_SPINS, pace_wait, &p, 0);
}

/**
 * window_open() - may frame @i of phase @ph go?
 * @ph: the phase, with a non-zero window
 * @i: the frame's index, from ph->first
 *
 * Every frame the generator makes waits in a veth ring (256 frames) on
 * its way to the tracker and again on its way to the sink, and a full
 * ring drops.  Normally each live-frames batch is carried to the sink by
 * the softirq that runs when the batch ends.  But a kernel that defers
 * softirqs to ksoftirqd once it is awake ("softirq: Let ksoftirqd do its
 * job", reverted in 2023; 6.1 still does) no longer runs them there: the
 * generator goes on making frames while ksoftirqd waits for the CPU, and
 * the rings overflow (inside 6.1 under TCG, 336 of 24000 SYNs at 14k
 * pkt/s; none inside 6.12).  A run that must arrive whole keeps the
 * frames in flight, sent but not yet counted by the sink, below the
 * window.
 *
 * Return: true if it may; if not, the frame is dropped unsent and
 * userspace runs the phase on from ph->next once the sink has caught up.
 */
static __always_inline bool window_open(const struct hs_phase *ph, __u64 i)
{
	__u32 kind = ph->kind;
	__u64 got;

	if (kind >= HS_KINDS)
		return true;
	/* Written by the sinks on other CPUs. */
	got = *(volatile __u64 *)&arrived[kind] - ph->arrived_base;
	return (__s64)(i - ph->first - got) < (__s64)ph->window;
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

/*
 * Recomputes the TCP or UDP checksum at @l4 (a header without options or
 * payload), given @addrs, the one's complement sum of the pseudo header's
 * two addresses: the rest of the pseudo header (RFC 768, RFC 9293, RFC
 * 8200: the protocol and the length) is the same sum in both families.
 */
static __always_inline int l4_csum(void *l4, void *data_end, __u8 proto,
				   __u32 addrs)
{
	struct tcphdr *th = l4;
	struct udphdr *uh = l4;
	__u32 sum;

	if (proto == IPPROTO_TCP) {
		if ((void *)(th + 1) > data_end)
			return XDP_ABORTED;
		th->check = 0;
		sum = addrs + bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(*th));
		/* 10 words: the 20-byte header. */
		th->check = csum_fold(sum + csum_words((__u16 *)th, 10));
		return XDP_TX;
	}
	if ((void *)(uh + 1) > data_end)
		return XDP_ABORTED;
	uh->check = 0;
	sum = addrs + bpf_htons(IPPROTO_UDP) + bpf_htons(sizeof(*uh));
	/* 4 words: the 8-byte header. */
	uh->check = csum_fold(sum + csum_words((__u16 *)uh, 4));
	/* A sum of zero goes as all ones: zero means "none". */
	if (!uh->check)
		uh->check = 0xffff;
	return XDP_TX;
}

/* Writes client @n's address (the @n-th from @ph's first) and @port in. */
static __always_inline int gen_ipv4(const struct hs_phase *ph,
				    struct iphdr *iph, void *data_end, __u64 n,
				    __u16 port)
{
	struct udphdr *uh = (void *)(iph + 1);
	__u32 addr = ph->client_addr + (__u32)n;

	if ((void *)(uh + 1) > data_end)
		return XDP_ABORTED;
	if (ph->client_is_src) {
		iph->saddr = bpf_htonl(addr);
		uh->source = bpf_htons(port);
	} else {
		iph->daddr = bpf_htonl(addr);
		uh->dest = bpf_htons(port);
	}
	iph->check = 0;
	iph->check = csum_fold(csum_words((__u16 *)iph, sizeof(*iph) / 2));
	return l4_csum(uh, data_end, iph->protocol,
		       csum_words((const __u16 *)&iph->saddr, 4));
}

/*
 * The same for IPv6: the address is a 128-bit number, the first one plus
 * @n; IPv6 has no header checksum.
 */
static __always_inline int gen_ipv6(const struct hs_phase *ph,
				    struct ipv6hdr *ip6h, void *data_end,
				    __u64 n, __u16 port)
{
	struct udphdr *uh = (void *)(ip6h + 1);
	__u64 lo = ph->client_addr6[1] + n;
	__u64 hi = ph->client_addr6[0] + (lo < n);
	__be64 *addr;

	if ((void *)(uh + 1) > data_end)
		return XDP_ABORTED;
	if (ph->client_is_src) {
		addr = (__be64 *)&ip6h->saddr;
		uh->source = bpf_htons(port);
	} else {
		addr = (__be64 *)&ip6h->daddr;
		uh->dest = bpf_htons(port);
	}
	addr[0] = bpf_cpu_to_be64(hi);
	addr[1] = bpf_cpu_to_be64(lo);
	return l4_csum(uh, data_end, ip6h->nexthdr,
		       csum_words((const __u16 *)&ip6h->saddr, 16));
}

SEC("xdp")
int hs_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hs_phase *ph = &phase;
	struct ethhdr *eth = data;
	__u32 per;
	__u16 port;
	__u64 i;

	/* The template is built by userspace: IPv4 without options or IPv6
	 * without extension headers, then TCP without options or payload,
	 * or UDP without payload.  Both start with the source and
	 * destination ports.
	 */
	if ((void *)(eth + 1) > data_end)
		return XDP_ABORTED;

	if (racing) {
		__u32 cpu = bpf_get_smp_processor_id();

		if (cpu == race_cpu[0])
			ph = &racers[0];
		else if (cpu == race_cpu[1])
			ph = &racers[1];
		else
			return XDP_DROP;
	}
	i = ph->next;
	if (i >= ph->count)
		return XDP_DROP;
	if (ph->window && !window_open(ph, i))
		return XDP_DROP;
	ph->next = i + 1;
	if (ph->racer)
		keep_pace(ph, i);
	/* Churn runs reuse the client tuples round after round. */
	if (ph->span)
		i %= ph->span;
	i += ph->base;
	per = ph->ports_per_addr ? ph->ports_per_addr : 1;
	port = ph->client_port + (__u16)(i % per) * ph->port_step;

	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return gen_ipv6(ph, (void *)(eth + 1), data_end, i / per, port);
	return gen_ipv4(ph, (void *)(eth + 1), data_end, i / per, port);
}

SEC("xdp")
int hs_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct ipv6hdr *ip6h = (void *)(eth + 1);
	struct tcphdr *th = (void *)(iph + 1);
	__u32 kind = HS_OTHER;
	__u8 proto = 0;
	__u64 *n;
	__u8 f;

	/* What the generator sends: no IPv4 options, no IPv6 extensions. */
	if ((void *)(iph + 1) <= data_end &&
	    eth->h_proto == bpf_htons(ETH_P_IP) && iph->ihl == 5) {
		proto = iph->protocol;
	} else if ((void *)(ip6h + 1) <= data_end &&
		   eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		proto = ip6h->nexthdr;
		th = (void *)(ip6h + 1);
	}
	if (proto == IPPROTO_UDP) {
		kind = HS_UDP;
	} else if (proto == IPPROTO_TCP && (void *)(th + 1) <= data_end) {
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
	n = bpf_map_lookup_elem(&sink_counts, &kind);
	if (n)
		(*n)++;
	if (windowed && kind < HS_KINDS)
		__sync_fetch_and_add(&arrived[kind], 1);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
