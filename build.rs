//! Build script: compile the XDP program and generate its skeleton.

use std::env;
use std::ffi::OsStr;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/conntrack.bpf.c";
const HEADERS: &[&str] = &[
    "src/bpf/conntrack.h",
    "src/bpf/parse.h",
    "src/bpf/tcp_state.h",
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("conntrack.skel.rs");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let vmlinux = manifest.join("vmlinux").join(arch);
    let bpf_dir = manifest.join("src").join("bpf");

    // -mcpu=v3: clang otherwise crashes on 32-bit atomics, and v3 gives
    // the verifier jmp32 for shorter code.
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args([
            OsStr::new("-mcpu=v3"),
            OsStr::new("-Wall"),
            OsStr::new("-I"),
            vmlinux.as_os_str(),
            OsStr::new("-I"),
            bpf_dir.as_os_str(),
        ])
        .build_and_generate(&out)
        .expect("building the BPF program failed; see the clang output above");

    println!("cargo:rerun-if-changed={SRC}");
    for h in HEADERS {
        println!("cargo:rerun-if-changed={h}");
    }
    println!("cargo:rerun-if-changed=vmlinux");
}
