//! Reader registrations: which openers may still read a volume's retired
//! segments, so that the cleaner deletes a retired segment as soon as no
//! reader can need it, instead of after a grace period (design.md §13).
//!
//! A read-only opener (a view of the head or of a snapshot, a clone's
//! base, `qemu-img` and `hlfs` reading a volume) writes a registration in
//! the volume directory *before* it loads the map:
//! `reader-<token>-<view>-<beat>`, whose body names its process like the
//! write lock does (`lock::Holder`). `view` counts the maps it has loaded;
//! `beat` its heartbeats.
//!
//! The cleaner renames its victims to `retired-…` and only *then* lists
//! the registrations: a reader registered before that listing may hold a
//! map into the victims, and one registered after it loaded its map after
//! the rename, from a checkpoint that no longer points into them. If no
//! live reader is registered, the victims are deleted at once. Otherwise a
//! `holds-<secs>-<rand>` file records the victims and each reader's
//! `token:view`, and they are deleted once every such reader is gone or
//! has loaded a newer map (a higher `view`).
//!
//! A snapshot view (and so a clone's base) reads the same bytes from a new
//! map, so it does not wait to be closed: its heartbeat (every
//! `HLFS_READER_HEARTBEAT` seconds, 30 by default) sees a holds file naming
//! it, loads the map again, advances `view` and deletes what it was
//! holding. A view of the head keeps its map (reloading would change what
//! it reads) and holds until it closes.
//!
//! A registration is dead when its process is (same machine: the pid
//! check of the write lock) or, for a reader on another host, when its
//! newest heartbeat file is older than four heartbeats by the storage's
//! clock (the NameNode's on HDFS, so host clocks need not agree). Dead
//! registrations are removed by whoever looks. A reader that cannot
//! register (a directory it may not write) is not seen: retired segments
//! no holds file accounts for wait out the grace period, and a snapshot
//! view that finds a segment gone loads the map again (`reload_view`).

use crate::backend::{Backend, DirEntry};
use crate::error::{ErrorKind, Result};
use crate::lock::Holder;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

const READER: &str = "reader-";
const HOLDS: &str = "holds-";

