//! `xdp-conntrack dump`: the running tracker's table, like `conntrack -L`.

use std::process::ExitCode;

use anyhow::Result;

use super::{Filters, Pinned};
use crate::filter::Family;
use crate::format;

/// An output format, as conntrack's `-o` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Each line starts with the family's name and number
    /// (`ipv4     2 `), as `conntrack -L -o extended`.
    Extended,
    /// Each line ends with the entry's id (`id=N`), as `conntrack -o id`.
    Id,
    /// One JSON object per line instead of conntrack's line: family,
    /// protocol, state, flags, seconds left, both tuples and the id.
    Json,
}

/// Options of `dump`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pinned: Pinned,
    #[command(flatten)]
    pub filters: Filters,
    /// Output formats, comma-separated (extended,id or json).
    #[arg(short = 'o', long, value_enum, value_delimiter = ',')]
    pub output: Vec<Output>,
}

/// Prints one line per live connection that the filters select, then
/// conntrack's footer (the number shown) on stderr.  Matching nothing is
/// not an error, as with `conntrack -L`.
pub fn run(a: Args) -> Result<ExitCode> {
    let filter = a.filters.filter()?;
    let has = |o| a.output.contains(&o);
    if has(Output::Json) && a.output.len() > 1 {
        anyhow::bail!("-o json takes no other output format");
    }
    let conns = a.pinned.select(&filter)?;
    for (_, c) in &conns {
        if has(Output::Json) {
            println!("{}", format::json(c));
            continue;
        }
        let prefix = if has(Output::Extended) {
            format::l3_prefix(Family::of(&c.src))
        } else {
            String::new()
        };
        let id = if has(Output::Id) {
            format!(" id={}", c.id)
        } else {
            String::new()
        };
        println!("{prefix}{}{id}", format::conntrack_line(c));
    }
    eprintln!("{}", format::footer(conns.len()));
    Ok(ExitCode::SUCCESS)
}
