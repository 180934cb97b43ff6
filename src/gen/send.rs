//! How the generator's frames leave the sending namespace: as live XDP
//! frames (hs_gen through BPF_PROG_TEST_RUN with
//! BPF_F_TEST_XDP_LIVE_FRAMES), through an AF_PACKET socket, or from
//! pinned threads with a generator each (a flood's shares, or the two
//! copies of a raced phase), behind [`Transmitter::send`] and
//! [`Transmitter::race`], which pace them all.

use std::fs::File;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use super::plan::{self, Clients, Frames, Phase};
use super::{Rate, Sender};
use crate::bpf::hs::types::hs_phase;
use crate::bpf::hs::{HandshakeSkel, HandshakeSkelBuilder};
use crate::packet::{Endpoint, Ether};
use crate::sys::netns::Guard;
use crate::sys::PacketSocket;

/// BPF_F_TEST_XDP_LIVE_FRAMES: transmit what the program returns XDP_TX for.
const LIVE_FRAMES: u32 = 1 << 1;
/// Frames per live-frames run at `--rate max`.  Each run sets up and tears
/// down a page pool, which waits for an RCU grace period (milliseconds, the
/// CPUs idle meanwhile), so runs must be long for the path to stay busy.
const MAX_RUN: u64 = 1 << 22;

/// One phase's frames, sent from one side.
#[derive(Debug, Clone, Copy)]
pub struct Stream<'a> {
    /// What each frame is.
    pub phase: &'a Phase,
    /// Which connections the frames belong to.
    pub frames: Frames,
    /// Where those connections' clients live.
    pub clients: Clients,
    /// The server end of every connection.
    pub server: Endpoint,
    /// From the sending interface to the receiving one.
    pub eth: Ether,
    /// The sending interface, in the sending namespace.
    pub ifindex: u32,
    /// The sending namespace, for the flood threads to enter.
    pub ns: &'a File,
}

impl Stream<'_> {
    /// The frame of connection `conn`.
    fn frame(&self, conn: u64) -> Vec<u8> {
        self.phase
            .frame(&self.eth, self.clients.endpoint(conn), self.server)
    }

    /// The generator's description of these frames, for hs_gen.
    fn hs_phase(&self) -> hs_phase {
        let (client_addr, client_addr6) = match self.clients.first {
            IpAddr::V4(a) => (u32::from(a), [0; 2]),
            IpAddr::V6(a) => {
                let a = u128::from(a);
                (0, [(a >> 64) as u64, a as u64])
            }
        };
        hs_phase {
            next: self.frames.next,
            count: self.frames.end,
            span: self.frames.span,
            base: self.frames.base,
            client_addr,
            client_addr6,
            ports_per_addr: self.clients.ports_per_addr,
            client_port: self.clients.sport,
            port_step: self.clients.port_step,
            client_is_src: u8::from(self.phase.client_is_src),
            ..Default::default()
        }
    }
}

/// Sends streams the way `--sender`, `--rate`, `--window` and `--threads`
/// say.
#[derive(Debug)]
pub struct Transmitter {
    /// Live frames or the socket; `Auto` until the first live run tells.
    how: Sender,
    rate: Rate,
    /// Most frames in flight (0: no limit).
    window: u32,
    /// The CPUs of the flood threads (empty: the calling thread sends).
    cpus: Vec<usize>,
    /// The CPUs of the two threads of a raced phase.
    racers: Vec<usize>,
}

impl Transmitter {
    /// A transmitter for `o`'s `--sender`, `--rate` and `--window`,
    /// flooding from one thread per CPU in `cpus`, racing from the two in
    /// `racers`.
    pub fn new(o: &super::Args, cpus: Vec<usize>, racers: Vec<usize>) -> Self {
        Self {
            how: o.sender,
            rate: o.rate,
            window: o.window,
            cpus,
            racers,
        }
    }

