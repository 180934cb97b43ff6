//! `conntrack -L` lines: what src/format.rs prints for `dump`, and what
//! conntrack-tools prints for the kernel, read back by the tests' one
//! parser (common::ConntrackLine), on which the end-to-end, handshake and
//! parity tests rely.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;

use common::{in_ns, require_root, unique_prefix, ConntrackLine, Netns, Tuple, L4};
use xdp_conntrack::format::conntrack_line;
use xdp_conntrack::proto::{
    icmp_reply_type, proto_name, tcp_state_name, ICMP_ADDRESS, ICMP_ECHO, ICMP_INFO_REQUEST,
    ICMP_TIMESTAMP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};
use xdp_conntrack::table::Conn;

/// What the parser must make of `conntrack_line(c)`.
fn read_back(c: &Conn) -> ConntrackLine {
    let (orig, reply) = if c.proto == IPPROTO_ICMP {
        (
            Tuple::icmp(c.src, c.dst, c.icmp_type, c.icmp_code, c.sport),
            Tuple::icmp(
                c.dst,
                c.src,
                icmp_reply_type(c.icmp_type),
                c.icmp_code,
                c.sport,
            ),
        )
    } else {
        let (s, d) = (
            SocketAddr::new(c.src, c.sport),
            SocketAddr::new(c.dst, c.dport),
        );
        (Tuple::ports(s, d), Tuple::ports(d, s))
    };
    ConntrackLine {
        proto: proto_name(c.proto).to_string(),
        l4proto: c.proto,
        timeout: c.timeout,
        state: (c.proto == IPPROTO_TCP).then(|| tcp_state_name(c.state).to_string()),
        orig,
        reply,
        unreplied: !c.seen_reply,
        assured: c.assured,
        mark: Some(0),
        use_count: Some(1),
    }
}

#[test]
fn dump_lines_read_back_field_by_field() {
    let a: IpAddr = Ipv4Addr::new(10, 1, 1, 100).into();
    let b: IpAddr = Ipv4Addr::new(192, 168, 200, 7).into();
    let mut n = 0;
    for proto in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP] {
        // Every TCP state number, and one past them (INVALID).
        let states = if proto == IPPROTO_TCP { 0..=12 } else { 0..=0 };
        // Each ICMP query, with codes of either end.
        let queries: &[(u8, u8)] = if proto == IPPROTO_ICMP {
            &[
                (ICMP_ECHO, 0),
                (ICMP_TIMESTAMP, 0),
                (ICMP_INFO_REQUEST, 1),
                (ICMP_ADDRESS, 255),
            ]
        } else {
            &[(0, 0)]
        };
        for state in states {
            for &(icmp_type, icmp_code) in queries {
                for (seen_reply, assured) in [(false, false), (true, false), (true, true)] {
                    for (sport, dport, timeout) in
                        [(23420, 8080, 431_999), (0, 65535, 0), (65535, 1, 29)]
                    {
                        let c = Conn {
                            proto,
                            src: a,
                            dst: b,
                            sport,
                            dport: if proto == IPPROTO_ICMP { sport } else { dport },
                            icmp_type,
                            icmp_code,
                            state,
                            seen_reply,
                            assured,
                            timeout,
                            acct: None,
                            id: timeout as u32,
                        };
                        let line = conntrack_line(&c);
                        assert_eq!(ConntrackLine::parse(&line), Ok(read_back(&c)), "{line}");
                        n += 1;
                    }
                }
            }
        }
    }
    assert_eq!(n, (13 + 1 + 4) * 3 * 3);
}

