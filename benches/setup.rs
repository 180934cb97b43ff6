//! Connection setup rate of the program alone, with no veth at all: the
//! Ostinato handshake (SYN, SYN-ACK, ACK) for N connections, every frame
//! run once through BPF_PROG_TEST_RUN.  Reports the kernel's own per-run
//! time and the wall time including one syscall per packet.  A single run
//! carries the test harness's fixed cost, so the same frames also go
//! through the program with tracking off (`--no-track`, a pure redirect),
//! and the difference is what tracking costs per packet.  Run as root:
//! `make bench-setup`.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{config, load, median, XDP_REDIRECT};
use libbpf_rs::ProgramInput;
use xdp_conntrack::bpf::types::ct_counter;
use xdp_conntrack::counters::Totals;
use xdp_conntrack::loader::Config;
use xdp_conntrack::packet::{tcp, tcp_flags::*, Endpoint, Ether};

const ROUNDS: usize = 5;

fn main() {
    let n: u32 = 100_000;
    let eth = Ether::default();
    let server = Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080);
    let client = |i: u32| {
        Endpoint::new(
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 1, 100)) + i / 40_000),
            20_000 + (i % 40_000) as u16,
        )
    };
    let phases: Vec<Vec<Vec<u8>>> = vec![
        (0..n)
            .map(|i| tcp(&eth, client(i), server, SYN, 100, 0, b""))
            .collect(),
        (0..n)
            .map(|i| tcp(&eth, server, client(i), SYN | ACK, 200, 101, b""))
            .collect(),
        (0..n)
            .map(|i| tcp(&eth, client(i), server, ACK, 101, 201, b""))
            .collect(),
    ];

    let (mut prog_rates, mut wall_rates, mut ns_per_pkt) = (Vec::new(), Vec::new(), Vec::new());
    let mut base_ns = Vec::new();
    for _ in 0..ROUNDS {
        // The baseline: the same single runs with tracking off.
        let skel = load(&Config {
            track: false,
            ..config()
        });
        let mut base = Duration::ZERO;
        for f in phases.iter().flatten() {
            let input = ProgramInput {
                data_in: Some(f),
                ..Default::default()
            };
            base += skel
                .progs
                .xdp_conntrack
                .test_run(input)
                .expect("test run")
                .duration;
        }
        base_ns.push(base.as_nanos() as f64 / f64::from(3 * n));
        drop(skel);

        let skel = load(&Config {
            max_entries: n + n / 8,
            ..config()
        });
        let mut in_prog = Duration::ZERO;
        let start = Instant::now();
        for frames in &phases {
            for f in frames {
                let input = ProgramInput {
                    data_in: Some(f),
                    ..Default::default()
                };
                let out = skel.progs.xdp_conntrack.test_run(input).expect("test run");
                assert_eq!(
                    out.return_value, XDP_REDIRECT,
                    "every handshake packet is forwarded"
                );
                in_prog += out.duration;
            }
        }
        let wall = start.elapsed();
        let t = Totals::read(&skel.maps.stats).expect("counters");
        assert_eq!(t.get(ct_counter::CT_C_NEW), u64::from(n));
        prog_rates.push(f64::from(n) / in_prog.as_secs_f64());
        wall_rates.push(f64::from(n) / wall.as_secs_f64());
        ns_per_pkt.push(in_prog.as_nanos() as f64 / f64::from(3 * n));
    }
    let (per, base) = (median(ns_per_pkt), median(base_ns));
    let net = (per - base).max(1.0);
    println!(
        "| connections | per packet, one run each | same, tracking off | tracking's own cost | \
         setup rate from tracking's cost | per run incl. harness | incl. one syscall per packet |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {per:.0} ns | {base:.0} ns | {net:.0} ns | {:.0} conn/s | {:.0} conn/s | {:.0} conn/s |",
        1e9 / (3.0 * net),
        median(prog_rates),
        median(wall_rates)
    );
}
