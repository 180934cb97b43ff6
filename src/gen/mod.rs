//! The stateless handshake generator behind `xdp-conntrack handshake`: the
//! Ostinato pattern (a stream of SYNs from the client, then the matching
//! SYN-ACKs from the server, then the ACKs), over N connections, sent from
//! two network namespaces with live XDP frames.
//!
//! Ordering: every phase is sent whole, and the next one starts only once
//! the sink on the receiving side has counted all of it (or it stopped
//! arriving), so each connection's packets cross the tracker in order.

use std::fmt;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramInput};
use nix::sched::{sched_getaffinity, sched_setaffinity, setns, CloneFlags, CpuSet};
use nix::unistd::Pid;

use crate::bpf::hs::types::{hs_kind, hs_phase};
use crate::bpf::hs::{HandshakeSkel, HandshakeSkelBuilder};
use crate::loader::{self, Features, XdpLink, XdpMode};
use crate::packet::{self, tcp_flags::*, Endpoint, Ether};
use crate::sys::{self, Iface};

/// BPF_F_TEST_XDP_LIVE_FRAMES: transmit what the program returns XDP_TX for.
const LIVE_FRAMES: u32 = 1 << 1;
/// A phase has stopped arriving when its sink count holds still this long.
const STALL: Duration = Duration::from_secs(1);
/// Frames per live-frames run at `--rate max`.  Each run sets up and tears
/// down a page pool, which waits for an RCU grace period (milliseconds, the
/// CPUs idle meanwhile), so runs must be long for the path to stay busy.
const MAX_RUN: u64 = 1 << 22;

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
    /// Number of connections.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: u64,
    /// First client address; further ones follow when the ports run out.
    #[arg(long, default_value = "10.1.1.100")]
    pub client: Ipv4Addr,
    /// Server address.
    #[arg(long, default_value = "10.2.2.100")]
    pub server: Ipv4Addr,
    /// First client (source) port.
    #[arg(long, default_value_t = 23420)]
    pub sport: u16,
    /// Server (destination) port.
    #[arg(long, default_value_t = 8080)]
    pub dport: u16,
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
    /// Repeat everything this many times over further connections (churn);
    /// client tuples are reused once the assigned addresses run out.
    #[arg(long, default_value_t = 1)]
    pub rounds: u64,
    /// No progress line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// One stream of one packet per connection.
#[derive(Debug, Clone, Copy)]
struct Phase {
    name: &'static str,
    /// Packets per connection in this phase (the data flood sends many).
    per_conn: u64,
    client_is_src: bool,
    flags: u8,
    seq: u32,
    ack: u32,
    kind: hs_kind,
}

impl Phase {
    /// This phase's frame between `client` and `server`, in its direction.
    fn frame(&self, eth: &Ether, client: Endpoint, server: Endpoint) -> Vec<u8> {
        let (src, dst) = if self.client_is_src {
            (client, server)
        } else {
            (server, client)
        };
        packet::tcp(eth, src, dst, self.flags, self.seq, self.ack, b"")
    }
}

fn phases(o: &Args) -> Vec<Phase> {
    let (s, t) = (o.syn_seq, o.synack_seq);
    let client = |name, flags, seq, ack, kind| Phase {
        name,
        per_conn: 1,
        client_is_src: true,
        flags,
        seq,
        ack,
        kind,
    };
    let server = |name, flags, seq, ack, kind| Phase {
        client_is_src: false,
        ..client(name, flags, seq, ack, kind)
    };
    let mut v = vec![
        client("SYN", SYN, s, 0, hs_kind::HS_SYN),
        server(
            "SYN-ACK",
            SYN | ACK,
            t,
            o.synack_ack.unwrap_or(s.wrapping_add(1)),
            hs_kind::HS_SYNACK,
        ),
        client(
            "ACK",
            ACK,
            s.wrapping_add(1),
            o.ack_ack.unwrap_or(t.wrapping_add(1)),
            hs_kind::HS_ACK,
        ),
    ];
    if o.flood > 0 {
        // Plain ACKs of the established connections: the tracker's fast
        // path, and the small-packet rate of the whole path.
        v.push(Phase {
            per_conn: o.flood,
            ..client(
                "DATA",
                ACK,
                s.wrapping_add(1),
                t.wrapping_add(1),
                hs_kind::HS_ACK,
            )
        });
    }
    match o.lifecycle {
        Lifecycle::Handshake => {}
        Lifecycle::Full => v.extend([
            client(
                "FIN",
                FIN | ACK,
                s.wrapping_add(1),
                t.wrapping_add(1),
                hs_kind::HS_FIN,
            ),
            server(
                "FIN-ACK",
                FIN | ACK,
                t.wrapping_add(1),
                s.wrapping_add(2),
                hs_kind::HS_FIN,
            ),
            client(
                "LAST-ACK",
                ACK,
                s.wrapping_add(2),
                t.wrapping_add(2),
                hs_kind::HS_ACK,
            ),
        ]),
        Lifecycle::Rst => v.push(client("RST", RST, s.wrapping_add(1), 0, hs_kind::HS_RST)),
    }
    v
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

/// Returns the calling thread to its own namespace when dropped.
struct Home(File);

impl Drop for Home {
    fn drop(&mut self) {
        let _ = setns(&self.0, CloneFlags::CLONE_NEWNET);
    }
}

fn enter(ns: &File) -> Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET).context("entering a network namespace")
}

