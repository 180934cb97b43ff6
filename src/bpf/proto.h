/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Wire-format constants that vmlinux.h does not carry (they are #defines in
 * the kernel's uapi headers), shared by both BPF programs: the tracker's
 * parser and the handshake generator's sink.
 */
#ifndef __PROTO_H
#define __PROTO_H

#define ETH_P_IP     0x0800
#define ETH_P_IPV6   0x86DD
#define ETH_P_8021Q  0x8100
#define ETH_P_8021AD 0x88A8

#define IP_MF	  0x2000
#define IP_OFFSET 0x1FFF

/* ICMP types (RFC 792, RFC 950), named as in the kernel's uapi icmp.h. */
#define ICMP_ECHOREPLY	    0
#define ICMP_DEST_UNREACH   3
#define ICMP_SOURCE_QUENCH  4
#define ICMP_REDIRECT	    5
#define ICMP_ECHO	    8
#define ICMP_TIME_EXCEEDED  11
#define ICMP_PARAMETERPROB  12
#define ICMP_TIMESTAMP	    13
#define ICMP_TIMESTAMPREPLY 14
#define ICMP_INFO_REQUEST   15
#define ICMP_INFO_REPLY	    16
#define ICMP_ADDRESS	    17
#define ICMP_ADDRESSREPLY   18
#define NR_ICMP_TYPES	    18 /* the highest type the kernel knows */

#define IPPROTO_ICMPV6 58

/*
 * IPv6 extension headers that ipv6_skip_exthdr() walks (the kernel's
 * ipv6_ext_hdr()), and no next header at all.
 */
#define NEXTHDR_HOP	 0
#define NEXTHDR_ROUTING	 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH	 51
#define NEXTHDR_NONE	 59
#define NEXTHDR_DEST	 60
#define IP6_MF		 0x0001
#define IP6_OFFSET	 0xFFF8

/* ICMPv6 types (RFC 4443, 4861, 4620), named as in the kernel's icmpv6.h. */
#define ICMPV6_DEST_UNREACH	     1
#define ICMPV6_PKT_TOOBIG	     2
#define ICMPV6_TIME_EXCEED	     3
#define ICMPV6_PARAMPROB	     4
#define ICMPV6_ECHO_REQUEST	     128
#define ICMPV6_ECHO_REPLY	     129
#define ICMPV6_MGM_QUERY	     130 /* MLD; the first type conntrack skips */
#define NDISC_NEIGHBOUR_SOLICITATION 135
#define ICMPV6_NI_QUERY		     139
#define ICMPV6_NI_REPLY		     140
#define ICMPV6_MLD2_REPORT	     143

/* TCP flag bits, in the byte after the data offset (RFC 9293). */
#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10
#define TH_URG 0x20
#define TH_ECE 0x40
#define TH_CWR 0x80

/*
 * The flag byte of a TCP header as one value.  struct tcphdr spells the
 * flags as bitfields, and reading them one by one costs a load each.
 */
static __always_inline __u8 tcp_flag_byte(const struct tcphdr *th)
{
	return ((const __u8 *)th)[13];
}

#endif /* __PROTO_H */
