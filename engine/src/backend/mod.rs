//! Where segment files live. The trait holds only what HDFS can also do:
//! create a file, append, close, read at an offset, list, rename and
//! delete. Nothing is ever overwritten in place. Two capabilities say how a
//! backend differs from a local disk: whether `sync` makes bytes durable
//! (on HDFS only `close` does, so the engine seals a segment to flush it)
//! and whether readers see bytes before the writer closes the file.

pub mod hdfs;
pub mod local;
/// Only in tests and in builds with the `mem-backend` feature.
#[cfg(any(test, feature = "mem-backend"))]
pub mod mem;

use crate::error::{Error, ErrorKind, Result};
use crate::uri::{Location, VolumeUri};
use std::path::PathBuf;
use std::sync::Arc;

/// A file being written: append-only, made durable by `close` (and by
/// `sync` where the backend's `sync_is_durable` says so).
pub trait AppendFile: Send {
    /// Appends `data` at the end of the file.
    fn append(&mut self, data: &[u8]) -> Result<()>;
    /// On backends whose `sync_is_durable` is true: returns once everything
    /// appended so far is durable, including the file's existence (its
    /// directory entry). Elsewhere it promises nothing the engine relies on.
    fn sync(&mut self) -> Result<()>;
    /// Cuts the file back to `len` bytes, which were appended earlier:
    /// after a failed `append` (a full disk) the file may hold part of the
    /// data, and the writer retries from `len`. Only called where the
    /// backend's `append_is_repairable` says so.
    fn truncate(&mut self, len: u64) -> Result<()>;
    /// Closes the file; once it returns, every appended byte is durable and
    /// visible to readers.
    fn close(self: Box<Self>) -> Result<()>;
    /// A way to `sync` from another thread while appends go on (a
    /// duplicate of a local file's descriptor), if the backend has one.
    /// The write pipeline's group commit syncs through it without holding
    /// up appends (`pipeline::SegIo::sync_to`).
    fn syncer(&self) -> Option<Syncer> {
        None
    }
    /// A way to write at a given offset from several threads at once (a
    /// duplicate of a local O_DIRECT file's descriptor), if the backend
    /// has one. The pipeline then keeps more than one chunk in flight
    /// (`pipeline::SegIo::drain`); a crash may leave a later chunk written
    /// and an earlier one not, a torn tail like any other, since no flush
    /// has returned for either.
    fn positional(&self) -> Option<PosWriter> {
        None
    }
    /// A way to write over the file's first bytes after they were appended
    /// (as zeros), from any thread, if the backend has one (not HDFS,
    /// whose files are append-only). The log writes a segment's header
    /// this way once every earlier segment is durable, so that it may
    /// write the segment's other bytes before (`log::LogWriter`). A page
    /// that is written over is not durable before the next `sync` or
    /// `close`.
    fn header_writer(&self) -> Option<PosWriter> {
        None
    }
}

/// Writes bytes at an offset of the file, like `AppendFile::append` at the
/// file's end; callable from several threads at once.
pub type PosWriter = Box<dyn Fn(u64, &[u8]) -> Result<()> + Send + Sync>;

/// Makes everything appended to a file so far durable, like `AppendFile::sync`.
pub type Syncer = Box<dyn Fn() -> Result<()> + Send + Sync>;

/// A file open for positional reads, shareable between threads.
pub trait ReadFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`, or fails (short reads are errors).
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Current length of the file as readers see it.
    fn len(&self) -> Result<u64>;
    /// `read_exact_at` only if it needs no wait: the bytes are in memory
    /// (the host's page cache). `Ok(false)` otherwise, with `buf` in any
    /// state. Backends that cannot tell always say `false`.
    fn try_read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<bool> {
        let _ = (offset, buf);
        Ok(false)
    }
}

/// One entry of `Backend::usage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Name (not path).
    pub name: String,
    /// Bytes: a file's length, a subdirectory's total.
    pub bytes: u64,
    /// Last modification, as the storage records it (the NameNode's clock
    /// on HDFS, so comparable between hosts).
    pub modified: std::time::SystemTime,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// What `Backend::usage` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// The directory's entries, sorted by name.
    pub entries: Vec<DirEntry>,
    /// The directory's total bytes, as `du -sb` (local) or `hdfs dfs -du
    /// -s` (HDFS) counts them.
    pub total: u64,
}

