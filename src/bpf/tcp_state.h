/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The TCP state machine, ported from the kernel's
 * net/netfilter/nf_conntrack_proto_tcp.c: the same transition table, the
 * same special cases around it (ignored packets and resync, TIME_WAIT
 * reopen, simultaneous open, RFC 5961 challenge ACKs, RST sequence checks),
 * the same window tracking (tcp_in_window(): both sides' end, maximal end
 * and maximal window, window scaling, SACK, keep-alives, zero windows,
 * retransmission counting), and the same rules for UNREPLIED/ASSURED and
 * for the timeout that each packet arms.
 *
 * Everything here runs either on a private copy of a new entry or with
 * the entry's bpf_spin_lock held, so it must not call helpers; the one
 * exception is ct_tcp_fast(), which only reads, and says why that is safe.
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

/* MAXACKWINDOW(): how far an ack may lag the peer's end (4/IV below). */
#define MAXACKWINCONST 66000
/* nf_conntrack_tcp_max_retrans: identical ACKs before the short timer. */
#define CT_TCP_MAX_RETRANS 3

static __always_inline bool seq_before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

static __always_inline bool seq_after(__u32 a, __u32 b)
{
	return seq_before(b, a);
}

/* A timeout slot's seconds; the comparisons need no more. */
static __always_inline __u32 ct_timeout_s(__u32 slot)
{
	if (slot >= CT_TO_MAX)
		slot = CT_TCP_CLOSE;
	/* Index with the clamped register: clang would otherwise reload the
	 * unclamped one, which the verifier cannot bound.
	 */
	barrier_var(slot);
	return ct_cfg.timeout[slot];
}

static __always_inline __u64 ct_timeout_ns(__u32 slot)
{
	return (__u64)ct_timeout_s(slot) * 1000000000ULL;
}

/* Results of ct_tcp_in_window(), as the kernel's enum nf_ct_tcp_action. */
enum ct_window {
	CT_WIN_ACCEPT = 0,
	CT_WIN_IGNORE = 1, /* accept the packet, change nothing */
	CT_WIN_INVALID = 2,
};

static __always_inline __u32 max_ack_window(const struct ct_tcp_side *sender)
{
	return sender->td_maxwin > MAXACKWINCONST ? sender->td_maxwin
						  : MAXACKWINCONST;
}

/*
 * A window check failed: INVALID or IGNORE, unless the sender was picked
 * up mid-stream or --liberal is on (nf_conntrack_tcp_be_liberal), which
 * accept what the checks refuse, as nf_tcp_log_invalid() does.
 */
static __always_inline enum ct_window
ct_window_fail(const struct ct_tcp_side *sender, enum ct_window ret)
{
	if ((sender->flags & CT_TF_BE_LIBERAL) || ct_cfg.liberal)
		return CT_WIN_ACCEPT;
	return ret;
}

/*
 * The options of a SYN or SYN-ACK: its window scale and SACK permitted
 * (the kernel's tcp_options()).  A segment without options leaves what
 * the side had.
 */
static __always_inline void ct_tcp_options(struct ct_tcp_side *side,
					   const struct ct_pkt *p)
{
	if (!p->has_opts)
		return;
	side->td_scale = p->wscale;
	side->flags = (side->flags & CT_TF_BE_LIBERAL) | p->topts;
}

/* A SYN-ACK answering a SYN, or a SYN in the reply direction of a
 * simultaneous open, defines its side (the kernel's tcp_init_sender()).
 */
static __always_inline void
ct_tcp_init_sender(struct ct_tcp *t, const struct ct_pkt *p, __u32 dir)
{
	struct ct_tcp_side *sender = &t->seen[dir & 1];
	struct ct_tcp_side *receiver = &t->seen[!dir];

	sender->td_end = p->end;
	sender->td_maxend = p->end;
	sender->td_maxwin = p->win ? p->win : 1;
	ct_tcp_options(sender, p);
	/* RFC 1323: both sides must send the option to scale either way. */
	if (dir == CT_DIR_REPLY && !((sender->flags & CT_TF_WINDOW_SCALE) &&
				     (receiver->flags & CT_TF_WINDOW_SCALE))) {
		sender->td_scale = 0;
		receiver->td_scale = 0;
	}
}

