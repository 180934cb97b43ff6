//! `xdp-conntrack delete`: removes the connections the filters select,
//! like `conntrack -D`.

use std::process::ExitCode;

use anyhow::Result;

use super::{Filters, Pinned};
use crate::format;

/// Options of `delete`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pinned: Pinned,
    #[command(flatten)]
    pub filters: Filters,
}

/// Prints each connection removed, as `conntrack -D` does, then how many
/// on stderr.  Exits 1 when nothing was removed, as `conntrack -D` does.
/// A connection's next packet opens it afresh.
pub fn run(a: Args) -> Result<ExitCode> {
    let filter = a.filters.filter()?;
    let deleter = a.pinned.deleter()?;
    let mut removed = 0;
    for (key, c) in a.pinned.select(&filter)? {
        // A line for each entry removed: one that expired or closed since
        // the listing is neither printed nor counted.
        if deleter.remove(&key)? {
            println!("{}", format::conntrack_line(&c));
            removed += 1;
        }
    }
    eprintln!("xdp-conntrack: {removed} flow entries have been deleted.");
    Ok(if removed == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
