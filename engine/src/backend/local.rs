//! The local-directory backend.

use super::{AppendFile, Backend, DirEntry, ReadFile, Usage};
use crate::error::{Error, ErrorKind, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files in a local directory tree.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalBackend;

struct LocalAppend {
    file: File,
    path: PathBuf,
    dir_synced: bool,
}

fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir)
        .map_err(|e| Error::io(format!("opening directory {}", dir.display()), e))?;
    d.sync_all()
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// A `Syncer` on a duplicate of `file`'s descriptor: fdatasync, and the
/// first time also of the directory, like `sync_file`.
fn syncer_for(file: &File, path: &Path) -> Option<super::Syncer> {
    let dup = file.try_clone().ok()?;
    let path = path.to_path_buf();
    let dir_synced = parking_lot::Mutex::new(false);
    Some(Box::new(move || sync_file(&dup, &path, &mut dir_synced.lock())))
}

/// fdatasync of a new file, and the first time also of its directory (so
/// that the file's name is durable too).
fn sync_file(file: &File, path: &Path, dir_synced: &mut bool) -> Result<()> {
    file.sync_data()
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
    if !*dir_synced {
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        *dir_synced = true;
    }
    Ok(())
}

impl AppendFile for LocalAppend {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(|e| Error::io(format!("appending to {}", self.path.display()), e))
    }

    fn sync(&mut self) -> Result<()> {
        sync_file(&self.file, &self.path, &mut self.dir_synced)
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        // The file is opened O_APPEND: the next append goes to the new end.
        self.file.set_len(len).map_err(|e| {
            Error::io(
                format!("truncating {} to {len} bytes", self.path.display()),
                e,
            )
        })
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.sync()
    }

    fn syncer(&self) -> Option<super::Syncer> {
        syncer_for(&self.file, &self.path)
    }

    fn header_writer(&self) -> Option<super::PosWriter> {
        // The file is O_APPEND, where pwrite appends: write through a
        // descriptor of its own.
        let file = OpenOptions::new().write(true).open(&self.path).ok()?;
        Some(write_at(file, self.path.clone()))
    }
}

/// Writes at an offset of `file` (not opened O_APPEND nor O_DIRECT).
fn write_at(file: File, path: PathBuf) -> super::PosWriter {
    Box::new(move |off: u64, data: &[u8]| {
        file.write_all_at(data, off)
            .map_err(|e| Error::io(format!("writing {} at offset {off}", path.display()), e))
    })
}

struct LocalRead {
    file: File,
    path: PathBuf,
}

/// Reads `buf` at `offset` only from the page cache (`preadv2` with
/// `RWF_NOWAIT`): `Ok(false)` as soon as any part would need the disk, or
/// where the kernel or filesystem does not offer that.
fn read_cached(file: &File, path: &Path, offset: u64, buf: &mut [u8]) -> Result<bool> {
    use std::os::fd::AsRawFd;
    let mut got = 0usize;
    while got < buf.len() {
        let iov = libc::iovec {
            iov_base: buf[got..].as_mut_ptr().cast(),
            iov_len: buf.len() - got,
        };
        // SAFETY: one iovec over the unread part of `buf`, valid for writes.
        let n = unsafe {
            libc::preadv2(file.as_raw_fd(), &iov, 1, (offset + got as u64) as libc::off_t, libc::RWF_NOWAIT)
        };
        if n > 0 {
            got += n as usize;
            continue;
        }
        if n == 0 {
            return Ok(false); // the end of the file: the blocking read says so
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                return Ok(false)
            }
            _ => {
                return Err(Error::io(
                    format!("reading {} at offset {offset}", path.display()),
                    e,
                ))
            }
        }
    }
    Ok(true)
}

impl ReadFile for LocalRead {
    fn try_read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<bool> {
        read_cached(&self.file, &self.path, offset, buf)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{}: short read of {} bytes at offset {offset}",
                        self.path.display(),
                        buf.len()
                    ),
                )
            } else {
                Error::io(
                    format!("reading {} at offset {offset}", self.path.display()),
                    e,
                )
            }
        })
    }

    fn len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))?
            .len())
    }
}

