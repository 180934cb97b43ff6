//! Building Ethernet frames with IPv4 or IPv6 inside and correct checksums
//! (with etherparse): for the tests, and for the generator's templates.

use std::net::IpAddr;

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

/// Where the IPv4 header of an Ethernet frame starts, behind up to two
/// VLAN tags; None for anything else.
fn ipv4_at(frame: &[u8]) -> Option<usize> {
    let mut at = 12;
    for _ in 0..=2 {
        let ethertype = u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
        match ethertype {
            0x8100 | 0x88a8 => at += 4,
            0x0800 => return Some(at + 2),
            _ => return None,
        }
    }
    None
}

/// Where the checksum field of a transport protocol sits in its header.
fn l4_checksum_at(proto: u8) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(16),
        IPPROTO_UDP => Some(6),
        IPPROTO_ICMP => Some(2),
        _ => None,
    }
}

/// The transport segment of an IPv4 frame as the IP header delimits it
/// (clipped to the frame): (where it starts, where it ends, protocol).
fn ipv4_segment(frame: &[u8]) -> Option<(usize, usize, u8)> {
    let ip = ipv4_at(frame)?;
    let hdr = frame.get(ip..ip + 20)?;
    let hlen = usize::from(hdr[0] & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    let end = (ip + tot).min(frame.len());
    (hlen >= 20 && ip + hlen <= end).then_some((ip + hlen, end, hdr[9]))
}

/// Recomputes the checksums of an IPv4 frame after an edit: the IP
/// header's, and the TCP, UDP or ICMP checksum over the segment as the
/// header delimits it (as far as the frame holds it), so that a test's
/// edit is the frame's only fault.  A UDP checksum of 0 ("none") stays 0;
/// fragments keep their transport checksum.
pub fn fix_checksums(frame: &mut [u8]) {
    let Some(ip) = ipv4_at(frame) else { return };
    if frame.len() < ip + 20 {
        return;
    }
    let hlen = (usize::from(frame[ip] & 0x0f) * 4).clamp(20, frame.len() - ip);
    frame[ip + 10..ip + 12].fill(0);
    let c = checksum(&frame[ip..ip + hlen], 0);
    frame[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    let fragment = u16::from_be_bytes([frame[ip + 6], frame[ip + 7]]) & 0x3fff != 0;
    let Some((l4, end, proto)) = ipv4_segment(frame) else {
        return;
    };
    let Some(at) = l4_checksum_at(proto) else {
        return;
    };
    if fragment || l4 + at + 2 > end {
        return;
    }
    if proto == IPPROTO_UDP && frame[l4 + at..l4 + at + 2] == [0, 0] {
        return;
    }
    frame[l4 + at..l4 + at + 2].fill(0);
    let pseudo = if proto == IPPROTO_ICMP {
        0
    } else {
        let addrs = &frame[ip + 12..ip + 20];
        let words: u32 = addrs
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        words + u32::from(proto) + (end - l4) as u32
    };
    let mut c = checksum(&frame[l4..end], pseudo);
    // RFC 768: a computed 0 goes out as 0xffff, since 0 means "none".
    if proto == IPPROTO_UDP && c == 0 {
        c = 0xffff;
    }
    frame[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A copy of an IPv4 frame whose TCP, UDP or ICMP checksum is wrong, and
/// nothing else: the field gets a value that is neither right nor one's
/// complement's other zero (0x0000 and 0xffff add the same) nor 0.
pub fn corrupt_l4_checksum(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let (l4, end, proto) = ipv4_segment(&f).expect("an IPv4 frame");
    let at = l4 + l4_checksum_at(proto).expect("a TCP, UDP or ICMP segment");
    assert!(at + 2 <= end, "the segment is too short for its checksum");
    let right = u16::from_be_bytes([f[at], f[at + 1]]);
    let wrong: u16 = if right == 0x1234 { 0x4321 } else { 0x1234 };
    f[at..at + 2].copy_from_slice(&wrong.to_be_bytes());
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

/// A copy of an IPv4 UDP frame that carries no checksum (0, which IPv4
/// allows).
pub fn without_udp_checksum(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let (l4, _, proto) = ipv4_segment(&f).expect("an IPv4 frame");
    assert_eq!(proto, IPPROTO_UDP, "a UDP frame");
    f[l4 + 6..l4 + 8].fill(0);
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

    /// Whether the frame's IPv4 header and transport checksums verify
    /// (a UDP checksum of 0 counts as none).
    fn sums_verify(f: &[u8]) -> (bool, bool) {
        let ip = ipv4_at(f).unwrap();
        let hlen = usize::from(f[ip] & 0x0f) * 4;
        let (l4, end, proto) = ipv4_segment(f).unwrap();
        let at = l4 + l4_checksum_at(proto).unwrap();
        let src = IpAddr::from(<[u8; 4]>::try_from(&f[ip + 12..ip + 16]).unwrap());
        let dst = IpAddr::from(<[u8; 4]>::try_from(&f[ip + 16..ip + 20]).unwrap());
        let ps = if proto == IPPROTO_ICMP {
            0
        } else {
            pseudo(src, dst, proto, end - l4)
        };
        let none = proto == IPPROTO_UDP && f[at..at + 2] == [0, 0];
        (
            checksum(&f[ip..ip + hlen], 0) == 0,
            none || checksum(&f[l4..end], ps) == 0,
        )
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
            let (l4, _, proto) = ipv4_segment(f).unwrap();
            let at = l4 + l4_checksum_at(proto).unwrap();
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
