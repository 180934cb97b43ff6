//! The foreground tracker: load, attach, pin, then count until a signal.

use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::PrintLevel;

use crate::datapath::{self, Config, Pins, XdpMode};
use crate::format;
use crate::stats::Totals;
use crate::sys::{self, Iface};
use crate::trace;

/// What `xdp-conntrack -1 A -2 B` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Interface names of side 1 and side 2.
    pub ifaces: [String; 2],
    /// 0 (silent) to 5 (debug).
    pub log_level: u8,
    /// No live line.
    pub quiet: bool,
    /// Table capacity.
    pub max_entries: u32,
    /// (slot, seconds) overrides.
    pub timeouts: Vec<(usize, u32)>,
    /// Native or generic XDP.
    pub mode: XdpMode,
    /// Where the maps are pinned.
    pub pin_path: PathBuf,
    /// Drop mid-stream TCP.
    pub strict: bool,
    /// Replace XDP programs already attached.
    pub force: bool,
    /// Redirect only.
    pub no_track: bool,
    /// Destination MAC for frames leaving side 1 / side 2.
    pub dst_mac: [Option<[u8; 6]>; 2],
    /// Network namespace to run in.
    pub netns: Option<String>,
    /// How often the sweep runs.
    pub sweep_every: Duration,
}

fn info(level: u8, msg: impl AsRef<str>) {
    if level >= 3 {
        eprintln!("xdp-conntrack: {}", msg.as_ref());
    }
}

/// Runs the tracker until SIGINT, SIGTERM or SIGHUP.
pub fn tracker(o: &Options) -> Result<()> {
    sys::require_root()?;
    sys::require_btf()?;
    if let Some(ns) = &o.netns {
        sys::enter_netns(ns)?;
    }
    if o.ifaces[0] == o.ifaces[1] {
        bail!("-1 and -2 name the same interface '{}'", o.ifaces[0]);
    }
    let ifaces = [Iface::lookup(&o.ifaces[0])?, Iface::lookup(&o.ifaces[1])?];

    let mut cfg = Config {
        max_entries: o.max_entries,
        log_level: o.log_level,
        strict: o.strict,
        track: !o.no_track,
        ifindex: [ifaces[0].index, ifaces[1].index],
        ..Config::default()
    };
    for &(slot, secs) in &o.timeouts {
        cfg.timeouts[slot] = secs;
    }
    for ((rw, dst), iface) in cfg.rewrite.iter_mut().zip(o.dst_mac).zip(&ifaces) {
        *rw = dst.map(|dst| (dst, iface.mac));
    }

    // libbpf talks only when asked to debug; errors come back as values.
    if o.log_level >= 5 {
        libbpf_rs::set_print(Some((PrintLevel::Debug, |_, msg: String| eprint!("{msg}"))));
    } else {
        libbpf_rs::set_print(None);
    }

    for note in cfg.features.fallbacks() {
        eprintln!("xdp-conntrack: note: {note}");
    }
    let mut object = MaybeUninit::uninit();
    let mut skel = datapath::load(&mut object, &cfg)?;
    datapath::set_ports(&skel, cfg.ifindex)?;

    // Signals from here on end the loop below; drops undo the rest.
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the signal handler")?;

    let pins = Pins::create(&mut skel, &o.pin_path)?;
    let mut links = Vec::new();
    for iface in &ifaces {
        links.push(datapath::attach(
            &skel,
            iface,
            o.mode,
            o.force,
            cfg.features.link,
        )?);
    }
    for iface in &ifaces {
        if let Some(warning) = sys::peer_warning(iface) {
            eprintln!("xdp-conntrack: warning: {warning}");
        }
        if cfg.features.frags {
            if let Some(warning) = sys::multibuf_warning(iface) {
                eprintln!("xdp-conntrack: warning: {warning}");
            }
        }
    }
    info(
        o.log_level,
        format!(
            "forwarding {} <-> {} ({:?} XDP, {}), maps pinned in {}",
            ifaces[0].name,
            ifaces[1].name,
            o.mode,
            if o.no_track {
                "no tracking"
            } else {
                "tracking"
            },
            o.pin_path.display()
        ),
    );
    if o.log_level >= 5 {
        trace::spawn()?;
    }

    let mut prev = Totals::read(&skel.maps.stats)?;
    let mut last = Instant::now();
    let mut next_sweep = last + o.sweep_every;
    let mut next_line = last + Duration::from_secs(1);
    loop {
        let wake = next_sweep.min(next_line);
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if now >= next_sweep {
            datapath::sweep(&skel)?;
            next_sweep = now + o.sweep_every;
        }
        if now >= next_line {
            datapath::recalibrate_clock(&mut skel)?;
            let totals = Totals::read(&skel.maps.stats)?;
            if !o.quiet && o.log_level > 0 {
                let secs = last.elapsed().as_secs_f64();
                println!("{}", format::live_line(&totals, &prev, secs));
            }
            prev = totals;
            last = now;
            next_line = now + Duration::from_secs(1);
        }
    }

    drop(links);
    drop(pins);
    info(
        o.log_level,
        format!(
            "detached from {} and {}, pins removed",
            ifaces[0].name, ifaces[1].name
        ),
    );
    Ok(())
}

/// Prints the table of a running tracker like `conntrack -L`.
pub fn dump(pin_path: &std::path::Path) -> Result<usize> {
    sys::require_root()?;
    let map = datapath::open_pinned(pin_path, "ct_table")?;
    let conns = crate::table::read(&map)?;
    for c in &conns {
        println!("{}", format::conntrack_line(c));
    }
    eprintln!("{}", format::footer(conns.len()));
    Ok(conns.len())
}

/// Prints the running tracker's counters, one `name value` per line.
pub fn stats(pin_path: &std::path::Path) -> Result<()> {
    sys::require_root()?;
    let map = datapath::open_pinned(pin_path, "stats")?;
    println!("{}", format::counters(&Totals::read(&map)?));
    Ok(())
}
