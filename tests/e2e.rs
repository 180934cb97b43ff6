//! End-to-end tests: the real binary forwarding real traffic between two
//! network namespaces, each test with its own topology.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{setsockopt, sockopt};
use nix::unistd::Pid;

/// A MAC that neither namespace owns.
const WRONG_MAC: &str = "02:00:00:00:00:99";

/// Held by each test whose tracker runs at `-l 5`, for the tracker's
/// lifetime: since 6.5 the kernel lets one reader at a time open
/// trace_pipe.
static TRACE_PIPE: Mutex<()> = Mutex::new(());

fn trace_pipe() -> MutexGuard<'static, ()> {
    TRACE_PIPE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A UDP socket bound to `addr` (port picked by the kernel) in `ns`.
fn udp_socket(ns: &str, addr: impl Into<IpAddr>) -> UdpSocket {
    let addr = addr.into();
    let s = in_ns(ns, || {
        UdpSocket::bind((addr, 0)).expect("binding a UDP socket")
    });
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Pings 10.0.0.2 from ns1 (`count` echoes, one second per reply);
/// returns ping's output.
fn ping(topo: &Topology, count: u32) -> Output {
    topo.exec(
        &topo.ns1(),
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            "10.0.0.2",
        ],
    )
}

/// Whether every one of `count` pings from ns1 to ns2 is answered.
fn ping_all_answered(topo: &Topology, count: u32) -> bool {
    let out = ping(topo, count);
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .contains(&format!("{count} packets transmitted, {count} received"))
}

/// Whether a single ping from ns1 to ns2 goes unanswered.
fn ping_fails(topo: &Topology) -> bool {
    !ping(topo, 1).status.success()
}

/// The MAC address of `eth0` in `ns`.
fn eth0_mac(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-br", "link", "show", "eth0"])
        .output()
        .expect("ip link show eth0");
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no MAC in {text:?}"));
    assert_eq!(mac.len(), 17, "not a MAC: {mac:?}");
    mac.to_string()
}

/// Waits (bounded) for the tracker to exit and returns its status.
fn wait_exit(tracker: &mut Tracker, timeout: Duration) -> ExitStatus {
    let exited = wait_for(timeout, || matches!(tracker.child.try_wait(), Ok(Some(_))));
    assert!(exited, "xdp-conntrack did not exit within {timeout:?}");
    tracker.child.try_wait().unwrap().unwrap()
}

/// Waits for a live counter line whose `strict` drop count is non-zero.
fn wait_strict_drops(tracker: &Tracker, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match tracker.stdout.recv_timeout(left) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
        };
        let n = line
            .split_once(" strict ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n.filter(|&n| n > 0) {
            return Some(n);
        }
    }
}

#[test]
fn ping_passes_and_is_tracked() {
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).start();
    assert!(
        ping_all_answered(&topo, 3),
        "ping from ns1 to ns2 through the tracker"
    );
    let table = tracker.table();
    let (a1, a2) = (ADDR1.into(), ADDR2.into());
    let icmp: Vec<&ConntrackLine> = table
        .iter()
        .filter(|e| {
            let L4::Icmp { id, .. } = e.orig.l4 else {
                return false;
            };
            e.proto == "icmp"
                && e.orig == Tuple::icmp(a1, a2, 8, 0, id)
                && e.reply == Tuple::icmp(a2, a1, 0, 0, id)
        })
        .collect();
    assert!(
        !icmp.is_empty(),
        "no icmp echo entry in the dump: {table:#?}"
    );
    assert!(
        icmp.iter().any(|e| !e.unreplied),
        "the answered echo is still UNREPLIED: {icmp:#?}"
    );
}

/// A `conntrack -L` line without its seconds left, which tick between two
/// dumps: the words before it (protocol name and number), then the rest.
fn untimed(line: &str) -> String {
    let w: Vec<&str> = line.split_whitespace().collect();
    assert!(w.len() > 3, "not a conntrack line: {line:?}");
    format!("{} {} {}", w[0], w[1], w[3..].join(" "))
}

#[test]
fn dump_selects_a_family_and_prints_conntracks_extended_lines() {
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).start();
    assert!(ping_all_answered(&topo, 1), "ping through the tracker");
    let (all, footer) = dump_with(&tracker.pin_path, &[]);
    assert!(!all.is_empty(), "the echo's entry: {footer}");
    let all: Vec<String> = all.iter().map(|l| untimed(l)).collect();
    // Every entry here is IPv4: -f ipv4 shows them all, -f ipv6 none, and
    // the footer counts what was shown.
    let (v4, footer4) = dump_with(&tracker.pin_path, &["-f", "ipv4"]);
    assert_eq!(v4.iter().map(|l| untimed(l)).collect::<Vec<_>>(), all);
    assert!(
        footer4.contains(&format!("{} flow entries", all.len())),
        "{footer4}"
    );
    let (v6, footer6) = dump_with(&tracker.pin_path, &["--family", "ipv6"]);
    assert!(v6.is_empty(), "{v6:#?}");
    assert!(
        footer6.contains("0 flow entries have been shown"),
        "{footer6}"
    );
    // conntrack -o extended: the family's name and number, then the line.
    let (ext, _) = dump_with(&tracker.pin_path, &["-o", "extended"]);
    assert_eq!(ext.len(), all.len());
    for (e, l) in ext.iter().zip(&all) {
        let rest = e
            .strip_prefix("ipv4     2 ")
            .unwrap_or_else(|| panic!("no ipv4 prefix: {e:?}"));
        assert_eq!(&untimed(rest), l);
    }
}

#[test]
fn tcp_transfer_arrives_intact_and_is_tracked() {
    const LEN: usize = 16 << 20;
    let pattern = |i: usize| (i % 251) as u8;

    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).start();
    let listener = tcp_listener(&topo);
    let server_addr = listener.local_addr().unwrap();

    // The server counts and checks every byte, reports the count once it
    // has them all, then expects EOF (no byte more) and closes.
    let server = std::thread::spawn(move || {
        let mut s = tcp_accept(&listener);
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        let mut reported = false;
        loop {
            let n = s.read(&mut buf).expect("server read");
            if n == 0 {
                break;
            }
            for (k, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, pattern(total + k), "byte {} corrupted", total + k);
            }
            total += n;
            if total >= LEN && !reported {
                s.write_all(&(total as u64).to_be_bytes())
                    .expect("server write");
                reported = true;
            }
        }
        total
    });

    let mut client =
        tcp_connect(&topo, server_addr, Duration::from_secs(5)).expect("connecting through");
    let client_addr = client.local_addr().unwrap();
    let data: Vec<u8> = (0..LEN).map(pattern).collect();
    client.write_all(&data).expect("sending 16 MiB");
    let mut count = [0u8; 8];
    client
        .read_exact(&mut count)
        .expect("reading the server's count");
    assert_eq!(u64::from_be_bytes(count), LEN as u64, "bytes that arrived");

    // Open and both ways: ESTABLISHED and ASSURED.
    let entry = || dump_flow(&tracker.pin_path, "tcp", client_addr, server_addr);
    let e = entry()
        .unwrap_or_else(|| panic!("no tcp entry for {client_addr} -> {server_addr} in the dump"));
    assert!(e.in_state("ESTABLISHED") && e.assured, "{e:?}");
    assert!(!e.unreplied, "{e:?}");
    let reply = Tuple::ports(server_addr, client_addr);
    assert_eq!(e.reply, reply, "reply tuple: {e:?}");

    // Orderly close from both ends: TIME_WAIT, still ASSURED.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let total = server.join().expect("server thread");
    assert_eq!(total, LEN, "the server saw bytes beyond the transfer");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("reading the close");
    assert!(rest.is_empty());
    drop(client);
    let mut last = None;
    let closed = wait_for(Duration::from_secs(5), || {
        last = entry();
        last.as_ref()
            .is_some_and(|e| e.in_state("TIME_WAIT") && e.assured)
    });
    assert!(closed, "not TIME_WAIT [ASSURED] after the close: {last:?}");
}

