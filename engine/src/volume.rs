//! A volume: the public face of the engine.
//!
//! Data path: `write` encodes a data record into the active segment
//! (`LogWriter`) and points the block map (`Index`) at it; `read` resolves
//! each block through the timeline chain (head, then each frozen parent, then
//! a clone's base volume) and reads the bytes from the log; `flush` makes the
//! log durable. The index is a cache: opening replays the log after the
//! newest checkpoint (or after the position a cleanly closed index recorded).
//!
//! This file holds the `Volume` type, its options and reports, and what
//! every part shares; each concept has a file under `volume/`: `open`
//! (create, open, reload), `read` (the read path), `write` (the write path,
//! flush, checkpoints, resize), `snapshot`, `clones` (clone references,
//! `clone_volume`, `delete_volume`), `replay` (records into the index and
//! state), `check` (`fsck`), `cleaner`, `du` and `flatten`. The lower
//! layers (`log`, `pipeline`, `index`, `map`, `format`, `backend`) know
//! nothing of volumes.

use crate::backend::{self, Backend, ReadFile};
use crate::checkpoint;
use crate::error::{corrupt, invalid, not_found, nowait, with_nowait, would_block, Error, ErrorKind, Result};
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

mod open;
mod read;
mod write;
mod snapshot;
mod vmstate;
pub use vmstate::MAX_VM_STATE;
mod replay;
use replay::*;
mod clones;
use clones::*;
pub use clones::{clone_volume, delete_volume};
mod check;
pub use check::{fsck, FsckReport};
mod cleaner;
pub(crate) use cleaner::retired_name as retired_segment_name;
pub use cleaner::{release_retired, BackgroundGc, Candidate, GcOptions, GcReport, GcThread};
mod du;
pub use du::{DuReport, DuView};
mod flatten;
pub use flatten::FlattenReport;
mod diff;
pub use diff::{diff_views, Change, ExportDiffReport, ImportDiffReport, IMPORT_MARKER};

const SECTOR: u64 = 512;
const BS: usize = BLOCK_SIZE as usize;

/// How to open a volume.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Open read-only (no lock, no writes; sees the volume as of opening).
    pub read_only: bool,
    /// Where to keep the volume's sled index, as `<index_root>/<volume
    /// uuid>`, whatever the backend. None: a local volume's `index/`
    /// subdirectory; for backends without a natural local place (HDFS)
    /// `$HLFS_INDEX_DIR`, else `$XDG_CACHE_HOME/hlfs/index`, else
    /// `~/.cache/hlfs/index`.
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
    /// Memory the block map may use, in bytes (default 512 MiB, or
    /// `$HLFS_MAP_MEMORY`, e.g. `64M`). Past it, the least recently used
    /// pages of the map are kept in sled only and read back when needed
    /// (design.md §3).
    pub map_memory: u64,
    /// Open for metadata records only (snapshot create and delete): the
    /// writer lock and a log writer, but no index. The state and map come
    /// from the newest checkpoint and the log after it, read in place, as
    /// a read-only open does, so the open costs the same at a million
    /// mapped blocks as on an empty volume (sled's own open reads its whole
    /// file). Close seals the segment and writes no checkpoint; the index
    /// takes the new records in at the next full open (it replays the log
    /// from the position it recorded). Data writes are refused.
    pub metadata_only: bool,
    /// On backends whose writer holds the whole active segment in memory
    /// (HDFS), how often a segment whose append or close failed with a
    /// backend error is written again, under the next segment number,
    /// before the writer gives up (10: about a minute with the default
    /// waits). docs/hdfs.md.
    pub rewrite_attempts: u32,
    /// The wait before the second such attempt (500 ms), doubling for each
    /// later one up to 16 times it.
    pub rewrite_wait: std::time::Duration,
    /// On HDFS, the deadline for one NameNode call of this volume, retries
    /// included (data transfers get six times it). None: the process-wide
    /// `HLFS_HDFS_TIMEOUT`, else 20 s. Ignored on other backends.
    pub hdfs_timeout: Option<std::time::Duration>,
}

/// `OpenOptions::map_memory` by default.
fn default_map_memory() -> u64 {
    std::env::var("HLFS_MAP_MEMORY")
        .ok()
        .and_then(|v| crate::size::parse_size(&v).ok())
        .unwrap_or(512 << 20)
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
            map_memory: default_map_memory(),
            metadata_only: false,
            rewrite_attempts: 10,
            rewrite_wait: std::time::Duration::from_millis(500),
            hdfs_timeout: None,
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
    /// Bytes of VM state saved with it (QEMU's `savevm`), 0 for a
    /// disk-only snapshot.
    pub vm_state_size: u64,
    /// The guest clock when its VM state was saved, in nanoseconds.
    pub vm_clock_nsec: u64,
    /// URIs of clones made from this snapshot.
    pub clones: Vec<String>,
    /// For a snapshot that `import-diff` took: the source volume's
    /// snapshot it reproduces.
    pub source: Option<SnapshotOrigin>,
}

