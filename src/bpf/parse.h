/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Header parsing for the conntrack XDP program.
 *
 * A cursor walks the frame; every header is bounds-checked against
 * data_end before it is read, in the form the verifier understands
 * (hdr + 1 > data_end).  Parsing runs in three stages, and only the middle
 * one knows the address family:
 *   1. parse_ethhdr(): Ethernet and up to two VLAN tags (802.1Q / 802.1ad);
 *   2. parse_ipv4() or parse_ipv6(): the network header, into the
 *      family-free struct ct_l3 (where the transport header is, how long
 *      it is, which protocol) and the packet's addresses in struct ct_pkt;
 *      IPv6's extension headers are walked by ct_ipv6_skip_exthdr();
 *   3. parse_tcp(), parse_udp(), parse_icmp(): the transport header on top
 *      of struct ct_l3, ending in ct_key_set(), the one place that lays
 *      out the tables' keys (IPv4's struct ct_key, IPv6's struct ct_key6).
 *
 * The parser decides what happens to frames it cannot track:
 *   - shorter than an Ethernet header, a truncated VLAN tag or IPv4
 *     header, IHL < 5, version != 4, a wrong header checksum, or tot_len
 *     beyond the frame or below the header: CT_DROP_MALFORMED (the
 *     kernel's ip_rcv() drops these before conntrack sees them);
 *   - a truncated IPv6 header, version != 6, a payload length beyond the
 *     frame (ipv6_rcv() drops these), and an extension header chain that
 *     runs past the datagram or the first buffer, or is longer than
 *     CT_IPV6_EXTHDR_MAX headers: CT_DROP_MALFORMED;
 *   - IPv6 with no next header (59) where the transport header should
 *     be: CT_DROP_INVALID, as nf_conntrack_in() finds no protocol;
 *   - a TCP/UDP/ICMP header that is truncated or inconsistent (TCP data
 *     offset < 5 or past the datagram, UDP length out of range):
 *     CT_DROP_INVALID, as nf_conntrack's tcp_error()/udp_error() do;
 *   - ICMP that is neither a query (echo, timestamp, information, address
 *     mask) nor an error, and an ICMP error that cannot be about any
 *     connection: CT_DROP_INVALID, as icmp_error() decides;
 *   - ICMPv6 neighbour discovery, router and MLD messages: CT_UNTRACKED,
 *     as nf_conntrack_icmpv6_error() leaves them (noct_valid_new[]);
 *   - fragments (IPv4 and IPv6): XDP sees one at a time, where the kernel
 *     tracks the reassembled datagram.  The first fragment of a UDP or
 *     ICMP datagram holds its transport header and is tracked by it
 *     (first_frag set: lengths and checksums that cover the whole
 *     datagram cannot be checked); later fragments, and every fragment of
 *     a TCP segment (whose window checks need the segment's length), are
 *     CT_FRAGMENT: forwarded as they are, and counted.  A first fragment
 *     dropped as INVALID leaves the rest nothing to be reassembled with;
 *   - other ethertypes (ARP, ...) and other IP protocols: CT_UNTRACKED,
 *     forwarded as they are.
 * An ICMP error that may be about a connection returns CT_RELATED with the
 * key of the packet it quotes; the tracker must then find that connection.
 */
#ifndef __PARSE_H
#define __PARSE_H

#include "proto.h"

#define VLAN_MAX_DEPTH 2
#define AF_INET	       2
#define AF_INET6       10

#define TCPOPT_EOL	     0
#define TCPOPT_NOP	     1
#define TCPOPT_WINDOW	     3
#define TCPOPT_SACK_PERM     4
#define TCPOPT_SACK	     5
#define TCPOPT_TIMESTAMP     8
#define TCP_MAX_OPTION_SPACE 40
#define TCP_MAX_WSCALE	     14
#define TCP_SACK_MAX_BLOCKS  4

/* TCP flag classes: the row index of tcp_conntracks[][][]. */
enum ct_tcp_index {
	CT_IDX_SYN = 0,
	CT_IDX_SYNACK = 1,
	CT_IDX_FIN = 2,
	CT_IDX_ACK = 3,
	CT_IDX_RST = 4,
	CT_IDX_NONE = 5,
};

/* An address of either family, as it is on the wire. */
union ct_addr {
	__be32 v4;
	__be32 v6[4];
};

/*
 * What the tracker needs from one packet; numbers in host byte order.
 * key's proto and ICMP fields are the family-free part of the key and are
 * set for both families (the tracker reads them there); key6 is the IPv6
 * table's whole key, and it comes last so that IPv4 packets need not
 * clear it: parse_ipv6() writes it whole.
 */
struct ct_pkt {
	struct ct_key key;
	union ct_addr saddr; /* the packet's own tuple, as it travels */
	union ct_addr daddr;
	__be16 sport;
	__be16 dport;
	__u32 seq;
	__u32 ack;
	__u32 end;  /* seq + payload + SYN + FIN, as segment_seq_plus_len() */
	__u32 sack; /* ack, or the highest SACK block edge after it */
	__u16 win;  /* TCP window, unscaled */
	__u8 family;
	__u8 src_slot; /* key slot of the sender */
	__u8 flags;    /* TCP flag byte */
	__u8 index;    /* enum ct_tcp_index */
	__u8 icmp_type;
	__u8 has_opts; /* TCP options present */
	__u8 topts;    /* CT_TF_WINDOW_SCALE, CT_TF_SACK_PERM seen in them */
	__u8 wscale;   /* the window scale option's shift, at most 14 */
	__u8 has_sack; /* a SACK option was seen */
	__u8 icmp_code;
	__u8 first_frag; /* the first fragment of a datagram (see ct_parse()) */
	__u32 l3len;	 /* the IP packet's length, header on (--acct) */
	struct ct_key6 key6; /* IPv6 only; see above */
	/* An event being made about this packet's entry, and what the
	 * packet changed in it (conntrack.bpf.c); here rather than on the
	 * stack, which is full.
	 */
	struct ct_event ev;
	__u8 old_state;
	__u8 old_status;
	__u8 changed;
	struct ct_acct old_acct[2]; /* --acct: a reopened connection's counts */
};

/* The part of struct ct_pkt that every packet clears: all but key6. */
#define CT_PKT_CLEAR __builtin_offsetof(struct ct_pkt, key6)

/* The network layer of a packet, as the transport parsers need it. */
struct ct_l3 {
	void *l4; /* the transport header */
	/* IPv6: the header, whose addresses ICMPv6's checksum covers (an
	 * error's parser replaces the packet's with the quoted ones)
	 */
	const struct ipv6hdr *ip6;
	__u32 l4len; /* transport header and payload, from the IP header */
	__u8 proto;  /* IPPROTO_* */
};

struct hdr_cursor {
	void *pos;
};

/* The checksums work on the types above; parse_ipv4() uses its IPv4 part. */
#include "csum.h"

/*
 * Valid TCP flag combinations once PSH, ECE and CWR are masked off, as a
 * bitmap indexed by the remaining FIN|SYN|RST|ACK|URG bits (the kernel's
 * tcp_valid_flags[] table).  Anything else, e.g. SYN|FIN or a bare FIN,
 * is INVALID.
 */
#define TCP_VALID_FLAGS                                                        \
	((1ULL << TH_SYN) | (1ULL << (TH_SYN | TH_URG)) |                      \
	 (1ULL << (TH_SYN | TH_ACK)) | (1ULL << TH_RST) |                      \
	 (1ULL << (TH_RST | TH_ACK)) | (1ULL << (TH_FIN | TH_ACK)) |           \
	 (1ULL << (TH_FIN | TH_ACK | TH_URG)) | (1ULL << TH_ACK) |             \
	 (1ULL << (TH_ACK | TH_URG)))

static __always_inline bool tcp_flags_valid(__u8 flags)
{
	__u8 f = flags & ~(TH_ECE | TH_CWR | TH_PSH);

	return (TCP_VALID_FLAGS >> f) & 1;
}

/* The kernel's get_conntrack_index(): RST wins, then SYN, FIN, ACK. */
static __always_inline __u8 tcp_index(__u8 flags)
{
	if (flags & TH_RST)
		return CT_IDX_RST;
	if (flags & TH_SYN)
		return (flags & TH_ACK) ? CT_IDX_SYNACK : CT_IDX_SYN;
	if (flags & TH_FIN)
		return CT_IDX_FIN;
	if (flags & TH_ACK)
		return CT_IDX_ACK;
	return CT_IDX_NONE;
}

/**
 * parse_ethhdr() - step over Ethernet and up to two VLAN tags
 * @nh: the cursor, left on the network header
 * @data_end: end of the frame's first buffer
 *
 * Return: the ethertype after the tags (network order), or -1 when the
 * frame ends inside them.
 */
static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end)
{
	struct ethhdr *eth = nh->pos;
	struct vlan_hdr *vlh;
	__u16 proto;
	int i;

	if (eth + 1 > data_end)
		return -1;
	nh->pos = eth + 1;
	proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < VLAN_MAX_DEPTH; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) &&
		    proto != bpf_htons(ETH_P_8021AD))
			break;
		vlh = nh->pos;
		if (vlh + 1 > data_end)
			return -1;
		proto = vlh->h_vlan_encapsulated_proto;
		nh->pos = vlh + 1;
	}
	return proto;
}

