//! Building Ethernet frames with IPv4 or IPv6 inside and correct checksums
//! (with etherparse): for the tests, and for the generator's templates.

use std::net::{IpAddr, Ipv6Addr};

use etherparse::{
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header,
    PacketBuilder, PacketBuilderStep, TcpHeader,
};

pub use crate::proto::tcp_flags;
use crate::proto::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// IPv6's ICMP (ICMPv6, RFC 4443).
pub const IPPROTO_ICMPV6: u8 = 58;

/// One end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// IPv4 or IPv6 address.
    pub addr: IpAddr,
    /// Port (TCP/UDP), or the echo id.
    pub port: u16,
}

impl Endpoint {
    /// An address and a port.
    pub fn new(addr: impl Into<IpAddr>, port: u16) -> Self {
        Self {
            addr: addr.into(),
            port,
        }
    }
}

/// Ethernet addressing for built frames.
#[derive(Debug, Clone, Copy)]
pub struct Ether {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
}

impl Default for Ether {
    fn default() -> Self {
        Self {
            dst: [0x02, 0, 0, 0, 0, 0x02],
            src: [0x02, 0, 0, 0, 0, 0x01],
        }
    }
}

/// The TCP window every built segment advertises.
pub const TCP_WINDOW: u16 = 64240;

/// The Internet checksum (RFC 1071) of `data`, folded, with `sum` as a
/// starting partial sum: for tests that edit a header and fix it up.
pub fn checksum(data: &[u8], mut sum: u32) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IP header for `src` -> `dst` (the builder fills in lengths, the
/// protocol and the IPv4 checksum): TTL / hop limit 64, IPv4 with DF.
fn ip_headers(src: IpAddr, dst: IpAddr) -> IpHeaders {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = Ipv4Header::new(0, 64, IpNumber(0), s.octets(), d.octets())
                .expect("a zero payload length always fits");
            h.dont_fragment = true;
            IpHeaders::Ipv4(h, Ipv4Extensions::default())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
            Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: 0,
                next_header: IpNumber(0),
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
            },
            Ipv6Extensions::default(),
        ),
        _ => panic!("a frame from {src} to {dst} mixes address families"),
    }
}

fn ip_builder(eth: &Ether, src: IpAddr, dst: IpAddr) -> PacketBuilderStep<IpHeaders> {
    PacketBuilder::ethernet2(eth.src, eth.dst).ip(ip_headers(src, dst))
}

/// Pads to the Ethernet minimum, as a NIC would.
fn pad(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// Wraps a transport segment into IP and Ethernet.  ICMP and ICMPv6 get
/// their checksum filled in (`l4` holds the 8-byte header, then the
/// body); other protocols go as they are.
pub fn ip_frame(
    eth: &Ether,
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    proto: u8,
    l4: Vec<u8>,
) -> Vec<u8> {
    let b = ip_builder(eth, src.into(), dst.into());
    let mut f = Vec::new();
    let icmp = |l4: &[u8]| (l4[0], l4[1], [l4[4], l4[5], l4[6], l4[7]]);
    let res = match proto {
        IPPROTO_ICMP if l4.len() >= 8 => {
            let (t, c, rest) = icmp(&l4);
            b.icmpv4_raw(t, c, rest).write(&mut f, &l4[8..])
        }
        IPPROTO_ICMPV6 if l4.len() >= 8 => {
            let (t, c, rest) = icmp(&l4);
            b.icmpv6_raw(t, c, rest).write(&mut f, &l4[8..])
        }
        _ => b.write(&mut f, IpNumber(proto), &l4),
    };
    res.expect("writing into a Vec");
    pad(f)
}

/// A TCP option, as a segment carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpOpt {
    /// No-operation (1).
    Nop,
    /// Maximum segment size (2).
    Mss(u16),
    /// Window scale (3): the shift.
    WindowScale(u8),
    /// SACK permitted (4).
    SackPerm,
    /// SACK (5): (left, right) edges of up to four blocks.
    Sack(Vec<(u32, u32)>),
    /// Timestamps (8): value and echo reply.
    Timestamp(u32, u32),
    /// Bytes as they are, for malformed options.
    Raw(Vec<u8>),
}

