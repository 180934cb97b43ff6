// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * xdp-conntrack: a stateful bump in the wire.
 *
 * Every frame that arrives on one of two interfaces leaves through the
 * other (bpf_redirect_map() through a two-slot devmap).  TCP, UDP and ICMP
 * query flows of both IP families are tracked in a hash map per family
 * with the semantics of the kernel's nf_conntrack, and ICMP errors about
 * them pass as RELATED; packets it would call INVALID are dropped.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "conntrack.h"
#include "parse.h"

#ifndef likely
#define likely(x) __builtin_expect(!!(x), 1)
#endif
#ifndef unlikely
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif
#define READ_ONCE(x)	 (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

#define NSEC_PER_SEC 1000000000ULL
/* Refresh an entry's deadline only when it moves by more than this, so
 * that the established fast path rarely writes to the shared entry.
 */
#define CT_REFRESH_SLACK NSEC_PER_SEC
/* UDP becomes a stream (ASSURED) only after this long, as in the kernel. */
#define CT_UDP_STREAM_AFTER (2 * NSEC_PER_SEC)
#define EEXIST		    17

/* Written whole by the loader before load (defaults: src/settings.rs). */
const volatile struct ct_config ct_cfg = {};

/*
 * Never read by the program: it anchors the shared enums in the object's
 * BTF, so that the skeleton's `types` module carries them to Rust and the
 * two sides cannot disagree on a state's number.
 */
const volatile struct {
	enum ct_tcp_state state;
	enum ct_timeout timeout;
	enum ct_status status;
	enum ct_tcp_flag tcp_flag;
	enum ct_tcp_last_flag tcp_last_flag;
	enum ct_dir dir;
	enum ct_verdict verdict;
	enum ct_update update;
	enum ct_counter counter;
	enum ct_tcp_index index;
	enum ct_event_type event_type;
	enum ct_layout layout;
	/* The ring's records have no type of their own in BTF. */
	struct ct_event event;
} ct_enums;

#include "tcp_state.h"

/* A plain (preallocated) hash: when it is full, new connections are
 * refused; a live entry is never evicted behind the user's back, which an
 * LRU map would do.  max_entries is set by the loader.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
} ct_table SEC(".maps");

/*
 * IPv6 connections: the same entries under the wider key (struct ct_key6
 * says why it is a table of its own).  The loader sizes it like ct_table.
 * Every lookup names its table at its own call site: the verifier then
 * knows the map at each one and inlines the hash lookup, which it cannot
 * do for a map pointer that differs by path.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key6);
	__type(value, struct ct_entry);
} ct_table6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, CT_SIDES);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_stats);
} stats SEC(".maps");

/*
 * Where a new connection's entry is shaped by its first packet before it
 * is published, one slot per CPU (indexed by CPU: the loader sizes it to
 * the possible CPUs).  The kernel, too, confirms a connection only after
 * its first packet; no other CPU ever sees a half-made entry.  The slot
 * has struct ct_entry's size but no lock in its type, so the verifier lets
 * bpf_map_update_elem() read it whole: the shaped entry goes into ct_table
 * straight from here, with no copy on the stack, which the checksum
 * stage's calls need.  The update leaves the table entry's lock alone.
 */
struct ct_entry_slot {
	__u8 bytes[sizeof(struct ct_entry)];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_entry_slot);
} ct_scratch SEC(".maps");

/*
 * The packet being parsed and tracked, one per CPU: an XDP program runs
 * to its end on one CPU with migration off, so nothing else uses the slot
 * meanwhile.  It lives here rather than on the stack for the verifier:
 * fields on the stack are tracked one by one, so each way through the
 * parser reaches the tracker as a state of its own, where fields in a map
 * value are plain unknown values and the states merge.  Measured on 6.18
 * at -l 5: 577k instructions walked and 392 bytes of stack before, 215k and
 * 320 after, the load 0.9 s then and 0.3 s now (docs/BENCHMARKS.md).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_pkt);
} ct_pkt_slot SEC(".maps");

/*
 * Connection events for the `events` verb.  The loader sizes the ring
 * (--event-ring).  The datapath reserves a record only while a reader's
 * mask asks for its type, so with no reader an event costs a lookup in
 * ct_events_ctl (inlined: an array map of one) and a branch, on the paths
 * that change an entry; the established fast path has neither.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} ct_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_event_ctl);
} ct_events_ctl SEC(".maps");

/*
 * Never read by the program: the loader writes the layout here, and it is
 * pinned with the tables, so that the next tracker knows what it would
 * take over.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_meta);
} ct_meta SEC(".maps");

/* bpf_printk() only at log level 5.  ct_cfg is read-only after load, so
 * the verifier prunes these branches entirely below that level.
 */
