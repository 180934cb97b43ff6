//! Output formats: `conntrack -L` lines and the live counter line.

use std::fmt::Write;
use std::net::IpAddr;

use crate::counters::Totals;
use crate::events::Event;
use crate::filter::Family;
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
pub fn l3_prefix(f: Family) -> String {
    let num = match f {
        Family::Ipv4 => nix::libc::AF_INET,
        Family::Ipv6 => nix::libc::AF_INET6,
    };
    format!("{:<8} {num} ", f.name())
}

/// One connection in the format of conntrack-tools' `conntrack -L`.
pub fn conntrack_line(c: &Conn) -> String {
    let mut s = conntrack_fields(c);
    s.push_str(" mark=0 use=1");
    s
}

/// One event in the format of `conntrack -E`: the type right-aligned in
/// nine columns, then the connection as `-L` prints it, less `mark` and
/// `use`, which the kernel's events do not carry.
pub fn event_line(e: &Event) -> String {
    format!("{:>9} {}", e.kind.tag(), conntrack_fields(&e.conn))
}

/// One event as JSON: `dump -o json`'s object with `"event"` first.
pub fn event_json(e: &Event) -> serde_json::Value {
    let mut v = json(&e.conn);
    v["event"] = e.kind.tag().trim_matches(['[', ']']).into();
    v
}