/// Seconds between heartbeats: `HLFS_READER_HEARTBEAT`, else 30.
pub fn heartbeat() -> Duration {
    std::env::var("HLFS_READER_HEARTBEAT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(30))
}

/// A registration lapses after this many missed heartbeats.
const LAPSE_BEATS: u32 = 4;

fn reader_name(token: u64, view: u64, beat: u64) -> String {
    format!("{READER}{token:016x}-{view}-{beat}")
}

/// `(token, view, beat)` of a registration file name.
pub(crate) fn parse_reader(name: &str) -> Option<(u64, u64, u64)> {
    let mut p = name.strip_prefix(READER)?.splitn(3, '-');
    let token = u64::from_str_radix(p.next()?, 16).ok()?;
    Some((token, p.next()?.parse().ok()?, p.next()?.parse().ok()?))
}

/// Whether `name` is a registration of this process (`dir_space` leaves
/// them out, so that `hlfs du` agrees with a `du -sb` run before or after
/// it).
pub(crate) fn is_own_registration(name: &str) -> bool {
    parse_reader(name).is_some_and(|(t, _, _)| live_tokens().lock().contains_key(&t))
}

/// Whether `name` is a holds file.
pub(crate) fn is_holds(name: &str) -> bool {
    name.starts_with(HOLDS)
}

/// The name a file retired at `secs` gets: `retired-<name>.<secs>` (a
/// segment `seg-N` keeps the older `retired-N.<secs>`, cleaner.rs).
pub(crate) fn retired_name(name: &str, secs: u64) -> String {
    match crate::format::parse_segment_name(name) {
        Some(seg) => crate::volume::retired_segment_name(seg, secs),
        None => format!("retired-{name}.{secs}"),
    }
}

/// When a retired file was retired (seconds since the epoch).
fn retired_secs(name: &str) -> Option<u64> {
    name.strip_prefix("retired-")?.rsplit('.').next()?.parse().ok()
}

/// Files of the volume directory `dir` that are no longer part of the
/// volume but that a registered reader may still read (checkpoints a
/// reader's map was loaded from): deleted at once if no reader is
/// registered, else kept under a retired name until those readers are done
/// (`release`). `names` are file names in `dir`; missing ones are skipped.
pub(crate) fn discard(backend: &dyn Backend, dir: &str, names: &[String]) -> Result<()> {
    let (secs, _) = crate::log::now();
    let mut moved = Vec::new();
    for n in names {
        let to = retired_name(n, secs);
        match backend.rename(&format!("{dir}/{n}"), &format!("{dir}/{to}")) {
            Ok(()) => moved.push(to),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            // A retired copy of the same name from this second: delete.
            Err(e) if e.kind() == ErrorKind::Exists => backend.delete(&format!("{dir}/{n}"))?,
            Err(e) => return Err(e),
        }
    }
    if !retired(backend, dir, &moved)? {
        for n in &moved {
            match backend.delete(&format!("{dir}/{n}")) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// What a registered reader is, as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInfo {
    /// Its token (the registration's name).
    pub token: u64,
    /// Maps it has loaded (0 at open).
    pub view: u64,
    /// Process and host.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// What it reads: `URI` or `URI%snap`.
    pub what: String,
    /// Whether it loads a new map when asked (a snapshot view).
    pub refreshes: bool,
    /// Its heartbeat interval in seconds.
    pub heartbeat_secs: u64,
    /// Its newest heartbeat, by the storage's clock.
    pub beat_at: SystemTime,
    /// On another machine (judged by its heartbeat, not its pid).
    pub remote: bool,
}

type Refresh = Box<dyn Fn() -> Result<()> + Send + Sync>;

/// A registration the process holds for an open read-only volume.
pub struct Registration {
    backend: Arc<dyn Backend>,
    dir: String,
    token: u64,
    holder: Holder,
    what: String,
    refreshes: bool,
    /// `(view, beat)` of the file that stands now.
    cur: Mutex<(u64, u64)>,
    /// Loads the map again (set by `Volume::watch`): returns whether it did.
    refresh: Mutex<Option<Refresh>>,
    closed: AtomicBool,
    /// Maps loaded by the volume (`Volume::view_generation`) that the
    /// registration has not published yet.
    loaded: AtomicU64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registration({}, {:016x})", self.what, self.token)
    }
}

fn live_tokens() -> &'static Mutex<HashMap<u64, Weak<Registration>>> {
    static L: std::sync::OnceLock<Mutex<HashMap<u64, Weak<Registration>>>> = std::sync::OnceLock::new();
    L.get_or_init(Default::default)
}

impl Registration {
    /// Registers a reader of the volume in `dir` (`what` names it, for
    /// messages). A failure (a directory this process may not write) is
    /// not an error: the reader goes on unregistered, as before
    /// registrations existed.
    pub fn register(backend: Arc<dyn Backend>, dir: &str, what: &str, refreshes: bool) -> Option<Arc<Registration>> {
        let holder = Holder::me();
        let r = Arc::new(Registration {
            backend,
            dir: dir.to_string(),
            token: holder.token,
            holder,
            what: what.to_string(),
            refreshes,
            cur: Mutex::new((0, 0)),
            refresh: Mutex::new(None),
            closed: AtomicBool::new(false),
            loaded: AtomicU64::new(0),
        });
        if let Err(e) = r.write(0, 0) {
            tracing::info!("{what}: could not register as a reader ({e}); the cleaner falls back to its grace period");
            return None;
        }
        live_tokens().lock().insert(r.token, Arc::downgrade(&r));
        start_heartbeats();
        Some(r)
    }

    fn body(&self) -> String {
        format!(
            "{}what={}\nrefreshes={}\nheartbeat={}\n",
            self.holder.encode(),
            self.what,
            self.refreshes as u8,
            heartbeat().as_secs().max(1)
        )
    }

    fn write(&self, view: u64, beat: u64) -> Result<()> {
        let path = format!("{}/{}", self.dir, reader_name(self.token, view, beat));
        let mut f = self.backend.create(&path)?;
        f.append(self.body().as_bytes())?;
        f.close()
    }

    /// The volume calls this with a function that loads its map again;
    /// from then on a snapshot view refreshes when the cleaner waits for it.
    pub fn set_refresh(&self, f: Refresh) {
        *self.refresh.lock() = Some(f);
    }

    /// The volume loaded its map again (a reload after a missing segment,
    /// or a refresh): publish it, so what the old map held can go.
    pub fn map_reloaded(&self) {
        self.loaded.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.beat(false) {
            tracing::info!("{}: reader heartbeat: {e}", self.what);
        }
    }

    /// Writes the next heartbeat file (with the current view) and removes
    /// the previous one; with `refresh`, first loads a new map if a holds
    /// file waits for this reader. Then lets go of what no reader holds.
    fn beat(&self, refresh: bool) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        if refresh && self.refreshes {
            let (view, _) = *self.cur.lock();
            let waited = holds(&*self.backend, &self.dir)?
                .iter()
                .any(|h| h.readers.iter().any(|&(t, v)| t == self.token && v >= view));
            if waited {
                if let Some(f) = self.refresh.lock().as_ref() {
                    f()?; // calls map_reloaded, which beats
                    return Ok(());
                }
            }
        }
        let mut cur = self.cur.lock();
        let (view, beat) = *cur;
        let next = (view + self.loaded.swap(0, Ordering::AcqRel), beat + 1);
        self.write(next.0, next.1)?;
        *cur = next;
        drop(cur);
        let old = format!("{}/{}", self.dir, reader_name(self.token, view, beat));
        match self.backend.delete(&old) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        if next.0 != view {
            release(&*self.backend, &self.dir, &[])?;
        }
        Ok(())
    }

    /// Removes the registration, then deletes what only it held.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        live_tokens().lock().remove(&self.token);
        let (view, beat) = *self.cur.lock();
        let path = format!("{}/{}", self.dir, reader_name(self.token, view, beat));
        match self.backend.delete(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::info!("{}: removing its reader registration: {e}", self.what),
        }
        if let Err(e) = release(&*self.backend, &self.dir, &[]) {
            tracing::info!("{}: deleting retired segments it held: {e}", self.what);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.close();
    }
}

