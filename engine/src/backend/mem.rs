//! An in-memory backend that keeps a "written" and a "durable" image of every
//! file apart, so tests can crash it at any point and see what survives.
//!
//! It is a test tool: it proves nothing about HDFS or a real disk, only that
//! the engine never relies on data it did not make durable.
//!
//! `MemBackend::hdfs_model()` enforces HDFS's rules strictly: files are
//! append-only with a single writer (created exclusively, never reopened
//! for writing), readers see nothing of a file until it is closed (by its
//! writer, or by lease recovery: `hdfs-native` reads a file only up to its
//! last complete block, even after an hsync), `sync` (hsync) makes the
//! bytes durable, so a crash keeps them and an arbitrary prefix of what
//! came after, as lease recovery would, an open file cannot be renamed, and
//! nothing is renamed over an existing file. `visible_after_close()` has the
//! same visibility and leases without the other rules.

use super::{AppendFile, Backend, ReadFile, Usage};
use crate::error::{Error, ErrorKind, Result};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Default, Clone)]
struct MemFile {
    data: Vec<u8>,
    durable_len: usize,
    durable_exists: bool,
    closed: bool,
    /// Bumped by `recover_lease`: handles of earlier writers go stale.
    lease: u64,
    /// Writes over earlier bytes since the last sync (`header_writer`):
    /// offset and the bytes they replaced, which a crash may bring back.
    overwrites: Vec<(usize, Vec<u8>)>,
    /// When it was created.
    modified: Option<std::time::SystemTime>,
    /// Identity (from `State::next_id`): a reader opened on this file goes
    /// on reading it after a rename, and never reads another file created
    /// under its old name, as an open descriptor (local) or the block list
    /// of an HDFS reader does.
    id: u64,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, MemFile>,
    /// Operations left before the simulated crash; `None` = never.
    ops_left: Option<u64>,
    crashed: bool,
    generation: u64,
    ops: u64,
    bytes_appended: u64,
    /// Space limit in bytes for all files together (ENOSPC past it).
    capacity: Option<u64>,
    /// `AppendFile::sync` calls so far.
    syncs: u64,
    /// How long a sync takes (like a disk's cache flush), for tests of
    /// group commit.
    sync_delay: std::time::Duration,
    /// Appends and closes that fail next (after putting part of an
    /// append's bytes down), like an HDFS write pipeline whose DataNode
    /// went away; later ones succeed.
    transient_failures: u64,
    /// Syncs that fail next, the same way (an hsync whose pipeline broke).
    sync_failures: u64,
    /// The next `MemFile::id`.
    next_id: u64,
    /// Segment creates that succeed but report a failure next (an HDFS
    /// create whose answer the NameNode sent and the client never got).
    lost_create_replies: u64,
}

/// A memory backend with crash injection. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct MemBackend {
    state: Arc<Mutex<State>>,
    visible_before_close: bool,
    /// HDFS rules: `sync` is not durable, open files cannot be renamed.
    hdfs_rules: bool,
}

impl Default for MemBackend {
    fn default() -> Self {
        Self::new()
    }
}

fn registry() -> &'static Mutex<HashMap<String, MemBackend>> {
    static R: OnceLock<Mutex<HashMap<String, MemBackend>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Makes `backend` reachable as `mem://name/...`.
pub fn registry_put(name: &str, backend: MemBackend) {
    registry().lock().insert(name.to_string(), backend);
}

/// Forgets `mem://name/...`, so a long test run does not keep every
/// backend's files alive.
pub fn registry_remove(name: &str) {
    registry().lock().remove(name);
}

pub(super) fn registry_get(name: &str) -> Option<Arc<dyn Backend>> {
    registry()
        .lock()
        .get(name)
        .map(|b| Arc::new(b.clone()) as Arc<dyn Backend>)
}

impl MemBackend {
    /// A new, empty backend whose readers see appends at once (like local files).
    pub fn new() -> Self {
        MemBackend {
            state: Arc::default(),
            visible_before_close: true,
            hdfs_rules: false,
        }
    }

