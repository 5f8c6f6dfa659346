//! The C ABI (`libhlfs.so`, `include/hlfs.h`) that QEMU's block driver calls.
//!
//! Ownership rules, stated once and relied on by every `// SAFETY:` below:
//! - `hlfs_volume *` is a `Box<Volume>` turned into a raw pointer by
//!   `hlfs_open` and turned back (and dropped) only by `hlfs_close`. Between
//!   the two, any number of threads may call the I/O functions with it;
//!   `Volume` is `Sync`.
//! - Input strings are borrowed NUL-terminated C strings, valid for the call.
//! - Messages stored through `errp` and snapshot arrays are allocated with
//!   `malloc` and owned by the caller (`hlfs_string_free` /
//!   `hlfs_snapshot_list_free`, or plain `free`).
//! - Every entry point runs under `catch_unwind`: a panic becomes `-EIO`
//!   and never unwinds into C.

use crate::error::{Error, ErrorKind};
use crate::volume::{clone_volume, BackgroundGc, BlockState, GcThread, OpenOptions, Volume};
use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Opaque handle to an open volume (C: `hlfs_volume`): the volume and, when
/// it is open read-write, its background cleaner (`HLFS_GC=off` or the
/// `cleaner=off` open option disables it; see `parse_open_options`).
pub struct HlfsVolume(Arc<Volume>, Option<GcThread>);

/// C mirror of `hlfs_snapshot_info`.
#[repr(C)]
pub struct HlfsSnapshotInfo {
    /// NUL-terminated name.
    pub name: [c_char; 256],
    /// Snapshot id.
    pub id: u64,
    /// Creation time, seconds.
    pub ctime_sec: u64,
    /// Creation time, nanoseconds.
    pub ctime_nsec: u32,
    /// Virtual size at snapshot time.
    pub virtual_size: u64,
    /// Bytes held by the snapshot's own timeline.
    pub bytes: u64,
    /// Bytes of VM state saved with it (0: disk-only).
    pub vm_state_size: u64,
    /// The guest clock when its VM state was saved, in nanoseconds.
    pub vm_clock_nsec: u64,
}

/// `HLFS_OPEN_RDWR`.
pub const HLFS_OPEN_RDWR: u32 = 1;
/// `hlfs_open` flag: bypass the host page cache (O_DIRECT segments).
pub const HLFS_OPEN_DIRECT: u32 = 2;

fn malloc_cstring(s: &str) -> *mut c_char {
    let bytes = s.as_bytes();
    let n = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    // SAFETY: malloc with a non-zero size; the result is checked for NULL.
    let p = unsafe { libc::malloc(n + 1) } as *mut u8;
    if p.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: `p` points to n+1 writable bytes; `bytes` has at least n readable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, n);
        *p.add(n) = 0;
    }
    p as *mut c_char
}

fn set_err(errp: *mut *mut c_char, msg: &str) {
    if !errp.is_null() {
        // SAFETY: the caller passes either NULL (checked) or a valid `char **`.
        unsafe { *errp = malloc_cstring(msg) };
    }
}

fn errno_of(e: &Error) -> c_int {
    -e.kind().errno()
}

/// Runs `f`, converting errors and panics to a negative errno (and a message).
fn guard(errp: *mut *mut c_char, f: impl FnOnce() -> Result<c_int, Error>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            if errp.is_null() {
                report(&e.to_string());
            }
            set_err(errp, &e.to_string());
            errno_of(&e)
        }
        Err(_) => {
            let m = "internal error in libhlfs (panic); please report it";
            if errp.is_null() {
                report(m);
            }
            set_err(errp, m);
            -libc::EIO
        }
    }
}

/// Prints the message of a failed call that has no `errp` (reads, writes,
/// flushes: QEMU only gets an errno from them) to stderr, QEMU's log, as
/// "hlfs: MESSAGE", so that an EIO the guest sees can be traced to its
/// cause. A message repeated within a second is printed once, with a count
/// when it changes, so a failing device does not flood the log.
fn report(msg: &str) {
    use std::io::Write;
    use std::time::{Duration, Instant};
    static LAST: parking_lot::Mutex<Option<(String, Instant, u64)>> = parking_lot::Mutex::new(None);
    let mut last = LAST.lock();
    let now = Instant::now();
    if let Some((m, at, n)) = last.as_mut() {
        if m == msg && now.duration_since(*at) < Duration::from_secs(1) {
            *n += 1;
            return;
        }
        if *n > 0 {
            let _ = writeln!(std::io::stderr(), "hlfs: (the last message {n} more times)");
        }
    }
    let _ = writeln!(std::io::stderr(), "hlfs: {msg}");
    *last = Some((msg.to_string(), now, 0));
}

fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{what} is NULL"),
        ));
    }
    // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string valid for the call.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("{what} is not valid UTF-8"),
        )
    })
}

fn vol<'a>(v: *mut HlfsVolume) -> Result<&'a Volume, Error> {
    if v.is_null() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "volume handle is NULL",
        ));
    }
    // SAFETY: non-NULL handles come from `hlfs_open` and stay valid until `hlfs_close`,
    // which the caller must not race with other calls.
    Ok(unsafe { &(*v).0 })
}

/// Frees a message returned through `errp`.
///
/// # Safety
/// `s` must be NULL or a pointer returned through `errp` by this library, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn hlfs_string_free(s: *mut c_char) {
    // SAFETY: per the contract, `s` is NULL or came from malloc in `malloc_cstring`.
    unsafe { libc::free(s as *mut libc::c_void) }
}

/// The library version (static string).
#[no_mangle]
pub extern "C" fn hlfs_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// Creates a volume.
///
/// # Safety
/// `uri` must be a valid C string; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_create(
    uri: *const c_char,
    size: u64,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        Volume::create(str_arg(uri, "uri")?, size)?;
        Ok(0)
    })
}

/// Makes `uri` a clone of snapshot `base`.
///
/// # Safety
/// `base` and `uri` must be valid C strings; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_clone(
    base: *const c_char,
    uri: *const c_char,
    size: u64,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        clone_volume(
            str_arg(base, "base")?,
            str_arg(uri, "uri")?,
            (size != 0).then_some(size),
        )?;
        Ok(0)
    })
}

/// Fixes glibc's mmap threshold for the process (once, at the first open):
/// allocations of 256 KiB and more are mmap'd and go back to the kernel
/// when freed. By default glibc raises the threshold to the size of each
/// large block freed (up to 32 MiB), after which the engine's megabyte
/// buffers (log tails, write chunks, O_DIRECT copies), allocated and freed
/// by many of QEMU's pool threads, stay in per-thread arenas: measured
/// with `qemu-img bench`, 1 MiB sequential writes left QEMU at 290 MiB RSS
/// against 80 MiB with the threshold fixed, at the same speed
/// (docs/design.md §11). `HLFS_MALLOC_TUNE=0` leaves malloc alone.
fn tune_malloc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("HLFS_MALLOC_TUNE").as_deref() == Ok("0") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only sets a malloc parameter; any value is valid.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        }
    });
}

/// The keys `hlfs_open_opts` takes (hlfs.h lists them with their meaning;
/// QEMU's `BlockdevOptionsHlfs` members and libvirt's `<hlfs>` attributes
/// have the same names).
pub const OPEN_OPTION_KEYS: &[&str] = &[
    "cleaner",
    "cleaner-interval",
    "cleaner-ratio",
    "cleaner-min-dead",
    "cleaner-rate",
    "index-dir",
    "hdfs-timeout",
    "map-memory",
];