fn side(ns_name: &str, iface: &str) -> Result<Side> {
    let ns = sys::netns_file(ns_name)?;
    enter(&ns)?;
    let iface = Iface::lookup(iface).with_context(|| format!("in namespace '{ns_name}'"))?;
    Ok(Side { ns, iface })
}

/// How many consecutive addresses from `first` (at most `want`) are
/// assigned to the side's interface.
fn assigned_run(side: &Side, first: Ipv4Addr, want: u32) -> Result<u32> {
    enter(&side.ns)?;
    let have = sys::ipv4_addrs(&side.iface.name)?;
    Ok((0..want)
        .take_while(|a| have.contains(&Ipv4Addr::from(u32::from(first) + a)))
        .count() as u32)
}

/// The error for an address the run would use but does not own.
fn not_assigned(ns: &str, side: &Side, first: Ipv4Addr, n: u32, at: u32) -> anyhow::Error {
    let addr = Ipv4Addr::from(u32::from(first) + at);
    let last = Ipv4Addr::from(u32::from(first) + n - 1);
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

fn sink_total(skel: &HandshakeSkel<'_>, kind: hs_kind) -> Result<u64> {
    let per_cpu = skel
        .maps
        .sink_counts
        .lookup_percpu(&kind.0.to_ne_bytes(), MapFlags::ANY)
        .context("reading the sink counters")?
        .unwrap_or_default();
    Ok(per_cpu
        .iter()
        .map(|b| u64::from_ne_bytes(b[..8].try_into().unwrap_or([0; 8])))
        .sum())
}

struct Run<'a, 'obj> {
    o: &'a Args,
    skel: &'a mut HandshakeSkel<'obj>,
    client: &'a Side,
    server: &'a Side,
    ports_per_addr: u32,
    span: u64,
    sender: Sender,
    /// The CPUs of the flood threads (empty: the calling thread sends).
    cpus: Vec<usize>,
}

/// The first `n` CPUs this process may run on, when `n` > 1.
fn flood_cpus(n: usize) -> Result<Vec<usize>> {
    if n == 1 {
        return Ok(Vec::new());
    }
    let set = sched_getaffinity(Pid::from_raw(0)).context("reading the CPU affinity")?;
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .take(n)
        .collect();
    if cpus.len() < n {
        bail!(
            "--threads {n}: only {} CPUs are available to this process",
            cpus.len()
        );
    }
    Ok(cpus)
}

/// Sends `total` frames in batches paced at `rate`: `batch(sent, n)` sends
/// frames `sent..sent + n`, and `progress(sent)` hears after each batch.
/// A batch is one live-frames run: up to [`MAX_RUN`] frames at `--rate
/// max`, else a tenth of a second's worth (at most 64k), since each run has
/// a fixed cost of several ms (a page pool is set up and torn down).
fn paced(
    total: u64,
    rate: Rate,
    mut progress: impl FnMut(u64),
    mut batch: impl FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let n = match rate {
            Rate::Max => (total - sent).min(MAX_RUN),
            Rate::Pps(r) => (total - sent).min((r / 10).clamp(1, 65_536)),
        };
        batch(sent, n)?;
        sent += n;
        if let Rate::Pps(r) = rate {
            let due = start + Duration::from_secs_f64(sent as f64 / r as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                // Pacing the stream, not waiting for an event.
                std::thread::sleep(wait);
            }
        }
        progress(sent);
    }
    Ok(())
}

