/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The TCP state machine, in the shape of the kernel's
 * net/netfilter/nf_conntrack_proto_tcp.c: the same transition table, the
 * same special cases around it (ignored packets and resync, TIME_WAIT
 * reopen, simultaneous open, RFC 5961 challenge ACKs), and the same rules
 * for UNREPLIED/ASSURED and for the timeout that each packet arms.
 *
 * What is deliberately smaller than the kernel: window tracking.  Only the
 * acknowledgement bounds that matter during the handshake are checked
 * (an ACK must not acknowledge data the peer has not sent, nor lag it by
 * more than MAXACKWINCONST), and only while the connection is in
 * SYN_SENT, SYN_RECV or SYN_SENT2.  Once ESTABLISHED, sequence numbers
 * are not followed, which keeps the established fast path free of writes.
 *
 * Everything here runs either on a private copy of a new entry or with
 * the entry's bpf_spin_lock held, so it must not call helpers.
 */
#ifndef __TCP_STATE_H
#define __TCP_STATE_H

#define sNO CT_TCP_NONE
#define sSS CT_TCP_SYN_SENT
#define sSR CT_TCP_SYN_RECV
#define sES CT_TCP_ESTABLISHED
#define sFW CT_TCP_FIN_WAIT
#define sCW CT_TCP_CLOSE_WAIT
#define sLA CT_TCP_LAST_ACK
#define sTW CT_TCP_TIME_WAIT
#define sCL CT_TCP_CLOSE
#define sS2 CT_TCP_SYN_SENT2
#define sIV CT_TCP_MAX
#define sIG CT_TCP_IGNORE

/* clang-format off */
/* tcp_conntracks[direction][flag class][old state] = new state */
static const __u8 tcp_conntracks[2][6][CT_TCP_MAX] = {
	{
		/* ORIGINAL */
		/*	     sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2 */
		/*syn*/ { sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2 },
		/*synack*/ { sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR },
		/*fin*/ { sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV },
		/*ack*/ { sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV },
		/*rst*/ { sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL },
		/*none*/ { sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV },
	},
	{
		/* REPLY */
		/*	     sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2 */
		/*syn*/ { sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2 },
		/*synack*/ { sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR },
		/*fin*/ { sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV },
		/*ack*/ { sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG },
		/*rst*/ { sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL },
		/*none*/ { sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV },
	},
};
/* clang-format on */

#define MAXACKWINCONST 66000

static __always_inline bool seq_after(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
}

static __always_inline __u64 ct_timeout_ns(__u32 slot)
{
	if (slot >= CT_TO_MAX)
		slot = CT_TCP_CLOSE;
	return (__u64)ct_cfg.timeout[slot] * 1000000000ULL;
}

static __always_inline bool ct_tcp_handshake(__u8 state)
{
	return state == CT_TCP_SYN_SENT || state == CT_TCP_SYN_RECV ||
	       state == CT_TCP_SYN_SENT2;
}

/* Results of ct_tcp_in_window(), as the kernel's enum nf_ct_tcp_action. */
enum ct_window {
	CT_WIN_INVALID = 0,
	CT_WIN_ACCEPT = 1,
	CT_WIN_IGNORE = 2, /* accept the packet, change nothing */
};

/**
 * ct_tcp_in_window() - the part of tcp_in_window() the handshake needs
 * @e: the entry, private or locked
 * @p: the packet
 * @dir: its direction
 * @state: the entry's state before the packet
 *
 * Learns each side's end sequence from its SYN / SYN-ACK and bounds the
 * acknowledgement by the other side's.  Sequence numbers are host order,
 * modulo 2^32.
 *
 * Return: enum ct_window.
 */
