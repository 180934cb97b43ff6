//! What a veth's peer will do with frames redirected into it (GRO, XDP,
//! checksum offload, multi-buffer frames), through rtnetlink and ethtool.

use std::fs::File;
use std::path::PathBuf;

use super::netns::in_netns_file;
use super::Iface;

/// ethtool and interface ioctls, for the veth peer check.
mod ethtool {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, OwnedFd};

    use nix::libc;
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

    // include/uapi/linux/ethtool.h; the libc crate does not carry these.
    const ETHTOOL_GDRVINFO: u32 = 0x03;
    const ETHTOOL_GTXCSUM: u32 = 0x16;
    const ETHTOOL_GGRO: u32 = 0x2b;

    /// struct ethtool_drvinfo, up to the driver's name (the kernel writes
    /// the whole struct, so the buffer is the struct's full size).
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }

    /// A socket of the calling thread's network namespace to ask through.
    pub struct Ethtool(OwnedFd);

    impl Ethtool {
        pub fn new() -> Option<Self> {
            socket(
                AddressFamily::Inet,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .ok()
            .map(Self)
        }

        /// An ifreq naming `iface`; None if the name does not fit.
        fn ifreq(iface: &str) -> Option<libc::ifreq> {
            let name = CString::new(iface).ok()?;
            let bytes = name.as_bytes_with_nul();
            if bytes.len() > libc::IFNAMSIZ {
                return None;
            }
            // SAFETY: ifreq is plain old data; zero is a valid value.
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
                *d = *s as libc::c_char;
            }
            Some(ifr)
        }

        /// ioctl `req` on `ifr`; whether it succeeded.
        fn ioctl(&self, req: libc::c_ulong, ifr: &mut libc::ifreq) -> bool {
            // SAFETY: the fd is a socket and ifr names an interface; for
            // SIOCETHTOOL it points at a buffer sized for its command.
            unsafe { libc::ioctl(self.0.as_raw_fd(), req as _, ifr as *mut libc::ifreq) == 0 }
        }

        /// SIOCETHTOOL with `data` as the command buffer.
        fn ethtool(&self, iface: &str, data: *mut u8) -> bool {
            let Some(mut ifr) = Self::ifreq(iface) else {
                return false;
            };
            ifr.ifr_ifru.ifru_data = data.cast();
            self.ioctl(libc::SIOCETHTOOL, &mut ifr)
        }

        /// A struct ethtool_value command: Some(value != 0).
        fn flag(&self, iface: &str, cmd: u32) -> Option<bool> {
            let mut v = [cmd, 0u32];
            self.ethtool(iface, v.as_mut_ptr().cast())
                .then_some(v[1] != 0)
        }

        /// The interface's driver, e.g. "veth".
        pub fn driver(&self, iface: &str) -> Option<String> {
            let mut info = DrvInfo {
                cmd: ETHTOOL_GDRVINFO,
                driver: [0; 32],
                rest: [0; 160],
            };
            if !self.ethtool(iface, (&mut info as *mut DrvInfo).cast()) {
                return None;
            }
            let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
            Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
        }

        /// Whether GRO is on.
        pub fn gro(&self, iface: &str) -> Option<bool> {
            self.flag(iface, ETHTOOL_GGRO)
        }

        /// Whether transmit checksum offload is on.
        pub fn tx_csum(&self, iface: &str) -> Option<bool> {
            self.flag(iface, ETHTOOL_GTXCSUM)
        }

        /// The interface's MTU.
        pub fn mtu(&self, iface: &str) -> Option<u32> {
            let mut ifr = Self::ifreq(iface)?;
            if !self.ioctl(libc::SIOCGIFMTU, &mut ifr) {
                return None;
            }
            // SAFETY: SIOCGIFMTU filled ifru_mtu.
            Some(unsafe { ifr.ifr_ifru.ifru_mtu } as u32)
        }
    }
}