/// Alignment O_DIRECT needs for offsets, lengths and buffers (the largest
/// logical block size in use; the log's own page).
const DIRECT_ALIGN: usize = crate::format::PAGE;

/// A window of `len` bytes of `v` that starts at a `DIRECT_ALIGN`-aligned
/// address (`v` grows to hold it; its slack absorbs the alignment).
fn aligned(v: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if v.len() < len + DIRECT_ALIGN {
        v.resize(len + DIRECT_ALIGN, 0);
    }
    let pad = v.as_ptr().align_offset(DIRECT_ALIGN);
    &mut v[pad..pad + len]
}

fn is_aligned(offset: u64, len: usize) -> bool {
    offset % DIRECT_ALIGN as u64 == 0 && len % DIRECT_ALIGN == 0
}

/// Opens `path` with O_DIRECT added to `o`, or without it where the
/// filesystem refuses O_DIRECT (tmpfs says EINVAL): the page cache is then
/// used after all, and the log says so once.
fn open_direct(o: &mut OpenOptions, path: &Path) -> std::io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    match o.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "{}: the filesystem refuses O_DIRECT; using the page cache",
                    path.display()
                )
            });
            o.open(path).map(|f| (f, false))
        }
        Err(e) => Err(e),
    }
}

/// A segment written with O_DIRECT: whole pages at page offsets go straight
/// to the disk from an aligned copy; anything else (never the case for
/// format-2 segments) goes through the page cache at the same offset.
struct DirectAppend {
    file: File,
    direct: bool,
    path: PathBuf,
    pos: u64,
    dir_synced: bool,
    bounce: Vec<u8>,
}

/// Appends larger than this are copied through the bounce buffer in pieces.
const BOUNCE_MAX: usize = 4 << 20;

impl AppendFile for DirectAppend {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        let err = |e| Error::io(format!("appending to {}", self.path.display()), e);
        if !self.direct || !is_aligned(self.pos, data.len()) {
            // The page cache takes it (never the case for format-2 segments).
            self.file.write_all_at(data, self.pos).map_err(err)?;
            self.pos += data.len() as u64;
            return Ok(());
        }
        if data.as_ptr() as usize % DIRECT_ALIGN == 0 {
            // The log writer's tail buffers are page-aligned (`buf::AlignedBuf`).
            self.file.write_all_at(data, self.pos).map_err(err)?;
            self.pos += data.len() as u64;
            return Ok(());
        }
        for chunk in data.chunks(BOUNCE_MAX) {
            let b = aligned(&mut self.bounce, chunk.len());
            b.copy_from_slice(chunk);
            self.file.write_all_at(b, self.pos).map_err(err)?;
            self.pos += chunk.len() as u64;
        }
        if self.bounce.len() > BOUNCE_MAX + DIRECT_ALIGN {
            self.bounce = Vec::new();
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        // O_DIRECT skips the page cache, not the disk's cache: still sync.
        sync_file(&self.file, &self.path, &mut self.dir_synced)
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        self.file.set_len(len).map_err(|e| {
            Error::io(
                format!("truncating {} to {len} bytes", self.path.display()),
                e,
            )
        })?;
        self.pos = len;
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.sync()
    }

    fn syncer(&self) -> Option<super::Syncer> {
        syncer_for(&self.file, &self.path)
    }

    fn header_writer(&self) -> Option<super::PosWriter> {
        if self.direct {
            return self.positional();
        }
        // Written through the page cache (no O_DIRECT here): any offset.
        Some(write_at(self.file.try_clone().ok()?, self.path.clone()))
    }

    fn positional(&self) -> Option<super::PosWriter> {
        if !self.direct {
            return None;
        }
        let dup = self.file.try_clone().ok()?;
        let path = self.path.clone();
        Some(Box::new(move |off: u64, data: &[u8]| {
            let err = |e| Error::io(format!("writing {} at offset {off}", path.display()), e);
            if is_aligned(off, data.len()) && data.as_ptr() as usize % DIRECT_ALIGN == 0 {
                return dup.write_all_at(data, off).map_err(err);
            }
            // Not the log writer's own buffers (they are page-aligned):
            // through an aligned copy. Partial pages never come here (format-2
            // records are whole pages).
            if !is_aligned(off, data.len()) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{}: a write of {} bytes at offset {off} is not page-aligned",
                        path.display(),
                        data.len()
                    ),
                ));
            }
            let copy = crate::buf::AlignedBuf::from_slice(data);
            dup.write_all_at(&copy, off).map_err(err)
        }))
    }
}

