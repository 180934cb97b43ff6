//! `conntrack -L` lines: what src/format.rs prints for `dump`, and what
//! conntrack-tools prints for the kernel, read back by the tests' one
//! parser (common::ConntrackLine), on which the end-to-end, handshake and
//! parity tests rely.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::{ConntrackLine, Tuple};
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
