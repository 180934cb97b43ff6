//! Output formats: `conntrack -L` lines and the live counter line.

use std::fmt::Write;

use crate::counters::Totals;
use crate::proto::{icmp_reply_type, proto_name, tcp_state_name, IPPROTO_TCP, IPPROTO_UDP};
use crate::table::Conn;

/// One connection in the format of conntrack-tools' `conntrack -L`.
pub fn conntrack_line(c: &Conn) -> String {
    let l4 = matches!(c.proto, IPPROTO_TCP | IPPROTO_UDP);
    let mut s = format!("{:<8} {} {} ", proto_name(c.proto), c.proto, c.timeout);
    if c.proto == IPPROTO_TCP {
        let _ = write!(s, "{} ", tcp_state_name(c.state));
    }
    let _ = write!(s, "src={} dst={} ", c.src, c.dst);
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
    let _ = write!(s, "src={} dst={} ", c.dst, c.src);
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