/// A file read with O_DIRECT: aligned requests into aligned buffers go
/// straight from the disk; others through an aligned bounce buffer that
/// covers the pages around them.
struct DirectRead {
    file: File,
    direct: bool,
    path: PathBuf,
}

thread_local! {
    static READ_BOUNCE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl DirectRead {
    fn short(&self, offset: u64, len: usize) -> Error {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "{}: short read of {len} bytes at offset {offset}",
                self.path.display()
            ),
        )
    }

    /// Reads up to `buf.len()` bytes at `offset` (fewer only at the end of the file).
    fn read_upto(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("reading {} at offset {offset}", self.path.display()),
                        e,
                    ))
                }
            }
        }
        Ok(got)
    }
}

impl ReadFile for DirectRead {
    fn try_read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<bool> {
        // An O_DIRECT read always goes to the disk.
        if self.direct {
            return Ok(false);
        }
        read_cached(&self.file, &self.path, offset, buf)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if !self.direct
            || (is_aligned(offset, buf.len()) && buf.as_ptr().align_offset(DIRECT_ALIGN) == 0)
        {
            if self.read_upto(offset, buf)? < buf.len() {
                return Err(self.short(offset, buf.len()));
            }
            return Ok(());
        }
        let start = offset - offset % DIRECT_ALIGN as u64;
        let end = (offset + buf.len() as u64).div_ceil(DIRECT_ALIGN as u64) * DIRECT_ALIGN as u64;
        READ_BOUNCE.with_borrow_mut(|v| {
            let b = aligned(v, (end - start) as usize);
            let got = self.read_upto(start, b)?;
            let skip = (offset - start) as usize;
            if got < skip + buf.len() {
                return Err(self.short(offset, buf.len()));
            }
            buf.copy_from_slice(&b[skip..skip + buf.len()]);
            Ok(())
        })?;
        READ_BOUNCE.with_borrow_mut(|v| {
            if v.len() > (256 << 10) + DIRECT_ALIGN {
                *v = Vec::new();
            }
        });
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))?
            .len())
    }
}

impl Backend for LocalBackend {
    fn create_direct(&self, path: &str) -> Result<Box<dyn AppendFile>> {
        let p = PathBuf::from(path);
        // The plain create makes the parents, syncs them, and the file.
        drop(self.create(path)?);
        let (file, direct) = open_direct(OpenOptions::new().write(true), &p)
            .map_err(|e| Error::io(format!("opening {path} for direct writes"), e))?;
        Ok(Box::new(DirectAppend {
            file,
            direct,
            path: p,
            pos: 0,
            dir_synced: false,
            bounce: Vec::new(),
        }))
    }

    fn open_read_direct(&self, path: &str) -> Result<Arc<dyn ReadFile>> {
        let p = PathBuf::from(path);
        let (file, direct) = open_direct(OpenOptions::new().read(true), &p)
            .map_err(|e| Error::io(format!("opening {path}"), e))?;
        Ok(Arc::new(DirectRead {
            file,
            direct,
            path: p,
        }))
    }

