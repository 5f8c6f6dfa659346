//! The segment log: writing records to the active segment, and scanning
//! segments back (replay, fsck).
//!
//! Every segment begins with a `SegmentHeader` naming the previous segment
//! and how many of its bytes are valid. A writer never appends to a segment
//! it did not create, so a torn tail left by a crash stays where it is and
//! the next segment's header says where the valid part ended.

use crate::backend::{Backend, ReadFile};
use crate::buf::{AlignedBuf, BufPool};
use crate::pipeline::SegIo;
use crate::error::{corrupt, Error, ErrorKind, Result};
use crate::format::{self, Record, RECORD_HEADER_LEN};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A position in the log: the next byte after the last applied record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogPos {
    /// Segment number.
    pub segment: u64,
    /// Byte offset in that segment.
    pub offset: u64,
    /// Sequence number the next record gets.
    pub next_seq: u64,
}

impl LogPos {
    /// 24-byte encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = format::Enc::default();
        e.u64(self.segment).u64(self.offset).u64(self.next_seq);
        e.0
    }
    /// Decodes `encode`'s output.
    pub fn decode(b: &[u8]) -> Result<LogPos> {
        let mut d = format::Dec::new(b, "log position");
        Ok(LogPos {
            segment: d.u64()?,
            offset: d.u64()?,
            next_seq: d.u64()?,
        })
    }
}

/// A record found by a scan.
#[derive(Debug)]
pub struct Scanned {
    /// Its sequence number.
    pub seq: u64,
    /// Segment number.
    pub segment: u64,
    /// Offset of the record header in the segment.
    pub offset: u64,
    /// Total bytes of the record (header + payload).
    pub len: u64,
    /// The decoded record.
    pub record: Record,
    /// For a `Data` record salvaged from a damaged one (see
    /// [`scan_segment_salvaging`]): indexes of the blocks whose bytes fail
    /// their checksums. Empty for an intact record.
    pub damaged_blocks: Vec<usize>,
}

/// Path of segment `n` of the volume in `dir`.
pub fn segment_path(dir: &str, n: u64) -> String {
    format!("{dir}/{}", format::segment_name(n))
}

