//! The maps and the program a running tracker pins for `dump`, `stats`,
//! `delete` and friends, and how a second process finds them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapHandle, MapMut, ProgramHandle};

use crate::bpf::ConntrackSkel;
use crate::sys;

/// Where the tracker pins its maps unless told otherwise.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/xdp-conntrack";

/// The IPv4 connection table's pin name.
pub const TABLE: &str = "ct_table";
/// The IPv6 connection table's pin name.
pub const TABLE6: &str = "ct_table6";
/// The per-CPU counters' pin name.
pub const COUNTERS: &str = "stats";
/// The events ring's pin name.
pub const EVENTS: &str = "ct_events";
/// The pin name of the map where the `events` reader says what it wants.
pub const EVENTS_CTL: &str = "ct_events_ctl";
/// The pin name of `ct_delete`, the program that removes an entry and
/// counts it (userspace cannot update the per-CPU counters safely).
pub const DELETE: &str = "ct_delete";

/// Every map a running tracker pins, by pin name: a map added here is
/// pinned, found and removed with the others.
fn pinned_maps<'a, 'obj>(
    skel: &'a mut ConntrackSkel<'obj>,
) -> [(&'static str, &'a mut MapMut<'obj>); 5] {
    let maps = &mut skel.maps;
    [
        (TABLE, &mut maps.ct_table),
        (TABLE6, &mut maps.ct_table6),
        (COUNTERS, &mut maps.stats),
        (EVENTS, &mut maps.ct_events),
        (EVENTS_CTL, &mut maps.ct_events_ctl),
    ]
}

/// Pinned maps under a directory; dropping the value removes them.
#[derive(Debug)]
pub struct Pins {
    dir: PathBuf,
    names: Vec<&'static str>,
    created_dir: bool,
}

impl Pins {
    /// Pins every map of [`pinned_maps`] under `dir`.  Pins left behind by
    /// a tracker that died are replaced; those of a live one are an error.
    pub fn create(skel: &mut ConntrackSkel<'_>, dir: &Path) -> Result<Self> {
        sys::ensure_bpffs(dir)?;
        let maps = pinned_maps(skel);
        if dir.join(TABLE).exists() {
            if in_use(&dir.join(TABLE))? {
                bail!(
                    "another xdp-conntrack is running with its maps pinned in {} \
                     (give this one another --pin-path)",
                    dir.display()
                );
            }
            for name in maps.iter().map(|(n, _)| *n).chain([DELETE]) {
                let _ = fs::remove_file(dir.join(name));
            }
        }
        let created_dir = !dir.exists();
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Only root reads or changes the table: the directory 0700, each
        // pin 0600.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
        let mut pins = Self {
            dir: dir.to_path_buf(),
            names: Vec::new(),
            created_dir,
        };
        for (name, map) in maps {
            let path = dir.join(name);
            map.pin(&path)
                .with_context(|| format!("pinning {}", path.display()))?;
            pins.private(name)?;
        }
        let path = dir.join(DELETE);
        skel.progs
            .ct_delete
            .pin(&path)
            .with_context(|| format!("pinning {}", path.display()))?;
        pins.private(DELETE)?;
        Ok(pins)
    }

    /// Records the pin `name` for removal, and lets only root read it.
    fn private(&mut self, name: &'static str) -> Result<()> {
        self.names.push(name);
        let path = self.dir.join(name);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = fs::remove_file(self.dir.join(name));
        }
        if self.created_dir {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// Whether a loaded program still uses the pinned map at `path`, i.e.
/// whether the tracker that pinned it is alive.  Pins outlive a killed
/// process; its programs do not.
pub fn in_use(path: &Path) -> Result<bool> {
    let map = MapHandle::from_pinned_path(path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    let id = map.info().context("reading map info")?.info.id;
    let opts = libbpf_rs::query::ProgInfoQueryOptions::default().include_map_ids(true);
    Ok(libbpf_rs::query::ProgInfoIter::with_query_opts(opts).any(|p| p.map_ids.contains(&id)))
}

/// Opens the map pinned as `name` by a running tracker.
pub fn open_pinned(dir: &Path, name: &str) -> Result<MapHandle> {
    let path = dir.join(name);
    if !path.exists() || !in_use(&dir.join(TABLE)).unwrap_or(false) {
        bail!(
            "no xdp-conntrack is running (nothing live pinned at {})",
            dir.display()
        );
    }
    MapHandle::from_pinned_path(&path).with_context(|| format!("opening {}", path.display()))
}

/// Opens the program pinned as `name` by a running tracker.
pub fn open_pinned_prog(dir: &Path, name: &str) -> Result<ProgramHandle> {
    let path = dir.join(name);
    if !path.exists() || !in_use(&dir.join(TABLE)).unwrap_or(false) {
        bail!(
            "no xdp-conntrack is running (nothing live pinned at {})",
            dir.display()
        );
    }
    ProgramHandle::from_pinned_path(&path).with_context(|| format!("opening {}", path.display()))
}
