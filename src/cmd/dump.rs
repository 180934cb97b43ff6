//! `xdp-conntrack dump`: the running tracker's table, like `conntrack -L`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::loader::pins::{self, DEFAULT_PIN_PATH};
use crate::{format, sys, table};

/// Options of `dump`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding the running tracker's pinned maps.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
}

/// Prints one line per live connection, then conntrack's footer on stderr.
pub fn run(a: Args) -> Result<ExitCode> {
    sys::require_root()?;
    let map = pins::open_pinned(&a.pin_path, pins::TABLE)?;
    let conns = table::read(&map)?;
    for c in &conns {
        println!("{}", format::conntrack_line(c));
    }
    eprintln!("{}", format::footer(conns.len()));
    Ok(ExitCode::SUCCESS)
}
