//! The plan of a generator run, as pure code: the checks on the options,
//! the phases with their sequence numbers (and the phase two CPUs race
//! on, with `--clash`), the address family and which client address and
//! port each connection uses (as hs_gen computes it), and which frames each
//! stream and each flood thread covers, at what share of the rate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};

use super::{Args, Clash, Lifecycle, Proto, Rate, Sender};
use crate::bpf::hs::types::hs_kind;
use crate::packet::{self, tcp_flags::*, Endpoint, Ether};

/// One stream of one packet per connection (the flood sends many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    /// SYN, SYN-ACK, ...: the name in the report.
    pub name: &'static str,
    /// TCP or UDP.
    pub proto: Proto,
    /// Packets per connection in this phase (the data flood sends many).
    pub per_conn: u64,
    /// The client sends it (else the server).
    pub client_is_src: bool,
    /// TCP flags.
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// What the receiving sink counts it as.
    pub kind: hs_kind,
    /// `--clash`: a second thread, on another CPU, sends this copy of the
    /// phase at the same moment.
    pub rival: Option<Rival>,
}

/// The second copy of a raced phase: the same packet (`--clash same`), or
/// the other side's first packet (`--clash reverse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rival {
    /// The client sends it (else the server).
    pub client_is_src: bool,
    /// Its sequence number.
    pub seq: u32,
}

impl Phase {
    /// This phase's frame between `client` and `server`, in its direction.
    pub fn frame(&self, eth: &Ether, client: Endpoint, server: Endpoint) -> Vec<u8> {
        let (src, dst) = if self.client_is_src {
            (client, server)
        } else {
            (server, client)
        };
        match self.proto {
            Proto::Tcp => packet::tcp(eth, src, dst, self.flags, self.seq, self.ack, b""),
            Proto::Udp => packet::udp(eth, src, dst, b""),
        }
    }

    /// What the second thread of a raced phase sends.
    pub fn rival(&self) -> Option<Phase> {
        self.rival.map(|r| Phase {
            client_is_src: r.client_is_src,
            seq: r.seq,
            rival: None,
            ..*self
        })
    }
}

/// The phases of one round, in order: for TCP the handshake, the flood if
/// any, and the lifecycle's end; for UDP a datagram each way and the
/// flood.  With `--clash`, two threads race on the first phase; after a
/// reverse clash nothing follows.
pub fn phases(o: &Args) -> Vec<Phase> {
    let mut v = match o.proto {
        Proto::Tcp => tcp_phases(o),
        Proto::Udp => udp_phases(o),
    };
    let first = &mut v[0];
    match o.clash {
        None => {}
        Some(Clash::Same) => {
            first.name = match o.proto {
                Proto::Tcp => "2xSYN",
                Proto::Udp => "2xUDP",
            };
            first.rival = Some(Rival {
                client_is_src: true,
                seq: first.seq,
            });
        }
        Some(Clash::Reverse) => {
            first.name = match o.proto {
                Proto::Tcp => "SYN<>SYN",
                Proto::Udp => "UDP<>UDP",
            };
            // The server's first packet: a SYN with its own sequence number.
            first.rival = Some(Rival {
                client_is_src: false,
                seq: o.synack_seq,
            });
            v.truncate(1);
        }
    }
    v
}

/// A phase of one packet per connection from the client.
fn from_client(
    proto: Proto,
    name: &'static str,
    flags: u8,
    seq: u32,
    ack: u32,
    kind: hs_kind,
) -> Phase {
    Phase {
        name,
        proto,
        per_conn: 1,
        client_is_src: true,
        flags,
        seq,
        ack,
        kind,
        rival: None,
    }
}

/// A datagram from the client, one from the server, and the flood.
fn udp_phases(o: &Args) -> Vec<Phase> {
    let request = from_client(Proto::Udp, "UDP", 0, 0, 0, hs_kind::HS_UDP);
    let mut v = vec![
        request,
        Phase {
            name: "REPLY",
            client_is_src: false,
            ..request
        },
    ];
    if o.flood > 0 {
        v.push(Phase {
            name: "DATA",
            per_conn: o.flood,
            ..request
        });
    }
    v
}