/**
 * parse_ipv4() - the IPv4 header, checked as ip_rcv() checks it
 * @nh: the cursor, on the IPv4 header
 * @data: start of the frame
 * @data_end: end of the frame's first buffer
 * @frame_len: the whole frame's length, fragments included
 * @p: gets the family and the addresses
 * @l3: gets where the transport header is, its length and protocol
 *
 * Return: CT_FORWARD to go on, CT_DROP_MALFORMED or CT_UNTRACKED.
 */
static __always_inline int parse_ipv4(struct hdr_cursor *nh, void *data,
				      void *data_end, __u32 frame_len,
				      struct ct_pkt *p, struct ct_l3 *l3)
{
	struct iphdr *iph = nh->pos;
	__u32 hlen, tot;

	if (iph + 1 > data_end)
		return CT_DROP_MALFORMED;
	if (iph->version != 4 || iph->ihl < 5)
		return CT_DROP_MALFORMED;
	if (!ct_csum_ipv4_hdr_ok(iph, data_end))
		return CT_DROP_MALFORMED;
	hlen = iph->ihl * 4;
	tot = bpf_ntohs(iph->tot_len);
	/* Ethernet padding may follow the datagram, so the frame only bounds
	 * tot_len from above; L4 lengths come from tot_len.  frame_len counts
	 * the fragments of a multi-buffer frame, of which data_end only ends
	 * the first.
	 */
	if (tot < hlen || (__u32)((void *)iph - data) + tot > frame_len)
		return CT_DROP_MALFORMED;
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)) {
		if (iph->frag_off & bpf_htons(IP_OFFSET))
			return CT_FRAGMENT;
		p->first_frag = 1;
	}

	p->family = AF_INET;
	p->saddr.v4 = iph->saddr;
	p->daddr.v4 = iph->daddr;
	l3->l4 = (void *)iph + hlen;
	l3->l4len = tot - hlen;
	l3->proto = iph->protocol;
	return CT_FORWARD;
}

