//! Loading the XDP program: configure it (.rodata), size its table, load
//! it, fill its devmap, and run its housekeeping programs (the sweep, the
//! clock probe) through BPF_PROG_TEST_RUN.  Attachment, pins, the clock and
//! the kernel probes have rooms of their own below.

pub mod attach;
pub mod clock;
pub mod features;
pub mod pins;

use std::mem::MaybeUninit;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{libbpf_sys, AsRawLibbpf, MapCore, MapFlags, OpenObject, ProgramInput};

pub use attach::{attach, XdpLink, XdpMode};
pub use clock::{program_now, recalibrate as recalibrate_clock};
pub use features::Features;
pub use pins::{open_pinned, Pins};

use crate::bpf::types::{ct_key, ct_key6};
use crate::bpf::{ConntrackSkel, ConntrackSkelBuilder};
use crate::settings::{default_timeouts, TIMEOUT_SLOTS};

/// Everything the program is told before it is loaded.
#[derive(Debug, Clone)]
pub struct Config {
    /// Capacity of the IPv4 connection table.
    pub max_entries: u32,
    /// Capacity of the IPv6 one; None: the same as IPv4's.
    pub max_entries6: Option<u32>,
    /// Seconds per timeout slot (see `settings::TIMEOUTS`).
    pub timeouts: [u32; TIMEOUT_SLOTS],
    /// 0 (silent) to 5 (bpf_printk debug output).
    pub log_level: u8,
    /// Drop mid-stream TCP instead of picking it up.
    pub strict: bool,
    /// Track connections; false makes a pure redirect.
    pub track: bool,
    /// Skip TCP window checks except for RSTs (nf_conntrack_tcp_be_liberal).
    pub liberal: bool,
    /// Check TCP, UDP and ICMP checksums, as nf_conntrack_checksum=1 does;
    /// false skips them (the IPv4 header's is the IP layer's: always).
    pub checksum: bool,
    /// Ingress ifindex of side 1 and side 2.
    pub ifindex: [u32; 2],
    /// (destination, source) MACs for frames leaving side 1 / side 2.
    pub rewrite: [Option<([u8; 6], [u8; 6])>; 2],
    /// Count packets and bytes per connection and direction
    /// (nf_conntrack_acct=1).
    pub acct: bool,
    /// Bytes in the events ring: a power of two, at least a page.
    pub event_ring: u32,
    /// Take over the maps pinned in this directory (a table kept by the
    /// last tracker) instead of making new ones.
    pub reuse_pins: Option<std::path::PathBuf>,
    /// What the kernel offers.
    pub features: Features,
}

impl Config {
    /// The defaults, for a kernel that offers `features`.
    pub fn new(features: Features) -> Self {
        Self {
            max_entries: 65536,
            max_entries6: None,
            timeouts: default_timeouts(),
            log_level: 0,
            strict: false,
            track: true,
            liberal: false,
            checksum: true,
            ifindex: [0; 2],
            rewrite: [None; 2],
            acct: false,
            event_ring: 1 << 20,
            reuse_pins: None,
            features,
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
    let max_entries6 = cfg.max_entries6.unwrap_or(cfg.max_entries);
    if cfg.max_entries == 0 || max_entries6 == 0 {
        bail!("--max-entries and --max-entries6 must be at least 1");
    }
    // Both tables are preallocated: each holds its family's connections.
    open.maps
        .ct_table
        .set_max_entries(cfg.max_entries)
        .context("sizing the connection table")?;
    open.maps
        .ct_table6
        .set_max_entries(max_entries6)
        .context("sizing the IPv6 connection table")?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u32;
    if !cfg.event_ring.is_power_of_two() || cfg.event_ring < page {
        bail!(
            "the events ring must be a power of two of at least {} KiB",
            page / 1024
        );
    }
    open.maps
        .ct_events
        .set_max_entries(cfg.event_ring)
        .context("sizing the events ring")?;
    if let Some(dir) = &cfg.reuse_pins {
        // libbpf checks that each pinned map fits its definition (type,
        // key and value sizes, capacity) before using it.
        for mut map in open.open_object_mut().maps_mut() {
            let Some(name) = pins::PINNED_MAPS
                .iter()
                .find(|n| map.name().to_str() == Some(**n))
            else {
                continue;
            };
            let path = dir.join(name);
            map.reuse_pinned_map(&path).with_context(|| {
                format!(
                    "taking over {}: start with --fresh to discard the kept table",
                    path.display()
                )
            })?;
        }
    }
    let cpus = libbpf_rs::num_possible_cpus().context("counting the possible CPUs")?;
    open.maps
        .ct_scratch
        .set_max_entries(cpus as u32)
        .context("sizing the new entries' scratch map")?;
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
    c.liberal = u8::from(cfg.liberal);
    c.checksum = u8::from(cfg.checksum);
    c.acct = u8::from(cfg.acct);
    for (side, rw) in cfg.rewrite.iter().enumerate() {
        if let Some((dst, src)) = rw {
            c.rewrite[side] = 1;
            c.dst_mac[side] = *dst;
            c.src_mac[side] = *src;
        }
    }
    let mut skel = open.load().map_err(|e| {
        anyhow::Error::new(e).context(
            "loading the XDP program into the kernel failed (libbpf's log, with the \
             verifier's, is above; --libbpf-log debug shows every step)",
        )
    })?;
    if cfg.track && cfg.features.jiffies {
        clock::calibrate(&mut skel).context("calibrating the program's clock")?;
    }
    Ok(skel)
}

/// Runs one of the object's housekeeping programs once through
/// BPF_PROG_TEST_RUN.  XDP test runs need a frame; these never look at it.
pub(crate) fn test_run_once(prog: &libbpf_rs::ProgramMut<'_>, what: &str) -> Result<()> {
    let frame = [0u8; 64];
    let input = ProgramInput {
        data_in: Some(&frame),
        ..Default::default()
    };
    prog.test_run(input)
        .with_context(|| format!("running {what}"))?;
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
        return test_run_once(&skel.progs.ct_sweep, "the table sweep");
    }
    let now = program_now(skel)?;
    // The reaper tells the table by the key's size.
    let mut expired: Vec<Vec<u8>> = Vec::new();
    crate::table::for_each::<ct_key>(&skel.maps.ct_table, |k, e| {
        if e.expires <= now {
            // SAFETY: table keys are plain C structs with explicit padding.
            expired.push(unsafe { plain::as_bytes(k) }.to_vec());
        }
    })?;
    crate::table::for_each::<ct_key6>(&skel.maps.ct_table6, |k, e| {
        if e.expires <= now {
            // SAFETY: as above.
            expired.push(unsafe { plain::as_bytes(k) }.to_vec());
        }
    })?;
    for data in &expired {
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