/// One thread per process beats for every registration.
fn start_heartbeats() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new().name("hlfs-readers".into()).spawn(|| loop {
            std::thread::sleep(heartbeat());
            let regs: Vec<Arc<Registration>> =
                live_tokens().lock().values().filter_map(Weak::upgrade).collect();
            for r in regs {
                if let Err(e) = r.beat(true) {
                    tracing::info!("{}: reader heartbeat: {e}", r.what);
                }
            }
        });
    });
}

/// A holds file: retired files and the readers that may need them.
#[derive(Debug, Clone)]
pub(crate) struct Holds {
    pub name: String,
    pub files: Vec<String>,
    pub readers: Vec<(u64, u64)>,
}

fn parse_holds(name: &str, body: &str) -> Option<Holds> {
    let mut h = Holds { name: name.to_string(), files: Vec::new(), readers: Vec::new() };
    for line in body.lines() {
        let (k, v) = line.split_once('=')?;
        match k {
            "files" => {
                for f in v.split(',').filter(|s| !s.is_empty()) {
                    if !f.starts_with("retired-") || f.contains('/') {
                        return None;
                    }
                    h.files.push(f.to_string());
                }
            }
            "readers" => {
                for r in v.split(',').filter(|s| !s.is_empty()) {
                    let (t, view) = r.split_once(':')?;
                    h.readers.push((u64::from_str_radix(t, 16).ok()?, view.parse().ok()?));
                }
            }
            _ => {}
        }
    }
    Some(h)
}

fn read_small(backend: &dyn Backend, path: &str) -> Result<Option<String>> {
    let f = match backend.open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.len()?.min(64 << 10) as usize;
    let mut b = vec![0u8; len];
    match f.read_exact_at(0, &mut b) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        r => r?,
    }
    Ok(Some(String::from_utf8_lossy(&b).into_owned()))
}

fn holds(backend: &dyn Backend, dir: &str) -> Result<Vec<Holds>> {
    holds_in(backend, dir, &backend.list(dir)?)
}

/// The holds files among `names` (a listing of `dir` already made).
fn holds_in(backend: &dyn Backend, dir: &str, names: &[String]) -> Result<Vec<Holds>> {
    let mut out = Vec::new();
    for n in names.iter().filter(|n| is_holds(n)) {
        if let Some(b) = read_small(backend, &format!("{dir}/{n}"))? {
            match parse_holds(n, &b) {
                Some(h) => out.push(h),
                None => tracing::warn!("{dir}/{n}: unreadable holds file; its segments wait for the grace period"),
            }
        }
    }
    Ok(out)
}

