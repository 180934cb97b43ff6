//! Differential test against the kernel: the same frames go through our XDP
//! program (BPF_PROG_TEST_RUN) and through nf_conntrack in a network
//! namespace, and after every packet both must agree on the verdict (the
//! kernel calls it INVALID exactly when we drop it, RELATED exactly when we
//! count it related) and on the connection table (state, original
//! direction, [UNREPLIED], [ASSURED]).
//!
//! Kernel side: namespace K is a router between the client and the
//! server, as xdp-conntrack is, and tracks what it forwards.  The client
//! lives behind K's veth to namespace I, the server behind its veth to
//! namespace S; K owns neither address, and has a host route and a
//! permanent neighbour for each.  A frame to the server is written into
//! K from I, any other from S, through an AF_PACKET socket; I and S drop
//! whatever K forwards to them.  At setup a probe and its answer, in each
//! family, must cross K once each way on those veths.
//!
//! nftables in K counts each packet twice: `seen` at prerouting priority
//! -300 (before conntrack) and `done` at postrouting priority INT_MAX,
//! registered before conntrack's hooks so that it runs after the confirm
//! hook (a `ct status confirmed` counter there proves it at setup).  A
//! prerouting chain at priority 0 counts `ct state invalid` and `ct state
//! related` (ICMP errors about a tracked connection, which we count as
//! `related`).  ICMP errors come from a third address, ROUTER, that K has
//! no route to: with no `rp_filter` it forwards them like any other
//! frame.  Everything K itself sends (ICMP errors and redirects, neighbour
//! discovery) is dropped at output priority -300, before conntrack sees
//! it.  The table is `inet`, so each chain and counter sees both families.
//!
//! Each sequence is written with sides, and runs over one `Family`, which
//! gives the sides their addresses and ICMP its version; the TCP, UDP,
//! ICMP error and checksum sequences run over both, IPv4-only ones (the
//! IPv4 header checksum, IP options and the fragment field in quotes,
//! ICMP's timestamps) over IPv4 only, and IPv6's own (extension headers,
//! ICMPv6's types) over IPv6.
//!
//! Every sequence starts from empty tables on both sides (a freshly loaded
//! program, `conntrack -F`).  All sequences run even when some differ; the
//! test then fails with the per-packet table of each one that does.

mod common;

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::libc;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
use nix::unistd::Pid;
use xdp_conntrack::bpf::types::ct_counter;
use xdp_conntrack::loader::Config;
use xdp_conntrack::packet::{
    self, corrupt_ip_checksum, corrupt_l4_checksum, ip_frame, tcp_flags::*, tcp_segment, udp,
    with_ipv6_extensions, without_udp_checksum, Endpoint, Ether, Ipv6Ext, Segment, TcpOpt,
    TCP_WINDOW,
};
use xdp_conntrack::proto::{proto_name, tcp_state_name, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP};
use xdp_conntrack::sys::{netlink, PacketSocket};
use xdp_conntrack::table::Conn;

/// MAC of K's veth end towards the client (frames to the server are
/// addressed to it) and of its peer in I.
const K_MAC: [u8; 6] = [0x02, 0x6b, 0, 0, 0, 0x01];
const I_MAC: [u8; 6] = [0x02, 0x69, 0, 0, 0, 0x01];
/// The same for K's veth end towards the server, and its peer in S.
const K2_MAC: [u8; 6] = [0x02, 0x6b, 0, 0, 0, 0x02];
const S_MAC: [u8; 6] = [0x02, 0x73, 0, 0, 0, 0x01];

/// The two ends of every flow: the client behind K's veth to I, the server
/// behind its veth to S.
const CLIENT: Endpoint = Endpoint {
    addr: IpAddr::V4(Ipv4Addr::new(10, 1, 1, 100)),
    port: 23420,
};
const SERVER: Endpoint = Endpoint {
    addr: IpAddr::V4(Ipv4Addr::new(10, 2, 2, 100)),
    port: 8080,
};
/// A router on the path beyond K, the source of most ICMP errors.  K has
/// no route to it, and takes its errors all the same (no `rp_filter`):
/// every error goes to CLIENT or SERVER.
const ROUTER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 1));

/// The same three over IPv6, with the same ports.  IPv6 has no
/// `rp_filter`: K forwards a packet from an address it has no route to as
/// it is.
const CLIENT6: Endpoint = Endpoint {
    addr: IpAddr::V6(Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0x100)),
    port: CLIENT.port,
};
const SERVER6: Endpoint = Endpoint {
    addr: IpAddr::V6(Ipv6Addr::new(0xfd02, 0, 0, 0, 0, 0, 0, 0x100)),
    port: SERVER.port,
};
const ROUTER6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd03, 0, 0, 0, 0, 0, 0, 1));

/// The IP version a sequence runs over.  Sequences are written with
/// sides (client, server, router); the family gives them addresses, and
/// ICMP its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn client(self) -> Endpoint {
        match self {
            Family::V4 => CLIENT,
            Family::V6 => CLIENT6,
        }
    }
    fn server(self) -> Endpoint {
        match self {
            Family::V4 => SERVER,
            Family::V6 => SERVER6,
        }
    }
    fn router(self) -> IpAddr {
        match self {
            Family::V4 => ROUTER,
            Family::V6 => ROUTER6,
        }
    }
    /// ICMP's protocol number: ICMP or ICMPv6.
    fn icmp(self) -> u8 {
        match self {
            Family::V4 => IPPROTO_ICMP,
            Family::V6 => IPPROTO_ICMPV6,
        }
    }
    /// ICMP's name in `conntrack -L`.
    fn icmp_name(self) -> &'static str {
        proto_name(self.icmp())
    }
    /// The echo request's type: 8, or ICMPv6's 128.
    fn echo_request(self) -> u8 {
        match self {
            Family::V4 => 8,
            Family::V6 => 128,
        }
    }
    /// The echo reply's type: 0, or ICMPv6's 129.
    fn echo_reply(self) -> u8 {
        match self {
            Family::V4 => 0,
            Family::V6 => 129,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// How long the kernel may take to process one injected frame.
const KERNEL_WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Sequences

/// Who sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
    /// Sends ICMP errors only.
    Router,
}

impl Side {
    fn ends(self, fam: Family) -> (Endpoint, Endpoint) {
        match self {
            Side::Client => (fam.client(), fam.server()),
            Side::Server => (fam.server(), fam.client()),
            Side::Router => panic!("the router sends ICMP errors only"),
        }
    }
    fn addr(self, fam: Family) -> IpAddr {
        match self {
            Side::Client => fam.client().addr,
            Side::Server => fam.server().addr,
            Side::Router => fam.router(),
        }
    }
    fn letter(self) -> &'static str {
        match self {
            Side::Client => "C",
            Side::Server => "S",
            Side::Router => "R",
        }
    }
    fn arrow(self) -> &'static str {
        match self {
            Side::Client => "C>S",
            Side::Server => "S>C",
            Side::Router => "R>?",
        }
    }
}

#[derive(Debug, Clone)]
enum Body {
    Tcp {
        flags: u8,
        seq: u32,
        ack: u32,
        len: usize,
        /// The window, unscaled.
        win: u16,
        opts: Vec<TcpOpt>,
    },
    Udp,
    /// ICMP other than an error: echo request (8) or reply (0), the other
    /// queries and answers (13-18), or any other type; over IPv6, ICMPv6
    /// of that type (echo is 128 and 129 there).
    Icmp {
        icmp_type: u8,
        code: u8,
        id: u16,
        seq: u16,
    },
    /// An ICMP (ICMPv6) error about another packet.
    Error(Box<IcmpError>),
    /// An IP payload of another protocol, as it is: IPv6's "no next
    /// header" (59), say.
    Raw {
        proto: u8,
        payload: Vec<u8>,
    },
}

/// What is wrong with a packet on purpose; built by src/packet.rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Nothing: every checksum right.
    None,
    /// A wrong TCP, UDP or ICMP checksum.
    L4Checksum,
    /// A wrong IPv4 header checksum: ip_rcv() drops it before conntrack.
    /// IPv4 only: IPv6 has no header checksum.
    IpChecksum,
    /// UDP without a checksum (0): allowed over IPv4, wrong over IPv6.
    NoUdpChecksum,
    /// Four bytes in the IP payload past the UDP length, the checksum over
    /// the UDP length as a sender computes it (`summed`: false), or over
    /// the whole IP payload (true).
    UdpTrailer { summed: bool },
    /// No fault: IPv4 options behind the header (whole words), which the
    /// IP layer reads only after conntrack has seen the packet.
    IpOptions(&'static [u8]),
}

impl Fault {
    fn apply(self, frame: Vec<u8>) -> Vec<u8> {
        match self {
            Fault::None => frame,
            Fault::L4Checksum => corrupt_l4_checksum(&frame),
            Fault::IpChecksum => corrupt_ip_checksum(&frame),
            Fault::NoUdpChecksum => without_udp_checksum(&frame),
            Fault::UdpTrailer { summed } if frame[12..14] == [0x86, 0xdd] => {
                // Untagged frames only: the IPv6 header at 14, no
                // extension headers.  The sender's sum (over the UDP
                // length) needs no change; IPv6 has no header sum.
                let plen = usize::from(u16::from_be_bytes([frame[18], frame[19]]));
                let mut f = frame[..54 + plen].to_vec();
                f.extend_from_slice(b"tail");
                f[18..20].copy_from_slice(&(plen as u16 + 4).to_be_bytes());
                if summed {
                    packet::fix_checksums(&mut f);
                }
                f
            }
            Fault::UdpTrailer { summed } => {
                // Untagged frames only: the IPv4 header at 14, 20 bytes.
                let tot = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
                let mut f = frame[..14 + tot].to_vec();
                f.extend_from_slice(b"tail");
                f[16..18].copy_from_slice(&(tot as u16 + 4).to_be_bytes());
                if summed {
                    packet::fix_checksums(&mut f);
                } else {
                    f[24..26].fill(0);
                    let c = packet::checksum(&f[14..34], 0);
                    f[24..26].copy_from_slice(&c.to_be_bytes());
                }
                f
            }
            Fault::IpOptions(opts) => packet::with_ip_options(&frame, opts),
        }
    }
}

/// An ICMP error kind: a name, the type and the code.  Which family's
/// types these are is up to the sequence that sends it.
#[derive(Debug, Clone, Copy)]
struct ErrKind(&'static str, u8, u8);

impl ErrKind {
    /// Sent by the quoted packet's destination, not by a router.
    fn sent_by_destination(self) -> bool {
        matches!((self.1, self.2), (3, 3) | (1, 4))
    }
}

const PORT_UNREACH: ErrKind = ErrKind("port unreachable", 3, 3);
const HOST_UNREACH: ErrKind = ErrKind("host unreachable", 3, 1);
const FRAG_NEEDED: ErrKind = ErrKind("fragmentation needed", 3, 4);
const TIME_EXCEEDED: ErrKind = ErrKind("time exceeded", 11, 0);
const PARAM_PROBLEM: ErrKind = ErrKind("parameter problem", 12, 0);
const SOURCE_QUENCH: ErrKind = ErrKind("source quench", 4, 0);
const REDIRECT: ErrKind = ErrKind("redirect", 5, 1);
const ERROR_KINDS: [ErrKind; 7] = [
    PORT_UNREACH,
    HOST_UNREACH,
    FRAG_NEEDED,
    TIME_EXCEEDED,
    PARAM_PROBLEM,
    SOURCE_QUENCH,
    REDIRECT,
];

/// ICMPv6's errors (RFC 4443): every type below 128 is one.  IPv6 has
/// no source quench, and its redirect is neighbour discovery (137), no
/// error.
const PORT_UNREACH6: ErrKind = ErrKind("port unreachable", 1, 4);
const ADDR_UNREACH6: ErrKind = ErrKind("address unreachable", 1, 3);
const ADMIN_PROHIBITED6: ErrKind = ErrKind("administratively prohibited", 1, 1);
const PKT_TOO_BIG6: ErrKind = ErrKind("packet too big", 2, 0);
const TIME_EXCEEDED6: ErrKind = ErrKind("time exceeded", 3, 0);
const PARAM_PROBLEM6: ErrKind = ErrKind("parameter problem", 4, 0);
/// Type 100: reserved for private experimentation among the errors.
const PRIVATE_ERROR6: ErrKind = ErrKind("private experimentation error", 100, 0);
const ERROR_KINDS6: [ErrKind; 7] = [
    PORT_UNREACH6,
    ADDR_UNREACH6,
    ADMIN_PROHIBITED6,
    PKT_TOO_BIG6,
    TIME_EXCEEDED6,
    PARAM_PROBLEM6,
    PRIVATE_ERROR6,
];

/// The error kinds the generic error sequences use, by family: a port
/// unreachable, a host (address) unreachable, a "too big" and a time
/// exceeded.
#[derive(Debug, Clone, Copy)]
struct Errors {
    port_unreach: ErrKind,
    host_unreach: ErrKind,
    too_big: ErrKind,
    time_exceeded: ErrKind,
    all: &'static [ErrKind],
}

impl Family {
    fn errors(self) -> Errors {
        match self {
            Family::V4 => Errors {
                port_unreach: PORT_UNREACH,
                host_unreach: HOST_UNREACH,
                too_big: FRAG_NEEDED,
                time_exceeded: TIME_EXCEEDED,
                all: &ERROR_KINDS,
            },
            Family::V6 => Errors {
                port_unreach: PORT_UNREACH6,
                host_unreach: ADDR_UNREACH6,
                too_big: PKT_TOO_BIG6,
                time_exceeded: TIME_EXCEEDED6,
                all: &ERROR_KINDS6,
            },
        }
    }
}

/// What an error quotes of its packet, and how.  [`WHOLE`]: the IP
/// header and the 8 bytes behind it, as IPv4 routers quote; over IPv6 the
/// whole packet (as ICMPv6 quotes as much as fits in 1280 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quote {
    /// Only the first n bytes of the quoted datagram.
    cut: Option<usize>,
    /// 4 bytes of IP options in the quoted header (IPv4 only: over IPv6,
    /// the quoted packet carries extension headers of its own).
    options: bool,
    /// The quoted header's fragment field (flags and offset); IPv4 only,
    /// likewise (a fragment header in the quoted packet).
    frag: Option<u16>,
}

const WHOLE: Quote = Quote {
    cut: None,
    options: false,
    frag: None,
};

/// The first `n` bytes of the quoted datagram.
const fn cut(n: usize) -> Quote {
    Quote {
        cut: Some(n),
        ..WHOLE
    }
}

/// The quoted header's fragment field set to `bits`.
const fn frag(bits: u16) -> Quote {
    Quote {
        frag: Some(bits),
        ..WHOLE
    }
}

const WITH_OPTIONS: Quote = Quote {
    options: true,
    ..WHOLE
};

impl fmt::Display for Quote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.options {
            write!(f, " with IP options")?;
        }
        if let Some(bits) = self.frag {
            write!(f, " frag=0x{bits:04x}")?;
        }
        if let Some(n) = self.cut {
            write!(f, " cut to {n} bytes")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct IcmpError {
    to: Side,
    kind: ErrKind,
    quote: Pkt,
    how: Quote,
}

impl IcmpError {
    fn frame(&self, eth: &Ether, from: Side, fam: Family) -> Vec<u8> {
        if fam == Family::V6 {
            return self.frame6(eth, from);
        }
        let quoted = self.quote.frame(eth, fam);
        let mut ip = quoted[14..].to_vec();
        ip.truncate(usize::from(u16::from_be_bytes([ip[2], ip[3]])));
        if self.how.options {
            ip.splice(20..20, [1, 1, 1, 0]); // NOP NOP NOP EOL
            ip[0] = 0x46;
            let tot = (ip.len() as u16).to_be_bytes();
            ip[2..4].copy_from_slice(&tot);
        }
        if let Some(bits) = self.how.frag {
            ip[6..8].copy_from_slice(&bits.to_be_bytes());
        }
        let hlen = usize::from(ip[0] & 0x0f) * 4;
        ip[10..12].fill(0);
        let sum = packet::checksum(&ip[..hlen], 0);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let n = self.how.cut.unwrap_or(hlen + 8).min(ip.len());
        let ErrKind(_, icmp_type, code) = self.kind;
        let mut l4 = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
        // The word behind the checksum: a redirect's gateway, the next
        // hop's MTU when fragmentation is needed.
        match (self.kind.1, self.kind.2, ROUTER) {
            (5, _, IpAddr::V4(gw)) => l4[4..8].copy_from_slice(&gw.octets()),
            (3, 4, _) => l4[6..8].copy_from_slice(&1400u16.to_be_bytes()),
            _ => {}
        }
        l4.extend_from_slice(&ip[..n]);
        ip_frame(eth, from.addr(fam), self.to.addr(fam), IPPROTO_ICMP, l4)
    }

    /// The ICMPv6 error: the quoted packet whole (or cut), behind the
    /// 8-byte header; a packet too big carries the MTU, a parameter
    /// problem the pointer (0 here).
    fn frame6(&self, eth: &Ether, from: Side) -> Vec<u8> {
        assert!(
            !self.how.options && self.how.frag.is_none(),
            "IP options and the IPv4 fragment field are IPv4's: {:?}",
            self.how
        );
        let quoted = self.quote.frame(eth, Family::V6);
        let plen = usize::from(u16::from_be_bytes([quoted[18], quoted[19]]));
        let ip = &quoted[14..54 + plen];
        let n = self.how.cut.unwrap_or(ip.len()).min(ip.len());
        let ErrKind(_, icmp_type, code) = self.kind;
        let mut l4 = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
        if icmp_type == 2 {
            l4[4..8].copy_from_slice(&1280u32.to_be_bytes());
        }
        l4.extend_from_slice(&ip[..n]);
        ip_frame(
            eth,
            from.addr(Family::V6),
            self.to.addr(Family::V6),
            IPPROTO_ICMPV6,
            l4,
        )
    }
}

#[derive(Debug, Clone)]
struct Pkt {
    from: Side,
    body: Body,
    fault: Fault,
    /// Not sent before this long after the sequence's first packet.
    not_before: Option<Duration>,
    /// IPv6 extension headers between the fixed header and the body.
    exts: Vec<Ipv6Ext>,
}

impl Pkt {
    fn frame(&self, eth: &Ether, fam: Family) -> Vec<u8> {
        let (src, dst) = match self.body {
            Body::Error(_) => (CLIENT, SERVER), // unused: the error has its own
            _ => self.from.ends(fam),
        };
        let frame = match &self.body {
            &Body::Tcp {
                flags,
                seq,
                ack,
                len,
                win,
                ref opts,
            } => {
                let seg = Segment {
                    win,
                    opts: opts.clone(),
                    payload: vec![b'x'; len],
                    ..Segment::new(flags, seq, ack)
                };
                tcp_segment(eth, src, dst, &seg)
            }
            Body::Udp => udp(eth, src, dst, b"parity"),
            &Body::Icmp {
                icmp_type,
                code,
                id,
                seq,
            } => {
                let mut l4 = vec![icmp_type, code, 0, 0];
                l4.extend_from_slice(&id.to_be_bytes());
                l4.extend_from_slice(&seq.to_be_bytes());
                l4.extend_from_slice(b"xdp-conntrack-ping");
                ip_frame(eth, src.addr, dst.addr, fam.icmp(), l4)
            }
            Body::Error(e) => e.frame(eth, self.from, fam),
            Body::Raw { proto, payload } => {
                ip_frame(eth, src.addr, dst.addr, *proto, payload.clone())
            }
        };
        let frame = if self.exts.is_empty() {
            frame
        } else {
            assert_eq!(fam, Family::V6, "extension headers are IPv6's");
            with_ipv6_extensions(&frame, &self.exts)
        };
        self.fault.apply(frame)
    }
}

impl fmt::Display for Pkt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.not_before {
            write!(f, "@{:.1}s ", d.as_secs_f32())?;
        }
        match &self.body {
            Body::Error(e) => write!(f, "{}>{} ", self.from.letter(), e.to.letter())?,
            _ => write!(f, "{} ", self.from.arrow())?,
        }
        match &self.body {
            &Body::Tcp {
                flags,
                seq,
                ack,
                len,
                win,
                ref opts,
            } => {
                write!(f, "{} seq={seq} ack={ack}", flag_names(flags))?;
                if len > 0 {
                    write!(f, " len={len}")?;
                }
                if win != TCP_WINDOW {
                    write!(f, " win={win}")?;
                }
                if !opts.is_empty() {
                    write!(f, " {}", opt_names(opts))?;
                }
                Ok(())
            }
            Body::Udp => write!(f, "UDP"),
            &Body::Icmp {
                icmp_type,
                code,
                id,
                seq,
            } => {
                // ICMP's echo, ICMPv6's echo and neighbour discovery: the
                // numbers do not overlap.
                match icmp_type {
                    8 | 128 => write!(f, "echo request")?,
                    0 | 129 => write!(f, "echo reply")?,
                    135 => write!(f, "neighbour solicitation")?,
                    136 => write!(f, "neighbour advertisement")?,
                    t => write!(f, "icmp type={t}")?,
                }
                if code != 0 {
                    write!(f, " code={code}")?;
                }
                write!(f, " id={id} seq={seq}")
            }
            Body::Error(e) => {
                let ErrKind(name, t, c) = e.kind;
                write!(f, "{name} {t}/{c} about ({}){}", e.quote, e.how)
            }
            Body::Raw { proto, payload } => write!(f, "proto={proto} len={}", payload.len()),
        }?;
        if !self.exts.is_empty() {
            write!(f, " {}", ext_names(&self.exts))?;
        }
        match self.fault {
            Fault::None => Ok(()),
            Fault::L4Checksum => write!(f, " [bad sum]"),
            Fault::IpChecksum => write!(f, " [bad IP sum]"),
            Fault::NoUdpChecksum => write!(f, " [no sum]"),
            Fault::UdpTrailer { summed: false } => write!(f, " [+4 bytes past UDP len]"),
            Fault::UdpTrailer { summed: true } => write!(f, " [+4 bytes, summed]"),
            Fault::IpOptions(o) => write!(f, " [IP options {o:?}]"),
        }
    }
}