    /// Sends `s` from the calling thread, which must be in the sending
    /// namespace, through `skel`'s hs_gen or the socket, or from the flood
    /// threads.  `progress(sent)` hears after each batch the calling
    /// thread sends.  With `--sender auto`, a kernel without live frames
    /// falls back to the socket at the first run.
    pub fn send(
        &mut self,
        skel: &mut HandshakeSkel<'_>,
        s: &Stream<'_>,
        progress: impl FnMut(u64),
    ) -> Result<()> {
        if s.phase.per_conn > 1 && !self.cpus.is_empty() {
            return self.flood(s);
        }
        let window = Window::open(skel, s, self.window)?;
        // The template: hs_gen writes each connection's client in.
        let template = s.frame(0);
        let mut socket: Option<PacketSocket> = None;
        let how = &mut self.how;
        paced(s.frames.len(), self.rate, progress, |sent, n| {
            if *how != Sender::Socket {
                match live_run(skel.progs.hs_gen.as_fd(), &template, s.ifindex, n, 0) {
                    Ok(()) => *how = Sender::Live,
                    Err(e) if *how == Sender::Auto && sent == 0 => {
                        // No live frames on this kernel (before 5.18).
                        eprintln!(
                            "xdp-conntrack: note: live XDP frames unavailable ({e}); \
                             sending through an AF_PACKET socket"
                        );
                        *how = Sender::Socket;
                    }
                    Err(e) => {
                        return Err(anyhow::Error::new(e)).with_context(|| {
                            format!("sending the {} stream (live XDP frames)", s.phase.name)
                        })
                    }
                }
                if let Some(w) = window.as_ref().filter(|_| *how == Sender::Live) {
                    // The run made n frames or fewer (never more: one per
                    // iteration); what the window held back follows, once
                    // there is room.
                    let end = s.frames.next + sent + n;
                    loop {
                        let at = w.next(skel)?;
                        if at >= end {
                            break;
                        }
                        w.wait_for_room(skel, at - s.frames.next)?;
                        live_run(skel.progs.hs_gen.as_fd(), &template, s.ifindex, end - at, 0)
                            .with_context(|| {
                                format!("sending the {} stream (live XDP frames)", s.phase.name)
                            })?;
                    }
                }
            }
            if *how == Sender::Socket {
                let sock = match &socket {
                    Some(sock) => sock,
                    None => socket.insert(PacketSocket::bound(s.ifindex, true)?),
                };
                let first = s.frames.next + sent;
                for i in first..first + n {
                    if let Some(w) = &window {
                        w.wait_for_room(skel, i - s.frames.next)?;
                    }
                    sock.send(&s.frame(s.frames.conn(i)))?;
                }
            }
            Ok(())
        })
    }

    /// Sends a flood from one thread per CPU in `self.cpus`, each its
    /// share of the connections at its share of the rate.
    fn flood(&self, s: &Stream<'_>) -> Result<()> {
        let n = self.cpus.len();
        let shares = plan::shares(s.frames.span, s.phase.per_conn, n);
        let jobs = self
            .cpus
            .iter()
            .zip(shares)
            .map(|(&cpu, frames)| (cpu, Stream { frames, ..*s }))
            .collect();
        pinned(jobs, plan::rate_share(self.rate, n), None)
    }

    /// Sends `a` and `b` from two threads pinned to the racers' CPUs, each
    /// at half the rate, frame by frame abreast (hs_gen's keep_pace), both
    /// through `skel`'s one hs_gen: the first packets of the same
    /// connections, which the tracker on each CPU then races to create.
    pub fn race(&self, skel: &mut HandshakeSkel<'_>, a: &Stream<'_>, b: &Stream<'_>) -> Result<()> {
        for k in 0..2u32 {
            skel.maps
                .race_at
                .update(&k.to_ne_bytes(), &0u64.to_ne_bytes(), MapFlags::ANY)
                .context("resetting the racers' progress")?;
        }
        let bss = bss_mut(skel)?;
        for (r, (s, &cpu)) in [a, b].into_iter().zip(&self.racers).enumerate() {
            bss.racers[r] = hs_phase {
                racer: r as u8 + 1,
                ..s.hs_phase()
            };
            bss.race_cpu[r] = cpu as u32;
        }
        bss.racing = 1;
        let jobs = self.racers.iter().copied().zip([*a, *b]).collect();
        let sent = pinned(
            jobs,
            plan::rate_share(self.rate, 2),
            Some(skel.progs.hs_gen.as_fd()),
        );
        if let Some(bss) = skel.maps.bss_data.as_deref_mut() {
            bss.racing = 0;
        }
        sent
    }
}

