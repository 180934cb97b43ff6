/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Checksums, checked where a forwarding Linux host checks them:
 *   - the IPv4 header's, by ip_rcv_core() before any netfilter hook: a
 *     frame that fails it never reaches conntrack, so parse_ipv4() drops
 *     it as malformed, whatever it carries (fragments included);
 *   - the transport checksum of TCP, UDP and ICMP, by nf_conntrack's
 *     tcp_error(), udp_error() and nf_conntrack_icmpv4_error() at
 *     PRE_ROUTING while nf_conntrack_checksum=1, the default: a packet
 *     that fails it is INVALID and leaves the table as it was.  ICMP is
 *     checked before its type is looked at, so every ICMP packet is, and
 *     its sum has no pseudo-header; ICMPv6 likewise
 *     (nf_conntrack_icmpv6_error()), neighbour discovery included, with
 *     IPv6's pseudo-header.  A UDP checksum of 0 means "none", in both
 *     families, as udp_error() takes it.
 *     --no-checksum (ct_cfg.checksum = 0) is nf_conntrack_checksum=0: it
 *     turns these off, and only these; the IP layer's check stays.
 *
 * ct_csum_l4() is a stage of its own between parsing and tracking: it
 * reads only what the parser left in struct ct_pkt and struct ct_l3 (the
 * family and addresses for the pseudo-header, where the segment starts
 * and how long it is), so a new family needs only a pseudo-header case.
 * Fragments are not checked: no fragment holds the whole datagram, and
 * the parser hands them on before this stage.
 *
 * The sums are one's complement sums (RFC 1071) of words loaded in host
 * order, never byte-swapped: the sum of byte-swapped 16-bit words is the
 * byte-swapped sum, and a segment is right when its sum, checksum field
 * included, folds to 0xffff, which reads the same either way.  Words are
 * added as 32-bit values into 64 bits, which cannot overflow for any
 * length an IP datagram can have; 2^16 = 1 modulo 0xffff, so a 16-bit
 * value may sit in any 16-bit lane.
 *
 * What it costs (docs/BENCHMARKS.md) decides the shape.  Every helper
 * call costs several nanoseconds here (a return is dear under the SRSO
 * and retpoline mitigations), so a segment of up to CT_CSUM_INLINE_MAX
 * bytes, a plain ACK's, is summed with inline loads.  Longer ones go to
 * ct_csum_segment(), where the kernel's csum_partial() does the work
 * through bpf_csum_diff(): in place in the first buffer, in as few calls
 * as the kernel allows, and through a per-CPU scratch buffer filled by
 * bpf_xdp_load_bytes() for what data_end does not reach (a multi-buffer
 * frame's fragments).
 */
#ifndef __CSUM_H
#define __CSUM_H

#ifndef AF_INET6
#define AF_INET6 10
#endif

/* Set by libbpf at load from the running kernel; a constant to the
 * verifier, which prunes what the kernel does not need.
 */
extern unsigned int LINUX_KERNEL_VERSION __kconfig;

/*
 * bpf_csum_diff() takes at most 512 bytes (a multiple of 4) per call
 * before Linux 6.13, which copies them into a per-CPU scratch pad first;
 * since 6.13 it sums any length in place.  Sums in place go in blocks of
 * 64 bytes, as many per call as the kernel takes.  Should a kernel refuse
 * a call all the same (-EINVAL), the segment is summed again through the
 * scratch buffer in 512-byte calls.
 */
#define CT_CSUM_CHUNK 512
#define CT_CSUM_BLOCK 64
#define CT_CSUM_DIFF_BLOCKS                                                    \
	(LINUX_KERNEL_VERSION >= KERNEL_VERSION(6, 13, 0)                      \
		 ? CT_CSUM_LINEAR_MAX / CT_CSUM_BLOCK                          \
		 : CT_CSUM_CHUNK / CT_CSUM_BLOCK)
/* Segments up to this long are summed with inline loads. */
#define CT_CSUM_INLINE_MAX CT_CSUM_BLOCK
/*
 * The most bytes summed in place in the first buffer: a page, all a
 * driver's buffer holds.  What lies beyond is copied.
 */
#define CT_CSUM_LINEAR_MAX 4096
/*
 * The most a transport header's offset can be here: Ethernet, two VLAN
 * tags and a 60-byte IPv4 header take 82 bytes.  Bounding offsets keeps
 * packet pointers within what the verifier accepts.
 */
#define CT_CSUM_MAX_OFF	 1024
#define CT_CSUM_POS_MASK 0x3fff
/* The scratch buffer: one piece of a frame at a time. */
#define CT_CSUM_PIECE 4096
/* Pieces enough for the longest IP datagram. */
#define CT_CSUM_PIECES (65536 / CT_CSUM_PIECE)

struct ct_csum_buf {
	__u8 b[CT_CSUM_PIECE];
};

/*
 * Per-CPU, so that no two CPUs share a buffer; an XDP program does not
 * preempt itself on one CPU.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_csum_buf);
} ct_csum_scratch SEC(".maps");

/*
 * Folds a sum to 16 bits, without the final complement.  Any sum here is
 * below 2^48 (64K bytes of 32-bit words): four folds bring it down.
 */
static __always_inline __u16 ct_csum_fold(__u64 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (s & 0xffff) + (s >> 16);
}

/*
 * Whether a sum folds to 0xffff, that is, whether it is a non-zero
 * multiple of 0xffff, without folding it: 0xffff is odd, so n is a
 * multiple of it exactly when n times its inverse modulo 2^64 is at most
 * (2^64 - 1) / 0xffff (Granlund and Montgomery's divisibility test).  One
 * multiplication, where folding is a chain of eight dependent operations.
 */
#define CT_CSUM_INV 0xfffefffefffeffffULL /* 0xffff^-1 mod 2^64 */
#define CT_CSUM_LIM 0x0001000100010001ULL /* (2^64 - 1) / 0xffff */

static __always_inline bool ct_csum_ok(__u64 s)
{
	return s && s * CT_CSUM_INV <= CT_CSUM_LIM;
}

/* Adds the two 32-bit halves of an 8-byte load. */
#define CT_CSUM_ADD64(sum, x) ((sum) += ((x)&0xffffffff) + ((x) >> 32))

/**
 * ct_csum_ipv4_hdr_ok() - the IPv4 header checksum, as ip_fast_csum()
 * @iph: the header; the caller has checked its first 20 bytes
 * @data_end: end of the first buffer
 *
 * Return: true when the header's ihl * 4 bytes sum to 0xffff.  Options
 * beyond the first buffer count as a bad header.
 */
static __always_inline bool ct_csum_ipv4_hdr_ok(const struct iphdr *iph,
						const void *data_end)
{
	const __u32 *w = (const __u32 *)iph;
	__u32 ihl = iph->ihl, i;
	__u64 s;

	s = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];
	if (unlikely(ihl > 5)) {
		/* Options: up to ten more words.  The barrier keeps clang
		 * from turning the bounds checks into a trip count the
		 * verifier cannot follow.
		 */
		w += 5;
		for (i = 5; i < 15; i++) {
			if (i >= ihl)
				break;
			barrier_var(w);
			if ((const void *)(w + 1) > data_end)
				return false;
			s += *w++;
		}
	}
	/* Never 0, with version 4 in the first word: no need to ask. */
	return s * CT_CSUM_INV <= CT_CSUM_LIM;
}

