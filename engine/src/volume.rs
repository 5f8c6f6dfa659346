//! A volume: the public face of the engine.
//!
//! Data path: `write` encodes a data record into the active segment
//! (`LogWriter`) and points the block map (`Index`) at it; `read` resolves
//! each block through the timeline chain (head, then each frozen parent, then
//! a clone's base volume) and reads the bytes from the log; `flush` makes the
//! log durable. The index is a cache: opening replays the log after the
//! newest checkpoint (or after the position a cleanly closed index recorded).

use crate::backend::{self, Backend, ReadFile};
use crate::checkpoint;
use crate::error::{corrupt, invalid, not_found, Error, ErrorKind, Result};
use crate::format::{self, BaseRef, Record, BLOCK_SIZE, MAX_BLOCKS_PER_RECORD, MAX_VIRTUAL_SIZE};
use crate::index::{Entry, Index};
use crate::lock::{self, WriteLock};
use crate::log::{self, LogPos, LogWriter, Scanned};
use crate::map::Extent;
use crate::state::{SnapshotMeta, Timeline, VolState};
use crate::uri::{validate_snapshot_name, VolumeUri};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

mod cleaner;
pub use cleaner::{BackgroundGc, Candidate, GcOptions, GcReport, GcThread};
mod du;
pub use du::{DuReport, DuView};
mod flatten;
pub use flatten::FlattenReport;

const SECTOR: u64 = 512;
const BS: usize = BLOCK_SIZE as usize;

thread_local! {
    /// Per-thread buffer where read blocks are verified before being copied out.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread buffer of `read_vectored`.
    static GATHER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A window of `len` bytes of `v` at a page-aligned address (`v` grows to
/// hold it, with a page of slack for the alignment).
fn page_aligned(v: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if v.len() < len + format::PAGE {
        v.resize(len + format::PAGE, 0);
    }
    let pad = v.as_ptr().align_offset(format::PAGE);
    &mut v[pad..pad + len]
}

/// A `GATHER` buffer larger than this is freed after use rather than kept:
/// QEMU runs up to 64 pool threads, and keeping a large-read-sized buffer in
/// each of them cost more peak memory than allocating one per large read.
const GATHER_KEEP: usize = 256 << 10;

/// Splits the concatenation of `parts` into chunks of `size` bytes (the last
/// one shorter), each a list of sub-slices of `parts`.
fn split_parts<'a>(parts: &[&'a [u8]], size: usize) -> Vec<Vec<&'a [u8]>> {
    let mut out = Vec::new();
    let mut cur: Vec<&'a [u8]> = Vec::new();
    let mut room = size;
    for &p in parts {
        let mut p = p;
        while !p.is_empty() {
            let n = p.len().min(room);
            cur.push(&p[..n]);
            p = &p[n..];
            room -= n;
            if room == 0 {
                out.push(std::mem::take(&mut cur));
                room = size;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// How to open a volume.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Open read-only (no lock, no writes; sees the volume as of opening).
    pub read_only: bool,
    /// Where to keep sled indexes for backends without a natural local place
    /// (default: `$HLFS_INDEX_DIR`, else `$XDG_CACHE_HOME/hlfs/index`, else `~/.cache/hlfs/index`).
    pub index_root: Option<PathBuf>,
    /// Segment size in bytes (default 64 MiB, as the original HLFS).
    pub segment_size: u64,
    /// Write a checkpoint after this many log bytes (default 1 GiB).
    pub checkpoint_every: u64,
    /// Ignore checkpoints and any existing index: rebuild from the log alone.
    pub rebuild_index: bool,
    /// Bypass the host page cache (O_DIRECT segments) where the backend
    /// can (local directories): QEMU's cache=none and directsync.
    pub direct_io: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            read_only: false,
            index_root: None,
            segment_size: 64 << 20,
            checkpoint_every: 1 << 30,
            rebuild_index: false,
            direct_io: false,
        }
    }
}

impl OpenOptions {
    /// Read-only defaults.
    pub fn read_only() -> Self {
        OpenOptions {
            read_only: true,
            ..Default::default()
        }
    }
}

/// What a block range holds, for `block_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// Data was written (here or in a clone's base).
    Data,
    /// Explicitly zeroed or discarded; reads as zeros.
    Zero,
    /// Never written; reads as zeros.
    Unallocated,
}

/// A snapshot as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Id, unique within the volume.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub secs: u64,
    /// Creation time, nanoseconds.
    pub nsecs: u32,
    /// Virtual size when taken.
    pub virtual_size: u64,
    /// Bytes of data written between the previous snapshot and this one
    /// (what this snapshot holds on its own).
    pub bytes: u64,
    /// URIs of clones made from this snapshot.
    pub clones: Vec<String>,
}

/// Facts about a volume, for `hlfs info` and `qemu-img info`.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    /// Canonical URI (with `%snap` when a snapshot view is open).
    pub uri: String,
    /// Backend kind ("local", "hdfs", "mem").
    pub backend: String,
    /// Volume UUID, hex.
    pub uuid: String,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Mapping unit in bytes.
    pub block_size: u64,
    /// Bytes the log occupies in the backend (segments and checkpoints).
    pub allocated_bytes: u64,
    /// Bytes of blocks still mapped by the head, a snapshot or a clone's base.
    pub live_bytes: u64,
    /// Number of segment files.
    pub segments: u64,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// Base snapshot (`uri%snap`) if this volume is a clone.
    pub base: Option<String>,
    /// Bytes of data the head holds on its own (written since the last snapshot).
    pub head_bytes: u64,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Who holds the volume read-write, if anyone ("pid N on host H").
    pub writer: Option<String>,
}

/// Results of `fsck`.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    /// Segments in the log chain.
    pub segments: u64,
    /// Records verified.
    pub records: u64,
    /// Data blocks verified.
    pub data_blocks: u64,
    /// Bytes verified.
    pub bytes: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Problems that make data unreadable (each names segment and offset).
    pub errors: Vec<String>,
    /// Harmless findings (torn tail after a crash, abandoned segments).
    pub notes: Vec<String>,
    /// Whether the index was rebuilt.
    pub rebuilt_index: bool,
}

/// An open volume. Safe to share between threads (`Arc<Volume>`).
pub struct Volume {
    uri: VolumeUri,
    backend: Arc<dyn Backend>,
    dir: String,
    read_only: bool,
    /// Timeline and size seen by a read-only snapshot view (None: the head).
    view: Option<(u64, u64)>,
    /// The block map. Only a read-only view replaces it (`reload_view`).
    index: RwLock<Arc<Index>>,
    state: RwLock<VolState>,
    writer: Mutex<Option<LogWriter>>,
    active_segment: Arc<AtomicU64>,
    readers: Mutex<HashMap<u64, Arc<dyn ReadFile>>>,
    /// Segments are read (and new ones written) bypassing the page cache:
    /// `OpenOptions::direct_io`, changed by `set_direct_io`.
    direct: AtomicBool,
    base: Option<Arc<Volume>>,
    lock: Mutex<Option<WriteLock>>,
    opts: OpenOptions,
    closed: AtomicBool,
    /// Bumped by every `reload_view`; serialised by `reloading`.
    view_generation: AtomicU64,
    reloading: Mutex<()>,
    /// The periodic checkpoint being written (and sled being fed) by a
    /// thread of its own (`flush`), if any.
    background: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The last background checkpoint failed: the next flush tries again.
    checkpoint_retry: Arc<AtomicBool>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Volume({})", self.uri)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check_size(size: u64, what: &str) -> Result<()> {
    if size == 0 {
        return Err(invalid(format!("{what} is 0; give a size such as 10G")));
    }
    if size % SECTOR != 0 {
        return Err(invalid(format!(
            "{what} {size} is not a multiple of 512 bytes"
        )));
    }
    if size > MAX_VIRTUAL_SIZE {
        return Err(invalid(format!("{what} {size} exceeds the largest volume HLFS supports ({MAX_VIRTUAL_SIZE} bytes, 1 PiB)")));
    }
    Ok(())
}

fn parse_uri(s: &str) -> Result<VolumeUri> {
    VolumeUri::parse(s)
}

fn default_index_root() -> PathBuf {
    if let Some(d) = std::env::var_os("HLFS_INDEX_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("hlfs/index");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache/hlfs/index")
}