/// IPv6 extension headers, e.g. `[hop 8, rt0 left 0, frag 0 M=0]`.
fn ext_names(exts: &[Ipv6Ext]) -> String {
    let names: Vec<String> = exts
        .iter()
        .map(|e| match e {
            Ipv6Ext::HopByHop(n) => format!("hop {n}"),
            Ipv6Ext::DestOpts(n) => format!("dst {n}"),
            Ipv6Ext::Routing {
                routing_type,
                segments_left,
                ..
            } => format!("rt{routing_type} left {segments_left}"),
            Ipv6Ext::Fragment { offset, more, .. } => {
                format!("frag {offset} M={}", u8::from(*more))
            }
        })
        .collect();
    format!("[{}]", names.join(", "))
}

fn opt_names(opts: &[TcpOpt]) -> String {
    let names: Vec<String> = opts
        .iter()
        .map(|o| match o {
            TcpOpt::Nop => "nop".into(),
            TcpOpt::Mss(m) => format!("mss {m}"),
            TcpOpt::WindowScale(s) => format!("wscale {s}"),
            TcpOpt::SackPerm => "sackOK".into(),
            TcpOpt::Sack(b) => {
                let b: Vec<String> = b.iter().map(|(l, r)| format!("{l}:{r}")).collect();
                format!("sack {}", b.join(" "))
            }
            TcpOpt::Timestamp(v, e) => format!("TS val {v} ecr {e}"),
            TcpOpt::Raw(b) => format!("raw {b:?}"),
        })
        .collect();
    format!("<{}>", names.join(","))
}

fn flag_names(flags: u8) -> String {
    let names: Vec<&str> = [
        (SYN, "SYN"),
        (FIN, "FIN"),
        (RST, "RST"),
        (PSH, "PSH"),
        (ACK, "ACK"),
        (URG, "URG"),
        (ECE, "ECE"),
        (CWR, "CWR"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|&(_, name)| name)
    .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
    }
}

/// A named list of packets, built with short calls:
/// `Seq::new("...").c(SYN, 100, 0).s(SYN | ACK, 200, 101)`.
#[derive(Debug, Clone)]
struct Seq {
    name: String,
    pkts: Vec<Pkt>,
    /// What the kernel's table must show at the end: a check that the
    /// sequence exercises what its name says, independent of our program.
    kernel_ends: Option<String>,
    /// The sequence's claim needs all its packets sent within this time of
    /// the first (UDP's 2 s stream rule).
    within: Option<Duration>,
    /// The kernel's settings and ours, for this sequence only.
    settings: Settings,
    /// The IP version it runs over.
    family: Family,
    /// The Linux release whose nf_conntrack made these packets valid that
    /// it called INVALID before: older kernels may show the old verdict.
    valid_since: Option<(u32, u32)>,
}

/// Settings that exist on both sides: a kernel sysctl and the program
/// option that mirrors it.  Each sequence runs with its own, both sides
/// set alike, and the kernel goes back to its defaults after it.  A new
/// pair is a field here, its sysctl in `sysctls()` and its option in
/// `config()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    /// nf_conntrack_checksum; `--no-checksum` when false.
    checksum: bool,
    /// nf_conntrack_tcp_be_liberal; `--liberal` when true.
    liberal: bool,
}

impl Default for Settings {
    /// The kernel's defaults, which are the program's.
    fn default() -> Self {
        Self {
            checksum: true,
            liberal: false,
        }
    }
}

impl Settings {
    /// The sysctls that set them in a network namespace.
    fn sysctls(&self) -> Vec<String> {
        vec![
            format!(
                "net.netfilter.nf_conntrack_checksum={}",
                u8::from(self.checksum)
            ),
            format!(
                "net.netfilter.nf_conntrack_tcp_be_liberal={}",
                u8::from(self.liberal)
            ),
        ]
    }

    /// Our program's configuration `base` with them.
    fn config(&self, base: Config) -> Config {
        Config {
            checksum: self.checksum,
            liberal: self.liberal,
            ..base
        }
    }
}

impl fmt::Display for Settings {
    /// What differs from the defaults, e.g. " (nf_conntrack_checksum=0)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let defaults = Settings::default().sysctls();
        let changed: Vec<String> = self
            .sysctls()
            .into_iter()
            .filter(|s| !defaults.contains(s))
            .map(|s| s.trim_start_matches("net.netfilter.").to_string())
            .collect();
        if changed.is_empty() {
            Ok(())
        } else {
            write!(f, " ({})", changed.join(", "))
        }
    }
}

impl Seq {
    fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            pkts: Vec::new(),
            kernel_ends: None,
            within: None,
            settings: Settings::default(),
            family: Family::V4,
            valid_since: None,
        }
    }
    /// A sequence over `family`.
    fn on(family: Family, name: impl Into<String>) -> Self {
        Self {
            family,
            ..Self::new(name)
        }
    }
    /// The same packets over `family`: for sequences that are written
    /// with sides only (TCP, UDP), whose packets mean the same over both.
    fn over(self, family: Family) -> Self {
        Self { family, ..self }
    }
    fn push(mut self, from: Side, body: Body) -> Self {
        self.pkts.push(Pkt {
            from,
            body,
            fault: Fault::None,
            not_before: None,
            exts: Vec::new(),
        });
        self
    }
    /// Puts IPv6 extension headers in the last packet, in this order.
    fn exts(mut self, exts: &[Ipv6Ext]) -> Self {
        assert_eq!(self.family, Family::V6, "extension headers are IPv6's");
        self.pkts.last_mut().expect("a packet").exts = exts.to_vec();
        self
    }
    /// Spoils the last packet on purpose (see `Fault`).
    fn fault(mut self, fault: Fault) -> Self {
        self.pkts.last_mut().expect("a packet to spoil").fault = fault;
        self
    }
    /// The last packet with a wrong TCP, UDP or ICMP checksum.
    fn bad(self) -> Self {
        self.fault(Fault::L4Checksum)
    }
    /// The last packet with a wrong IPv4 header checksum.
    fn bad_ip(self) -> Self {
        self.fault(Fault::IpChecksum)
    }
    /// Runs the sequence with these settings on both sides.
    fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }
    /// nf_conntrack_checksum=0 and `--no-checksum`.
    fn no_checksum(self) -> Self {
        let s = self.settings;
        self.settings(Settings {
            checksum: false,
            ..s
        })
    }
    /// nf_conntrack_tcp_be_liberal=1 and `--liberal`.
    fn liberal(self) -> Self {
        let s = self.settings;
        self.settings(Settings { liberal: true, ..s })
    }
    fn tcp(self, from: Side, flags: u8, seq: u32, ack: u32, len: usize) -> Self {
        self.push(
            from,
            Body::Tcp {
                flags,
                seq,
                ack,
                len,
                win: TCP_WINDOW,
                opts: Vec::new(),
            },
        )
    }
    /// Sets the last TCP segment's window.
    fn win(mut self, w: u16) -> Self {
        match &mut self.pkts.last_mut().expect("a packet").body {
            Body::Tcp { win, .. } => *win = w,
            b => panic!("a window on {b:?}"),
        }
        self
    }
    /// Sets the last TCP segment's options.
    fn opts(mut self, o: &[TcpOpt]) -> Self {
        match &mut self.pkts.last_mut().expect("a packet").body {
            Body::Tcp { opts, .. } => *opts = o.to_vec(),
            b => panic!("options on {b:?}"),
        }
        self
    }
    /// A client segment without payload.
    fn c(self, flags: u8, seq: u32, ack: u32) -> Self {
        self.tcp(Side::Client, flags, seq, ack, 0)
    }
    /// A server segment without payload.
    fn s(self, flags: u8, seq: u32, ack: u32) -> Self {
        self.tcp(Side::Server, flags, seq, ack, 0)
    }
    /// The Ostinato handshake: SYN 100, SYN-ACK 200 ack 101, ACK 101
    /// ack 201.  Afterwards the client's next seq is 101, the server's 201.
    fn handshake(self) -> Self {
        self.c(SYN, 100, 0).s(SYN | ACK, 200, 101).c(ACK, 101, 201)
    }
    /// handshake() and a client-first close down to TIME_WAIT.
    fn close_to_time_wait(self) -> Self {
        self.handshake()
            .c(FIN | ACK, 101, 201)
            .s(FIN | ACK, 201, 102)
            .c(ACK, 102, 202)
    }
    fn udp(self, from: Side) -> Self {
        self.push(from, Body::Udp)
    }
    fn echo(self, from: Side, icmp_type: u8, id: u16, seq: u16) -> Self {
        self.icmp(from, icmp_type, 0, id, seq)
    }
    fn icmp(self, from: Side, icmp_type: u8, code: u8, id: u16, seq: u16) -> Self {
        self.push(
            from,
            Body::Icmp {
                icmp_type,
                code,
                id,
                seq,
            },
        )
    }
    /// An ICMP error from `from` to `to` about `quote`.
    fn err(self, from: Side, to: Side, kind: ErrKind, quote: Pkt, how: Quote) -> Self {
        self.push(
            from,
            Body::Error(Box::new(IcmpError {
                to,
                kind,
                quote,
                how,
            })),
        )
    }
    /// Holds the last packet back until `secs` after the first one.
    fn at(mut self, secs: f32) -> Self {
        self.pkts.last_mut().expect("a packet to delay").not_before =
            Some(Duration::from_secs_f32(secs));
        self
    }
    fn kernel_ends(mut self, snapshot: impl Into<String>) -> Self {
        self.kernel_ends = Some(snapshot.into());
        self
    }
    fn within(mut self, secs: f32) -> Self {
        self.within = Some(Duration::from_secs_f32(secs));
        self
    }
    /// Kernels older than `major.minor` called these packets INVALID:
    /// on those, a row where the kernel says INVALID and we pass, the
    /// tables alike, is the old kernel's verdict, not a difference.
    fn valid_since(mut self, major: u32, minor: u32) -> Self {
        self.valid_since = Some((major, minor));
        self
    }
}

/// TCP sequences.  The program deliberately tracks no windows beyond the
/// handshake's ack bounds, so sequence numbers here stay consistent: a RST
/// carries the seq the peer last acked, data stays inside the window.
fn tcp_sequences() -> Vec<Seq> {
    const C0: u32 = 0x5b2c_1d3e; // real-looking ISNs
    const S0: u32 = 0xa1f0_e2d4;
    vec![
        // --- handshakes
        Seq::new("handshake, Ostinato numbers")
            .handshake()
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
        Seq::new("handshake with real ISNs, data both ways")
            .c(SYN, C0, 0)
            .s(SYN | ACK, S0, C0 + 1)
            .c(ACK, C0 + 1, S0 + 1)
            .tcp(Side::Client, PSH | ACK, C0 + 1, S0 + 1, 100)
            .s(ACK, S0 + 1, C0 + 101)
            .tcp(Side::Server, PSH | ACK, S0 + 1, C0 + 101, 200)
            .c(ACK, C0 + 101, S0 + 201)
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
        Seq::new("SYN-ACK acks beyond SYN+1, then a correct one")
            .c(SYN, 100, 0)
            .s(SYN | ACK, 200, 102)
            .s(SYN | ACK, 200, 101)
            .c(ACK, 101, 201),
        Seq::new("final ACK acks beyond SYN-ACK+1, then a correct one")
            .c(SYN, 100, 0)
            .s(SYN | ACK, 200, 101)
            .c(ACK, 101, 202)
            .c(ACK, 101, 201),
        Seq::new("final ACK lags the SYN-ACK by 1000 (within 66000)")
            .c(SYN, 100_000, 0)
            .s(SYN | ACK, 500_000, 100_001)
            .c(ACK, 100_001, 500_001 - 1000)
            .c(ACK, 100_001, 500_001),
        Seq::new("final ACK lags the SYN-ACK by 70000 (beyond 66000)")
            .c(SYN, 100_000, 0)
            .s(SYN | ACK, 500_000, 100_001)
            .c(ACK, 100_001, 500_001 - 70_000)
            .c(ACK, 100_001, 500_001),
        Seq::new("client ISN 0xFFFFFFFF wraps around")
            .c(SYN, 0xFFFF_FFFF, 0)
            .s(SYN | ACK, S0, 0)
            .c(ACK, 0, S0 + 1)
            .tcp(Side::Client, PSH | ACK, 0, S0 + 1, 10)
            .s(ACK, S0 + 1, 10)
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
        Seq::new("server ISN 0xFFFFFFFE, data across the wrap")
            .c(SYN, C0, 0)
            .s(SYN | ACK, 0xFFFF_FFFE, C0 + 1)
            .c(ACK, C0 + 1, 0xFFFF_FFFF)
            .tcp(Side::Server, PSH | ACK, 0xFFFF_FFFF, C0 + 1, 20)
            .c(ACK, C0 + 1, 19),
        // --- RST
        Seq::new("RST from the client in ESTABLISHED")
            .handshake()
            .c(RST, 101, 0)
            .s(ACK, 201, 101),
        Seq::new("RST|ACK from the server in ESTABLISHED")
            .handshake()
            .s(RST | ACK, 201, 101),
        Seq::new("RST|ACK answering a SYN")
            .c(SYN, 100, 0)
            .s(RST | ACK, 0, 101)
            .kernel_ends("-"),
        Seq::new("bare RST answering a SYN")
            .c(SYN, 100, 0)
            .s(RST, 0, 0),
        Seq::new("RST|ACK with ack 0 (broken stack) in ESTABLISHED")
            .handshake()
            .s(RST | ACK, 201, 0),
        Seq::new("client RST in SYN_SENT")
            .c(SYN, 100, 0)
            .c(RST, 101, 0),
        Seq::new("client RST in SYN_RECV")
            .c(SYN, 100, 0)
            .s(SYN | ACK, 200, 101)
            .c(RST, 101, 0),
        // --- close
        Seq::new("FIN teardown, client first")
            .handshake()
            .c(FIN | ACK, 101, 201)
            .s(ACK, 201, 102)
            .s(FIN | ACK, 201, 102)
            .c(ACK, 102, 202)
            .kernel_ends("tcp TIME_WAIT C>S ASSURED"),
        Seq::new("FIN teardown, server first")
            .handshake()
            .s(FIN | ACK, 201, 101)
            .c(ACK, 101, 202)
            .c(FIN | ACK, 101, 202)
            .s(ACK, 202, 102),
        Seq::new("FIN teardown, FIN piggybacks the ACK").close_to_time_wait(),
        Seq::new("simultaneous close")
            .handshake()
            .c(FIN | ACK, 101, 201)
            .s(FIN | ACK, 201, 101)
            .c(ACK, 102, 202)
            .s(ACK, 202, 102),
        Seq::new("retransmitted FIN")
            .handshake()
            .c(FIN | ACK, 101, 201)
            .c(FIN | ACK, 101, 201)
            .s(ACK, 201, 102)
            .s(FIN | ACK, 201, 102)
            .c(ACK, 102, 202),
        Seq::new("ACKs and FIN retransmission after TIME_WAIT")
            .close_to_time_wait()
            .c(ACK, 102, 202)
            .s(FIN | ACK, 201, 102)
            .c(ACK, 102, 202),
        // --- simultaneous open
        Seq::new("simultaneous open, client ACKs")
            .c(SYN, 100, 0)
            .s(SYN, 200, 0)
            .c(SYN | ACK, 100, 201)
            .s(SYN | ACK, 200, 101)
            .c(ACK, 101, 201),
        Seq::new("simultaneous open, server ACKs")
            .c(SYN, 100, 0)
            .s(SYN, 200, 0)
            .c(SYN | ACK, 100, 201)
            .s(ACK, 201, 101),
        Seq::new("simultaneous open, both SYN-ACK, server ACKs")
            .c(SYN, 100, 0)
            .s(SYN, 200, 0)
            .c(SYN | ACK, 100, 201)
            .s(SYN | ACK, 200, 101)
            .s(ACK, 201, 101),
        Seq::new("simultaneous open, client SYN retransmitted in SYN_RECV")
            .c(SYN, 100, 0)
            .s(SYN, 200, 0)
            .c(SYN | ACK, 100, 201)
            .c(SYN, 100, 0)
            .s(ACK, 201, 101),
        // --- reopen
        Seq::new("client SYN in TIME_WAIT reopens")
            .close_to_time_wait()
            .c(SYN, 5000, 0)
            .s(SYN | ACK, 9000, 5001)
            .c(ACK, 5001, 9001)
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
        Seq::new("server SYN in TIME_WAIT reopens")
            .close_to_time_wait()
            .s(SYN, 7000, 0)
            .c(SYN | ACK, 3000, 7001)
            .s(ACK, 7001, 3001)
            .kernel_ends("tcp ESTABLISHED S>C ASSURED"),
        Seq::new("client SYN after its RST reopens")
            .handshake()
            .c(RST, 101, 0)
            .c(SYN, 5000, 0)
            .s(SYN | ACK, 9000, 5001)
            .c(ACK, 5001, 9001),
        Seq::new("client SYN after the server's RST is ignored, SYN-ACK resyncs")
            .handshake()
            .s(RST | ACK, 201, 101)
            .c(SYN, 5000, 0)
            .s(SYN | ACK, 9000, 5001)
            .c(ACK, 5001, 9001),
        Seq::new("server SYN after its own RST")
            .handshake()
            .s(RST | ACK, 201, 101)
            .s(SYN, 7000, 0),
        Seq::new("server SYN after the client's RST")
            .handshake()
            .c(RST, 101, 0)
            .s(SYN, 7000, 0),
        Seq::new("challenge ACK to a SYN in LAST_ACK, RST, new SYN")
            .handshake()
            .c(FIN | ACK, 101, 201)
            .s(ACK, 201, 102)
            .s(FIN | ACK, 201, 102)
            .c(SYN, 9000, 0)
            .s(ACK, 202, 102)
            .c(RST, 102, 0)
            .c(SYN, 9000, 0),
        // --- retransmissions and ignored packets
        Seq::new("SYN retransmitted in SYN_SENT")
            .c(SYN, 100, 0)
            .c(SYN, 100, 0)
            .s(SYN | ACK, 200, 101)
            .c(ACK, 101, 201),
        Seq::new("SYN with a new ISN in SYN_SENT")
            .c(SYN, 100, 0)
            .c(SYN, 5000, 0)
            .s(SYN | ACK, 200, 5001)
            .c(ACK, 5001, 201),
        Seq::new("SYN with a lower ISN in SYN_SENT, SYN-ACK answers it")
            .c(SYN, 5000, 0)
            .c(SYN, 100, 0)
            .s(SYN | ACK, 200, 101)
            .c(ACK, 101, 201),
        Seq::new("SYN with an ISN 99900 lower in SYN_SENT, SYN-ACK answers it")
            .c(SYN, 100_000, 0)
            .c(SYN, 100, 0)
            .s(SYN | ACK, 200, 101)
            .c(ACK, 101, 201),
        Seq::new("SYN-ACK with a bad ack, then one with another ISN")
            .c(SYN, 100, 0)
            .s(SYN | ACK, 200, 102)
            .s(SYN | ACK, 7000, 101)
            .c(ACK, 101, 7001),
        Seq::new("SYN-ACK with a bad ack, then one with a lower ISN")
            .c(SYN, 100, 0)
            .s(SYN | ACK, 7000, 102)
            .s(SYN | ACK, 200, 101)
            .c(ACK, 101, 201),
        Seq::new("SYN-ACK retransmitted")
            .c(SYN, 100, 0)
            .s(SYN | ACK, 200, 101)
            .s(SYN | ACK, 200, 101)
            .c(ACK, 101, 201),
        Seq::new("SYN-ACK retransmitted with a new ISN")
            .c(SYN, 100, 0)
            .s(SYN | ACK, 200, 101)
            .s(SYN | ACK, 7000, 101)
            .c(ACK, 101, 7001)
            .c(ACK, 101, 201),
        Seq::new("SYN in ESTABLISHED is ignored")
            .handshake()
            .c(SYN, 5000, 0)
            .c(ACK, 101, 201)
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
        Seq::new("SYN in ESTABLISHED, its SYN-ACK resyncs")
            .handshake()
            .c(SYN, 5000, 0)
            .s(SYN | ACK, 9000, 5001)
            .c(ACK, 5001, 9001),
        // --- invalid flags
        Seq::new("invalid flags on a new connection")
            .c(SYN | FIN, 100, 0)
            .c(FIN, 100, 0)
            .c(0, 100, 0)
            .c(SYN | RST, 100, 0)
            .c(SYN, 100, 0),
        Seq::new("invalid flags in ESTABLISHED")
            .handshake()
            .c(SYN | FIN, 101, 201)
            .c(FIN, 101, 201)
            .c(0, 101, 201)
            .c(SYN | RST, 101, 201)
            .s(SYN | FIN | ACK, 201, 101)
            .c(ACK, 101, 201),
        Seq::new("valid flag extras: SYN|URG, ECN bits, FIN|ACK|URG")
            .c(SYN | URG, 100, 0)
            .s(SYN | ACK | ECE, 200, 101)
            .c(ACK | CWR, 101, 201)
            .c(PSH | ACK | URG, 101, 201)
            .c(FIN | ACK | URG, 101, 201),
        // --- unknown connections
        Seq::new("SYN-ACK for an unknown connection").s(SYN | ACK, 200, 101),
        Seq::new("FIN|ACK, RST, RST|ACK for an unknown connection")
            .c(FIN | ACK, 101, 201)
            .c(RST, 101, 0)
            .c(RST | ACK, 101, 201)
            .s(RST, 201, 0)
            .kernel_ends("-"),
        // --- mid-stream pickup (nf_conntrack_tcp_loose=1)
        Seq::new("mid-stream pickup: ACK, reply ACK, ACK")
            .c(ACK, 1000, 2000)
            .s(ACK, 2000, 1000)
            .c(ACK, 1000, 2000)
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
        Seq::new("mid-stream pickup, RST before any reply")
            .c(ACK, 1000, 2000)
            .s(RST, 2000, 0),
        Seq::new("mid-stream pickup by server data, then close")
            .tcp(Side::Server, PSH | ACK, 2000, 1000, 100)
            .c(ACK, 1000, 2100)
            .s(ACK, 2100, 1000)
            .c(FIN | ACK, 1000, 2100)
            .s(FIN | ACK, 2100, 1001)
            .c(ACK, 1001, 2101),
    ]
}

