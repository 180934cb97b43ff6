//! Loading, configuring, attaching and pinning the XDP program.

use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{
    libbpf_sys, AsRawLibbpf, MapCore, MapFlags, MapHandle, OpenObject, ProgramInput, Xdp, XdpFlags,
};

use crate::bpf::{ConntrackSkel, ConntrackSkelBuilder};
use crate::config::{default_timeouts, TIMEOUT_SLOTS};
use crate::sys::{self, Iface};

/// Kernel features the datapath adapts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// XDP frags (5.18): attach as xdp.frags, so jumbo frames pass.
    pub frags: bool,
    /// bpf_for_each_map_elem (5.13): sweep in one kernel pass; otherwise
    /// userspace lists candidates and `ct_reap` removes them one by one.
    pub for_each: bool,
    /// bpf_link XDP attach (5.9): the attachment dies with the process;
    /// otherwise netlink, detached on exit.
    pub link: bool,
    /// The calibrated jiffies clock (bpf_jiffies64, 5.5, inlined by the
    /// verifier); otherwise the ktime helper, a call per packet.
    pub jiffies: bool,
}

impl Features {
    /// What this kernel offers, less what `XDP_CONNTRACK_DISABLE` (a comma
    /// separated list of `frags`, `for_each`, `link`, `jiffies`) turns off, so that the
    /// fallbacks can be exercised on a new kernel.
    pub fn detect() -> Self {
        static PROBED: OnceLock<Features> = OnceLock::new();
        let probed = *PROBED.get_or_init(|| {
            let (major, minor) = crate::check::kernel_version();
            Features {
                frags: crate::check::xdp_helper(libbpf_sys::BPF_FUNC_xdp_get_buff_len),
                for_each: crate::check::xdp_helper(libbpf_sys::BPF_FUNC_for_each_map_elem),
                link: (major, minor) >= (5, 9),
                jiffies: crate::check::xdp_helper(libbpf_sys::BPF_FUNC_jiffies64),
            }
        });
        let off = std::env::var("XDP_CONNTRACK_DISABLE").unwrap_or_default();
        let off: Vec<&str> = off.split(',').map(str::trim).collect();
        Features {
            frags: probed.frags && !off.contains(&"frags"),
            for_each: probed.for_each && !off.contains(&"for_each"),
            link: probed.link && !off.contains(&"link"),
            jiffies: probed.jiffies && !off.contains(&"jiffies"),
        }
    }

    /// The fallbacks in use, for a one-time note.
    pub fn fallbacks(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.frags {
            v.push("no XDP frags: jumbo frames may not pass (veth caps the MTU near 3.5K)");
        }
        if !self.for_each {
            v.push("no bpf_for_each_map_elem: the sweep runs from userspace");
        }
        if !self.link {
            v.push("no bpf_link for XDP: attached over netlink, detached on exit (not if killed)");
        }
        if !self.jiffies {
            v.push("clock: a ktime helper call per packet instead of the calibrated jiffies");
        }
        v
    }
}

/// Everything the program is told before it is loaded.
#[derive(Debug, Clone)]
pub struct Config {
    /// Capacity of the connection table.
    pub max_entries: u32,
    /// Seconds per timeout slot (see `config::TIMEOUTS`).
    pub timeouts: [u32; TIMEOUT_SLOTS],
    /// 0 (silent) to 5 (bpf_printk debug output).
    pub log_level: u8,
    /// Drop mid-stream TCP instead of picking it up.
    pub strict: bool,
    /// Track connections; false makes a pure redirect.
    pub track: bool,
    /// Ingress ifindex of side 1 and side 2.
    pub ifindex: [u32; 2],
    /// (destination, source) MACs for frames leaving side 1 / side 2.
    pub rewrite: [Option<([u8; 6], [u8; 6])>; 2],
    /// What the kernel offers.
    pub features: Features,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_entries: 65536,
            timeouts: default_timeouts(),
            log_level: 0,
            strict: false,
            track: true,
            ifindex: [0; 2],
            rewrite: [None; 2],
            features: Features::detect(),
        }
    }
}

