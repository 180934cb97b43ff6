//! Shared test support: a BPF_PROG_TEST_RUN harness around the real
//! skeleton, and guards for namespaces and tracker processes that clean up
//! even when a test fails.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramInput};
use xdp_conntrack::bpf::types::{bss, ct_clock, ct_entry};
use xdp_conntrack::bpf::ConntrackSkel;
use xdp_conntrack::counters::Totals;
use xdp_conntrack::loader::{self, Config, Features};
use xdp_conntrack::table::{self, Conn};

/// XDP actions.
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Every test here needs root (CI runs as root); fail loudly otherwise.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests load BPF programs and create namespaces: run them as root"
    );
}

/// A loaded program with its maps, driven through BPF_PROG_TEST_RUN.
pub struct Harness {
    pub skel: ConntrackSkel<'static>,
}

impl Harness {
    /// Loads the program with `cfg`; the devmap points both sides at `lo`
    /// so that forwarding verdicts come back as XDP_REDIRECT.
    pub fn new(cfg: Config) -> Self {
        require_root();
        // The open object must outlive the skeleton; leak the small
        // allocation for the test's lifetime.
        let object: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let skel = loader::load(object, &cfg).expect("loading the program");
        loader::set_ports(&skel, [1, 1]).expect("filling the devmap");
        Self { skel }
    }

    /// The default configuration.
    pub fn default_config() -> Self {
        Self::new(test_config())
    }

    /// Runs one frame and returns the XDP action.
    pub fn run(&self, frame: &[u8]) -> u32 {
        self.try_run(frame).expect("BPF_PROG_TEST_RUN")
    }

    /// Runs one frame; Err if the kernel refuses the test run itself.
    pub fn try_run(&self, frame: &[u8]) -> libbpf_rs::Result<u32> {
        let input = ProgramInput {
            data_in: Some(frame),
            ..Default::default()
        };
        let out = self.skel.progs.xdp_conntrack.test_run(input)?;
        Ok(out.return_value)
    }

    /// Runs the frame and returns the frame as the program left it.
    pub fn run_output(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out_buf = vec![0u8; frame.len() + 256];
        let input = ProgramInput {
            data_in: Some(frame),
            data_out: Some(&mut out_buf),
            ..Default::default()
        };
        let out = self
            .skel
            .progs
            .xdp_conntrack
            .test_run(input)
            .expect("BPF_PROG_TEST_RUN");
        let ret = out.return_value;
        let len = out.data.map(|d| d.len()).unwrap_or(0);
        out_buf.truncate(len);
        (ret, out_buf)
    }

    /// Runs the garbage-collection pass.
    pub fn sweep(&self) {
        loader::sweep(&self.skel).expect("sweep");
    }

    /// The live entry under `key`, if any.
    pub fn entry(&self, key: &xdp_conntrack::bpf::types::ct_key) -> Option<(Conn, ct_entry)> {
        table::lookup_at(&self.skel.maps.ct_table, key, self.now()).expect("lookup")
    }

    /// The live entry under an IPv6 `key`, if any.
    pub fn entry6(&self, key: &xdp_conntrack::bpf::types::ct_key6) -> Option<(Conn, ct_entry)> {
        table::lookup_at(&self.skel.maps.ct_table6, key, self.now()).expect("lookup")
    }

    /// Every live connection, IPv4's then IPv6's.
    pub fn conns(&self) -> Vec<Conn> {
        self.conns_at(self.now())
    }

    /// The table as it reads at `now` on the program's clock: a moment
    /// the test pins, where [`Harness::conns`] reads a clock that ticks
    /// on (a whole second of a timeout can go between two lines).
    pub fn conns_at(&self, now: u64) -> Vec<Conn> {
        let mut all = table::read_at(&self.skel.maps.ct_table, now).expect("reading the table");
        all.extend(table::read_at(&self.skel.maps.ct_table6, now).expect("reading the table"));
        all
    }

    /// Now on the program's clock: entries are live or expired by it.
    pub fn now(&self) -> u64 {
        loader::program_now(&self.skel).expect("reading the program's clock")
    }