/**
 * ct_tcp_in_window() - the kernel's tcp_in_window(), in full
 * @t: the entry's TCP part, private or locked
 * @p: the packet
 * @dir: its direction
 * @index: its flag class
 * @state: the entry's state before the packet
 *
 * With the sender's and the receiver's end (td_end), maximal end
 * (td_maxend) and maximal window (td_maxwin):
 *   I.   seq <= sender.td_maxend                     (upper bound of data)
 *   II.  end >= sender.td_end - receiver.td_maxwin   (lower bound of data)
 *   III. sack <= receiver.td_end                     (upper bound of acks)
 *   IV.  sack >= receiver.td_end - MAXACKWINDOW      (lower bound of acks)
 * where sack is the highest SACK block edge, or the ack.  Data below II
 * (retransmissions of acknowledged data) and acks below IV (overly
 * delayed acks) are IGNOREd, as is data over I by no more than the
 * receiver's window when the acks are fine (stacks that overshoot the
 * window); anything else out of bounds is INVALID.
 *
 * Return: enum ct_window.
 */
static __always_inline enum ct_window ct_tcp_in_window(struct ct_tcp *t,
						       const struct ct_pkt *p,
						       __u32 dir, __u32 index,
						       __u8 state)
{
	struct ct_tcp_side *sender = &t->seen[dir & 1];
	struct ct_tcp_side *receiver = &t->seen[!dir];
	__u32 seq = p->seq, ack = p->ack, sack = p->ack, end = p->end;
	__u32 win = p->win, swin;
	bool in_recv_win;

	if ((receiver->flags & CT_TF_SACK_PERM) && p->has_sack)
		sack = p->sack;

	if (sender->td_maxwin == 0) {
		/* The first packet from this side. */
		if (p->flags & TH_SYN) {
			ct_tcp_init_sender(t, p, dir);
			/* A SYN from the reply side: simultaneous open. */
			if (!(p->flags & TH_ACK))
				return CT_WIN_ACCEPT;
		} else {
			/* Mid-stream: the history is lost, take what the
			 * packet says.
			 */
			sender->td_end = end;
			swin = win << sender->td_scale;
			sender->td_maxwin = swin ? swin : 1;
			sender->td_maxend = end + sender->td_maxwin;
			if (receiver->td_maxwin == 0) {
				/* Nothing seen the other way: make III and
				 * IV pass until it is.
				 */
				receiver->td_end = sack;
				receiver->td_maxend = sack;
			} else if (sack == receiver->td_end + 1) {
				/* Likely the answer to a keep-alive. */
				receiver->td_end++;
			}
		}
	} else if ((p->flags & TH_SYN) && seq_after(end, sender->td_end) &&
		   (state == CT_TCP_SYN_SENT || state == CT_TCP_SYN_RECV)) {
		/* RFC 793: a reinitialised TCP may restart with higher
		 * sequence numbers.  Define the side again, as for its
		 * first SYN or SYN-ACK: seq, ack or options may differ.
		 */
		ct_tcp_init_sender(t, p, dir);
		if (dir == CT_DIR_REPLY && !(p->flags & TH_ACK))
			return CT_WIN_ACCEPT;
	}

	if (!(p->flags & TH_ACK)) {
		/* No ACK: pretend it acks exactly what the peer sent. */
		ack = receiver->td_end;
		sack = receiver->td_end;
	} else if ((p->flags & TH_RST) && ack == 0) {
		/* Broken stacks send RST|ACK with ack 0. */
		ack = receiver->td_end;
		sack = receiver->td_end;
	}

	/* A RST answering a SYN may carry seq 0. */
	if ((p->flags & TH_RST) && seq == 0 && state == CT_TCP_SYN_SENT) {
		seq = sender->td_end;
		end = sender->td_end;
	}

	if (!seq_before(seq, sender->td_maxend + 1)) {
		/* I failed.  Some stacks send more than the receiver's window
		 * allows: if only I fails, and by no more than the window,
		 * note the data as sent, so that its ack is not over III
		 * later, and ignore the packet.
		 */
		__u32 overshot = end - sender->td_maxend + 1;
		bool ack_ok = seq_after(
			sack, receiver->td_end - max_ack_window(sender) - 1);

		in_recv_win = receiver->td_maxwin &&
			      seq_after(end, sender->td_end -
						     receiver->td_maxwin - 1);
		if (in_recv_win && ack_ok && overshot <= receiver->td_maxwin &&
		    seq_before(sack, receiver->td_end + 1)) {
			sender->td_end = end;
			sender->flags |= CT_TF_DATA_UNACKNOWLEDGED;
			return ct_window_fail(sender, CT_WIN_IGNORE);
		}
		return ct_window_fail(sender, CT_WIN_INVALID);
	}
	/* III: acking data the peer has not sent. */
	if (!seq_before(sack, receiver->td_end + 1))
		return ct_window_fail(sender, CT_WIN_INVALID);
	/* II: already acknowledged data, retransmitted. */
	in_recv_win = !receiver->td_maxwin ||
		      seq_after(end, sender->td_end - receiver->td_maxwin - 1);
	if (!in_recv_win)
		return ct_window_fail(sender, CT_WIN_IGNORE);
	/* IV: an overly delayed ack. */
	if (!seq_after(sack, receiver->td_end - max_ack_window(sender) - 1))
		return ct_window_fail(sender, CT_WIN_IGNORE);

	/* RFC 1323: the window of a SYN is never scaled. */
	if (!(p->flags & TH_SYN))
		win <<= sender->td_scale;

	/* What the sender has shown. */
	swin = win + (sack - ack);
	if (sender->td_maxwin < swin)
		sender->td_maxwin = swin;
	if (seq_after(end, sender->td_end)) {
		sender->td_end = end;
		sender->flags |= CT_TF_DATA_UNACKNOWLEDGED;
	}
	if (p->flags & TH_ACK) {
		if (!(sender->flags & CT_TF_MAXACK_SET)) {
			sender->td_maxack = ack;
			sender->flags |= CT_TF_MAXACK_SET;
		} else if (seq_after(ack, sender->td_maxack)) {
			sender->td_maxack = ack;
		}
	}

	/* What the receiver may send, by what this packet opened. */
	if (receiver->td_maxwin != 0 && seq_after(end, sender->td_maxend))
		receiver->td_maxwin += end - sender->td_maxend;
	if (seq_after(sack + win, receiver->td_maxend - 1)) {
		receiver->td_maxend = sack + win;
		if (win == 0)
			receiver->td_maxend++;
	}
	if (ack == receiver->td_end)
		receiver->flags &= ~CT_TF_DATA_UNACKNOWLEDGED;

	/* Retransmissions: the same ACK again, from the same side. */
	if (index == CT_IDX_ACK) {
		if (t->last_dir == dir && t->last_seq == seq &&
		    t->last_ack == ack && t->last_end == end &&
		    t->last_win == p->win) {
			/* Saturates where the kernel's u8 wraps: past
			 * the limit, a further copy changes nothing, so
			 * that ct_tcp_fast() may take it without the lock.
			 */
			if (t->retrans < CT_TCP_MAX_RETRANS)
				t->retrans++;
		} else {
			t->last_dir = dir;
			t->last_seq = seq;
			t->last_ack = ack;
			t->last_end = end;
			t->last_win = p->win;
			t->retrans = 0;
		}
	}
	return CT_WIN_ACCEPT;
}