/// Whether a volume exists at `dir` (it has at least one segment).
fn volume_exists(backend: &dyn Backend, dir: &str) -> Result<bool> {
    match log::list_segments(backend, dir) {
        Ok(v) => Ok(!v.is_empty()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn require_exists(backend: &dyn Backend, uri: &VolumeUri) -> Result<()> {
    if !volume_exists(backend, &uri.path)? {
        return Err(not_found(format!(
            "volume {} does not exist; create it with `hlfs create {} SIZE`",
            uri.without_snapshot(),
            uri.without_snapshot()
        )));
    }
    Ok(())
}

/// The UUID of the volume in `dir`, from its oldest segment's header.
fn read_uuid(backend: &dyn Backend, uri: &VolumeUri) -> Result<[u8; 16]> {
    let segs = log::list_segments(backend, &uri.path)?;
    for s in segs {
        if let Some((_, _, uuid)) = log::segment_header(backend, &uri.path, s)? {
            return Ok(uuid);
        }
    }
    Err(corrupt(format!(
        "volume {}: no segment has a valid header (creation never completed?); delete it with `hlfs delete` and create it again",
        uri.without_snapshot()
    )))
}

/// Applies one log record to the index and state. Shared by replay and the
/// live write path, so both always agree.
/// `rec_off` and `rec_len` locate the record in segment `seg`.
fn apply(
    index: &Index,
    st: &mut VolState,
    seg: u64,
    rec_off: u64,
    rec_len: u64,
    rec: &Record,
) -> Result<()> {
    match rec {
        Record::SegmentHeader { .. } => {}
        Record::VolumeCreate {
            uuid,
            virtual_size,
            created,
            ..
        } => {
            *st = VolState {
                uuid: *uuid,
                virtual_size: *virtual_size,
                created: *created,
                head: 1,
                next_timeline: 2,
                next_snapshot: 1,
                ..Default::default()
            };
            st.timelines.insert(1, Timeline::default());
        }
        Record::Data { .. } | Record::Batch { .. } => {
            for x in rec.data_extents(rec_off, rec_len) {
                let end = x.data_off + x.crcs.len() as u64 * BLOCK_SIZE;
                let off = u32::try_from(x.data_off)
                    .ok()
                    .filter(|_| end <= u32::MAX as u64)
                    .ok_or_else(|| corrupt("data offset beyond 4 GiB in a segment"))?;
                index.set_extent(
                    st,
                    x.timeline,
                    x.first_block,
                    Extent::data(seg, off, x.crcs),
                )?;
            }
        }
        Record::Zero {
            timeline,
            first_block,
            count,
        } => index.zero_range(st, *timeline, *first_block, *count)?,
        Record::SnapshotCreate {
            id,
            timeline,
            new_head,
            virtual_size,
            secs,
            nsecs,
            name,
        } => {
            st.snapshots.insert(
                *id,
                SnapshotMeta {
                    id: *id,
                    name: name.clone(),
                    timeline: *timeline,
                    secs: *secs,
                    nsecs: *nsecs,
                    virtual_size: *virtual_size,
                },
            );
            st.timelines.insert(
                *new_head,
                Timeline {
                    parent: Some(*timeline),
                    ..Default::default()
                },
            );
            st.head = *new_head;
            st.head_resized = false;
            st.next_timeline = st.next_timeline.max(new_head + 1);
            st.next_snapshot = st.next_snapshot.max(id + 1);
        }
        Record::SnapshotDelete { id } => {
            st.snapshots.remove(id);
            index.collect_hidden(st)?;
        }
        Record::Revert {
            target_id,
            auto_id,
            new_head,
            secs,
            nsecs,
            auto_name,
        } => {
            let target = st
                .snapshots
                .get(target_id)
                .cloned()
                .ok_or_else(|| corrupt(format!("revert to unknown snapshot id {target_id}")))?;
            if *auto_id != 0 {
                st.snapshots.insert(
                    *auto_id,
                    SnapshotMeta {
                        id: *auto_id,
                        name: auto_name.clone(),
                        timeline: st.head,
                        secs: *secs,
                        nsecs: *nsecs,
                        virtual_size: st.virtual_size,
                    },
                );
                st.next_snapshot = st.next_snapshot.max(auto_id + 1);
            }
            st.timelines.insert(
                *new_head,
                Timeline {
                    parent: Some(target.timeline),
                    ..Default::default()
                },
            );
            st.head = *new_head;
            st.head_resized = false;
            st.virtual_size = target.virtual_size;
            st.next_timeline = st.next_timeline.max(new_head + 1);
            index.collect_hidden(st)?;
        }
        // An empty base URI drops the base (a flattened clone).
        Record::SetBase(b) => st.base = (!b.uri.is_empty()).then(|| b.clone()),
        Record::Resize { virtual_size } => {
            st.virtual_size = *virtual_size;
            st.head_resized = true;
        }
    }
    Ok(())
}

/// Where replay ended.
struct ReplayEnd {
    last: (u64, u64),
    next_seq: u64,
    max_segment: u64,
}

fn replay(
    backend: &dyn Backend,
    dir: &str,
    uuid: &[u8; 16],
    index: &Index,
    st: &mut VolState,
    from: LogPos,
    salvage: bool,
) -> Result<ReplayEnd> {
    let layout = log::layout(backend, dir, uuid, from.segment)?;
    let mut end = ReplayEnd {
        last: (from.segment, from.offset),
        next_seq: from.next_seq,
        max_segment: layout.max_segment,
    };
    if layout.chain.is_empty() && from.segment != 0 {
        return Err(corrupt(format!(
            "{dir}: the log after segment {} is missing",
            format::segment_name(from.segment)
        )));
    }
    for (seg, bound) in layout.chain {
        let start = if seg == from.segment { from.offset } else { 0 };
        let mut f = |s: Scanned| -> Result<()> {
            if s.seq < end.next_seq && !(s.seq == 0 && end.next_seq == 0) {
                return Err(corrupt(format!(
                    "{dir}: segment {} offset {}: sequence {} goes backwards (expected at least {})",
                    format::segment_name(s.segment),
                    s.offset,
                    s.seq,
                    end.next_seq
                )));
            }
            end.next_seq = s.seq + 1;
            apply(index, st, s.segment, s.offset, s.len, &s.record)
        };
        let valid = if salvage {
            log::scan_segment_salvaging(backend, dir, seg, start, bound, &mut f)?
        } else {
            log::scan_segment(backend, dir, seg, start, bound, &mut f)?
        };
        end.last = (seg, valid);
    }
    Ok(end)
}

/// Closing writes a checkpoint once this much log follows the newest one
/// (or `checkpoint_every`, if smaller).
const CLOSE_CHECKPOINT_BYTES: u64 = 64 << 20;

/// Bytes of log from `from` to `end` (segment, valid length), following the
/// segment chain.
fn log_bytes_after(
    backend: &dyn Backend,
    dir: &str,
    uuid: &[u8; 16],
    from: LogPos,
    end: (u64, u64),
) -> Result<u64> {
    let layout = log::layout(backend, dir, uuid, from.segment)?;
    let mut total = 0;
    for (seg, bound) in layout.chain {
        let len = match bound {
            Some(b) => b,
            None if seg == end.0 => end.1,
            None => backend.open_read(&log::segment_path(dir, seg))?.len()?,
        };
        let start = if seg == from.segment { from.offset } else { 0 };
        total += len.saturating_sub(start);
    }
    Ok(total)
}

/// Whether the log still runs through `pos` (a position a cached index
/// recorded): its segment is in the chain and holds at least `pos.offset`
/// valid bytes.
fn log_passes_through(
    backend: &dyn Backend,
    dir: &str,
    uuid: &[u8; 16],
    pos: LogPos,
) -> Result<bool> {
    if pos.segment == 0 {
        return Ok(true);
    }
    let layout = match log::layout(backend, dir, uuid, pos.segment) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::Corrupt => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(match layout.chain.first() {
        Some((s, Some(bound))) if *s == pos.segment => *bound >= pos.offset,
        Some((s, None)) if *s == pos.segment => {
            backend.open_read(&log::segment_path(dir, *s))?.len()? >= pos.offset
        }
        _ => false,
    })
}

/// A fingerprint of the log just before `pos`: the CRC of up to 4 KiB
/// before it in its segment (the end of the last record, with its sequence
/// number and checksum). A cached index whose log took another course (a
/// restored backup, a broken lock) differs here even where positions agree.
fn log_tail(backend: &dyn Backend, dir: &str, pos: LogPos) -> Result<Vec<u8>> {
    if pos.segment == 0 || pos.offset == 0 {
        return Ok(Vec::new());
    }
    let n = pos.offset.min(4096);
    let mut buf = vec![0u8; n as usize];
    backend
        .open_read(&log::segment_path(dir, pos.segment))?
        .read_exact_at(pos.offset - n, &mut buf)?;
    Ok(crc32c::crc32c(&buf).to_le_bytes().to_vec())
}

/// Clone references kept in the base volume's `clones/` directory.
fn clones_dir(dir: &str) -> String {
    format!("{dir}/clones")
}

fn clone_ref_name(child: &str) -> String {
    // FNV-1a, enough to give each child its own file name.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in child.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// (snapshot id, child URI) for every registered clone of the volume at `dir`.
fn read_clone_refs(backend: &dyn Backend, dir: &str) -> Result<Vec<(u64, String, String)>> {
    let cd = clones_dir(dir);
    let names = match backend.list(&cd) {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for n in names {
        let path = format!("{cd}/{n}");
        let f = backend.open_read(&path)?;
        let mut b = vec![0u8; f.len()?.min(8192) as usize];
        f.read_exact_at(0, &mut b)?;
        let text = String::from_utf8_lossy(&b);
        let mut id = None;
        let mut child = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("snapshot_id=") {
                id = v.parse::<u64>().ok();
            } else if let Some(v) = line.strip_prefix("child=") {
                child = Some(v.to_string());
            }
        }
        if let (Some(id), Some(child)) = (id, child) {
            out.push((id, child, path));
        }
    }
    Ok(out)
}

/// Clones of the volume at `dir` that still exist and still use it, as
/// (snapshot id, child URI). Stale references are removed on the way.
fn live_clones(backend: &dyn Backend, dir: &str, base_uri: &str) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for (id, child, path) in read_clone_refs(backend, dir)? {
        let alive = match VolumeUri::parse(&child).and_then(|u| Ok((backend::for_uri(&u)?, u))) {
            // Existence is enough: deleting a clone (`hlfs delete`)
            // removes its reference, so a reference to a volume
            // that still exists is live. Opening every clone here would make
            // listing snapshots cost a full open per clone.
            Ok((b, u)) => volume_exists(&*b, &u.path).unwrap_or(true),
            // A backend we cannot reach: assume the clone still needs us.
            Err(_) => true,
        };
        if alive {
            out.push((id, child));
        } else {
            tracing::info!(
                "dropping stale clone reference {path} ({child} no longer uses {base_uri})"
            );
            let _ = backend.delete(&path);
        }
    }
    Ok(out)
}

impl Volume {
    /// Creates a new, empty volume of `size` bytes.
    pub fn create(uri: &str, size: u64) -> Result<()> {
        Self::create_inner(uri, size, None)
    }

    fn create_inner(uri: &str, size: u64, base: Option<BaseRef>) -> Result<()> {
        let u = parse_uri(uri)?;
        if u.snapshot.is_some() {
            return Err(invalid(format!(
                "{uri}: a new volume cannot name a snapshot; drop the %{}",
                u.snapshot.as_deref().unwrap_or("")
            )));
        }
        check_size(size, "volume size")?;
        let backend = backend::for_uri(&u)?;
        if volume_exists(&*backend, &u.path)? {
            return Err(Error::new(
                ErrorKind::Exists,
                format!("volume {u} already exists; delete it first or pick another name"),
            ));
        }
        // Segment 1 is written under a temporary name and renamed into
        // place, so a crash during creation leaves a whole volume (with its
        // base, for a clone) or none, never a log cut before its
        // VolumeCreate or SetBase record. Temporaries of crashed creations
        // are removed here (a racing creator then fails its rename).
        let creating = format!("{}.creating-", format::segment_name(1));
        if backend.exists(&u.path)? {
            for n in backend.list(&u.path).unwrap_or_default() {
                if n.starts_with(&creating) {
                    let _ = backend.delete(&format!("{}/{n}", u.path));
                }
            }
        }
        if backend.exists(&u.path)?
            && backend
                .list(&u.path)
                .map(|l| !l.is_empty())
                .unwrap_or(false)
        {
            return Err(Error::new(
                ErrorKind::Exists,
                format!(
                    "{u}: {} exists and is not an empty directory; pick another name",
                    u.path
                ),
            ));
        }
        let uuid: [u8; 16] = rand::random();
        let mut buf = Vec::new();
        let created = log::now().0;
        format::encode_record(
            &mut buf,
            0,
            &Record::SegmentHeader {
                uuid,
                segment: 1,
                prev_segment: 0,
                prev_valid_len: 0,
                created,
            },
            &[],
        );
        format::encode_record(
            &mut buf,
            1,
            &Record::VolumeCreate {
                uuid,
                virtual_size: size,
                block_size: BS as u32,
                created,
            },
            &[],
        );
        if let Some(b) = base {
            format::encode_record(&mut buf, 2, &Record::SetBase(b), &[]);
        }
        let tmp = format!("{}/{creating}{:08x}", u.path, rand::random::<u32>());
        let mut f = backend.create(&tmp)?;
        f.append(&buf)?;
        f.close()?;
        if let Err(e) = backend.rename(&tmp, &log::segment_path(&u.path, 1)) {
            let _ = backend.delete(&tmp);
            return Err(match e.kind() {
                // A concurrent creator may also have removed our temporary
                // as a leftover: either way, the other one won.
                ErrorKind::Exists | ErrorKind::NotFound => Error::new(
                    ErrorKind::Exists,
                    format!("volume {u} already exists (created concurrently)"),
                ),
                _ => e,
            });
        }
        tracing::info!("created volume {u} ({size} bytes)");
        Ok(())
    }

    /// Opens a volume. With `%snap`: read-only, the snapshot's contents;
    /// read-write, the volume is first reverted to the snapshot.
    pub fn open(uri: &str, opts: &OpenOptions) -> Result<Volume> {
        if !opts.read_only && !(64 << 10..=1 << 30).contains(&opts.segment_size) {
            return Err(invalid(format!(
                "segment size {} is out of range; use 64 KiB to 1 GiB",
                opts.segment_size
            )));
        }
        let u = parse_uri(uri)?;
        let backend = backend::for_uri(&u)?;
        require_exists(&*backend, &u)?;
        let name = u.without_snapshot().to_string();
        let lock = if opts.read_only {
            None
        } else {
            Some(WriteLock::acquire(backend.clone(), &u.path, &name)?)
        };
        let uuid = read_uuid(&*backend, &u)?;
        let dir = u.path.clone();

        let mut from_cache = false;
        let (index, mut st, from) = if opts.read_only {
            // Search the newest checkpoint in place; only the log after it
            // is replayed, into memory.
            let ckpt = if opts.rebuild_index {
                None
            } else {
                checkpoint::open_newest(&*backend, &dir, &uuid)?
            };
            let (st, from) = match &ckpt {
                Some(c) => (c.state.clone(), c.pos),
                None => (VolState::default(), LogPos::default()),
            };
            (Index::layered(ckpt), st, from)
        } else {
            let idir = match (&opts.index_root, backend.local_index_dir(&dir)) {
                (Some(root), _) => root.join(hex(&uuid)),
                (None, Some(d)) => d,
                (None, None) => default_index_root().join(hex(&uuid)),
            };
            if opts.rebuild_index && idir.exists() {
                std::fs::remove_dir_all(&idir)
                    .map_err(|e| Error::io(format!("removing index {}", idir.display()), e))?;
            }
            std::fs::create_dir_all(&idir).map_err(|e| {
                Error::io(format!("creating index directory {}", idir.display()), e)
            })?;
            let index = match Index::open(&idir) {
                // The index is a cache (the write lock is ours): a damaged
                // one, e.g. after a crash or a full disk interrupted sled,
                // is rebuilt from the checkpoints and the log.
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    tracing::warn!(
                        "volume {name}: its index {} is damaged ({e}); rebuilding it from the checkpoints and the log",
                        idir.display()
                    );
                    std::fs::remove_dir_all(&idir)
                        .and_then(|()| std::fs::create_dir_all(&idir))
                        .map_err(|e| {
                            Error::io(format!("replacing the damaged index {}", idir.display()), e)
                        })?;
                    Index::open(&idir)?
                }
                r => r?,
            };
            let clean = index.meta_get("clean")?.as_deref() == Some(&[1u8][..])
                && index.meta_get("uuid")?.as_deref() == Some(&uuid[..]);
            let cached = if clean && !opts.rebuild_index {
                match (index.meta_get("state")?, index.meta_get("pos")?) {
                    (Some(s), Some(p)) => VolState::decode(&s).ok().zip(LogPos::decode(&p).ok()),
                    _ => None,
                }
            } else {
                None
            };
            // A cached index is only a cache: another host may have written
            // the volume since (HDFS), or the log may have been restored
            // from elsewhere. Use it only if the log still runs through the
            // position it recorded.
            let tail = index.meta_get("tail")?;
            let cached = match cached {
                Some((st, pos))
                    if log_passes_through(&*backend, &dir, &uuid, pos)?
                        && match tail.as_deref() {
                            None => true,
                            Some(t) => log_tail(&*backend, &dir, pos).ok().as_deref() == Some(t),
                        } =>
                {
                    Some((st, pos))
                }
                Some(_) => {
                    tracing::info!("volume {name}: the cached index does not match the log; reloading from checkpoint and log");
                    None
                }
                None => None,
            };
            let cached = match cached {
                Some(x) => match index.load_cached() {
                    Ok(()) => Some(x),
                    Err(e) if e.kind() == ErrorKind::Corrupt => {
                        tracing::warn!("volume {name}: the cached index is damaged ({e}); reloading from checkpoint and log");
                        None
                    }
                    Err(e) => return Err(e),
                },
                None => None,
            };
            from_cache = cached.is_some();
            let (st, from) = match cached {
                Some(x) => x,
                None => {
                    if clean || index.meta_get("uuid")?.is_some() {
                        tracing::info!("volume {name}: index was not closed cleanly; reloading from checkpoint and log");
                    }
                    index.clear()?;
                    Self::load_checkpoint(&*backend, &dir, &uuid, &index, opts)?
                }
            };
            index.meta_put("uuid", &uuid)?;
            index.meta_put("clean", &[0])?;
            index.flush()?;
            (index, st, from)
        };

        let salvage = opts.rebuild_index;
        let end = match replay(&*backend, &dir, &uuid, &index, &mut st, from, salvage) {
            Err(e) if from_cache && e.kind() == ErrorKind::Corrupt => {
                // The log after the cached position does not fit it: drop
                // the cache and replay from the newest checkpoint instead.
                tracing::info!(
                    "volume {name}: the cached index does not fit the log ({e}); reloading"
                );
                index.clear()?;
                let (s, f) = Self::load_checkpoint(&*backend, &dir, &uuid, &index, opts)?;
                st = s;
                replay(&*backend, &dir, &uuid, &index, &mut st, f, salvage)?
            }
            Err(e) if e.kind() == ErrorKind::Corrupt && !salvage && !opts.read_only => {
                return Err(corrupt(format!(
                    "{e}; `hlfs fsck --rebuild-index {name}` rebuilds the index from every intact record"
                )));
            }
            r => r?,
        };
        if st.uuid != uuid {
            return Err(corrupt(format!(
                "volume {name}: the log does not start with a volume record"
            )));
        }
        let mut writer = (!opts.read_only).then(|| {
            LogWriter::new(
                backend.clone(),
                &dir,
                uuid,
                opts.segment_size,
                end.max_segment + 1,
                end.last,
                end.next_seq,
            )
        });
        if let Some(w) = writer.as_mut() {
            w.set_direct(opts.direct_io && backend.can_bypass_cache());
            // Log bytes after the newest checkpoint, across earlier sessions
            // too: they decide when the next checkpoint is due.
            let ckpt = checkpoint::newest_position(&*backend, &dir, &uuid)?.unwrap_or_default();
            w.since_checkpoint = log_bytes_after(&*backend, &dir, &uuid, ckpt, end.last)?;
            if !backend.sync_is_durable() {
                // HDFS: a writer whose lock was broken (`hlfs unlock`) may
                // still run on another host. Recover the leases of segments
                // past the end of the log (its open one, if any: its next
                // append or flush then fails) and take the next segment
                // number (its next segment create fails).
                for s in log::list_segments(&*backend, &dir)? {
                    if s > end.last.0 {
                        if let Err(e) = backend.recover_lease(&log::segment_path(&dir, s)) {
                            tracing::warn!(
                                "volume {name}: recovering the lease of segment {s}: {e}"
                            );
                        }
                    }
                }
                w.claim()?;
            }
        }
        let active_segment = writer
            .as_ref()
            .map(|w| w.active_segment.clone())
            .unwrap_or_else(|| Arc::new(AtomicU64::new(u64::MAX)));

        let base = match &st.base {
            None => None,
            Some(b) => {
                let bu = format!("{}%{}", b.uri, b.snapshot);
                let bv = Volume::open(
                    &bu,
                    // Only the index location carries over: a rebuild of the
                    // clone must not replay its base's whole log too.
                    &OpenOptions {
                        read_only: true,
                        index_root: opts.index_root.clone(),
                        ..Default::default()
                    },
                )
                .map_err(|e| e.context(format!("opening base {bu} of clone {name}")))?;
                if bv.state.read().uuid != b.volume_uuid {
                    return Err(corrupt(format!(
                        "clone {name}: the volume at {} is not the one it was cloned from (UUID differs)",
                        b.uri
                    )));
                }
                Some(Arc::new(bv))
            }
        };

        let view = match (&u.snapshot, opts.read_only) {
            (Some(s), true) => {
                let snap = st
                    .snapshot_by_name(s)
                    .ok_or_else(|| Self::no_snapshot(&st, &name, s))?;
                Some((snap.timeline, snap.virtual_size))
            }
            _ => None,
        };
        let direct = opts.direct_io && backend.can_bypass_cache();
        let vol = Volume {
            uri: u.clone(),
            backend,
            dir,
            read_only: opts.read_only,
            view,
            index: RwLock::new(Arc::new(index)),
            state: RwLock::new(st),
            writer: Mutex::new(writer),
            active_segment,
            readers: Mutex::new(HashMap::new()),
            direct: AtomicBool::new(direct),
            base,
            lock: Mutex::new(lock),
            opts: opts.clone(),
            closed: AtomicBool::new(false),
            view_generation: AtomicU64::new(0),
            reloading: Mutex::new(()),
            background: Mutex::new(None),
            checkpoint_retry: Arc::new(AtomicBool::new(false)),
        };
        if let (Some(s), false) = (&u.snapshot, opts.read_only) {
            vol.snapshot_revert(s)?;
        }
        Ok(vol)
    }

    fn no_snapshot(st: &VolState, vol: &str, name: &str) -> Error {
        let mut names: Vec<&str> = st.snapshots.values().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        let list = if names.is_empty() {
            "it has none".to_string()
        } else {
            format!("it has: {}", names.join(", "))
        };
        not_found(format!("volume {vol} has no snapshot {name:?}; {list}"))
    }

    fn load_checkpoint(
        backend: &dyn Backend,
        dir: &str,
        uuid: &[u8; 16],
        index: &Index,
        opts: &OpenOptions,
    ) -> Result<(VolState, LogPos)> {
        if opts.rebuild_index {
            let base = cleaner::log_base(backend, dir, uuid)?;
            if base == LogPos::default() {
                return Ok((VolState::default(), base));
            }
            // The cleaner retired the log's first segments: the oldest
            // checkpoint with an intact log after it is the rebuild's base.
            tracing::warn!(
                "{dir}: the log's start was cleaned; rebuilding from the checkpoint at segment {}",
                base.segment
            );
            for seq in checkpoint::list(backend, dir)? {
                if checkpoint::position(backend, dir, seq, uuid).ok() == Some(base) {
                    let l = checkpoint::load(backend, dir, seq, uuid, index)?;
                    return Ok((l.state, l.pos));
                }
            }
        }
        if let Some(l) = checkpoint::load_newest(backend, dir, uuid, index)? {
            return Ok((l.state, l.pos));
        }
        Ok((VolState::default(), LogPos::default()))
    }

    /// Switches between bypassing the host's page cache and using it, as
    /// `OpenOptions::direct_io` chose at open (QEMU reopening a drive with
    /// another cache mode). The active segment is sealed, so that every
    /// segment is written one way throughout; readers reopen their files.
    /// Does nothing where the backend cannot bypass the cache.
    pub fn set_direct_io(&self, on: bool) -> Result<()> {
        let on = on && self.backend.can_bypass_cache();
        if self.direct.load(Ordering::Acquire) == on {
            return Ok(());
        }
        if !self.read_only {
            let mut g = self.writer.lock();
            if let Some(w) = g.as_mut() {
                w.seal()?;
                w.set_direct(on);
            }
        }
        self.direct.store(on, Ordering::Release);
        self.readers.lock().clear();
        Ok(())
    }

    /// Whether segments bypass the host's page cache (`set_direct_io`).
    pub fn is_direct_io(&self) -> bool {
        self.direct.load(Ordering::Acquire)
    }

    /// Whether blocks this volume never wrote read from a base volume.
    pub fn is_clone(&self) -> bool {
        self.state.read().base.is_some()
    }

    /// The URI this volume was opened with (canonical form).
    pub fn uri(&self) -> String {
        self.uri.to_string()
    }

    /// Whether the volume is open read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Virtual size in bytes.
    pub fn size(&self) -> u64 {
        match self.view {
            Some((_, size)) => size,
            None => self.state.read().virtual_size,
        }
    }

    fn check_io(&self, offset: u64, len: u64, size: u64) -> Result<()> {
        if offset % SECTOR != 0 || len % SECTOR != 0 {
            return Err(invalid(format!(
                "{}: I/O at offset {offset}, length {len} is not aligned to 512 bytes",
                self.uri
            )));
        }
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(invalid(format!(
                "{}: I/O at offset {offset}, length {len} goes past the end of the volume ({size} bytes)",
                self.uri
            ))),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                format!("{} is open read-only", self.uri),
            ));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("{} is closed", self.uri),
            ));
        }
        Ok(())
    }

    fn reader(&self, seg: u64) -> Result<Arc<dyn ReadFile>> {
        if let Some(r) = self.readers.lock().get(&seg) {
            return Ok(r.clone());
        }
        let open = |p: &str| {
            if self.direct.load(Ordering::Acquire) {
                self.backend.open_read_direct(p)
            } else {
                self.backend.open_read(p)
            }
        };
        let r = match open(&log::segment_path(&self.dir, seg)) {
            // The cleaner retired it after this read resolved its block.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match cleaner::find_retired(&*self.backend, &self.dir, seg)? {
                    Some(p) => open(&p)?,
                    None => return Err(e),
                }
            }
            r => r?,
        };
        let mut m = self.readers.lock();
        if m.len() >= 256 {
            m.clear();
        }
        m.insert(seg, r.clone());
        Ok(r)
    }

    /// Reads `buf.len()` bytes of segment `seg` at `off`, from the writer's
    /// memory if they are still there, else from the backend.
    fn read_log(&self, seg: u64, off: u64, buf: &mut [u8], held: Option<&LogWriter>) -> Result<()> {
        if self.active_segment.load(Ordering::SeqCst) == seg {
            let found = match held {
                Some(w) => w.read_mem(seg, off, buf),
                None => self
                    .writer
                    .lock()
                    .as_ref()
                    .is_some_and(|w| w.read_mem(seg, off, buf)),
            };
            if found {
                return Ok(());
            }
        }
        let r = match self.reader(seg)?.read_exact_at(off, buf) {
            // A cached handle to a segment the cleaner has since retired: on
            // backends that read by path (HDFS, memory) it no longer finds
            // the file. Look the segment up again (under its retired name).
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.readers.lock().remove(&seg);
                self.reader(seg)?.read_exact_at(off, buf)
            }
            r => r,
        };
        r.map_err(|e| {
            e.context(format!(
                "{}: reading segment {} at offset {off}",
                self.uri,
                format::segment_name(seg)
            ))
        })
    }

    fn index(&self) -> Arc<Index> {
        self.index.read().clone()
    }

    /// A read-only view loads the map once, at open. If the volume's writer
    /// cleans it meanwhile, blocks move to new segments and the old ones
    /// are deleted after the grace period (design.md §13); the view then
    /// fails with `NotFound` (a segment, or the checkpoint it searches).
    /// This loads the newest checkpoint and log again, as a new open would.
    /// A snapshot view reads the same data afterwards (a snapshot never
    /// changes); a view of the head sees the head as of the reload.
    fn reload_view(&self, seen_generation: u64) -> Result<()> {
        let _g = self.reloading.lock();
        if self.view_generation.load(Ordering::Acquire) != seen_generation {
            return Ok(()); // another reader reloaded meanwhile
        }
        let uuid = self.state.read().uuid;
        let ckpt = checkpoint::open_newest(&*self.backend, &self.dir, &uuid)?;
        let (mut st, from) = match &ckpt {
            Some(c) => (c.state.clone(), c.pos),
            None => (VolState::default(), LogPos::default()),
        };
        let index = Index::layered(ckpt);
        replay(
            &*self.backend,
            &self.dir,
            &uuid,
            &index,
            &mut st,
            from,
            false,
        )?;
        if let (Some((tl, _)), Some(name)) = (self.view, &self.uri.snapshot) {
            if st.snapshot_by_name(name).map(|s| s.timeline) != Some(tl) {
                return Err(not_found(format!(
                    "{}: snapshot {name:?} was deleted while this view was open",
                    self.uri
                )));
            }
        }
        let mut state = self.state.write(); // no resolve runs meanwhile
        *self.index.write() = Arc::new(index);
        *state = st;
        self.readers.lock().clear();
        self.view_generation.fetch_add(1, Ordering::AcqRel);
        tracing::info!(
            "{}: reloaded the read-only view (its writer cleaned the log)",
            self.uri
        );
        Ok(())
    }

    /// Resolves blocks `[first, first+n)` through the timeline chain.
    fn resolve(&self, first: u64, n: u64) -> Result<Vec<Option<Entry>>> {
        let st = self.state.read();
        let index = self.index();
        let tl = self.view.map(|v| v.0).unwrap_or(st.head);
        let chain = st.chain(tl);
        index.resolve(&chain, first, n)
    }

    /// Reads whole blocks `[first, first + buf.len()/BS)` into `buf`. A
    /// read-only view whose segments the writer's cleaner deleted reloads
    /// and reads again (`reload_view`).
    fn read_blocks(&self, first: u64, buf: &mut [u8], held: Option<&LogWriter>) -> Result<()> {
        if !self.read_only {
            return self.read_blocks_once(first, buf, held);
        }
        let generation = self.view_generation.load(Ordering::Acquire);
        match self.read_blocks_once(first, buf, held) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.reload_view(generation)
                    .map_err(|r| r.context(format!("{e}; reloading the view")))?;
                self.read_blocks_once(first, buf, held)
            }
            r => r,
        }
    }

    fn read_blocks_once(&self, first: u64, buf: &mut [u8], held: Option<&LogWriter>) -> Result<()> {
        let n = (buf.len() / BS) as u64;
        let entries = self.resolve(first, n)?;
        let mut i = 0usize;
        while i < entries.len() {
            match entries[i] {
                Some(Entry::Data { seg, off, .. }) => {
                    // Coalesce blocks stored back to back in the same segment.
                    let mut j = i + 1;
                    while j < entries.len() {
                        match entries[j] {
                            Some(Entry::Data {
                                seg: s2, off: o2, ..
                            }) if s2 == seg && o2 as u64 == off as u64 + ((j - i) * BS) as u64 => {
                                j += 1
                            }
                            _ => break,
                        }
                    }
                    // Verify in a private buffer, then copy out: the caller's
                    // buffer may be guest memory that changes under us, or
                    // shared by concurrent reads (qemu-img bench does that).
                    SCRATCH.with_borrow_mut(|scratch| -> Result<()> {
                        // Page-aligned, so an O_DIRECT segment reads straight into it.
                        let scratch = page_aligned(scratch, (j - i) * BS);
                        self.read_log(seg, off as u64, scratch, held)?;
                        for k in i..j {
                            let Some(Entry::Data { seg, off, crc }) = entries[k] else { unreachable!() };
                            let got = crc32c::crc32c(&scratch[(k - i) * BS..(k - i + 1) * BS]);
                        if got != crc {
                            return Err(corrupt(format!(
                                "{}: block {} (segment {} offset {off}) fails its checksum; run `hlfs fsck`",
                                self.uri,
                                first + k as u64,
                                format::segment_name(seg)
                            )));
                        }
                        }
                        buf[i * BS..j * BS].copy_from_slice(scratch);
                        Ok(())
                    })?;
                    i = j;
                }
                Some(Entry::Zero) => {
                    buf[i * BS..(i + 1) * BS].fill(0);
                    i += 1;
                }
                None => {
                    let mut j = i + 1;
                    while j < entries.len() && entries[j].is_none() {
                        j += 1;
                    }
                    self.read_base(first + i as u64, &mut buf[i * BS..j * BS])?;
                    i = j;
                }
            }
        }
        Ok(())
    }

    /// The base this volume reads through, if it is (still) a clone: a
    /// flatten drops the base while the volume stays open.
    fn live_base(&self) -> Option<&Arc<Volume>> {
        self.base
            .as_ref()
            .filter(|_| self.state.read().base.is_some())
    }

    /// Reads blocks that no timeline of this volume maps: from the base, or zeros.
    fn read_base(&self, first: u64, buf: &mut [u8]) -> Result<()> {
        buf.fill(0);
        let Some(base) = self.live_base() else {
            return Ok(());
        };
        // Round up: a base whose size is not a multiple of the block size
        // still holds its last, partial block whole in the log (the bytes
        // past its end read as zeros), so the clone reads it from there.
        let base_blocks = base.size().div_ceil(BLOCK_SIZE);
        if first >= base_blocks {
            return Ok(());
        }
        let n = ((buf.len() / BS) as u64).min(base_blocks - first) as usize;
        base.read_blocks(first, &mut buf[..n * BS], None)
    }

    /// Reads `buf.len()` bytes at `offset`. Offset and length must be
    /// multiples of 512 and inside the volume.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_io(offset, buf.len() as u64, self.size())?;
        self.read_inner(offset, buf, None)
    }

    fn read_inner(&self, offset: u64, buf: &mut [u8], held: Option<&LogWriter>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let head_skip = (offset % BLOCK_SIZE) as usize;
        let end = offset + buf.len() as u64;
        if head_skip == 0 && end % BLOCK_SIZE == 0 {
            return self.read_blocks(offset / BLOCK_SIZE, buf, held);
        }
        let first = offset / BLOCK_SIZE;
        let last = end.div_ceil(BLOCK_SIZE);
        let mut tmp = vec![0u8; ((last - first) as usize) * BS];
        self.read_blocks(first, &mut tmp, held)?;
        buf.copy_from_slice(&tmp[head_skip..head_skip + buf.len()]);
        Ok(())
    }

    /// Writes `data` at `offset`. Offset and length must be multiples of 512
    /// and inside the volume. Whole 4 KiB blocks are written as they are;
    /// only a partial block at either end is read, merged and rewritten.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_vectored(offset, &[data])
    }

    /// Writes the concatenation of `parts` at `offset`, like `write`. Whole
    /// blocks are gathered straight into the log's tail (one copy, which is
    /// also what the checksums are taken from), so a caller with a
    /// scatter-gather list (QEMU) needs no buffer of its own.
    pub fn write_vectored(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
        self.check_writable()?;
        let mut wguard = self.writer.lock();
        let size = self.state.read().virtual_size;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.check_io(offset, len as u64, size)?;
        if len == 0 {
            return Ok(());
        }
        let w = wguard
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::ReadOnly, "read-only"))?;
        let end = offset + len as u64;
        let first = offset / BLOCK_SIZE;
        let aligned = offset % BLOCK_SIZE == 0 && end % BLOCK_SIZE == 0;
        let (owned, owned_ref);
        let blocks: &[&[u8]] = if aligned {
            parts
        } else {
            let last = end.div_ceil(BLOCK_SIZE);
            let mut b = vec![0u8; ((last - first) as usize) * BS];
            let bsize = size.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
            // Read-modify-write of the partial edge blocks only.
            let readable = |blk: u64| blk * BLOCK_SIZE < bsize;
            if offset % BLOCK_SIZE != 0 && readable(first) {
                self.read_blocks(first, &mut b[..BS], Some(w))?;
            }
            if end % BLOCK_SIZE != 0
                && readable(last - 1)
                && (last - 1 != first || offset % BLOCK_SIZE == 0)
            {
                let l = b.len();
                self.read_blocks(last - 1, &mut b[l - BS..], Some(w))?;
            }
            let mut s = (offset - first * BLOCK_SIZE) as usize;
            for p in parts {
                b[s..s + p.len()].copy_from_slice(p);
                s += p.len();
            }
            owned = b;
            owned_ref = [owned.as_slice()];
            &owned_ref
        };
        let head = self.state.read().head;
        for (ci, chunk) in split_parts(blocks, MAX_BLOCKS_PER_RECORD as usize * BS)
            .iter()
            .enumerate()
        {
            let first_block = first + (ci * MAX_BLOCKS_PER_RECORD as usize) as u64;
            let (seg, rec_off, rec_len, rec) = w.append_data_parts(head, first_block, chunk)?;
            let mut st = self.state.write();
            apply(&self.index(), &mut st, seg, rec_off, rec_len, &rec)?;
        }
        // A full buffer was handed to the write pipeline: write it out
        // here, with the writer free for other requests meanwhile.
        let io = w.pending_io();
        drop(wguard);
        match io {
            Some(io) => io.drain(),
            None => Ok(()),
        }
    }

    /// `write_vectored` if it can complete at once, without I/O and without
    /// waiting for a lock: the write is block-aligned, fits one record, and
    /// the log takes it into its in-memory tail without a push. Returns
    /// false, having changed nothing, when the caller should use
    /// `write_vectored` instead (QEMU's driver then hands the request to a
    /// worker thread; done here, it is a copy with no thread hop).
    pub fn try_write_vectored(&self, offset: u64, parts: &[&[u8]]) -> Result<bool> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if self.read_only
            || self.closed.load(Ordering::Acquire)
            || len == 0
            || offset % BLOCK_SIZE != 0
            || len % BLOCK_SIZE != 0
            || len > MAX_BLOCKS_PER_RECORD as u64 * BLOCK_SIZE
        {
            return Ok(false);
        }
        let Some(mut wguard) = self.writer.try_lock() else {
            return Ok(false);
        };
        let Some(w) = wguard.as_mut() else {
            return Ok(false);
        };
        let Some(mut st) = self.state.try_write() else {
            return Ok(false);
        };
        self.check_io(offset, len, st.virtual_size)?;
        let Some((seg, rec_off, rec_len, rec)) =
            w.try_append_data_parts(st.head, offset / BLOCK_SIZE, parts)
        else {
            return Ok(false);
        };
        apply(&self.index(), &mut st, seg, rec_off, rec_len, &rec)?;
        Ok(true)
    }

    /// Reads into the concatenation of `bufs` from `offset`, like `read`.
    /// More than one buffer is read through a per-thread buffer (reused, so
    /// a caller issuing many requests does not allocate for each).
    pub fn read_vectored(&self, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        if let [one] = bufs {
            return self.read(offset, one);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        GATHER.with_borrow_mut(|g| -> Result<()> {
            g.clear();
            g.resize(len, 0);
            self.read(offset, g)?;
            let mut at = 0;
            for b in bufs.iter_mut() {
                b.copy_from_slice(&g[at..at + b.len()]);
                at += b.len();
            }
            if g.capacity() > GATHER_KEEP {
                *g = Vec::new();
            }
            Ok(())
        })
    }

    /// Makes `[offset, offset+len)` read as zeros and releases its blocks
    /// (after the cleaner runs). Partial blocks at the ends are written as zeros.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        let size = self.state.read().virtual_size;
        self.check_io(offset, len, size)?;
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let first_full = offset.div_ceil(BLOCK_SIZE);
        let end_full = if end == size {
            end.div_ceil(BLOCK_SIZE)
        } else {
            end / BLOCK_SIZE
        };
        if first_full >= end_full {
            return self.write(offset, &vec![0u8; len as usize]);
        }
        if offset < first_full * BLOCK_SIZE {
            self.write(
                offset,
                &vec![0u8; (first_full * BLOCK_SIZE - offset) as usize],
            )?;
        }
        let tail_start = (end_full * BLOCK_SIZE).min(end);
        if tail_start < end {
            self.write(tail_start, &vec![0u8; (end - tail_start) as usize])?;
        }
        let mut wguard = self.writer.lock();
        let w = wguard
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::ReadOnly, "read-only"))?;
        let head = self.state.read().head;
        let rec = Record::Zero {
            timeline: head,
            first_block: first_full,
            count: end_full - first_full,
        };
        let (seg, off, _) = w.append(&rec, &[])?;
        {
            let mut st = self.state.write();
            apply(&self.index(), &mut st, seg, off, 0, &rec)?;
        }
        let io = w.pending_io();
        drop(wguard);
        match io {
            Some(io) => io.drain(),
            None => Ok(()),
        }
    }

    /// Same as `write_zeroes`: discarded ranges read as zeros.
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }

    /// Returns once every write that completed before the call is durable:
    /// pending log bytes are appended and the active segment is synced (on
    /// backends whose sync is not durable, HDFS, the segment is sealed). The
    /// index needs no flush: replay rebuilds it from the log.
    ///
    /// Group commit: the writer is held only to hand the log's tail to the
    /// write pipeline; the append and the sync run after it is let go, and
    /// concurrent flushes share one sync (`pipeline`).
    pub fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let pending = {
            let mut wguard = self.writer.lock();
            let Some(w) = wguard.as_mut() else {
                return Ok(());
            };
            w.begin_flush()?
        };
        if let Some(p) = pending {
            p.finish()?;
        }
        let mut wguard = self.writer.lock();
        let Some(w) = wguard.as_mut() else {
            return Ok(());
        };
        if w.since_checkpoint >= self.opts.checkpoint_every
            || self.checkpoint_retry.load(Ordering::Acquire)
        {
            // The flush's promise is kept once the log is durable; a
            // checkpoint only shortens the replay of the next open. If it
            // cannot be written (a full disk), the next flush tries again.
            if let Err(e) = self.checkpoint_periodic(w) {
                tracing::warn!("{}: checkpoint not written, will retry: {e}", self.uri);
            }
        }
        Ok(())
    }

    /// The checkpoint a flush writes every `checkpoint_every` bytes of log.
    /// Where the backend allows background I/O (`close_in_background`), the
    /// writer is held only to copy the map and the state; a thread of its
    /// own writes the checkpoint from the copy and then feeds sled, while
    /// writes go on. Elsewhere (the test backends, whose crash tests need
    /// one order of operations) it is written here.
    fn checkpoint_periodic(&self, w: &mut LogWriter) -> Result<()> {
        if !self.backend.close_in_background() {
            return self.checkpoint_locked(w);
        }
        let mut bg = self.background.lock();
        if bg.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(()); // the last one is still being written
        }
        if let Some(h) = bg.take() {
            let _ = h.join();
        }
        self.sync_visible(w)?;
        let pos = w.position();
        let st = self.state.read().clone();
        let index = self.index();
        let Some(frozen) = index.frozen() else {
            return self.checkpoint_locked(w);
        };
        w.since_checkpoint = 0;
        self.checkpoint_retry.store(false, Ordering::Release);
        let (backend, dir, uri) = (self.backend.clone(), self.dir.clone(), self.uri.to_string());
        let retry = self.checkpoint_retry.clone();
        let h = std::thread::Builder::new()
            .name("hlfs-checkpoint".into())
            .spawn(move || {
                if let Err(e) = checkpoint::write(&*backend, &dir, pos, &st, frozen.iter_all()) {
                    tracing::warn!("{uri}: checkpoint not written, will retry: {e}");
                    retry.store(true, Ordering::Release);
                }
                drop(frozen);
                // Keep sled close to the map, so that a clean close has
                // little left to feed.
                if let Err(e) = index.feed() {
                    tracing::warn!("{uri}: feeding the index: {e}");
                }
            })
            .map_err(|e| Error::io("starting a thread to write a checkpoint", e))?;
        *bg = Some(h);
        Ok(())
    }

    /// Waits for the background checkpoint, if one is being written.
    fn wait_background(&self) {
        if let Some(h) = self.background.lock().take() {
            let _ = h.join();
        }
    }

    fn checkpoint_locked(&self, w: &mut LogWriter) -> Result<()> {
        self.wait_background();
        // A checkpoint names a log position; on a backend whose readers see
        // only closed files (HDFS), a position inside the open segment would
        // make every other opener fail with "the log after … is missing".
        self.sync_visible(w)?;
        let st = self.state.read();
        checkpoint::write(&*self.backend, &self.dir, w.position(), &st, self.index().iter_all())?;
        w.since_checkpoint = 0;
        Ok(())
    }

    /// Appends a metadata record, applies it and makes it durable.
    fn log_meta(&self, w: &mut LogWriter, rec: Record) -> Result<()> {
        let (seg, off, _) = w.append(&rec, &[])?;
        {
            let mut st = self.state.write();
            apply(&self.index(), &mut st, seg, off, 0, &rec)?;
        }
        // Snapshots, reverts and resizes must be visible to other openers
        // (`vol%snap` views, `clone_volume`), not only durable.
        self.sync_visible(w)
    }

    /// Makes the log durable and readable by other openers: on backends
    /// whose readers see only closed files, the active segment is sealed
    /// (the next write starts a new one); elsewhere a flush is enough.
    fn sync_visible(&self, w: &mut LogWriter) -> Result<()> {
        if self.backend.reads_see_unclosed_appends() {
            w.flush()
        } else {
            w.seal()
        }
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut LogWriter) -> Result<T>) -> Result<T> {
        self.check_writable()?;
        let mut g = self.writer.lock();
        let w = g.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::ReadOnly,
                format!("{} is open read-only", self.uri),
            )
        })?;
        f(w)
    }

    /// Grows the volume to `size` bytes.
    pub fn resize(&self, size: u64) -> Result<()> {
        check_size(size, "new size")?;
        self.with_writer(|w| {
            let cur = self.state.read().virtual_size;
            if size < cur {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{}: shrinking from {cur} to {size} bytes is not supported; volumes only grow", self.uri),
                ));
            }
            if size == cur {
                return Ok(());
            }
            self.log_meta(w, Record::Resize { virtual_size: size })
        })
    }

    /// Creates snapshot `name` of the head. O(1): the head timeline is frozen
    /// and a new, empty head starts on top of it.
    pub fn snapshot_create(&self, name: &str) -> Result<()> {
        validate_snapshot_name(name)?;
        self.with_writer(|w| {
            let rec = {
                let st = self.state.read();
                if st.snapshot_by_name(name).is_some() {
                    return Err(Error::new(
                        ErrorKind::Exists,
                        format!("volume {} already has a snapshot named {name:?}", self.uri),
                    ));
                }
                let (secs, nsecs) = log::now();
                Record::SnapshotCreate {
                    id: st.next_snapshot,
                    timeline: st.head,
                    new_head: st.next_timeline,
                    virtual_size: st.virtual_size,
                    secs,
                    nsecs,
                    name: name.to_string(),
                }
            };
            self.log_meta(w, rec)
        })
    }

    /// Deletes snapshot `name`. Refused while clones depend on it. What it
    /// alone held becomes reclaimable; no other snapshot's or clone's reads change.
    pub fn snapshot_delete(&self, name: &str) -> Result<()> {
        validate_snapshot_name(name)?;
        self.with_writer(|w| {
            let id = {
                let st = self.state.read();
                st.snapshot_by_name(name)
                    .ok_or_else(|| Self::no_snapshot(&st, &self.uri.to_string(), name))?
                    .id
            };
            let clones: Vec<String> = live_clones(
                &*self.backend,
                &self.dir,
                &self.uri.without_snapshot().to_string(),
            )?
            .into_iter()
            .filter(|(sid, _)| *sid == id)
            .map(|(_, c)| c)
            .collect();
            if !clones.is_empty() {
                return Err(Error::new(
                    ErrorKind::InUse,
                    format!(
                        "snapshot {name:?} of {} has clones: {}; delete those clones first",
                        self.uri,
                        clones.join(", ")
                    ),
                ));
            }
            self.log_meta(w, Record::SnapshotDelete { id })
        })
    }

    /// Branches the head back to snapshot `name`. If the head holds writes
    /// made since then, it is kept as an automatically named snapshot
    /// (`pre-revert-N`) so nothing is lost.
    pub fn snapshot_revert(&self, name: &str) -> Result<()> {
        validate_snapshot_name(name)?;
        self.with_writer(|w| {
            let rec = {
                let st = self.state.read();
                let target = st
                    .snapshot_by_name(name)
                    .ok_or_else(|| Self::no_snapshot(&st, &self.uri.to_string(), name))?;
                let head = st.timelines.get(&st.head).cloned().unwrap_or_default();
                // Unchanged: nothing written and no resize since the head
                // branched off a snapshot that still exists, which then
                // holds the same contents. A head on a hidden parent (its
                // snapshot deleted, the timeline kept for another branch)
                // is the only copy of that state, so it is kept too.
                let on_snapshot = head
                    .parent
                    .is_some_and(|p| st.snapshots.values().any(|s| s.timeline == p));
                let head_changed = head.entries > 0 || st.head_resized || !on_snapshot;
                let (auto_id, auto_name) = if head_changed {
                    let id = st.next_snapshot;
                    let mut n = format!("pre-revert-{id}");
                    let mut k = 1;
                    while st.snapshot_by_name(&n).is_some() {
                        n = format!("pre-revert-{id}-{k}");
                        k += 1;
                    }
                    (id, n)
                } else {
                    (0, String::new())
                };
                let (secs, nsecs) = log::now();
                Record::Revert {
                    target_id: target.id,
                    auto_id,
                    new_head: st.next_timeline,
                    secs,
                    nsecs,
                    auto_name,
                }
            };
            if let Record::Revert {
                auto_id, auto_name, ..
            } = &rec
            {
                if *auto_id != 0 {
                    tracing::info!(
                        "{}: keeping the previous head as snapshot {auto_name:?}",
                        self.uri
                    );
                }
            }
            self.log_meta(w, rec)
        })
    }

    /// Snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let clones = live_clones(
            &*self.backend,
            &self.dir,
            &self.uri.without_snapshot().to_string(),
        )?;
        let st = self.state.read();
        Ok(st
            .snapshots
            .values()
            .map(|s| SnapshotInfo {
                id: s.id,
                name: s.name.clone(),
                secs: s.secs,
                nsecs: s.nsecs,
                virtual_size: s.virtual_size,
                bytes: st.timelines.get(&s.timeline).map(|t| t.blocks).unwrap_or(0) * BLOCK_SIZE,
                clones: clones
                    .iter()
                    .filter(|(id, _)| *id == s.id)
                    .map(|(_, c)| c.clone())
                    .collect(),
            })
            .collect())
    }

    /// Status of the blocks from `offset`: what the first block holds, and
    /// how many bytes (up to `len`) share that status.
    pub fn block_status(&self, offset: u64, len: u64) -> Result<(BlockState, u64)> {
        let size = self.size();
        if offset >= size || len == 0 {
            return Err(invalid(format!(
                "{}: block status at {offset} is past the end ({size} bytes)",
                self.uri
            )));
        }
        let len = len.min(size - offset);
        let first = offset / BLOCK_SIZE;
        let last = (offset + len).div_ceil(BLOCK_SIZE);
        let n = (last - first).min(64 * 1024);
        let entries = self.resolve(first, n)?;
        let mut states = Vec::with_capacity(entries.len());
        let mut i = 0usize;
        while i < entries.len() {
            match entries[i] {
                Some(Entry::Data { .. }) => states.push(BlockState::Data),
                Some(Entry::Zero) => states.push(BlockState::Zero),
                None => match self.live_base() {
                    Some(b) if (first + i as u64) * BLOCK_SIZE < b.size() => {
                        let (s, l) = b.block_status((first + i as u64) * BLOCK_SIZE, BLOCK_SIZE)?;
                        let _ = l;
                        states.push(s)
                    }
                    _ => states.push(BlockState::Unallocated),
                },
            }
            if states[i] != states[0] {
                break;
            }
            i += 1;
        }
        let same = states.iter().take_while(|s| **s == states[0]).count() as u64;
        let bytes = ((first + same) * BLOCK_SIZE).min(offset + len) - offset;
        Ok((states[0], bytes))
    }

    /// Bytes the log occupies in the backend.
    pub fn allocated_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for n in self.backend.list(&self.dir)? {
            if format::parse_segment_name(&n).is_some() || n.starts_with("ckpt-") {
                let path = format!("{}/{n}", self.dir);
                match self.backend.open_read(&path) {
                    Ok(f) => total += f.len()?,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // Bytes not yet handed to the backend.
        Ok(total)
    }

    /// Facts about the volume.
    pub fn info(&self) -> Result<VolumeInfo> {
        let allocated = self.allocated_bytes()?;
        let segments = log::list_segments(&*self.backend, &self.dir)?.len() as u64;
        let snapshots = self.snapshots()?;
        let writer = if self.read_only {
            lock::holder(
                &*self.backend,
                &self.dir,
                &self.uri.without_snapshot().to_string(),
            )?
            .map(|h| format!("pid {} on host {}", h.pid, h.host))
        } else {
            Some(format!(
                "pid {} on host {} (this process)",
                std::process::id(),
                lock::hostname()
            ))
        };
        let st = self.state.read();
        Ok(VolumeInfo {
            uri: self.uri.to_string(),
            backend: match self.uri.location {
                crate::uri::Location::Local => "local",
                crate::uri::Location::Hdfs { .. } => "hdfs",
                crate::uri::Location::Mem { .. } => "mem",
            }
            .to_string(),
            uuid: hex(&st.uuid),
            virtual_size: self.view.map(|v| v.1).unwrap_or(st.virtual_size),
            block_size: BLOCK_SIZE,
            allocated_bytes: allocated,
            live_bytes: st.seg_live.values().sum(),
            segments,
            snapshots,
            base: st
                .base
                .as_ref()
                .map(|b| format!("{}%{}", b.uri, b.snapshot)),
            head_bytes: st.timelines.get(&st.head).map(|t| t.blocks).unwrap_or(0) * BLOCK_SIZE,
            created: st.created,
            writer,
        })
    }

    /// Flushes, writes a checkpoint if the log moved, marks the index clean
    /// and releases the write lock. Dropping a volume does the same, but
    /// cannot report errors.
    pub fn close(self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if self.read_only {
            return Ok(());
        }
        self.wait_background();
        let mut wguard = self.writer.lock();
        if let Some(w) = wguard.as_mut() {
            w.seal()?;
            // A short tail is cheap to replay, so closing after a few
            // writes or a snapshot (each qemu-img command) does not pay for
            // a whole-map checkpoint.
            if w.since_checkpoint >= self.opts.checkpoint_every.min(CLOSE_CHECKPOINT_BYTES) {
                let st = self.state.read();
                checkpoint::write(&*self.backend, &self.dir, w.position(), &st, self.index().iter_all())?;
                w.since_checkpoint = 0;
            }
            // sled must hold the whole map before it is marked clean.
            self.index().feed()?;
            let st = self.state.read();
            self.index().meta_put("state", &st.encode())?;
            self.index().meta_put("pos", &w.position().encode())?;
            self.index()
                .meta_put("tail", &log_tail(&*self.backend, &self.dir, w.position())?)?;
            self.index().meta_put("clean", &[1])?;
            self.index().flush()?;
        }
        if let Some(l) = self.lock.lock().take() {
            l.release()?;
        }
        Ok(())
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!("closing {}: {e}", self.uri);
        }
    }
}

