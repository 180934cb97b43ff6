//! Packet-level tests: frames built byte by byte go through the real XDP
//! program with BPF_PROG_TEST_RUN, and after every packet the verdict, the
//! exact counters that moved and the table entry are checked against
//! nf_conntrack (net/netfilter/nf_conntrack_proto_tcp.c) and parse.h.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::*;
use libbpf_rs::{ErrorKind, MapCore, ProgramInput, ProgramMut};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use xdp_conntrack::bpf::types::{ct_clock, ct_counter, ct_key, ct_tcp_state};
use xdp_conntrack::counters::{self, Totals};
use xdp_conntrack::loader::Config;
use xdp_conntrack::packet::{
    self, icmp_echo, ip_frame, tcp, tcp_flags::*, tcp_segment, udp, with_ip_options, Endpoint,
    Ether, Segment, TcpOpt,
};
use xdp_conntrack::proto::{tcp_state_name, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use xdp_conntrack::settings::{parse_timeout, timeouts};
use xdp_conntrack::table::{self, monotonic_ns};

const fn state(s: ct_tcp_state) -> u8 {
    s.0 as u8
}
/// UDP and ICMP entries carry no TCP state.
const NO_STATE: u8 = state(ct_tcp_state::CT_TCP_NONE);
const SYN_SENT: u8 = state(ct_tcp_state::CT_TCP_SYN_SENT);
const SYN_RECV: u8 = state(ct_tcp_state::CT_TCP_SYN_RECV);
const ESTABLISHED: u8 = state(ct_tcp_state::CT_TCP_ESTABLISHED);
const FIN_WAIT: u8 = state(ct_tcp_state::CT_TCP_FIN_WAIT);
const CLOSE_WAIT: u8 = state(ct_tcp_state::CT_TCP_CLOSE_WAIT);
const LAST_ACK: u8 = state(ct_tcp_state::CT_TCP_LAST_ACK);
const TIME_WAIT: u8 = state(ct_tcp_state::CT_TCP_TIME_WAIT);
const CLOSE: u8 = state(ct_tcp_state::CT_TCP_CLOSE);
const SYN_SENT2: u8 = state(ct_tcp_state::CT_TCP_SYN_SENT2);

const UNREPLIED: bool = false;
const REPLIED: bool = true;
const NOT_ASSURED: bool = false;
const ASSURED: bool = true;

/// Offset of the IPv4 header in an untagged frame.
const IP: usize = 14;
/// Offset of the L4 header behind a 20-byte IPv4 header.
const L4: usize = IP + 20;

/// A router between the flows' ends: the source of most ICMP errors.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 1);
/// ICMP errors (type, code): what the kernel's icmp_is_err() accepts.
const HOST_UNREACH: (u8, u8) = (3, 1);
const PORT_UNREACH: (u8, u8) = (3, 3);
const FRAG_NEEDED: (u8, u8) = (3, 4);
const TIME_EXCEEDED: (u8, u8) = (11, 0);
const ERRORS: [(u8, u8); 10] = [
    (3, 0),
    HOST_UNREACH,
    PORT_UNREACH,
    FRAG_NEEDED,
    (3, 13),
    (4, 0),
    (5, 1),
    TIME_EXCEEDED,
    (11, 1),
    (12, 0),
];

// ---------------------------------------------------------------------------
// Flows and frames

/// A client and a server, and the frames they exchange.
#[derive(Debug, Clone, Copy)]
struct Flow {
    c: Endpoint,
    s: Endpoint,
}

impl Flow {
    /// The Ostinato article's client and server; `n` moves the client port so that
    /// several flows can share one table.
    fn new(n: u16) -> Self {
        Self::between(
            Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 23420 + n),
            Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080),
        )
    }

    fn between(c: Endpoint, s: Endpoint) -> Self {
        Self { c, s }
    }

    fn key(&self, proto: u8) -> ct_key {
        table::key_for(
            proto,
            (self.c.addr, self.c.port),
            (self.s.addr, self.s.port),
        )
        .expect("an IPv4 flow")
    }

    fn tcp_key(&self) -> ct_key {
        self.key(IPPROTO_TCP)
    }

    fn udp_key(&self) -> ct_key {
        self.key(IPPROTO_UDP)
    }

    /// A TCP segment from the client.
    fn c(&self, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
        self.c_with(flags, seq, ack, b"")
    }

    /// A TCP segment from the server.
    fn s(&self, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
        self.s_with(flags, seq, ack, b"")
    }

    fn c_with(&self, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        tcp(&Ether::default(), self.c, self.s, flags, seq, ack, data)
    }

    fn s_with(&self, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        tcp(&Ether::default(), self.s, self.c, flags, seq, ack, data)
    }

    /// A UDP datagram from the client.
    fn c_udp(&self, data: &[u8]) -> Vec<u8> {
        udp(&Ether::default(), self.c, self.s, data)
    }

    /// A UDP datagram from the server.
    fn s_udp(&self, data: &[u8]) -> Vec<u8> {
        udp(&Ether::default(), self.s, self.c, data)
    }

    /// The Ostinato handshake (SYN 100; SYN-ACK 200/101; ACK 101/201): afterwards
    /// the client sends from 101 and the server from 201.
    fn establish(&self, h: &Harness) {
        for frame in [
            self.c(SYN, 100, 0),
            self.s(SYN | ACK, 200, 101),
            self.c(ACK, 101, 201),
        ] {
            assert_eq!(h.run(&frame), XDP_REDIRECT, "handshake of {self:?}");
        }
        assert_eq!(
            view(h, &self.tcp_key()),
            v(ESTABLISHED, REPLIED, ASSURED, self.c)
        );
    }
}

/// Edits the IPv4 header of an untagged frame, then fixes its checksums
/// (the header's and the transport's), so that the edit is its only fault.
fn edit_ip(mut frame: Vec<u8>, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    edit(&mut frame[IP..]);
    packet::fix_checksums(&mut frame);
    frame
}

fn with_tot_len(frame: Vec<u8>, tot: u16) -> Vec<u8> {
    edit_ip(frame, |ip| ip[2..4].copy_from_slice(&tot.to_be_bytes()))
}

