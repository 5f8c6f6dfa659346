//! Checkpoints: the whole index at one log position, saved in the backend so
//! that opening needs only the newest checkpoint plus the log after it, and
//! searchable in place, so read-only openers never copy it.
//!
//! ```text
//! ckpt-<next_seq:016x>, written as ckpt-<next_seq>.tmp, synced, then renamed.
//!
//! Header (HEADER_LEN = 64 bytes)
//!  0      4     5      8         24        32       40         48          52          56        60
//!  +------+-----+------+---------+---------+--------+----------+-----------+-----------+---------+----------+
//!  |"HLFC"|ver=1|pad[3]|uuid[16] |segment  |offset  |next_seq  |state_len  |state_crc  |hdr_crc  |reserved  |
//!  |      | u8  |      |         |u64      |u64     |u64       |u32        |u32        |u32      |u32 = 0   |
//!  +------+-----+------+---------+---------+--------+----------+-----------+-----------+---------+----------+
//!  hdr_crc = crc32c of bytes 0..56.
//! State: state_len bytes of encoded VolState (state.rs).
//! Chunks, in key order: count:u32 crc32c:u32, then count × entry, where
//!   entry = key[16] value[16]: one block, as `index::key` and `index::Entry::encode` give them;
//!   at most CHUNK_ENTRIES entries; crc32c covers the entries.
//! End marker: count 0, crc = crc32c(total entries as u64 LE).
//! Directory: one 32-byte row per chunk:
//!   first_key[16] offset:u64 (of the chunk's count field) count:u32 crc32c:u32
//! Trailer (TRAILER_LEN = 32 bytes, the file's last):
//!   dir_offset:u64 chunks:u64 total_entries:u64 dir_crc:u32 magic "HLFD"
//! ```

use crate::backend::{Backend, ReadFile};
use crate::error::{corrupt, ErrorKind, Result};
use crate::format::{Dec, Enc};
use crate::index::Index;
use crate::log::LogPos;
use crate::state::VolState;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"HLFC";
const TRAILER_MAGIC: &[u8; 4] = b"HLFD";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 64;
const TRAILER_LEN: usize = 32;
const DIR_ROW: usize = 32;
/// Entries per chunk: 16 KiB chunks keep a lookup's read small and the
/// directory at 64 KiB per million entries.
const CHUNK_ENTRIES: usize = 512;
const ENTRY_LEN: usize = 32;
/// Chunks a reader keeps decoded (2 MiB).
const CACHE_CHUNKS: usize = 128;

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
    entries: impl Iterator<Item = Result<([u8; 16], [u8; 16])>>,
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
    let r = write_file(backend, entries, &tmp, e);
    if r.is_err() {
        // Do not leave a partial file behind (on a full disk it holds the
        // space the next attempt needs); the log still has everything.
        let _ = backend.delete(&tmp);
    }
    let written = r?;
    backend.rename(&tmp, &final_path)?;
    let old: Vec<String> = list(backend, dir)?.into_iter().skip(2).map(name).collect();
    // A read-only view may be reading one lazily: it stays until the view
    // is done (registry.rs). A failure only leaves a spare behind.
    if let Err(e) = crate::registry::discard(backend, dir, &old) {
        tracing::warn!("{dir}: removing old checkpoints: {e}");
    }
    Ok(written)
}

/// Writes and closes the checkpoint file `tmp`: the header and state in `e`,
/// then the map's chunks and their directory. Returns its length.
fn write_file(
    backend: &dyn Backend,
    entries: impl Iterator<Item = Result<([u8; 16], [u8; 16])>>,
    tmp: &str,
    mut e: Enc,
) -> Result<u64> {
    let mut f = backend.create(tmp)?;
    let mut written = 0u64; // bytes already appended to `f`
    let mut total = 0u64;
    let mut directory = Enc::default();
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_ENTRIES * ENTRY_LEN);
    let emit = |out: &mut Enc, chunk: &mut Vec<u8>, written: u64, directory: &mut Enc| {
        let n = (chunk.len() / ENTRY_LEN) as u32;
        let crc = crc32c::crc32c(chunk);
        directory
            .bytes(&chunk[..16])
            .u64(written + out.0.len() as u64)
            .u32(n)
            .u32(crc);
        out.u32(n).u32(crc).bytes(chunk);
        chunk.clear();
    };
    for r in entries {
        let (k, v) = r?;
        chunk.extend_from_slice(&k);
        chunk.extend_from_slice(&v);
        total += 1;
        if chunk.len() == CHUNK_ENTRIES * ENTRY_LEN {
            emit(&mut e, &mut chunk, written, &mut directory);
            if e.0.len() >= 1 << 20 {
                f.append(&e.0)?;
                written += e.0.len() as u64;
                e.0.clear();
            }
        }
    }
    if !chunk.is_empty() {
        emit(&mut e, &mut chunk, written, &mut directory);
    }
    e.u32(0).u32(crc32c::crc32c(&total.to_le_bytes()));
    let dir_offset = written + e.0.len() as u64;
    let chunks = (directory.0.len() / DIR_ROW) as u64;
    let dir_crc = crc32c::crc32c(&directory.0);
    e.bytes(&directory.0)
        .u64(dir_offset)
        .u64(chunks)
        .u64(total)
        .u32(dir_crc)
        .bytes(TRAILER_MAGIC);
    f.append(&e.0)?;
    written += e.0.len() as u64;
    f.close()?;
    Ok(written)
}

