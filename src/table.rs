//! Reading the connection table into a Rust view: tuples in the original
//! direction, state, flags and the time left.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};
use libbpf_rs::{libbpf_sys, MapCore, MapFlags};
use nix::errno::Errno;
use nix::time::{clock_gettime, ClockId};

use crate::bpf::types::{ct_entry, ct_key, ct_key6, ct_status};
use crate::proto::{ICMPV6_ECHO_REQUEST, ICMP_ECHO, IPPROTO_ICMP, IPPROTO_ICMPV6};

/// A key of either family's table (`struct ct_key`, `struct ct_key6`):
/// what [`Conn::decode`] reads from it.
pub trait TableKey: Default + Clone + plain::Plain {
    /// The address in key slot 0 or 1.
    fn addr(&self, slot: usize) -> IpAddr;
    /// The port (or ICMP id) in key slot 0 or 1, in host order.
    fn port(&self, slot: usize) -> u16;
    /// IP protocol number.
    fn proto(&self) -> u8;
    /// ICMP: the request's type and code; 0 for TCP and UDP.
    fn icmp(&self) -> (u8, u8);
}

impl TableKey for ct_key {
    fn addr(&self, slot: usize) -> IpAddr {
        Ipv4Addr::from(u32::from_be(self.addr[slot])).into()
    }
    fn port(&self, slot: usize) -> u16 {
        u16::from_be(self.port[slot])
    }
    fn proto(&self) -> u8 {
        self.proto
    }
    fn icmp(&self) -> (u8, u8) {
        (self.icmp_type, self.icmp_code)
    }
}

impl TableKey for ct_key6 {
    fn addr(&self, slot: usize) -> IpAddr {
        // Each word holds four address bytes in network order.
        let mut b = [0u8; 16];
        for (i, w) in self.addr[slot].iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        Ipv6Addr::from(b).into()
    }
    fn port(&self, slot: usize) -> u16 {
        u16::from_be(self.port[slot])
    }
    fn proto(&self) -> u8 {
        self.proto
    }
    fn icmp(&self) -> (u8, u8) {
        (self.icmp_type, self.icmp_code)
    }
}

/// One connection, as `conntrack -L` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// IP protocol number.
    pub proto: u8,
    /// Source of the original direction (who opened it).
    pub src: IpAddr,
    /// Destination of the original direction.
    pub dst: IpAddr,
    /// TCP/UDP source port of the original direction; the query id for
    /// ICMP.
    pub sport: u16,
    /// TCP/UDP destination port of the original direction; the query id
    /// for ICMP.
    pub dport: u16,
    /// ICMP: the request's type (8 echo, 13 timestamp, 15 information,
    /// 17 address mask); 0 for TCP and UDP.
    pub icmp_type: u8,
    /// ICMP: the code both directions carry; 0 for TCP and UDP.
    pub icmp_code: u8,
    /// TCP state number (`ct_tcp_state`); 0 for UDP and ICMP.
    pub state: u8,
    /// A reply has been seen.
    pub seen_reply: bool,
    /// The connection is assured.
    pub assured: bool,
    /// Whole seconds until it expires.
    pub timeout: u64,
    /// Packets and bytes in the original and the reply direction, when
    /// the tracker counts them (`--acct`); None otherwise.
    pub acct: Option<[(u64, u64); 2]>,
    /// An id for the entry's lifetime, as `conntrack -o id` prints: a
    /// hash of its key and the moment it was created, so a connection
    /// deleted and opened again gets a new one.
    pub id: u32,
}