/// Inserts VLAN tags, outermost first, between the MACs and the ethertype.
fn vlan_tagged(frame: &[u8], tpids: &[u16]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for (vid, tpid) in (100u16..).zip(tpids) {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// An Ethernet frame with `ethertype` and `body`, padded to 60 bytes.
fn ether_frame(ethertype: u16, body: &[u8]) -> Vec<u8> {
    let e = Ether::default();
    let mut f = e.dst.to_vec();
    f.extend_from_slice(&e.src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f.resize(f.len().max(60), 0);
    f
}

fn arp_request(from: IpAddr, to: IpAddr) -> Vec<u8> {
    let (IpAddr::V4(from), IpAddr::V4(to)) = (from, to) else {
        panic!("ARP is for IPv4");
    };
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    a.extend_from_slice(&Ether::default().src);
    a.extend_from_slice(&from.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&to.octets());
    ether_frame(0x0806, &a)
}

/// An IPv6 frame carrying 4 bytes of GRE.
fn ipv6_gre() -> Vec<u8> {
    let seg = [0u8; 4];
    let mut ip6 = vec![0x60, 0, 0, 0];
    ip6.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    ip6.extend_from_slice(&[47, 64]);
    ip6.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ip6.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    ip6.extend_from_slice(&seg);
    ether_frame(0x86dd, &ip6)
}

/// An ICMP message of `icmp_type` and `code` with `id` and `seq` where an
/// echo has them, from `src` to `dst`.
fn icmp_msg(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut l4 = vec![icmp_type, code, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(b"xdp-conntrack-ping");
    ip_frame(&Ether::default(), src, dst, IPPROTO_ICMP, l4)
}

/// The source and destination of an untagged IPv4 frame.
fn ip_addrs(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let at = |i: usize| Ipv4Addr::new(frame[i], frame[i + 1], frame[i + 2], frame[i + 3]);
    (at(IP + 12), at(IP + 16))
}

/// An ICMP error of `kind` (type, code) from `from` to `to`, quoting the
/// first `len` bytes of the IP datagram in `frame`.
fn icmp_error_to(
    from: Ipv4Addr,
    to: Ipv4Addr,
    kind: (u8, u8),
    frame: &[u8],
    len: usize,
) -> Vec<u8> {
    let mut l4 = vec![kind.0, kind.1, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(&frame[IP..IP + len]);
    ip_frame(&Ether::default(), from, to, IPPROTO_ICMP, l4)
}

/// The error ROUTER sends back to the source of `frame`, quoting its IP
/// header and the 8 bytes behind it, as routers do.
fn icmp_error(kind: (u8, u8), frame: &[u8]) -> Vec<u8> {
    let hlen = usize::from(frame[IP] & 0x0f) * 4;
    icmp_error_to(ROUTER, ip_addrs(frame).0, kind, frame, hlen + 8)
}

// ---------------------------------------------------------------------------
// Checking entries and counters

/// What the tests compare of an entry.
#[derive(Clone, Copy, PartialEq, Eq)]
struct View {
    state: u8,
    seen_reply: bool,
    assured: bool,
    /// Source of the original direction: who opened the connection.
    orig: Endpoint,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}({}) {} {} opened by {}:{}",
            tcp_state_name(self.state),
            self.state,
            if self.seen_reply {
                "seen_reply"
            } else {
                "UNREPLIED"
            },
            if self.assured {
                "ASSURED"
            } else {
                "not-assured"
            },
            self.orig.addr,
            self.orig.port
        )
    }
}

fn v(state: u8, seen_reply: bool, assured: bool, orig: Endpoint) -> Option<View> {
    Some(View {
        state,
        seen_reply,
        assured,
        orig,
    })
}

/// The live entry under `key`, as a View.
fn view(h: &Harness, key: &ct_key) -> Option<View> {
    h.entry(key).map(|(c, _)| View {
        state: c.state,
        seen_reply: c.seen_reply,
        assured: c.assured,
        orig: Endpoint::new(c.src, c.sport),
    })
}

/// Asserts that exactly the counters in `want` moved, by those amounts.
#[track_caller]
fn assert_moved(before: &Totals, after: &Totals, want: &[(&'static str, u64)], what: &str) {
    let mut moved: Vec<(String, u64)> = after
        .named()
        .zip(before.named())
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, b)| (a.0, a.1.wrapping_sub(b.1)))
        .collect();
    let mut want: Vec<(String, u64)> = want.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    moved.sort_unstable();
    want.sort_unstable();
    assert_eq!(moved, want, "counters that moved: {what}");
}

/// The counters a frame from side 1 should move: `counted` (+1 each), and
/// the rx counters unless it is dropped.
fn moves(frame: &[u8], verdict: u32, counted: &[&'static str]) -> Vec<(&'static str, u64)> {
    let mut want: Vec<_> = counted.iter().map(|c| (*c, 1)).collect();
    if verdict != XDP_DROP {
        want.push(("packets_from_side1", 1));
        want.push(("bytes_from_side1", frame.len() as u64));
    }
    want
}

/// Runs one frame and checks the verdict, exactly which counters moved (a
/// forwarded frame adds its side-1 rx counters to `counted`, each +1), and
/// the entry under `key` afterwards (None: no live entry).
#[track_caller]
fn step(
    h: &Harness,
    frame: &[u8],
    verdict: u32,
    counted: &[&'static str],
    key: &ct_key,
    want: Option<View>,
) {
    let before = h.stats();
    assert_eq!(h.run(frame), verdict, "verdict");
    let moved = moves(frame, verdict, counted);
    assert_moved(&before, &h.stats(), &moved, "this packet");
    assert_eq!(view(h, key), want, "entry after the packet");
}

/// Runs one frame that must not touch the table, checking verdict and
/// counters.
#[track_caller]
fn run_counted(h: &Harness, frame: &[u8], verdict: u32, counted: &[&'static str], what: &str) {
    let before = h.stats();
    let len = h.raw_len();
    assert_eq!(h.run(frame), verdict, "verdict: {what}");
    assert_moved(&before, &h.stats(), &moves(frame, verdict, counted), what);
    assert_eq!(h.raw_len(), len, "table size after: {what}");
}

/// The packets of one connection, each checked with `step` against the
/// entry under `key`.
struct Track<'h> {
    h: &'h Harness,
    key: ct_key,
}

impl<'h> Track<'h> {
    fn new(h: &'h Harness, key: ct_key) -> Self {
        Self { h, key }
    }

    /// A packet that must be forwarded, moving its rx counters and
    /// `counted` (+1 each), and leaving the entry `want`.
    #[track_caller]
    fn fwd(&self, frame: &[u8], counted: &[&'static str], want: Option<View>) {
        step(self.h, frame, XDP_REDIRECT, counted, &self.key, want);
    }

    /// A packet that must be dropped, moving only `counted` (+1 each), and
    /// leaving the entry `want`.
    #[track_caller]
    fn dropped(&self, frame: &[u8], counted: &[&'static str], want: Option<View>) {
        step(self.h, frame, XDP_DROP, counted, &self.key, want);
    }

    #[track_caller]
    fn timeout(&self, name: &str) {
        assert_timeout(self.h, &self.key, default_secs(name));
    }
}

/// The default timeout called `name` (settings::timeouts()).
fn default_secs(name: &str) -> u64 {
    let (_, _, secs) = timeouts().find(|t| t.0 == name).expect("a timeout name");
    u64::from(secs)
}

/// Asserts that the entry under `key` has about `secs` seconds left.
#[track_caller]
fn assert_timeout(h: &Harness, key: &ct_key, secs: u64) {
    let (c, _) = h.entry(key).expect("a live entry");
    assert!(
        c.timeout <= secs && c.timeout + 2 >= secs,
        "{} s left, want about {secs} s",
        c.timeout
    );
}

/// The default configuration with some timeouts changed ("udp=1", ...).
fn config_with(timeouts: &[&str]) -> Config {
    let mut cfg = test_config();
    for t in timeouts {
        let (slot, secs) = parse_timeout(t).expect("a timeout");
        cfg.timeouts[slot] = secs;
    }
    cfg
}

/// Moves the program's clock `secs` seconds on: the entry under `key`,
/// live before, must have expired by then.
#[track_caller]
fn expire(h: &Harness, key: &ct_key, secs: u64) {
    assert!(h.entry(key).is_some(), "no live entry to expire");
    h.advance(Duration::from_secs(secs));
    assert!(
        h.entry(key).is_none(),
        "the entry did not expire within {secs} s"
    );
}

// ---------------------------------------------------------------------------
// TCP: the handshake

#[test]
fn handshake_every_transition_with_the_ostinato_numbers() {
    let h = Harness::default_config();
    let a = Ipv4Addr::new(10, 1, 1, 100);
    let b = Ipv4Addr::new(10, 2, 2, 100);
    // The client in key slot 0 and in slot 1, by address and, on one
    // address, by port.
    let flows = [
        Flow::new(0),
        Flow::between(Endpoint::new(b, 23420), Endpoint::new(a, 8080)),
        Flow::between(Endpoint::new(a, 1000), Endpoint::new(a, 8080)),
        Flow::between(Endpoint::new(a, 40000), Endpoint::new(a, 8080)),
    ];
    for f in flows {
        let t = Track::new(&h, f.tcp_key());
        let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
        let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
        let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
        t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
        t.timeout("syn_sent");
        // A retransmitted SYN: still unreplied.
        t.fwd(&f.c(SYN, 100, 0), &[], ss);
        t.fwd(&f.s(SYN | ACK, 200, 101), &[], sr);
        t.timeout("syn_recv");
        t.fwd(&f.c(ACK, 101, 201), &[], es);
        t.timeout("established");
        // Data both ways keeps it there.
        t.fwd(&f.c_with(PSH | ACK, 101, 201, b"hello"), &[], es);
        t.fwd(&f.s(ACK, 201, 106), &[], es);
    }
    assert_eq!(h.conns().len(), flows.len());
}

#[test]
fn wrong_ack_numbers_in_the_handshake_are_dropped() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
    // The client's ACK before any SYN-ACK: sSS -> sIV.
    t.dropped(&f.c(ACK, 101, 201), &["invalid"], ss);
    // III: ack 102 acknowledges a byte the client never sent.
    t.dropped(&f.s(SYN | ACK, 200, 102), &["invalid"], ss);
    t.fwd(&f.s(SYN | ACK, 200, 101), &[], sr);
    // III for the final ACK: 202 is past the server's SYN.
    t.dropped(&f.c(ACK, 101, 202), &["invalid"], sr);
    t.fwd(&f.c(ACK, 101, 201), &[], es);
}

#[test]
fn ack_lower_bound_iv_is_66000_below_the_peers_end() {
    // IV: ack > peer's end - 66000 - 1, so the lowest ack accepted is
    // end - 66000 (the kernel's MAXACKWINDOW for windows up to 66000; these
    // frames advertise 64240).  One lower must not move the state; the
    // kernel forwards such a packet as ignored (see the next test), so
    // only the state is checked here.
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let state_after = |frame: &[u8]| {
        h.run(frame);
        h.entry(&t.key).expect("the entry").0.state
    };
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
    let (lowest, beyond) = (101u32.wrapping_sub(66_000), 101u32.wrapping_sub(66_001));
    assert_eq!(state_after(&f.s(SYN | ACK, 200, beyond)), SYN_SENT);
    t.fwd(&f.s(SYN | ACK, 200, lowest), &[], sr);
    let (lowest, beyond) = (201u32.wrapping_sub(66_000), 201u32.wrapping_sub(66_001));
    assert_eq!(state_after(&f.c(ACK, 101, beyond)), SYN_RECV);
    t.fwd(&f.c(ACK, 101, lowest), &[], es);
}

#[test]
fn acks_below_the_lower_bound_are_ignored_like_the_kernel() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
    // Forwarded without a state change; being an accepted reply, it sets
    // SEEN_REPLY (nf_conntrack_in()).
    let beyond = 101u32.wrapping_sub(66_001);
    let ss_replied = v(SYN_SENT, REPLIED, NOT_ASSURED, f.c);
    t.fwd(&f.s(SYN | ACK, 200, beyond), &[], ss_replied);
    t.fwd(&f.s(SYN | ACK, 200, 101), &[], sr);
    t.fwd(&f.c(ACK, 101, 201u32.wrapping_sub(66_001)), &[], sr);
    t.fwd(&f.c(ACK, 101, 201), &[], es);
}

#[test]
fn sequence_numbers_wrap_modulo_2_32() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    // Both initial sequence numbers are 0xffffffff: both ends wrap to 0.
    t.fwd(&f.c(SYN, u32::MAX, 0), &["new"], ss);
    t.dropped(&f.s(SYN | ACK, u32::MAX, 1), &["invalid"], ss);
    t.fwd(&f.s(SYN | ACK, u32::MAX, 0), &[], sr);
    t.dropped(&f.c(ACK, 0, 1), &["invalid"], sr);
    t.fwd(&f.c(ACK, 0, 0), &[], es);
}

#[test]
fn syn_payload_counts_in_the_end_but_ethernet_padding_does_not() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    // 54 + 5 bytes, padded to 60: one byte of padding behind tot_len.
    let syn = f.c_with(SYN, 100, 0, b"hello");
    assert_eq!(syn.len(), 60);
    t.fwd(&syn, &["new"], ss);
    // The end is 100 + 5 + 1 = 106; 107 would count the padding byte.
    t.dropped(&f.s(SYN | ACK, 200, 107), &["invalid"], ss);
    t.fwd(&f.s(SYN | ACK, 200, 106), &[], sr);
}

#[test]
fn syn_retransmit_does_not_renew_the_timeout() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
    let (_, first) = h.entry(&t.key).expect("the SYN's entry");
    // Move the clock on so that a renewal would show in `expires`.
    h.advance(Duration::from_secs(10));
    assert!(h.now() >= first.created + 10_000_000_000, "the clock stood");
    t.fwd(&f.c(SYN, 100, 0), &[], ss);
    let (_, again) = h.entry(&t.key).expect("the SYN's entry");
    assert_eq!(again.expires, first.expires, "the deadline moved");
}

#[test]
fn reply_ack_to_a_syn_is_ignored() {
    // sSS -> sIG for an ACK in the reply direction (a half-open connection
    // or a challenge ACK): forwarded, no state change.
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let ss_replied = v(SYN_SENT, REPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
    t.fwd(&f.s(ACK, 5000, 7000), &[], ss_replied);
    t.fwd(&f.s(SYN | ACK, 200, 101), &[], sr);
}

// ---------------------------------------------------------------------------
// TCP: RST

#[test]
fn rst_in_established_moves_to_close() {
    // From the server at what the client acknowledged (201), and from the
    // client at what the server acknowledged (101): valid RSTs for the
    // kernel too, which checks RST sequence numbers against td_maxack.
    let h = Harness::default_config();
    let f = Flow::new(0);
    let g = Flow::new(1);
    for (flow, rst) in [(f, f.s(RST | ACK, 201, 101)), (g, g.c(RST, 101, 0))] {
        let t = Track::new(&h, flow.tcp_key());
        flow.establish(&h);
        t.fwd(&rst, &[], v(CLOSE, REPLIED, ASSURED, flow.c));
        t.timeout("close");
    }
    assert_eq!(h.raw_len(), 2);
}

#[test]
fn rst_answering_a_syn_before_any_reply_deletes_the_entry() {
    let h = Harness::default_config();
    let flows: Vec<Flow> = (0..5).map(Flow::new).collect();
    // RST|ACK acking the SYN; a bare RST; a broken stack's RST|ACK with
    // ack 0; the client aborting its own SYN.
    for (f, rst) in [
        (flows[0], flows[0].s(RST | ACK, 0, 101)),
        (flows[1], flows[1].s(RST, 0, 0)),
        (flows[2], flows[2].s(RST | ACK, 0, 0)),
        (flows[3], flows[3].c(RST, 101, 0)),
    ] {
        let t = Track::new(&h, f.tcp_key());
        let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
        t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
        t.fwd(&rst, &["closed"], None);
    }
    assert_eq!(h.raw_len(), 0);

    // A RST|ACK acking what the client never sent is invalid: the entry
    // stays, and the right one still closes it.
    let f = flows[4];
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
    t.dropped(&f.s(RST | ACK, 0, 5000), &["invalid"], ss);
    t.fwd(&f.s(RST | ACK, 0, 101), &["closed"], None);
    assert_eq!(h.raw_len(), 0);
}

// ---------------------------------------------------------------------------
// TCP: FIN

#[test]
fn fin_teardown_from_the_client() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    f.establish(&h);
    for (frame, st, timeout) in [
        (f.c(FIN | ACK, 101, 201), FIN_WAIT, "fin_wait"),
        (f.s(ACK, 201, 102), CLOSE_WAIT, "close_wait"),
        (f.s(FIN | ACK, 201, 102), LAST_ACK, "last_ack"),
        (f.c(ACK, 102, 202), TIME_WAIT, "time_wait"),
        // A retransmitted last ACK changes nothing.
        (f.c(ACK, 102, 202), TIME_WAIT, "time_wait"),
    ] {
        t.fwd(&frame, &[], v(st, REPLIED, ASSURED, f.c));
        t.timeout(timeout);
    }
}

#[test]
fn fin_teardown_from_the_server() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    f.establish(&h);
    for (frame, st, timeout) in [
        (f.s(FIN | ACK, 201, 101), FIN_WAIT, "fin_wait"),
        (f.c(ACK, 101, 202), CLOSE_WAIT, "close_wait"),
        (f.c(FIN | ACK, 101, 202), LAST_ACK, "last_ack"),
        (f.s(ACK, 202, 102), TIME_WAIT, "time_wait"),
    ] {
        t.fwd(&frame, &[], v(st, REPLIED, ASSURED, f.c));
        t.timeout(timeout);
    }
}

#[test]
fn simultaneous_close() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    f.establish(&h);
    for (frame, st) in [
        (f.c(FIN | ACK, 101, 201), FIN_WAIT),
        (f.s(FIN | ACK, 201, 101), LAST_ACK),
        (f.c(ACK, 102, 202), TIME_WAIT),
        (f.s(ACK, 202, 102), TIME_WAIT),
    ] {
        t.fwd(&frame, &[], v(st, REPLIED, ASSURED, f.c));
    }
    t.timeout("time_wait");
}