/// The open options and cleaner policy that `pairs` (key, value) ask for,
/// on top of the defaults and their environment variables. A bad key or
/// value is an `InvalidArgument` error naming the key.
pub fn parse_open_options(
    pairs: &[(&str, &str)],
    mut opts: OpenOptions,
) -> Result<(OpenOptions, Option<BackgroundGc>), Error> {
    let env = BackgroundGc::from_env();
    let mut on = env.is_some();
    let mut policy = env.unwrap_or_default();
    for &(key, value) in pairs {
        let bad = |what: &str| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("hlfs option {key}: '{value}' {what}"),
            )
        };
        let seconds = || -> Result<std::time::Duration, Error> {
            value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
                .map(std::time::Duration::from_secs_f64)
                .ok_or_else(|| bad("is not a positive number of seconds, such as 30 or 0.5"))
        };
        let size = || -> Result<u64, Error> {
            crate::size::parse_size(value)
                .map_err(|_| bad("is not a size in bytes, such as 268435456 or 256M"))
        };
        match key {
            "cleaner" => match value {
                "on" | "true" | "1" => on = true,
                "off" | "false" | "0" => on = false,
                _ => return Err(bad("is neither on nor off")),
            },
            "cleaner-interval" => {
                policy.interval = seconds()?;
            }
            "cleaner-ratio" => {
                policy.max_log_ratio = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r >= 1.0)
                    .ok_or_else(|| {
                        bad("is not a number of at least 1 (the log may grow to that many times the live data, e.g. 1.5)")
                    })?;
            }
            "cleaner-min-dead" => {
                policy.min_dead_bytes = size()?;
            }
            "cleaner-rate" => {
                policy.max_rate = size()?;
                if policy.max_rate == 0 {
                    return Err(bad("is 0; give the bytes per second the cleaner may copy, such as 32M (cleaner=off stops it)"));
                }
            }
            "index-dir" => {
                let p = std::path::PathBuf::from(value);
                if !p.is_absolute() {
                    return Err(bad("is not an absolute path"));
                }
                opts.index_root = Some(p);
            }
            "hdfs-timeout" => opts.hdfs_timeout = Some(seconds()?),
            "map-memory" => {
                opts.map_memory = size()?;
                if opts.map_memory < 1 << 20 {
                    return Err(bad("is less than 1 MiB"));
                }
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "unknown hlfs option '{key}'; known: {}",
                        OPEN_OPTION_KEYS.join(", ")
                    ),
                ))
            }
        }
    }
    Ok((opts, on.then_some(policy)))
}

fn open_with(
    uri: *const c_char,
    flags: u32,
    pairs: &[(&str, &str)],
    out: *mut *mut HlfsVolume,
) -> Result<c_int, Error> {
    if out.is_null() {
        return Err(Error::new(ErrorKind::InvalidArgument, "out is NULL"));
    }
    tune_malloc();
    let base = OpenOptions {
        read_only: flags & HLFS_OPEN_RDWR == 0,
        direct_io: flags & HLFS_OPEN_DIRECT != 0,
        ..Default::default()
    };
    let (opts, policy) = parse_open_options(pairs, base)?;
    let v = Arc::new(Volume::open(str_arg(uri, "uri")?, &opts)?);
    v.watch();
    let gc = match policy {
        Some(policy) if !opts.read_only => Some(v.spawn_gc(policy)?),
        _ => None,
    };
    // SAFETY: `out` is non-NULL and valid for writes per the contract.
    unsafe { *out = Box::into_raw(Box::new(HlfsVolume(v, gc))) };
    Ok(0)
}

/// Opens a volume; on success stores a handle in `*out`.
///
/// # Safety
/// `uri` must be a valid C string, `out` a valid `hlfs_volume **`, `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_open(
    uri: *const c_char,
    flags: u32,
    out: *mut *mut HlfsVolume,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || open_with(uri, flags, &[], out))
}

/// `hlfs_open` with tunables: `keys[i]` = `values[i]` for `i < count`.
///
/// # Safety
/// As `hlfs_open`; `keys` and `values` valid for `count` C strings each
/// (either may be NULL when `count` is 0).
#[no_mangle]
pub unsafe extern "C" fn hlfs_open_opts(
    uri: *const c_char,
    flags: u32,
    keys: *const *const c_char,
    values: *const *const c_char,
    count: usize,
    out: *mut *mut HlfsVolume,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        if count > 0 && (keys.is_null() || values.is_null()) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "hlfs_open_opts: keys or values is NULL with a non-zero count",
            ));
        }
        let mut pairs = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: both arrays hold `count` elements per the contract.
            let (k, v) = unsafe { (*keys.add(i), *values.add(i)) };
            let key = str_arg(k, "option key")?;
            pairs.push((key, str_arg(v, key)?));
        }
        open_with(uri, flags, &pairs, out)
    })
}

