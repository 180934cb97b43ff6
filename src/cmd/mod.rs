//! The subcommands, one module each.  Each module has its own
//! `#[derive(clap::Args)] Args`, parsed straight from the command line, and
//! one `run(Args)`; a new verb is one file here plus one variant below.
//! Verbs use the library's rooms (loader, table, counters, format, sys);
//! nothing below them uses a verb.

pub mod check;
pub mod count;
pub mod delete;
pub mod dump;
pub mod events;
pub mod flush;
pub mod handshake;
pub mod stats;
pub mod tracker;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use libbpf_rs::{MapHandle, ProgramHandle};

use crate::filter::{self, Family, Filter, Net, Status};
use crate::loader::pins::{self, DEFAULT_PIN_PATH};
use crate::loader::Features;
use crate::sys::{self, Iface};
use crate::table::{self, Conn};

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
    /// Print how many connections the table holds, like `conntrack -C`.
    Count(count::Args),
    /// Remove the connections that match, like `conntrack -D`.
    Delete(delete::Args),
    /// Empty the table, like `conntrack -F`.
    Flush(flush::Args),
    /// Print connection events as they happen, like `conntrack -E`.
    Events(events::Args),
}

impl Command {
    /// Whether the verb holds nothing that a closed stdout must not leave
    /// behind (no attached program, no namespace): it may die of SIGPIPE.
    pub fn only_reads_or_prints(&self) -> bool {
        !matches!(self, Self::Handshake(_) | Self::Check(_))
    }