    /// A new, empty backend with HDFS's rules (see the module docs): a
    /// file's bytes are visible and durable only once its writer closes it.
    pub fn hdfs_model() -> Self {
        MemBackend {
            state: Arc::default(),
            visible_before_close: false,
            hdfs_rules: true,
        }
    }

    /// The same as `hdfs_model` (the name earlier tests use).
    pub fn visible_after_close() -> Self {
        Self::hdfs_model()
    }

    /// Whether this backend enforces HDFS's rules.
    pub fn is_hdfs_model(&self) -> bool {
        self.hdfs_rules
    }

    /// Simulates a crash after `n` more mutating operations (append, sync,
    /// create, rename, delete). The n-th operation itself fails.
    pub fn crash_after(&self, n: u64) {
        self.state.lock().ops_left = Some(n);
    }

    /// Crashes now: every later operation fails until `recover`.
    pub fn crash_now(&self) {
        let mut st = self.state.lock();
        st.crashed = true;
        st.ops_left = None;
    }

    /// Whether the simulated crash has happened.
    pub fn has_crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Bytes appended so far.
    pub fn bytes_appended(&self) -> u64 {
        self.state.lock().bytes_appended
    }

    /// `AppendFile::sync` calls so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Makes every `AppendFile::sync` take `d` (outside the backend's lock).
    pub fn set_sync_delay(&self, d: std::time::Duration) {
        self.state.lock().sync_delay = d;
    }

    /// The next `n` appends or closes fail with a backend error (an append
    /// after storing half its bytes), as when a DataNode of an HDFS write
    /// pipeline goes away; later ones succeed.
    pub fn fail_transiently(&self, n: u64) {
        self.state.lock().transient_failures = n;
    }

    /// The next `n` creates of segment files (`seg-…`) make the file and
    /// then report a backend error, as an HDFS create whose answer was lost
    /// on its way back.
    pub fn lose_create_replies(&self, n: u64) {
        self.state.lock().lost_create_replies = n;
    }

    /// Makes the next `n` syncs fail (an hsync whose DataNode pipeline
    /// broke); later ones succeed.
    pub fn fail_syncs_transiently(&self, n: u64) {
        self.state.lock().sync_failures = n;
    }

    /// Limits the total bytes stored; appends past it fail with ENOSPC.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// "Reboots": files never made durable vanish, and each file keeps its
    /// durable bytes plus a random prefix of what was written after them,
    /// whose last bytes may be garbage (a torn write). Old handles go stale.
    pub fn recover(&self, seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut st = self.state.lock();
        st.crashed = false;
        st.ops_left = None;
        st.generation += 1;
        st.files
            .retain(|_, f| f.durable_exists || rng.gen_bool(0.3));
        for f in st.files.values_mut() {
            let extra = f.data.len() - f.durable_len;
            let keep = if extra == 0 {
                0
            } else {
                rng.gen_range(0..=extra)
            };
            f.data.truncate(f.durable_len + keep);
            // A write over earlier bytes that no sync covered may not have
            // reached the disk: each comes back undone or not.
            for (off, old) in std::mem::take(&mut f.overwrites).into_iter().rev() {
                if off < f.data.len() && rng.gen_bool(0.5) {
                    let end = (off + old.len()).min(f.data.len());
                    f.data[off..end].copy_from_slice(&old[..end - off]);
                }
            }
            if keep > 0 && rng.gen_bool(0.5) {
                let n = keep.min(rng.gen_range(1..64));
                let len = f.data.len();
                for b in &mut f.data[len - n..] {
                    *b = rng.gen();
                }
            }
            f.durable_len = f.data.len();
            f.durable_exists = true;
            f.closed = true;
        }
    }

    /// Flips one byte of a file (corruption tests).
    pub fn corrupt_byte(&self, path: &str, offset: usize) {
        let mut st = self.state.lock();
        if let Some(f) = st.files.get_mut(path) {
            f.data[offset] ^= 0xff;
        }
    }