    /// Moves the program's clock `d` forward, as if that much time had
    /// passed: its jiffies clock reads `jiffies * tick_ns + offset_ns`
    /// (`struct ct_clock` in its .bss), so this adds `d` to the offset.
    /// The datapath, both sweeps and [`Harness::now`] (and so every table
    /// read here) follow; CLOCK_MONOTONIC does not.
    pub fn advance(&self, d: Duration) {
        // The .bss is written through the map, as the clock probe writes
        // it, so that a shared Harness can move its clock.
        let key = 0u32.to_ne_bytes();
        let map = &self.skel.maps.bss;
        let mut value = map
            .lookup(&key, MapFlags::ANY)
            .expect("reading the program's .bss")
            .expect("the .bss value");
        let at = std::mem::offset_of!(bss, ct_clock);
        let field = |v: &[u8], off: usize| {
            let b = &v[at + off..at + off + 8];
            u64::from_ne_bytes(b.try_into().unwrap())
        };
        let tick_ns = field(&value, std::mem::offset_of!(ct_clock, tick_ns));
        assert_ne!(tick_ns, 0, "only the jiffies clock can be moved");
        let off = at + std::mem::offset_of!(ct_clock, offset_ns);
        let moved = field(&value, std::mem::offset_of!(ct_clock, offset_ns))
            .wrapping_add(u64::try_from(d.as_nanos()).expect("a shorter step"));
        value[off..off + 8].copy_from_slice(&moved.to_ne_bytes());
        map.update(&key, &value, MapFlags::ANY)
            .expect("writing the program's .bss");
    }

    /// Moves the program's clock forward to `t` (its own nanoseconds), if
    /// it is not there yet.
    pub fn advance_to(&self, t: u64) {
        let now = self.now();
        if t > now {
            self.advance(Duration::from_nanos(t - now));
        }
    }

    /// Empties both tables, as a fresh load would leave them: the same
    /// program then runs the next test's packets, and a load (seconds
    /// under emulation) is spent once per configuration, not per test.
    /// Nothing else persists between packets: the counters are read as
    /// differences, and the per-CPU slots are written before each use, as
    /// they are for live traffic.
    pub fn clear(&self) {
        for map in [&self.skel.maps.ct_table, &self.skel.maps.ct_table6] {
            for key in map.keys().collect::<Vec<_>>() {
                map.delete(&key).expect("deleting a table entry");
            }
        }
        assert_eq!(self.raw_len(), 0, "both tables empty");
    }

    /// Number of keys in both tables, live or expired.
    pub fn raw_len(&self) -> usize {
        self.skel.maps.ct_table.keys().count() + self.skel.maps.ct_table6.keys().count()
    }

    /// Counters summed over CPUs.
    pub fn stats(&self) -> Totals {
        Totals::read(&self.skel.maps.stats).expect("reading counters")
    }
}

/// The default configuration for everything this kernel offers.
pub fn test_config() -> Config {
    Config::new(Features::probe())
}

/// Deletes network namespaces on drop.
pub struct Netns(pub Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A short name prefix unique to this process and call, for namespaces
/// and interfaces (interface names are limited to 15 bytes).
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "xc{}{}",
        std::process::id() % 100_000,
        (b'a' + (n % 26) as u8) as char
    )
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdp-conntrack"))
}

/// ns1 and ns2 joined by veth1/veth2, whose host ends live in a third
/// namespace `<prefix>fw`; torn down on drop.
pub struct Topology {
    pub prefix: String,
}

impl Topology {
    pub fn up() -> Self {
        Self::up_with("10.0.0.1/24", "10.0.0.2/24")
    }

    /// The same with other addresses for ns1's and ns2's eth0.
    pub fn up_with(addr1: &str, addr2: &str) -> Self {
        Self::up_env(&[("ADDR1", addr1), ("ADDR2", addr2)])
    }