/* How many extension headers ct_ipv6_skip_exthdr() walks at most. */
#define CT_IPV6_EXTHDR_MAX 8

/*
 * What ct_ipv6_skip_exthdr() returns: the transport header's offset from
 * the frame's start in the low 14 bits, its protocol from bit 16, and
 * whether a fragment header was passed; or a negative error.  The offset
 * stays below 16k, inside any first buffer: the verifier grants a packet
 * pointer no range once its variable offset plus the access may pass 64k.
 */
#define CT_X6_OFF	0x3fff
#define CT_X6_PROTO(r)	(((r) >> 16) & 0xff)
#define CT_X6_FRAG	(1 << 24) /* a fragment header, not an atomic one */
#define CT_X6_MALFORMED (-1)	  /* past the datagram, or too long a chain */
#define CT_X6_NONE	(-2)	  /* no next header (59) */

/* The kernel's ipv6_ext_hdr(): the headers ipv6_skip_exthdr() steps over. */
static __always_inline bool ipv6_ext_hdr(__u8 nexthdr)
{
	return nexthdr == NEXTHDR_HOP || nexthdr == NEXTHDR_ROUTING ||
	       nexthdr == NEXTHDR_FRAGMENT || nexthdr == NEXTHDR_AUTH ||
	       nexthdr == NEXTHDR_NONE || nexthdr == NEXTHDR_DEST;
}

/**
 * ct_ipv6_skip_exthdr() - step over IPv6 extension headers, as the
 * kernel's ipv6_skip_exthdr() does
 * @ctx: the frame
 * @off: offset of the first extension header from the frame's start
 * @end: offset of the datagram's end (or of the quote's, in an error)
 * @nexthdr: the first extension header's type
 *
 * Hop-by-hop, routing and destination options are (len + 1) * 8 bytes,
 * authentication (len + 2) * 4, a fragment header 8.  The walk stops at
 * the first header that is none of these, or at a fragment header whose
 * offset is not 0: a later fragment carries no transport header.  An
 * atomic fragment (offset 0, no more fragments, RFC 6946) is stepped
 * over like any header, as the kernel does once its defragmenter has
 * passed it.
 *
 * A global function, so the verifier checks it once, not once for each
 * caller (the packet's own chain and the chain an ICMPv6 error quotes).
 * The chain must lie in the frame's first buffer; real chains are a few
 * dozen bytes.  The kernel walks any number of headers; this stops at
 * CT_IPV6_EXTHDR_MAX, more than any real stack sends (RFC 8200 4.1 allows
 * each but the destination options once).
 *
 * Return: the transport header's offset, protocol and CT_X6_FRAG packed
 * (see above), CT_X6_NONE for no next header, or CT_X6_MALFORMED.
 */
__noinline int ct_ipv6_skip_exthdr(struct xdp_md *ctx, __u32 off, __u32 end,
				   __u32 nexthdr)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int frag = 0;
	__u8 *h;
	__u32 len;
	int i;

	for (i = 0; i < CT_IPV6_EXTHDR_MAX; i++) {
		nexthdr &= 0xff;
		if (!ipv6_ext_hdr(nexthdr))
			return off | nexthdr << 16 | frag;
		if (nexthdr == NEXTHDR_NONE)
			return CT_X6_NONE;
		/* Every extension header is at least 8 bytes long. */
		if (off > CT_X6_OFF - 8 || off + 8 > end)
			return CT_X6_MALFORMED;
		h = data + off;
		if ((void *)(h + 8) > data_end)
			return CT_X6_MALFORMED;
		if (nexthdr == NEXTHDR_FRAGMENT) {
			/* frag_off: offset in 8-byte units, then M. */
			__u16 fo = (__u16)h[2] << 8 | h[3];

			if (fo & (IP6_OFFSET | IP6_MF))
				frag = CT_X6_FRAG;
			if (fo & IP6_OFFSET)
				return off | NEXTHDR_FRAGMENT << 16 | frag;
			len = 8;
		} else if (nexthdr == NEXTHDR_AUTH) {
			len = ((__u32)h[1] + 2) << 2;
		} else {
			len = ((__u32)h[1] + 1) << 3;
		}
		nexthdr = h[0];
		off += len;
		if (off > end || off > CT_X6_OFF)
			return CT_X6_MALFORMED;
	}
	/* The last header may end the chain. */
	if (ipv6_ext_hdr(nexthdr & 0xff))
		return CT_X6_MALFORMED;
	return off | (nexthdr & 0xff) << 16 | frag;
}

/**
 * parse_ipv6() - the IPv6 header and its extension headers, checked as
 * ipv6_rcv() and nf_conntrack_in() check them
 * @ctx: the frame
 * @nh: the cursor, on the IPv6 header
 * @data: start of the frame
 * @data_end: end of the frame's first buffer
 * @frame_len: the whole frame's length, fragments included
 * @p: gets the family and the addresses
 * @l3: gets where the transport header is, its length and protocol
 *
 * Return: CT_FORWARD to go on, CT_DROP_MALFORMED, CT_DROP_INVALID (no next
 * header) or CT_FRAGMENT.
 */
static __always_inline int parse_ipv6(struct xdp_md *ctx, struct hdr_cursor *nh,
				      void *data, void *data_end,
				      __u32 frame_len, struct ct_pkt *p,
				      struct ct_l3 *l3)
{
	struct ipv6hdr *ip6 = nh->pos;
	__u32 off, end;
	__u8 nexthdr;
	int r;

