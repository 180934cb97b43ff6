//! Building Ethernet/IPv4 frames with correct checksums: for the tests, and
//! for anything that injects traffic.

use std::net::Ipv4Addr;

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
}

/// IPv4 protocol numbers.
pub const PROTO_ICMP: u8 = 1;
/// TCP.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

/// One end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// IPv4 address.
    pub addr: Ipv4Addr,
    /// Port (TCP/UDP).
    pub port: u16,
}

impl Endpoint {
    /// An address and a port.
    pub fn new(addr: Ipv4Addr, port: u16) -> Self {
        Self { addr, port }
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

/// The Internet checksum (RFC 1071) of `data`, folded, with `sum` as a
/// starting partial sum.
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

fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut sum = 0u32;
    for a in [src.octets(), dst.octets()] {
        sum += u32::from(u16::from_be_bytes([a[0], a[1]]));
        sum += u32::from(u16::from_be_bytes([a[2], a[3]]));
    }
    sum + u32::from(proto) + len as u32
}

/// Wraps an L4 segment (checksum field already zero) into IPv4 and
/// Ethernet, filling in the IPv4 and L4 checksums.
pub fn ipv4_frame(
    eth: &Ether,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    mut l4: Vec<u8>,
) -> Vec<u8> {
    let csum_at = match proto {
        PROTO_TCP => Some(16),
        PROTO_UDP => Some(6),
        PROTO_ICMP => Some(2),
        _ => None,
    };
    if let Some(at) = csum_at {
        let pseudo = if proto == PROTO_ICMP {
            0
        } else {
            pseudo_header_sum(src, dst, proto, l4.len())
        };
        let mut c = checksum(&l4, pseudo);
        if proto == PROTO_UDP && c == 0 {
            c = 0xffff;
        }
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    let tot = 20 + l4.len();
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let mut f = Vec::with_capacity(14 + tot);
    f.extend_from_slice(&eth.dst);
    f.extend_from_slice(&eth.src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    // Pad to the Ethernet minimum, as a NIC would.
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// A TCP segment with `flags`, `seq`, `ack` and `payload`.
pub fn tcp(
    eth: &Ether,
    src: Endpoint,
    dst: Endpoint,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&src.port.to_be_bytes());
    t[2..4].copy_from_slice(&dst.port.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(payload);
    ipv4_frame(eth, src.addr, dst.addr, PROTO_TCP, t)
}

/// A UDP datagram.
pub fn udp(eth: &Ether, src: Endpoint, dst: Endpoint, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&src.port.to_be_bytes());
    u[2..4].copy_from_slice(&dst.port.to_be_bytes());
    u[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(payload);
    ipv4_frame(eth, src.addr, dst.addr, PROTO_UDP, u)
}

/// An ICMP echo request (`icmp_type` 8) or reply (0).
pub fn icmp_echo(
    eth: &Ether,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    icmp_type: u8,
    id: u16,
    seq: u16,
) -> Vec<u8> {
    let mut i = vec![0u8; 8];
    i[0] = icmp_type;
    i[4..6].copy_from_slice(&id.to_be_bytes());
    i[6..8].copy_from_slice(&seq.to_be_bytes());
    i.extend_from_slice(b"xdp-conntrack-ping");
    ipv4_frame(eth, src, dst, PROTO_ICMP, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let a = Endpoint::new(Ipv4Addr::new(10, 1, 1, 100), 23420);
        let b = Endpoint::new(Ipv4Addr::new(10, 2, 2, 100), 8080);
        let f = tcp(&Ether::default(), a, b, tcp_flags::SYN, 100, 0, b"");
        // IPv4 header sums to 0 with its checksum in place.
        assert_eq!(checksum(&f[14..34], 0), 0);
        let seg = &f[34..54];
        let pseudo = pseudo_header_sum(a.addr, b.addr, PROTO_TCP, seg.len());
        assert_eq!(checksum(seg, pseudo), 0);
        assert_eq!(f.len(), 60);
        let u = udp(&Ether::default(), a, b, b"hello");
        let useg = &u[34..34 + 13];
        assert_eq!(
            checksum(useg, pseudo_header_sum(a.addr, b.addr, PROTO_UDP, 13)),
            0
        );
    }
}