    /// Two rx and two tx queues on every veth end (`QUEUES=2`, then
    /// `ethtool -L rx 2 tx 2` on all four ends, before any program
    /// attaches: veth refuses XDP on a peer with more tx than rx queues,
    /// and a queue added under a program carries no XDP), with these
    /// addresses for ns1's and ns2's eth0.
    pub fn two_queues(addr1: &str, addr2: &str) -> Self {
        let topo = Self::up_env(&[("ADDR1", addr1), ("ADDR2", addr2), ("QUEUES", "2")]);
        let ends = [
            (topo.fw(), topo.veth(1)),
            (topo.fw(), topo.veth(2)),
            (topo.ns1(), "eth0".to_string()),
            (topo.ns2(), "eth0".to_string()),
        ];
        for (ns, iface) in &ends {
            let out = topo.exec(ns, &["ethtool", "-L", iface, "rx", "2", "tx", "2"]);
            assert!(
                out.status.success(),
                "ethtool -L {iface} rx 2 tx 2 in {ns}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        topo
    }

    /// The same with topology.sh's environment (ADDR1, ADDR2, MTU, QUEUES).
    pub fn up_env(env: &[(&str, &str)]) -> Self {
        require_root();
        let prefix = unique_prefix();
        let topo = Self { prefix };
        let st = Command::new(repo().join("scripts/topology.sh"))
            .args(["up", &topo.prefix, "--fw"])
            .envs(env.iter().copied())
            .status()
            .expect("running scripts/topology.sh");
        assert!(st.success(), "topology.sh up {} failed", topo.prefix);
        topo
    }
    pub fn ns1(&self) -> String {
        format!("{}ns1", self.prefix)
    }
    pub fn ns2(&self) -> String {
        format!("{}ns2", self.prefix)
    }
    pub fn fw(&self) -> String {
        format!("{}fw", self.prefix)
    }
    pub fn veth(&self, side: u8) -> String {
        format!("{}veth{side}", self.prefix)
    }
    pub fn pin_path(&self) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/{}", self.prefix))
    }
    /// Runs a command inside a namespace and returns its output.
    pub fn exec(&self, ns: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Frames the XDP program on `iface` in `ns` has seen on each of its rx
    /// queues (`ethtool -S`, `rx_queue_N_xdp_packets`), by queue.
    pub fn xdp_packets_by_queue(&self, ns: &str, iface: &str) -> Vec<u64> {
        let out = self.exec(ns, &["ethtool", "-S", iface]);
        assert!(out.status.success(), "ethtool -S {iface} in {ns}");
        let stats = String::from_utf8_lossy(&out.stdout);
        let mut v = Vec::new();
        for q in 0.. {
            let name = format!("rx_queue_{q}_xdp_packets:");
            let Some(n) = stats
                .lines()
                .find_map(|l| l.trim().strip_prefix(name.as_str()))
            else {
                break;
            };
            v.push(n.trim().parse().expect("a packet count"));
        }
        v
    }

    /// `xdp-conntrack handshake` (the generator) from ns1 to ns2, with
    /// `extra` options and a window of [`WINDOW`] frames: every phase
    /// arrives whole however busy the machine is, or the generator fails
    /// (frames the tracker drops never arrive).
    pub fn handshake(&self, extra: &[&str]) -> std::process::Output {
        self.handshake_open_loop(&[&["--window", WINDOW], extra].concat())
    }

    /// The same without a window, as `make scale` sends: for `--clash`
    /// and `--threads`, which take none, and for phases the tracker drops.
    pub fn handshake_open_loop(&self, extra: &[&str]) -> std::process::Output {
        Command::new(binary())
            .args([
                "handshake",
                "-q",
                "--client-ns",
                &self.ns1(),
                "--server-ns",
                &self.ns2(),
            ])
            .args(extra)
            .output()
            .expect("running xdp-conntrack handshake")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/topology.sh"))
            .args(["down", &self.prefix])
            .status();
    }
}

/// A running `xdp-conntrack` between a topology's veths; SIGINT on drop.
/// Started one way only: [`Tracker::builder`].
pub struct Tracker {
    pub child: Child,
    /// Its stdout, line by line.
    pub stdout: mpsc::Receiver<String>,
    /// What it wrote to stderr up to and including the line that says it
    /// is forwarding.
    pub startup: Vec<String>,
    /// How long it took to say so: seconds here, minutes under emulation.
    pub started_in: Duration,
    pub pin_path: PathBuf,
}

/// How to start a tracker: `Tracker::builder(&topo).args(..).env(..)`,
/// then [`start`](TrackerBuilder::start), or
/// [`start_failing`](TrackerBuilder::start_failing) for a start that must
/// be refused.
pub struct TrackerBuilder {
    /// The interfaces and the namespace.
    base: Vec<String>,
    /// What the test adds.
    args: Vec<String>,
    env: Vec<(String, String)>,
    pin_path: PathBuf,
}

/// A running child's output: (stdout lines, stderr lines), each read by a
/// thread of its own so that the child never blocks on a full pipe.
type Lines = (mpsc::Receiver<String>, mpsc::Receiver<String>);

impl TrackerBuilder {
    /// More arguments, after the interfaces, the namespace and the pins.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.args.extend(extra.iter().map(|a| a.to_string()));
        self
    }

    /// An environment variable for it.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Pins somewhere else than the topology's own pin path.
    pub fn pin_path(mut self, path: &Path) -> Self {
        path.clone_into(&mut self.pin_path);
        self
    }

    fn spawn(&self) -> (Child, Lines) {
        let mut child = Command::new(binary())
            .args(&self.base)
            .arg("--pin-path")
            .arg(&self.pin_path)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning xdp-conntrack");
        let out = line_channel(child.stdout.take().unwrap());
        let err = line_channel(child.stderr.take().unwrap());
        (child, (out, err))
    }

    /// Starts the tracker and waits until it reports that it forwards.
    pub fn start(self) -> Tracker {
        let (mut child, (stdout, stderr)) = self.spawn();
        let mut startup = Vec::new();
        let began = Instant::now();
        let deadline = began + start_timeout();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(l) = stderr.recv_timeout(left) else {
                let _ = child.kill();
                panic!(
                    "xdp-conntrack {:?} did not start in {:?}: {:?}; stderr: {startup:#?}",
                    self.args,
                    began.elapsed(),
                    child.wait()
                );
            };
            let forwarding = l.contains("forwarding");
            if !forwarding {
                eprintln!("tracker: {l}");
            }
            startup.push(l);
            if forwarding {
                break;
            }
        }
        let started_in = began.elapsed();
        eprintln!("tracker: started in {started_in:?}");
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in stderr {});
        Tracker {
            child,
            stdout,
            startup,
            started_in,
            pin_path: self.pin_path,
        }
    }

    /// Runs a tracker that must refuse to start: fails the test if it
    /// reports that it forwards, or if it has not exited within
    /// [`start_timeout`] (a refusal at attach time comes after the load).
    /// Returns its exit status and its stderr lines.
    pub fn start_failing(self) -> (ExitStatus, Vec<String>) {
        let (mut child, (_, stderr)) = self.spawn();
        let mut lines = Vec::new();
        let limit = start_timeout();
        let deadline = Instant::now() + limit;
        // Until it closes stderr, by exiting.
        while let Ok(l) = stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if l.contains("forwarding") {
                let _ = child.kill();
                panic!("xdp-conntrack {:?} started: {l}", self.args);
            }
            lines.push(l);
        }
        let exited = wait_for(deadline.saturating_duration_since(Instant::now()), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
            panic!(
                "xdp-conntrack {:?} was still running after {limit:?}; stderr: {lines:#?}",
                self.args
            );
        }
        (child.wait().expect("the exit status"), lines)
    }
}

