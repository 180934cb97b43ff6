/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Header parsing for the conntrack XDP program.
 *
 * A cursor walks the frame; every header is bounds-checked against
 * data_end before it is read, in the form the verifier understands
 * (hdr + 1 > data_end).  The parser decides what happens to frames it
 * cannot track:
 *   - shorter than an Ethernet header, a truncated VLAN tag or IPv4
 *     header, IHL < 5, version != 4, or tot_len beyond the frame:
 *     CT_DROP_MALFORMED (the kernel's ip_rcv() drops these too);
 *   - a TCP/UDP/ICMP header that is truncated or inconsistent (TCP data
 *     offset < 5 or past the datagram, UDP length out of range):
 *     CT_DROP_INVALID, as nf_conntrack's tcp_error()/udp_error() do;
 *   - non-IPv4 ethertypes (ARP, IPv6, ...), IPv4 fragments (no L4
 *     header to key on, and XDP cannot reassemble), ICMP other than echo,
 *     and other IP protocols: CT_UNTRACKED, forwarded as they are.
 * Up to two VLAN tags (802.1Q / 802.1ad) are skipped and the inner IPv4
 * packet is tracked.
 */
#ifndef __PARSE_H
#define __PARSE_H

#define ETH_P_IP       0x0800
#define ETH_P_8021Q    0x8100
#define ETH_P_8021AD   0x88A8
#define IP_MF	       0x2000
#define IP_OFFSET      0x1FFF
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO      8
#define VLAN_MAX_DEPTH 2

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10
#define TH_URG 0x20
#define TH_ECE 0x40
#define TH_CWR 0x80

/* TCP flag classes: the row index of tcp_conntracks[][][]. */
enum ct_tcp_index {
	CT_IDX_SYN = 0,
	CT_IDX_SYNACK = 1,
	CT_IDX_FIN = 2,
	CT_IDX_ACK = 3,
	CT_IDX_RST = 4,
	CT_IDX_NONE = 5,
};

/* What the tracker needs from one packet, all in host byte order. */
struct ct_pkt {
	struct ct_key key;
	__u32 seq;
	__u32 ack;
	__u32 end;    /* seq + payload + SYN + FIN, as segment_seq_plus_len() */
	__be32 saddr; /* the packet's own tuple, for the debug log */
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 src_slot; /* key slot of the sender */
	__u8 flags;    /* TCP flag byte */
	__u8 index;    /* enum ct_tcp_index */
	__u8 icmp_type;
};

struct hdr_cursor {
	void *pos;
};

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

/* Returns the ethertype (network order) after any VLAN tags, or -1. */
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

/*
 * Store the tuple so that both directions produce the same key: the
 * (address, port) pair that compares lower in host order takes slot 0.
 */
static __always_inline void ct_key_set(struct ct_pkt *p, __be32 saddr,
				       __be32 daddr, __be16 sport, __be16 dport)
{
	__u32 s = bpf_ntohl(saddr), d = bpf_ntohl(daddr);

	p->saddr = saddr;
	p->daddr = daddr;
	p->sport = sport;
	p->dport = dport;
	/* Constant indices only: clang turns a variable index into a stack
	 * array into pointer arithmetic the verifier refuses.
	 */
	if (s > d || (s == d && bpf_ntohs(sport) > bpf_ntohs(dport))) {
		p->src_slot = 1;
		p->key.addr[0] = daddr;
		p->key.addr[1] = saddr;
		p->key.port[0] = dport;
		p->key.port[1] = sport;
	} else {
		p->src_slot = 0;
		p->key.addr[0] = saddr;
		p->key.addr[1] = daddr;
		p->key.port[0] = sport;
		p->key.port[1] = dport;
	}
}

static __always_inline int parse_tcp(struct ct_pkt *p, struct iphdr *iph,
				     void *l4, __u32 l4len, void *data_end)
{
	struct tcphdr *th = l4;
	__u32 doff;
	__u8 flags;

	if (th + 1 > data_end || l4len < sizeof(*th))
		return CT_DROP_INVALID;
	doff = th->doff * 4;
	if (doff < sizeof(*th) || doff > l4len)
		return CT_DROP_INVALID;
	/* The flag byte follows the data offset nibble (RFC 9293). */
	flags = ((__u8 *)th)[13];
	if (!tcp_flags_valid(flags))
		return CT_DROP_INVALID;

	p->flags = flags;
	p->index = tcp_index(flags);
	/* Sequence arithmetic happens in host order, modulo 2^32. */
	p->seq = bpf_ntohl(th->seq);
	p->ack = bpf_ntohl(th->ack_seq);
	p->end = p->seq + (l4len - doff) + !!(flags & TH_SYN) +
		 !!(flags & TH_FIN);
	ct_key_set(p, iph->saddr, iph->daddr, th->source, th->dest);
	return CT_FORWARD;
}

static __always_inline int parse_udp(struct ct_pkt *p, struct iphdr *iph,
				     void *l4, __u32 l4len, void *data_end)
{
	struct udphdr *uh = l4;
	__u32 ulen;

	if (uh + 1 > data_end || l4len < sizeof(*uh))
		return CT_DROP_INVALID;
	ulen = bpf_ntohs(uh->len);
	if (ulen > l4len || ulen < sizeof(*uh))
		return CT_DROP_INVALID;
	ct_key_set(p, iph->saddr, iph->daddr, uh->source, uh->dest);
	return CT_FORWARD;
}

static __always_inline int parse_icmp(struct ct_pkt *p, struct iphdr *iph,
				      void *l4, __u32 l4len, void *data_end)
{
	struct icmphdr *ih = l4;
	__be16 id;

	if (ih + 1 > data_end || l4len < sizeof(*ih))
		return CT_DROP_INVALID;
	if (ih->type != ICMP_ECHO && ih->type != ICMP_ECHOREPLY)
		return CT_UNTRACKED;

	p->icmp_type = ih->type;
	id = ih->un.echo.id;
	/* The echo id sits in the requester's port slot. */
	if (ih->type == ICMP_ECHO)
		ct_key_set(p, iph->saddr, iph->daddr, id, 0);
	else
		ct_key_set(p, iph->saddr, iph->daddr, 0, id);
	return CT_FORWARD;
}

static __always_inline int ct_parse(void *data, void *data_end, __u32 frame_len,
				    struct ct_pkt *p)
{
	struct hdr_cursor nh = {.pos = data};
	struct iphdr *iph;
	__u32 hlen, tot;
	void *l4;
	int proto;

	proto = parse_ethhdr(&nh, data_end);
	if (proto < 0)
		return CT_DROP_MALFORMED;
	if (proto != bpf_htons(ETH_P_IP))
		return CT_UNTRACKED;

	iph = nh.pos;
	if (iph + 1 > data_end)
		return CT_DROP_MALFORMED;
	if (iph->version != 4 || iph->ihl < 5)
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
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return CT_UNTRACKED;

	l4 = (void *)iph + hlen;
	p->key.proto = iph->protocol;
	switch (iph->protocol) {
	case IPPROTO_TCP:
		return parse_tcp(p, iph, l4, tot - hlen, data_end);
	case IPPROTO_UDP:
		return parse_udp(p, iph, l4, tot - hlen, data_end);
	case IPPROTO_ICMP:
		return parse_icmp(p, iph, l4, tot - hlen, data_end);
	default:
		return CT_UNTRACKED;
	}
}

#endif /* __PARSE_H */
