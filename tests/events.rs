//! End-to-end tests of `xdp-conntrack events`: what `conntrack -E` would
//! print for handshakes, teardowns, deletes, flushes and expiry, in order,
//! and a ring that overflows counts what it lost.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The generator's default addresses, on ns1's and ns2's eth0.
const CLIENT: &str = "10.1.1.100";
const SERVER: &str = "10.2.2.100";

fn ostinato_topology() -> Topology {
    Topology::up_with(&format!("{CLIENT}/24"), &format!("{SERVER}/24"))
}

/// A running `xdp-conntrack events`, its lines arriving on channels.
struct Reader {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl Reader {
    /// Starts a reader with `args` and waits until it has registered, so
    /// that no event made after this returns is missed.
    fn start(tracker: &Tracker, args: &[&str]) -> Self {
        let mut child = Command::new(binary())
            .args(["events", "--pin-path"])
            .arg(&tracker.pin_path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning xdp-conntrack events");
        let out = line_channel(child.stdout.take().unwrap());
        let err = line_channel(child.stderr.take().unwrap());
        let first = err
            .recv_timeout(IO_TIMEOUT)
            .expect("the reader says when it reads");
        assert!(first.contains("reading events from"), "{first}");
        Self { child, out, err }
    }

    /// The next `n` event lines, failing the test if they do not come.
    fn take(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.out
                    .recv_timeout(IO_TIMEOUT)
                    .unwrap_or_else(|_| panic!("event {i} of {n} did not come"))
            })
            .collect()
    }

