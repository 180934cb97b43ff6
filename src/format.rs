//! Output formats: `conntrack -L` lines and the live counter line.

use std::fmt::Write;
use std::net::IpAddr;

use crate::counters::Totals;
use crate::proto::{icmp_reply_type, proto_name, tcp_state_name, IPPROTO_TCP, IPPROTO_UDP};
use crate::table::Conn;

/// An address as glibc's `inet_ntop()` writes it, which is what
/// conntrack-tools prints: RFC 5952 for IPv6 (the longest run of two or
/// more zero groups as `::`, the first of equal runs), with the last 32
/// bits dotted for IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible
/// (`::a.b.c.d`) addresses.  Rust's own formatting differs only in the
/// last: it writes `::102:304` where glibc writes `::1.2.3.4`.
pub fn ip(a: &IpAddr) -> String {
    match a {
        IpAddr::V6(v6) => {
            let g = v6.segments();
            // glibc: the zero run starts at 0 and is exactly six groups.
            if g[..6].iter().all(|&w| w == 0) && g[6] != 0 {
                let [.., a, b, c, d] = v6.octets();
                format!("::{a}.{b}.{c}.{d}")
            } else {
                v6.to_string()
            }
        }
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The layer-3 prefix of conntrack's `-o extended` lines: the family's
/// name and number, `ipv4     2 ` or `ipv6     10 `.
pub fn l3_prefix(a: &IpAddr) -> String {
    let (name, num) = match a {
        IpAddr::V4(_) => ("ipv4", nix::libc::AF_INET),
        IpAddr::V6(_) => ("ipv6", nix::libc::AF_INET6),
    };
    format!("{name:<8} {num} ")
}

/// One connection in the format of conntrack-tools' `conntrack -L`.
pub fn conntrack_line(c: &Conn) -> String {
    let l4 = matches!(c.proto, IPPROTO_TCP | IPPROTO_UDP);
    let (src, dst) = (ip(&c.src), ip(&c.dst));
    let mut s = format!("{:<8} {} {} ", proto_name(c.proto), c.proto, c.timeout);
    if c.proto == IPPROTO_TCP {
        let _ = write!(s, "{} ", tcp_state_name(c.state));
    }
    let _ = write!(s, "src={src} dst={dst} ");
    if l4 {
        let _ = write!(s, "sport={} dport={} ", c.sport, c.dport);
    } else {
        let _ = write!(
            s,
            "type={} code={} id={} ",
            c.icmp_type, c.icmp_code, c.sport
        );
    }
    if !c.seen_reply {
        s.push_str("[UNREPLIED] ");
    }
    let _ = write!(s, "src={dst} dst={src} ");
    if l4 {
        let _ = write!(s, "sport={} dport={} ", c.dport, c.sport);
    } else {
        let _ = write!(
            s,
            "type={} code={} id={} ",
            icmp_reply_type(c.icmp_type),
            c.icmp_code,
            c.sport
        );
    }
    if c.assured {
        s.push_str("[ASSURED] ");
    }
    s.push_str("mark=0 use=1");
    s
}

/// The footer conntrack-tools prints after a listing.
pub fn footer(n: usize) -> String {
    format!("xdp-conntrack: {n} flow entries have been shown.")
}

/// Scales a rate with SI prefixes, e.g. `1.25 M`.
pub fn si(v: f64) -> String {
    let (div, unit) = if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    format!("{:.2} {unit}", v / div)
}

/// The once-a-second line: rates over `secs`, then the table and the drops.
pub fn live_line(now: &Totals, prev: &Totals, secs: f64) -> String {
    use crate::bpf::types::ct_counter as c;
    let pkts = now.packets().saturating_sub(prev.packets()) as f64 / secs;
    let bytes = now.bytes().saturating_sub(prev.bytes()) as f64 / secs;
    format!(
        "{}pkt/s {}bit/s active {} new {} drops {} (invalid {} full {} strict {} malformed {}) \
         redirect_err {}",
        si(pkts),
        si(bytes * 8.0),
        now.active(),
        now.get(c::CT_C_NEW),
        now.drops(),
        now.get(c::CT_C_INVALID),
        now.get(c::CT_C_TABLE_FULL),
        now.get(c::CT_C_STRICT_DROPS),
        now.get(c::CT_C_MALFORMED),
        now.get(c::CT_C_REDIRECT_ERR),
    )
}

/// Every counter as `name value` lines, for scripts: the sums first
/// (packets, bytes, active, drops), then each counter in slot order.
pub fn counters(t: &Totals) -> String {
    let sums = [
        ("packets".to_string(), t.packets()),
        ("bytes".to_string(), t.bytes()),
        ("active".to_string(), t.active()),
        ("drops".to_string(), t.drops()),
    ];
    sums.into_iter()
        .chain(t.named())
        .map(|(n, v)| format!("{n} {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use crate::proto::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

    fn conn(proto: u8, state: u8, seen_reply: bool, assured: bool) -> Conn {
        Conn {
            proto,
            src: Ipv4Addr::new(10, 1, 1, 100).into(),
            dst: Ipv4Addr::new(10, 2, 2, 100).into(),
            sport: 23420,
            dport: 8080,
            icmp_type: 0,
            icmp_code: 0,
            state,
            seen_reply,
            assured,
            timeout: 431_997,
        }
    }

    #[test]
    fn tcp_line_matches_conntrack_tools() {
        assert_eq!(
            conntrack_line(&conn(IPPROTO_TCP, 3, true, true)),
            "tcp      6 431997 ESTABLISHED src=10.1.1.100 dst=10.2.2.100 sport=23420 \
             dport=8080 src=10.2.2.100 dst=10.1.1.100 sport=8080 dport=23420 [ASSURED] \
             mark=0 use=1"
        );
    }

    #[test]
    fn unreplied_sits_between_the_tuples() {
        let line = conntrack_line(&conn(IPPROTO_TCP, 1, false, false));
        assert!(
            line.contains("dport=8080 [UNREPLIED] src=10.2.2.100"),
            "{line}"
        );
        assert!(line.starts_with("tcp      6 431997 SYN_SENT "), "{line}");
    }

    #[test]
    fn udp_and_icmp_lines() {
        let udp = conntrack_line(&conn(IPPROTO_UDP, 0, true, false));
        assert!(
            udp.starts_with("udp      17 431997 src=10.1.1.100"),
            "{udp}"
        );
        let mut c = conn(IPPROTO_ICMP, 0, true, false);
        (c.sport, c.dport, c.icmp_type) = (7, 7, 8);
        let icmp = conntrack_line(&c);
        assert_eq!(
            icmp,
            "icmp     1 431997 src=10.1.1.100 dst=10.2.2.100 type=8 code=0 id=7 \
             src=10.2.2.100 dst=10.1.1.100 type=0 code=0 id=7 mark=0 use=1"
        );
    }

    #[test]
    fn ipv6_addresses_are_written_as_inet_ntop_writes_them() {
        for (addr, want) in [
            ("fd00::1", "fd00::1"),
            ("::", "::"),
            ("::1", "::1"),
            ("fd00:0:0:1::", "fd00:0:0:1::"),
            // One zero group is not compressed; of two equal runs, the first.
            ("fd00:0:1:2:3:4:5:6", "fd00:0:1:2:3:4:5:6"),
            ("fd00:0:0:1:0:0:2:3", "fd00::1:0:0:2:3"),
            ("fd00:1:0:0:0:2:0:0", "fd00:1::2:0:0"),
            ("2001:db8::a:b:c:d", "2001:db8::a:b:c:d"),
            ("::ffff:10.1.2.3", "::ffff:10.1.2.3"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("::0.0.0.1", "::1"),
            ("::ffff:0:1.2.3.4", "::ffff:0:102:304"),
        ] {
            let a: IpAddr = addr.parse().unwrap();
            assert_eq!(ip(&a), want, "{addr}");
        }
        assert_eq!(ip(&Ipv4Addr::new(10, 0, 0, 1).into()), "10.0.0.1");
    }

    #[test]
    fn the_extended_prefix_names_the_family() {
        assert_eq!(l3_prefix(&Ipv4Addr::LOCALHOST.into()), "ipv4     2 ");
        assert_eq!(
            l3_prefix(&"fd00::1".parse::<IpAddr>().unwrap()),
            "ipv6     10 "
        );
    }

    #[test]
    fn icmp_queries_show_their_type_code_and_answer() {
        let mut c = conn(IPPROTO_ICMP, 0, false, false);
        (c.sport, c.dport, c.icmp_type, c.icmp_code) = (9, 9, 13, 2);
        assert_eq!(
            conntrack_line(&c),
            "icmp     1 431997 src=10.1.1.100 dst=10.2.2.100 type=13 code=2 id=9 \
             [UNREPLIED] src=10.2.2.100 dst=10.1.1.100 type=14 code=2 id=9 mark=0 use=1"
        );
    }
}