static __always_inline int ct_tcp_in_window(struct ct_entry *e,
					    const struct ct_pkt *p, __u32 dir,
					    __u8 state)
{
	__u32 rdir = dir ^ 1;
	__u32 ack, rend;

	if (e->status & CT_S_LIBERAL)
		return CT_WIN_ACCEPT;

	if (!(e->seen[dir] & CT_SEEN_END_SET)) {
		/* First packet from this side: it defines the side. */
		e->seen[dir] |= CT_SEEN_END_SET;
		e->td_end[dir] = p->end;
		/* A SYN from the reply side: simultaneous open, no ack. */
		if ((p->flags & (TH_SYN | TH_ACK)) == TH_SYN)
			return CT_WIN_ACCEPT;
	} else if (((state == CT_TCP_SYN_SENT && dir == CT_DIR_ORIGINAL) ||
		    (state == CT_TCP_SYN_RECV && dir == CT_DIR_REPLY)) &&
		   seq_after(p->end, e->td_end[dir])) {
		/* RFC 793: a reinitialised TCP may restart with a higher
		 * sequence number.
		 */
		e->td_end[dir] = p->end;
	}

	rend = e->td_end[rdir];
	/* No ACK, or a broken stack's RST|ACK with ack 0: pretend it acks
	 * exactly what the peer sent.
	 */
	if (!(p->flags & TH_ACK) || ((p->flags & TH_RST) && p->ack == 0))
		ack = rend;
	else
		ack = p->ack;

	if (ct_tcp_handshake(state) && (e->seen[rdir] & CT_SEEN_END_SET)) {
		/* III: acking what the peer has not sent is INVALID. */
		if (seq_after(ack, rend))
			return CT_WIN_INVALID;
		/* IV: an ack lagging by more than a maximal window may be
		 * an overly delayed one; the kernel lets it pass unseen.
		 */
		if (!seq_after(ack, rend - MAXACKWINCONST - 1))
			return CT_WIN_IGNORE;
	}
	if (ct_tcp_handshake(state) && seq_after(p->end, e->td_end[dir]))
		e->td_end[dir] = p->end;
	return CT_WIN_ACCEPT;
}

/*
 * One lookup in tcp_conntracks[][][], bounds-checked right at the access:
 * older verifiers (6.1) lose a bound when clang spills the clamped index
 * and reloads it at another width, so the check and the load must sit
 * together on one flat index.
 */
static __always_inline __u8 tcp_transition(__u32 dir, __u32 index, __u32 old)
{
	__u32 i = (dir * 6 + index) * CT_TCP_MAX + old;

	if (i >= sizeof(tcp_conntracks))
		return CT_TCP_MAX;
	return ((const __u8 *)tcp_conntracks)[i];
}

/**
 * ct_tcp_packet() - advance a TCP entry by one packet
 * @e: the entry: a private copy of a new one, or a live one under its lock
 * @p: the packet
 * @dir: CT_DIR_ORIGINAL or CT_DIR_REPLY
 * @now: the program's clock
 * @from: gets the state the packet found, for the debug log
 *
 * Mirrors nf_conntrack_tcp_packet(): the transition table, then the
 * special cases around it, then the window check, then the timeout.
 *
 * Return: what the packet does to the entry (enum ct_update).
 */