impl Tracker {
    /// A tracker in the topology's middle namespace between its two veths
    /// (`-1 VETH1 -2 VETH2 --netns FW --pin-path /sys/fs/bpf/PREFIX`).
    pub fn builder(topo: &Topology) -> TrackerBuilder {
        let pin_path = topo.pin_path();
        let base = [
            "-1",
            &topo.veth(1),
            "-2",
            &topo.veth(2),
            "--netns",
            &topo.fw(),
        ]
        .map(String::from)
        .to_vec();
        TrackerBuilder {
            base,
            args: Vec::new(),
            env: Vec::new(),
            pin_path,
        }
    }

    /// Sends SIGINT and waits for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.interrupt()
    }

    fn interrupt(&mut self) -> ExitStatus {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Ok(Some(st)) = self.child.try_wait() {
            return st;
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let exited = wait_for(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
        }
        self.child.wait().expect("waiting for xdp-conntrack")
    }

    /// `xdp-conntrack dump` against this tracker: (stdout lines, stderr).
    pub fn dump(&self) -> (Vec<String>, String) {
        dump(&self.pin_path)
    }

    /// Every entry `dump` shows for this tracker, parsed.
    pub fn table(&self) -> Vec<ConntrackLine> {
        dump_table(&self.pin_path)
    }

    /// `xdp-conntrack stats` against this tracker: every counter by name.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let out = Command::new(binary())
            .args(["stats", "--pin-path"])
            .arg(&self.pin_path)
            .output()
            .expect("running xdp-conntrack stats");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "stats failed: {text}");
        text.lines()
            .map(|l| {
                let (name, n) = l
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("not a counter line: {l:?}"));
                (name.to_string(), n.parse().expect("a counter value"))
            })
            .collect()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.interrupt();
    }
}

