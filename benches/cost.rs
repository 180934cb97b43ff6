//! The program's own cost per packet, through BPF_PROG_TEST_RUN with
//! `repeat`: forwarding only (tracking off), an established-flow ACK with
//! the table at 1k, 64k and 1M entries, an INVALID packet, a new
//! connection, and an ICMP error related to the established flow.  Side
//! by side in one run, 5 rounds, medians.  Run as root: `make bench-cost`.
//!
//! A repeated run sends the same frame, so the established flow's entry
//! stays in cache whatever the table's size; a new connection needs a
//! distinct frame per run, so it is measured one run per frame, with the
//! harness's fixed cost taken out (the same single runs, tracking off).

mod common;

use std::net::Ipv4Addr;

use common::{config, established, load, median, run as per_packet, XDP_DROP, XDP_REDIRECT};
use xdp_conntrack::bpf::types::{ct_counter, ct_key};
use xdp_conntrack::bpf::ConntrackSkel;
use xdp_conntrack::counters::Totals;
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

/// Fills the table with `n` established, assured connections.
fn fill(skel: &ConntrackSkel<'_>, n: u32) {
    let expires = monotonic_ns() + 3_600_000_000_000;
    let s = server();
    let keys: Vec<ct_key> = (0..n)
        .map(|i| {
            let c = client(i);
            key_for(IPPROTO_TCP, (c.addr, c.port), (s.addr, s.port)).expect("an IPv4 key")
        })
        .collect();
    common::fill(&skel.maps.ct_table, &keys, |_| established(expires));
}

/// `--profile SECS [--no-track]`: only the established ACK at 1k entries
/// (or forwarding only), over and over for SECS seconds, for a sampling
/// profiler to look at (`make profile`).
fn profile(ack: &[u8], secs: u64, track: bool) {
    let skel = load(&Config {
        max_entries: 65_536,
        track,
        ..config()
    });
    if track {
        fill(&skel, 1_000);
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut runs = Vec::new();
    while std::time::Instant::now() < until {
        let (ns, act) = per_packet(&skel, ack, REPEAT);
        assert_eq!(act, XDP_REDIRECT, "the ACK must be forwarded");
        runs.push(ns);
    }
    let what = if track {
        "established ACK, 1k entries"
    } else {
        "forwarding only"
    };
    println!(
        "{what}: {:.1} ns per packet, {} packets (median of {} runs)",
        median(runs.clone()),
        runs.len() as u64 * u64::from(REPEAT),
        runs.len()
    );
}

fn main() {
    let eth = Ether::default();
    let flow = client(0);
    let ack = tcp(&eth, flow, server(), ACK | PSH, 1000, 2000, &[0u8; 6]);
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        let secs = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(10);
        return profile(&ack, secs, !args.iter().any(|a| a == "--no-track"));
    }
    let invalid = tcp(&eth, flow, server(), SYN | FIN, 1000, 0, b"");
    // Host unreachable from a router, quoting the ACK's IP header and
    // 8 bytes, back to the client.
    let mut quote = vec![3, 1, 0, 0, 0, 0, 0, 0];
    quote.extend_from_slice(&ack[14..14 + 28]);
    let router = Ipv4Addr::new(10, 9, 9, 1);
    let related = ip_frame(&eth, router, flow.addr, IPPROTO_ICMP, quote);
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
        ("ICMP error, RELATED to an established flow".into(), vec![]),
    ];
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
            fill(&skel, n);
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
                let (ns, act) = per_packet(&skel, &related, REPEAT);
                assert_eq!(act, XDP_REDIRECT, "the related error must be forwarded");
                let t = Totals::read(&skel.maps.stats).expect("the counters");
                assert!(
                    t.get(ct_counter::CT_C_RELATED) > 0,
                    "the error must count as related"
                );
                rows[6].1.push(ns);
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