/// Closes a volume (flush, checkpoint, unlock) and frees the handle.
///
/// # Safety
/// `v` must be NULL or a handle from `hlfs_open` not yet closed, with no call racing this one.
#[no_mangle]
pub unsafe extern "C" fn hlfs_close(v: *mut HlfsVolume) {
    if v.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `v` came from Box::into_raw in `hlfs_open` and is closed only once.
        let b = unsafe { Box::from_raw(v) };
        let HlfsVolume(vol, gc) = *b;
        // The cleaner holds the volume only during a pass: once it has
        // stopped, this is the last reference.
        drop(gc);
        match Arc::try_unwrap(vol) {
            Ok(vol) => {
                if let Err(e) = vol.close() {
                    tracing::error!("closing volume: {e}");
                }
            }
            Err(_) => tracing::error!(
                "closing volume: still in use by another thread; it closes when that ends"
            ),
        }
    }));
}

/// Reads `len` bytes at `offset` into `buf`.
///
/// # Safety
/// `v` a live handle; `buf` valid for `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn hlfs_pread(
    v: *mut HlfsVolume,
    buf: *mut libc::c_void,
    len: u64,
    offset: u64,
) -> c_int {
    guard(std::ptr::null_mut(), || {
        let vol = vol(v)?;
        if len == 0 {
            return Ok(0);
        }
        // SAFETY: the caller guarantees `buf` is valid for `len` writable bytes for the call.
        let b = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, len as usize) };
        vol.read(offset, b)
            .inspect_err(|e| tracing::error!("{e}"))?;
        Ok(0)
    })
}

/// Writes `len` bytes from `buf` at `offset`.
///
/// # Safety
/// `v` a live handle; `buf` valid for `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn hlfs_pwrite(
    v: *mut HlfsVolume,
    buf: *const libc::c_void,
    len: u64,
    offset: u64,
) -> c_int {
    guard(std::ptr::null_mut(), || {
        let vol = vol(v)?;
        if len == 0 {
            return Ok(0);
        }
        // SAFETY: the caller guarantees `buf` is valid for `len` readable bytes for the call.
        let b = unsafe { std::slice::from_raw_parts(buf as *const u8, len as usize) };
        vol.write(offset, b)
            .inspect_err(|e| tracing::error!("{e}"))?;
        Ok(0)
    })
}

/// An iovec list, checked (empty buffers dropped). Read and write callers
/// turn the entries into `&mut [u8]` or `&[u8]` themselves: a write's
/// buffers may be shared by concurrent requests, so they must never be
/// seen as mutable.
///
/// # Safety
/// `iov` valid for `iovcnt` entries.
unsafe fn iovecs<'a>(
    iov: *const libc::iovec,
    iovcnt: c_int,
) -> crate::error::Result<Vec<&'a libc::iovec>> {
    if iovcnt < 0 || (iovcnt > 0 && iov.is_null()) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("bad iovec list ({iovcnt} entries at {iov:?})"),
        ));
    }
    // SAFETY: the caller guarantees `iov` holds `iovcnt` entries.
    let list = unsafe { std::slice::from_raw_parts(iov, iovcnt as usize) };
    Ok(list.iter().filter(|e| e.iov_len > 0).collect())
}

/// A write's iovec list as shared slices (never mutable: see `iovecs`).
///
/// # Safety
/// `iov` valid for `iovcnt` entries, each buffer valid for its length for `'a`.
unsafe fn write_parts<'a>(iov: *const libc::iovec, iovcnt: c_int) -> crate::error::Result<Vec<&'a [u8]>> {
    // SAFETY: forwarded from the caller.
    let list = unsafe { iovecs(iov, iovcnt) }?;
    Ok(list
        .iter()
        // SAFETY: the caller guarantees each buffer is valid for its length.
        .map(|e| unsafe { std::slice::from_raw_parts(e.iov_base as *const u8, e.iov_len) })
        .collect())
}

/// Reads into the concatenation of `iovcnt` buffers from `offset`.
///
/// # Safety
/// `v` a live handle; `iov` valid for `iovcnt` entries, each buffer valid
/// for its length and writable.
#[no_mangle]
pub unsafe extern "C" fn hlfs_preadv(
    v: *mut HlfsVolume,
    iov: *const libc::iovec,
    iovcnt: c_int,
    offset: u64,
) -> c_int {
    guard(std::ptr::null_mut(), || {
        let vol = vol(v)?;
        // SAFETY: forwarded from the caller.
        let mut bufs = unsafe { read_bufs(iov, iovcnt) }?;
        vol.read_vectored(offset, &mut bufs)
            .inspect_err(|e| tracing::error!("{e}"))?;
        Ok(0)
    })
}