/// The handshake, the flood and the lifecycle's end.
fn tcp_phases(o: &Args) -> Vec<Phase> {
    let (s, t) = (o.syn_seq, o.synack_seq);
    let client = |name, flags, seq, ack, kind| from_client(Proto::Tcp, name, flags, seq, ack, kind);
    let server = |name, flags, seq, ack, kind| Phase {
        client_is_src: false,
        ..client(name, flags, seq, ack, kind)
    };
    let mut v = vec![
        client("SYN", SYN, s, 0, hs_kind::HS_SYN),
        server(
            "SYN-ACK",
            SYN | ACK,
            t,
            o.synack_ack.unwrap_or(s.wrapping_add(1)),
            hs_kind::HS_SYNACK,
        ),
        client(
            "ACK",
            ACK,
            s.wrapping_add(1),
            o.ack_ack.unwrap_or(t.wrapping_add(1)),
            hs_kind::HS_ACK,
        ),
    ];
    if o.flood > 0 {
        // Plain ACKs of the established connections: the tracker's fast
        // path, and the small-packet rate of the whole path.
        v.push(Phase {
            per_conn: o.flood,
            ..client(
                "DATA",
                ACK,
                s.wrapping_add(1),
                t.wrapping_add(1),
                hs_kind::HS_ACK,
            )
        });
    }
    match o.lifecycle {
        Lifecycle::Handshake => {}
        Lifecycle::Full => v.extend([
            client(
                "FIN",
                FIN | ACK,
                s.wrapping_add(1),
                t.wrapping_add(1),
                hs_kind::HS_FIN,
            ),
            server(
                "FIN-ACK",
                FIN | ACK,
                t.wrapping_add(1),
                s.wrapping_add(2),
                hs_kind::HS_FIN,
            ),
            client(
                "LAST-ACK",
                ACK,
                s.wrapping_add(2),
                t.wrapping_add(2),
                hs_kind::HS_ACK,
            ),
        ]),
        Lifecycle::Rst => v.push(client("RST", RST, s.wrapping_add(1), 0, hs_kind::HS_RST)),
    }
    v
}

/// An address, and maybe a port: `10.2.2.100`, `10.2.2.100:8080`,
/// `fd02::100` or `[fd02::100]:8080` (an IPv6 address takes brackets
/// before a port, as in a URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort {
    /// The address.
    pub addr: IpAddr,
    /// The port, if one was given.
    pub port: Option<u16>,
}

impl FromStr for HostPort {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Self {
                addr: a.ip(),
                port: Some(a.port()),
            });
        }
        let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        match bare.map_or(s.parse::<IpAddr>(), |b| {
            b.parse::<Ipv6Addr>().map(IpAddr::V6)
        }) {
            Ok(addr) => Ok(Self { addr, port: None }),
            Err(_) => Err(anyhow!(
                "'{s}' is not an address: give ADDR or ADDR:PORT ([IPV6]:PORT for IPv6)"
            )),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}", SocketAddr::new(self.addr, p)),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// The port `option` (`--client` or `--server`) carries, else `flag`'s
/// (`--sport` or `--dport`), else `default`; both giving different ones
/// is an error.
fn port(
    option: &str,
    at: Option<HostPort>,
    flag: &str,
    given: Option<u16>,
    default: u16,
) -> Result<u16> {
    match (at.and_then(|h| h.port.map(|p| (h, p))), given) {
        (Some((h, p)), Some(g)) if p != g => {
            bail!("{option} {h} gives port {p}, and {flag} {g} another")
        }
        (Some((_, p)), _) => Ok(p),
        (None, g) => Ok(g.unwrap_or(default)),
    }
}

/// The client and server addresses of a run, both of one family: the
/// family of whichever is given (both must agree), IPv6 with `-6`, else
/// IPv4; an address not given takes its family's default.
pub fn addresses(o: &Args) -> Result<(IpAddr, IpAddr)> {
    let (given_client, given_server) = (o.client.map(|h| h.addr), o.server.map(|h| h.addr));
    let v6 = o.ipv6
        || matches!(given_client, Some(IpAddr::V6(_)))
        || matches!(given_server, Some(IpAddr::V6(_)));
    let (client, server) = if v6 {
        (IpAddr::V6(DEFAULT_CLIENT6), IpAddr::V6(DEFAULT_SERVER6))
    } else {
        (IpAddr::V4(DEFAULT_CLIENT4), IpAddr::V4(DEFAULT_SERVER4))
    };
    let (client, server) = (
        given_client.unwrap_or(client),
        given_server.unwrap_or(server),
    );
    for (option, a) in [("--client", client), ("--server", server)] {
        if a.is_ipv6() != v6 {
            let why = if o.ipv6 {
                "-6".to_string()
            } else {
                let other = if option == "--client" {
                    ("--server", server)
                } else {
                    ("--client", client)
                };
                format!("{} {}", other.0, other.1)
            };
            bail!(
                "{option} {a} is an IPv{} address, but {why} makes this an IPv{} run",
                if a.is_ipv6() { 6 } else { 4 },
                if v6 { 6 } else { 4 },
            );
        }
    }
    Ok((client, server))
}

/// The Ostinato article's first client port and server port.
pub const DEFAULT_SPORT: u16 = 23420;
/// The default server port.
pub const DEFAULT_DPORT: u16 = 8080;

/// The Ostinato article's addresses, and their IPv6 counterparts.
pub const DEFAULT_CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 100);
/// The default IPv4 server.
pub const DEFAULT_SERVER4: Ipv4Addr = Ipv4Addr::new(10, 2, 2, 100);
/// The default IPv6 client, fd01::100.
pub const DEFAULT_CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0x100);
/// The default IPv6 server, fd02::100.
pub const DEFAULT_SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd02, 0, 0, 0, 0, 0, 0, 0x100);

