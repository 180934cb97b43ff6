//! The handshake generator (`xdp-conntrack handshake`) through the real
//! tracker, checked the way the Ostinato article checks it: by the table
//! `dump` shows.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Output;

use common::*;

/// The Ostinato article's addresses, on ns1's and ns2's eth0.
const CLIENT: &str = "10.1.1.100";
const SERVER: &str = "10.2.2.100";
/// The generator's IPv6 defaults.
const CLIENT6: &str = "fd01::100";
const SERVER6: &str = "fd02::100";
const N: usize = 3000;

fn ostinato_topology() -> Topology {
    Topology::up_with(&format!("{CLIENT}/24"), &format!("{SERVER}/24"))
}

/// The same with the IPv6 addresses beside the IPv4 ones.
fn ostinato_topology6() -> Topology {
    Topology::up_env(&[
        ("ADDR1", &format!("{CLIENT}/24")),
        ("ADDR2", &format!("{SERVER}/24")),
        ("ADDR6_1", &format!("{CLIENT6}/64")),
        ("ADDR6_2", &format!("{SERVER6}/64")),
    ])
}

fn handshake(topo: &Topology, extra: &[&str]) -> Output {
    topo.handshake(extra)
}

/// (state, assured, unreplied) -> number of connections.
type ByState = BTreeMap<(String, bool, bool), usize>;
/// (client address, client port) of every connection.
type Clients = BTreeSet<(String, u16)>;

/// The tracker's table, summed up: every connection to SERVER:8080.
fn table(tracker: &Tracker) -> (ByState, Clients) {
    table_to(tracker, SERVER)
}

/// The tracker's table, summed up: every connection to `server`:8080.
fn table_to(tracker: &Tracker, server: &str) -> (ByState, Clients) {
    let mut by_state = BTreeMap::new();
    let mut clients = BTreeSet::new();
    for e in tracker.table() {
        let (Some(state), L4::Ports { sport, dport }) = (&e.state, e.orig.l4) else {
            panic!("unexpected entry: {e:?}");
        };
        assert_eq!(e.proto, "tcp", "unexpected entry: {e:?}");
        let key = (state.clone(), e.assured, e.unreplied);
        *by_state.entry(key).or_insert(0) += 1;
        assert_eq!(e.orig.dst.to_string(), server, "{e:?}");
        assert_eq!(dport, 8080, "{e:?}");
        clients.insert((e.orig.src.to_string(), sport));
    }
    (by_state, clients)
}

/// The generator succeeded, and the tracker holds exactly `n` connections,
/// every one ESTABLISHED [ASSURED] and replied; returns their clients.
fn assert_established(out: &Output, tracker: &Tracker, n: usize) -> Clients {
    assert_established_to(out, tracker, n, SERVER)
}

/// The same for connections to `server`.
fn assert_established_to(out: &Output, tracker: &Tracker, n: usize, server: &str) -> Clients {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (by_state, clients) = table_to(tracker, server);
    assert_eq!(
        by_state,
        BTreeMap::from([(("ESTABLISHED".to_string(), true, false), n)])
    );
    assert_eq!(clients.len(), n);
    clients
}

#[test]
fn every_ostinato_handshake_reaches_established_assured() {
    let topo = ostinato_topology();
    let tracker = Tracker::builder(&topo)
        .args(&["-q", "--max-entries", "8192"])
        .start();
    let out = handshake(&topo, &["--count", &N.to_string()]);
    let clients = assert_established(&out, &tracker, N);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for phase in ["SYN ", "SYN-ACK", "ACK "] {
        let line = stdout
            .lines()
            .find(|l| l.contains(phase))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains(&format!("delivered {N:>10}")), "{line}");
    }

    // One connection per client port, stepping from 23420.
    let want: BTreeSet<_> = (0..N as u16)
        .map(|i| (CLIENT.to_string(), 23420 + i))
        .collect();
    assert_eq!(clients, want);
}

