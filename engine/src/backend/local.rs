//! The local-directory backend.

use super::{AppendFile, Backend, ReadFile};
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

impl AppendFile for LocalAppend {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(|e| Error::io(format!("appending to {}", self.path.display()), e))
    }

    fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))?;
        if !self.dir_synced {
            if let Some(parent) = self.path.parent() {
                sync_dir(parent)?;
            }
            self.dir_synced = true;
        }
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> Result<()> {
        // The file is opened O_APPEND: the next append goes to the new end.
        self.file
            .set_len(len)
            .map_err(|e| Error::io(format!("truncating {} to {len} bytes", self.path.display()), e))
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.sync()
    }
}

struct LocalRead {
    file: File,
    path: PathBuf,
}

impl ReadFile for LocalRead {
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

impl Backend for LocalBackend {
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

    fn exists(&self, path: &str) -> Result<bool> {
        Ok(Path::new(path).exists())
    }

    fn recover_lease(&self, _path: &str) -> Result<()> {
        Ok(())
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
