//! Packet-level tests of the checksum checks (csum.h), through the real XDP
//! program with BPF_PROG_TEST_RUN: after every frame the verdict, exactly
//! which counters moved, and the entry.  The rules are the kernel's:
//!   - a wrong IPv4 header checksum is dropped by ip_rcv() before
//!     conntrack: dropped here and counted `malformed`;
//!   - a wrong TCP, UDP or ICMP checksum is INVALID (tcp_error(),
//!     udp_error(), nf_conntrack_icmpv4_error() while
//!     nf_conntrack_checksum=1): dropped, counted `invalid`, and the table
//!     is left as it was; a UDP checksum of 0 means none;
//!   - `--no-checksum` (nf_conntrack_checksum=0) tracks them all, but the
//!     IP header check stays.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use xdp_conntrack::bpf::types::{ct_key, ct_tcp_state};
use xdp_conntrack::counters::Totals;
use xdp_conntrack::loader::{Config, Features};
use xdp_conntrack::packet::{
    self, corrupt_ip_checksum, corrupt_l4_checksum, icmp_echo, ip_frame, tcp, tcp_flags::*, udp,
    without_udp_checksum, Endpoint, Ether,
};
use xdp_conntrack::proto::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use xdp_conntrack::table;

/// Offset of the IPv4 header in an untagged frame, and of the transport
/// header behind a 20-byte IPv4 header.
const IP: usize = 14;
const L4: usize = IP + 20;

/// A TCP state's number.
const fn st(s: ct_tcp_state) -> u8 {
    s.0 as u8
}
const NONE: u8 = st(ct_tcp_state::CT_TCP_NONE);
const SYN_SENT: u8 = st(ct_tcp_state::CT_TCP_SYN_SENT);
const SYN_RECV: u8 = st(ct_tcp_state::CT_TCP_SYN_RECV);
const ESTABLISHED: u8 = st(ct_tcp_state::CT_TCP_ESTABLISHED);
const FIN_WAIT: u8 = st(ct_tcp_state::CT_TCP_FIN_WAIT);
const CLOSE: u8 = st(ct_tcp_state::CT_TCP_CLOSE);

fn client() -> Endpoint {
    Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 23420)
}

fn server() -> Endpoint {
    Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080)
}

fn key(proto: u8, c: Endpoint, s: Endpoint) -> ct_key {
    table::key_for(proto, (c.addr, c.port), (s.addr, s.port)).expect("an IPv4 flow")
}

/// A segment from `from` to `to`.
fn seg(from: Endpoint, to: Endpoint, flags: u8, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
    tcp(&Ether::default(), from, to, flags, seq, ack, data)
}

/// What the tests compare of an entry: (TCP state, seen a reply, assured).
type View = (u8, bool, bool);

fn view(h: &Harness, key: &ct_key) -> Option<View> {
    h.entry(key)
        .map(|(c, _)| (c.state, c.seen_reply, c.assured))
}

/// Runs one frame from side 1 and checks its XDP action and that exactly
/// the counters in `counted` moved by one each (plus the side-1 rx
/// counters when it is forwarded).
#[track_caller]
fn run(h: &Harness, frame: &[u8], action: u32, counted: &[&str], what: &str) {
    let before = h.stats();
    assert_eq!(h.run(frame), action, "action: {what}");
    let mut want: Vec<(String, u64)> = counted.iter().map(|c| (c.to_string(), 1)).collect();
    if action == XDP_REDIRECT {
        want.push(("packets_from_side1".into(), 1));
        want.push(("bytes_from_side1".into(), frame.len() as u64));
    }
    assert_moved(&before, &h.stats(), want, what);
}

#[track_caller]
fn assert_moved(before: &Totals, after: &Totals, mut want: Vec<(String, u64)>, what: &str) {
    let mut moved: Vec<(String, u64)> = after
        .named()
        .zip(before.named())
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, b)| (a.0, a.1 - b.1))
        .collect();
    moved.sort_unstable();
    want.sort_unstable();
    assert_eq!(moved, want, "counters that moved: {what}");
}

/// A frame that must be forwarded, leaving the entry under `key` as `want`.
#[track_caller]
fn fwd(h: &Harness, frame: &[u8], counted: &[&str], key: &ct_key, want: Option<View>) {
    run(h, frame, XDP_REDIRECT, counted, "a good frame");
    assert_eq!(view(h, key), want, "entry after a good frame");
}