#define ct_log(fmt, ...)                                                       \
	({                                                                     \
		if (ct_cfg.log_level >= 5)                                     \
			bpf_printk(fmt, ##__VA_ARGS__);                        \
	})

#define CT_TCP_NAME(name) #name,
static const char ct_state_names[CT_TCP_MAX + 2][12] = {
	CT_TCP_STATES(CT_TCP_NAME) "INVALID",
	"IGNORE",
};
#undef CT_TCP_NAME

static const char ct_verdict_names[CT_FRAGMENT + 1][10] = {
	"forward",   "invalid",	  "full",    "strict",
	"malformed", "untracked", "related", "fragment",
};

static const char ct_xdp_action_names[XDP_REDIRECT + 2][13] = {
	"XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT", "?",
};

static __always_inline const char *xdp_action_name(long act)
{
	return ct_xdp_action_names[act >= 0 && act <= XDP_REDIRECT
					   ? act
					   : XDP_REDIRECT + 1];
}

/*
 * One line per TCP state change at log level 5: the old state, the new
 * one, the packet's own tuple and its direction ("new" for the packet
 * that opened the connection).
 */
#define ct_log_change(p, from, to, how)                                        \
	({                                                                     \
		if ((p)->family == AF_INET6)                                   \
			ct_log("xct: tcp %s -> %s [%pI6]:%u -> [%pI6]:%u %s",  \
			       state_name(from), state_name(to),               \
			       &(p)->saddr.v6, bpf_ntohs((p)->sport),          \
			       &(p)->daddr.v6, bpf_ntohs((p)->dport), how);    \
		else                                                           \
			ct_log("xct: tcp %s -> %s %pI4:%u -> %pI4:%u %s",      \
			       state_name(from), state_name(to),               \
			       &(p)->saddr.v4, bpf_ntohs((p)->sport),          \
			       &(p)->daddr.v4, bpf_ntohs((p)->dport), how);    \
	})

static __always_inline const char *state_name(__u8 s)
{
	return ct_state_names[s < CT_TCP_MAX + 2 ? s : CT_TCP_MAX];
}

/* Counts one event on this CPU. */
static __always_inline void ct_count(struct ct_stats *st, enum ct_counter c)
{
	if (c < CT_C_MAX)
		st->n[c]++;
}

/**
 * ct_verdict_counter() - the counter a verdict moves
 * @v: the verdict
 *
 * Return: the counter, or CT_C_MAX for a tracked, forwarded packet, whose
 * count the redirect keeps.
 */
static __always_inline enum ct_counter ct_verdict_counter(enum ct_verdict v)
{
	switch (v) {
	case CT_FORWARD:
		return CT_C_MAX;
	case CT_UNTRACKED:
		return CT_C_UNTRACKED;
	case CT_RELATED:
		return CT_C_RELATED;
	case CT_FRAGMENT:
		return CT_C_FRAGMENTS;
	case CT_DROP_FULL:
		return CT_C_TABLE_FULL;
	case CT_DROP_STRICT:
		return CT_C_STRICT_DROPS;
	case CT_DROP_MALFORMED:
		return CT_C_MALFORMED;
	case CT_DROP_INVALID:
	default:
		return CT_C_INVALID;
	}
}

/* Whether a verdict drops the frame; every other verdict forwards it. */
static __always_inline bool ct_verdict_drops(enum ct_verdict v)
{
	return v != CT_FORWARD && v != CT_UNTRACKED && v != CT_RELATED &&
	       v != CT_FRAGMENT;
}

/**
 * ct_count_ipv6() - count an IPv6 frame, and IPv6's drops and fragments
 * @st:  this CPU's counters
 * @pkt: the parsed frame (for first_frag)
 * @v:   the frame's verdict
 *
 * Drops and fragments are counted once for both families, by the verdict;
 * this counts IPv6's share again, so that `stats` can split them.  It runs
 * on IPv6's branch only: IPv4's path pays nothing for it.
 */
static __always_inline void
ct_count_ipv6(struct ct_stats *st, const struct ct_pkt *pkt, enum ct_verdict v)
{
	ct_count(st, CT_C_IPV6);
	if (ct_verdict_drops(v))
		ct_count(st, CT_C_DROPS_IPV6);
	/* As ct_packet() counts them: a later fragment by its verdict, a
	 * first one by first_frag, whatever its verdict.
	 */
	if (v == CT_FRAGMENT || pkt->first_frag)
		ct_count(st, CT_C_FRAGMENTS_IPV6);
}

/* Calibrated by the loader after load; see struct ct_clock. */
struct ct_clock ct_clock;

/*
 * The ktime clock.  Timeouts are whole seconds, so a jiffy of precision is
 * plenty: the coarse clock is a plain load where bpf_ktime_get_ns() reads
 * the clock source (about 25 ns per packet here).  Both are
 * CLOCK_MONOTONIC, which userspace compares deadlines with.  Kernels
 * before 5.11 lack the coarse helper; CO-RE resolves the check at load
 * time and the verifier prunes the branch that is not taken.
 */
static __always_inline __u64 ct_ktime(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id,
				       BPF_FUNC_ktime_get_coarse_ns))
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

/*
 * Now, in CLOCK_MONOTONIC nanoseconds to within a tick.  Jiffies and the
 * coarse clock move together at each tick, so once calibrated the two
 * agree; the jiffies form costs a load and a multiply instead of a helper
 * call (about 14 ns per packet here).
 */
static __always_inline __u64 ct_now(void)
{
	__u64 tick = ct_clock.tick_ns;

	if (likely(tick))
		return bpf_jiffies64() * tick + ct_clock.offset_ns;
	return ct_ktime();
}

