//! Netlink messages as plain bytes: requests, attributes, and the replies'
//! parsers, shared by the rtnetlink peer check and the tests' nfnetlink
//! reads of the kernel's own conntrack and nftables state.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;
use nix::sys::socket::{recv, send, MsgFlags};

/// struct nlmsghdr's size; payloads start here.
pub const NLMSG_HDRLEN: usize = size_of::<libc::nlmsghdr>();
/// Attribute types carry two flag bits (NLA_F_NESTED, NLA_F_NET_BYTEORDER).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A request: struct nlmsghdr with NLM_F_REQUEST and `flags`, then
/// `payload` (the fixed header and any attributes, already aligned).
pub fn request(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + payload.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    msg.extend_from_slice(payload);
    msg
}

/// One attribute: struct nlattr (length, type), then the value, padded
/// to 4 bytes.
pub fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut a = Vec::with_capacity((len + 3) & !3);
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize((len + 3) & !3, 0);
    a
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    buf.get(at..at + 2)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
}

/// The messages in `buf`, each as its type and what follows its header.
/// None if one does not add up (a length past the buffer or shorter than
/// a header).
pub fn messages(buf: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let len = u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return None;
        }
        out.push((u16_at(buf, at + 4)?, &buf[at + NLMSG_HDRLEN..at + len]));
        at += (len + 3) & !3;
    }
    Some(out)
}

/// The attributes in `buf` (a message's payload past its fixed header,
/// or a nested attribute's value), flag bits masked off.  None if one
/// does not add up.
pub fn attrs(buf: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= buf.len() {
        let alen = usize::from(u16_at(buf, at)?);
        if alen < 4 || at + alen > buf.len() {
            return None;
        }
        out.push((
            u16_at(buf, at + 2)? & NLA_TYPE_MASK,
            &buf[at + 4..at + alen],
        ));
        at += (alen + 3) & !3;
    }
    Some(out)
}

/// The attributes of the first message in `buf` if it has type `want`,
/// after its `fixed`-byte header (struct ifinfomsg, rtgenmsg, ...).
/// None for an error reply, another type, or a message that does not
/// add up.
pub fn parse(buf: &[u8], want: u16, fixed: usize) -> Option<Vec<(u16, &[u8])>> {
    let len = u32::from_ne_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let (kind, payload) = *messages(buf.get(..len)?)?.first()?;
    if kind != want {
        return None;
    }
    attrs(payload.get(fixed..)?)
}