/// Makes `dst` an O(1) clone of `src` (which must name a snapshot). `dst` is
/// created with `size` (default: the snapshot's size), or, if it exists, must
/// never have been written and have no snapshots.
pub fn clone_volume(src: &str, dst: &str, size: Option<u64>) -> Result<()> {
    let su = parse_uri(src)?;
    let Some(snap) = su.snapshot.clone() else {
        return Err(invalid(format!(
            "clone source {src} names no snapshot; write it as {}%SNAPSHOT (clones are made from snapshots)",
            su
        )));
    };
    let du = parse_uri(dst)?;
    if du.snapshot.is_some() {
        return Err(invalid(format!(
            "clone target {dst} must not name a snapshot"
        )));
    }
    if su.without_snapshot() == du {
        return Err(invalid(format!("cannot clone {src} onto itself")));
    }
    let base = Volume::open(src, &OpenOptions::read_only())?;
    let (snap_id, snap_size, base_uuid) = {
        let st = base.state.read();
        let s = st
            .snapshot_by_name(&snap)
            .expect("view resolved the snapshot");
        (s.id, s.virtual_size, st.uuid)
    };
    drop(base);
    if let Some(sz) = size {
        check_size(sz, "clone size")?;
        if sz < snap_size {
            return Err(invalid(format!(
                "clone size {sz} is smaller than the base snapshot ({snap_size} bytes)"
            )));
        }
    }
    let base_ref = BaseRef {
        uri: su.without_snapshot().to_string(),
        snapshot: snap.clone(),
        snapshot_id: snap_id,
        volume_uuid: base_uuid,
    };
    let dbackend = backend::for_uri(&du)?;
    let exists = volume_exists(&*dbackend, &du.path)?;
    let existing = if exists {
        let v = Volume::open(&du.to_string(), &OpenOptions::default())?;
        {
            let st = v.state.read();
            let written = st.timelines.values().any(|t| t.entries > 0)
                || !st.snapshots.is_empty()
                || st.base.is_some();
            if written {
                return Err(Error::new(
                    ErrorKind::Exists,
                    format!("{du} already holds data or snapshots; clone into a new volume, or into one that was created and never written"),
                ));
            }
            if st.virtual_size < snap_size {
                return Err(invalid(format!(
                    "{du} is {} bytes, smaller than the base snapshot ({snap_size} bytes); resize it first",
                    st.virtual_size
                )));
            }
        }
        Some(v)
    } else {
        None
    };
    // Register with the base first: a reference without a clone is harmless
    // (it is dropped when found stale), a clone without a reference is not.
    let sbackend = backend::for_uri(&su)?;
    let ref_path = format!(
        "{}/{}",
        clones_dir(&su.path),
        clone_ref_name(&du.to_string())
    );
    if sbackend.exists(&ref_path)? {
        sbackend.delete(&ref_path)?;
    }
    let mut f = sbackend.create(&ref_path)?;
    f.append(format!("snapshot_id={snap_id}\nsnapshot={snap}\nchild={du}\n").as_bytes())?;
    f.close()?;
    match existing {
        Some(v) => {
            v.with_writer(|w| v.log_meta(w, Record::SetBase(base_ref)))?;
            v.close()?;
        }
        None => Volume::create_inner(&du.to_string(), size.unwrap_or(snap_size), Some(base_ref))?,
    }
    tracing::info!("cloned {su}%{snap} to {du}");
    Ok(())
}

