//! Packet-level tests of the IPv6 datapath through BPF_PROG_TEST_RUN: the
//! parser (every extension header, truncation at each header boundary,
//! chains too long), ICMPv6 (echo, neighbour discovery, errors), the TCP
//! rules over IPv6, fragments, the checksum stage and the sweep.  Each
//! step checks the verdict, exactly which counters moved and the entry
//! afterwards, as tests/packet.rs does for IPv4.

mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use common::*;
use libbpf_rs::MapCore;
use xdp_conntrack::bpf::types::{ct_key6, ct_tcp_state, ct_timeout};
use xdp_conntrack::counters::Totals;
use xdp_conntrack::format;
use xdp_conntrack::loader::Config;
use xdp_conntrack::packet::{self, icmp_echo, ip_frame, tcp, tcp_flags::*, udp, Endpoint, Ether};
use xdp_conntrack::proto::{IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use xdp_conntrack::settings::parse_timeout;
use xdp_conntrack::table::{self, Conn};

const fn state(s: ct_tcp_state) -> u8 {
    s.0 as u8
}
const NO_STATE: u8 = state(ct_tcp_state::CT_TCP_NONE);
const SYN_SENT: u8 = state(ct_tcp_state::CT_TCP_SYN_SENT);
const SYN_RECV: u8 = state(ct_tcp_state::CT_TCP_SYN_RECV);
const ESTABLISHED: u8 = state(ct_tcp_state::CT_TCP_ESTABLISHED);
const FIN_WAIT: u8 = state(ct_tcp_state::CT_TCP_FIN_WAIT);
const LAST_ACK: u8 = state(ct_tcp_state::CT_TCP_LAST_ACK);
const TIME_WAIT: u8 = state(ct_tcp_state::CT_TCP_TIME_WAIT);
const CLOSE_WAIT: u8 = state(ct_tcp_state::CT_TCP_CLOSE_WAIT);
const CLOSE: u8 = state(ct_tcp_state::CT_TCP_CLOSE);

/// Where the IPv6 header starts, and where the payload behind the fixed
/// header starts, in an untagged frame.
const IP: usize = 14;
const PAYLOAD: usize = IP + 40;

/// Extension header types.
const HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const NONE: u8 = 59;
const DEST: u8 = 60;

fn a(s: &str) -> IpAddr {
    s.parse::<Ipv6Addr>().expect("an IPv6 address").into()
}

fn router() -> IpAddr {
    a("fd03::1")
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    c: Endpoint,
    s: Endpoint,
}

impl Flow {
    fn new(n: u16) -> Self {
        Self {
            c: Endpoint::new(a("fd01::100"), 23420 + n),
            s: Endpoint::new(a("fd02::100"), 8080),
        }
    }

    fn key(&self, proto: u8) -> ct_key6 {
        table::key6_for(
            proto,
            (self.c.addr, self.c.port),
            (self.s.addr, self.s.port),
        )
        .expect("an IPv6 flow")
    }

    fn c(&self, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
        tcp(&Ether::default(), self.c, self.s, flags, seq, ack, b"")
    }

    fn s(&self, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
        tcp(&Ether::default(), self.s, self.c, flags, seq, ack, b"")
    }

    fn c_data(&self, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        tcp(&Ether::default(), self.c, self.s, flags, seq, ack, data)
    }

    fn c_udp(&self, data: &[u8]) -> Vec<u8> {
        udp(&Ether::default(), self.c, self.s, data)
    }

    fn s_udp(&self, data: &[u8]) -> Vec<u8> {
        udp(&Ether::default(), self.s, self.c, data)
    }
}

/// What the tests compare of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    state: u8,
    seen_reply: bool,
    assured: bool,
    orig: IpAddr,
}

fn v(state: u8, seen_reply: bool, assured: bool, orig: IpAddr) -> Option<View> {
    Some(View {
        state,
        seen_reply,
        assured,
        orig,
    })
}

fn view(h: &Harness, key: &ct_key6) -> Option<View> {
    h.entry6(key).map(|(c, _)| View {
        state: c.state,
        seen_reply: c.seen_reply,
        assured: c.assured,
        orig: c.src,
    })
}

