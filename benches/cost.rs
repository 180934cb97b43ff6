//! The program's own cost per packet, through BPF_PROG_TEST_RUN with
//! `repeat`: forwarding only (tracking off), an established-flow segment
//! repeated with the table at 1k, 64k and 1M entries, an INVALID packet, a
//! new connection, an in-order stream, an ICMP error related to the
//! established flow, and what checksumming costs:
//! established-flow segments in 64-byte (the ACK), 1500-byte and 9000-byte
//! (multi-buffer) frames with checksums checked and not (`--no-checksum`).
//! Side by side in one run, 5 rounds, medians.  Run as root:
//! `make bench-cost`.
//!
//! A repeated run sends the same frame, so the established flow's entry
//! stays in cache whatever the table's size; the copies count as
//! retransmissions, which take the lock-free path.  A new connection and
//! an in-order stream need a distinct frame per run, so they are measured
//! one run per frame, with the harness's fixed cost taken out (the same
//! single runs, tracking off).  The new connection is measured twice: with
//! no `events` reader (the program makes no event) and with one that
//! drains the ring as `xdp-conntrack events` does.

mod common;

use std::net::Ipv4Addr;

use common::{config, learnt, load, median, run as per_packet, XDP_DROP, XDP_REDIRECT};
use xdp_conntrack::bpf::types::{ct_counter, ct_entry, ct_key};
use xdp_conntrack::bpf::ConntrackSkel;
use xdp_conntrack::counters::Totals;
use xdp_conntrack::events::{self, Kind};
use xdp_conntrack::loader::Config;
use xdp_conntrack::packet::{ip_frame, tcp, tcp_flags::*, Endpoint, Ether};
use xdp_conntrack::proto::{IPPROTO_ICMP, IPPROTO_TCP};
use xdp_conntrack::table::{key_for, monotonic_ns};

const ROUNDS: usize = 5;
const REPEAT: u32 = 2_000_000;

fn client(i: u32) -> Endpoint {
    Endpoint::new(
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + i / 50_000),
        10_000 + (i % 50_000) as u16,
    )
}

fn server() -> Endpoint {
    Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080)
}

/// One run per SYN with an events reader attached, which drains the ring
/// every 1024 runs as the reader's poll would: the mean ns per run.
fn syn_with_reader(news: &[Vec<u8>], entry: &ct_entry) -> f64 {
    let skel = load(&config());
    fill(&skel, 1_000, entry);
    events::set_reader(
        &skel.maps.ct_events_ctl,
        Kind::All.mask(),
        std::process::id(),
    )
    .expect("registering a reader");
    let seen = std::cell::Cell::new(0usize);
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    builder
        .add(&skel.maps.ct_events, |_| {
            seen.set(seen.get() + 1);
            0
        })
        .expect("the events ring");
    let ring = builder.build().expect("the events ring");
    let mut total = 0.0;
    for (i, f) in news.iter().enumerate() {
        total += per_packet(&skel, f, 1).0;
        if i % 1024 == 1023 {
            ring.consume().expect("draining the ring");
        }
    }
    ring.consume().expect("draining the ring");
    let t = Totals::read(&skel.maps.stats).expect("the counters");
    assert_eq!(t.get(ct_counter::CT_C_EVENTS_LOST), 0, "the reader kept up");
    assert_eq!(seen.get(), news.len(), "one NEW event per SYN");
    total / news.len() as f64
}

fn key(c: Endpoint) -> ct_key {
    let s = server();
    key_for(IPPROTO_TCP, (c.addr, c.port), (s.addr, s.port)).expect("an IPv4 key")
}

/// The entry of an established connection that has just sent `segment`
/// four times: its windows learnt from a real handshake (SYN 999, SYN-ACK
/// 1999, ACK), and the segment's copies counted as retransmissions.
fn established(segment: &[u8]) -> ct_entry {
    let eth = Ether::default();
    let (c, s) = (client(0), server());
    let mut frames = vec![
        tcp(&eth, c, s, SYN, 999, 0, b""),
        tcp(&eth, s, c, SYN | ACK, 1999, 1000, b""),
        tcp(&eth, c, s, ACK, 1000, 2000, b""),
    ];
    frames.extend(std::iter::repeat_n(segment.to_vec(), 4));
    learnt(&frames, &key(c))
}

/// Fills the table with `n` copies of `entry`, one per client.
fn fill(skel: &ConntrackSkel<'_>, n: u32, entry: &ct_entry) {
    let expires = monotonic_ns() + 3_600_000_000_000;
    let keys: Vec<ct_key> = (0..n).map(|i| key(client(i))).collect();
    common::fill(&skel.maps.ct_table, &keys, |_| ct_entry {
        expires,
        ..*entry
    });
}