#[test]
fn challenge_ack_to_a_syn_in_last_ack_is_not_the_last_ack() {
    // RFC 5961: a SYN in LAST_ACK draws a challenge ACK from the peer, which
    // must not move the connection to TIME_WAIT.
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let fw = v(FIN_WAIT, REPLIED, ASSURED, f.c);
    let cw = v(CLOSE_WAIT, REPLIED, ASSURED, f.c);
    let la = v(LAST_ACK, REPLIED, ASSURED, f.c);
    let tw = v(TIME_WAIT, REPLIED, ASSURED, f.c);
    f.establish(&h);
    t.fwd(&f.c(FIN | ACK, 101, 201), &[], fw);
    t.fwd(&f.s(ACK, 201, 102), &[], cw);
    t.fwd(&f.s(FIN | ACK, 201, 102), &[], la);
    // The SYN is ignored (sLA -> sIG), and so is the challenge ACK.
    t.fwd(&f.c(SYN, 9000, 0), &[], la);
    t.fwd(&f.s(ACK, 202, 102), &[], la);
    // The client's real last ACK.
    t.fwd(&f.c(ACK, 102, 202), &[], tw);
}

// ---------------------------------------------------------------------------
// TCP: simultaneous open, reopen, ignore and resync

#[test]
fn simultaneous_open_client_synack_first() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let s2 = v(SYN_SENT2, REPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
    t.fwd(&f.s(SYN, 200, 0), &[], s2);
    t.fwd(&f.c(SYN | ACK, 100, 201), &[], sr);
    // sSR -> sIG: the server's SYN-ACK changes nothing.
    t.fwd(&f.s(SYN | ACK, 200, 101), &[], sr);
    t.fwd(&f.c(ACK, 101, 201), &[], es);
}

#[test]
fn simultaneous_open_server_synack_first_then_server_ack() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let s2 = v(SYN_SENT2, REPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
    t.fwd(&f.s(SYN, 200, 0), &[], s2);
    t.fwd(&f.s(SYN | ACK, 200, 101), &[], sr);
    t.fwd(&f.c(SYN | ACK, 100, 201), &[], sr);
    // A reply ACK establishes from SYN_RECV only after a simultaneous open.
    t.fwd(&f.s(ACK, 201, 101), &[], es);
    t.fwd(&f.c(ACK, 101, 201), &[], es);
}

#[test]
fn reply_ack_in_syn_recv_does_not_establish_a_normal_open() {
    // Without a simultaneous open, a reply ACK in SYN_RECV stays there
    // (sSR -> sSR: it may answer a late resent SYN).
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
    t.fwd(&f.s(SYN | ACK, 200, 101), &[], sr);
    t.fwd(&f.s(ACK, 201, 101), &[], sr);
    t.fwd(&f.c(ACK, 101, 201), &[], es);
}

/// Takes `f` through a client-side close to TIME_WAIT.
fn to_time_wait(h: &Harness, f: &Flow) {
    f.establish(h);
    for frame in [
        f.c(FIN | ACK, 101, 201),
        f.s(ACK, 201, 102),
        f.s(FIN | ACK, 201, 102),
        f.c(ACK, 102, 202),
    ] {
        assert_eq!(h.run(&frame), XDP_REDIRECT);
    }
    assert_eq!(view(h, &f.tcp_key()), v(TIME_WAIT, REPLIED, ASSURED, f.c));
}

#[test]
fn syn_in_time_wait_from_the_client_reopens() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    to_time_wait(&h, &f);
    t.fwd(&f.c(SYN, 5000, 0), &["closed", "new"], ss);
    // A fresh handshake on the new entry, checked with the new numbers.
    t.dropped(&f.s(SYN | ACK, 7000, 5002), &["invalid"], ss);
    t.fwd(&f.s(SYN | ACK, 7000, 5001), &[], sr);
    t.fwd(&f.c(ACK, 5001, 7001), &[], es);
}

#[test]
fn syn_in_time_wait_from_the_server_reopens_with_the_server_as_original() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.s);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.s);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.s);
    to_time_wait(&h, &f);
    t.fwd(&f.s(SYN, 9000, 0), &["closed", "new"], ss);
    t.fwd(&f.c(SYN | ACK, 3000, 9001), &[], sr);
    t.fwd(&f.s(ACK, 9001, 3001), &[], es);
}

#[test]
fn syn_after_own_rst_reopens_but_after_the_peers_rst_is_ignored() {
    let h = Harness::default_config();
    // The client reset the connection: its new SYN reopens it.
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    f.establish(&h);
    t.fwd(&f.c(RST, 101, 0), &[], v(CLOSE, REPLIED, ASSURED, f.c));
    t.fwd(&f.c(SYN, 5000, 0), &["closed", "new"], ss);

    // The server reset it: the client's SYN is only let through (no close
    // was initiated and the RST came from the other side), and the server's
    // SYN-ACK that answers it resynchronises the entry.
    let g = Flow::new(1);
    let t = Track::new(&h, g.tcp_key());
    let cl = v(CLOSE, REPLIED, ASSURED, g.c);
    let sr = v(SYN_RECV, REPLIED, ASSURED, g.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, g.c);
    g.establish(&h);
    t.fwd(&g.s(RST, 201, 0), &[], cl);
    t.fwd(&g.c(SYN, 5000, 0), &[], cl);
    t.fwd(&g.s(SYN | ACK, 7000, 5001), &[], sr);
    t.fwd(&g.c(ACK, 5001, 7001), &[], es);
}

#[test]
fn syn_in_established_is_ignored_and_its_synack_resyncs() {
    // The client restarted and opens again with a new ISN: the SYN is let
    // through (sES -> sIG), and the server's SYN-ACK that acknowledges it
    // puts the entry back into SYN_RECV with the new numbers.
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, ASSURED, f.c);
    f.establish(&h);
    t.fwd(&f.c(SYN, 7000, 0), &[], es);
    // A SYN-ACK that does not answer the ignored SYN is ignored too.
    t.fwd(&f.s(SYN | ACK, 9000, 7002), &[], es);
    // An ACK in between (the server's challenge ACK) is the last packet
    // now: a SYN-ACK answering the SYN no longer resyncs.
    t.fwd(&f.c(SYN, 7000, 0), &[], es);
    t.fwd(&f.s(ACK, 201, 101), &[], es);
    t.fwd(&f.s(SYN | ACK, 9000, 7001), &[], es);
    // SYN, then its SYN-ACK: resync.
    t.fwd(&f.c(SYN, 7000, 0), &[], es);
    t.fwd(&f.s(SYN | ACK, 9000, 7001), &[], sr);
    t.timeout("syn_recv");
    // The new handshake is checked with the new numbers.
    t.dropped(&f.c(ACK, 7001, 9002), &["invalid"], sr);
    t.fwd(&f.c(ACK, 7001, 9001), &[], es);
}

// ---------------------------------------------------------------------------
// TCP: invalid packets and mid-stream pickup

#[test]
fn invalid_flag_combinations_are_dropped_even_without_an_entry() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    for flags in [
        SYN | FIN,
        FIN,
        0,
        PSH,
        URG,
        SYN | RST,
        FIN | RST,
        SYN | FIN | ACK,
        SYN | RST | ACK,
        SYN | FIN | ECE | CWR,
    ] {
        let what = format!("flags {flags:#04x}");
        run_counted(&h, &f.c(flags, 100, 0), XDP_DROP, &["invalid"], &what);
    }
    assert_eq!(h.raw_len(), 0);

    // The same on an established connection, which stays as it was.
    let t = Track::new(&h, f.tcp_key());
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    f.establish(&h);
    for flags in [SYN | FIN, FIN, 0] {
        t.dropped(&f.c(flags, 101, 201), &["invalid"], es);
    }

    // PSH, ECE and CWR are masked off: an ECN-setup SYN opens normally.
    let g = Flow::new(1);
    let t = Track::new(&h, g.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, g.c);
    t.fwd(&g.c(SYN | ECE | CWR, 100, 0), &["new"], ss);
}

#[test]
fn packets_of_unknown_connections_other_than_syn_and_ack_are_dropped() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    for (what, frame) in [
        ("SYN-ACK", f.s(SYN | ACK, 200, 101)),
        ("FIN|ACK", f.c(FIN | ACK, 101, 201)),
        ("FIN|ACK|URG", f.c(FIN | ACK | URG, 101, 201)),
        ("RST", f.c(RST, 101, 0)),
        ("RST|ACK", f.s(RST | ACK, 0, 101)),
    ] {
        run_counted(&h, &frame, XDP_DROP, &["invalid"], what);
    }
    assert_eq!(h.raw_len(), 0);
}

#[test]
fn midstream_ack_is_picked_up_and_assured_after_an_answer() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let unreplied = v(ESTABLISHED, UNREPLIED, NOT_ASSURED, f.c);
    let replied = v(ESTABLISHED, REPLIED, NOT_ASSURED, f.c);
    let assured = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    let data = f.c_with(PSH | ACK, 5000, 9000, b"data");
    t.fwd(&data, &["new"], unreplied);
    // Not the established timeout while nobody answered.
    t.timeout("unacknowledged");
    t.fwd(&f.c(ACK, 5004, 9000), &[], unreplied);
    t.timeout("unacknowledged");
    t.fwd(&f.s(ACK, 9000, 5004), &[], replied);
    t.timeout("unacknowledged");
    t.fwd(&f.c(ACK, 5004, 9000), &[], assured);
    t.timeout("established");
}

#[test]
fn strict_mode_drops_midstream_packets_but_not_handshakes() {
    let h = Harness::new(Config {
        strict: true,
        ..test_config()
    });
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.dropped(&f.c(ACK, 5000, 9000), &["strict_drops"], None);
    assert_eq!(h.raw_len(), 0);
    t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
    t.fwd(&f.s(SYN | ACK, 200, 101), &[], sr);
    t.fwd(&f.c(ACK, 101, 201), &[], es);
}

// ---------------------------------------------------------------------------
// TCP: window tracking (tcp_in_window)

impl Flow {
    /// A segment from the client with a window and options.
    fn c_seg(&self, seg: Segment) -> Vec<u8> {
        tcp_segment(&Ether::default(), self.c, self.s, &seg)
    }

    /// A segment from the server with a window and options.
    fn s_seg(&self, seg: Segment) -> Vec<u8> {
        tcp_segment(&Ether::default(), self.s, self.c, &seg)
    }
}

/// Both sides' window state, as text: equal text, equal windows.  (An
/// INVALID FIN or RST still notes itself as the last packet, as the
/// kernel's nf_tcp_handle_invalid() does.)
fn tcp_part(h: &Harness, key: &ct_key) -> String {
    let (_, e) = h.entry(key).expect("a live entry");
    format!("{:?}", e.tcp.seen)
}

/// A packet that must change nothing but the counters: dropped as INVALID
/// (counted), or forwarded as ignored (counted as forwarded only).
#[track_caller]
fn changes_nothing(t: &Track<'_>, frame: &[u8], verdict: u32, want: Option<View>) {
    let before = tcp_part(t.h, &t.key);
    let counted: &[&str] = if verdict == XDP_DROP {
        &["invalid"]
    } else {
        &[]
    };
    step(t.h, frame, verdict, counted, &t.key, want);
    assert_eq!(tcp_part(t.h, &t.key), before, "the window state moved");
}

#[test]
fn data_far_beyond_the_receivers_window_is_invalid() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    f.establish(&h);
    let t = Track::new(&h, f.tcp_key());
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    // The server's window is 64240 from 101: data at 101 + 200000 is
    // over I (seq <= sender's maximal end), and by more than a window, so
    // not an overshoot to ignore.
    changes_nothing(&t, &f.c_with(PSH | ACK, 200_101, 201, b"far"), XDP_DROP, es);
    // The same from the server.
    changes_nothing(&t, &f.s_with(PSH | ACK, 200_201, 101, b"far"), XDP_DROP, es);
    t.fwd(&f.c_with(PSH | ACK, 101, 201, b"near"), &[], es);
}

#[test]
fn data_overshooting_the_window_by_less_than_a_window_is_ignored() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.fwd(
        &f.c(SYN, 100, 0),
        &["new"],
        v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c),
    );
    let synack = Segment {
        win: 1000,
        ..Segment::new(SYN | ACK, 200, 101)
    };
    t.fwd(
        &f.s_seg(synack),
        &[],
        v(SYN_RECV, REPLIED, NOT_ASSURED, f.c),
    );
    t.fwd(&f.c(ACK, 101, 201), &[], es);
    // The server allows 101..1101.  Data at 1101 starts past the edge:
    // not INVALID, but ignored, and its end is noted so that the ack of
    // it is not over III.
    t.fwd(&f.c_with(PSH | ACK, 101, 201, &[0; 1000]), &[], es);
    let before = tcp_part(&h, &t.key);
    t.fwd(&f.c_with(PSH | ACK, 1101, 201, &[0; 500]), &[], es);
    assert_ne!(tcp_part(&h, &t.key), before, "the overshoot's end is noted");
    t.fwd(&f.s(ACK, 201, 1601), &[], es);
}