/// `--window`: how one stream's frames in flight are counted, by hs_gen
/// for live frames and here for the socket.  The window, the sink kind
/// and its count at the start have one home, the phase in the .bss.
struct Window<'p> {
    /// For the error message.
    phase: &'p str,
}

impl<'p> Window<'p> {
    /// Sets `skel`'s phase up for `s`, with a window of `limit` frames if
    /// it is not 0.
    fn open(skel: &mut HandshakeSkel<'_>, s: &Stream<'p>, limit: u32) -> Result<Option<Self>> {
        let mut ph = s.hs_phase();
        if limit > 0 {
            ph.window = limit;
            ph.kind = s.phase.kind.0 as u8;
            ph.first = ph.next;
            ph.arrived_base = arrived(skel, ph.kind)?;
        }
        bss_mut(skel)?.phase = ph;
        Ok((limit > 0).then_some(Self {
            phase: s.phase.name,
        }))
    }

    /// The index of the next frame hs_gen makes.
    fn next(&self, skel: &mut HandshakeSkel<'_>) -> Result<u64> {
        let bss = bss_mut(skel)?;
        // SAFETY: a plain read of memory-mapped .bss that hs_gen wrote.
        Ok(unsafe { std::ptr::read_volatile(&bss.phase.next) })
    }

    /// Waits until fewer than the window's frames of the `sent` so far are
    /// in flight; fails if none has arrived for [`super::STALL`].
    fn wait_for_room(&self, skel: &mut HandshakeSkel<'_>, sent: u64) -> Result<()> {
        let ph = bss_mut(skel)?.phase;
        let limit = u64::from(ph.window);
        let mut got = arrived(skel, ph.kind)? - ph.arrived_base;
        let mut moved = Instant::now();
        while sent.saturating_sub(got) >= limit {
            if moved.elapsed() >= super::STALL {
                bail!(
                    "{} frames of the {} stream stopped arriving at the sink \
                     (--window {limit}): the path dropped them",
                    sent - got,
                    self.phase,
                );
            }
            // Polling the sink's count: the wait is for it to move.
            std::thread::sleep(Duration::from_micros(100));
            let now = arrived(skel, ph.kind)? - ph.arrived_base;
            if now != got {
                got = now;
                moved = Instant::now();
            }
        }
        Ok(())
    }
}

/// The generator's .bss, writable.
pub(super) fn bss_mut<'s>(
    skel: &'s mut HandshakeSkel<'_>,
) -> Result<&'s mut crate::bpf::hs::types::bss> {
    skel.maps
        .bss_data
        .as_deref_mut()
        .context("the generator's .bss is not memory-mapped")
}

/// What the sinks have counted of `kind` while `windowed` is set.
fn arrived(skel: &mut HandshakeSkel<'_>, kind: u8) -> Result<u64> {
    let bss = bss_mut(skel)?;
    let at = bss
        .arrived
        .get(usize::from(kind))
        .context("a sink kind out of range")?;
    // SAFETY: a plain read of memory-mapped .bss that the sinks add to
    // on other CPUs (an aligned u64: no torn value).
    Ok(unsafe { std::ptr::read_volatile(at) })
}