/**
 * ct_events_wanted() - does a reader want events of this type?
 * @type: one enum ct_event_type bit
 *
 * Asked before an event is put together, so that with no reader an event
 * costs an inlined lookup in an array of one and a branch, not the
 * record's stores and a call (10 ns on a new connection, measured with
 * `make bench-cost BENCH=cost_new`).  The ring's side asks again: the
 * reader may have gone in between.
 */
static __always_inline bool ct_events_wanted(__u32 type)
{
	struct ct_event_ctl *ctl;
	__u32 zero = 0;

	ctl = bpf_map_lookup_elem(&ct_events_ctl, &zero);
	return ctl && (READ_ONCE(ctl->mask) & type);
}

/**
 * ct_event_send() - put an event into the ring, if a reader wants it
 * @ev: the event, filled in
 *
 * A global function, as is ct_destroy_ev(): the verifier checks each once,
 * not at every place an event is made, and before 6.4 a call into a
 * static function also made it give up on precision and prune far less
 * (on 6.1 the walk of the datapath went past its 1M instructions).  With
 * no reader, or one that does not want this type, it only looks at
 * ct_events_ctl.  A full ring is counted, never hidden: the reader shows
 * the count as it grows, and so does `stats`.
 *
 * Return: 1 if the event went into the ring.
 */
static __always_inline int ct_event_put(const struct ct_event *ev)
{
	struct ct_event *r;
	struct ct_stats *st;
	__u32 zero = 0;

	if (!ct_events_wanted(ev->type))
		return 0;
	r = bpf_ringbuf_reserve(&ct_events, sizeof(*r), 0);
	if (!r) {
		st = bpf_map_lookup_elem(&stats, &zero);
		if (st)
			ct_count(st, CT_C_EVENTS_LOST);
		return 0;
	}
	__builtin_memcpy(r, ev, sizeof(*r));
	bpf_ringbuf_submit(r, 0);
	return 1;
}

__noinline int ct_event_send(struct ct_event *ev)
{
	if (!ev)
		return 0;
	return ct_event_put(ev);
}

/**
 * ct_destroy_ev() - remove the entry an event describes, and report it
 * @ev: a DESTROY event, filled in while the entry was still there (a
 *	preallocated element may be reused as soon as it is deleted)
 *
 * Only the caller whose delete removes the entry reports it, so a packet,
 * the sweep and a verb racing for one entry make one event.
 *
 * Return: 1 if this call removed the entry.
 */
__noinline int ct_destroy_ev(struct ct_event *ev)
{
	struct ct_key6 key;
	long err;

	if (!ev)
		return 0;
	/* On the stack: before 6.3 or so a map helper takes no key from
	 * memory a global function was handed.  An IPv4 key is the first
	 * bytes.
	 */
	__builtin_memcpy(&key, ev->key, sizeof(key));
	if (ev->family == AF_INET6)
		err = bpf_map_delete_elem(&ct_table6, &key);
	else
		err = bpf_map_delete_elem(&ct_table, &key);
	if (err)
		return 0;
	/* Not through ct_event_send(): a call from here would count a
	 * third frame against the datapath's 512 bytes of stack.
	 */
	ct_event_put(ev);
	return 1;
}

/**
 * ct_event_fill() - record an entry in an event
 * @ev: the record
 * @type: one enum ct_event_type bit
 * @key: the entry's key
 * @e: the entry
 * @now: the program's clock
 * @family: AF_INET or AF_INET6, a constant
 */
static __always_inline void ct_event_fill(struct ct_event *ev, __u32 type,
					  const void *key,
					  const struct ct_entry *e, __u64 now,
					  int family)
{
	ev->ts = now;
	ev->expires = READ_ONCE(e->expires);
	ev->created = e->created;
	ev->type = type;
	ev->family = family;
	ev->state = e->state;
	ev->status = e->status;
	ev->orig = e->orig;
	ev->icmp_type = e->icmp_type;
	ev->pad[0] = 0;
	ev->pad[1] = 0;
	if (family == AF_INET6) {
		__builtin_memcpy(ev->key, key, sizeof(struct ct_key6));
	} else {
		__builtin_memcpy(ev->key, key, sizeof(struct ct_key));
		__builtin_memset(ev->key + sizeof(struct ct_key), 0,
				 sizeof(ev->key) - sizeof(struct ct_key));
	}
	/* ctnetlink sends the counters with a destroy event only. */
	if (ct_cfg.acct && type == CT_EV_DESTROY)
		__builtin_memcpy(ev->acct, e->acct, sizeof(ev->acct));
	else
		__builtin_memset(ev->acct, 0, sizeof(ev->acct));
}

/**
 * ct_event() - send an event about an entry, if a reader wants it
 * @ev: where to put it together (the packet's slot)
 * @type: one enum ct_event_type bit
 * @key: the entry's key
 * @e: the entry
 * @now: the program's clock
 * @family: AF_INET or AF_INET6, a constant
 *
 * On the paths that change an entry only, and filled only when a reader
 * wants it.
 */
static __always_inline void ct_event(struct ct_event *ev, __u32 type,
				     const void *key, const struct ct_entry *e,
				     __u64 now, int family)
{
	if (!ct_events_wanted(type))
		return;
	ct_event_fill(ev, type, key, e, now, family);
	ct_event_send(ev);
}

