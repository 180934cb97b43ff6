//! Settings that users type: timeouts by state name, MAC addresses, and the
//! names of the tracker's states.

use anyhow::{bail, Context, Result};

use crate::bpf::types::{ct_tcp_state, ct_timeout};

/// Number of timeout slots in `struct ct_config`.
pub const TIMEOUT_SLOTS: usize = ct_timeout::CT_TO_MAX.0 as usize;

/// The `--timeout` names, their slot in `ct_config.timeout` and the default
/// in seconds (the seed report's, then the kernel's).
pub const TIMEOUTS: &[(&str, usize, u32)] = &[
    ("syn_sent", slot(ct_tcp_state::CT_TCP_SYN_SENT.0), 120),
    ("syn_recv", slot(ct_tcp_state::CT_TCP_SYN_RECV.0), 60),
    (
        "established",
        slot(ct_tcp_state::CT_TCP_ESTABLISHED.0),
        432_000,
    ),
    ("fin_wait", slot(ct_tcp_state::CT_TCP_FIN_WAIT.0), 120),
    ("close_wait", slot(ct_tcp_state::CT_TCP_CLOSE_WAIT.0), 60),
    ("last_ack", slot(ct_tcp_state::CT_TCP_LAST_ACK.0), 120),
    ("time_wait", slot(ct_tcp_state::CT_TCP_TIME_WAIT.0), 120),
    ("close", slot(ct_tcp_state::CT_TCP_CLOSE.0), 10),
    ("syn_sent2", slot(ct_tcp_state::CT_TCP_SYN_SENT2.0), 120),
    ("unack", slot(ct_timeout::CT_TO_UNACK.0), 300),
    ("udp", slot(ct_timeout::CT_TO_UDP.0), 300),
    ("udp_stream", slot(ct_timeout::CT_TO_UDP_STREAM.0), 600),
    ("icmp", slot(ct_timeout::CT_TO_ICMP.0), 30),
];

/// The `ct_config.timeout` index of a generated enum value.
const fn slot(v: u32) -> usize {
    v as usize
}

/// The default timeout table, indexed like `ct_config.timeout`.
pub fn default_timeouts() -> [u32; TIMEOUT_SLOTS] {
    let mut t = [0; TIMEOUT_SLOTS];
    for &(_, slot, secs) in TIMEOUTS {
        t[slot] = secs;
    }
    t
}

/// Parses `STATE=SECONDS`, e.g. `established=3600` or `UDP=30`.
pub fn parse_timeout(s: &str) -> Result<(usize, u32)> {
    let (name, secs) = s
        .split_once('=')
        .with_context(|| format!("timeout '{s}' is not STATE=SECONDS"))?;
    let name = name.trim().to_ascii_lowercase();
    let Some(&(_, slot, _)) = TIMEOUTS.iter().find(|(n, _, _)| *n == name) else {
        let known: Vec<&str> = TIMEOUTS.iter().map(|(n, _, _)| *n).collect();
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

/// The name `conntrack -L` uses for a TCP state.
pub fn tcp_state_name(state: u8) -> &'static str {
    match ct_tcp_state(u32::from(state)) {
        ct_tcp_state::CT_TCP_NONE => "NONE",
        ct_tcp_state::CT_TCP_SYN_SENT => "SYN_SENT",
        ct_tcp_state::CT_TCP_SYN_RECV => "SYN_RECV",
        ct_tcp_state::CT_TCP_ESTABLISHED => "ESTABLISHED",
        ct_tcp_state::CT_TCP_FIN_WAIT => "FIN_WAIT",
        ct_tcp_state::CT_TCP_CLOSE_WAIT => "CLOSE_WAIT",
        ct_tcp_state::CT_TCP_LAST_ACK => "LAST_ACK",
        ct_tcp_state::CT_TCP_TIME_WAIT => "TIME_WAIT",
        ct_tcp_state::CT_TCP_CLOSE => "CLOSE",
        ct_tcp_state::CT_TCP_SYN_SENT2 => "SYN_SENT2",
        _ => "INVALID",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_by_name() {
        let (slot, secs) = parse_timeout("ESTABLISHED=3600").unwrap();
        assert_eq!(slot, ct_tcp_state::CT_TCP_ESTABLISHED.0 as usize);
        assert_eq!(secs, 3600);
        assert!(parse_timeout("established").is_err());
        assert!(parse_timeout("bogus=1").is_err());
        assert!(parse_timeout("udp=x").is_err());
        assert!(parse_timeout("udp=0").is_err());
    }

    #[test]
    fn defaults_match_the_seed() {
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