/// Runs `xdp-conntrack dump --pin-path DIR`.
pub fn dump(pin_path: &Path) -> (Vec<String>, String) {
    dump_with(pin_path, &[])
}

/// Runs `xdp-conntrack dump --pin-path DIR ARGS...`: its lines, and its
/// stderr (the footer).
pub fn dump_with(pin_path: &Path, args: &[&str]) -> (Vec<String>, String) {
    let out = Command::new(binary())
        .args(["dump", "--pin-path"])
        .arg(pin_path)
        .args(args)
        .output()
        .expect("running xdp-conntrack dump");
    assert!(
        out.status.success(),
        "dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// Namespaced sockets and the tracker's view, for the end-to-end tests

/// The generator's window in the tests (`handshake --window`): half a veth
/// ring (256 frames), so that no ring on the path overflows even if every
/// frame in flight waits in one.
pub const WINDOW: &str = "128";

/// The namespaces' addresses in the default topology.
pub const ADDR1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const ADDR2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Socket timeouts: long enough for a slow machine, short enough that a
/// broken forwarder fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the tracker may take to load and attach: the verifier's walk
/// of the program.  Under software emulation (`make test-kernels`) it is
/// many times what it is here, so the guest raises it through
/// XDP_CONNTRACK_TEST_START_SECS.
pub fn start_timeout() -> Duration {
    std::env::var("XDP_CONNTRACK_TEST_START_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(IO_TIMEOUT, Duration::from_secs)
}

/// Runs `f` on a thread that has entered the named network namespace and
/// returns its result.  Sockets keep the namespace they were created in, so
/// the caller may go on using what `f` returns from any thread.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    xdp_conntrack::sys::netns::in_netns(ns, f).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A TCP listener on 10.0.0.2 in ns2, on a port the kernel picks.
pub fn tcp_listener(topo: &Topology) -> TcpListener {
    in_ns(&topo.ns2(), || {
        TcpListener::bind((ADDR2, 0)).expect("binding a listener in ns2")
    })
}

/// A TCP connection from ns1 to `to`.
pub fn tcp_connect(
    topo: &Topology,
    to: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    in_ns(&topo.ns1(), move || {
        let s = TcpStream::connect_timeout(&to, timeout)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(s)
    })
}

/// Accepts one connection and arms its timeouts.
pub fn tcp_accept(listener: &TcpListener) -> TcpStream {
    let (s, _) = listener.accept().expect("accept");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Every entry `dump` shows, parsed; its footer must count them.
pub fn dump_table(pin_path: &Path) -> Vec<ConntrackLine> {
    let (lines, footer) = dump(pin_path);
    assert!(
        footer.contains(&format!("{} flow entries have been shown", lines.len())),
        "the footer does not count the {} lines: {footer:?}",
        lines.len()
    );
    lines
        .iter()
        .map(|l| ConntrackLine::parse_or_panic(l))
        .collect()
}

/// The `dump` entry of the TCP or UDP flow whose original direction goes
/// from `from` to `to`.
pub fn dump_flow(
    pin_path: &Path,
    proto: &str,
    from: SocketAddr,
    to: SocketAddr,
) -> Option<ConntrackLine> {
    let orig = Tuple::ports(from, to);
    dump_table(pin_path)
        .into_iter()
        .find(|e| e.proto == proto && e.orig == orig)
}

/// The `dump` entry of an ICMP echo exchange from `from` to `to`.
pub fn dump_echo(pin_path: &Path, from: IpAddr, to: IpAddr) -> Option<ConntrackLine> {
    dump_table(pin_path)
        .into_iter()
        .find(|e| e.proto == "icmp" && e.orig.src == from && e.orig.dst == to)
}

/// The output of `ip -n FW link show VETH`.
pub fn link_show(topo: &Topology, side: u8) -> String {
    let out = Command::new("ip")
        .args(["-n", &topo.fw(), "link", "show", &topo.veth(side)])
        .output()
        .expect("ip link show");
    assert!(out.status.success(), "ip link show {}", topo.veth(side));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether an XDP program is attached to a veth's host end.
pub fn xdp_attached(topo: &Topology, side: u8) -> bool {
    link_show(topo, side).contains("xdp")
}

// ---------------------------------------------------------------------------
// `conntrack -L` lines

/// The layer-4 half of a conntrack tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum L4 {
    /// TCP and UDP: `sport=N dport=N`.
    Ports { sport: u16, dport: u16 },
    /// ICMP: `type=N code=N id=N`.
    Icmp { icmp_type: u8, code: u8, id: u16 },
}

/// One direction of a connection: `src=A dst=B` and its layer-4 half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
}

impl Tuple {
    /// A TCP or UDP tuple from `from` to `to`.
    pub fn ports(from: SocketAddr, to: SocketAddr) -> Self {
        Self {
            src: from.ip(),
            dst: to.ip(),
            l4: L4::Ports {
                sport: from.port(),
                dport: to.port(),
            },
        }
    }

    /// An ICMP tuple.
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8, id: u16) -> Self {
        Self {
            src,
            dst,
            l4: L4::Icmp {
                icmp_type,
                code,
                id,
            },
        }
    }
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "src={} dst={} ", self.src, self.dst)?;
        match self.l4 {
            L4::Ports { sport, dport } => write!(f, "sport={sport} dport={dport}"),
            L4::Icmp {
                icmp_type,
                code,
                id,
            } => write!(f, "type={icmp_type} code={code} id={id}"),
        }
    }
}