/// The storage's clock: a file's modification time right after creating
/// it (the NameNode's clock on HDFS). Local directories: this host's.
fn storage_now(backend: &dyn Backend, dir: &str) -> Result<SystemTime> {
    if backend.local_index_dir(dir).is_some() {
        return Ok(SystemTime::now());
    }
    let probe = format!("{HOLDS}probe-{:016x}", rand::random::<u64>());
    let path = format!("{dir}/{probe}");
    backend.create(&path)?.close()?;
    let t = backend
        .usage(dir)?
        .entries
        .into_iter()
        .find(|e| e.name == probe)
        .map(|e| e.modified)
        .unwrap_or_else(SystemTime::now);
    let _ = backend.delete(&path);
    Ok(t)
}

/// The live readers of the volume in `dir`, by token; removes the files of
/// dead ones.
pub(crate) fn live_readers(backend: &dyn Backend, dir: &str) -> Result<BTreeMap<u64, ReaderInfo>> {
    let usage = backend.usage(dir)?;
    live_readers_in(backend, dir, &usage.entries)
}

fn live_readers_in(backend: &dyn Backend, dir: &str, entries: &[DirEntry]) -> Result<BTreeMap<u64, ReaderInfo>> {
    // Newest heartbeat file of each token; the older ones are leftovers.
    let mut newest: BTreeMap<u64, (u64, u64, &DirEntry)> = BTreeMap::new();
    let mut stale: Vec<&str> = Vec::new();
    for e in entries {
        let Some((t, view, beat)) = parse_reader(&e.name) else { continue };
        match newest.get(&t) {
            Some(&(_, b, _)) if b >= beat => stale.push(&e.name),
            Some(&(_, _, old)) => {
                stale.push(&old.name);
                newest.insert(t, (view, beat, e));
            }
            None => {
                newest.insert(t, (view, beat, e));
            }
        }
    }
    let mut now: Option<SystemTime> = None;
    let mut out = BTreeMap::new();
    let mine = live_tokens().lock().keys().copied().collect::<BTreeSet<u64>>();
    for (t, (view, _, e)) in newest {
        let path = format!("{dir}/{}", e.name);
        let Some(body) = read_small(backend, &path)? else { continue };
        let Some(h) = Holder::parse(&body) else {
            // Being written (created, not yet closed): alive.
            continue;
        };
        let field = |k: &str| body.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('=')).unwrap_or("");
        let hb: u64 = field("heartbeat").parse().unwrap_or(30).max(1);
        let remote = !h.is_local();
        let alive = if h.pid == std::process::id() && !remote {
            mine.contains(&t)
        } else if !remote {
            !h.is_dead()
        } else if h.is_dead() {
            false // this machine, an earlier boot
        } else {
            let n = match now {
                Some(n) => n,
                None => *now.insert(storage_now(backend, dir)?),
            };
            n.duration_since(e.modified).unwrap_or_default() <= Duration::from_secs(hb * LAPSE_BEATS as u64)
        };
        if !alive {
            tracing::info!(
                "{dir}: the reader registration of pid {} on host {} is dead; removing it",
                h.pid,
                h.host
            );
            stale.push(&e.name);
            continue;
        }
        out.insert(
            t,
            ReaderInfo {
                token: t,
                view,
                pid: h.pid,
                host: h.host.clone(),
                what: field("what").to_string(),
                refreshes: field("refreshes") == "1",
                heartbeat_secs: hb,
                beat_at: e.modified,
                remote,
            },
        );
    }
    for n in stale {
        match backend.delete(&format!("{dir}/{n}")) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(out)
}

/// What became of retired files: deleted now, held by live readers, or
/// waiting for the grace period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    /// Retired files (segments, checkpoints) deleted now.
    pub deleted: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Retired files a live reader may still read.
    pub held: Vec<HeldBy>,
    /// Retired files no holds file accounts for (a crash between the
    /// retirement and its record, or an older cleaner): they wait for the
    /// grace period. Count, bytes, and when the last of them may go
    /// (seconds since the epoch).
    pub unaccounted: (u64, u64, u64),
}

/// Retired files held back by one set of readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBy {
    /// How many retired segments and checkpoints.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The readers holding them.
    pub readers: Vec<ReaderInfo>,
}

impl Release {
    /// Bytes still waiting, held by readers or the grace period.
    pub fn waiting_bytes(&self) -> u64 {
        self.held.iter().map(|h| h.bytes).sum::<u64>() + self.unaccounted.1
    }
}

