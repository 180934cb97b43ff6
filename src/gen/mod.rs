//! The stateless handshake generator behind `xdp-conntrack handshake`: the
//! Ostinato pattern (a stream of SYNs from the client, then the matching
//! SYN-ACKs from the server, then the ACKs), over N connections, IPv4 or
//! IPv6, sent from two network namespaces with live XDP frames.
//!
//! Ordering: every phase is sent whole, and the next one starts only once
//! the sink on the receiving side has counted all of it (or it stopped
//! arriving), so each connection's packets cross the tracker in order.
//! The one exception is wanted: with `--clash`, two threads on two CPUs
//! send the first phase twice at once (or each side's first packet),
//! kept abreast frame by frame, so that the tracker on each CPU races the
//! other to create every connection.
//!
//! [`plan`] works out what to send, [`send`] sends it; this module sets
//! the namespaces and sinks up, runs the phases and reports.

mod plan;
mod send;

use std::fmt;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};

use crate::bpf::hs::types::hs_kind;
use crate::bpf::hs::{HandshakeSkel, HandshakeSkelBuilder};
use crate::loader::{self, Features, XdpLink, XdpMode};
use crate::packet::{Endpoint, Ether};
use crate::sys::netns::Guard;
use crate::sys::{self, Iface};
pub use plan::HostPort;
use plan::{Phase, Plan};
use send::{Stream, Transmitter};

/// A phase has stopped arriving when its sink count holds still this long.
const STALL: Duration = Duration::from_secs(1);

/// What happens to each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lifecycle {
    /// SYN, SYN-ACK, ACK: the connection ends up ESTABLISHED [ASSURED].
    Handshake,
    /// The handshake, then FIN/ACK from both sides and the last ACK.
    Full,
    /// The handshake, then a RST from the client.
    Rst,
}

/// The flows' transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// The handshake: SYN, SYN-ACK, ACK, then the lifecycle.
    Tcp,
    /// A datagram from the client, then one from the server.
    Udp,
}

/// Which first packets two CPUs see at the same moment (`--clash`), named
/// after the kernel's selftests udpclash and conntrack_reverse_clash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clash {
    /// Both see the client's first packet of each flow; the run goes on
    /// as without `--clash`.
    Same,
    /// One sees the client's first packet, the other the server's (for
    /// TCP a SYN with the server's sequence number: a simultaneous open);
    /// nothing follows them.
    Reverse,
}

/// How frames leave the sending namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sender {
    /// Live XDP frames, or an AF_PACKET socket where the kernel lacks them.
    Auto,
    /// BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (Linux 5.18+).
    Live,
    /// An AF_PACKET socket with PACKET_QDISC_BYPASS, one frame per send.
    Socket,
}

/// Packets per second, or as fast as the kernel takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// At most this many packets per second.
    Pps(u64),
    /// No pacing.
    Max,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Self::Max);
        }
        match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Self::Pps(n)),
            _ => Err(format!(
                "'{s}' is not a packet rate (a positive number or 'max')"
            )),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pps(n) => write!(f, "{n}"),
            Self::Max => write!(f, "max"),
        }
    }
}