/// A read's iovec list as mutable slices. Buffers that follow each other
/// in memory (guest pages often do) become one, so that most requests read
/// straight into one buffer.
///
/// # Safety
/// As `hlfs_preadv`'s `iov`, for `'a`.
unsafe fn read_bufs<'a>(iov: *const libc::iovec, iovcnt: c_int) -> crate::error::Result<Vec<&'a mut [u8]>> {
    // SAFETY: forwarded from the caller.
    let list = unsafe { iovecs(iov, iovcnt) }?;
    let mut joined: Vec<(*mut u8, usize)> = Vec::with_capacity(list.len());
    for e in list.iter().filter(|e| e.iov_len > 0) {
        let base = e.iov_base as *mut u8;
        match joined.last_mut() {
            Some((b, l)) if b.wrapping_add(*l) == base => *l += e.iov_len,
            _ => joined.push((base, e.iov_len)),
        }
    }
    Ok(joined
        .into_iter()
        // SAFETY: the caller guarantees each buffer is valid and writable
        // for its length, and does not overlap another; two adjacent ones
        // are one valid range.
        .map(|(b, l)| unsafe { std::slice::from_raw_parts_mut(b, l) })
        .collect())
}

/// `hlfs_preadv` if it can complete at once: every block is a hole, in the
/// log's memory or in the host's page cache, and no lock it needs is busy.
/// Returns 0 when done, -EAGAIN when the caller should call `hlfs_preadv`
/// (from a thread that may block; the buffers may hold anything meanwhile).
/// Errors are left to that call, so this returns only 0 or -EAGAIN (or
/// -EINVAL for a null handle, like every call).
///
/// # Safety
/// As `hlfs_preadv`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_try_preadv(
    v: *mut HlfsVolume,
    iov: *const libc::iovec,
    iovcnt: c_int,
    offset: u64,
) -> c_int {
    guard(std::ptr::null_mut(), || {
        let vol = vol(v)?;
        // SAFETY: forwarded from the caller.
        let Ok(mut bufs) = (unsafe { read_bufs(iov, iovcnt) }) else {
            return Ok(-libc::EAGAIN);
        };
        Ok(if vol.try_read_vectored(offset, &mut bufs) { 0 } else { -libc::EAGAIN })
    })
}

/// Writes the concatenation of `iovcnt` buffers at `offset`.
///
/// # Safety
/// `v` a live handle; `iov` valid for `iovcnt` entries, each buffer valid
/// for its length.
#[no_mangle]
pub unsafe extern "C" fn hlfs_pwritev(
    v: *mut HlfsVolume,
    iov: *const libc::iovec,
    iovcnt: c_int,
    offset: u64,
) -> c_int {
    guard(std::ptr::null_mut(), || {
        let vol = vol(v)?;
        // SAFETY: forwarded from the caller.
        let parts = unsafe { write_parts(iov, iovcnt) }?;
        vol.write_vectored(offset, &parts)
            .inspect_err(|e| tracing::error!("{e}"))?;
        Ok(0)
    })
}

/// `hlfs_pwritev` if it can complete at once, without I/O or waiting for
/// a lock (a block-aligned write that the log's in-memory tail takes):
/// returns 0 when done, -EAGAIN when the caller should use `hlfs_pwritev`
/// (from a thread that may block), or another negative errno.
///
/// # Safety
/// As `hlfs_pwritev`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_try_pwritev(
    v: *mut HlfsVolume,
    iov: *const libc::iovec,
    iovcnt: c_int,
    offset: u64,
) -> c_int {
    guard(std::ptr::null_mut(), || {
        let vol = vol(v)?;
        // SAFETY: forwarded from the caller.
        let parts = unsafe { write_parts(iov, iovcnt) }?;
        match vol.try_write_vectored(offset, &parts) {
            Ok(true) => Ok(0),
            Ok(false) => Ok(-libc::EAGAIN),
            Err(e) => {
                tracing::error!("{e}");
                Err(e)
            }
        }
    })
}