/// Every phase line of the generator's report says `n` sent and delivered.
fn assert_phases_delivered(out: &Output, phases: &[&str], n: usize) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    for phase in phases {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!(" {phase} ")))
            .unwrap_or_else(|| panic!("no {phase} in {stdout}"));
        assert!(
            line.contains(&format!("sent {n:>10}")) && line.contains(&format!("delivered {n:>10}")),
            "{line}"
        );
    }
}

#[test]
fn every_ipv6_ostinato_handshake_reaches_established_assured() {
    let topo = ostinato_topology6();
    let tracker = Tracker::builder(&topo)
        .args(&["-q", "--max-entries", "8192"])
        .start();
    let out = handshake(&topo, &["-6", "--count", &N.to_string()]);
    let clients = assert_established_to(&out, &tracker, N, SERVER6);
    assert_phases_delivered(&out, &["SYN", "SYN-ACK", "ACK"], N);
    let want: BTreeSet<_> = (0..N as u16)
        .map(|i| (CLIENT6.to_string(), 23420 + i))
        .collect();
    assert_eq!(clients, want);
    let s = tracker.stats();
    assert_eq!(
        (s["new"], s["invalid"], s["drops"]),
        (N as u64, 0, 0),
        "{s:?}"
    );

    // A datagram each way and a flood: UDP over IPv6, checksummed too,
    // with the ports given as a URL gives them.
    let client = format!("[{CLIENT6}]:30000");
    let server = format!("[{SERVER6}]:5353");
    let out = handshake(
        &topo,
        &[
            "--client", &client, "--server", &server, "--proto", "udp", "--count", "500",
            "--flood", "4",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_phases_delivered(&out, &["UDP", "REPLY"], 500);
    assert_phases_delivered(&out, &["DATA"], 2000);
    let server: SocketAddr = server.parse().unwrap();
    let udp: BTreeSet<_> = tracker
        .table()
        .iter()
        .filter(|e| e.proto == "udp")
        .map(|e| e.orig)
        .collect();
    let want: BTreeSet<_> = (0..500)
        .map(|i| Tuple::ports(SocketAddr::new(CLIENT6.parse().unwrap(), 30000 + i), server))
        .collect();
    assert_eq!(udp, want);
    let s = tracker.stats();
    assert_eq!((s["invalid"], s["drops"]), (0, 0), "{s:?}");
}

#[test]
fn ipv6_client_ports_run_over_into_the_next_address_carrying() {
    // The first client address is the last of its 64 bits: the next one
    // carries into the upper 64.
    let (first, next) = ("fd01::ffff:ffff:ffff:ffff", "fd01:0:0:1::");
    let topo = Topology::up_env(&[
        ("ADDR6_1", &format!("{first}/64")),
        ("ADDR6_2", &format!("{SERVER6}/64")),
    ]);
    let out = topo.exec(
        &topo.ns1(),
        &[
            "ip",
            "addr",
            "add",
            &format!("{next}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    );
    assert!(out.status.success());
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();
    let out = handshake(
        &topo,
        &["--client", first, "--count", "1000", "--sport", "65000"],
    );
    let clients = assert_established_to(&out, &tracker, 1000, SERVER6);
    let mut want: BTreeSet<_> = (65000..=65535u16).map(|p| (first.to_string(), p)).collect();
    want.extend((65000..65000 + 464u16).map(|p| (next.to_string(), p)));
    assert_eq!(clients, want);
}

#[test]
fn an_address_of_the_other_family_is_one_line_of_error() {
    let topo = ostinato_topology6();
    for (extra, want) in [
        (
            &["-6", "--client", CLIENT][..],
            "--client 10.1.1.100 is an IPv4 address, but -6 makes this an IPv6 run",
        ),
        (
            &["--client", CLIENT6, "--server", SERVER],
            "--server 10.2.2.100 is an IPv4 address, but --client fd01::100 makes this an IPv6 run",
        ),
    ] {
        let out = handshake(&topo, extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    // An IPv6 address the namespace does not have.
    let out = handshake(&topo, &["--client", "fd01::9", "--count", "10"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("fd01::9 is not assigned"), "{err}");
}

#[test]
fn a_synack_acking_beyond_the_syn_establishes_nothing() {
    let topo = ostinato_topology();
    let tracker = Tracker::builder(&topo)
        .args(&["-q", "--max-entries", "8192"])
        .start();
    // Open loop: the tracker drops every SYN-ACK.
    let out = topo.handshake_open_loop(&["--count", &N.to_string(), "--synack-ack", "102"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let synack = stdout.lines().find(|l| l.contains("SYN-ACK")).unwrap();
    assert!(
        synack.contains("delivered          0"),
        "the tracker let them through: {synack}"
    );

    let (by_state, _) = table(&tracker);
    let want = BTreeMap::from([(("SYN_SENT".to_string(), false, true), N)]);
    assert_eq!(by_state, want, "no connection may be ESTABLISHED");

    // With a window the generator holds back all but the window's worth
    // of SYN-ACKs that never arrive, and fails on them, through either
    // sender (fresh ports: the same SYNs again would be retransmissions).
    for (sender, sport) in [("live", "40000"), ("socket", "41000")] {
        let out = topo.handshake_open_loop(&[
            "--window",
            "64",
            "--sender",
            sender,
            "--count",
            "100",
            "--sport",
            sport,
            "--synack-ack",
            "102",
        ]);
        assert_eq!(out.status.code(), Some(1), "{sender}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end(),
            "xdp-conntrack: 64 frames of the SYN-ACK stream stopped arriving at the sink \
             (--window 64): the path dropped them",
            "{sender}"
        );
    }
    let (by_state, _) = table(&tracker);
    let want = BTreeMap::from([(("SYN_SENT".to_string(), false, true), N + 200)]);
    assert_eq!(by_state, want);
}

#[test]
fn full_and_rst_lifecycles_close_every_connection() {
    let topo = ostinato_topology();
    let tracker = Tracker::builder(&topo)
        .args(&["-q", "--max-entries", "8192"])
        .start();
    let full = handshake(&topo, &["--count", "1000", "--lifecycle", "full"]);
    assert!(
        full.status.success(),
        "{}",
        String::from_utf8_lossy(&full.stderr)
    );
    let rst = handshake(
        &topo,
        &["--count", "1000", "--sport", "30000", "--lifecycle", "rst"],
    );
    assert!(
        rst.status.success(),
        "{}",
        String::from_utf8_lossy(&rst.stderr)
    );

    let (by_state, _) = table(&tracker);
    let want = BTreeMap::from([
        (("TIME_WAIT".to_string(), true, false), 1000),
        (("CLOSE".to_string(), true, false), 1000),
    ]);
    assert_eq!(by_state, want);
}

#[test]
fn client_ports_run_over_into_the_next_address() {
    let topo = ostinato_topology();
    let out = topo.exec(
        &topo.ns1(),
        &["ip", "addr", "add", "10.1.1.101/24", "dev", "eth0"],
    );
    assert!(out.status.success());
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();
    // Ports 65000..=65535 fit 536 connections; the rest use 10.1.1.101.
    let out = handshake(&topo, &["--count", "1000", "--sport", "65000"]);
    let clients = assert_established(&out, &tracker, 1000);
    let first: BTreeSet<_> = (65000..=65535u16)
        .map(|p| (CLIENT.to_string(), p))
        .collect();
    let second: BTreeSet<_> = (65000..65000 + 464u16)
        .map(|p| ("10.1.1.101".to_string(), p))
        .collect();
    assert_eq!(clients, first.union(&second).cloned().collect());
}

#[test]
fn addresses_outside_the_namespaces_are_refused() {
    let topo = ostinato_topology();
    let out = handshake(&topo, &["--count", "10", "--client", "10.9.9.9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("10.9.9.9 is not assigned"), "{err}");
    // Ports would run over into an address ns1 does not have.
    let out = handshake(&topo, &["--count", "1000", "--sport", "65000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("10.1.1.101 is not assigned"));
}

#[test]
fn the_af_packet_sender_establishes_the_same_connections() {
    let topo = ostinato_topology();
    let tracker = Tracker::builder(&topo)
        .args(&["-q", "--max-entries", "8192"])
        .start();
    let out = handshake(&topo, &["--count", "1000", "--sender", "socket"]);
    let clients = assert_established(&out, &tracker, 1000);
    let want: BTreeSet<_> = (0..1000u16)
        .map(|i| (CLIENT.to_string(), 23420 + i))
        .collect();
    assert_eq!(clients, want);
}

#[test]
fn a_data_flood_after_the_handshake_crosses_on_the_established_path() {
    let topo = ostinato_topology();
    let tracker = Tracker::builder(&topo)
        .args(&["-q", "--max-entries", "8192"])
        .start();
    let out = handshake(&topo, &["--count", "500", "--flood", "10"]);
    assert_flooded(&out, &tracker, 500, 10);
}

/// The flood of `per_conn` ACKs for each of `conns` connections all
/// arrived, and belongs to those connections: an ACK of any other tuple
/// would have opened a new (picked-up) entry.
fn assert_flooded(out: &Output, tracker: &Tracker, conns: usize, per_conn: usize) -> Clients {
    let clients = assert_established(out, tracker, conns);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let data = stdout.lines().find(|l| l.contains(" DATA ")).unwrap();
    let n = conns * per_conn;
    assert!(
        data.contains(&format!("sent {n:>10}")) && data.contains(&format!("delivered {n:>10}")),
        "{data}"
    );
    clients
}

#[test]
fn a_flood_from_two_threads_spreads_over_two_queues() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let topo = Topology::two_queues(&format!("{CLIENT}/24"), &format!("{SERVER}/24"));
    let tracker = Tracker::builder(&topo)
        .args(&["-q", "--max-entries", "8192"])
        .start();
    // An odd count: the first thread takes the remainder.
    let out = topo.handshake_open_loop(&["--count", "501", "--flood", "10", "--threads", "2"]);
    if cpus < 2 {
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("CPUs are available"));
        return;
    }
    // Each thread flooded its own share of the 501 connections.
    assert_flooded(&out, &tracker, 501, 10);
    // Both of the sink's queues carried their thread's flood (251 x 10 and
    // 250 x 10); the SYNs and ACKs, and whatever ns2 itself sent, are on
    // top of that.
    // Packets the sink in ns2 took on each rx queue of its eth0.
    let by_queue = topo.xdp_packets_by_queue(&topo.ns2(), "eth0");
    assert_eq!(by_queue.len(), 2, "{by_queue:?}");
    assert!(
        by_queue.iter().sum::<u64>() >= 501 + 501 + 5010,
        "{by_queue:?}"
    );
    assert!(by_queue.iter().all(|&n| n >= 2500), "{by_queue:?}");
}

#[test]
fn a_window_takes_one_sending_thread() {
    let topo = ostinato_topology();
    for extra in [
        &["--count", "5", "--flood", "2", "--threads", "2"][..],
        &["--count", "5", "--clash", "same"],
    ] {
        // handshake() gives the generator its window.
        let out = handshake(&topo, extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim_end(),
            "xdp-conntrack: --window takes one sending thread (not --threads or --clash)",
            "{extra:?}"
        );
    }
}

#[test]
fn threads_need_a_flood_of_live_frames() {
    let topo = ostinato_topology();
    for extra in [
        &["--count", "5", "--threads", "2"][..],
        &[
            "--count",
            "5",
            "--flood",
            "2",
            "--threads",
            "2",
            "--sender",
            "socket",
        ],
        &["--count", "5", "--flood", "2", "--threads", "0"],
        &["--count", "5", "--flood", "2", "--threads", "100000"],
    ] {
        let out = topo.handshake_open_loop(extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
        assert!(err.contains("--threads"), "{extra:?}: {err}");
    }
}

/// hs_gen's window frame by frame, through BPF_PROG_TEST_RUN: a frame
/// that would put more than the window in flight is dropped unsent and
/// `next` stays; each frame the sink counts lets one more go.
#[test]
fn the_window_holds_a_frame_until_the_sink_counts_one() {
    use libbpf_rs::skel::{OpenSkel, SkelBuilder};
    use std::os::fd::AsFd;
    use xdp_conntrack::bpf::hs::types::{hs_kind, hs_phase};
    use xdp_conntrack::bpf::hs::HandshakeSkelBuilder;
    use xdp_conntrack::packet::{self, tcp_flags::SYN, Endpoint, Ether};
    use xdp_conntrack::sys::prog_test_run;
    const XDP_DROP: u32 = 1;
    const XDP_TX: u32 = 3;

    let mut object = std::mem::MaybeUninit::uninit();
    let mut skel = HandshakeSkelBuilder::default()
        .open(&mut object)
        .unwrap()
        .load()
        .unwrap();
    let eth = Ether {
        dst: [2, 0, 0, 0, 0, 2],
        src: [2, 0, 0, 0, 0, 1],
    };
    let client: std::net::Ipv4Addr = CLIENT.parse().unwrap();
    let server: std::net::Ipv4Addr = SERVER.parse().unwrap();
    let syn = packet::tcp(
        &eth,
        Endpoint::new(client, 23420),
        Endpoint::new(server, 8080),
        SYN,
        100,
        0,
        b"",
    );
    let kind = hs_kind::HS_SYN.0 as usize;
    {
        let bss = skel.maps.bss_data.as_deref_mut().unwrap();
        bss.windowed = 1;
        bss.phase = hs_phase {
            next: 5,
            count: 20,
            client_addr: u32::from(client),
            ports_per_addr: 100,
            client_port: 23420,
            port_step: 1,
            client_is_src: 1,
            kind: kind as u8,
            first: 5,
            arrived_base: 7,
            window: 2,
            ..Default::default()
        };
        bss.arrived[kind] = 7;
    }
    let gen = |skel: &mut xdp_conntrack::bpf::hs::HandshakeSkel<'_>| {
        let verdict = prog_test_run(skel.progs.hs_gen.as_fd(), &syn).unwrap();
        (verdict, skel.maps.bss_data.as_deref().unwrap().phase.next)
    };
    assert_eq!(gen(&mut skel), (XDP_TX, 6));
    assert_eq!(gen(&mut skel), (XDP_TX, 7));
    // Two in flight: the third waits, however often it is tried.
    assert_eq!(gen(&mut skel), (XDP_DROP, 7));
    assert_eq!(gen(&mut skel), (XDP_DROP, 7));
    // The sink counts one (and drops it, as it drops everything).
    assert_eq!(
        prog_test_run(skel.progs.hs_sink.as_fd(), &syn).unwrap(),
        XDP_DROP
    );
    assert_eq!(skel.maps.bss_data.as_deref().unwrap().arrived[kind], 8);
    assert_eq!(gen(&mut skel), (XDP_TX, 8));
    assert_eq!(gen(&mut skel), (XDP_DROP, 8));
    // Frames of another kind open nothing.
    let mut synack = syn.clone();
    synack[14 + 20 + 13] |= 0x10;
    prog_test_run(skel.progs.hs_sink.as_fd(), &synack).unwrap();
    assert_eq!(gen(&mut skel), (XDP_DROP, 8));
    // Without `windowed` the sink leaves arrived[] alone.
    skel.maps.bss_data.as_deref_mut().unwrap().windowed = 0;
    prog_test_run(skel.progs.hs_sink.as_fd(), &syn).unwrap();
    assert_eq!(skel.maps.bss_data.as_deref().unwrap().arrived[kind], 8);
    // Without a window the phase runs to its count.
    skel.maps.bss_data.as_deref_mut().unwrap().phase.window = 0;
    for next in 9..=20 {
        assert_eq!(gen(&mut skel), (XDP_TX, next));
    }
    assert_eq!(gen(&mut skel), (XDP_DROP, 20));
}
