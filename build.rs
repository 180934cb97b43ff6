//! Build script: compile the XDP program and generate its skeleton.

use std::env;
use std::ffi::OsStr;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// (source, skeleton file) for each BPF object.
const PROGRAMS: &[(&str, &str)] = &[
    ("src/bpf/conntrack.bpf.c", "conntrack.skel.rs"),
    ("src/bpf/handshake.bpf.c", "handshake.skel.rs"),
];
const HEADERS: &[&str] = &[
    "src/bpf/conntrack.h",
    "src/bpf/handshake.h",
    "src/bpf/parse.h",
    "src/bpf/tcp_state.h",
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let vmlinux = manifest.join("vmlinux").join(arch);
    let bpf_dir = manifest.join("src").join("bpf");

    for (src, skel) in PROGRAMS {
        // -mcpu=v3: clang otherwise crashes on 32-bit atomics, and v3
        // gives the verifier jmp32 for shorter code.
        SkeletonBuilder::new()
            .source(src)
            .clang_args([
                OsStr::new("-mcpu=v3"),
                OsStr::new("-Wall"),
                OsStr::new("-I"),
                vmlinux.as_os_str(),
                OsStr::new("-I"),
                bpf_dir.as_os_str(),
            ])
            .build_and_generate(out_dir.join(skel))
            .unwrap_or_else(|e| panic!("building {src} failed: {e:#}"));
        println!("cargo:rerun-if-changed={src}");
    }

    for h in HEADERS {
        println!("cargo:rerun-if-changed={h}");
    }
    println!("cargo:rerun-if-changed=vmlinux");
}