/// `--profile SECS [--no-track] [--no-checksum] [--mtu N]`: one frame
/// only, the established ACK at 1k entries (or a data segment that fills
/// an MTU of N bytes; or forwarding only), over and over for SECS seconds,
/// for a sampling profiler to look at (`make profile`).
fn profile(frame: &[u8], secs: u64, cfg: Config, what: &str) {
    let skel = load(&Config {
        max_entries: 65_536,
        ..cfg.clone()
    });
    if cfg.track {
        fill(&skel, 1_000, &established(frame));
    }
    perf_control("enable");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut runs = Vec::new();
    while std::time::Instant::now() < until {
        let (ns, act) = per_packet(&skel, frame, REPEAT);
        assert_eq!(act, XDP_REDIRECT, "the frame must be forwarded");
        runs.push(ns);
    }
    perf_control("disable");
    let what = if cfg.track { what } else { "forwarding only" };
    println!(
        "{what}: {:.1} ns per packet, {} packets (median of {} runs)",
        median(runs.clone()),
        runs.len() as u64 * u64::from(REPEAT),
        runs.len()
    );
}

/// Sends `cmd` to a `perf record --control fifo:CTL,ACK` that runs this
/// bench, when `XCT_PERF_CONTROL=CTL,ACK` says where, and waits for its
/// ack: the samples then cover the counted loop only, not the program's
/// load, whose verification would otherwise show up per packet.
fn perf_control(cmd: &str) {
    use std::io::{Read, Write};
    let Ok(fifos) = std::env::var("XCT_PERF_CONTROL") else {
        return;
    };
    let (ctl, ack) = fifos.split_once(',').expect("XCT_PERF_CONTROL=CTL,ACK");
    std::fs::OpenOptions::new()
        .write(true)
        .open(ctl)
        .and_then(|mut f| writeln!(f, "{cmd}"))
        .expect("writing to perf's control fifo");
    let mut reply = [0u8; 16];
    std::fs::File::open(ack)
        .and_then(|mut f| f.read(&mut reply))
        .expect("reading perf's ack");
}

/// A data segment of the established flow that fills an MTU of `mtu`.
fn segment(mtu: usize) -> Vec<u8> {
    tcp(
        &Ether::default(),
        client(0),
        server(),
        ACK | PSH,
        1000,
        2000,
        &vec![0x5a; mtu - 40],
    )
}