/// `Usage` of a directory from a recursive listing: each item's path
/// relative to the directory, its length (0 for a directory), whether it
/// is a directory, and its modification time. The total is the sum of file
/// lengths (as `hdfs dfs -du -s` counts).
pub(crate) fn fold_usage<'a>(items: impl Iterator<Item = (&'a str, u64, bool, std::time::SystemTime)>) -> Usage {
    let mut by_name: std::collections::BTreeMap<String, DirEntry> = Default::default();
    let mut total = 0u64;
    for (rel, len, is_dir, modified) in items {
        let (top, nested) = match rel.trim_start_matches('/').split_once('/') {
            Some((t, _)) => (t, true),
            None => (rel.trim_start_matches('/'), false),
        };
        if top.is_empty() {
            continue;
        }
        let len = if is_dir { 0 } else { len };
        total += len;
        let e = by_name.entry(top.to_string()).or_insert_with(|| DirEntry {
            name: top.to_string(),
            bytes: 0,
            modified: std::time::UNIX_EPOCH,
            is_dir: nested,
        });
        e.bytes += len;
        if !nested {
            e.is_dir = is_dir;
            e.modified = modified;
        }
    }
    Usage { entries: by_name.into_values().collect(), total }
}

/// A storage backend. Paths are absolute, `/`-separated.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Creates a new, empty file; fails with `Exists` if it is already there.
    /// Parent directories are created as needed.
    fn create(&self, path: &str) -> Result<Box<dyn AppendFile>>;
    /// Opens a file for positional reads.
    fn open_read(&self, path: &str) -> Result<Arc<dyn ReadFile>>;
    /// Lists the names (not paths) in a directory; `NotFound` if it does not exist.
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// Lists a directory with each entry's bytes (a subdirectory: all it
    /// holds, recursively) and modification time, and the directory's
    /// total as the platform's own tool counts it: `du -sb` for a local
    /// directory (directories' own sizes included), the sum of file
    /// lengths (`hdfs dfs -du -s`, one replica) on HDFS.
    fn usage(&self, dir: &str) -> Result<Usage>;
    /// Renames a file; fails with `Exists` if `to` exists (never replaces).
    fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// Deletes a file.
    fn delete(&self, path: &str) -> Result<()>;
    /// Deletes an empty directory (or does nothing if it is absent).
    fn remove_dir(&self, dir: &str) -> Result<()>;
    /// Creates a directory and its missing parents (nothing if it exists).
    fn create_dir(&self, dir: &str) -> Result<()>;
    /// Whether `path` exists (file or directory).
    fn exists(&self, path: &str) -> Result<bool>;
    /// Takes the file at `path` away from a writer that may still be
    /// running: afterwards that writer's appends and close fail, and the file
    /// is closed with what the storage holds (HDFS lease recovery; it may
    /// finish in the background). Returns whether the file is closed now
    /// (ask again to follow a recovery in progress). Local files: nothing
    /// to do, a writer there is fenced by the lock alone.
    fn recover_lease(&self, path: &str) -> Result<bool>;
    /// Whether files have leases that `recover_lease` takes away (HDFS): a
    /// writer whose lock was broken may still hold segments open, and the
    /// next writer recovers their leases instead of deleting them.
    fn has_leases(&self) -> bool {
        false
    }
    /// How long a writer whose segment files can be written again (see
    /// `reads_see_unclosed_appends`) goes on retrying a failed segment write
    /// before the caller gets the error. The writer stays usable after it:
    /// the next write or flush tries again, so a VM paused on the error
    /// (`werror=stop`) resumes with `cont` once the backend is back. None:
    /// only the attempt count bounds the retries.
    fn retry_window(&self) -> Option<std::time::Duration> {
        None
    }
    /// Whether `AppendFile::sync` makes appended bytes durable. Local files:
    /// yes (fdatasync). HDFS: yes (hsync). Where it does not, the engine
    /// flushes by sealing the active segment (see docs/format.md).
    fn sync_is_durable(&self) -> bool;
    /// Whether readers see appended bytes before the writer closes the file.
    /// Local files do. HDFS does not (`hdfs-native` reads a file only up to
    /// its last complete block, even after an hsync), so the engine keeps
    /// the unsealed tail in memory and seals it where other openers must
    /// see a record (metadata operations, checkpoints).
    fn reads_see_unclosed_appends(&self) -> bool;
    /// Whether a writer can carry on after a failed `append` or `create`
    /// (ENOSPC, say) once the cause is gone: local files can (a failed
    /// create leaves no file, a partial append is cut back with
    /// `truncate`). HDFS cannot: a failed append may leave a broken block
    /// pipeline and a half-written file under our lease, so the engine's
    /// writer stays failed until the volume is reopened, whose recovery
    /// reads back what the log holds.
    fn append_is_repairable(&self) -> bool;
    /// Whether `create_direct` and `open_read_direct` bypass the host's page
    /// cache (local directories).
    fn can_bypass_cache(&self) -> bool {
        false
    }
    /// `create` for a file that the caller will append to in whole pages
    /// and that should bypass the host's page cache (O_DIRECT) where the
    /// backend can; elsewhere the same as `create`.
    fn create_direct(&self, path: &str) -> Result<Box<dyn AppendFile>> {
        self.create(path)
    }
    /// `open_read` bypassing the host's page cache where the backend can.
    fn open_read_direct(&self, path: &str) -> Result<Arc<dyn ReadFile>> {
        self.open_read(path)
    }
    /// Whether the engine may do this backend's I/O from threads of its
    /// own while appends go on: sync and close a full segment, write the
    /// periodic checkpoint (local files). The in-memory test backends say
    /// no, so that crash tests see their operations in one order.
    fn close_in_background(&self) -> bool {
        false
    }
    /// A local directory where the engine may keep its sled index cache for
    /// the volume at `volume_dir`, if the backend has a natural one.
    fn local_index_dir(&self, volume_dir: &str) -> Option<PathBuf>;
    /// Bytes free on the backend, if known.
    fn available_bytes(&self, dir: &str) -> Option<u64>;
}

