//! Checkpoints: the whole index at one log position, saved in the backend so
//! that opening needs only the newest checkpoint plus the log after it.
//!
//! ```text
//! ckpt-<seq:016x>, written as ckpt-<seq>.tmp, synced, then renamed.
//! Header (HEADER_LEN = 64 bytes)
//!  0       4      5        8        24       32        40          48          52         56        64
//!  +-------+------+--------+--------+--------+---------+-----------+-----------+----------+---------+
//!  |"HLFC" |ver=1 |pad[3]  |uuid[16]|segment |offset   |next_seq   |state_len  |state_crc |hdr_crc  | reserved u32
//!  +-------+------+--------+--------+--------+---------+-----------+-----------+----------+---------+
//!  then state_len bytes of encoded VolState,
//!  then chunks: count:u32 crc32c:u32 then count × (key[16] value[16]); a chunk with count 0 ends the
//!  map, and its crc field holds crc32c of the total entry count (u64 LE).
//! ```

use crate::backend::Backend;
use crate::error::{corrupt, ErrorKind, Result};
use crate::format::{Dec, Enc};
use crate::index::Index;
use crate::log::LogPos;
use crate::state::VolState;

const MAGIC: &[u8; 4] = b"HLFC";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 64;
const CHUNK_ENTRIES: usize = 4096;
const ENTRY_LEN: usize = 32;

/// File name of the checkpoint at sequence `seq`.
pub fn name(seq: u64) -> String {
    format!("ckpt-{seq:016x}")
}

fn parse_name(n: &str) -> Option<u64> {
    let hex = n.strip_prefix("ckpt-")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Checkpoints present in `dir`, newest first.
pub fn list(backend: &dyn Backend, dir: &str) -> Result<Vec<u64>> {
    let mut v: Vec<u64> = backend
        .list(dir)?
        .iter()
        .filter_map(|n| parse_name(n))
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    Ok(v)
}

/// Writes a checkpoint of `index` + `st` at `pos`, then deletes older ones
/// (keeping one spare). Returns the bytes written.
pub fn write(
    backend: &dyn Backend,
    dir: &str,
    pos: LogPos,
    st: &VolState,
    index: &Index,
) -> Result<u64> {
    let final_path = format!("{dir}/{}", name(pos.next_seq));
    if backend.exists(&final_path)? {
        return Ok(0);
    }
    let tmp = format!("{final_path}.tmp");
    if backend.exists(&tmp)? {
        backend.delete(&tmp)?;
    }
    let state = st.encode();
    let mut e = Enc::default();
    e.bytes(MAGIC).u8(VERSION).bytes(&[0; 3]).bytes(&st.uuid);
    e.u64(pos.segment).u64(pos.offset).u64(pos.next_seq);
    e.u32(state.len() as u32).u32(crc32c::crc32c(&state));
    let hcrc = crc32c::crc32c(&e.0);
    e.u32(hcrc).u32(0);
    debug_assert_eq!(e.0.len(), HEADER_LEN);
    e.bytes(&state);
    let mut f = backend.create(&tmp)?;
    let mut written = 0u64;
    let mut total = 0u64;
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_ENTRIES * ENTRY_LEN);
    let flush_chunk = |out: &mut Enc, chunk: &mut Vec<u8>| {
        let n = (chunk.len() / ENTRY_LEN) as u32;
        out.u32(n).u32(crc32c::crc32c(chunk)).bytes(chunk);
        chunk.clear();
    };
    for r in index.iter_all() {
        let (k, v) = r?;
        chunk.extend_from_slice(&k);
        chunk.extend_from_slice(&v);
        total += 1;
        if chunk.len() == CHUNK_ENTRIES * ENTRY_LEN {
            flush_chunk(&mut e, &mut chunk);
            if e.0.len() >= 1 << 20 {
                f.append(&e.0)?;
                written += e.0.len() as u64;
                e.0.clear();
            }
        }
    }
    if !chunk.is_empty() {
        flush_chunk(&mut e, &mut chunk);
    }
    e.u32(0).u32(crc32c::crc32c(&total.to_le_bytes()));
    f.append(&e.0)?;
    written += e.0.len() as u64;
    f.close()?;
    backend.rename(&tmp, &final_path)?;
    for old in list(backend, dir)?.into_iter().skip(2) {
        let _ = backend.delete(&format!("{dir}/{}", name(old)));
    }
    Ok(written)
}