/// The kernel's TcpExt counters (/proc/net/netstat) in `ns`, by name.
fn tcp_ext(topo: &Topology, ns: &str) -> BTreeMap<String, u64> {
    let out = topo.exec(ns, &["cat", "/proc/net/netstat"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("TcpExt:"))
        .collect();
    let [names, values] = rows[..] else {
        panic!("no TcpExt rows in {ns}: {text}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .map(|(n, v)| (n.to_string(), v.parse().expect("a TcpExt value")))
        .collect()
}

/// The number at `"key":` after the first `"section"` in iperf3's JSON.
fn json_number(json: &str, section: &str, key: &str) -> u64 {
    let at = json
        .find(&format!("\"{section}\""))
        .unwrap_or_else(|| panic!("no {section} in {json}"));
    let rest = &json[at..];
    let at = rest
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {section}: {json}"))
        + key.len()
        + 3;
    let digits: String = rest[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{section}.{key} is not a number: {json}"))
}

/// The tracker called nothing INVALID and dropped nothing.
fn assert_nothing_invalid(tracker: &Tracker) {
    let s = tracker.stats();
    assert_eq!((s["invalid"], s["drops"]), (0, 0), "{s:?}");
}

/// Runs `tc ARGS` in `ns`.
fn tc(topo: &Topology, ns: &str, args: &[&str]) {
    let out = topo.exec(ns, &[&["tc"], args].concat());
    assert!(
        out.status.success(),
        "tc {args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Loses and reorders the packets leaving `ns`'s eth0, as netem would
/// (this kernel has no netem; HTB, u32, clsact, mirred and ifb do it
/// here), choosing them by the low bits of their IP ID, which TCP counts
/// up one per segment.  `gso_max_segs 1` makes each segment a packet of
/// its own in the qdiscs (TCP builds GSO packets whatever the device's
/// offloads say, and they are cut into segments only after the qdisc):
/// - 1 in 128 IPv4 packets is redirected to an ifb whose pfifo holds
///   nothing.  The sender's stack sees it sent (a drop in its own qdisc
///   it would see, and send again at once), so it is lost on the way;
/// - 1 in 16 waits in an HTB class shaped to 10 Mbit/s while the rest
///   pass at 10 Gbit/s, so it arrives after packets sent later.
fn impair(topo: &Topology, ns: &str) {
    let out = topo.exec(ns, &["ip", "link", "set", "eth0", "gso_max_segs", "1"]);
    assert!(out.status.success(), "gso_max_segs in {ns}");
    let root = ["qdisc", "replace", "dev", "eth0", "root", "handle", "1:"];
    tc(topo, ns, &[&root[..], &["htb", "default", "10"]].concat());
    for (class, rate, limit) in [("1:10", "10gbit", "1000"), ("1:20", "10mbit", "20")] {
        tc(
            topo,
            ns,
            &[
                "class", "add", "dev", "eth0", "parent", "1:", "classid", class, "htb", "rate",
                rate, "quantum", "1514",
            ],
        );
        tc(
            topo,
            ns,
            &[
                "qdisc", "add", "dev", "eth0", "parent", class, "pfifo", "limit", limit,
            ],
        );
    }
    let by_id = |value: &'static str, mask: &'static str| {
        [
            "protocol", "ip", "u32", "match", "u16", value, mask, "at", "4",
        ]
    };
    tc(
        topo,
        ns,
        &[
            &["filter", "add", "dev", "eth0", "parent", "1:"][..],
            &by_id("0x0003", "0x000f"),
            &["flowid", "1:20"],
        ]
        .concat(),
    );
    let out = topo.exec(ns, &["ip", "link", "add", "ifb0", "up", "type", "ifb"]);
    assert!(out.status.success(), "ifb in {ns}");
    tc(
        topo,
        ns,
        &[
            "qdisc", "replace", "dev", "ifb0", "root", "pfifo", "limit", "0",
        ],
    );
    tc(topo, ns, &["qdisc", "add", "dev", "eth0", "clsact"]);
    tc(
        topo,
        ns,
        &[
            &["filter", "add", "dev", "eth0", "egress"][..],
            &by_id("0x0055", "0x007f"),
            &["action", "mirred", "egress", "redirect", "dev", "ifb0"],
        ]
        .concat(),
    );
}

/// Packets `impair` has lost at `ns`'s eth0, and packets it held back.
fn impaired(topo: &Topology, ns: &str) -> (u64, u64) {
    // `qdisc pfifo 8001: parent 1:20 limit 20p`, then
    // ` Sent 2452046 bytes 1627 pkt (dropped 181, overlimits 0 requeues 0)`
    let stats = |dev: &str, qdisc: &str| -> Vec<u64> {
        let out = topo.exec(ns, &["tc", "-s", "qdisc", "show", "dev", dev]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        lines.find(|l| l.contains(qdisc));
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("{dev} {qdisc}: {text}"));
        line.split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    // [bytes, packets, dropped, overlimits, requeues]
    (stats("ifb0", "root")[2], stats("eth0", "parent 1:20")[1])
}

#[test]
fn iperf3_tcp_with_loss_and_reordering_completes_and_nothing_is_invalid() {
    const BYTES: u64 = 8 << 20;
    let topo = Topology::up();
    // Both ends: the data one way and the ACKs the other are reordered
    // and lost.
    impair(&topo, &topo.ns1());
    impair(&topo, &topo.ns2());
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();

    let _server = iperf3_server(&topo, "10.0.0.2");

    let out = topo.exec(
        &topo.ns1(),
        &[
            "timeout",
            "120",
            "iperf3",
            "-c",
            "10.0.0.2",
            "-p",
            "5201",
            "-B",
            "10.0.0.1",
            "-n",
            &BYTES.to_string(),
            "--connect-timeout",
            "10000",
            "--json",
        ],
    );
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "iperf3 -c failed: {json}");
    // It sent all of it (in 128 KiB writes), the server took data, and the
    // loss was real.  (A server's count stops at the end of the test, with
    // data in flight.)
    assert!(json_number(&json, "sum_sent", "bytes") >= BYTES, "{json}");
    let received = json_number(&json, "sum_received", "bytes");
    assert!(received > 0, "{json}");
    let retransmits = json_number(&json, "sum_sent", "retransmits");
    let (lost, held) = impaired(&topo, &topo.ns1());
    let (acks_lost, acks_held) = impaired(&topo, &topo.ns2());
    assert!(lost > 0 && retransmits > 0, "nothing was lost: {json}");
    assert!(held > 0, "nothing was held back");
    let port = json_number(&json, "connected", "local_port") as u16;
    eprintln!(
        "iperf3: {BYTES} bytes sent, {received} counted by the server, \
         {retransmits} retransmitted; lost {lost} packets and {acks_lost} \
         ACKs, held back {held} packets and {acks_held} ACKs"
    );
    assert_nothing_invalid(&tracker);

    // The control and the data connections, both opened by the client,
    // ASSURED, and closed: with FINs (TIME_WAIT), or with a RST (CLOSE)
    // where an end closes with data unread.
    let to = SocketAddr::from((ADDR2, 5201));
    let data = Tuple::ports(SocketAddr::from((ADDR1, port)), to);
    let from_client = |e: &ConntrackLine| match e.orig.l4 {
        L4::Ports { sport, .. } => {
            let from = SocketAddr::from((ADDR1, sport));
            e.orig == Tuple::ports(from, to) && e.reply == Tuple::ports(to, from)
        }
        L4::Icmp { .. } => false,
    };
    let mut last = Vec::new();
    let closed = wait_for(IO_TIMEOUT, || {
        last = tracker
            .table()
            .into_iter()
            .filter(|e| e.proto == "tcp")
            .collect();
        last.len() == 2
            && last.iter().any(|e| e.orig == data)
            && last.iter().all(|e| {
                from_client(e)
                    && e.assured
                    && !e.unreplied
                    && (e.in_state("TIME_WAIT") || e.in_state("CLOSE"))
            })
    });
    let states: Vec<_> = last.iter().map(|e| e.state.clone()).collect();
    eprintln!("iperf3: the connections closed in {states:?}");
    assert!(
        closed,
        "not every iperf3 connection closed ASSURED: {last:#?}"
    );
    assert_nothing_invalid(&tracker);
}

#[test]
fn a_receiver_that_stops_reading_is_probed_through_a_zero_window() {
    const LEN: usize = 4 << 20;
    let pattern = |i: usize| (i % 253) as u8;
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();
    let listener = tcp_listener(&topo);
    // A small receive buffer, inherited by the accepted socket: it fills
    // at once, and its window closes.
    setsockopt(&listener, sockopt::RcvBuf, &4096).expect("SO_RCVBUF");
    let server_addr = listener.local_addr().unwrap();
    let mut client =
        tcp_connect(&topo, server_addr, Duration::from_secs(5)).expect("connecting through");
    let client_addr = client.local_addr().unwrap();
    let mut server = tcp_accept(&listener);

    // The client sends everything while the server does not read.
    let sender = std::thread::spawn(move || {
        let data: Vec<u8> = (0..LEN).map(pattern).collect();
        client.write_all(&data).expect("sending");
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut count = [0u8; 8];
        client.read_exact(&mut count).expect("reading the count");
        u64::from_be_bytes(count)
    });
    // The kernel's own counts, in each test namespace: the server
    // advertised a zero window, and the client probed it.
    let stat = |ns: &str, name: &str| tcp_ext(&topo, ns).get(name).copied().unwrap_or(0);
    let probed = wait_for(IO_TIMEOUT, || stat(&topo.ns1(), "TCPWinProbe") >= 3);
    assert!(probed, "the client sent no zero-window probes");
    let closed = stat(&topo.ns2(), "TCPToZeroWindowAdv");
    assert!(closed > 0, "the server never closed its window");
    eprintln!(
        "zero window: advertised {closed} times, probed {} times",
        stat(&topo.ns1(), "TCPWinProbe")
    );
    assert_nothing_invalid(&tracker);

    // The server reads again: the window opens and the rest arrives.
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        let n = server.read(&mut buf).expect("server read");
        if n == 0 {
            break;
        }
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pattern(total + k), "byte {} corrupted", total + k);
        }
        total += n;
    }
    assert_eq!(total, LEN, "bytes that arrived");
    server.write_all(&(total as u64).to_be_bytes()).unwrap();
    assert_eq!(sender.join().expect("client thread"), LEN as u64);

    let e = dump_flow(&tracker.pin_path, "tcp", client_addr, server_addr)
        .unwrap_or_else(|| panic!("no tcp entry for {client_addr} -> {server_addr}"));
    assert!(e.assured && !e.unreplied, "{e:?}");
    assert_nothing_invalid(&tracker);
}

#[test]
fn udp_datagrams_pass_and_one_way_flow_is_unreplied() {
    const N: u32 = 2000;
    const SIZE: usize = 512;
    let payload = |seq: u32| -> Vec<u8> {
        let mut p = seq.to_be_bytes().to_vec();
        p.extend((4..SIZE).map(|i| (i as u32).wrapping_mul(seq | 1) as u8));
        p
    };

    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).start();
    let rx = udp_socket(&topo.ns2(), ADDR2);
    // Room for the whole burst, so that only the path can lose datagrams.
    setsockopt(&rx, sockopt::RcvBufForce, &(16 << 20)).expect("SO_RCVBUFFORCE");
    let tx = udp_socket(&topo.ns1(), ADDR1);
    let (from, to) = (tx.local_addr().unwrap(), rx.local_addr().unwrap());

    let receiver = std::thread::spawn(move || {
        let mut seen = HashSet::new();
        let mut buf = [0u8; 2048];
        while seen.len() < N as usize {
            match rx.recv_from(&mut buf) {
                Ok((n, src)) => {
                    assert_eq!(src, from, "datagram from an unexpected source");
                    let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
                    assert_eq!(&buf[..n], &payload(seq)[..], "datagram {seq} corrupted");
                    assert!(seen.insert(seq), "datagram {seq} arrived twice");
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
        seen.len()
    });
    for seq in 0..N {
        tx.send_to(&payload(seq), to).expect("send");
    }
    let got = receiver.join().expect("receiver thread");
    assert!(
        got >= (N - N / 100) as usize,
        "only {got} of {N} datagrams arrived"
    );

    let e = dump_flow(&tracker.pin_path, "udp", from, to)
        .unwrap_or_else(|| panic!("no udp entry for {from} -> {to} in the dump"));
    assert!(e.unreplied, "a one-way flow must be UNREPLIED: {e:?}");
}

#[test]
fn udp_exchange_both_ways_is_replied() {
    const N: u32 = 200;
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).start();
    let server = udp_socket(&topo.ns2(), ADDR2);
    let client = udp_socket(&topo.ns1(), ADDR1);
    let (from, to) = (client.local_addr().unwrap(), server.local_addr().unwrap());

    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut echoed = 0u32;
        while let Ok((n, src)) = server.recv_from(&mut buf) {
            server.send_to(&buf[..n], src).expect("echo");
            echoed += 1;
            if echoed == N {
                break;
            }
        }
        echoed
    });
    let mut answered = 0u32;
    let mut buf = [0u8; 64];
    for seq in 0..N {
        client.send_to(&seq.to_be_bytes(), to).expect("send");
        match client.recv_from(&mut buf) {
            Ok((4, src)) if src == to && buf[..4] == seq.to_be_bytes() => answered += 1,
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(_) => {}
        }
    }
    echo.join().expect("echo thread");
    assert!(
        answered >= N - 2,
        "only {answered} of {N} datagrams came back"
    );

    let e = dump_flow(&tracker.pin_path, "udp", from, to)
        .unwrap_or_else(|| panic!("no udp entry for {from} -> {to} in the dump"));
    assert!(
        !e.unreplied,
        "a flow seen both ways must not be UNREPLIED: {e:?}"
    );
    assert_eq!(e.reply, Tuple::ports(to, from), "reply tuple: {e:?}");
}

#[test]
fn nothing_passes_without_a_running_tracker() {
    let topo = Topology::up();
    let listener = tcp_listener(&topo);
    let server_addr = listener.local_addr().unwrap();
    let short = Duration::from_secs(1);

    assert!(ping_fails(&topo), "ping passed before the tracker started");
    assert!(
        tcp_connect(&topo, server_addr, short).is_err(),
        "TCP connected before the tracker started"
    );

    let tracker = Tracker::builder(&topo).start();
    // The failed attempts left unresolved (or failing) neighbour entries
    // whose expiry would fail the next connect with EHOSTUNREACH; start
    // the comparison from clean caches.
    for ns in [topo.ns1(), topo.ns2()] {
        let st = Command::new("ip")
            .args(["-n", &ns, "neigh", "flush", "dev", "eth0"])
            .status()
            .expect("ip neigh flush");
        assert!(st.success());
    }
    if let Err(e) = tcp_connect(&topo, server_addr, Duration::from_secs(5)) {
        panic!("TCP does not connect with the tracker running: {e}");
    }
    assert!(ping_all_answered(&topo, 2), "ping with the tracker running");
    assert!(tracker.stop().success());

    assert!(ping_fails(&topo), "ping passed after the tracker stopped");
    assert!(
        tcp_connect(&topo, server_addr, short).is_err(),
        "TCP connected after the tracker stopped"
    );
}

/// Starts a tracker, sends it `sig`, and checks that it exits 0 and leaves
/// neither XDP programs nor pins behind.
fn signal_cleans_up(sig: Signal) {
    let topo = Topology::up();
    let mut tracker = Tracker::builder(&topo).start();
    assert!(xdp_attached(&topo, 1) && xdp_attached(&topo, 2));
    assert!(tracker.pin_path.join("ct_table").exists());

    kill(Pid::from_raw(tracker.child.id() as i32), sig).expect("kill");
    let status = wait_exit(&mut tracker, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status after {sig}: {status}");
    for side in [1, 2] {
        let link = link_show(&topo, side);
        assert!(!link.contains("xdp"), "still attached after {sig}: {link}");
    }
    assert!(
        !tracker.pin_path.exists(),
        "{} survives {sig}",
        tracker.pin_path.display()
    );
    assert!(ping_fails(&topo), "traffic still passes after {sig}");
}

#[test]
fn sigint_exits_zero_and_cleans_up() {
    signal_cleans_up(Signal::SIGINT);
}

#[test]
fn sigterm_exits_zero_and_cleans_up() {
    signal_cleans_up(Signal::SIGTERM);
}

#[test]
fn log_level_5_prints_trace_lines() {
    let _trace = trace_pipe();
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).args(&["-l", "5"]).start();
    // Pings keep coming until the trace shows one (or the deadline).
    let mut pinger = Command::new("ip")
        .args(["netns", "exec", &topo.ns1()])
        .args(["ping", "-n", "-q", "-i", "0.2", "-c", "100", "10.0.0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning ping");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tracker.stdout.recv_timeout(left) {
            Ok(l) if l.starts_with("trace: ") && l.contains("proto=1 10.0.0.1:") => break true,
            Ok(l) => seen.push(l),
            Err(_) => break false,
        }
    };
    let _ = pinger.kill();
    let _ = pinger.wait();
    assert!(found, "no trace line for the ping; stdout was {seen:#?}");
}

#[test]
fn trace_lines_name_actions_and_each_state_change_reads_as_one_line() {
    state_changes_are_traced(ADDR2.into());
}

/// `%pI6` writes all eight groups in full; the reader prints the address
/// as `inet_ntop()` does, bracketed before its port as Rust's own
/// `SocketAddr` prints it.
#[test]
fn trace_lines_print_ipv6_addresses_as_inet_ntop_writes_them() {
    state_changes_are_traced(ADDR6_2.parse().unwrap());
}

/// A TCP connection to `server` (in ns2) at `-l 5` shows its three state
/// changes, each as one line with its tuple, and both ways' actions.
fn state_changes_are_traced(server: IpAddr) {
    let _trace = trace_pipe();
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).args(&["-l", "5"]).start();
    // libbpf stays at warnings: no loader log before the first line.
    assert!(
        tracker.startup.iter().all(|l| !l.starts_with("libbpf:")),
        "{:#?}",
        tracker.startup
    );
    let listener = in_ns(&topo.ns2(), || {
        TcpListener::bind((server, 0)).expect("binding a listener in ns2")
    });
    let to = listener.local_addr().unwrap();
    let client = tcp_connect(&topo, to, IO_TIMEOUT).expect("connecting");
    let _server = tcp_accept(&listener);
    let from = client.local_addr().unwrap();
    let want = [
        format!("tcp NONE -> SYN_SENT {from} -> {to} new"),
        format!("tcp SYN_SENT -> SYN_RECV {to} -> {from} reply"),
        format!("tcp SYN_RECV -> ESTABLISHED {from} -> {to} original"),
        "side1 -> side2 XDP_REDIRECT".to_string(),
        "side2 -> side1 XDP_REDIRECT".to_string(),
    ];
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !want
        .iter()
        .all(|w| seen.iter().any(|l: &String| l.ends_with(w.as_str())))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match tracker.stdout.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("missing {want:#?} in {seen:#?}"),
        }
    }
    assert!(seen.iter().all(|l| !l.contains("act=")), "{seen:#?}");
}

