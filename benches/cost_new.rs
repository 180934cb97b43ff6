//! A new connection's cost per packet, measured finely enough to compare
//! two revisions by a few ns: `make bench-cost BENCH=cost_new BASE=REV`.
//!
//! `cost` measures a new connection one run per distinct SYN into an
//! empty table, so each SYN also pays for cache and TLB misses on a fresh
//! bucket and a fresh preallocated element; that row moves by a hundred ns
//! and more from one run to the next (docs/BENCHMARKS.md, issue 11).  Here
//! the same path runs with the table warm: 1,000 distinct SYNs in turn,
//! each entry removed again from user space before its SYN comes round,
//! so the buckets and the recycled elements (the per-CPU free list hands
//! back the element just freed) stay in cache and what is left is the
//! program's own work.  The statistic is the interquartile mean of the
//! single runs (the mean of the middle half): it drops interrupts and
//! preemptions, and unlike a median it resolves below the clock's 10 ns
//! steps.  Each row's harness cost is the same in both revisions, so the
//! difference between revisions is the program's.
//!
//! This file uses only the benches' `common` and library calls that
//! predate IPv6 (7e18b33), so `bench_cost.py` can build it against an older
//! revision that lacks it.

mod common;

use std::net::Ipv4Addr;

use common::{config, load, run as per_packet, XDP_REDIRECT};
use libbpf_rs::MapCore;
use xdp_conntrack::loader::Config;
use xdp_conntrack::packet::{tcp, tcp_flags::SYN, Endpoint, Ether};
use xdp_conntrack::proto::IPPROTO_TCP;
use xdp_conntrack::table::key_for;

/// Distinct SYNs in the warm rows' cycle.
const FLOWS: u32 = 1_000;
/// Single runs per row.
const RUNS: usize = 60_000;

/// The mean of the middle half of `v`.
fn interquartile_mean(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    let mid = &v[v.len() / 4..v.len() * 3 / 4];
    mid.iter().sum::<f64>() / mid.len() as f64
}

fn main() {
    let eth = Ether::default();
    let server = Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080);
    let client = |i: u32| {
        Endpoint::new(
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + i / 50_000),
            10_000 + (i % 50_000) as u16,
        )
    };
    let syn = |i: u32| tcp(&eth, client(i), server, SYN, 100, 0, b"");
    let warm: Vec<Vec<u8>> = (0..FLOWS).map(syn).collect();
    let keys: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| {
            let (c, s) = (client(i), server);
            let key = key_for(IPPROTO_TCP, (c.addr, c.port), (s.addr, s.port)).expect("a key");
            // SAFETY: ct_key is plain old data, generated from the C header.
            unsafe { plain::as_bytes(&key) }.to_vec()
        })
        .collect();
    let cold: Vec<Vec<u8>> = (0..RUNS as u32).map(|i| syn(FLOWS + i)).collect();

    let fwd = load(&Config {
        track: false,
        ..config()
    });
    let base = interquartile_mean(
        (0..RUNS)
            .map(|i| per_packet(&fwd, &warm[i % warm.len()], 1).0)
            .collect(),
    );
    drop(fwd);

    let skel = load(&config());
    let warm_ns = interquartile_mean(
        (0..RUNS)
            .map(|i| {
                let i = i % warm.len();
                let (ns, act) = per_packet(&skel, &warm[i], 1);
                assert_eq!(act, XDP_REDIRECT, "a SYN opens a connection");
                skel.maps
                    .ct_table
                    .delete(&keys[i])
                    .expect("the SYN's entry");
                ns
            })
            .collect(),
    );
    let cold_ns = interquartile_mean(cold.iter().map(|f| per_packet(&skel, f, 1).0).collect());

    println!("| packet | ns per single run (interquartile mean of {RUNS}) | vs forwarding only |");
    println!("|---|---:|---:|");
    for (name, ns) in [
        ("single run, forwarding only (--no-track)", base),
        ("new connection (SYN), table warm", warm_ns),
        ("new connection (SYN), table cold", cold_ns),
    ] {
        println!("| {name} | {ns:.1} | {:.2}x |", ns / base);
    }
}