#[test]
fn retransmitted_data_below_the_window_is_ignored_not_invalid() {
    // The kernel's conntrack_ack_loss_stall: a segment acked and more
    // than a window behind is let through.
    let h = Harness::default_config();
    let f = Flow::new(0);
    f.establish(&h);
    let t = Track::new(&h, f.tcp_key());
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    let mut seq = 101u32;
    for _ in 0..70 {
        t.fwd(&f.c_with(PSH | ACK, seq, 201, &[0; 1000]), &[], es);
        seq += 1000;
        t.fwd(&f.s(ACK, 201, seq), &[], es);
    }
    changes_nothing(
        &t,
        &f.c_with(PSH | ACK, 101, 201, &[0; 1000]),
        XDP_REDIRECT,
        es,
    );
}

#[test]
fn acks_of_unsent_data_are_invalid_and_overly_late_ones_ignored() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    f.establish(&h);
    let t = Track::new(&h, f.tcp_key());
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.fwd(&f.c_with(PSH | ACK, 101, 201, &[0; 500]), &[], es);
    // III: the client has sent up to 601.
    changes_nothing(&t, &f.s(ACK, 201, 602), XDP_DROP, es);
    // IV: more than MAXACKWINCONST (66000) behind is ignored.
    changes_nothing(
        &t,
        &f.s(ACK, 201, 601u32.wrapping_sub(70_000)),
        XDP_REDIRECT,
        es,
    );
    t.fwd(&f.s(ACK, 201, 601), &[], es);
}

#[test]
fn blind_rsts_are_invalid_and_the_connection_stays() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    f.establish(&h);
    let t = Track::new(&h, f.tcp_key());
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.fwd(&f.c_with(PSH | ACK, 101, 201, &[0; 500]), &[], es);
    t.fwd(&f.s(ACK, 201, 601), &[], es);
    // Far from anything: INVALID.
    changes_nothing(&t, &f.c(RST, 5_000_000, 0), XDP_DROP, es);
    // Below what the server acked (601): INVALID.
    changes_nothing(&t, &f.c(RST, 300, 0), XDP_DROP, es);
    // Above it but inside the window: forwarded, the state kept, so that
    // a challenge ACK can set the sender right (RFC 5961).
    t.fwd(&f.c(RST, 700, 0), &[], es);
    // Exactly at it: closes.
    t.fwd(&f.c(RST, 601, 0), &[], v(CLOSE, REPLIED, ASSURED, f.c));
    t.timeout("close");
}

#[test]
fn window_scaling_counts_only_when_both_syns_carry_it() {
    for (c_opt, s_opt) in [(true, true), (true, false), (false, true), (false, false)] {
        let h = Harness::default_config();
        let f = Flow::new(0);
        let t = Track::new(&h, f.tcp_key());
        let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
        let ws = |on: bool| {
            if on {
                vec![TcpOpt::Nop, TcpOpt::WindowScale(7)]
            } else {
                vec![]
            }
        };
        let seg = |flags, seq, ack, opts| Segment {
            win: 512,
            opts,
            ..Segment::new(flags, seq, ack)
        };
        t.fwd(
            &f.c_seg(seg(SYN, 100, 0, ws(c_opt))),
            &["new"],
            v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c),
        );
        t.fwd(
            &f.s_seg(seg(SYN | ACK, 200, 101, ws(s_opt))),
            &[],
            v(SYN_RECV, REPLIED, NOT_ASSURED, f.c),
        );
        t.fwd(&f.c_seg(seg(ACK, 101, 201, vec![])), &[], es);
        t.fwd(&f.s_seg(seg(ACK, 201, 101, vec![])), &[], es);
        // 512 << 7 is 64 KiB: 30000 bytes on is inside the scaled window
        // only.
        let far = f.c_seg(Segment {
            payload: vec![0; 100],
            ..seg(PSH | ACK, 30_101, 201, vec![])
        });
        if c_opt && s_opt {
            t.fwd(&far, &[], es);
        } else {
            changes_nothing(&t, &far, XDP_DROP, es);
        }
    }
}

#[test]
fn sack_blocks_bound_the_ack_only_when_both_permit_them() {
    for perm in [true, false] {
        let h = Harness::default_config();
        let f = Flow::new(0);
        let t = Track::new(&h, f.tcp_key());
        let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
        let p = if perm { vec![TcpOpt::SackPerm] } else { vec![] };
        let with = |flags, seq, ack, opts| Segment {
            opts,
            ..Segment::new(flags, seq, ack)
        };
        t.fwd(
            &f.c_seg(with(SYN, 100, 0, p.clone())),
            &["new"],
            v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c),
        );
        t.fwd(
            &f.s_seg(with(SYN | ACK, 200, 101, p)),
            &[],
            v(SYN_RECV, REPLIED, NOT_ASSURED, f.c),
        );
        t.fwd(&f.c(ACK, 101, 201), &[], es);
        t.fwd(&f.s_with(PSH | ACK, 201, 101, &[0; 1000]), &[], es);
        t.fwd(&f.s_with(PSH | ACK, 2201, 101, &[0; 1000]), &[], es);
        // The client got the third segment, not the second: fine.
        let sack = |l, r| vec![TcpOpt::Nop, TcpOpt::Nop, TcpOpt::Sack(vec![(l, r)])];
        t.fwd(&f.c_seg(with(ACK, 101, 1201, sack(2201, 3201))), &[], es);
        // A block past anything the server sent is over III, when SACK
        // was permitted; otherwise the block is not read at all.
        let beyond = f.c_seg(with(ACK, 101, 1201, sack(5201, 9201)));
        if perm {
            changes_nothing(&t, &beyond, XDP_DROP, es);
        } else {
            t.fwd(&beyond, &[], es);
        }
    }
}

#[test]
fn retransmitted_acks_unacked_data_and_zero_windows_arm_the_short_timeouts() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    f.establish(&h);
    let t = Track::new(&h, f.tcp_key());
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.timeout("established");
    // Data in flight: the unacknowledged timeout.
    t.fwd(&f.c_with(PSH | ACK, 101, 201, &[0; 100]), &[], es);
    t.timeout("unacknowledged");
    // Acked: the state's own again.
    t.fwd(&f.s(ACK, 201, 201), &[], es);
    t.timeout("established");
    // The same ACK three more times: retransmissions, the max_retrans
    // timeout.
    for _ in 0..2 {
        t.fwd(&f.s(ACK, 201, 201), &[], es);
        t.timeout("established");
    }
    t.fwd(&f.s(ACK, 201, 201), &[], es);
    t.timeout("max_retrans");
    // Copies past the count take the lock-free path and keep it.
    for _ in 0..5 {
        t.fwd(&f.s(ACK, 201, 201), &[], es);
        t.timeout("max_retrans");
    }
    // Something new ends the streak.
    t.fwd(&f.c(ACK, 201, 201), &[], es);
    t.timeout("established");
    // A zero window: the max_retrans timeout as well.
    let zero = Segment {
        win: 0,
        ..Segment::new(ACK, 201, 201)
    };
    t.fwd(&f.s_seg(zero), &[], es);
    t.timeout("max_retrans");
}

#[test]
fn a_picked_up_connection_is_liberal_with_data_but_not_with_blind_rsts() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let unreplied = v(ESTABLISHED, UNREPLIED, NOT_ASSURED, f.c);
    let replied = v(ESTABLISHED, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.fwd(
        &f.c_with(PSH | ACK, 10_000, 20_000, &[0; 100]),
        &["new"],
        unreplied,
    );
    t.fwd(
        &f.s_with(PSH | ACK, 20_000, 10_100, &[0; 100]),
        &[],
        replied,
    );
    t.fwd(&f.c(ACK, 10_100, 20_100), &[], es);
    // Far past any window: the sides are liberal, as the kernel makes a
    // picked-up connection's.
    t.fwd(&f.c_with(PSH | ACK, 510_100, 20_100, &[0; 100]), &[], es);
    // A RST below what the peer acked is still INVALID.
    changes_nothing(&t, &f.c(RST, 10_000, 0), XDP_DROP, es);
}

#[test]
fn liberal_skips_the_window_checks_but_not_those_of_rsts() {
    let h = Harness::new(Config {
        liberal: true,
        ..test_config()
    });
    let f = Flow::new(0);
    f.establish(&h);
    let t = Track::new(&h, f.tcp_key());
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    t.fwd(&f.c_with(PSH | ACK, 200_101, 201, b"far"), &[], es);
    t.fwd(&f.s(ACK, 201, 5_000_000), &[], es);
    t.fwd(&f.c_with(PSH | ACK, 101, 201, &[0; 500]), &[], es);
    t.fwd(&f.s(ACK, 201, 601), &[], es);
    changes_nothing(&t, &f.c(RST, 300, 0), XDP_DROP, es);
}

// ---------------------------------------------------------------------------
// UDP and ICMP

#[test]
fn udp_is_assured_only_when_seen_both_ways_for_more_than_two_seconds() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.udp_key());
    let unreplied = v(NO_STATE, UNREPLIED, NOT_ASSURED, f.c);
    let replied = v(NO_STATE, REPLIED, NOT_ASSURED, f.c);
    let assured = v(NO_STATE, REPLIED, ASSURED, f.c);
    // A second flow that is never answered.
    let g = Flow::new(1);
    let u = Track::new(&h, g.udp_key());
    let g_unreplied = v(NO_STATE, UNREPLIED, NOT_ASSURED, g.c);

    t.fwd(&f.c_udp(b"query"), &["new"], unreplied);
    t.timeout("udp");
    u.fwd(&g.c_udp(b"query"), &["new"], g_unreplied);
    t.fwd(&f.s_udp(b"answer"), &[], replied);
    t.timeout("udp");
    // Seen both ways, but younger than 2 s: not a stream yet.
    t.fwd(&f.c_udp(b"more"), &[], replied);
    t.timeout("udp");

    // The semantics under test is the entry's age, on the program's clock.
    let (_, e) = h.entry(&t.key).expect("the UDP entry");
    h.advance_to(e.created + 1_900_000_000);
    t.fwd(&f.c_udp(b"not yet"), &[], replied);
    h.advance_to(e.created + 2_100_000_000);
    t.fwd(&f.c_udp(b"still here"), &[], assured);
    t.timeout("udp_stream");
    u.fwd(&g.c_udp(b"still here"), &[], g_unreplied);
    u.timeout("udp");
}

#[test]
fn icmp_echo_is_tracked() {
    let h = Harness::default_config();
    let eth = Ether::default();
    let (req, resp) = (Ipv4Addr::new(10, 1, 1, 100), Ipv4Addr::new(10, 2, 2, 100));
    let t = Track::new(
        &h,
        table::icmp_key(req.into(), resp.into(), 0x1234).unwrap(),
    );
    let requester = Endpoint::new(req, 0x1234);
    let unreplied = v(NO_STATE, UNREPLIED, NOT_ASSURED, requester);
    let replied = v(NO_STATE, REPLIED, NOT_ASSURED, requester);
    let request = icmp_echo(&eth, req, resp, 8, 0x1234, 1);
    t.fwd(&request, &["new"], unreplied);
    t.timeout("icmp");
    // The requester asking again is no reply.
    t.fwd(&icmp_echo(&eth, req, resp, 8, 0x1234, 2), &[], unreplied);
    t.fwd(&icmp_echo(&eth, resp, req, 0, 0x1234, 1), &[], replied);
    t.fwd(&icmp_echo(&eth, req, resp, 8, 0x1234, 3), &[], replied);
    assert_eq!(h.raw_len(), 1);

    // A reply nobody asked for (another id), and a reply from the
    // requester, match no entry: invalid.
    let unasked = icmp_echo(&eth, resp, req, 0, 0x9999, 1);
    run_counted(
        &h,
        &unasked,
        XDP_DROP,
        &["invalid"],
        "unsolicited echo reply",
    );
    let backwards = icmp_echo(&eth, req, resp, 0, 0x1234, 1);
    run_counted(
        &h,
        &backwards,
        XDP_DROP,
        &["invalid"],
        "reply from the requester",
    );

    // A request the other way with the same id is another exchange.
    let u = Track::new(
        &h,
        table::icmp_key(resp.into(), req.into(), 0x1234).unwrap(),
    );
    let other = v(
        NO_STATE,
        UNREPLIED,
        NOT_ASSURED,
        Endpoint::new(resp, 0x1234),
    );
    let request = icmp_echo(&eth, resp, req, 8, 0x1234, 1);
    u.fwd(&request, &["new"], other);

    assert_eq!(h.raw_len(), 2);
}