/// What a veth peer looks like to redirected frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// The peer's name in its namespace.
    pub name: String,
    /// The namespace it lives in ("" for the tracker's own).
    pub netns: String,
    /// GRO is on.
    pub gro: bool,
    /// An XDP program is attached.
    pub xdp: bool,
    /// Transmit checksum offload is on (TCP through XDP needs it off).
    pub tx_csum: bool,
}

/// Minimal rtnetlink: where a link's peer lives.  One request, one reply.
mod rtnl {
    use std::mem::size_of;
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};

    use nix::libc;
    use nix::sys::socket::{
        recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    };

    use crate::sys::netlink::{attr, attr_u32, parse, request};

    // include/uapi/linux/net_namespace.h; the libc crate does not carry them.
    const NETNSA_NSID: u16 = 1;
    const NETNSA_FD: u16 = 3;

    /// Sends `msg` and returns the kernel's reply.
    fn exchange(msg: &[u8]) -> Option<Vec<u8>> {
        let sock: OwnedFd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .ok()?;
        send(sock.as_raw_fd(), msg, MsgFlags::empty()).ok()?;
        let mut buf = vec![0u8; 32768];
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// The peer's ifindex and, if it lives in another namespace, that
    /// namespace's id as seen from the calling thread's namespace.
    pub fn link_peer(ifindex: u32) -> Option<(u32, Option<i32>)> {
        // struct ifinfomsg: family, pad, type, index, flags, change.
        let mut ifi = [0u8; size_of::<libc::ifinfomsg>()];
        ifi[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        let reply = exchange(&request(libc::RTM_GETLINK, 0, &ifi))?;
        let attrs = parse(&reply, libc::RTM_NEWLINK, ifi.len())?;
        let peer = attr_u32(&attrs, libc::IFLA_LINK)?;
        let nsid = attr_u32(&attrs, libc::IFLA_LINK_NETNSID).map(|v| v as i32);
        Some((peer, nsid))
    }

    /// The id the calling thread's namespace gives the namespace `fd`.
    pub fn nsid_of(fd: RawFd) -> Option<i32> {
        // struct rtgenmsg, padded to 4, then NETNSA_FD.
        let mut p = vec![0u8; 4];
        p.extend(attr(NETNSA_FD, &(fd as u32).to_ne_bytes()));
        let reply = exchange(&request(libc::RTM_GETNSID, 0, &p))?;
        let attrs = parse(&reply, libc::RTM_NEWNSID, 4)?;
        attr_u32(&attrs, NETNSA_NSID).map(|v| v as i32)
    }
}

/// GRO, XDP and checksum state of `index` in the calling thread's namespace.
fn link_state(index: u32) -> Option<(String, bool, bool, bool)> {
    let name = nix::net::if_::if_indextoname(index).ok()?;
    let name = name.to_string_lossy().into_owned();
    let eth = ethtool::Ethtool::new()?;
    let gro = eth.gro(&name).unwrap_or(false);
    let tx_csum = eth.tx_csum(&name).unwrap_or(false);
    let mut prog_id = 0u32;
    // SAFETY: prog_id is a valid out pointer for the call.
    let xdp = unsafe { libbpf_rs::libbpf_sys::bpf_xdp_query_id(index as i32, 0, &mut prog_id) }
        == 0
        && prog_id != 0;
    Some((name, gro, xdp, tx_csum))
}

/// Finds the other end of a veth, in this namespace or in a named one (or
/// the root namespace), and reports its GRO and XDP state.  `None` if
/// `iface` is not a veth or its peer's namespace has no name.
pub fn veth_peer(iface: &Iface) -> Option<PeerState> {
    if ethtool::Ethtool::new()?.driver(&iface.name)? != "veth" {
        return None;
    }
    // rtnetlink names the peer exactly: its ifindex, and the id of its
    // namespace (ifindexes repeat across namespaces).
    let (peer_index, nsid) = rtnl::link_peer(iface.index)?;
    let Some(nsid) = nsid else {
        let (name, gro, xdp, tx_csum) = link_state(peer_index)?;
        return Some(PeerState {
            name,
            netns: String::new(),
            gro,
            xdp,
            tx_csum,
        });
    };
    let mut candidates: Vec<(String, PathBuf)> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    candidates.push(("(root)".into(), PathBuf::from("/proc/1/ns/net")));
    let (ns, path) = candidates.into_iter().find(|(_, path)| {
        File::open(path)
            .ok()
            .and_then(|f| rtnl::nsid_of(std::os::fd::AsRawFd::as_raw_fd(&f)))
            == Some(nsid)
    })?;
    // A thread of its own, so that entering the namespace does not move
    // the tracker itself.
    let file = File::open(&path).ok()?;
    let (name, gro, xdp, tx_csum) = in_netns_file(&file, || link_state(peer_index))
        .ok()
        .flatten()?;
    Some(PeerState {
        name,
        netns: ns,
        gro,
        xdp,
        tx_csum,
    })
}

/// NETDEV_XDP_ACT_NDO_XMIT_SG, include/uapi/linux/netdev.h (Linux 6.3).
const NETDEV_XDP_ACT_NDO_XMIT_SG: u64 = 64;

/// The largest MTU whose frames fit one XDP buffer on veth: a 4K page less
/// the XDP headroom (256) and struct skb_shared_info (320), less the
/// Ethernet header.  Larger frames are multi-buffer (XDP frags).
pub const SINGLE_BUFFER_MTU: u32 = 4096 - 256 - 320 - 14;

/// Whether multi-buffer XDP frames may be redirected into `iface`, from
/// its XDP feature flags.  `None` where the kernel reports none: before
/// Linux 6.3, which cannot redirect multi-buffer frames at all.
pub fn xdp_xmit_sg(iface: &Iface) -> Option<bool> {
    let mut opts = libbpf_rs::libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_xdp_query_opts>() as _,
        ..Default::default()
    };
    // SAFETY: opts is sized for this libbpf and a valid out pointer.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_xdp_query(iface.index as i32, 0, &mut opts) };
    (rc == 0 && opts.feature_flags != 0)
        .then_some(opts.feature_flags & NETDEV_XDP_ACT_NDO_XMIT_SG != 0)
}