/// A frame with a wrong transport checksum: INVALID, and the entry under
/// `key` stays as it was.
#[track_caller]
fn invalid(h: &Harness, frame: &[u8], key: &ct_key) {
    let was = view(h, key);
    let raw = h.raw_len();
    run(h, frame, XDP_DROP, &["invalid"], "a wrong checksum");
    assert_eq!(view(h, key), was, "entry after a wrong checksum");
    assert_eq!(h.raw_len(), raw, "table size after a wrong checksum");
}

fn without_checksums() -> Harness {
    Harness::new(Config {
        checksum: false,
        ..test_config()
    })
}

// ---------------------------------------------------------------------------
// TCP

#[test]
fn tcp_with_a_wrong_checksum_neither_opens_nor_moves_nor_closes() {
    let h = Harness::default_config();
    let (c, s) = (client(), server());
    let k = key(IPPROTO_TCP, c, s);
    let syn = seg(c, s, SYN, 100, 0, b"");
    invalid(&h, &corrupt_l4_checksum(&syn), &k);
    assert_eq!(
        view(&h, &k),
        None,
        "a SYN with a wrong checksum opens nothing"
    );
    fwd(&h, &syn, &["new"], &k, Some((SYN_SENT, false, false)));

    let synack = seg(s, c, SYN | ACK, 200, 101, b"");
    invalid(&h, &corrupt_l4_checksum(&synack), &k);
    fwd(&h, &synack, &[], &k, Some((SYN_RECV, true, false)));
    let ack = seg(c, s, ACK, 101, 201, b"");
    invalid(&h, &corrupt_l4_checksum(&ack), &k);
    fwd(&h, &ack, &[], &k, Some((ESTABLISHED, true, true)));

    // Established: data (the lock-free fast path), FIN and RST with wrong
    // checksums change nothing.
    let data = seg(c, s, PSH | ACK, 101, 201, b"hello, world");
    invalid(&h, &corrupt_l4_checksum(&data), &k);
    let fin = seg(c, s, FIN | ACK, 113, 201, b"");
    invalid(&h, &corrupt_l4_checksum(&fin), &k);
    let rst = seg(s, c, RST, 201, 0, b"");
    invalid(&h, &corrupt_l4_checksum(&rst), &k);
    assert_eq!(view(&h, &k), Some((ESTABLISHED, true, true)));

    fwd(&h, &data, &[], &k, Some((ESTABLISHED, true, true)));
    fwd(&h, &fin, &[], &k, Some((FIN_WAIT, true, true)));
    fwd(&h, &rst, &[], &k, Some((CLOSE, true, true)));
}

#[test]
fn a_wrong_checksum_does_not_refresh_the_deadline() {
    let h = Harness::default_config();
    let (c, s) = (client(), server());
    let k = key(IPPROTO_TCP, c, s);
    for f in [
        seg(c, s, SYN, 100, 0, b""),
        seg(s, c, SYN | ACK, 200, 101, b""),
        seg(c, s, ACK, 101, 201, b""),
    ] {
        assert_eq!(h.run(&f), XDP_REDIRECT);
    }
    let left = |h: &Harness| h.entry(&k).expect("the entry").0.timeout;
    let full = left(&h);
    h.advance(Duration::from_secs(1000));
    invalid(&h, &corrupt_l4_checksum(&seg(c, s, ACK, 101, 201, b"")), &k);
    assert!(left(&h) <= full - 999, "{} s left of {full}", left(&h));
    // A bare ACK: data nobody acknowledged yet would shorten the timeout
    // to the unacknowledged one, as the kernel does.
    run(
        &h,
        &seg(c, s, ACK, 101, 201, b""),
        XDP_REDIRECT,
        &[],
        "good",
    );
    assert!(left(&h) + 2 >= full, "{} s left of {full}", left(&h));
}

// ---------------------------------------------------------------------------
// UDP