struct ChunkRef {
    first_key: [u8; 16],
    offset: u64,
    count: u32,
    crc: u32,
}

/// An open checkpoint, searched in place: lookups binary-search the chunk
/// directory and read (and verify) one chunk, keeping recent ones cached.
pub struct Reader {
    path: String,
    file: Arc<dyn ReadFile>,
    /// Log position the checkpoint covers.
    pub pos: LogPos,
    /// The volume state at that position.
    pub state: VolState,
    /// Entries in the checkpoint.
    pub total: u64,
    chunks: Vec<ChunkRef>,
    cache: Mutex<(u64, HashMap<usize, (u64, Arc<Vec<u8>>)>)>,
}

/// Reads and verifies a checkpoint's 64-byte header: magic, version,
/// checksum and volume. Returns the log position, state length and state crc.
fn read_header(file: &dyn ReadFile, path: &str, uuid: &[u8; 16]) -> Result<(LogPos, u64, u32)> {
    let ctx = |m: &str| corrupt(format!("checkpoint {path}: {m}"));
    let mut hb = [0u8; HEADER_LEN];
    file.read_exact_at(0, &mut hb)?;
    if &hb[..4] != MAGIC || hb[4] != VERSION {
        return Err(ctx("bad magic or version"));
    }
    let hcrc = u32::from_le_bytes(hb[56..60].try_into().expect("4"));
    if crc32c::crc32c(&hb[..56]) != hcrc {
        return Err(ctx("header checksum mismatch"));
    }
    let mut d = Dec::new(&hb[8..56], "checkpoint header");
    if &d.uuid()? != uuid {
        return Err(ctx("belongs to another volume"));
    }
    let pos = LogPos {
        segment: d.u64()?,
        offset: d.u64()?,
        next_seq: d.u64()?,
    };
    Ok((pos, d.u32()? as u64, d.u32()?))
}

/// The log position checkpoint `seq` covers, from its header alone.
pub fn position(backend: &dyn Backend, dir: &str, seq: u64, uuid: &[u8; 16]) -> Result<LogPos> {
    let path = format!("{dir}/{}", name(seq));
    let file = backend.open_read(&path)?;
    read_header(&*file, &path, uuid).map(|h| h.0)
}