	/* Every frame of the IPv6 ethertype counts as IPv6, sound or not. */
	p->family = AF_INET6;
	if (ip6 + 1 > data_end)
		return CT_DROP_MALFORMED;
	if (ip6->version != 6)
		return CT_DROP_MALFORMED;
	/* As for IPv4, padding may follow the datagram: the frame bounds the
	 * payload length from above only.
	 */
	off = (void *)(ip6 + 1) - data;
	end = off + bpf_ntohs(ip6->payload_len);
	if (end > frame_len)
		return CT_DROP_MALFORMED;

	__builtin_memcpy(p->saddr.v6, &ip6->saddr, 16);
	__builtin_memcpy(p->daddr.v6, &ip6->daddr, 16);
	nexthdr = ip6->nexthdr;
	l3->ip6 = ip6;
	l3->l4 = ip6 + 1;
	/* The common case, a transport header right after the fixed one,
	 * costs no call.
	 */
	if (ipv6_ext_hdr(nexthdr)) {
		r = ct_ipv6_skip_exthdr(ctx, off, end, nexthdr);
		if (r == CT_X6_NONE)
			return CT_DROP_INVALID;
		if (r < 0)
			return CT_DROP_MALFORMED;
		if (r & CT_X6_FRAG) {
			/* The walk stops at a later fragment's header. */
			if (CT_X6_PROTO(r) == NEXTHDR_FRAGMENT)
				return CT_FRAGMENT;
			p->first_frag = 1;
		}
		off = r & CT_X6_OFF;
		nexthdr = CT_X6_PROTO(r);
		l3->l4 = data + off;
	}
	l3->l4len = end - off;
	l3->proto = nexthdr;
	return CT_FORWARD;
}

/*
 * An IPv6 address compared as the number its bytes spell, big-endian:
 * below, equal or above.
 */
static __always_inline int ct_addr6_cmp(const __be32 *a, const __be32 *b)
{
	int i;

#pragma unroll
	for (i = 0; i < 4; i++)
		if (a[i] != b[i])
			return bpf_ntohl(a[i]) < bpf_ntohl(b[i]) ? -1 : 1;
	return 0;
}

/*
 * Store the tuple so that both directions produce the same key: the
 * (address, port) pair that compares lower in host order takes slot 0.
 * IPv4 fills key, IPv6 key6 (but for the family-free fields, which stay
 * in key until ct_parse() copies them).  @family is a constant at every
 * call site: each family's parser is its own code, with no test of the
 * family on the way.
 */
static __always_inline void ct_key_set(struct ct_pkt *p, __u8 proto,
				       __be16 sport, __be16 dport, int family)
{
	bool swap;
	int c;

	p->key.proto = proto;
	p->sport = sport;
	p->dport = dport;
	if (family == AF_INET6) {
		c = ct_addr6_cmp(p->saddr.v6, p->daddr.v6);
		swap = c > 0 || (c == 0 && bpf_ntohs(sport) > bpf_ntohs(dport));
		p->src_slot = swap;
		if (swap) {
			__builtin_memcpy(p->key6.addr[0], p->daddr.v6, 16);
			__builtin_memcpy(p->key6.addr[1], p->saddr.v6, 16);
			p->key6.port[0] = dport;
			p->key6.port[1] = sport;
		} else {
			__builtin_memcpy(p->key6.addr[0], p->saddr.v6, 16);
			__builtin_memcpy(p->key6.addr[1], p->daddr.v6, 16);
			p->key6.port[0] = sport;
			p->key6.port[1] = dport;
		}
		return;
	}
	{
		__u32 s = bpf_ntohl(p->saddr.v4), d = bpf_ntohl(p->daddr.v4);

		/* Constant indices only: clang turns a variable index into a
		 * stack array into pointer arithmetic the verifier refuses.
		 */
		if (s > d || (s == d && bpf_ntohs(sport) > bpf_ntohs(dport))) {
			p->src_slot = 1;
			p->key.addr[0] = p->daddr.v4;
			p->key.addr[1] = p->saddr.v4;
			p->key.port[0] = dport;
			p->key.port[1] = sport;
		} else {
			p->src_slot = 0;
			p->key.addr[0] = p->saddr.v4;
			p->key.addr[1] = p->daddr.v4;
			p->key.port[0] = sport;
			p->key.port[1] = dport;
		}
	}
}

/* Where the option walk stands: bpf_loop() hands this to each step. */
struct tcp_opt_walk {
	const __u8 *opts; /* the first option byte, in the packet */
	void *data_end;
	struct ct_pkt *p;
	__u32 off; /* the next option's offset from opts */
	__u32 len; /* bytes of options */
	bool sack_done;
};

/* The right edge of SACK block @b of the option at @o, into @p's sack if
 * it lies after it; false when the frame ends first.  Options are not
 * aligned: copy, do not cast.
 */
static __always_inline bool tcp_opt_sack_block(const __u8 *o, __u32 b,
					       void *data_end, struct ct_pkt *p)
{
	const __u8 *r = o + 2 + b * 8 + 4;
	__be32 v;
	__u32 edge;

	if ((void *)(r + 4) > data_end)
		return false;
	__builtin_memcpy(&v, r, 4);
	edge = bpf_ntohl(v);
	if ((__s32)(edge - p->sack) > 0)
		p->sack = edge;
	return true;
}

/*
 * One option of the walk, with the stopping rules of the kernel's
 * tcp_options() and tcp_sack(): the end of the list, a length under 2 or
 * past the options end the walk, and only the first SACK option counts.
 * Return: 1 to stop, 0 to go on (bpf_loop()'s convention).
 */