/// Segment numbers present in `dir`, ascending.
pub fn list_segments(backend: &dyn Backend, dir: &str) -> Result<Vec<u64>> {
    let mut v: Vec<u64> = backend
        .list(dir)?
        .iter()
        .filter_map(|n| format::parse_segment_name(n))
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// Sequential reader with read-ahead over one segment.
struct SegReader {
    file: Arc<dyn ReadFile>,
    len: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

const READ_AHEAD: usize = 1 << 20;

impl SegReader {
    fn new(file: Arc<dyn ReadFile>) -> Result<Self> {
        let len = file.len()?;
        Ok(SegReader {
            file,
            len,
            buf: Vec::new(),
            buf_start: 0,
        })
    }

    /// Returns `n` bytes at `off`, or None if the file is shorter.
    fn get(&mut self, off: u64, n: usize) -> Result<Option<&[u8]>> {
        if off + n as u64 > self.len {
            return Ok(None);
        }
        let have =
            off >= self.buf_start && off + n as u64 <= self.buf_start + self.buf.len() as u64;
        if !have {
            let want = (n.max(READ_AHEAD) as u64).min(self.len - off) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(off, &mut self.buf)?;
            self.buf_start = off;
        }
        let s = (off - self.buf_start) as usize;
        Ok(Some(&self.buf[s..s + n]))
    }
}

/// Why a scan stopped before its bound.
fn bad_record(dir: &str, seg: u64, off: u64, why: impl std::fmt::Display) -> Error {
    corrupt(format!(
        "{dir}: segment {} offset {off}: {why}",
        format::segment_name(seg)
    ))
}

/// Scans segment `seg` from `start`. With `bound = Some(end)` every record up
/// to `end` must be valid (a bad one is `Corrupt`); with `None` the scan
/// stops quietly at the first bad or incomplete record (a torn tail).
/// Returns the offset after the last valid record.
pub fn scan_segment(
    backend: &dyn Backend,
    dir: &str,
    seg: u64,
    start: u64,
    bound: Option<u64>,
    f: &mut dyn FnMut(Scanned) -> Result<()>,
) -> Result<u64> {
    scan(backend, dir, seg, start, bound, false, f)
}

/// `scan_segment`, except that within a bounded (sealed) range a `Data`
/// record that fails its record checksum because some of its blocks are
/// damaged is passed on, with those blocks listed in
/// `Scanned::damaged_blocks`, instead of failing the scan. A record whose
/// blocks all match their checksums (so the damage is in its header or
/// block list) still fails. Index rebuilds use this, so that one bad block
/// costs that block and not the rest of the log: the damaged blocks keep
/// failing their reads, since the index keeps their stored checksums.
/// The header is trusted when its kind, length and block list agree and
/// the next record follows where its length says; a second flip inside
/// the 16 bytes of timeline and first block would go unnoticed, which is
/// why fsck reports every salvaged record as an error.
pub fn scan_segment_salvaging(
    backend: &dyn Backend,
    dir: &str,
    seg: u64,
    start: u64,
    bound: Option<u64>,
    f: &mut dyn FnMut(Scanned) -> Result<()>,
) -> Result<u64> {
    scan(backend, dir, seg, start, bound, true, f)
}

/// Block indexes of a `Data` record (header + payload in `rb`) whose bytes
/// do not match their stored checksums; None if the record cannot be read
/// as a data record or if every block matches (the damage is elsewhere).
fn damaged_data_blocks(h: &format::Header, rb: &[u8]) -> Option<(Record, Vec<usize>)> {
    if h.kind != format::Kind::Data {
        return None;
    }
    let record = format::decode_payload(h.kind, &rb[RECORD_HEADER_LEN..]).ok()?;
    let Record::Data { crcs, .. } = &record else {
        return None;
    };
    if rb.len()
        < RECORD_HEADER_LEN
            + format::DATA_PREFIX_LEN
            + crcs.len() * (4 + format::BLOCK_SIZE as usize)
    {
        return None;
    }
    let data_off = format::data_offset(rb.len() as u64, crcs.len()) as usize;
    let bad: Vec<usize> = rb[data_off..]
        .chunks(format::BLOCK_SIZE as usize)
        .zip(crcs)
        .enumerate()
        .filter(|(_, (b, c))| crc32c::crc32c(b) != **c)
        .map(|(i, _)| i)
        .collect();
    (!bad.is_empty()).then_some((record, bad))
}

fn scan(
    backend: &dyn Backend,
    dir: &str,
    seg: u64,
    start: u64,
    bound: Option<u64>,
    salvage: bool,
    f: &mut dyn FnMut(Scanned) -> Result<()>,
) -> Result<u64> {
    let file = backend.open_read(&segment_path(dir, seg))?;
    let mut r = SegReader::new(file)?;
    let mut off = start;
    let limit = bound.unwrap_or(r.len);
    if limit > r.len {
        return Err(bad_record(
            dir,
            seg,
            r.len,
            format!("segment is shorter than its recorded valid length {limit}"),
        ));
    }
    while off < limit {
        let outcome = (|| -> Result<Option<Scanned>> {
            let Some(hb) = r.get(off, RECORD_HEADER_LEN)? else {
                return Ok(None);
            };
            let h = format::decode_header(hb)?;
            let total = RECORD_HEADER_LEN + h.len as usize;
            let Some(rb) = r.get(off, total)? else {
                return Ok(None);
            };
            if let Err(e) = format::verify_crc(rb, h.crc) {
                let salvaged = if salvage && bound.is_some() {
                    damaged_data_blocks(&h, rb)
                } else {
                    None
                };
                let Some((record, damaged_blocks)) = salvaged else {
                    return Err(e);
                };
                tracing::warn!(
                    "{dir}: segment {seg} offset {off}: data record damaged in blocks {damaged_blocks:?}; keeping its intact blocks"
                );
                return Ok(Some(Scanned {
                    seq: h.seq,
                    segment: seg,
                    offset: off,
                    len: total as u64,
                    record,
                    damaged_blocks,
                }));
            }
            let record = format::decode_payload(h.kind, &rb[RECORD_HEADER_LEN..])?;
            Ok(Some(Scanned {
                seq: h.seq,
                segment: seg,
                offset: off,
                len: total as u64,
                record,
                damaged_blocks: Vec::new(),
            }))
        })();
        match outcome {
            Ok(Some(s)) => {
                let next = off + s.len;
                if next > limit {
                    if bound.is_some() {
                        return Err(bad_record(
                            dir,
                            seg,
                            off,
                            "record crosses the segment's valid length",
                        ));
                    }
                    break;
                }
                f(s)?;
                off = next;
            }
            Ok(None) if bound.is_none() => break,
            Ok(None) => return Err(bad_record(dir, seg, off, "record is truncated")),
            Err(e) if bound.is_none() && e.kind() == ErrorKind::Corrupt => {
                tracing::debug!("{dir}: torn tail in segment {seg} at {off}: {e}");
                break;
            }
            Err(e) if e.kind() == ErrorKind::Corrupt => return Err(bad_record(dir, seg, off, e)),
            Err(e) => return Err(e),
        }
    }
    Ok(off)
}

/// The offset of the first whole, valid record that starts after `from` in
/// segment `seg`, if any. A torn tail is garbage to the end of the file; a
/// valid record beyond a bad one means the bad one is damage, not a tear.
pub fn valid_record_after(
    backend: &dyn Backend,
    dir: &str,
    seg: u64,
    from: u64,
) -> Result<Option<u64>> {
    let file = backend.open_read(&segment_path(dir, seg))?;
    let len = file.len()?;
    if from >= len {
        return Ok(None);
    }
    let mut buf = vec![0u8; (len - from) as usize];
    file.read_exact_at(from, &mut buf)?;
    let mut i = 1;
    while i + RECORD_HEADER_LEN <= buf.len() {
        if buf[i..i + 4] == format::MAGIC {
            if let Ok(h) = format::decode_header(&buf[i..]) {
                let end = i + RECORD_HEADER_LEN + h.len as usize;
                if end <= buf.len() && format::verify_crc(&buf[i..end], h.crc).is_ok() {
                    return Ok(Some(from + i as u64));
                }
            }
        }
        i += 1;
    }
    Ok(None)
}

/// Whether bytes `[from, to)` of segment `seg` are all zero: a gap that
/// was never written (positional writes land out of order), not damage.
pub fn is_hole(backend: &dyn Backend, dir: &str, seg: u64, from: u64, to: u64) -> Result<bool> {
    let file = backend.open_read(&segment_path(dir, seg))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        file.read_exact_at(at, &mut buf[..n])?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// The header of segment `seg`, or None if it is missing or torn.
pub fn segment_header(
    backend: &dyn Backend,
    dir: &str,
    seg: u64,
) -> Result<Option<(u64, u64, [u8; 16])>> {
    let mut found = None;
    let file = match backend.open_read(&segment_path(dir, seg)) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.len()?;
    if len < RECORD_HEADER_LEN as u64 {
        return Ok(None);
    }
    let mut hb = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(0, &mut hb)?;
    let Ok(h) = format::decode_header(&hb) else {
        return Ok(None);
    };
    if h.kind != format::Kind::SegmentHeader || RECORD_HEADER_LEN as u64 + h.len as u64 > len {
        return Ok(None);
    }
    let mut rb = vec![0u8; RECORD_HEADER_LEN + h.len as usize];
    file.read_exact_at(0, &mut rb)?;
    if format::verify_crc(&rb, h.crc).is_err() {
        return Ok(None);
    }
    if let Ok(Record::SegmentHeader {
        uuid,
        segment,
        prev_segment,
        prev_valid_len,
        ..
    }) = format::decode_payload(h.kind, &rb[RECORD_HEADER_LEN..])
    {
        if segment == seg {
            found = Some((prev_segment, prev_valid_len, uuid));
        }
    }
    Ok(found)
}

/// Which segments form the log from a starting segment on, and where each ends.
#[derive(Debug, Default)]
pub struct Layout {
    /// (segment, valid length if known) in log order; the last has `None`.
    pub chain: Vec<(u64, Option<u64>)>,
    /// Highest segment number present (valid or not).
    pub max_segment: u64,
    /// Segments present but outside the chain (torn creations, abandoned).
    pub abandoned: Vec<u64>,
}

/// Works out the chain of segments from `from_segment` (inclusive; 0 = the
/// very first) to the newest valid one, reading only their headers.
pub fn layout(
    backend: &dyn Backend,
    dir: &str,
    uuid: &[u8; 16],
    from_segment: u64,
) -> Result<Layout> {
    let segs = list_segments(backend, dir)?;
    let mut out = Layout {
        max_segment: segs.last().copied().unwrap_or(0),
        ..Default::default()
    };
    let mut rev: Vec<(u64, Option<u64>)> = Vec::new();
    let mut next_bound: Option<u64> = None;
    let mut want: Option<u64> = None; // the segment the previous header pointed at
    for &s in segs.iter().rev() {
        if s < from_segment {
            break;
        }
        if let Some(w) = want {
            if s > w {
                out.abandoned.push(s);
                continue;
            }
            if s < w {
                return Err(corrupt(format!(
                    "{dir}: segment {} is missing (the log chain needs it)",
                    format::segment_name(w)
                )));
            }
        }
        match segment_header(backend, dir, s)? {
            Some((prev, prev_len, u)) if &u == uuid => {
                rev.push((s, next_bound));
                next_bound = Some(prev_len);
                if prev == 0 || prev < from_segment {
                    break;
                }
                want = Some(prev);
            }
            Some(_) => {
                return Err(corrupt(format!(
                    "{dir}: segment {} belongs to another volume",
                    format::segment_name(s)
                )))
            }
            None if want.is_none() => out.abandoned.push(s),
            None => {
                return Err(corrupt(format!(
                    "{dir}: segment {} has a damaged header",
                    format::segment_name(s)
                )))
            }
        }
    }
    rev.reverse();
    out.chain = rev;
    out.abandoned.sort_unstable();
    Ok(out)
}

/// The segment being written.
struct Active {
    n: u64,
    /// The file, behind the write pipeline (`pipeline::SegIo`).
    io: Arc<SegIo>,
    /// Logical length: everything encoded so far.
    len: u64,
    /// Bytes handed to the pipeline (`SegIo::enqueue`).
    pushed: u64,
    /// `mem` holds bytes `[mem_start, len)`.
    mem_start: u64,
    mem: AlignedBuf,
    /// Where this segment's bytes were written before failed writes made
    /// the writer move them (`LogWriter::rewrite_active`), oldest first;
    /// reads resolved to a moved place are served from `mem` too.
    moved: Vec<SegMove>,
    /// Bytes of header held back (`SegIo::hold_header`) that the first
    /// push must send as zeros; 0 once pushed, or if none is held.
    held_header: usize,
}

/// Bytes of segment `from` at offsets `at..` now live in segment `to`,
/// starting at `to_at` (`LogWriter::rewrite_active`): the whole segment at
/// the same offsets, or its part after a durable prefix that stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegMove {
    /// The segment the bytes were in.
    pub from: u64,
    /// The first offset in `from` that moved.
    pub at: u64,
    /// The segment they are in now.
    pub to: u64,
    /// Where the byte at `at` is now.
    pub to_at: u64,
}

impl SegMove {
    /// Where byte `off` of segment `seg` is now, if this move took it.
    pub fn apply(&self, seg: u64, off: u64) -> Option<(u64, u64)> {
        (seg == self.from && off >= self.at).then(|| (self.to, off - self.at + self.to_at))
    }
}

/// Told when the active segment's bytes move (`LogWriter::rewrite_active`):
/// the volume points its map's extents there.
pub type OnRename = Arc<dyn Fn(SegMove) -> Result<()> + Send + Sync>;

/// Checks that the writer still holds the volume's write lock (`Ok`), or
/// says who took it (`Locked`): asked before the writer goes on after a
/// failure it did not give up on, since the volume may have been taken
/// over meanwhile (`hlfs unlock`) and the segment numbers that fence it
/// freed again by the new writer's cleaner.
pub type Fence = Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// Appends records to the log, one segment at a time.
pub struct LogWriter {
    backend: Arc<dyn Backend>,
    dir: String,
    uuid: [u8; 16],
    segment_size: u64,
    active: Option<Active>,
    next_segment: u64,
    prev: (u64, u64),
    next_seq: u64,
    /// Number of the active segment (u64::MAX if none), for lock-free checks by readers.
    pub active_segment: Arc<AtomicU64>,
    poisoned: Option<String>,
    /// A segment create or a drain failed (a full disk, say) on a backend
    /// that can carry on. The pipeline cuts a half-written file back itself
    /// (`SegIo::drain`); this only keeps inline appends off until a
    /// blocking one has gone through.
    needs_repair: bool,
    /// Bytes appended since the last checkpoint.
    pub since_checkpoint: u64,
    dirty: bool,
    /// Full segments not yet known durable, oldest first: each is synced
    /// and closed by a thread of its own where the backend allows it
    /// (`Backend::close_in_background`), else at the next flush. Appends go
    /// on meanwhile, but a segment opened while any is here holds its
    /// header back (`SegIo::hold_header`): the header, which vouches for
    /// its predecessor's length, goes to the file only once every earlier
    /// segment is durable. A crash before that leaves a headerless segment
    /// that `layout` treats as abandoned, and nothing in it was
    /// acknowledged: a flush first waits for every segment here.
    closing: VecDeque<Closing>,
    /// Bypass the page cache: create segments for O_DIRECT and write
    /// page-aligned (version 2) records.
    aligned: bool,
    /// The batch record data writes are joining (aligned writers only). It
    /// is the last record in `Active::mem`, and is sealed (header and
    /// checksum filled in) before anything else is appended or pushed.
    batch: Option<OpenBatch>,
    /// Tail buffers, kept across segments (the pipeline gives drained ones back).
    pool: Arc<BufPool>,
    /// `rewrite_active`'s attempts and first wait (`OpenOptions`).
    rewrite_attempts: u32,
    rewrite_wait: std::time::Duration,
    on_rename: Option<OnRename>,
    fence: Option<Fence>,
    /// A failure was survived (`retries`) and the next create or rewrite
    /// must first ask the fence.
    recovering: bool,
}

/// A batch record being filled in the active segment's memory.
struct OpenBatch {
    /// Segment offset of the record.
    rec_off: u64,
    seq: u64,
    timeline: u64,
    extents: u32,
    blocks: u32,
    /// Bytes of the first page used so far (header, prefix, entries).
    used: usize,
}

/// What a flush still has to do once the writer is let go
/// (`LogWriter::begin_flush`).
#[must_use]
pub struct PendingFlush {
    io: Arc<SegIo>,
    target: u64,
}

impl PendingFlush {
    /// Writes what is queued and makes the segment durable up to the
    /// flush's position, sharing the sync with concurrent flushers.
    pub fn finish(self) -> Result<()> {
        self.io.sync_to(self.target)
    }
}

/// A full segment waiting to be synced and closed.
struct Closing {
    n: u64,
    io: Arc<SegIo>,
    /// The thread closing it, or None where it is closed at the next flush.
    done: Option<std::thread::JoinHandle<Result<()>>>,
}

/// Marks a segment's close failed if its thread ends without closing it
/// (a panic): the thread of the segment after it waits for that mark.
struct ClosedOnDrop(Arc<SegIo>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.0.set_closed(false); // no-op once `close` has set it
    }
}

/// Full segments that may wait to be closed at once; one more waits for
/// the oldest. With 64 MiB segments a flush may then have up to 512 MiB
/// to sync, as a raw file written through the page cache would.
const MAX_CLOSING: usize = 8;

/// Whether writing a segment's bytes again may get past `e`: a failure of
/// the backend's machinery (a DataNode, the network), not a full quota, a
/// refused permission, a bad argument or a lost lease, which a retry would
/// only repeat.
fn rewrite_helps(e: &Error) -> bool {
    e.kind() == ErrorKind::Backend
}

/// Push buffered bytes to the backend once this many are waiting.
const PUSH_THRESHOLD: usize = 1 << 20;
/// The same for a writer that bypasses the page cache: each push is one
/// synchronous O_DIRECT write, so larger pushes keep the disk busier.
const DIRECT_PUSH_THRESHOLD: usize = 4 << 20;
/// Emptied tail buffers a writer keeps for reuse (`buf::BufPool`).
const SPARE_BUFFERS: usize = 4;

impl LogWriter {
    /// A writer whose first segment will be `next_segment`, following
    /// segment `prev.0` whose valid length is `prev.1`.
    pub fn new(
        backend: Arc<dyn Backend>,
        dir: &str,
        uuid: [u8; 16],
        segment_size: u64,
        next_segment: u64,
        prev: (u64, u64),
        next_seq: u64,
    ) -> Self {
        LogWriter {
            backend,
            dir: dir.to_string(),
            uuid,
            segment_size,
            active: None,
            next_segment,
            prev,
            next_seq,
            active_segment: Arc::new(AtomicU64::new(u64::MAX)),
            poisoned: None,
            needs_repair: false,
            since_checkpoint: 0,
            dirty: false,
            closing: VecDeque::new(),
            aligned: false,
            batch: None,
            pool: Arc::new(BufPool::new(SPARE_BUFFERS)),
            rewrite_attempts: 10,
            rewrite_wait: std::time::Duration::from_millis(500),
            on_rename: None,
            fence: None,
            recovering: false,
        }
    }

    /// Capacity of a tail buffer: a push's worth and room for the record
    /// that crosses the threshold.
    fn tail_capacity(&self) -> usize {
        self.push_threshold() + (1 << 20)
    }

    fn push_threshold(&self) -> usize {
        if self.aligned {
            DIRECT_PUSH_THRESHOLD
        } else {
            PUSH_THRESHOLD
        }
    }

    /// Finishes the open batch record, if any: header and checksum.
    fn seal_batch(&mut self) {
        let Some(b) = self.batch.take() else { return };
        let a = self
            .active
            .as_mut()
            .expect("a batch lives in the active segment");
        let s = (b.rec_off - a.mem_start) as usize;
        format::seal_batch_record(&mut a.mem[s..], b.seq, b.timeline, b.extents, b.blocks);
    }

    /// Adds whole blocks to the open batch record, or to a new one (aligned
    /// writers). `inline`: only if that needs no I/O (else `Ok(None)`, with
    /// nothing changed). Returns the segment, the segment offset of the
    /// first block's bytes, and the blocks as a `Data` record.
    fn batch_append(
        &mut self,
        timeline: u64,
        first_block: u64,
        parts: &[&[u8]],
        inline: bool,
    ) -> Result<Option<(u64, u64, Record)>> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let count = (len / format::BLOCK_SIZE as usize) as u32;
        let entry = 12 + 4 * count as usize;
        let page = format::PAGE as u64;
        let pending = |a: &Active| a.mem.len() - (a.pushed - a.mem_start) as usize;
        let joins = match (&self.batch, &self.active) {
            (Some(b), Some(a)) => {
                b.timeline == timeline
                    && b.blocks + count <= format::MAX_BLOCKS_PER_BATCH
                    && b.used + entry <= format::PAGE
                    && a.len + len as u64 <= self.segment_size
                    && (!inline || pending(a) + len < self.push_threshold())
            }
            _ => false,
        };
        if !joins {
            if inline {
                if self.poisoned.is_some() || self.needs_repair {
                    return Ok(None);
                }
                let Some(a) = &self.active else {
                    return Ok(None);
                };
                if a.len + page + len as u64 > self.segment_size
                    || pending(a) + format::PAGE + len >= self.push_threshold()
                {
                    return Ok(None);
                }
                self.seal_batch();
            } else {
                self.ready()?;
                self.seal_batch();
                if let Some(a) = &self.active {
                    if a.len + page + len as u64 > self.segment_size && a.len > 128 {
                        self.roll()?;
                    }
                }
                if self.active.is_none() {
                    let r = self.open_segment();
                    self.fail_repairable(r)?;
                }
                if pending(self.active.as_ref().expect("active")) + format::PAGE + len
                    >= self.push_threshold()
                {
                    let r = self.push();
                    self.fail_repairable(r)?;
                }
            }
            let a = self.active.as_mut().expect("active");
            self.batch = Some(OpenBatch {
                rec_off: a.len,
                seq: self.next_seq,
                timeline,
                extents: 0,
                blocks: 0,
                used: RECORD_HEADER_LEN + format::BATCH_PREFIX_LEN,
            });
            self.next_seq += 1;
            a.mem.resize(a.mem.len() + format::PAGE, 0);
            a.len += page;
            self.since_checkpoint += page;
        }
        let a = self.active.as_mut().expect("active");
        let b = self.batch.as_mut().expect("open batch");
        let data_off = a.len;
        let start = a.mem.len();
        for p in parts {
            a.mem.extend_from_slice(p);
        }
        // Checksums of the log's own copy (see `format::encode_data_record`).
        let crcs: Vec<u32> = a.mem[start..]
            .chunks(format::BLOCK_SIZE as usize)
            .map(crc32c::crc32c)
            .collect();
        let mut e = format::Enc::default();
        e.u64(first_block).u32(count);
        for c in &crcs {
            e.u32(*c);
        }
        let at = (b.rec_off - a.mem_start) as usize + b.used;
        a.mem[at..at + entry].copy_from_slice(&e.0);
        b.used += entry;
        b.extents += 1;
        b.blocks += count;
        a.len += len as u64;
        self.since_checkpoint += len as u64;
        self.dirty = true;
        Ok(Some((
            a.n,
            data_off,
            Record::Data {
                timeline,
                first_block,
                crcs,
            },
        )))
    }

    /// Writes page-aligned records into segments that bypass the host's
    /// page cache (`Backend::create_direct`), from the next segment on.
    pub fn set_direct(&mut self, direct: bool) {
        self.aligned = direct;
    }

    /// Closes the oldest full segment waiting (`closing`), or waits for
    /// its thread; once none waits, the active segment's header may go out.
    fn finish_oldest(&mut self) -> Result<()> {
        let Some(c) = self.closing.pop_front() else {
            return Ok(());
        };
        let r = match c.done {
            Some(h) => match h.join() {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Backend,
                    "the thread closing a segment panicked",
                )),
            },
            None => {
                // Every earlier one is closed: its header may go out.
                c.io.release_header();
                c.io.close()
            }
        };
        // As with a failed sync: the kernel may have dropped what it could
        // not write, so only a reopen is safe.
        self.poison(
            r.map_err(|e| e.context(format!("closing segment {}", format::segment_name(c.n)))),
        )?;
        self.release_if_settled();
        Ok(())
    }

    /// Waits until every full segment is durable and closed.
    fn finish_closing(&mut self) -> Result<()> {
        while !self.closing.is_empty() {
            self.finish_oldest()?;
        }
        Ok(())
    }

    /// Joins the background closes that have ended, oldest first, without
    /// waiting for any.
    fn reap_closing(&mut self) -> Result<()> {
        while self
            .closing
            .front()
            .is_some_and(|c| c.done.as_ref().is_some_and(|h| h.is_finished()))
        {
            self.finish_oldest()?;
        }
        Ok(())
    }

    /// Once no full segment waits, the active one's header may go out.
    fn release_if_settled(&self) {
        if self.closing.is_empty() {
            if let Some(a) = &self.active {
                a.io.release_header();
            }
        }
    }

    /// Ends the active segment because it is full: its remaining bytes are
    /// written, and it joins `closing`, where it is synced and closed by a
    /// thread of its own (`Backend::close_in_background`) or at the next
    /// flush, while appends go on into the next segment. Backends whose
    /// files cannot take a header written last, or whose readers see a
    /// file only once it is closed (HDFS), seal it here.
    fn roll(&mut self) -> Result<()> {
        let defer = self.backend.reads_see_unclosed_appends()
            && self.active.as_ref().is_some_and(|a| a.io.can_hold_header());
        if !defer {
            return self.seal();
        }
        self.ready()?;
        while self.closing.len() >= MAX_CLOSING {
            self.finish_oldest()?;
        }
        let r = self.push_all();
        self.fail_repairable(r)?;
        let Some(a) = self.active.take() else {
            return Ok(());
        };
        self.prev = (a.n, a.len);
        self.active_segment.store(u64::MAX, Ordering::SeqCst);
        self.pool.put(a.mem);
        let done = if self.backend.close_in_background() {
            let io = a.io.clone();
            let before = self.closing.back().map(|c| c.io.clone());
            let h = std::thread::Builder::new()
                .name("hlfs-close".into())
                .spawn(move || {
                    // Whatever happens here, the next segment's thread
                    // must not wait for this one forever.
                    let _guard = ClosedOnDrop(io.clone());
                    if let Some(b) = before {
                        if !b.wait_closed() {
                            return Err(Error::new(
                                ErrorKind::Backend,
                                format!("segment {} before it failed to close", format::segment_name(b.n)),
                            ));
                        }
                    }
                    io.release_header();
                    io.close()
                })
                .map_err(|e| Error::io("starting a thread to close a segment", e))?;
            Some(h)
        } else {
            None
        };
        self.closing.push_back(Closing { n: a.n, io: a.io, done });
        Ok(())
    }

    fn check(&self) -> Result<()> {
        let io = self.active.as_ref().and_then(|a| a.io.poisoned());
        match self.poisoned.as_ref().or(io.as_ref()) {
            None => Ok(()),
            Some(m) => Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "{}: an earlier write to the log failed ({m}); close and reopen the volume",
                    self.dir
                ),
            )),
        }
    }

    /// Stops the writer for good with `e` (every later call fails until
    /// the volume is reopened): for a failure whose effect the caller has
    /// already applied in memory, such as a metadata record whose sync
    /// failed, so that nothing is written on top of a state the log may
    /// not hold.
    pub fn give_up(&mut self, e: &Error) {
        if self.poisoned.is_none() {
            self.poisoned = Some(e.to_string());
        }
    }

    fn poison<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    /// A failed push, append or segment create: on a backend that can carry
    /// on (`append_is_repairable`) the writer stays usable and the next
    /// call first cuts the file back (`repair`), so that once space is
    /// freed the same open volume goes on, with every write it acknowledged
    /// still in place. Elsewhere the writer is poisoned.
    fn fail_repairable<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if self.backend.append_is_repairable() {
                self.needs_repair = true;
                return r;
            }
            if self.retries(e) {
                // A full quota, or the NameNode or the DataNodes out of
                // reach (HDFS): the next call writes the segment's bytes
                // again (`ready`) or creates the segment again, which works
                // once the cause is gone.
                self.recovering = true;
                return r;
            }
            return self.poison(r);
        }
        r
    }

    /// Whether the writer stays usable after error `e` of the backend: a
    /// full quota or a failure of the backend's machinery, where the
    /// writer holds every byte of the active segment (or has none) and so
    /// can write them again at the next call.
    fn retries(&self, e: &Error) -> bool {
        matches!(e.kind(), ErrorKind::NoSpace | ErrorKind::Backend)
            && self.poisoned.is_none()
            && !self.backend.reads_see_unclosed_appends()
            && self.active.as_ref().is_none_or(|a| a.mem_start == 0)
    }

    /// Whether the retries that began at `since` have used up the
    /// backend's `retry_window`.
    fn retry_window_spent(&self, since: std::time::Instant) -> bool {
        self.backend.retry_window().is_some_and(|w| since.elapsed() >= w)
    }

    /// Clears the mark a failed create or drain left (the pipeline cuts a
    /// half-written file back itself before it writes again).
    fn repair(&mut self) -> Result<()> {
        if !self.needs_repair {
            return Ok(());
        }
        self.needs_repair = false;
        Ok(())
    }

    /// `check`, then `repair`. A failed active segment whose bytes can be
    /// written again (`rewritable`) is written again first: after a failure
    /// of the backend's machinery, or of a full quota, which a retry gets
    /// past once space is freed (until then the caller gets `NoSpace`
    /// again, and the writer stays usable).
    fn ready(&mut self) -> Result<()> {
        if self.poisoned.is_none() {
            self.check_fence()?;
        }
        if self.poisoned.is_none()
            && self.rewritable()
            && self.active.as_ref().is_some_and(|a| {
                matches!(a.io.poisoned_kind(), Some(ErrorKind::Backend | ErrorKind::NoSpace))
            })
        {
            self.rewrite_from(0)?;
        }
        self.check()?;
        self.repair()
    }

    /// How often `rewrite_active` tries, and its first wait.
    pub fn set_rewrite(&mut self, attempts: u32, wait: std::time::Duration) {
        self.rewrite_attempts = attempts;
        self.rewrite_wait = wait;
    }

    /// Who is told when the active segment's bytes move to another number.
    pub fn set_on_rename(&mut self, f: OnRename) {
        self.on_rename = Some(f);
    }

    /// What tells whether the write lock is still ours (see `Fence`).
    pub fn set_fence(&mut self, f: Fence) {
        self.fence = Some(f);
    }

    /// After a survived failure, before writing on: the lock must still
    /// be ours, else the writer stops for good.
    fn check_fence(&mut self) -> Result<()> {
        if !self.recovering {
            return Ok(());
        }
        if let Some(f) = self.fence.clone() {
            match f() {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Locked => return self.poison(Err(e)),
                // Cannot tell (the backend is still out of reach): not now.
                Err(e) => return Err(e),
            }
        }
        self.recovering = false;
        Ok(())
    }

    /// Whether a failed append or close of the active segment can be
    /// undone by writing its bytes again: on backends whose readers see a
    /// file only once it is closed (HDFS), the writer holds every byte of
    /// the active segment in memory.
    pub fn rewritable(&self) -> bool {
        !self.backend.reads_see_unclosed_appends()
            && self.active.as_ref().is_some_and(|a| a.mem_start == 0)
    }

    /// Writes the active segment's bytes again, whole, after a failed
    /// append or close (a DataNode of the write pipeline went away, say),
    /// into a new segment under the next number: the same records at the
    /// same offsets after a header that names the same predecessor, so the
    /// log's chain skips the failed file (`layout` leaves it abandoned) and
    /// only the map's segment number changes (`on_rename`). Creating the
    /// next number is also the fence: a writer that took the volume over
    /// (its lock was broken) created it at open, so the create fails and
    /// this writer stops. Tries `rewrite_attempts` times, waiting longer
    /// each time (the NameNode may need a few seconds to stop offering a
    /// dead DataNode), within the backend's `retry_window`; then the caller
    /// gets the last error, and where the writer can go on (`retries`) the
    /// next call starts over, else the writer is poisoned with it.
    fn rewrite_active(&mut self) -> Result<()> {
        self.rewrite_from(0).map(drop)
    }

    /// `rewrite_active`, counting attempts from `first` (a caller that
    /// retries a close through it shares the count and the waits); returns
    /// the attempt that worked.
    fn rewrite_from(&mut self, first: u32) -> Result<u32> {
        if !self.rewritable() {
            return self.check().map(|()| first);
        }
        let mut last: Option<Error> = None;
        let since = std::time::Instant::now();
        for attempt in first..self.rewrite_attempts.max(first + 1) {
            if attempt > first && self.retry_window_spent(since) {
                break;
            }
            let a = self.active.as_ref().expect("rewritable");
            let why = a.io.poisoned().or_else(|| last.as_ref().map(|e| e.to_string()));
            tracing::warn!(
                "{}: writing segment {} again as {} after a failure ({}), attempt {}",
                self.dir,
                format::segment_name(a.n),
                format::segment_name(self.next_segment),
                why.as_deref().unwrap_or("?"),
                attempt + 1
            );
            if attempt > 0 {
                self.rewrite_pause(attempt);
            }
            match self.rewrite_once() {
                Ok(()) => return Ok(attempt),
                Err(e) if e.kind() == ErrorKind::Exists => {
                    // The next number is taken: another writer has the
                    // volume, unless it is our own lost create's file.
                    self.own_leftover(self.next_segment)?;
                    last = Some(e);
                }
                Err(e) if rewrite_helps(&e) => last = Some(e),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        let e = last.unwrap_or_else(|| Error::new(ErrorKind::Backend, "the segment could not be written again"));
        let n = self.active.as_ref().map_or(0, |a| a.n);
        if self.retries(&e) {
            // Still full, or still out of reach: the caller is told, and
            // the next call tries again (`ready`).
            self.recovering = true;
            return Err(e.context(format!(
                "{}: writing segment {} again; the volume stays open and tries again at the next write or flush",
                self.dir,
                format::segment_name(n)
            )));
        }
        self.poison(Err(e.context(format!(
            "{}: writing segment {} again ({} attempts)",
            self.dir,
            format::segment_name(n),
            self.rewrite_attempts
        ))))
    }

    /// One attempt of `rewrite_active`. Where a prefix of the segment is
    /// durable (a flush synced it: `SegIo::synced`), that prefix stays
    /// where it is, in the chain, and only the records after it are
    /// written again: after a header that names the old segment and that
    /// prefix's length, each one sequence number later (the header takes
    /// the first record's). Elsewhere the whole segment is written again
    /// at the same offsets, after a header that names the same
    /// predecessor and keeps its sequence number.
    fn rewrite_once(&mut self) -> Result<()> {
        debug_assert!(self.batch.is_none(), "batch records are for O_DIRECT segments");
        let m = self.next_segment;
        let a = self.active.as_ref().expect("rewritable");
        a.io.abandon();
        let old = a.n;
        let h = format::decode_header(&a.mem)?;
        let hdr_len = RECORD_HEADER_LEN + h.len as usize;
        let synced = a.io.synced();
        let keep = synced > hdr_len as u64 && synced <= a.len;
        let (bytes, mv) = if keep {
            let tail = &a.mem[synced as usize..a.len as usize];
            let first_seq = if tail.is_empty() {
                self.next_seq
            } else {
                format::decode_header(tail)?.seq
            };
            let mut bytes = AlignedBuf::with_capacity(tail.len() + 4096);
            self.encode_header_after(&mut bytes, m, first_seq, (old, synced));
            let to_at = bytes.len() as u64;
            let mut off = 0;
            while off < tail.len() {
                let rh = format::decode_header(&tail[off..])?;
                let total = RECORD_HEADER_LEN + rh.len as usize;
                let at = bytes.len();
                bytes.extend_from_slice(&tail[off..off + total]);
                format::set_seq(&mut bytes[at..at + total], rh.seq + 1);
                off += total;
            }
            (bytes, SegMove { from: old, at: synced, to: m, to_at })
        } else {
            let prev = match format::decode_payload(h.kind, &a.mem[RECORD_HEADER_LEN..hdr_len])? {
                Record::SegmentHeader { prev_segment, prev_valid_len, .. } => (prev_segment, prev_valid_len),
                _ => return Err(corrupt(format!("{}: segment {old} does not start with its header", self.dir))),
            };
            let mut hdr = Vec::with_capacity(hdr_len);
            self.encode_header_after(&mut hdr, m, h.seq, prev);
            if hdr.len() != hdr_len {
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!("segment header of {} bytes where {hdr_len} were", hdr.len()),
                ));
            }
            let mut bytes = AlignedBuf::from_slice(&a.mem[..a.len as usize]);
            bytes[..hdr_len].copy_from_slice(&hdr);
            (bytes, SegMove { from: old, at: 0, to: m, to_at: 0 })
        };
        let file = self.create_segment(m)?;
        // The number is taken from here on, whatever happens next.
        self.next_segment = m + 1;
        let io = SegIo::new(m, file, self.backend.append_is_repairable(), self.pool.clone());
        io.enqueue(0, AlignedBuf::from_slice(&bytes));
        io.drain()?;
        let a = self.active.as_mut().expect("rewritable");
        a.len = bytes.len() as u64;
        a.mem = bytes;
        a.mem_start = 0;
        a.moved.push(mv);
        a.n = m;
        a.io = io;
        a.pushed = a.len;
        if keep {
            self.next_seq += 1;
        }
        self.active_segment.store(m, Ordering::SeqCst);
        if let Some(f) = &self.on_rename {
            // The map must name the new place before anything else reads
            // or checkpoints it; a failure here leaves it unsure.
            let r = f(mv);
            self.poison(r)?;
        }
        // Have the failed file closed with what its DataNodes hold (HDFS
        // lease recovery), so that readers see it: a kept prefix is part
        // of the log. Until then only this writer reads it (from memory).
        if let Err(e) = self.backend.recover_lease(&segment_path(&self.dir, old)) {
            tracing::warn!("{}: closing the failed segment {}: {e}", self.dir, format::segment_name(old));
        }
        Ok(())
    }

    /// Where the next record will go (after the active segment, if any).
    pub fn position(&self) -> LogPos {
        match &self.active {
            Some(a) => LogPos {
                segment: a.n,
                offset: a.len,
                next_seq: self.next_seq,
            },
            None => LogPos {
                segment: self.prev.0,
                offset: self.prev.1,
                next_seq: self.next_seq,
            },
        }
    }

    /// Whether anything was appended since the last `flush`.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Creates the file of segment `n`, for O_DIRECT where the writer
    /// bypasses the page cache.
    fn create_segment(&self, n: u64) -> Result<Box<dyn crate::backend::AppendFile>> {
        let path = segment_path(&self.dir, n);
        if self.aligned {
            self.backend.create_direct(&path)
        } else {
            self.backend.create(&path)
        }
    }

    /// Appends the header record of segment `n` (sequence number `seq`),
    /// naming the writer's predecessor segment, to `out`.
    fn encode_segment_header<B: format::RecordBuf + ?Sized>(&self, out: &mut B, n: u64, seq: u64) {
        self.encode_header_after(out, n, seq, self.prev)
    }

    /// `encode_segment_header` naming `prev` (segment, valid length).
    fn encode_header_after<B: format::RecordBuf + ?Sized>(&self, out: &mut B, n: u64, seq: u64, prev: (u64, u64)) {
        let hdr = Record::SegmentHeader {
            uuid: self.uuid,
            segment: n,
            prev_segment: prev.0,
            prev_valid_len: prev.1,
            created: now().0,
        };
        if self.aligned {
            format::encode_record_aligned(out, seq, &hdr, &[]);
        } else {
            format::encode_record(out, seq, &hdr, &[]);
        }
    }

    /// Whether segment `n`, which a create found existing, is a leftover
    /// of this writer's own earlier create whose reply was lost (HDFS: the
    /// NameNode made the file, the answer never came, the call failed): so
    /// it is if the write lock is still ours, since a writer that took the
    /// volume over replaces the lock before it claims a number. Then the
    /// number is skipped (`layout` leaves the empty file abandoned). Else,
    /// or without a fence to ask, another writer has the volume: `Locked`,
    /// and this writer stops.
    fn own_leftover(&mut self, n: u64) -> Result<()> {
        let m = format::segment_name(n);
        let taken = || {
            Error::new(
                ErrorKind::Locked,
                format!(
                    "{}: segment {m} exists, so another writer has taken the volume over (its lock was broken); this one stops",
                    self.dir
                ),
            )
        };
        let Some(f) = self.fence.clone() else { return self.poison(Err(taken())) };
        match f() {
            Ok(()) => {
                tracing::warn!(
                    "{}: segment {m} exists, yet the write lock is still ours: an earlier create of it lost its answer; going on with the next number",
                    self.dir
                );
                self.next_segment = n + 1;
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Locked => self.poison(Err(e)),
            Err(e) => Err(e),
        }
    }

    fn open_segment(&mut self) -> Result<()> {
        let mut n = self.next_segment;
        let mut skipped = 0;
        let file = loop {
            match self.create_segment(n) {
                Err(e) if e.kind() == ErrorKind::Exists && skipped < 4 => {
                    self.own_leftover(n)?;
                    skipped += 1;
                    n = self.next_segment;
                }
                r => break r?,
            }
        };
        let mut a = Active {
            n,
            io: SegIo::new(n, file, self.backend.append_is_repairable(), self.pool.clone()),
            len: 0,
            pushed: 0,
            mem_start: 0,
            mem: self.pool.take(self.tail_capacity()),
            moved: Vec::new(),
            held_header: 0,
        };
        self.encode_segment_header(&mut a.mem, n, self.next_seq);
        self.next_seq += 1;
        a.len = a.mem.len() as u64;
        if !self.closing.is_empty() && a.io.can_hold_header() {
            // An earlier segment is not durable yet: header last.
            a.io.hold_header(AlignedBuf::from_slice(&a.mem[..a.len as usize]));
            a.held_header = a.len as usize;
        }
        self.next_segment = n + 1;
        self.active = Some(a);
        self.active_segment.store(n, Ordering::SeqCst);
        Ok(())
    }

    /// Appends one record (with block `data` for `Data`). Returns the
    /// segment, the record's offset, and the offset of its data.
    pub fn append(&mut self, rec: &Record, data: &[u8]) -> Result<(u64, u64, u64)> {
        let mut data_off = 0;
        let aligned = self.aligned;
        let (seg, off, _) = self.append_with(data.len(), &mut |out, seq| {
            data_off = if aligned {
                format::encode_record_aligned(out, seq, rec, data)
            } else {
                format::encode_record(out, seq, rec, data)
            } as u64;
        })?;
        Ok((seg, off, off + data_off))
    }

    /// Appends whatever `encode(out, seq)` writes (about `data_len` bytes
    /// plus a header) as the next record.
    fn append_with(
        &mut self,
        data_len: usize,
        encode: &mut dyn FnMut(&mut AlignedBuf, u64),
    ) -> Result<(u64, u64, u64)> {
        self.ready()?;
        self.seal_batch();
        let need = RECORD_HEADER_LEN as u64 + 64 + data_len as u64 + 1024 + format::PAGE as u64;
        if let Some(a) = &self.active {
            if a.len + need > self.segment_size && a.len > 128 {
                self.roll()?;
            }
        }
        if self.active.is_none() {
            // A failed create changes nothing here (the segment number is
            // taken only once the file exists).
            let r = self.open_segment();
            self.fail_repairable(r)?;
        }
        let threshold = self.push_threshold();
        let seq = self.next_seq;
        self.next_seq += 1;
        let a = self.active.as_mut().expect("active segment");
        let rec_off = a.len;
        let before = a.mem.len();
        encode(&mut a.mem, seq);
        let added = (a.mem.len() - before) as u64;
        a.len += added;
        self.since_checkpoint += added;
        self.dirty = true;
        if a.mem.len() - (a.pushed - a.mem_start) as usize >= threshold {
            let r = self.push();
            if let Err(e) = self.fail_repairable(r) {
                // The caller sees this append fail, so it must not reach the
                // log with a later push: take the record back. The records
                // before it were acknowledged and stay in `mem`.
                let a = self.active.as_mut().expect("active segment");
                a.mem.truncate(before);
                a.len -= added;
                self.since_checkpoint -= added;
                self.next_seq -= 1;
                return Err(e);
            }
        }
        Ok((self.active.as_ref().expect("active").n, rec_off, added))
    }

    /// Appends a data record for whole blocks `data`; the checksums are
    /// computed from the log's own copy. Returns the segment, the record's
    /// offset and the record as logged.
    pub fn append_data(
        &mut self,
        timeline: u64,
        first_block: u64,
        data: &[u8],
    ) -> Result<(u64, u64, u64, Record)> {
        self.append_data_parts(timeline, first_block, &[data])
    }

    /// `append_data` with the blocks gathered from `parts`, in order (a
    /// guest's scatter-gather list: no copy of it is made first).
    pub fn append_data_parts(
        &mut self,
        timeline: u64,
        first_block: u64,
        parts: &[&[u8]],
    ) -> Result<(u64, u64, u64, Record)> {
        let len = parts.iter().map(|p| p.len()).sum();
        if self.aligned {
            // Returned as a "record" of just the blocks: its data offset is its offset.
            let (seg, data_off, rec) = self
                .batch_append(timeline, first_block, parts, false)?
                .expect("blocking append");
            return Ok((seg, data_off, len as u64, rec));
        }
        // A packed Data record: an aligned writer returned above.
        let mut logged = None;
        let (seg, off, rec_len) = self.append_with(len, &mut |out, seq| {
            logged = Some(format::encode_data_record(out, seq, timeline, first_block, parts));
        })?;
        Ok((seg, off, rec_len, logged.expect("encoded")))
    }

    /// `append_data_parts` if it can be done without any I/O: the active
    /// segment exists and has room, nothing needs repair, and the record
    /// does not bring the buffered bytes to the push threshold. None
    /// otherwise, with nothing changed.
    pub fn try_append_data_parts(
        &mut self,
        timeline: u64,
        first_block: u64,
        parts: &[&[u8]],
    ) -> Option<(u64, u64, u64, Record)> {
        if self.poisoned.is_some() || self.needs_repair {
            return None;
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.aligned {
            let (seg, data_off, rec) = self
                .batch_append(timeline, first_block, parts, true)
                .ok()??;
            return Some((seg, data_off, len as u64, rec));
        }
        let need = RECORD_HEADER_LEN as u64 + 64 + len as u64 + 1024 + format::PAGE as u64;
        let a = self.active.as_ref()?;
        let pending = a.mem.len() - (a.pushed - a.mem_start) as usize;
        if a.len + need > self.segment_size || pending + need as usize >= self.push_threshold() {
            return None;
        }
        self.append_data_parts(timeline, first_block, parts).ok()
    }

    /// Hands buffered bytes to the write pipeline (not yet durable; see
    /// `pipeline`): the buffer itself where readers see unclosed appends
    /// (the writer goes on in a fresh one), a copy elsewhere (the writer
    /// keeps the segment's bytes for its readers until it is closed). A
    /// header held back goes as zeros (`SegIo::hold_header`). Writes them
    /// out at once only when the pipeline already holds two pushes' worth
    /// (it is slower than the writer).
    fn push(&mut self) -> Result<()> {
        self.seal_batch();
        self.reap_closing()?;
        let threshold = self.push_threshold();
        let visible = self.backend.reads_see_unclosed_appends();
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let from = (a.pushed - a.mem_start) as usize;
        if from >= a.mem.len() {
            return Ok(());
        }
        if a.io.queued() >= 2 * threshold {
            if let Err(e) = a.io.drain() {
                if !rewrite_helps(&e) || !self.rewritable() {
                    return Err(e);
                }
                // Written again whole, which covers what was queued.
                self.rewrite_active()?;
                let Some(a) = self.active.as_mut() else {
                    return Ok(());
                };
                a.pushed = a.len;
                return Ok(());
            }
        }
        let mut buf = if visible {
            let fresh = self.pool.take(a.mem.capacity());
            let mut buf = std::mem::replace(&mut a.mem, fresh);
            buf.drain_front(from);
            a.mem_start = a.len;
            buf
        } else {
            AlignedBuf::from_slice(&a.mem[from..])
        };
        if a.pushed == 0 && a.held_header > 0 {
            buf[..a.held_header].fill(0);
            a.held_header = 0;
        }
        a.io.enqueue(a.pushed, buf);
        a.pushed = a.len;
        Ok(())
    }

    /// `push`, then write everything queued (holding the writer lock).
    fn push_all(&mut self) -> Result<()> {
        self.push()?;
        match &self.active {
            Some(a) => a.io.drain(),
            None => Ok(()),
        }
    }

    /// The active segment's pipeline if it holds bytes to write: the
    /// caller drains it (`SegIo::drain`) after letting go of the writer.
    pub fn pending_io(&self) -> Option<Arc<SegIo>> {
        self.active
            .as_ref()
            .filter(|a| a.io.queued() > 0)
            .map(|a| a.io.clone())
    }

    /// Makes every appended record durable: a sync of the active segment
    /// (fdatasync; hsync on HDFS). Where the backend's `sync` were not
    /// durable, the active segment would be sealed instead (closing the
    /// file being the one thing that makes its bytes durable there), and
    /// the next append would start a new segment. A flush with nothing
    /// appended since the last one does nothing.
    pub fn flush(&mut self) -> Result<()> {
        match self.flush_round() {
            Err(e) => self.flush_again(e),
            Ok(()) => Ok(()),
        }
    }

    /// `begin_flush`, then its `PendingFlush::finish`, under the writer.
    fn flush_round(&mut self) -> Result<()> {
        match self.begin_flush()? {
            Some(f) => f.finish(),
            None => Ok(()),
        }
    }

    /// Waits before attempt `attempt` (from 1) of a rewrite or a flush
    /// after a failure: longer each time, up to 16 × `rewrite_wait`.
    fn rewrite_pause(&self, attempt: u32) {
        std::thread::sleep(self.rewrite_wait * (1 << attempt.min(4)));
    }

    /// After a flush whose sync failed with `e`: where the segment's bytes
    /// can be written again (an HDFS pipeline lost its DataNodes), `ready`
    /// (in `begin_flush`) writes what the sync did not cover into a new
    /// segment, which is then synced; tried `rewrite_attempts` times with
    /// the rewrite's growing waits, since the NameNode may go on offering a
    /// dead DataNode for a while, within the backend's `retry_window`.
    /// Elsewhere `e` is returned.
    pub fn flush_again(&mut self, mut e: Error) -> Result<()> {
        let since = std::time::Instant::now();
        for attempt in 1..=self.rewrite_attempts.max(1) {
            if !rewrite_helps(&e) || !self.rewritable() || self.poisoned.is_some() {
                return Err(e);
            }
            if attempt > 1 && self.retry_window_spent(since) {
                break;
            }
            tracing::warn!(
                "{}: a flush failed ({e}); writing the unsynced records again, attempt {attempt}",
                self.dir
            );
            if attempt > 1 {
                self.rewrite_pause(attempt);
            }
            match self.flush_round() {
                Ok(()) => return Ok(()),
                Err(x) => e = x,
            }
        }
        self.recovering = true;
        Err(e)
    }

    /// The part of `flush` that needs the writer: hands every appended
    /// byte to the pipeline and returns what `PendingFlush::finish` must
    /// make durable, which the caller does after letting go of the writer
    /// (group commit: flushers meanwhile share one sync). None if nothing
    /// is left to do (nothing appended, or the segment was sealed).
    pub fn begin_flush(&mut self) -> Result<Option<PendingFlush>> {
        self.ready()?;
        self.finish_closing()?;
        if !self.backend.sync_is_durable() {
            self.seal()?;
            return Ok(None);
        }
        let r = self.push();
        self.fail_repairable(r)?;
        self.dirty = false;
        Ok(self.active.as_ref().map(|a| PendingFlush {
            io: a.io.clone(),
            target: a.len,
        }))
    }

    /// Creates the next segment now rather than at the first append, so
    /// that its number is taken: a writer that still runs although its lock
    /// was broken fails when it tries to create that segment, instead of
    /// writing a log beside ours.
    pub fn claim(&mut self) -> Result<()> {
        self.ready()?;
        if self.active.is_none() {
            let r = self.open_segment();
            self.fail_repairable(r)?;
        }
        Ok(())
    }

    /// Makes everything durable and closes the active segment.
    pub fn seal(&mut self) -> Result<()> {
        self.ready()?;
        self.finish_closing()?;
        let mut r = self.push_all();
        if matches!(&r, Err(e) if rewrite_helps(e)) && self.rewritable() {
            r = self.rewrite_active();
        }
        self.fail_repairable(r)?;
        // A close that fails where the segment can be written again is
        // retried through `rewrite_active`.
        if self.rewritable() {
            let mut attempt = 0;
            let since = std::time::Instant::now();
            loop {
                let a = self.active.as_ref().expect("rewritable");
                match a.io.close() {
                    Ok(()) => break,
                    Err(e)
                        if rewrite_helps(&e)
                            && attempt + 1 < self.rewrite_attempts
                            && !self.retry_window_spent(since) =>
                    {
                        tracing::warn!("{}: {e}", self.dir);
                        attempt = self.rewrite_from(attempt + 1)?;
                    }
                    // The failed close left the segment's file abandoned:
                    // the next call writes its bytes again (`ready`).
                    Err(e) if self.retries(&e) => {
                        self.recovering = true;
                        return Err(e);
                    }
                    Err(e) => return self.poison(Err(e)),
                }
            }
        }
        // Poison if the close fails: `prev` then names a segment whose tail
        // may not be durable, and the next segment's header would vouch for it.
        let r = match self.active.take() {
            Some(a) => {
                self.prev = (a.n, a.len);
                self.pool.put(a.mem);
                a.io.close()
            }
            None => Ok(()),
        };
        self.poison(r)?;
        self.active_segment.store(u64::MAX, Ordering::SeqCst);
        self.dirty = false;
        Ok(())
    }

    /// Copies bytes of segment `seg` at `off` from the in-memory tail, if they are there.
    pub fn read_mem(&self, seg: u64, off: u64, buf: &mut [u8]) -> bool {
        let Some(a) = &self.active else {
            return false;
        };
        let (mut seg, mut off) = (seg, off);
        for m in &a.moved {
            if let Some((s, o)) = m.apply(seg, off) {
                (seg, off) = (s, o);
            }
        }
        if a.n != seg {
            return false;
        }
        if off >= a.mem_start && off + buf.len() as u64 <= a.len {
            let s = (off - a.mem_start) as usize;
            buf.copy_from_slice(&a.mem[s..s + buf.len()]);
            return true;
        }
        a.io.read_queued(off, buf)
    }
}

/// Wall-clock time as (seconds, nanoseconds) since the epoch.
pub fn now() -> (u64, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}
