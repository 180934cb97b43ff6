//! XDP attachment, shared by the tracker and the generator's sinks: through
//! a bpf_link where the kernel has one for XDP, else over netlink.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};
use libbpf_rs::{libbpf_sys, Xdp, XdpFlags};
use nix::errno::Errno;

use crate::sys::Iface;

/// How the program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpMode {
    /// In the driver (veth supports it).
    Native,
    /// Generic XDP on the skb path, for drivers without native support.
    Skb,
}

/// An XDP attachment.  Through a bpf_link, dropping it (or the process
/// dying, even by SIGKILL) detaches the program; through netlink (kernels
/// before 5.9), dropping it detaches the program if it is still ours, in
/// the calling thread's network namespace.
#[derive(Debug)]
pub struct XdpLink {
    /// The interface it is attached to.
    pub iface: String,
    how: Attachment,
}

#[derive(Debug)]
enum Attachment {
    Link(#[allow(dead_code)] OwnedFd),
    Netlink {
        ifindex: i32,
        flags: u32,
        prog_id: u32,
    },
}

impl XdpLink {
    /// The bpf_link's descriptor, for pinning it (`--keep`); None for a
    /// netlink attachment.
    pub fn link_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.how {
            Attachment::Link(fd) => Some(fd.as_fd()),
            Attachment::Netlink { .. } => None,
        }
    }

    /// Takes over `link`, the XDP link a tracker stopped with `--keep`
    /// pinned, and puts `prog` in its program's place in one step
    /// (bpf_link_update): the interface forwards all along.  The link must
    /// be on `iface`.
    pub fn take_over(link: OwnedFd, prog: BorrowedFd<'_>, iface: &Iface) -> Result<Self> {
        let mut info = libbpf_sys::bpf_link_info::default();
        let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
        // SAFETY: a valid descriptor, and an info struct of the size given.
        let ret =
            unsafe { libbpf_sys::bpf_link_get_info_by_fd(link.as_raw_fd(), &mut info, &mut len) };
        if ret < 0 {
            return Err(io::Error::from_raw_os_error(-ret)).context("reading the kept link");
        }
        // SAFETY: an XDP link's info is the xdp member of the union.
        let ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
        if info.type_ != libbpf_sys::BPF_LINK_TYPE_XDP || ifindex != iface.index {
            bail!(
                "the kept program is attached to ifindex {ifindex}, not to '{}' ({}): \
                 start with --fresh to discard it",
                iface.name,
                iface.index
            );
        }
        // SAFETY: valid descriptors; no options.
        let ret = unsafe {
            libbpf_sys::bpf_link_update(link.as_raw_fd(), prog.as_raw_fd(), std::ptr::null())
        };
        if ret < 0 {
            return Err(io::Error::from_raw_os_error(-ret))
                .with_context(|| format!("replacing the kept program on '{}'", iface.name));
        }
        Ok(Self {
            iface: iface.name.clone(),
            how: Attachment::Link(link),
        })
    }
}

impl Drop for XdpLink {
    fn drop(&mut self) {
        if let Attachment::Netlink {
            ifindex,
            flags,
            prog_id,
        } = self.how
        {
            let mut now = 0u32;
            // SAFETY: plain libbpf calls with valid out pointers.
            unsafe {
                if libbpf_sys::bpf_xdp_query_id(ifindex, flags as i32, &mut now) == 0
                    && now == prog_id
                {
                    libbpf_sys::bpf_xdp_detach(ifindex, flags, std::ptr::null());
                }
            }
        }
    }
}

/// Attaches any XDP program to `iface` (of the calling thread's network
/// namespace), through a bpf_link if `link`, else over netlink, with the
/// An XDP program already there is an error unless `force`, which
/// detaches it first.
pub fn attach(
    prog: BorrowedFd<'_>,
    iface: &Iface,
    mode: XdpMode,
    force: bool,
    link: bool,
) -> Result<XdpLink> {
    let ifindex = iface.index as i32;
    let xdp = Xdp::new(prog);
    let existing = xdp.query_id(ifindex, XdpFlags::NONE).unwrap_or(0);
    if existing != 0 {
        if !force {
            if let Some(dir) = super::pins::dir_of_program(existing) {
                bail!(
                    "interface '{}' is taken by the xdp-conntrack whose pins are in {} \
                     (program id {existing}); stop it, or use --force to replace it",
                    iface.name,
                    dir.display()
                );
            }
            bail!(
                "interface '{}' already has an XDP program attached (id {existing}); \
                 use --force to replace it",
                iface.name
            );
        }
        for flags in [XdpFlags::DRV_MODE, XdpFlags::SKB_MODE] {
            let _ = xdp.detach(ifindex, flags);
        }
        if xdp.query_id(ifindex, XdpFlags::NONE).unwrap_or(0) != 0 {
            bail!(
                "interface '{}': XDP program id {existing} is held by another process's \
                 bpf_link and cannot be replaced",
                iface.name
            );
        }
    }

    let flags = match mode {
        XdpMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
        XdpMode::Skb => libbpf_sys::XDP_FLAGS_SKB_MODE,
    };
    let native_unsupported = |errno: i32| {
        mode == XdpMode::Native
            && matches!(Errno::from_raw(errno), Errno::EOPNOTSUPP | Errno::EINVAL)
    };
    if !link {
        let nl_flags = flags | libbpf_sys::XDP_FLAGS_UPDATE_IF_NOEXIST;
        if let Err(e) = xdp.attach(ifindex, XdpFlags::from_bits_retain(nl_flags)) {
            return Err(anyhow::Error::new(e)).with_context(|| {
                format!(
                    "attaching XDP to '{}' over netlink{}",
                    iface.name,
                    if mode == XdpMode::Native {
                        " (try --xdp-mode skb)"
                    } else {
                        ""
                    }
                )
            });
        }
        let prog_id = xdp
            .query_id(ifindex, XdpFlags::from_bits_retain(flags))
            .unwrap_or(0);
        return Ok(XdpLink {
            iface: iface.name.clone(),
            how: Attachment::Netlink {
                ifindex,
                flags,
                prog_id,
            },
        });
    }

    let opts = libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t,
        flags,
        ..Default::default()
    };
    // SAFETY: the program fd is valid for the call and `opts` is a fully
    // initialised options struct with its size set.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(prog.as_raw_fd(), ifindex, libbpf_sys::BPF_XDP, &opts)
    };
    if fd < 0 {
        let err = io::Error::from_raw_os_error(-fd);
        if native_unsupported(-fd) {
            bail!(
                "interface '{}' does not support native XDP ({err}); try --xdp-mode skb",
                iface.name
            );
        }
        return Err(err).with_context(|| format!("attaching XDP to '{}'", iface.name));
    }
    // SAFETY: bpf_link_create() returned a new file descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(XdpLink {
        iface: iface.name.clone(),
        how: Attachment::Link(fd),
    })
}