static int tcp_opt_step(__u32 i, void *ctx)
{
	struct tcp_opt_walk *w = ctx;
	struct ct_pkt *p = w->p;
	const __u8 *o;
	__u32 left, b;
	__u8 kind, size;

	if (w->off >= w->len || w->off >= TCP_MAX_OPTION_SPACE)
		return 1;
	left = w->len - w->off;
	/* off < 40: the mask only tells the verifier. */
	o = w->opts + (w->off & 63);
	if ((void *)(o + 1) > w->data_end)
		return 1;
	kind = o[0];
	if (kind == TCPOPT_EOL)
		return 1;
	if (kind == TCPOPT_NOP) {
		w->off++;
		return 0;
	}
	if (left < 2 || (void *)(o + 2) > w->data_end)
		return 1;
	size = o[1];
	if (size < 2 || size > left)
		return 1;
	if (kind == TCPOPT_WINDOW && size == 3) {
		if ((void *)(o + 3) > w->data_end)
			return 1;
		p->wscale = o[2] > TCP_MAX_WSCALE ? TCP_MAX_WSCALE : o[2];
		p->topts |= CT_TF_WINDOW_SCALE;
	} else if (kind == TCPOPT_SACK_PERM && size == 2) {
		p->topts |= CT_TF_SACK_PERM;
	} else if (kind == TCPOPT_SACK && !w->sack_done && size >= 10 &&
		   !((size - 2) % 8)) {
		w->sack_done = true;
		p->has_sack = 1;
#pragma unroll
		for (b = 0; b < TCP_SACK_MAX_BLOCKS; b++)
			if (2 + (b + 1) * 8 > size ||
			    !tcp_opt_sack_block(o, b, w->data_end, p))
				break;
	}
	w->off += size;
	return 0;
}

/* Steps without bpf_loop() (before 5.17): enough for any real stack's
 * options (a Linux SYN carries five), not for 40 bytes of NOPs.
 */
#define TCP_OPT_STEPS_UNROLLED 10

/**
 * parse_tcp_options() - window scale, SACK permitted and SACK blocks
 * @p: gets has_opts, topts, wscale and sack (which starts at the ack)
 * @th: the TCP header
 * @len: bytes of options (doff * 4 - 20, at most 40)
 * @data_end: end of the frame's first buffer
 *
 * A timestamp alone, as most segments of a Linux peer carry, takes no
 * walk.  Otherwise each option is one step: up to 40 through bpf_loop(),
 * whose callback the verifier checks once instead of per turn (a plain
 * loop over 40 bytes of options exceeds its budget).
 */
static __always_inline void parse_tcp_options(struct ct_pkt *p,
					      const struct tcphdr *th,
					      __u32 len, void *data_end)
{
	struct tcp_opt_walk w = {
		.opts = (const __u8 *)(th + 1),
		.data_end = data_end,
		.p = p,
		.len = len,
	};
	int i;

	p->has_opts = 1;
	if (len == 12 && (void *)(w.opts + 4) <= data_end &&
	    w.opts[0] == TCPOPT_NOP && w.opts[1] == TCPOPT_NOP &&
	    w.opts[2] == TCPOPT_TIMESTAMP && w.opts[3] == 10)
		return;

	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_loop)) {
		bpf_loop(TCP_MAX_OPTION_SPACE, tcp_opt_step, &w, 0);
		return;
	}
	for (i = 0; i < TCP_OPT_STEPS_UNROLLED; i++)
		if (tcp_opt_step(i, &w))
			break;
}

/**
 * parse_tcp() - the TCP header, checked as nf_conntrack's tcp_error()
 * @p: gets the flags, their class, seq, ack, window, options, the
 *     segment's end and the key
 * @l3: the network layer
 * @data_end: end of the frame's first buffer
 * @family: AF_INET or AF_INET6, a constant
 *
 * Return: CT_FORWARD, or CT_DROP_INVALID for a truncated header, a bad
 * data offset or a flag combination the kernel refuses.
 */
static __always_inline int parse_tcp(struct ct_pkt *p, const struct ct_l3 *l3,
				     void *data_end, int family)
{
	struct tcphdr *th = l3->l4;
	__u32 doff;
	__u8 flags;

	if (th + 1 > data_end || l3->l4len < sizeof(*th))
		return CT_DROP_INVALID;
	doff = th->doff * 4;
	if (doff < sizeof(*th) || doff > l3->l4len)
		return CT_DROP_INVALID;
	flags = tcp_flag_byte(th);
	if (!tcp_flags_valid(flags))
		return CT_DROP_INVALID;

	p->flags = flags;
	p->index = tcp_index(flags);
	/* Sequence arithmetic happens in host order, modulo 2^32. */
	p->seq = bpf_ntohl(th->seq);
	p->ack = bpf_ntohl(th->ack_seq);
	p->sack = p->ack;
	p->win = bpf_ntohs(th->window);
	p->end = p->seq + (l3->l4len - doff) + !!(flags & TH_SYN) +
		 !!(flags & TH_FIN);
	if (doff > sizeof(*th))
		parse_tcp_options(p, th, doff - sizeof(*th), data_end);
	ct_key_set(p, IPPROTO_TCP, th->source, th->dest, family);
	return CT_FORWARD;
}

/**
 * parse_udp() - the UDP header, checked as nf_conntrack's udp_error()
 * @p: gets the key
 * @l3: the network layer
 * @data_end: end of the frame's first buffer
 * @family: AF_INET or AF_INET6, a constant
 *
 * Return: CT_FORWARD, or CT_DROP_INVALID for a truncated header or a
 * length field out of range.
 */
