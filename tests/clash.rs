//! First packets racing on two CPUs, as the kernel's udpclash and
//! conntrack_reverse_clash selftests race them: the generator's `--clash`
//! on a two-queue topology through the real tracker.  Whichever CPU wins
//! the insert, there is one entry per flow, its original direction holds,
//! and no packet is dropped.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};

use common::*;

/// The Ostinato article's addresses, on ns1's and ns2's eth0.
const CLIENT: &str = "10.1.1.100";
const SERVER: &str = "10.2.2.100";
const SPORT: u16 = 23420;
const DPORT: u16 = 8080;
/// Flows per run: enough that many of them race for real.
const N: usize = 4000;

/// Held by each test for its whole run.  The racers pin themselves to
/// the first two CPUs, which they must have to themselves to meet frame
/// by frame: two tests at once (cargo runs a file's tests in parallel)
/// would take turns on them.
static CPUS: Mutex<()> = Mutex::new(());

/// The two racing CPUs, for this test alone.
fn cpus() -> MutexGuard<'static, ()> {
    // A test that failed holding it leaves the CPUs free all the same.
    CPUS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A two-queue topology and a tracker on it; None, after checking that
/// the generator refuses, on a machine with fewer than two CPUs.
fn race_setup() -> Option<(Topology, Tracker)> {
    let topo = Topology::two_queues(&format!("{CLIENT}/24"), &format!("{SERVER}/24"));
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        let out = topo.handshake_open_loop(&["--count", "10", "--clash", "same"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--clash: only 1 CPUs"), "{err}");
        return None;
    }
    let tracker = Tracker::builder(&topo)
        .args(&["-q", "--max-entries", "8192"])
        .start();
    Some((topo, tracker))
}

/// Runs the generator; fails unless every frame of every phase arrived.
/// Returns (phase name, frames sent) of each phase.
fn run(topo: &Topology, extra: &[&str]) -> Vec<(String, u64)> {
    let out = topo.handshake_open_loop(&[&["--count", &N.to_string()], extra].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `handshake:   2xSYN    sent      8000  delivered      8000  in ...`
    let phases: Vec<(String, u64)> = stdout
        .lines()
        .filter(|l| l.contains(" sent "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (name, sent, delivered) = (w[1], w[3], w[5]);
            assert_eq!(sent, delivered, "{extra:?}: not all arrived: {l}");
            (name.to_string(), sent.parse().expect("a frame count"))
        })
        .collect();
    assert!(!phases.is_empty(), "{stdout}");
    phases
}

/// The XDP frames both host ends (where the tracker runs) have seen, by
/// rx queue.
fn tracker_queues(topo: &Topology) -> Vec<u64> {
    let one = topo.xdp_packets_by_queue(&topo.fw(), &topo.veth(1));
    let two = topo.xdp_packets_by_queue(&topo.fw(), &topo.veth(2));
    assert_eq!((one.len(), two.len()), (2, 2), "{one:?} {two:?}");
    vec![one[0] + two[0], one[1] + two[1]]
}

/// Each racer's N frames went through a queue of its own.
fn assert_both_queues_raced(before: &[u64], after: &[u64]) {
    for q in 0..2 {
        assert!(
            after[q] - before[q] >= N as u64,
            "queue {q} carried {} frames of the race's {N}: {before:?} -> {after:?}",
            after[q] - before[q]
        );
    }
}

/// The tracker created exactly N connections, dropped nothing, and lost
/// at least one insert race (else the test raced nothing); returns how
/// many it lost.
fn assert_raced_and_dropped_nothing(tracker: &Tracker) -> u64 {
    let s = tracker.stats();
    for counter in ["invalid", "table_full", "drops"] {
        assert_eq!(s[counter], 0, "{counter}: {s:?}");
    }
    assert_eq!(s["new"], N as u64, "{s:?}");
    let raced = s["clash_resolve"];
    assert!(
        raced > 0 && raced <= N as u64,
        "clash_resolve {raced} of {N} flows: {s:?}"
    );
    raced
}

fn client(port: u16) -> SocketAddr {
    SocketAddr::new(CLIENT.parse().unwrap(), port)
}

fn server() -> SocketAddr {
    SocketAddr::new(SERVER.parse().unwrap(), DPORT)
}

/// Every client port the run uses.
fn ports() -> BTreeSet<u16> {
    (0..N as u16).map(|i| SPORT + i).collect()
}

/// The client port of a flow between the client and the server, in
/// either direction; fails on any other entry.
fn client_port(e: &ConntrackLine) -> u16 {
    let (c, s): (IpAddr, IpAddr) = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    match e.orig.l4 {
        L4::Ports { sport, dport } if e.orig.src == c && e.orig.dst == s && dport == DPORT => sport,
        L4::Ports { sport, dport } if e.orig.src == s && e.orig.dst == c && sport == DPORT => dport,
        _ => panic!("not a flow of the run: {e:?}"),
    }
}

/// Every entry is a `proto` flow of the run, its reply tuple mirrors its
/// original one, and both directions have been seen; returns, by client
/// port, whether the client's packet opened it.
fn opened_by_client(tracker: &Tracker, proto: &str) -> BTreeMap<u16, bool> {
    let table = tracker.table();
    assert_eq!(table.len(), N, "one entry per flow");
    let mut by_port = BTreeMap::new();
    for e in &table {
        assert_eq!(e.proto, proto, "{e:?}");
        let port = client_port(e);
        let by_client = e.orig.src == client(port).ip();
        let orig = if by_client {
            Tuple::ports(client(port), server())
        } else {
            Tuple::ports(server(), client(port))
        };
        assert_eq!((e.orig, e.reply), (orig, mirror(orig)), "{e:?}");
        assert!(!e.unreplied, "both directions crossed: {e:?}");
        assert!(
            by_port.insert(port, by_client).is_none(),
            "two entries: {e:?}"
        );
    }
    assert_eq!(by_port.keys().copied().collect::<BTreeSet<_>>(), ports());
    by_port
}

/// A tuple the other way round.
fn mirror(t: Tuple) -> Tuple {
    let L4::Ports { sport, dport } = t.l4 else {
        panic!("{t:?}")
    };
    Tuple {
        src: t.dst,
        dst: t.src,
        l4: L4::Ports {
            sport: dport,
            dport: sport,
        },
    }
}

/// Both CPUs see the client's first packet of every flow at once (the
/// kernel's udpclash): exactly one entry each, opened by the client, and
/// every packet forwarded, the losing CPU's through the winner's entry.
fn same_direction(proto: &str, flags: &[&str], then: &[(&str, u64)]) {
    let _cpus = cpus();
    let Some((topo, tracker)) = race_setup() else {
        return;
    };
    let before = tracker_queues(&topo);
    let phases = run(&topo, &[&["--clash", "same"], flags].concat());
    let n = N as u64;
    let want: Vec<(String, u64)> = then.iter().map(|&(p, k)| (p.to_string(), k * n)).collect();
    assert_eq!(phases, want);
    assert_both_queues_raced(&before, &tracker_queues(&topo));
    let raced = assert_raced_and_dropped_nothing(&tracker);
    eprintln!("{proto} same-direction clash: {raced} of {N} inserts raced");

    let by_client = opened_by_client(&tracker, proto);
    assert!(
        by_client.values().all(|&c| c),
        "the client opened every flow"
    );
    if proto == "tcp" {
        // The handshake went on through the winner's entries.
        for e in tracker.table() {
            assert!(e.in_state("ESTABLISHED") && e.assured, "{e:?}");
        }
    }
}

#[test]
fn tcp_syns_racing_on_two_cpus_make_one_entry_each_and_lose_nothing() {
    same_direction("tcp", &[], &[("2xSYN", 2), ("SYN-ACK", 1), ("ACK", 1)]);
}

#[test]
fn udp_datagrams_racing_on_two_cpus_make_one_entry_each_and_lose_nothing() {
    same_direction("udp", &["--proto", "udp"], &[("2xUDP", 2), ("REPLY", 1)]);
}

/// Both ends send their first packets at the same moment (the kernel's
/// conntrack_reverse_clash): one entry per flow, whose original direction
/// is whichever packet won, and stays so through a second dump and
/// through a second race over the existing entries; nothing dropped.
fn reverse(proto: &str, flags: &[&str], name: &str) {
    let _cpus = cpus();
    let Some((topo, tracker)) = race_setup() else {
        return;
    };
    let args = [&["--clash", "reverse"], flags].concat();
    let before = tracker_queues(&topo);
    assert_eq!(run(&topo, &args), [(name.to_string(), 2 * N as u64)]);
    assert_both_queues_raced(&before, &tracker_queues(&topo));
    let raced = assert_raced_and_dropped_nothing(&tracker);

    let first = opened_by_client(&tracker, proto);
    let by_client = first.values().filter(|&&c| c).count();
    eprintln!(
        "{proto} reverse clash: {raced} of {N} inserts raced; \
         the client's packet opened {by_client} flows, the server's {}",
        N - by_client
    );
    if proto == "tcp" {
        // Each side's SYN: a simultaneous open, whoever was first.
        for e in tracker.table() {
            assert!(e.in_state("SYN_SENT2"), "{e:?}");
        }
    }
    assert_eq!(opened_by_client(&tracker, proto), first, "a second dump");

    // Further packets, both ways at once again: the entries exist now.
    assert_eq!(run(&topo, &args), [(name.to_string(), 2 * N as u64)]);
    let s = tracker.stats();
    assert_eq!(s["new"], N as u64, "no entry was made again: {s:?}");
    assert_eq!((s["invalid"], s["drops"]), (0, 0), "{s:?}");
    assert_eq!(
        opened_by_client(&tracker, proto),
        first,
        "after further packets"
    );
}

#[test]
fn tcp_syns_from_both_ends_at_once_make_one_entry_with_a_stable_origin() {
    reverse("tcp", &[], "SYN<>SYN");
}

#[test]
fn udp_datagrams_from_both_ends_at_once_make_one_entry_with_a_stable_origin() {
    reverse("udp", &["--proto", "udp"], "UDP<>UDP");
}
