//! The trace_pipe reader for `-l 5`: the program's bpf_printk lines.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::Ipv6Addr;
use std::thread;

use anyhow::{Context, Result};

use crate::{format, sys};

/// Marks the program's own lines in the shared trace buffer.
pub const TAG: &str = "xct: ";

/// Picks the program's message out of one trace_pipe line, e.g.
/// `  ksoftirqd/1-22  [001] ..s21  93.4: bpf_trace_printk: xct: pkt ...`.
pub fn message(line: &str) -> Option<&str> {
    line.find(TAG).map(|i| line[i + TAG.len()..].trim_end())
}

/// The message with each IPv6 address the kernel's `%pI6` wrote in full
/// (`fd00:0000:...:0001`) written as `inet_ntop()` writes it (`fd00::1`),
/// as `dump` and conntrack print them.
pub fn readable(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    // A full address is 39 characters: eight groups of four hex digits.
    while let Some(i) = rest.find(|c: char| c.is_ascii_hexdigit()) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let full = rest.get(..39).filter(|w| {
            w.split(':').count() == 8
                && w.split(':')
                    .all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_hexdigit()))
        });
        match full.and_then(|w| w.parse::<Ipv6Addr>().ok()) {
            Some(a) => {
                out.push_str(&format::ip(&a.into()));
                rest = &rest[39..];
            }
            None => {
                let n = rest
                    .find(|c: char| !c.is_ascii_hexdigit())
                    .unwrap_or(rest.len());
                out.push_str(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Starts a thread that prints the program's lines as they arrive.  It
/// lives until the process exits: a read on trace_pipe cannot be woken.
pub fn spawn() -> Result<()> {
    let path = sys::trace_pipe()?;
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    thread::Builder::new()
        .name("trace_pipe".into())
        .spawn(move || {
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                if let Some(msg) = message(&line) {
                    println!("trace: {}", readable(msg));
                }
            }
        })
        .context("starting the trace reader")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_our_lines_only() {
        let ours = "  <idle>-0  [001] ..s2. 93.4: bpf_trace_printk: xct: verdict invalid, drop";
        assert_eq!(message(ours), Some("verdict invalid, drop"));
        assert_eq!(message("  cat-12 [000] 1.0: bpf_trace_printk: other"), None);
    }

    #[test]
    fn full_ipv6_addresses_are_compressed() {
        let msg = "pkt proto=6 [fd00:0000:0000:0000:0000:0000:0000:0001]:23420 -> \
                   [fe80:0000:0000:0000:0000:0000:c0a8:0101]:80 flags=0x2";
        assert_eq!(
            readable(msg),
            "pkt proto=6 [fd00::1]:23420 -> [fe80::c0a8:101]:80 flags=0x2"
        );
        // IPv4 addresses and other numbers stay as they are.
        let v4 = "pkt proto=17 10.0.0.1:53 -> 10.0.0.2:1000 flags=0x0";
        assert_eq!(readable(v4), v4);
    }
}