#[test]
fn a_port_unreachable_crosses_as_related_and_is_traced() {
    let _trace = trace_pipe();
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).args(&["-l", "5"]).start();
    // Nothing listens on port 9 in ns2, whose kernel answers with an ICMP
    // port unreachable: related to the flow, it must reach the sender,
    // whose connected socket then reports the refusal.
    let tx = udp_socket(&topo.ns1(), ADDR1);
    tx.connect((ADDR2, 9)).expect("connect");
    let from = tx.local_addr().unwrap();
    let want = format!("icmp error type=3 code=3 related to proto=17 {from} -> {ADDR2}:9");
    let (mut refused, mut traced) = (false, false);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The trace buffer is shared with any other test at -l 5, so keep
    // asking until this one's line shows (ns2 rate-limits its answers).
    while !(refused && traced) && Instant::now() < deadline {
        tx.send(b"anyone?").expect("send");
        match tx.recv(&mut [0u8; 16]) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused = true,
            other => seen.push(format!("recv: {other:?}")),
        }
        while let Ok(l) = tracker.stdout.recv_timeout(Duration::from_millis(200)) {
            traced |= l.starts_with("trace: ") && l.contains(&want);
            seen.push(l);
        }
    }
    assert!(refused, "the port unreachable never arrived: {seen:#?}");
    assert!(traced, "no trace line {want:?}: {seen:#?}");

    let out = Command::new(binary())
        .args(["stats", "--pin-path"])
        .arg(topo.pin_path())
        .output()
        .expect("xdp-conntrack stats");
    let text = String::from_utf8_lossy(&out.stdout);
    let counter = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert!(counter("related") >= 1, "{text}");
    assert_eq!(counter("invalid"), 0, "{text}");
    let to = SocketAddr::from((ADDR2, 9));
    let e = dump_flow(&tracker.pin_path, "udp", from, to).expect("the UDP entry");
    assert!(e.unreplied, "an error is no reply: {e:?}");
}

