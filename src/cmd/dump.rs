//! `xdp-conntrack dump`: the running tracker's table, like `conntrack -L`.

use std::process::ExitCode;

use anyhow::Result;

use super::Pinned;
use crate::loader::pins;
use crate::{format, table};

/// Options of `dump`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pinned: Pinned,
}

/// Prints one line per live connection, then conntrack's footer on stderr.
pub fn run(a: Args) -> Result<ExitCode> {
    let map = a.pinned.open(pins::TABLE)?;
    let conns = table::read(&map)?;
    for c in &conns {
        println!("{}", format::conntrack_line(c));
    }
    eprintln!("{}", format::footer(conns.len()));
    Ok(ExitCode::SUCCESS)
}