/// `addr + n`, in its own family, as hs_gen adds: IPv4 as a 32-bit
/// number, IPv6 as a 128-bit one.  Wraps (a checked plan never does).
pub fn addr_add(addr: IpAddr, n: u64) -> IpAddr {
    match addr {
        IpAddr::V4(a) => Ipv4Addr::from(u32::from(a).wrapping_add(n as u32)).into(),
        IpAddr::V6(a) => Ipv6Addr::from(u128::from(a).wrapping_add(u128::from(n))).into(),
    }
}

/// Where the clients live: connection `j` (after any wrap) uses address
/// `first + j / ports_per_addr` and port `sport + (j % ports_per_addr) *
/// port_step`, as hs_gen computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clients {
    /// The first client address.
    pub first: IpAddr,
    /// The first client port.
    pub sport: u16,
    /// The port step between connections.
    pub port_step: u16,
    /// Connections per client address.
    pub ports_per_addr: u32,
}

impl Clients {
    /// The client endpoint of connection `j`.
    pub fn endpoint(&self, j: u64) -> Endpoint {
        let per = u64::from(self.ports_per_addr.max(1));
        // hs_gen's arithmetic; nothing wraps in a checked plan.
        let port = self
            .sport
            .wrapping_add(((j % per) as u16).wrapping_mul(self.port_step));
        Endpoint::new(self.addr(j / per), port)
    }

    /// The `k`th client address.
    pub fn addr(&self, k: u64) -> IpAddr {
        addr_add(self.first, k)
    }
}

/// The frames of one stream as hs_gen walks them (struct hs_phase): frame
/// `i`, for `next <= i < end`, belongs to connection `base + i % span`
/// (`base + i` when `span` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frames {
    /// The first frame's index.
    pub next: u64,
    /// Stop before this index (hs_phase.count).
    pub end: u64,
    /// Client tuples: indexes wrap here.
    pub span: u64,
    /// Added after the wrap: a flood thread's share.
    pub base: u64,
}

impl Frames {
    /// How many frames.
    pub fn len(&self) -> u64 {
        self.end - self.next
    }

    /// The connection of frame `i`.
    pub fn conn(&self, i: u64) -> u64 {
        (if self.span > 0 { i % self.span } else { i }) + self.base
    }
}

/// A checked run: the options' arithmetic done once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Connections per round.
    pub count: u64,
    /// Connections over all rounds.
    pub total: u64,
    /// Where the clients live.
    pub clients: Clients,
    /// The server's address, of the clients' family.
    pub server: IpAddr,
    /// The server's port.
    pub dport: u16,
    /// Client addresses one round needs.
    pub need: u64,
    /// Client addresses the whole run could use; later rounds reuse the
    /// tuples of earlier ones where fewer are assigned.
    pub want: u64,
    /// The CPUs of the flood threads (empty: the calling thread sends).
    pub cpus: Vec<usize>,
    /// The CPUs of the two threads of a raced phase (empty without
    /// `--clash`).
    pub racers: Vec<usize>,
}

impl Plan {
    /// Checks the options and lays the run out.  `allowed` lists the CPUs
    /// this process may run on, of which `--threads` takes the first ones.
    pub fn new(o: &Args, allowed: &[usize]) -> Result<Self> {
        if o.count == 0 {
            bail!("--count must be at least 1");
        }
        if o.port_step == 0 {
            bail!("--port-step must be at least 1");
        }
        if o.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if o.flood > 0 && o.rounds > 1 {
            bail!("--flood and --rounds do not go together");
        }
        if o.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if o.window > 0 && (o.threads > 1 || o.clash.is_some()) {
            bail!("--window takes one sending thread (not --threads or --clash)");
        }
        let (client, server) = addresses(o)?;
        let cpus = flood_cpus(o.threads, allowed)?;
        if o.threads > 1 && (o.flood == 0 || o.sender == Sender::Socket) {
            bail!("--threads takes --flood and live frames (not --sender socket)");
        }
        if o.proto == Proto::Udp
            && (o.lifecycle != Lifecycle::Handshake
                || o.synack_ack.is_some()
                || o.ack_ack.is_some())
        {
            bail!("--lifecycle, --synack-ack and --ack-ack take --proto tcp");
        }
        let racers = match o.clash {
            None => Vec::new(),
            Some(_) if o.sender == Sender::Socket => {
                bail!("--clash takes live frames (not --sender socket)")
            }
            Some(Clash::Reverse) if o.flood > 0 || o.lifecycle != Lifecycle::Handshake => {
                bail!("--clash reverse sends the first packets only (no --flood or --lifecycle)")
            }
            Some(_) => first_cpus(2, allowed, "--clash")?,
        };
        let sport = port("--client", o.client, "--sport", o.sport, DEFAULT_SPORT)?;
        let dport = port("--server", o.server, "--dport", o.dport, DEFAULT_DPORT)?;
        let ports = u64::from((u16::MAX - sport) / o.port_step) + 1;
        let total = o.count.saturating_mul(o.rounds);
        let ports_per_addr = ports.min(total) as u32;
        let need = o.count.div_ceil(u64::from(ports_per_addr));
        let want = total.div_ceil(u64::from(ports_per_addr));
        let room = match client {
            IpAddr::V4(a) => u128::from(u32::MAX - u32::from(a)),
            IpAddr::V6(a) => u128::MAX - u128::from(a),
        };
        if u128::from(want) > room {
            bail!(
                "--count {} needs more client addresses than IPv{} has",
                o.count,
                if client.is_ipv4() { 4 } else { 6 }
            );
        }
        Ok(Self {
            count: o.count,
            total,
            server,
            dport,
            clients: Clients {
                first: client,
                sport,
                port_step: o.port_step,
                ports_per_addr,
            },
            need,
            want,
            cpus,
            racers,
        })
    }