/*
 * An INVALID FIN or RST of an assured connection answering an INVALID
 * FIN or RST the other way: the ends and we are out of sync, so shorten
 * the timeout to the unacknowledged one, so that a dead connection does
 * not hold its entry for days (the kernel's nf_tcp_handle_invalid()).
 */
static __always_inline void ct_tcp_handle_invalid(struct ct_entry *e, __u32 dir,
						  __u32 index, __u64 now)
{
	struct ct_tcp *t = &e->tcp;
	__u64 to;

	if (!(e->status & CT_S_ASSURED) ||
	    (index != CT_IDX_RST && index != CT_IDX_FIN))
		return;
	if (t->last_dir != dir &&
	    (t->last_index == CT_IDX_FIN || t->last_index == CT_IDX_RST)) {
		to = ct_timeout_ns(CT_TO_UNACKNOWLEDGED);
		/* Only when more than 120 s are left, and never longer. */
		if (e->expires < now + 120 * 1000000000ULL)
			return;
		if (e->expires - now > to)
			e->expires = now + to;
	} else {
		t->last_index = index;
		t->last_dir = dir;
	}
}

/*
 * The timeout slot a packet arms (the end of nf_conntrack_tcp_packet()):
 * the state's, or the shorter retransmission, reset or unacknowledged
 * one.
 */
