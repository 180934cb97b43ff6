//! Which connections a verb's filters select, as conntrack(8)'s do: `-p`,
//! `-f`, the original tuple (`-s -d --sport --dport`), the reply tuple
//! (`--reply-src` and friends), `--state` and `-u`.  Every given filter
//! must match; none given selects everything.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};

use crate::proto::{self, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use crate::table::Conn;

/// An address family, as conntrack's `-f` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// Whether `a` is of this family.
    pub fn holds(self, a: &IpAddr) -> bool {
        match self {
            Family::Ipv4 => a.is_ipv4(),
            Family::Ipv6 => a.is_ipv6(),
        }
    }

    /// The family of `a`.
    pub fn of(a: &IpAddr) -> Self {
        if a.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }

    /// Its name, as `-f` and `-o extended` write it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// An address, or a network in CIDR notation (`10.0.0.0/8`, `fd00::/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    /// The address.
    pub addr: IpAddr,
    /// How many leading bits must match: the whole address unless given.
    pub prefix: u8,
}

impl std::str::FromStr for Net {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{s}' is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("'{s}': the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl Net {
    /// Whether `a` lies in this network (never across families).
    pub fn contains(&self, a: &IpAddr) -> bool {
        // An IPv4 address takes the top 32 bits, so one mask serves both.
        let bits = |x: &IpAddr| match x {
            IpAddr::V4(v) => u128::from(u32::from(*v)) << 96,
            IpAddr::V6(v) => u128::from(*v),
        };
        if self.addr.is_ipv4() != a.is_ipv4() {
            return false;
        }
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0);
        bits(&self.addr) & mask == bits(a) & mask
    }
}

/// A status bit, as conntrack's `-u` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The connection is assured: the kernel's IPS_ASSURED.
    Assured,
    /// A reply has been seen: IPS_SEEN_REPLY.
    SeenReply,
    /// No reply yet: what `conntrack -L` marks `[UNREPLIED]`.
    Unreplied,
}

/// The filters, checked and ready to match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// IP protocol number.
    pub proto: Option<u8>,
    /// Address family.
    pub family: Option<Family>,
    /// Original direction's source, destination and ports.
    pub src: Option<Net>,
    pub dst: Option<Net>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// Reply direction's source, destination and ports.
    pub reply_src: Option<Net>,
    pub reply_dst: Option<Net>,
    pub reply_sport: Option<u16>,
    pub reply_dport: Option<u16>,
    /// TCP state number (`enum ct_tcp_state`).
    pub state: Option<u8>,
    /// Status bits that must all hold.
    pub status: Vec<Status>,
}

/// A protocol as `-p` takes it: a name or a number.
pub fn parse_proto(s: &str) -> Result<u8> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "tcp" | "6" => IPPROTO_TCP,
        "udp" | "17" => IPPROTO_UDP,
        "icmp" | "1" => IPPROTO_ICMP,
        "icmpv6" | "ipv6-icmp" | "58" => IPPROTO_ICMPV6,
        _ => bail!("unknown protocol '{s}' (tcp, udp, icmp or icmpv6)"),
    })
}

/// A TCP state as `--state` takes it, by its `conntrack -L` name.
pub fn parse_state(s: &str) -> Result<u8> {
    let want = s.to_ascii_uppercase();
    (0..=u8::MAX)
        .take_while(|&n| proto::tcp_state_name(n) != "INVALID")
        .find(|&n| n != 0 && proto::tcp_state_name(n) == want)
        .with_context(|| format!("unknown TCP state '{s}'"))
}