static __always_inline int parse_udp(struct ct_pkt *p, const struct ct_l3 *l3,
				     void *data_end, int family)
{
	struct udphdr *uh = l3->l4;
	__u32 ulen;

	if (uh + 1 > data_end || l3->l4len < sizeof(*uh))
		return CT_DROP_INVALID;
	ulen = bpf_ntohs(uh->len);
	/* A first fragment holds part of the datagram the length covers. */
	if ((ulen > l3->l4len && !p->first_frag) || ulen < sizeof(*uh))
		return CT_DROP_INVALID;
	ct_key_set(p, IPPROTO_UDP, uh->source, uh->dest, family);
	return CT_FORWARD;
}

/*
 * The kernel's icmp_is_err(): the ICMP types that quote the packet they
 * are about, as a bitmap indexed by type.
 */
#define ICMP_ERROR_TYPES                                                       \
	((1U << ICMP_DEST_UNREACH) | (1U << ICMP_SOURCE_QUENCH) |              \
	 (1U << ICMP_REDIRECT) | (1U << ICMP_TIME_EXCEEDED) |                  \
	 (1U << ICMP_PARAMETERPROB))

/* @type must be at most NR_ICMP_TYPES, so that the shift is defined. */
static __always_inline bool icmp_is_error(__u8 type)
{
	return (ICMP_ERROR_TYPES >> type) & 1;
}

/**
 * ct_icmp_key_set() - the key of an ICMP or ICMPv6 query and its answer
 * @p: the packet, with its addresses; gets the key
 * @type: its ICMP type
 * @code: its ICMP code
 * @id: its query id, as on the wire
 * @family: AF_INET or AF_INET6, a constant
 *
 * The kernel tracks the four queries (echo, timestamp, information,
 * address mask) as connections whose reply tuple has the answer's type
 * (invmap[] in nf_conntrack_proto_icmp.c) and the same id and code, so a
 * request and its answer share this key, and a query the other way does
 * not.
 *
 * Return: false for a type that is no query or answer: the kernel cannot
 * invert its tuple, so it never belongs to a connection.
 */
static __always_inline bool ct_icmp_key_set(struct ct_pkt *p, __u8 type,
					    __u8 code, __be16 id, int family)
{
	__u8 proto = IPPROTO_ICMP, req_type = type;
	bool request = true;

	if (family == AF_INET6) {
		/* invmap[] of nf_conntrack_proto_icmpv6.c: echo and node
		 * information, each answer its request's type + 1.
		 */
		proto = IPPROTO_ICMPV6;
		switch (type) {
		case ICMPV6_ECHO_REQUEST:
		case ICMPV6_NI_QUERY:
			break;
		case ICMPV6_ECHO_REPLY:
		case ICMPV6_NI_REPLY:
			request = false;
			req_type = type - 1;
			break;
		default:
			return false;
		}
	} else {
		switch (type) {
		case ICMP_ECHO:
		case ICMP_TIMESTAMP:
		case ICMP_INFO_REQUEST:
		case ICMP_ADDRESS:
			break;
		case ICMP_ECHOREPLY:
			request = false;
			req_type = ICMP_ECHO;
			break;
		case ICMP_TIMESTAMPREPLY:
		case ICMP_INFO_REPLY:
		case ICMP_ADDRESSREPLY:
			/* Each answer is its request's type + 1. */
			request = false;
			req_type = type - 1;
			break;
		default:
			return false;
		}
	}
	if (request)
		ct_key_set(p, proto, id, 0, family);
	else
		ct_key_set(p, proto, 0, id, family);
	p->key.icmp_type = req_type;
	p->key.icmp_code = code;
	p->key.icmp_requester = request ? p->src_slot : p->src_slot ^ 1;
	return true;
}

/**
 * parse_icmp_error() - the packet an ICMP error quotes, read as
 * nf_conntrack_inet_error() reads it
 * @p: has the error's addresses; gets the quoted packet's tuple and key
 * @l3: the error's network layer
 * @ih: the error's ICMP header, known to be whole
 * @data_end: end of the frame's first buffer
 *
 * An error quotes the IP header of the packet it is about and the start
 * of what followed.  The kernel reads the quote with get_l4proto() and
 * nf_ct_get_tuple(): a whole fixed IP header, of which it checks neither
 * the version nor the lengths (a quote is cut short by design), only that
 * it is no later fragment; then as much of the transport header as a tuple
 * needs: TCP and UDP ports (4 bytes), the ICMP header (8 bytes).  The quote
 * ends where the error's datagram does (tot_len), not the frame.  It then
 * looks up the connection of the quoted tuple inverted, which for this
 * table is the quoted packet's own key.
 *
 * Return: CT_RELATED when @p's key is the quoted packet's connection,
 * which the tracker must then find; CT_DROP_INVALID when the error can be
 * about no connection (a quote too short for the tuple, a later fragment,
 * a protocol or an ICMP type that is never tracked) or is sent towards the
 * wrong end.
 */