static __always_inline __u32 ct_tcp_timeout_slot(const struct ct_tcp *t,
						 __u8 state, __u32 index)
{
	__u32 mine = ct_timeout_s(state);

	if (t->retrans >= CT_TCP_MAX_RETRANS &&
	    mine > ct_timeout_s(CT_TO_MAX_RETRANS))
		return CT_TO_MAX_RETRANS;
	if (index == CT_IDX_RST)
		return CT_TCP_CLOSE;
	if (((t->seen[0].flags | t->seen[1].flags) &
	     CT_TF_DATA_UNACKNOWLEDGED) &&
	    mine > ct_timeout_s(CT_TO_UNACKNOWLEDGED))
		return CT_TO_UNACKNOWLEDGED;
	if (t->last_win == 0 && mine > ct_timeout_s(CT_TO_MAX_RETRANS))
		return CT_TO_MAX_RETRANS;
	return state;
}

/*
 * One lookup in tcp_conntracks[][][], bounds-checked right at the access:
 * older verifiers (6.1) lose a bound when clang spills the clamped index
 * and reloads it at another width, so the check and the load must sit
 * together on one flat index.  Clang can prove the index in range on
 * paths where the caller has already classified the segment, and then
 * drops the check; barrier_var() hides what it knows, so the check stays
 * for the verifier, which knows less.
 */
static __always_inline __u8 tcp_transition(__u32 dir, __u32 index, __u32 old)
{
	__u32 i = (dir * 6 + index) * CT_TCP_MAX + old;

	barrier_var(i);
	if (i >= sizeof(tcp_conntracks))
		return CT_TCP_MAX;
	return ((const __u8 *)tcp_conntracks)[i];
}

/* The kernel's nf_conntrack_tcp_established(). */
static __always_inline bool ct_tcp_established(const struct ct_entry *e)
{
	return e->state == CT_TCP_ESTABLISHED && (e->status & CT_S_ASSURED);
}

/* The kernel's tcp_can_early_drop(): a closing connection. */
static __always_inline bool ct_tcp_closing(__u8 state)
{
	return state == CT_TCP_FIN_WAIT || state == CT_TCP_LAST_ACK ||
	       state == CT_TCP_TIME_WAIT || state == CT_TCP_CLOSE ||
	       state == CT_TCP_CLOSE_WAIT;
}

/**
 * ct_tcp_new() - the TCP part of a new entry (the kernel's tcp_new())
 * @e: the new entry, private
 * @p: its first packet: a SYN, or an ACK met mid-stream
 *
 * A SYN defines the original side; a picked-up connection takes what the
 * packet says and trusts both sides' windows liberally, as the kernel does
 * with nf_conntrack_tcp_loose=1.
 */
static __always_inline void ct_tcp_new(struct ct_entry *e,
				       const struct ct_pkt *p)
{
	struct ct_tcp_side *s = &e->tcp.seen[CT_DIR_ORIGINAL];

	s->td_end = p->end;
	s->td_maxwin = p->win ? p->win : 1;
	if (p->index == CT_IDX_SYN) {
		s->td_maxend = p->end;
		ct_tcp_options(s, p);
	} else {
		s->td_maxend = p->end + s->td_maxwin;
		s->flags = CT_TF_SACK_PERM | CT_TF_BE_LIBERAL;
		e->tcp.seen[CT_DIR_REPLY].flags = s->flags;
	}
	e->tcp.last_index = CT_IDX_NONE;
}

/*
 * A SYN reopens a closing or reset connection (RFC 1122): the kernel kills
 * the entry and looks the packet up again, which creates a new one.  Make
 * the entry that new one, opened by this packet's sender.
 */
static __always_inline void ct_tcp_reopen(struct ct_entry *e,
					  const struct ct_pkt *p, __u64 now)
{
	__builtin_memset(&e->tcp, 0, sizeof(e->tcp));
	e->state = CT_TCP_NONE;
	e->status = 0;
	e->orig = p->src_slot;
	e->created = now;
	ct_tcp_new(e, p);
}

