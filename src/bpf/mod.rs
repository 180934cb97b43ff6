//! The generated skeleton and the C types it carries from `conntrack.h`.

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    non_camel_case_types,
    non_upper_case_globals,
    dead_code
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/conntrack.skel.rs"));
}

pub use skel::*;

/// The handshake generator's skeleton (`handshake.bpf.c`).
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    non_camel_case_types,
    non_upper_case_globals,
    dead_code
)]
pub mod hs {
    include!(concat!(env!("OUT_DIR"), "/handshake.skel.rs"));
}

use plain::Plain;

// SAFETY: these are `#[repr(C)]` structs of plain integers (and arrays of
// them) generated from the program's BTF; every bit pattern is a valid
// value, so they may be read from raw map bytes.
unsafe impl Plain for types::ct_key {}
// SAFETY: as above; `bpf_spin_lock` is a `u32` wrapper.
unsafe impl Plain for types::ct_entry {}
// SAFETY: as above.
unsafe impl Plain for types::ct_stats {}

/// A slice of skeleton types as the bytes a batch map call takes.
pub fn slice_bytes<T: Plain>(v: &[T]) -> &[u8] {
    // SAFETY: Plain types are plain old data with explicit padding, so
    // every byte of the slice is initialised and may be read.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}
