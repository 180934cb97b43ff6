//! `xdp-conntrack handshake`: the built-in stateless generator (see
//! [`crate::gen`]), and its summary.

use std::process::ExitCode;

use anyhow::Result;

pub use crate::gen::Args;

/// Sends the streams, then prints what was sent and what arrived.
pub fn run(a: Args) -> Result<ExitCode> {
    let report = crate::gen::generate(&a, super::kernel_features()?)?;
    println!("{}", report.summary());
    Ok(ExitCode::SUCCESS)
}