/**
 * ct_tcp_packet() - advance a TCP entry by one packet
 * @e: the entry: a private copy of a new one, or a live one under its lock
 * @p: the packet
 * @dir: CT_DIR_ORIGINAL or CT_DIR_REPLY
 * @now: the program's clock
 * @from: gets the state the packet found, for the debug log
 *
 * The kernel's nf_conntrack_tcp_packet(): the transition table, then the
 * special cases around it, then the window check, then the timeout.
 *
 * Return: what the packet does to the entry (enum ct_update); after
 * CT_UPD_REOPEN the entry is a new connection that the packet opened.
 */
static __always_inline enum ct_update ct_tcp_packet(struct ct_entry *e,
						    const struct ct_pkt *p,
						    __u32 dir, __u64 now,
						    __u8 *from)
{
	enum ct_update upd = CT_UPD_ACCEPT;
	struct ct_tcp *t = &e->tcp;
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
		if (((t->seen[0].flags | t->seen[1].flags) &
		     CT_TF_CLOSE_INIT) ||
		    (t->last_dir == dir && t->last_index == CT_IDX_RST)) {
			/* Here, under the lock, rather than by delete and
			 * insert: the same key, and a second pass through
			 * these rules would double the verifier's work.
			 */
			ct_tcp_reopen(e, p, now);
			dir = CT_DIR_ORIGINAL;
			old = CT_TCP_NONE;
			upd = CT_UPD_REOPEN;
			break;
		}
		/* fallthrough */
	case CT_TCP_IGNORE:
		if (index == CT_IDX_SYNACK && t->last_index == CT_IDX_SYN &&
		    t->last_dir != dir && p->ack == t->last_end) {
			/* This SYN-ACK answers a SYN we ignored: the ends
			 * are in sync and we are not.  Take the ignored
			 * SYN's side from what we noted of it.
			 */
			struct ct_tcp_side *s = &t->seen[t->last_dir & 1];

			old = CT_TCP_SYN_SENT;
			next = CT_TCP_SYN_RECV;
			s->td_end = t->last_end;
			s->td_maxend = t->last_end;
			s->td_maxwin = t->last_win ? t->last_win : 1;
			s->td_scale = t->last_wscale;
			t->last_flags &= ~CT_LF_CHALLENGE_ACK;
			s->flags = t->last_flags;
			/* nf_ct_tcp_state_reset() of the SYN-ACK's side. */
			t->seen[dir].td_end = 0;
			t->seen[dir].td_maxend = 0;
			t->seen[dir].td_maxwin = 0;
			t->seen[dir].td_maxack = 0;
			t->seen[dir].td_scale = 0;
			t->seen[dir].flags &= CT_TF_BE_LIBERAL;
			break;
		}
		t->last_index = index;
		t->last_dir = dir;
		t->last_seq = p->seq;
		t->last_end = p->end;
		t->last_win = p->win;
		if (index == CT_IDX_SYN && dir == CT_DIR_ORIGINAL) {
			/* A SYN in ORIGINAL: note its options for the
			 * resync above.  An RFC 5961 peer answers it with a
			 * challenge ACK, which must not count as the last
			 * ACK of a closing connection.  Starting last_flags
			 * afresh also forgets a simultaneous open.
			 */
			t->last_flags = 0;
			t->last_wscale = 0;
			if (p->has_opts && (p->topts & CT_TF_WINDOW_SCALE)) {
				t->last_flags |= CT_LF_WINDOW_SCALE;
				t->last_wscale = p->wscale;
			}
			if (p->has_opts && (p->topts & CT_TF_SACK_PERM))
				t->last_flags |= CT_LF_SACK_PERM;
			if (old == CT_TCP_LAST_ACK)
				t->last_flags |= CT_LF_CHALLENGE_ACK;
		}
		/* Perhaps a challenge ACK answering a SYN. */
		if (old == CT_TCP_SYN_SENT && index == CT_IDX_ACK &&
		    dir == CT_DIR_REPLY)
			t->last_ack = p->ack;
		return CT_UPD_ACCEPT;
	case CT_TCP_MAX:
		return CT_UPD_INVALID;
	case CT_TCP_TIME_WAIT:
		/* An RFC 5961 challenge ACK to a SYN is not the last ACK. */
		if (old == CT_TCP_LAST_ACK && index == CT_IDX_ACK &&
		    t->last_dir != dir && t->last_index == CT_IDX_SYN &&
		    (t->last_flags & CT_LF_CHALLENGE_ACK)) {
			t->last_flags &= ~CT_LF_CHALLENGE_ACK;
			return CT_UPD_ACCEPT;
		}
		break;
	case CT_TCP_SYN_SENT2:
		/* The table cannot express simultaneous open alone. */
		t->last_flags |= CT_LF_SIMULTANEOUS_OPEN;
		break;
	case CT_TCP_SYN_RECV:
		if (dir == CT_DIR_REPLY && index == CT_IDX_ACK &&
		    (t->last_flags & CT_LF_SIMULTANEOUS_OPEN))
			next = CT_TCP_ESTABLISHED;
		break;
	case CT_TCP_CLOSE:
		if (index != CT_IDX_RST)
			break;
		/* A closing connection's tuple may already be reused, and
		 * what the RST would be checked against is stale.
		 */
		if (ct_tcp_closing(old))
			goto in_window;
		if ((t->seen[!dir].flags & CT_TF_MAXACK_SET) &&
		    t->last_index != CT_IDX_SYN) {
			/* RFC 5961: a RST must sit exactly on what the peer
			 * acked last.  Below it, it is INVALID (a blind RST);
			 * above it, it keeps the state, so that a challenge
			 * ACK can tell the sender the right sequence.
			 */
			if (p->seq == 0 && !ct_tcp_established(e))
				break;
			if (seq_before(p->seq, t->seen[!dir].td_maxack))
				return CT_UPD_INVALID;
			if (!ct_tcp_established(e) ||
			    p->seq == t->seen[!dir].td_maxack)
				break;
			/* A RST right behind our own data, in a train. */
			if (t->last_index == CT_IDX_ACK && t->last_dir == dir &&
			    p->seq == t->last_end)
				break;
			next = old;
		}
		/* Only the other side's SYN is answered so: a RST from
		 * the side that sent the last SYN (the second SYN of a
		 * simultaneous open, say) goes through the window check,
		 * as 6.18 does, whatever its ack field holds.
		 */
		if ((((e->status & CT_S_SEEN_REPLY) &&
		      t->last_index == CT_IDX_SYN && t->last_dir != dir) ||
		     (!(e->status & CT_S_ASSURED) &&
		      t->last_index == CT_IDX_ACK)) &&
		    p->ack == t->last_end) {
			/* The answer to a SYN or ACK we let through as
			 * ignored: it may ack what we ignored, so skip the
			 * window check.
			 */
			goto in_window;
		}
		/* A RST answering a challenge ACK we let through. */
		if (old == CT_TCP_SYN_SENT && t->last_index == CT_IDX_ACK &&
		    t->last_dir == CT_DIR_REPLY && p->seq == t->last_ack)
			goto in_window;
		break;
	default:
		break;
	}

	/* The window check is the biggest part of these rules.  Park the
	 * next state in the entry while it runs: in a register, the verifier
	 * would follow the check once for each state the switch above may
	 * leave there, and the program would outgrow its budget.  The old
	 * state is still the entry's own.
	 */
	WRITE_ONCE(t->next_state, next);
	switch (ct_tcp_in_window(t, p, dir, p->index, e->state)) {
	case CT_WIN_IGNORE:
		return CT_UPD_ACCEPT;
	case CT_WIN_INVALID:
		ct_tcp_handle_invalid(e, dir, index, now);
		return CT_UPD_INVALID;
	default:
		break;
	}
	next = READ_ONCE(t->next_state);
	old = READ_ONCE(e->state);