/// Deletes the retired files no live reader can need: those of holds files
/// whose readers are all gone or have loaded a newer map, and `free_now`
/// (retired a moment ago with no reader registered, `retired`). Retired
/// files no holds file accounts for otherwise go after the grace period
/// of `GcOptions`.
pub(crate) fn release(backend: &dyn Backend, dir: &str, free_now: &[String]) -> Result<Release> {
    release_with(backend, dir, free_now, None)
}

/// `release` with the grace period (seconds) for unaccounted files.
pub(crate) fn release_with(backend: &dyn Backend, dir: &str, free_now: &[String], grace: Option<u64>) -> Result<Release> {
    let grace = grace.unwrap_or(crate::volume::GcOptions::default().retire_grace_secs);
    let usage = backend.usage(dir)?;
    let readers = live_readers_in(backend, dir, &usage.entries)?;
    let retired: BTreeMap<&str, &DirEntry> = usage
        .entries
        .iter()
        .filter(|e| e.name.starts_with("retired-"))
        .map(|e| (e.name.as_str(), e))
        .collect();
    let mut out = Release::default();
    let mut accounted: BTreeSet<String> = BTreeSet::new();
    let delete = |name: &str, out: &mut Release| -> Result<()> {
        if let Some(e) = retired.get(name) {
            match backend.delete(&format!("{dir}/{name}")) {
                Ok(()) => {
                    out.deleted += 1;
                    out.deleted_bytes += e.bytes;
                }
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    };
    for n in free_now {
        accounted.insert(n.clone());
        delete(n, &mut out)?;
    }
    let names: Vec<String> = usage.entries.iter().map(|e| e.name.clone()).collect();
    for h in holds_in(backend, dir, &names)? {
        accounted.extend(h.files.iter().cloned());
        let holding: Vec<ReaderInfo> = h
            .readers
            .iter()
            .filter_map(|&(t, v)| readers.get(&t).filter(|r| r.view <= v).cloned())
            .collect();
        let present: Vec<&&DirEntry> = h.files.iter().filter_map(|f| retired.get(f.as_str())).collect();
        if holding.is_empty() || present.is_empty() {
            for f in &h.files {
                delete(f, &mut out)?;
            }
            match backend.delete(&format!("{dir}/{}", h.name)) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        } else {
            let bytes: u64 = present.iter().map(|e| e.bytes).sum();
            let tokens = |r: &[ReaderInfo]| r.iter().map(|r| r.token).collect::<Vec<_>>();
            match out.held.iter_mut().find(|o| tokens(&o.readers) == tokens(&holding)) {
                Some(o) => {
                    o.files += present.len() as u64;
                    o.bytes += bytes;
                }
                None => out.held.push(HeldBy { files: present.len() as u64, bytes, readers: holding }),
            }
        }
    }
    let (now, _) = crate::log::now();
    for (name, e) in &retired {
        if accounted.contains(*name) {
            continue;
        }
        let secs = retired_secs(name).unwrap_or(0);
        if now.saturating_sub(secs) >= grace {
            delete(name, &mut out)?;
        } else {
            out.unaccounted.0 += 1;
            out.unaccounted.1 += e.bytes;
            out.unaccounted.2 = out.unaccounted.2.max(secs + grace);
        }
    }
    Ok(out)
}

/// Called right after renaming files to their retired names (`files`, as
/// they are named now): lists the live readers *now* (see the module docs
/// for why after) and if there are any records which of them hold the
/// files. Returns whether it did; if not, no reader can need them, and the
/// caller deletes them (`release`'s `free_now`).
pub(crate) fn retired(backend: &dyn Backend, dir: &str, files: &[String]) -> Result<bool> {
    if files.is_empty() {
        return Ok(false);
    }
    let readers = live_readers(backend, dir)?;
    if readers.is_empty() {
        return Ok(false);
    }
    let body = format!(
        "files={}\nreaders={}\n",
        files.join(","),
        readers.values().map(|r| format!("{:x}:{}", r.token, r.view)).collect::<Vec<_>>().join(",")
    );
    let (secs, _) = crate::log::now();
    let path = format!("{dir}/{HOLDS}{secs}-{:08x}", rand::random::<u32>());
    let mut f = backend.create(&path)?;
    f.append(body.as_bytes())?;
    f.close()?;
    Ok(true)
}
