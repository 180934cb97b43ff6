//! The system around the tracker: privileges, kernel BTF, interfaces, and
//! the bpf and trace filesystems.  Network namespaces, AF_PACKET sockets,
//! netlink messages and what a veth's peer will do with redirected frames
//! have rooms of their own.

pub mod link;
pub mod netlink;
pub mod netns;
pub mod packet_socket;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, BPF_FS_MAGIC, TRACEFS_MAGIC};

pub use link::{multibuf_warning, peer_warning, veth_peer, SINGLE_BUFFER_MTU};
pub use netns::{enter_netns, netns_file};
pub use packet_socket::PacketSocket;

/// Where the kernel exposes its own BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Fails unless the process runs as root.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("must run as root (it loads BPF programs and attaches XDP)");
    }
    Ok(())
}

/// Fails unless the kernel exposes BTF, which CO-RE relocation needs.
pub fn require_btf() -> Result<()> {
    if !Path::new(KERNEL_BTF).exists() {
        bail!(
            "kernel BTF is missing ({KERNEL_BTF}); xdp-conntrack needs a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    Ok(())
}
/// The IPv4 and IPv6 addresses assigned to `iface` in the calling
/// thread's network namespace.
pub fn ip_addrs(iface: &str) -> Result<Vec<std::net::IpAddr>> {
    Ok(nix::ifaddrs::getifaddrs()
        .context("listing interfaces")?
        .filter(|ifa| ifa.interface_name == iface)
        .filter_map(|ifa| {
            let a = ifa.address?;
            a.as_sockaddr_in()
                .map(|s| s.ip().into())
                .or_else(|| a.as_sockaddr_in6().map(|s| s.ip().into()))
        })
        .collect())
}

/// An interface of the current network namespace.
#[derive(Debug, Clone)]
pub struct Iface {
    /// Its name, as given.
    pub name: String,
    /// Its ifindex.
    pub index: u32,
    /// Its own MAC address.
    pub mac: [u8; 6],
}

impl Iface {
    /// Looks an interface up by name.
    pub fn lookup(name: &str) -> Result<Self> {
        let index = nix::net::if_::if_nametoindex(name)
            .map_err(|_| anyhow::anyhow!("unknown interface '{name}'"))?;
        let mac = nix::ifaddrs::getifaddrs()
            .context("listing interfaces")?
            .filter(|ifa| ifa.interface_name == name)
            .find_map(|ifa| {
                ifa.address
                    .and_then(|a| a.as_link_addr().and_then(|l| l.addr()))
            })
            .unwrap_or([0; 6]);
        Ok(Self {
            name: name.to_string(),
            index,
            mac,
        })
    }
}

/// Makes sure `dir` lies on a bpf filesystem, mounting one at /sys/fs/bpf
/// when nothing is mounted there yet (as bpftool does).
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    let default = Path::new("/sys/fs/bpf");
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if is_fs(&probe, BPF_FS_MAGIC) {
        return Ok(());
    }
    if dir.starts_with(default) && !is_fs(default, BPF_FS_MAGIC) {
        // Mode 0700, as bpftool and systemd mount it: the kernel's default
        // (1777) lets any user pin into it.
        mount(
            Some("bpf"),
            default,
            Some("bpf"),
            MsFlags::empty(),
            Some("mode=0700"),
        )
        .context("mounting the bpf filesystem on /sys/fs/bpf")?;
        return Ok(());
    }
    bail!("pin path {} is not on a bpf filesystem", dir.display());
}

/// Finds trace_pipe, mounting tracefs on /sys/kernel/tracing if needed.
pub fn trace_pipe() -> Result<PathBuf> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let pipe = Path::new(dir).join("trace_pipe");
        if pipe.exists() {
            return Ok(pipe);
        }
    }
    let dir = Path::new("/sys/kernel/tracing");
    if !is_fs(dir, TRACEFS_MAGIC) {
        mount(
            Some("tracefs"),
            dir,
            Some("tracefs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting tracefs on /sys/kernel/tracing")?;
    }
    Ok(dir.join("trace_pipe"))
}

fn is_fs(path: &Path, magic: nix::sys::statfs::FsType) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == magic)
        .unwrap_or(false)
}

/// Runs the program `prog` once through BPF_PROG_TEST_RUN with `data` as
/// its packet, and returns its verdict.  For a program another process
/// loaded and pinned, which libbpf-rs can only hold as a file descriptor.
pub fn prog_test_run(prog: std::os::fd::BorrowedFd<'_>, data: &[u8]) -> Result<u32> {
    use libbpf_rs::libbpf_sys;
    use std::os::fd::AsRawFd;

    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        data_in: data.as_ptr().cast(),
        data_size_in: data.len() as u32,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: `opts` is sized, and data_in points at data_size_in bytes
    // that the kernel only reads (no data_out is given).
    let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error(-ret)).context("BPF_PROG_TEST_RUN");
    }
    Ok(opts.retval)
}

/// Opens the BPF object (map, program or link) pinned at `path`.
pub fn obj_get(path: &Path) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .context("a pin path with a NUL byte")?;
    // SAFETY: a valid C string; the call returns a new descriptor or an
    // error.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(c.as_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd))
            .with_context(|| format!("opening {}", path.display()));
    }
    // SAFETY: bpf_obj_get() returned a new descriptor we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Pins the BPF object `fd` at `path`.
pub fn obj_pin(fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .context("a pin path with a NUL byte")?;
    // SAFETY: a valid descriptor and C string.
    let ret = unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error(-ret))
            .with_context(|| format!("pinning {}", path.display()));
    }
    Ok(())
}