/**
 * ct_destroy() - remove an entry, and report it if a reader wants it
 * @ev: where to put the event together
 * @key: the entry's key
 * @e: the entry, as the lookup found it
 * @now: the program's clock
 * @family: AF_INET or AF_INET6, a constant
 *
 * Return: true if this call removed the entry.
 */
static __always_inline bool ct_destroy(struct ct_event *ev, const void *key,
				       const struct ct_entry *e, __u64 now,
				       int family)
{
	ct_event_fill(ev, CT_EV_DESTROY, key, e, now, family);
	return ct_destroy_ev(ev);
}

/**
 * ct_refresh() - push an entry's deadline out, without the lock
 * @e: the entry
 * @now: the program's clock
 * @slot: the timeout slot that applies
 */
static __always_inline void ct_refresh(struct ct_entry *e, __u64 now,
				       __u32 slot)
{
	__u64 expires = now + ct_timeout_ns(slot);

	/* Racy by design: CPUs that refresh the same flow at once all write
	 * nearly the same deadline, and skipping small moves keeps the
	 * cache line shared.
	 */
	if (expires > READ_ONCE(e->expires) + CT_REFRESH_SLACK)
		WRITE_ONCE(e->expires, expires);
}

/**
 * ct_udp_packet() - a UDP packet of a tracked flow, as nf_conntrack_udp_packet()
 * @e: the entry, locked
 * @now: the program's clock
 */
static __always_inline void ct_udp_packet(struct ct_entry *e, __u64 now)
{
	if (e->status & CT_S_SEEN_REPLY) {
		__u32 slot = CT_TO_UDP;
		bool stream = false;

		/* Still active two seconds after the first packet and seen
		 * both ways: a stream, not a probe.
		 */
		if (now > e->created + CT_UDP_STREAM_AFTER) {
			slot = CT_TO_UDP_STREAM;
			stream = !(e->status & CT_S_ASSURED);
		}
		e->expires = now + ct_timeout_ns(slot);
		if (stream)
			e->status |= CT_S_ASSURED;
	} else {
		e->expires = now + ct_timeout_ns(CT_TO_UDP);
	}
}

/**
 * ct_existing() - a packet of a connection that has a live entry
 * @e: the entry, in the map
 * @p: the packet
 * @now: the program's clock
 * @ch: the packet's slot, where what the packet changed is written (the
 *	state and status before it, taken under the lock, and whether either
 *	moved; the paths that cannot change them leave it untouched)
 *
 * Return: what the packet does to the entry.
 */
static __always_inline enum ct_update ct_existing(struct ct_entry *e,
						  const struct ct_pkt *p,
						  __u64 now, struct ct_pkt *ch)
{
	__u32 dir = p->src_slot != e->orig;
	enum ct_update upd;
	__u8 from = 0, to;

	switch (p->key.proto) {
	case IPPROTO_TCP:
		/* The lock-free path: see ct_tcp_fast() for why it is safe. */
		if (ct_tcp_fast(e, p, dir)) {
			ct_refresh(e, now,
				   ct_tcp_timeout_slot(&e->tcp,
						       CT_TCP_ESTABLISHED,
						       CT_IDX_ACK));
			return CT_UPD_ACCEPT;
		}
		bpf_spin_lock(&e->lock);
		ch->old_state = e->state;
		ch->old_status = e->status;
		upd = ct_tcp_packet(e, p, dir, now, &from);
		/* After a reopen, the packet is the new original. */
		if ((upd == CT_UPD_ACCEPT || upd == CT_UPD_KILL) &&
		    dir == CT_DIR_REPLY)
			e->status |= CT_S_SEEN_REPLY;
		to = e->state;
		ch->changed =
			to != ch->old_state || e->status != ch->old_status;
		bpf_spin_unlock(&e->lock);
		ct_log_change(p, from, upd == CT_UPD_INVALID ? CT_TCP_MAX : to,
			      dir == CT_DIR_REPLY ? "reply" : "original");
		return upd;
	case IPPROTO_UDP:
		if (likely(e->status & CT_S_ASSURED)) {
			ct_refresh(e, now, CT_TO_UDP_STREAM);
			return CT_UPD_ACCEPT;
		}
		bpf_spin_lock(&e->lock);
		ch->old_status = e->status;
		ct_udp_packet(e, now);
		if (dir == CT_DIR_REPLY)
			e->status |= CT_S_SEEN_REPLY;
		ch->changed = e->status != ch->old_status;
		bpf_spin_unlock(&e->lock);
		return CT_UPD_ACCEPT;
	default: /* ICMP echo */
		if (dir == CT_DIR_REPLY && !(e->status & CT_S_SEEN_REPLY)) {
			bpf_spin_lock(&e->lock);
			ch->old_status = e->status;
			e->status |= CT_S_SEEN_REPLY;
			ch->changed = e->status != ch->old_status;
			bpf_spin_unlock(&e->lock);
		}
		ct_refresh(e, now, CT_TO_ICMP);
		return CT_UPD_ACCEPT;
	}
}

/**
 * ct_create() - a packet with no live entry: may it open a connection?
 * @table: the packet's family's table
 * @key: the packet's key in it
 * @p: the packet
 * @now: the program's clock
 * @st: this CPU's counters
 * @created: set when the packet's own entry went in, already advanced by it
 * @family: AF_INET or AF_INET6, a constant
 *
 * Shapes the entry in this CPU's scratch slot, as the kernel's *_new()
 * handlers and the packet itself leave it, then inserts it.  A CPU that
 * loses the race to insert (the kernel's clash) goes through the winner's
 * entry instead, as if its packet had come a moment later.
 *
 * Return: CT_FORWARD to go on, or why the packet cannot open a connection.
 */