/// Opens the object, writes `cfg` into its read-only data, sizes the table
/// and loads it.
pub fn load<'obj>(
    object: &'obj mut MaybeUninit<OpenObject>,
    cfg: &Config,
) -> Result<ConntrackSkel<'obj>> {
    let mut open = ConntrackSkelBuilder::default()
        .open(object)
        .context("opening the BPF object")?;
    if cfg.max_entries == 0 {
        bail!("--max-entries must be at least 1");
    }
    open.maps
        .ct_table
        .set_max_entries(cfg.max_entries)
        .context("sizing the connection table")?;
    if !cfg.features.frags {
        // SAFETY: the pointer is the open program's own libbpf object.
        let flags = unsafe {
            libbpf_sys::bpf_program__flags(open.progs.xdp_conntrack.as_libbpf_object().as_ptr())
        };
        open.progs
            .xdp_conntrack
            .set_flags(flags & !libbpf_sys::BPF_F_XDP_HAS_FRAGS);
    }
    // Only one of the two sweeps is loaded: the other would not verify on
    // the kernels that need it.
    open.progs.ct_sweep.set_autoload(cfg.features.for_each);
    open.progs.ct_reap.set_autoload(!cfg.features.for_each);
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("the program's read-only data is not memory-mapped")?;
    let c = &mut rodata.ct_cfg;
    c.timeout = cfg.timeouts;
    c.ifindex = cfg.ifindex;
    c.log_level = cfg.log_level;
    c.strict = u8::from(cfg.strict);
    c.track = u8::from(cfg.track);
    for (side, rw) in cfg.rewrite.iter().enumerate() {
        if let Some((dst, src)) = rw {
            c.rewrite[side] = 1;
            c.dst_mac[side] = *dst;
            c.src_mac[side] = *src;
        }
    }
    let mut skel = open.load().map_err(|e| {
        anyhow::Error::new(e).context(if cfg.log_level >= 5 {
            "loading the XDP program into the kernel failed (verifier log above)"
        } else {
            "loading the XDP program into the kernel failed (-l 5 shows the verifier log)"
        })
    })?;
    if cfg.track && cfg.features.jiffies {
        calibrate_clock(&mut skel).context("calibrating the program's clock")?;
    }
    Ok(skel)
}

/// Runs one of the object's housekeeping programs once through
/// BPF_PROG_TEST_RUN.  XDP test runs need a frame; these never look at it.
fn run_once(prog: &libbpf_rs::ProgramMut<'_>, what: &str) -> Result<()> {
    let frame = [0u8; 64];
    let input = ProgramInput {
        data_in: Some(&frame),
        ..Default::default()
    };
    prog.test_run(input)
        .with_context(|| format!("running {what}"))?;
    Ok(())
}

/// Runs `ct_clock_probe` once and returns the program's clock state.
fn clock_probe(skel: &ConntrackSkel<'_>) -> Result<crate::bpf::types::ct_clock> {
    run_once(&skel.progs.ct_clock_probe, "ct_clock_probe")?;
    let bss = skel
        .maps
        .bss_data
        .as_deref()
        .context("the program's .bss is not memory-mapped")?;
    // SAFETY: the kernel wrote the mapping during the test run above; a
    // volatile read keeps the compiler from reusing an older value.
    Ok(unsafe { std::ptr::read_volatile(&bss.ct_clock) })
}

/// Now on the program's own clock, the one its deadlines are set and
/// checked by: what "expired" means to it, exactly.
pub fn program_now(skel: &ConntrackSkel<'_>) -> Result<u64> {
    let c = clock_probe(skel)?;
    Ok(if c.tick_ns != 0 {
        c.probe_jiffies
            .wrapping_mul(c.tick_ns)
            .wrapping_add(c.offset_ns)
    } else {
        c.probe_ns
    })
}

