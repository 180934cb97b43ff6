//! The `xdp-conntrack` command line: parse, then dispatch.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use xdp_conntrack::config::{parse_mac, parse_timeout};
use xdp_conntrack::datapath::XdpMode;
use xdp_conntrack::handshake::{self, Lifecycle, Rate, Sender};
use xdp_conntrack::run;

const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/xdp-conntrack";

/// A stateful XDP forwarder: joins two interfaces, tracks every TCP, UDP
/// and ICMP flow like nf_conntrack, and drops what it calls INVALID.
#[derive(Debug, Parser)]
#[command(
    name = "xdp-conntrack",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe the kernel for what xdp-conntrack needs; exit 1 if something
    /// required is missing.
    Check {
        /// Also check this interface's veth peer.
        #[arg(short = '1', long = "iface1", value_name = "IFACE")]
        iface1: Option<String>,
        /// And this one's.
        #[arg(short = '2', long = "iface2", value_name = "IFACE")]
        iface2: Option<String>,
        /// Look the interfaces up in this network namespace.
        #[arg(long, value_name = "NAME")]
        netns: Option<String>,
    },
    /// Print the running tracker's counters, one `name value` per line.
    Stats {
        /// Directory holding the running tracker's pinned maps.
        #[arg(long, default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
    },
    /// Stateless TCP handshakes in the Ostinato pattern: SYNs from the
    /// client namespace, then SYN-ACKs from the server's, then ACKs.
    Handshake(HandshakeArgs),
    /// Print the running tracker's table like `conntrack -L`.
    Dump {
        /// Directory holding the running tracker's pinned maps.
        #[arg(long, default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct HandshakeArgs {
    /// Network namespace of the client side.
    #[arg(long, default_value = "ns1")]
    client_ns: String,
    /// The client's interface in that namespace.
    #[arg(long, default_value = "eth0")]
    client_iface: String,
    /// Network namespace of the server side.
    #[arg(long, default_value = "ns2")]
    server_ns: String,
    /// The server's interface in that namespace.
    #[arg(long, default_value = "eth0")]
    server_iface: String,
    /// Number of connections.
    #[arg(short = 'n', long, default_value_t = 1000)]
    count: u64,
    /// First client address; further ones follow when the ports run out.
    #[arg(long, default_value = "10.1.1.100")]
    client: Ipv4Addr,
    /// Server address.
    #[arg(long, default_value = "10.2.2.100")]
    server: Ipv4Addr,
    /// First client (source) port.
    #[arg(long, default_value_t = 23420)]
    sport: u16,
    /// Server (destination) port.
    #[arg(long, default_value_t = 8080)]
    dport: u16,
    /// Client port step between connections.
    #[arg(long, default_value_t = 1)]
    port_step: u16,
    /// Sequence number of the SYNs.
    #[arg(long, default_value_t = 100)]
    syn_seq: u32,
    /// Sequence number of the SYN-ACKs.
    #[arg(long, default_value_t = 200)]
    synack_seq: u32,
    /// Ack number of the SYN-ACKs [default: SYN seq + 1].
    #[arg(long)]
    synack_ack: Option<u32>,
    /// Ack number of the final ACKs [default: SYN-ACK seq + 1].
    #[arg(long)]
    ack_ack: Option<u32>,
    /// Packets per second, or `max`.
    #[arg(long, default_value = "200000")]
    rate: Rate,
    /// What happens after the handshake.
    #[arg(long, value_enum, default_value = "handshake")]
    lifecycle: Lifecycle,
    /// How frames are sent: live XDP frames, or an AF_PACKET socket.
    #[arg(long, value_enum, default_value = "auto")]
    sender: Sender,
    /// After the handshake, send this many plain ACKs per connection: the
    /// established fast path, and a small-packet rate test.
    #[arg(long, default_value_t = 0)]
    flood: u64,
    /// Send the flood from this many threads, each pinned to its own CPU
    /// with its own generator (live frames only): with as many veth queues,
    /// each CPU carries its own share of the path.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Repeat everything this many times over further connections (churn);
    /// client tuples are reused once the assigned addresses run out.
    #[arg(long, default_value_t = 1)]
    rounds: u64,
    /// No progress line.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// First interface (side 1).
    #[arg(short = '1', long = "iface1", value_name = "IFACE")]
    iface1: Option<String>,
    /// Second interface (side 2).
    #[arg(short = '2', long = "iface2", value_name = "IFACE")]
    iface2: Option<String>,
    /// 0 (silent) .. 5 (debug: print the program's bpf_printk lines).
    #[arg(short = 'l', long = "log-level", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(0..=5))]
    log_level: u8,
    /// Do not print the live counter line.
    #[arg(short, long)]
    quiet: bool,
    /// Capacity of the connection table.
    #[arg(long, default_value_t = 65536)]
    max_entries: u32,
    /// Override a timeout, e.g. established=3600 (repeatable). States:
    /// syn_sent syn_recv established fin_wait close_wait last_ack time_wait
    /// close syn_sent2 unack udp udp_stream icmp.
    #[arg(long = "timeout", value_name = "STATE=SECONDS",
          value_parser = |s: &str| parse_timeout(s).map_err(|e| e.to_string()))]
    timeouts: Vec<(usize, u32)>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "native")]
    xdp_mode: XdpMode,
    /// Directory (on bpffs) where the maps are pinned while running.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pin_path: PathBuf,
    /// Drop TCP packets of unknown connections met mid-stream instead of
    /// picking them up (nf_conntrack_tcp_loose=0).
    #[arg(long)]
    strict: bool,
    /// Replace an XDP program already attached to an interface.
    #[arg(long)]
    force: bool,
    /// Forward only, without tracking (the baseline for benchmarks).
    #[arg(long)]
    no_track: bool,
    /// Rewrite the destination MAC of frames leaving through iface1 (and
    /// set their source MAC to iface1's own).
    #[arg(long, value_name = "MAC",
          value_parser = |s: &str| parse_mac(s).map_err(|e| e.to_string()))]
    dst_mac1: Option<[u8; 6]>,
    /// Rewrite the destination MAC of frames leaving through iface2.
    #[arg(long, value_name = "MAC",
          value_parser = |s: &str| parse_mac(s).map_err(|e| e.to_string()))]
    dst_mac2: Option<[u8; 6]>,
    /// Run inside this network namespace (from `ip netns add`).
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// Milliseconds between two sweeps of expired entries.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    sweep_interval: u64,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line, not clap's usage block.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("xdp-conntrack: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };

    let result = match cli.command {
        Some(Command::Dump { pin_path }) => run::dump(&pin_path).map(|_| ()),
        Some(Command::Stats { pin_path }) => run::stats(&pin_path),
        Some(Command::Check {
            iface1,
            iface2,
            netns,
        }) => {
            let ifaces: Vec<String> = iface1.into_iter().chain(iface2).collect();
            match xdp_conntrack::check::run(&ifaces, netns.as_deref()) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            }
        }
        Some(Command::Handshake(a)) => handshake(a),
        None => tracker(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdp-conntrack: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn handshake(a: HandshakeArgs) -> anyhow::Result<()> {
    let report = xdp_conntrack::handshake::run(&handshake::Options {
        client_ns: a.client_ns,
        client_iface: a.client_iface,
        server_ns: a.server_ns,
        server_iface: a.server_iface,
        count: a.count,
        client: a.client,
        server: a.server,
        sport: a.sport,
        dport: a.dport,
        port_step: a.port_step,
        syn_seq: a.syn_seq,
        synack_seq: a.synack_seq,
        synack_ack: a.synack_ack,
        ack_ack: a.ack_ack,
        rate: a.rate,
        lifecycle: a.lifecycle,
        rounds: a.rounds,
        sender: a.sender,
        flood: a.flood,
        threads: a.threads,
        quiet: a.quiet,
    })?;
    println!("{}", report.summary());
    Ok(())
}

fn tracker(a: RunArgs) -> anyhow::Result<()> {
    let (Some(iface1), Some(iface2)) = (a.iface1, a.iface2) else {
        anyhow::bail!("both -1 IFACE and -2 IFACE are required (see --help)");
    };
    run::tracker(&run::Options {
        ifaces: [iface1, iface2],
        log_level: a.log_level,
        quiet: a.quiet,
        max_entries: a.max_entries,
        timeouts: a.timeouts,
        mode: a.xdp_mode,
        pin_path: a.pin_path,
        strict: a.strict,
        force: a.force,
        no_track: a.no_track,
        dst_mac: [a.dst_mac1, a.dst_mac2],
        netns: a.netns,
        sweep_every: std::time::Duration::from_millis(a.sweep_interval),
    })
}
