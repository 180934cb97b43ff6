//! Connection events from the program's ring (`struct ct_event`): who
//! reads them (`struct ct_event_ctl`), and what one says.

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use crate::bpf::types::{ct_entry, ct_event, ct_event_ctl, ct_event_type, ct_key, ct_key6};
use crate::table::{Conn, TableKey};

/// An event's type, as `conntrack -E` prints it and `-e` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    /// A connection's first packet made its entry.
    New,
    /// Its TCP state or its status (SEEN_REPLY, ASSURED) changed.
    Update,
    /// Its entry went: expired, swept, closed, deleted or flushed.
    Destroy,
    /// All three.
    All,
}

impl Kind {
    /// The `enum ct_event_type` bits this stands for.
    pub fn mask(self) -> u32 {
        match self {
            Kind::New => ct_event_type::CT_EV_NEW.0,
            Kind::Update => ct_event_type::CT_EV_UPDATE.0,
            Kind::Destroy => ct_event_type::CT_EV_DESTROY.0,
            Kind::All => {
                ct_event_type::CT_EV_NEW.0
                    | ct_event_type::CT_EV_UPDATE.0
                    | ct_event_type::CT_EV_DESTROY.0
            }
        }
    }

    /// The bracketed name `conntrack -E` prints, e.g. `[NEW]`.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::New => "[NEW]",
            Kind::Update => "[UPDATE]",
            Kind::Destroy => "[DESTROY]",
            Kind::All => "[ALL]",
        }
    }
}

/// One event: its type and the connection as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub conn: Conn,
}

/// The key bytes of an event as a table key of type `K`.
fn key<K: TableKey>(bytes: &[u8]) -> Result<K> {
    let mut k = K::default();
    plain::copy_from_bytes(&mut k, &bytes[..std::mem::size_of::<K>()])
        .map_err(|_| anyhow::anyhow!("short event key"))?;
    Ok(k)
}

impl Event {
    /// Decodes one record of the ring.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut ev = ct_event::default();
        plain::copy_from_bytes(&mut ev, data)
            .map_err(|_| anyhow::anyhow!("an event of {} bytes", data.len()))?;
        let kind = match ev.r#type as u32 {
            t if t == ct_event_type::CT_EV_NEW.0 => Kind::New,
            t if t == ct_event_type::CT_EV_UPDATE.0 => Kind::Update,
            t if t == ct_event_type::CT_EV_DESTROY.0 => Kind::Destroy,
            t => anyhow::bail!("an event of unknown type {t}"),
        };
        let e = ct_entry {
            expires: ev.expires,
            created: ev.created,
            state: ev.state,
            status: ev.status,
            orig: ev.orig,
            icmp_type: ev.icmp_type,
            // DESTROY with --acct only, as the kernel sends them.
            acct: ev.acct,
            ..Default::default()
        };
        // What the entry had left when it happened; 0 once expired.
        let conn = if i32::from(ev.family) == nix::libc::AF_INET6 {
            Conn::decode_any(&key::<ct_key6>(&ev.key)?, &e, ev.ts)
        } else {
            Conn::decode_any(&key::<ct_key>(&ev.key)?, &e, ev.ts)
        };
        Ok(Self { kind, conn })
    }
}

/// Who reads the events, from the pinned control map.
pub fn reader(ctl: &impl MapCore) -> Result<ct_event_ctl> {
    let v = ctl
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .context("reading the events control map")?
        .context("the events control map is empty")?;
    let mut c = ct_event_ctl::default();
    plain::copy_from_bytes(&mut c, &v).map_err(|_| anyhow::anyhow!("wrong control size"))?;
    Ok(c)
}

/// Says which events `pid` reads (mask 0 and pid 0: none, no reader).
pub fn set_reader(ctl: &impl MapCore, mask: u32, pid: u32) -> Result<()> {
    let c = ct_event_ctl { mask, pid };
    // SAFETY: a plain C struct without padding.
    let bytes = unsafe { plain::as_bytes(&c) };
    ctl.update(&0u32.to_ne_bytes(), bytes, MapFlags::ANY)
        .context("writing the events control map")
}

/// Whether process `pid` lives.
pub fn alive(pid: u32) -> bool {
    pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Turns the events off if their reader died without saying so (SIGKILL):
/// the program would otherwise go on filling a ring nobody reads.
pub fn forget_dead_reader(ctl: &impl MapCore) -> Result<()> {
    let c = reader(ctl)?;
    if c.mask != 0 && !alive(c.pid) {
        set_reader(ctl, 0, 0)?;
    }
    Ok(())
}