#[test]
fn dst_mac_options_rewrite_frames_by_egress_side() {
    let topo = Topology::up();
    let (mac1, mac2) = (eth0_mac(&topo.ns1()), eth0_mac(&topo.ns2()));
    // Both ends address each other at a MAC nobody owns.
    for (ns, peer) in [(topo.ns1(), "10.0.0.2"), (topo.ns2(), "10.0.0.1")] {
        let st = Command::new("ip")
            .args(["-n", &ns, "neigh", "replace", peer, "lladdr", WRONG_MAC])
            .args(["dev", "eth0"])
            .status()
            .expect("ip neigh replace");
        assert!(st.success());
    }

    let tracker = Tracker::builder(&topo).start();
    assert!(ping_fails(&topo), "ping passed without the MAC rewrite");
    assert!(tracker.stop().success());

    // --dst-mac1 applies to frames leaving through iface1, towards ns1.
    let swapped = ["--dst-mac1", &mac2, "--dst-mac2", &mac1];
    let tracker = Tracker::builder(&topo).args(&swapped).start();
    assert!(
        ping_fails(&topo),
        "ping passed with the MACs given to the wrong sides"
    );
    assert!(tracker.stop().success());

    let right = ["--dst-mac1", &mac1, "--dst-mac2", &mac2];
    let _tracker = Tracker::builder(&topo).args(&right).start();
    assert!(
        ping_all_answered(&topo, 3),
        "ping fails with --dst-mac1 {mac1} --dst-mac2 {mac2}"
    );
}

