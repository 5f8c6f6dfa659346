//! Raw images into and out of volumes: 1 MiB chunks spread over a few
//! threads (a `Volume` is `Sync`), zero blocks skipped both ways.
//!
//! Files are read and written at offsets by every worker. Streams (stdin,
//! stdout) cannot seek, so one thread reads or writes them in order and
//! hands chunks to or takes them from the workers round-robin over bounded
//! channels, which keeps memory at a few chunks per worker.

use anyhow::{Context, Result};
use hlfs::{BlockState, Error, ErrorKind, Volume, BLOCK_SIZE};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;

/// Bytes handled per step of a worker.
pub const CHUNK: u64 = 1 << 20;
const SECTOR: u64 = 512;
const BS: usize = BLOCK_SIZE as usize;

/// What an import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportStats {
    /// Bytes of the raw image.
    pub raw_bytes: u64,
    /// Bytes written as data.
    pub data_bytes: u64,
    /// Bytes of zero blocks that already read as zeros and were not stored.
    pub skipped_zero_bytes: u64,
    /// Bytes of zero blocks written as zero ranges (they held data before).
    pub zeroed_bytes: u64,
}

/// What an export did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExportStats {
    /// Length of the raw image (the volume's virtual size).
    pub size: u64,
    /// Bytes written to it; the rest was left as holes.
    pub written_bytes: u64,
}