/// One consistent sample of (jiffies, ktime ns) from `ct_clock_probe`: a
/// tick may fall between the kernel's updates of the two clocks, so two
/// samples 50 us apart must agree.
fn clock_sample(skel: &ConntrackSkel<'_>) -> Result<(u64, u64)> {
    let mut last = None;
    for _ in 0..100 {
        let c = clock_probe(skel)?;
        let now = (c.probe_jiffies, c.probe_ns);
        if last == Some(now) {
            return Ok(now);
        }
        last = Some(now);
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    bail!("the two clocks never agreed on a sample")
}

/// Sets the program's jiffies clock (`struct ct_clock`) so that it reads
/// CLOCK_MONOTONIC nanoseconds.  The tick's length comes from samples
/// 50 ms apart, snapped to the nearest HZ that x86-64 kernels are built
/// with, so that a sample a tick off cannot pick the wrong one.
fn calibrate_clock(skel: &mut ConntrackSkel<'_>) -> Result<()> {
    let (j0, ns0) = clock_sample(skel)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let (j1, ns1) = loop {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let s = clock_sample(skel)?;
        if s.1 >= ns0 + 50_000_000 && s.0 > j0 {
            break s;
        }
        if std::time::Instant::now() > deadline {
            bail!("jiffies did not advance in a second");
        }
    };
    let measured = (j1 - j0) as f64 * 1e9 / (ns1 - ns0) as f64;
    let hz = [100u64, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            let d = |h: u64| (h as f64 - measured).abs();
            d(*a).total_cmp(&d(*b))
        })
        .unwrap_or(250);
    if (hz as f64 - measured).abs() > hz as f64 * 0.1 {
        bail!("jiffies advance at {measured:.0} Hz, not a kernel's HZ");
    }
    // TICK_NSEC, as include/linux/jiffies.h rounds it.
    let tick_ns = (1_000_000_000 + hz / 2) / hz;
    let offset = clock_offset(skel, tick_ns, 7)?;
    let bss = skel
        .maps
        .bss_data
        .as_deref_mut()
        .context("the program's .bss is not memory-mapped")?;
    bss.ct_clock.offset_ns = offset;
    bss.ct_clock.tick_ns = tick_ns;
    Ok(())
}

/// The offset that makes `jiffies * tick_ns` read CLOCK_MONOTONIC_COARSE:
/// the median of `n` samples a millisecond apart, so that one taken while
/// the kernel had updated one clock and not yet the other (a tick off)
/// does not count.
fn clock_offset(skel: &mut ConntrackSkel<'_>, tick_ns: u64, n: usize) -> Result<u64> {
    let mut offsets = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (j, ns) = clock_sample(skel)?;
        offsets.push(ns.wrapping_sub(j.wrapping_mul(tick_ns)));
    }
    // Offsets are huge numbers mod 2^64: order them by their difference
    // from the first.
    let first = offsets[0];
    offsets.sort_by_key(|o| o.wrapping_sub(first) as i64);
    Ok(offsets[n / 2])
}

/// Re-anchors the program's jiffies clock to CLOCK_MONOTONIC_COARSE.  The
/// two drift apart by tens of ppm (38 ppm, 3 s a day, measured here), so
/// the tracker does this once a second; the clock then steps by tens of
/// nanoseconds at most.
pub fn recalibrate_clock(skel: &mut ConntrackSkel<'_>) -> Result<()> {
    let tick_ns = match skel.maps.bss_data.as_deref() {
        Some(b) if b.ct_clock.tick_ns != 0 => b.ct_clock.tick_ns,
        _ => return Ok(()),
    };
    let offset = clock_offset(skel, tick_ns, 3)?;
    if let Some(b) = skel.maps.bss_data.as_deref_mut() {
        // SAFETY: an aligned 64-bit store, which the program's CPUs see
        // whole; the pointer comes from a live mutable reference.
        unsafe { std::ptr::write_volatile(&mut b.ct_clock.offset_ns, offset) };
    }
    Ok(())
}

/// Points devmap slot 0 at side 1 and slot 1 at side 2.
pub fn set_ports(skel: &ConntrackSkel<'_>, ifindex: [u32; 2]) -> Result<()> {
    for (slot, idx) in (0u32..).zip(ifindex) {
        // struct bpf_devmap_val: the egress ifindex, then no program (fd 0).
        let mut val = [0u8; 8];
        val[..4].copy_from_slice(&idx.to_ne_bytes());
        skel.maps
            .tx_ports
            .update(&slot.to_ne_bytes(), &val, MapFlags::ANY)
            .with_context(|| format!("adding ifindex {idx} to the devmap"))?;
    }
    Ok(())
}