#[test]
fn the_kernels_lines_read_back_field_by_field() {
    // `conntrack -L` from conntrack-tools 1.4.7 on Linux 6.18; the second
    // UDP line with nf_conntrack_acct=1.
    let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
    let at = |port: u16| SocketAddr::new(lo, port);
    let lines = [
        "tcp      6 431999 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=54108 dport=8080 \
         src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=54108 [ASSURED] mark=0 use=1",
        "udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=36174 dport=9 [UNREPLIED] \
         src=127.0.0.1 dst=127.0.0.1 sport=9 dport=36174 mark=0 use=1",
        "udp      17 28 src=127.0.0.1 dst=127.0.0.1 sport=60801 dport=10 packets=1 bytes=29 \
         [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport=10 dport=60801 packets=0 bytes=0 \
         mark=0 use=1",
        "icmp     1 29 src=127.0.0.1 dst=127.0.0.1 type=8 code=0 id=28253 \
         src=127.0.0.1 dst=127.0.0.1 type=0 code=0 id=28253 mark=0 use=1",
    ];
    let want = [
        (
            "tcp",
            6,
            431_999,
            Some("ESTABLISHED"),
            54108,
            8080,
            false,
            true,
        ),
        ("udp", 17, 29, None, 36174, 9, true, false),
        ("udp", 17, 28, None, 60801, 10, true, false),
    ];
    for (line, (proto, l4proto, timeout, state, sport, dport, unreplied, assured)) in
        lines.iter().zip(want)
    {
        let want = ConntrackLine {
            proto: proto.to_string(),
            l4proto,
            timeout,
            state: state.map(str::to_string),
            orig: Tuple::ports(at(sport), at(dport)),
            reply: Tuple::ports(at(dport), at(sport)),
            unreplied,
            assured,
            mark: Some(0),
            use_count: Some(1),
        };
        assert_eq!(ConntrackLine::parse(line), Ok(want), "{line}");
    }
    let icmp = ConntrackLine::parse(lines[3]).expect("the ICMP line");
    assert_eq!(
        (icmp.proto.as_str(), icmp.l4proto, icmp.timeout, &icmp.state),
        ("icmp", 1, 29, &None)
    );
    assert_eq!(icmp.orig, Tuple::icmp(lo, lo, 8, 0, 28253));
    assert_eq!(icmp.reply, Tuple::icmp(lo, lo, 0, 0, 28253));
    assert!(!icmp.unreplied && !icmp.assured);
}

#[test]
fn broken_lines_are_refused() {
    let good = "udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 [UNREPLIED] \
                src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 use=1";
    assert!(ConntrackLine::parse(good).is_ok());
    for bad in [
        "",
        "udp 17",
        // No reply tuple.
        "udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 [UNREPLIED] mark=0 use=1",
        // The tuple's fields out of order.
        "udp      17 29 dst=10.0.0.2 src=10.0.0.1 sport=1 dport=2 \
         src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 use=1",
        // A name that is not its number's.
        "tcp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 \
         src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 use=1",
        "udp      17 29 src=10.0.0.300 dst=10.0.0.2 sport=1 dport=2 \
         src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 use=1",
        "udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=65536 \
         src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 use=1",
        "udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 \
         src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 [SEEN] mark=0 use=1",
        "udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 \
         src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 use=1 trailing",
    ] {
        assert!(ConntrackLine::parse(bad).is_err(), "parsed {bad:?}");
    }
}

