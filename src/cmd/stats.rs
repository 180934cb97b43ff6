//! `xdp-conntrack stats`: the running tracker's counters, the table's fill
//! and its connections by state, one `name value` per line (or JSON), once
//! or every few seconds with rates.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::MapCore;

use super::Pinned;
use crate::counters::Totals;
use crate::format;
use crate::loader::pins;
use crate::proto::{proto_name, tcp_state_name, IPPROTO_TCP};
use crate::table;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One JSON object (per interval with --watch) instead of lines.
    Json,
}

/// Options of `stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pinned: Pinned,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// Print again every SECS seconds, each counter with its rate per
    /// second over the interval, until SIGINT or SIGTERM.
    #[arg(short, long, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub watch: Option<u64>,
}

/// What `stats` shows at one moment: the counters, then the table.
struct Snapshot {
    totals: Totals,
    /// `entries`, `max_entries` and so on: levels, not counts of events.
    table: Vec<(String, u64)>,
}

impl Snapshot {
    fn read(a: &Args) -> Result<Self> {
        let totals = Totals::read(&a.pinned.open(pins::COUNTERS)?)?;
        let now = table::monotonic_ns();
        let mut table = Vec::new();
        let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
        let mut entries = 0;
        for (name, family, max_name) in [
            (pins::TABLE, "ipv4", "max_entries"),
            (pins::TABLE6, "ipv6", "max_entries6"),
        ] {
            let map = a.pinned.open(name)?;
            let conns = table::read_at(&map, now)?;
            for c in &conns {
                let key = if c.proto == IPPROTO_TCP {
                    format!("conns_tcp_{}", tcp_state_name(c.state).to_ascii_lowercase())
                } else {
                    format!("conns_{}", proto_name(c.proto))
                };
                *by_state.entry(key).or_default() += 1;
            }
            entries += conns.len() as u64;
            table.push((format!("entries_{family}"), conns.len() as u64));
            table.push((max_name.to_string(), u64::from(map.max_entries())));
        }
        table.insert(0, ("entries".to_string(), entries));
        table.extend(by_state);
        Ok(Self { totals, table })
    }

    /// Every `name value`: the counters' sums and slots, IPv4's share of
    /// those both families move, then the table.
    fn values(&self) -> Vec<(String, u64)> {
        let t = &self.totals;
        let mut v: Vec<(String, u64)> = format::counter_values(t);
        v.extend(t.ipv4_shares().map(|(n, x)| (n.to_string(), x)));
        v.extend(self.table.iter().cloned());
        v
    }
}

/// Prints every counter summed over CPUs, the table's fill per family and
/// its connections by protocol and TCP state; with --watch, again every
/// SECS seconds with each counter's rate.
pub fn run(a: Args) -> Result<ExitCode> {
    let json = a.output == Some(Output::Json);
    let Some(secs) = a.watch else {
        let s = Snapshot::read(&a)?;
        print(&s.values(), None, json);
        return Ok(ExitCode::SUCCESS);
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the signal handler")?;
    let every = Duration::from_secs(secs);
    let mut prev = Snapshot::read(&a)?;
    let mut at = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        // Wake often enough to stop at once on a signal.
        let next = at + every;
        while !stop.load(Ordering::SeqCst) && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let now = Snapshot::read(&a)?;
        let elapsed = at.elapsed().as_secs_f64();
        at = Instant::now();
        let before: BTreeMap<String, u64> = prev.values().into_iter().collect();
        let counters: std::collections::HashSet<String> = format::counter_values(&now.totals)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let rates: BTreeMap<String, f64> = now
            .values()
            .iter()
            .filter(|(n, _)| counters.contains(n) && n != "active")
            .map(|(n, v)| {
                let d = v.saturating_sub(before.get(n).copied().unwrap_or(0));
                (n.clone(), d as f64 / elapsed)
            })
            .collect();
        print(&now.values(), Some(&rates), json);
        prev = now;
    }
    Ok(ExitCode::SUCCESS)
}

/// `name value` lines (with ` rate/s` after each counter when watching),
/// or one JSON object.
fn print(values: &[(String, u64)], rates: Option<&BTreeMap<String, f64>>, json: bool) {
    if json {
        let mut o = serde_json::Map::new();
        for (n, v) in values {
            o.insert(n.clone(), (*v).into());
        }
        if let Some(r) = rates {
            let r: serde_json::Map<String, serde_json::Value> =
                r.iter().map(|(n, v)| (n.clone(), (*v).into())).collect();
            o.insert("rates".into(), r.into());
        }
        println!("{}", serde_json::Value::Object(o));
        return;
    }
    let mut out = String::new();
    for (n, v) in values {
        match rates.and_then(|r| r.get(n)) {
            Some(r) => out.push_str(&format!("{n} {v} {}/s\n", format::si(*r).trim_end())),
            None => out.push_str(&format!("{n} {v}\n")),
        }
    }
    if rates.is_some() {
        out.push('\n');
    }
    print!("{out}");
}