static __always_inline enum ct_verdict ct_create(void *table, const void *key,
						 const struct ct_pkt *p,
						 __u64 now, struct ct_stats *st,
						 bool *created, int family)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct ct_entry *n;
	__u8 from;
	int err;

	n = (struct ct_entry *)bpf_map_lookup_elem(&ct_scratch, &cpu);
	if (unlikely(!n))
		return CT_DROP_FULL; /* one slot per possible CPU: never */
	/* The slot holds the last connection made here: every field starts
	 * afresh, the lock's word included (the table's own is kept).
	 */
	n->lock.val = 0;
	n->state = CT_TCP_NONE;
	n->status = 0;
	n->orig = p->src_slot;
	n->icmp_type = 0;
	n->created = now;
	__builtin_memset(&n->tcp, 0, sizeof(n->tcp));
	__builtin_memset(n->acct, 0, sizeof(n->acct));
	if (ct_cfg.acct) {
		n->acct[CT_DIR_ORIGINAL].packets = 1;
		n->acct[CT_DIR_ORIGINAL].bytes = p->l3len;
	}

	switch (p->key.proto) {
	case IPPROTO_TCP:
		if (p->index == CT_IDX_ACK) {
			/* Mid-stream: nf_conntrack_tcp_loose=1 picks it up,
			 * with liberal window checks; --strict refuses.
			 */
			if (ct_cfg.strict)
				return CT_DROP_STRICT;
		} else if (p->index != CT_IDX_SYN) {
			/* SYN-ACK, FIN, RST or nothing for an unknown
			 * connection: the table has sIV for all of them.
			 */
			return CT_DROP_INVALID;
		}
		ct_tcp_new(n, p);
		if (ct_tcp_packet(n, p, CT_DIR_ORIGINAL, now, &from) !=
		    CT_UPD_ACCEPT)
			return CT_DROP_INVALID;
		ct_log_change(p, CT_TCP_NONE, n->state, "new");
		break;
	case IPPROTO_UDP:
		n->expires = now + ct_timeout_ns(CT_TO_UDP);
		break;
	default:
		/* Only a request opens an ICMP "connection" (valid_new[] in
		 * nf_conntrack_icmp_packet()); the key holds the request's
		 * type, so any other type is an answer.
		 */
		if (p->icmp_type != p->key.icmp_type)
			return CT_DROP_INVALID;
		n->icmp_type = p->icmp_type;
		n->expires = now + ct_timeout_ns(CT_TO_ICMP);
		break;
	}

	err = bpf_map_update_elem(table, key, n, BPF_NOEXIST);
	if (likely(!err)) {
		ct_count(st, CT_C_NEW);
		if (family == AF_INET6)
			ct_count(st, CT_C_NEW_IPV6);
		*created = true;
		ct_event((struct ct_event *)&p->ev, CT_EV_NEW, key, n, now,
			 family);
		return CT_FORWARD;
	}
	/* -EEXIST: another CPU created it first (the kernel's clash
	 * resolution); use its entry.
	 */
	if (err == -EEXIST) {
		ct_count(st, CT_C_CLASH_RESOLVE);
		return CT_FORWARD;
	}
	/* -E2BIG: the table is full.  Refuse the newcomer. */
	return CT_DROP_FULL;
}

/**
 * ct_track() - look a parsed packet up, and create, advance or remove its
 * connection
 * @table: the packet's family's table, named at the call site
 * @key: the packet's key in it
 * @p: the packet
 * @st: this CPU's counters
 * @family: AF_INET or AF_INET6, a constant
 *
 * Return: the packet's verdict.
 */
static __always_inline enum ct_verdict ct_track(void *table, const void *key,
						const struct ct_pkt *p,
						struct ct_stats *st, int family)
{
	/* The event slot and the change record are the packet's own (a map
	 * value, like p, and not const there).
	 */
	struct ct_pkt *ch = (struct ct_pkt *)p;
	struct ct_event *ev = &ch->ev;
	__u64 now = ct_now();
	enum ct_verdict verdict;
	bool created = false;
	enum ct_update upd;
	struct ct_entry *e;