/// Makes completed writes durable.
///
/// # Safety
/// `v` a live handle.
#[no_mangle]
pub unsafe extern "C" fn hlfs_flush(v: *mut HlfsVolume) -> c_int {
    guard(std::ptr::null_mut(), || {
        vol(v)?.flush().inspect_err(|e| tracing::error!("{e}"))?;
        Ok(0)
    })
}

/// Switches the open volume to bypassing the host's page cache (`on` != 0)
/// or to using it, as `HLFS_OPEN_DIRECT` chose at open.
///
/// # Safety
/// `v` a live handle.
#[no_mangle]
pub unsafe extern "C" fn hlfs_set_direct(v: *mut HlfsVolume, on: c_int) -> c_int {
    guard(std::ptr::null_mut(), || {
        vol(v)?.set_direct_io(on != 0).inspect_err(|e| tracing::error!("{e}"))?;
        Ok(0)
    })
}

/// Discards a range (reads as zeros).
///
/// # Safety
/// `v` a live handle.
#[no_mangle]
pub unsafe extern "C" fn hlfs_discard(v: *mut HlfsVolume, offset: u64, len: u64) -> c_int {
    guard(std::ptr::null_mut(), || {
        vol(v)?.discard(offset, len)?;
        Ok(0)
    })
}

/// Zeroes a range.
///
/// # Safety
/// `v` a live handle.
#[no_mangle]
pub unsafe extern "C" fn hlfs_write_zeroes(v: *mut HlfsVolume, offset: u64, len: u64) -> c_int {
    guard(std::ptr::null_mut(), || {
        vol(v)?.write_zeroes(offset, len)?;
        Ok(0)
    })
}

/// Stores the virtual size in `*out`.
///
/// # Safety
/// `v` a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn hlfs_get_length(v: *mut HlfsVolume, out: *mut u64) -> c_int {
    guard(std::ptr::null_mut(), || {
        let n = vol(v)?.size();
        // SAFETY: the caller guarantees `out` is valid for a write.
        unsafe { *out = n };
        Ok(0)
    })
}

/// 1 if the volume is a clone, 0 if not.
///
/// # Safety
/// `v` a live handle.
#[no_mangle]
pub unsafe extern "C" fn hlfs_is_clone(v: *mut HlfsVolume) -> c_int {
    guard(std::ptr::null_mut(), || Ok(vol(v)?.is_clone() as c_int))
}

/// Grows the volume.
///
/// # Safety
/// `v` a live handle; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_truncate(
    v: *mut HlfsVolume,
    size: u64,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        vol(v)?.resize(size)?;
        Ok(0)
    })
}

/// Stores the bytes the log occupies in `*out`.
///
/// # Safety
/// `v` a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn hlfs_get_allocated(v: *mut HlfsVolume, out: *mut u64) -> c_int {
    guard(std::ptr::null_mut(), || {
        let n = vol(v)?.allocated_bytes()?;
        // SAFETY: the caller guarantees `out` is valid for a write.
        unsafe { *out = n };
        Ok(0)
    })
}

/// Block status of a range (see hlfs.h).
///
/// # Safety
/// `v` a live handle; the three out-pointers valid for writes.
#[no_mangle]
pub unsafe extern "C" fn hlfs_block_status(
    v: *mut HlfsVolume,
    offset: u64,
    len: u64,
    allocated: *mut c_int,
    is_zero: *mut c_int,
    pnum: *mut u64,
) -> c_int {
    guard(std::ptr::null_mut(), || {
        let (st, n) = vol(v)?.block_status(offset, len)?;
        let (a, z) = match st {
            BlockState::Data => (1, 0),
            BlockState::Zero => (1, 1),
            BlockState::Unallocated => (0, 1),
        };
        // SAFETY: the caller guarantees the out-pointers are valid for writes.
        unsafe {
            *allocated = a;
            *is_zero = z;
            *pnum = n;
        }
        Ok(0)
    })
}

/// Creates a snapshot.
///
/// # Safety
/// `v` a live handle; `name` a valid C string; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_snapshot_create(
    v: *mut HlfsVolume,
    name: *const c_char,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        vol(v)?.snapshot_create(str_arg(name, "name")?)?;
        Ok(0)
    })
}

