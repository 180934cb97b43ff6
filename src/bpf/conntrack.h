/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Types shared by the XDP program and the Rust loader.
 *
 * Rust never copies these by hand: libbpf-cargo emits them into the
 * skeleton's `types` module from the object's BTF, so both sides always
 * agree on layout, and build.rs reads the enumerators' names from the same
 * BTF, so that a state or a counter is named in this file only.  Keep every
 * field fixed-width and keep padding explicit.
 */
#ifndef __CONNTRACK_H
#define __CONNTRACK_H

/*
 * TCP states, in the order of the kernel's enum tcp_conntrack so that the
 * transition table in tcp_state.h reads like nf_conntrack_proto_tcp.c.
 * The list makes both the enum and the names the trace prints; Rust takes
 * the names from the enum (`conntrack -L` prints the same ones).
 */
#define CT_TCP_STATES(X)                                                       \
	X(NONE)                                                                \
	X(SYN_SENT)                                                            \
	X(SYN_RECV)                                                            \
	X(ESTABLISHED)                                                         \
	X(FIN_WAIT)                                                            \
	X(CLOSE_WAIT)                                                          \
	X(LAST_ACK)                                                            \
	X(TIME_WAIT)                                                           \
	X(CLOSE)                                                               \
	X(SYN_SENT2)

/* clang-format off */
#define CT_TCP_ENUM(name) CT_TCP_##name,
enum ct_tcp_state {
	CT_TCP_STATES(CT_TCP_ENUM)
	CT_TCP_MAX,	/* "sIV": the packet is INVALID */
	CT_TCP_IGNORE,	/* "sIG": accept, but do not change state */
};
#undef CT_TCP_ENUM
/* clang-format on */

/*
 * Timeout slots of struct ct_config.  Slots below CT_TCP_MAX are the TCP
 * states above; the rest are the kernel's extra TCP timer and the other
 * protocols.  Their defaults live with the loader (src/settings.rs), which
 * writes every slot before load.
 */
enum ct_timeout {
	CT_TO_MAX_RETRANS = CT_TCP_MAX, /* TCP: retransmitted 3 times or more,
					 * or a zero window */
	CT_TO_UNACKNOWLEDGED,		/* TCP: data in flight, or picked up and
			       * unanswered */
	CT_TO_UDP,			/* UDP, unreplied or younger than 2 s */
	CT_TO_UDP_STREAM, /* UDP seen both ways for more than 2 s */
	CT_TO_ICMP,
	CT_TO_MAX,
};

/* struct ct_entry.status bits, named after the kernel's IPS_* bits. */
enum ct_status {
	CT_S_SEEN_REPLY = 1 << 0,
	CT_S_ASSURED = 1 << 1,
};

/*
 * struct ct_tcp_side.flags, the kernel's IP_CT_TCP_FLAG_* bits: what one
 * direction of a TCP connection has shown.
 */
enum ct_tcp_flag {
	CT_TF_WINDOW_SCALE = 1 << 0, /* sent the window scale option */
	CT_TF_SACK_PERM = 1 << 1,    /* sent SACK permitted */
	CT_TF_CLOSE_INIT = 1 << 2,   /* sent the first FIN */
	CT_TF_BE_LIBERAL = 1 << 3, /* picked up mid-stream: no window checks */
	CT_TF_DATA_UNACKNOWLEDGED = 1 << 4, /* sent data not yet acked */
	CT_TF_MAXACK_SET = 1 << 5,	    /* td_maxack holds an ack */
};

/* struct ct_tcp.last_flags bits (the kernel's last_flags). */
enum ct_tcp_last_flag {
	CT_LF_WINDOW_SCALE = 1 << 0,  /* the ignored SYN had window scaling */
	CT_LF_SACK_PERM = 1 << 1,     /* ... and SACK permitted */
	CT_LF_CHALLENGE_ACK = 1 << 6, /* a SYN was ignored in LAST_ACK */
	CT_LF_SIMULTANEOUS_OPEN = 1 << 7,
};