/// UDP, and ICMP echo: ICMP's (8 and 0) over IPv4, ICMPv6's (128 and
/// 129) over IPv6.
fn udp_icmp_sequences(fam: Family) -> Vec<Seq> {
    use Side::{Client, Server};
    let (req, reply, icmp) = (fam.echo_request(), fam.echo_reply(), fam.icmp_name());
    vec![
        Seq::on(fam, "UDP request/reply within 2 s")
            .udp(Client)
            .udp(Server)
            .udp(Client)
            .udp(Server)
            .within(2.0)
            .kernel_ends("udp C>S"),
        Seq::on(fam, "UDP one way only")
            .udp(Client)
            .udp(Client)
            .udp(Client),
        Seq::on(fam, "UDP opened by the server")
            .udp(Server)
            .udp(Client),
        Seq::on(fam, "ICMP echo request/reply")
            .echo(Client, req, 7, 1)
            .echo(Server, reply, 7, 1)
            .echo(Client, req, 7, 2)
            .echo(Server, reply, 7, 2)
            .kernel_ends(format!("{icmp} C>S id=7")),
        Seq::on(fam, "ICMP echo request unanswered")
            .echo(Client, req, 3, 1)
            .echo(Client, req, 3, 2),
        Seq::on(fam, "ICMP echo reply with no request")
            .echo(Server, reply, 9, 1)
            .echo(Client, reply, 9, 1)
            .kernel_ends("-"),
        Seq::on(fam, "ICMP echo reply with the wrong id")
            .echo(Client, req, 11, 1)
            .echo(Server, reply, 12, 1),
    ]
}

/// Wrong checksums on every protocol, with the kernel's defaults
/// (nf_conntrack_checksum=1) and with nf_conntrack_checksum=0 against
/// `--no-checksum`; and over IPv4, wrong IPv4 header checksums, which the
/// kernel's IP layer drops before conntrack whatever that setting (IPv6
/// has no header checksum).
fn checksum_sequences(fam: Family) -> Vec<Seq> {
    use Side::{Client, Router, Server};
    let (req, reply, icmp) = (fam.echo_request(), fam.echo_reply(), fam.icmp_name());
    let e = fam.errors();
    let mut seqs = vec![
        // --- TCP
        Seq::on(
            fam,
            "TCP handshake, each packet first with a wrong checksum",
        )
        .c(SYN, 100, 0)
        .bad()
        .c(SYN, 100, 0)
        .s(SYN | ACK, 200, 101)
        .bad()
        .s(SYN | ACK, 200, 101)
        .c(ACK, 101, 201)
        .bad()
        .c(ACK, 101, 201)
        .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
        Seq::on(
            fam,
            "TCP data, FIN and RST with wrong checksums in ESTABLISHED",
        )
        .handshake()
        .tcp(Client, PSH | ACK, 101, 201, 100)
        .bad()
        .tcp(Client, PSH | ACK, 101, 201, 100)
        .c(FIN | ACK, 201, 201)
        .bad()
        .s(RST, 201, 0)
        .bad()
        .c(RST, 201, 0)
        .bad()
        .s(ACK, 201, 201)
        .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
        Seq::on(fam, "TCP RST with a wrong checksum, then a right one")
            .handshake()
            .s(RST | ACK, 201, 101)
            .bad()
            .s(RST | ACK, 201, 101)
            .kernel_ends("tcp CLOSE C>S ASSURED"),
        Seq::on(fam, "TCP with wrong checksums throughout")
            .c(SYN, 100, 0)
            .bad()
            .s(SYN | ACK, 200, 101)
            .bad()
            .c(ACK, 101, 201)
            .bad()
            .c(FIN | ACK, 101, 201)
            .bad()
            .s(RST, 201, 0)
            .bad()
            .no_checksum()
            .kernel_ends("tcp CLOSE C>S ASSURED"),
        // --- UDP
        Seq::on(fam, "UDP with wrong checksums, and without any")
            .udp(Client)
            .bad()
            .udp(Client)
            .udp(Server)
            .bad()
            .udp(Server)
            .fault(Fault::NoUdpChecksum)
            .kernel_ends("udp C>S"),
        Seq::on(fam, "UDP opened without a checksum")
            .udp(Client)
            .fault(Fault::NoUdpChecksum)
            .udp(Server),
        Seq::on(fam, "UDP with 4 bytes past its length in the IP payload")
            .udp(Client)
            .fault(Fault::UdpTrailer { summed: false })
            .udp(Client)
            .fault(Fault::UdpTrailer { summed: true })
            .kernel_ends("udp C>S UNREPLIED"),
        Seq::on(fam, "UDP with wrong checksums throughout")
            .udp(Client)
            .bad()
            .udp(Server)
            .bad()
            .no_checksum()
            .kernel_ends("udp C>S"),
        // --- ICMP
        Seq::on(fam, "ICMP echo with wrong checksums")
            .echo(Client, req, 7, 1)
            .bad()
            .echo(Client, req, 7, 1)
            .echo(Server, reply, 7, 1)
            .bad()
            .echo(Server, reply, 7, 1)
            .kernel_ends(format!("{icmp} C>S id=7")),
        Seq::on(fam, "ICMP errors with wrong checksums, then right ones")
            .udp(Client)
            .err(Server, Client, e.port_unreach, q_udp(Client), WHOLE)
            .bad()
            .err(Server, Client, e.port_unreach, q_udp(Client), WHOLE)
            .handshake()
            .err(Router, Client, e.too_big, q_tcp(Client, SYN, 100, 0), WHOLE)
            .bad()
            .echo(Client, req, 7, 1)
            .err(
                Router,
                Client,
                e.time_exceeded,
                q_icmp(Client, req, 0, 7),
                WHOLE,
            )
            .bad()
            .err(
                Router,
                Client,
                e.time_exceeded,
                q_icmp(Client, req, 0, 7),
                WHOLE,
            ),
        Seq::on(fam, "ICMP errors with wrong checksums, checks off")
            .udp(Client)
            .err(Server, Client, e.port_unreach, q_udp(Client), WHOLE)
            .bad()
            .err(Router, Client, e.host_unreach, q_udp(Server), WHOLE)
            .bad()
            .no_checksum(),
        Seq::on(fam, "ICMP echo with wrong checksums throughout")
            .echo(Client, req, 9, 1)
            .bad()
            .echo(Server, reply, 9, 1)
            .bad()
            .no_checksum()
            .kernel_ends(format!("{icmp} C>S id=9")),
    ];
    match fam {
        Family::V4 => seqs.extend([
            // --- the IPv4 header
            Seq::new("wrong IPv4 header checksums")
                .c(SYN, 100, 0)
                .bad_ip()
                .udp(Client)
                .bad_ip()
                .echo(Client, 8, 3, 1)
                .bad_ip()
                .c(SYN, 100, 0)
                .s(SYN | ACK, 200, 101)
                .bad_ip()
                .kernel_ends("tcp SYN_SENT C>S UNREPLIED"),
            Seq::new("wrong IPv4 header checksums, L4 checks off")
                .c(SYN, 100, 0)
                .bad_ip()
                .udp(Client)
                .bad_ip()
                .no_checksum()
                .kernel_ends("-"),
        ]),
        Family::V6 => seqs.extend(checksum6_sequences()),
    }
    seqs
}

/// A packet for an error to quote.
fn quoted(from: Side, body: Body) -> Pkt {
    Pkt {
        from,
        body,
        fault: Fault::None,
        not_before: None,
        exts: Vec::new(),
    }
}

fn q_tcp(from: Side, flags: u8, seq: u32, ack: u32) -> Pkt {
    quoted(
        from,
        Body::Tcp {
            flags,
            seq,
            ack,
            len: 0,
            win: TCP_WINDOW,
            opts: Vec::new(),
        },
    )
}

fn q_udp(from: Side) -> Pkt {
    quoted(from, Body::Udp)
}

fn q_icmp(from: Side, icmp_type: u8, code: u8, id: u16) -> Pkt {
    quoted(
        from,
        Body::Icmp {
            icmp_type,
            code,
            id,
            seq: 1,
        },
    )
}

/// An error, quoted in turn.
fn q_err(from: Side, to: Side, kind: ErrKind, quote: Pkt) -> Pkt {
    quoted(
        from,
        Body::Error(Box::new(IcmpError {
            to,
            kind,
            quote,
            how: WHOLE,
        })),
    )
}

/// The flows ICMP errors are about.
#[derive(Debug, Clone, Copy)]
enum Flow {
    Tcp,
    Udp,
    Echo,
}

impl Flow {
    fn name(self) -> &'static str {
        match self {
            Flow::Tcp => "TCP",
            Flow::Udp => "UDP",
            Flow::Echo => "echo",
        }
    }
    /// Opens it, both ways, over the sequence's family.
    fn open(self, seq: Seq) -> Seq {
        let fam = seq.family;
        match self {
            Flow::Tcp => seq.handshake(),
            Flow::Udp => seq.udp(Side::Client).udp(Side::Server),
            Flow::Echo => seq.echo(Side::Client, fam.echo_request(), 7, 1).echo(
                Side::Server,
                fam.echo_reply(),
                7,
                1,
            ),
        }
    }
    /// One of its packets, from `from`, for an error to quote.
    fn pkt(self, from: Side, fam: Family) -> Pkt {
        match (self, from) {
            (Flow::Tcp, Side::Client) => q_tcp(from, PSH | ACK, 101, 201),
            (Flow::Tcp, _) => q_tcp(from, PSH | ACK, 201, 101),
            (Flow::Udp, _) => q_udp(from),
            (Flow::Echo, Side::Client) => q_icmp(from, fam.echo_request(), 0, 7),
            (Flow::Echo, _) => q_icmp(from, fam.echo_reply(), 0, 7),
        }
    }
}

/// ICMP errors: RELATED to a tracked connection when they quote one of its
/// packets and go back to that packet's source, INVALID otherwise.  Over
/// IPv6 the same with ICMPv6's errors, whose quotes hold the whole packet
/// behind a 40-byte header; what only IPv4 has (IP options, the fragment
/// field, source quench, redirect, timestamps) stays IPv4's, and IPv6's
/// own (extension headers, fragment headers in the quote, node
/// information) is in `icmpv6_error_sequences()`.
fn icmp_error_sequences(fam: Family) -> Vec<Seq> {
    use Side::{Client, Router, Server};
    let e = fam.errors();
    let (req, icmp) = (fam.echo_request(), fam.icmp_name());
    // The quoted IP header's length: where a quote's transport starts.
    let h = match fam {
        Family::V4 => 20,
        Family::V6 => 40,
    };
    let mut seqs = Vec::new();
    // Every kind about every flow: to the source of the packet it quotes,
    // either way (RELATED), and to its destination (INVALID).  A port is
    // unreachable at the quoted packet's destination; the other errors
    // come from a router on the path.
    for &kind in e.all {
        for flow in [Flow::Tcp, Flow::Udp, Flow::Echo] {
            let from = |about: Side| match (kind.sent_by_destination(), about) {
                (true, Client) => Server,
                (true, _) => Client,
                _ => Router,
            };
            let name = format!(
                "{} about {}: to either end, then to the wrong end",
                kind.0,
                flow.name()
            );
            let pkt = |from: Side| flow.pkt(from, fam);
            let seq = flow
                .open(Seq::on(fam, name))
                .err(from(Client), Client, kind, pkt(Client), WHOLE)
                .err(from(Server), Server, kind, pkt(Server), WHOLE)
                .err(Router, Server, kind, pkt(Client), WHOLE)
                .err(Router, Client, kind, pkt(Server), WHOLE);
            // One more packet shows the entry as it was; not for UDP, whose
            // next packet may be the one that makes it a stream (2 s).
            seqs.push(match flow {
                Flow::Tcp => seq
                    .c(ACK, 101, 201)
                    .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
                Flow::Udp => seq.kernel_ends("udp C>S"),
                Flow::Echo => seq
                    .echo(Client, req, 7, 2)
                    .kernel_ends(format!("{icmp} C>S id=7")),
            });
        }
    }
    let syn = || q_tcp(Client, SYN, 100, 0);
    // A query of another type than echo, with echo's id.
    let other_query = match fam {
        Family::V4 => 13,  // timestamp
        Family::V6 => 139, // node information
    };
    seqs.extend([
        Seq::on(fam, "host unreachable answering a SYN leaves it UNREPLIED")
            .c(SYN, 100, 0)
            .err(Router, Client, e.host_unreach, syn(), WHOLE)
            .s(SYN | ACK, 200, 101)
            .c(ACK, 101, 201)
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
        Seq::on(
            fam,
            "port unreachable answering a UDP datagram leaves it UNREPLIED",
        )
        .udp(Client)
        .err(Server, Client, e.port_unreach, q_udp(Client), WHOLE)
        .kernel_ends("udp C>S UNREPLIED"),
        Seq::on(fam, "errors about flows nobody tracks")
            .err(Router, Client, e.host_unreach, syn(), WHOLE)
            .err(Server, Client, e.port_unreach, q_udp(Client), WHOLE)
            .err(
                Router,
                Client,
                e.time_exceeded,
                q_icmp(Client, req, 0, 7),
                WHOLE,
            )
            .kernel_ends("-"),
        Seq::on(
            fam,
            "errors about another protocol, id or code than the flow's",
        )
        .handshake()
        .echo(Client, req, 7, 1)
        .err(Router, Client, e.host_unreach, q_udp(Client), WHOLE)
        .err(
            Router,
            Client,
            e.host_unreach,
            q_icmp(Client, req, 0, 8),
            WHOLE,
        )
        .err(
            Router,
            Client,
            e.host_unreach,
            q_icmp(Client, req, 1, 7),
            WHOLE,
        )
        .err(
            Router,
            Client,
            e.host_unreach,
            q_icmp(Client, other_query, 0, 7),
            WHOLE,
        )
        .err(
            Router,
            Client,
            e.host_unreach,
            q_icmp(Client, req, 0, 7),
            WHOLE,
        ),
        Seq::on(fam, "quotes of UDP cut short: the ports are all it needs")
            .udp(Client)
            .udp(Server)
            .err(Router, Client, e.time_exceeded, q_udp(Client), cut(h - 1))
            .err(Router, Client, e.time_exceeded, q_udp(Client), cut(h))
            .err(Router, Client, e.time_exceeded, q_udp(Client), cut(h + 2))
            .err(Router, Client, e.time_exceeded, q_udp(Client), cut(h + 3))
            .err(Router, Client, e.time_exceeded, q_udp(Client), cut(h + 4))
            .err(Router, Server, e.time_exceeded, q_udp(Server), cut(h + 4)),
        Seq::on(fam, "quotes of TCP cut short: the ports are all it needs")
            .handshake()
            .err(Router, Client, e.too_big, syn(), cut(h))
            .err(Router, Client, e.too_big, syn(), cut(h + 3))
            .err(Router, Client, e.too_big, syn(), cut(h + 4))
            .err(Router, Client, e.too_big, syn(), cut(h + 6)),
        Seq::on(
            fam,
            "quotes of an echo cut short: it needs the whole ICMP header",
        )
        .echo(Client, req, 7, 1)
        .err(
            Router,
            Client,
            e.host_unreach,
            q_icmp(Client, req, 0, 7),
            cut(h + 4),
        )
        .err(
            Router,
            Client,
            e.host_unreach,
            q_icmp(Client, req, 0, 7),
            cut(h + 6),
        )
        .err(
            Router,
            Client,
            e.host_unreach,
            q_icmp(Client, req, 0, 7),
            cut(h + 7),
        )
        .err(
            Router,
            Client,
            e.host_unreach,
            q_icmp(Client, req, 0, 7),
            cut(h + 8),
        ),
        Seq::on(fam, "an error quoting an ICMP error")
            .udp(Client)
            .err(Server, Client, e.port_unreach, q_udp(Client), WHOLE)
            .err(
                Router,
                Server,
                e.time_exceeded,
                q_err(Server, Client, e.port_unreach, q_udp(Client)),
                WHOLE,
            )
            .err(
                Router,
                Client,
                e.time_exceeded,
                q_err(Server, Client, e.port_unreach, q_udp(Client)),
                WHOLE,
            ),
    ]);
    if fam == Family::V6 {
        seqs.extend(icmpv6_error_sequences());
        return seqs;
    }
    // IPv4's own: IP options and the fragment field in the quoted header,
    // and the timestamp query.
    seqs.extend([
        Seq::new("quotes with IP options")
            .handshake()
            .udp(Client)
            .echo(Client, 8, 7, 1)
            .err(Router, Client, TIME_EXCEEDED, syn(), WITH_OPTIONS)
            .err(Router, Client, TIME_EXCEEDED, q_udp(Client), WITH_OPTIONS)
            .err(
                Router,
                Client,
                TIME_EXCEEDED,
                q_icmp(Client, 8, 0, 7),
                WITH_OPTIONS,
            )
            .err(
                Router,
                Client,
                TIME_EXCEEDED,
                q_udp(Client),
                Quote {
                    cut: Some(27),
                    ..WITH_OPTIONS
                },
            )
            .err(
                Router,
                Client,
                TIME_EXCEEDED,
                q_udp(Client),
                Quote {
                    cut: Some(28),
                    ..WITH_OPTIONS
                },
            ),
        Seq::new("quoted fragments: the first is related, later ones not")
            .udp(Client)
            .err(Router, Client, FRAG_NEEDED, q_udp(Client), frag(0x2000))
            .err(Router, Client, FRAG_NEEDED, q_udp(Client), frag(0x0000))
            .err(Router, Client, FRAG_NEEDED, q_udp(Client), frag(0x0001))
            .err(Router, Client, FRAG_NEEDED, q_udp(Client), frag(0x2001))
            .err(Router, Client, FRAG_NEEDED, q_udp(Client), frag(0x5fff)),
        Seq::new("errors about a timestamp exchange")
            .icmp(Client, 13, 0, 9, 1)
            .err(
                Router,
                Client,
                HOST_UNREACH,
                q_icmp(Client, 13, 0, 9),
                WHOLE,
            )
            .err(
                Router,
                Server,
                HOST_UNREACH,
                q_icmp(Client, 13, 0, 9),
                WHOLE,
            )
            .icmp(Server, 14, 0, 9, 1)
            .err(
                Router,
                Server,
                HOST_UNREACH,
                q_icmp(Server, 14, 0, 9),
                WHOLE,
            )
            .kernel_ends("icmp C>S type=13 code=0 id=9"),
    ]);
    seqs
}

