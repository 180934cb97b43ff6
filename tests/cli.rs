//! Command-line tests: bad input gets one `xdp-conntrack: ...` line on stderr
//! and a non-zero exit, never a panic.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{binary, unique_prefix, wait_for};

/// A pin path on bpffs that no tracker uses, so that a run that wrongly
/// gets far never touches the default one.
fn fresh_pin_path() -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{}cli", unique_prefix()))
}

/// Interface names that exist nowhere.
fn no_such_iface(n: u8) -> String {
    format!("{}none{n}", unique_prefix())
}

/// Runs `cmd` with a deadline: a binary that wrongly keeps running fails
/// the test instead of hanging it.
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning xdp-conntrack");
    let exited = wait_for(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
        let out = child.wait_with_output().expect("waiting");
        panic!(
            "{cmd:?} was still running after 20 s; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.wait_with_output().expect("collecting the output")
}

/// Runs the binary with `args`.
fn xdp_conntrack(args: &[&str]) -> Output {
    run(Command::new(binary()).args(args))
}

/// Checks the failure contract and that the one line mentions every one of
/// `mentions`; returns the line.
fn assert_one_line_error(out: &Output, mentions: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code();
    assert!(
        code.is_some_and(|c| c != 0),
        "want a non-zero exit code, got {:?}; stderr: {stderr:?}",
        out.status
    );
    let lower = stderr.to_lowercase();
    assert!(
        !lower.contains("panicked") && !lower.contains("backtrace"),
        "it panicked: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "want exactly one line on stderr: {stderr:?}"
    );
    let line = lines[0];
    assert!(
        line.starts_with("xdp-conntrack: ") && line.len() > "xdp-conntrack: ".len(),
        "{line:?}"
    );
    for m in mentions {
        assert!(line.contains(m), "{line:?} does not mention {m:?}");
    }
    assert!(
        out.stdout.is_empty(),
        "nothing belongs on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    line.to_string()
}

#[test]
fn unknown_interface() {
    common::require_root();
    let (a, b) = (no_such_iface(1), no_such_iface(2));
    let pins = fresh_pin_path();
    let out = run(Command::new(binary())
        .args(["-1", &a, "-2", &b, "--pin-path"])
        .arg(&pins));
    assert_one_line_error(&out, &[&a]);
    assert!(!pins.exists());
}

#[test]
fn unknown_second_interface() {
    common::require_root();
    let b = no_such_iface(2);
    let pins = fresh_pin_path();
    let out = run(Command::new(binary())
        .args(["-1", "lo", "-2", &b, "--pin-path"])
        .arg(&pins));
    assert_one_line_error(&out, &[&b]);
    assert!(!pins.exists());
}

#[test]
fn same_interface_twice() {
    common::require_root();
    // A name that does not exist: even a binary that skipped the check
    // could attach nothing.
    let a = no_such_iface(1);
    let pins = fresh_pin_path();
    let out = run(Command::new(binary())
        .args(["-1", &a, "-2", &a, "--pin-path"])
        .arg(&pins));
    assert_one_line_error(&out, &["same", &a]);
}

#[test]
fn malformed_mac() {
    for (opt, mac) in [
        ("--dst-mac1", "zz:00:00:00:00:01"),
        ("--dst-mac2", "02:00:00:00:00"),
        ("--dst-mac1", "02:00:00:00:00:00:01"),
        ("--dst-mac2", "0200:00:00:00:01"),
        ("--dst-mac1", ""),
    ] {
        let out = xdp_conntrack(&["-1", "a0", "-2", "b0", opt, mac]);
        assert_one_line_error(&out, &[opt, "MAC"]);
    }
}

#[test]
fn malformed_timeout() {
    for bad in [
        "established",
        "established=",
        "established=abc",
        "udp=-5",
        "udp=0",
        "=30",
    ] {
        let out = xdp_conntrack(&["-1", "a0", "-2", "b0", "--timeout", bad]);
        assert_one_line_error(&out, &["timeout", bad]);
    }
}

#[test]
fn unknown_timeout_state() {
    let out = xdp_conntrack(&["-1", "a0", "-2", "b0", "--timeout", "bogus=30"]);
    assert_one_line_error(&out, &["bogus"]);
}

#[test]
fn log_level_out_of_range() {
    for level in ["9", "6", "256", "x"] {
        let out = xdp_conntrack(&["-1", "a0", "-2", "b0", "-l", level]);
        assert_one_line_error(&out, &[level]);
    }
}

#[test]
fn missing_interfaces() {
    for args in [&["-1", "a0"][..], &["-2", "b0"][..], &[][..]] {
        let out = xdp_conntrack(args);
        let line = assert_one_line_error(&out, &[]);
        let want = if args.first() == Some(&"-1") {
            "-2"
        } else {
            "-1"
        };
        assert!(line.contains(want), "{line:?} does not mention {want}");
    }
}

#[test]
fn unknown_option_and_mode() {
    let out = xdp_conntrack(&["-1", "a0", "-2", "b0", "--bogus"]);
    assert_one_line_error(&out, &["--bogus"]);
    let out = xdp_conntrack(&["-1", "a0", "-2", "b0", "--xdp-mode", "turbo"]);
    assert_one_line_error(&out, &["turbo"]);
}

#[test]
fn unknown_netns() {
    common::require_root();
    let ns = format!("{}nons", unique_prefix());
    let out = xdp_conntrack(&["-1", "a0", "-2", "b0", "--netns", &ns]);
    assert_one_line_error(&out, &[&ns]);
}

#[test]
fn not_root() {
    let pins = fresh_pin_path();
    let pins = pins.to_str().unwrap();
    let b = no_such_iface(2);
    let bin = binary();
    let bin = bin.to_str().unwrap();
    let as_nobody = ["--reuid=65534", "--regid=65534", "--clear-groups", bin];
    for args in [
        &["-1", "lo", "-2", &b, "--pin-path", pins][..],
        &["dump", "--pin-path", pins][..],
    ] {
        let out = run(Command::new("setpriv").args(as_nobody).args(args));
        assert_one_line_error(&out, &["root"]);
    }
}

#[test]
fn dump_refuses_an_unknown_family_or_output() {
    for (args, word) in [
        (&["dump", "-f", "ipv5"][..], "ipv5"),
        (&["dump", "-o", "extended,yaml"][..], "yaml"),
    ] {
        let out = xdp_conntrack(args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert_one_line_error(&out, &[word]);
    }
}

#[test]
fn dump_without_a_tracker() {
    common::require_root();
    let pins = fresh_pin_path();
    assert!(!pins.exists());
    let out = run(Command::new(binary())
        .args(["dump", "--pin-path"])
        .arg(&pins));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = assert_one_line_error(&out, &[]);
    assert!(
        line.to_lowercase().contains("no xdp-conntrack is running"),
        "{line:?} does not say that no tracker is running"
    );
}

#[test]
fn help_exits_zero() {
    let out = xdp_conntrack(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["Usage:", "-1", "-2", "--dst-mac1", "--strict", "dump"] {
        assert!(
            text.contains(want),
            "--help does not mention {want}: {text}"
        );
    }
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn check_reports_the_kernel_and_passes_here() {
    let out = Command::new(binary())
        .arg("check")
        .output()
        .expect("running xdp-conntrack check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("kernel "), "{text}");
    for feature in [
        "BTF",
        "BPF_PROG_TYPE_XDP",
        "bpf_link",
        "DEVMAP",
        "bpf_spin_lock",
        "bpf_for_each_map_elem",
        "bpf_timer",
        "ring buffer",
        "XDP frags",
        "live frames",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(feature))
            .unwrap_or_else(|| panic!("no {feature} line in:\n{text}"));
        // This machine's kernel (6.x) has all of them.
        assert!(line.contains(" yes "), "{line}");
    }
    // tracefs is a mount, not a kernel feature: a fresh machine has none
    // until something (-l 5) mounts it.
    let tracefs = text
        .lines()
        .find(|l| l.starts_with("tracefs"))
        .unwrap_or_else(|| panic!("no tracefs line in:\n{text}"));
    assert!(
        tracefs.contains("at /sys/kernel/") || tracefs.contains("-l 5 mounts it"),
        "{tracefs}"
    );
}
