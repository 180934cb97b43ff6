//! AF_PACKET sockets: whole Ethernet frames out of an interface of the
//! network namespace the socket was opened in, for the generator's socket
//! sender and the tests that inject frames.

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{
    bind, send, sendto, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike,
};

/// An AF_PACKET raw socket of protocol 0: it sends frames as they are, and
/// receives none.
#[derive(Debug)]
pub struct PacketSocket(OwnedFd);

impl PacketSocket {
    /// Opens one in the calling thread's network namespace, not bound to
    /// an interface: it sends with [`send_to`](Self::send_to).
    pub fn open() -> Result<Self> {
        socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map(Self)
        .map_err(std::io::Error::from)
        .context("opening an AF_PACKET socket")
    }

    /// Opens one bound to `ifindex` of the calling thread's network
    /// namespace: it sends out of that interface with [`send`](Self::send).
    /// With `qdisc_bypass`, frames skip the interface's qdisc
    /// (PACKET_QDISC_BYPASS) where the kernel allows it; elsewhere only
    /// speed is lost.
    pub fn bound(ifindex: u32, qdisc_bypass: bool) -> Result<Self> {
        let sock = Self::open()?;
        bind(sock.0.as_raw_fd(), &link_addr(ifindex, 0, None))
            .map_err(std::io::Error::from)
            .context("binding the AF_PACKET socket")?;
        if qdisc_bypass {
            let one: libc::c_int = 1;
            // SAFETY: PACKET_QDISC_BYPASS takes an int, passed with its
            // size; the fd is our open socket.  The result is ignored on
            // purpose (see above).
            unsafe {
                libc::setsockopt(
                    sock.0.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        Ok(sock)
    }

    /// Sends `frame` out of the bound interface, waiting while the device
    /// queue is full (ENOBUFS).
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        loop {
            match send(self.0.as_raw_fd(), frame, MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                // The device queue is full: let it drain.
                Err(Errno::ENOBUFS) => std::thread::yield_now(),
                Err(e) => {
                    return Err(std::io::Error::from(e)).context("sending on the AF_PACKET socket")
                }
            }
        }
    }

    /// Sends `frame` once out of `ifindex` to the station `mac`, as a
    /// frame of EtherType `protocol`; returns the bytes sent.
    pub fn send_to(
        &self,
        frame: &[u8],
        ifindex: u32,
        protocol: u16,
        mac: [u8; 6],
    ) -> Result<usize> {
        sendto(
            self.0.as_raw_fd(),
            frame,
            &link_addr(ifindex, protocol, Some(mac)),
            MsgFlags::empty(),
        )
        .map_err(std::io::Error::from)
        .context("sending on the AF_PACKET socket")
    }
}

/// The link-layer address of `ifindex` (struct sockaddr_ll), with
/// `protocol` in host order and the station `mac` if any.
fn link_addr(ifindex: u32, protocol: u16, mac: Option<[u8; 6]>) -> LinkAddr {
    let mut sll_addr = [0u8; 8];
    if let Some(mac) = mac {
        sll_addr[..6].copy_from_slice(&mac);
    }
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: if mac.is_some() { 6 } else { 0 },
        sll_addr,
    };
    // SAFETY: sll is a whole sockaddr_ll of family AF_PACKET and of the
    // size given; LinkAddr copies it.
    unsafe {
        LinkAddr::from_raw(
            (&sll as *const libc::sockaddr_ll).cast(),
            Some(std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t),
        )
    }
    .expect("a sockaddr_ll of family AF_PACKET")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_addresses_carry_what_was_given() {
        let a = link_addr(7, 0x0800, Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(a.ifindex(), 7);
        assert_eq!(a.protocol(), 0x0800u16.to_be());
        assert_eq!(a.halen(), 6);
        assert_eq!(a.addr(), Some([2, 0, 0, 0, 0, 9]));
        let b = link_addr(3, 0, None);
        assert_eq!((b.ifindex(), b.protocol(), b.halen()), (3, 0, 0));
    }
}