/// ICMP that is neither echo nor an error: the kernel tracks the other
/// queries as it tracks echo, and calls everything else INVALID.
fn icmp_type_sequences() -> Vec<Seq> {
    use Side::{Client, Server};
    let mut seqs: Vec<Seq> = [
        (13, "timestamp", "icmp C>S type=13 code=0 id=9"),
        (15, "information", "icmp C>S type=15 code=0 id=9"),
        (17, "address mask", "icmp C>S type=17 code=0 id=9"),
    ]
    .into_iter()
    .map(|(t, name, ends)| {
        Seq::new(format!("{name} request and reply"))
            .icmp(Client, t, 0, 9, 1)
            .icmp(Client, t, 0, 9, 2)
            .icmp(Server, t + 1, 0, 9, 1)
            .icmp(Client, t + 1, 0, 9, 1)
            .kernel_ends(ends)
    })
    .collect();
    seqs.extend([
        Seq::new("answers nobody asked for")
            .icmp(Server, 14, 0, 9, 1)
            .icmp(Server, 16, 0, 9, 1)
            .icmp(Server, 18, 0, 9, 1)
            .kernel_ends("-"),
        Seq::new("types the kernel neither tracks nor relates")
            .icmp(Client, 1, 0, 9, 1)
            .icmp(Client, 2, 0, 9, 1)
            .icmp(Client, 6, 0, 9, 1)
            .icmp(Client, 7, 0, 9, 1)
            .icmp(Client, 9, 0, 9, 1)
            .icmp(Server, 10, 0, 9, 1)
            .kernel_ends("-"),
        Seq::new("types beyond 18")
            .icmp(Client, 19, 0, 9, 1)
            .icmp(Client, 30, 0, 9, 1)
            .icmp(Client, 40, 0, 9, 1)
            .icmp(Client, 255, 0, 9, 1)
            .kernel_ends("-"),
        Seq::new("echo and timestamp with one id are two connections")
            .echo(Client, 8, 5, 1)
            .icmp(Client, 13, 0, 5, 1)
            .icmp(Server, 14, 0, 5, 1)
            .kernel_ends("icmp C>S id=5 UNREPLIED + icmp C>S type=13 code=0 id=5"),
        Seq::new("echo with code 3: only a reply with code 3 answers it")
            .icmp(Client, 8, 3, 6, 1)
            .icmp(Server, 0, 0, 6, 1)
            .icmp(Server, 0, 3, 6, 1)
            .kernel_ends("icmp C>S type=8 code=3 id=6"),
        Seq::new("echo id 0 both ways: two exchanges")
            .echo(Client, 8, 0, 1)
            .echo(Server, 8, 0, 1)
            .echo(Server, 0, 0, 1)
            .kernel_ends("icmp C>S id=0 + icmp S>C id=0 UNREPLIED"),
    ]);
    seqs
}

/// The extension headers the IPv6 sequences carry.
fn hop() -> Ipv6Ext {
    Ipv6Ext::HopByHop(8)
}
fn dest() -> Ipv6Ext {
    Ipv6Ext::DestOpts(16)
}
/// A routing header of type 0 with no segments left: the packet is at its
/// final destination, so the kernel steps over it whatever its type
/// (ipv6_rthdr_rcv() refuses type 0 only with segments left).
fn rt0() -> Ipv6Ext {
    Ipv6Ext::Routing {
        routing_type: 0,
        segments_left: 0,
        addrs: vec![Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, 1)],
    }
}
/// A fragment header with offset 0 and no more fragments: an atomic
/// fragment (RFC 6946), the whole datagram.
fn atomic() -> Ipv6Ext {
    frag6(0, false)
}
fn frag6(offset: u16, more: bool) -> Ipv6Ext {
    Ipv6Ext::Fragment {
        offset,
        more,
        id: 0x5eed,
    }
}
/// Every kind at once, in RFC 8200's order.
fn all_exts() -> Vec<Ipv6Ext> {
    vec![hop(), dest(), rt0(), atomic(), Ipv6Ext::DestOpts(8)]
}

/// `pkt` carrying `exts`.
fn with_exts(pkt: Pkt, exts: &[Ipv6Ext]) -> Pkt {
    Pkt {
        exts: exts.to_vec(),
        ..pkt
    }
}

/// IPv6's own checksum cases: neighbour discovery and MLD, which the
/// kernel leaves untracked only once their sum is right
/// (nf_conntrack_icmpv6_error() checks it first), and sums behind
/// extension headers.
fn checksum6_sequences() -> Vec<Seq> {
    use Side::{Client, Server};
    let v6 = Family::V6;
    vec![
        Seq::on(v6, "neighbour discovery and MLD with wrong checksums")
            .icmp(Client, 135, 0, 0, 0)
            .bad()
            .icmp(Client, 135, 0, 0, 0)
            .icmp(Server, 136, 0, 0, 0)
            .bad()
            .icmp(Client, 133, 0, 0, 0)
            .bad()
            .icmp(Server, 134, 0, 0, 0)
            .bad()
            .icmp(Server, 130, 0, 0, 0)
            .bad()
            .icmp(Client, 143, 0, 0, 0)
            .bad()
            .kernel_ends("-"),
        Seq::on(v6, "neighbour discovery with wrong checksums, checks off")
            .icmp(Client, 135, 0, 0, 0)
            .bad()
            .icmp(Server, 136, 0, 0, 0)
            .bad()
            .no_checksum()
            .kernel_ends("-"),
        Seq::on(
            v6,
            "TCP and UDP behind extension headers, each first with a wrong checksum",
        )
        .c(SYN, 100, 0)
        .exts(&all_exts())
        .bad()
        .c(SYN, 100, 0)
        .exts(&all_exts())
        .s(SYN | ACK, 200, 101)
        .exts(&[hop()])
        .bad()
        .s(SYN | ACK, 200, 101)
        .exts(&[hop()])
        .c(ACK, 101, 201)
        .exts(&[dest()])
        .bad()
        .c(ACK, 101, 201)
        .exts(&[dest()])
        .udp(Client)
        .exts(&[rt0()])
        .bad()
        .udp(Client)
        .exts(&[rt0()])
        .kernel_ends("tcp ESTABLISHED C>S ASSURED + udp C>S UNREPLIED"),
        Seq::on(
            v6,
            "ICMPv6 echo and errors behind extension headers with wrong checksums",
        )
        .echo(Client, 128, 7, 1)
        .exts(&[hop(), atomic()])
        .bad()
        .echo(Client, 128, 7, 1)
        .exts(&[hop(), atomic()])
        .err(
            Side::Router,
            Client,
            TIME_EXCEEDED6,
            q_icmp(Client, 128, 0, 7),
            WHOLE,
        )
        .exts(&[dest()])
        .bad()
        .err(
            Side::Router,
            Client,
            TIME_EXCEEDED6,
            q_icmp(Client, 128, 0, 7),
            WHOLE,
        )
        .exts(&[dest()])
        .kernel_ends("icmpv6 C>S id=7 UNREPLIED"),
        Seq::on(v6, "UDP without a checksum behind extension headers")
            .udp(Client)
            .exts(&[hop(), dest()])
            .fault(Fault::NoUdpChecksum)
            .udp(Server)
            .exts(&[hop(), dest()])
            .fault(Fault::NoUdpChecksum),
    ]
}

/// ICMPv6's own error cases: errors about flows nobody tracks to either
/// end; quotes with extension headers, walked as ipv6_skip_exthdr()
/// walks them (a quoted fragment header: the first fragment quotes its
/// connection, a later one none); a long quote cut to fit 1280 bytes;
/// errors about neighbour discovery and about a node information
/// exchange.
fn icmpv6_error_sequences() -> Vec<Seq> {
    use Side::{Client, Router, Server};
    let v6 = Family::V6;
    let data = |from: Side, len: usize| {
        let (seq, ack) = if from == Client {
            (101, 201)
        } else {
            (201, 101)
        };
        quoted(
            from,
            Body::Tcp {
                flags: PSH | ACK,
                seq,
                ack,
                len,
                win: TCP_WINDOW,
                opts: Vec::new(),
            },
        )
    };
    vec![
        Seq::on(
            v6,
            "packet too big and port unreachable about TCP and UDP nobody tracks",
        )
        .err(Router, Client, PKT_TOO_BIG6, data(Client, 0), WHOLE)
        .err(Router, Server, PKT_TOO_BIG6, data(Server, 0), WHOLE)
        .err(Router, Server, PKT_TOO_BIG6, data(Client, 0), WHOLE)
        .err(Server, Client, PORT_UNREACH6, q_udp(Client), WHOLE)
        .err(Client, Server, PORT_UNREACH6, q_udp(Server), WHOLE)
        .err(Client, Client, PORT_UNREACH6, q_udp(Client), WHOLE)
        .kernel_ends("-"),
        Seq::on(
            v6,
            "packet too big about a full-sized segment, quoted to 1280 bytes",
        )
        .handshake()
        .tcp(Client, PSH | ACK, 101, 201, 1400)
        .err(Router, Client, PKT_TOO_BIG6, data(Client, 1400), cut(1232))
        .err(Router, Server, PKT_TOO_BIG6, data(Client, 1400), cut(1232))
        .s(ACK, 201, 1501)
        .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
        Seq::on(
            v6,
            "port unreachable about UDP, to the right and the wrong end",
        )
        .udp(Client)
        .err(Server, Client, PORT_UNREACH6, q_udp(Client), WHOLE)
        .err(Server, Server, PORT_UNREACH6, q_udp(Client), WHOLE)
        .err(Client, Server, PORT_UNREACH6, q_udp(Server), WHOLE)
        .udp(Server)
        .err(Client, Server, PORT_UNREACH6, q_udp(Server), WHOLE)
        .kernel_ends("udp C>S"),
        Seq::on(v6, "quotes with extension headers")
            .handshake()
            .udp(Client)
            .err(
                Router,
                Client,
                TIME_EXCEEDED6,
                with_exts(data(Client, 0), &[hop(), dest()]),
                WHOLE,
            )
            .err(
                Router,
                Client,
                TIME_EXCEEDED6,
                with_exts(q_udp(Client), &[rt0()]),
                WHOLE,
            )
            .err(
                Router,
                Client,
                PKT_TOO_BIG6,
                with_exts(data(Client, 0), &all_exts()),
                WHOLE,
            )
            .err(
                Router,
                Server,
                TIME_EXCEEDED6,
                with_exts(data(Server, 0), &[dest()]),
                WHOLE,
            )
            .err(
                Router,
                Server,
                TIME_EXCEEDED6,
                with_exts(data(Client, 0), &[dest()]),
                WHOLE,
            ),
        // The quote holds the 40-byte header, 8 of hop-by-hop and 16 of
        // destination options, then UDP's ports.
        Seq::on(v6, "quotes with extension headers, cut short")
            .udp(Client)
            .err(
                Router,
                Client,
                TIME_EXCEEDED6,
                with_exts(q_udp(Client), &[hop(), dest()]),
                cut(44),
            )
            .err(
                Router,
                Client,
                TIME_EXCEEDED6,
                with_exts(q_udp(Client), &[hop(), dest()]),
                cut(63),
            )
            .err(
                Router,
                Client,
                TIME_EXCEEDED6,
                with_exts(q_udp(Client), &[hop(), dest()]),
                cut(64),
            )
            .err(
                Router,
                Client,
                TIME_EXCEEDED6,
                with_exts(q_udp(Client), &[hop(), dest()]),
                cut(67),
            )
            .err(
                Router,
                Client,
                TIME_EXCEEDED6,
                with_exts(q_udp(Client), &[hop(), dest()]),
                cut(68),
            ),
        Seq::on(
            v6,
            "quoted fragment headers: the first fragment is related, later ones not",
        )
        .udp(Client)
        .err(
            Router,
            Client,
            PKT_TOO_BIG6,
            with_exts(q_udp(Client), &[frag6(0, true)]),
            WHOLE,
        )
        .err(
            Router,
            Client,
            PKT_TOO_BIG6,
            with_exts(q_udp(Client), &[atomic()]),
            WHOLE,
        )
        .err(
            Router,
            Client,
            PKT_TOO_BIG6,
            with_exts(q_udp(Client), &[frag6(185, true)]),
            WHOLE,
        )
        .err(
            Router,
            Client,
            PKT_TOO_BIG6,
            with_exts(q_udp(Client), &[frag6(185, false)]),
            WHOLE,
        )
        .err(
            Router,
            Client,
            PKT_TOO_BIG6,
            with_exts(q_udp(Client), &[hop(), frag6(1, false)]),
            WHOLE,
        ),
        Seq::on(v6, "errors about neighbour discovery and MLD")
            .icmp(Client, 135, 0, 0, 0)
            .err(
                Router,
                Client,
                TIME_EXCEEDED6,
                q_icmp(Client, 135, 0, 0),
                WHOLE,
            )
            .err(
                Router,
                Client,
                PARAM_PROBLEM6,
                q_icmp(Client, 143, 0, 0),
                WHOLE,
            )
            .kernel_ends("-"),
        Seq::on(v6, "errors about a node information exchange")
            .icmp(Client, 139, 0, 9, 1)
            .err(
                Router,
                Client,
                ADDR_UNREACH6,
                q_icmp(Client, 139, 0, 9),
                WHOLE,
            )
            .err(
                Router,
                Server,
                ADDR_UNREACH6,
                q_icmp(Client, 139, 0, 9),
                WHOLE,
            )
            .icmp(Server, 140, 0, 9, 1)
            .err(
                Router,
                Server,
                ADDR_UNREACH6,
                q_icmp(Server, 140, 0, 9),
                WHOLE,
            )
            .kernel_ends("icmpv6 C>S type=139 code=0 id=9"),
    ]
}

/// ICMPv6 other than errors: echo both ways, the node information query
/// the kernel tracks as it tracks echo, neighbour discovery and MLD,
/// which it leaves untracked (noct_valid_new[]), and every other
/// informational type, whose tuple it cannot invert: INVALID.
fn icmpv6_sequences() -> Vec<Seq> {
    use Side::{Client, Server};
    let v6 = Family::V6;
    vec![
        Seq::on(v6, "echo from the server, answered")
            .echo(Server, 128, 5, 1)
            .echo(Client, 129, 5, 1)
            .echo(Server, 128, 5, 2)
            .kernel_ends("icmpv6 S>C id=5"),
        Seq::on(v6, "echo id 0 both ways: two exchanges")
            .echo(Client, 128, 0, 1)
            .echo(Server, 128, 0, 1)
            .echo(Server, 129, 0, 1)
            .echo(Client, 129, 0, 1)
            .kernel_ends("icmpv6 C>S id=0 + icmpv6 S>C id=0"),
        Seq::on(v6, "echo with code 3: only a reply with code 3 answers it")
            .icmp(Client, 128, 3, 6, 1)
            .icmp(Server, 129, 0, 6, 1)
            .icmp(Server, 129, 3, 6, 1)
            .kernel_ends("icmpv6 C>S type=128 code=3 id=6"),
        Seq::on(v6, "node information query and reply")
            .icmp(Client, 139, 0, 9, 1)
            .icmp(Client, 139, 0, 9, 2)
            .icmp(Server, 140, 0, 9, 1)
            .icmp(Client, 140, 0, 9, 1)
            .kernel_ends("icmpv6 C>S type=139 code=0 id=9"),
        Seq::on(
            v6,
            "echo and node information with one id are two connections",
        )
        .echo(Client, 128, 5, 1)
        .icmp(Client, 139, 0, 5, 1)
        .icmp(Server, 140, 0, 5, 1)
        .kernel_ends("icmpv6 C>S id=5 UNREPLIED + icmpv6 C>S type=139 code=0 id=5"),
        Seq::on(v6, "answers nobody asked for")
            .echo(Server, 129, 9, 1)
            .icmp(Server, 140, 0, 9, 1)
            .kernel_ends("-"),
        Seq::on(v6, "neighbour discovery and MLD pass untracked")
            .icmp(Client, 135, 0, 0, 0)
            .icmp(Server, 136, 0, 0, 0)
            .icmp(Client, 133, 0, 0, 0)
            .icmp(Server, 134, 0, 0, 0)
            .icmp(Server, 130, 0, 0, 0)
            .icmp(Client, 131, 0, 0, 0)
            .icmp(Client, 132, 0, 0, 0)
            .icmp(Client, 143, 0, 0, 0)
            .kernel_ends("-"),
        Seq::on(
            v6,
            "neighbour solicitation and advertisement amid a TCP flow",
        )
        .handshake()
        .icmp(Client, 135, 0, 0, 0)
        .icmp(Server, 136, 0, 0, 0)
        .c(ACK, 101, 201)
        .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
        Seq::on(v6, "redirect, router renumbering and inverse discovery")
            .icmp(Server, 137, 0, 0, 0)
            .icmp(Server, 138, 0, 0, 0)
            .icmp(Client, 141, 0, 0, 0)
            .icmp(Server, 142, 0, 0, 0)
            .kernel_ends("-"),
        Seq::on(
            v6,
            "mobility, certification path, multicast router termination and later types",
        )
        .icmp(Client, 144, 0, 9, 1)
        .icmp(Server, 145, 0, 9, 1)
        .icmp(Client, 146, 0, 9, 1)
        .icmp(Server, 147, 0, 9, 1)
        .icmp(Client, 148, 0, 9, 1)
        .icmp(Server, 149, 0, 9, 1)
        .icmp(Server, 153, 0, 0, 0)
        .icmp(Client, 200, 0, 9, 1)
        .icmp(Client, 255, 0, 9, 1)
        .kernel_ends("-"),
        // Multicast router discovery (RFC 4286): its advertisement and
        // solicitation joined noct_valid_new[] in Linux 6.10 (4a3540a8bf3c,
        // "fix ct-state for ICMPv6 Multicast Router Discovery"): untracked
        // since, INVALID before (6.1 still says so).
        Seq::on(v6, "multicast router advertisement and solicitation")
            .icmp(Server, 151, 0, 0, 0)
            .icmp(Client, 152, 0, 0, 0)
            .kernel_ends("-")
            .valid_since(6, 10),
        Seq::on(v6, "ICMPv6 shorter than its 8-byte header")
            .push(
                Client,
                Body::Raw {
                    proto: IPPROTO_ICMPV6,
                    payload: vec![128, 0, 0, 0],
                },
            )
            .kernel_ends("-"),
    ]
}