	e = bpf_map_lookup_elem(table, key);
	if (e && unlikely(READ_ONCE(e->expires) <= now)) {
		/* An expired entry is as good as absent. */
		if (ct_destroy(ev, key, e, now, family))
			ct_count(st, CT_C_EXPIRED);
		e = NULL;
	}
	if (!e) {
		verdict = ct_create(table, key, p, now, st, &created, family);
		if (verdict != CT_FORWARD || created)
			return verdict;
		e = bpf_map_lookup_elem(table, key);
		/* Gone already: another CPU's packet closed it. */
		if (!e)
			return CT_FORWARD;
	}
	ch->changed = 0;
	upd = ct_existing(e, p, now, ch);
	/* Counted as the kernel counts: every packet the entry accepts, in
	 * its direction; atomically, since CPUs share the entry.  A reopened
	 * connection starts its count with the packet that opened it.
	 */
	if (ct_cfg.acct && upd != CT_UPD_INVALID) {
		__u32 dir = p->src_slot != e->orig;

		if (upd == CT_UPD_REOPEN) {
			/* The old connection's counts, for its DESTROY. */
			__builtin_memcpy(ch->old_acct, e->acct,
					 sizeof(ch->old_acct));
			__builtin_memset(e->acct, 0, sizeof(e->acct));
			dir = CT_DIR_ORIGINAL;
		}
		__sync_fetch_and_add(&e->acct[dir & 1].packets, 1);
		__sync_fetch_and_add(&e->acct[dir & 1].bytes, p->l3len);
	}
	switch (upd) {
	case CT_UPD_ACCEPT:
		if (unlikely(ch->changed))
			ct_event(ev, CT_EV_UPDATE, key, e, now, family);
		return CT_FORWARD;
	case CT_UPD_REOPEN:
		ct_count(st, CT_C_CLOSED);
		ct_count(st, CT_C_NEW);
		/* The old connection ends where the new one begins, as the
		 * kernel's kill and re-create do.
		 */
		if (ct_events_wanted(CT_EV_DESTROY)) {
			ct_event_fill(ev, CT_EV_DESTROY, key, e, now, family);
			ev->state = ch->old_state;
			ev->status = ch->old_status;
			ev->expires = now;
			if (ct_cfg.acct)
				__builtin_memcpy(ev->acct, ch->old_acct,
						 sizeof(ev->acct));
			ct_event_send(ev);
		}
		ct_event(ev, CT_EV_NEW, key, e, now, family);
		return CT_FORWARD;
	case CT_UPD_KILL:
		/* Only the CPU whose delete succeeds counts it. */
		if (ct_destroy(ev, key, e, now, family))
			ct_count(st, CT_C_CLOSED);
		return CT_FORWARD;
	default:
		return CT_DROP_INVALID;
	}
}

/**
 * ct_related() - is the connection an ICMP error quotes tracked?
 * @table: the error's family's table, named at the call site
 * @key: the quoted packet's key in it
 * @p: the error, with the quoted packet's tuple (parse_icmp_error())
 * @family: AF_INET or AF_INET6, a constant
 *
 * The kernel marks such an error RELATED and leaves the connection as it
 * was: nf_conntrack_in() skips the protocol's packet handler, so there is
 * no refresh, no state change and no SEEN_REPLY.  So this only looks.
 *
 * Return: CT_RELATED, or CT_DROP_INVALID when there is no live entry.
 */
static __always_inline enum ct_verdict
ct_related(void *table, const void *key, const struct ct_pkt *p, int family)
{
	struct ct_entry *e = bpf_map_lookup_elem(table, key);

	/* An expired entry is absent, as ever; the sweep removes it. */
	if (!e || READ_ONCE(e->expires) <= ct_now()) {
		ct_log("xct: icmp error type=%u code=%u: no connection",
		       p->icmp_type, p->icmp_code);
		return CT_DROP_INVALID;
	}
	if (family == AF_INET6)
		ct_log("xct: icmp error type=%u code=%u related to proto=%u "
		       "[%pI6]:%u -> [%pI6]:%u",
		       p->icmp_type, p->icmp_code, p->key.proto, &p->saddr.v6,
		       bpf_ntohs(p->sport), &p->daddr.v6, bpf_ntohs(p->dport));
	else
		ct_log("xct: icmp error type=%u code=%u related to proto=%u "
		       "%pI4:%u -> %pI4:%u",
		       p->icmp_type, p->icmp_code, p->key.proto, &p->saddr.v4,
		       bpf_ntohs(p->sport), &p->daddr.v4, bpf_ntohs(p->dport));
	return CT_RELATED;
}

/*
 * The whole frame's length.  Attached as xdp.frags (so that jumbo and
 * multi-buffer frames pass), data_end only ends the first buffer.  Kernels
 * before 5.18 have no fragments and no bpf_xdp_get_buff_len().
 */
static __always_inline __u32 ct_frame_len(struct xdp_md *ctx)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id,
				       BPF_FUNC_xdp_get_buff_len))
		return bpf_xdp_get_buff_len(ctx);
	return ctx->data_end - ctx->data;
}

/**
 * ct_redirect() - send a frame out of the other side, and count it
 * @ctx: the frame
 * @in: the side it came in on (0 or 1)
 * @len: its whole length
 * @st: this CPU's counters
 *
 * Return: the XDP action.
 */
static __always_inline int ct_redirect(struct xdp_md *ctx, __u32 in, __u32 len,
				       struct ct_stats *st)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 out = in ^ 1;
	struct ethhdr *eth = data;
	long act;

	if (ct_cfg.rewrite[out]) {
		if (eth + 1 > data_end)
			return XDP_DROP;
		__builtin_memcpy(eth->h_dest, (void *)ct_cfg.dst_mac[out], 6);
		__builtin_memcpy(eth->h_source, (void *)ct_cfg.src_mac[out], 6);
	}
	/* The low bits of flags are the action if the slot is empty. */
	act = bpf_redirect_map(&tx_ports, out, XDP_DROP);
	if (likely(act == XDP_REDIRECT)) {
		/* in is 0 or 1: side 2's counters follow side 1's. */
		st->n[CT_C_PACKETS_FROM_SIDE1 + (in & 1)]++;
		st->n[CT_C_BYTES_FROM_SIDE1 + (in & 1)] += len;
	} else {
		ct_count(st, CT_C_REDIRECT_ERR);
	}
	ct_log("xct: side%u -> side%u %s", in + 1, out + 1,
	       xdp_action_name(act));
	return act;
}