/// Opens a connection through a first tracker, replaces the tracker by one
/// started with `extra` (which has never seen the handshake), and sends one
/// more message on the old connection.
fn midstream(topo: &Topology, extra: &[&str]) -> Midstream {
    let listener = tcp_listener(topo);
    let addr = listener.local_addr().unwrap();
    let first = Tracker::builder(topo).start();
    let mut client = tcp_connect(topo, addr, Duration::from_secs(5)).expect("connect");
    let flow = (client.local_addr().unwrap(), addr);
    let mut server = tcp_accept(&listener);
    client.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).expect("first message");
    server.write_all(b"hi").unwrap();
    client.read_exact(&mut buf[..2]).expect("first answer");
    assert!(first.stop().success());

    let second = Tracker::builder(topo).args(extra).start();
    client.write_all(b"mid-stream").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut msg = [0u8; 10];
    let got = server.read_exact(&mut msg).map(|()| msg.to_vec());
    Midstream {
        tracker: second,
        got,
        listener,
        flow,
    }
}

/// What [`midstream`] leaves for the test to check.
struct Midstream {
    /// The tracker that met the connection mid-stream.
    tracker: Tracker,
    /// What the server read of the mid-stream message.
    got: std::io::Result<Vec<u8>>,
    /// The server's listener, for further connections.
    listener: TcpListener,
    /// The connection's original direction: (client, server).
    flow: (SocketAddr, SocketAddr),
}

#[test]
fn midstream_tcp_is_picked_up_by_default() {
    let topo = Topology::up();
    let m = midstream(&topo, &[]);
    assert_eq!(
        m.got.expect("the mid-stream message did not arrive"),
        b"mid-stream"
    );
    let (from, to) = m.flow;
    assert!(
        dump_flow(&m.tracker.pin_path, "tcp", from, to).is_some(),
        "the picked-up connection {from} -> {to} is not in the table"
    );
}

#[test]
fn midstream_tcp_is_dropped_with_strict() {
    let topo = Topology::up();
    let m = midstream(&topo, &["--strict"]);
    assert!(
        m.got.is_err(),
        "a mid-stream message passed with --strict: {:?}",
        m.got
    );
    let (from, to) = m.flow;
    assert!(
        dump_flow(&m.tracker.pin_path, "tcp", from, to).is_none(),
        "--strict put the mid-stream connection {from} -> {to} in the table"
    );
    assert!(
        wait_strict_drops(&m.tracker, Duration::from_secs(10)).is_some(),
        "the live line never counted a strict drop"
    );
    // A connection that starts with a handshake still passes.
    let addr = m.listener.local_addr().unwrap();
    let mut client = tcp_connect(&topo, addr, Duration::from_secs(5)).expect("new connection");
    let mut server = tcp_accept(&m.listener);
    client.write_all(b"fresh").unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).expect("new connection's data");
    assert_eq!(&buf, b"fresh");
}