#[test]
fn icmp_queries_other_than_echo_are_tracked_like_echo() {
    let h = Harness::default_config();
    let (c, s) = (Ipv4Addr::new(10, 1, 1, 100), Ipv4Addr::new(10, 2, 2, 100));
    let (ci, si) = (IpAddr::from(c), IpAddr::from(s));
    // Timestamp, information and address mask, each answered by its type
    // + 1 (the kernel's invmap[]), all with one id.
    for (n, request) in [13u8, 15, 17].into_iter().enumerate() {
        let key = table::icmp_query_key(ci, si, request, 0, 9).unwrap();
        let t = Track::new(&h, key);
        let asker = Endpoint::new(c, 9);
        t.fwd(
            &icmp_msg(ci, si, request, 0, 9, 1),
            &["new"],
            v(NO_STATE, UNREPLIED, NOT_ASSURED, asker),
        );
        t.timeout("icmp");
        t.fwd(
            &icmp_msg(si, ci, request + 1, 0, 9, 1),
            &[],
            v(NO_STATE, REPLIED, NOT_ASSURED, asker),
        );
        let (conn, _) = h.entry(&key).expect("the entry");
        assert_eq!((conn.icmp_type, conn.icmp_code), (request, 0));
        assert_eq!(h.raw_len(), n + 1);
        // The asker answering its own question answers nothing.
        let backwards = icmp_msg(ci, si, request + 1, 0, 9, 1);
        run_counted(
            &h,
            &backwards,
            XDP_DROP,
            &["invalid"],
            "answer from the asker",
        );
        // Nor does an answer nobody asked for.
        let unasked = icmp_msg(si, ci, request + 1, 0, 10, 1);
        run_counted(&h, &unasked, XDP_DROP, &["invalid"], "unsolicited answer");
    }

    // An echo with the same id is another connection.
    let echo = Track::new(&h, table::icmp_key(ci, si, 9).unwrap());
    let asker = Endpoint::new(c, 9);
    echo.fwd(
        &icmp_msg(ci, si, 8, 0, 9, 1),
        &["new"],
        v(NO_STATE, UNREPLIED, NOT_ASSURED, asker),
    );
    assert_eq!(h.raw_len(), 4);

    // The code is part of the tuple: only an answer with the request's
    // code answers it.
    let coded = Track::new(&h, table::icmp_query_key(ci, si, 8, 3, 6).unwrap());
    let asker = Endpoint::new(c, 6);
    coded.fwd(
        &icmp_msg(ci, si, 8, 3, 6, 1),
        &["new"],
        v(NO_STATE, UNREPLIED, NOT_ASSURED, asker),
    );
    coded.dropped(
        &icmp_msg(si, ci, 0, 0, 6, 1),
        &["invalid"],
        v(NO_STATE, UNREPLIED, NOT_ASSURED, asker),
    );
    coded.fwd(
        &icmp_msg(si, ci, 0, 3, 6, 1),
        &[],
        v(NO_STATE, REPLIED, NOT_ASSURED, asker),
    );

    // Id 0 both ways: two exchanges, told apart by who asked.
    let zero = Track::new(&h, table::icmp_key(ci, si, 0).unwrap());
    let other = Track::new(&h, table::icmp_key(si, ci, 0).unwrap());
    zero.fwd(
        &icmp_msg(ci, si, 8, 0, 0, 1),
        &["new"],
        v(NO_STATE, UNREPLIED, NOT_ASSURED, Endpoint::new(c, 0)),
    );
    other.fwd(
        &icmp_msg(si, ci, 8, 0, 0, 1),
        &["new"],
        v(NO_STATE, UNREPLIED, NOT_ASSURED, Endpoint::new(s, 0)),
    );
    zero.fwd(
        &icmp_msg(si, ci, 0, 0, 0, 1),
        &[],
        v(NO_STATE, REPLIED, NOT_ASSURED, Endpoint::new(c, 0)),
    );
    assert_eq!(
        view(&h, &other.key),
        v(NO_STATE, UNREPLIED, NOT_ASSURED, Endpoint::new(s, 0))
    );
    assert_eq!(h.raw_len(), 7);
}

#[test]
fn icmp_types_that_are_neither_queries_nor_errors_are_invalid() {
    let h = Harness::default_config();
    let (c, s) = (Ipv4Addr::new(10, 1, 1, 100), Ipv4Addr::new(10, 2, 2, 100));
    // Unassigned (1, 2, 7), alternate host address (6), router
    // advertisement and solicitation (9, 10): the kernel can neither
    // track nor relate them; beyond 18 it knows no type at all.
    for icmp_type in [1, 2, 6, 7, 9, 10, 19, 40, 255] {
        let frame = icmp_msg(c.into(), s.into(), icmp_type, 0, 9, 1);
        run_counted(
            &h,
            &frame,
            XDP_DROP,
            &["invalid"],
            &format!("ICMP type {icmp_type}"),
        );
    }
    assert_eq!(h.raw_len(), 0);
}

/// The entry under `key` as raw fields, to compare before and after.
fn raw(h: &Harness, key: &ct_key) -> Option<String> {
    h.entry(key).map(|(_, e)| format!("{e:?}"))
}

/// An ICMP error that must pass as related to the entry under `key`,
/// moving `related` and the rx counters only, and leave the entry exactly
/// as it was: no refresh, no state, no SEEN_REPLY.
#[track_caller]
fn related(h: &Harness, frame: &[u8], key: &ct_key, what: &str) {
    let before = raw(h, key);
    assert!(before.is_some(), "no live entry: {what}");
    run_counted(h, frame, XDP_REDIRECT, &["related"], what);
    assert_eq!(raw(h, key), before, "the entry after: {what}");
}

/// An ICMP error that must be dropped as invalid, leaving the entry under
/// `key` (if any) as it was.
#[track_caller]
fn unrelated(h: &Harness, frame: &[u8], key: &ct_key, what: &str) {
    let before = raw(h, key);
    run_counted(h, frame, XDP_DROP, &["invalid"], what);
    assert_eq!(raw(h, key), before, "the entry after: {what}");
}

/// A TCP flow, a UDP flow and an echo exchange (id 0x1234) between the
/// same hosts: TCP established, UDP and echo unreplied.  Returns their
/// keys.
fn three_flows(h: &Harness, f: &Flow) -> [ct_key; 3] {
    f.establish(h);
    step(
        h,
        &f.c_udp(b"query"),
        XDP_REDIRECT,
        &["new"],
        &f.udp_key(),
        v(NO_STATE, UNREPLIED, NOT_ASSURED, f.c),
    );
    let echo = table::icmp_key(f.c.addr, f.s.addr, 0x1234).unwrap();
    step(
        h,
        &icmp_msg(f.c.addr, f.s.addr, 8, 0, 0x1234, 1),
        XDP_REDIRECT,
        &["new"],
        &echo,
        v(
            NO_STATE,
            UNREPLIED,
            NOT_ASSURED,
            Endpoint::new(f.c.addr, 0x1234),
        ),
    );
    [f.tcp_key(), f.udp_key(), echo]
}

#[test]
fn icmp_errors_about_a_connection_are_related_and_change_nothing() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let [tcp_key, udp_key, echo_key] = three_flows(&h, &f);
    // Had an error refreshed an entry, its deadline would move.
    h.advance(Duration::from_secs(5));
    let (c, s) = (f.c.addr, f.s.addr);
    for kind in ERRORS {
        let what = |about: &str| format!("{kind:?} about {about}");
        // Back to the source of a packet in either direction.
        let segment = f.c_with(PSH | ACK, 101, 201, b"data");
        related(&h, &icmp_error(kind, &segment), &tcp_key, &what("C>S TCP"));
        let segment = f.s(ACK, 201, 105);
        related(&h, &icmp_error(kind, &segment), &tcp_key, &what("S>C TCP"));
        let datagram = f.c_udp(b"query");
        related(&h, &icmp_error(kind, &datagram), &udp_key, &what("C>S UDP"));
        // About an answer that never came: the tuple is the reply's, and
        // the entry stays UNREPLIED.
        let datagram = f.s_udp(b"answer");
        related(&h, &icmp_error(kind, &datagram), &udp_key, &what("S>C UDP"));
        let request = icmp_msg(c, s, 8, 0, 0x1234, 2);
        related(&h, &icmp_error(kind, &request), &echo_key, &what("request"));
        let reply = icmp_msg(s, c, 0, 0, 0x1234, 2);
        related(&h, &icmp_error(kind, &reply), &echo_key, &what("reply"));
    }
    // From the far end itself, as a closed port answers.
    let datagram = f.c_udp(b"query");
    let (IpAddr::V4(c4), IpAddr::V4(s4)) = (c, s) else {
        unreachable!()
    };
    let closed = icmp_error_to(s4, c4, PORT_UNREACH, &datagram, 28);
    related(&h, &closed, &udp_key, "port unreachable from the server");
    assert_eq!(view(&h, &udp_key), v(NO_STATE, UNREPLIED, NOT_ASSURED, f.c));
}

#[test]
fn icmp_errors_towards_the_wrong_end_are_invalid() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let [tcp_key, udp_key, echo_key] = three_flows(&h, &f);
    let (IpAddr::V4(c), IpAddr::V4(s)) = (f.c.addr, f.s.addr) else {
        unreachable!()
    };
    let elsewhere = Ipv4Addr::new(10, 3, 3, 3);
    for (what, frame, key) in [
        ("C>S TCP", f.c(ACK, 101, 201), tcp_key),
        ("S>C TCP", f.s(ACK, 201, 101), tcp_key),
        ("C>S UDP", f.c_udp(b"query"), udp_key),
        (
            "echo request",
            icmp_msg(c.into(), s.into(), 8, 0, 0x1234, 1),
            echo_key,
        ),
    ] {
        let (src, dst) = ip_addrs(&frame);
        // To the quoted packet's destination, from a router or from that
        // destination itself, or to a third host: the kernel wants the
        // error to go back to the quoted packet's source.
        for (from, to) in [(ROUTER, dst), (dst, dst), (ROUTER, elsewhere), (src, dst)] {
            let err = icmp_error_to(from, to, HOST_UNREACH, &frame, 28);
            unrelated(&h, &err, &key, &format!("{what} error {from} -> {to}"));
        }
    }
}

#[test]
fn icmp_errors_about_no_live_connection_are_invalid() {
    let h = Harness::new(config_with(&["udp=1"]));
    let f = Flow::new(0);
    let none = f.tcp_key();
    let (c, s) = (f.c.addr, f.s.addr);
    unrelated(
        &h,
        &icmp_error(HOST_UNREACH, &f.c(SYN, 100, 0)),
        &none,
        "no TCP",
    );
    unrelated(
        &h,
        &icmp_error(PORT_UNREACH, &f.c_udp(b"x")),
        &none,
        "no UDP",
    );
    let request = icmp_msg(c, s, 8, 0, 7, 1);
    unrelated(&h, &icmp_error(TIME_EXCEEDED, &request), &none, "no echo");
    assert_eq!(h.raw_len(), 0);

    // Another protocol, port, id, code or query type than the flow's.
    let [tcp_key, _, echo_key] = three_flows(&h, &f);
    let g = Flow::new(1);
    g.establish(&h);
    for (what, quoted, key) in [
        ("UDP on a TCP flow's ports", g.c_udp(b"x"), g.tcp_key()),
        (
            "TCP of a flow nobody opened",
            Flow::new(2).c(SYN, 100, 0),
            tcp_key,
        ),
        (
            "echo of another id",
            icmp_msg(c, s, 8, 0, 0x1235, 1),
            echo_key,
        ),
        (
            "echo with code 1",
            icmp_msg(c, s, 8, 1, 0x1234, 1),
            echo_key,
        ),
        ("timestamp", icmp_msg(c, s, 13, 0, 0x1234, 1), echo_key),
    ] {
        unrelated(&h, &icmp_error(HOST_UNREACH, &quoted), &key, what);
    }

    // An expired entry is absent; the error leaves it for the sweep.
    let udp_key = f.udp_key();
    let (_, e) = h.entry(&udp_key).expect("the UDP entry");
    h.advance_to(e.expires);
    assert_eq!(view(&h, &udp_key), None);
    let late = icmp_error(PORT_UNREACH, &f.c_udp(b"query"));
    run_counted(&h, &late, XDP_DROP, &["invalid"], "about an expired flow");
}

