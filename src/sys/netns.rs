//! Network namespaces by name, as `ip netns add` creates them.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};

/// Opens a named network namespace (as created by `ip netns add`).
pub fn netns_file(name: &str) -> Result<File> {
    let path = ["/run/netns", "/var/run/netns"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .with_context(|| format!("network namespace '{name}' does not exist"))?;
    File::open(&path).with_context(|| format!("opening {}", path.display()))
}

/// Moves the calling thread into the named network namespace.
pub fn enter_netns(name: &str) -> Result<()> {
    setns(netns_file(name)?, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace '{name}'"))
}
