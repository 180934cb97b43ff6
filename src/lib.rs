//! xdp-conntrack: a stateful XDP forwarder with nf_conntrack semantics.
//!
//! The XDP program (`src/bpf/conntrack.bpf.c`) forwards and tracks; this
//! crate loads it, shows what it does, and is shared by the binary and the
//! tests.  docs/ARCHITECTURE.md maps the rooms below.

pub mod bpf;
pub mod cmd;
pub mod counters;
pub mod events;
pub mod filter;
pub mod format;
pub mod gen;
pub mod loader;
pub mod packet;
pub mod proto;
pub mod settings;
pub mod sys;
pub mod table;
pub mod trace;