/// Options of `xdp-conntrack handshake`: what to send, and where from.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Network namespace of the client side.
    #[arg(long, default_value = "ns1")]
    pub client_ns: String,
    /// The client's interface in that namespace.
    #[arg(long, default_value = "eth0")]
    pub client_iface: String,
    /// Network namespace of the server side.
    #[arg(long, default_value = "ns2")]
    pub server_ns: String,
    /// The server's interface in that namespace.
    #[arg(long, default_value = "eth0")]
    pub server_iface: String,
    /// The flows' transport: TCP (the handshake) or UDP (a datagram each
    /// way, without payload).
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: Proto,
    /// Number of connections.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: u64,
    /// IPv6: the default addresses become fd01::100 and fd02::100.  An
    /// IPv6 --client or --server selects IPv6 too; both addresses must be
    /// of the run's family.
    #[arg(short = '6', long)]
    pub ipv6: bool,
    /// First client address, and with a port the first client port
    /// (`10.1.1.100:23420`, `[fd01::100]:23420`); further addresses follow
    /// when the ports run out [default: 10.1.1.100, or fd01::100 for IPv6].
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub client: Option<HostPort>,
    /// Server address, and with a port the server port
    /// (`10.2.2.100:8080`, `[fd02::100]:8080`) [default: 10.2.2.100, or
    /// fd02::100 for IPv6].
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub server: Option<HostPort>,
    /// First client (source) port [default: 23420].
    #[arg(long)]
    pub sport: Option<u16>,
    /// Server (destination) port [default: 8080].
    #[arg(long)]
    pub dport: Option<u16>,
    /// Client port step between connections.
    #[arg(long, default_value_t = 1)]
    pub port_step: u16,
    /// Sequence number of the SYNs.
    #[arg(long, default_value_t = 100)]
    pub syn_seq: u32,
    /// Sequence number of the SYN-ACKs.
    #[arg(long, default_value_t = 200)]
    pub synack_seq: u32,
    /// Ack number of the SYN-ACKs [default: SYN seq + 1].
    #[arg(long)]
    pub synack_ack: Option<u32>,
    /// Ack number of the final ACKs [default: SYN-ACK seq + 1].
    #[arg(long)]
    pub ack_ack: Option<u32>,
    /// Packets per second, or `max`.
    #[arg(long, default_value = "200000")]
    pub rate: Rate,
    /// What happens after the handshake.
    #[arg(long, value_enum, default_value = "handshake")]
    pub lifecycle: Lifecycle,
    /// How frames are sent: live XDP frames, or an AF_PACKET socket.
    #[arg(long, value_enum, default_value = "auto")]
    pub sender: Sender,
    /// After the handshake, send this many plain ACKs per connection: the
    /// established fast path, and a small-packet rate test.
    #[arg(long, default_value_t = 0)]
    pub flood: u64,
    /// Send the flood from this many threads, each pinned to its own CPU
    /// with its own generator (live frames only): with as many veth queues,
    /// each CPU carries its own share of the path.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Two threads pinned to the first two CPUs send the first packet of
    /// every connection, in the same order and frame by frame abreast
    /// (live frames only): `same`, both the client's; `reverse`, one the
    /// client's and the other the server's.  With two veth queues, each
    /// CPU's tracker sees them on its own queue, and the two race to
    /// create each connection.
    #[arg(long, value_enum)]
    pub clash: Option<Clash>,
    /// Repeat everything this many times over further connections (churn);
    /// client tuples are reused once the assigned addresses run out.
    #[arg(long, default_value_t = 1)]
    pub rounds: u64,
    /// Keep at most this many frames in flight: sent, and not yet counted
    /// by the receiving side's sink (0: no limit, open loop).  Where a
    /// busy CPU lets the path's rings overflow (a loaded guest, a kernel
    /// that leaves softirqs to ksoftirqd), a run with a window still
    /// arrives whole, and it fails if frames stop arriving (the path
    /// dropped them).  One sending thread: not with --threads or --clash.
    #[arg(long, default_value_t = 0)]
    pub window: u32,
    /// No progress line.  Without it, stderr shows the round, the phase,
    /// the frames sent and delivered and the rate: rewritten in place at
    /// most once a second on a terminal, a line every five seconds into a
    /// pipe or a file.
    #[arg(short, long)]
    pub quiet: bool,
}

/// How one phase went.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// SYN, SYN-ACK, ...
    pub name: &'static str,
    /// Frames transmitted.
    pub sent: u64,
    /// Frames the receiving side's sink counted.
    pub delivered: u64,
    /// From the first frame to the last delivered one.
    pub elapsed: Duration,
}

/// How the whole run went.
#[derive(Debug, Clone)]
pub struct Report {
    /// Connections, over all rounds.
    pub count: u64,
    /// Per phase, summed over rounds.
    pub phases: Vec<PhaseReport>,
    /// Wall time of all phases.
    pub elapsed: Duration,
}

