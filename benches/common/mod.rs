//! Shared by the benches, as tests/common is by the tests: loading the
//! program, filling its table, running frames through it, and medians.
#![allow(dead_code)]

use std::mem::MaybeUninit;

use libbpf_rs::{MapCore, ProgramInput};
use xdp_conntrack::bpf::types::{ct_entry, ct_key, ct_tcp_state};
use xdp_conntrack::bpf::ConntrackSkel;
use xdp_conntrack::loader::{self, Config, Features};
use xdp_conntrack::table;

/// XDP actions the benches check.
pub const XDP_DROP: u32 = 1;
pub const XDP_REDIRECT: u32 = 4;

/// The default configuration for everything this kernel offers.
pub fn config() -> Config {
    Config::new(Features::probe())
}

/// Loads the program with both devmap slots on `lo`; the small open object
/// is leaked for the process's lifetime.
pub fn load(cfg: &Config) -> ConntrackSkel<'static> {
    let object = Box::leak(Box::new(MaybeUninit::uninit()));
    let skel = loader::load(object, cfg).expect("loading (run as root)");
    loader::set_ports(&skel, [1, 1]).expect("devmap");
    skel
}

/// A TCP entry in `state` expiring at `expires`, and nothing else: for
/// benches that only sweep.
pub fn expiring(expires: u64) -> ct_entry {
    ct_entry {
        state: ct_tcp_state::CT_TCP_ESTABLISHED.0 as u8,
        expires,
        ..Default::default()
    }
}

/// The entry that `frames` leave behind them in a fresh table, under
/// `key`: learnt from the program itself, so that a table filled with
/// copies holds what real traffic would (windows, last packet, flags).
pub fn learnt(frames: &[Vec<u8>], key: &ct_key) -> ct_entry {
    let skel = load(&config());
    for f in frames {
        assert_eq!(run(&skel, f, 1).1, XDP_REDIRECT, "a learning frame");
    }
    let (_, e) = table::lookup(&skel.maps.ct_table, key)
        .expect("looking the entry up")
        .expect("the learnt entry");
    e
}

/// Writes `entry` under every key in `keys`.
pub fn fill(map: &impl MapCore, keys: &[ct_key], entry: impl Fn(usize) -> ct_entry) {
    let vals: Vec<ct_entry> = (0..keys.len()).map(entry).collect();
    table::insert(map, keys, &vals).expect("filling the table");
}

/// One BPF_PROG_TEST_RUN of `frame`, `repeat` times: (ns per run, action).
pub fn run(skel: &ConntrackSkel<'_>, frame: &[u8], repeat: u32) -> (f64, u32) {
    let input = ProgramInput {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    };
    let out = skel.progs.xdp_conntrack.test_run(input).expect("test run");
    (out.duration.as_nanos() as f64, out.return_value)
}

/// The median of `v`.
pub fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}
