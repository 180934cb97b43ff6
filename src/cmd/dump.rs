//! `xdp-conntrack dump`: the running tracker's table, like `conntrack -L`.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Result;

use super::Pinned;
use crate::loader::pins;
use crate::{format, table};

/// An address family, as conntrack's `-f` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// Whether `a` is of this family.
    pub fn holds(self, a: &IpAddr) -> bool {
        match self {
            Family::Ipv4 => a.is_ipv4(),
            Family::Ipv6 => a.is_ipv6(),
        }
    }
}

/// An output format, as conntrack's `-o` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Each line starts with the family's name and number
    /// (`ipv4     2 `), as `conntrack -L -o extended`.
    Extended,
}

/// Options of `dump`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pinned: Pinned,
    /// Only this family's connections; both by default, as conntrack 1.4.7
    /// lists both.
    #[arg(short = 'f', long, value_enum)]
    pub family: Option<Family>,
    /// Output formats, comma-separated.
    #[arg(short = 'o', long, value_enum, value_delimiter = ',')]
    pub output: Vec<Output>,
}

/// Prints one line per live connection, then conntrack's footer (the
/// number shown) on stderr.
pub fn run(a: Args) -> Result<ExitCode> {
    // Both families' tables, IPv4 first, as conntrack lists them.
    let mut conns = Vec::new();
    for (name, family) in [(pins::TABLE, Family::Ipv4), (pins::TABLE6, Family::Ipv6)] {
        if a.family.is_none_or(|f| f == family) {
            conns.extend(table::read(&a.pinned.open(name)?)?);
        }
    }
    let extended = a.output.contains(&Output::Extended);
    let mut shown = 0;
    for c in conns
        .iter()
        .filter(|c| a.family.is_none_or(|f| f.holds(&c.src)))
    {
        let prefix = if extended {
            format::l3_prefix(&c.src)
        } else {
            String::new()
        };
        println!("{prefix}{}", format::conntrack_line(c));
        shown += 1;
    }
    eprintln!("{}", format::footer(shown));
    Ok(ExitCode::SUCCESS)
}