/**
 * ct_csum_pseudo() - the pseudo-header's share of a TCP or UDP checksum
 * @p: the packet: its family and addresses
 * @proto: the transport protocol
 * @len: the segment's length, header included
 *
 * The length and the protocol go in as 32-bit words, as IPv6 lays them
 * out; for IPv4's 16-bit fields that adds the same modulo 0xffff.
 */
static __always_inline __u64 ct_csum_pseudo(const struct ct_pkt *p, __u8 proto,
					    __u32 len)
{
	__u64 s = (__u64)bpf_htonl(len) + bpf_htonl(proto);
	int i;

	if (p->family == AF_INET)
		return s + p->saddr.v4 + p->daddr.v4;
#pragma unroll
	for (i = 0; i < 4; i++)
		s += (__u64)p->saddr.v6[i] + p->daddr.v6[i];
	return s;
}

/**
 * ct_csum_pseudo6() - an IPv6 pseudo-header's share, from the header
 * @ip6: the IPv6 header, known to be whole
 * @proto: the transport protocol
 * @len: the upper-layer length
 *
 * For ICMPv6, whose error parser has replaced the packet's addresses in
 * struct ct_pkt with those of the packet it quotes.
 */
static __always_inline __u64 ct_csum_pseudo6(const struct ipv6hdr *ip6,
					     __u8 proto, __u32 len)
{
	const __u32 *w = (const __u32 *)&ip6->saddr;
	__u64 s = (__u64)bpf_htonl(len) + bpf_htonl(proto);
	int i;

	/* saddr and daddr: eight words in a row. */
#pragma unroll
	for (i = 0; i < 8; i++)
		s += w[i];
	return s;
}