    /// Client tuples over `addrs` assigned client addresses: a round may
    /// not reuse a tuple, later rounds reuse those of earlier ones.
    pub fn span(&self, addrs: u32) -> u64 {
        u64::from(addrs) * u64::from(self.clients.ports_per_addr)
    }

    /// The frames of `ph` in round `round`, over `span` client tuples.  The
    /// handshake phases take the round's connections, wrapping at `span`;
    /// the flood cycles over this round's connections.
    pub fn frames(&self, ph: &Phase, round: u64, span: u64) -> Frames {
        let len = self.count * ph.per_conn;
        let (next, span) = if ph.per_conn > 1 {
            (0, self.count)
        } else {
            (round * self.count, span)
        };
        Frames {
            next,
            end: next + len,
            span,
            base: 0,
        }
    }
}

/// The first `n` of the `allowed` CPUs, when `n` > 1.
fn flood_cpus(n: usize, allowed: &[usize]) -> Result<Vec<usize>> {
    if n == 1 {
        return Ok(Vec::new());
    }
    first_cpus(n, allowed, &format!("--threads {n}"))
}

/// The first `n` of the `allowed` CPUs, for `option`.
fn first_cpus(n: usize, allowed: &[usize], option: &str) -> Result<Vec<usize>> {
    if allowed.len() < n {
        bail!(
            "{option}: only {} CPUs are available to this process",
            allowed.len()
        );
    }
    Ok(allowed[..n].to_vec())
}

/// The shares of `threads` flood threads in a flood of `per_conn` frames
/// for each of `conns` connections: thread t cycles over its own slice of
/// the connections, and the first one takes the remainder.
pub fn shares(conns: u64, per_conn: u64, threads: usize) -> Vec<Frames> {
    let n = threads as u64;
    (0..n)
        .map(|t| {
            let mine = conns / n + if t == 0 { conns % n } else { 0 };
            let first = t * (conns / n) + if t > 0 { conns % n } else { 0 };
            Frames {
                next: 0,
                end: mine * per_conn,
                span: mine,
                base: first,
            }
        })
        .collect()
}

