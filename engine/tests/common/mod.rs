//! Helpers shared by the integration tests: where a test's volumes live
//! (local directory, memory backend, the strict HDFS model, a real HDFS
//! named by `HLFS_TEST_HDFS`), deterministic data patterns, whole-volume
//! reads, and the backend conformance suite (`conformance`).
#![allow(dead_code)]

pub mod child;
pub mod conformance;

use hlfs::backend::mem::{registry_put, registry_remove, MemBackend};
use hlfs::backend::Backend;
use hlfs::{OpenOptions, Volume};
use std::sync::atomic::{AtomicU64, Ordering};

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A temporary local directory.
    Local,
    /// The memory backend; readers see appends at once.
    Mem,
    /// The strict HDFS model (`MemBackend::hdfs_model`): readers see a file
    /// only once it is closed, `sync` is not durable, single writer per file,
    /// no rename of open files or over existing ones.
    MemClosedOnly,
    /// A real HDFS: a fresh directory under `$HLFS_TEST_HDFS`.
    Hdfs,
}

/// `HLFS_TEST_HDFS` (hdfs://host:port/dir), if set.
pub fn hdfs_root() -> Option<String> {
    std::env::var("HLFS_TEST_HDFS")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().trim_end_matches('/').to_string())
}

/// The real HDFS to test against, or a panic explaining how to name one.
/// Tests that need it are `#[ignore]`d, so a plain `cargo test` reports them
/// as ignored, never as passed.
pub fn require_hdfs() -> String {
    hdfs_root().unwrap_or_else(|| {
        panic!("this test needs a real HDFS: set HLFS_TEST_HDFS=hdfs://host:port/dir (see docs/hdfs.md)")
    })
}