fn main() {
    let eth = Ether::default();
    let flow = client(0);
    let ack = tcp(&eth, flow, server(), ACK | PSH, 1000, 2000, &[0u8; 6]);
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        let secs = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(10);
        let flag = |f: &str| args.iter().any(|a| a == f);
        let mtu = args.iter().position(|a| a == "--mtu");
        let mtu = mtu.and_then(|i| args.get(i + 1)?.parse::<usize>().ok());
        let (frame, what) = match mtu {
            Some(m) => (
                segment(m),
                format!("established {m}-byte segment, 1k entries"),
            ),
            None => (ack.clone(), "established ACK, 1k entries".to_string()),
        };
        let cfg = Config {
            track: !flag("--no-track"),
            checksum: !flag("--no-checksum"),
            ..config()
        };
        return profile(&frame, secs, cfg, &what);
    }
    let invalid = tcp(&eth, flow, server(), SYN | FIN, 1000, 0, b"");
    let entry = established(&ack);
    // An in-order stream: each segment and each ACK moves the windows, so
    // each takes the entry's lock.
    let stream: Vec<Vec<u8>> = (0..25_000u32)
        .flat_map(|i| {
            let seq = 1006 + i * 6;
            [
                tcp(&eth, flow, server(), ACK | PSH, seq, 2000, &[0u8; 6]),
                tcp(&eth, server(), flow, ACK, 2000, seq + 6, b""),
            ]
        })
        .collect();
    // Host unreachable from a router, quoting the ACK's IP header and
    // 8 bytes, back to the client.
    let mut quote = vec![3, 1, 0, 0, 0, 0, 0, 0];
    quote.extend_from_slice(&ack[14..14 + 28]);
    let router = Ipv4Addr::new(10, 9, 9, 1);
    let related = ip_frame(&eth, router, flow.addr, IPPROTO_ICMP, quote);
    // Data segments of the established flow that fill a 1500-byte and a
    // 9000-byte MTU; the second is multi-buffer in a test run (its first
    // buffer holds a page less headroom and skb_shared_info).  Each is
    // measured against an entry that has seen it, as the ACK is.
    let mut sizes = vec![
        (ack.clone(), "ACK (64-byte frame)"),
        (segment(1500), "1500-byte segment"),
    ];
    if config().features.frags {
        sizes.push((segment(9000), "9000-byte segment (multi-buffer)"));
    }
    let news: Vec<Vec<u8>> = (0..50_000)
        .map(|i| tcp(&eth, client(2_000_000 + i), server(), SYN, 100, 0, b""))
        .collect();

    let mut rows: Vec<(String, Vec<f64>)> = vec![
        ("forwarding only (--no-track)".into(), vec![]),
        ("established ACK, 1k entries".into(), vec![]),
        ("established ACK, 64k entries".into(), vec![]),
        ("established ACK, 1M entries".into(), vec![]),
        ("INVALID (SYN|FIN), dropped".into(), vec![]),
        ("new connection (SYN)".into(), vec![]),
        ("established, in-order stream (locked)".into(), vec![]),
        ("ICMP error, RELATED to an established flow".into(), vec![]),
        (
            "new connection (SYN), an events reader attached".into(),
            vec![],
        ),
        ("established ACK, 1k entries, --acct".into(), vec![]),
        (
            "established, in-order stream (locked), --acct".into(),
            vec![],
        ),
    ];
    // Checksums on and off, side by side, for each size: rows 11 and on.
    for (_, what) in &sizes {
        for suffix in ["", ", --no-checksum"] {
            rows.push((format!("established {what}, 1k entries{suffix}"), vec![]));
        }
    }
    for _ in 0..ROUNDS {
        let fwd = load(&Config {
            track: false,
            ..config()
        });
        let (fwd_ns, act) = per_packet(&fwd, &ack, REPEAT);
        assert_eq!(act, XDP_REDIRECT);
        rows[0].1.push(fwd_ns);
        // The harness's fixed cost of a single run, for the new-connection row.
        let base: f64 =
            news.iter().map(|f| per_packet(&fwd, f, 1).0).sum::<f64>() / news.len() as f64;
        drop(fwd);

        for (row, n) in [(1usize, 1_000u32), (2, 65_536), (3, 1_048_576)] {
            let skel = load(&Config {
                max_entries: n + 65_536,
                ..config()
            });
            fill(&skel, n, &entry);
            let (ns, act) = per_packet(&skel, &ack, REPEAT);
            assert_eq!(act, XDP_REDIRECT, "the established ACK must be forwarded");
            rows[row].1.push(ns);
            if n == 1_000 {
                let (ns, act) = per_packet(&skel, &invalid, REPEAT);
                assert_eq!(act, XDP_DROP, "SYN|FIN must be dropped");
                rows[4].1.push(ns);
                // One run per distinct SYN; what it adds over the same
                // single runs without tracking, on top of forwarding.
                let single: f64 =
                    news.iter().map(|f| per_packet(&skel, f, 1).0).sum::<f64>() / news.len() as f64;
                rows[5].1.push(single - base + fwd_ns);
                let single = stream
                    .iter()
                    .map(|f| {
                        let (ns, act) = per_packet(&skel, f, 1);
                        assert_eq!(act, XDP_REDIRECT, "the stream is in order");
                        ns
                    })
                    .sum::<f64>()
                    / stream.len() as f64;
                rows[6].1.push(single - base + fwd_ns);
                let (ns, act) = per_packet(&skel, &related, REPEAT);
                assert_eq!(act, XDP_REDIRECT, "the related error must be forwarded");
                let t = Totals::read(&skel.maps.stats).expect("the counters");
                assert!(
                    t.get(ct_counter::CT_C_RELATED) > 0,
                    "the error must count as related"
                );
                rows[7].1.push(ns);
            }
        }
        rows[8]
            .1
            .push(syn_with_reader(&news, &entry) - base + fwd_ns);
        // Accounting on: the ACK repeated, and the in-order stream.
        let skel = load(&Config {
            acct: true,
            ..config()
        });
        fill(&skel, 1_000, &entry);
        let (ns, act) = per_packet(&skel, &ack, REPEAT);
        assert_eq!(act, XDP_REDIRECT);
        let (_, e) = xdp_conntrack::table::lookup(&skel.maps.ct_table, &key(client(0)))
            .expect("the table")
            .expect("the established entry");
        assert!(
            e.acct.iter().map(|a| a.packets).sum::<u64>() >= u64::from(REPEAT),
            "--acct counted every run"
        );
        rows[9].1.push(ns);
        let single = stream
            .iter()
            .map(|f| per_packet(&skel, f, 1).0)
            .sum::<f64>()
            / stream.len() as f64;
        rows[10].1.push(single - base + fwd_ns);
        for (i, (frame, _)) in sizes.iter().enumerate() {
            for (off, checksum) in [(0, true), (1, false)] {
                let skel = load(&Config {
                    checksum,
                    ..config()
                });
                fill(&skel, 1_000, &established(frame));
                let (ns, act) = per_packet(&skel, frame, REPEAT);
                assert_eq!(
                    act, XDP_REDIRECT,
                    "the established segment must be forwarded"
                );
                rows[11 + 2 * i + off].1.push(ns);
            }
        }
    }
    let fwd = median(rows[0].1.clone());
    println!("| packet | ns per packet (median of {ROUNDS}) | vs forwarding only |");
    println!("|---|---:|---:|");
    for (name, v) in &rows {
        let m = median(v.clone());
        println!("| {name} | {m:.1} | {:.2}x |", m / fwd);
    }
}