#[test]
fn udp_with_a_wrong_checksum_is_invalid_and_without_one_is_fine() {
    let h = Harness::default_config();
    let eth = Ether::default();
    let (c, s) = (client(), server());
    let k = key(IPPROTO_UDP, c, s);
    let request = udp(&eth, c, s, b"query");
    invalid(&h, &corrupt_l4_checksum(&request), &k);
    assert_eq!(view(&h, &k), None);
    fwd(&h, &request, &["new"], &k, Some((NONE, false, false)));
    let reply = udp(&eth, s, c, b"answer");
    invalid(&h, &corrupt_l4_checksum(&reply), &k);
    assert_eq!(view(&h, &k), Some((NONE, false, false)), "still unreplied");
    // Checksum 0: none was computed, which IPv4 allows.
    let bare = without_udp_checksum(&reply);
    assert_eq!(&bare[L4 + 6..L4 + 8], &[0, 0]);
    fwd(&h, &bare, &[], &k, Some((NONE, true, false)));
    // A new flow may start without one too.
    let d = Endpoint::new(c.addr, 5353);
    let k2 = key(IPPROTO_UDP, d, s);
    let bare = without_udp_checksum(&udp(&eth, d, s, b"no sum"));
    fwd(&h, &bare, &["new"], &k2, Some((NONE, false, false)));
}

#[test]
fn the_sum_covers_the_ip_payload_not_the_udp_length_nor_the_padding() {
    let h = Harness::default_config();
    let eth = Ether::default();
    let (c, s) = (client(), server());
    // A short datagram in a frame padded to 60 bytes: the padding is not
    // the datagram's, whatever it holds.
    let mut padded = udp(&eth, c, s, b"hi");
    assert_eq!(padded.len(), 60);
    padded[L4 + 10..].fill(0xa5);
    run(&h, &padded, XDP_REDIRECT, &["new"], "padding is not summed");

    // The IP payload holds 4 bytes past the UDP length: nf_checksum()
    // sums the whole payload (and its length in the pseudo-header), so a
    // checksum over the UDP length alone does not verify.
    let d = Endpoint::new(c.addr, 4000);
    let mut longer = udp(&eth, d, s, b"ping");
    let tot = u16::from_be_bytes([longer[IP + 2], longer[IP + 3]]) + 4;
    longer[IP + 2..IP + 4].copy_from_slice(&tot.to_be_bytes());
    longer[L4 + 12..L4 + 16].copy_from_slice(b"more");
    let sum = packet::checksum(&longer[IP..L4], 0);
    longer[IP + 10..IP + 12].copy_from_slice(&(!sum).wrapping_add(0).to_be_bytes());
    fix_ip_header(&mut longer);
    run(
        &h,
        &longer,
        XDP_DROP,
        &["invalid"],
        "checksum over the UDP length",
    );
    // The same datagram with its checksum over the whole payload passes.
    packet::fix_checksums(&mut longer);
    run(
        &h,
        &longer,
        XDP_REDIRECT,
        &["new"],
        "checksum over the payload",
    );
}