/// The words of a `conntrack -L` line up to its flags.
fn conntrack_fields(c: &Conn) -> String {
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
    if let Some([(p, b), _]) = c.acct {
        let _ = write!(s, "packets={p} bytes={b} ");
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
    if let Some([_, (p, b)]) = c.acct {
        let _ = write!(s, "packets={p} bytes={b} ");
    }
    if c.assured {
        s.push_str("[ASSURED] ");
    }
    s.pop();
    s
}

/// The reply tuple's ends and ports (or ICMP type) for `c`, as both
/// `conntrack -L` and the JSON print them.
fn tuples(c: &Conn) -> [serde_json::Value; 2] {
    use serde_json::json;
    let (src, dst) = (ip(&c.src), ip(&c.dst));
    if matches!(c.proto, IPPROTO_TCP | IPPROTO_UDP) {
        [
            json!({"src": src, "dst": dst, "sport": c.sport, "dport": c.dport}),
            json!({"src": dst, "dst": src, "sport": c.dport, "dport": c.sport}),
        ]
    } else {
        [
            json!({"src": src, "dst": dst, "type": c.icmp_type, "code": c.icmp_code,
                   "id": c.sport}),
            json!({"src": dst, "dst": src, "type": icmp_reply_type(c.icmp_type),
                   "code": c.icmp_code, "id": c.sport}),
        ]
    }
}

/// One connection as one JSON object, for `dump -o json`: the family, the
/// protocol, the TCP state (null for UDP and ICMP), the status flags, the
/// seconds left, both tuples and the entry's id.
pub fn json(c: &Conn) -> serde_json::Value {
    let mut flags = Vec::new();
    if c.seen_reply {
        flags.push("SEEN_REPLY");
    }
    if c.assured {
        flags.push("ASSURED");
    }
    let [mut orig, mut reply] = tuples(c);
    if let Some([(op, ob), (rp, rb)]) = c.acct {
        (orig["packets"], orig["bytes"]) = (op.into(), ob.into());
        (reply["packets"], reply["bytes"]) = (rp.into(), rb.into());
    }
    serde_json::json!({
        "family": Family::of(&c.src).name(),
        "proto": proto_name(c.proto),
        "protonum": c.proto,
        "state": (c.proto == IPPROTO_TCP).then(|| tcp_state_name(c.state)),
        "flags": flags,
        "timeout": c.timeout,
        "orig": orig,
        "reply": reply,
        "id": c.id,
    })
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
    counter_values(t)
        .into_iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The sums (packets, bytes, active, drops), then each counter in slot
/// order, by name.
pub fn counter_values(t: &Totals) -> Vec<(String, u64)> {
    let sums = [
        ("packets".to_string(), t.packets()),
        ("bytes".to_string(), t.bytes()),
        ("active".to_string(), t.active()),
        ("drops".to_string(), t.drops()),
    ];
    sums.into_iter().chain(t.named()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use crate::proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

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
            acct: None,
            id: 7,
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
    fn json_carries_both_tuples_the_state_and_the_flags() {
        let v = json(&conn(IPPROTO_TCP, 3, true, true));
        assert_eq!(
            v.to_string(),
            r#"{"family":"ipv4","flags":["SEEN_REPLY","ASSURED"],"id":7,"orig":{"dport":8080,"dst":"10.2.2.100","sport":23420,"src":"10.1.1.100"},"proto":"tcp","protonum":6,"reply":{"dport":23420,"dst":"10.1.1.100","sport":8080,"src":"10.2.2.100"},"state":"ESTABLISHED","timeout":431997}"#
        );
        let mut c = conn(IPPROTO_ICMPV6, 0, false, false);
        (c.src, c.dst) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        (c.sport, c.icmp_type) = (9, 128);
        let v = json(&c);
        assert_eq!(v["family"], "ipv6");
        assert_eq!(v["state"], serde_json::Value::Null);
        assert_eq!(v["flags"], serde_json::json!([]));
        assert_eq!(v["orig"]["type"], 128);
        assert_eq!(v["reply"]["type"], 129);
        assert_eq!(v["reply"]["src"], "fd00::2");
        assert_eq!(v["reply"]["id"], 9);
    }

    #[test]
    fn events_read_as_conntrack_e_prints_them() {
        use crate::events::Kind;
        let new = Event {
            kind: Kind::New,
            conn: conn(IPPROTO_TCP, 1, false, false),
        };
        assert_eq!(
            event_line(&new),
            "    [NEW] tcp      6 431997 SYN_SENT src=10.1.1.100 dst=10.2.2.100 sport=23420 \
             dport=8080 [UNREPLIED] src=10.2.2.100 dst=10.1.1.100 sport=8080 dport=23420"
        );
        let update = Event {
            kind: Kind::Update,
            conn: conn(IPPROTO_TCP, 3, true, true),
        };
        assert!(event_line(&update).starts_with(" [UPDATE] tcp      6 431997 ESTABLISHED "));
        assert!(event_line(&update).ends_with("dport=23420 [ASSURED]"));
        let mut c = conn(IPPROTO_UDP, 0, true, false);
        c.timeout = 0;
        let destroy = Event {
            kind: Kind::Destroy,
            conn: c,
        };
        assert!(event_line(&destroy).starts_with("[DESTROY] udp      17 0 src=10.1.1.100 "));
        assert_eq!(event_json(&destroy)["event"], "DESTROY");
        assert_eq!(event_json(&destroy)["proto"], "udp");
    }

    #[test]
    fn accounting_follows_each_tuple_as_conntrack_prints_it() {
        let mut c = conn(IPPROTO_TCP, 1, false, false);
        c.acct = Some([(3, 180), (0, 0)]);
        assert_eq!(
            conntrack_line(&c),
            "tcp      6 431997 SYN_SENT src=10.1.1.100 dst=10.2.2.100 sport=23420 \
             dport=8080 packets=3 bytes=180 [UNREPLIED] src=10.2.2.100 dst=10.1.1.100 \
             sport=8080 dport=23420 packets=0 bytes=0 mark=0 use=1"
        );
        let v = json(&c);
        assert_eq!(v["orig"]["packets"], 3);
        assert_eq!(v["orig"]["bytes"], 180);
        assert_eq!(v["reply"]["packets"], 0);
        assert_eq!(
            json(&conn(IPPROTO_UDP, 0, true, false))["orig"].get("packets"),
            None
        );
    }

    #[test]
    fn the_extended_prefix_names_the_family() {
        assert_eq!(l3_prefix(Family::Ipv4), "ipv4     2 ");
        assert_eq!(l3_prefix(Family::Ipv6), "ipv6     10 ");
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