    /// A new backend holding a copy of every file as readers see it now
    /// (closed, durable), as a backup restored elsewhere would: tests of
    /// logs that took two courses from one point.
    pub fn deep_copy(&self) -> MemBackend {
        let st = self.state.lock();
        let files = st
            .files
            .iter()
            .filter(|(_, f)| f.closed || self.visible_before_close)
            .map(|(k, f)| {
                let mut f = f.clone();
                f.durable_len = f.data.len();
                f.durable_exists = true;
                f.closed = true;
                (k.clone(), f)
            })
            .collect();
        MemBackend {
            state: Arc::new(Mutex::new(State {
                files,
                ..Default::default()
            })),
            visible_before_close: self.visible_before_close,
            hdfs_rules: self.hdfs_rules,
        }
    }

    /// Names of all files, for tests.
    pub fn paths(&self) -> Vec<String> {
        self.state.lock().files.keys().cloned().collect()
    }

    fn tick(st: &mut State) -> Result<()> {
        if st.crashed {
            return Err(Error::new(
                ErrorKind::Backend,
                "memory backend: simulated crash",
            ));
        }
        st.ops += 1;
        if let Some(n) = st.ops_left.as_mut() {
            if *n == 0 {
                st.crashed = true;
                return Err(Error::new(
                    ErrorKind::Backend,
                    "memory backend: simulated crash",
                ));
            }
            *n -= 1;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct MemAppend {
    backend: MemBackend,
    path: String,
    generation: u64,
    lease: u64,
}

impl MemAppend {
    /// `sync`, callable through a shared reference (`syncer`).
    fn sync_shared(&self) -> Result<()> {
        let delay = self.backend.state.lock().sync_delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        self.with(|st, path| {
            if st.sync_failures > 0 {
                st.sync_failures -= 1;
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!("syncing {path}: DataNode pipeline failed (injected)"),
                ));
            }
            st.syncs += 1;
            let f = st
                .files
                .get_mut(path)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{path} vanished")))?;
            // Durable (HDFS: hsync), but not shown to readers of an
            // unclosed file.
            f.durable_len = f.data.len();
            f.durable_exists = true;
            f.overwrites.clear();
            Ok(())
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut State, &str) -> Result<T>) -> Result<T> {
        let mut st = self.backend.state.lock();
        MemBackend::tick(&mut st)?;
        if st.generation != self.generation {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("{}: stale handle after crash", self.path),
            ));
        }
        if st
            .files
            .get(&self.path)
            .is_some_and(|f| f.lease != self.lease)
        {
            return Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "{}: the file's lease was recovered by another client",
                    self.path
                ),
            ));
        }
        f(&mut st, &self.path)
    }
}

