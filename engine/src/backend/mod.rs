//! Where segment files live. The trait holds only what HDFS can also do:
//! create a file, append, make it durable, close, read at an offset, list,
//! rename and delete. Nothing is ever overwritten in place.

pub mod local;
pub mod mem;

use crate::error::{Error, ErrorKind, Result};
use crate::uri::{Location, VolumeUri};
use std::path::PathBuf;
use std::sync::Arc;

/// A file being written: append-only, made durable by `sync`.
pub trait AppendFile: Send {
    /// Appends `data` at the end of the file.
    fn append(&mut self, data: &[u8]) -> Result<()>;
    /// Returns once everything appended so far is durable, including the
    /// file's existence (its directory entry).
    fn sync(&mut self) -> Result<()>;
    /// Syncs and closes the file.
    fn close(self: Box<Self>) -> Result<()>;
}

/// A file open for positional reads, shareable between threads.
pub trait ReadFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`, or fails (short reads are errors).
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Current length of the file as readers see it.
    fn len(&self) -> Result<u64>;
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
    /// Renames a file; fails with `Exists` if `to` exists (never replaces).
    fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// Deletes a file.
    fn delete(&self, path: &str) -> Result<()>;
    /// Deletes an empty directory (or does nothing if it is absent).
    fn remove_dir(&self, dir: &str) -> Result<()>;
    /// Whether `path` exists (file or directory).
    fn exists(&self, path: &str) -> Result<bool>;
    /// Whether readers see appended bytes before the writer closes the file.
    /// Local files do; HDFS does not, so the engine keeps the unsealed tail in memory.
    fn reads_see_unclosed_appends(&self) -> bool;
    /// A local directory where the engine may keep its sled index cache for
    /// the volume at `volume_dir`, if the backend has a natural one.
    fn local_index_dir(&self, volume_dir: &str) -> Option<PathBuf>;
    /// Bytes free on the backend, if known.
    fn available_bytes(&self, dir: &str) -> Option<u64>;
}

/// Returns the backend that serves `uri`.
pub fn for_uri(uri: &VolumeUri) -> Result<Arc<dyn Backend>> {
    match &uri.location {
        Location::Local => Ok(Arc::new(local::LocalBackend)),
        Location::Hdfs { .. } => Err(Error::new(
            ErrorKind::Unsupported,
            format!("{uri}: HDFS backend not built yet; use a local:/// volume for now"),
        )),
        Location::Mem { name } => mem::registry_get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("{uri}: no memory backend named {name:?} is registered"),
            )
        }),
    }
}