/// Sends `n` copies of `frame` through `skel`'s hs_gen as live frames, in
/// one BPF_PROG_TEST_RUN, as if they had arrived on `ifindex`.
fn live_run(skel: &HandshakeSkel<'_>, frame: &[u8], ifindex: u32, n: u64) -> libbpf_rs::Result<()> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let ctx = [0, frame.len() as u32, 0, ifindex, 0, 0u32];
    let mut ctx_bytes: Vec<u8> = ctx.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let input = ProgramInput {
        context_in: Some(&mut ctx_bytes),
        data_in: Some(frame),
        repeat: n as u32,
        flags: LIVE_FRAMES,
        ..Default::default()
    };
    skel.progs.hs_gen.test_run(input).map(drop)
}

/// An AF_PACKET socket bound to one interface, bypassing the qdisc.
struct PacketSocket(std::os::fd::OwnedFd);

impl PacketSocket {
    /// Opens it in the calling thread's network namespace.
    fn open(ifindex: u32) -> Result<Self> {
        use nix::libc;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening an AF_PACKET socket");
        }
        // SAFETY: fd is a new descriptor that we own.
        let sock = Self(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: sockaddr_ll is plain old data; zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the size passed.
        let ret = unsafe {
            libc::bind(
                sock.0.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if ret < 0 {
            return Err(std::io::Error::last_os_error()).context("binding the AF_PACKET socket");
        }
        let one: libc::c_int = 1;
        // SAFETY: PACKET_QDISC_BYPASS takes an int.  Failure only costs
        // speed, so it is not fatal.
        unsafe {
            libc::setsockopt(
                sock.0.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        Ok(sock)
    }

    fn send(&self, frame: &[u8]) -> Result<()> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: frame is a valid buffer of the given length.
            let n = unsafe {
                nix::libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0)
            };
            if n >= 0 {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            // The device queue is full: let it drain.
            if err.raw_os_error() == Some(nix::libc::ENOBUFS) {
                std::thread::yield_now();
                continue;
            }
            return Err(err).context("sending on the AF_PACKET socket");
        }
    }
}

impl Run<'_, '_> {
    /// The client endpoint of frame `i` of a phase whose indexes wrap at
    /// `span`, as hs_gen computes it.
    fn client_of(&self, i: u64, span: u64) -> Endpoint {
        let j = if span > 0 { i % span } else { i };
        let per = u64::from(self.ports_per_addr.max(1));
        let addr = Ipv4Addr::from(u32::from(self.o.client) + (j / per) as u32);
        let port = self.o.sport + (j % per) as u16 * self.o.port_step;
        Endpoint::new(addr, port)
    }

    /// Sends a flood phase from one thread per CPU in `self.cpus`.  Each
    /// thread loads its own generator, so that none shares the phase's
    /// counter with another, pins itself, enters the sender's namespace
    /// (setns is per thread) and sends its share of the connections.
    fn flood_threads(&self, src: &Side, phase: &hs_phase, frame: &[u8], ph: &Phase) -> Result<()> {
        let n = self.cpus.len() as u64;
        let rate = match self.o.rate {
            Rate::Max => Rate::Max,
            Rate::Pps(r) => Rate::Pps((r / n).max(1)),
        };
        let count = self.o.count;
        std::thread::scope(|s| {
            let workers: Vec<_> = self
                .cpus
                .iter()
                .enumerate()
                .map(|(t, &cpu)| {
                    let t = t as u64;
                    // Thread t's connections: its slice of the round, each
                    // ph.per_conn times (the first takes the remainder).
                    let conns = count / n + if t == 0 { count % n } else { 0 };
                    let first = t * (count / n) + if t > 0 { count % n } else { 0 };
                    s.spawn(move || -> Result<()> {
                        let mut set = CpuSet::new();
                        set.set(cpu).context("CPU number")?;
                        sched_setaffinity(Pid::from_raw(0), &set)
                            .with_context(|| format!("pinning a flood thread to CPU {cpu}"))?;
                        enter(&src.ns)?;
                        let mut object = MaybeUninit::<OpenObject>::uninit();
                        let mut skel = HandshakeSkelBuilder::default()
                            .open(&mut object)
                            .context("opening the generator's BPF object")?
                            .load()
                            .context("loading the generator's BPF programs")?;
                        let bss = skel
                            .maps
                            .bss_data
                            .as_deref_mut()
                            .context("the generator's .bss is not memory-mapped")?;
                        // This thread cycles over connections
                        // first..first + conns.
                        bss.phase = hs_phase {
                            next: 0,
                            count: conns * ph.per_conn,
                            span: conns,
                            base: first,
                            ..*phase
                        };
                        paced(
                            conns * ph.per_conn,
                            rate,
                            |_| {},
                            |_, n| {
                                live_run(&skel, frame, src.iface.index, n)
                                    .context("sending live XDP frames")
                            },
                        )
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| bail!("a flood thread panicked"))
                })
                .collect::<Result<Vec<()>>>()
        })?;
        Ok(())
    }

    fn phase(&mut self, ph: &Phase, round: u64) -> Result<PhaseReport> {
        let o = self.o;
        let (src, dst) = if ph.client_is_src {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        enter(&src.ns)?;

        let eth = Ether {
            dst: dst.iface.mac,
            src: src.iface.mac,
        };
        let server = Endpoint::new(o.server, o.dport);
        // The template: hs_gen writes each connection's client in.
        let frame = ph.frame(&eth, Endpoint::new(o.client, o.sport), server);

        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref_mut()
            .context("the generator's .bss is not memory-mapped")?;
        // A flood phase cycles over this round's connections.
        let total = o.count * ph.per_conn;
        let (next, span) = if ph.per_conn > 1 {
            (0, o.count)
        } else {
            (round * o.count, self.span)
        };
        let bss_phase = hs_phase {
            next,
            count: next + total,
            span,
            client_addr: u32::from(o.client),
            ports_per_addr: self.ports_per_addr,
            client_port: o.sport,
            port_step: o.port_step,
            client_is_src: u8::from(ph.client_is_src),
            ..Default::default()
        };
        bss.phase = bss_phase;

        // A progress line only for people watching a terminal.
        let progress = !o.quiet && std::io::stderr().is_terminal();
        let before = sink_total(self.skel, ph.kind)?;
        let start = Instant::now();
        if ph.per_conn > 1 && !self.cpus.is_empty() {
            self.flood_threads(src, &bss_phase, &frame, ph)?;
        } else {
            let mut last_progress = start;
            let mut socket: Option<PacketSocket> = None;
            let mut sender = self.sender;
            let this = &*self;
            paced(
                total,
                o.rate,
                |sent| {
                    if progress && last_progress.elapsed() > Duration::from_millis(250) {
                        last_progress = Instant::now();
                        let rate = sent as f64 / start.elapsed().as_secs_f64();
                        eprint!(
                            "\rhandshake: {:<8} {sent}/{total} sent, {:.0} pkt/s   ",
                            ph.name, rate
                        );
                        let _ = std::io::stderr().flush();
                    }
                },
                |sent, n| {
                    if sender != Sender::Socket {
                        match live_run(this.skel, &frame, src.iface.index, n) {
                            Ok(()) => sender = Sender::Live,
                            Err(e) if sender == Sender::Auto && sent == 0 => {
                                // No live frames on this kernel (before 5.18).
                                eprintln!(
                                    "xdp-conntrack: note: live XDP frames unavailable ({e}); \
                                     sending through an AF_PACKET socket"
                                );
                                sender = Sender::Socket;
                            }
                            Err(e) => {
                                return Err(anyhow::Error::new(e)).with_context(|| {
                                    format!("sending the {} stream (live XDP frames)", ph.name)
                                })
                            }
                        }
                    }
                    if sender == Sender::Socket {
                        let sock = match &socket {
                            Some(s) => s,
                            None => socket.insert(PacketSocket::open(src.iface.index)?),
                        };
                        for i in next + sent..next + sent + n {
                            sock.send(&ph.frame(&eth, this.client_of(i, span), server))?;
                        }
                    }
                    Ok(())
                },
            )?;
            self.sender = sender;
        }
        let sent = total;

        // Everything is out; wait for it to arrive, or to stop arriving.
        let mut delivered = sink_total(self.skel, ph.kind)? - before;
        let mut moved = Instant::now();
        let mut arrived = Instant::now();
        while delivered < sent && moved.elapsed() < STALL {
            std::thread::sleep(Duration::from_millis(2));
            let now = sink_total(self.skel, ph.kind)? - before;
            if now != delivered {
                delivered = now;
                moved = Instant::now();
                arrived = moved;
            }
        }
        if delivered >= sent {
            arrived = Instant::now();
        }
        if progress {
            eprint!("\r{:70}\r", "");
        }
        Ok(PhaseReport {
            name: ph.name,
            sent,
            delivered,
            elapsed: arrived.duration_since(start),
        })
    }
}

/// Sends the streams and reports what arrived.  The sinks attach through
/// a bpf_link if `features` has one.
pub fn generate(o: &Args, features: Features) -> Result<Report> {
    sys::require_root()?;
    if o.count == 0 {
        bail!("--count must be at least 1");
    }
    if o.port_step == 0 {
        bail!("--port-step must be at least 1");
    }
    if o.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if o.flood > 0 && o.rounds > 1 {
        bail!("--flood and --rounds do not go together");
    }
    if o.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let cpus = flood_cpus(o.threads)?;
    if o.threads > 1 && (o.flood == 0 || o.sender == Sender::Socket) {
        bail!("--threads takes --flood and live frames (not --sender socket)");
    }
    let ports = u64::from((u16::MAX - o.sport) / o.port_step) + 1;
    let total = o.count.saturating_mul(o.rounds);
    let ports_per_addr = ports.min(total) as u32;
    // Addresses one round needs, and those the whole run could use.
    let need = o.count.div_ceil(u64::from(ports_per_addr));
    let want = total.div_ceil(u64::from(ports_per_addr));
    if u64::from(u32::from(o.client)) + want > u64::from(u32::MAX) {
        bail!(
            "--count {} needs more client addresses than IPv4 has",
            o.count
        );
    }

    let _home =
        Home(File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?);
    let client = side(&o.client_ns, &o.client_iface)?;
    let server = side(&o.server_ns, &o.server_iface)?;
    // A round may not reuse a tuple; later rounds reuse those of earlier
    // ones once the assigned addresses run out.
    let addrs = assigned_run(&client, o.client, want as u32)?;
    if u64::from(addrs) < need {
        return Err(not_assigned(
            &o.client_ns,
            &client,
            o.client,
            need as u32,
            addrs,
        ));
    }
    if assigned_run(&server, o.server, 1)? == 0 {
        return Err(not_assigned(&o.server_ns, &server, o.server, 1, 0));
    }
    let span = u64::from(addrs) * u64::from(ports_per_addr);

    let mut object = MaybeUninit::<OpenObject>::uninit();
    let open = HandshakeSkelBuilder::default()
        .open(&mut object)
        .context("opening the generator's BPF object")?;
    let mut skel = open
        .load()
        .context("loading the generator's BPF programs")?;

    // Sinks on both namespace ends: they count what arrives and drop it, so
    // the namespaces' stacks never answer.
    let link = features.link;
    let mut sinks: Vec<(&File, XdpLink)> = Vec::new();
    for (side, ns) in [(&server, &o.server_ns), (&client, &o.client_ns)] {
        enter(&side.ns)?;
        let sink = loader::attach(
            skel.progs.hs_sink.as_fd(),
            &side.iface,
            XdpMode::Native,
            false,
            link,
        )
        .with_context(|| format!("attaching the sink in namespace '{ns}'"))?;
        sinks.push((&side.ns, sink));
    }

    let mut run = Run {
        o,
        skel: &mut skel,
        client: &client,
        server: &server,
        ports_per_addr,
        span,
        sender: o.sender,
        cpus,
    };
    let start = Instant::now();
    let phases = phases(o);
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
            let r = run.phase(ph, round)?;
            sum.sent += r.sent;
            sum.delivered += r.delivered;
            sum.elapsed += r.elapsed;
        }
        if o.rounds > 1 && !o.quiet && std::io::stderr().is_terminal() {
            eprint!("\rhandshake: round {}/{}   ", round + 1, o.rounds);
        }
    }
    // Netlink attachments detach in their own namespace.
    for (ns, sink) in sinks {
        enter(ns)?;
        drop(sink);
    }
    Ok(Report {
        count: total,
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