/*
 * The last @k (1..7) bytes of an 8-byte host-order load, moved to where a
 * word of their own would hold them.
 */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CT_CSUM_LAST(x, k) ((x) >> (8 * (8 - (k))))
#else
#define CT_CSUM_LAST(x, k) ((x) << (8 * (8 - (k))))
#endif

/**
 * ct_csum_short() - sum a short run of bytes in the first buffer
 * @data: start of the frame
 * @data_end: end of the first buffer
 * @at: the run's offset from @data
 * @n: its length, at most CT_CSUM_INLINE_MAX
 * @sum: the sum so far
 *
 * Whole 8-byte words one by one, then the last n % 8 bytes out of the word
 * that ends the run, shifted down to where a word of their own would hold
 * them: RFC 1071 pads an odd end with zeros.  The 8 bytes before the end
 * must belong to the segment (it is never shorter than 8 bytes) and the
 * run must start at an even offset in it.  Pointers are made afresh from
 * @data and a bounded offset, so that the bounds checks leave the
 * parser's as they were, and the loop leaves none behind that the rest
 * reads: the verifier sees one state after this, not one for each way
 * through the loop.
 *
 * Return: the new sum, or -1 if the bytes do not all lie in the buffer.
 */
static __always_inline __s64 ct_csum_short(void *data, const void *data_end,
					   __u32 at, __u32 n, __u64 sum)
{
	const __u64 *w = data + (at & CT_CSUM_POS_MASK);
	const void *b;
	__u64 x;
	__u32 i;

	if (n > CT_CSUM_INLINE_MAX)
		return -1;
	for (i = 0; i < CT_CSUM_INLINE_MAX / 8; i++) {
		if (i >= n / 8)
			break;
		/* Keeps clang from turning the bounds checks into a trip
		 * count, which the verifier cannot follow.
		 */
		barrier_var(w);
		if ((const void *)(w + 1) > data_end)
			return -1;
		x = *w++;
		CT_CSUM_ADD64(sum, x);
	}
	if (n & 7) {
		b = data + ((at + n - 8) & CT_CSUM_POS_MASK);
		if (b + 8 > data_end)
			return -1;
		x = CT_CSUM_LAST(*(const __u64 *)b, n & 7);
		CT_CSUM_ADD64(sum, x);
	}
	return sum;
}

/*
 * One bpf_csum_diff() call over @n blocks of 64 bytes at @p: a switch,
 * because the verifier bounds a packet access only by a constant size.
 */
#define CT_CSUM_CASE(n)                                                        \
	case n:                                                                \
		if (p + (n)*CT_CSUM_BLOCK > data_end)                          \
			return -1;                                             \
		return bpf_csum_diff(NULL, 0, (void *)p, (n)*CT_CSUM_BLOCK, s);
#define CT_CSUM_CASES8(b)                                                      \
	CT_CSUM_CASE(b + 1)                                                    \
	CT_CSUM_CASE(b + 2)                                                    \
	CT_CSUM_CASE(b + 3)                                                    \
	CT_CSUM_CASE(b + 4)                                                    \
	CT_CSUM_CASE(b + 5)                                                    \
	CT_CSUM_CASE(b + 6)                                                    \
	CT_CSUM_CASE(b + 7)                                                    \
	CT_CSUM_CASE(b + 8)

/* Return: the new sum, or below 0 when the kernel refuses the call. */
static __always_inline __s64 ct_csum_blocks(const void *p, __u32 n,
					    const void *data_end, __u32 s)
{
	switch (n) {
		CT_CSUM_CASES8(0)
		CT_CSUM_CASES8(8)
		CT_CSUM_CASES8(16)
		CT_CSUM_CASES8(24)
		CT_CSUM_CASES8(32)
		CT_CSUM_CASES8(40)
		CT_CSUM_CASES8(48)
		CT_CSUM_CASES8(56)
	case 0:
		return s;
	default:
		return -1;
	}
}

/**
 * ct_csum_copied() - sum bytes of the frame through the scratch buffer
 * @ctx: the frame
 * @off: the first byte's offset from the frame's start; the bytes before
 *	 it that this segment's sum holds are a multiple of 4
 * @len: how many
 * @s: the sum so far
 *
 * For bytes that data_end does not reach: a multi-buffer frame's
 * fragments, and a first buffer longer than CT_CSUM_LINEAR_MAX.  A piece
 * is summed in one call where the kernel takes it, else in 512-byte ones.
 * bpf_xdp_load_bytes() came with fragments, in 5.18.  A global function,
 * verified once, as ct_csum_segment() below.
 *
 * Return: the new sum folded to 16 bits, or -1 if the bytes cannot be
 * had.
 */
