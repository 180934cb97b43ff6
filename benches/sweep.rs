//! Garbage collection, measured: the in-kernel sweep (bpf_for_each_map_elem
//! run through BPF_PROG_TEST_RUN) against a batched userspace sweep (batch
//! lookup, then batch delete of the expired keys), side by side on the same
//! table.  Half of the entries are expired each round.  Run as root:
//! `make bench-sweep`.

mod common;

use std::time::Instant;

use common::{config, expiring, load, median};
use libbpf_rs::{MapCore, MapFlags};
use xdp_conntrack::bpf::slice_bytes;
use xdp_conntrack::bpf::types::ct_key;
use xdp_conntrack::loader::{self, Config};
use xdp_conntrack::proto::IPPROTO_TCP;
use xdp_conntrack::table::{self, monotonic_ns};

const ROUNDS: usize = 5;

/// Fills the table with `n` entries, every other one already expired.
fn fill(map: &impl MapCore, n: u32) {
    let live = monotonic_ns() + 3_600_000_000_000;
    let keys: Vec<ct_key> = (0..n)
        .map(|i| ct_key {
            addr: [0x0a01_0164u32.to_be(), (0x0a02_0000u32 + (i >> 16)).to_be()],
            port: [(i as u16).to_be(), 8080u16.to_be()],
            proto: IPPROTO_TCP,
            ..Default::default()
        })
        .collect();
    common::fill(map, &keys, |i| expiring(if i % 2 == 0 { 1 } else { live }));
}

fn userspace_sweep(map: &impl MapCore) -> usize {
    let now = monotonic_ns();
    let mut expired: Vec<ct_key> = Vec::new();
    table::for_each(map, |k, e| {
        if e.expires <= now {
            expired.push(*k);
        }
    })
    .expect("reading the table");
    for chunk in expired.chunks(8192) {
        map.delete_batch(
            slice_bytes(chunk),
            chunk.len() as u32,
            MapFlags::ANY,
            MapFlags::ANY,
        )
        .expect("delete_batch");
    }
    expired.len()
}

fn main() {
    println!(
        "| entries | expired | in-kernel sweep (median) | userspace batch sweep (median) | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for n in [65_536u32, 1_048_576] {
        let skel = load(&Config {
            max_entries: n,
            ..config()
        });
        let map = &skel.maps.ct_table;
        let (mut kt, mut ut) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            fill(map, n);
            let t = Instant::now();
            loader::sweep(&skel).expect("sweep");
            kt.push(t.elapsed());
            assert_eq!(
                map.keys().count(),
                n as usize / 2,
                "in-kernel sweep missed entries"
            );

            fill(map, n);
            let t = Instant::now();
            let removed = userspace_sweep(map);
            ut.push(t.elapsed());
            assert_eq!(removed, n as usize / 2);
        }
        let (k, u) = (median(kt), median(ut));
        println!(
            "| {n} | {} | {:.2} ms | {:.2} ms | {:.1}x |",
            n / 2,
            k.as_secs_f64() * 1e3,
            u.as_secs_f64() * 1e3,
            u.as_secs_f64() / k.as_secs_f64()
        );
    }
}