impl AppendFile for MemAppend {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.with(|st, path| {
            if st.transient_failures > 0 {
                st.transient_failures -= 1;
                if let Some(f) = st.files.get_mut(path) {
                    f.data.extend_from_slice(&data[..data.len() / 2]);
                }
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!("appending to {path}: DataNode transfer failed (injected)"),
                ));
            }
            if let Some(cap) = st.capacity {
                let used: u64 = st.files.values().map(|f| f.data.len() as u64).sum();
                if used + data.len() as u64 > cap {
                    // Like a real file system: what fits is written, then ENOSPC.
                    let fits = cap.saturating_sub(used) as usize;
                    if let Some(f) = st.files.get_mut(path) {
                        f.data.extend_from_slice(&data[..fits]);
                    }
                    return Err(Error::io(
                        format!("appending to {path}"),
                        std::io::Error::from_raw_os_error(libc::ENOSPC),
                    ));
                }
            }
            st.bytes_appended += data.len() as u64;
            let f = st
                .files
                .get_mut(path)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{path} vanished")))?;
            f.data.extend_from_slice(data);
            Ok(())
        })
    }

    fn sync(&mut self) -> Result<()> {
        self.sync_shared()
    }

    fn syncer(&self) -> Option<super::Syncer> {
        // Like a duplicate of a local file's descriptor: syncs while
        // appends go on (the model of what the local backend does).
        let me = self.clone();
        Some(Box::new(move || me.sync_shared()))
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        if self.backend.hdfs_rules {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{}: HDFS files cannot be truncated by their writer",
                    self.path
                ),
            ));
        }
        self.with(|st, path| {
            let f = st
                .files
                .get_mut(path)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{path} vanished")))?;
            let len = len as usize;
            if len > f.data.len() {
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!(
                        "{path}: truncate to {len} bytes, past its end ({})",
                        f.data.len()
                    ),
                ));
            }
            f.data.truncate(len);
            f.durable_len = f.durable_len.min(len);
            Ok(())
        })
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.with(|st, path| {
            if st.transient_failures > 0 {
                st.transient_failures -= 1;
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!("closing {path}: DataNode transfer failed (injected)"),
                ));
            }
            let f = st
                .files
                .get_mut(path)
                .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{path} vanished")))?;
            f.durable_len = f.data.len();
            f.durable_exists = true;
            f.closed = true;
            f.overwrites.clear();
            Ok(())
        })
    }

    fn header_writer(&self) -> Option<super::PosWriter> {
        if self.backend.hdfs_rules {
            return None; // HDFS files are append-only
        }
        let me = self.clone();
        Some(Box::new(move |off: u64, data: &[u8]| {
            me.with(|st, path| {
                let f = st
                    .files
                    .get_mut(path)
                    .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{path} vanished")))?;
                let (off, end) = (off as usize, off as usize + data.len());
                if end > f.data.len() {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        format!("{path}: a write over bytes {off}..{end}, past its end ({})", f.data.len()),
                    ));
                }
                f.overwrites.push((off, f.data[off..end].to_vec()));
                f.data[off..end].copy_from_slice(data);
                Ok(())
            })
        }))
    }
}

struct MemRead {
    backend: MemBackend,
    path: String,
    /// The file's `MemFile::id`.
    id: u64,
}

impl MemRead {
    /// The file this reader was opened on, wherever it has been renamed.
    fn file<'a>(&self, st: &'a State) -> Result<&'a MemFile> {
        match st.files.get(&self.path) {
            Some(f) if f.id == self.id => Ok(f),
            _ => st.files.values().find(|f| f.id == self.id).ok_or_else(|| {
                Error::new(ErrorKind::NotFound, format!("{} does not exist", self.path))
            }),
        }
    }
}

impl ReadFile for MemRead {
    fn try_read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<bool> {
        // Memory: never a wait (the tests of the try path run here too).
        self.read_exact_at(offset, buf).map(|()| true)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let st = self.backend.state.lock();
        let f = self.file(&st)?;
        let visible = if self.backend.visible_before_close || f.closed {
            f.data.len()
        } else {
            0
        };
        let end = offset as usize + buf.len();
        if end > visible {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}: short read of {} bytes at offset {offset}",
                    self.path,
                    buf.len()
                ),
            ));
        }
        buf.copy_from_slice(&f.data[offset as usize..end]);
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        let st = self.backend.state.lock();
        let f = self.file(&st)?;
        Ok(if self.backend.visible_before_close || f.closed {
            f.data.len() as u64
        } else {
            0
        })
    }
}

impl Backend for MemBackend {
    fn create(&self, path: &str) -> Result<Box<dyn AppendFile>> {
        let mut st = self.state.lock();
        MemBackend::tick(&mut st)?;
        if st.files.contains_key(path) {
            return Err(Error::new(
                ErrorKind::Exists,
                format!("creating {path}: file exists"),
            ));
        }
        st.next_id += 1;
        let id = st.next_id;
        st.files.insert(
            path.to_string(),
            MemFile { modified: Some(std::time::SystemTime::now()), id, ..Default::default() },
        );
        if st.lost_create_replies > 0 && path.rsplit('/').next().is_some_and(|n| n.starts_with("seg-")) {
            st.lost_create_replies -= 1;
            return Err(Error::new(
                ErrorKind::Backend,
                format!("creating {path}: no answer from the NameNode (the reply was lost; simulated)"),
            ));
        }
        Ok(Box::new(MemAppend {
            backend: self.clone(),
            path: path.to_string(),
            generation: st.generation,
            lease: 0,
        }))
    }