/// What `ip netns exec NS ARGS...` printed; panics if it failed.
fn in_netns(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {args:?} in {ns}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The connection a `conntrack -L` line shows, as `dump` holds it.
fn conn_of(l: &ConntrackLine) -> Conn {
    let (sport, dport, icmp_type, icmp_code) = match l.orig.l4 {
        L4::Ports { sport, dport } => (sport, dport, 0, 0),
        L4::Icmp {
            icmp_type,
            code,
            id,
        } => (id, id, icmp_type, code),
    };
    let state = l.state.as_deref().map_or(0, |name| {
        (0..=12u8)
            .find(|&n| tcp_state_name(n) == name)
            .unwrap_or_else(|| panic!("no TCP state {name}"))
    });
    Conn {
        proto: l.l4proto,
        src: l.orig.src,
        dst: l.orig.dst,
        sport,
        dport,
        icmp_type,
        icmp_code,
        state,
        seen_reply: !l.unreplied,
        assured: l.assured,
        timeout: l.timeout,
        acct: None,
        id: 0,
    }
}

/// `dump`'s lines are conntrack-tools' own, byte for byte: the kernel
/// tracks TCP, UDP (answered and not) and echo in both families in a
/// namespace of this test's, with addresses whose shortest forms differ
/// (a run of zero groups, zeros that stay, IPv4), `conntrack -L` lists
/// them, and `conntrack_line` prints the same connections.
#[test]
fn dump_lines_are_the_ones_conntrack_prints_for_the_kernel() {
    require_root();
    let ns = format!("{}f", unique_prefix());
    let out = Command::new("ip")
        .args(["netns", "add", &ns])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip netns add {ns}");
    let _ns = Netns(vec![ns.clone()]);
    let (v4, v6a, v6b) = ("10.9.8.7", "fd00:0:0:1::1", "2001:db8:0:a:0:1:0:7");
    in_netns(&ns, &["ip", "link", "set", "lo", "up"]);
    in_netns(
        &ns,
        &["ip", "addr", "add", &format!("{v4}/32"), "dev", "lo"],
    );
    for a in [v6a, v6b] {
        in_netns(
            &ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{a}/128"),
                "dev",
                "lo",
                "nodad",
            ],
        );
    }
    // A rule that uses conntrack turns it on in the namespace.
    in_netns(
        &ns,
        &[
            "nft",
            "add table inet t; add chain inet t out { type filter hook output priority 0; }; \
             add rule inet t out ct state new counter",
        ],
    );
    let (v4, v6a, v6b): (IpAddr, IpAddr, IpAddr) = (
        v4.parse().unwrap(),
        v6a.parse().unwrap(),
        v6b.parse().unwrap(),
    );
    let _open = in_ns(&ns, || {
        let mut open = Vec::new();
        for (from, to) in [(v4, v4), (v6a, v6b)] {
            // TCP, established and assured.
            let l = TcpListener::bind((to, 0)).unwrap();
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            open.push((c, l.accept().unwrap().0));
            // UDP answered once, and UDP to a port nobody listens on.
            let server = UdpSocket::bind((to, 0)).unwrap();
            let client = UdpSocket::bind((from, 0)).unwrap();
            client
                .send_to(b"ask", server.local_addr().unwrap())
                .unwrap();
            let (_, peer) = server.recv_from(&mut [0u8; 8]).unwrap();
            server.send_to(b"answer", peer).unwrap();
            client.recv_from(&mut [0u8; 8]).unwrap();
            let shut = UdpSocket::bind((to, 0)).unwrap();
            let nobody = shut.local_addr().unwrap();
            drop(shut);
            client.send_to(b"anyone?", nobody).unwrap();
        }
        open
    });
    in_netns(
        &ns,
        &["ping", "-n", "-q", "-c", "1", "-W", "2", &v4.to_string()],
    );
    in_netns(
        &ns,
        &[
            "ping",
            "-6",
            "-n",
            "-q",
            "-c",
            "1",
            "-W",
            "2",
            &v6b.to_string(),
        ],
    );

    let listed = in_netns(&ns, &["conntrack", "-L"]);
    let lines: Vec<&str> = listed.lines().collect();
    let mut kinds = Vec::new();
    for line in &lines {
        let l = ConntrackLine::parse(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        kinds.push((l.proto.clone(), l.orig.src.is_ipv6(), l.unreplied));
        assert_eq!(&conntrack_line(&conn_of(&l)), line);
    }
    kinds.sort();
    let want = [
        ("icmp", false, false),
        ("icmpv6", true, false),
        ("tcp", false, false),
        ("tcp", true, false),
        ("udp", false, false),
        ("udp", false, true),
        ("udp", true, false),
        ("udp", true, true),
    ]
    .map(|(p, v6, u)| (p.to_string(), v6, u));
    assert_eq!(kinds, want, "{listed}");
}