static __always_inline int parse_icmp_error(struct ct_pkt *p,
					    const struct ct_l3 *l3,
					    const struct icmphdr *ih,
					    void *data_end)
{
	struct iphdr *inner = (void *)(ih + 1);
	__u32 quoted = l3->l4len - sizeof(*ih); /* the caller checked >= 8 */
	struct icmphdr *qh;
	__be16 *ports;
	__u32 hlen;
	void *ql4;

	if (inner + 1 > data_end || quoted < sizeof(*inner))
		return CT_DROP_INVALID;
	/* Conntrack reassembles what it tracks, but not what an error
	 * quotes: a later fragment has no transport header to key on.
	 */
	if (inner->frag_off & bpf_htons(IP_OFFSET))
		return CT_DROP_INVALID;
	/* An error goes back to the quoted packet's source: the kernel
	 * wants the outer destination to be the found direction's
	 * destination, which is the quoted source.  It checks after the
	 * lookup, but either failure is INVALID, so this one goes first and
	 * saves the lookup.
	 */
	if (inner->saddr != p->daddr.v4)
		return CT_DROP_INVALID;

	p->saddr.v4 = inner->saddr;
	p->daddr.v4 = inner->daddr;
	/* The IHL as it is, like the kernel: below 5 the transport header
	 * "starts" inside the IP header, and the tuple reads what is there.
	 */
	hlen = inner->ihl * 4;
	ql4 = (void *)inner + hlen;

	switch (inner->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		ports = ql4;
		if (ports + 2 > data_end || quoted < hlen + 4)
			return CT_DROP_INVALID;
		ct_key_set(p, inner->protocol, ports[0], ports[1], AF_INET);
		return CT_RELATED;
	case IPPROTO_ICMP:
		qh = ql4;
		if (qh + 1 > data_end || quoted < hlen + sizeof(*qh))
			return CT_DROP_INVALID;
		/* An error about an error, or about anything but a query,
		 * quotes no connection.
		 */
		if (!ct_icmp_key_set(p, qh->type, qh->code, qh->un.echo.id,
				     AF_INET))
			return CT_DROP_INVALID;
		return CT_RELATED;
	default:
		/* The kernel tracks other protocols too; this table holds
		 * none, so the lookup would fail.
		 */
		return CT_DROP_INVALID;
	}
}

/**
 * parse_icmp() - an ICMP header, checked as nf_conntrack_icmpv4_error()
 * @p: gets the type, the code and the key (a query's, or for an error the
 *     key of the packet it quotes)
 * @l3: the network layer
 * @data_end: end of the frame's first buffer
 *
 * Return: CT_FORWARD for a query or its answer, CT_RELATED for an error
 * that may be about a connection (parse_icmp_error()), or CT_DROP_INVALID
 * for a truncated header, a type beyond NR_ICMP_TYPES, or a type the
 * kernel neither tracks nor relates (router advertisement and
 * solicitation, the unassigned ones).
 */
static __always_inline int parse_icmp(struct ct_pkt *p, const struct ct_l3 *l3,
				      void *data_end)
{
	struct icmphdr *ih = l3->l4;

	if (ih + 1 > data_end || l3->l4len < sizeof(*ih))
		return CT_DROP_INVALID;
	/* RFC 1122 3.2.2: unknown types are silently discarded. */
	if (ih->type > NR_ICMP_TYPES)
		return CT_DROP_INVALID;

	p->icmp_type = ih->type;
	p->icmp_code = ih->code;
	if (icmp_is_error(ih->type))
		return parse_icmp_error(p, l3, ih, data_end);
	if (!ct_icmp_key_set(p, ih->type, ih->code, ih->un.echo.id, AF_INET))
		return CT_DROP_INVALID;
	return CT_FORWARD;
}

/**
 * parse_icmp6_error() - the packet an ICMPv6 error quotes, read as
 * nf_conntrack_inet_error() reads it
 * @ctx: the frame
 * @p: has the error's addresses; gets the quoted packet's tuple and key
 * @l3: the error's network layer
 * @ih: the error's ICMPv6 header, known to be whole
 * @data: start of the frame
 * @data_end: end of the frame's first buffer
 *
 * As parse_icmp_error() for IPv4, with the quoted packet's extension
 * headers walked as get_l4proto() walks them (ipv6_skip_exthdr(), within
 * the error's datagram): a chain it cannot walk, or a later fragment,
 * quotes no connection.
 *
 * Return: CT_RELATED or CT_DROP_INVALID, as parse_icmp_error().
 */
static __always_inline int
parse_icmp6_error(struct xdp_md *ctx, struct ct_pkt *p, const struct ct_l3 *l3,
		  const struct icmphdr *ih, void *data, void *data_end)
{
	struct ipv6hdr *inner = (void *)(ih + 1);
	__u32 off, end, qoff;
	struct icmphdr *qh;
	__be16 *ports;
	__u8 nexthdr;
	void *ql4;
	int r;

	off = (void *)inner - data;
	end = off + l3->l4len - sizeof(*ih); /* the caller checked >= 8 */
	if (inner + 1 > data_end || off + sizeof(*inner) > end)
		return CT_DROP_INVALID;
	/* Back to the quoted packet's source, as for IPv4. */
	if (ct_addr6_cmp(inner->saddr.in6_u.u6_addr32, p->daddr.v6))
		return CT_DROP_INVALID;

	__builtin_memcpy(p->saddr.v6, &inner->saddr, 16);
	__builtin_memcpy(p->daddr.v6, &inner->daddr, 16);
	nexthdr = inner->nexthdr;
	qoff = off + sizeof(*inner);
	ql4 = inner + 1;
	if (ipv6_ext_hdr(nexthdr)) {
		r = ct_ipv6_skip_exthdr(ctx, qoff, end, nexthdr);
		if (r < 0)
			return CT_DROP_INVALID;
		/* A fragment header with an offset: no transport header. */
		if (CT_X6_PROTO(r) == NEXTHDR_FRAGMENT)
			return CT_DROP_INVALID;
		qoff = r & CT_X6_OFF;
		nexthdr = CT_X6_PROTO(r);
		ql4 = data + qoff;
	}

	switch (nexthdr) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		ports = ql4;
		if (ports + 2 > data_end || qoff + 4 > end)
			return CT_DROP_INVALID;
		ct_key_set(p, nexthdr, ports[0], ports[1], AF_INET6);
		return CT_RELATED;
	case IPPROTO_ICMPV6:
		qh = ql4;
		if (qh + 1 > data_end || qoff + sizeof(*qh) > end)
			return CT_DROP_INVALID;
		if (!ct_icmp_key_set(p, qh->type, qh->code, qh->un.echo.id,
				     AF_INET6))
			return CT_DROP_INVALID;
		return CT_RELATED;
	default:
		return CT_DROP_INVALID;
	}
}