/// `for_uri`, with a deadline of its own for the NameNode calls of an
/// HDFS volume (`OpenOptions::hdfs_timeout`; None: the process default).
pub fn for_uri_with(uri: &VolumeUri, hdfs_timeout: Option<std::time::Duration>) -> Result<Arc<dyn Backend>> {
    match (&uri.location, hdfs_timeout) {
        (Location::Hdfs { authority }, Some(t)) => Ok(Arc::new(
            hdfs::HdfsBackend::connect(authority.as_deref())?.with_timeout(t),
        )),
        _ => for_uri(uri),
    }
}

/// Returns the backend that serves `uri`.
pub fn for_uri(uri: &VolumeUri) -> Result<Arc<dyn Backend>> {
    match &uri.location {
        Location::Local => Ok(Arc::new(local::LocalBackend)),
        Location::Hdfs { authority } => {
            Ok(Arc::new(hdfs::HdfsBackend::connect(authority.as_deref())?))
        }
        #[cfg(any(test, feature = "mem-backend"))]
        Location::Mem { name } => mem::registry_get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("{uri}: no memory backend named {name:?} is registered"),
            )
        }),
        #[cfg(not(any(test, feature = "mem-backend")))]
        Location::Mem { .. } => Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{uri}: mem:// volumes live in the test-only memory backend, which \
                 this build leaves out; use local:// or hdfs://"
            ),
        )),
    }
}