impl Report {
    /// Frames sent over all phases.
    pub fn sent(&self) -> u64 {
        self.phases.iter().map(|p| p.sent).sum()
    }

    /// Time to send and deliver the three handshake phases.
    pub fn handshake_time(&self) -> Duration {
        self.phases.iter().take(3).map(|p| p.elapsed).sum()
    }

    /// Summary lines for people.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let hs = self.handshake_time().as_secs_f64();
        let mut s = format!(
            "handshake: {} packets for {} connections in {:.3} s ({:.0} pkt/s); \
             handshakes in {:.3} s ({:.0} conn/s)",
            self.sent(),
            self.count,
            secs,
            self.sent() as f64 / secs.max(1e-9),
            hs,
            self.count as f64 / hs.max(1e-9),
        );
        for p in &self.phases {
            s.push_str(&format!(
                "\nhandshake:   {:<8} sent {:>10}  delivered {:>10}  in {:.3} s ({:.0} pkt/s)",
                p.name,
                p.sent,
                p.delivered,
                p.elapsed.as_secs_f64(),
                p.delivered as f64 / p.elapsed.as_secs_f64().max(1e-9)
            ));
        }
        s
    }
}

/// One side of the exchange: its namespace and interface.
struct Side {
    ns: File,
    iface: Iface,
}

/// Opens the named namespace and looks its interface up there.
fn side(ns_name: &str, iface: &str) -> Result<Side> {
    let ns = sys::netns_file(ns_name)?;
    let _in = Guard::enter_file(&ns)?;
    let iface = Iface::lookup(iface).with_context(|| format!("in namespace '{ns_name}'"))?;
    Ok(Side { ns, iface })
}

/// A sink attached in a side's namespace, detached in it when dropped:
/// netlink attachments detach by ifindex, in the calling thread's
/// namespace.
struct Sink<'a> {
    ns: &'a File,
    link: Option<XdpLink>,
}

impl Drop for Sink<'_> {
    fn drop(&mut self) {
        let _in = Guard::enter_file(self.ns);
        drop(self.link.take());
    }
}

/// How many consecutive addresses from `first` (at most `want`) are
/// assigned to the side's interface.
fn assigned_run(side: &Side, first: IpAddr, want: u32) -> Result<u32> {
    let _in = Guard::enter_file(&side.ns)?;
    let have = sys::ip_addrs(&side.iface.name)?;
    Ok((0..want)
        .take_while(|&a| have.contains(&plan::addr_add(first, a.into())))
        .count() as u32)
}

/// The error for an address the run would use but does not own.
fn not_assigned(ns: &str, side: &Side, first: IpAddr, n: u32, at: u32) -> anyhow::Error {
    let addr = plan::addr_add(first, at.into());
    let last = plan::addr_add(first, u64::from(n) - 1);
    anyhow::anyhow!(
        "address {addr} is not assigned to {} in namespace '{ns}'; the run uses {first}{}, \
         and every address it uses must belong to the test's namespaces",
        side.iface.name,
        if n > 1 {
            format!("..{last}")
        } else {
            String::new()
        }
    )
}

/// Frames of `kind` the sinks have counted, over all CPUs.
fn sink_total(skel: &HandshakeSkel<'_>, kind: hs_kind) -> Result<u64> {
    sink_count(&skel.maps.sink_counts, kind)
}

/// [`sink_total`] from the counters map itself.
fn sink_count(map: &impl MapCore, kind: hs_kind) -> Result<u64> {
    let per_cpu = map
        .lookup_percpu(&kind.0.to_ne_bytes(), MapFlags::ANY)
        .context("reading the sink counters")?
        .unwrap_or_default();
    Ok(per_cpu
        .iter()
        .map(|b| u64::from_ne_bytes(b[..8].try_into().unwrap_or([0; 8])))
        .sum())
}