/// Each of `threads` flood threads' share of `rate`.
pub fn rate_share(rate: Rate, threads: usize) -> Rate {
    match rate {
        Rate::Max => Rate::Max,
        Rate::Pps(r) => Rate::Pps((r / threads as u64).max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// The options as the command line would give them.
    fn args(extra: &[&str]) -> Args {
        Cli::parse_from(std::iter::once("handshake").chain(extra.iter().copied())).args
    }

    fn plan(extra: &[&str]) -> Result<Plan> {
        Plan::new(&args(extra), &[0, 1])
    }

    fn err(extra: &[&str]) -> String {
        plan(extra).unwrap_err().to_string()
    }

    /// (name, client sends, flags, seq, ack) of each phase.
    fn numbers(o: &Args) -> Vec<(&'static str, bool, u8, u32, u32)> {
        phases(o)
            .iter()
            .map(|p| (p.name, p.client_is_src, p.flags, p.seq, p.ack))
            .collect()
    }

    #[test]
    fn the_ostinato_handshake() {
        assert_eq!(
            numbers(&args(&[])),
            [
                ("SYN", true, SYN, 100, 0),
                ("SYN-ACK", false, SYN | ACK, 200, 101),
                ("ACK", true, ACK, 101, 201),
            ]
        );
    }

    #[test]
    fn acks_may_be_set_apart_from_the_seqs() {
        let v = numbers(&args(&["--synack-ack", "102", "--ack-ack", "7"]));
        assert_eq!(v[1], ("SYN-ACK", false, SYN | ACK, 200, 102));
        assert_eq!(v[2], ("ACK", true, ACK, 101, 7));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let v = numbers(&args(&["--syn-seq", "4294967295", "--lifecycle", "full"]));
        assert_eq!(v[1].4, 0);
        assert_eq!(v[2].3, 0);
        assert_eq!(v[4], ("FIN-ACK", false, FIN | ACK, 201, 1));
    }

    #[test]
    fn the_flood_and_the_lifecycles_follow_the_handshake() {
        let full = numbers(&args(&["--flood", "10", "--lifecycle", "full"]));
        assert_eq!(
            full[3..],
            [
                ("DATA", true, ACK, 101, 201),
                ("FIN", true, FIN | ACK, 101, 201),
                ("FIN-ACK", false, FIN | ACK, 201, 102),
                ("LAST-ACK", true, ACK, 102, 202),
            ]
        );
        let o = args(&["--flood", "10"]);
        assert_eq!(phases(&o).iter().map(|p| p.per_conn).sum::<u64>(), 13);
        assert_eq!(
            numbers(&args(&["--lifecycle", "rst"]))[3..],
            [("RST", true, RST, 101, 0)]
        );
    }

    #[test]
    fn a_phase_frame_goes_its_own_way() {
        let o = args(&[]);
        let (c, s) = (
            Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 23420),
            Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080),
        );
        let eth = Ether::default();
        let ph = phases(&o);
        assert_eq!(
            ph[0].frame(&eth, c, s),
            packet::tcp(&eth, c, s, SYN, 100, 0, b"")
        );
        assert_eq!(
            ph[1].frame(&eth, c, s),
            packet::tcp(&eth, s, c, SYN | ACK, 200, 101, b"")
        );
    }

    /// (name, client sends, rival: (client sends, seq)) of a phase.
    type Race = (&'static str, bool, Option<(bool, u32)>);

    fn races(o: &Args) -> Vec<Race> {
        phases(o)
            .iter()
            .map(|p| {
                let rival = p.rival().map(|r| (r.client_is_src, r.seq));
                (p.name, p.client_is_src, rival)
            })
            .collect()
    }

    #[test]
    fn udp_sends_a_datagram_each_way_then_the_flood() {
        let o = args(&["--proto", "udp", "--flood", "3"]);
        let v = phases(&o);
        let got: Vec<_> = v
            .iter()
            .map(|p| (p.name, p.client_is_src, p.per_conn, p.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("UDP", true, 1, hs_kind::HS_UDP),
                ("REPLY", false, 1, hs_kind::HS_UDP),
                ("DATA", true, 3, hs_kind::HS_UDP),
            ]
        );
        let (c, s) = (
            Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 23420),
            Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080),
        );
        let eth = Ether::default();
        assert_eq!(v[0].frame(&eth, c, s), packet::udp(&eth, c, s, b""));
        assert_eq!(v[1].frame(&eth, c, s), packet::udp(&eth, s, c, b""));
    }

    #[test]
    fn a_same_clash_races_two_copies_of_the_first_packet() {
        let tcp = races(&args(&["--clash", "same"]));
        assert_eq!(tcp[0], ("2xSYN", true, Some((true, 100))));
        assert_eq!(
            tcp[1..],
            [("SYN-ACK", false, None), ("ACK", true, None)],
            "the handshake goes on"
        );
        let udp = races(&args(&["--clash", "same", "--proto", "udp"]));
        assert_eq!(
            udp,
            [("2xUDP", true, Some((true, 0))), ("REPLY", false, None)]
        );
        // Both copies are the same frame.
        let o = args(&["--clash", "same"]);
        let ph = phases(&o)[0];
        let (c, s) = (
            Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 23420),
            Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080),
        );
        let eth = Ether::default();
        let rival = ph.rival().unwrap();
        assert_eq!(rival.frame(&eth, c, s), ph.frame(&eth, c, s));
        assert_eq!(rival.kind, hs_kind::HS_SYN);
    }

    #[test]
    fn a_reverse_clash_races_each_sides_first_packet_and_stops() {
        let o = args(&["--clash", "reverse", "--synack-seq", "7"]);
        assert_eq!(races(&o), [("SYN<>SYN", true, Some((false, 7)))]);
        // The server's SYN: its own sequence number, no ACK.
        let ph = phases(&o)[0];
        let (c, s) = (
            Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 23420),
            Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080),
        );
        let eth = Ether::default();
        assert_eq!(
            ph.rival().unwrap().frame(&eth, c, s),
            packet::tcp(&eth, s, c, SYN, 7, 0, b"")
        );
        let udp = args(&["--clash", "reverse", "--proto", "udp"]);
        assert_eq!(races(&udp), [("UDP<>UDP", true, Some((false, 200)))]);
        assert_eq!(
            phases(&udp)[0].rival().unwrap().frame(&eth, c, s),
            packet::udp(&eth, s, c, b"")
        );
    }

    #[test]
    fn racers_take_the_first_two_allowed_cpus() {
        let o = args(&["--clash", "same"]);
        let p = Plan::new(&o, &[3, 5, 7]).unwrap();
        assert_eq!((p.racers, p.cpus), (vec![3, 5], vec![]));
        assert!(plan(&[]).unwrap().racers.is_empty());
        // A flood after the race has threads of its own.
        let o = args(&["--clash", "same", "--flood", "2", "--threads", "2"]);
        let p = Plan::new(&o, &[1, 0]).unwrap();
        assert_eq!((p.racers, p.cpus), (vec![1, 0], vec![1, 0]));
    }

    #[test]
    fn options_are_checked_in_order() {
        assert_eq!(err(&["--count", "0"]), "--count must be at least 1");
        assert_eq!(err(&["--port-step", "0"]), "--port-step must be at least 1");
        assert_eq!(err(&["--rounds", "0"]), "--rounds must be at least 1");
        assert_eq!(
            err(&["--flood", "2", "--rounds", "2"]),
            "--flood and --rounds do not go together"
        );
        assert_eq!(err(&["--threads", "0"]), "--threads must be at least 1");
        assert_eq!(
            err(&["--threads", "3"]),
            "--threads 3: only 2 CPUs are available to this process"
        );
        let live = "--threads takes --flood and live frames (not --sender socket)";
        assert_eq!(err(&["--threads", "2"]), live);
        assert_eq!(
            err(&["--threads", "2", "--flood", "2", "--sender", "socket"]),
            live
        );
        let tcp_only = "--lifecycle, --synack-ack and --ack-ack take --proto tcp";
        for extra in [
            &["--lifecycle", "full"][..],
            &["--lifecycle", "rst"],
            &["--synack-ack", "1"],
            &["--ack-ack", "1"],
        ] {
            let mut o = vec!["--proto", "udp"];
            o.extend(extra);
            assert_eq!(err(&o), tcp_only, "{extra:?}");
        }
        assert_eq!(
            err(&["--clash", "same", "--sender", "socket"]),
            "--clash takes live frames (not --sender socket)"
        );
        let one = "--window takes one sending thread (not --threads or --clash)";
        assert_eq!(
            err(&["--window", "8", "--threads", "2", "--flood", "2"]),
            one
        );
        assert_eq!(err(&["--window", "8", "--clash", "same"]), one);
        assert!(Plan::new(&args(&["--window", "8", "--threads", "1"]), &[0]).is_ok());
        let reverse = "--clash reverse sends the first packets only (no --flood or --lifecycle)";
        assert_eq!(err(&["--clash", "reverse", "--flood", "2"]), reverse);
        assert_eq!(err(&["--clash", "reverse", "--lifecycle", "rst"]), reverse);
        assert_eq!(
            Plan::new(&args(&["--clash", "same"]), &[0])
                .unwrap_err()
                .to_string(),
            "--clash: only 1 CPUs are available to this process"
        );
        assert_eq!(
            err(&["--client", "255.255.255.250", "--count", "400000"]),
            "--count 400000 needs more client addresses than IPv4 has"
        );
    }

    #[test]
    fn flood_threads_take_the_first_allowed_cpus() {
        let o = args(&["--flood", "2", "--threads", "2"]);
        assert_eq!(Plan::new(&o, &[3, 5, 7]).unwrap().cpus, [3, 5]);
        assert!(plan(&["--flood", "2"]).unwrap().cpus.is_empty());
    }

    #[test]
    fn ports_run_over_into_the_next_address() {
        // Ports 65000..=65535: 536 per address.
        let p = plan(&["--count", "1000", "--sport", "65000"]).unwrap();
        assert_eq!(p.clients.ports_per_addr, 536);
        assert_eq!((p.need, p.want), (2, 2));
        let c = |j| p.clients.endpoint(j);
        assert_eq!(c(0), Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 65000));
        assert_eq!(c(535), Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 65535));
        assert_eq!(c(536), Endpoint::new(Ipv4Addr::new(10, 1, 1, 101), 65000));
        assert_eq!(c(999), Endpoint::new(Ipv4Addr::new(10, 1, 1, 101), 65463));
    }

    #[test]
    fn a_port_step_spaces_the_ports() {
        let p = plan(&["--count", "10", "--sport", "65500", "--port-step", "10"]).unwrap();
        // 65500, 65510, ..., 65530: 4 per address.
        assert_eq!(p.clients.ports_per_addr, 4);
        assert_eq!(p.need, 3);
        assert_eq!(
            p.clients.endpoint(5),
            Endpoint::new(Ipv4Addr::new(10, 1, 1, 101), 65510)
        );
    }

    #[test]
    fn a_small_run_uses_one_address() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.clients.ports_per_addr, 1000);
        assert_eq!((p.count, p.total, p.need, p.want), (1000, 1000, 1, 1));
        assert_eq!(p.span(1), 1000);
    }

    #[test]
    fn rounds_take_new_tuples_until_the_addresses_run_out() {
        // 3 rounds of 1000 over 30000 ports per address (sport 35536).
        let p = plan(&["--rounds", "3", "--sport", "35536"]).unwrap();
        assert_eq!(p.clients.ports_per_addr, 3000);
        assert_eq!((p.need, p.want, p.total), (1, 1, 3000));
        let syn = phases(&args(&[]))[0];
        let span = p.span(1);
        let f = p.frames(&syn, 2, span);
        assert_eq!((f.next, f.end, f.len()), (2000, 3000, 1000));
        assert_eq!(f.conn(2999), 2999);

        // 4 rounds of 1000 with 1000 ports per address, one address
        // assigned of the 4 the run could use: every round reuses round 0's.
        let p = plan(&["--rounds", "4", "--sport", "64536"]).unwrap();
        assert_eq!(p.clients.ports_per_addr, 1000);
        assert_eq!((p.need, p.want), (1, 4));
        let span = p.span(1);
        for round in 0..4 {
            let f = p.frames(&syn, round, span);
            assert_eq!(f.len(), 1000);
            assert_eq!(f.conn(f.next), 0, "round {round}");
            assert_eq!(f.conn(f.end - 1), 999, "round {round}");
        }
        // Two addresses: rounds 0 and 2 share tuples, 1 and 3 share theirs.
        let span = p.span(2);
        let firsts: Vec<_> = (0..4).map(|r| p.frames(&syn, r, span)).collect();
        let firsts: Vec<_> = firsts.iter().map(|f| f.conn(f.next)).collect();
        assert_eq!(firsts, [0, 1000, 0, 1000]);
    }

    #[test]
    fn the_flood_cycles_over_the_rounds_connections() {
        let o = args(&["--count", "500", "--flood", "10"]);
        let p = Plan::new(&o, &[]).unwrap();
        let data = phases(&o)[3];
        let f = p.frames(&data, 0, p.span(1));
        assert_eq!((f.next, f.end, f.span, f.base), (0, 5000, 500, 0));
        assert_eq!(f.conn(499), 499);
        assert_eq!(f.conn(500), 0);
        assert_eq!(f.conn(4999), 499);
    }

    #[test]
    fn thread_shares_cover_every_connection_once() {
        for (conns, per_conn, threads) in [(501, 10, 2), (500, 3, 2), (7, 1, 3), (1000, 2, 7)] {
            let shares = shares(conns, per_conn, threads);
            assert_eq!(shares.len(), threads);
            let mut seen = vec![0u64; conns as usize];
            for s in &shares {
                assert_eq!(s.len(), s.span * per_conn);
                for i in s.next..s.end {
                    seen[s.conn(i) as usize] += 1;
                }
            }
            assert!(
                seen.iter().all(|&n| n == per_conn),
                "{conns} x {per_conn} over {threads}: {seen:?}"
            );
        }
        // The first thread takes the remainder.
        let s = shares(501, 10, 2);
        assert_eq!((s[0].span, s[0].base), (251, 0));
        assert_eq!((s[1].span, s[1].base), (250, 251));
    }

    fn v6(s: &str) -> IpAddr {
        s.parse::<Ipv6Addr>().unwrap().into()
    }

    #[test]
    fn the_family_follows_the_addresses_or_minus_6() {
        let pair = |extra: &[&str]| {
            let p = plan(extra).unwrap();
            (p.clients.first.to_string(), p.server.to_string())
        };
        let four = ("10.1.1.100".to_string(), "10.2.2.100".to_string());
        let six = ("fd01::100".to_string(), "fd02::100".to_string());
        assert_eq!(pair(&[]), four);
        assert_eq!(pair(&["-6"]), six);
        assert_eq!(pair(&["--ipv6"]), six);
        // One IPv6 address: the other takes IPv6's default.
        assert_eq!(pair(&["--client", "fd01::100"]), six);
        assert_eq!(pair(&["--server", "fd02::100"]), six);
        assert_eq!(
            pair(&["-6", "--client", "fd09::1", "--server", "fd0a::2"]),
            ("fd09::1".to_string(), "fd0a::2".to_string())
        );
        assert_eq!(
            pair(&["--client", "10.9.9.9"]),
            ("10.9.9.9".to_string(), "10.2.2.100".to_string())
        );
    }

    #[test]
    fn an_address_of_the_wrong_family_is_refused() {
        assert_eq!(
            err(&["-6", "--client", "10.1.1.100"]),
            "--client 10.1.1.100 is an IPv4 address, but -6 makes this an IPv6 run"
        );
        assert_eq!(
            err(&["-6", "--server", "10.2.2.100"]),
            "--server 10.2.2.100 is an IPv4 address, but -6 makes this an IPv6 run"
        );
        assert_eq!(
            err(&["--client", "fd01::100", "--server", "10.2.2.100"]),
            "--server 10.2.2.100 is an IPv4 address, but --client fd01::100 makes this an IPv6 run"
        );
        assert_eq!(
            err(&["--client", "10.1.1.100", "--server", "fd02::100"]),
            "--client 10.1.1.100 is an IPv4 address, but --server fd02::100 makes this an IPv6 run"
        );
    }

    #[test]
    fn addresses_take_a_port_as_a_socket_address_does() {
        let hp = |s: &str| s.parse::<HostPort>().map_err(|e| e.to_string());
        let at = |a: &str, port| {
            Ok(HostPort {
                addr: a.parse().unwrap(),
                port,
            })
        };
        assert_eq!(hp("10.2.2.100"), at("10.2.2.100", None));
        assert_eq!(hp("10.2.2.100:8080"), at("10.2.2.100", Some(8080)));
        assert_eq!(hp("fd02::100"), at("fd02::100", None));
        assert_eq!(hp("[fd02::100]"), at("fd02::100", None));
        assert_eq!(hp("[fd02::100]:8080"), at("fd02::100", Some(8080)));
        for bad in [
            "fd02::100]:8080",
            "[10.2.2.100]",
            "10.2.2.100:",
            "10.2.2.100:65536",
            "host:1",
            "",
        ] {
            assert_eq!(
                hp(bad),
                Err(format!(
                    "'{bad}' is not an address: give ADDR or ADDR:PORT ([IPV6]:PORT for IPv6)"
                ))
            );
        }
        assert_eq!(
            hp("[fd02::100]:8080").unwrap().to_string(),
            "[fd02::100]:8080"
        );
        assert_eq!(hp("fd02::100").unwrap().to_string(), "fd02::100");

        // The ports they carry are the run's, as --sport and --dport's.
        let p = plan(&[
            "--client",
            "[fd01::100]:40000",
            "--server",
            "[fd02::100]:9090",
        ])
        .unwrap();
        assert_eq!(p.clients.endpoint(0), Endpoint::new(v6("fd01::100"), 40000));
        assert_eq!((p.server, p.dport), (v6("fd02::100"), 9090));
        let p = plan(&["--server", "10.2.2.100:9090", "--dport", "9090"]).unwrap();
        assert_eq!((p.clients.sport, p.dport), (DEFAULT_SPORT, 9090));
        let p = plan(&["--sport", "1000", "--dport", "2000"]).unwrap();
        assert_eq!((p.clients.sport, p.dport), (1000, 2000));
        assert_eq!(
            err(&["--server", "[fd02::100]:8080", "--dport", "80"]),
            "--server [fd02::100]:8080 gives port 8080, and --dport 80 another"
        );
        assert_eq!(
            err(&["--client", "10.1.1.100:1", "--sport", "2"]),
            "--client 10.1.1.100:1 gives port 1, and --sport 2 another"
        );
    }

    #[test]
    fn ipv6_clients_step_as_128_bit_numbers() {
        // Ports 65000..=65535: 536 per address, as for IPv4.
        let p = plan(&["-6", "--count", "2000", "--sport", "65000"]).unwrap();
        assert_eq!(p.clients.ports_per_addr, 536);
        assert_eq!((p.need, p.want), (4, 4));
        let c = |j| p.clients.endpoint(j);
        assert_eq!(c(0), Endpoint::new(v6("fd01::100"), 65000));
        assert_eq!(c(535), Endpoint::new(v6("fd01::100"), 65535));
        assert_eq!(c(536), Endpoint::new(v6("fd01::101"), 65000));
        assert_eq!(c(1999), Endpoint::new(v6("fd01::103"), 65391));
        // Past ::1ff comes ::200 (hexadecimal), and a carry runs into the
        // upper 64 bits as hs_gen carries it.
        let p = plan(&[
            "--client",
            "fd01::1ff",
            "--count",
            "600",
            "--sport",
            "65000",
        ])
        .unwrap();
        assert_eq!(p.clients.endpoint(536).addr, v6("fd01::200"));
        let last = "fd01::ffff:ffff:ffff:ffff";
        let p = plan(&["--client", last, "--count", "600", "--sport", "65000"]).unwrap();
        assert_eq!(p.clients.endpoint(535).addr, v6(last));
        assert_eq!(p.clients.endpoint(536).addr, v6("fd01:0:0:1::"));
        assert_eq!(
            err(&[
                "--client",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
                "--count",
                "100000"
            ]),
            "--count 100000 needs more client addresses than IPv6 has"
        );
    }

    #[test]
    fn an_ipv6_phase_frame_goes_its_own_way() {
        let o = args(&["-6"]);
        let p = Plan::new(&o, &[]).unwrap();
        let (c, s) = (p.clients.endpoint(0), Endpoint::new(p.server, 8080));
        assert_eq!(c, Endpoint::new(v6("fd01::100"), 23420));
        let eth = Ether::default();
        let ph = phases(&o);
        let syn = ph[0].frame(&eth, c, s);
        assert_eq!(syn, packet::tcp(&eth, c, s, SYN, 100, 0, b""));
        // The smallest IPv6 TCP frame: 14 + 40 + 20 bytes.
        assert_eq!(syn.len(), 74);
        assert_eq!(&syn[12..14], &[0x86, 0xdd]);
        assert_eq!(
            ph[2].frame(&eth, c, s),
            packet::tcp(&eth, c, s, ACK, 101, 201, b"")
        );
        assert_eq!(
            ph[1].frame(&eth, c, s),
            packet::tcp(&eth, s, c, SYN | ACK, 200, 101, b"")
        );
    }

    #[test]
    fn threads_share_the_rate() {
        assert_eq!(rate_share(Rate::Pps(200_000), 2), Rate::Pps(100_000));
        assert_eq!(rate_share(Rate::Pps(1), 2), Rate::Pps(1));
        assert_eq!(rate_share(Rate::Max, 2), Rate::Max);
    }
}