/// Deletes a volume and everything in its directory. Refused while it is
/// open read-write elsewhere or while clones depend on its snapshots.
pub fn delete_volume(uri: &str) -> Result<()> {
    let u = parse_uri(uri)?;
    if let Some(s) = &u.snapshot {
        return Err(invalid(format!(
            "{uri} names a snapshot; to delete the snapshot use `hlfs snapshot delete {} {s}`",
            u.without_snapshot()
        )));
    }
    let backend = backend::for_uri(&u)?;
    require_exists(&*backend, &u)?;
    let name = u.to_string();
    let lock = WriteLock::acquire(backend.clone(), &u.path, &name)?;
    let clones = live_clones(&*backend, &u.path, &name)?;
    if !clones.is_empty() {
        let list: Vec<String> = clones.into_iter().map(|(_, c)| c).collect();
        return Err(Error::new(
            ErrorKind::InUse,
            format!(
                "volume {name} has clones: {}; delete those clones first",
                list.join(", ")
            ),
        ));
    }
    // Drop our reference in the base, if we are a clone.
    let base = {
        let v = Volume::open(&name, &OpenOptions::read_only());
        match v {
            Ok(v) => v.state.read().base.clone(),
            Err(e) if e.kind() == ErrorKind::Corrupt => None,
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        }
    };
    if let Some(b) = base {
        if let Ok(bu) = VolumeUri::parse(&b.uri) {
            if let Ok(bb) = backend::for_uri(&bu) {
                let p = format!("{}/{}", clones_dir(&bu.path), clone_ref_name(&name));
                if bb.exists(&p).unwrap_or(false) {
                    let _ = bb.delete(&p);
                }
            }
        }
    }
    if let Some(idir) = backend.local_index_dir(&u.path) {
        if idir.exists() {
            std::fs::remove_dir_all(&idir)
                .map_err(|e| Error::io(format!("removing index {}", idir.display()), e))?;
        }
    } else if let Ok(uuid) = read_uuid(&*backend, &u) {
        // This host's index cache in the default place (HDFS): only a
        // cache, so a failure to remove it is not worth failing the delete.
        let idir = default_index_root().join(hex(&uuid));
        if idir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&idir) {
                tracing::warn!(
                    "volume {name}: could not remove its index cache {}: {e}",
                    idir.display()
                );
            }
        }
    }
    let lock_file = lock::lock_path(&u.path);
    for n in backend.list(&u.path)? {
        let p = format!("{}/{n}", u.path);
        if p == lock_file {
            continue;
        }
        if n == "clones" {
            for c in backend.list(&p).unwrap_or_default() {
                backend.delete(&format!("{p}/{c}"))?;
            }
            backend.remove_dir(&p)?;
            continue;
        }
        backend.delete(&p)?;
    }
    lock.release()?;
    backend.remove_dir(&u.path)?;
    tracing::info!("deleted volume {name}");
    Ok(())
}