/*
 * noct_valid_new[] of nf_conntrack_proto_icmpv6.c: MLD (130-132, 143),
 * router solicitation and advertisement (133, 134), neighbour
 * solicitation and advertisement (135, 136), and since Linux 6.10
 * multicast router discovery advertisement and solicitation (151, 152),
 * as a bitmap from type 130.  The kernel leaves these untracked, so that
 * IPv6 works through it.
 */
#define ICMPV6_MRDISC_ADV 151
#define ICMPV6_MRDISC_SOL 152
#define ICMPV6_NOCT_TYPES                                                      \
	((1U << 0) | (1U << 1) | (1U << 2) | (1U << 3) | (1U << 4) |           \
	 (1U << 5) | (1U << 6) |                                               \
	 (1U << (ICMPV6_MLD2_REPORT - ICMPV6_MGM_QUERY)) |                     \
	 (1U << (ICMPV6_MRDISC_ADV - ICMPV6_MGM_QUERY)) |                      \
	 (1U << (ICMPV6_MRDISC_SOL - ICMPV6_MGM_QUERY)))

static __always_inline bool icmp6_untracked(__u8 type)
{
	__u32 t = (__u32)type - ICMPV6_MGM_QUERY;

	return t < 32 && ((ICMPV6_NOCT_TYPES >> t) & 1);
}

/**
 * parse_icmp6() - an ICMPv6 header, checked as nf_conntrack_icmpv6_error()
 * @ctx: the frame
 * @p: gets the type, the code and the key (a query's, or for an error the
 *     key of the packet it quotes)
 * @l3: the network layer
 * @data: start of the frame
 * @data_end: end of the frame's first buffer
 *
 * Types below 128 are errors, whatever their number: the kernel hands
 * each to nf_conntrack_inet_error().  Of the others, neighbour discovery,
 * router and MLD messages pass untracked, echo and node information
 * queries are tracked, and the rest (a redirect, say) are INVALID: the
 * kernel cannot invert their tuple.
 *
 * Return: CT_FORWARD, CT_RELATED, CT_UNTRACKED or CT_DROP_INVALID.
 */
static __always_inline int parse_icmp6(struct xdp_md *ctx, struct ct_pkt *p,
				       const struct ct_l3 *l3, void *data,
				       void *data_end)
{
	struct icmphdr *ih = l3->l4;

	if (ih + 1 > data_end || l3->l4len < sizeof(*ih))
		return CT_DROP_INVALID;
	p->icmp_type = ih->type;
	p->icmp_code = ih->code;
	if (icmp6_untracked(ih->type))
		return CT_UNTRACKED;
	if (ih->type < ICMPV6_ECHO_REQUEST)
		return parse_icmp6_error(ctx, p, l3, ih, data, data_end);
	if (!ct_icmp_key_set(p, ih->type, ih->code, ih->un.echo.id, AF_INET6))
		return CT_DROP_INVALID;
	return CT_FORWARD;
}

/**
 * ct_parse() - everything the tracker needs from one IP packet
 * @ctx: the frame
 * @nh: the cursor, on the network header (parse_ethhdr() put it there)
 * @data: start of the frame
 * @data_end: end of its first buffer
 * @frame_len: the whole frame's length
 * @p: the parsed packet
 * @l3: its network layer, for the checksum stage; zeroed by the caller,
 *	it stays so when parsing stops before the transport header (a
 *	later fragment, say)
 * @family: AF_INET or AF_INET6, a constant: the caller picks by ethertype,
 *	and each family gets a parser of its own
 *
 * Return: CT_FORWARD when @p is ready to track, CT_RELATED when @p holds
 * the key of the connection an ICMP error quotes, else the verdict for a
 * frame that is not tracked (see the top of this file).
 */
static __always_inline int ct_parse(struct xdp_md *ctx, struct hdr_cursor *nh,
				    void *data, void *data_end, __u32 frame_len,
				    struct ct_pkt *p, struct ct_l3 *l3,
				    int family)
{
	int ret;

	if (family == AF_INET) {
		ret = parse_ipv4(nh, data, data_end, frame_len, p, l3);
		if (ret != CT_FORWARD)
			return ret;
		switch (l3->proto) {
		case IPPROTO_TCP:
			if (p->first_frag)
				return CT_FRAGMENT;
			return parse_tcp(p, l3, data_end, AF_INET);
		case IPPROTO_UDP:
			return parse_udp(p, l3, data_end, AF_INET);
		case IPPROTO_ICMP:
			return parse_icmp(p, l3, data_end);
		default:
			return CT_UNTRACKED;
		}
	}

	ret = parse_ipv6(ctx, nh, data, data_end, frame_len, p, l3);
	if (ret != CT_FORWARD)
		return ret;
	switch (l3->proto) {
	case IPPROTO_TCP:
		if (p->first_frag)
			return CT_FRAGMENT;
		ret = parse_tcp(p, l3, data_end, AF_INET6);
		break;
	case IPPROTO_UDP:
		ret = parse_udp(p, l3, data_end, AF_INET6);
		break;
	case IPPROTO_ICMPV6:
		ret = parse_icmp6(ctx, p, l3, data, data_end);
		break;
	default:
		return CT_UNTRACKED;
	}
	/* The family-free part of the key joins IPv6's. */
	p->key6.proto = p->key.proto;
	p->key6.icmp_type = p->key.icmp_type;
	p->key6.icmp_code = p->key.icmp_code;
	p->key6.icmp_requester = p->key.icmp_requester;
	return ret;
}

#endif /* __PARSE_H */