    fn open_read(&self, path: &str) -> Result<Arc<dyn ReadFile>> {
        let Some(id) = self.state.lock().files.get(path).map(|f| f.id) else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("opening {path}: no such file"),
            ));
        };
        Ok(Arc::new(MemRead {
            backend: self.clone(),
            path: path.to_string(),
            id,
        }))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let st = self.state.lock();
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut names: Vec<String> = st
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .collect();
        names.dedup();
        if names.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("listing {dir}: no such directory"),
            ));
        }
        Ok(names)
    }

    fn usage(&self, dir: &str) -> Result<Usage> {
        let st = self.state.lock();
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let u = super::fold_usage(st.files.range(prefix.clone()..).map_while(|(k, f)| {
            let rel = k.strip_prefix(&prefix)?;
            Some((rel, f.data.len() as u64, false, f.modified.unwrap_or(std::time::UNIX_EPOCH)))
        }));
        if u.entries.is_empty() {
            return Err(Error::new(ErrorKind::NotFound, format!("measuring {dir}: no such directory")));
        }
        Ok(u)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut st = self.state.lock();
        MemBackend::tick(&mut st)?;
        if st.files.contains_key(to) {
            return Err(Error::new(
                ErrorKind::Exists,
                format!("renaming {from} to {to}: target exists"),
            ));
        }
        if self.hdfs_rules && st.files.get(from).is_some_and(|f| !f.closed) {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("renaming {from}: the file is still open for writing (HDFS model)"),
            ));
        }
        let f = st.files.remove(from).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("renaming {from}: no such file"),
            )
        })?;
        st.files.insert(to.to_string(), f);
        Ok(())
    }

    fn delete(&self, path: &str) -> Result<()> {
        let mut st = self.state.lock();
        MemBackend::tick(&mut st)?;
        st.files.remove(path).map(|_| ()).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("deleting {path}: no such file"),
            )
        })
    }

    fn remove_dir(&self, _dir: &str) -> Result<()> {
        Ok(())
    }

    fn create_dir(&self, _dir: &str) -> Result<()> {
        // Directories are implicit: one exists while it holds a file.
        Ok(())
    }

    fn exists(&self, path: &str) -> Result<bool> {
        let st = self.state.lock();
        let prefix = format!("{}/", path.trim_end_matches('/'));
        Ok(st.files.contains_key(path)
            || st
                .files
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix)))
    }

    fn recover_lease(&self, path: &str) -> Result<bool> {
        let mut st = self.state.lock();
        MemBackend::tick(&mut st)?;
        let f = st.files.get_mut(path).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("recovering the lease of {path}: no such file"),
            )
        })?;
        if self.has_leases() && !f.closed {
            // What the writer appended stays (the DataNodes have it); the
            // writer itself is shut out.
            f.lease += 1;
            f.closed = true;
            f.durable_len = f.data.len();
            f.durable_exists = true;
        }
        Ok(true)
    }

    fn has_leases(&self) -> bool {
        self.hdfs_rules || !self.visible_before_close
    }

    fn sync_is_durable(&self) -> bool {
        true
    }

    fn reads_see_unclosed_appends(&self) -> bool {
        self.visible_before_close
    }

    fn append_is_repairable(&self) -> bool {
        !self.hdfs_rules
    }

    /// Nothing to bypass, but saying yes lets the tests drive a writer
    /// that writes page-aligned and batch records (`direct_io`) through
    /// the crash harness.
    fn can_bypass_cache(&self) -> bool {
        !self.hdfs_rules
    }

    fn local_index_dir(&self, _volume_dir: &str) -> Option<PathBuf> {
        None
    }

    fn available_bytes(&self, _dir: &str) -> Option<u64> {
        let st = self.state.lock();
        st.capacity
            .map(|c| c.saturating_sub(st.files.values().map(|f| f.data.len() as u64).sum()))
    }
}