/// Asserts that exactly the counters in `want` moved, by those amounts.
#[track_caller]
fn assert_moved(before: &Totals, after: &Totals, want: &[(&str, u64)], what: &str) {
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

/// Runs one IPv6 frame: checks the verdict and that exactly `counted`
/// (+1 each), `ipv6` and, when forwarded, the side-1 rx counters moved.
/// IPv6's share of the counts both families keep moves with them: a drop
/// moves `drops_ipv6`, a fragment `fragments_ipv6`.
#[track_caller]
fn run(h: &Harness, frame: &[u8], verdict: u32, counted: &[&str], what: &str) {
    let before = h.stats();
    assert_eq!(h.run(frame), verdict, "verdict: {what}");
    let mut want: Vec<(&str, u64)> = counted.iter().map(|c| (*c, 1)).collect();
    want.push(("ipv6", 1));
    if verdict != XDP_DROP {
        want.push(("packets_from_side1", 1));
        want.push(("bytes_from_side1", frame.len() as u64));
    } else {
        want.push(("drops_ipv6", 1));
    }
    if counted.contains(&"fragments") {
        want.push(("fragments_ipv6", 1));
    }
    assert_moved(&before, &h.stats(), &want, what);
}

/// [`run`], then the entry under `key` must be `want`.
#[track_caller]
fn step(
    h: &Harness,
    frame: &[u8],
    verdict: u32,
    counted: &[&str],
    key: &ct_key6,
    want: Option<View>,
) {
    run(h, frame, verdict, counted, "this packet");
    assert_eq!(view(h, key), want, "entry after the packet");
}

fn config_with(timeouts: &[&str]) -> Config {
    let mut cfg = test_config();
    for t in timeouts {
        let (slot, secs) = parse_timeout(t).expect("a timeout");
        cfg.timeouts[slot] = secs;
    }
    cfg
}

fn establish(h: &Harness, f: &Flow) {
    let k = f.key(IPPROTO_TCP);
    step(
        h,
        &f.c(SYN, 100, 0),
        XDP_REDIRECT,
        &["new", "new_ipv6"],
        &k,
        v(SYN_SENT, false, false, f.c.addr),
    );
    step(
        h,
        &f.s(SYN | ACK, 200, 101),
        XDP_REDIRECT,
        &[],
        &k,
        v(SYN_RECV, true, false, f.c.addr),
    );
    step(
        h,
        &f.c(ACK, 101, 201),
        XDP_REDIRECT,
        &[],
        &k,
        v(ESTABLISHED, true, true, f.c.addr),
    );
}

// ---------------------------------------------------------------------------
// Building IPv6 frames with extension headers

/// The frame without Ethernet padding: the IPv6 header says how long it is.
fn unpadded(frame: &[u8]) -> Vec<u8> {
    let plen = usize::from(u16::from_be_bytes([frame[IP + 4], frame[IP + 5]]));
    frame[..PAYLOAD + plen].to_vec()
}

fn set_payload_len(frame: &mut [u8], plen: usize) {
    frame[IP + 4..IP + 6].copy_from_slice(&(plen as u16).to_be_bytes());
}

/// An options header (hop-by-hop or destination options) of `len` bytes
/// (a multiple of 8), filled with one option of the experimental type
/// 0x1e, which a receiver skips (Linux refuses PadN over 7 bytes).
fn opts_hdr(len: usize) -> Vec<u8> {
    assert!(len >= 8 && len.is_multiple_of(8));
    let mut h = vec![0, (len / 8 - 1) as u8, 0x1e, (len - 4) as u8];
    h.resize(len, 0);
    h
}

/// A routing header of type 0 with no segments left and one address.
fn routing_hdr() -> Vec<u8> {
    let mut h = vec![0, 2, 0, 0, 0, 0, 0, 0];
    h.extend_from_slice(&[0xfd, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h
}

/// A fragment header: offset in 8-byte units, more fragments, id.
fn frag_hdr(offset: u16, more: bool, id: u32) -> Vec<u8> {
    let fo = offset << 3 | u16::from(more);
    let mut h = vec![0, 0];
    h.extend_from_slice(&fo.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

/// An authentication header of 24 bytes (length field 4: (4 + 2) * 4).
fn auth_hdr() -> Vec<u8> {
    let mut h = vec![0, 4, 0, 0];
    h.extend_from_slice(&0x1234u32.to_be_bytes());
    h.extend_from_slice(&1u32.to_be_bytes());
    h.resize(24, 0xab);
    h
}

/// The table at the moment a packet run between `before` and `after` on
/// the program's clock gave the entry under `k` its `timeout` seconds: its
/// timeout then reads whole, as conntrack lists an entry just touched,
/// however long the test took since (its clock ticks on).  Which packet
/// that was is not always the last: a refresh that would move the
/// deadline by a second or less is skipped (CT_REFRESH_SLACK), so the
/// window must hold every packet since the deadline was last set.
fn table_as_left(h: &Harness, k: &ct_key6, (before, after): (u64, u64), timeout: u64) -> Vec<Conn> {
    let (_, e) = h.entry6(k).expect("the entry");
    let seen = e.expires - timeout * 1_000_000_000;
    assert!(
        (before..=after).contains(&seen),
        "expires at {}: not {timeout} s after the packet ([{before}, {after}])",
        e.expires
    );
    h.conns_at(seen)
}

fn ext(kind: u8) -> (u8, Vec<u8>) {
    match kind {
        HOP => (HOP, opts_hdr(8)),
        DEST => (DEST, opts_hdr(16)),
        ROUTING => (ROUTING, routing_hdr()),
        FRAGMENT => (FRAGMENT, frag_hdr(0, false, 7)),
        AUTH => (AUTH, auth_hdr()),
        _ => unreachable!(),
    }
}

/// `frame` (built without extension headers) with `exts` between the
/// fixed header and the transport header, in that order.  The transport
/// checksum stays right: the pseudo-header has the same addresses and the
/// same upper-layer length.
fn with_exts(frame: &[u8], exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let f = unpadded(frame);
    let mut next = f[IP + 6];
    let mut chain = Vec::new();
    for (kind, body) in exts.iter().rev() {
        let mut b = body.clone();
        b[0] = next;
        next = *kind;
        chain.splice(0..0, b);
    }
    let mut out = f[..PAYLOAD].to_vec();
    out[IP + 6] = next;
    out.extend_from_slice(&chain);
    out.extend_from_slice(&f[PAYLOAD..]);
    let plen = out.len() - PAYLOAD;
    set_payload_len(&mut out, plen);
    out
}

/// An ICMPv6 message of `t`/`code` with a 4-byte `rest` and `body`.
fn icmp6(src: IpAddr, dst: IpAddr, t: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut l4 = vec![t, code, 0, 0];
    l4.extend_from_slice(&rest);
    l4.extend_from_slice(body);
    ip_frame(&Ether::default(), src, dst, IPPROTO_ICMPV6, l4)
}

/// An ICMPv6 error of `t`/`code` from `from` to `to`, quoting the IPv6
/// datagram of `frame` (as much of it as fits a 1280-byte packet).
fn icmp6_error(from: IpAddr, to: IpAddr, t: u8, code: u8, frame: &[u8]) -> Vec<u8> {
    let quote = &unpadded(frame)[IP..];
    let quote = &quote[..quote.len().min(1280 - 48)];
    let rest = if t == 2 {
        1280u32.to_be_bytes()
    } else {
        [0; 4]
    };
    icmp6(from, to, t, code, rest, quote)
}

/// The source address of an untagged IPv6 frame.
fn src_of(frame: &[u8]) -> IpAddr {
    let b: [u8; 16] = frame[IP + 8..IP + 24].try_into().unwrap();
    Ipv6Addr::from(b).into()
}

// ---------------------------------------------------------------------------
// TCP, UDP and ICMPv6 over IPv6

#[test]
fn a_tcp_connection_over_ipv6_lives_and_dies_as_over_ipv4() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let k = f.key(IPPROTO_TCP);
    establish(&h, &f);
    step(
        &h,
        &f.c_data(PSH | ACK, 101, 201, b"hello"),
        XDP_REDIRECT,
        &[],
        &k,
        v(ESTABLISHED, true, true, f.c.addr),
    );
    step(
        &h,
        &f.s(ACK, 201, 106),
        XDP_REDIRECT,
        &[],
        &k,
        v(ESTABLISHED, true, true, f.c.addr),
    );
    step(
        &h,
        &f.c(FIN | ACK, 106, 201),
        XDP_REDIRECT,
        &[],
        &k,
        v(FIN_WAIT, true, true, f.c.addr),
    );
    step(
        &h,
        &f.s(ACK, 201, 107),
        XDP_REDIRECT,
        &[],
        &k,
        v(CLOSE_WAIT, true, true, f.c.addr),
    );
    step(
        &h,
        &f.s(FIN | ACK, 201, 107),
        XDP_REDIRECT,
        &[],
        &k,
        v(LAST_ACK, true, true, f.c.addr),
    );
    let before = h.now();
    step(
        &h,
        &f.c(ACK, 107, 202),
        XDP_REDIRECT,
        &[],
        &k,
        v(TIME_WAIT, true, true, f.c.addr),
    );
    // The table lists it as conntrack does, compressed addresses and all.
    let conns = table_as_left(&h, &k, (before, h.now()), 120);
    assert_eq!(conns.len(), 1);
    let line = format::conntrack_line(&conns[0]);
    assert!(
        line.starts_with("tcp      6 120 TIME_WAIT src=fd01::100 dst=fd02::100 sport=23420 dport=8080 src=fd02::100 dst=fd01::100 sport=8080 dport=23420 [ASSURED] mark=0 use=1"),
        "{line}"
    );
}

#[test]
fn tcp_rules_hold_over_ipv6() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let k = f.key(IPPROTO_TCP);
    // With no connection: SYN-ACK, FIN and RST are INVALID, a bad flag
    // combination too.
    for (what, frame) in [
        ("SYN-ACK", f.s(SYN | ACK, 200, 101)),
        ("FIN", f.c(FIN | ACK, 100, 0)),
        ("RST", f.c(RST, 100, 0)),
        ("SYN|FIN", f.c(SYN | FIN, 100, 0)),
    ] {
        run(&h, &frame, XDP_DROP, &["invalid"], what);
        assert_eq!(view(&h, &k), None, "{what}");
    }
    establish(&h, &f);
    let es = v(ESTABLISHED, true, true, f.c.addr);
    // Data far beyond the window, an ACK of data never sent and a blind
    // RST are INVALID; the connection stays.
    step(
        &h,
        &f.c_data(ACK, 101 + 10_000_000, 201, b"x"),
        XDP_DROP,
        &["invalid"],
        &k,
        es,
    );
    step(
        &h,
        &f.c(ACK, 101, 201 + 10_000_000),
        XDP_DROP,
        &["invalid"],
        &k,
        es,
    );
    step(&h, &f.s(RST, 5_000_000, 0), XDP_DROP, &["invalid"], &k, es);
    // A RST in the window closes it (an assured entry stays, in CLOSE).
    step(
        &h,
        &f.s(RST, 201, 0),
        XDP_REDIRECT,
        &[],
        &k,
        v(CLOSE, true, true, f.c.addr),
    );

    // A mid-stream ACK is picked up (nf_conntrack_tcp_loose), or dropped
    // under --strict.
    let g = Flow::new(1);
    let kg = g.key(IPPROTO_TCP);
    step(
        &h,
        &g.c(ACK, 5000, 7000),
        XDP_REDIRECT,
        &["new", "new_ipv6"],
        &kg,
        v(ESTABLISHED, false, false, g.c.addr),
    );
    let mut strict = test_config();
    strict.strict = true;
    let hs = Harness::new(strict);
    run(
        &hs,
        &g.c(ACK, 5000, 7000),
        XDP_DROP,
        &["strict_drops"],
        "--strict",
    );
}

#[test]
fn udp_over_ipv6_becomes_a_stream_after_two_seconds() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let k = f.key(IPPROTO_UDP);
    step(
        &h,
        &f.c_udp(b"q"),
        XDP_REDIRECT,
        &["new", "new_ipv6"],
        &k,
        v(NO_STATE, false, false, f.c.addr),
    );
    step(
        &h,
        &f.s_udp(b"a"),
        XDP_REDIRECT,
        &[],
        &k,
        v(NO_STATE, true, false, f.c.addr),
    );
    h.advance(Duration::from_secs(3));
    step(
        &h,
        &f.c_udp(b"q"),
        XDP_REDIRECT,
        &[],
        &k,
        v(NO_STATE, true, true, f.c.addr),
    );
    let (_, e) = h.entry6(&k).unwrap();
    let stream = u64::from(test_config().timeouts[ct_timeout::CT_TO_UDP_STREAM.0 as usize]);
    let left = (e.expires - h.now()) / 1_000_000_000;
    assert!(
        (stream - 1..=stream).contains(&left),
        "{left} s left, not udp_stream's {stream}"
    );
}

#[test]
fn icmpv6_echo_is_tracked_by_id_and_an_unsolicited_reply_is_invalid() {
    let h = Harness::default_config();
    let (c, s) = (a("fd00::1"), a("fd00::2"));
    let k = table::icmp6_key(c, s, 21791).unwrap();
    let req = icmp_echo(&Ether::default(), c, s, 128, 21791, 1);
    let rep = icmp_echo(&Ether::default(), s, c, 129, 21791, 1);
    let before = h.now();
    step(
        &h,
        &req,
        XDP_REDIRECT,
        &["new", "new_ipv6"],
        &k,
        v(NO_STATE, false, false, c),
    );
    // The reply half a second later: inside the refresh slack, so the
    // request's deadline stands, and the line must read from it.
    let set = h.entry6(&k).expect("the entry").1.expires;
    h.advance(Duration::from_millis(500));
    step(&h, &rep, XDP_REDIRECT, &[], &k, v(NO_STATE, true, false, c));
    assert_eq!(h.entry6(&k).expect("the entry").1.expires, set);
    let line = format::conntrack_line(&table_as_left(&h, &k, (before, h.now()), 30)[0]);
    assert_eq!(
        line,
        "icmpv6   58 30 src=fd00::1 dst=fd00::2 type=128 code=0 id=21791 \
         src=fd00::2 dst=fd00::1 type=129 code=0 id=21791 mark=0 use=1"
    );
    // A reply nobody asked for, a request's reply with another id, and a
    // request the other way are each their own matter.
    let stray = icmp_echo(&Ether::default(), s, c, 129, 999, 1);
    run(&h, &stray, XDP_DROP, &["invalid"], "unsolicited echo reply");
    let back = icmp_echo(&Ether::default(), s, c, 128, 21791, 1);
    run(
        &h,
        &back,
        XDP_REDIRECT,
        &["new", "new_ipv6"],
        "echo request the other way",
    );
    assert_eq!(h.conns().len(), 2);
    // Node information queries (139) pair with their replies (140).
    let ni = icmp6(c, s, 139, 0, [0, 5, 0, 0], &[0; 8]);
    let nk = table::icmp6_query_key(c, s, 139, 0, 5).unwrap();
    step(
        &h,
        &ni,
        XDP_REDIRECT,
        &["new", "new_ipv6"],
        &nk,
        v(NO_STATE, false, false, c),
    );
    let nr = icmp6(s, c, 140, 0, [0, 5, 0, 0], &[0; 8]);
    step(&h, &nr, XDP_REDIRECT, &[], &nk, v(NO_STATE, true, false, c));
}

#[test]
fn neighbour_discovery_router_and_mld_messages_pass_untracked() {
    let h = Harness::default_config();
    let (c, s) = (a("fe80::1"), a("ff02::1:ff00:2"));
    for t in [130u8, 131, 132, 133, 134, 135, 136, 143, 151, 152] {
        let m = icmp6(c, s, t, 0, [0; 4], &[0; 16]);
        run(&h, &m, XDP_REDIRECT, &["untracked"], &format!("type {t}"));
    }
    // A wrong checksum is checked first, as nf_conntrack_icmpv6_error()
    // does.
    let mut ns = icmp6(c, s, 135, 0, [0; 4], &[0; 16]);
    ns[PAYLOAD + 2] ^= 0x55;
    run(
        &h,
        &ns,
        XDP_DROP,
        &["invalid"],
        "neighbour solicitation, bad checksum",
    );
    // Types the kernel neither tracks nor skips (a redirect, say) have no
    // inverse tuple: INVALID.
    for t in [137u8, 138, 141, 142, 144, 153, 200, 255] {
        let m = icmp6(c, s, t, 0, [0; 4], &[0; 16]);
        run(&h, &m, XDP_DROP, &["invalid"], &format!("type {t}"));
    }
    assert_eq!(h.raw_len(), 0);
}

// ---------------------------------------------------------------------------
// Extension headers

#[test]
fn every_extension_header_is_walked_to_the_transport_header() {
    let h = Harness::default_config();
    for (n, kinds) in [
        vec![HOP],
        vec![DEST],
        vec![ROUTING],
        vec![FRAGMENT],
        vec![AUTH],
        vec![HOP, DEST, ROUTING, FRAGMENT, AUTH, DEST],
    ]
    .into_iter()
    .enumerate()
    {
        let f = Flow::new(n as u16);
        let exts: Vec<_> = kinds.iter().map(|k| ext(*k)).collect();
        let k = f.key(IPPROTO_TCP);
        step(
            &h,
            &with_exts(&f.c(SYN, 100, 0), &exts),
            XDP_REDIRECT,
            &["new", "new_ipv6"],
            &k,
            v(SYN_SENT, false, false, f.c.addr),
        );
        step(
            &h,
            &with_exts(&f.s(SYN | ACK, 200, 101), &exts),
            XDP_REDIRECT,
            &[],
            &k,
            v(SYN_RECV, true, false, f.c.addr),
        );
        // A checksum the extension headers hide is still found.
        let mut bad = with_exts(&f.c(ACK, 101, 201), &exts);
        let l4 = bad.len() - 20;
        bad[l4 + 16] ^= 0x55;
        step(
            &h,
            &bad,
            XDP_DROP,
            &["invalid"],
            &k,
            v(SYN_RECV, true, false, f.c.addr),
        );
        step(
            &h,
            &with_exts(&f.c(ACK, 101, 201), &exts),
            XDP_REDIRECT,
            &[],
            &k,
            v(ESTABLISHED, true, true, f.c.addr),
        );
        // UDP behind the same chain.
        let ku = f.key(IPPROTO_UDP);
        step(
            &h,
            &with_exts(&f.c_udp(b"x"), &exts),
            XDP_REDIRECT,
            &["new", "new_ipv6"],
            &ku,
            v(NO_STATE, false, false, f.c.addr),
        );
    }
}

#[test]
fn a_chain_of_eight_headers_is_walked_and_nine_is_malformed() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let eight: Vec<_> = (0..8).map(|_| ext(DEST)).collect();
    let k = f.key(IPPROTO_TCP);
    step(
        &h,
        &with_exts(&f.c(SYN, 100, 0), &eight),
        XDP_REDIRECT,
        &["new", "new_ipv6"],
        &k,
        v(SYN_SENT, false, false, f.c.addr),
    );
    let g = Flow::new(1);
    let nine: Vec<_> = (0..9).map(|_| ext(DEST)).collect();
    step(
        &h,
        &with_exts(&g.c(SYN, 100, 0), &nine),
        XDP_DROP,
        &["malformed"],
        &g.key(IPPROTO_TCP),
        None,
    );
}

#[test]
fn truncation_at_every_header_boundary_is_dropped() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    // Every kind of header the walk knows; the fragment header is an
    // atomic one (offset 0, no more fragments), a whole datagram.
    let exts: Vec<_> = [HOP, DEST, ROUTING, FRAGMENT, AUTH]
        .iter()
        .map(|k| ext(*k))
        .collect();
    let full = with_exts(&f.c(SYN, 100, 0), &exts);
    let bounds: Vec<usize> = std::iter::once(0)
        .chain(exts.iter().scan(0, |at, (_, body)| {
            *at += body.len();
            Some(*at)
        }))
        .collect();
    assert_eq!(
        bounds,
        [
            0,
            8,
            8 + 16,
            8 + 16 + 24,
            8 + 16 + 24 + 8,
            8 + 16 + 24 + 8 + 24
        ]
    );
    for (i, &b) in bounds.iter().enumerate() {
        // The payload ends where a header starts, and in its middle.
        for cut in [b, b + 4] {
            let mut t = full[..PAYLOAD + cut].to_vec();
            set_payload_len(&mut t, cut);
            // Behind the last extension header is TCP: cut there it is a
            // short transport header (tcp_error()'s "short packet").
            let counter = if i == bounds.len() - 1 {
                "invalid"
            } else {
                "malformed"
            };
            run(
                &h,
                &t,
                XDP_DROP,
                &[counter],
                &format!("payload cut at {cut}"),
            );
            // The same cut by the frame, the header claiming the rest.
            let mut t = full[..PAYLOAD + cut].to_vec();
            t.resize(t.len().max(60), 0);
            run(
                &h,
                &t,
                XDP_DROP,
                &["malformed"],
                &format!("frame cut at {cut}"),
            );
        }
    }
    // The fixed header itself cut short, and the wrong version.
    run(
        &h,
        &full[..PAYLOAD - 1],
        XDP_DROP,
        &["malformed"],
        "IPv6 header cut",
    );
    let mut v4 = full.clone();
    v4[IP] = 0x40;
    run(
        &h,
        &v4,
        XDP_DROP,
        &["malformed"],
        "version 4 in an IPv6 frame",
    );
    assert_eq!(h.raw_len(), 0);
}