/**
 * ct_packet() - parse, check and track one IP packet of one family
 * @ctx: the frame
 * @nh: the cursor, on the network header
 * @len: the frame's whole length
 * @pkt: this CPU's packet slot, cleared
 * @st: this CPU's counters
 * @family: AF_INET or AF_INET6, a constant: the entry calls this once per
 *	family, so each family's path is code of its own, with no test of
 *	the family along it and each table named at its own call sites
 *
 * Return: the packet's verdict.
 */
static __always_inline enum ct_verdict
ct_packet(struct xdp_md *ctx, struct hdr_cursor *nh, __u32 len,
	  struct ct_pkt *pkt, struct ct_stats *st, int family)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ct_l3 l3 = {};
	enum ct_verdict verdict;

	/* The IP packet's length, for --acct: the frame less its L2 header.
	 * The header's length is taken as a whole first: left to itself,
	 * clang folds it into 32-bit pointer arithmetic, which the verifier
	 * refuses.
	 */
	if (ct_cfg.acct) {
		long l2 = (long)nh->pos - (long)data;

		barrier_var(l2);
		pkt->l3len = len - l2;
	}
	verdict = ct_parse(ctx, nh, data, data_end, len, pkt, &l3, family);
	/* Checksums come after the parser's own checks, as in the kernel's
	 * *_error(), and before the packet may touch the table.  Whatever
	 * the parser lets through is checked, tracked or not: the kernel
	 * checks every ICMP packet, whatever its type, errors included.  A
	 * first fragment holds part of what its checksum covers: not judged.
	 * ct_cfg is read-only, so --no-checksum prunes the whole stage.
	 */
	if (ct_cfg.checksum &&
	    (verdict == CT_FORWARD || verdict == CT_UNTRACKED ||
	     verdict == CT_RELATED) &&
	    !pkt->first_frag && ct_csum_l4(ctx, pkt, &l3, family) != CT_FORWARD)
		verdict = CT_DROP_INVALID;
	/* A tracked first fragment is a fragment too. */
	if (unlikely(pkt->first_frag) && verdict != CT_FRAGMENT)
		ct_count(st, CT_C_FRAGMENTS);

	if (verdict == CT_FORWARD) {
		if (family == AF_INET6) {
			ct_log("xct: pkt proto=%u [%pI6]:%u -> [%pI6]:%u "
			       "flags=0x%x",
			       pkt->key.proto, &pkt->saddr.v6,
			       bpf_ntohs(pkt->sport), &pkt->daddr.v6,
			       bpf_ntohs(pkt->dport), pkt->flags);
			return ct_track(&ct_table6, &pkt->key6, pkt, st,
					family);
		}
		ct_log("xct: pkt proto=%u %pI4:%u -> %pI4:%u flags=0x%x",
		       pkt->key.proto, &pkt->saddr.v4, bpf_ntohs(pkt->sport),
		       &pkt->daddr.v4, bpf_ntohs(pkt->dport), pkt->flags);
		return ct_track(&ct_table, &pkt->key, pkt, st, family);
	}
	if (verdict == CT_RELATED) {
		if (family == AF_INET6)
			return ct_related(&ct_table6, &pkt->key6, pkt, family);
		return ct_related(&ct_table, &pkt->key, pkt, family);
	}
	return verdict;
}

SEC("xdp.frags")
int xdp_conntrack(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hdr_cursor nh = {.pos = data};
	__u32 len = ct_frame_len(ctx);
	__u32 in = ctx->ingress_ifindex == ct_cfg.ifindex[1];
	enum ct_verdict verdict;
	struct ct_pkt *pkt;
	struct ct_stats *st;
	__u32 zero = 0;
	int proto;

	st = bpf_map_lookup_elem(&stats, &zero);
	if (unlikely(!st))
		return XDP_ABORTED;
	if (!ct_cfg.track)
		return ct_redirect(ctx, in, len, st);
	pkt = bpf_map_lookup_elem(&ct_pkt_slot, &zero);
	if (unlikely(!pkt))
		return XDP_ABORTED;
	__builtin_memset(pkt, 0, CT_PKT_CLEAR);

	/* The family is decided once, here, by the ethertype. */
	proto = parse_ethhdr(&nh, data_end);
	if (likely(proto == bpf_htons(ETH_P_IP))) {
		verdict = ct_packet(ctx, &nh, len, pkt, st, AF_INET);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		verdict = ct_packet(ctx, &nh, len, pkt, st, AF_INET6);
		ct_count_ipv6(st, pkt, verdict);
	} else {
		verdict = proto < 0 ? CT_DROP_MALFORMED : CT_UNTRACKED;
	}

	ct_count(st, ct_verdict_counter(verdict));
	if (ct_verdict_drops(verdict)) {
		ct_log("xct: verdict %s, drop",
		       ct_verdict_names[verdict <= CT_FRAGMENT ? verdict : 1]);
		return XDP_DROP;
	}
	return ct_redirect(ctx, in, len, st);
}