    /// Runs the verb.
    pub fn run(self) -> Result<ExitCode> {
        match self {
            Self::Check(a) => check::run(a),
            Self::Stats(a) => stats::run(a),
            Self::Handshake(a) => handshake::run(a),
            Self::Dump(a) => dump::run(a),
            Self::Count(a) => count::run(a),
            Self::Delete(a) => delete::run(a),
            Self::Flush(a) => flush::run(a),
            Self::Events(a) => events::run(a),
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

/// `-1 IFACE -2 IFACE [--netns NAME]`: the two interfaces the tracker
/// joins, shared by the tracker and `check`.
#[derive(Debug, clap::Args)]
pub struct Ifaces {
    /// First interface (side 1).
    #[arg(short = '1', long = "iface1", value_name = "IFACE")]
    pub iface1: Option<String>,
    /// Second interface (side 2).
    #[arg(short = '2', long = "iface2", value_name = "IFACE")]
    pub iface2: Option<String>,
    /// Run inside this network namespace (from `ip netns add`), where the
    /// interfaces are.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
}

impl Ifaces {
    /// Enters `--netns` if given, then looks up the interfaces named.
    pub fn enter_and_lookup(&self) -> Result<Vec<Iface>> {
        if let Some(ns) = &self.netns {
            sys::enter_netns(ns)?;
        }
        self.iface1
            .iter()
            .chain(&self.iface2)
            .map(|n| Iface::lookup(n))
            .collect()
    }
}

/// `--pin-path DIR`: where a running tracker's maps are pinned, shared by
/// every verb that reads them.
#[derive(Debug, clap::Args)]
pub struct Pinned {
    /// Directory holding the running tracker's pinned maps.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
}

impl Pinned {
    /// Opens the running tracker's map pinned as `name` (needs root).
    pub fn open(&self, name: &str) -> Result<MapHandle> {
        self.require_root()?;
        pins::open_pinned(&self.pin_path, name)
    }

    /// The pins are root's alone (0700, 0600): say so before the kernel
    /// says "permission denied".
    fn require_root(&self) -> Result<()> {
        if !nix::unistd::geteuid().is_root() {
            anyhow::bail!(
                "the tracker's table and counters in {} are root's only: run this as root",
                self.pin_path.display()
            );
        }
        Ok(())
    }

    /// Every live connection `filter` selects, each with its key, IPv4's
    /// table first, as conntrack lists them.  One pass over each table:
    /// a hash map's batch lookup copies a bucket at a time, and a key
    /// always hashes to the same bucket, so no entry is listed twice.
    pub fn select(&self, filter: &Filter) -> Result<Vec<(Vec<u8>, Conn)>> {
        self.select_at(filter, table::monotonic_ns())
    }

    /// [`Pinned::select`] of the entries live at `now` (0: every entry,
    /// expired ones the sweep has not reached yet too).
    pub fn select_at(&self, filter: &Filter, now: u64) -> Result<Vec<(Vec<u8>, Conn)>> {
        let mut out = Vec::new();
        for (name, family) in [(pins::TABLE, Family::Ipv4), (pins::TABLE6, Family::Ipv6)] {
            if filter.wants(family) {
                let map = self.open(name)?;
                let all = table::entries_at(&map, now)?;
                out.extend(all.into_iter().filter(|(_, c)| filter.matches(c)));
            }
        }
        Ok(out)
    }

    /// The tracker's pinned `ct_delete`, which removes an entry by key and
    /// counts it (userspace cannot update the per-CPU counters safely).
    pub fn deleter(&self) -> Result<Deleter> {
        self.require_root()?;
        pins::open_pinned_prog(&self.pin_path, pins::DELETE).map(Deleter)
    }
}

/// Removes entries by key through a running tracker's `ct_delete`.
#[derive(Debug)]
pub struct Deleter(ProgramHandle);

impl Deleter {
    /// Removes the entry with this key; false if it was gone already (a
    /// packet, the sweep or another verb was first).
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        let act = sys::prog_test_run(self.0.as_fd(), key).context("removing a connection")?;
        Ok(act == libbpf_rs::libbpf_sys::XDP_DROP)
    }
}

/// The filters `dump`, `count`, `delete` and `events` share, named as
/// conntrack(8) names them.  They match the original tuple; the `--reply-`
/// ones match the reply tuple.  Every filter given must match.
#[derive(Debug, Default, clap::Args)]
pub struct Filters {
    /// Layer-4 protocol: tcp, udp, icmp or icmpv6.
    #[arg(short = 'p', long = "proto", value_name = "PROTO", value_parser = filter::parse_proto)]
    pub proto: Option<u8>,
    /// Address family; both by default, as conntrack 1.4.7 lists both.
    #[arg(short = 'f', long, value_enum)]
    pub family: Option<Family>,
    /// Source address of the original direction (ADDR or ADDR/PREFIX).
    #[arg(
        short = 's',
        long = "src",
        visible_alias = "orig-src",
        value_name = "ADDR"
    )]
    pub src: Option<Net>,
    /// Destination address of the original direction.
    #[arg(
        short = 'd',
        long = "dst",
        visible_alias = "orig-dst",
        value_name = "ADDR"
    )]
    pub dst: Option<Net>,
    /// Source port of the original direction (needs -p tcp or udp).
    #[arg(long, visible_alias = "orig-port-src", value_name = "PORT")]
    pub sport: Option<u16>,
    /// Destination port of the original direction (needs -p tcp or udp).
    #[arg(long, visible_alias = "orig-port-dst", value_name = "PORT")]
    pub dport: Option<u16>,
    /// Source address of the reply direction.
    #[arg(short = 'r', long = "reply-src", value_name = "ADDR")]
    pub reply_src: Option<Net>,
    /// Destination address of the reply direction.
    #[arg(short = 'q', long = "reply-dst", value_name = "ADDR")]
    pub reply_dst: Option<Net>,
    /// Source port of the reply direction.
    #[arg(long = "reply-port-src", value_name = "PORT")]
    pub reply_sport: Option<u16>,
    /// Destination port of the reply direction.
    #[arg(long = "reply-port-dst", value_name = "PORT")]
    pub reply_dport: Option<u16>,
    /// TCP state, as `conntrack -L` names it (needs -p tcp).
    #[arg(long, value_name = "STATE", value_parser = filter::parse_state)]
    pub state: Option<u8>,
    /// Status bits that must all be set: ASSURED, SEEN_REPLY, UNREPLIED
    /// (comma-separated).
    #[arg(
        short = 'u',
        long,
        value_enum,
        value_delimiter = ',',
        value_name = "STATUS"
    )]
    pub status: Vec<Status>,
}

impl Filters {
    /// The filters, checked against each other.
    pub fn filter(&self) -> Result<Filter> {
        Filter {
            proto: self.proto,
            family: self.family,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            reply_src: self.reply_src,
            reply_dst: self.reply_dst,
            reply_sport: self.reply_sport,
            reply_dport: self.reply_dport,
            state: self.state,
            status: self.status.clone(),
        }
        .check()
    }
}