#[test]
fn no_next_header_is_invalid_and_a_header_past_the_datagram_malformed() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    // Hop-by-hop, then nothing.
    let mut none = with_exts(&f.c(SYN, 100, 0), &[ext(HOP)]);
    none[PAYLOAD] = NONE;
    run(&h, &none, XDP_DROP, &["invalid"], "no next header");
    // A destination options header whose length runs past the datagram.
    let mut long = with_exts(&f.c(SYN, 100, 0), &[ext(DEST)]);
    long[PAYLOAD + 1] = 200;
    run(
        &h,
        &long,
        XDP_DROP,
        &["malformed"],
        "header longer than the datagram",
    );
    assert_eq!(h.raw_len(), 0);
}

// ---------------------------------------------------------------------------
// Fragments

#[test]
fn ipv6_fragments_track_a_udp_datagram_by_its_first_and_count_the_rest() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let k = f.key(IPPROTO_UDP);
    // The first fragment carries the UDP header of a longer datagram, and
    // a checksum over all of it: tracked, neither judged.
    let mut udp = f.c_udp(&[7; 64]);
    udp[PAYLOAD + 4..PAYLOAD + 6].copy_from_slice(&(8u16 + 1448).to_be_bytes());
    udp[PAYLOAD + 6..PAYLOAD + 8].copy_from_slice(&0x1234u16.to_be_bytes());
    let first = with_exts(&udp, &[(FRAGMENT, frag_hdr(0, true, 9))]);
    let unreplied = v(NO_STATE, false, false, f.c.addr);
    step(
        &h,
        &first,
        XDP_REDIRECT,
        &["new", "new_ipv6", "fragments"],
        &k,
        unreplied,
    );
    for (what, hdr) in [
        ("middle fragment", frag_hdr(181, true, 9)),
        ("last fragment", frag_hdr(362, false, 9)),
    ] {
        let frame = with_exts(&f.c_udp(b"rest"), &[(FRAGMENT, hdr)]);
        run(&h, &frame, XDP_REDIRECT, &["fragments"], what);
    }
    // Behind other headers too.
    let frame = with_exts(
        &f.c_udp(b"rest"),
        &[ext(HOP), (FRAGMENT, frag_hdr(185, false, 9))],
    );
    run(
        &h,
        &frame,
        XDP_REDIRECT,
        &["fragments"],
        "behind hop-by-hop",
    );
    step(
        &h,
        &f.s_udp(b"answer"),
        XDP_REDIRECT,
        &[],
        &k,
        v(NO_STATE, true, false, f.c.addr),
    );
    // A TCP segment's fragments all pass untracked: its window checks
    // need the segment's whole length.
    let syn = with_exts(&f.c(SYN, 100, 0), &[(FRAGMENT, frag_hdr(0, true, 10))]);
    run(
        &h,
        &syn,
        XDP_REDIRECT,
        &["fragments"],
        "first fragment of a TCP SYN",
    );
    assert_eq!(view(&h, &f.key(IPPROTO_TCP)), None);
    // An atomic fragment is no fragment: tracked and checked as a packet.
    let mut atomic = with_exts(&f.c(SYN, 100, 0), &[ext(FRAGMENT)]);
    let l4 = atomic.len() - 20;
    atomic[l4 + 16] ^= 0x55;
    run(
        &h,
        &atomic,
        XDP_DROP,
        &["invalid"],
        "atomic fragment, bad checksum",
    );
}

