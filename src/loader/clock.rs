//! The program's clock: jiffies scaled to CLOCK_MONOTONIC nanoseconds
//! (`struct ct_clock` in conntrack.h), calibrated after load and
//! re-anchored once a second by the tracker.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::test_run_once;
use crate::bpf::types::ct_clock;
use crate::bpf::ConntrackSkel;

/// Runs `ct_clock_probe` once and returns the program's clock state.
fn clock_probe(skel: &ConntrackSkel<'_>) -> Result<ct_clock> {
    test_run_once(&skel.progs.ct_clock_probe, "ct_clock_probe")?;
    let bss = skel
        .maps
        .bss_data
        .as_deref()
        .context("the program's .bss is not memory-mapped")?;
    // SAFETY: the kernel wrote the mapping during the test run above; a
    // volatile read keeps the compiler from reusing an older value.
    Ok(unsafe { std::ptr::read_volatile(&bss.ct_clock) })
}

/// Now on the program's own clock, the one its deadlines are set and
/// checked by: what "expired" means to it, exactly.
pub fn program_now(skel: &ConntrackSkel<'_>) -> Result<u64> {
    let c = clock_probe(skel)?;
    Ok(if c.tick_ns != 0 {
        c.probe_jiffies
            .wrapping_mul(c.tick_ns)
            .wrapping_add(c.offset_ns)
    } else {
        c.probe_ns
    })
}

/// One consistent sample of (jiffies, ktime ns) from `ct_clock_probe`: a
/// tick may fall between the kernel's updates of the two clocks, so two
/// samples 50 us apart must agree.
fn clock_sample(skel: &ConntrackSkel<'_>) -> Result<(u64, u64)> {
    let mut last = None;
    for _ in 0..100 {
        let c = clock_probe(skel)?;
        let now = (c.probe_jiffies, c.probe_ns);
        if last == Some(now) {
            return Ok(now);
        }
        last = Some(now);
        std::thread::sleep(Duration::from_micros(50));
    }
    bail!("the two clocks never agreed on a sample")
}

/// Sets the program's jiffies clock (`struct ct_clock`) so that it reads
/// CLOCK_MONOTONIC nanoseconds.  The tick's length comes from samples
/// 50 ms apart, snapped to the nearest HZ that x86-64 kernels are built
/// with, so that a sample a tick off cannot pick the wrong one.
pub(super) fn calibrate(skel: &mut ConntrackSkel<'_>) -> Result<()> {
    let (j0, ns0) = clock_sample(skel)?;
    let deadline = Instant::now() + Duration::from_secs(1);
    let (j1, ns1) = loop {
        std::thread::sleep(Duration::from_millis(10));
        let s = clock_sample(skel)?;
        if s.1 >= ns0 + 50_000_000 && s.0 > j0 {
            break s;
        }
        if Instant::now() > deadline {
            bail!("jiffies did not advance in a second");
        }
    };
    let measured = (j1 - j0) as f64 * 1e9 / (ns1 - ns0) as f64;
    let hz = [100u64, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            let d = |h: u64| (h as f64 - measured).abs();
            d(*a).total_cmp(&d(*b))
        })
        .unwrap_or(250);
    if (hz as f64 - measured).abs() > hz as f64 * 0.1 {
        bail!("jiffies advance at {measured:.0} Hz, not a kernel's HZ");
    }
    // TICK_NSEC, as include/linux/jiffies.h rounds it.
    let tick_ns = (1_000_000_000 + hz / 2) / hz;
    let offset = clock_offset(skel, tick_ns, 7)?;
    let bss = skel
        .maps
        .bss_data
        .as_deref_mut()
        .context("the program's .bss is not memory-mapped")?;
    bss.ct_clock.offset_ns = offset;
    bss.ct_clock.tick_ns = tick_ns;
    Ok(())
}