/// The first u32 attribute of type `kind`, in host order.
pub fn attr_u32(attrs: &[(u16, &[u8])], kind: u16) -> Option<u32> {
    attrs
        .iter()
        .find(|(t, v)| *t == kind && v.len() >= 4)
        .map(|(_, v)| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
}

/// The first attribute of type `kind`, as nfnetlink sends numbers: a
/// big-endian u64.
pub fn attr_be64(attrs: &[(u16, &[u8])], kind: u16) -> Option<u64> {
    attrs
        .iter()
        .find(|(t, v)| *t == kind && v.len() >= 8)
        .map(|(_, v)| u64::from_be_bytes(v[..8].try_into().unwrap()))
}

/// Sends the request `msg` on `sock` and gathers the reply's messages
/// until NLMSG_DONE (for NLM_F_DUMP) or an acknowledgement (NLM_F_ACK).
/// Each comes back as its type and payload; an error reply is an error.
pub fn exchange_all(sock: BorrowedFd<'_>, msg: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a netlink reply that does not add up",
        )
    };
    send(sock.as_raw_fd(), msg, MsgFlags::empty())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        for (kind, payload) in messages(&buf[..n]).ok_or_else(bad)? {
            match i32::from(kind) {
                libc::NLMSG_DONE => return Ok(out),
                libc::NLMSG_ERROR => {
                    // struct nlmsgerr: a negative errno, 0 for an ack.
                    let err = payload
                        .get(..4)
                        .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                        .ok_or_else(bad)?;
                    return if err == 0 {
                        Ok(out)
                    } else {
                        Err(io::Error::from_raw_os_error(-err))
                    };
                }
                _ => out.push((kind, payload.to_vec())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as the kernel writes it: header, fixed part, attributes.
    fn reply(kind: u16, fixed: usize, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![0u8; fixed];
        for a in attrs {
            body.extend_from_slice(a);
        }
        request(kind, 0, &body)
    }

    #[test]
    fn requests_and_attributes_are_laid_out_as_the_kernel_reads_them() {
        let m = request(libc::RTM_GETLINK, 0, &[0u8; 16]);
        assert_eq!(m.len(), 32);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), libc::RTM_GETLINK);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 1, "NLM_F_REQUEST");
        let d = request(libc::RTM_GETLINK, libc::NLM_F_DUMP as u16, &[]);
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), 0x301, "NLM_F_DUMP");
        let a = attr(3, &7u32.to_ne_bytes());
        assert_eq!(a.len(), 8);
        assert_eq!(u16::from_ne_bytes([a[0], a[1]]), 8);
        // A 5-byte value pads to 12.
        assert_eq!(attr(9, b"veth1").len(), 12);
    }

    #[test]
    fn the_attributes_are_found_in_a_reply() {
        let buf = reply(
            libc::RTM_NEWLINK,
            16,
            &[
                attr(3, b"veth1\0"), // IFLA_IFNAME, padded
                attr(libc::IFLA_LINK, &42u32.to_ne_bytes()),
                // NLA_F_NESTED on an attribute is masked off.
                attr(libc::IFLA_LINK_NETNSID | 0x8000, &5u32.to_ne_bytes()),
                attr(7, &9u64.to_be_bytes()),
            ],
        );
        let attrs = parse(&buf, libc::RTM_NEWLINK, 16).expect("a reply");
        assert_eq!(attrs.len(), 4);
        assert_eq!(attrs[0], (3, &b"veth1\0"[..]));
        assert_eq!(attr_u32(&attrs, libc::IFLA_LINK), Some(42));
        assert_eq!(attr_u32(&attrs, libc::IFLA_LINK_NETNSID), Some(5));
        assert_eq!(attr_u32(&attrs, 99), None);
        assert_eq!(attr_be64(&attrs, 7), Some(9));
        assert_eq!(attr_be64(&attrs, libc::IFLA_LINK), None, "too short");
    }

    #[test]
    fn a_dump_splits_into_its_messages() {
        let mut buf = reply(20, 4, &[attr(1, b"a\0")]);
        buf.extend(reply(20, 4, &[attr(1, b"bc\0")]));
        buf.extend(reply(libc::NLMSG_DONE as u16, 4, &[]));
        let msgs = messages(&buf).expect("three messages");
        assert_eq!(
            msgs.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [20, 20, libc::NLMSG_DONE as u16]
        );
        assert_eq!(attrs(&msgs[1].1[4..]).unwrap()[0], (1, &b"bc\0"[..]));
        // The last one cut short, or a length shorter than a header.
        assert!(messages(&buf[..buf.len() - 1]).is_none());
        let mut bad = buf.clone();
        bad[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(messages(&bad).is_none());
    }

    #[test]
    fn errors_and_broken_replies_give_nothing() {
        let ok = reply(
            libc::RTM_NEWLINK,
            16,
            &[attr(libc::IFLA_LINK, &1u32.to_ne_bytes())],
        );
        // NLMSG_ERROR, or a type we did not ask for.
        assert!(parse(
            &reply(libc::NLMSG_ERROR as u16, 16, &[]),
            libc::RTM_NEWLINK,
            16
        )
        .is_none());
        assert!(parse(&ok, libc::RTM_NEWNSID, 16).is_none());
        // Cut short: the header claims more than arrived.
        assert!(parse(&ok[..ok.len() - 1], libc::RTM_NEWLINK, 16).is_none());
        assert!(parse(&ok[..10], libc::RTM_NEWLINK, 16).is_none());
        // An attribute whose length runs past the message.
        let mut bad = ok.clone();
        let at = NLMSG_HDRLEN + 16;
        bad[at..at + 2].copy_from_slice(&64u16.to_ne_bytes());
        assert!(parse(&bad, libc::RTM_NEWLINK, 16).is_none());
        // One shorter than its own header.
        bad[at..at + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert!(parse(&bad, libc::RTM_NEWLINK, 16).is_none());
    }
}