// ---------------------------------------------------------------------------
// ICMPv6 errors

#[test]
fn icmpv6_errors_about_tracked_flows_are_related_and_others_invalid() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    establish(&h, &f);
    let k = f.key(IPPROTO_TCP);
    let es = v(ESTABLISHED, true, true, f.c.addr);
    let data = f.c_data(PSH | ACK, 101, 201, &[0x42; 1400]);
    // Packet Too Big goes back to the sender of the big segment; each
    // error kind about the connection is RELATED, and changes nothing.
    for (t, code) in [(2u8, 0u8), (1, 4), (1, 0), (1, 3), (3, 0), (4, 0)] {
        let e = icmp6_error(router(), f.c.addr, t, code, &data);
        step(&h, &e, XDP_REDIRECT, &["related"], &k, es);
    }
    // From the server's side, about its own segment.
    let back = icmp6_error(router(), f.s.addr, 1, 4, &f.s(ACK, 201, 101));
    step(&h, &back, XDP_REDIRECT, &["related"], &k, es);
    // Sent to the wrong end, about an untracked flow, or with a wrong
    // checksum: INVALID.
    let wrong = icmp6_error(router(), f.s.addr, 2, 0, &data);
    step(&h, &wrong, XDP_DROP, &["invalid"], &k, es);
    let g = Flow::new(1);
    let other = icmp6_error(router(), g.c.addr, 2, 0, &g.c(SYN, 1, 0));
    run(
        &h,
        &other,
        XDP_DROP,
        &["invalid"],
        "about an untracked flow",
    );
    let mut bad = icmp6_error(router(), f.c.addr, 2, 0, &data);
    bad[PAYLOAD + 2] ^= 0x55;
    step(&h, &bad, XDP_DROP, &["invalid"], &k, es);
    // A quote with extension headers is walked like a packet.
    let quoted = with_exts(&f.c(ACK, 101, 201), &[ext(HOP), ext(DEST)]);
    let e = icmp6_error(router(), src_of(&quoted), 1, 3, &quoted);
    step(&h, &e, XDP_REDIRECT, &["related"], &k, es);
    // A quoted later fragment has no ports: INVALID.
    let frag = with_exts(&f.c(ACK, 101, 201), &[(FRAGMENT, frag_hdr(185, false, 3))]);
    let e = icmp6_error(router(), f.c.addr, 3, 1, &frag);
    step(&h, &e, XDP_DROP, &["invalid"], &k, es);
    // A quote cut before the ports.
    let short = icmp6(
        router(),
        f.c.addr,
        1,
        4,
        [0; 4],
        &unpadded(&data)[IP..IP + 42],
    );
    step(&h, &short, XDP_DROP, &["invalid"], &k, es);
}