enum ct_dir {
	CT_DIR_ORIGINAL = 0,
	CT_DIR_REPLY = 1,
};

/*
 * One key per connection, whichever way the packet goes: the endpoint
 * with the lower (address, port) pair always sits in slot 0.  The entry
 * records which slot opened the connection.
 *
 * ICMP queries (echo, timestamp, information, address mask) put the id in
 * the requester's port slot and 0 in the responder's, so a request and
 * its reply meet on one key while a query the other way does not.  The
 * kernel's ICMP tuple also holds the type and the code, so the key does
 * too: icmp_type is the request's type (8, 13, 15 or 17) whichever way
 * the packet goes, and icmp_requester the requester's slot, which tells
 * the two ways apart when the id is 0.  All three are 0 for TCP and UDP.
 */
struct ct_key {
	__be32 addr[2];
	__be16 port[2];
	__u8 proto;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 icmp_requester;
};

/*
 * The key of an IPv6 connection, in the table of its own (ct_table6): the
 * same layout with 16-byte addresses, ordered the same way (an address
 * compares as its bytes do, big-endian).  IPv4 keeps its 16-byte key: the
 * table's hash runs over the whole key on every lookup, and a 40-byte key
 * for both families would make every IPv4 packet pay for IPv6's width
 * (docs/BENCHMARKS.md).  ICMPv6 queries (echo 128, node information 139)
 * fill the ICMP fields as ICMP queries do.
 */
struct ct_key6 {
	__be32 addr[2][4];
	__be16 port[2];
	__u8 proto;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 icmp_requester;
};

/*
 * What one direction of a TCP connection has shown, for window tracking
 * (the kernel's struct ip_ct_tcp_state).  Sequence numbers in host order.
 */
struct ct_tcp_side {
	__u32 td_end;	 /* max of seq + len sent */
	__u32 td_maxend; /* max of ack + max(win, 1) received */
	__u32 td_maxwin; /* max(win) sent (scaled); 0: nothing seen yet */
	__u32 td_maxack; /* max of ack sent */
	__u8 td_scale;	 /* window scale factor */
	__u8 flags;	 /* enum ct_tcp_flag */
	__u8 pad[2];
};

/*
 * The TCP part of an entry (the kernel's struct ip_ct_tcp): both sides,
 * and the last packet, which retransmission counting and the resync of
 * ignored packets compare against.  Only read or written under the
 * entry's lock, except on the lock-free path of ct_tcp_fast(), which only
 * reads.
 */
struct ct_tcp {
	__u32 last_seq;
	__u32 last_ack;
	__u32 last_end;
	__u16 last_win;	 /* raw window of the last packet */
	__u8 last_index; /* flag class of the last accepted packet */
	__u8 last_dir;	 /* its direction */
	__u8 last_wscale;
	__u8 last_flags; /* enum ct_tcp_last_flag */
	__u8 retrans;	 /* identical ACKs in a row, saturating */
	__u8 next_state; /* ct_tcp_packet()'s scratch, under the lock */
	struct ct_tcp_side seen[2]; /* by direction */
};

/*
 * The times are the program's clock (struct ct_clock below): CLOCK_MONOTONIC
 * nanoseconds to within a tick.
 */
/*
 * One direction's traffic, with --acct (the kernel's nf_conntrack_acct):
 * packets, and bytes from the IP header on, as the kernel counts them.
 */
struct ct_acct {
	__u64 packets;
	__u64 bytes;
};

struct ct_entry {
	struct bpf_spin_lock lock;
	__u8 state;	/* enum ct_tcp_state; 0 for UDP and ICMP */
	__u8 status;	/* enum ct_status bits */
	__u8 orig;	/* key slot (0/1) of the endpoint that opened it */
	__u8 icmp_type; /* ICMP: the original direction's type */
	__u64 expires;	/* deadline */
	struct ct_tcp tcp;
	__u64 created;
	struct ct_acct
		acct[2]; /* by direction (enum ct_dir); 0 without --acct */
};