/// Recomputes only the IPv4 header checksum of an untagged frame.
fn fix_ip_header(frame: &mut [u8]) {
    let hlen = usize::from(frame[IP] & 0x0f) * 4;
    frame[IP + 10..IP + 12].fill(0);
    let c = packet::checksum(&frame[IP..IP + hlen], 0);
    frame[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
}

// ---------------------------------------------------------------------------
// ICMP

/// Destination unreachable (type 3) from `router` about `frame`'s
/// datagram, quoting its IP header and 8 bytes.
fn unreachable(router: Ipv4Addr, code: u8, frame: &[u8]) -> Vec<u8> {
    let to = Ipv4Addr::new(
        frame[IP + 12],
        frame[IP + 13],
        frame[IP + 14],
        frame[IP + 15],
    );
    let mut l4 = vec![3, code, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(&frame[IP..L4 + 8]);
    ip_frame(&Ether::default(), router, to, IPPROTO_ICMP, l4)
}

#[test]
fn icmp_of_every_type_with_a_wrong_checksum_is_invalid() {
    let h = Harness::default_config();
    let eth = Ether::default();
    let (c, s) = (client().addr, server().addr);
    let k = table::icmp_key(c, s, 7).unwrap();
    let request = icmp_echo(&eth, c, s, 8, 7, 1);
    invalid(&h, &corrupt_l4_checksum(&request), &k);
    assert_eq!(view(&h, &k), None);
    fwd(&h, &request, &["new"], &k, Some((NONE, false, false)));
    let reply = icmp_echo(&eth, s, c, 0, 7, 1);
    invalid(&h, &corrupt_l4_checksum(&reply), &k);
    assert_eq!(view(&h, &k), Some((NONE, false, false)), "still unreplied");
    fwd(&h, &reply, &[], &k, Some((NONE, true, false)));

    // Other types are checked all the same, before the type is looked
    // at: an error about a tracked flow (RELATED when right), and a
    // timestamp request (tracked like echo when right).
    let udp_flow = udp(&eth, client(), server(), b"x");
    assert_eq!(
        h.run(&udp_flow),
        XDP_REDIRECT,
        "the flow the error is about"
    );
    let error = unreachable(Ipv4Addr::new(10, 9, 9, 1), 3, &udp_flow);
    let mut stamp = vec![13, 0, 0, 0, 0, 1, 0, 1];
    stamp.extend_from_slice(&[0; 12]);
    let stamp = ip_frame(&eth, c, s, IPPROTO_ICMP, stamp);
    for (what, frame) in [("unreachable", error), ("timestamp", stamp)] {
        let before = h.raw_len();
        run(
            &h,
            &corrupt_l4_checksum(&frame),
            XDP_DROP,
            &["invalid"],
            what,
        );
        assert_eq!(h.raw_len(), before);
        // Right, it goes on as before this check.
        let verdict = h.run(&frame);
        assert_eq!(verdict, XDP_REDIRECT, "{what} with a good checksum");
    }
}

// ---------------------------------------------------------------------------
// The IPv4 header

#[test]
fn a_wrong_ipv4_header_checksum_is_malformed_whatever_the_packet() {
    let h = Harness::default_config();
    let eth = Ether::default();
    let (c, s) = (client(), server());
    let syn = seg(c, s, SYN, 100, 0, b"");
    let mut frag = udp(&eth, c, s, b"fragment");
    frag[IP + 6] = 0x20; // MF: forwarded untracked when right
    packet::fix_checksums(&mut frag);
    let mut opts = syn[..L4].to_vec();
    opts.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    opts.extend_from_slice(&syn[L4..L4 + 20]);
    opts[IP] = 0x46;
    opts[IP + 3] += 4;
    packet::fix_checksums(&mut opts);
    let gre = ip_frame(&eth, c.addr, s.addr, 47, vec![0; 4]);
    for (what, frame) in [
        ("TCP SYN", syn.clone()),
        ("UDP", udp(&eth, c, s, b"x")),
        ("ICMP echo", icmp_echo(&eth, c.addr, s.addr, 8, 1, 1)),
        ("a fragment", frag),
        ("with options", opts),
        ("GRE", gre),
    ] {
        let good = h.run(&frame);
        assert_eq!(good, XDP_REDIRECT, "{what} with a right header");
        run(
            &h,
            &corrupt_ip_checksum(&frame),
            XDP_DROP,
            &["malformed"],
            what,
        );
    }

    // The IP layer's check stays with --no-checksum, which is conntrack's.
    let h = without_checksums();
    run(
        &h,
        &corrupt_ip_checksum(&syn),
        XDP_DROP,
        &["malformed"],
        "--no-checksum",
    );
    assert_eq!(h.raw_len(), 0);
}

// ---------------------------------------------------------------------------
// --no-checksum

#[test]
fn without_checksums_wrong_ones_are_tracked_as_the_kernel_does_with_checksum_0() {
    let h = without_checksums();
    let eth = Ether::default();
    let (c, s) = (client(), server());
    let k = key(IPPROTO_TCP, c, s);
    let bad = |f: Vec<u8>| corrupt_l4_checksum(&f);
    fwd(
        &h,
        &bad(seg(c, s, SYN, 100, 0, b"")),
        &["new"],
        &k,
        Some((SYN_SENT, false, false)),
    );
    fwd(
        &h,
        &bad(seg(s, c, SYN | ACK, 200, 101, b"")),
        &[],
        &k,
        Some((SYN_RECV, true, false)),
    );
    fwd(
        &h,
        &bad(seg(c, s, ACK, 101, 201, b"")),
        &[],
        &k,
        Some((ESTABLISHED, true, true)),
    );
    fwd(
        &h,
        &bad(seg(s, c, RST, 201, 0, b"")),
        &[],
        &k,
        Some((CLOSE, true, true)),
    );

    let u = key(IPPROTO_UDP, c, s);
    fwd(
        &h,
        &bad(udp(&eth, c, s, b"q")),
        &["new"],
        &u,
        Some((NONE, false, false)),
    );
    let i = table::icmp_key(c.addr, s.addr, 9).unwrap();
    let echo = bad(icmp_echo(&eth, c.addr, s.addr, 8, 9, 1));
    fwd(&h, &echo, &["new"], &i, Some((NONE, false, false)));
    // The parser's own checks stay: a bad header is INVALID as before.
    let mut doff = seg(c, s, ACK, 101, 201, b"");
    doff[L4 + 12] = 4 << 4;
    run(&h, &doff, XDP_DROP, &["invalid"], "data offset 4");
}

// ---------------------------------------------------------------------------
// Every length, every path through the sum

/// UDP datagrams with payloads of `len` bytes, each from its own port,
/// right, with a wrong checksum, and with each of a few payload bytes
/// changed after the checksum was computed.
fn check_lengths(h: &Harness, lens: impl IntoIterator<Item = usize>) {
    let eth = Ether::default();
    let s = server();
    for (n, len) in lens.into_iter().enumerate() {
        let c = Endpoint::new(client().addr, 10_000 + n as u16);
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + n) as u8 | 1).collect();
        let good = udp(&eth, c, s, &payload);
        let what = format!("UDP payload of {len} bytes ({} byte frame)", good.len());
        run(h, &good, XDP_REDIRECT, &["new"], &what);
        run(
            h,
            &corrupt_l4_checksum(&good),
            XDP_DROP,
            &["invalid"],
            &what,
        );
        // The first, a middle and the last payload byte: each is summed.
        let at = L4 + 8;
        for i in [0, len / 2, len.saturating_sub(1)] {
            if i >= len {
                continue;
            }
            let mut changed = good.clone();
            changed[at + i] ^= 0x10;
            let what = format!("{what}, byte {i} changed");
            run(h, &changed, XDP_DROP, &["invalid"], &what);
        }
    }
}