    /// Stops it with SIGINT: its exit status and the rest of its stderr,
    /// read to the end.  The last lines reach the channel from a thread
    /// that may still be reading them when the reader has exited: taking
    /// only what had arrived by then lost the closing line once in N.
    fn stop(mut self) -> (bool, Vec<String>) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).unwrap();
        let ok = self.child.wait().expect("waiting for the reader").success();
        let mut rest = Vec::new();
        loop {
            match self.err.recv_timeout(IO_TIMEOUT) {
                Ok(l) => rest.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the reader's stderr never closed: {rest:?}")
                }
            }
        }
        (ok, rest)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[TYPE] STATE FLAGS` of an event line, less tuples and timeout: what
/// follows a connection through its life.
fn summary(line: &str) -> String {
    let kind = line.split(']').next().unwrap().trim().to_string() + "]";
    let rest = line.split_once(']').unwrap().1;
    let c = ConntrackLine::parse_or_panic(&format!("{} mark=0 use=1", rest.trim()));
    let mut s = format!("{kind} {}", c.state.unwrap_or_default());
    if c.unreplied {
        s.push_str(" [UNREPLIED]");
    }
    if c.assured {
        s.push_str(" [ASSURED]");
    }
    s
}

/// The client port of an event line's original tuple.
fn client_port(line: &str) -> u16 {
    let rest = line.split_once(']').unwrap().1;
    let c = ConntrackLine::parse_or_panic(&format!("{} mark=0 use=1", rest.trim()));
    match c.orig.l4 {
        L4::Ports { sport, .. } => sport,
        L4::Icmp { id, .. } => id,
    }
}

/// `xdp-conntrack delete -p udp` against `tracker`; fails unless it
/// removed something.
fn delete_udp(tracker: &Tracker) {
    let o = Command::new(binary())
        .args(["delete", "--pin-path"])
        .arg(&tracker.pin_path)
        .args(["-p", "udp"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn handshakes_teardowns_and_a_flush_arrive_in_order() {
    const N: usize = 50;
    let topo = ostinato_topology();
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();
    let reader = Reader::start(&tracker, &[]);
    let out = topo.handshake(&["--count", &N.to_string(), "--lifecycle", "full"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Each connection's events, in the order they came.
    let lines = reader.take(6 * N);
    let mut by_flow: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for l in &lines {
        by_flow.entry(client_port(l)).or_default().push(summary(l));
    }
    assert_eq!(by_flow.len(), N);
    // What the kernel's conntrack -E prints for the same close
    // (FIN, FIN/ACK, ACK).
    let life = [
        "[NEW] SYN_SENT [UNREPLIED]",
        "[UPDATE] SYN_RECV",
        "[UPDATE] ESTABLISHED [ASSURED]",
        "[UPDATE] FIN_WAIT [ASSURED]",
        "[UPDATE] LAST_ACK [ASSURED]",
        "[UPDATE] TIME_WAIT [ASSURED]",
    ];
    for (port, events) in &by_flow {
        assert_eq!(events, &life, "the connection from port {port}");
    }
    // The first line exactly as conntrack -E writes it.
    let first = lines
        .iter()
        .find(|l| l.starts_with("    [NEW]"))
        .expect("a NEW line");
    let port = client_port(first);
    assert_eq!(
        first,
        &format!(
            "    [NEW] tcp      6 120 SYN_SENT src={CLIENT} dst={SERVER} sport={port} \
             dport=8080 [UNREPLIED] src={SERVER} dst={CLIENT} sport=8080 dport={port}"
        )
    );

    // A flush reports each entry it removes, as it was.
    let o = Command::new(binary())
        .args(["flush", "--pin-path"])
        .arg(&tracker.pin_path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("({N} flow entries removed)")));
    let destroyed = reader.take(N);
    for l in &destroyed {
        assert_eq!(summary(l), "[DESTROY] TIME_WAIT [ASSURED]", "{l}");
    }
    let (ok, err) = reader.stop();
    assert!(ok);
    assert!(
        err.iter()
            .any(|l| l.contains(&format!("{} flow events have been shown", 7 * N))),
        "{err:?}"
    );
    assert_eq!(tracker.stats()["events_lost"], 0);
}

#[test]
fn expiry_delete_and_filters_as_json() {
    let topo = Topology::up();
    // UDP expires after a second; the sweep looks every 50 ms.
    let tracker = Tracker::builder(&topo)
        .args(&["-q", "--timeout", "udp=1", "--sweep-interval", "50"])
        .start();
    let reader = Reader::start(&tracker, &["-o", "json", "-p", "udp"]);
    let client = in_ns(&topo.ns1(), || UdpSocket::bind((ADDR1, 0)).unwrap());
    let server = in_ns(&topo.ns2(), || UdpSocket::bind((ADDR2, 0)).unwrap());
    server.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // A ping beside it: filtered out.
    assert!(topo
        .exec(&topo.ns1(), &["ping", "-c", "1", "-W", "2", "10.0.0.2"])
        .status
        .success());
    client.send_to(b"x", server.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 4];
    server.recv_from(&mut buf).expect("the datagram crosses");

    let [new, gone] = &reader.take(2)[..] else {
        unreachable!()
    };
    let new: serde_json::Value = serde_json::from_str(new).expect("JSON");
    let gone: serde_json::Value = serde_json::from_str(gone).expect("JSON");
    assert_eq!(new["event"], "NEW");
    assert_eq!(new["proto"], "udp");
    assert_eq!(new["timeout"], 1);
    assert_eq!(new["flags"], serde_json::json!([]));
    assert_eq!(new["orig"]["src"], "10.0.0.1");
    assert_eq!(
        new["orig"]["sport"],
        u64::from(client.local_addr().unwrap().port())
    );
    // Expired, then swept: DESTROY with no time left.
    assert_eq!(gone["event"], "DESTROY");
    assert_eq!(gone["timeout"], 0);
    assert_eq!(gone["orig"], new["orig"]);
    assert_eq!(tracker.stats()["swept"], 1);

    // A delete is reported too.
    client.send_to(b"x", server.local_addr().unwrap()).unwrap();
    server.recv_from(&mut buf).expect("the datagram crosses");
    let again: serde_json::Value = serde_json::from_str(&reader.take(1)[0]).unwrap();
    assert_eq!(again["event"], "NEW");
    delete_udp(&tracker);
    let deleted: serde_json::Value = serde_json::from_str(&reader.take(1)[0]).unwrap();
    assert_eq!(deleted["event"], "DESTROY");
    assert_eq!(deleted["id"], again["id"]);
    let (ok, _) = reader.stop();
    assert!(ok);
}

/// With --acct a DESTROY carries the connection's counts after each
/// tuple, as the kernel's destroy events do with nf_conntrack_acct=1; NEW
/// and UPDATE carry none, as the kernel's do not.
#[test]
fn a_destroy_carries_the_counts_with_acct() {
    let topo = Topology::up();
    let tracker = Tracker::builder(&topo).args(&["-q", "--acct"]).start();
    let reader = Reader::start(&tracker, &["-p", "udp"]);
    let client = in_ns(&topo.ns1(), || UdpSocket::bind((ADDR1, 0)).unwrap());
    let server = in_ns(&topo.ns2(), || UdpSocket::bind((ADDR2, 0)).unwrap());
    server.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..3 {
        client.send_to(b"x", server.local_addr().unwrap()).unwrap();
        server.recv_from(&mut buf).expect("the datagram crosses");
    }
    server.send_to(b"yy", client.local_addr().unwrap()).unwrap();
    client.recv_from(&mut buf).expect("the reply crosses");
    let [new, update] = &reader.take(2)[..] else {
        unreachable!()
    };
    assert!(new.starts_with("    [NEW] udp "), "{new}");
    assert!(update.starts_with(" [UPDATE] udp "), "{update}");
    for l in [new, update] {
        assert!(!l.contains("packets="), "no counts but in a DESTROY: {l}");
    }
    // 20 + 8 + 1 bytes each way out, 20 + 8 + 2 back.
    let (lines, _) = tracker.dump();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(" packets=3 bytes=87 "), "{}", lines[0]);
    assert!(lines[0].contains(" packets=1 bytes=30 "), "{}", lines[0]);
    delete_udp(&tracker);
    let gone = &reader.take(1)[0];
    let c = client.local_addr().unwrap().port();
    let s = server.local_addr().unwrap().port();
    let tail = format!(
        "src={ADDR1} dst={ADDR2} sport={c} dport={s} packets=3 bytes=87 \
         src={ADDR2} dst={ADDR1} sport={s} dport={c} packets=1 bytes=30"
    );
    assert!(gone.starts_with("[DESTROY] udp      17 "), "{gone}");
    assert!(gone.ends_with(&tail), "{gone}\nwant it to end with\n{tail}");
    let (ok, _) = reader.stop();
    assert!(ok);
}

#[test]
fn a_full_ring_counts_every_event_it_loses() {
    const N: usize = 3000;
    let topo = ostinato_topology();
    // A ring of one page holds about fifty events.
    let tracker = Tracker::builder(&topo)
        .args(&["-q", "--event-ring", "4"])
        .start();
    let reader = Reader::start(&tracker, &["-e", "NEW,UPDATE"]);
    let out = topo.handshake(&["--count", &N.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three events a connection: NEW, then SYN_RECV and ESTABLISHED.
    let mut shown = 0;
    let done = wait_for(IO_TIMEOUT, || {
        shown += reader.out.try_iter().count();
        shown + tracker.stats()["events_lost"] as usize == 3 * N
    });
    let lost = tracker.stats()["events_lost"];
    assert!(done, "{shown} shown and {lost} lost of {}", 3 * N);
    assert!(lost > 0, "a ring of one page cannot hold {} events", 3 * N);
    // The reader says so as it happens, and its counts add up to the
    // counter's.
    let mut said = 0;
    let told = wait_for(IO_TIMEOUT, || {
        for l in reader.err.try_iter() {
            let n = l.split(" events lost").next().unwrap();
            said += n
                .trim_start_matches("xdp-conntrack: ")
                .parse::<u64>()
                .unwrap_or(0);
        }
        said == lost
    });
    assert!(told, "the reader reported {said} of {lost} lost");
    let (ok, err) = reader.stop();
    assert!(ok);
    assert!(
        err.iter()
            .any(|l| l.contains(&format!("{shown} flow events have been shown"))),
        "{err:?}"
    );
}

#[test]
fn one_reader_at_a_time_and_none_costs_nothing() {
    let topo = ostinato_topology();
    let tracker = Tracker::builder(&topo).args(&["-q"]).start();
    // Without a reader the program makes no events: none is lost either.
    let out = topo.handshake(&["--count", "100"]);
    assert!(out.status.success());
    assert_eq!(tracker.stats()["events_lost"], 0);

    let first = Reader::start(&tracker, &[]);
    let second = Command::new(binary())
        .args(["events", "--pin-path"])
        .arg(&tracker.pin_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        err.contains(&format!("another events reader (pid {})", first.child.id())),
        "{err}"
    );
    // A reader killed outright leaves no claim behind.
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let third = Reader::start(&tracker, &[]);
    let (ok, _) = third.stop();
    assert!(ok);
}
