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

use std::process::ExitCode;

use anyhow::Result;

use crate::loader::Features;

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