/// Verifies every record of the volume's log and every checkpoint. With
/// `rebuild_index`, also rebuilds the sled index from the log alone.
pub fn fsck(uri: &str, rebuild_index: bool) -> Result<FsckReport> {
    let u = parse_uri(uri)?;
    let backend = backend::for_uri(&u)?;
    require_exists(&*backend, &u)?;
    let dir = &u.path;
    let uuid = read_uuid(&*backend, &u)?;
    let mut rep = FsckReport::default();
    let base = match cleaner::log_base(&*backend, dir, &uuid) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::Corrupt => {
            rep.errors.push(e.to_string());
            return Ok(rep);
        }
        Err(e) => return Err(e),
    };
    if base != LogPos::default() {
        rep.notes.push(format!(
            "the log starts at the checkpoint in segment {} (earlier segments were cleaned)",
            format::segment_name(base.segment)
        ));
    }
    let layout = match log::layout(&*backend, dir, &uuid, base.segment) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::Corrupt => {
            // The segment chain itself is broken: nothing after the break
            // can be placed, so there is nothing further to check or rebuild.
            rep.errors.push(e.to_string());
            return Ok(rep);
        }
        Err(e) => return Err(e),
    };
    for a in &layout.abandoned {
        rep.notes.push(format!(
            "segment {} is not part of the log (abandoned after a crash)",
            format::segment_name(*a)
        ));
    }
    let mut next_seq = 0u64;
    let n = layout.chain.len();
    for (i, (seg, bound)) in layout.chain.iter().enumerate() {
        rep.segments += 1;
        let mut f = |s: Scanned| -> Result<()> {
            if s.seq < next_seq {
                rep.errors.push(format!(
                    "segment {} offset {}: sequence {} goes backwards",
                    format::segment_name(s.segment),
                    s.offset,
                    s.seq
                ));
            }
            next_seq = s.seq + 1;
            rep.records += 1;
            rep.bytes += s.len;
            if let Record::Batch { extents, .. } = &s.record {
                rep.data_blocks += extents.iter().map(|(_, c)| c.len() as u64).sum::<u64>();
            }
            if let Record::Data {
                crcs, first_block, ..
            } = &s.record
            {
                rep.data_blocks += crcs.len() as u64;
                if !s.damaged_blocks.is_empty() {
                    let blocks: Vec<String> = s
                        .damaged_blocks
                        .iter()
                        .map(|i| (first_block + *i as u64).to_string())
                        .collect();
                    rep.errors.push(format!(
                        "segment {} offset {}: data record damaged: block(s) {} fail their checksums (reads of them fail; the record's other {} block(s) are intact)",
                        format::segment_name(s.segment),
                        s.offset,
                        blocks.join(", "),
                        crcs.len() - blocks.len()
                    ));
                }
            }
            Ok(())
        };
        match log::scan_segment_salvaging(&*backend, dir, *seg, 0, *bound, &mut f) {
            Ok(valid) => {
                if i + 1 == n {
                    let len = backend.open_read(&log::segment_path(dir, *seg))?.len()?;
                    if len > valid {
                        // A tear is what a crash leaves: garbage to the end,
                        // after everything any checkpoint has seen.
                        let covered = checkpoint::list(&*backend, dir)?
                            .into_iter()
                            .filter_map(|c| checkpoint::position(&*backend, dir, c, &uuid).ok())
                            .filter(|p| p.segment == *seg && p.offset > valid)
                            .map(|p| p.offset)
                            .max();
                        let later = log::valid_record_after(&*backend, dir, *seg, valid)?;
                        if let Some(end) = covered {
                            rep.errors.push(format!(
                                "segment {} offset {valid}: damaged record inside the part a checkpoint covers (up to offset {end})",
                                format::segment_name(*seg)
                            ));
                        } else if let Some(at) = later {
                            rep.errors.push(format!(
                                "segment {} offset {valid}: damaged record followed by valid records (from offset {at}); after a power loss these may be unflushed writes that reached the disk out of order",
                                format::segment_name(*seg)
                            ));
                        } else {
                            rep.notes.push(format!(
                                "segment {} has {} bytes of torn tail after offset {valid} (writes never flushed; ignored)",
                                format::segment_name(*seg),
                                len - valid
                            ));
                        }
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::Corrupt => rep.errors.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    for seq in checkpoint::list(&*backend, dir)? {
        match checkpoint::verify(&*backend, dir, seq, &uuid) {
            Ok(()) => rep.checkpoints += 1,
            Err(e) if e.kind() == ErrorKind::Corrupt => rep
                .notes
                .push(format!("{e} (it will be skipped; the log is intact)")),
            Err(e) => return Err(e),
        }
    }
    if rebuild_index {
        let v = Volume::open(
            uri,
            &OpenOptions {
                rebuild_index: true,
                ..Default::default()
            },
        )?;
        v.close()?;
        rep.rebuilt_index = true;
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mem::{registry_put, MemBackend};

    fn mem_uri(tag: &str) -> (MemBackend, String) {
        let b = MemBackend::new();
        let name = format!("unit-{tag}-{}", rand::random::<u32>());
        registry_put(&name, b.clone());
        (b, format!("mem://{name}/vols/v"))
    }

    fn opts(dir: &tempfile::TempDir) -> OpenOptions {
        OpenOptions {
            index_root: Some(dir.path().to_path_buf()),
            ..Default::default()
        }
    }

    /// A close after a small change writes no checkpoint (qemu-img opens
    /// and closes per command), but the tail is counted across sessions, so
    /// enough small sessions still lead to one.
    #[test]
    fn close_checkpoints_only_after_enough_log_across_sessions() {
        let (b, uri) = mem_uri("ckpt");
        let td = tempfile::tempdir().unwrap();
        let o = OpenOptions {
            checkpoint_every: 256 << 10,
            ..opts(&td)
        };
        Volume::create(&uri, 4 << 20).unwrap();
        let ckpts = || b.paths().iter().filter(|p| p.contains("/ckpt-")).count();
        for i in 0..3u8 {
            let v = Volume::open(&uri, &o).unwrap();
            v.write(u64::from(i) * 65536, &[i + 1; 65536]).unwrap();
            v.close().unwrap();
            assert_eq!(
                ckpts(),
                0,
                "session {i}: {} KiB of tail needs no checkpoint",
                (u64::from(i) + 1) * 64
            );
        }
        let v = Volume::open(&uri, &o).unwrap();
        v.write(3 * 65536, &[4; 65536]).unwrap();
        v.close().unwrap();
        assert_eq!(
            ckpts(),
            1,
            "256 KiB of tail over four sessions calls for a checkpoint"
        );
        let v = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
        let mut buf = vec![0u8; 4 * 65536];
        v.read(0, &mut buf).unwrap();
        assert!(buf
            .chunks(65536)
            .enumerate()
            .all(|(i, c)| c.iter().all(|x| *x == i as u8 + 1)));
    }

    #[test]
    fn write_read_snapshot_revert() {
        let (_b, uri) = mem_uri("wr");
        let td = tempfile::tempdir().unwrap();
        Volume::create(&uri, 1 << 20).unwrap();
        let v = Volume::open(&uri, &opts(&td)).unwrap();
        v.write(4096, &[1u8; 8192]).unwrap();
        v.write(512, &[2u8; 512]).unwrap();
        v.snapshot_create("s1").unwrap();
        v.write(4096, &[3u8; 4096]).unwrap();
        let mut b = vec![0u8; 16384];
        v.read(0, &mut b).unwrap();
        assert_eq!(&b[512..1024], &[2u8; 512]);
        assert_eq!(&b[4096..8192], &[3u8; 4096]);
        assert_eq!(&b[8192..12288], &[1u8; 4096]);
        v.snapshot_revert("s1").unwrap();
        v.read(0, &mut b).unwrap();
        assert_eq!(&b[4096..8192], &[1u8; 4096]);
        let names: Vec<String> = v.snapshots().unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, vec!["s1".to_string(), "pre-revert-2".to_string()]);
        v.close().unwrap();
        let v = Volume::open(&format!("{uri}%pre-revert-2"), &OpenOptions::read_only()).unwrap();
        v.read(0, &mut b).unwrap();
        assert_eq!(&b[4096..8192], &[3u8; 4096]);
    }
}
