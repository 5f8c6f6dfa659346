//! Raw images into and out of volumes: 1 MiB chunks spread over a few
//! threads (a `Volume` is `Sync`), zero blocks skipped both ways.

use anyhow::{Context, Result};
use hlfs::{BlockState, Volume, BLOCK_SIZE};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
use std::io::IsTerminal;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// scripts and logs stay clean.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
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

/// Copies the raw image `raw` (`raw_len` bytes) to the start of `vol`,
/// which must hold at least `raw_len` rounded up to 512 bytes. Only the
/// image's bytes change: the rest of a partial last sector keeps what the
/// volume held.
///
/// All-zero 4 KiB blocks are stored only where the volume does not already
/// read zeros there, so a fresh volume keeps only the image's data.
pub fn import(raw: &File, raw_len: u64, vol: &Volume, pb: &ProgressBar) -> Result<ImportStats> {
    let padded = raw_len.div_ceil(SECTOR) * SECTOR;
    let data = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let zeroed = AtomicU64::new(0);
    for_each_chunk(padded, |off| {
        let len = CHUNK.min(padded - off) as usize;
        let mut buf = vec![0u8; len];
        let avail = (raw_len - off).min(len as u64) as usize;
        if avail % SECTOR as usize != 0 {
            // The image ends inside a sector: keep the volume's bytes after it.
            let s = avail / SECTOR as usize * SECTOR as usize;
            vol.read(off + s as u64, &mut buf[s..s + SECTOR as usize])?;
        }
        raw.read_exact_at(&mut buf[..avail], off).with_context(|| format!("reading the raw image at offset {off}"))?;
        for (a, b, zero) in zero_runs(&buf) {
            let at = off + a as u64;
            if zero {
                let (s, z) = zero_range(vol, at, (b - a) as u64)?;
                skipped.fetch_add(s, Ordering::Relaxed);
                zeroed.fetch_add(z, Ordering::Relaxed);
            } else {
                vol.write(at, &buf[a..b])?;
                data.fetch_add((b - a) as u64, Ordering::Relaxed);
            }
        }
        pb.inc(len as u64);
        Ok(())
    })?;
    vol.flush()?;
    Ok(ImportStats {
        raw_bytes: raw_len,
        data_bytes: data.into_inner(),
        skipped_zero_bytes: skipped.into_inner(),
        zeroed_bytes: zeroed.into_inner(),
    })
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
        let mut buf = vec![0u8; len as usize];
        let mut pos = off;
        while pos < off + len {
            let (state, n) = vol.block_status(pos, off + len - pos)?;
            let (a, b) = ((pos - off) as usize, (pos - off + n) as usize);
            if state == BlockState::Data {
                vol.read(pos, &mut buf[a..b])?;
            }
            if state == BlockState::Data || !sparse {
                for (ra, rb, zero) in zero_runs(&buf[a..b]) {
                    if zero && sparse {
                        continue;
                    }
                    let at = pos + ra as u64;
                    out.write_all_at(&buf[a + ra..a + rb], at)
                        .with_context(|| format!("writing the raw image at offset {at}"))?;
                    written.fetch_add((rb - ra) as u64, Ordering::Relaxed);
                }
            }
            pos += n;
        }
        pb.inc(len);
        Ok(())
    })?;
    out.sync_all().context("syncing the raw image")?;
    Ok(ExportStats { size, written_bytes: written.into_inner() })
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
