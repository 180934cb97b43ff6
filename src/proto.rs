//! Protocol facts Rust needs, in one place: IP protocol numbers, TCP flag
//! bits, ICMP types, and the names of the tracker's TCP states (from
//! conntrack.h, through the object's BTF).

use crate::bpf::names;

/// IANA protocol numbers the tracker knows.
pub const IPPROTO_ICMP: u8 = 1;
/// TCP.
pub const IPPROTO_TCP: u8 = 6;
/// UDP.
pub const IPPROTO_UDP: u8 = 17;
/// ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// ICMP echo request.
pub const ICMP_ECHO: u8 = 8;
/// ICMP echo reply.
pub const ICMP_ECHOREPLY: u8 = 0;
/// ICMP timestamp request (its reply is 14).
pub const ICMP_TIMESTAMP: u8 = 13;
/// ICMP information request (its reply is 16).
pub const ICMP_INFO_REQUEST: u8 = 15;
/// ICMP address mask request (its reply is 18).
pub const ICMP_ADDRESS: u8 = 17;

/// ICMPv6 echo request (its reply is 129).
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// The type of the answer to an ICMP query of type `request`, as the
/// reply tuple of `conntrack -L` shows it (the kernel's `invmap[]`): echo
/// (8) is answered by 0, the other queries by their type + 1, ICMPv6's
/// (echo 128, node information 139) too.
pub fn icmp_reply_type(request: u8) -> u8 {
    match request {
        ICMP_ECHO => ICMP_ECHOREPLY,
        t => t.wrapping_add(1),
    }
}

/// TCP flag bits, in the byte after the data offset (RFC 9293).
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
    /// ECE (ECN echo).
    pub const ECE: u8 = 0x40;
    /// CWR (congestion window reduced).
    pub const CWR: u8 = 0x80;
}

/// The name `conntrack -L` uses for a TCP state (`enum ct_tcp_state`);
/// "INVALID" for a number that is not a state.
pub fn tcp_state_name(state: u8) -> &'static str {
    match names::lookup(names::CT_TCP_STATE, u32::from(state)) {
        Some("MAX" | "IGNORE") | None => "INVALID",
        Some(name) => name,
    }
}

/// The IANA name of a protocol, as `conntrack -L` prints it.
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        IPPROTO_ICMPV6 => "icmpv6",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::types::ct_tcp_state;

    #[test]
    fn state_names_come_from_the_c_enum() {
        assert_eq!(
            tcp_state_name(ct_tcp_state::CT_TCP_ESTABLISHED.0 as u8),
            "ESTABLISHED"
        );
        assert_eq!(
            tcp_state_name(ct_tcp_state::CT_TCP_SYN_SENT2.0 as u8),
            "SYN_SENT2"
        );
        assert_eq!(tcp_state_name(ct_tcp_state::CT_TCP_NONE.0 as u8), "NONE");
        assert_eq!(tcp_state_name(ct_tcp_state::CT_TCP_MAX.0 as u8), "INVALID");
        assert_eq!(tcp_state_name(200), "INVALID");
    }

    #[test]
    fn each_query_has_its_answer() {
        assert_eq!(icmp_reply_type(ICMP_ECHO), ICMP_ECHOREPLY);
        assert_eq!(icmp_reply_type(ICMP_TIMESTAMP), 14);
        assert_eq!(icmp_reply_type(ICMP_INFO_REQUEST), 16);
        assert_eq!(icmp_reply_type(ICMP_ADDRESS), 18);
    }
}