/// TCP, UDP and echo behind each IPv6 extension header the kernel steps
/// over, and behind all of them; no next header; a connection whose
/// packets carry headers or not.  (Fragments proper are left out: the
/// kernel reassembles them before conntrack, nf_defrag_ipv6 at priority
/// -400, so a lone fragment never reaches it, nor the `seen` counter;
/// our program forwards them untracked, so there is nothing to compare.)
fn ipv6_extension_sequences() -> Vec<Seq> {
    use Side::{Client, Server};
    let v6 = Family::V6;
    let mut seqs = Vec::new();
    for (name, exts) in [
        ("hop-by-hop options", vec![hop()]),
        ("destination options", vec![dest()]),
        ("a routing header of type 0, no segments left", vec![rt0()]),
        ("an atomic fragment header", vec![atomic()]),
        ("all of them", all_exts()),
    ] {
        let e = &exts[..];
        seqs.push(
            Seq::on(v6, format!("TCP handshake, data and close behind {name}"))
                .c(SYN, 100, 0)
                .exts(e)
                .s(SYN | ACK, 200, 101)
                .exts(e)
                .c(ACK, 101, 201)
                .exts(e)
                .tcp(Client, PSH | ACK, 101, 201, 100)
                .exts(e)
                .s(ACK, 201, 201)
                .exts(e)
                .c(FIN | ACK, 201, 201)
                .exts(e)
                .s(FIN | ACK, 201, 202)
                .exts(e)
                .c(ACK, 202, 202)
                .exts(e)
                .kernel_ends("tcp TIME_WAIT C>S ASSURED"),
        );
        seqs.push(
            Seq::on(v6, format!("UDP and echo both ways behind {name}"))
                .udp(Client)
                .exts(e)
                .udp(Server)
                .exts(e)
                .echo(Client, 128, 7, 1)
                .exts(e)
                .echo(Server, 129, 7, 1)
                .exts(e)
                .kernel_ends("icmpv6 C>S id=7 + udp C>S"),
        );
    }
    seqs.extend([
        Seq::on(
            v6,
            "one TCP connection, its packets with headers and without",
        )
        .c(SYN, 100, 0)
        .s(SYN | ACK, 200, 101)
        .exts(&[hop()])
        .c(ACK, 101, 201)
        .exts(&[dest(), atomic()])
        .tcp(Client, PSH | ACK, 101, 201, 100)
        .s(RST | ACK, 201, 201)
        .exts(&[rt0()])
        .kernel_ends("tcp CLOSE C>S ASSURED"),
        Seq::on(
            v6,
            "invalid TCP flags and a SYN-ACK out of the blue behind headers",
        )
        .c(SYN | FIN, 100, 0)
        .exts(&[hop()])
        .s(SYN | ACK, 200, 101)
        .exts(&[dest()])
        .c(SYN, 100, 0)
        .exts(&[atomic()])
        .kernel_ends("tcp SYN_SENT C>S UNREPLIED"),
        Seq::on(v6, "no next header, bare and behind hop-by-hop")
            .push(
                Client,
                Body::Raw {
                    proto: 59,
                    payload: Vec::new(),
                },
            )
            .push(
                Client,
                Body::Raw {
                    proto: 59,
                    payload: Vec::new(),
                },
            )
            .exts(&[hop()])
            .kernel_ends("-"),
    ]);
    seqs
}

fn udp_slow_sequences() -> Vec<Seq> {
    use Side::{Client, Server};
    vec![
        Seq::new("UDP request, reply, request after 2 s: ASSURED")
            .udp(Client)
            .udp(Server)
            .udp(Client)
            .at(2.5)
            .kernel_ends("udp C>S ASSURED"),
        Seq::new("UDP reply after 2 s, then a request")
            .udp(Client)
            .udp(Server)
            .at(2.5)
            .udp(Client),
        Seq::new("UDP unreplied for 2 s, then reply and request")
            .udp(Client)
            .udp(Client)
            .at(2.5)
            .udp(Server)
            .udp(Client),
    ]
}

/// A Linux SYN's options: MSS, SACK permitted, timestamps, window scale.
fn linux_syn_opts(wscale: u8) -> Vec<TcpOpt> {
    vec![
        TcpOpt::Mss(1460),
        TcpOpt::SackPerm,
        TcpOpt::Timestamp(1, 0),
        TcpOpt::Nop,
        TcpOpt::WindowScale(wscale),
    ]
}

/// The kernel's window tracking (tcp_in_window): the six packetdrill
/// scenarios of tools/testing/selftests/net/netfilter/packetdrill, data,
/// acks and RSTs in and out of the window, window scaling, SACK, sequence
/// wrap, keep-alives, zero windows and picked-up connections.
fn tcp_window_sequences() -> Vec<Seq> {
    use Side::{Client, Server};
    const C0: u32 = 0x5b2c_1d3e;
    const S0: u32 = 0xa1f0_e2d4;
    let mut v = Vec::new();

    // conntrack_ack_loss_stall.pkt: a segment retransmitted after it was
    // acked, and after the data went more than a window further, is below
    // the window's lower bound: the kernel lets it pass, not INVALID.
    let mut stall = Seq::new("packetdrill ack_loss_stall: an acked segment retransmitted")
        .c(SYN, C0, 0)
        .win(32792)
        .opts(&[TcpOpt::Mss(1000)])
        .s(SYN | ACK, S0, C0 + 1)
        .opts(&[TcpOpt::Mss(1460)])
        .c(ACK, C0 + 1, S0 + 1)
        .win(65535);
    for i in 0..46u32 {
        let seq = C0 + 1 + i * 1460;
        stall = stall
            .tcp(Client, PSH | ACK, seq, S0 + 1, 1460)
            .win(257)
            .s(ACK, S0 + 1, seq + 1460)
            .win(65535);
    }
    v.push(
        stall
            .tcp(Client, PSH | ACK, C0 + 1, S0 + 1, 1460)
            .win(257)
            .s(ACK, S0 + 1, C0 + 1 + 46 * 1460)
            .win(65535)
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
    );

    // conntrack_inexact_rst.pkt: a RST that is not exactly at the next
    // sequence still closes a connection that is already closing.
    v.push(
        Seq::new("packetdrill inexact_rst: a spurious RST after the close")
            .c(SYN, C0, 0)
            .win(65535)
            .opts(&linux_syn_opts(8))
            .s(SYN | ACK, S0, C0 + 1)
            .win(65535)
            .opts(&[TcpOpt::Mss(1460)])
            .c(ACK, C0 + 1, S0 + 1)
            .win(65535)
            .tcp(Server, ACK, S0 + 1, C0 + 1, 1000)
            .win(65535)
            .tcp(Server, ACK, S0 + 1001, C0 + 1, 1000)
            .win(65535)
            .tcp(Server, ACK, S0 + 2001, C0 + 1, 1000)
            .win(65535)
            .c(ACK, C0 + 1, S0 + 1001)
            .win(65535)
            .c(ACK, C0 + 1, S0 + 2001)
            .win(65535)
            .c(ACK, C0 + 1, S0 + 3001)
            .win(65535)
            .tcp(Client, PSH | ACK, C0 + 1, S0 + 3001, 1000)
            .win(65535)
            .s(FIN | ACK, S0 + 3001, C0 + 1001)
            .win(65535)
            .c(ACK, C0 + 1001, S0 + 3002)
            .win(65535)
            .c(RST | ACK, C0 + 1001, S0 + 3002)
            .win(65535)
            .s(RST, S0 + 2001, 0)
            .win(0)
            .kernel_ends("tcp CLOSE C>S ASSURED"),
    );

    // conntrack_rst_invalid.pkt: out-of-window RSTs are INVALID and the
    // connection stays ESTABLISHED; only the exact one closes it.
    v.push(
        Seq::new("packetdrill rst_invalid: blind and inexact RSTs, then the exact one")
            .c(SYN, C0, 0)
            .win(65535)
            .opts(&linux_syn_opts(8))
            .s(SYN | ACK, S0, C0 + 1)
            .win(65535)
            .opts(&[TcpOpt::Mss(1460)])
            .c(ACK, C0 + 1, S0 + 1)
            .win(65535)
            .tcp(Server, ACK, S0 + 1, C0 + 1, 1000)
            .win(65535)
            .tcp(Server, ACK, S0 + 1001, C0 + 1, 1000)
            .win(65535)
            .tcp(Server, ACK, S0 + 2001, C0 + 1, 1000)
            .win(65535)
            .c(ACK, C0 + 1, S0 + 1001)
            .win(65535)
            .c(ACK, C0 + 1, S0 + 2001)
            .win(65535)
            .c(ACK, C0 + 1, S0 + 3001)
            .win(65535)
            .s(RST, 0, 0)
            .win(0)
            .s(RST, S0.wrapping_add(1_000_000), 0)
            .win(0)
            .s(RST, S0 + 42, 0)
            .win(0)
            .tcp(Client, PSH | ACK, C0 + 1, S0 + 3001, 1000)
            .win(65535)
            .s(ACK, S0 + 3001, C0 + 1001)
            .win(65535)
            .s(RST | ACK, S0 + 3000, C0 + 1001)
            .win(0)
            .s(RST | ACK, S0 + 3001, C0 + 1001)
            .win(0)
            .kernel_ends("tcp CLOSE C>S ASSURED"),
    );

    // conntrack_synack_old.pkt: a SYN-ACK for an older incarnation is
    // INVALID; the right one after the SYN's retransmission establishes.
    v.push(
        Seq::new("packetdrill synack_old: an old incarnation's SYN-ACK, then the right one")
            .c(SYN, C0, 0)
            .win(65535)
            .opts(&linux_syn_opts(8))
            .s(SYN | ACK, 145_824_453, 643_160_523)
            .win(240)
            .opts(&[
                TcpOpt::Mss(1440),
                TcpOpt::Nop,
                TcpOpt::Nop,
                TcpOpt::Timestamp(1, 1),
                TcpOpt::Nop,
                TcpOpt::WindowScale(0),
            ])
            .c(SYN, C0, 0)
            .win(65535)
            .opts(&linux_syn_opts(8))
            .s(SYN | ACK, 145_758_918, C0 + 1)
            .win(250)
            .opts(&[
                TcpOpt::Mss(1460),
                TcpOpt::Nop,
                TcpOpt::Nop,
                TcpOpt::Timestamp(1, 1),
                TcpOpt::Nop,
                TcpOpt::WindowScale(0),
            ])
            .c(ACK, C0 + 1, 145_758_919)
            .win(256)
            .tcp(Client, PSH | ACK, C0 + 1, 145_758_919, 1)
            .win(256)
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
    );

    // conntrack_syn_challenge_ack.pkt: the peer answers a SYN with a
    // challenge ACK (an old incarnation's), the client resets and tries
    // again, and the new connection establishes.
    v.push(
        Seq::new("packetdrill syn_challenge_ack: challenge ACK, RST, SYN again")
            .c(SYN, C0, 0)
            .win(65535)
            .opts(&linux_syn_opts(8))
            .s(ACK, 145_824_453, 643_160_523)
            .win(240)
            .opts(&[
                TcpOpt::Mss(1460),
                TcpOpt::Nop,
                TcpOpt::Nop,
                TcpOpt::Timestamp(1, 1),
                TcpOpt::Nop,
                TcpOpt::WindowScale(0),
            ])
            .c(RST, 643_160_523, 0)
            .win(0)
            .c(SYN, C0, 0)
            .win(65535)
            .opts(&linux_syn_opts(8))
            .s(SYN | ACK, S0, C0 + 1)
            .win(250)
            .opts(&[
                TcpOpt::Mss(1460),
                TcpOpt::Nop,
                TcpOpt::Nop,
                TcpOpt::Timestamp(1, 1),
                TcpOpt::Nop,
                TcpOpt::WindowScale(0),
            ])
            .c(ACK, C0 + 1, S0 + 1)
            .win(256)
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
    );

    // conntrack_synack_reuse.pkt: a new SYN on an established connection
    // is ignored, the challenge ACK passes, the RST that follows closes the
    // entry, and the retransmitted SYN's SYN-ACK gives SYN_RECV.
    v.push(
        Seq::new("packetdrill synack_reuse: a SYN while ESTABLISHED, its RST, SYN again")
            .c(SYN, C0, 0)
            .win(32792)
            .opts(&[
                TcpOpt::Mss(1000),
                TcpOpt::Nop,
                TcpOpt::WindowScale(7),
                TcpOpt::Timestamp(1, 0),
                TcpOpt::Nop,
                TcpOpt::Nop,
            ])
            .s(SYN | ACK, S0, C0 + 1)
            .opts(&[
                TcpOpt::Mss(1460),
                TcpOpt::Nop,
                TcpOpt::Nop,
                TcpOpt::Timestamp(100, 1),
                TcpOpt::Nop,
                TcpOpt::WindowScale(8),
            ])
            .c(ACK, C0 + 1, S0 + 1)
            .win(257)
            .opts(&[TcpOpt::Timestamp(1, 100), TcpOpt::Nop, TcpOpt::Nop])
            .tcp(Client, PSH | ACK, C0 + 1, S0 + 1, 100)
            .win(257)
            .opts(&[TcpOpt::Timestamp(2, 100), TcpOpt::Nop, TcpOpt::Nop])
            .s(ACK, S0 + 1, C0 + 101)
            .win(256)
            .opts(&[TcpOpt::Nop, TcpOpt::Nop, TcpOpt::Timestamp(110, 2)])
            .c(SYN, 2000, 0)
            .win(32792)
            .opts(&[
                TcpOpt::Mss(1000),
                TcpOpt::Nop,
                TcpOpt::WindowScale(7),
                TcpOpt::Timestamp(233, 0),
                TcpOpt::Nop,
                TcpOpt::Nop,
            ])
            .s(ACK, S0 + 1, C0 + 101)
            .win(256)
            .opts(&[TcpOpt::Nop, TcpOpt::Nop, TcpOpt::Timestamp(112, 2)])
            .c(RST | ACK, C0 + 101, S0 + 1)
            .win(257)
            .c(SYN, 2000, 0)
            .win(32792)
            .opts(&[
                TcpOpt::Mss(1000),
                TcpOpt::Nop,
                TcpOpt::WindowScale(0),
                TcpOpt::Timestamp(233, 0),
                TcpOpt::Nop,
                TcpOpt::Nop,
            ])
            .s(SYN | ACK, S0 + 7000, 2001)
            .opts(&[TcpOpt::Mss(1460), TcpOpt::Nop, TcpOpt::WindowScale(8)])
            .kernel_ends("tcp SYN_RECV C>S"),
    );

    // Data and acks against the window, without window scaling: the
    // server opens a 1000-byte window.
    let small = |name| {
        Seq::new(name)
            .c(SYN, C0, 0)
            .s(SYN | ACK, S0, C0 + 1)
            .win(1000)
            .c(ACK, C0 + 1, S0 + 1)
    };
    v.push(
        small("data far beyond the receiver's window is INVALID")
            .tcp(Client, PSH | ACK, C0 + 1 + 100_000, S0 + 1, 10)
            .tcp(Client, PSH | ACK, C0 + 1, S0 + 1, 500)
            .s(ACK, S0 + 1, C0 + 501)
            .win(1000)
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
    );
    v.push(
        small("data right past the window edge, up to a window more, is ignored")
            .tcp(Client, PSH | ACK, C0 + 1, S0 + 1, 1000)
            .tcp(Client, PSH | ACK, C0 + 1001, S0 + 1, 500)
            .tcp(Client, PSH | ACK, C0 + 1501, S0 + 1, 900)
            .s(ACK, S0 + 1, C0 + 2401)
            .win(1000)
            .s(ACK, S0 + 1, C0 + 1001)
            .win(1000),
    );
    v.push(
        small("acks of data never sent, and acks far behind")
            .tcp(Client, PSH | ACK, C0 + 1, S0 + 1, 500)
            .s(ACK, S0 + 1, C0 + 10_000)
            .win(1000)
            .s(ACK, S0 + 1, C0 + 502)
            .win(1000)
            .s(ACK, S0 + 1, C0.wrapping_sub(100_000))
            .win(1000)
            .s(ACK, S0 + 1, C0 + 501)
            .win(1000)
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
    );
    v.push(
        small("server data past the client's window, and old data again")
            .tcp(Server, PSH | ACK, S0 + 1, C0 + 1, 1400)
            .c(ACK, C0 + 1, S0 + 1401)
            .tcp(Server, PSH | ACK, S0 + 1401, C0 + 1, 1400)
            .tcp(Server, PSH | ACK, S0 + 1 + 200_000, C0 + 1, 100)
            .tcp(Server, PSH | ACK, S0 + 1, C0 + 1, 1400)
            .c(ACK, C0 + 1, S0 + 2801),
    );
    v.push(
        small("a blind RST far from the window, a RST below what was acked")
            .tcp(Client, PSH | ACK, C0 + 1, S0 + 1, 500)
            .s(ACK, S0 + 1, C0 + 501)
            .win(1000)
            .c(RST, C0.wrapping_add(5_000_000), 0)
            .c(RST, C0 + 100, 0)
            .c(RST | ACK, C0 + 501, S0 + 1)
            .kernel_ends("tcp CLOSE C>S ASSURED"),
    );
    v.push(
        small("a RST above what was acked keeps ESTABLISHED, the exact one closes")
            .tcp(Client, PSH | ACK, C0 + 1, S0 + 1, 500)
            .s(ACK, S0 + 1, C0 + 501)
            .win(1000)
            .s(RST, S0 + 300, 0)
            .c(RST, C0 + 700, 0)
            .c(RST, C0 + 501, 0)
            .kernel_ends("tcp CLOSE C>S ASSURED"),
    );
    v.push(
        small("a RST right behind the sender's own data, in a train")
            .tcp(Client, PSH | ACK, C0 + 1, S0 + 1, 500)
            .c(RST, C0 + 501, 0)
            .kernel_ends("tcp CLOSE C>S ASSURED"),
    );
    v.push(
        small("FIN out of the window, then in it")
            .c(FIN | ACK, C0 + 50_000, S0 + 1)
            .c(FIN | ACK, C0 + 1, S0 + 1)
            .s(ACK, S0 + 1, C0 + 2)
            .win(1000),
    );

    // Window scaling: only when both SYNs carry the option.
    let scaled = |name, c_opt: bool, s_opt: bool| {
        let c_opts = if c_opt {
            vec![TcpOpt::Nop, TcpOpt::WindowScale(7)]
        } else {
            vec![]
        };
        let s_opts = if s_opt {
            vec![TcpOpt::Nop, TcpOpt::WindowScale(7)]
        } else {
            vec![]
        };
        Seq::new(name)
            .c(SYN, C0, 0)
            .win(512)
            .opts(&c_opts)
            .s(SYN | ACK, S0, C0 + 1)
            .win(512)
            .opts(&s_opts)
            .c(ACK, C0 + 1, S0 + 1)
            .win(512)
            .s(ACK, S0 + 1, C0 + 1)
            .win(512)
            // 512 << 7 is 64 KiB: data 30 KiB on is inside the scaled
            // window only.
            .tcp(Client, PSH | ACK, C0 + 1 + 30_000, S0 + 1, 100)
            .win(512)
            .tcp(Server, PSH | ACK, S0 + 1 + 30_000, C0 + 1, 100)
            .win(512)
    };
    v.push(scaled("window scale 7 both ways", true, true));
    v.push(scaled("window scale from the client only", true, false));
    v.push(scaled("window scale from the server only", false, true));
    v.push(scaled("no window scale", false, false));

    // SACK: blocks count for the ack bound only when both sent SACK
    // permitted.
    let sack = |name, perm: bool| {
        let p = if perm { vec![TcpOpt::SackPerm] } else { vec![] };
        Seq::new(name)
            .c(SYN, C0, 0)
            .opts(&p)
            .s(SYN | ACK, S0, C0 + 1)
            .opts(&p)
            .c(ACK, C0 + 1, S0 + 1)
            .tcp(Server, PSH | ACK, S0 + 1, C0 + 1, 1000)
            .tcp(Server, PSH | ACK, S0 + 2001, C0 + 1, 1000)
            // The client got the third segment and not the second.
            .c(ACK, C0 + 1, S0 + 1001)
            .opts(&[
                TcpOpt::Nop,
                TcpOpt::Nop,
                TcpOpt::Sack(vec![(S0 + 2001, S0 + 3001)]),
            ])
            // A block past anything the server sent.
            .c(ACK, C0 + 1, S0 + 1001)
            .opts(&[
                TcpOpt::Nop,
                TcpOpt::Nop,
                TcpOpt::Sack(vec![(S0 + 5001, S0 + 9001)]),
            ])
            .tcp(Server, PSH | ACK, S0 + 1001, C0 + 1, 1000)
            .c(ACK, C0 + 1, S0 + 3001)
    };
    v.push(sack("SACK blocks, permitted both ways", true));
    v.push(sack("SACK blocks, not permitted", false));

    v.push(
        Seq::new("data across the sequence wrap, both ways")
            .c(SYN, 0xFFFF_FF00, 0)
            .s(SYN | ACK, 0xFFFF_FFF0, 0xFFFF_FF01)
            .c(ACK, 0xFFFF_FF01, 0xFFFF_FFF1)
            .tcp(Client, PSH | ACK, 0xFFFF_FF01, 0xFFFF_FFF1, 1000)
            .tcp(
                Server,
                PSH | ACK,
                0xFFFF_FFF1,
                0xFFFF_FF01u32.wrapping_add(1000),
                1000,
            )
            .c(
                ACK,
                0xFFFF_FF01u32.wrapping_add(1000),
                0xFFFF_FFF1u32.wrapping_add(1000),
            )
            .kernel_ends("tcp ESTABLISHED C>S ASSURED"),
    );
    v.push(
        Seq::new("keep-alives and their answers")
            .handshake()
            .c(ACK, 100, 201)
            .tcp(Client, ACK, 100, 201, 1)
            .s(ACK, 201, 101)
            .s(ACK, 200, 101)
            .c(ACK, 101, 201),
    );
    v.push(
        Seq::new("a zero window, a probe, and the window opening")
            .handshake()
            .tcp(Client, PSH | ACK, 101, 201, 1000)
            .s(ACK, 201, 1101)
            .win(0)
            .tcp(Client, ACK, 1101, 201, 1)
            .s(ACK, 201, 1101)
            .win(0)
            .s(ACK, 201, 1101)
            .win(4000)
            .tcp(Client, PSH | ACK, 1101, 201, 1000),
    );
    v.push(
        Seq::new("data left unacknowledged, then acknowledged")
            .handshake()
            .tcp(Client, PSH | ACK, 101, 201, 1000)
            .tcp(Client, PSH | ACK, 1101, 201, 1000)
            .s(ACK, 201, 2101),
    );
    v.push(
        Seq::new("one ACK retransmitted three times and more")
            .handshake()
            .tcp(Client, PSH | ACK, 101, 201, 100)
            .s(ACK, 201, 201)
            .s(ACK, 201, 201)
            .s(ACK, 201, 201)
            .s(ACK, 201, 201)
            .s(ACK, 201, 201)
            .tcp(Client, PSH | ACK, 201, 201, 100),
    );
    v.push(
        Seq::new("picked up mid-stream: the windows are learnt, liberally")
            .tcp(Client, PSH | ACK, 10_000, 20_000, 100)
            .win(300)
            .tcp(Server, PSH | ACK, 20_000, 10_100, 100)
            .win(300)
            .tcp(Client, PSH | ACK, 10_100 + 500_000, 20_100, 100)
            .c(ACK, 10_100, 20_100 + 900_000)
            .c(RST, 10_100 + 5_000_000, 0)
            .c(RST, 10_000, 0)
            .c(ACK, 10_100, 20_100),
    );
    v.push(
        Seq::new("picked up by a keep-alive's answer")
            .c(ACK, 10_000, 20_000)
            .s(ACK, 20_000, 10_001)
            .c(ACK, 10_001, 20_000),
    );
    // A RST after a simultaneous open (found by the random sequences):
    // only a RST answering the other side's SYN skips the window check;
    // one from the side whose SYN came last goes through it, and its
    // window bounds what the peer may send next.
    v.push(
        Seq::new("simultaneous open, RST from the second SYN's side, peer's ACK in its window")
            .c(SYN, 100, 0)
            .s(SYN, 200, 0)
            .win(1)
            .s(RST, 201, 0)
            .c(ACK, 103, 200)
            .kernel_ends("tcp CLOSE C>S"),
    );
    v.push(
        Seq::new("simultaneous open, client's SYN again, server's RST skips the window")
            .c(SYN, 100, 0)
            .s(SYN, 200, 0)
            .win(1)
            .c(SYN, 100, 0)
            .s(RST, 201, 0)
            .c(ACK, 103, 200),
    );
    v.push(
        Seq::new("simultaneous open, client's RST answers the server's SYN")
            .c(SYN, 100, 0)
            .s(SYN, 200, 0)
            .win(1)
            .c(RST, 101, 0)
            .s(ACK, 202, 101)
            .s(ACK, 70_202, 101),
    );
    v
}