#[test]
fn every_segment_length_is_summed_right() {
    let h = Harness::default_config();
    // Inline (up to 64 bytes), around the inline limit and the 512-byte
    // chunks, and whole 1500-byte frames; every remainder modulo 4.
    let lens = (0..80)
        .chain(500..520)
        .chain([1015, 1016, 1017, 1018, 1019, 1020, 1024, 1400])
        .chain(1468..1473);
    check_lengths(&h, lens);
}

#[test]
fn multi_buffer_frames_are_summed_across_their_fragments() {
    let features = Features::probe();
    if !features.frags {
        eprintln!("no XDP frags on this kernel: nothing to test");
        return;
    }
    let h = Harness::default_config();
    // BPF_PROG_TEST_RUN puts the first PAGE_SIZE - 256 - 320 = 3520 bytes
    // in the first buffer and the rest in page-sized fragments
    // (bpf_prog_test_run_xdp()); the IP payload then starts 34 bytes in.
    let first = 4096 - 256 - 320;
    let lens = [first - 42 - 1, first - 42, first - 42 + 1, first - 42 + 3]
        .into_iter()
        .chain([4000, 4096, 5000, 7000, 8958, 8959, 8960, 8961, 8962])
        .chain([12_000, 20_000, 40_000, 65_000]);
    check_lengths(&h, lens);

    // A TCP data segment at MTU 9000 of an established flow, right and
    // with a byte in the second fragment changed.
    let (c, s) = (client(), server());
    let k = key(IPPROTO_TCP, c, s);
    for f in [
        seg(c, s, SYN, 100, 0, b""),
        seg(s, c, SYN | ACK, 200, 101, b""),
        seg(c, s, ACK, 101, 201, b""),
    ] {
        assert_eq!(h.run(&f), XDP_REDIRECT);
    }
    let jumbo = seg(c, s, PSH | ACK, 101, 201, &[0x42; 8960]);
    assert_eq!(jumbo.len(), 9014);
    fwd(&h, &jumbo, &[], &k, Some((ESTABLISHED, true, true)));
    let mut changed = jumbo.clone();
    changed[first + 4096 + 100] ^= 1;
    invalid(&h, &changed, &k);
    invalid(&h, &corrupt_l4_checksum(&jumbo), &k);
}

#[test]
fn without_frags_frames_are_summed_in_their_one_buffer() {
    let h = Harness::new(Config {
        features: Features::probe().without("frags").unwrap(),
        ..test_config()
    });
    check_lengths(&h, [0, 3, 63, 64, 65, 511, 513, 1472, 3000, 3477, 3478]);
}
