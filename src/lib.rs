//! xdp-conntrack: a stateful XDP forwarder with nf_conntrack semantics.
//!
//! The XDP program (`src/bpf/conntrack.bpf.c`) forwards and tracks; this
//! crate loads it, shows what it does, and is shared by the binary and the
//! tests.

pub mod bpf;
pub mod check;
pub mod config;
pub mod datapath;
pub mod format;
pub mod handshake;
pub mod packet;
pub mod run;
pub mod stats;
pub mod sys;
pub mod table;
pub mod trace;
