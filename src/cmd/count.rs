//! `xdp-conntrack count`: how many connections the table holds, like
//! `conntrack -C`, or how many the filters select.

use std::process::ExitCode;

use anyhow::Result;

use super::{Filters, Pinned};

/// Options of `count`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pinned: Pinned,
    #[command(flatten)]
    pub filters: Filters,
}

/// Prints the number of live connections that match, both families.
pub fn run(a: Args) -> Result<ExitCode> {
    let filter = a.filters.filter()?;
    println!("{}", a.pinned.select(&filter)?.len());
    Ok(ExitCode::SUCCESS)
}