/// The window sequences again with nf_conntrack_tcp_be_liberal=1 on K and
/// `--liberal` on ours: data and acks out of the window pass, RSTs are
/// still checked.  What each sequence claims of the kernel's end state
/// holds for the default only, so the claims are dropped.
fn tcp_liberal_sequences() -> Vec<Seq> {
    tcp_window_sequences()
        .into_iter()
        .map(|s| {
            Seq {
                kernel_ends: None,
                ..s
            }
            .liberal()
        })
        .collect()
}

/// A small deterministic generator (xorshift64*): the random sequences are
/// the same on every run, so a difference they find can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// One of `choices`, each with its weight.
    fn pick<T: Copy>(&mut self, choices: &[(u32, T)]) -> T {
        let total: u32 = choices.iter().map(|c| c.0).sum();
        let mut r = self.below(total as usize) as u32;
        for &(w, v) in choices {
            if r < w {
                return v;
            }
            r -= w;
        }
        unreachable!("weights add up")
    }
}

/// TCP sequences drawn at random, beyond what anyone thought to write:
/// each side keeps the sequence number it would send next, and each
/// segment mostly follows it but may be off by one, by a window or
/// anywhere, ack what the peer sent or not, carry any flags the kernel
/// tells apart (invalid combinations too), data, a zero or a small window,
/// and window scaling on a SYN.  The seed makes them the same every run.
fn tcp_random_sequences(seed: u64, n: usize) -> Vec<Seq> {
    const FLAGS: &[(u32, u8)] = &[
        (30, ACK),
        (20, PSH | ACK),
        (8, SYN),
        (8, SYN | ACK),
        (9, FIN | ACK),
        (5, RST),
        (5, RST | ACK),
        (2, FIN),
        (1, 0),
        (1, SYN | FIN),
        (1, SYN | RST),
        (1, FIN | RST | ACK),
        (1, URG | ACK),
    ];
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let mut seq = Seq::new(format!("random TCP #{i} (seed {seed:#x})"));
            // The next sequence number each side would send (client,
            // server), and whether it has sent a SYN yet.
            let isn = [rng.next() as u32, rng.next() as u32];
            let mut nxt = isn;
            let mut synced = [false, false];
            let len = 3 + rng.below(10);
            for k in 0..len {
                let from = if k == 0 {
                    rng.pick(&[(9, 0usize), (1, 1)])
                } else {
                    rng.pick(&[(1, 0usize), (1, 1)])
                };
                let flags = if k == 0 {
                    rng.pick(&[(7, SYN), (2, ACK), (1, PSH | ACK)])
                } else {
                    rng.pick(FLAGS)
                };
                let data = if flags & (SYN | RST) == 0 {
                    rng.pick(&[(5, 0usize), (2, 1), (3, 100), (1, 1400)])
                } else {
                    0
                };
                let off: i64 = rng.pick(&[
                    (12, 0),
                    (1, -1),
                    (1, 1),
                    (1, -100),
                    (1, i64::from(TCP_WINDOW)),
                    (1, 4 * i64::from(TCP_WINDOW)),
                    (1, 1 << 30),
                ]);
                let start = if flags & SYN != 0 && !synced[from] {
                    isn[from]
                } else {
                    nxt[from]
                };
                let s = (i64::from(start) + off) as u32;
                let peer = 1 - from;
                let a = if flags & ACK != 0 {
                    let aoff: i64 =
                        rng.pick(&[(10, 0), (1, -1), (1, 1), (1, 70_000), (1, 1 << 31)]);
                    (i64::from(nxt[peer]) + aoff) as u32
                } else {
                    0
                };
                let side = if from == 0 {
                    Side::Client
                } else {
                    Side::Server
                };
                seq = seq.tcp(side, flags, s, a, data);
                if rng.below(8) == 0 {
                    seq = seq.win(rng.pick(&[(1, 0u16), (1, 1), (1, 512)]));
                }
                if flags & SYN != 0 && rng.below(3) == 0 {
                    seq = seq.opts(&linux_syn_opts(rng.pick(&[(1, 0u8), (1, 7), (1, 14)])));
                }
                // What an honest sender would send next, if this one went
                // out where it should.
                if off == 0 {
                    let syn = u32::from(flags & SYN != 0);
                    let fin = u32::from(flags & FIN != 0);
                    nxt[from] = s.wrapping_add(data as u32 + syn + fin);
                    synced[from] |= syn != 0;
                }
            }
            seq
        })
        .collect()
}

/// TCP drawn at random past a handshake, where tcp_in_window's bounds
/// matter: each SYN carries random options (window scale, SACK or none),
/// then each segment is honest or aimed at an edge of what nf_conntrack
/// keeps per side: the right edge (the peer's last ack plus its scaled
/// window, td_maxend), one past it, the left edge (a maximum window back,
/// td_maxwin), acks of data not yet sent, SACK blocks beyond the ack
/// (well-formed or not, after timestamps or alone), keep-alives, window
/// changes, FINs, RSTs, retransmitted and new SYNs.
/// The model behind the edges is the honest senders' own; the kernel
/// decides what each segment does, and ours must decide the same.
fn tcp_random_open_sequences(seed: u64, n: usize) -> Vec<Seq> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let mut seq = Seq::new(format!("random open TCP #{i} (seed {seed:#x})"));
            let side = |s: usize| if s == 0 { Side::Client } else { Side::Server };
            let isn = [rng.next() as u32, rng.next() as u32];
            // Each side's SYN options, and the shift they announce.
            let mut syn = || match rng.below(10) {
                0 | 1 => (Vec::new(), None),
                2 => (vec![TcpOpt::Mss(1460)], None),
                // A window scale option of the wrong length is no option.
                3 => (vec![TcpOpt::Nop, TcpOpt::Raw(vec![3, 4, 7, 0])], None),
                _ => {
                    // Shifts above 14 count as 14 (RFC 7323, 2.3).
                    let ws = rng.pick(&[(6, 7u8), (2, 0), (2, 2), (2, 14), (1, 15), (1, 255)]);
                    (linux_syn_opts(ws), Some(ws.min(14)))
                }
            };
            let (copts, cws) = syn();
            let (sopts, sws) = syn();
            // Scaling holds only when both SYNs carry the option.
            let shift = match (cws, sws) {
                (Some(c), Some(s)) => [u32::from(c), u32::from(s)],
                _ => [0, 0],
            };
            let wins = [(3, 64240u16), (1, 512), (1, 65535), (1, 8)];
            let syn_win = [rng.pick(&wins), rng.pick(&wins)];
            seq = seq
                .tcp(Side::Client, SYN, isn[0], 0, 0)
                .win(syn_win[0])
                .opts(&copts)
                .tcp(Side::Server, SYN | ACK, isn[1], isn[0].wrapping_add(1), 0)
                .win(syn_win[1])
                .opts(&sopts);
            // Per side: the next seq it would send, the peer's seq it last
            // acked, the window it last advertised (in bytes) and the
            // largest one so far.
            let mut nxt = [isn[0].wrapping_add(1), isn[1].wrapping_add(1)];
            let mut acked = [isn[1].wrapping_add(1), isn[0].wrapping_add(1)];
            let mut wnd = [u32::from(syn_win[0]), u32::from(syn_win[1])];
            let mut maxwin = wnd;
            if rng.below(6) != 0 {
                seq = seq.tcp(Side::Client, ACK, nxt[0], nxt[1], 0);
            }
            let len = 4 + rng.below(13);
            for _ in 0..len {
                let from = rng.below(2);
                let peer = 1 - from;
                let kind = rng.pick(&[
                    (30, "data"),
                    (14, "ack"),
                    (12, "edge"),
                    (4, "keepalive"),
                    (8, "fin"),
                    (5, "rst"),
                    (3, "rstack"),
                    (3, "syn"),
                    (2, "synack"),
                ]);
                let data = match kind {
                    "data" | "edge" | "fin" => {
                        rng.pick(&[(3, 100usize), (2, 1), (2, 1400), (1, 0)])
                    }
                    "keepalive" => rng.below(2),
                    _ => 0,
                };
                let right = acked[peer].wrapping_add(wnd[peer]);
                let left = nxt[from].wrapping_sub(maxwin[peer]);
                let s = match kind {
                    "edge" => {
                        let d = data as u32;
                        rng.pick(&[
                            (3, right.wrapping_sub(d)),
                            (3, right.wrapping_sub(d).wrapping_add(1)),
                            (1, right.wrapping_sub(d).wrapping_sub(1)),
                            (2, left),
                            (2, left.wrapping_sub(1)),
                            (1, left.wrapping_sub(d)),
                        ])
                    }
                    "keepalive" => nxt[from].wrapping_sub(1),
                    "syn" | "synack" => {
                        let (near, any) = (rng.next() as u32 % 100_000, rng.next() as u32);
                        rng.pick(&[(2, isn[from]), (1, nxt[from].wrapping_add(near)), (1, any)])
                    }
                    "rst" | "rstack" => rng.pick(&[
                        (3, nxt[from]),
                        (1, nxt[from].wrapping_add(1)),
                        (1, right),
                        (1, right.wrapping_add(1)),
                        (1, left.wrapping_sub(1)),
                    ]),
                    _ => nxt[from],
                };
                let flags = match kind {
                    "data" if data > 0 => rng.pick(&[(2, ACK), (1, PSH | ACK)]),
                    "fin" => FIN | ACK,
                    "rst" => RST,
                    "rstack" => RST | ACK,
                    "syn" => SYN,
                    "synack" => SYN | ACK,
                    _ => ACK,
                };
                let a = if flags & ACK != 0 {
                    rng.pick(&[
                        (12, nxt[peer]),
                        (2, acked[from]),
                        (1, nxt[peer].wrapping_add(1)),
                        (1, nxt[peer].wrapping_add(70_000)),
                        (1, nxt[peer].wrapping_sub(maxwin[from]).wrapping_sub(1)),
                    ])
                } else {
                    0
                };
                seq = seq.tcp(side(from), flags, s, a, data);
                // The window field: scaled past the SYNs.
                let w: u16 = if flags & SYN != 0 || rng.below(3) != 0 {
                    if flags & SYN != 0 {
                        syn_win[from]
                    } else {
                        (wnd[from] >> shift[from]).min(65535) as u16
                    }
                } else {
                    rng.pick(&[(2, 65535u16), (1, 0), (1, 1), (2, 512), (1, 8)])
                };
                seq = seq.win(w);
                let mut opts = match flags & SYN {
                    0 => Vec::new(),
                    _ if from == 0 => copts.clone(),
                    _ => sopts.clone(),
                };
                if flags & (SYN | ACK) == ACK && rng.below(4) == 0 {
                    // SACK blocks past the ack: tcp_sack takes the latest
                    // right edge as the ack when it is later.  Alone,
                    // after aligned timestamps (which tcp_sack skips
                    // whole) or malformed.
                    let mut blocks = Vec::new();
                    for _ in 0..1 + rng.below(4) {
                        let l = a.wrapping_add(rng.pick(&[(1, 1u32), (1, 1000), (1, 1 << 31)]));
                        let r = l.wrapping_add(rng.pick(&[(2, 100u32), (1, 70_000)]));
                        blocks.push((l, r));
                    }
                    let (l, r) = blocks[0];
                    let ts = [TcpOpt::Nop, TcpOpt::Nop, TcpOpt::Timestamp(7, 1)];
                    opts = match rng.below(6) {
                        0 => ts.to_vec(),
                        1 => {
                            // Three blocks at most fit beside timestamps.
                            blocks.truncate(3);
                            let sack = [TcpOpt::Nop, TcpOpt::Nop, TcpOpt::Sack(blocks)];
                            [&ts[..], &sack[..]].concat()
                        }
                        2 => {
                            // A SACK option one byte long past its block.
                            let mut raw = vec![5, 11];
                            raw.extend_from_slice(&l.to_be_bytes());
                            raw.extend_from_slice(&r.to_be_bytes());
                            raw.push(0);
                            vec![TcpOpt::Nop, TcpOpt::Raw(raw)]
                        }
                        3 => vec![TcpOpt::Raw(vec![1, 5, 0])],
                        _ => vec![TcpOpt::Nop, TcpOpt::Nop, TcpOpt::Sack(blocks)],
                    };
                }
                if !opts.is_empty() {
                    seq = seq.opts(&opts);
                }
                // What the honest senders know next.
                if s == nxt[from] && flags & (SYN | RST) == 0 {
                    let fin = u32::from(flags & FIN != 0);
                    nxt[from] = s.wrapping_add(data as u32 + fin);
                }
                if flags & (ACK | RST | SYN) == ACK {
                    if a == nxt[peer] {
                        acked[from] = a;
                    }
                    wnd[from] = u32::from(w) << shift[from];
                    maxwin[from] = maxwin[from].max(wnd[from]);
                }
            }
            seq
        })
        .collect()
}

/// TCP, UDP and echo flows opened part way or whole, in random order,
/// with ICMP errors among their packets: any kind the family has, from a
/// router or either end, to either end, quoting a packet of any flow from
/// either side, or an error about one, whole or cut short.  What makes an
/// error RELATED (a tracked flow, the quote's source as the outer
/// destination, enough of the quote) is then drawn in every combination
/// rather than only the ones written down; some packets carry a wrong
/// checksum, IPv4 options or IPv6 extension headers (`spoil`).
fn mixed_random_sequences(fam: Family, seed: u64, n: usize) -> Vec<Seq> {
    use Side::{Client, Router, Server};
    let e = fam.errors();
    let h = match fam {
        Family::V4 => 20,
        Family::V6 => 40,
    };
    let flows = [Flow::Tcp, Flow::Udp, Flow::Echo];
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let mut seq = Seq::on(
                fam,
                format!("random flows and errors #{i} (seed {seed:#x})"),
            );
            let len = 3 + rng.below(8);
            for _ in 0..len {
                let flow = flows[rng.below(3)];
                let from = rng.pick(&[(3, Client), (2, Server)]);
                if rng.below(5) < 3 {
                    // One of the flow's own packets.
                    seq = match (flow, from) {
                        (Flow::Tcp, Client) => {
                            let (f, s, a) = rng.pick(&[
                                (3, (SYN, 100, 0)),
                                (3, (ACK, 101, 201)),
                                (1, (FIN | ACK, 101, 201)),
                                (1, (RST, 101, 0)),
                            ]);
                            seq.c(f, s, a)
                        }
                        (Flow::Tcp, _) => {
                            let (f, s, a) = rng.pick(&[
                                (3, (SYN | ACK, 200, 101)),
                                (2, (ACK, 201, 101)),
                                (1, (FIN | ACK, 201, 101)),
                                (1, (RST | ACK, 201, 101)),
                            ]);
                            seq.s(f, s, a)
                        }
                        (Flow::Udp, _) => seq.udp(from),
                        (Flow::Echo, Client) => seq.echo(from, fam.echo_request(), 7, 1),
                        (Flow::Echo, _) => seq.echo(from, fam.echo_reply(), 7, 1),
                    };
                    seq = spoil(seq, &mut rng);
                    continue;
                }
                let kind = e.all[rng.below(e.all.len())];
                let sender = rng.pick(&[(3, Router), (1, Client), (1, Server)]);
                // Mostly back to the quoted packet's source, as errors go.
                let other = if from == Client { Server } else { Client };
                let to = rng.pick(&[(3, from), (1, other)]);
                let quote = match rng.below(8) {
                    // A SYN with a sequence number nobody sent: the
                    // kernel relates by tuple alone.
                    0 => q_tcp(from, SYN, 5000, 0),
                    1 => q_err(Router, from, kind, flow.pkt(from, fam)),
                    _ => flow.pkt(from, fam),
                };
                let how = rng.pick(&[(6, WHOLE), (2, cut(h + 8)), (1, cut(h + 4))]);
                seq = spoil(seq.err(sender, to, kind, quote, how), &mut rng);
            }
            seq
        })
        .collect()
}

