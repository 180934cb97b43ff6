//! End-to-end tests of restarts that keep the table: `--keep` leaves the
//! program attached and its maps and links pinned; the next tracker takes
//! them over without a gap; `--fresh` discards them; one tracker per pin
//! directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// Removes whatever a test leaves pinned, even when it fails: kept links
/// hold the program on the interfaces until their pins go.
struct PinsGuard(PathBuf);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Whether `count` pings from ns1 to ns2 are all answered.
fn ping_all_answered(topo: &Topology, count: u32) -> bool {
    let n = count.to_string();
    let out = topo.exec(
        &topo.ns1(),
        &[
            "ping", "-n", "-q", "-c", &n, "-i", "0.2", "-W", "2", "10.0.0.2",
        ],
    );
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .contains(&format!("{count} packets transmitted, {count} received"))
}

fn pins(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The rate of each interval of an iperf3 client's JSON, in bit/s.
fn interval_rates(json: &str) -> Vec<f64> {
    let v: serde_json::Value = serde_json::from_str(json).expect("iperf3 --json");
    v["intervals"]
        .as_array()
        .expect("intervals")
        .iter()
        .map(|i| i["sum"]["bits_per_second"].as_f64().unwrap())
        .collect()
}

#[test]
fn a_transfer_runs_on_through_a_restart_with_keep() {
    let topo = Topology::up();
    let _guard = PinsGuard(topo.pin_path());
    let first = Tracker::builder(&topo).args(&["-q", "--keep"]).start();

    let _server = iperf3_server(&topo, "10.0.0.2");
    // A paced transfer in half-second intervals, the restart in its
    // middle: 8 s at 300 Mbit/s here.  Where a start takes longer (the
    // verifier under emulation takes tens of seconds) the transfer is
    // longer, so that it outlasts the second tracker's start, and slower
    // by as much, so that what it measures is the restart, not the CPU
    // the second start's verifier takes from it.
    let start = first.started_in.as_secs_f64();
    let secs = (4.0 + 2.5 * start).max(8.0).ceil();
    let rate = format!("{}M", (300.0 / start.max(1.0)).max(10.0).round());
    let client = Command::new("ip")
        .args(["netns", "exec", &topo.ns1()])
        .args([
            "iperf3",
            "-c",
            "10.0.0.2",
            "-p",
            "5201",
            "-t",
            &secs.to_string(),
            "-i",
            "0.5",
            "-b",
            &rate,
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let data_flow = || {
        dump_table(&topo.pin_path())
            .into_iter()
            .filter(|e| e.proto == "tcp" && e.in_state("ESTABLISHED") && e.assured)
            .count()
    };
    // iperf3's control connection and its data connection.
    assert!(wait_for(IO_TIMEOUT, || data_flow() == 2));
    let before = first.stats();

    // Stopped with --keep: exit 0, and the program forwards on alone.
    assert!(first.stop().success());
    assert!(xdp_attached(&topo, 1) && xdp_attached(&topo, 2));
    assert_eq!(
        pins(&topo.pin_path()),
        [
            "ct_delete",
            "ct_events",
            "ct_events_ctl",
            "ct_meta",
            "ct_table",
            "ct_table6",
            "link1",
            "link2",
            "stats"
        ]
    );
    // The verbs read the kept table with no tracker running.
    assert_eq!(data_flow(), 2);
    let alone = Command::new(binary())
        .args(["stats", "--pin-path"])
        .arg(topo.pin_path())
        .output()
        .unwrap();
    assert!(alone.status.success());

    // The next tracker takes it all over, counters and table included.
    let second = Tracker::builder(&topo).args(&["-q"]).start();
    assert!(
        second
            .startup
            .iter()
            .any(|l| l.contains("took over the table kept in")),
        "{:#?}",
        second.startup
    );
    assert_eq!(
        data_flow(),
        2,
        "the connections are still ESTABLISHED [ASSURED]"
    );
    let after = second.stats();
    assert!(
        after["packets"] > before["packets"],
        "the counters continue"
    );
    assert_eq!(after["new"], before["new"], "no connection made anew");
    assert_eq!(after["invalid"], 0);

    let out = client.wait_with_output().unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "iperf3 through the restart: {json}");
    let rates = interval_rates(&json);
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    for (i, r) in rates.iter().enumerate() {
        assert!(
            *r >= median / 2.0,
            "interval {i}: {r} bit/s, below half the median {median}: {rates:?}"
        );
    }
    assert_eq!(second.stats()["invalid"], 0);

    // Stopped without --keep, everything goes.
    assert!(second.stop().success());
    assert!(!xdp_attached(&topo, 1) && !xdp_attached(&topo, 2));
    assert!(!topo.pin_path().exists(), "{:?}", pins(&topo.pin_path()));
}

#[test]
fn an_incompatible_kept_table_is_refused_and_fresh_discards_it() {
    let topo = Topology::up();
    let _guard = PinsGuard(topo.pin_path());
    let first = Tracker::builder(&topo)
        .args(&["-q", "--keep", "--max-entries", "1024"])
        .start();
    assert!(ping_all_answered(&topo, 1));
    assert!(first.stop().success());

    // Another size: one line, naming --fresh; the kept table stays.
    let (status, lines) = Tracker::builder(&topo).args(&["-q"]).start_failing();
    assert!(!status.success());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("--fresh") && lines[0].contains("1024"),
        "{lines:?}"
    );
    assert!(topo.pin_path().join("link1").exists());
    assert!(ping_all_answered(&topo, 1), "the kept program forwards on");

    // --fresh: an empty table, the old program detached and replaced.
    let fresh = Tracker::builder(&topo).args(&["-q", "--fresh"]).start();
    assert!(dump_table(&topo.pin_path()).is_empty());
    assert!(!topo.pin_path().join("link1").exists());
    assert_eq!(fresh.stats()["new"], 0);
    assert!(ping_all_answered(&topo, 1));
    assert!(fresh.stop().success());
    assert!(!topo.pin_path().exists());
    assert!(!xdp_attached(&topo, 1));
}

#[test]
fn a_second_tracker_on_the_same_pin_path_is_refused() {
    let topo = Topology::up();
    let first = Tracker::builder(&topo).args(&["-q"]).start();
    let other = Topology::up();
    let (status, lines) = Tracker::builder(&other)
        .pin_path(&topo.pin_path())
        .start_failing();
    assert!(!status.success());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("another xdp-conntrack is running with its pins in")
            && lines[0].contains(&topo.pin_path().display().to_string()),
        "{lines:?}"
    );
    assert!(!xdp_attached(&other, 1), "the refused one attached nothing");
    // The first one is untouched.
    assert!(ping_all_answered(&topo, 1));
    assert!(first.stop().success());
}
