//! The maps, the program and (with `--keep`) the links a tracker pins: for
//! `dump`, `stats`, `delete` and friends in other processes, and for the
//! next tracker, which takes over a table kept by the last one.  One
//! tracker per pin directory, by an exclusive lock on it.

use std::fs::{self, File};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};
use nix::fcntl::{Flock, FlockArg};

use crate::bpf::types::{ct_layout, ct_meta};
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
/// The pin name of the map that says which layout the maps have.
pub const META: &str = "ct_meta";
/// The pin name of `ct_delete`, the program that removes an entry and
/// counts it (userspace cannot update the per-CPU counters safely).
pub const DELETE: &str = "ct_delete";
/// The pin names of the XDP links of side 1 and side 2, with `--keep`.
pub const LINKS: [&str; 2] = ["link1", "link2"];

/// Every map a tracker pins, by its name in the object (which is also its
/// pin name): a map added here is pinned, taken over, found and removed
/// with the others.
pub const PINNED_MAPS: [&str; 6] = [TABLE, TABLE6, COUNTERS, EVENTS, EVENTS_CTL, META];

/// The lock that makes a tracker the only one on a pin directory, held
/// for its lifetime; it removes the directory on drop if a tracker made
/// it and nothing was left in it.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    created: bool,
    _lock: Flock<File>,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if self.created {
            // Fails, as it should, when pins were kept.
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// Takes the pin directory `dir` (made 0700 if missing, on a bpf
/// filesystem): a second tracker on it is refused.
pub fn lock(dir: &Path) -> Result<DirLock> {
    sys::ensure_bpffs(dir)?;
    // A directory an earlier tracker made (its table is there) is ours to
    // remove as well as one made now.
    let created = !dir.exists() || dir.join(TABLE).exists();
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Only root reads or changes the table: the directory 0700, each
    // pin 0600.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    let file = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "another xdp-conntrack is running with its pins in {} \
             (give this one another --pin-path)",
            dir.display()
        ),
        Err((_, e)) => return Err(e).with_context(|| format!("locking {}", dir.display())),
    };
    Ok(DirLock {
        dir: dir.to_path_buf(),
        created,
        _lock: lock,
    })
}

/// Removes every pin under `dir` (`--fresh`): a kept table is lost, and a
/// kept program detached once its link's last pin goes.
pub fn discard(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// What a tracker stopped with `--keep` (or killed) left under a pin
/// directory, checked against this binary.
#[derive(Debug)]
pub struct Kept {
    /// The pinned links of side 1 and side 2, if the program was kept
    /// attached.
    pub links: [Option<OwnedFd>; 2],
    /// The tables' sizes.
    pub max_entries: u32,
    pub max_entries6: u32,
}

/// Finds a kept table under `dir`, if there is one, and checks that this
/// binary can take it over: the same layout.  Anything else is an error
/// that names `--fresh`.
pub fn kept(dir: &Path) -> Result<Option<Kept>> {
    if !dir.join(TABLE).exists() {
        return Ok(None);
    }
    let fresh = "start with --fresh to discard it (its connections are lost)";
    let layout = MapHandle::from_pinned_path(dir.join(META))
        .ok()
        .and_then(|m| m.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).ok().flatten())
        .and_then(|v| {
            let mut meta = ct_meta::default();
            plain::copy_from_bytes(&mut meta, &v)
                .ok()
                .map(|_| meta.layout)
        });
    let ours = ct_layout::CT_LAYOUT_VERSION.0;
    match layout {
        None => bail!(
            "{} holds a table of unknown layout (from an older xdp-conntrack); {fresh}",
            dir.display()
        ),
        Some(l) if l != ours => bail!(
            "{} holds a table of layout {l}, and this xdp-conntrack uses layout {ours}; {fresh}",
            dir.display()
        ),
        Some(_) => {}
    }
    let size = |name: &str| -> Result<u32> {
        Ok(MapHandle::from_pinned_path(dir.join(name))
            .with_context(|| format!("{} is incomplete; {fresh}", dir.display()))?
            .max_entries())
    };
    let mut links = [None, None];
    for (slot, name) in links.iter_mut().zip(LINKS) {
        let path = dir.join(name);
        if path.exists() {
            *slot = Some(sys::obj_get(&path)?);
        }
    }
    Ok(Some(Kept {
        links,
        max_entries: size(TABLE)?,
        max_entries6: size(TABLE6)?,
    }))
}