/// FNV-1a over the key's bytes and the creation time: [`Conn::id`].
fn entry_id(key: &[u8], created: u64) -> u32 {
    let h = key
        .iter()
        .chain(&created.to_le_bytes())
        .fold(0x811c_9dc5u32, |h, &b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
    h
}

/// Nanoseconds on the program's clock: CLOCK_MONOTONIC_COARSE, which the
/// program's jiffies clock is calibrated to at load, to within a tick.
/// (Without it the program reads bpf_ktime_get_coarse_ns(), or the fine
/// clock on kernels before 5.11, which runs at most a jiffy ahead.)
pub fn monotonic_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .expect("CLOCK_MONOTONIC_COARSE is always there");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

impl Conn {
    /// Decodes one map entry; `None` once it has expired (the datapath
    /// treats such an entry as absent, and the sweep will remove it).
    pub fn decode(key: &impl TableKey, e: &ct_entry, now_ns: u64) -> Option<Self> {
        if e.expires <= now_ns {
            return None;
        }
        Some(Self::decode_any(key, e, now_ns))
    }

    /// Decodes one map entry, expired or not: the time left is 0 once
    /// it has expired.
    pub fn decode_any(key: &impl TableKey, e: &ct_entry, now_ns: u64) -> Self {
        let o = usize::from(e.orig & 1);
        let r = o ^ 1;
        let proto = key.proto();
        let (sport, dport) = if proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 {
            // The query id sits in the requester's (original) slot.
            (key.port(o), key.port(o))
        } else {
            (key.port(o), key.port(r))
        };
        let (icmp_type, icmp_code) = key.icmp();
        Self {
            proto,
            src: key.addr(o),
            dst: key.addr(r),
            sport,
            dport,
            icmp_type,
            icmp_code,
            state: e.state,
            seen_reply: e.status & ct_status::CT_S_SEEN_REPLY.0 as u8 != 0,
            assured: e.status & ct_status::CT_S_ASSURED.0 as u8 != 0,
            timeout: e.expires.saturating_sub(now_ns) / 1_000_000_000,
            // With --acct the first packet is always counted.
            acct: (e.acct[0].packets > 0)
                .then(|| [0, 1].map(|d| (e.acct[d].packets, e.acct[d].bytes))),
            // SAFETY: table keys are plain C structs with explicit padding.
            id: entry_id(unsafe { plain::as_bytes(key) }, e.created),
        }
    }
}

/// Calls `f` with every (key, entry) of a connection table map of key type
/// `K`, a few thousand per syscall.  (libbpf-rs' batch iterator stops at
/// the first short batch, which hash maps return whenever a bucket does
/// not fit.)
pub fn for_each<K: TableKey>(map: &impl MapCore, mut f: impl FnMut(&K, &ct_entry)) -> Result<()> {
    let ksz = map.key_size() as usize;
    let vsz = map.value_size() as usize;
    if ksz != std::mem::size_of::<K>() || vsz != std::mem::size_of::<ct_entry>() {
        anyhow::bail!("this map is not a connection table ({ksz}-byte keys, {vsz}-byte values)");
    }
    let mut batch: u32 = 4096;
    let mut keys = vec![K::default(); batch as usize];
    let mut vals = vec![ct_entry::default(); batch as usize];
    let mut token = [0u8; 16]; // opaque position; large enough for a hash map's
    let mut first = true;
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    loop {
        let mut count = batch;
        let in_batch = if first {
            std::ptr::null_mut()
        } else {
            token.as_mut_ptr()
        };
        let mut out = [0u8; 16];
        // SAFETY: the key and value buffers hold `batch` elements of the
        // map's own sizes (checked above), the tokens are 16 bytes (a hash
        // map's token is a u32 bucket index) and `opts` is sized.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                map.as_fd().as_raw_fd(),
                in_batch.cast(),
                out.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                vals.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let done = ret == -(Errno::ENOENT as i32);
        if ret < 0 && !done {
            if ret == -(Errno::ENOSPC as i32) && batch < 1 << 20 {
                // One bucket holds more entries than the batch: grow it.
                batch *= 2;
                keys.resize(batch as usize, K::default());
                vals.resize(batch as usize, ct_entry::default());
                continue;
            }
            return Err(std::io::Error::from_raw_os_error(-ret))
                .context("reading the connection table");
        }
        for (k, v) in keys.iter().zip(&vals).take(count as usize) {
            f(k, v);
        }
        if done {
            return Ok(());
        }
        token = out;
        first = false;
    }
}

/// Writes entries into a connection table map, 64k per syscall: for
/// benchmarks and tools that need a table of a given size.
pub fn insert<K: TableKey>(map: &impl MapCore, keys: &[K], entries: &[ct_entry]) -> Result<()> {
    for (k, v) in keys.chunks(65536).zip(entries.chunks(65536)) {
        map.update_batch(
            crate::bpf::slice_bytes(k),
            crate::bpf::slice_bytes(v),
            k.len() as u32,
            MapFlags::ANY,
            MapFlags::ANY,
        )
        .context("filling the connection table")?;
    }
    Ok(())
}

/// Reads every live entry of a connection table map, of either family.
pub fn read(map: &impl MapCore) -> Result<Vec<Conn>> {
    read_at(map, monotonic_ns())
}

/// Reads every entry of a connection table map that is live at `now`; the
/// key's size tells the family.
pub fn read_at(map: &impl MapCore, now: u64) -> Result<Vec<Conn>> {
    Ok(entries_at(map, now)?.into_iter().map(|(_, c)| c).collect())
}

/// Reads every entry of a connection table map that is live at `now`, each
/// with its key's bytes (what `ct_delete` takes); the key's size tells the
/// family.
pub fn entries_at(map: &impl MapCore, now: u64) -> Result<Vec<(Vec<u8>, Conn)>> {
    fn read_keyed<K: TableKey>(map: &impl MapCore, now: u64) -> Result<Vec<(Vec<u8>, Conn)>> {
        let mut out = Vec::new();
        for_each::<K>(map, |k, e| {
            if let Some(c) = Conn::decode(k, e, now) {
                // SAFETY: table keys are plain C structs with explicit
                // padding.
                out.push((unsafe { plain::as_bytes(k) }.to_vec(), c));
            }
        })?;
        Ok(out)
    }
    if map.key_size() as usize == std::mem::size_of::<ct_key6>() {
        read_keyed::<ct_key6>(map, now)
    } else {
        read_keyed::<ct_key>(map, now)
    }
}

/// The IPv4 table key of a TCP or UDP flow, whichever way `src` -> `dst`
/// goes: the lower (address, port) pair takes slot 0, as in the program
/// (`ct_key_set()` in parse.h).
pub fn key_for(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Result<ct_key> {
    ordered(proto, src, dst).map(|(key, _)| key)
}

/// The IPv6 table key of a TCP or UDP flow, laid out as [`key_for`].
pub fn key6_for(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Result<ct_key6> {
    ordered6(proto, src, dst).map(|(key, _)| key)
}

/// [`key_for`], and whether `src` went into slot 1.
fn ordered(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Result<(ct_key, bool)> {
    let (IpAddr::V4(sa), IpAddr::V4(da)) = (src.0, dst.0) else {
        bail!("not an IPv4 flow: {} -> {}", src.0, dst.0);
    };
    let (s, d) = (u32::from(sa), u32::from(da));
    let swap = s > d || (s == d && src.1 > dst.1);
    let ((lo, lo_port), (hi, hi_port)) = if swap {
        ((d, dst.1), (s, src.1))
    } else {
        ((s, src.1), (d, dst.1))
    };
    let key = ct_key {
        addr: [lo.to_be(), hi.to_be()],
        port: [lo_port.to_be(), hi_port.to_be()],
        proto,
        ..Default::default()
    };
    Ok((key, swap))
}

/// [`key6_for`], and whether `src` went into slot 1.  Addresses compare
/// as their bytes do, as in `ct_addr6_cmp()`.
fn ordered6(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Result<(ct_key6, bool)> {
    let (IpAddr::V6(sa), IpAddr::V6(da)) = (src.0, dst.0) else {
        bail!("not an IPv6 flow: {} -> {}", src.0, dst.0);
    };
    let swap = (sa.octets(), src.1) > (da.octets(), dst.1);
    let ((lo, lo_port), (hi, hi_port)) = if swap {
        ((da, dst.1), (sa, src.1))
    } else {
        ((sa, src.1), (da, dst.1))
    };
    let words = |a: Ipv6Addr| {
        let o = a.octets();
        std::array::from_fn(|i| u32::from_ne_bytes(o[i * 4..i * 4 + 4].try_into().unwrap()))
    };
    let key = ct_key6 {
        addr: [words(lo), words(hi)],
        port: [lo_port.to_be(), hi_port.to_be()],
        proto,
        ..Default::default()
    };
    Ok((key, swap))
}

/// The IPv4 table key of an ICMP echo exchange (code 0): the id sits in
/// the requester's port slot.
pub fn icmp_key(requester: IpAddr, responder: IpAddr, id: u16) -> Result<ct_key> {
    icmp_query_key(requester, responder, ICMP_ECHO, 0, id)
}

/// The IPv4 table key of an ICMP query exchange whose request has
/// `icmp_type` (8, 13, 15, 17) and `code`, as `ct_icmp_key_set()` in
/// parse.h lays it out: the id in the requester's port slot, the
/// request's type and code, and which slot the requester holds.
pub fn icmp_query_key(
    requester: IpAddr,
    responder: IpAddr,
    icmp_type: u8,
    code: u8,
    id: u16,
) -> Result<ct_key> {
    let (mut key, swapped) = ordered(IPPROTO_ICMP, (requester, id), (responder, 0))?;
    key.icmp_type = icmp_type;
    key.icmp_code = code;
    key.icmp_requester = u8::from(swapped);
    Ok(key)
}

/// The IPv6 table key of an ICMPv6 query exchange whose request has
/// `icmp_type` (128 echo, 139 node information) and `code`, laid out as
/// [`icmp_query_key`].
pub fn icmp6_query_key(
    requester: IpAddr,
    responder: IpAddr,
    icmp_type: u8,
    code: u8,
    id: u16,
) -> Result<ct_key6> {
    let (mut key, swapped) = ordered6(IPPROTO_ICMPV6, (requester, id), (responder, 0))?;
    key.icmp_type = icmp_type;
    key.icmp_code = code;
    key.icmp_requester = u8::from(swapped);
    Ok(key)
}

/// The IPv6 table key of an ICMPv6 echo exchange (code 0).
pub fn icmp6_key(requester: IpAddr, responder: IpAddr, id: u16) -> Result<ct_key6> {
    icmp6_query_key(requester, responder, ICMPV6_ECHO_REQUEST, 0, id)
}

/// Looks one connection up by key; `None` if absent or expired.
pub fn lookup(map: &impl MapCore, key: &impl TableKey) -> Result<Option<(Conn, ct_entry)>> {
    lookup_at(map, key, monotonic_ns())
}

/// Looks one connection up by key; `None` if absent or expired at `now`.
pub fn lookup_at(
    map: &impl MapCore,
    key: &impl TableKey,
    now: u64,
) -> Result<Option<(Conn, ct_entry)>> {
    // SAFETY: table keys are plain C structs; viewing one as bytes is sound.
    let kb = unsafe { plain::as_bytes(key) };
    let Some(v) = map
        .lookup(kb, MapFlags::ANY)
        .context("looking up a connection")?
    else {
        return Ok(None);
    };
    let mut e = ct_entry::default();
    plain::copy_from_bytes(&mut e, &v).map_err(|_| anyhow::anyhow!("entry has the wrong size"))?;
    Ok(Conn::decode(key, &e, now).map(|c| (c, e)))
}