impl Reader {
    /// Opens checkpoint `seq`, verifying header, state and directory.
    pub fn open(backend: &dyn Backend, dir: &str, seq: u64, uuid: &[u8; 16]) -> Result<Reader> {
        let path = format!("{dir}/{}", name(seq));
        let file = backend.open_read(&path)?;
        let len = file.len()?;
        let ctx = |m: String| corrupt(format!("checkpoint {path}: {m}"));
        if len < (HEADER_LEN + TRAILER_LEN) as u64 {
            return Err(ctx("shorter than its header and trailer".into()));
        }
        let (pos, state_len, state_crc) = read_header(&*file, &path, uuid)?;
        if HEADER_LEN as u64 + state_len > len {
            return Err(ctx("state runs past the end".into()));
        }
        let mut sb = vec![0u8; state_len as usize];
        file.read_exact_at(HEADER_LEN as u64, &mut sb)?;
        if crc32c::crc32c(&sb) != state_crc {
            return Err(ctx("state checksum mismatch".into()));
        }
        let state = VolState::decode(&sb).map_err(|e| ctx(e.to_string()))?;
        let mut tb = [0u8; TRAILER_LEN];
        file.read_exact_at(len - TRAILER_LEN as u64, &mut tb)?;
        if &tb[28..] != TRAILER_MAGIC {
            return Err(ctx("bad trailer magic (incomplete checkpoint?)".into()));
        }
        let mut t = Dec::new(&tb, "checkpoint trailer");
        let (dir_offset, nchunks, total, dir_crc) = (t.u64()?, t.u64()?, t.u64()?, t.u32()?);
        if nchunks
            .checked_mul(DIR_ROW as u64)
            .and_then(|n| n.checked_add(dir_offset))
            != Some(len - TRAILER_LEN as u64)
        {
            return Err(ctx("directory does not fit the file".into()));
        }
        let mut db = vec![0u8; (nchunks as usize) * DIR_ROW];
        file.read_exact_at(dir_offset, &mut db)?;
        if crc32c::crc32c(&db) != dir_crc {
            return Err(ctx("directory checksum mismatch".into()));
        }
        let mut chunks = Vec::with_capacity(nchunks as usize);
        let mut dd = Dec::new(&db, "checkpoint directory");
        for _ in 0..nchunks {
            let first_key: [u8; 16] = dd.uuid()?;
            let (offset, count, crc) = (dd.u64()?, dd.u32()?, dd.u32()?);
            // Chunks follow one another in key order without overlapping;
            // lookups depend on it, since they pick a chunk by first key.
            let start = chunks
                .last()
                .map_or(HEADER_LEN as u64 + state_len, |c: &ChunkRef| {
                    c.offset + 8 + c.count as u64 * ENTRY_LEN as u64
                });
            let end = offset.checked_add(8 + count as u64 * ENTRY_LEN as u64);
            if count == 0
                || count as usize > CHUNK_ENTRIES
                || offset < start
                || end.is_none_or(|e| e > dir_offset)
            {
                return Err(ctx(format!("bad chunk at byte {offset}")));
            }
            if chunks
                .last()
                .is_some_and(|c: &ChunkRef| c.first_key >= first_key)
            {
                return Err(ctx(format!("chunk at byte {offset} is out of key order")));
            }
            chunks.push(ChunkRef {
                first_key,
                offset,
                count,
                crc,
            });
        }
        Ok(Reader {
            path,
            file,
            pos,
            state,
            total,
            chunks,
            cache: Mutex::new((0, HashMap::new())),
        })
    }

    /// Chunk `i`'s entries, read from the file and verified.
    fn read_chunk(&self, i: usize) -> Result<Vec<u8>> {
        let r = &self.chunks[i];
        let mut b = vec![0u8; r.count as usize * ENTRY_LEN];
        self.file.read_exact_at(r.offset + 8, &mut b)?;
        if crc32c::crc32c(&b) != r.crc {
            return Err(corrupt(format!(
                "checkpoint {}: chunk at byte {} fails its checksum",
                self.path, r.offset
            )));
        }
        // The directory's first key must be the chunk's, and keys ascend.
        let sorted = b
            .chunks_exact(ENTRY_LEN)
            .zip(b.chunks_exact(ENTRY_LEN).skip(1))
            .all(|(a, z)| a[..16] < z[..16]);
        if b[..16] != r.first_key || !sorted {
            return Err(corrupt(format!(
                "checkpoint {}: chunk at byte {} disagrees with the directory or is out of order",
                self.path, r.offset
            )));
        }
        Ok(b)
    }