/// One line of `conntrack -L` (conntrack-tools), or of `xdp-conntrack
/// dump`, which prints the same format:
///
/// `tcp      6 431999 ESTABLISHED src=A dst=B sport=1 dport=2 [UNREPLIED]
/// src=B dst=A sport=2 dport=1 [ASSURED] mark=0 use=1`
///
/// The kernel's per-tuple `packets= bytes=` (nf_conntrack_acct) and its
/// `[OFFLOAD]` flags are read past; any other word is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackLine {
    /// "tcp", "udp", "icmp".
    pub proto: String,
    /// Its IP protocol number.
    pub l4proto: u8,
    /// Seconds left.
    pub timeout: u64,
    /// The TCP state, e.g. "ESTABLISHED"; None for UDP and ICMP.
    pub state: Option<String>,
    pub orig: Tuple,
    pub reply: Tuple,
    pub unreplied: bool,
    pub assured: bool,
    pub mark: Option<u32>,
    pub use_count: Option<u32>,
}

impl ConntrackLine {
    /// Parses one line; Err says what is wrong with it.
    pub fn parse(line: &str) -> Result<Self, String> {
        let mut words = line.split_whitespace().peekable();
        let mut next = |what: &str| words.next().ok_or(format!("no {what}"));
        let proto = next("protocol name")?.to_string();
        let l4proto: u8 = number(next("protocol number")?)?;
        let known = xdp_conntrack::proto::proto_name(l4proto);
        if known != "unknown" && known != proto {
            return Err(format!("protocol {l4proto} is {known}, not {proto}"));
        }
        let timeout = number(next("timeout")?)?;
        let state = match words.peek() {
            Some(w) if !w.contains('=') && !w.starts_with('[') => {
                Some(words.next().unwrap_or_default().to_string())
            }
            _ => None,
        };
        let orig = read_tuple(&mut words)?;
        let unreplied = words.next_if_eq(&"[UNREPLIED]").is_some();
        let reply = read_tuple(&mut words)?;
        let mut assured = false;
        while let Some(flag) = words.next_if(|w| w.starts_with('[')) {
            match flag {
                "[ASSURED]" => assured = true,
                "[OFFLOAD]" | "[HW_OFFLOAD]" => {}
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        let (mut mark, mut use_count) = (None, None);
        for w in words {
            match w.split_once('=') {
                Some(("mark", v)) => mark = Some(number(v)?),
                Some(("use", v)) => use_count = Some(number(v)?),
                Some(("zone" | "secctx" | "labels", _)) => {}
                _ => return Err(format!("unexpected {w:?}")),
            }
        }
        Ok(Self {
            proto,
            l4proto,
            timeout,
            state,
            orig,
            reply,
            unreplied,
            assured,
            mark,
            use_count,
        })
    }

    /// [`ConntrackLine::parse`], failing the test with the line.
    #[track_caller]
    pub fn parse_or_panic(line: &str) -> Self {
        Self::parse(line).unwrap_or_else(|e| panic!("{e} in conntrack line {line:?}"))
    }

    /// The TCP state is `name`.
    pub fn in_state(&self, name: &str) -> bool {
        self.state.as_deref() == Some(name)
    }
}

/// A decimal number.
fn number<T: std::str::FromStr>(w: &str) -> Result<T, String> {
    w.parse().map_err(|_| format!("{w:?} is not a number"))
}

/// The value of the next word, which must be `key=value`.
fn field<'a>(words: &mut impl Iterator<Item = &'a str>, key: &str) -> Result<&'a str, String> {
    let w = words.next().ok_or(format!("no {key}="))?;
    w.strip_prefix(key)
        .and_then(|v| v.strip_prefix('='))
        .ok_or(format!("{w:?} where {key}= belongs"))
}