static __always_inline enum ct_update ct_tcp_packet(struct ct_entry *e,
						    const struct ct_pkt *p,
						    __u32 dir, __u64 now,
						    __u8 *from)
{
	__u32 index = p->index;
	__u8 old = e->state, next;
	__u64 to;

	dir &= 1;
	next = tcp_transition(dir, index, old);
	*from = old;

	switch (next) {
	case CT_TCP_SYN_SENT:
		if (old < CT_TCP_TIME_WAIT)
			break;
		/* RFC 1122: a SYN may reopen a connection that is closing
		 * or was reset.  The kernel kills the entry and looks the
		 * packet up again; so do we.
		 */
		if (((e->seen[0] | e->seen[1]) & CT_SEEN_CLOSE_INIT) ||
		    (e->last_dir == dir && e->last_index == CT_IDX_RST))
			return CT_UPD_REOPEN;
		/* fallthrough */
	case CT_TCP_IGNORE:
		if (index == CT_IDX_SYNACK && e->last_index == CT_IDX_SYN &&
		    e->last_dir != dir && p->ack == e->last_end) {
			/* This SYN/ACK answers a SYN we ignored: the ends
			 * are in sync and we are not.  Resync from the
			 * ignored SYN.
			 */
			__u32 ldir = e->last_dir & 1;

			old = CT_TCP_SYN_SENT;
			next = CT_TCP_SYN_RECV;
			e->td_end[ldir] = e->last_end;
			e->seen[ldir] = CT_SEEN_END_SET;
			e->seen[dir] = 0;
			e->status &= ~CT_S_CHALLENGE;
			break;
		}
		e->last_index = index;
		e->last_dir = dir;
		e->last_end = p->end;
		if (index == CT_IDX_SYN && dir == CT_DIR_ORIGINAL) {
			/* The kernel starts its last_flags afresh here, which
			 * also forgets a simultaneous open.  An RFC 5961 peer
			 * answers this SYN with a challenge ACK, which must
			 * not count as the last ACK.
			 */
			e->status &= ~(CT_S_SIMOPEN | CT_S_CHALLENGE);
			if (old == CT_TCP_LAST_ACK)
				e->status |= CT_S_CHALLENGE;
		}
		return CT_UPD_ACCEPT;
	case CT_TCP_MAX:
		return CT_UPD_INVALID;
	case CT_TCP_TIME_WAIT:
		if (old == CT_TCP_LAST_ACK && index == CT_IDX_ACK &&
		    e->last_dir != dir && e->last_index == CT_IDX_SYN &&
		    (e->status & CT_S_CHALLENGE)) {
			e->status &= ~CT_S_CHALLENGE;
			return CT_UPD_ACCEPT;
		}
		break;
	case CT_TCP_SYN_SENT2:
		/* The table cannot express simultaneous open alone. */
		e->status |= CT_S_SIMOPEN;
		break;
	case CT_TCP_SYN_RECV:
		if (dir == CT_DIR_REPLY && index == CT_IDX_ACK &&
		    (e->status & CT_S_SIMOPEN))
			next = CT_TCP_ESTABLISHED;
		break;
	default:
		break;
	}

	switch (ct_tcp_in_window(e, p, dir, e->state)) {
	case CT_WIN_INVALID:
		return CT_UPD_INVALID;
	case CT_WIN_IGNORE:
		return CT_UPD_ACCEPT;
	default:
		break;
	}

	e->last_index = index;
	e->last_dir = dir;
	e->state = next;
	if (old != next && next == CT_TCP_FIN_WAIT)
		e->seen[dir] |= CT_SEEN_CLOSE_INIT;

	to = ct_timeout_ns(index == CT_IDX_RST ? CT_TCP_CLOSE : next);
	if (!(e->status & CT_S_SEEN_REPLY)) {
		/* Only a RST came back: no connection to keep. */
		if (index == CT_IDX_RST)
			return CT_UPD_KILL;
		/* A retransmitted SYN does not renew the deadline, or a
		 * client (or NAT) reusing the port keeps it alive forever.
		 */
		if (index == CT_IDX_SYN && old == CT_TCP_SYN_SENT)
			return CT_UPD_ACCEPT;
		/* Picked up mid-stream and unanswered: keep it short. */
		if (next == CT_TCP_ESTABLISHED &&
		    to > ct_timeout_ns(CT_TO_UNACK))
			to = ct_timeout_ns(CT_TO_UNACK);
	} else if (!(e->status & CT_S_ASSURED) &&
		   (old == CT_TCP_SYN_RECV || old == CT_TCP_ESTABLISHED) &&
		   next == CT_TCP_ESTABLISHED) {
		/* A valid ACK after SYN_RECV, or an answer for a picked-up
		 * connection.
		 */
		e->status |= CT_S_ASSURED;
	}
	e->expires = now + to;
	return CT_UPD_ACCEPT;
}

#endif /* __TCP_STATE_H */