#[test]
fn icmp_error_quotes_must_hold_an_ip_header_and_the_tuple() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let [tcp_key, udp_key, echo_key] = three_flows(&h, &f);
    let (IpAddr::V4(c), IpAddr::V4(_)) = (f.c.addr, f.s.addr) else {
        unreachable!()
    };
    let datagram = f.c_udp(b"query");
    let quote = |len: usize| icmp_error_to(ROUTER, c, TIME_EXCEEDED, &datagram, len);
    // A whole IP header and the 4 bytes of ports: no more is read.
    for len in [0, 8, 19, 20, 22, 23] {
        unrelated(
            &h,
            &quote(len),
            &udp_key,
            &format!("UDP quote of {len} bytes"),
        );
    }
    related(&h, &quote(24), &udp_key, "UDP quote of 24 bytes");
    let segment = f.c(ACK, 101, 201);
    let tcp_quote = |len| icmp_error_to(ROUTER, c, FRAG_NEEDED, &segment, len);
    unrelated(&h, &tcp_quote(23), &tcp_key, "TCP quote of 23 bytes");
    related(&h, &tcp_quote(24), &tcp_key, "TCP quote of 24 bytes");
    // ICMP needs its whole 8-byte header: the id is in its second half.
    let request = icmp_msg(f.c.addr, f.s.addr, 8, 0, 0x1234, 2);
    let echo_quote = |len| icmp_error_to(ROUTER, c, HOST_UNREACH, &request, len);
    unrelated(&h, &echo_quote(27), &echo_key, "echo quote of 27 bytes");
    related(&h, &echo_quote(28), &echo_key, "echo quote of 28 bytes");

    // The quote ends with the error's tot_len, not with the frame: the
    // last byte of the ports behind tot_len, though still in the frame.
    let whole = quote(24);
    let cut = with_tot_len(whole.clone(), 20 + 8 + 23);
    assert_eq!(cut.len(), whole.len());
    unrelated(&h, &cut, &udp_key, "ports cut by the error's tot_len");

    // IP options in the quoted header move the ports.
    let optioned = with_ip_options(&datagram, &[1, 1, 1, 0]);
    related(
        &h,
        &icmp_error(TIME_EXCEEDED, &optioned),
        &udp_key,
        "quoted header with options",
    );
    let short = icmp_error_to(ROUTER, c, TIME_EXCEEDED, &optioned, 24 + 3);
    unrelated(&h, &short, &udp_key, "options, and the ports cut short");

    // Only the first fragment has the ports.
    for (frag_off, ok) in [
        (0x2000u16, true),
        (0x4000, true),
        (0x0001, false),
        (0x2001, false),
    ] {
        let quoted = edit_ip(datagram.clone(), |ip| {
            ip[6..8].copy_from_slice(&frag_off.to_be_bytes());
        });
        let err = icmp_error(TIME_EXCEEDED, &quoted);
        let what = format!("quoted fragment field 0x{frag_off:04x}");
        if ok {
            related(&h, &err, &udp_key, &what);
        } else {
            unrelated(&h, &err, &udp_key, &what);
        }
    }
}

#[test]
fn icmp_error_quotes_are_read_with_their_ihl_as_it_is() {
    // Below 5 the kernel still takes the IHL at its word: with IHL 4 the
    // "ports" are the last 4 bytes of the quoted header, its destination
    // address (10.2.2.100 is 0x0a02, 0x0264).
    let h = Harness::default_config();
    let spelled = Flow::between(
        Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 0x0a02),
        Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 0x0264),
    );
    step(
        &h,
        &spelled.c_udp(b"query"),
        XDP_REDIRECT,
        &["new"],
        &spelled.udp_key(),
        v(NO_STATE, UNREPLIED, NOT_ASSURED, spelled.c),
    );
    // A datagram of a flow nobody tracks, between the same hosts.
    let f = Flow::new(0);
    let IpAddr::V4(c) = f.c.addr else {
        unreachable!()
    };
    let quoted = f.c_udp(b"query");
    let err = icmp_error_to(ROUTER, c, TIME_EXCEEDED, &quoted, 28);
    unrelated(&h, &err, &spelled.udp_key(), "IHL 5: its own ports");
    let quoted = edit_ip(quoted, |ip| ip[0] = 0x44);
    let err = icmp_error_to(ROUTER, c, TIME_EXCEEDED, &quoted, 28);
    related(&h, &err, &spelled.udp_key(), "IHL 4: the address as ports");
}

#[test]
fn icmp_errors_about_errors_and_untracked_protocols_are_invalid() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let [_, udp_key, _] = three_flows(&h, &f);
    let (IpAddr::V4(c), IpAddr::V4(s)) = (f.c.addr, f.s.addr) else {
        unreachable!()
    };
    // The server's port unreachable is related; an error about it is not
    // (the kernel cannot invert an error's tuple).
    let closed = icmp_error_to(s, c, PORT_UNREACH, &f.c_udp(b"query"), 28);
    related(&h, &closed, &udp_key, "port unreachable");
    let about = icmp_error_to(ROUTER, s, TIME_EXCEEDED, &closed, 28);
    unrelated(&h, &about, &udp_key, "time exceeded about it");
    // Protocols this table never holds.
    let gre = ip_frame(&Ether::default(), c, s, 47, vec![0; 8]);
    unrelated(&h, &icmp_error(HOST_UNREACH, &gre), &udp_key, "GRE");

    // An error about a timestamp exchange relates to it.
    let ts = table::icmp_query_key(c.into(), s.into(), 13, 0, 5).unwrap();
    step(
        &h,
        &icmp_msg(c.into(), s.into(), 13, 0, 5, 1),
        XDP_REDIRECT,
        &["new"],
        &ts,
        v(NO_STATE, UNREPLIED, NOT_ASSURED, Endpoint::new(c, 5)),
    );
    let request = icmp_msg(c.into(), s.into(), 13, 0, 5, 1);
    related(&h, &icmp_error(HOST_UNREACH, &request), &ts, "timestamp");
}

// ---------------------------------------------------------------------------
// Expiry, sweep and a full table

#[test]
fn expired_entries_are_invisible_until_the_sweep_removes_them() {
    let h = Harness::new(config_with(&["syn_sent=1"]));
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    t.fwd(&f.c(SYN, 100, 0), &["new"], ss);
    // A UDP entry, with the default 300 s, outlives the sweep.
    let g = Flow::new(1);
    let u = Track::new(&h, g.udp_key());
    let udp = v(NO_STATE, UNREPLIED, NOT_ASSURED, g.c);
    u.fwd(&g.c_udp(b"x"), &["new"], udp);

    expire(&h, &t.key, 1);
    assert_eq!(h.raw_len(), 2, "the expired key stays until the sweep");
    assert_eq!(h.conns().len(), 1);

    let before = h.stats();
    h.sweep();
    assert_moved(&before, &h.stats(), &[("swept", 1)], "sweep");
    assert_eq!(h.raw_len(), 1);
    assert_eq!(view(&h, &u.key), udp);

    let before = h.stats();
    h.sweep();
    assert_moved(&before, &h.stats(), &[], "second sweep");
    assert_eq!(h.raw_len(), 1);
}

#[test]
fn without_for_each_the_userspace_sweep_removes_expired_entries() {
    // As on kernels before 5.13: ct_sweep is not loaded, ct_reap is.
    let mut cfg = config_with(&["syn_sent=1"]);
    cfg.features.for_each = false;
    let h = Harness::new(cfg);
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    t.fwd(
        &f.c(SYN, 100, 0),
        &["new"],
        v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c),
    );
    let g = Flow::new(1);
    let u = Track::new(&h, g.udp_key());
    let udp = v(NO_STATE, UNREPLIED, NOT_ASSURED, g.c);
    u.fwd(&g.c_udp(b"x"), &["new"], udp);

    expire(&h, &t.key, 1);
    assert_eq!(h.raw_len(), 2);
    let before = h.stats();
    h.sweep();
    assert_moved(&before, &h.stats(), &[("swept", 1)], "userspace sweep");
    assert_eq!(h.raw_len(), 1);
    assert_eq!(view(&h, &u.key), udp);
}

/// Runs `ct_delete` (what `delete` and `flush` hand keys to) on `data`.
fn delete(h: &Harness, data: &[u8]) -> u32 {
    let input = ProgramInput {
        data_in: Some(data),
        ..Default::default()
    };
    h.skel
        .progs
        .ct_delete
        .test_run(input)
        .expect("running ct_delete")
        .return_value
}

#[test]
fn ct_delete_removes_a_live_entry_once_and_counts_it() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    t.fwd(
        &f.c(SYN, 100, 0),
        &["new"],
        v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c),
    );
    let g = Flow::new(1);
    let u = Track::new(&h, g.udp_key());
    let udp = v(NO_STATE, UNREPLIED, NOT_ASSURED, g.c);
    u.fwd(&g.c_udp(b"x"), &["new"], udp);
    // SAFETY: table keys are plain C structs with explicit padding.
    let key = unsafe { plain::as_bytes(&t.key) }.to_vec();

    let before = h.stats();
    assert_eq!(delete(&h, &key), XDP_DROP, "a live entry is removed");
    assert_moved(&before, &h.stats(), &[("deleted", 1)], "delete");
    assert_eq!(h.stats().active(), 1);
    assert!(h.entry(&t.key).is_none());
    assert_eq!(view(&h, &u.key), udp, "the other entry stays");
    // Gone already: nothing removed, nothing counted.
    let before = h.stats();
    assert_eq!(delete(&h, &key), XDP_PASS);
    assert_moved(&before, &h.stats(), &[], "second delete");
    // A frame that is no key is refused.
    assert_eq!(delete(&h, &key[..15]), XDP_ABORTED);
    assert_eq!(delete(&h, &[0u8; 64]), XDP_ABORTED);
    // The connection's next packet opens it afresh.
    t.fwd(
        &f.c(SYN, 100, 0),
        &["new"],
        v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c),
    );
}

#[test]
fn ct_delete_removes_an_expired_entry_before_the_sweep_does() {
    let h = Harness::new(config_with(&["udp=1"]));
    let g = Flow::new(1);
    let u = Track::new(&h, g.udp_key());
    u.fwd(
        &g.c_udp(b"x"),
        &["new"],
        v(NO_STATE, UNREPLIED, NOT_ASSURED, g.c),
    );
    expire(&h, &u.key, 1);
    // SAFETY: as above.
    let key = unsafe { plain::as_bytes(&u.key) }.to_vec();
    let before = h.stats();
    assert_eq!(delete(&h, &key), XDP_DROP);
    h.sweep();
    assert_moved(&before, &h.stats(), &[("deleted", 1)], "delete, then sweep");
    assert_eq!(h.raw_len(), 0);
}

#[test]
fn a_packet_meeting_an_expired_entry_finds_none() {
    let h = Harness::new(config_with(&["syn_sent=1", "udp=1"]));
    // UDP: after expiry the old responder speaks first, and becomes the
    // original side of a new entry.
    let f = Flow::new(0);
    let t = Track::new(&h, f.udp_key());
    let by_client = v(NO_STATE, UNREPLIED, NOT_ASSURED, f.c);
    let by_server = v(NO_STATE, UNREPLIED, NOT_ASSURED, f.s);
    t.fwd(&f.c_udp(b"query"), &["new"], by_client);
    expire(&h, &t.key, 1);
    let late = f.s_udp(b"late answer");
    t.fwd(&late, &["expired", "new"], by_server);
    assert_eq!(h.raw_len(), 1);

    // TCP: a SYN-ACK for an expired SYN is a SYN-ACK for nothing.
    let g = Flow::new(1);
    let u = Track::new(&h, g.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, g.c);
    u.fwd(&g.c(SYN, 100, 0), &["new"], ss);
    expire(&h, &u.key, 1);
    u.dropped(&g.s(SYN | ACK, 200, 101), &["expired", "invalid"], None);
    assert_eq!(h.raw_len(), 1, "the expired TCP key is gone");
}