    /// Chunk `i`'s entries, read and verified (or from the cache).
    fn chunk(&self, i: usize) -> Result<Arc<Vec<u8>>> {
        {
            let mut c = self.cache.lock();
            c.0 += 1;
            let tick = c.0;
            if let Some(e) = c.1.get_mut(&i) {
                e.0 = tick;
                return Ok(e.1.clone());
            }
        }
        if crate::error::nowait() {
            return Err(crate::error::would_block("reading a checkpoint chunk"));
        }
        let b = Arc::new(self.read_chunk(i)?);
        let mut c = self.cache.lock();
        if c.1.len() >= CACHE_CHUNKS {
            if let Some(oldest) = c.1.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| *k) {
                c.1.remove(&oldest);
            }
        }
        let tick = c.0;
        c.1.insert(i, (tick, b.clone()));
        Ok(b)
    }

    /// Index of the chunk that would hold `key`.
    fn chunk_for(&self, key: &[u8; 16]) -> Option<usize> {
        match self.chunks.partition_point(|c| &c.first_key <= key) {
            0 => None,
            n => Some(n - 1),
        }
    }

    /// The value stored for `key`.
    pub fn get(&self, key: &[u8; 16]) -> Result<Option<[u8; 16]>> {
        let Some(i) = self.chunk_for(key) else {
            return Ok(None);
        };
        let c = self.chunk(i)?;
        let n = c.len() / ENTRY_LEN;
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let k = &c[mid * ENTRY_LEN..mid * ENTRY_LEN + 16];
            match k.cmp(&key[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    return Ok(Some(
                        c[mid * ENTRY_LEN + 16..(mid + 1) * ENTRY_LEN]
                            .try_into()
                            .expect("16"),
                    ));
                }
            }
        }
        Ok(None)
    }

    /// Entries with `from <= key < to`, in order.
    pub fn range(
        &self,
        from: [u8; 16],
        to: [u8; 16],
    ) -> impl Iterator<Item = Result<([u8; 16], [u8; 16])>> + '_ {
        let start = self.chunk_for(&from).unwrap_or(0);
        let mut ci = start;
        let mut cur: Option<(Arc<Vec<u8>>, usize)> = None;
        let mut done = false;
        std::iter::from_fn(move || loop {
            if done {
                return None;
            }
            if cur.is_none() {
                if ci >= self.chunks.len() || self.chunks[ci].first_key >= to {
                    done = true;
                    return None;
                }
                match self.chunk(ci) {
                    Ok(c) => cur = Some((c, 0)),
                    Err(e) => {
                        done = true;
                        return Some(Err(e));
                    }
                }
                ci += 1;
            }
            let (c, idx) = cur.as_mut().expect("chunk");
            if *idx * ENTRY_LEN >= c.len() {
                cur = None;
                continue;
            }
            let e = &c[*idx * ENTRY_LEN..(*idx + 1) * ENTRY_LEN];
            *idx += 1;
            let k: [u8; 16] = e[..16].try_into().expect("16");
            if k < from {
                continue;
            }
            if k >= to {
                done = true;
                return None;
            }
            return Some(Ok((k, e[16..].try_into().expect("16"))));
        })
    }

    /// Reads every chunk in order, verifying each.
    fn for_each(&self, f: &mut dyn FnMut(&[u8; 16], &[u8; 16]) -> Result<()>) -> Result<()> {
        let mut n = 0u64;
        for i in 0..self.chunks.len() {
            for e in self.read_chunk(i)?.chunks_exact(ENTRY_LEN) {
                f(
                    e[..16].try_into().expect("16"),
                    e[16..].try_into().expect("16"),
                )?;
                n += 1;
            }
        }
        if n != self.total {
            return Err(corrupt(format!(
                "checkpoint {}: holds {n} entries, its trailer says {}",
                self.path, self.total
            )));
        }
        Ok(())
    }
}

/// The log position of the newest checkpoint whose header verifies, read
/// from its 64-byte header alone (to size the log tail at open).
pub fn newest_position(
    backend: &dyn Backend,
    dir: &str,
    uuid: &[u8; 16],
) -> Result<Option<LogPos>> {
    for seq in list(backend, dir)? {
        match position(backend, dir, seq, uuid) {
            Ok(pos) => return Ok(Some(pos)),
            // Gone, short or damaged: an older checkpoint may do.
            Err(e) => tracing::debug!("checkpoint {seq:#x} skipped: {e}"),
        }
    }
    Ok(None)
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
    let r = Reader::open(backend, dir, seq, uuid)?;
    r.for_each(&mut |k, v| index.load_raw(k, v))?;
    index.finish_load();
    Ok(Loaded {
        pos: r.pos,
        state: r.state,
    })
}

/// Verifies checkpoint `seq` whole without keeping it (fsck).
pub fn verify(backend: &dyn Backend, dir: &str, seq: u64, uuid: &[u8; 16]) -> Result<()> {
    let r = Reader::open(backend, dir, seq, uuid)?;
    let mut prev: Option<[u8; 16]> = None;
    r.for_each(&mut |k, _| {
        if prev.is_some_and(|p| p >= *k) {
            return Err(corrupt(format!("checkpoint {}: keys out of order", r.path)));
        }
        let block = u64::from_be_bytes(k[8..].try_into().expect("8"));
        if block >= crate::format::MAX_VIRTUAL_SIZE / crate::format::BLOCK_SIZE {
            return Err(corrupt(format!(
                "checkpoint {}: block {block} is beyond any volume",
                r.path
            )));
        }
        prev = Some(*k);
        Ok(())
    })
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

/// Opens the newest checkpoint whose header, state and directory verify,
/// for searching in place. None if there is none.
pub fn open_newest(backend: &dyn Backend, dir: &str, uuid: &[u8; 16]) -> Result<Option<Reader>> {
    for seq in list(backend, dir)? {
        match Reader::open(backend, dir, seq, uuid) {
            Ok(r) => return Ok(Some(r)),
            Err(e) if e.kind() == ErrorKind::Corrupt || e.kind() == ErrorKind::NotFound => {
                tracing::warn!("skipping checkpoint: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