/// The offset that makes `jiffies * tick_ns` read CLOCK_MONOTONIC_COARSE:
/// the median of `n` samples a millisecond apart, so that one taken while
/// the kernel had updated one clock and not yet the other (a tick off)
/// does not count.
fn clock_offset(skel: &mut ConntrackSkel<'_>, tick_ns: u64, n: usize) -> Result<u64> {
    let mut offsets = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (j, ns) = clock_sample(skel)?;
        offsets.push(ns.wrapping_sub(j.wrapping_mul(tick_ns)));
    }
    // Offsets are huge numbers mod 2^64: order them by their difference
    // from the first.
    let first = offsets[0];
    offsets.sort_by_key(|o| o.wrapping_sub(first) as i64);
    Ok(offsets[n / 2])
}

/// Re-anchors the program's jiffies clock to CLOCK_MONOTONIC_COARSE, which
/// the tracker does once a second.  The two drift apart slowly (about
/// 0.1 ns a tick here, as NTP trims the coarse clock's tick), and faster
/// while NTP slews; see [`reanchor`] for how a sample a tick off is kept
/// from stepping the clock.
pub fn recalibrate(skel: &mut ConntrackSkel<'_>) -> Result<()> {
    let (tick_ns, old) = match skel.maps.bss_data.as_deref() {
        Some(b) if b.ct_clock.tick_ns != 0 => (b.ct_clock.tick_ns, b.ct_clock.offset_ns),
        _ => return Ok(()),
    };
    let offset = reanchor(old, clock_offset(skel, tick_ns, 3)?, tick_ns);
    if let Some(b) = skel.maps.bss_data.as_deref_mut() {
        // SAFETY: an aligned 64-bit store, which the program's CPUs see
        // whole; the pointer comes from a live mutable reference.
        unsafe { std::ptr::write_volatile(&mut b.ct_clock.offset_ns, offset) };
    }
    Ok(())
}

/// The offset to use after a re-anchor: `measured`, or `measured` moved by
/// one tick when that lands within half a tick of `old`.
///
/// After an idle CPU wakes, CLOCK_MONOTONIC_COARSE can sit a whole tick
/// away from its usual alignment with jiffies for milliseconds (the coarse
/// clock advances only once a whole NTP-adjusted tick has accumulated), so
/// two honest samples may give offsets a tick apart.  Taking each as it
/// comes would step the program's clock a tick back and forth every
/// second; keeping the alignment in use still follows slow drift (a small
/// difference) and real jumps (more than a tick and a half).
pub fn reanchor(old: u64, measured: u64, tick_ns: u64) -> u64 {
    let half = (tick_ns / 2) as i64;
    [
        measured.wrapping_sub(tick_ns),
        measured.wrapping_add(tick_ns),
    ]
    .into_iter()
    .find(|c| (c.wrapping_sub(old) as i64).abs() < half)
    .filter(|_| (measured.wrapping_sub(old) as i64).abs() >= half)
    .unwrap_or(measured)
}

#[cfg(test)]
mod tests {
    use super::reanchor;

    const TICK: u64 = 4_000_000;

    #[test]
    fn slow_drift_is_followed() {
        let old = 1_000_000_000_000;
        assert_eq!(reanchor(old, old + 26, TICK), old + 26);
        assert_eq!(reanchor(old, old - 26, TICK), old - 26);
        assert_eq!(reanchor(old, old, TICK), old);
    }

    #[test]
    fn a_sample_a_tick_off_keeps_the_alignment_in_use() {
        let old = 1_000_000_000_000;
        assert_eq!(reanchor(old, old + TICK, TICK), old);
        assert_eq!(reanchor(old, old - TICK + 30, TICK), old + 30);
        // Offsets live mod 2^64.
        assert_eq!(reanchor(5, 5u64.wrapping_sub(TICK), TICK), 5);
    }

    #[test]
    fn real_jumps_are_followed() {
        let old = 1_000_000_000_000;
        let five_s = 5_000_000_000;
        assert_eq!(reanchor(old, old - five_s, TICK), old - five_s);
        assert_eq!(reanchor(old, old + 2 * TICK, TICK), old + 2 * TICK);
    }
}
