//! `xdp-conntrack check`: what the running kernel offers the tracker, with
//! the kernel version each feature first appeared in.

use std::path::Path;

use anyhow::Result;
use libbpf_rs::libbpf_sys as sys_;

use crate::sys::{self, Iface};

/// Whether the tracker can run without a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Without it the tracker cannot run.
    Required,
    /// It falls back, as the text says.
    Optional(&'static str),
    /// Not used by the tracker today; listed for planning.
    Info,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Feature {
    /// What it is.
    pub name: String,
    /// The first kernel that has it.
    pub since: &'static str,
    /// Whether this kernel has it.
    pub ok: bool,
    /// What its absence means.
    pub need: Need,
    /// How it was found out: "probe" (asked the kernel) or "version".
    pub how: &'static str,
}

/// The running kernel's (major, minor).
pub fn kernel_version() -> (u32, u32) {
    let uts = nix::sys::utsname::uname().ok();
    let release = uts
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn at_least(v: (u32, u32), want: (u32, u32)) -> bool {
    v >= want
}

fn prog_type(t: sys_::bpf_prog_type) -> bool {
    // SAFETY: a probe with no options; it loads and frees a tiny program.
    unsafe { sys_::libbpf_probe_bpf_prog_type(t, std::ptr::null()) == 1 }
}

fn map_type(t: sys_::bpf_map_type) -> bool {
    // SAFETY: as above, with a map.
    unsafe { sys_::libbpf_probe_bpf_map_type(t, std::ptr::null()) == 1 }
}

/// Whether XDP programs may call helper `h` here.
pub fn xdp_helper(h: sys_::bpf_func_id) -> bool {
    // SAFETY: as above; asks whether XDP programs may call helper `h`.
    unsafe { sys_::libbpf_probe_bpf_helper(sys_::BPF_PROG_TYPE_XDP, h, std::ptr::null()) == 1 }
}

/// Probes everything; must run as root (probes load programs).
pub fn probe() -> Vec<Feature> {
    let v = kernel_version();
    let f = |name: &str, since, ok, need, how| Feature {
        name: name.to_string(),
        since,
        ok,
        need,
        how,
    };
    vec![
        f(
            "BTF (/sys/kernel/btf/vmlinux), for CO-RE",
            "5.4",
            Path::new(sys::KERNEL_BTF).exists(),
            Need::Required,
            "probe",
        ),
        f(
            "BPF_PROG_TYPE_XDP, native attach",
            "4.8",
            prog_type(sys_::BPF_PROG_TYPE_XDP),
            Need::Required,
            "probe",
        ),
        f(
            "bpf_link XDP attach",
            "5.9",
            at_least(v, (5, 9)),
            Need::Optional("netlink attach, detached on exit"),
            "version",
        ),
        f(
            "DEVMAP, bpf_redirect_map()",
            "4.14",
            map_type(sys_::BPF_MAP_TYPE_DEVMAP) && xdp_helper(sys_::BPF_FUNC_redirect_map),
            Need::Required,
            "probe",
        ),
        f(
            "DEVMAP_HASH",
            "5.4",
            map_type(sys_::BPF_MAP_TYPE_DEVMAP_HASH),
            Need::Info,
            "probe",
        ),
        f(
            "bpf_spin_lock in hash map values (XDP)",
            "5.1",
            xdp_helper(sys_::BPF_FUNC_spin_lock),
            Need::Required,
            "probe",
        ),
        f(
            "bpf_for_each_map_elem (in-kernel sweep)",
            "5.13",
            xdp_helper(sys_::BPF_FUNC_for_each_map_elem),
            Need::Optional("userspace lists, ct_reap removes"),
            "probe",
        ),
        f(
            "bpf_jiffies64 (inlined clock)",
            "5.5",
            xdp_helper(sys_::BPF_FUNC_jiffies64),
            Need::Optional("a ktime helper call per packet"),
            "probe",
        ),
        f(
            "bpf_ktime_get_coarse_ns (cheap clock)",
            "5.11",
            xdp_helper(sys_::BPF_FUNC_ktime_get_coarse_ns),
            Need::Optional("bpf_ktime_get_ns, chosen at load time"),
            "probe",
        ),
        f(
            "bpf_timer",
            "5.15",
            xdp_helper(sys_::BPF_FUNC_timer_init),
            Need::Info,
            "probe",
        ),
        f(
            "ring buffer",
            "5.8",
            map_type(sys_::BPF_MAP_TYPE_RINGBUF),
            Need::Info,
            "probe",
        ),
        f(
            "XDP frags (multi-buffer, bpf_xdp_get_buff_len)",
            "5.18",
            xdp_helper(sys_::BPF_FUNC_xdp_get_buff_len),
            Need::Optional("plain XDP: veth MTU up to about 3.5K"),
            "probe",
        ),
        f(
            "multi-buffer XDP redirect (NDO_XMIT_SG, veth)",
            "6.3",
            at_least(v, (6, 3)),
            Need::Optional("frames over one buffer (MTU 3506 on veth) are dropped"),
            "version",
        ),
        f(
            "BPF_PROG_TEST_RUN live frames (handshake generator)",
            "5.18",
            at_least(v, (5, 18)),
            Need::Optional("AF_PACKET sender (handshake --sender socket, chosen automatically)"),
            "version",
        ),
    ]
}

/// The report as text, and whether everything required is there.
pub fn report(features: &[Feature], ifaces: &[Iface]) -> (String, bool) {
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

/// `xdp-conntrack check [-1 IFACE] [-2 IFACE] [--netns NAME]`.
pub fn run(ifaces: &[String], netns: Option<&str>) -> Result<bool> {
    sys::require_root()?;
    if let Some(ns) = netns {
        sys::enter_netns(ns)?;
    }
    let ifaces = ifaces
        .iter()
        .map(|n| Iface::lookup(n))
        .collect::<Result<Vec<_>>>()?;
    libbpf_rs::set_print(None);
    let (text, ok) = report(&probe(), &ifaces);
    print!("{text}");
    Ok(ok)
}