impl Filter {
    /// Checks that the filters make sense together, as conntrack does:
    /// ports and states need their protocol, and addresses agree with each
    /// other and with `-f`.
    pub fn check(self) -> Result<Self> {
        let ports = [self.sport, self.dport, self.reply_sport, self.reply_dport];
        if ports.iter().any(Option::is_some)
            && !matches!(self.proto, Some(IPPROTO_TCP | IPPROTO_UDP))
        {
            bail!("port filters need --proto tcp or --proto udp");
        }
        if self.state.is_some() && self.proto != Some(IPPROTO_TCP) {
            bail!("--state needs --proto tcp");
        }
        let nets = [self.src, self.dst, self.reply_src, self.reply_dst];
        let mut family = self.family;
        for n in nets.iter().flatten() {
            let f = Family::of(&n.addr);
            if family.is_some_and(|g| g != f) {
                bail!(
                    "address family mismatch: {} is not {}",
                    n.addr,
                    family.unwrap().name()
                );
            }
            family = Some(f);
        }
        match (family, self.proto) {
            (Some(Family::Ipv4), Some(IPPROTO_ICMPV6)) => bail!("icmpv6 is not an ipv4 protocol"),
            (Some(Family::Ipv6), Some(IPPROTO_ICMP)) => bail!("icmp is not an ipv6 protocol"),
            _ => {}
        }
        Ok(Self { family, ..self })
    }

    /// Whether the filters select the table of `family` at all.
    pub fn wants(&self, family: Family) -> bool {
        self.family.is_none_or(|f| f == family)
    }