impl TcpOpt {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Nop => vec![1],
            Self::Mss(m) => [&[2, 4][..], &m.to_be_bytes()].concat(),
            Self::WindowScale(s) => vec![3, 3, *s],
            Self::SackPerm => vec![4, 2],
            Self::Sack(blocks) => {
                let mut b = vec![5, (2 + 8 * blocks.len()) as u8];
                for (l, r) in blocks {
                    b.extend_from_slice(&l.to_be_bytes());
                    b.extend_from_slice(&r.to_be_bytes());
                }
                b
            }
            Self::Timestamp(v, e) => [&[8, 10][..], &v.to_be_bytes(), &e.to_be_bytes()].concat(),
            Self::Raw(b) => b.clone(),
        }
    }
}

/// A TCP segment: flags (`tcp_flags`), numbers, window, options, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// TCP flag bits.
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number, written whether or not ACK is set.
    pub ack: u32,
    /// Window, unscaled.
    pub win: u16,
    /// Options, padded with end-of-list to a multiple of 4 bytes.
    pub opts: Vec<TcpOpt>,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Segment {
    /// A segment with the default window, no options and no payload.
    pub fn new(flags: u8, seq: u32, ack: u32) -> Self {
        Self {
            flags,
            seq,
            ack,
            win: TCP_WINDOW,
            opts: Vec::new(),
            payload: Vec::new(),
        }
    }
}

/// The frame of a TCP segment from `src` to `dst`.
pub fn tcp_segment(eth: &Ether, src: Endpoint, dst: Endpoint, seg: &Segment) -> Vec<u8> {
    use tcp_flags::*;
    let flags = seg.flags;
    let mut th = TcpHeader::new(src.port, dst.port, seg.seq, seg.win);
    th.acknowledgment_number = seg.ack;
    th.fin = flags & FIN != 0;
    th.syn = flags & SYN != 0;
    th.rst = flags & RST != 0;
    th.psh = flags & PSH != 0;
    th.ack = flags & ACK != 0;
    th.urg = flags & URG != 0;
    th.ece = flags & ECE != 0;
    th.cwr = flags & CWR != 0;
    let mut opts: Vec<u8> = seg.opts.iter().flat_map(TcpOpt::bytes).collect();
    opts.resize(opts.len().div_ceil(4) * 4, 0);
    th.set_options_raw(&opts)
        .expect("at most 40 bytes of options");
    let mut f = Vec::new();
    ip_builder(eth, src.addr, dst.addr)
        .tcp_header(th)
        .write(&mut f, &seg.payload)
        .expect("writing into a Vec");
    pad(f)
}

/// A TCP segment with `flags` (`tcp_flags`), `seq`, `ack` and `payload`,
/// the default window and no options.
pub fn tcp(
    eth: &Ether,
    src: Endpoint,
    dst: Endpoint,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let seg = Segment {
        payload: payload.to_vec(),
        ..Segment::new(flags, seq, ack)
    };
    tcp_segment(eth, src, dst, &seg)
}

/// A UDP datagram.
pub fn udp(eth: &Ether, src: Endpoint, dst: Endpoint, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    ip_builder(eth, src.addr, dst.addr)
        .udp(src.port, dst.port)
        .write(&mut f, payload)
        .expect("writing into a Vec");
    pad(f)
}

/// An echo request or reply: ICMP type 8 / 0 between IPv4 addresses,
/// ICMPv6 type 128 / 129 between IPv6 ones (`icmp_type` as given).
pub fn icmp_echo(
    eth: &Ether,
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    icmp_type: u8,
    id: u16,
    seq: u16,
) -> Vec<u8> {
    let (src, dst) = (src.into(), dst.into());
    let mut l4 = vec![icmp_type, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(b"xdp-conntrack-ping");
    let proto = if src.is_ipv4() {
        IPPROTO_ICMP
    } else {
        IPPROTO_ICMPV6
    };
    ip_frame(eth, src, dst, proto, l4)
}

/// The offset of the transport header in an untagged frame built here
/// without IP options or extension headers.
pub fn l4_offset(frame: &[u8]) -> usize {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x86dd => 14 + 40,
        _ => 14 + usize::from(frame[14] & 0x0f) * 4,
    }
}