/// Runs one garbage-collection pass over the table: the `ct_sweep`
/// program where the kernel has bpf_for_each_map_elem, otherwise a batch
/// lookup in userspace that hands each expired key to `ct_reap`.
pub fn sweep(skel: &ConntrackSkel<'_>) -> Result<()> {
    if skel.progs.ct_sweep.autoload() {
        return run_once(&skel.progs.ct_sweep, "the table sweep");
    }
    let now = program_now(skel)?;
    let mut expired = Vec::new();
    crate::table::for_each(&skel.maps.ct_table, |k, e| {
        if e.expires <= now {
            expired.push(*k);
        }
    })?;
    for key in &expired {
        // SAFETY: ct_key is a plain C struct with explicit padding.
        let data = unsafe { plain::as_bytes(key) };
        let input = ProgramInput {
            data_in: Some(data),
            ..Default::default()
        };
        skel.progs
            .ct_reap
            .test_run(input)
            .context("removing an expired entry")?;
    }
    Ok(())
}

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

/// Attaches the tracker to `iface`.  An XDP program already there is an
/// error unless `force`, which detaches it first.
pub fn attach(
    skel: &ConntrackSkel<'_>,
    iface: &Iface,
    mode: XdpMode,
    force: bool,
    link: bool,
) -> Result<XdpLink> {
    attach_prog(skel.progs.xdp_conntrack.as_fd(), iface, mode, force, link)
}

/// Attaches any XDP program to `iface` (of the calling thread's network
/// namespace), through a bpf_link if `link`, else over netlink, with the
/// checks of [`attach`].
pub fn attach_prog(
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
        mode == XdpMode::Native && matches!(errno, libc_errno::EOPNOTSUPP | libc_errno::EINVAL)
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

/// errno values used above, without pulling in the libc crate.
mod libc_errno {
    pub const EINVAL: i32 = nix::errno::Errno::EINVAL as i32;
    pub const EOPNOTSUPP: i32 = nix::errno::Errno::EOPNOTSUPP as i32;
}

/// The maps a running tracker pins for `dump` and friends.
pub const PINNED_MAPS: &[&str] = &["ct_table", "stats"];

/// Pinned maps under a directory; dropping the value removes them.
#[derive(Debug)]
pub struct Pins {
    dir: PathBuf,
    created_dir: bool,
}

impl Pins {
    /// Pins the table and the counters under `dir`.  Pins left behind by a
    /// tracker that died are replaced; those of a live one are an error.
    pub fn create(skel: &mut ConntrackSkel<'_>, dir: &Path) -> Result<Self> {
        sys::ensure_bpffs(dir)?;
        let table = dir.join("ct_table");
        if table.exists() {
            if pinned_table_in_use(&table)? {
                bail!(
                    "another xdp-conntrack is running with its maps pinned in {} \
                     (give this one another --pin-path)",
                    dir.display()
                );
            }
            for name in PINNED_MAPS {
                let _ = fs::remove_file(dir.join(name));
            }
        }
        let created_dir = !dir.exists();
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let pins = Self {
            dir: dir.to_path_buf(),
            created_dir,
        };
        skel.maps
            .ct_table
            .pin(&table)
            .with_context(|| format!("pinning {}", table.display()))?;
        let stats = dir.join("stats");
        skel.maps
            .stats
            .pin(&stats)
            .with_context(|| format!("pinning {}", stats.display()))?;
        Ok(pins)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        for name in PINNED_MAPS {
            let _ = fs::remove_file(self.dir.join(name));
        }
        if self.created_dir {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// Whether a loaded program still uses the pinned table, i.e. whether the
/// tracker that pinned it is alive.  Pins outlive a killed process; its
/// programs do not.
pub fn pinned_table_in_use(path: &Path) -> Result<bool> {
    let map = MapHandle::from_pinned_path(path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    let id = map.info().context("reading map info")?.info.id;
    let opts = libbpf_rs::query::ProgInfoQueryOptions::default().include_map_ids(true);
    Ok(libbpf_rs::query::ProgInfoIter::with_query_opts(opts).any(|p| p.map_ids.contains(&id)))
}

/// Opens a pinned map of a running tracker.
pub fn open_pinned(dir: &Path, name: &str) -> Result<MapHandle> {
    let path = dir.join(name);
    if !path.exists() || !pinned_table_in_use(&dir.join("ct_table")).unwrap_or(false) {
        bail!(
            "no xdp-conntrack is running (nothing live pinned at {})",
            dir.display()
        );
    }
    MapHandle::from_pinned_path(&path).with_context(|| format!("opening {}", path.display()))
}
