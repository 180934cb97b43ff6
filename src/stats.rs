//! The per-CPU counters, summed.

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use crate::bpf::types::ct_stats;

/// Counters summed over CPUs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// The raw sums.
    pub s: ct_stats,
}

impl Totals {
    /// Reads and sums the per-CPU `stats` map.
    pub fn read(map: &impl MapCore) -> Result<Self> {
        let per_cpu = map
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .context("reading the counters")?
            .context("the counters map is empty")?;
        let mut t = ct_stats::default();
        for bytes in per_cpu {
            let mut c = ct_stats::default();
            plain::copy_from_bytes(&mut c, &bytes)
                .map_err(|_| anyhow::anyhow!("counter value has the wrong size"))?;
            for i in 0..2 {
                t.rx_packets[i] += c.rx_packets[i];
                t.rx_bytes[i] += c.rx_bytes[i];
            }
            t.new_conns += c.new_conns;
            t.invalid += c.invalid;
            t.table_full += c.table_full;
            t.strict_drops += c.strict_drops;
            t.malformed += c.malformed;
            t.redirect_err += c.redirect_err;
            t.untracked += c.untracked;
            t.expired += c.expired;
            t.swept += c.swept;
            t.closed += c.closed;
        }
        Ok(Self { s: t })
    }

    /// Frames forwarded, both ways.
    pub fn packets(&self) -> u64 {
        self.s.rx_packets.iter().sum()
    }

    /// Bytes forwarded, both ways.
    pub fn bytes(&self) -> u64 {
        self.s.rx_bytes.iter().sum()
    }

    /// Frames dropped for any reason.
    pub fn drops(&self) -> u64 {
        self.s.invalid + self.s.table_full + self.s.strict_drops + self.s.malformed
    }

    /// Entries in the table: created minus removed.
    pub fn active(&self) -> u64 {
        self.s
            .new_conns
            .saturating_sub(self.s.expired + self.s.swept + self.s.closed)
    }
}