/// Space and lineage of an open volume, for `qemu-img info`; all from
/// memory (QEMU's query-block asks while the backend may be out of reach).
#[repr(C)]
pub struct HlfsVolumeInfo {
    /// Bytes of blocks still mapped by the head, a snapshot or a clone.
    pub live_bytes: u64,
    /// Bytes written since the last snapshot.
    pub head_bytes: u64,
    /// For a clone, its base's URI (malloc'd; `hlfs_string_free`), else NULL.
    pub base_uri: *mut c_char,
    /// For a clone, the base snapshot's name (malloc'd), else NULL.
    pub base_snapshot: *mut c_char,
}

/// Fills `out` with the volume's space figures and its base, if a clone.
///
/// # Safety
/// `v` a live handle; `out` valid for a write; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_get_info(
    v: *mut HlfsVolume,
    out: *mut HlfsVolumeInfo,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        if out.is_null() {
            return Err(Error::new(ErrorKind::InvalidArgument, "hlfs_get_info: NULL out"));
        }
        let i = vol(v)?.space_in_memory();
        let (base_uri, base_snapshot) = match &i.base {
            Some((u, s)) => (malloc_cstring(u), malloc_cstring(s)),
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        // SAFETY: checked non-NULL; the caller guarantees it is valid.
        unsafe {
            *out = HlfsVolumeInfo {
                live_bytes: i.live_bytes,
                head_bytes: i.head_bytes,
                base_uri,
                base_snapshot,
            };
        }
        Ok(0)
    })
}

/// Copies what a clone reads from its base into the clone and drops the
/// base (`hlfs flatten`); a volume that is not a clone is left as it is.
///
/// # Safety
/// `v` a live read-write handle; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_flatten(v: *mut HlfsVolume, errp: *mut *mut c_char) -> c_int {
    guard(errp, || {
        vol(v)?.flatten(&mut |_, _| {})?;
        Ok(0)
    })
}

/// Verifies the volume at `uri` (every record, block checksum and
/// checkpoint, as `hlfs fsck`); with `rebuild_index` also rebuilds its index
/// from the log (the volume must not be open read-write elsewhere). Stores
/// the number of errors (data that cannot be read) and of notes (harmless
/// findings) and, in `*report` (NULL-able; free with `hlfs_string_free`),
/// one line per finding. Returns 0, or -errno if the check could not run.
///
/// # Safety
/// `uri` a valid C string; `errors`, `notes` valid for a write; `report` NULL
/// or valid for a write; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_check(
    uri: *const c_char,
    rebuild_index: c_int,
    errors: *mut u64,
    notes: *mut u64,
    report: *mut *mut c_char,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        if errors.is_null() || notes.is_null() {
            return Err(Error::new(ErrorKind::InvalidArgument, "hlfs_check: NULL counter"));
        }
        let rep = crate::fsck(str_arg(uri, "uri")?, rebuild_index != 0)?;
        let mut text = String::new();
        for e in &rep.errors {
            text.push_str(&format!("error: {e}\n"));
        }
        for n in &rep.notes {
            text.push_str(&format!("note: {n}\n"));
        }
        // SAFETY: checked non-NULL; the caller guarantees they are valid.
        unsafe {
            *errors = rep.errors.len() as u64;
            *notes = rep.notes.len() as u64;
        }
        if !report.is_null() {
            set_err(report, &text);
        }
        Ok(0)
    })
}

/// Creates a snapshot with the VM state written since the stream began
/// (`hlfs_vmstate_write`), `vm_state_size` bytes of it; with 0, disk-only.
///
/// # Safety
/// `v` a live handle; `name` a valid C string; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_snapshot_create_vm(
    v: *mut HlfsVolume,
    name: *const c_char,
    vm_state_size: u64,
    vm_clock_nsec: u64,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        vol(v)?.snapshot_create_vm(str_arg(name, "name")?, vm_state_size, vm_clock_nsec)?;
        Ok(0)
    })
}

