//! The trace_pipe reader for `-l 5`: the program's bpf_printk lines.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::thread;

use anyhow::{Context, Result};

use crate::sys;

/// Marks the program's own lines in the shared trace buffer.
pub const TAG: &str = "xct: ";

/// Picks the program's message out of one trace_pipe line, e.g.
/// `  ksoftirqd/1-22  [001] ..s21  93.4: bpf_trace_printk: xct: pkt ...`.
pub fn message(line: &str) -> Option<&str> {
    line.find(TAG).map(|i| line[i + TAG.len()..].trim_end())
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
                    println!("trace: {msg}");
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
}