/// A progress bar on stderr when it is a terminal; hidden otherwise, so
/// scripts and logs stay clean (and stdout, which may carry an image, is
/// never touched). With no `len` (a stream of unknown length) it counts bytes.
pub fn progress_bar(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let template = match len {
        Some(_) => "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        None => "{msg} {bytes} {bytes_per_sec}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// A progress bar counting `unit` (segments, ...) on stderr when it is a
/// terminal; hidden otherwise.
pub fn count_bar(what: &str, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&format!("{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit} eta {{eta}}")) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(2, 4)
}

/// Runs `step(offset)` for every chunk offset below `total` on a few
/// threads. The first error stops the others and is returned.
fn for_each_chunk(total: u64, step: impl Fn(u64) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers() {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let off = next.fetch_add(CHUNK, Ordering::Relaxed);
                    if off >= total {
                        break;
                    }
                    if let Err(e) = step(off) {
                        stop.store(true, Ordering::Relaxed);
                        first_err.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Whether every byte is zero. Folding 512 bytes at a time lets the
/// compiler vectorise while still stopping early on data.
fn is_zero(b: &[u8]) -> bool {
    b.chunks(512).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// Splits `buf` into runs of whole 4 KiB blocks (the last may be shorter)
/// that are all zero or all not, as (start, end, zero).
fn zero_runs(buf: &[u8]) -> Vec<(usize, usize, bool)> {
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    for (i, block) in buf.chunks(BS).enumerate() {
        let z = is_zero(block);
        let start = i * BS;
        match runs.last_mut() {
            Some(r) if r.2 == z => r.1 = start + block.len(),
            _ => runs.push((start, start + block.len(), z)),
        }
    }
    runs
}

/// The length of a raw image file or block device.
pub fn raw_len(f: &File) -> std::io::Result<u64> {
    use std::io::Seek;
    let mut f = f;
    f.seek(std::io::SeekFrom::End(0))
}

/// Byte counts of an import, shared by its workers.
#[derive(Default)]
struct Counters {
    data: AtomicU64,
    skipped: AtomicU64,
    zeroed: AtomicU64,
}

impl Counters {
    fn stats(self, raw_bytes: u64) -> ImportStats {
        ImportStats {
            raw_bytes,
            data_bytes: self.data.into_inner(),
            skipped_zero_bytes: self.skipped.into_inner(),
            zeroed_bytes: self.zeroed.into_inner(),
        }
    }
}

/// Stores one chunk of an image at `off`: `buf[..avail]` holds the image's
/// bytes and `buf` is `avail` rounded up to 512. If the image ends inside a
/// sector, the rest of that sector is first filled with what the volume
/// holds there, so only the image's bytes change.
fn store_chunk(vol: &Volume, off: u64, buf: &mut [u8], avail: usize, c: &Counters) -> Result<()> {
    let sector = SECTOR as usize;
    let s = avail / sector * sector;
    if avail > s {
        let mut old = [0u8; SECTOR as usize];
        vol.read(off + s as u64, &mut old)?;
        buf[avail..s + sector].copy_from_slice(&old[avail - s..]);
    }
    for (a, b, zero) in zero_runs(buf) {
        let at = off + a as u64;
        if zero {
            let (skipped, zeroed) = zero_range(vol, at, (b - a) as u64)?;
            c.skipped.fetch_add(skipped, Ordering::Relaxed);
            c.zeroed.fetch_add(zeroed, Ordering::Relaxed);
        } else {
            vol.write(at, &buf[a..b])?;
            c.data.fetch_add((b - a) as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Copies the raw image `raw` (`raw_len` bytes) to the start of `vol`,
/// which must hold at least `raw_len` rounded up to 512 bytes. Only the
/// image's bytes change: the rest of a partial last sector keeps what the
/// volume held.
///
/// All-zero 4 KiB blocks are stored only where the volume does not already
/// read zeros, so a fresh volume keeps only the image's data.
pub fn import(raw: &File, raw_len: u64, vol: &Volume, pb: &ProgressBar) -> Result<ImportStats> {
    let padded = raw_len.div_ceil(SECTOR) * SECTOR;
    let counters = Counters::default();
    for_each_chunk(padded, |off| {
        let len = CHUNK.min(padded - off) as usize;
        let mut buf = vec![0u8; len];
        let avail = (raw_len - off).min(len as u64) as usize;
        raw.read_exact_at(&mut buf[..avail], off).with_context(|| format!("reading the raw image at offset {off}"))?;
        store_chunk(vol, off, &mut buf, avail, &counters)?;
        pb.inc(len as u64);
        Ok(())
    })?;
    vol.flush()?;
    Ok(counters.stats(raw_len))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Copies a raw image of unknown length from `input` (a pipe) to the start
/// of `vol`, as [`import`] does for a file: what arrives is written, zero
/// blocks are skipped where the volume already reads zeros, and a partial
/// last sector keeps the volume's bytes after the image.
///
/// If more arrives than the volume holds, the volume keeps the first
/// `vol.size()` bytes and the import fails with `InvalidArgument`.
pub fn import_stream(input: &mut dyn Read, vol: &Volume, pb: &ProgressBar) -> Result<ImportStats> {
    let cap = vol.size();
    let counters = Counters::default();
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let mut total = 0u64;
    let read: Result<()> = std::thread::scope(|s| {
        let mut txs = Vec::new();
        for _ in 0..workers() {
            let (tx, rx) = sync_channel::<(u64, Vec<u8>, usize)>(1);
            txs.push(tx);
            let (counters, stop, first_err) = (&counters, &stop, &first_err);
            s.spawn(move || {
                for (off, mut buf, avail) in rx {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Err(e) = store_chunk(vol, off, &mut buf, avail, counters) {
                        stop.store(true, Ordering::Relaxed);
                        first_err.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        break;
                    }
                }
            });
        }
        // Returning drops `txs`, which ends the workers' loops before the
        // scope joins them.
        let mut k = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let want = CHUNK.min(cap - total) as usize;
            if want == 0 {
                let more = read_full(input, &mut [0u8; 1]).context("reading the raw image from stdin")?;
                if more > 0 {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!("the image on stdin is larger than the volume ({cap} bytes); only its first {cap} bytes were written"),
                    )
                    .into());
                }
                return Ok(());
            }
            let mut buf = vec![0u8; want];
            let got = read_full(input, &mut buf).with_context(|| format!("reading the raw image from stdin at offset {total}"))?;
            if got == 0 {
                return Ok(());
            }
            buf.truncate(got.div_ceil(SECTOR as usize) * SECTOR as usize);
            let off = total;
            total += got as u64;
            // A worker that failed has dropped its receiver; its error is in `first_err`.
            if txs[k % txs.len()].send((off, buf, got)).is_err() {
                return Ok(());
            }
            k += 1;
            pb.inc(got as u64);
            if got < want {
                return Ok(());
            }
        }
    });
    if let Some(e) = first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    read?;
    vol.flush()?;
    Ok(counters.stats(total))
}

/// Makes `[off, off+len)` read as zeros, writing a zero range only over
/// blocks that hold data. Returns (bytes skipped, bytes zeroed).
fn zero_range(vol: &Volume, off: u64, len: u64) -> Result<(u64, u64)> {
    let (mut skipped, mut zeroed) = (0, 0);
    let end = off + len;
    let mut pos = off;
    while pos < end {
        let (state, n) = vol.block_status(pos, end - pos)?;
        if state == BlockState::Data {
            vol.write_zeroes(pos, n)?;
            zeroed += n;
        } else {
            skipped += n;
        }
        pos += n;
    }
    Ok((skipped, zeroed))
}

/// A chunk of a volume as read for export.
struct Chunk {
    /// The chunk's bytes.
    buf: Vec<u8>,
    /// Ranges of `buf` that hold data; the rest reads as zeros and was not read.
    data: Vec<(usize, usize)>,
}

/// Reads `len` bytes of `vol` at `off`.
fn read_chunk(vol: &Volume, off: u64, len: u64) -> Result<Chunk> {
    let mut buf = vec![0u8; len as usize];
    let mut data = Vec::new();
    let mut pos = off;
    while pos < off + len {
        let (state, n) = vol.block_status(pos, off + len - pos)?;
        let (a, b) = ((pos - off) as usize, (pos - off + n) as usize);
        if state == BlockState::Data {
            vol.read(pos, &mut buf[a..b])?;
            data.push((a, b));
        }
        pos += n;
    }
    Ok(Chunk { buf, data })
}

/// Writes the whole of `vol` to `out`. With `sparse` (a regular file that
/// the caller truncated), ranges that read as zeros are skipped and left as
/// holes, and the file is sized to the volume; otherwise (a device) every
/// byte is written.
pub fn export(vol: &Volume, out: &File, sparse: bool, pb: &ProgressBar) -> Result<ExportStats> {
    let size = vol.size();
    if sparse {
        out.set_len(size).context("setting the length of the raw image")?;
    }
    let written = AtomicU64::new(0);
    for_each_chunk(size, |off| {
        let len = CHUNK.min(size - off);
        let Chunk { buf, data } = read_chunk(vol, off, len)?;
        let put = |a: usize, b: usize| -> Result<()> {
            let at = off + a as u64;
            out.write_all_at(&buf[a..b], at).with_context(|| format!("writing the raw image at offset {at}"))?;
            written.fetch_add((b - a) as u64, Ordering::Relaxed);
            Ok(())
        };
        if sparse {
            for (a, b) in data {
                for (ra, rb, zero) in zero_runs(&buf[a..b]) {
                    if !zero {
                        put(a + ra, a + rb)?;
                    }
                }
            }
        } else {
            put(0, buf.len())?;
        }
        pb.inc(len);
        Ok(())
    })?;
    out.sync_all().context("syncing the raw image")?;
    Ok(ExportStats { size, written_bytes: written.into_inner() })
}

/// Writes the whole of `vol` to `out` (a pipe) in order, zeros included:
/// a stream cannot have holes. Workers read chunks ahead; the caller's
/// thread writes them in turn.
pub fn export_stream(vol: &Volume, out: &mut dyn Write, pb: &ProgressBar) -> Result<ExportStats> {
    let size = vol.size();
    let n = workers();
    std::thread::scope(|s| {
        let mut rxs = Vec::new();
        for w in 0..n {
            let (tx, rx) = sync_channel::<Result<Vec<u8>>>(1);
            rxs.push(rx);
            s.spawn(move || {
                let mut off = w as u64 * CHUNK;
                while off < size {
                    let chunk = read_chunk(vol, off, CHUNK.min(size - off)).map(|c| c.buf);
                    let failed = chunk.is_err();
                    // A closed channel means the writer gave up; stop reading.
                    if tx.send(chunk).is_err() || failed {
                        break;
                    }
                    off += n as u64 * CHUNK;
                }
            });
        }
        // Returning drops `rxs`, which stops readers that are ahead.
        let mut off = 0;
        let mut k = 0;
        while off < size {
            let buf = rxs[k % n].recv().context("a reader thread stopped early")??;
            out.write_all(&buf).with_context(|| format!("writing the raw image to stdout at offset {off}"))?;
            pb.inc(buf.len() as u64);
            off += buf.len() as u64;
            k += 1;
        }
        out.flush().context("writing the raw image to stdout")?;
        Ok(ExportStats { size, written_bytes: size })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_runs_cover_the_buffer_and_alternate() {
        // Property: runs tile the buffer exactly, neighbours differ in
        // zero-ness, and a short last block is its own part of a run.
        let mut buf = vec![0u8; 5 * BS + 512];
        buf[BS + 7] = 1;
        buf[2 * BS] = 1;
        buf[5 * BS + 100] = 9;
        let runs = zero_runs(&buf);
        assert_eq!(runs, vec![(0, BS, true), (BS, 3 * BS, false), (3 * BS, 5 * BS, true), (5 * BS, 5 * BS + 512, false)]);
    }
}
