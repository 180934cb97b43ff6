/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Types shared by the handshake generator's XDP programs and Rust.
 */
#ifndef __HANDSHAKE_H
#define __HANDSHAKE_H

/*
 * What the sink counts: TCP by flag class (RST, then SYN, FIN, ACK), and
 * UDP datagrams.
 */
enum hs_kind {
	HS_SYN = 0,
	HS_SYNACK = 1,
	HS_ACK = 2,
	HS_FIN = 3,
	HS_RST = 4,
	HS_UDP = 5,
	HS_OTHER = 6,
	HS_KINDS = 7,
};

/*
 * One phase of the generator: the same template frame (TCP or UDP over
 * IPv4 or IPv6) `count` times, with the client's address and port of
 * connection i written in.  Userspace sets it before each run; the program
 * advances `next`.  The template's ethertype says which of the two first
 * client addresses is used.
 */
struct hs_phase {
	__u64 next;	      /* index of the next connection */
	__u64 count;	      /* stop before this index */
	__u64 span;	      /* client (address, port) pairs; indexes wrap */
	__u64 base;	      /* added after the wrap: a flood thread's share */
	__u32 client_addr;    /* first client address, host order */
	__u32 ports_per_addr; /* connections per client address */
	__u16 client_port;    /* first client port, host order */
	__u16 port_step;
	__u8 client_is_src; /* 1: client -> server; 0: server -> client */
	__u8 racer;	    /* --clash: 1 or 2, keeping pace with the other */
	__u8 kind;	    /* enum hs_kind: what the sink counts these as */
	__u8 pad;
	/* first IPv6 client address, host order: bits 127..64, then 63..0 */
	__u64 client_addr6[2];
	/* --window: at most `window` frames of the phase sent and not yet
	 * counted by the sink (0: no limit).  `first` is `next` at the
	 * phase's start, `arrived_base` the sink's arrived[kind] then.
	 */
	__u64 first;
	__u64 arrived_base;
	__u32 window;
	__u32 pad2;
};

#endif /* __HANDSHAKE_H */