/*
 * Garbage collection, run from userspace through BPF_PROG_TEST_RUN about
 * once a second: one in-kernel pass over the table with
 * bpf_for_each_map_elem() instead of a lookup and a delete syscall per
 * entry.  Deleting the element being visited is allowed for hash maps.
 */
struct sweep_ctx {
	__u64 now;
	__u64 removed;
	struct ct_event ev; /* the DESTROY event being made */
};

static __always_inline long sweep_one(struct bpf_map *map, void *key,
				      struct ct_entry *e, struct sweep_ctx *c,
				      int family)
{
	if (READ_ONCE(e->expires) <= c->now &&
	    ct_destroy(&c->ev, key, e, c->now, family))
		c->removed++;
	return 0;
}

/* One callback per table: the event copies a key of the table's size. */
static long sweep_cb(struct bpf_map *map, void *key, struct ct_entry *e,
		     struct sweep_ctx *c)
{
	return sweep_one(map, key, e, c, AF_INET);
}

static long sweep_cb6(struct bpf_map *map, void *key, struct ct_entry *e,
		      struct sweep_ctx *c)
{
	return sweep_one(map, key, e, c, AF_INET6);
}

SEC("xdp")
int ct_sweep(struct xdp_md *ctx)
{
	struct sweep_ctx c = {.now = ct_now()};
	struct ct_stats *st;
	__u32 zero = 0;

	bpf_for_each_map_elem(&ct_table, sweep_cb, &c, 0);
	bpf_for_each_map_elem(&ct_table6, sweep_cb6, &c, 0);
	st = bpf_map_lookup_elem(&stats, &zero);
	if (st)
		st->n[CT_C_SWEPT] += c.removed;
	return XDP_PASS;
}

/**
 * ct_remove() - remove the entry whose key is the frame's data
 * @ctx: the frame: a struct ct_key or a struct ct_key6, whose length tells
 *	the table
 * @expired_only: a constant; true to keep an entry that is still live
 * @counter: what a removal counts as
 *
 * Userspace cannot change the per-CPU counters safely while the datapath
 * writes them, so whatever removes an entry from userspace hands its key
 * to a program that removes it and counts it.  Only the caller whose
 * delete succeeds counts, so a packet or the sweep racing for the same
 * entry never makes it count twice.
 *
 * Return: XDP_DROP when the entry was removed, XDP_PASS when it was absent
 * (or live, with @expired_only), XDP_ABORTED for a frame of another size.
 */
static __always_inline int ct_remove_key(void *table, const void *key,
					 bool expired_only,
					 enum ct_counter counter, int family)
{
	struct ct_event ev = {};
	struct ct_stats *st;
	struct ct_entry *e;
	__u64 now = ct_now();
	__u32 zero = 0;

	e = bpf_map_lookup_elem(table, key);
	if (!e)
		return XDP_PASS;
	/* Checked again under the program's own clock: an entry refreshed
	 * since userspace listed it survives.
	 */
	if (expired_only && READ_ONCE(e->expires) > now)
		return XDP_PASS;
	if (!ct_destroy(&ev, key, e, now, family))
		return XDP_PASS;
	st = bpf_map_lookup_elem(&stats, &zero);
	if (st)
		ct_count(st, counter);
	return XDP_DROP;
}

static __always_inline int ct_remove(struct xdp_md *ctx, bool expired_only,
				     enum ct_counter counter)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ct_key6 *key6 = data;
	struct ct_key *key = data;

	/* The verifier follows a packet pointer compared with data_end by
	 * order only, so the length picks the table and a bounds check each
	 * way makes the key readable.
	 */
	if (data_end - data == sizeof(*key6)) {
		if ((void *)(key6 + 1) > data_end)
			return XDP_ABORTED;
		return ct_remove_key(&ct_table6, key6, expired_only, counter,
				     AF_INET6);
	}
	if (data_end - data == sizeof(*key)) {
		if ((void *)(key + 1) > data_end)
			return XDP_ABORTED;
		return ct_remove_key(&ct_table, key, expired_only, counter,
				     AF_INET);
	}
	return XDP_ABORTED;
}

/*
 * The sweep for kernels without bpf_for_each_map_elem() (before 5.13):
 * userspace lists candidates with a batch lookup and hands each key to this
 * program, which removes it only if it has expired.
 */
SEC("xdp")
int ct_reap(struct xdp_md *ctx)
{
	return ct_remove(ctx, true, CT_C_SWEPT);
}

/*
 * `delete` and `flush`: the verbs hand each chosen key to this program,
 * pinned by the tracker, which removes the entry whatever its state.  The
 * connection's next packet finds no entry and is its first, as in the
 * kernel after `conntrack -D`.
 */
SEC("xdp")
int ct_delete(struct xdp_md *ctx)
{
	return ct_remove(ctx, false, CT_C_DELETED);
}

/*
 * One sample of both clocks for the loader's calibration, run through
 * BPF_PROG_TEST_RUN.  A tick may land between the two reads; the loader
 * takes a sample only when two in a row agree.
 */
SEC("xdp")
int ct_clock_probe(struct xdp_md *ctx)
{
	ct_clock.probe_jiffies = bpf_jiffies64();
	ct_clock.probe_ns = ct_ktime();
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