/// One tuple, and the kernel's `packets= bytes=` behind it if there.
fn read_tuple<'a>(
    words: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
) -> Result<Tuple, String> {
    let addr = |w: &str| -> Result<IpAddr, String> {
        w.parse().map_err(|_| format!("{w:?} is not an address"))
    };
    let src = addr(field(words, "src")?)?;
    let dst = addr(field(words, "dst")?)?;
    let l4 = if words.peek().is_some_and(|w| w.starts_with("type=")) {
        L4::Icmp {
            icmp_type: number(field(words, "type")?)?,
            code: number(field(words, "code")?)?,
            id: number(field(words, "id")?)?,
        }
    } else {
        L4::Ports {
            sport: number(field(words, "sport")?)?,
            dport: number(field(words, "dport")?)?,
        }
    };
    if words.peek().is_some_and(|w| w.starts_with("packets=")) {
        number::<u64>(field(words, "packets")?)?;
        number::<u64>(field(words, "bytes")?)?;
    }
    Ok(Tuple { src, dst, l4 })
}

/// A child process, killed and reaped when dropped.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A one-shot iperf3 server in ns2 bound to `addr`, port 5201, listening
/// by the time this returns; killed when the value is dropped.
pub fn iperf3_server(topo: &Topology, addr: &str) -> Reaped {
    let server = Command::new("ip")
        .args(["netns", "exec", &topo.ns2()])
        .args(["iperf3", "-s", "-1", "-B", addr, "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting iperf3 -s");
    let server = Reaped(server);
    let listening = wait_for(IO_TIMEOUT, || {
        let out = topo.exec(&topo.ns2(), &["ss", "-Hltn", "sport", "=", ":5201"]);
        !out.stdout.is_empty()
    });
    assert!(listening, "iperf3 -s is not listening");
    server
}

/// The lines of a child's pipe as they come, read on a thread of their own
/// so that the child never blocks on a full pipe.
pub fn line_channel(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}