#[test]
fn second_tracker_on_the_same_interfaces_is_refused() {
    let topo = Topology::up();
    let first = Tracker::builder(&topo).start();
    let other_pins = PathBuf::from(format!("/sys/fs/bpf/{}b", topo.prefix));
    let (status, lines) = Tracker::builder(&topo)
        .pin_path(&other_pins)
        .start_failing();
    assert!(!status.success(), "the second tracker exited with {status}");
    assert_eq!(lines.len(), 1, "want one line on stderr: {lines:?}");
    // It names where the running one's pins are.
    assert!(
        lines[0].starts_with("xdp-conntrack: ")
            && lines[0].contains(&format!(
                "is taken by the xdp-conntrack whose pins are in {}",
                first.pin_path.display()
            )),
        "{lines:?}"
    );
    assert!(
        !other_pins.exists(),
        "the refused tracker left {} behind",
        other_pins.display()
    );

    // The first one is untouched.
    let mut first = first;
    assert!(
        matches!(first.child.try_wait(), Ok(None)),
        "the first tracker died"
    );
    assert!(xdp_attached(&topo, 1) && xdp_attached(&topo, 2));
    assert!(
        ping_all_answered(&topo, 3),
        "the first tracker stopped forwarding"
    );
    let table = first.table();
    assert!(
        table.iter().any(|e| e.proto == "icmp"),
        "the first tracker no longer tracks: {table:#?}"
    );
    assert!(first.stop().success());
}

#[test]
fn warns_when_a_veth_peer_would_drop_redirected_frames() {
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();
    let lines = tracker.startup.clone();
    assert!(tracker.stop().success(), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("forwarding"))
            && !lines.iter().any(|l| l.contains("warning")),
        "no warning expected with GRO on at both namespace ends: {lines:?}"
    );

    // Without GRO (and no XDP program) ns1's end drops redirected frames.
    let out = topo.exec(&topo.ns1(), &["ethtool", "-K", "eth0", "gro", "off"]);
    assert!(out.status.success());
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();
    let lines = tracker.startup.clone();
    assert!(tracker.stop().success(), "{lines:?}");
    let warnings: Vec<_> = lines.iter().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{lines:?}");
    assert!(
        warnings[0].contains(&topo.veth(1)) && warnings[0].contains(&topo.ns1()),
        "{warnings:?}"
    );
}

#[test]
fn force_replaces_an_xdp_program_attached_over_netlink() {
    use libbpf_rs::{Xdp, XdpFlags};
    use std::os::fd::AsFd;

    let topo = Topology::up();
    // Some other XDP program, attached the old way (netlink, no bpf_link),
    // stays on the interface after this process lets go of it.
    let other = Harness::default_config();
    let prog = other
        .skel
        .progs
        .xdp_conntrack
        .as_fd()
        .try_clone_to_owned()
        .unwrap();
    let veth1 = topo.veth(1);
    in_ns(&topo.fw(), || {
        let idx = nix::net::if_::if_nametoindex(veth1.as_str()).expect("veth1 index");
        Xdp::new(prog.as_fd())
            .attach(idx as i32, XdpFlags::SKB_MODE)
            .expect("attaching over netlink");
    });
    assert!(xdp_attached(&topo, 1));

    let (status, lines) = Tracker::builder(&topo).args(&["-q"]).start_failing();
    assert!(!status.success());
    assert!(
        lines.len() == 1
            && lines[0].contains("already has an XDP program")
            && lines[0].contains("--force"),
        "{lines:?}"
    );

    let tracker = Tracker::builder(&topo).args(&["--force", "-q"]).start();
    assert!(ping_all_answered(&topo, 2), "no traffic after --force");
    assert_eq!(tracker.stop().code(), Some(0));
    assert!(
        !xdp_attached(&topo, 1),
        "the replaced program must not come back"
    );
}

