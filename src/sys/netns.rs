//! Network namespaces by name, as `ip netns add` creates them: entered for
//! good, for as long as a [`Guard`] lives, or by a thread of their own.

use std::fs::File;
use std::marker::PhantomData;
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

/// Moves the calling thread into the named network namespace for good.
pub fn enter_netns(name: &str) -> Result<()> {
    setns(netns_file(name)?, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace '{name}'"))
}

/// The calling thread inside another network namespace: dropping the
/// guard takes the thread back to the namespace it was in.  setns(2) moves
/// one thread only, so the guard stays on the thread that made it (it is
/// not `Send`).
#[derive(Debug)]
pub struct Guard {
    /// The namespace to go back to.
    home: File,
    _one_thread: PhantomData<*const ()>,
}

impl Guard {
    /// Enters the named network namespace.
    pub fn enter(name: &str) -> Result<Self> {
        Self::new(&netns_file(name)?, || {
            format!("entering network namespace '{name}'")
        })
    }

    /// Enters the network namespace `ns`: an open /run/netns/NAME, or
    /// /proc/PID/ns/net.
    pub fn enter_file(ns: &File) -> Result<Self> {
        Self::new(ns, || "entering a network namespace".to_string())
    }

    fn new(ns: &File, what: impl FnOnce() -> String) -> Result<Self> {
        let home = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
        setns(ns, CloneFlags::CLONE_NEWNET).with_context(what)?;
        Ok(Self {
            home,
            _one_thread: PhantomData,
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // The namespace the thread was in a moment ago: it can go back.
        let _ = setns(&self.home, CloneFlags::CLONE_NEWNET);
    }
}

/// Runs `f` on a thread of its own inside the named network namespace and
/// returns what it returns; the caller stays where it is.  Sockets keep the
/// namespace they were made in, so what `f` opens may be used from any
/// thread.  A panic in `f` goes on in the caller.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    on_thread(
        &netns_file(name)?,
        || format!("entering network namespace '{name}'"),
        f,
    )
}

/// [`in_netns`] for a namespace already open: /run/netns/NAME, or
/// /proc/PID/ns/net.
pub fn in_netns_file<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> Result<T> {
    on_thread(ns, || "entering a network namespace".to_string(), f)
}

fn on_thread<T: Send>(
    ns: &File,
    what: impl FnOnce() -> String + Send,
    f: impl FnOnce() -> T + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _in = Guard::new(ns, what)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_named() {
        let e = in_netns("xc-no-such-netns", || ()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "network namespace 'xc-no-such-netns' does not exist"
        );
        assert!(Guard::enter("xc-no-such-netns").is_err());
    }
}