/// Now and then, a wrong checksum on the last packet, over IPv4 options
/// in its header, or over IPv6 a chain of extension headers before it (a random part of all_exts(), in
/// RFC 8200's order).
fn spoil(seq: Seq, rng: &mut Rng) -> Seq {
    let seq = match rng.below(10) {
        0 => seq.bad(),
        // NOPs and an end of list; a router alert (RFC 2113).
        1 if seq.family == Family::V4 => seq.fault(Fault::IpOptions(
            [&[1u8, 1, 1, 0][..], &[148, 4, 0, 0]][rng.below(2)],
        )),
        _ => seq,
    };
    if seq.family == Family::V6 && rng.below(6) == 0 {
        let chain: Vec<Ipv6Ext> = all_exts()
            .into_iter()
            .filter(|_| rng.below(2) == 0)
            .collect();
        return seq.exts(&chain);
    }
    seq
}

// ---------------------------------------------------------------------------
// What both sides report

/// One connection as `conntrack -L` shows it, reduced to what we compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    proto: &'static str,
    /// TCP state name; empty for UDP and ICMP.
    state: String,
    /// The original direction, "C>S" / "S>C" for the test's ends.
    orig: String,
    unreplied: bool,
    assured: bool,
    /// Seconds left; compared within TIMEOUT_SLACK, and last, so that
    /// sorting goes by the rest.
    timeout: u64,
}

/// How far the two sides' timeouts may differ: they are read a moment
/// apart, whole seconds rounded down, and ours moves a refreshed deadline
/// only when it moves by more than a second.
const TIMEOUT_SLACK: u64 = 2;

impl Entry {
    /// Equal but for the timeout, which is within TIMEOUT_SLACK.
    fn matches(&self, other: &Self) -> bool {
        (
            self.proto,
            &self.state,
            &self.orig,
            self.unreplied,
            self.assured,
        ) == (
            other.proto,
            &other.state,
            &other.orig,
            other.unreplied,
            other.assured,
        ) && self.timeout.abs_diff(other.timeout) <= TIMEOUT_SLACK
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.proto)?;
        if !self.state.is_empty() {
            write!(f, " {}", self.state)?;
        }
        write!(f, " {}", self.orig)?;
        if self.unreplied {
            write!(f, " UNREPLIED")?;
        }
        if self.assured {
            write!(f, " ASSURED")?;
        }
        Ok(())
    }
}

/// "C" / "S" for the test's endpoints (by address alone for ICMP), of
/// either family.
fn label(addr: IpAddr, port: Option<u16>) -> String {
    for (name, e) in [("C", CLIENT), ("S", SERVER), ("C", CLIENT6), ("S", SERVER6)] {
        if addr == e.addr && port.is_none_or(|p| p == e.port) {
            return name.into();
        }
    }
    match port {
        Some(p) => format!("{addr}:{p}"),
        None => addr.to_string(),
    }
}

/// The original direction; an ICMP query's `type=T code=C` unless it is
/// an echo (8, ICMPv6's 128) with code 0.
fn orig(src: IpAddr, dst: IpAddr, l4: L4) -> String {
    match l4 {
        L4::Ports { sport, dport } => {
            format!("{}>{}", label(src, Some(sport)), label(dst, Some(dport)))
        }
        L4::Icmp {
            icmp_type: 8 | 128,
            code: 0,
            id,
        } => format!("{}>{} id={id}", label(src, None), label(dst, None)),
        L4::Icmp {
            icmp_type,
            code,
            id,
        } => format!(
            "{}>{} type={icmp_type} code={code} id={id}",
            label(src, None),
            label(dst, None)
        ),
    }
}

impl Entry {
    fn from_conn(c: &Conn) -> Self {
        let proto = proto_name(c.proto);
        let l4 = if c.proto == IPPROTO_ICMP || c.proto == IPPROTO_ICMPV6 {
            L4::Icmp {
                icmp_type: c.icmp_type,
                code: c.icmp_code,
                id: c.sport,
            }
        } else {
            L4::Ports {
                sport: c.sport,
                dport: c.dport,
            }
        };
        Self {
            proto,
            state: if c.proto == IPPROTO_TCP {
                tcp_state_name(c.state).into()
            } else {
                String::new()
            },
            orig: orig(c.src, c.dst, l4),
            unreplied: !c.seen_reply,
            assured: c.assured,
            timeout: c.timeout,
        }
    }

    /// One line of `conntrack -L`, e.g.
    /// `tcp 6 119 SYN_SENT src=A dst=B sport=1 dport=2 [UNREPLIED] src=B ...`.
    fn from_conntrack_line(line: &str) -> Self {
        let e = ConntrackLine::parse_or_panic(line);
        let proto = proto_name(e.l4proto);
        assert!(
            matches!(proto, "tcp" | "udp" | "icmp" | "icmpv6"),
            "unexpected conntrack line: {line}"
        );
        Self {
            proto,
            state: e.state.unwrap_or_default(),
            orig: orig(e.orig.src, e.orig.dst, e.orig.l4),
            unreplied: e.unreplied,
            assured: e.assured,
            timeout: e.timeout,
        }
    }
}

/// A whole table, sorted; "-" when empty.
#[derive(Debug, Clone)]
struct Snapshot(Vec<Entry>);

impl Snapshot {
    fn new(mut entries: Vec<Entry>) -> Self {
        entries.sort();
        Self(entries)
    }

    /// The timeouts, in the entries' order: `t=119 t=299`.
    fn timeouts(&self) -> String {
        let t: Vec<String> = self.0.iter().map(|e| format!("t={}", e.timeout)).collect();
        t.join(" ")
    }
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| a.matches(b))
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "-");
        }
        let parts: Vec<String> = self.0.iter().map(Entry::to_string).collect();
        write!(f, "{}", parts.join(" + "))
    }
}

/// What happened to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Kernel: tracked (not INVALID, not RELATED).  Ours: XDP_REDIRECT.
    Pass,
    /// Kernel: `ct state invalid`.  Ours: XDP_DROP, counted `invalid`.
    Invalid,
    /// Kernel: `ct state related`.  Ours: XDP_REDIRECT, counted `related`.
    Related,
    /// Kernel only: the IP layer dropped it (ip_rcv() counted a header
    /// error), before any netfilter hook, conntrack's included.
    Dropped,
    /// Kernel only: seen at prerouting, but it never reached postrouting
    /// (conntrack, or forwarding, dropped it).
    Lost,
    /// Ours only: XDP_DROP, counted `malformed`: what ip_rcv() refuses.
    Malformed,
    /// Ours only: any other XDP action.
    Action(u32),
}

impl Verdict {
    /// Our verdict from the XDP action and whether `malformed` or
    /// `related` moved.
    fn ours(action: u32, malformed: bool, related: bool) -> Self {
        match action {
            XDP_REDIRECT if related => Verdict::Related,
            XDP_REDIRECT => Verdict::Pass,
            XDP_DROP if malformed => Verdict::Malformed,
            XDP_DROP => Verdict::Invalid,
            a => Verdict::Action(a),
        }
    }
    /// INVALID in the kernel exactly when we drop as invalid, RELATED
    /// exactly when we count a forwarded packet as related; dropped by its
    /// IP layer exactly when we drop as malformed.  A packet lost after
    /// prerouting matches nothing: it needs a look, not a pass.
    fn agrees(kernel: Self, ours: Self) -> bool {
        matches!(
            (kernel, ours),
            (Verdict::Pass, Verdict::Pass)
                | (Verdict::Invalid, Verdict::Invalid)
                | (Verdict::Dropped, Verdict::Malformed)
                | (Verdict::Related, Verdict::Related)
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad() so that the table's column widths apply.
        f.pad(&match self {
            Verdict::Pass => "ok".to_string(),
            Verdict::Invalid => "INVALID".to_string(),
            Verdict::Related => "RELATED".to_string(),
            Verdict::Dropped => "IP DROP".to_string(),
            Verdict::Lost => "LOST".to_string(),
            Verdict::Malformed => "MALFORMED".to_string(),
            Verdict::Action(a) => format!("xdp={a}"),
        })
    }
}

// ---------------------------------------------------------------------------
// The kernel side

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    seen: u64,
    done: u64,
    invalid: u64,
    related: u64,
    confirmed: u64,
    /// The IP layers' InHdrErrors (/proc/net/snmp, /proc/net/snmp6):
    /// ip_rcv() or ipv6_rcv() refused the header (IPv4's checksum among
    /// the reasons).
    ip_hdr_errors: u64,
}

/// nf_conntrack in namespace K, fed from namespace I.
struct KernelCt {
    sock: PacketSocket,
    ifindex: u32,
    /// The way in from the server's side: a packet socket in S and its
    /// veth there.
    far: (PacketSocket, u32),
    k: String,
    /// K's veth ends: to I, and to S.
    links: [String; 2],
    /// K's /proc/net files, once conntrack is on in K.
    files: Option<KernelFiles>,
    /// When the last frame's sendto() returned: K had handled it by then
    /// (on this CPU, within the call).
    sent: Cell<Option<Instant>>,
    /// The counters as the last frame left them: nothing else reaches K
    /// (I and S send only what the test injects, K's own output is
    /// dropped, what K forwards is dropped where it lands),
    /// so they are the next frame's `before`.
    last: Cell<Option<Counters>>,
    _netns: Netns,
}

/// K's IP layers' counters and its conntrack table, as files under its
/// /proc/net, and a netfilter netlink socket for its nftables counters
/// and for emptying its table, all opened once from inside K: reading a
/// file again from its start makes it anew.  Spawning `nft`, `conntrack`
/// or `cat` for each read instead cost several processes a frame, a second
/// or more each under software emulation (`make test-kernels`).
struct KernelFiles {
    snmp: File,
    snmp6: File,
    /// The table as `conntrack -L -o extended` prints it (each line with
    /// its family's name and number first), K's entries only.
    conntrack: File,
    /// NETLINK_NETFILTER, bound to K at its creation.
    nfnl: OwnedFd,
}

// include/uapi/linux/netfilter/nf_tables.h and nfnetlink_conntrack.h; the
// libc crate does not carry these.
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

/// struct nfgenmsg: family, version (NFNETLINK_V0), resource id.
fn nfgenmsg(family: i32) -> Vec<u8> {
    vec![family as u8, libc::NFNETLINK_V0 as u8, 0, 0]
}

impl KernelFiles {
    fn open(ns: &str) -> Self {
        in_ns(ns, || {
            // thread-self: setns() moved this thread only.
            let open = |name: &str| {
                File::open(format!("/proc/thread-self/net/{name}"))
                    .unwrap_or_else(|e| panic!("opening K's /proc/net/{name}: {e}"))
            };
            Self {
                snmp: open("snmp"),
                snmp6: open("snmp6"),
                conntrack: open("nf_conntrack"),
                nfnl: socket(
                    AddressFamily::Netlink,
                    SockType::Raw,
                    SockFlag::SOCK_CLOEXEC,
                    SockProtocol::NetlinkNetFilter,
                )
                .expect("a netfilter netlink socket in K"),
            }
        })
    }