/// An IPv6 extension header, for [`with_ipv6_extensions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-hop options (0): `len` bytes (a multiple of 8, at least 8),
    /// filled with one option: PadN in 8 bytes, else (since a receiver
    /// refuses more than 7 bytes of padding, RFC 4942) an experimental
    /// option (0x1e, RFC 4727) whose type tells a receiver that does not
    /// know it to skip it.
    HopByHop(usize),
    /// Destination options (60), laid out as [`Ipv6Ext::HopByHop`].
    DestOpts(usize),
    /// A routing header (43) of `routing_type`, with `segments_left` and
    /// the addresses it lists (type 0's layout: 4 reserved bytes, then the
    /// addresses).
    Routing {
        /// Its type (0, the deprecated source route, say).
        routing_type: u8,
        /// Segments left: 0 when the packet is at its final destination.
        segments_left: u8,
        /// The addresses.
        addrs: Vec<Ipv6Addr>,
    },
    /// A fragment header (44): the offset in 8-byte units, the M flag (more
    /// fragments follow) and the identification.  Offset 0 without M is
    /// an atomic fragment (RFC 6946): the whole datagram.
    Fragment {
        /// Fragment offset, in 8-byte units.
        offset: u16,
        /// More fragments follow.
        more: bool,
        /// Identification.
        id: u32,
    },
}

impl Ipv6Ext {
    /// Its next-header value: what the header before it names it by.
    pub fn header_type(&self) -> u8 {
        match self {
            Self::HopByHop(_) => IPV6_HOP_BY_HOP,
            Self::DestOpts(_) => IPV6_DEST_OPTS,
            Self::Routing { .. } => IPV6_ROUTING,
            Self::Fragment { .. } => IPV6_FRAGMENT,
        }
    }

    /// The header's bytes, with `next` as the header after it.
    pub fn bytes(&self, next: u8) -> Vec<u8> {
        match self {
            Self::HopByHop(len) | Self::DestOpts(len) => {
                assert!(
                    *len >= 8 && len.is_multiple_of(8) && *len <= 2048,
                    "an options header is 8 to 2048 bytes, in 8-byte units: {len}"
                );
                // Next header, length in 8-byte units less one, then one
                // option with the rest as its data: PadN (1) when that is
                // 4 bytes, else the experimental 0x1e.
                let opt = if *len == 8 { 1 } else { 0x1e };
                let mut h = vec![next, (len / 8 - 1) as u8, opt, (len - 4) as u8];
                h.resize(*len, 0);
                h
            }
            Self::Routing {
                routing_type,
                segments_left,
                addrs,
            } => {
                let mut h = vec![next, (2 * addrs.len()) as u8, *routing_type, *segments_left];
                h.extend_from_slice(&[0; 4]);
                for a in addrs {
                    h.extend_from_slice(&a.octets());
                }
                h
            }
            Self::Fragment { offset, more, id } => {
                assert!(*offset < 1 << 13, "a fragment offset has 13 bits: {offset}");
                let field = offset << 3 | u16::from(*more);
                let mut h = vec![next, 0];
                h.extend_from_slice(&field.to_be_bytes());
                h.extend_from_slice(&id.to_be_bytes());
                h
            }
        }
    }
}

/// IPv6 extension header types (next-header values).
pub const IPV6_HOP_BY_HOP: u8 = 0;
/// Routing header.
pub const IPV6_ROUTING: u8 = 43;
/// Fragment header.
pub const IPV6_FRAGMENT: u8 = 44;
/// Authentication header.
pub const IPV6_AUTH: u8 = 51;
/// Destination options.
pub const IPV6_DEST_OPTS: u8 = 60;