/// A fresh place for volumes: its URIs, options and raw backend access.
pub struct Place {
    pub kind: Kind,
    pub dir: tempfile::TempDir,
    pub mem: Option<MemBackend>,
    prefix: String,
    root: String,
    mem_name: Option<String>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(n) = &self.mem_name {
            registry_remove(n);
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Place {
    pub fn new(kind: Kind) -> Place {
        // Memory-backend tests keep only sled indexes on disk; tmpfs spares
        // them the fsyncs that would dominate their run time.
        let shm = std::path::Path::new("/dev/shm");
        let dir = match kind {
            Kind::Local => tempfile::tempdir(),
            _ if shm.is_dir() => tempfile::tempdir_in(shm),
            _ => tempfile::tempdir(),
        }
        .expect("tempdir");
        let (mem, prefix) = match kind {
            Kind::Local => (None, format!("local://{}", dir.path().display())),
            Kind::Hdfs => (
                None,
                format!(
                    "{}/t{}-{}-{}",
                    require_hdfs(),
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed),
                    mix(std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as u64)
                        % 1_000_000
                ),
            ),
            Kind::Mem | Kind::MemClosedOnly => {
                let b = if kind == Kind::Mem {
                    MemBackend::new()
                } else {
                    MemBackend::visible_after_close()
                };
                let name = format!(
                    "t{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                registry_put(&name, b.clone());
                (Some(b), format!("mem://{name}/vols"))
            }
        };
        let root = match kind {
            Kind::Local => dir.path().display().to_string(),
            Kind::Hdfs => hlfs::VolumeUri::parse(&format!("{prefix}/x"))
                .expect("HLFS_TEST_HDFS is an hdfs:// URI")
                .path
                .trim_end_matches("/x")
                .to_string(),
            _ => "/vols".to_string(),
        };
        let mem_name = prefix
            .strip_prefix("mem://")
            .map(|r| r.trim_end_matches("/vols").to_string());
        Place {
            kind,
            dir,
            mem,
            prefix,
            root,
            mem_name,
        }
    }

    /// URI of volume `name` in this place.
    pub fn uri(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// Backend path of volume `name`'s directory.
    pub fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }

    /// Open options: small segments and checkpoints, so that rollover and
    /// replay-after-checkpoint happen in small tests; memory-backend indexes
    /// go under the test's temporary directory.
    /// The backend holding this place's volumes.
    pub fn backend(&self) -> std::sync::Arc<dyn Backend> {
        let u = hlfs::VolumeUri::parse(&self.uri("x")).expect("place URI");
        hlfs::backend::for_uri(&u).expect("backend")
    }

    pub fn opts(&self) -> OpenOptions {
        OpenOptions {
            index_root: (self.kind != Kind::Local).then(|| self.dir.path().join("index")),
            segment_size: 256 << 10,
            checkpoint_every: 512 << 10,
            // The fault-injecting backends fail for good after a crash: one
            // more attempt, no waiting, keeps the rewrite path exercised
            // without the minute of waits a real cluster gets.
            rewrite_attempts: if self.kind == Kind::Hdfs { 10 } else { 2 },
            rewrite_wait: if self.kind == Kind::Hdfs {
                std::time::Duration::from_millis(500)
            } else {
                std::time::Duration::ZERO
            },
            ..Default::default()
        }
    }

    /// Removes everything under this place on a real HDFS (other places
    /// are temporary directories and memory backends that go by themselves).
    /// Tests call it at their end, so that a failed one leaves its files
    /// to look at.
    pub fn remove_hdfs(&self) {
        if self.kind != Kind::Hdfs {
            return;
        }
        let b = self.backend();
        let root = self.root.trim_end_matches('/');
        let mut todo = vec![root.to_string()];
        let mut dirs = Vec::new();
        while let Some(d) = todo.pop() {
            for n in b.list(&d).unwrap_or_default() {
                let p = format!("{d}/{n}");
                if b.delete(&p).is_err() {
                    todo.push(p);
                }
            }
            dirs.push(d);
        }
        for d in dirs.into_iter().rev() {
            let _ = b.remove_dir(&d);
        }
    }

    /// Every file under volume `name` (except the local sled index, which
    /// any read-write open touches), with its length: a fingerprint that
    /// changes whenever the volume's log, checkpoints, clones or lock do.
    pub fn listing(&self, name: &str) -> Vec<(String, u64)> {
        let dir = self.path(name);
        let mut out = Vec::new();
        if self.kind == Kind::Hdfs {
            let b = self.backend();
            let mut todo = vec![dir];
            while let Some(d) = todo.pop() {
                for n in b.list(&d).unwrap_or_default() {
                    let p = format!("{d}/{n}");
                    match b.open_read(&p).and_then(|f| f.len()) {
                        Ok(len) => out.push((p, len)),
                        Err(_) => todo.push(p),
                    }
                }
            }
            out.sort();
            return out;
        }
        match &self.mem {
            Some(m) => {
                for p in m.paths() {
                    if p.starts_with(&format!("{dir}/")) {
                        let len = m.open_read(&p).and_then(|f| f.len()).unwrap_or(0);
                        out.push((p, len));
                    }
                }
            }
            None => {
                let mut todo = vec![std::path::PathBuf::from(&dir)];
                while let Some(d) = todo.pop() {
                    let Ok(rd) = std::fs::read_dir(&d) else {
                        continue;
                    };
                    for e in rd {
                        let e = e.unwrap();
                        let md = e.metadata().unwrap();
                        if md.is_dir() {
                            if e.file_name() != "index" || d != std::path::Path::new(&dir) {
                                todo.push(e.path());
                            }
                        } else {
                            out.push((e.path().display().to_string(), md.len()));
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }
}

/// splitmix64: cheap, deterministic pseudo-random words.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` bytes that differ for every `seed` and every 8-byte position.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    let base = mix(seed);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(&mix(base ^ i).to_le_bytes());
        i += 1;
    }
    v.truncate(len);
    v
}

/// The whole volume as the engine reads it.
pub fn read_all(v: &Volume) -> Vec<u8> {
    let size = v.size() as usize;
    let mut out = vec![0u8; size];
    for (i, chunk) in out.chunks_mut(1 << 20).enumerate() {
        v.read((i << 20) as u64, chunk)
            .unwrap_or_else(|e| panic!("reading {} at {}: {e}", v.uri(), i << 20));
    }
    out
}

/// Asserts two images are equal, naming the first differing 4 KiB block
/// instead of printing megabytes.
#[track_caller]
pub fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: size differs");
    if got != want {
        let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
        panic!(
            "{what}: first difference at byte {i} (block {}): got {:02x?} want {:02x?}",
            i / 4096,
            &got[i..(i + 8).min(got.len())],
            &want[i..(i + 8).min(want.len())]
        );
    }
}

/// Names of the volume's snapshots, oldest first.
pub fn snap_names(v: &Volume) -> Vec<String> {
    v.snapshots()
        .expect("listing snapshots")
        .into_iter()
        .map(|s| s.name)
        .collect()
}