/// The snapshot of another volume that an imported snapshot reproduces
/// (`SnapshotInfo::source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotOrigin {
    /// UUID of the source volume, hex (as `hlfs info` prints it).
    pub volume_uuid: String,
    /// Id of the snapshot in the source volume.
    pub snapshot_id: u64,
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
    /// Extents in the block map in memory, over all timelines (0 for a
    /// read-only view, which keeps no such map): ~100 bytes each
    /// (design.md §3). Blocks stored back to back form one extent, so this
    /// also shows how scattered the volume is in the log.
    pub extents: u64,
    /// What those extents cost in memory (`map::Extent::cost`), which
    /// `OpenOptions::map_memory` bounds.
    pub map_bytes: u64,
    /// Pages of the map (`map::PAGE_BLOCKS` blocks of a timeline) kept in
    /// sled only, past that budget.
    pub map_pages_out: u64,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Who holds the volume read-write, if anyone ("pid N on host H").
    pub writer: Option<String>,
    /// The volume directory's files by kind; `space.total` agrees with
    /// `du -sb` on it.
    pub space: DirSpace,
}

/// What the volume's directory holds, by kind of file (`Volume::dir_space`).
/// `total` is what `du -sb` (local) or `hdfs dfs -du -s` (HDFS) says of
/// the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirSpace {
    /// Everything, as the platform's own tool counts it.
    pub total: u64,
    /// Segment files of the log.
    pub segments: u64,
    /// Retired segments not deleted yet: held by a reader that may still
    /// read them, or waiting for the grace period (`hlfs gc` says which).
    pub retired: u64,
    /// Checkpoints.
    pub checkpoints: u64,
    /// The local index cache (sled) kept in the volume's directory.
    pub index: u64,
    /// The rest: the directories themselves, the lock, reader
    /// registrations.
    pub other: u64,
}

/// Space and lineage of an open volume from its state in memory
/// (`Volume::space_in_memory`).
#[derive(Debug, Clone)]
pub struct SpaceInfo {
    /// Bytes of blocks still mapped by the head, a snapshot or a clone's base.
    pub live_bytes: u64,
    /// Bytes of data the head holds on its own.
    pub head_bytes: u64,
    /// For a clone: its base volume's URI and snapshot.
    pub base: Option<(String, String)>,
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
    /// A read-only opener's reader registration (registry.rs), so that
    /// the writer's cleaner keeps the segments this view's map points into.
    registration: Option<Arc<crate::registry::Registration>>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Volume({})", self.uri)
    }
}

/// `Volume::dir_space` of the volume directory `dir`.
pub(crate) fn dir_space(backend: &dyn Backend, dir: &str) -> Result<DirSpace> {
    let mut u = backend.usage(dir)?;
    let own: u64 = u.entries.iter().filter(|e| crate::registry::is_own_registration(&e.name)).map(|e| e.bytes).sum();
    u.entries.retain(|e| !crate::registry::is_own_registration(&e.name));
    u.total -= own;
    let mut s = DirSpace { total: u.total, ..Default::default() };
    for e in &u.entries {
        let slot = if format::parse_segment_name(&e.name).is_some() {
            &mut s.segments
        } else if e.name.starts_with("retired-") {
            &mut s.retired
        } else if e.name.starts_with("ckpt-") {
            &mut s.checkpoints
        } else if e.is_dir && e.name == "index" {
            &mut s.index
        } else {
            &mut s.other
        };
        *slot += e.bytes;
    }
    s.other += u.total - u.entries.iter().map(|e| e.bytes).sum::<u64>();
    Ok(s)
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

/// Closing writes a checkpoint once this much log follows the newest one
/// (or `checkpoint_every`, if smaller).
const CLOSE_CHECKPOINT_BYTES: u64 = 64 << 20;

impl Volume {
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

    /// `check_writable`, and not opened `metadata_only`: for writes of data
    /// and whatever rewrites the log (the cleaner, flatten).
    fn check_data_writable(&self) -> Result<()> {
        self.check_writable()?;
        if self.opts.metadata_only {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                format!(
                    "{} is open for metadata records only (OpenOptions::metadata_only); open it without that option to write data",
                    self.uri
                ),
            ));
        }
        Ok(())
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

    fn index(&self) -> Arc<Index> {
        self.index.read().clone()
    }

    /// Space and lineage from the state in memory alone (no I/O).
    pub fn space_in_memory(&self) -> SpaceInfo {
        let st = self.state.read();
        SpaceInfo {
            live_bytes: st.seg_live.values().sum(),
            head_bytes: st.timelines.get(&st.head).map(|t| t.blocks).unwrap_or(0) * BLOCK_SIZE,
            base: st.base.as_ref().map(|b| (b.uri.clone(), b.snapshot.clone())),
        }
    }

    /// Facts about the volume.
    pub fn info(&self) -> Result<VolumeInfo> {
        let allocated = self.allocated_bytes()?;
        let segments = log::list_segments(&*self.backend, &self.dir)?.len() as u64;
        let snapshots = self.snapshots()?;
        let paging = self.index().paging_counts();
        let space = self.dir_space()?;
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
            extents: paging.0 as u64,
            map_bytes: paging.1,
            map_pages_out: paging.3 as u64,
            created: st.created,
            writer,
            space,
        })
    }

    /// What the volume's directory holds, by kind of file.
    pub fn dir_space(&self) -> Result<DirSpace> {
        dir_space(&*self.backend, &self.dir)
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
            if let Some(r) = &self.registration {
                r.close();
            }
            return Ok(());
        }
        self.wait_background();
        let mut wguard = self.writer.lock();
        if self.opts.metadata_only {
            // No index to feed and no checkpoint: the records stay in the log.
            if let Some(w) = wguard.as_mut() {
                w.seal()?;
            }
        } else if let Some(w) = wguard.as_mut() {
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
            // After a segment rename sled may still name the old number in
            // pages never loaded again: let the next open rebuild it.
            if !self.index().relocated() {
                self.index().meta_put("clean", &[1])?;
            }
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
