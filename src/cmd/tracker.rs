//! The tracker itself, `xdp-conntrack -1 IFACE -2 IFACE`: load, attach and
//! pin, then sweep, re-anchor the clock and print counters until a signal.

use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use libbpf_rs::PrintLevel;

use crate::counters::Totals;
use crate::format;
use crate::loader::pins::{self, DEFAULT_PIN_PATH};
use crate::loader::{self, Config, Pins, XdpLink, XdpMode};
use crate::settings::{parse_mac, parse_timeout};
use crate::sys::{self, Iface};
use crate::trace;

/// Options of the tracker, which runs when no verb is given.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub ifaces: super::Ifaces,
    /// 0 (silent) .. 5 (debug: print the program's bpf_printk lines).
    #[arg(short = 'l', long = "log-level", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(0..=5))]
    pub log_level: u8,
    /// libbpf's own messages: warnings by default (a verifier log when a
    /// load fails); debug shows every step of opening and loading.
    #[arg(long, value_enum, default_value = "warn", value_name = "LEVEL")]
    pub libbpf_log: LibbpfLog,
    /// Do not print the live counter line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Capacity of the IPv4 connection table (preallocated: 200 bytes an
    /// entry).
    #[arg(long, default_value_t = 65536)]
    pub max_entries: u32,
    /// Capacity of the IPv6 connection table (preallocated: 224 bytes an
    /// entry); the same as --max-entries unless given.
    #[arg(long, value_name = "N")]
    pub max_entries6: Option<u32>,
    /// Override a timeout, e.g. established=3600 (repeatable). States:
    /// syn_sent syn_recv established fin_wait close_wait last_ack time_wait
    /// close syn_sent2 max_retrans unacknowledged udp udp_stream icmp.
    #[arg(long = "timeout", value_name = "STATE=SECONDS",
          value_parser = |s: &str| parse_timeout(s).map_err(|e| e.to_string()))]
    pub timeouts: Vec<(usize, u32)>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "native")]
    pub xdp_mode: XdpMode,
    /// Directory (on bpffs) where the maps are pinned while running.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
    /// Drop TCP packets of unknown connections met mid-stream instead of
    /// picking them up (nf_conntrack_tcp_loose=0).
    #[arg(long)]
    pub strict: bool,
    /// Skip TCP window checks, except those of RSTs
    /// (nf_conntrack_tcp_be_liberal=1).
    #[arg(long)]
    pub liberal: bool,
    /// Do not check TCP, UDP and ICMP checksums (nf_conntrack_checksum=0);
    /// packets with wrong ones are tracked.  IPv4 header checksums are
    /// still checked, as the kernel's IP layer does.
    #[arg(long)]
    pub no_checksum: bool,
    /// Count packets and bytes per connection and direction, as the
    /// kernel's nf_conntrack_acct=1: `dump` then shows `packets=N
    /// bytes=N` after each tuple.  Off by default, as in the kernel; what
    /// it costs is in docs/BENCHMARKS.md.
    #[arg(long)]
    pub acct: bool,
    /// Replace an XDP program already attached to an interface.
    #[arg(long)]
    pub force: bool,
    /// Forward only, without tracking (the baseline for benchmarks).
    #[arg(long)]
    pub no_track: bool,
    /// Rewrite the destination MAC of frames leaving through iface1 (and
    /// set their source MAC to iface1's own).
    #[arg(long, value_name = "MAC",
          value_parser = |s: &str| parse_mac(s).map_err(|e| e.to_string()))]
    pub dst_mac1: Option<[u8; 6]>,
    /// Rewrite the destination MAC of frames leaving through iface2.
    #[arg(long, value_name = "MAC",
          value_parser = |s: &str| parse_mac(s).map_err(|e| e.to_string()))]
    pub dst_mac2: Option<[u8; 6]>,
    /// KiB in the ring that carries events to `xdp-conntrack events`: a
    /// power of two, at least a page.  A reader that falls this far behind
    /// loses events, and `stats` counts them (events_lost).
    #[arg(long, value_name = "KIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub event_ring: u32,
    /// On SIGINT or SIGTERM, leave the program attached and its table,
    /// counters and links pinned: forwarding and tracking go on with no
    /// tracker running, and the next tracker on the same --pin-path takes
    /// them over (needs bpf_link, Linux 5.9+).
    #[arg(long)]
    pub keep: bool,
    /// Discard a table kept under --pin-path (and detach its program)
    /// instead of taking it over.
    #[arg(long)]
    pub fresh: bool,
    /// Milliseconds between two sweeps of expired entries.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub sweep_interval: u64,
}

/// How much of libbpf's own logging to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LibbpfLog {
    Off,
    Warn,
    Info,
    Debug,
}

fn info(level: u8, msg: impl AsRef<str>) {
    if level >= 3 {
        eprintln!("xdp-conntrack: {}", msg.as_ref());
    }
}