/// A checkpoint read back.
pub struct Loaded {
    /// Log position it covers.
    pub pos: LogPos,
    /// The state at that position.
    pub state: VolState,
}

/// Loads checkpoint `seq` into `index` (which must be empty), verifying
/// every checksum. On error the index may hold part of it.
pub fn load(
    backend: &dyn Backend,
    dir: &str,
    seq: u64,
    uuid: &[u8; 16],
    index: &Index,
) -> Result<Loaded> {
    let path = format!("{dir}/{}", name(seq));
    let file = backend.open_read(&path)?;
    let len = file.len()?;
    let ctx = |m: String| corrupt(format!("checkpoint {path}: {m}"));
    if len < HEADER_LEN as u64 {
        return Err(ctx("shorter than its header".into()));
    }
    let mut hb = [0u8; HEADER_LEN];
    file.read_exact_at(0, &mut hb)?;
    if &hb[..4] != MAGIC || hb[4] != VERSION {
        return Err(ctx("bad magic or version".into()));
    }
    let hcrc = u32::from_le_bytes(hb[56..60].try_into().expect("4"));
    if crc32c::crc32c(&hb[..56]) != hcrc {
        return Err(ctx("header checksum mismatch".into()));
    }
    let mut d = Dec::new(&hb[8..56], "checkpoint header");
    let cuuid = d.uuid()?;
    if &cuuid != uuid {
        return Err(ctx("belongs to another volume".into()));
    }
    let pos = LogPos {
        segment: d.u64()?,
        offset: d.u64()?,
        next_seq: d.u64()?,
    };
    let state_len = d.u32()? as u64;
    let state_crc = d.u32()?;
    if HEADER_LEN as u64 + state_len > len {
        return Err(ctx("state runs past the end".into()));
    }
    let mut sb = vec![0u8; state_len as usize];
    file.read_exact_at(HEADER_LEN as u64, &mut sb)?;
    if crc32c::crc32c(&sb) != state_crc {
        return Err(ctx("state checksum mismatch".into()));
    }
    let state = VolState::decode(&sb).map_err(|e| ctx(e.to_string()))?;
    let mut off = HEADER_LEN as u64 + state_len;
    let mut total = 0u64;
    let mut buf = Vec::new();
    loop {
        if off + 8 > len {
            return Err(ctx(format!("truncated at byte {off}")));
        }
        let mut cb = [0u8; 8];
        file.read_exact_at(off, &mut cb)?;
        off += 8;
        let n = u32::from_le_bytes(cb[..4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(cb[4..].try_into().expect("4"));
        if n == 0 {
            if crc != crc32c::crc32c(&total.to_le_bytes()) {
                return Err(ctx("entry count checksum mismatch".into()));
            }
            break;
        }
        if n > CHUNK_ENTRIES || off + (n * ENTRY_LEN) as u64 > len {
            return Err(ctx(format!("bad chunk at byte {}", off - 8)));
        }
        buf.resize(n * ENTRY_LEN, 0);
        file.read_exact_at(off, &mut buf)?;
        if crc32c::crc32c(&buf) != crc {
            return Err(ctx(format!("chunk checksum mismatch at byte {}", off - 8)));
        }
        off += buf.len() as u64;
        for e in buf.chunks_exact(ENTRY_LEN) {
            index.put_raw(
                e[..16].try_into().expect("16"),
                e[16..].try_into().expect("16"),
            )?;
        }
        total += n as u64;
    }
    Ok(Loaded { pos, state })
}

/// Verifies checkpoint `seq` without keeping it (fsck).
pub fn verify(backend: &dyn Backend, dir: &str, seq: u64, uuid: &[u8; 16]) -> Result<()> {
    let tmp = Index::temporary()?;
    load(backend, dir, seq, uuid, &tmp).map(|_| ())
}

/// Loads the newest checkpoint that verifies; older ones are tried when a
/// newer one is damaged. None if there is no usable checkpoint.
pub fn load_newest(
    backend: &dyn Backend,
    dir: &str,
    uuid: &[u8; 16],
    index: &Index,
) -> Result<Option<Loaded>> {
    for seq in list(backend, dir)? {
        match load(backend, dir, seq, uuid, index) {
            Ok(l) => return Ok(Some(l)),
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                tracing::warn!("skipping damaged checkpoint: {e}");
                index.clear()?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
