//! `xdp-conntrack stats`: the running tracker's counters, one `name value`
//! per line.

use std::process::ExitCode;

use anyhow::Result;

use super::Pinned;
use crate::counters::Totals;
use crate::format;
use crate::loader::pins;

/// Options of `stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pinned: Pinned,
}

/// Prints every counter, summed over CPUs.
pub fn run(a: Args) -> Result<ExitCode> {
    let map = a.pinned.open(pins::COUNTERS)?;
    println!("{}", format::counters(&Totals::read(&map)?));
    Ok(ExitCode::SUCCESS)
}
