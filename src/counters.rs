//! The program's per-CPU counters (`enum ct_counter` in conntrack.h): one
//! table that names them, sums them over CPUs and prints them, and that the
//! tests read exact moves from.

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use crate::bpf::names;
use crate::bpf::types::{ct_counter, ct_stats};

/// Number of counters, `CT_C_MAX`.
pub const N: usize = ct_counter::CT_C_MAX.0 as usize;

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Frames or bytes forwarded.
    Traffic,
    /// Frames dropped; `drops` is their sum.
    Drop,
    /// Anything else: connections, entries, untracked frames.
    Event,
}

/// One counter: its slot and what it counts.  Its name comes from its
/// enumerator in conntrack.h (`CT_C_TABLE_FULL` is `table_full`).
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    /// Its slot in `struct ct_stats`.
    pub id: ct_counter,
    /// What it counts.
    pub kind: Kind,
}

const fn c(id: ct_counter, kind: Kind) -> Counter {
    Counter { id, kind }
}

/// Every counter, in slot order.  The length is `CT_C_MAX`, so a counter
/// added to conntrack.h and not here does not compile.
pub const COUNTERS: [Counter; N] = [
    c(ct_counter::CT_C_PACKETS_FROM_SIDE1, Kind::Traffic),
    c(ct_counter::CT_C_PACKETS_FROM_SIDE2, Kind::Traffic),
    c(ct_counter::CT_C_BYTES_FROM_SIDE1, Kind::Traffic),
    c(ct_counter::CT_C_BYTES_FROM_SIDE2, Kind::Traffic),
    c(ct_counter::CT_C_NEW, Kind::Event),
    c(ct_counter::CT_C_INVALID, Kind::Drop),
    c(ct_counter::CT_C_TABLE_FULL, Kind::Drop),
    c(ct_counter::CT_C_STRICT_DROPS, Kind::Drop),
    c(ct_counter::CT_C_MALFORMED, Kind::Drop),
    c(ct_counter::CT_C_REDIRECT_ERR, Kind::Event),
    c(ct_counter::CT_C_UNTRACKED, Kind::Event),
    c(ct_counter::CT_C_EXPIRED, Kind::Event),
    c(ct_counter::CT_C_SWEPT, Kind::Event),
    c(ct_counter::CT_C_CLOSED, Kind::Event),
    c(ct_counter::CT_C_CLASH_RESOLVE, Kind::Event),
    c(ct_counter::CT_C_RELATED, Kind::Event),
    c(ct_counter::CT_C_FRAGMENTS, Kind::Event),
    c(ct_counter::CT_C_IPV6, Kind::Event),
    c(ct_counter::CT_C_NEW_IPV6, Kind::Event),
    c(ct_counter::CT_C_DROPS_IPV6, Kind::Event),
    c(ct_counter::CT_C_FRAGMENTS_IPV6, Kind::Event),
    c(ct_counter::CT_C_DELETED, Kind::Event),
    c(ct_counter::CT_C_EVENTS_LOST, Kind::Event),
];

impl Counter {
    /// Its name in `stats` and in the tests: the enumerator less `CT_C_`,
    /// in lower case.
    pub fn name(&self) -> String {
        names::lookup(names::CT_COUNTER, self.id.0)
            .unwrap_or("unknown")
            .to_ascii_lowercase()
    }
}

/// The counter called `name` (`new`, `packets_from_side1`, ...).
pub fn by_name(name: &str) -> Option<ct_counter> {
    COUNTERS.iter().find(|c| c.name() == name).map(|c| c.id)
}

/// Counters summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// The sums, by slot.
    pub n: [u64; N],
}

impl Default for Totals {
    fn default() -> Self {
        Self { n: [0; N] }
    }
}

impl Totals {
    /// Reads and sums the per-CPU `stats` map.
    pub fn read(map: &impl MapCore) -> Result<Self> {
        let per_cpu = map
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .context("reading the counters")?
            .context("the counters map is empty")?;
        let mut t = Self::default();
        for bytes in per_cpu {
            let mut c = ct_stats::default();
            plain::copy_from_bytes(&mut c, &bytes)
                .map_err(|_| anyhow::anyhow!("counter value has the wrong size"))?;
            for (sum, v) in t.n.iter_mut().zip(c.n) {
                *sum += v;
            }
        }
        Ok(t)
    }

    /// One counter's sum.
    pub fn get(&self, c: ct_counter) -> u64 {
        self.n[c.0 as usize]
    }

