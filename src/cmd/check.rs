//! `xdp-conntrack check`: what the running kernel offers the tracker, with
//! the kernel version each feature first appeared in, and what the veth
//! peers of the given interfaces will do with redirected frames.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::loader::features::{kernel_version, probe_all, Need, Probe};
use crate::sys::{self, Iface};

/// Options of `check`: with `-1`/`-2`, the veth peers of those interfaces
/// are checked too.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub ifaces: super::Ifaces,
}

/// Prints the report; exits 1 when something required is missing.
pub fn run(a: Args) -> Result<ExitCode> {
    sys::require_root()?;
    let ifaces = a.ifaces.enter_and_lookup()?;
    libbpf_rs::set_print(None);
    let (text, ok) = report(&probe_all(), &ifaces);
    print!("{text}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The report as text, and whether everything required is there.
pub fn report(features: &[Probe], ifaces: &[Iface]) -> (String, bool) {
    let (maj, min) = kernel_version();
    let mut out = format!("kernel {maj}.{min}\n");
    out.push_str(&format!(
        "{:<52} {:>6}  {:<4} {:<8} {}\n",
        "feature", "since", "here", "how", "without it"
    ));
    let mut all = true;
    for f in features {
        let without = match f.need {
            Need::Required => "REQUIRED",
            Need::Optional(fallback) => fallback,
            Need::Info => "not used",
        };
        if f.need == Need::Required && !f.ok {
            all = false;
        }
        out.push_str(&format!(
            "{:<52} {:>6}  {:<4} {:<8} {}\n",
            f.name,
            f.since,
            if f.ok { "yes" } else { "NO" },
            f.how,
            without
        ));
    }
    let trace = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find(|d| Path::new(d).join("trace_pipe").exists());
    out.push_str(&format!(
        "{:<52} {:>6}  {:<4} {:<8} {}\n",
        "tracefs",
        "",
        if trace.is_some() { "yes" } else { "no" },
        "probe",
        match trace {
            Some(d) => format!("at {d}"),
            None => "not mounted; -l 5 mounts it on /sys/kernel/tracing".to_string(),
        }
    ));
    for iface in ifaces {
        let line = match sys::veth_peer(iface) {
            Some(p) => {
                let ns = if p.netns.is_empty() {
                    String::new()
                } else {
                    format!(" in {}", p.netns)
                };
                format!(
                    "veth peer {}{ns}: GRO {}, XDP {}, tx checksum {}{}{}",
                    p.name,
                    if p.gro { "on" } else { "off" },
                    if p.xdp { "attached" } else { "none" },
                    if p.tx_csum { "on" } else { "off" },
                    if p.gro || p.xdp {
                        ""
                    } else {
                        " -> redirected frames would be dropped: ethtool -K <peer> gro on"
                    },
                    if p.tx_csum {
                        " -> TCP it sends would carry partial checksums: ethtool -K <peer> tx off"
                    } else {
                        ""
                    }
                )
            }
            None => "not a veth, or its peer is in an unnamed namespace".to_string(),
        };
        let line = match sys::multibuf_warning(iface) {
            Some(w) => format!("{line}; {w}"),
            None => line,
        };
        out.push_str(&format!("interface {:<42} {line}\n", iface.name));
    }
    if !all {
        out.push_str(
            "missing required features (marked NO above): xdp-conntrack needs Linux 5.10 or \
             newer, built with CONFIG_DEBUG_INFO_BTF=y\n",
        );
    }
    (out, all)
}
