//! `xdp-conntrack events`: connection events as they happen, like
//! `conntrack -E`, from the program's ring buffer.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapHandle, RingBufferBuilder};

use super::{Filters, Pinned};
use crate::bpf::types::ct_counter;
use crate::counters::Totals;
use crate::events::{self, Event, Kind};
use crate::format;
use crate::loader::pins;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One JSON object per event: `dump -o json`'s, with `"event"`.
    Json,
}

/// Options of `events`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pinned: Pinned,
    #[command(flatten)]
    pub filters: Filters,
    /// Only these events, comma-separated: NEW, UPDATE, DESTROY or ALL.
    #[arg(
        short = 'e',
        long = "event-mask",
        value_enum,
        value_delimiter = ',',
        default_value = "ALL",
        value_name = "EVENTS"
    )]
    pub events: Vec<Kind>,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

/// This process's registration as the reader; undone on drop, so that the
/// program stops making events nobody reads.
struct Reader<'a> {
    ctl: &'a MapHandle,
    pid: u32,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if events::reader(self.ctl).is_ok_and(|c| c.pid == self.pid) {
            let _ = events::set_reader(self.ctl, 0, 0);
        }
    }
}

/// Prints each event that matches, until SIGINT or SIGTERM; then the
/// number shown on stderr, as `conntrack -E` does.  Events the ring had
/// no room for are reported on stderr as their count grows.
pub fn run(a: Args) -> Result<ExitCode> {
    let filter = a.filters.filter()?;
    let mask = a.events.iter().fold(0, |m, k| m | k.mask());
    let ring = a.pinned.open(pins::EVENTS)?;
    let counters = a.pinned.open(pins::COUNTERS)?;
    let ctl = a.pinned.open(pins::EVENTS_CTL)?;
    let pid = std::process::id();
    let other = events::reader(&ctl)?;
    if other.mask != 0 && other.pid != pid && events::alive(other.pid) {
        bail!(
            "another events reader (pid {}) is reading {}: the ring has one reader at a time",
            other.pid,
            a.pinned.pin_path.display()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the signal handler")?;

    let json = a.output == Some(Output::Json);
    let out = std::io::stdout();
    let shown = std::cell::Cell::new(0u64);
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&ring, |data: &[u8]| {
            let Ok(ev) = Event::decode(data) else {
                return 0;
            };
            if !filter.matches(&ev.conn) {
                return 0;
            }
            let line = if json {
                format::event_json(&ev).to_string()
            } else {
                format::event_line(&ev)
            };
            // A closed pipe ends the loop below with the next poll.
            let mut o = out.lock();
            if writeln!(o, "{line}").is_err() {
                return -1;
            }
            shown.set(shown.get() + 1);
            0
        })
        .context("reading the events ring")?;
    let rb = builder.build().context("reading the events ring")?;

    // Registered only now: whatever was left in the ring from an earlier
    // reader is drained first and not shown.
    while rb.consume_raw() > 0 {}
    shown.set(0);
    events::set_reader(&ctl, mask, pid)?;
    let _reader = Reader { ctl: &ctl, pid };
    eprintln!(
        "xdp-conntrack: reading events from {} (Ctrl-C stops)",
        a.pinned.pin_path.display()
    );
    let lost_at =
        |m: &MapHandle| -> Result<u64> { Ok(Totals::read(m)?.get(ct_counter::CT_C_EVENTS_LOST)) };
    // Losses are reported as they grow: looked at after every poll.
    let mut lost = lost_at(&counters)?;
    let report = |lost: &mut u64| -> Result<()> {
        let now = lost_at(&counters)?;
        if now > *lost {
            eprintln!(
                "xdp-conntrack: {} events lost: the ring was full ({now} in all)",
                now - *lost
            );
            *lost = now;
        }
        Ok(())
    };
    let mut next_check = Instant::now() + Duration::from_secs(1);
    while !stop.load(Ordering::SeqCst) {
        let n = rb.poll_raw(Duration::from_millis(100));
        if n < 0 && n != -nix::libc::EINTR {
            break; // stdout closed, or the ring went away
        }
        let _ = out.lock().flush();
        report(&mut lost)?;
        // The tracker forgets a reader it finds dead; say it again.
        if Instant::now() >= next_check {
            if events::reader(&ctl)?.pid != pid {
                events::set_reader(&ctl, mask, pid)?;
            }
            next_check = Instant::now() + Duration::from_secs(1);
        }
    }
    rb.consume_raw();
    let _ = out.lock().flush();
    report(&mut lost)?;
    eprintln!(
        "xdp-conntrack: {} flow events have been shown.",
        shown.get()
    );
    Ok(ExitCode::SUCCESS)
}