/* Interface slots of the devmap and of the per-side counters. */
#define CT_SIDES 2

/*
 * Per-CPU counters, one slot each in struct ct_stats; userspace sums them
 * over CPUs.  Rust names each one from its enumerator (less CT_C_, in
 * lower case), and its table of them (src/counters.rs) must have exactly
 * CT_C_MAX rows.  The per-side counters of side 2 follow those of side 1.
 */
enum ct_counter {
	CT_C_PACKETS_FROM_SIDE1, /* forwarded, by ingress side */
	CT_C_PACKETS_FROM_SIDE2,
	CT_C_BYTES_FROM_SIDE1,
	CT_C_BYTES_FROM_SIDE2,
	CT_C_NEW,	   /* connections created */
	CT_C_INVALID,	   /* dropped by the state machine */
	CT_C_TABLE_FULL,   /* new connection dropped: no room */
	CT_C_STRICT_DROPS, /* mid-stream packet dropped by --strict */
	CT_C_MALFORMED,	   /* dropped: truncated or bad L2/L3 header */
	CT_C_REDIRECT_ERR, /* devmap slot missing */
	CT_C_UNTRACKED,	   /* forwarded without tracking */
	CT_C_EXPIRED,	   /* expired entry replaced by a packet */
	CT_C_SWEPT,	   /* expired entry removed by the sweep */
	CT_C_CLOSED,	   /* entry removed by the state machine */
	/* lost the race to create an entry: went through the winner's */
	CT_C_CLASH_RESOLVE,
	CT_C_RELATED,	 /* ICMP error about a connection, forwarded */
	CT_C_FRAGMENTS,	 /* IP fragments: a UDP/ICMP datagram's first tracked,
			 * the rest forwarded untracked (parse.h) */
	CT_C_IPV6,	 /* IPv6 frames seen (tracked or not), any verdict */
	CT_C_NEW_IPV6,	 /* of CT_C_NEW, IPv6 connections */
	CT_C_DROPS_IPV6, /* of every drop counter, IPv6 frames */
	CT_C_FRAGMENTS_IPV6, /* of CT_C_FRAGMENTS, IPv6 fragments */
	CT_C_DELETED,	     /* entry removed by `delete` or `flush` */
	CT_C_EVENTS_LOST,    /* an event a reader wanted: the ring was full */
	CT_C_MAX,
};

struct ct_stats {
	__u64 n[CT_C_MAX];
};

/*
 * Settings, fixed before load through the object's .rodata.  The verifier
 * sees them as constants, so disabled branches (log level, MAC rewrite)
 * are pruned and cost nothing.  The loader writes every field.
 */
struct ct_config {
	__u32 timeout
		[CT_TO_MAX]; /* seconds, indexed by state / enum ct_timeout */
	__u32 ifindex[CT_SIDES];   /* ingress ifindex of each side */
	__u8 dst_mac[CT_SIDES][6]; /* rewrite for frames leaving that side */
	__u8 src_mac[CT_SIDES][6];
	__u8 rewrite[CT_SIDES];
	__u8 log_level;
	__u8 strict;   /* drop mid-stream TCP instead of picking it up */
	__u8 track;    /* 0: pure redirect, no tracking */
	__u8 liberal;  /* skip TCP window checks but RST's (be_liberal=1) */
	__u8 checksum; /* check TCP/UDP/ICMP checksums (nf_conntrack_checksum) */
	__u8 acct;     /* count packets and bytes per connection */
};

/*
 * The program's clock: jiffies, scaled to CLOCK_MONOTONIC nanoseconds.
 * The verifier inlines bpf_jiffies64() into a plain load, where the
 * ktime helpers are calls (three returns deep, and every return is costly
 * under the SRSO and retpoline mitigations).  The loader calibrates the
 * scale and the offset after load, from pairs that ct_clock_probe takes of
 * both clocks, so that deadlines stay comparable with userspace's
 * CLOCK_MONOTONIC_COARSE.
 */
