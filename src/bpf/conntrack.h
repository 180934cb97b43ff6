/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Types shared by the XDP program and the Rust loader.
 *
 * Rust never copies these by hand: libbpf-cargo emits them into the
 * skeleton's `types` module from the object's BTF, so both sides always
 * agree on layout.  Keep every field fixed-width and keep padding explicit.
 */
#ifndef __CONNTRACK_H
#define __CONNTRACK_H

/*
 * TCP states, in the order of the kernel's enum tcp_conntrack so that the
 * transition table in tcp_state.h reads like nf_conntrack_proto_tcp.c.
 */
enum ct_tcp_state {
	CT_TCP_NONE = 0,
	CT_TCP_SYN_SENT = 1,
	CT_TCP_SYN_RECV = 2,
	CT_TCP_ESTABLISHED = 3,
	CT_TCP_FIN_WAIT = 4,
	CT_TCP_CLOSE_WAIT = 5,
	CT_TCP_LAST_ACK = 6,
	CT_TCP_TIME_WAIT = 7,
	CT_TCP_CLOSE = 8,
	CT_TCP_SYN_SENT2 = 9,
	CT_TCP_MAX = 10,    /* "sIV": the packet is INVALID */
	CT_TCP_IGNORE = 11, /* "sIG": accept, but do not change state */
};

/*
 * Timeout slots.  Slots 1..9 are the TCP states above; the rest are the
 * kernel's extra TCP timer and the other protocols.
 */
enum ct_timeout {
	CT_TO_UNACK = 10,      /* picked-up TCP that has seen no reply yet */
	CT_TO_UDP = 11,	       /* UDP, unreplied or younger than 2 s */
	CT_TO_UDP_STREAM = 12, /* UDP seen both ways for more than 2 s */
	CT_TO_ICMP = 13,
	CT_TO_MAX = 14,
};

/* struct ct_entry.status bits, named after the kernel's IPS_* bits. */
enum ct_status {
	CT_S_SEEN_REPLY = 1 << 0,
	CT_S_ASSURED = 1 << 1,
	CT_S_LIBERAL = 1 << 2,	 /* picked up mid-stream: skip ack checks */
	CT_S_SIMOPEN = 1 << 3,	 /* TCP simultaneous open seen */
	CT_S_CHALLENGE = 1 << 4, /* a SYN was ignored in LAST_ACK */
};

/* struct ct_entry.seen[] bits, one byte per direction. */
enum ct_seen {
	CT_SEEN_CLOSE_INIT = 1 << 0, /* this side sent the first FIN */
	CT_SEEN_END_SET = 1 << 1,    /* td_end[] holds a sequence number */
};

enum ct_dir {
	CT_DIR_ORIGINAL = 0,
	CT_DIR_REPLY = 1,
};

/*
 * One key per connection, whichever way the packet goes: the endpoint
 * with the lower (address, port) pair always sits in slot 0.  The entry
 * records which slot opened the connection.  ICMP echo puts the echo id
 * in the requester's port slot and 0 in the responder's, so a request and
 * its reply meet on one key while an echo the other way does not.
 */
struct ct_key {
	__be32 addr[2];
	__be16 port[2];
	__u8 proto;
	__u8 pad[3];
};

struct ct_entry {
	struct bpf_spin_lock lock;
	__u8 state;	 /* enum ct_tcp_state; 0 for UDP and ICMP */
	__u8 status;	 /* enum ct_status bits */
	__u8 orig;	 /* key slot (0/1) of the endpoint that opened it */
	__u8 last_index; /* TCP: flag class of the last accepted packet */
	__u8 last_dir;	 /* TCP: its direction */
	__u8 seen[2];	 /* TCP: enum ct_seen bits per direction */
	__u8 icmp_type;	 /* ICMP: the original direction's type */
	__u32 td_end[2]; /* TCP handshake: highest seq+len per direction */
	__u32 last_end;	 /* TCP: seq+len of the last ignored packet */
	__u64 expires;	 /* bpf_ktime_get_ns() deadline */
	__u64 created;	 /* bpf_ktime_get_ns() at creation */
};

/* Interface slots of the devmap and of the per-side counters. */
#define CT_SIDES 2

/* Per-CPU counters; userspace sums them over CPUs. */
struct ct_stats {
	__u64 rx_packets[CT_SIDES]; /* forwarded, by ingress side */
	__u64 rx_bytes[CT_SIDES];
	__u64 new_conns;
	__u64 invalid;	    /* dropped by the state machine */
	__u64 table_full;   /* new connection dropped: no room */
	__u64 strict_drops; /* mid-stream packet dropped by --strict */
	__u64 malformed;    /* dropped: truncated or bad L2/L3 header */
	__u64 redirect_err; /* devmap slot missing */
	__u64 untracked;    /* forwarded without tracking */
	__u64 expired;	    /* expired entry replaced by a packet */
	__u64 swept;	    /* expired entry removed by the sweep */
	__u64 closed;	    /* entry removed by the state machine */
};

/*
 * Settings, fixed before load through the object's .rodata.  The verifier
 * sees them as constants, so disabled branches (log level, MAC rewrite)
 * are pruned and cost nothing.
 */
struct ct_config {
	__u32 timeout
		[CT_TO_MAX]; /* seconds, indexed by state / enum ct_timeout */
	__u32 ifindex[CT_SIDES];   /* ingress ifindex of each side */
	__u8 dst_mac[CT_SIDES][6]; /* rewrite for frames leaving that side */
	__u8 src_mac[CT_SIDES][6];
	__u8 rewrite[CT_SIDES];
	__u8 log_level;
	__u8 strict; /* drop mid-stream TCP instead of picking it up */
	__u8 track;  /* 0: pure redirect, no tracking */
	__u8 pad[3];
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

/* Verdicts of the tracking helpers. */
enum ct_verdict {
	CT_FORWARD = 0,
	CT_DROP_INVALID = 1,
	CT_DROP_FULL = 2,
	CT_DROP_STRICT = 3,
	CT_DROP_MALFORMED = 4,
	CT_UNTRACKED = 5,
};

#endif /* __CONNTRACK_H */