#[test]
fn a_full_table_refuses_new_connections_but_not_existing_ones() {
    let h = Harness::new(Config {
        max_entries: 4,
        ..config_with(&["udp=2"])
    });
    let flows: Vec<Flow> = (0..5).map(Flow::new).collect();
    let track = |f: &Flow| Track::new(&h, f.udp_key());
    let opened = |f: &Flow| v(NO_STATE, UNREPLIED, NOT_ASSURED, f.c);
    for f in &flows[..4] {
        track(f).fwd(&f.c_udp(b"hi"), &["new"], opened(f));
    }
    let fifth = &flows[4];
    track(fifth).dropped(&fifth.c_udp(b"hi"), &["table_full"], None);
    let syn = fifth.c(SYN, 100, 0);
    run_counted(&h, &syn, XDP_DROP, &["table_full"], "SYN into a full table");
    // Existing connections go on.
    let (first, last) = (&flows[0], &flows[3]);
    let replied = v(NO_STATE, REPLIED, NOT_ASSURED, first.c);
    track(first).fwd(&first.s_udp(b"hello"), &[], replied);
    track(last).fwd(&last.c_udp(b"again"), &[], opened(last));
    assert_eq!(h.raw_len(), 4);

    h.advance(Duration::from_secs(2));
    assert!(h.conns().is_empty(), "the four entries did not expire");
    let before = h.stats();
    h.sweep();
    assert_moved(&before, &h.stats(), &[("swept", 4)], "sweep");
    assert_eq!(h.raw_len(), 0);
    track(fifth).fwd(&fifth.c_udp(b"hi"), &["new"], opened(fifth));
}

// ---------------------------------------------------------------------------
// Malformed and untracked frames (parse.h's policy)

#[test]
fn frames_shorter_than_an_ethernet_header_are_refused_by_the_kernel() {
    // BPF_PROG_TEST_RUN refuses data_in shorter than ETH_HLEN with EINVAL
    // (bpf_test_init() in net/bpf/test_run.c), so the program never sees
    // such a frame here; its "shorter than an Ethernet header" branch is
    // reachable only from a driver.
    let h = Harness::default_config();
    let frame = Flow::new(0).c(SYN, 100, 0);
    let before = h.stats();
    for len in [0, 1, 13] {
        let err = h.try_run(&frame[..len]).expect_err("a runt frame");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{len} bytes: {err}");
    }
    assert_moved(&before, &h.stats(), &[], "refused runs");
}

#[test]
fn broken_ethernet_and_ipv4_headers_are_dropped_as_malformed() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let syn = f.c(SYN, 100, 0);
    let in_frame = (syn.len() - IP) as u16;
    let mut half_tag = vlan_tagged(&syn, &[0x8100]);
    half_tag.truncate(16);
    for (what, frame) in [
        ("Ethernet header only, IPv4 ethertype", syn[..IP].to_vec()),
        ("IPv4 header cut short", syn[..L4 - 1].to_vec()),
        ("VLAN tag cut short", half_tag),
        ("IHL 4", edit_ip(syn.clone(), |ip| ip[0] = 0x44)),
        ("IHL 0", edit_ip(syn.clone(), |ip| ip[0] = 0x40)),
        (
            "version 6 under IPv4",
            edit_ip(syn.clone(), |ip| ip[0] = 0x65),
        ),
        (
            "tot_len past the frame",
            with_tot_len(syn.clone(), in_frame + 1),
        ),
        ("tot_len below IHL", with_tot_len(syn.clone(), 19)),
    ] {
        run_counted(&h, &frame, XDP_DROP, &["malformed"], what);
    }
    assert_eq!(h.raw_len(), 0);

    // tot_len reaching exactly the end of the frame is fine (the padding
    // then is payload).
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    t.fwd(&with_tot_len(syn, in_frame), &["new"], ss);
}

#[test]
fn ip_options_are_skipped_and_the_flow_tracked() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    let nops = |frame: Vec<u8>, n: usize| with_ip_options(&frame, &vec![1u8; n]);
    let syn = nops(f.c(SYN, 100, 0), 4);
    assert_eq!(syn[IP], 0x46);
    t.fwd(&syn, &["new"], ss);
    // The SYN's sequence number was read behind the options: 102 is one
    // past its end, 101 is right.
    t.dropped(&nops(f.s(SYN | ACK, 200, 102), 4), &["invalid"], ss);
    // The longest header: IHL 15, 40 bytes of options.
    let synack = nops(f.s(SYN | ACK, 200, 101), 40);
    assert_eq!(synack[IP], 0x4f);
    t.fwd(&synack, &[], sr);
    t.fwd(&nops(f.c(ACK, 101, 201), 4), &[], es);
}

#[test]
fn fragments_are_forwarded_and_counted_untracked() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let frag = |frame: Vec<u8>, frag_off: u16| {
        edit_ip(frame, |ip| {
            ip[6..8].copy_from_slice(&frag_off.to_be_bytes())
        })
    };
    for (what, frame) in [
        ("first fragment (MF)", frag(f.c(SYN, 100, 0), 0x2000)),
        ("last fragment (offset 1480)", frag(f.c_udp(b"tail"), 185)),
        ("middle fragment", frag(f.c_udp(b"middle"), 0x2000 | 185)),
    ] {
        run_counted(&h, &frame, XDP_REDIRECT, &["fragments"], what);
    }
    assert_eq!(h.raw_len(), 0);
}

#[test]
fn the_first_fragment_of_a_udp_or_icmp_datagram_is_tracked_by_its_header() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    // A datagram of 1480 + 8 bytes of UDP: the first fragment carries the
    // header with the whole length, and its checksum covers what is not
    // here, so neither can be judged.
    let first = edit_ip(f.c_udp(&[7; 64]), |ip| {
        ip[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        ip[20 + 4..20 + 6].copy_from_slice(&(8u16 + 1480).to_be_bytes());
        ip[20 + 6..20 + 8].copy_from_slice(&0x1234u16.to_be_bytes());
    });
    let t = Track::new(&h, f.udp_key());
    let unreplied = v(NO_STATE, UNREPLIED, NOT_ASSURED, f.c);
    t.fwd(&first, &["new", "fragments"], unreplied);
    let rest = edit_ip(f.c_udp(b"tail"), |ip| {
        ip[6..8].copy_from_slice(&185u16.to_be_bytes());
    });
    t.fwd(&rest, &["fragments"], unreplied);
    t.fwd(
        &f.s_udp(b"answer"),
        &[],
        v(NO_STATE, REPLIED, NOT_ASSURED, f.c),
    );
    // A first fragment that is INVALID is dropped: the rest of its datagram
    // is then nothing to reassemble.
    let g = Flow::new(1);
    let bad = edit_ip(g.c_udp(&[7; 64]), |ip| {
        ip[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        ip[20 + 4..20 + 6].copy_from_slice(&4u16.to_be_bytes());
    });
    Track::new(&h, g.udp_key()).dropped(&bad, &["invalid", "fragments"], None);
    // An echo request in fragments opens its entry with the first.
    let (c, s) = (f.c.addr, f.s.addr);
    let echo = edit_ip(icmp_echo(&Ether::default(), c, s, 8, 0x77, 1), |ip| {
        ip[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
    });
    let e = Track::new(&h, table::icmp_key(c, s, 0x77).unwrap());
    e.fwd(
        &echo,
        &["new", "fragments"],
        v(NO_STATE, UNREPLIED, NOT_ASSURED, Endpoint::new(c, 0x77)),
    );
}

#[test]
fn up_to_two_vlan_tags_are_skipped() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let t = Track::new(&h, f.tcp_key());
    let ss = v(SYN_SENT, UNREPLIED, NOT_ASSURED, f.c);
    let sr = v(SYN_RECV, REPLIED, NOT_ASSURED, f.c);
    let es = v(ESTABLISHED, REPLIED, ASSURED, f.c);
    // One 802.1Q tag, then 802.1ad + 802.1Q, then one 802.1ad tag, all on
    // one connection.
    let syn = vlan_tagged(&f.c(SYN, 100, 0), &[0x8100]);
    t.fwd(&syn, &["new"], ss);
    let synack = vlan_tagged(&f.s(SYN | ACK, 200, 101), &[0x88a8, 0x8100]);
    t.fwd(&synack, &[], sr);
    t.fwd(&vlan_tagged(&f.c(ACK, 101, 201), &[0x88a8]), &[], es);
    // Behind a third tag the ethertype is not IPv4: forwarded untracked.
    let g = Flow::new(1);
    let syn = vlan_tagged(&g.c(SYN, 100, 0), &[0x88a8, 0x8100, 0x8100]);
    Track::new(&h, g.tcp_key()).fwd(&syn, &["untracked"], None);
}

#[test]
fn broken_l4_headers_are_dropped_as_invalid() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let syn = f.c(SYN, 100, 0);
    let tcp_byte = |at: usize, b: u8| {
        let mut x = syn.clone();
        x[L4 + at] = b;
        packet::fix_checksums(&mut x);
        x
    };
    let mut cut_tcp = with_tot_len(syn.clone(), 20 + 12);
    cut_tcp.truncate(L4 + 12);
    // "ping": UDP length 12, in a frame padded to 60 bytes.
    let udp_len = |len: u16| {
        let mut x = f.c_udp(b"ping");
        x[L4 + 4..L4 + 6].copy_from_slice(&len.to_be_bytes());
        packet::fix_checksums(&mut x);
        x
    };
    let echo = icmp_echo(&Ether::default(), f.c.addr, f.s.addr, 8, 1, 1);
    let mut cut_icmp = with_tot_len(echo, 20 + 4);
    cut_icmp.truncate(L4 + 4);
    for (what, frame) in [
        ("TCP header cut by the frame", cut_tcp),
        (
            "TCP header cut by tot_len",
            with_tot_len(syn.clone(), 20 + 12),
        ),
        ("TCP data offset 4", tcp_byte(12, 4 << 4)),
        ("TCP data offset past the segment", tcp_byte(12, 6 << 4)),
        ("UDP length one past the datagram", udp_len(13)),
        ("UDP length below its header", udp_len(7)),
        ("ICMP header cut short", cut_icmp),
    ] {
        run_counted(&h, &frame, XDP_DROP, &["invalid"], what);
    }
    assert_eq!(h.raw_len(), 0);
}

#[test]
fn non_ip_frames_and_other_protocols_are_forwarded_untracked() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let gre = ip_frame(&Ether::default(), f.c.addr, f.s.addr, 47, vec![0; 4]);
    for (what, frame) in [("ARP", arp_request(f.c.addr, f.s.addr)), ("GRE", gre)] {
        run_counted(&h, &frame, XDP_REDIRECT, &["untracked"], what);
    }
    // IPv6 is counted as IPv6 besides (tests/packet6.rs has the rest).
    let gre6 = ipv6_gre();
    run_counted(
        &h,
        &gre6,
        XDP_REDIRECT,
        &["untracked", "ipv6"],
        "GRE over IPv6",
    );
    assert_eq!(h.raw_len(), 0);
}

// ---------------------------------------------------------------------------
// Forwarding: MAC rewrite, sides, pure redirect, counters

const MAC_A: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x02];
const MAC_C: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x03];
const MAC_D: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 0x04];

#[test]
fn mac_rewrite_applies_to_frames_leaving_side_2() {
    let h = Harness::new(Config {
        rewrite: [Some((MAC_C, MAC_D)), Some((MAC_A, MAC_B))],
        ..test_config()
    });
    let f = Flow::new(0);
    let syn = f.c(SYN, 100, 0);
    let (act, out) = h.run_output(&syn);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out.len(), syn.len());
    assert_eq!(out[..6], MAC_A, "destination MAC");
    assert_eq!(out[6..12], MAC_B, "source MAC");
    assert_eq!(out[12..], syn[12..], "the rest of the frame");
    // A dropped frame is left alone.
    let bad = f.c(SYN | FIN, 100, 0);
    assert_eq!(h.run_output(&bad), (XDP_DROP, bad.clone()));
}

#[test]
fn frames_arriving_on_side_2_leave_through_side_1() {
    // The test run's ingress is lo (ifindex 1); naming it side 2's ifindex
    // makes frames arrive on side 2.
    let h = Harness::new(Config {
        ifindex: [0, 1],
        rewrite: [Some((MAC_C, MAC_D)), Some((MAC_A, MAC_B))],
        ..test_config()
    });
    let syn = Flow::new(0).c(SYN, 100, 0);
    let before = h.stats();
    let (act, out) = h.run_output(&syn);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out[..6], MAC_C, "destination MAC");
    assert_eq!(out[6..12], MAC_D, "source MAC");
    assert_eq!(out[12..], syn[12..], "the rest of the frame");
    let rx = [
        ("packets_from_side2", 1),
        ("bytes_from_side2", syn.len() as u64),
    ];
    assert_moved(&before, &h.stats(), &[rx[0], rx[1], ("new", 1)], "SYN");
}