#[test]
fn icmpv6_errors_about_udp_and_echo_are_related() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    let ku = f.key(IPPROTO_UDP);
    let q = f.c_udp(b"q");
    step(
        &h,
        &q,
        XDP_REDIRECT,
        &["new", "new_ipv6"],
        &ku,
        v(NO_STATE, false, false, f.c.addr),
    );
    // Port unreachable from the server itself.
    let pu = icmp6_error(f.s.addr, f.c.addr, 1, 4, &q);
    step(
        &h,
        &pu,
        XDP_REDIRECT,
        &["related"],
        &ku,
        v(NO_STATE, false, false, f.c.addr),
    );
    // About an echo request.
    let (c, s) = (f.c.addr, f.s.addr);
    let req = icmp_echo(&Ether::default(), c, s, 128, 77, 1);
    run(&h, &req, XDP_REDIRECT, &["new", "new_ipv6"], "echo");
    let te = icmp6_error(router(), c, 3, 0, &req);
    run(
        &h,
        &te,
        XDP_REDIRECT,
        &["related"],
        "time exceeded about an echo",
    );
    // About an error, or about a neighbour solicitation: no connection.
    let about_err = icmp6_error(s, router(), 1, 0, &te);
    run(
        &h,
        &about_err,
        XDP_DROP,
        &["invalid"],
        "error about an error",
    );
    let ns = icmp6(c, s, 135, 0, [0; 4], &[0; 16]);
    let about_ns = icmp6_error(router(), c, 1, 0, &ns);
    run(
        &h,
        &about_ns,
        XDP_DROP,
        &["invalid"],
        "error about a neighbour solicitation",
    );
}

