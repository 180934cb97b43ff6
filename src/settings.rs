//! Settings that users type: timeouts by state name, and MAC addresses.

use anyhow::{bail, Context, Result};

use crate::bpf::names;
use crate::bpf::types::{ct_tcp_state, ct_timeout};

/// Number of timeout slots in `struct ct_config`.
pub const TIMEOUT_SLOTS: usize = ct_timeout::CT_TO_MAX.0 as usize;

/// The default of each timeout slot, in seconds: the kernel's
/// (`sysctl net.netfilter`), except LAST_ACK (120 s, the kernel's 30) and
/// UDP (300 s unreplied and 600 s as a stream, the kernel's 30 and 120),
/// which keep idle but live flows longer.  The slot's `--timeout` name is
/// its enumerator's in conntrack.h, in lower case.
pub const DEFAULT_TIMEOUTS: &[(u32, u32)] = &[
    (ct_tcp_state::CT_TCP_SYN_SENT.0, 120),
    (ct_tcp_state::CT_TCP_SYN_RECV.0, 60),
    (ct_tcp_state::CT_TCP_ESTABLISHED.0, 432_000),
    (ct_tcp_state::CT_TCP_FIN_WAIT.0, 120),
    (ct_tcp_state::CT_TCP_CLOSE_WAIT.0, 60),
    (ct_tcp_state::CT_TCP_LAST_ACK.0, 120),
    (ct_tcp_state::CT_TCP_TIME_WAIT.0, 120),
    (ct_tcp_state::CT_TCP_CLOSE.0, 10),
    (ct_tcp_state::CT_TCP_SYN_SENT2.0, 120),
    (ct_timeout::CT_TO_MAX_RETRANS.0, 300),
    (ct_timeout::CT_TO_UNACKNOWLEDGED.0, 300),
    (ct_timeout::CT_TO_UDP.0, 300),
    (ct_timeout::CT_TO_UDP_STREAM.0, 600),
    (ct_timeout::CT_TO_ICMP.0, 30),
];

/// The `--timeout` name of a slot: `established`, `udp_stream`, ...
pub fn timeout_name(slot: u32) -> String {
    let table = if slot < ct_tcp_state::CT_TCP_MAX.0 {
        names::CT_TCP_STATE
    } else {
        names::CT_TIMEOUT
    };
    names::lookup(table, slot)
        .unwrap_or("unknown")
        .to_ascii_lowercase()
}

/// The `--timeout` names, their slot in `ct_config.timeout` and the
/// default in seconds, in slot order.
pub fn timeouts() -> impl Iterator<Item = (String, usize, u32)> {
    DEFAULT_TIMEOUTS
        .iter()
        .map(|&(slot, secs)| (timeout_name(slot), slot as usize, secs))
}

/// The default timeout table, indexed like `ct_config.timeout`.
pub fn default_timeouts() -> [u32; TIMEOUT_SLOTS] {
    let mut t = [0; TIMEOUT_SLOTS];
    for &(slot, secs) in DEFAULT_TIMEOUTS {
        t[slot as usize] = secs;
    }
    t
}

/// Older `--timeout` names, kept working: (alias, name).
pub const TIMEOUT_ALIASES: &[(&str, &str)] = &[("unack", "unacknowledged")];

/// Parses `STATE=SECONDS`, e.g. `established=3600` or `UDP=30`.
pub fn parse_timeout(s: &str) -> Result<(usize, u32)> {
    let (name, secs) = s
        .split_once('=')
        .with_context(|| format!("timeout '{s}' is not STATE=SECONDS"))?;
    let mut name = name.trim().to_ascii_lowercase();
    if let Some(&(_, full)) = TIMEOUT_ALIASES.iter().find(|(a, _)| *a == name) {
        name = full.to_string();
    }
    let Some((_, slot, _)) = timeouts().find(|(n, _, _)| *n == name) else {
        let known: Vec<String> = timeouts().map(|(n, _, _)| n).collect();
        bail!(
            "unknown state '{name}' in timeout '{s}' (known: {})",
            known.join(", ")
        );
    };
    let secs: u32 = secs
        .trim()
        .parse()
        .with_context(|| format!("timeout '{s}': '{secs}' is not a number of seconds"))?;
    if secs == 0 {
        bail!("timeout '{s}': seconds must be at least 1");
    }
    Ok((slot, secs))
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        bail!("'{s}' is not a MAC address (want aa:bb:cc:dd:ee:ff)");
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 2 {
            bail!("'{s}' is not a MAC address (want aa:bb:cc:dd:ee:ff)");
        }
        *byte = u8::from_str_radix(part, 16)
            .with_context(|| format!("'{s}' is not a MAC address (want aa:bb:cc:dd:ee:ff)"))?;
    }
    Ok(mac)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_by_name() {
        let (slot, secs) = parse_timeout("ESTABLISHED=3600").unwrap();
        assert_eq!(slot, ct_tcp_state::CT_TCP_ESTABLISHED.0 as usize);
        assert_eq!(secs, 3600);
        assert_eq!(
            parse_timeout("unack=9").unwrap(),
            (ct_timeout::CT_TO_UNACKNOWLEDGED.0 as usize, 9)
        );
        assert!(parse_timeout("established").is_err());
        assert!(parse_timeout("bogus=1").is_err());
        assert!(parse_timeout("udp=x").is_err());
        assert!(parse_timeout("udp=0").is_err());
    }

    #[test]
    fn every_slot_has_a_default_and_a_name() {
        let names: Vec<String> = timeouts().map(|(n, _, _)| n).collect();
        assert_eq!(
            names,
            [
                "syn_sent",
                "syn_recv",
                "established",
                "fin_wait",
                "close_wait",
                "last_ack",
                "time_wait",
                "close",
                "syn_sent2",
                "max_retrans",
                "unacknowledged",
                "udp",
                "udp_stream",
                "icmp"
            ]
        );
        assert!(default_timeouts()[1..].iter().all(|&s| s > 0));
    }

    #[test]
    fn established_and_udp_stream_defaults() {
        let t = default_timeouts();
        assert_eq!(t[ct_tcp_state::CT_TCP_ESTABLISHED.0 as usize], 432_000);
        assert_eq!(t[ct_timeout::CT_TO_UDP_STREAM.0 as usize], 600);
    }

    #[test]
    fn macs_parse_and_print() {
        let mac = parse_mac("02:00:0a:0B:0c:ff").unwrap();
        assert_eq!(mac, [2, 0, 10, 11, 12, 255]);
        assert_eq!(format_mac(&mac), "02:00:0a:0b:0c:ff");
        for bad in [
            "",
            "02:00:0a:0b:0c",
            "02:00:0a:0b:0c:zz",
            "0200:0a:0b:0c:ff:1",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}