/// Writes the concatenation of `iovcnt` buffers at `pos` of the VM state
/// being saved (no alignment needed; a write at 0 starts a new stream).
///
/// # Safety
/// `v` a live handle; `iov` valid for `iovcnt` entries, each buffer valid
/// for its length; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_vmstate_write(
    v: *mut HlfsVolume,
    iov: *const libc::iovec,
    iovcnt: c_int,
    pos: u64,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        // SAFETY: forwarded from the caller.
        let parts = unsafe { write_parts(iov, iovcnt) }?;
        vol(v)?.vmstate_write(pos, &parts)?;
        Ok(0)
    })
}

/// Reads the VM state saved with snapshot `name` at `pos` into the
/// concatenation of `iovcnt` buffers; past its end they read as zeros.
///
/// # Safety
/// `v` a live handle; `name` a valid C string; `iov` valid for `iovcnt`
/// entries, each buffer valid for its length and writable; `errp` NULL or
/// a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_vmstate_read(
    v: *mut HlfsVolume,
    name: *const c_char,
    iov: *const libc::iovec,
    iovcnt: c_int,
    pos: u64,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        let vol = vol(v)?;
        let name = str_arg(name, "name")?;
        // SAFETY: forwarded from the caller.
        let bufs = unsafe { read_bufs(iov, iovcnt) }?;
        let mut at = pos;
        for b in bufs {
            vol.vmstate_read(name, at, b)?;
            at += b.len() as u64;
        }
        Ok(0)
    })
}

/// Deletes a snapshot.
///
/// # Safety
/// `v` a live handle; `name` a valid C string; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_snapshot_delete(
    v: *mut HlfsVolume,
    name: *const c_char,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        vol(v)?.snapshot_delete(str_arg(name, "name")?)?;
        Ok(0)
    })
}

/// Reverts the head to a snapshot.
///
/// # Safety
/// `v` a live handle; `name` a valid C string; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_snapshot_goto(
    v: *mut HlfsVolume,
    name: *const c_char,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        vol(v)?.snapshot_revert(str_arg(name, "name")?)?;
        Ok(0)
    })
}

/// Lists snapshots into a malloc'd array; returns the count.
///
/// # Safety
/// `v` a live handle; `out` valid for a write; `errp` NULL or a valid `char **`.
#[no_mangle]
pub unsafe extern "C" fn hlfs_snapshot_list(
    v: *mut HlfsVolume,
    out: *mut *mut HlfsSnapshotInfo,
    errp: *mut *mut c_char,
) -> c_int {
    guard(errp, || {
        // From memory: QEMU lists snapshots in query-block, which must
        // answer while the backend is out of reach.
        let list = vol(v)?.snapshots_in_memory();
        let n = list.len();
        // SAFETY: calloc of n (+1 to avoid a zero-size request) elements, checked for NULL.
        let arr = unsafe { libc::calloc(n.max(1), std::mem::size_of::<HlfsSnapshotInfo>()) }
            as *mut HlfsSnapshotInfo;
        if arr.is_null() {
            return Err(Error::new(
                ErrorKind::Backend,
                "out of memory listing snapshots",
            ));
        }
        for (i, s) in list.iter().enumerate() {
            // SAFETY: `arr` has room for n zero-initialised elements and i < n.
            let e = unsafe { &mut *arr.add(i) };
            for (d, b) in e.name.iter_mut().zip(s.name.as_bytes().iter().take(255)) {
                *d = *b as c_char;
            }
            e.id = s.id;
            e.ctime_sec = s.secs;
            e.ctime_nsec = s.nsecs;
            e.virtual_size = s.virtual_size;
            e.bytes = s.bytes;
            e.vm_state_size = s.vm_state_size;
            e.vm_clock_nsec = s.vm_clock_nsec;
        }
        // SAFETY: the caller guarantees `out` is valid for a write.
        unsafe { *out = arr };
        Ok(n as c_int)
    })
}

/// Frees an array from `hlfs_snapshot_list`.
///
/// # Safety
/// `list` NULL or an array returned by `hlfs_snapshot_list`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn hlfs_snapshot_list_free(list: *mut HlfsSnapshotInfo, _count: c_int) {
    // SAFETY: per the contract, `list` is NULL or came from calloc.
    unsafe { libc::free(list as *mut libc::c_void) }
}