__noinline int ct_csum_copied(struct xdp_md *ctx, __u32 off, __u32 len, __u32 s)
{
	struct ct_csum_buf *buf;
	__u32 zero = 0, i, j, n, m;
	__s64 r;

	if (!bpf_core_enum_value_exists(enum bpf_func_id,
					BPF_FUNC_xdp_load_bytes))
		return -1;
	buf = bpf_map_lookup_elem(&ct_csum_scratch, &zero);
	if (!buf)
		return -1;
	for (i = 0; i < CT_CSUM_PIECES; i++) {
		if (!len)
			break;
		n = len < CT_CSUM_PIECE ? len : CT_CSUM_PIECE;
		/* 1..CT_CSUM_PIECE, in a form the verifier can bound. */
		n = ((n - 1) & (CT_CSUM_PIECE - 1)) + 1;
		/* Zero the word the piece ends in before the copy, so that a
		 * piece of 4k + 1..3 bytes sums as if padded with zeros.
		 */
		*(__u32 *)&buf->b[(n - 1) & (CT_CSUM_PIECE - 4)] = 0;
		if (bpf_xdp_load_bytes(ctx, off, buf->b, n))
			return -1;
		off += n;
		len -= n;
		/* The piece rounded up to whole words, 4..CT_CSUM_PIECE. */
		m = ((n - 1) & (CT_CSUM_PIECE - 4)) + 4;
		r = -1;
		if (LINUX_KERNEL_VERSION >= KERNEL_VERSION(6, 13, 0))
			r = bpf_csum_diff(NULL, 0, buf->b, m, s);
		if (r >= 0) {
			s = r;
			continue;
		}
		for (j = 0; j < CT_CSUM_PIECE / CT_CSUM_CHUNK; j++) {
			if (m <= j * CT_CSUM_CHUNK)
				break;
			/* The last chunk of the piece may be shorter: a
			 * multiple of 4, from 4 to CT_CSUM_CHUNK bytes.
			 */
			n = m - j * CT_CSUM_CHUNK;
			n = n < CT_CSUM_CHUNK ? n : CT_CSUM_CHUNK;
			n = ((n - 1) & (CT_CSUM_CHUNK - 4)) + 4;
			r = bpf_csum_diff(NULL, 0,
					  (void *)&buf->b[j * CT_CSUM_CHUNK], n,
					  s);
			if (r < 0)
				return -1;
			s = r;
		}
	}
	if (len)
		return -1;
	return ct_csum_fold(s);
}

/**
 * ct_csum_segment() - sum a segment that is too long to sum inline
 * @ctx: the frame
 * @off: the segment's offset from the frame's start
 * @len: its length
 * @seed: the sum so far (the pseudo-header's), folded to 16 bits
 *
 * A global function, so that the verifier checks it once, with unknown
 * arguments, instead of once for every way the program reaches it; the
 * call is cheap beside the sum of a long segment.  The 64-byte blocks in
 * the first buffer are summed in place (before 6.13 in 512-byte calls,
 * then one call for the rest of them), the last bytes inline; what lies
 * beyond the first buffer through ct_csum_copied().
 *
 * Return: the sum folded to 16 bits, or -1 where it cannot be had.
 */
__noinline int ct_csum_segment(struct xdp_md *ctx, __u32 off, __u32 len,
			       __u32 seed)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 lin, pos, blocks, i;
	__s64 s = seed;

	if (off > CT_CSUM_MAX_OFF)
		return -1;
	lin = data_end - data;
	if (lin <= off)
		return -1;
	lin -= off;
	lin = lin < len ? lin : len;
	lin = lin < CT_CSUM_LINEAR_MAX ? lin : CT_CSUM_LINEAR_MAX;
	blocks = lin / CT_CSUM_BLOCK;

	pos = off;
	for (i = 0; i < CT_CSUM_LINEAR_MAX / CT_CSUM_CHUNK; i++) {
		if (blocks <= CT_CSUM_DIFF_BLOCKS)
			break;
		s = ct_csum_blocks(data + (pos & CT_CSUM_POS_MASK),
				   CT_CSUM_CHUNK / CT_CSUM_BLOCK, data_end, s);
		if (s < 0)
			goto copy_all;
		pos += CT_CSUM_CHUNK;
		blocks -= CT_CSUM_CHUNK / CT_CSUM_BLOCK;
	}
	s = ct_csum_blocks(data + (pos & CT_CSUM_POS_MASK), blocks, data_end,
			   s);
	if (s < 0)
		goto copy_all;
	pos += blocks * CT_CSUM_BLOCK;

	if (lin == len)
		s = ct_csum_short(data, data_end, pos, len - (pos - off), s);
	else
		return ct_csum_copied(ctx, pos, len - (pos - off),
				      ct_csum_fold(s));
	return s < 0 ? -1 : ct_csum_fold(s);