/// A copy of an IPv6 frame with `exts` between its fixed header and what
/// followed it, in that order; the payload length grows to match.  The
/// transport checksum stays right: its pseudo-header has the same
/// addresses, upper-layer length and protocol (as long as no routing
/// header has segments left, which would name another final destination).
pub fn with_ipv6_extensions(frame: &[u8], exts: &[Ipv6Ext]) -> Vec<u8> {
    let (ip, ethertype) = l3_at(frame).expect("an IP frame");
    assert_eq!(ethertype, ETHERTYPE_IPV6, "an IPv6 frame");
    let plen = usize::from(u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]));
    let payload = ip + 40;
    let mut next = frame[ip + 6];
    let mut chain = Vec::new();
    for e in exts.iter().rev() {
        chain.splice(0..0, e.bytes(next));
        next = e.header_type();
    }
    let mut f = frame[..payload].to_vec();
    f[ip + 6] = next;
    f.extend_from_slice(&chain);
    f.extend_from_slice(&frame[payload..payload + plen]);
    let plen = u16::try_from(plen + chain.len()).expect("a payload below 64 KiB");
    f[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
    pad(f)
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Where the IP header of an Ethernet frame starts, behind up to two VLAN
/// tags, and its ethertype (IPv4's or IPv6's); None for anything else.
fn l3_at(frame: &[u8]) -> Option<(usize, u16)> {
    let mut at = 12;
    for _ in 0..=2 {
        let ethertype = u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
        match ethertype {
            0x8100 | 0x88a8 => at += 4,
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => return Some((at + 2, ethertype)),
            _ => return None,
        }
    }
    None
}

/// Where the IPv4 header of an Ethernet frame starts, behind up to two
/// VLAN tags; None for anything else.
fn ipv4_at(frame: &[u8]) -> Option<usize> {
    match l3_at(frame)? {
        (at, ETHERTYPE_IPV4) => Some(at),
        _ => None,
    }
}

/// Where the checksum field of a transport protocol sits in its header.
fn l4_checksum_at(proto: u8) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(16),
        IPPROTO_UDP => Some(6),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => Some(2),
        _ => None,
    }
}

/// The transport segment of an IP frame, as its header delimits it.
#[derive(Debug, Clone, Copy)]
struct L4Segment {
    /// Where the IP header starts.
    ip: usize,
    /// IPv6 (else IPv4).
    v6: bool,
    /// Where the transport header starts.
    l4: usize,
    /// Where the datagram ends (clipped to the frame).
    end: usize,
    /// The transport protocol.
    proto: u8,
    /// A fragment of a larger datagram (not an atomic one): the
    /// transport checksum covers more than this frame.
    fragment: bool,
}

impl L4Segment {
    /// The pseudo-header's sum (RFC 768, RFC 8200): none for ICMP.
    fn pseudo(&self, frame: &[u8]) -> u32 {
        if self.proto == IPPROTO_ICMP {
            return 0;
        }
        let addrs = if self.v6 {
            &frame[self.ip + 8..self.ip + 40]
        } else {
            &frame[self.ip + 12..self.ip + 20]
        };
        let words: u32 = addrs
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        words + u32::from(self.proto) + (self.end - self.l4) as u32
    }

    /// Where the transport checksum sits, if the segment holds it.
    fn checksum_at(&self) -> Option<usize> {
        let at = self.l4 + l4_checksum_at(self.proto)?;
        (at + 2 <= self.end).then_some(at)
    }
}

/// The transport segment of an IPv4 or IPv6 frame.  IPv6's extension
/// headers (hop-by-hop, routing, fragment, authentication, destination
/// options) are stepped over; a later fragment's "transport" is the
/// fragment header's next header at its offset.
fn l4_segment(frame: &[u8]) -> Option<L4Segment> {
    let (ip, ethertype) = l3_at(frame)?;
    if ethertype == ETHERTYPE_IPV4 {
        let hdr = frame.get(ip..ip + 20)?;
        let hlen = usize::from(hdr[0] & 0x0f) * 4;
        let tot = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
        let end = (ip + tot).min(frame.len());
        let fragment = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x3fff != 0;
        return (hlen >= 20 && ip + hlen <= end).then_some(L4Segment {
            ip,
            v6: false,
            l4: ip + hlen,
            end,
            proto: hdr[9],
            fragment,
        });
    }
    let hdr = frame.get(ip..ip + 40)?;
    let plen = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    let end = (ip + 40 + plen).min(frame.len());
    let (mut at, mut next, mut fragment) = (ip + 40, hdr[6], false);
    loop {
        let len = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                (usize::from(*frame.get(at + 1)?) + 1) * 8
            }
            IPV6_AUTH => (usize::from(*frame.get(at + 1)?) + 2) * 4,
            IPV6_FRAGMENT => {
                let field = u16::from_be_bytes(frame.get(at + 2..at + 4)?.try_into().ok()?);
                fragment |= field & 0xfff9 != 0;
                8
            }
            _ => break,
        };
        if at + len > end {
            return None;
        }
        next = frame[at];
        at += len;
    }
    Some(L4Segment {
        ip,
        v6: true,
        l4: at,
        end,
        proto: next,
        fragment,
    })
}

