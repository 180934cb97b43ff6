//! The system around the tracker: privileges, kernel BTF, network
//! namespaces, interfaces, and the bpf and trace filesystems.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{statfs, BPF_FS_MAGIC, TRACEFS_MAGIC};

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

/// Moves the calling thread into the named network namespace (as created
/// by `ip netns add`).
pub fn enter_netns(name: &str) -> Result<()> {
    let path = ["/run/netns", "/var/run/netns"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .with_context(|| format!("network namespace '{name}' does not exist"))?;
    let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    setns(f, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace '{name}'"))?;
    Ok(())
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
        mount(
            Some("bpf"),
            default,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
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

/// ethtool ioctls, for the veth peer check.
mod ethtool {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, OwnedFd};

    use nix::libc;
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x03;
    const ETHTOOL_GSTRINGS: u32 = 0x1b;
    const ETHTOOL_GSTATS: u32 = 0x1d;
    const ETHTOOL_GGRO: u32 = 0x2b;
    const ETH_SS_STATS: u32 = 1;
    const ETH_GSTRING_LEN: usize = 32;

    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
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

        /// SIOCETHTOOL with `data` as the command buffer.
        fn ioctl(&self, iface: &str, data: *mut u8) -> bool {
            let Ok(name) = CString::new(iface) else {
                return false;
            };
            let bytes = name.as_bytes_with_nul();
            if bytes.len() > libc::IFNAMSIZ {
                return false;
            }
            // SAFETY: ifreq is plain old data; zero is a valid value.
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
                *d = *s as libc::c_char;
            }
            ifr.ifr_ifru.ifru_data = data.cast();
            // SAFETY: the fd is a socket, ifr names the interface and
            // points at a buffer sized for the command in it.
            unsafe { libc::ioctl(self.0.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) == 0 }
        }

        /// The driver name and the number of stats.
        fn drvinfo(&self, iface: &str) -> Option<(String, u32)> {
            // SAFETY: plain old data; zero is valid.
            let mut info: DrvInfo = unsafe { std::mem::zeroed() };
            info.cmd = ETHTOOL_GDRVINFO;
            if !self.ioctl(iface, (&mut info as *mut DrvInfo).cast()) {
                return None;
            }
            let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
            Some((
                String::from_utf8_lossy(&info.driver[..end]).into_owned(),
                info.n_stats,
            ))
        }

        /// A veth's `peer_ifindex` statistic.
        pub fn veth_peer(&self, iface: &str) -> Option<u32> {
            let (driver, n) = self.drvinfo(iface)?;
            if driver != "veth" || n == 0 || n > 4096 {
                return None;
            }
            let n = n as usize;
            let mut strings = vec![0u8; 12 + n * ETH_GSTRING_LEN];
            strings[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
            strings[4..8].copy_from_slice(&ETH_SS_STATS.to_ne_bytes());
            strings[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
            if !self.ioctl(iface, strings.as_mut_ptr()) {
                return None;
            }
            let idx = strings[12..]
                .chunks(ETH_GSTRING_LEN)
                .position(|s| s.starts_with(b"peer_ifindex\0"))?;
            // struct ethtool_stats: cmd, n_stats, then u64 values (8-aligned).
            let mut stats = vec![0u64; 1 + n];
            let head = (ETHTOOL_GSTATS as u64) | ((n as u64) << 32);
            stats[0] = head.to_le();
            if !self.ioctl(iface, stats.as_mut_ptr().cast()) {
                return None;
            }
            u32::try_from(stats[1 + idx]).ok()
        }

        /// Whether GRO is on.
        pub fn gro(&self, iface: &str) -> Option<bool> {
            let mut v = [ETHTOOL_GGRO, 0u32];
            self.ioctl(iface, v.as_mut_ptr().cast())
                .then_some(v[1] != 0)
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
}

fn peer_here(
    eth: &ethtool::Ethtool,
    peer_index: u32,
    our_index: u32,
) -> Option<(String, bool, bool)> {
    let name = nix::net::if_::if_indextoname(peer_index).ok()?;
    let name = name.to_string_lossy().into_owned();
    if eth.veth_peer(&name)? != our_index {
        return None;
    }
    let gro = eth.gro(&name).unwrap_or(false);
    let mut prog_id = 0u32;
    // SAFETY: prog_id is a valid out pointer for the call.
    let xdp =
        unsafe { libbpf_rs::libbpf_sys::bpf_xdp_query_id(peer_index as i32, 0, &mut prog_id) } == 0
            && prog_id != 0;
    Some((name, gro, xdp))
}

/// Finds the other end of a veth, in this namespace or in a named one, and
/// reports its GRO and XDP state.  `None` if `iface` is not a veth or its
/// peer cannot be found (e.g. in an unnamed namespace).
pub fn veth_peer(iface: &Iface) -> Option<PeerState> {
    let eth = ethtool::Ethtool::new()?;
    let peer_index = eth.veth_peer(&iface.name)?;
    // ifindexes are per namespace: in our own namespace, the peer's index
    // may well be our own interface's.
    if let Some((name, gro, xdp)) =
        peer_here(&eth, peer_index, iface.index).filter(|(name, _, _)| *name != iface.name)
    {
        return Some(PeerState {
            name,
            netns: String::new(),
            gro,
            xdp,
        });
    }
    let mut candidates: Vec<(String, PathBuf)> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    candidates.push(("(root)".into(), PathBuf::from("/proc/1/ns/net")));
    let our_index = iface.index;
    // ifindexes repeat across namespaces (fresh ones all number from 1), so
    // an (index, peer index) match can be a look-alike: trust only a match
    // that is unique.
    let mut found = Vec::new();
    for (ns, path) in candidates {
        // A thread of its own, so that entering the namespace does not
        // move the tracker itself.
        let hit = std::thread::spawn(move || {
            let f = File::open(&path).ok()?;
            setns(f, CloneFlags::CLONE_NEWNET).ok()?;
            let eth = ethtool::Ethtool::new()?;
            peer_here(&eth, peer_index, our_index)
        })
        .join()
        .ok()
        .flatten();
        if let Some((name, gro, xdp)) = hit {
            found.push(PeerState {
                name,
                netns: ns,
                gro,
                xdp,
            });
        }
    }
    if found.len() == 1 {
        found.pop()
    } else {
        None
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