copy_all:
	return ct_csum_copied(ctx, off, len, seed);
}

/**
 * ct_csum_l4() - the transport checksum, checked as nf_conntrack checks it
 * @ctx: the frame
 * @p: the packet, as the parser left it: family and addresses
 * @l3: where the segment starts, its length (from the IP header) and its
 *	protocol
 *
 * The sum covers the whole IP payload, as nf_checksum() covers skb->len
 * less the transport offset once ip_rcv() has trimmed the frame to
 * tot_len: Ethernet padding is not summed, and a UDP length shorter than
 * the payload does not shorten the sum.
 *
 * Return: CT_DROP_INVALID for a TCP, UDP or ICMP segment whose checksum
 * is wrong, else CT_FORWARD (the verdict stays the parser's).
 */
static __always_inline enum ct_verdict
ct_csum_l4(struct xdp_md *ctx, const struct ct_pkt *p, const struct ct_l3 *l3)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const void *l4 = l3->l4;
	__u32 len = l3->l4len, off, head;
	struct udphdr *uh;
	__u64 sum, hsum = 0, x;
	__s64 r;
	int s;

	/* The pseudo-header, and the header's first bytes, which the parser
	 * has found in the first buffer (20 for TCP, 8 for UDP and ICMP): a
	 * plain ACK's segment is nothing more.  The bounds are checked again
	 * for the verifier, which cannot tell from the parser's verdict
	 * which protocol it saw.
	 */
	if (!l4 || l4 + 8 > data_end)
		return CT_FORWARD;
	switch (l3->proto) {
	case IPPROTO_TCP:
		if (l4 + sizeof(struct tcphdr) > data_end)
			return CT_FORWARD;
		sum = ct_csum_pseudo(p, IPPROTO_TCP, len);
		x = ((const __u64 *)l4)[0];
		CT_CSUM_ADD64(hsum, x);
		x = ((const __u64 *)l4)[1];
		CT_CSUM_ADD64(hsum, x);
		hsum += ((const __u32 *)l4)[4];
		head = sizeof(struct tcphdr);
		break;
	case IPPROTO_UDP:
		uh = (struct udphdr *)l4;
		/* No checksum: udp_error() takes it as it is. */
		if (!uh->check)
			return CT_FORWARD;
		sum = ct_csum_pseudo(p, IPPROTO_UDP, len);
		x = *(const __u64 *)l4;
		CT_CSUM_ADD64(hsum, x);
		head = sizeof(struct udphdr);
		break;
	case IPPROTO_ICMP:
		sum = 0;
		x = *(const __u64 *)l4;
		CT_CSUM_ADD64(hsum, x);
		head = sizeof(struct icmphdr);
		break;
	case IPPROTO_ICMPV6:
		/* Unlike ICMP's, ICMPv6's sum has a pseudo-header. */
		if (!l3->ip6 || (void *)(l3->ip6 + 1) > data_end)
			return CT_FORWARD;
		sum = ct_csum_pseudo6(l3->ip6, IPPROTO_ICMPV6, len);
		x = *(const __u64 *)l4;
		CT_CSUM_ADD64(hsum, x);
		head = sizeof(struct icmphdr);
		break;
	default:
		/* Not reached by the parser (l3 is all zero), or not ours. */
		return CT_FORWARD;
	}

	/* The rest of a short segment inline: a call would cost as much as
	 * the sum.
	 */
	off = l4 - data;
	r = -1;
	if (len <= head + CT_CSUM_INLINE_MAX)
		r = ct_csum_short(data, data_end, off + head, len - head,
				  sum + hsum);
	if (r >= 0)
		return ct_csum_ok(r) ? CT_FORWARD : CT_DROP_INVALID;
	s = ct_csum_segment(ctx, off, len, ct_csum_fold(sum));
	/* Bytes that cannot be summed here are not judged. */
	if (s < 0)
		return CT_FORWARD;
	return s == 0xffff ? CT_FORWARD : CT_DROP_INVALID;
}

#endif /* __CSUM_H */