/// Recomputes the checksums of an IPv4 or IPv6 frame after an edit: the
/// IPv4 header's, and the TCP, UDP, ICMP or ICMPv6 checksum over the
/// segment as the IP header delimits it (as far as the frame holds it;
/// behind IPv6's extension headers, with the pseudo-header of the fixed
/// header's addresses), so that a test's edit is the frame's only fault.
/// A UDP checksum of 0 ("none") stays 0; fragments keep their transport
/// checksum.
pub fn fix_checksums(frame: &mut [u8]) {
    if let Some(ip) = ipv4_at(frame) {
        if frame.len() < ip + 20 {
            return;
        }
        let hlen = (usize::from(frame[ip] & 0x0f) * 4).clamp(20, frame.len() - ip);
        frame[ip + 10..ip + 12].fill(0);
        let c = checksum(&frame[ip..ip + hlen], 0);
        frame[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    }
    let Some(seg) = l4_segment(frame) else {
        return;
    };
    let Some(at) = seg.checksum_at() else {
        return;
    };
    if seg.fragment {
        return;
    }
    if seg.proto == IPPROTO_UDP && frame[at..at + 2] == [0, 0] {
        return;
    }
    frame[at..at + 2].fill(0);
    let mut c = checksum(&frame[seg.l4..seg.end], seg.pseudo(frame));
    // RFC 768: a computed 0 goes out as 0xffff, since 0 means "none".
    if seg.proto == IPPROTO_UDP && c == 0 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A copy of an IPv4 or IPv6 frame whose TCP, UDP, ICMP or ICMPv6
/// checksum is wrong, and nothing else: the field gets a value that is
/// neither right nor one's complement's other zero (0x0000 and 0xffff add
/// the same) nor 0.
pub fn corrupt_l4_checksum(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let seg = l4_segment(&f).expect("an IP frame");
    l4_checksum_at(seg.proto).expect("a TCP, UDP, ICMP or ICMPv6 segment");
    let at = seg
        .checksum_at()
        .expect("the segment is too short for its checksum");
    let right = u16::from_be_bytes([f[at], f[at + 1]]);
    let wrong: u16 = if right == 0x1234 { 0x4321 } else { 0x1234 };
    f[at..at + 2].copy_from_slice(&wrong.to_be_bytes());
    f
}

/// A copy of an IPv4 frame with `opts` (whole 32-bit words) inserted
/// behind its header, its lengths and checksums fixed (the transport's
/// too: a fault goes on afterwards).  Bytes past the datagram go.
pub fn with_ip_options(frame: &[u8], opts: &[u8]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0, "IPv4 options fill whole words");
    let ip = ipv4_at(frame).expect("an IPv4 frame");
    let hlen = usize::from(frame[ip] & 0x0f) * 4;
    assert!(hlen + opts.len() <= 60, "at most 40 bytes of IPv4 options");
    let tot = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
    let mut f = frame[..ip + hlen].to_vec();
    f.extend_from_slice(opts);
    f.extend_from_slice(&frame[ip + hlen..ip + tot]);
    f[ip] = 0x40 | ((hlen + opts.len()) / 4) as u8;
    f[ip + 2..ip + 4].copy_from_slice(&((tot + opts.len()) as u16).to_be_bytes());
    let mut f = pad(f);
    fix_checksums(&mut f);
    f
}

/// A copy of an IPv4 frame whose IP header checksum is wrong, and nothing
/// else.
pub fn corrupt_ip_checksum(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let ip = ipv4_at(&f).expect("an IPv4 frame");
    let right = u16::from_be_bytes([f[ip + 10], f[ip + 11]]);
    let wrong: u16 = if right == 0x1234 { 0x4321 } else { 0x1234 };
    f[ip + 10..ip + 12].copy_from_slice(&wrong.to_be_bytes());
    f
}

/// A copy of a UDP frame that carries no checksum (0): IPv4 allows it,
/// IPv6 only for tunnels (RFC 6935), so an IPv6 one is wrong on purpose.
pub fn without_udp_checksum(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let seg = l4_segment(&f).expect("an IP frame");
    assert_eq!(seg.proto, IPPROTO_UDP, "a UDP frame");
    f[seg.l4 + 6..seg.l4 + 8].fill(0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use tcp_flags::*;

    /// The pseudo-header sum of RFC 793 / RFC 8200.
    fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
        let words = |a: IpAddr| -> Vec<u8> {
            match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            }
        };
        let mut bytes = words(src);
        bytes.extend(words(dst));
        let sum: u32 = bytes
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        sum + u32::from(proto) + len as u32
    }

    #[test]
    fn checksums_verify_to_zero_for_both_families() {
        let v4 = (Ipv4Addr::new(10, 1, 1, 100), Ipv4Addr::new(10, 2, 2, 100));
        let v6: (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        for (s, d) in [
            (IpAddr::from(v4.0), IpAddr::from(v4.1)),
            (v6.0.into(), v6.1.into()),
        ] {
            let a = Endpoint::new(s, 23420);
            let b = Endpoint::new(d, 8080);
            let f = tcp(&Ether::default(), a, b, SYN | ECE | CWR, 100, 7, b"hi");
            let at = l4_offset(&f);
            if s.is_ipv4() {
                assert_eq!(checksum(&f[14..34], 0), 0, "IPv4 header");
                assert_eq!(f[14 + 6], 0x40, "DF");
            }
            let seg = &f[at..at + 22];
            assert_eq!(checksum(seg, pseudo(s, d, 6, 22)), 0);
            assert_eq!(seg[13], SYN | ECE | CWR);
            assert_eq!(&seg[8..12], &7u32.to_be_bytes(), "ack without ACK");

            let u = udp(&Ether::default(), a, b, b"hello");
            let at = l4_offset(&u);
            assert_eq!(checksum(&u[at..at + 13], pseudo(s, d, 17, 13)), 0);

            let e = icmp_echo(
                &Ether::default(),
                s,
                d,
                if s.is_ipv4() { 8 } else { 128 },
                7,
                1,
            );
            let p = SlicedPacket::from_ethernet(&e).unwrap();
            assert!(matches!(
                (p.net, p.transport),
                (Some(NetSlice::Ipv4(_)), Some(TransportSlice::Icmpv4(_)))
                    | (Some(NetSlice::Ipv6(_)), Some(TransportSlice::Icmpv6(_)))
            ));
            let at = l4_offset(&e);
            let len = e.len().min(at + 26) - at;
            let ps = if s.is_ipv4() {
                0
            } else {
                pseudo(s, d, IPPROTO_ICMPV6, len)
            };
            assert_eq!(checksum(&e[at..at + len], ps), 0, "ICMP of {s}");
        }
    }

    /// Whether the frame's IPv4 header (true for IPv6, which has no
    /// header checksum) and transport checksums verify (a UDP checksum of 0
    /// counts as none).
    fn sums_verify(f: &[u8]) -> (bool, bool) {
        let seg = l4_segment(f).unwrap();
        let (ip, l4, end, proto) = (seg.ip, seg.l4, seg.end, seg.proto);
        let at = l4 + l4_checksum_at(proto).unwrap();
        let (src, dst, header) = if seg.v6 {
            let addr = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&f[at..at + 16]).unwrap());
            (addr(ip + 8), addr(ip + 24), true)
        } else {
            let addr = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&f[at..at + 4]).unwrap());
            let hlen = usize::from(f[ip] & 0x0f) * 4;
            (
                addr(ip + 12),
                addr(ip + 16),
                checksum(&f[ip..ip + hlen], 0) == 0,
            )
        };
        let ps = if proto == IPPROTO_ICMP {
            0
        } else {
            pseudo(src, dst, proto, end - l4)
        };
        let none = proto == IPPROTO_UDP && f[at..at + 2] == [0, 0];
        (header, none || checksum(&f[l4..end], ps) == 0)
    }

    #[test]
    fn checksums_are_corrupted_one_at_a_time_and_fixed_back() {
        let a = Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 23420);
        let b = Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080);
        let e = Ether::default();
        let frames = [
            tcp(&e, a, b, SYN, 100, 0, b""),
            tcp(&e, a, b, ACK, 101, 201, &[7; 1461]),
            udp(&e, a, b, b"odd"),
            icmp_echo(&e, a.addr, b.addr, 8, 7, 1),
        ];
        for f in &frames {
            assert_eq!(sums_verify(f), (true, true));
            let bad = corrupt_l4_checksum(f);
            assert_eq!(sums_verify(&bad), (true, false));
            let seg = l4_segment(f).unwrap();
            let at = seg.l4 + l4_checksum_at(seg.proto).unwrap();
            let changed: Vec<usize> = (0..f.len()).filter(|&i| bad[i] != f[i]).collect();
            assert!(
                !changed.is_empty() && changed.iter().all(|&i| i == at || i == at + 1),
                "only the checksum changes: {changed:?}"
            );
            let mut fixed = bad.clone();
            fix_checksums(&mut fixed);
            assert_eq!(&fixed, f, "fixed back");
            let bad_ip = corrupt_ip_checksum(f);
            assert_eq!(sums_verify(&bad_ip), (false, true));
            let mut fixed = bad_ip.clone();
            fix_checksums(&mut fixed);
            assert_eq!(&fixed, f, "fixed back");
        }
        // Behind VLAN tags, and a UDP datagram without a checksum stays so.
        let mut tagged = frames[2][..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0, 100]);
        tagged.extend_from_slice(&frames[2][12..]);
        assert_eq!(sums_verify(&corrupt_l4_checksum(&tagged)), (true, false));
        let none = without_udp_checksum(&tagged);
        let mut fixed = none.clone();
        fix_checksums(&mut fixed);
        assert_eq!(fixed, none);
        assert_eq!(sums_verify(&none), (true, true));
    }

    fn v6_ends() -> (Endpoint, Endpoint) {
        let a: Ipv6Addr = "fd01::100".parse().unwrap();
        let b: Ipv6Addr = "fd02::100".parse().unwrap();
        (Endpoint::new(a, 23420), Endpoint::new(b, 8080))
    }

    fn every_extension() -> Vec<Ipv6Ext> {
        vec![
            Ipv6Ext::HopByHop(8),
            Ipv6Ext::DestOpts(16),
            Ipv6Ext::Routing {
                routing_type: 0,
                segments_left: 0,
                addrs: vec!["fd09::1".parse().unwrap()],
            },
            Ipv6Ext::Fragment {
                offset: 0,
                more: false,
                id: 7,
            },
            Ipv6Ext::DestOpts(8),
        ]
    }

    #[test]
    fn extension_headers_are_chained_in_order_before_the_transport_header() {
        let (a, b) = v6_ends();
        let e = Ether::default();
        let syn = tcp(&e, a, b, SYN, 100, 0, b"hello");
        let exts = every_extension();
        let f = with_ipv6_extensions(&syn, &exts);
        // 8 + 16 + 24 + 8 + 8 bytes of headers, named one by the next.
        assert_eq!(f[14 + 6], IPV6_HOP_BY_HOP);
        let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
        assert_eq!(plen, 64 + 20 + 5);
        let at = [54, 62, 78, 102, 110];
        let next = [
            IPV6_DEST_OPTS,
            IPV6_ROUTING,
            IPV6_FRAGMENT,
            IPV6_DEST_OPTS,
            6,
        ];
        for (i, (&at, &next)) in at.iter().zip(&next).enumerate() {
            assert_eq!(f[at], next, "header {i}'s next header");
        }
        assert_eq!(&f[54 + 2..54 + 4], &[1, 4], "PadN over the rest");
        assert_eq!(&f[62 + 2..62 + 4], &[0x1e, 12], "more than PadN may pad");
        assert_eq!(
            &f[78 + 1..78 + 4],
            &[2, 0, 0],
            "one address, type 0, none left"
        );
        assert_eq!(&f[102 + 2..102 + 8], &[0, 0, 0, 0, 0, 7], "atomic, id 7");
        assert_eq!(&f[118..], &syn[54..54 + 25], "the segment behind them");
        // etherparse walks the chain to the same TCP header, and the sum
        // (same pseudo-header) still verifies.
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        assert!(matches!(p.transport, Some(TransportSlice::Tcp(_))));
        let seg = l4_segment(&f).unwrap();
        assert_eq!(
            (seg.l4, seg.end, seg.proto, seg.fragment),
            (118, 143, 6, false)
        );
        assert_eq!(sums_verify(&f), (true, true));
        // A real fragment is one.
        let frag = with_ipv6_extensions(
            &syn,
            &[Ipv6Ext::Fragment {
                offset: 0,
                more: true,
                id: 7,
            }],
        );
        assert!(l4_segment(&frag).unwrap().fragment);
    }

    #[test]
    fn ipv6_checksums_are_corrupted_and_fixed_behind_extension_headers() {
        let (a, b) = v6_ends();
        let e = Ether::default();
        let exts = every_extension();
        let frames = [
            tcp(&e, a, b, SYN, 100, 0, b""),
            tcp(&e, a, b, ACK, 101, 201, &[7; 1461]),
            udp(&e, a, b, b"odd"),
            icmp_echo(&e, a.addr, b.addr, 128, 7, 1),
        ];
        for f in frames
            .iter()
            .flat_map(|f| [f.clone(), with_ipv6_extensions(f, &exts)])
        {
            assert_eq!(sums_verify(&f), (true, true));
            let bad = corrupt_l4_checksum(&f);
            assert_eq!(sums_verify(&bad), (true, false));
            let seg = l4_segment(&f).unwrap();
            let at = seg.l4 + l4_checksum_at(seg.proto).unwrap();
            let changed: Vec<usize> = (0..f.len()).filter(|&i| bad[i] != f[i]).collect();
            assert!(
                !changed.is_empty() && changed.iter().all(|&i| i == at || i == at + 1),
                "only the checksum changes: {changed:?}"
            );
            let mut fixed = bad.clone();
            fix_checksums(&mut fixed);
            assert_eq!(fixed, f, "fixed back");
            // An edit behind the headers, then fixed: the sum is right again.
            let mut edited = f.clone();
            edited[seg.end - 1] ^= 0x5a;
            assert_eq!(sums_verify(&edited), (true, false));
            fix_checksums(&mut edited);
            assert_eq!(sums_verify(&edited), (true, true));
        }
        // A UDP datagram without a checksum stays so.
        let none = without_udp_checksum(&with_ipv6_extensions(&frames[2], &exts));
        let mut fixed = none.clone();
        fix_checksums(&mut fixed);
        assert_eq!(fixed, none);
        assert_eq!(&none[118 + 6..118 + 8], &[0, 0]);
    }

    #[test]
    fn tcp_options_are_laid_out_and_padded() {
        let a = Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 1);
        let b = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 2);
        let seg = Segment {
            win: 512,
            opts: vec![
                TcpOpt::Mss(1460),
                TcpOpt::SackPerm,
                TcpOpt::Nop,
                TcpOpt::WindowScale(7),
                TcpOpt::Sack(vec![(5, 9)]),
            ],
            ..Segment::new(SYN, 100, 0)
        };
        let f = tcp_segment(&Ether::default(), a, b, &seg);
        let t = &f[34..];
        // 4 + 2 + 1 + 3 + 10 = 20 bytes of options: doff 10.
        assert_eq!(t[12] >> 4, 10);
        assert_eq!(&t[14..16], &512u16.to_be_bytes());
        assert_eq!(&t[20..30], &[2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7]);
        assert_eq!(&t[30..40], &[5, 10, 0, 0, 0, 5, 0, 0, 0, 9]);
        let odd = Segment {
            opts: vec![TcpOpt::WindowScale(2)],
            ..Segment::new(SYN, 1, 0)
        };
        let f = tcp_segment(&Ether::default(), a, b, &odd);
        assert_eq!(&f[34 + 20..34 + 24], &[3, 3, 2, 0], "EOL pads to 4");
    }

    #[test]
    fn short_frames_are_padded_to_the_ethernet_minimum() {
        let a = Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 1);
        let b = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 2);
        assert_eq!(tcp(&Ether::default(), a, b, ACK, 1, 1, b"").len(), 60);
        assert_eq!(udp(&Ether::default(), a, b, b"").len(), 60);
    }
}
