//! Kernel feature probes: what this kernel offers the datapath, for the
//! loader (which adapts to it) and for `xdp-conntrack check` (which lists it).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Result};
use libbpf_rs::libbpf_sys as sys_;

use crate::sys;

/// Kernel features the datapath adapts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// XDP frags (5.18): attach as xdp.frags, so jumbo frames pass.
    pub frags: bool,
    /// bpf_for_each_map_elem (5.13): sweep in one kernel pass; otherwise
    /// userspace lists candidates and `ct_reap` removes them one by one.
    pub for_each: bool,
    /// bpf_link XDP attach (5.9): the attachment dies with the process;
    /// otherwise netlink, detached on exit.
    pub link: bool,
    /// The calibrated jiffies clock (bpf_jiffies64, 5.5, inlined by the
    /// verifier); otherwise the ktime helper, a call per packet.
    pub jiffies: bool,
}

/// The names [`Features::without`] takes, one per field.
pub const FALLBACK_NAMES: &[&str] = &["frags", "for_each", "link", "jiffies"];

impl Features {
    /// What this kernel offers.  Probing loads tiny programs, so it needs
    /// root; the answer is kept for the life of the process.
    pub fn probe() -> Self {
        static PROBED: OnceLock<Features> = OnceLock::new();
        *PROBED.get_or_init(|| Features {
            frags: xdp_helper(sys_::BPF_FUNC_xdp_get_buff_len),
            for_each: xdp_helper(sys_::BPF_FUNC_for_each_map_elem),
            link: kernel_version() >= (5, 9),
            jiffies: xdp_helper(sys_::BPF_FUNC_jiffies64),
        })
    }

    /// These features less the ones named in `list` (comma separated, from
    /// [`FALLBACK_NAMES`]), so that the fallbacks can be exercised on a new
    /// kernel.
    pub fn without(mut self, list: &str) -> Result<Self> {
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "frags" => self.frags = false,
                "for_each" => self.for_each = false,
                "link" => self.link = false,
                "jiffies" => self.jiffies = false,
                _ => bail!(
                    "unknown feature '{name}' to disable (known: {})",
                    FALLBACK_NAMES.join(", ")
                ),
            }
        }
        Ok(self)
    }

    /// The fallbacks in use, for a one-time note.
    pub fn fallbacks(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.frags {
            v.push("no XDP frags: jumbo frames may not pass (veth caps the MTU near 3.5K)");
        }
        if !self.for_each {
            v.push("no bpf_for_each_map_elem: the sweep runs from userspace");
        }
        if !self.link {
            v.push("no bpf_link for XDP: attached over netlink, detached on exit (not if killed)");
        }
        if !self.jiffies {
            v.push("clock: a ktime helper call per packet instead of the calibrated jiffies");
        }
        v
    }
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

/// One probed feature.
#[derive(Debug, Clone)]
pub struct Probe {
    /// What it is.
    pub name: &'static str,
    /// The first kernel that has it.
    pub since: &'static str,
    /// Whether this kernel has it.
    pub ok: bool,
    /// What its absence means.
    pub need: Need,
    /// How it was found out: "probe" (asked the kernel) or "version".
    pub how: &'static str,
}

/// Probes everything the tracker uses or may use; must run as root (probes
/// load programs).
pub fn probe_all() -> Vec<Probe> {
    let v = kernel_version();
    let f = |name, since, ok, need, how| Probe {
        name,
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
            v >= (5, 9),
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
            v >= (6, 3),
            Need::Optional("frames over one buffer (MTU 3506 on veth) are dropped"),
            "version",
        ),
        f(
            "BPF_PROG_TEST_RUN live frames (handshake generator)",
            "5.18",
            v >= (5, 18),
            Need::Optional("AF_PACKET sender (handshake --sender socket, chosen automatically)"),
            "version",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_disabled_by_name() {
        let all = Features {
            frags: true,
            for_each: true,
            link: true,
            jiffies: true,
        };
        let f = all.without("frags, link").unwrap();
        assert!(!f.frags && !f.link && f.for_each && f.jiffies);
        assert_eq!(all.without("").unwrap(), all);
        assert_eq!(f.fallbacks().len(), 2);
        let none = all.without(&FALLBACK_NAMES.join(",")).unwrap();
        assert_eq!(none.fallbacks().len(), FALLBACK_NAMES.len());
        assert!(all.without("frag").is_err());
    }
}