/// The progress line of a long run, on stderr: on a terminal rewritten in
/// place at most once a second, into a pipe or a file a line every five
/// seconds; nothing with `-q`.
struct Progress {
    on: bool,
    tty: bool,
    every: Duration,
    last: Instant,
    shown: bool,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let every = Duration::from_secs(if tty { 1 } else { 5 });
        Self {
            on: !quiet,
            tty,
            every,
            last: Instant::now(),
            shown: false,
        }
    }

    /// Prints `line()` if its time has come.
    fn tick(&mut self, line: impl FnOnce() -> String) {
        if !self.on || self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let line = line();
        if self.tty {
            eprint!("\r{line:<100}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
        self.shown = true;
    }

    /// Takes the line off a terminal before the report.
    fn clear(&mut self) {
        if self.tty && self.shown {
            eprint!("\r{:100}\r", "");
            self.shown = false;
        }
    }
}

/// The generator at work: the two sides, the programs whose sinks count
/// what arrives, and how frames leave.
struct Generator<'a, 'obj> {
    o: &'a Args,
    plan: &'a Plan,
    skel: &'a mut HandshakeSkel<'obj>,
    client: &'a Side,
    server: &'a Side,
    /// Client tuples over the assigned addresses.
    span: u64,
    tx: Transmitter,
    progress: Progress,
}

impl<'a> Generator<'a, '_> {
    /// The stream of round `round` of `ph`, from the side that sends it.
    fn stream<'p>(&self, ph: &'p Phase, round: u64) -> Stream<'p>
    where
        'a: 'p,
    {
        let (src, dst) = if ph.client_is_src {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        Stream {
            phase: ph,
            frames: self.plan.frames(ph, round, self.span),
            clients: self.plan.clients,
            server: Endpoint::new(self.plan.server, self.plan.dport),
            eth: Ether {
                dst: dst.iface.mac,
                src: src.iface.mac,
            },
            ifindex: src.iface.index,
            ns: &src.ns,
        }
    }

    /// Sends round `round` of `ph`, then waits for it to arrive.
    fn phase(&mut self, ph: &Phase, round: u64) -> Result<PhaseReport> {
        let rival = ph.rival();
        if let Some(rival) = &rival {
            // Two threads, each in its own side's namespace.
            let (a, b) = (self.stream(ph, round), self.stream(rival, round));
            let total = a.frames.len() + b.frames.len();
            let before = sink_total(self.skel, ph.kind)?;
            let start = Instant::now();
            self.tx.race(&mut *self.skel, &a, &b)?;
            let (delivered, arrived) = self.arrival(ph.kind, before, total)?;
            return Ok(PhaseReport {
                name: ph.name,
                sent: total,
                delivered,
                elapsed: arrived.duration_since(start),
            });
        }
        let stream = self.stream(ph, round);
        let _in = Guard::enter_file(stream.ns)?;
        let total = stream.frames.len();

        let before = sink_total(self.skel, ph.kind)?;
        let start = Instant::now();
        // A handle of its own on the sinks' counters: the sender holds the
        // skeleton meanwhile.
        let counts = libbpf_rs::MapHandle::try_from(&self.skel.maps.sink_counts)
            .context("reading the sink counters")?;
        let progress = &mut self.progress;
        let rounds = self.o.rounds;
        self.tx.send(self.skel, &stream, |sent| {
            progress.tick(|| {
                let delivered = sink_count(&counts, ph.kind).map_or(0, |n| n - before);
                let rate = sent as f64 / start.elapsed().as_secs_f64();
                format!(
                    "handshake: round {}/{rounds} {}: {sent}/{total} sent, {delivered} \
                     delivered, {} missing, {}pkt/s",
                    round + 1,
                    ph.name,
                    sent.saturating_sub(delivered),
                    crate::format::si(rate)
                )
            });
        })?;
        let (delivered, arrived) = self.arrival(ph.kind, before, total)?;
        self.progress.clear();
        Ok(PhaseReport {
            name: ph.name,
            sent: total,
            delivered,
            elapsed: arrived.duration_since(start),
        })
    }

    /// Waits until the sink of `kind` has counted `sent` frames over
    /// `before`, or the count stopped moving for [`STALL`]: how many
    /// arrived, and when the last one did.
    fn arrival(&self, kind: hs_kind, before: u64, sent: u64) -> Result<(u64, Instant)> {
        let mut delivered = sink_total(self.skel, kind)? - before;
        let mut moved = Instant::now();
        let mut arrived = Instant::now();
        while delivered < sent && moved.elapsed() < STALL {
            std::thread::sleep(Duration::from_millis(2));
            let now = sink_total(self.skel, kind)? - before;
            if now != delivered {
                delivered = now;
                moved = Instant::now();
                arrived = moved;
            }
        }
        if delivered >= sent {
            arrived = Instant::now();
        }
        Ok((delivered, arrived))
    }
}

