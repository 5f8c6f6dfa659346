//! Helpers shared by the fuzz targets: checksum repair, so that mutated
//! inputs get past the crc checks and reach the decoders behind them.
#![allow(dead_code)]

use hlfs::format::RECORD_HEADER_LEN;

/// Rewrites the crc32c of every record that parses as far as its length,
/// walking the buffer as a segment would be walked.
pub fn repair_records(seg: &mut [u8]) {
    let mut off = 0usize;
    while off + RECORD_HEADER_LEN <= seg.len() {
        let len = u32::from_le_bytes(seg[off + 8..off + 12].try_into().unwrap()) as usize;
        let Some(end) = (off + RECORD_HEADER_LEN).checked_add(len) else { return };
        if end > seg.len() {
            return;
        }
        let rec = &mut seg[off..end];
        rec[12..16].fill(0);
        let c = crc32c::crc32c(rec);
        rec[12..16].copy_from_slice(&c.to_le_bytes());
        off = end;
    }
}

/// Rewrites the checksums of a checkpoint file (header, state, chunks,
/// directory) wherever the structure can be followed.
pub fn repair_checkpoint(f: &mut [u8]) {
    const HEADER: usize = 64;
    const TRAILER: usize = 32;
    if f.len() < HEADER + TRAILER {
        return;
    }
    let state_len = u32::from_le_bytes(f[48..52].try_into().unwrap()) as usize;
    if HEADER + state_len <= f.len() {
        let c = crc32c::crc32c(&f[HEADER..HEADER + state_len]);
        f[52..56].copy_from_slice(&c.to_le_bytes());
    }
    let c = crc32c::crc32c(&f[..56]);
    f[56..60].copy_from_slice(&c.to_le_bytes());
    let t = f.len() - TRAILER;
    let dir_off = u64::from_le_bytes(f[t..t + 8].try_into().unwrap()) as usize;
    let nchunks = u64::from_le_bytes(f[t + 8..t + 16].try_into().unwrap()) as usize;
    let Some(dir_end) = nchunks.checked_mul(32).and_then(|n| n.checked_add(dir_off)) else { return };
    if dir_end != t {
        return;
    }
    for i in 0..nchunks {
        let row = dir_off + i * 32;
        let off = u64::from_le_bytes(f[row + 16..row + 24].try_into().unwrap()) as usize;
        let count = u32::from_le_bytes(f[row + 24..row + 28].try_into().unwrap()) as usize;
        let Some(end) = count.checked_mul(32).and_then(|n| n.checked_add(off)).and_then(|n| n.checked_add(8)) else { continue };
        if end <= dir_off {
            let c = crc32c::crc32c(&f[off + 8..end]);
            f[row + 28..row + 32].copy_from_slice(&c.to_le_bytes());
        }
    }
    let c = crc32c::crc32c(&f[dir_off..t]);
    f[t + 24..t + 28].copy_from_slice(&c.to_le_bytes());
}