/// Runs the tracker until SIGINT, SIGTERM or SIGHUP.
pub fn run(o: Args) -> Result<ExitCode> {
    let (Some(name1), Some(name2)) = (&o.ifaces.iface1, &o.ifaces.iface2) else {
        bail!("both -1 IFACE and -2 IFACE are required (see --help)");
    };
    sys::require_root()?;
    sys::require_btf()?;
    if name1 == name2 {
        bail!("-1 and -2 name the same interface '{name1}'");
    }
    let ifaces: [Iface; 2] = o
        .ifaces
        .enter_and_lookup()?
        .try_into()
        .map_err(|_| anyhow::anyhow!("both interfaces must be found"))?;

    let mut cfg = Config {
        max_entries: o.max_entries,
        max_entries6: o.max_entries6,
        log_level: o.log_level,
        strict: o.strict,
        track: !o.no_track,
        liberal: o.liberal,
        checksum: !o.no_checksum,
        acct: o.acct,
        ifindex: [ifaces[0].index, ifaces[1].index],
        event_ring: o.event_ring * 1024,
        ..Config::new(super::kernel_features()?)
    };
    for &(slot, secs) in &o.timeouts {
        cfg.timeouts[slot] = secs;
    }
    for ((rw, dst), iface) in cfg
        .rewrite
        .iter_mut()
        .zip([o.dst_mac1, o.dst_mac2])
        .zip(&ifaces)
    {
        *rw = dst.map(|dst| (dst, iface.mac));
    }

    // libbpf's own messages: its warnings (a failed load's verifier log
    // among them) unless --libbpf-log asks for more or less.
    match o.libbpf_log {
        LibbpfLog::Off => libbpf_rs::set_print(None),
        level => libbpf_rs::set_print(Some((
            match level {
                LibbpfLog::Debug => PrintLevel::Debug,
                LibbpfLog::Info => PrintLevel::Info,
                _ => PrintLevel::Warn,
            },
            |_, msg: String| eprint!("{msg}"),
        ))),
    };

    for note in cfg.features.fallbacks() {
        eprintln!("xdp-conntrack: note: {note}");
    }
    if o.keep && !cfg.features.link {
        bail!("--keep needs XDP bpf_links (Linux 5.9+), which this kernel lacks");
    }

    // One tracker per pin directory.  What a tracker stopped with --keep
    // left there is taken over, unless --fresh; anything else there goes.
    let lock = pins::lock(&o.pin_path)?;
    if o.fresh {
        pins::discard(&o.pin_path)?;
    }
    let mut kept = pins::kept(&o.pin_path)?;
    match &kept {
        Some(k) => {
            let want = (cfg.max_entries, cfg.max_entries6.unwrap_or(cfg.max_entries));
            if (k.max_entries, k.max_entries6) != want {
                bail!(
                    "the table kept in {} holds {} IPv4 and {} IPv6 entries, not {} and {}: \
                     start with the same --max-entries/--max-entries6, or with --fresh to \
                     discard it",
                    o.pin_path.display(),
                    k.max_entries,
                    k.max_entries6,
                    want.0,
                    want.1
                );
            }
            cfg.reuse_pins = Some(o.pin_path.clone());
        }
        None => pins::discard(&o.pin_path)?,
    }
    let mut object = MaybeUninit::uninit();
    let mut skel = loader::load(&mut object, &cfg)?;
    loader::set_ports(&skel, cfg.ifindex)?;

    // Signals from here on end the loop below; drops undo the rest.
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the signal handler")?;

    let mut pins = Pins::create(&mut skel, &lock)?;
    let mut links = Vec::new();
    let took_over = kept.is_some();
    for (side, iface) in ifaces.iter().enumerate() {
        let prog = skel.progs.xdp_conntrack.as_fd();
        let kept_link = kept.as_mut().and_then(|k| k.links[side].take());
        links.push(match kept_link {
            Some(link) => XdpLink::take_over(link, prog, iface)?,
            None => loader::attach(prog, iface, o.xdp_mode, o.force, cfg.features.link)?,
        });
    }
    if took_over {
        // Nothing swept while no tracker ran.
        loader::sweep(&skel)?;
        let t = Totals::read(&skel.maps.stats)?;
        info(
            o.log_level,
            format!(
                "took over the table kept in {}: {} connections",
                o.pin_path.display(),
                t.active()
            ),
        );
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
            o.xdp_mode,
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
    let sweep_every = Duration::from_millis(o.sweep_interval);
    let mut next_sweep = last + sweep_every;
    let mut next_line = last + Duration::from_secs(1);
    loop {
        let wake = next_sweep.min(next_line);
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if now >= next_sweep {
            loader::sweep(&skel)?;
            next_sweep = now + sweep_every;
        }
        if now >= next_line {
            loader::recalibrate_clock(&mut skel)?;
            crate::events::forget_dead_reader(&skel.maps.ct_events_ctl)?;
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

    if o.keep {
        for (side, link) in links.iter().enumerate() {
            if let Some(fd) = link.link_fd() {
                pins.pin_link(side, fd)?;
            }
        }
        pins.keep();
        info(
            o.log_level,
            format!(
                "kept: still forwarding {} <-> {} with no tracker running; table, counters \
                 and links pinned in {}",
                ifaces[0].name,
                ifaces[1].name,
                o.pin_path.display()
            ),
        );
        return Ok(ExitCode::SUCCESS);
    }
    drop(links);
    drop(pins);
    drop(lock);
    info(
        o.log_level,
        format!(
            "detached from {} and {}, pins removed",
            ifaces[0].name, ifaces[1].name
        ),
    );
    Ok(ExitCode::SUCCESS)
}
