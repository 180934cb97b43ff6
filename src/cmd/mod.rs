//! The subcommands, one module each.  Each module has its own
//! `#[derive(clap::Args)] Args`, parsed straight from the command line, and
//! one `run(Args)`; a new verb is one file here plus one variant below.
//! Verbs use the library's rooms (loader, table, counters, format, sys);
//! nothing below them uses a verb.

pub mod check;
pub mod dump;
pub mod handshake;
pub mod stats;
pub mod tracker;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use libbpf_rs::MapHandle;

use crate::loader::pins::{self, DEFAULT_PIN_PATH};
use crate::loader::Features;
use crate::sys::{self, Iface};

/// `xdp-conntrack <verb>`; without one, the tracker runs.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Probe the kernel for what xdp-conntrack needs; exit 1 if something
    /// required is missing.
    Check(check::Args),
    /// Print the running tracker's counters, one `name value` per line.
    Stats(stats::Args),
    /// Stateless TCP handshakes in the Ostinato pattern: SYNs from the
    /// client namespace, then SYN-ACKs from the server's, then ACKs.
    Handshake(handshake::Args),
    /// Print the running tracker's table like `conntrack -L`.
    Dump(dump::Args),
}

impl Command {
    /// Runs the verb.
    pub fn run(self) -> Result<ExitCode> {
        match self {
            Self::Check(a) => check::run(a),
            Self::Stats(a) => stats::run(a),
            Self::Handshake(a) => handshake::run(a),
            Self::Dump(a) => dump::run(a),
        }
    }
}

/// The environment variable that turns kernel features off, so that the
/// fallbacks for older kernels can be exercised on a new one, e.g.
/// `XDP_CONNTRACK_DISABLE=frags,for_each,link,jiffies`.
pub const DISABLE_ENV: &str = "XDP_CONNTRACK_DISABLE";

/// What this kernel offers, less what [`DISABLE_ENV`] turns off.
pub fn kernel_features() -> Result<Features> {
    let off = std::env::var(DISABLE_ENV).unwrap_or_default();
    Features::probe().without(&off)
}

/// `-1 IFACE -2 IFACE [--netns NAME]`: the two interfaces the tracker
/// joins, shared by the tracker and `check`.
#[derive(Debug, clap::Args)]
pub struct Ifaces {
    /// First interface (side 1).
    #[arg(short = '1', long = "iface1", value_name = "IFACE")]
    pub iface1: Option<String>,
    /// Second interface (side 2).
    #[arg(short = '2', long = "iface2", value_name = "IFACE")]
    pub iface2: Option<String>,
    /// Run inside this network namespace (from `ip netns add`), where the
    /// interfaces are.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
}

impl Ifaces {
    /// Enters `--netns` if given, then looks up the interfaces named.
    pub fn enter_and_lookup(&self) -> Result<Vec<Iface>> {
        if let Some(ns) = &self.netns {
            sys::enter_netns(ns)?;
        }
        self.iface1
            .iter()
            .chain(&self.iface2)
            .map(|n| Iface::lookup(n))
            .collect()
    }
}

/// `--pin-path DIR`: where a running tracker's maps are pinned, shared by
/// every verb that reads them.
#[derive(Debug, clap::Args)]
pub struct Pinned {
    /// Directory holding the running tracker's pinned maps.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
}

impl Pinned {
    /// Opens the running tracker's map pinned as `name` (needs root).
    pub fn open(&self, name: &str) -> Result<MapHandle> {
        sys::require_root()?;
        pins::open_pinned(&self.pin_path, name)
    }
}