/// Sends each `(cpu, stream)` of `jobs` from a thread of its own at
/// `rate`.  Each thread pins itself and enters its stream's namespace
/// (setns is per thread); then all start sending at once.  Flood threads
/// load a generator each, so that none shares the phase's counter with
/// another.  Racers send through the one generator `shared`, which
/// tells them apart by CPU, one frame per batch.
fn pinned(
    jobs: Vec<(usize, Stream<'_>)>,
    rate: Rate,
    shared: Option<BorrowedFd<'_>>,
) -> Result<()> {
    let start = Barrier::new(jobs.len());
    std::thread::scope(|scope| {
        let workers: Vec<_> = jobs
            .into_iter()
            .map(|(cpu, s)| {
                let start = &start;
                scope.spawn(move || -> Result<()> {
                    // Every thread reaches the barrier, even one whose
                    // setup failed, so that none waits forever.
                    let mut object = MaybeUninit::<OpenObject>::uninit();
                    let setup = sender(cpu, &s, shared.is_none(), &mut object);
                    start.wait();
                    let (_in, own) = setup?;
                    let prog = match (&own, shared) {
                        (Some(skel), _) => skel.progs.hs_gen.as_fd(),
                        (None, Some(fd)) => fd,
                        (None, None) => unreachable!("a generator of its own"),
                    };
                    let template = s.frame(0);
                    // Racers hand the tracker each frame as it is made,
                    // level with the other racer's (hs_gen's keep_pace).
                    let batch = if shared.is_some() { 1 } else { 0 };
                    paced(
                        s.frames.len(),
                        rate,
                        |_| {},
                        |_, n| {
                            live_run(prog, &template, s.ifindex, n, batch)
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
                    .unwrap_or_else(|_| bail!("a sending thread panicked"))
            })
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(())
}

/// Pins the calling thread to `cpu` and enters the namespace of `s`; with
/// `own`, also loads a generator set to send it.
fn sender<'obj>(
    cpu: usize,
    s: &Stream<'_>,
    own: bool,
    object: &'obj mut MaybeUninit<OpenObject>,
) -> Result<(Guard, Option<HandshakeSkel<'obj>>)> {
    let mut set = CpuSet::new();
    set.set(cpu).context("CPU number")?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .with_context(|| format!("pinning a sending thread to CPU {cpu}"))?;
    let guard = Guard::enter_file(s.ns)?;
    if !own {
        return Ok((guard, None));
    }
    let mut skel = HandshakeSkelBuilder::default()
        .open(object)
        .context("opening the generator's BPF object")?
        .load()
        .context("loading the generator's BPF programs")?;
    bss_mut(&mut skel)?.phase = s.hs_phase();
    Ok((guard, Some(skel)))
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("reading the CPU affinity")?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
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

/// Sends `n` copies of `frame` through the generator `prog` as live frames, in
/// one BPF_PROG_TEST_RUN, as if they had arrived on `ifindex`.  The kernel
/// transmits them `batch` at a time (0: its default, 64); each batch then
/// crosses the peer's XDP program, the tracker, on this CPU before the
/// next is made.
fn live_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ifindex: u32,
    n: u64,
    batch: u32,
) -> std::io::Result<()> {
    use libbpf_rs::libbpf_sys;
    use std::os::fd::AsRawFd;

    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let ctx = [0, frame.len() as u32, 0, ifindex, 0, 0u32];
    let ctx_bytes: Vec<u8> = ctx.iter().flat_map(|v| v.to_ne_bytes()).collect();
    // libbpf-rs's ProgramInput has no batch_size: the call is made here.
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        data_in: frame.as_ptr().cast(),
        data_size_in: frame.len() as u32,
        ctx_in: ctx_bytes.as_ptr().cast(),
        ctx_size_in: ctx_bytes.len() as u32,
        repeat: n as i32,
        flags: LIVE_FRAMES,
        batch_size: batch,
        ..Default::default()
    };
    let fd = prog.as_raw_fd();
    // SAFETY: `opts` is sized, and data_in and ctx_in point at
    // data_size_in and ctx_size_in bytes that the kernel only reads (no
    // data_out or ctx_out is given).
    let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(fd, &mut opts) };
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error(-ret));
    }
    Ok(())
}