    fn create(&self, path: &str) -> Result<Box<dyn AppendFile>> {
        let p = PathBuf::from(path);
        if let Some(parent) = p.parent() {
            if !parent.exists() {
                fs::create_dir_all(parent).map_err(|e| {
                    Error::io(format!("creating directory {}", parent.display()), e)
                })?;
                if let Some(pp) = parent.parent() {
                    sync_dir(pp)?;
                }
            }
        }
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&p)
            .map_err(|e| Error::io(format!("creating {path}"), e))?;
        Ok(Box::new(LocalAppend {
            file,
            path: p,
            dir_synced: false,
        }))
    }

    fn open_read(&self, path: &str) -> Result<Arc<dyn ReadFile>> {
        let file = File::open(path).map_err(|e| Error::io(format!("opening {path}"), e))?;
        Ok(Arc::new(LocalRead {
            file,
            path: PathBuf::from(path),
        }))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let rd = fs::read_dir(dir).map_err(|e| Error::io(format!("listing {dir}"), e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("listing {dir}"), e))?;
            out.push(ent.file_name().to_string_lossy().into_owned());
        }
        out.sort();
        Ok(out)
    }

    fn usage(&self, dir: &str) -> Result<Usage> {
        let err = |p: &Path, e: std::io::Error| Error::io(format!("measuring {}", p.display()), e);
        // `du -sb`: apparent sizes, directories' own included.
        fn tree(p: &Path, err: &dyn Fn(&Path, std::io::Error) -> Error) -> Result<u64> {
            let m = match fs::symlink_metadata(p) {
                Ok(m) => m,
                // Deleted while we looked (a cleaner, sled).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(err(p, e)),
            };
            let mut n = m.len();
            if m.is_dir() {
                let rd = match fs::read_dir(p) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(n),
                    Err(e) => return Err(err(p, e)),
                };
                for ent in rd {
                    n += tree(&ent.map_err(|e| err(p, e))?.path(), err)?;
                }
            }
            Ok(n)
        }
        let d = Path::new(dir);
        let own = fs::symlink_metadata(d).map_err(|e| err(d, e))?.len();
        let mut u = Usage { entries: Vec::new(), total: own };
        for ent in fs::read_dir(d).map_err(|e| err(d, e))? {
            let ent = ent.map_err(|e| err(d, e))?;
            let m = match fs::symlink_metadata(ent.path()) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(&ent.path(), e)),
            };
            let bytes = if m.is_dir() { tree(&ent.path(), &err)? } else { m.len() };
            u.total += bytes;
            u.entries.push(DirEntry {
                name: ent.file_name().to_string_lossy().into_owned(),
                bytes,
                modified: m.modified().unwrap_or(std::time::UNIX_EPOCH),
                is_dir: m.is_dir(),
            });
        }
        u.entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(u)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        // renameat2(RENAME_NOREPLACE) keeps the "never replace" rule atomic.
        let cfrom =
            std::ffi::CString::new(from).map_err(|_| crate::error::invalid("NUL in path"))?;
        let cto = std::ffi::CString::new(to).map_err(|_| crate::error::invalid("NUL in path"))?;
        // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                cfrom.as_ptr(),
                libc::AT_FDCWD,
                cto.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc != 0 {
            return Err(Error::io(
                format!("renaming {from} to {to}"),
                std::io::Error::last_os_error(),
            ));
        }
        if let Some(parent) = Path::new(to).parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    fn delete(&self, path: &str) -> Result<()> {
        fs::remove_file(path).map_err(|e| Error::io(format!("deleting {path}"), e))
    }

    fn remove_dir(&self, dir: &str) -> Result<()> {
        match fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing directory {dir}"), e)),
        }
    }

    fn create_dir(&self, dir: &str) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating directory {dir}"), e))
    }

    fn exists(&self, path: &str) -> Result<bool> {
        Ok(Path::new(path).exists())
    }

    fn recover_lease(&self, _path: &str) -> Result<bool> {
        Ok(true)
    }

    fn sync_is_durable(&self) -> bool {
        true
    }

    fn reads_see_unclosed_appends(&self) -> bool {
        true
    }

    fn append_is_repairable(&self) -> bool {
        true
    }

    fn can_bypass_cache(&self) -> bool {
        true
    }

    fn close_in_background(&self) -> bool {
        true
    }

    fn local_index_dir(&self, volume_dir: &str) -> Option<PathBuf> {
        Some(Path::new(volume_dir).join("index"))
    }

    fn available_bytes(&self, dir: &str) -> Option<u64> {
        let c = std::ffi::CString::new(dir).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c` is a valid C string and `st` points to writable memory of the right type.
        let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so it initialised `st`.
        let st = unsafe { st.assume_init() };
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }
}