in_window:
	t->last_index = index;
	t->last_dir = dir;
	e->state = next;
	if (old != next && next == CT_TCP_FIN_WAIT)
		t->seen[dir].flags |= CT_TF_CLOSE_INIT;

	to = ct_timeout_ns(ct_tcp_timeout_slot(t, next, index));
	if (!(e->status & CT_S_SEEN_REPLY)) {
		/* Only a RST came back: no connection to keep. */
		if (p->flags & TH_RST)
			return CT_UPD_KILL;
		/* A retransmitted SYN does not renew the deadline, or a
		 * client (or NAT) reusing the port keeps it alive forever.
		 */
		if (index == CT_IDX_SYN && old == CT_TCP_SYN_SENT)
			return upd;
		/* Picked up mid-stream and unanswered: keep it short. */
		if (next == CT_TCP_ESTABLISHED &&
		    to > ct_timeout_ns(CT_TO_UNACKNOWLEDGED))
			to = ct_timeout_ns(CT_TO_UNACKNOWLEDGED);
	} else if (!(e->status & CT_S_ASSURED) &&
		   (old == CT_TCP_SYN_RECV || old == CT_TCP_ESTABLISHED) &&
		   next == CT_TCP_ESTABLISHED) {
		/* A valid ACK after SYN_RECV, or an answer for a picked-up
		 * connection.
		 */
		e->status |= CT_S_ASSURED;
	}
	e->expires = now + to;
	return upd;
}