/// Sends the streams and reports what arrived.  The sinks attach through
/// a bpf_link if `features` has one.
pub fn generate(o: &Args, features: Features) -> Result<Report> {
    sys::require_root()?;
    let allowed = if o.threads > 1 || o.clash.is_some() {
        send::allowed_cpus()?
    } else {
        Vec::new()
    };
    let plan = Plan::new(o, &allowed)?;

    let client = side(&o.client_ns, &o.client_iface)?;
    let server = side(&o.server_ns, &o.server_iface)?;
    // A round may not reuse a tuple; later rounds reuse those of earlier
    // ones once the assigned addresses run out.
    let first = plan.clients.first;
    let addrs = assigned_run(&client, first, plan.want as u32)?;
    if u64::from(addrs) < plan.need {
        return Err(not_assigned(
            &o.client_ns,
            &client,
            first,
            plan.need as u32,
            addrs,
        ));
    }
    if assigned_run(&server, plan.server, 1)? == 0 {
        return Err(not_assigned(&o.server_ns, &server, plan.server, 1, 0));
    }

    let mut object = MaybeUninit::<OpenObject>::uninit();
    let open = HandshakeSkelBuilder::default()
        .open(&mut object)
        .context("opening the generator's BPF object")?;
    let mut skel = open
        .load()
        .context("loading the generator's BPF programs")?;

    if o.window > 0 {
        send::bss_mut(&mut skel)?.windowed = 1;
    }
    // Sinks on both namespace ends: they count what arrives and drop it, so
    // the namespaces' stacks never answer.
    let mut sinks = Vec::new();
    for (side, ns) in [(&server, &o.server_ns), (&client, &o.client_ns)] {
        let _in = Guard::enter_file(&side.ns)?;
        let link = loader::attach(
            skel.progs.hs_sink.as_fd(),
            &side.iface,
            XdpMode::Native,
            false,
            features.link,
        )
        .with_context(|| format!("attaching the sink in namespace '{ns}'"))?;
        sinks.push(Sink {
            ns: &side.ns,
            link: Some(link),
        });
    }

    let mut gen = Generator {
        o,
        plan: &plan,
        skel: &mut skel,
        client: &client,
        server: &server,
        span: plan.span(addrs),
        tx: Transmitter::new(o, plan.cpus.clone(), plan.racers.clone()),
        progress: Progress::new(o.quiet),
    };
    let start = Instant::now();
    let phases = plan::phases(o);
    let mut reports: Vec<PhaseReport> = phases
        .iter()
        .map(|p| PhaseReport {
            name: p.name,
            sent: 0,
            delivered: 0,
            elapsed: Duration::ZERO,
        })
        .collect();
    for round in 0..o.rounds {
        for (ph, sum) in phases.iter().zip(&mut reports) {
            let r = gen.phase(ph, round)?;
            sum.sent += r.sent;
            sum.delivered += r.delivered;
            sum.elapsed += r.elapsed;
        }
    }
    // Each detaches in its own namespace.
    drop(sinks);
    Ok(Report {
        count: plan.total,
        phases: reports,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("1000".parse::<Rate>(), Ok(Rate::Pps(1000)));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }
}