    /// The packet counts of the named counters of K's `inet parity` table,
    /// as `nft list counters` shows them (NFT_MSG_GETOBJ, dumped).
    fn nft_counters(&self) -> Vec<(String, u64)> {
        let mut req = nfgenmsg(libc::NFPROTO_INET);
        req.extend(netlink::attr(NFTA_OBJ_TABLE, b"parity\0"));
        req.extend(netlink::attr(
            NFTA_OBJ_TYPE,
            &NFT_OBJECT_COUNTER.to_be_bytes(),
        ));
        let kind = ((libc::NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_GETOBJ) as u16;
        let msg = netlink::request(kind, libc::NLM_F_DUMP as u16, &req);
        netlink::exchange_all(self.nfnl.as_fd(), &msg)
            .unwrap_or_else(|e| panic!("dumping K's nft counters: {e}"))
            .iter()
            .map(|(_, payload)| {
                let attrs = payload
                    .get(4..)
                    .and_then(netlink::attrs)
                    .expect("an nft object that adds up");
                let find = |kind| {
                    attrs
                        .iter()
                        .find(|(t, _)| *t == kind)
                        .map(|(_, v)| *v)
                        .expect("an nft counter's name and data")
                };
                let name = String::from_utf8_lossy(find(NFTA_OBJ_NAME))
                    .trim_end_matches('\0')
                    .to_string();
                let packets = netlink::attrs(find(NFTA_OBJ_DATA))
                    .and_then(|data| netlink::attr_be64(&data, NFTA_COUNTER_PACKETS))
                    .expect("an nft counter's packets");
                (name, packets)
            })
            .collect()
    }

    /// Empties K's table, as `conntrack -F` does: IPCTNL_MSG_CT_DELETE
    /// without a tuple, for every family.
    fn flush_conntrack(&self) {
        let kind = ((libc::NFNL_SUBSYS_CTNETLINK << 8) as u16) | IPCTNL_MSG_CT_DELETE;
        let msg = netlink::request(kind, libc::NLM_F_ACK as u16, &nfgenmsg(libc::AF_UNSPEC));
        netlink::exchange_all(self.nfnl.as_fd(), &msg)
            .unwrap_or_else(|e| panic!("flushing K's conntrack table: {e}"));
    }

    fn read(mut f: &File) -> String {
        f.seek(SeekFrom::Start(0)).expect("rewinding a /proc file");
        let mut text = String::new();
        f.read_to_string(&mut text).expect("reading a /proc file");
        text
    }
}

fn check(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    check(&args.join(" "), out)
}

impl KernelCt {
    fn new() -> Self {
        require_root();
        let p = unique_prefix();
        let (k, i, s) = (format!("{p}k"), format!("{p}i"), format!("{p}s"));
        let (vk, vi) = (format!("{p}vk"), format!("{p}vi"));
        let (vk2, vs) = (format!("{p}vk2"), format!("{p}vs"));
        let netns = Netns(vec![k.clone(), i.clone(), s.clone()]);
        for ns in &netns.0 {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // I and S only write frames: no IPv6 of their own.  K forwards,
        // without detecting duplicates or listening to routers (its own
        // packets never leave it anyway: see `local_out` below).
        for ns in [&i, &s] {
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        run(&[
            "ip",
            "netns",
            "exec",
            &k,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.accept_ra=0",
            "net.ipv6.conf.default.accept_ra=0",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.ip_forward=1",
        ]);
        for (vk, kmac, peer, pmac, ns) in [
            (&vk, &K_MAC, &vi, &I_MAC, &i),
            (&vk2, &K2_MAC, &vs, &S_MAC, &s),
        ] {
            run(&[
                "ip",
                "-n",
                &k,
                "link",
                "add",
                vk,
                "address",
                &mac(kmac),
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "address",
                &mac(pmac),
                "netns",
                ns,
            ]);
            // Room for the window sequences' 1460-byte segments behind
            // IPv6's 40-byte header (1534-byte frames).
            run(&["ip", "-n", &k, "link", "set", vk, "mtu", "2000", "up"]);
            run(&["ip", "-n", ns, "link", "set", peer, "mtu", "2000", "up"]);
            // What K forwards lands in I or S, which must neither answer
            // it nor pass it on: K's counters see the injected frames
            // alone.
            nft_in(
                ns,
                &format!(
                    "table netdev sink {{
                        chain in {{
                            type filter hook ingress device {peer} priority 0; policy drop;
                        }}
                    }}"
                ),
            );
        }
        // ICMP errors come from ROUTER, an address K has no route to:
        // never filter by reverse path.
        for conf in ["all", "default", &vk, &vk2] {
            run(&[
                "ip",
                "netns",
                "exec",
                &k,
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{conf}.rp_filter=0"),
            ]);
        }
        // A host route and a permanent neighbour for each end, on its
        // side: nothing to resolve, and K owns neither address.
        for (end, dev, lladdr) in [
            (CLIENT.addr, &vk, &I_MAC),
            (CLIENT6.addr, &vk, &I_MAC),
            (SERVER.addr, &vk2, &S_MAC),
            (SERVER6.addr, &vk2, &S_MAC),
        ] {
            let end = end.to_string();
            run(&["ip", "-n", &k, "route", "add", &end, "dev", dev]);
            run(&[
                "ip",
                "-n",
                &k,
                "neigh",
                "add",
                &end,
                "lladdr",
                &mac(lladdr),
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }

        let (sock, ifindex) = packet_socket(&i, &vi);
        let far = packet_socket(&s, &vs);
        let mut me = Self {
            sock,
            ifindex,
            far,
            k,
            links: [vk, vk2],
            files: None,
            sent: Cell::new(None),
            last: Cell::new(None),
            _netns: netns,
        };
        // First without conntrack: the `done` chain must be registered
        // before conntrack's confirm hook (same priority INT_MAX: the later
        // registration runs first), so that it runs after it.
        me.nft(
            "table inet parity {
                counter seen {}
                counter done {}
                chain raw_pre {
                    type filter hook prerouting priority -300; policy accept;
                    counter name \"seen\"
                }
                chain local_out {
                    type filter hook output priority -300; policy accept;
                    drop
                }
                chain done {
                    type filter hook postrouting priority 2147483647; policy accept;
                    counter name \"done\"
                }
            }",
        );
        // Now the rules that enable tracking in K.
        me.nft(
            "add counter inet parity invalid
             add counter inet parity related
             add counter inet parity confirmed
             add chain inet parity track { type filter hook prerouting priority 0; policy accept; }
             add rule inet parity track ct state invalid counter name \"invalid\"
             add rule inet parity track ct state related counter name \"related\"
             add rule inet parity done ct status confirmed counter name \"confirmed\"",
        );
        // nf_conntrack's files exist once a rule has it on in K.
        me.files = Some(KernelFiles::open(&me.k));
        me.set_sysctls(&[
            "net.netfilter.nf_conntrack_tcp_loose=1".into(),
            "net.netfilter.nf_conntrack_tcp_be_liberal=0".into(),
            "net.netfilter.nf_conntrack_tcp_ignore_invalid_rst=0".into(),
        ]);
        me.self_test();
        me
    }

    /// A UDP probe of each family must be counted by every counter, be
    /// confirmed by the time `done` counts it, and show up in
    /// `conntrack -L`.
    fn self_test(&self) {
        let eth = Ether {
            dst: K_MAC,
            src: I_MAC,
        };
        for fam in [Family::V4, Family::V6] {
            let a = Endpoint::new(fam.client().addr, 9);
            let b = Endpoint::new(fam.server().addr, 9);
            for (from, to, what) in [(a, b, "probe"), (b, a, "answer")] {
                let (before, links) = (self.counters(), self.link_packets());
                assert_eq!(
                    self.inject(&udp(&eth, from, to, what.as_bytes())),
                    Verdict::Pass,
                    "{fam} {what}"
                );
                let after = self.counters();
                if what == "probe" {
                    assert_eq!(
                        after.confirmed,
                        before.confirmed + 1,
                        "the done chain does not run after conntrack's confirm hook ({fam}): \
                         {after:?}"
                    );
                }
                // The probe came in from I and went on to S, the answer
                // the other way.
                let moved: Vec<(u64, u64)> = self
                    .link_packets()
                    .iter()
                    .zip(&links)
                    .map(|(n, o)| (n.0 - o.0, n.1 - o.1))
                    .collect();
                let want = if what == "probe" {
                    [(1, 0), (0, 1)]
                } else {
                    [(0, 1), (1, 0)]
                };
                assert_eq!(moved, want, "{fam} {what}: (rx, tx) on {:?}", self.links);
            }
            let lines = self.conntrack_lines();
            let probe = Tuple::ports((a.addr, a.port).into(), (b.addr, b.port).into());
            assert!(
                lines.len() == 1 && ConntrackLine::parse_or_panic(&lines[0]).orig == probe,
                "{fam} probe not in conntrack -L: {lines:?}"
            );
            self.flush();
        }
    }

    /// Packets received and sent on each of K's veth ends, from K's
    /// /proc/net/dev.
    fn link_packets(&self) -> Vec<(u64, u64)> {
        let dev = in_ns(&self.k, || {
            std::fs::read_to_string("/proc/thread-self/net/dev")
        })
        .unwrap_or_else(|e| panic!("reading K's /proc/net/dev: {e}"));
        self.links
            .iter()
            .map(|link| {
                let line = dev
                    .lines()
                    .find_map(|l| l.trim_start().strip_prefix(&format!("{link}:")))
                    .unwrap_or_else(|| panic!("no {link} in K's /proc/net/dev: {dev}"));
                let n: Vec<u64> = line
                    .split_whitespace()
                    .map(|v| v.parse().expect("a number"))
                    .collect();
                // Eight receive fields, then the transmit ones; packets
                // come second in each.
                (n[1], n[9])
            })
            .collect()
    }

    /// Our program's configuration with K's own timeouts, so that the
    /// two sides' timeouts can be compared (ours default to longer ones
    /// for LAST_ACK and UDP).
    fn config(&self) -> xdp_conntrack::loader::Config {
        const SYSCTLS: &[(&str, &str)] = &[
            ("syn_sent", "tcp_timeout_syn_sent"),
            ("syn_recv", "tcp_timeout_syn_recv"),
            ("established", "tcp_timeout_established"),
            ("fin_wait", "tcp_timeout_fin_wait"),
            ("close_wait", "tcp_timeout_close_wait"),
            ("last_ack", "tcp_timeout_last_ack"),
            ("time_wait", "tcp_timeout_time_wait"),
            ("close", "tcp_timeout_close"),
            ("max_retrans", "tcp_timeout_max_retrans"),
            ("unacknowledged", "tcp_timeout_unacknowledged"),
            ("udp", "udp_timeout"),
            ("udp_stream", "udp_timeout_stream"),
            ("icmp", "icmp_timeout"),
        ];
        let mut cfg = test_config();
        for (ours, theirs) in SYSCTLS {
            let secs = self.sysctl(&format!("net.netfilter.nf_conntrack_{theirs}"));
            let (slot, secs) =
                xdp_conntrack::settings::parse_timeout(&format!("{ours}={}", secs.trim()))
                    .unwrap_or_else(|e| panic!("K's {theirs}: {e}"));
            cfg.timeouts[slot] = secs;
        }
        cfg
    }

    /// K's sysctl `key`.  Those under net. are per namespace: /proc/sys
    /// shows a thread the ones of the namespace it is in, so they are read
    /// and written from a thread inside K (no `sysctl` spawned: see
    /// [`KernelFiles`]).
    fn sysctl(&self, key: &str) -> String {
        let path = sysctl_path(key);
        in_ns(&self.k, || std::fs::read_to_string(&path))
            .unwrap_or_else(|e| panic!("reading K's {key}: {e}"))
    }

    /// Sets K's sysctls, each given as `key=value`.
    fn set_sysctls(&self, settings: &[String]) {
        in_ns(&self.k, || {
            for s in settings {
                let (key, value) = s.split_once('=').expect("a sysctl as key=value");
                std::fs::write(sysctl_path(key), value)
                    .unwrap_or_else(|e| panic!("setting K's {key} to {value}: {e}"));
            }
        })
    }

    fn nft(&self, script: &str) {
        nft_in(&self.k, script);
    }

    fn counters(&self) -> Counters {
        let files = self.files.as_ref().expect("conntrack is on in K");
        let mut c = Counters::default();
        for (name, n) in files.nft_counters() {
            match name.as_str() {
                "seen" => c.seen = n,
                "done" => c.done = n,
                "invalid" => c.invalid = n,
                "related" => c.related = n,
                "confirmed" => c.confirmed = n,
                _ => {}
            }
        }
        c.ip_hdr_errors = self.ip_hdr_errors();
        c
    }

    /// InHdrErrors of K's IP layers: IPv4's from the two `Ip:` lines of
    /// /proc/net/snmp (names, then values), plus IPv6's Ip6InHdrErrors
    /// from /proc/net/snmp6 (a name and a value a line).
    fn ip_hdr_errors(&self) -> u64 {
        let files = self.files.as_ref().expect("conntrack is on in K");
        let snmp6 = KernelFiles::read(&files.snmp6);
        let v6: u64 = snmp6
            .lines()
            .find_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                ["Ip6InHdrErrors", n] => n.parse().ok(),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Ip6InHdrErrors in K's /proc/net/snmp6: {snmp6}"));
        let snmp = KernelFiles::read(&files.snmp);
        let mut ip = snmp.lines().filter(|l| l.starts_with("Ip: "));
        let (names, values) = (ip.next(), ip.next());
        names
            .zip(values)
            .and_then(|(n, v)| {
                n.split_whitespace()
                    .zip(v.split_whitespace())
                    .find(|(n, _)| *n == "InHdrErrors")
                    .and_then(|(_, v)| v.parse().ok())
            })
            .map(|v4: u64| v4 + v6)
            .unwrap_or_else(|| panic!("no InHdrErrors in K's /proc/net/snmp: {snmp}"))
    }

    /// Writes one frame into K and waits until K has processed it.
    fn inject(&self, frame: &[u8]) -> Verdict {
        let before = self.last.get().unwrap_or_else(|| self.counters());
        let ethertype = if frame[12..14] == [0x86, 0xdd] {
            libc::ETH_P_IPV6
        } else {
            libc::ETH_P_IP
        };
        let n = if to_server(frame) {
            self.sock
                .send_to(frame, self.ifindex, ethertype as u16, K_MAC)
        } else {
            // Anything else comes in from the server's side, as a frame
            // from S to K's second veth.
            let mut frame = frame.to_vec();
            frame[..6].copy_from_slice(&K2_MAC);
            frame[6..12].copy_from_slice(&S_MAC);
            let (sock, ifindex) = &self.far;
            sock.send_to(&frame, *ifindex, ethertype as u16, K2_MAC)
        }
        .unwrap_or_else(|e| panic!("sendto: {e:#}"));
        assert_eq!(n, frame.len(), "sendto: a short write");
        self.sent.set(Some(Instant::now()));
        let mut now = before;
        let done = wait_for(KERNEL_WAIT, || {
            now = self.counters();
            now.done > before.done || now.ip_hdr_errors > before.ip_hdr_errors
        });
        self.last.set(Some(now));
        if !done {
            assert!(
                now.seen > before.seen,
                "the frame never reached K's prerouting: {now:?}"
            );
            return Verdict::Lost;
        }
        // A frame the IP layer refused before prerouting (ip_rcv()'s and
        // ipv6_rcv()'s header checks) reached no hook.  One refused while
        // forwarding, after conntrack (a hop limit run out), would need a
        // verdict this harness cannot read: no sequence sends one.
        if now.done == before.done && now.ip_hdr_errors > before.ip_hdr_errors {
            assert_eq!(
                (now.seen, now.done),
                (before.seen, before.done),
                "the IP layer refused the frame, yet the hooks saw it"
            );
            return Verdict::Dropped;
        }
        assert_eq!(now.done, before.done + 1, "one frame at a time: {now:?}");
        match (now.invalid > before.invalid, now.related > before.related) {
            (false, false) => Verdict::Pass,
            (true, false) => Verdict::Invalid,
            (false, true) => Verdict::Related,
            (true, true) => panic!("both invalid and related: {now:?}"),
        }
    }

    /// K's table as `conntrack -L` prints it.
    fn conntrack_lines(&self) -> Vec<String> {
        let files = self.files.as_ref().expect("conntrack is on in K");
        KernelFiles::read(&files.conntrack)
            .lines()
            .filter(|l| !l.trim().is_empty())
            // "ipv4     2 tcp      6 ...": the family goes.
            .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
            .collect()
    }

    /// K's table as it was when K was done with the last frame.  Its
    /// timeouts run down in real time while the counters are read (seconds
    /// under software emulation, when that read spawned nft), and ours were
    /// read at once; each gets back the whole seconds since the frame went
    /// in.
    fn snapshot(&self) -> Snapshot {
        let since = self
            .sent
            .get()
            .map_or(0, |t| t.elapsed().as_secs_f64().round() as u64);
        Snapshot::new(
            self.conntrack_lines()
                .iter()
                .map(|l| {
                    let e = Entry::from_conntrack_line(l);
                    Entry {
                        timeout: e.timeout + since,
                        ..e
                    }
                })
                .collect(),
        )
    }

    /// Sets K's side of `settings`.
    fn apply(&self, settings: &Settings) {
        self.set_sysctls(&settings.sysctls());
    }

    /// Empties K's table.
    fn flush(&self) {
        let files = self.files.as_ref().expect("conntrack is on in K");
        files.flush_conntrack();
        assert!(
            wait_for(KERNEL_WAIT, || self.conntrack_lines().is_empty()),
            "flushing left entries: {:?}",
            self.conntrack_lines()
        );
    }
}

/// Runs an nft script in namespace `ns`.
fn nft_in(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .expect("writing to nft");
    check(
        &format!("nft -f - <<{script}"),
        child.wait_with_output().unwrap(),
    );
}

/// Whether an Ethernet frame of IPv4 or IPv6 is addressed to the server
/// (of either family).
fn to_server(frame: &[u8]) -> bool {
    let dst: IpAddr = if frame[12..14] == [0x86, 0xdd] {
        <[u8; 16]>::try_from(&frame[38..54])
            .map(Ipv6Addr::from)
            .expect("an IPv6 header")
            .into()
    } else {
        <[u8; 4]>::try_from(&frame[30..34])
            .map(Ipv4Addr::from)
            .expect("an IPv4 header")
            .into()
    };
    dst == SERVER.addr || dst == SERVER6.addr
}

/// Where /proc/sys keeps the sysctl `key` (net.netfilter.x).
fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An AF_PACKET socket in `ns` (protocol 0: it only sends) and the index of
/// `dev` there.
fn packet_socket(ns: &str, dev: &str) -> (PacketSocket, u32) {
    in_ns(ns, || {
        let sock = PacketSocket::open().expect("AF_PACKET socket");
        let idx = nix::net::if_::if_nametoindex(dev).expect("if_nametoindex");
        (sock, idx)
    })
}

/// Pins the calling thread to one CPU, so that every injected frame goes
/// through the same backlog queue, in order.
fn pin_to_one_cpu() {
    let me = Pid::from_raw(0);
    let allowed = sched_getaffinity(me).expect("sched_getaffinity");
    let cpu = (0..CpuSet::count())
        .find(|&c| allowed.is_set(c).unwrap_or(false))
        .expect("an allowed CPU");
    let mut one = CpuSet::new();
    one.set(cpu).expect("CpuSet::set");
    sched_setaffinity(me, &one).expect("sched_setaffinity");
}

// ---------------------------------------------------------------------------
// Running and reporting

struct Row {
    pkt: Pkt,
    kernel: (Verdict, Snapshot),
    ours: (Verdict, Snapshot),
}

impl Row {
    fn agrees(&self) -> bool {
        Verdict::agrees(self.kernel.0, self.ours.0) && self.kernel.1 == self.ours.1
    }

    /// INVALID on the kernel's side only, as kernels before a sequence's
    /// `valid_since` judged it, and the tables alike.
    fn old_kernels_invalid(&self) -> bool {
        self.kernel.0 == Verdict::Invalid
            && self.ours.0 == Verdict::Pass
            && self.kernel.1 == self.ours.1
    }
}

/// The running kernel's release as (major, minor).
fn kernel_release() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("reading osrelease");
    let mut n = r.trim().split(['.', '-']).map(|p| {
        p.parse::<u32>()
            .unwrap_or_else(|_| panic!("a release like 6.1.0: {r}"))
    });
    (n.next().unwrap(), n.next().unwrap())
}

/// The rows, and how long after the first packet the last one went out.
fn run_seq(k: &KernelCt, h: &Harness, seq: &Seq) -> (Vec<Row>, Duration) {
    k.flush();
    k.apply(&seq.settings);
    h.clear();
    assert!(h.conns().is_empty(), "our table starts empty");
    let eth = Ether {
        dst: K_MAC,
        src: I_MAC,
    };
    let mut start = None;
    let mut last_sent = Duration::ZERO;
    let mut rows = Vec::new();
    for pkt in &seq.pkts {
        if let (Some(d), Some(t0)) = (pkt.not_before, start) {
            let t0: Instant = t0;
            assert!(wait_for(d + Duration::from_secs(1), || t0.elapsed() >= d));
        }
        start.get_or_insert_with(Instant::now);
        let frame = pkt.frame(&eth, seq.family);
        let count = |c: ct_counter| h.stats().get(c);
        let (malformed, related) = (
            count(ct_counter::CT_C_MALFORMED),
            count(ct_counter::CT_C_RELATED),
        );
        let action = h.run(&frame);
        let ours = Verdict::ours(
            action,
            count(ct_counter::CT_C_MALFORMED) > malformed,
            count(ct_counter::CT_C_RELATED) > related,
        );
        let ours_table = Snapshot::new(h.conns().iter().map(Entry::from_conn).collect());
        // The later of the two sides' sends, for `within`.
        last_sent = start.map_or(Duration::ZERO, |t0: Instant| t0.elapsed());
        let kernel = k.inject(&frame);
        let kernel_table = k.snapshot();
        rows.push(Row {
            pkt: pkt.clone(),
            kernel: (kernel, kernel_table),
            ours: (ours, ours_table),
        });
    }
    k.apply(&Settings::default());
    (rows, last_sent)
}

fn render(seq: &Seq, rows: &[Row]) -> String {
    let cells: Vec<[String; 3]> = rows
        .iter()
        .map(|r| {
            [
                r.pkt.to_string(),
                format!("{:<10}{} {}", r.kernel.0, r.kernel.1, r.kernel.1.timeouts()),
                format!("{:<10}{} {}", r.ours.0, r.ours.1, r.ours.1.timeouts()),
            ]
        })
        .collect();
    let w = |i: usize, title: &str| {
        cells
            .iter()
            .map(|c| c[i].len())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (w(0, "packet"), w(1, "kernel"), w(2, "ours"));
    let mut out = format!(
        "== {} [{}]{}\n    {:<w0$} | {:<w1$} | {:<w2$}\n",
        seq.name, seq.family, seq.settings, "packet", "kernel", "ours"
    );
    for (n, (c, r)) in cells.iter().zip(rows).enumerate() {
        let mark = if r.agrees() { "" } else { "  <-- differs" };
        out += &format!(
            "{:>2}  {:<w0$} | {:<w1$} | {:<w2$}{mark}\n",
            n + 1,
            c[0],
            c[1],
            c[2]
        );
    }
    out
}

/// Runs every sequence on both sides; fails at the end, listing every
/// sequence on which they differ with its per-packet table.
fn check_parity(seqs: &[Seq]) {
    require_root();
    pin_to_one_cpu();
    let k = KernelCt::new();
    let base = k.config();
    // One program per configuration, emptied before each sequence: the
    // sequences come grouped by their settings.
    let mut loaded: Option<(Settings, Harness)> = None;
    let mut differ = Vec::new();
    let mut kernel_surprises = Vec::new();
    for seq in seqs {
        if loaded.as_ref().map(|(s, _)| *s) != Some(seq.settings) {
            // The old program is unloaded before the next one loads.
            drop(loaded.take());
            loaded = Some((
                seq.settings,
                Harness::new(seq.settings.config(base.clone())),
            ));
        }
        let h = &loaded.as_ref().expect("a program for the settings").1;
        let (rows, took) = run_seq(&k, h, seq);
        let table = render(seq, &rows);
        eprintln!("{table}");
        let old = seq.valid_since.filter(|&v| kernel_release() < v);
        if let Some((major, minor)) = old {
            eprintln!(
                "{}: Linux {major}.{minor} made these packets valid; this kernel is older, \
                 and may call them INVALID",
                seq.name
            );
        }
        if !rows
            .iter()
            .all(|r| r.agrees() || (old.is_some() && r.old_kernels_invalid()))
        {
            differ.push(table.clone());
        }
        let too_slow = seq.within.filter(|&w| took > w);
        if let Some(w) = too_slow {
            // Both sides saw the same slow sequence and were compared packet
            // by packet above; only the claim in its name went unexercised.
            eprintln!(
                "{}: sent over {took:.1?}, more than the {w:?} its claim needs: \
                 compared, but the kernel's end state is not checked",
                seq.name
            );
        }
        if let (Some(want), None) = (&seq.kernel_ends, too_slow) {
            let got = rows.last().map(|r| r.kernel.1.to_string());
            if got.as_ref() != Some(want) {
                kernel_surprises.push(format!(
                    "{} [{}]: the kernel ends with {got:?}, the sequence assumes {want:?}",
                    seq.name, seq.family
                ));
            }
        }
    }
    assert!(
        kernel_surprises.is_empty(),
        "sequences that do not exercise what they claim:\n{}",
        kernel_surprises.join("\n")
    );
    assert!(
        differ.is_empty(),
        "{} of {} sequences differ from nf_conntrack:\n\n{}",
        differ.len(),
        seqs.len(),
        differ.join("\n")
    );
}

#[test]
fn tcp_matches_nf_conntrack() {
    check_parity(&tcp_sequences());
}

#[test]
fn udp_and_icmp_match_nf_conntrack() {
    check_parity(&udp_icmp_sequences(Family::V4));
}

#[test]
fn tcp_windows_match_nf_conntrack() {
    check_parity(&tcp_window_sequences());
}

#[test]
fn tcp_liberal_matches_nf_conntrack() {
    check_parity(&tcp_liberal_sequences());
}

#[test]
fn checksums_match_nf_conntrack() {
    check_parity(&checksum_sequences(Family::V4));
}

#[test]
fn udp_streams_match_nf_conntrack_after_two_seconds() {
    check_parity(&udp_slow_sequences());
}

#[test]
fn icmp_errors_match_nf_conntrack() {
    check_parity(&icmp_error_sequences(Family::V4));
}

#[test]
fn icmp_types_other_than_echo_and_errors_match_nf_conntrack() {
    check_parity(&icmp_type_sequences());
}

/// Sequences written with sides only (TCP, UDP), run over IPv6.
fn over_ipv6(seqs: Vec<Seq>) -> Vec<Seq> {
    seqs.into_iter().map(|s| s.over(Family::V6)).collect()
}

/// How many random sequences a test runs: `default`, or XCT_PARITY_RANDOM
/// (a fraction of a second each: one loaded program runs them all).
fn random_count(default: usize) -> usize {
    std::env::var("XCT_PARITY_RANDOM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The seed of the random sequences (hex); XCT_PARITY_SEED picks another.
fn random_seed() -> u64 {
    std::env::var("XCT_PARITY_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0x5eed_c0de_2026_1201)
}

#[test]
fn random_tcp_matches_nf_conntrack() {
    check_parity(&tcp_random_sequences(random_seed(), random_count(80)));
}

#[test]
fn random_tcp_over_ipv6_matches_nf_conntrack() {
    check_parity(&over_ipv6(tcp_random_sequences(
        random_seed() ^ 6,
        random_count(30),
    )));
}

#[test]
fn random_open_tcp_matches_nf_conntrack() {
    check_parity(&tcp_random_open_sequences(
        random_seed() ^ 0x0be,
        random_count(60),
    ));
}

#[test]
fn random_open_tcp_liberal_matches_nf_conntrack() {
    let seqs = tcp_random_open_sequences(random_seed() ^ 0x11b, random_count(30));
    check_parity(&seqs.into_iter().map(Seq::liberal).collect::<Vec<_>>());
}

#[test]
fn random_open_tcp_over_ipv6_matches_nf_conntrack() {
    check_parity(&over_ipv6(tcp_random_open_sequences(
        random_seed() ^ 0x0be6,
        random_count(30),
    )));
}

#[test]
fn random_flows_and_errors_match_nf_conntrack() {
    check_parity(&mixed_random_sequences(
        Family::V4,
        random_seed() ^ 4,
        random_count(40),
    ));
}

#[test]
fn random_flows_and_icmpv6_errors_match_nf_conntrack() {
    check_parity(&mixed_random_sequences(
        Family::V6,
        random_seed() ^ 0x66,
        random_count(40),
    ));
}

#[test]
fn tcp_over_ipv6_matches_nf_conntrack() {
    check_parity(&over_ipv6(tcp_sequences()));
}

#[test]
fn udp_and_icmpv6_echo_match_nf_conntrack() {
    let mut seqs = udp_icmp_sequences(Family::V6);
    seqs.extend(icmpv6_sequences());
    check_parity(&seqs);
}

#[test]
fn checksums_over_ipv6_match_nf_conntrack() {
    check_parity(&checksum_sequences(Family::V6));
}

#[test]
fn icmpv6_errors_match_nf_conntrack() {
    check_parity(&icmp_error_sequences(Family::V6));
}

#[test]
fn ipv6_extension_headers_match_nf_conntrack() {
    check_parity(&ipv6_extension_sequences());
}

#[test]
fn tcp_windows_over_ipv6_match_nf_conntrack() {
    check_parity(&over_ipv6(tcp_window_sequences()));
}

#[test]
fn tcp_liberal_over_ipv6_matches_nf_conntrack() {
    check_parity(&over_ipv6(tcp_liberal_sequences()));
}

#[test]
fn udp_streams_over_ipv6_match_nf_conntrack_after_two_seconds() {
    check_parity(&over_ipv6(udp_slow_sequences()));
}