    /// Whether `c` matches every filter given.
    pub fn matches(&self, c: &Conn) -> bool {
        let l4 = matches!(c.proto, IPPROTO_TCP | IPPROTO_UDP);
        let port = |want: Option<u16>, have: u16| want.is_none_or(|p| l4 && p == have);
        let net = |want: &Option<Net>, have: &IpAddr| want.is_none_or(|n| n.contains(have));
        // The reply tuple swaps the original's ends.
        self.proto.is_none_or(|p| p == c.proto)
            && self.family.is_none_or(|f| f.holds(&c.src))
            && net(&self.src, &c.src)
            && net(&self.dst, &c.dst)
            && port(self.sport, c.sport)
            && port(self.dport, c.dport)
            && net(&self.reply_src, &c.dst)
            && net(&self.reply_dst, &c.src)
            && port(self.reply_sport, c.dport)
            && port(self.reply_dport, c.sport)
            && self
                .state
                .is_none_or(|s| c.proto == IPPROTO_TCP && s == c.state)
            && self.status.iter().all(|s| match s {
                Status::Assured => c.assured,
                Status::SeenReply => c.seen_reply,
                Status::Unreplied => !c.seen_reply,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::types::ct_tcp_state;

    fn tcp(src: &str, dst: &str, sport: u16, dport: u16, state: ct_tcp_state) -> Conn {
        Conn {
            proto: IPPROTO_TCP,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
            icmp_type: 0,
            icmp_code: 0,
            state: state.0 as u8,
            seen_reply: true,
            assured: state == ct_tcp_state::CT_TCP_ESTABLISHED,
            timeout: 100,
            acct: None,
            id: 1,
        }
    }

    fn net(s: &str) -> Option<Net> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn networks_match_by_prefix_and_never_across_families() {
        let n: Net = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains(&"10.1.200.3".parse().unwrap()));
        assert!(!n.contains(&"10.2.0.1".parse().unwrap()));
        assert!(!n.contains(&"::ffff:10.1.0.1".parse().unwrap()));
        let all: Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"192.0.2.1".parse().unwrap()));
        assert!(!all.contains(&"fd00::1".parse().unwrap()));
        let v6: Net = "fd00:1::/32".parse().unwrap();
        assert!(v6.contains(&"fd00:1:ffff::9".parse().unwrap()));
        assert!(!v6.contains(&"fd00:2::9".parse().unwrap()));
        let one: Net = "fd00::1".parse().unwrap();
        assert_eq!(one.prefix, 128);
        assert!(one.contains(&"fd00::1".parse().unwrap()));
        assert!(!one.contains(&"fd00::2".parse().unwrap()));
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0.300", "x", "10.0.0.0/"] {
            assert!(bad.parse::<Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_original_and_the_reply_tuple_are_matched_apart() {
        let c = tcp(
            "10.1.1.100",
            "10.2.2.100",
            40000,
            80,
            ct_tcp_state::CT_TCP_ESTABLISHED,
        );
        let f = |f: Filter| f.check().unwrap().matches(&c);
        assert!(f(Filter::default()));
        assert!(f(Filter {
            src: net("10.1.1.100"),
            ..Default::default()
        }));
        assert!(!f(Filter {
            src: net("10.2.2.100"),
            ..Default::default()
        }));
        assert!(f(Filter {
            reply_src: net("10.2.2.100"),
            ..Default::default()
        }));
        assert!(f(Filter {
            reply_dst: net("10.1.1.0/24"),
            ..Default::default()
        }));
        let p = Some(IPPROTO_TCP);
        assert!(f(Filter {
            proto: p,
            sport: Some(40000),
            dport: Some(80),
            ..Default::default()
        }));
        assert!(!f(Filter {
            proto: p,
            sport: Some(80),
            ..Default::default()
        }));
        assert!(f(Filter {
            proto: p,
            reply_sport: Some(80),
            ..Default::default()
        }));
        assert!(f(Filter {
            proto: p,
            reply_dport: Some(40000),
            ..Default::default()
        }));
        assert!(!f(Filter {
            proto: Some(IPPROTO_UDP),
            ..Default::default()
        }));
        assert!(!f(Filter {
            family: Some(Family::Ipv6),
            ..Default::default()
        }));
    }

    #[test]
    fn state_and_status() {
        let est = tcp("fd00::1", "fd00::2", 1, 2, ct_tcp_state::CT_TCP_ESTABLISHED);
        let mut syn = tcp("fd00::1", "fd00::2", 1, 3, ct_tcp_state::CT_TCP_SYN_SENT);
        syn.seen_reply = false;
        let by_state = Filter {
            proto: Some(IPPROTO_TCP),
            state: Some(parse_state("established").unwrap()),
            ..Default::default()
        }
        .check()
        .unwrap();
        assert!(by_state.matches(&est) && !by_state.matches(&syn));
        let unreplied = Filter {
            status: vec![Status::Unreplied],
            ..Default::default()
        };
        assert!(!unreplied.matches(&est) && unreplied.matches(&syn));
        let both = Filter {
            status: vec![Status::Assured, Status::SeenReply],
            ..Default::default()
        };
        assert!(both.matches(&est) && !both.matches(&syn));
        assert!(parse_state("SYN_SENT2").is_ok());
        assert!(parse_state("NONE").is_err());
        assert!(parse_state("OPEN").is_err());
    }

    #[test]
    fn nonsense_together_is_refused() {
        let port_alone = Filter {
            sport: Some(1),
            ..Default::default()
        };
        assert!(port_alone.check().is_err());
        let icmp_port = Filter {
            proto: Some(IPPROTO_ICMP),
            dport: Some(1),
            ..Default::default()
        };
        assert!(icmp_port.check().is_err());
        let state_udp = Filter {
            proto: Some(IPPROTO_UDP),
            state: Some(3),
            ..Default::default()
        };
        assert!(state_udp.check().is_err());
        let mixed = Filter {
            src: net("10.0.0.1"),
            dst: net("fd00::1"),
            ..Default::default()
        };
        assert!(mixed.check().is_err());
        let wrong_f = Filter {
            family: Some(Family::Ipv4),
            src: net("fd00::1"),
            ..Default::default()
        };
        assert!(wrong_f.check().is_err());
        let icmp6_v4 = Filter {
            family: Some(Family::Ipv4),
            proto: Some(IPPROTO_ICMPV6),
            ..Default::default()
        };
        assert!(icmp6_v4.check().is_err());
        // An address implies its family.
        let implied = Filter {
            src: net("fd00::1"),
            ..Default::default()
        }
        .check()
        .unwrap();
        assert_eq!(implied.family, Some(Family::Ipv6));
        assert!(!implied.wants(Family::Ipv4));
        for bad in ["sctp", "7", ""] {
            assert!(parse_proto(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_proto("ICMPv6").unwrap(), IPPROTO_ICMPV6);
    }
}