/**
 * ct_tcp_fast() - may this packet skip the lock?
 * @e: the live entry, not locked
 * @p: the packet
 * @dir: its direction
 *
 * An ACK that repeats exactly the last ACK of its side (same seq, ack, end
 * and window), once the retransmission count has saturated, and carries no
 * SACK block beyond its ack, changes nothing under the lock: the copy
 * before it passed every window check, and nothing accepted since has
 * changed the entry, or last_* (which every accepted ACK rewrites, and
 * every other accepted packet leaves with another last_index) would not
 * match.  Its only effect is the deadline, which ct_refresh() moves
 * without the lock.
 *
 * What it reads races with a CPU that holds the lock for the other side's
 * packet: it may see last_* half rewritten.  Then either all of last_*
 * still matches, and the packet is ordered before the other one (where it
 * was a no-op), or some field differs and it takes the lock.  It writes
 * nothing but the deadline.
 *
 * Return: true if the packet needs nothing but a deadline refresh.
 */
static __always_inline bool ct_tcp_fast(const struct ct_entry *e,
					const struct ct_pkt *p, __u32 dir)
{
	const struct ct_tcp *t = &e->tcp;
	/* last_seq and last_ack, then last_end, last_win, last_index and
	 * last_dir, each group compared at once: two 8-byte loads and two
	 * branches instead of six narrow ones (the layout is asserted
	 * below), which also spares the verifier four branch points.
	 */
	__u64 seq_ack = (__u64)p->ack << 32 | p->seq;
	__u64 end_win = (__u64)dir << 56 | (__u64)CT_IDX_ACK << 48 |
			(__u64)p->win << 32 | p->end;

	return p->index == CT_IDX_ACK && e->state == CT_TCP_ESTABLISHED &&
	       (e->status & CT_S_ASSURED) &&
	       READ_ONCE(t->retrans) >= CT_TCP_MAX_RETRANS &&
	       READ_ONCE(*(const __u64 *)&t->last_seq) == seq_ack &&
	       READ_ONCE(*(const __u64 *)&t->last_end) == end_win &&
	       (!p->has_sack || p->sack == p->ack);
}

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ct_tcp_fast() packs its comparisons for a little-endian target"
#endif
_Static_assert(__builtin_offsetof(struct ct_entry, tcp) % 8 == 0,
	       "struct ct_tcp must start 8-aligned in the entry");
#define CT_TCP_OFF(f) __builtin_offsetof(struct ct_tcp, f)
_Static_assert(CT_TCP_OFF(last_ack) == CT_TCP_OFF(last_seq) + 4, "last_ack");
_Static_assert(CT_TCP_OFF(last_end) == CT_TCP_OFF(last_seq) + 8, "last_end");
_Static_assert(CT_TCP_OFF(last_win) == CT_TCP_OFF(last_end) + 4, "last_win");
_Static_assert(CT_TCP_OFF(last_index) == CT_TCP_OFF(last_end) + 6,
	       "last_index");
_Static_assert(CT_TCP_OFF(last_dir) == CT_TCP_OFF(last_end) + 7, "last_dir");
#undef CT_TCP_OFF

#endif /* __TCP_STATE_H */
