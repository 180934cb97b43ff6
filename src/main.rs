//! The `xdp-conntrack` command line: parse, then dispatch to a verb.

use std::process::ExitCode;

use clap::Parser;

use xdp_conntrack::cmd::{self, Command};

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
    tracker: cmd::tracker::Args,
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
        Some(verb) => {
            if verb.only_reads_or_prints() {
                // `xdp-conntrack dump | head` ends quietly, as C tools do,
                // instead of panicking on the closed pipe.  Not for the
                // tracker or the generator, which must clean up.
                // SAFETY: nothing else handles SIGPIPE in this process.
                let _ = unsafe {
                    nix::sys::signal::signal(
                        nix::sys::signal::Signal::SIGPIPE,
                        nix::sys::signal::SigHandler::SigDfl,
                    )
                };
            }
            verb.run()
        }
        None => cmd::tracker::run(cli.tracker),
    };
    result.unwrap_or_else(|e| {
        eprintln!("xdp-conntrack: {e:#}");
        ExitCode::FAILURE
    })
}