    /// Every counter with its name, in slot order.
    pub fn named(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        COUNTERS.iter().map(|c| (c.name(), self.get(c.id)))
    }

    /// Frames forwarded, both ways.
    pub fn packets(&self) -> u64 {
        self.get(ct_counter::CT_C_PACKETS_FROM_SIDE1)
            + self.get(ct_counter::CT_C_PACKETS_FROM_SIDE2)
    }

    /// Bytes forwarded, both ways.
    pub fn bytes(&self) -> u64 {
        self.get(ct_counter::CT_C_BYTES_FROM_SIDE1) + self.get(ct_counter::CT_C_BYTES_FROM_SIDE2)
    }

    /// Frames dropped for any reason.
    pub fn drops(&self) -> u64 {
        COUNTERS
            .iter()
            .filter(|c| c.kind == Kind::Drop)
            .map(|c| self.get(c.id))
            .sum()
    }

    /// IPv4's share of the counts that both families move, named
    /// `<count>_ipv4`: each count less its IPv6 counter (`new` less
    /// `new_ipv6` is `new_ipv4`).  Read from one snapshot of per-CPU
    /// slots that move apart, so a difference is floored at 0.
    pub fn ipv4_shares(&self) -> [(&'static str, u64); 3] {
        [
            (
                "new_ipv4",
                self.get(ct_counter::CT_C_NEW),
                self.get(ct_counter::CT_C_NEW_IPV6),
            ),
            (
                "drops_ipv4",
                self.drops(),
                self.get(ct_counter::CT_C_DROPS_IPV6),
            ),
            (
                "fragments_ipv4",
                self.get(ct_counter::CT_C_FRAGMENTS),
                self.get(ct_counter::CT_C_FRAGMENTS_IPV6),
            ),
        ]
        .map(|(name, all, v6)| (name, all.saturating_sub(v6)))
    }

    /// Entries in the table: created minus removed.
    pub fn active(&self) -> u64 {
        let removed = self.get(ct_counter::CT_C_EXPIRED)
            + self.get(ct_counter::CT_C_SWEPT)
            + self.get(ct_counter::CT_C_CLOSED)
            + self.get(ct_counter::CT_C_DELETED);
        self.get(ct_counter::CT_C_NEW).saturating_sub(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_counter_once_in_slot_order() {
        for (i, c) in COUNTERS.iter().enumerate() {
            assert_eq!(c.id.0 as usize, i, "{}", c.name());
        }
        assert_eq!(COUNTERS[0].name(), "packets_from_side1");
        assert_eq!(by_name("table_full"), Some(ct_counter::CT_C_TABLE_FULL));
        assert_eq!(by_name("nonsense"), None);
    }

    #[test]
    fn derived_values_sum_the_right_counters() {
        let mut t = Totals::default();
        for (i, v) in t.n.iter_mut().enumerate() {
            *v = 1 << i;
        }
        assert_eq!(t.packets(), 0b11);
        assert_eq!(t.bytes(), 0b1100);
        let drops = [
            ct_counter::CT_C_INVALID,
            ct_counter::CT_C_TABLE_FULL,
            ct_counter::CT_C_STRICT_DROPS,
            ct_counter::CT_C_MALFORMED,
        ];
        assert_eq!(t.drops(), drops.iter().map(|c| t.get(*c)).sum::<u64>());
    }

    #[test]
    fn ipv4_shares_are_each_count_less_its_ipv6_counter() {
        let mut t = Totals::default();
        for (c, v) in [
            (ct_counter::CT_C_NEW, 10),
            (ct_counter::CT_C_NEW_IPV6, 4),
            // drops is the sum of every drop counter, of either family.
            (ct_counter::CT_C_INVALID, 5),
            (ct_counter::CT_C_MALFORMED, 2),
            (ct_counter::CT_C_TABLE_FULL, 1),
            (ct_counter::CT_C_DROPS_IPV6, 3),
            (ct_counter::CT_C_FRAGMENTS, 6),
            (ct_counter::CT_C_FRAGMENTS_IPV6, 6),
        ] {
            t.n[c.0 as usize] = v;
        }
        assert_eq!(
            t.ipv4_shares(),
            [("new_ipv4", 6), ("drops_ipv4", 5), ("fragments_ipv4", 0)]
        );
        // Per-CPU slots read while they move: never below 0.
        t.n[ct_counter::CT_C_NEW_IPV6.0 as usize] = 11;
        assert_eq!(t.ipv4_shares()[0], ("new_ipv4", 0));
    }
}