/// The tracker's pins; dropping the value removes them, unless
/// [`Pins::keep`] was called.
#[derive(Debug)]
pub struct Pins {
    dir: PathBuf,
    keep: bool,
}

impl Pins {
    /// Pins every map of [`PINNED_MAPS`] not pinned yet (a taken-over map
    /// is pinned already), `ct_delete` (replacing the last tracker's) and
    /// the layout, each 0600.  `_lock` proves the directory is ours.
    pub fn create(skel: &mut ConntrackSkel<'_>, _lock: &DirLock) -> Result<Self> {
        let dir = _lock.dir.clone();
        let pins = Self { dir, keep: false };
        let meta = ct_meta {
            layout: ct_layout::CT_LAYOUT_VERSION.0,
            pad: 0,
        };
        // SAFETY: a plain C struct with explicit padding.
        let bytes = unsafe { plain::as_bytes(&meta) };
        skel.maps
            .ct_meta
            .update(&0u32.to_ne_bytes(), bytes, MapFlags::ANY)
            .context("writing the layout")?;
        use libbpf_rs::skel::Skel;
        for mut map in skel.object_mut().maps_mut() {
            let Some(name) = PINNED_MAPS
                .iter()
                .find(|n| map.name().to_str() == Some(**n))
            else {
                continue;
            };
            let path = pins.dir.join(name);
            if !path.exists() {
                map.pin(&path)
                    .with_context(|| format!("pinning {}", path.display()))?;
            }
            private(&path)?;
        }
        let path = pins.dir.join(DELETE);
        let _ = fs::remove_file(&path);
        skel.progs
            .ct_delete
            .pin(&path)
            .with_context(|| format!("pinning {}", path.display()))?;
        private(&path)?;
        Ok(pins)
    }

    /// Leaves every pin behind on drop, for the next tracker (`--keep`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Pins a link of side `side` (0 or 1), so that the program stays
    /// attached when the tracker exits (`--keep`).
    pub fn pin_link(&self, side: usize, link: impl AsFd) -> Result<()> {
        let path = self.dir.join(LINKS[side]);
        let _ = fs::remove_file(&path);
        sys::obj_pin(link.as_fd(), &path)?;
        private(&path)
    }
}

/// Lets only root read or change the pin at `path`.
fn private(path: &Path) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))
}

impl Drop for Pins {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Every pin goes, the links taken over from a kept tracker too:
        // the last reference to each link is then the tracker's own.
        for name in PINNED_MAPS.iter().chain([&DELETE]).chain(&LINKS) {
            let _ = fs::remove_file(self.dir.join(name));
        }
    }
}

/// Whether a loaded program still uses the pinned map at `path`, i.e.
/// whether a tracker (or a program kept attached) is live behind it.
/// Pins outlive a killed process; its programs do not.
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

/// The pin directory whose table the program `prog_id` uses, if any: to
/// name the tracker that holds an interface.
pub fn dir_of_program(prog_id: u32) -> Option<PathBuf> {
    let opts = libbpf_rs::query::ProgInfoQueryOptions::default().include_map_ids(true);
    let maps = libbpf_rs::query::ProgInfoIter::with_query_opts(opts)
        .find(|p| p.id == prog_id)?
        .map_ids;
    let mut dirs = vec![PathBuf::from("/sys/fs/bpf")];
    while let Some(d) = dirs.pop() {
        for entry in fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == TABLE) {
                let id = MapHandle::from_pinned_path(&path)
                    .ok()
                    .and_then(|m| m.info().ok())
                    .map(|i| i.info.id);
                if id.is_some_and(|id| maps.contains(&id)) {
                    return path.parent().map(Path::to_path_buf);
                }
            }
        }
    }
    None
}