#[test]
fn without_rewrite_the_frame_is_untouched() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    for frame in [f.c(SYN, 100, 0), f.s(SYN | ACK, 200, 101), f.c_udp(b"x")] {
        assert_eq!(h.run_output(&frame), (XDP_REDIRECT, frame.clone()));
    }
}

#[test]
fn without_tracking_everything_is_redirected() {
    let h = Harness::new(Config {
        track: false,
        ..test_config()
    });
    let f = Flow::new(0);
    let syn = f.c(SYN, 100, 0);
    for (what, frame) in [
        ("SYN-ACK without a connection", f.s(SYN | ACK, 200, 101)),
        ("SYN", syn.clone()),
        ("SYN|FIN", f.c(SYN | FIN, 100, 0)),
        ("Ethernet header only", syn[..IP].to_vec()),
    ] {
        run_counted(&h, &frame, XDP_REDIRECT, &[], what);
    }
    assert_eq!(h.raw_len(), 0);
}

#[test]
fn rx_counters_count_forwarded_frames_only() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let big = f.c_udp(&[0x55; 58]);
    assert_eq!(big.len(), 100);
    let forwarded = [
        f.c(SYN, 100, 0),
        big,
        arp_request(f.c.addr, f.s.addr),
        Flow::new(1).c_with(SYN, 1, 0, &[0xaa; 100]),
    ];
    let dropped = [
        f.c(SYN | FIN, 100, 0),
        f.s(SYN | ACK, 200, 999),
        f.c(SYN, 100, 0)[..IP].to_vec(),
    ];
    for frame in &forwarded {
        assert_eq!(h.run(frame), XDP_REDIRECT);
    }
    for frame in &dropped {
        assert_eq!(h.run(frame), XDP_DROP);
    }
    let t = h.stats();
    let bytes = forwarded.iter().map(Vec::len).sum::<usize>() as u64;
    let n = |name: &str| t.get(counters::by_name(name).expect(name));
    assert_eq!(
        [n("packets_from_side1"), n("packets_from_side2")],
        [forwarded.len() as u64, 0]
    );
    assert_eq!([n("bytes_from_side1"), n("bytes_from_side2")], [bytes, 0]);
    assert_eq!((t.packets(), t.bytes()), (4, bytes));
    assert_eq!((n("invalid"), n("malformed"), t.drops()), (2, 1, 3));
    assert_eq!((n("new"), n("untracked"), t.active()), (3, 1, 3));
}

/// A harness whose devmap has no port for side 2.
fn without_side_2_port() -> Harness {
    let h = Harness::default_config();
    h.skel
        .maps
        .tx_ports
        .delete(&1u32.to_ne_bytes())
        .expect("emptying devmap slot 1");
    h
}

#[test]
fn a_missing_devmap_slot_drops_and_counts_redirect_err() {
    let h = without_side_2_port();
    let before = h.stats();
    assert_eq!(h.run(&Flow::new(0).c(SYN, 100, 0)), XDP_DROP);
    let after = h.stats();
    assert_eq!(
        after.get(ct_counter::CT_C_REDIRECT_ERR) - before.get(ct_counter::CT_C_REDIRECT_ERR),
        1
    );
    assert_eq!(
        after.get(ct_counter::CT_C_NEW) - before.get(ct_counter::CT_C_NEW),
        1
    );
}

#[test]
fn a_frame_dropped_for_a_missing_devmap_slot_is_not_counted_as_forwarded() {
    let h = without_side_2_port();
    let before = h.stats();
    assert_eq!(h.run(&Flow::new(0).c(SYN, 100, 0)), XDP_DROP);
    let want = [("new", 1), ("redirect_err", 1)];
    assert_moved(&before, &h.stats(), &want, "SYN with no egress port");
}

// ---------------------------------------------------------------------------
// Concurrency

/// The program, shared by threads that only start test runs of it.
struct SharedProg<'a>(&'a ProgramMut<'static>);

// SAFETY: test_run() reads the program's fd (bpf_program__fd()) and issues
// BPF_PROG_TEST_RUN; nothing in the libbpf object is written, and the
// kernel runs each test run on the calling thread's CPU.
unsafe impl Sync for SharedProg<'_> {}

/// Two CPUs this process may run on (the same one twice on a 1-CPU box).
fn two_cpus() -> [usize; 2] {
    let set = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect();
    [cpus[0], *cpus.get(1).unwrap_or(&cpus[0])]
}

#[test]
fn two_cpus_hammering_one_established_flow() {
    const REPEAT: u32 = 20_000;
    const ROUNDS: u64 = 5;
    let h = Harness::default_config();
    let f = Flow::new(0);
    f.establish(&h);
    let before = h.stats();
    // The client's and the server's ACKs, one thread each.
    let frames = [f.c(ACK, 101, 201), f.s(ACK, 201, 101)];
    let prog = SharedProg(&h.skel.progs.xdp_conntrack);
    let prog = &prog;
    std::thread::scope(|s| {
        for (cpu, frame) in two_cpus().into_iter().zip(&frames) {
            s.spawn(move || {
                let mut set = CpuSet::new();
                set.set(cpu).expect("a CPU number");
                sched_setaffinity(Pid::from_raw(0), &set).expect("pinning the thread");
                for _ in 0..ROUNDS {
                    let input = ProgramInput {
                        data_in: Some(frame),
                        repeat: REPEAT,
                        ..Default::default()
                    };
                    let out = prog.0.test_run(input).expect("BPF_PROG_TEST_RUN");
                    assert_eq!(out.return_value, XDP_REDIRECT);
                }
            });
        }
    });
    let sent = 2 * ROUNDS * u64::from(REPEAT);
    let bytes = sent * frames[0].len() as u64;
    let want = [("packets_from_side1", sent), ("bytes_from_side1", bytes)];
    assert_moved(&before, &h.stats(), &want, "concurrent ACKs");
    let t = Track::new(&h, f.tcp_key());
    assert_eq!(view(&h, &t.key), v(ESTABLISHED, REPLIED, ASSURED, f.c));
    // Both storms were retransmissions of one ACK each: whichever ended
    // last left the retransmission timeout.  One ACK from each side in
    // turn ends the streak, and the state's own timeout is back.
    t.fwd(&frames[0], &[], v(ESTABLISHED, REPLIED, ASSURED, f.c));
    t.fwd(&frames[1], &[], v(ESTABLISHED, REPLIED, ASSURED, f.c));
    t.timeout("established");
    // Neither CPU lost the other's window: each side's end is where the
    // handshake left it (seen[] is by direction; the client opened).
    let (_, e) = h.entry(&t.key).expect("the entry");
    let (client, server) = (&e.tcp.seen[0], &e.tcp.seen[1]);
    assert_eq!((client.td_end, server.td_end), (101, 201));
    assert_eq!(h.raw_len(), 1);
}

/// The program's clock state (`struct ct_clock` in its .bss).
fn program_clock(h: &Harness) -> ct_clock {
    h.skel.maps.bss_data.as_deref().expect(".bss").ct_clock
}

/// The drift between re-anchorings that [`assert_reads_clock_monotonic`]
/// allows: 100 ppm over the tracker's one-second re-anchor period.
/// Measured here: jiffies * TICK_NSEC runs 26 ppb slow against
/// CLOCK_MONOTONIC_COARSE (0.105 ns a tick); size and sign follow the
/// machine's NTP state.
const DRIFT_NS: u64 = 100_000;

/// Asserts that `created`, a reading of the program's clock taken between
/// `before` and `after` (CLOCK_MONOTONIC_COARSE in userspace), agrees with
/// CLOCK_MONOTONIC as far as the program's clock promises: to within a
/// tick (conntrack.h).
///
/// The ktime helper reads the coarse clock itself, or the fine clock
/// before 5.11, which runs up to a tick ahead of it: never behind, and at
/// most a tick at HZ=100 ahead.
///
/// The jiffies clock is `jiffies * tick_ns + offset_ns`, the offset
/// anchored to the coarse clock at one instant.  Both move at the tick,
/// but not in lockstep:
/// - the coarse clock moves by the NTP-adjusted tick, not TICK_NSEC, so
///   the two drift apart (DRIFT_NS above) until the next re-anchor;
/// - the coarse clock takes a tick's time only once a whole adjusted tick
///   has elapsed on the clock source, which the kernel checks when it
///   updates jiffies: on the periodic tick of a busy CPU, or whenever an
///   idle CPU wakes.  So `coarse - jiffies * tick_ns` has two values a
///   tick apart, each for a tick or more at a time (here, sampled 1 ms
///   apart with the CPUs idle in between: 40 % of samples at the upper
///   one; busy, always the lower).  An anchor taken at one and a reading
///   at the other are a tick apart, either way;
/// - for microseconds at each tick, jiffies has moved and the coarse
///   clock (and userspace's vDSO copy of it) not yet: a tick more ahead.
///
/// So the program's clock may read a tick (and the drift) behind `before`,
/// and two ticks (and the drift) ahead of `after`.  Over 2,700
/// recalibrations here it read at most 4,000,001 ns behind and 4,000,000 ns
/// ahead.
#[track_caller]
fn assert_reads_clock_monotonic(h: &Harness, created: u64, before: u64, after: u64) {
    let tick = program_clock(h).tick_ns;
    let (behind, ahead) = if tick == 0 {
        (0, 10_000_000)
    } else {
        (tick + DRIFT_NS, 2 * tick + DRIFT_NS)
    };
    assert!(
        before <= created + behind && created <= after + ahead,
        "created {created} outside [{before} - {behind}, {after} + {ahead}] (tick_ns {tick})"
    );
}

/// The SYN's entry was created at the program's `now`: it must read
/// CLOCK_MONOTONIC_COARSE before and after the run as closely as the clock
/// promises, and the deadline must be that plus the SYN_SENT timeout.
fn assert_clock_reads_monotonic(cfg: Config, calibrated: bool) {
    let h = Harness::new(cfg);
    let clock = program_clock(&h);
    assert_eq!(clock.tick_ns != 0, calibrated, "tick_ns {}", clock.tick_ns);
    if calibrated {
        // TICK_NSEC for some HZ between 24 and 1200.
        assert!((833_333..=41_666_667).contains(&clock.tick_ns));
    }
    for i in 0..20 {
        let f = Flow::new(i);
        let before = monotonic_ns();
        assert_eq!(h.run(&f.c(SYN, 100, 0)), XDP_REDIRECT);
        let after = monotonic_ns();
        let (_, e) = h.entry(&f.tcp_key()).expect("the SYN's entry");
        assert_reads_clock_monotonic(&h, e.created, before, after);
        assert_eq!(e.expires, e.created + 120 * 1_000_000_000);
        // Spread the samples over a few ticks.
        let later = after + 2_000_000;
        assert!(wait_for(Duration::from_secs(1), || monotonic_ns() > later));
    }
}

#[test]
fn the_calibrated_jiffies_clock_reads_clock_monotonic() {
    assert_clock_reads_monotonic(test_config(), true);
}

#[test]
fn without_the_jiffies_clock_the_ktime_helper_reads_clock_monotonic() {
    let mut cfg = test_config();
    cfg.features.jiffies = false;
    assert_clock_reads_monotonic(cfg, false);
}

#[test]
fn recalibration_brings_a_drifted_clock_back_to_clock_monotonic() {
    let mut h = Harness::new(test_config());
    // Five seconds of drift, far more than a day's worth here.
    h.advance(Duration::from_secs(5));
    let f = Flow::new(0);
    let before = monotonic_ns();
    assert_eq!(h.run(&f.c(SYN, 100, 0)), XDP_REDIRECT);
    let (_, e) = h.entry(&f.tcp_key()).expect("the SYN's entry");
    assert!(
        e.created >= before + 4_900_000_000,
        "the drift did not show"
    );

    xdp_conntrack::loader::recalibrate_clock(&mut h.skel).expect("recalibrating");
    let g = Flow::new(1);
    let before = monotonic_ns();
    assert_eq!(h.run(&g.c(SYN, 100, 0)), XDP_REDIRECT);
    let after = monotonic_ns();
    let (_, e) = h.entry(&g.tcp_key()).expect("the SYN's entry");
    // Back to CLOCK_MONOTONIC as closely as the clock promises (a tick
    // either way): 5 s of drift left would be far outside that.  Not
    // "never behind": an anchor is a tick off whenever it was taken at the
    // other of the two alignments of jiffies and the coarse clock, and the
    // two drift apart by a nanosecond every few ticks here until the next
    // re-anchor (see assert_reads_clock_monotonic).
    assert_reads_clock_monotonic(&h, e.created, before, after);
}