struct ct_clock {
	__u64 tick_ns;	     /* 0: not calibrated, use the ktime helper */
	__u64 offset_ns;     /* mod 2^64: monotonic - jiffies * tick_ns */
	__u64 probe_jiffies; /* written by ct_clock_probe */
	__u64 probe_ns;	     /* the ktime helper, at the same moment */
};

/*
 * Connection events, as `conntrack -E` shows them (the kernel's IPCT_NEW,
 * the state and status changes it reports as updates, and IPCT_DESTROY).
 * Each is one bit, so that struct ct_event_ctl.mask says which a reader
 * wants.
 */
enum ct_event_type {
	CT_EV_NEW = 1 << 0,	/* an entry went in */
	CT_EV_UPDATE = 1 << 1,	/* its state or status changed */
	CT_EV_DESTROY = 1 << 2, /* it went: expired, swept, closed, deleted */
};

/*
 * Which events the `events` reader wants (0: there is none, and the
 * datapath builds none), and its pid, so that the tracker can tell a
 * reader that died without saying so and turn the events off again.
 */
struct ct_event_ctl {
	__u32 mask; /* enum ct_event_type bits */
	__u32 pid;
};

/*
 * One event in the ring: the entry as it was then.  key holds a struct
 * ct_key (family 2, in its first bytes) or a struct ct_key6 (family 10).
 * ts is the program's clock when it happened, so that expires - ts is the
 * time the entry had left.
 */
struct ct_event {
	__u64 ts;
	__u64 expires;
	__u64 created;
	__u8 type;   /* one enum ct_event_type bit */
	__u8 family; /* AF_INET or AF_INET6 */
	__u8 state;
	__u8 status;
	__u8 orig;
	__u8 icmp_type;
	__u8 pad[2];
	__u8 key[sizeof(struct ct_key6)];
	/* DESTROY with --acct: the connection's counts, which the kernel
	 * sends with a destroy event only; 0 otherwise.
	 */
	struct ct_acct acct[2];
};

/*
 * The layout of everything a tracker takes over from one stopped with
 * --keep: the keys, struct ct_entry, the counters, the events.  Bump it
 * with any change to them; the next tracker refuses a pinned table of
 * another layout (--fresh discards it).
 */
enum ct_layout {
	CT_LAYOUT_VERSION = 5,
};

/* What the tracker leaves beside its pinned maps for the next one. */
struct ct_meta {
	__u32 layout; /* CT_LAYOUT_VERSION of the binary that made them */
	__u32 pad;
};

/* What happens to a frame: the result of the tracking helpers. */
enum ct_verdict {
	CT_FORWARD = 0,	       /* tracked, and accepted */
	CT_DROP_INVALID = 1,   /* nf_conntrack would call it INVALID */
	CT_DROP_FULL = 2,      /* a new connection, and no room for it */
	CT_DROP_STRICT = 3,    /* mid-stream TCP under --strict */
	CT_DROP_MALFORMED = 4, /* broken L2/L3 header */
	CT_UNTRACKED = 5,      /* not tracked: forwarded as it is */
	CT_RELATED = 6,	       /* an ICMP error about a tracked connection */
	CT_FRAGMENT = 7,       /* an IP fragment past the first (or of TCP):
				* forwarded, not tracked */
};

/* What a packet did to a connection's entry (ct_tcp_packet and friends). */
enum ct_update {
	CT_UPD_ACCEPT = 0,  /* the entry took the packet */
	CT_UPD_INVALID = 1, /* the packet is INVALID; the entry is as it was */
	CT_UPD_REOPEN = 2,  /* the packet closed the connection and opened a
			     * new one in the same entry */
	CT_UPD_KILL = 3,    /* forward the packet, then delete the entry */
};

#endif /* __CONNTRACK_H */