/// Echo replies ns1 gets for three pings of `size` bytes, don't fragment.
fn pings_answered(topo: &Topology, size: u32) -> usize {
    let out = topo.exec(
        &topo.ns1(),
        &[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            &size.to_string(),
            "10.0.0.2",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(", ")
        .find_map(|f| f.strip_suffix(" received"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ping summary: {text}"))
}

#[test]
fn jumbo_frames_cross_at_mtu_9000_or_the_kernel_limit_is_reported() {
    let topo = Topology::up_env(&[("MTU", "9000")]);
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();
    let lines = tracker.startup.clone();
    let warned: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("cannot redirect multi-buffer XDP frames"))
        .collect();
    // Frames that fit one XDP buffer cross on every kernel.
    assert_eq!(pings_answered(&topo, 3000), 3);
    if xdp_conntrack::loader::features::kernel_version() >= (6, 3) {
        assert!(warned.is_empty(), "{lines:?}");
        // 8000 bytes of payload: each frame is a multi-buffer XDP frame
        // on veth, which only an xdp.frags program may see, and only a
        // kernel with NDO_XMIT_SG redirects.
        assert_eq!(pings_answered(&topo, 8000), 3);
        let stats = Command::new(binary())
            .args(["stats", "--pin-path"])
            .arg(topo.pin_path())
            .output()
            .expect("xdp-conntrack stats");
        let text = String::from_utf8_lossy(&stats.stdout);
        let bytes: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("bytes_from_side1 "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        // Whole frames are counted, not just their first buffer.
        assert!(bytes >= 3 * 8042, "bytes_from_side1 {bytes}");
    } else {
        // Before 6.3 the kernel cannot redirect a multi-buffer frame: the
        // tracker says so at start, for each side, and such frames do not
        // cross (rather than crossing truncated).
        assert_eq!(warned.len(), 2, "{lines:?}");
        assert!(warned.iter().all(|l| l.contains("MTU 9000")), "{warned:?}");
        assert_eq!(pings_answered(&topo, 8000), 0);
    }
    assert!(dump_echo(&topo.pin_path(), ADDR1.into(), ADDR2.into()).is_some());
    assert_eq!(tracker.stop().code(), Some(0));
}

#[test]
fn check_reports_each_veth_peer() {
    let topo = Topology::up();
    let out = topo.exec(
        &topo.ns2(),
        &["ethtool", "-K", "eth0", "gro", "off", "tx", "on"],
    );
    assert!(out.status.success());
    let out = Command::new(binary())
        .args([
            "check",
            "--netns",
            &topo.fw(),
            "-1",
            &topo.veth(1),
            "-2",
            &topo.veth(2),
        ])
        .output()
        .expect("xdp-conntrack check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = |side: u8| {
        text.lines()
            .find(|l| l.starts_with(&format!("interface {} ", topo.veth(side))))
            .unwrap_or_else(|| panic!("no line for veth{side}:\n{text}"))
            .to_string()
    };
    let one = line(1);
    assert!(
        one.contains(&format!("eth0 in {}", topo.ns1()))
            && one.contains("GRO on, XDP none, tx checksum off")
            && !one.contains("->"),
        "{one}"
    );
    let two = line(2);
    assert!(
        two.contains(&format!("eth0 in {}", topo.ns2()))
            && two.contains("GRO off")
            && two.contains("would be dropped")
            && two.contains("tx off"),
        "{two}"
    );
}

#[test]
fn fallbacks_for_older_kernels_forward_sweep_and_detach() {
    let topo = Topology::up();
    // Netlink attach, the userspace sweep and plain (non-frags) XDP, as on
    // kernels before 5.9, 5.13 and 5.18, and the ktime clock.
    let tracker = Tracker::builder(&topo)
        .args(&["-q", "--timeout", "icmp=1", "--sweep-interval", "100"])
        .env("XDP_CONNTRACK_DISABLE", "frags,for_each,link,jiffies")
        .start();
    let lines = &tracker.startup;
    let notes = lines.iter().filter(|l| l.contains("note:")).count();
    assert_eq!(notes, 4, "one note per fallback: {lines:?}");
    assert!(xdp_attached(&topo, 1) && xdp_attached(&topo, 2));

    assert!(ping_all_answered(&topo, 2), "no traffic with the fallbacks");
    assert!(dump_echo(&topo.pin_path(), ADDR1.into(), ADDR2.into()).is_some());
    // icmp=1: the entry expires, and the userspace sweep removes it.
    let swept = wait_for(Duration::from_secs(10), || {
        let out = Command::new(binary())
            .args(["stats", "--pin-path"])
            .arg(topo.pin_path())
            .output()
            .expect("stats");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("swept ") && l != "swept 0")
    });
    assert!(swept, "the userspace sweep removed nothing");
    let table = dump_table(&topo.pin_path());
    assert!(
        !table.iter().any(|e| e.proto == "icmp"
            && (e.orig.src == IpAddr::from(ADDR1) || e.reply.src == IpAddr::from(ADDR1))),
        "the swept echo is still in the dump: {table:#?}"
    );

    assert_eq!(tracker.stop().code(), Some(0));
    assert!(
        !xdp_attached(&topo, 1) && !xdp_attached(&topo, 2),
        "the netlink attachments must be gone"
    );
}

/// IPv6 addresses of the two namespaces, beside their IPv4 ones (the
/// defaults of scripts/topology.sh).
const ADDR6_1: &str = "fd00::1";
const ADDR6_2: &str = "fd00::2";

/// Runs one iperf3 client from ns1 against a one-shot server in ns2, over
/// IPv6, and returns the client's JSON.
/// An IPv4 TCP connection from ns1 to ns2 that writes until stopped,
/// while ns2 reads all of it.
struct Ipv4Stream {
    stop: Arc<AtomicBool>,
    target: Arc<AtomicU64>,
    writer: std::thread::JoinHandle<(u64, TcpStream)>,
    reader: std::thread::JoinHandle<(u64, TcpStream)>,
    from: SocketAddr,
    to: SocketAddr,
}

impl Ipv4Stream {
    fn start(topo: &Topology) -> Self {
        let listener = tcp_listener(topo);
        let to = listener.local_addr().unwrap();
        let mut client = tcp_connect(topo, to, IO_TIMEOUT).expect("connecting over IPv4");
        let from = client.local_addr().unwrap();
        let mut server = tcp_accept(&listener);
        let (stop, target) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(u64::MAX)),
        );
        let flag = stop.clone();
        let writer = std::thread::spawn(move || {
            let chunk = [0x5au8; 16384];
            let mut sent = 0u64;
            while !flag.load(Ordering::Relaxed) {
                client.write_all(&chunk).expect("writing the IPv4 stream");
                sent += chunk.len() as u64;
            }
            (sent, client)
        });
        // The connection stays open, so the reader's end is a count that
        // it learns once the writer stops: it reads in short turns to look.
        let want = target.clone();
        let reader = std::thread::spawn(move || {
            server
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let deadline = Instant::now() + IO_TIMEOUT * 3;
            let (mut got, mut buf) = (0u64, vec![0u8; 65536]);
            while got != want.load(Ordering::Acquire) {
                assert!(
                    Instant::now() < deadline,
                    "the IPv4 stream stalled at {got} bytes"
                );
                match server.read(&mut buf) {
                    Ok(0) => panic!("the IPv4 stream closed after {got} bytes"),
                    Ok(n) => got += n as u64,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("reading the IPv4 stream after {got} bytes: {e}"),
                }
            }
            (got, server)
        });
        Self {
            stop,
            target,
            writer,
            reader,
            from,
            to,
        }
    }

    /// Stops the writer and waits for the reader to have it all; the
    /// connection stays open as long as the sockets returned live.
    fn stop(self) -> (SocketAddr, SocketAddr, (TcpStream, TcpStream)) {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, client) = self.writer.join().expect("the IPv4 writer");
        self.target.store(sent, Ordering::Release);
        let (got, server) = self.reader.join().expect("the IPv4 reader");
        assert!(
            sent > 0 && got == sent,
            "IPv4: {sent} bytes sent, {got} arrived"
        );
        (self.from, self.to, (client, server))
    }
}

fn iperf3_6(topo: &Topology, args: &[&str]) -> String {
    let _server = iperf3_server(topo, ADDR6_2);
    let mut cmd = vec![
        "timeout",
        "60",
        "iperf3",
        "-6",
        "-c",
        ADDR6_2,
        "-B",
        ADDR6_1,
        "-p",
        "5201",
        "--connect-timeout",
        "10000",
        "--json",
    ];
    cmd.extend_from_slice(args);
    let out = topo.exec(&topo.ns1(), &cmd);
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "iperf3 {args:?} failed: {json}");
    json
}

