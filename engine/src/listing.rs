//! The volumes in a directory and the space of the filesystem under it, for
//! storage pools: libvirt refreshes a pool by listing its directory.
//!
//! Listing opens nothing and takes no lock: a directory is a volume when it
//! holds at least one segment file, as `Volume::open` decides.

use crate::backend::{self, Backend};
use crate::error::{invalid, not_found, Result};
use crate::log;
use crate::uri::{Location, VolumeUri};

/// A directory of volumes, as listed by [`list_dir`].
#[derive(Debug, Clone)]
pub struct VolumeDir {
    /// The directory, canonical.
    pub uri: VolumeUri,
    /// The volumes directly inside it, sorted by name.
    pub volumes: Vec<VolumeUri>,
    /// Total bytes of the filesystem that holds the directory, if the backend can tell.
    pub capacity: Option<u64>,
    /// Bytes free for unprivileged users there, if the backend can tell.
    pub available: Option<u64>,
}

/// Lists the volumes directly inside the directory `dir_uri`
/// (`[hlfs:]local:///var/lib/hlfs/vms`). Entries that are not volumes (plain
/// files, other directories) are skipped, and so are names a volume URI
/// cannot carry (`%`, control characters).
///
/// Fails with `InvalidArgument` if `dir_uri` names a snapshot and `NotFound`
/// if the directory does not exist.
pub fn list_dir(dir_uri: &str) -> Result<VolumeDir> {
    let dir = dir_uri_of(dir_uri)?;
    let backend = backend::for_uri(&dir)?;
    if !backend.exists(&dir.path)? {
        return Err(not_found(format!("directory {dir} does not exist")));
    }
    let mut volumes = Vec::new();
    for name in backend.list(&dir.path)? {
        if name.contains('%') || name.chars().any(char::is_control) {
            tracing::debug!("{dir}: skipping {name:?}: not a name a volume URI can carry");
            continue;
        }
        let uri = VolumeUri {
            path: format!("{}/{name}", dir.path),
            ..dir.clone()
        };
        if holds_segments(&*backend, &uri) {
            volumes.push(uri);
        }
    }
    let (capacity, available) = match dir.location {
        Location::Local => statvfs(&dir.path).map_or((None, None), |(c, a)| (Some(c), Some(a))),
        _ => (None, backend.available_bytes(&dir.path)),
    };
    Ok(VolumeDir {
        uri: dir,
        volumes,
        capacity,
        available,
    })
}

/// Creates the directory `dir_uri` for volumes, with its missing parents
/// (`virsh pool-build` of an `hlfs` pool); an existing directory is fine.
/// HDFS has no other way here to make an empty directory: volumes create
/// theirs when they are created.
pub fn create_dir(dir_uri: &str) -> Result<()> {
    let dir = dir_uri_of(dir_uri)?;
    backend::for_uri(&dir)?.create_dir(&dir.path)
}

/// Removes the empty directory `dir_uri` (`virsh pool-delete`). Fails with
/// `NotFound` if it does not exist and `InUse` if it holds anything.
pub fn remove_dir(dir_uri: &str) -> Result<()> {
    let dir = dir_uri_of(dir_uri)?;
    let backend = backend::for_uri(&dir)?;
    if !backend.exists(&dir.path)? {
        return Err(not_found(format!("directory {dir} does not exist")));
    }
    let entries = match backend.list(&dir.path) {
        Ok(e) => e,
        Err(e) if e.kind() == crate::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    if !entries.is_empty() {
        return Err(crate::Error::new(
            crate::ErrorKind::InUse,
            format!(
                "directory {dir} is not empty ({} entries, e.g. {:?}); delete the volumes in it first (hlfs delete)",
                entries.len(),
                entries[0]
            ),
        ));
    }
    backend.remove_dir(&dir.path)
}

fn dir_uri_of(dir_uri: &str) -> Result<VolumeUri> {
    let dir = VolumeUri::parse(dir_uri)?;
    if let Some(s) = &dir.snapshot {
        return Err(invalid(format!(
            "{dir_uri} names snapshot {s:?}; a directory of volumes has no snapshots, give {}",
            dir.without_snapshot()
        )));
    }
    Ok(dir)
}

/// Whether `uri` (its volume part) is an existing volume: a directory with
/// at least one segment file. Nothing is opened and no lock is taken.
pub fn is_volume(uri: &VolumeUri) -> Result<bool> {
    let backend = backend::for_uri(uri)?;
    Ok(holds_segments(&*backend, uri))
}

fn holds_segments(backend: &dyn Backend, uri: &VolumeUri) -> bool {
    // Plain files are common in a pool directory (images, notes); listing
    // them as directories fails, which is not worth a warning.
    if uri.location == Location::Local && !std::path::Path::new(&uri.path).is_dir() {
        return false;
    }
    match log::list_segments(backend, &uri.path) {
        Ok(segs) => !segs.is_empty(),
        Err(e) if e.kind() == crate::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!("skipping {uri}: {e}");
            false
        }
    }
}

/// (total, available) bytes of the filesystem holding the local `path`.
// The statvfs field types are u64 here but narrower on 32-bit targets.
#[allow(clippy::unnecessary_cast)]
fn statvfs(path: &str) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated string and `st` points to
    // writable memory of the type statvfs fills; both outlive the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Volume;

    #[test]
    fn lists_only_volumes_and_refuses_snapshots_and_missing_dirs() {
        // Property: volumes are found by name order, plain directories and
        // files are skipped, a volume open read-write is still listed, a
        // `%snap` directory URI is an invalid argument and a missing
        // directory is not found.
        let t = tempfile::tempdir().unwrap();
        let d = format!("local://{}", t.path().display());
        Volume::create(&format!("{d}/b"), 1 << 20).unwrap();
        Volume::create(&format!("{d}/a"), 1 << 20).unwrap();
        std::fs::create_dir(t.path().join("plain")).unwrap();
        std::fs::write(t.path().join("file"), b"x").unwrap();
        let held = Volume::open(&format!("{d}/b"), &crate::OpenOptions::default()).unwrap();
        let l = list_dir(&format!("hlfs:{d}/")).unwrap();
        let names: Vec<&str> = l.volumes.iter().map(|u| u.volume_name()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(l.uri.to_string(), d);
        assert!(l.capacity.unwrap() >= l.available.unwrap());
        held.close().unwrap();
        let e = list_dir(&format!("{d}%s")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        let e = list_dir(&format!("{d}/nope")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert!(is_volume(&VolumeUri::parse(&format!("{d}/a")).unwrap()).unwrap());
        assert!(!is_volume(&VolumeUri::parse(&format!("{d}/plain")).unwrap()).unwrap());
    }
}
