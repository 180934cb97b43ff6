//! `xdp-conntrack stats`: the running tracker's counters, one `name value`
//! per line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::counters::Totals;
use crate::loader::pins::{self, DEFAULT_PIN_PATH};
use crate::{format, sys};

/// Options of `stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding the running tracker's pinned maps.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
}

/// Prints every counter, summed over CPUs.
pub fn run(a: Args) -> Result<ExitCode> {
    sys::require_root()?;
    let map = pins::open_pinned(&a.pin_path, pins::COUNTERS)?;
    println!("{}", format::counters(&Totals::read(&map)?));
    Ok(ExitCode::SUCCESS)
}