#[test]
fn dual_stack_ping6_and_iperf3_over_ipv6_are_tracked_beside_ipv4() {
    const BYTES: u64 = 4 << 20;
    // scripts/topology.sh gives the namespaces fd00::1 and fd00::2.
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();
    let started = Instant::now();
    let (a1, a2): (IpAddr, IpAddr) = (ADDR6_1.parse().unwrap(), ADDR6_2.parse().unwrap());

    // ping -6 finds its neighbour through the tracker (neighbour
    // solicitation and advertisement cross untracked), and IPv4 beside it.
    let out = topo.exec(
        &topo.ns1(),
        &[
            "ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", ADDR6_2,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("3 packets transmitted, 3 received"),
        "ping -6 through the tracker: {text}"
    );
    assert!(ping_all_answered(&topo, 3), "ping (IPv4) beside IPv6");

    // An IPv4 TCP stream runs all through iperf3 -6's transfer.
    let v4 = Ipv4Stream::start(&topo);
    let tcp = iperf3_6(&topo, &["-n", &BYTES.to_string()]);
    // Still open: its entry stays ESTABLISHED for the dump below.
    let (v4_from, v4_to, _v4_open) = v4.stop();
    assert!(json_number(&tcp, "sum_sent", "bytes") >= BYTES, "{tcp}");
    assert!(json_number(&tcp, "sum_received", "bytes") > 0, "{tcp}");
    let tcp_port = json_number(&tcp, "connected", "local_port") as u16;
    let udp = iperf3_6(&topo, &["-u", "-b", "20M", "-t", "1"]);
    assert!(json_number(&udp, "sum", "packets") > 0, "{udp}");
    let udp_port = json_number(&udp, "connected", "local_port") as u16;
    assert_nothing_invalid(&tracker);

    // The dump, field by field, for both families.
    let to = SocketAddr::new(a2, 5201);
    let table = tracker.table();
    let find = |proto: &str, from: SocketAddr| {
        table
            .iter()
            .find(|e| e.proto == proto && e.orig == Tuple::ports(from, to))
            .unwrap_or_else(|| panic!("no {proto} entry from {from}: {table:#?}"))
    };
    let data = find("tcp", SocketAddr::new(a1, tcp_port));
    assert_eq!(data.l4proto, 6);
    assert_eq!(data.reply, Tuple::ports(to, SocketAddr::new(a1, tcp_port)));
    assert!(data.assured && !data.unreplied, "{data:?}");
    assert!(
        data.in_state("TIME_WAIT") || data.in_state("CLOSE") || data.in_state("ESTABLISHED"),
        "{data:?}"
    );
    let u = find("udp", SocketAddr::new(a1, udp_port));
    // iperf3's server answers the client's first datagram.
    assert_eq!((u.l4proto, u.unreplied), (17, false), "{u:?}");
    assert_eq!(u.reply, Tuple::ports(to, SocketAddr::new(a1, udp_port)));
    // Answered echoes, one per family: request and reply types, same id.
    let echoes = |proto: &str, l4proto: u8, (a, b): (IpAddr, IpAddr), (req, rep): (u8, u8)| {
        table
            .iter()
            .filter(|e| {
                let L4::Icmp { id, .. } = e.orig.l4 else {
                    return false;
                };
                e.proto == proto
                    && e.l4proto == l4proto
                    && e.orig == Tuple::icmp(a, b, req, 0, id)
                    && e.reply == Tuple::icmp(b, a, rep, 0, id)
                    && !e.unreplied
                    && !e.assured
            })
            .count()
    };
    assert_eq!(
        echoes("icmpv6", 58, (a1, a2), (128, 129)),
        1,
        "one answered icmpv6 echo: {table:#?}"
    );
    assert_eq!(
        echoes("icmp", 1, (ADDR1.into(), ADDR2.into()), (8, 0)),
        1,
        "the IPv4 echo beside it: {table:#?}"
    );
    // The IPv4 stream that ran beside iperf3 -6, still open and idle.
    let stream = table
        .iter()
        .find(|e| e.proto == "tcp" && e.orig == Tuple::ports(v4_from, v4_to))
        .unwrap_or_else(|| panic!("no entry for the IPv4 stream {v4_from}: {table:#?}"));
    assert_eq!(stream.l4proto, 6);
    assert_eq!(stream.reply, Tuple::ports(v4_to, v4_from));
    assert!(
        stream.in_state("ESTABLISHED") && stream.assured && !stream.unreplied,
        "{stream:?}"
    );
    // Each entry's timeout counts down from its state's or protocol's
    // default, by no more than the test has run.
    let ran = started.elapsed().as_secs() + 1;
    for e in &table {
        let full = match (e.proto.as_str(), e.state.as_deref()) {
            ("icmp" | "icmpv6", _) => 30,
            // A stream (ASSURED) gets udp_stream's, others udp's.
            ("udp", _) if e.assured => 600,
            ("udp", _) => 300,
            ("tcp", Some("ESTABLISHED")) => 432_000,
            ("tcp", Some("CLOSE")) => 10,
            ("tcp", Some("SYN_RECV" | "CLOSE_WAIT")) => 60,
            ("tcp", _) => 120,
            _ => panic!("an entry this test did not make: {e:?}"),
        };
        assert!(
            e.timeout <= full && e.timeout + ran >= full,
            "{e:?}: not within {ran} s of {full} s"
        );
    }

    // -f ipv6 lists exactly the IPv6 entries, -o extended says so.
    let (v6, _) = dump_with(&tracker.pin_path, &["-f", "ipv6", "-o", "extended"]);
    let n6 = table.iter().filter(|e| e.orig.src.is_ipv6()).count();
    assert_eq!(v6.len(), n6, "{v6:#?}");
    assert!(v6.iter().all(|l| l.starts_with("ipv6     10 ")), "{v6:#?}");
    let (v4, _) = dump_with(&tracker.pin_path, &["-f", "ipv4"]);
    assert_eq!(v4.len(), table.len() - n6, "{v4:#?}");

    // Counters: IPv6 frames and connections are counted as such, and the
    // neighbour discovery that made it work passed untracked.
    let s = tracker.stats();
    assert!(s["new_ipv6"] >= 4 && s["new_ipv6"] < s["new"], "{s:?}");
    assert!(s["ipv6"] > 0 && s["untracked"] > 0, "{s:?}");
}

#[test]
fn udp_datagrams_larger_than_the_mtu_cross_in_fragments_in_both_families() {
    // 4000 and 3000 bytes of UDP at MTU 1500: three fragments each way in
    // each family (IPv4: 1480 bytes of payload per fragment; IPv6: 1448).
    const ASK: usize = 4000;
    const ANSWER: usize = 3000;
    let data = |n: usize, k: u8| -> Vec<u8> { (0..n).map(|i| (i as u8).wrapping_mul(k)).collect() };
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();
    for (a1, a2) in [
        (IpAddr::from(ADDR1), IpAddr::from(ADDR2)),
        (ADDR6_1.parse().unwrap(), ADDR6_2.parse().unwrap()),
    ] {
        let server = udp_socket(&topo.ns2(), a2);
        let client = udp_socket(&topo.ns1(), a1);
        let (from, to) = (client.local_addr().unwrap(), server.local_addr().unwrap());
        client.send_to(&data(ASK, 3), to).expect("send");
        let mut buf = vec![0u8; 9000];
        let (n, src) = server
            .recv_from(&mut buf)
            .expect("the datagram, reassembled");
        assert_eq!((src, &buf[..n]), (from, &data(ASK, 3)[..]), "{a1} -> {a2}");
        server.send_to(&data(ANSWER, 7), from).expect("answer");
        let (n, src) = client.recv_from(&mut buf).expect("the answer, reassembled");
        assert_eq!((src, &buf[..n]), (to, &data(ANSWER, 7)[..]), "{a2} -> {a1}");
        // The first fragment of the question opened the entry, the first
        // of the answer answered it.
        let e = dump_flow(&tracker.pin_path, "udp", from, to)
            .unwrap_or_else(|| panic!("no udp entry for {from} -> {to}"));
        assert!(!e.unreplied && !e.assured, "{e:?}");
    }
    let s = tracker.stats();
    assert_eq!(s["fragments"], 12, "{s:?}");
    assert_eq!((s["fragments_ipv4"], s["fragments_ipv6"]), (6, 6), "{s:?}");
    assert_nothing_invalid(&tracker);
}

#[test]
fn the_pin_directory_is_0700_and_each_pin_0600() {
    use std::os::unix::fs::PermissionsExt;
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        mode(&tracker.pin_path),
        0o700,
        "{}",
        tracker.pin_path.display()
    );
    for name in ["ct_table", "ct_table6", "stats"] {
        let pin = tracker.pin_path.join(name);
        assert_eq!(mode(&pin), 0o600, "{}", pin.display());
    }
}
