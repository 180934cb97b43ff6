//! `xdp-conntrack flush`: empties the table, like `conntrack -F`.

use std::process::ExitCode;

use anyhow::Result;

use super::Pinned;
use crate::filter::Filter;

/// Options of `flush`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pinned: Pinned,
}

/// Removes every connection of both families, and prints how many.
/// Connections still sending open new entries with their next packet.
pub fn run(a: Args) -> Result<ExitCode> {
    let deleter = a.pinned.deleter()?;
    let mut removed = 0u64;
    // Expired entries the sweep has not reached yet go too: the table is
    // empty afterwards, and `active` says 0.
    for (key, _) in a.pinned.select_at(&Filter::default(), 0)? {
        removed += u64::from(deleter.remove(&key)?);
    }
    eprintln!(
        "xdp-conntrack: connection tracking table has been emptied ({removed} flow entries removed)."
    );
    Ok(ExitCode::SUCCESS)
}