// ---------------------------------------------------------------------------
// The table

#[test]
fn both_sweeps_remove_expired_ipv6_entries() {
    for for_each in [true, false] {
        let mut cfg = config_with(&["syn_sent=1"]);
        cfg.features.for_each = for_each;
        let h = Harness::new(cfg);
        let f = Flow::new(0);
        run(
            &h,
            &f.c(SYN, 100, 0),
            XDP_REDIRECT,
            &["new", "new_ipv6"],
            "SYN",
        );
        run(
            &h,
            &f.c_udp(b"x"),
            XDP_REDIRECT,
            &["new", "new_ipv6"],
            "UDP",
        );
        h.advance(Duration::from_secs(2));
        assert_eq!(h.raw_len(), 2);
        let before = h.stats();
        h.sweep();
        assert_moved(&before, &h.stats(), &[("swept", 1)], "sweep");
        assert_eq!(h.raw_len(), 1, "for_each {for_each}");
        assert_eq!(
            view(&h, &f.key(IPPROTO_UDP)),
            v(NO_STATE, false, false, f.c.addr)
        );
    }
}

#[test]
fn the_two_families_keep_separate_tables() {
    let h = Harness::default_config();
    let f = Flow::new(0);
    establish(&h, &f);
    let v4 = packet::tcp(
        &Ether::default(),
        Endpoint::new(std::net::Ipv4Addr::new(10, 1, 1, 100), 23420),
        Endpoint::new(std::net::Ipv4Addr::new(10, 2, 2, 100), 8080),
        SYN,
        100,
        0,
        b"",
    );
    let before = h.stats();
    assert_eq!(h.run(&v4), XDP_REDIRECT);
    assert_moved(
        &before,
        &h.stats(),
        &[
            ("new", 1),
            ("packets_from_side1", 1),
            ("bytes_from_side1", v4.len() as u64),
        ],
        "an IPv4 SYN",
    );
    assert_eq!(h.skel.maps.ct_table.keys().count(), 1);
    assert_eq!(h.skel.maps.ct_table6.keys().count(), 1);
    let mut conns: Vec<_> = h.conns().iter().map(|c| c.src.is_ipv6()).collect();
    conns.sort();
    assert_eq!(conns, [false, true]);
}