/// A warning when frames redirected into `iface` may be too large for it:
/// its MTU is above one buffer, and the kernel cannot redirect frames of
/// several buffers into it.
pub fn multibuf_warning(iface: &Iface) -> Option<String> {
    let mtu = ethtool::Ethtool::new()?.mtu(&iface.name)?;
    if mtu <= SINGLE_BUFFER_MTU {
        return None;
    }
    match xdp_xmit_sg(iface) {
        Some(true) => None,
        Some(false) => Some(format!(
            "{} (MTU {mtu}) does not take multi-buffer XDP frames from a redirect: frames \
             over {SINGLE_BUFFER_MTU} bytes sent into it will be dropped (for a veth, turn GRO \
             on or attach XDP on its peer)",
            iface.name
        )),
        None => Some(format!(
            "this kernel cannot redirect multi-buffer XDP frames (Linux 6.3 can): frames over \
             {SINGLE_BUFFER_MTU} bytes sent into {} (MTU {mtu}) will be dropped; keep the MTU at \
             {SINGLE_BUFFER_MTU} or below",
            iface.name
        )),
    }
}

/// A warning when `iface` is a veth whose peer would drop redirected
/// frames: they reach a veth peer only if it has GRO on or an XDP program.
pub fn peer_warning(iface: &Iface) -> Option<String> {
    let peer = veth_peer(iface)?;
    if peer.gro || peer.xdp {
        return None;
    }
    let ns = if peer.netns.is_empty() {
        String::new()
    } else {
        format!(" in namespace {}", peer.netns)
    };
    Some(format!(
        "the veth peer of {} ({}{ns}) has neither GRO nor an XDP program, so it will drop \
         redirected frames; run `ethtool -K {} gro on` there",
        iface.name, peer.name, peer.name
    ))
}
