//! The read path: blocks resolved through the timeline chain, read from
//! the writer's memory or the segment files, verified in a private buffer.

use super::*;

thread_local! {
    /// Per-thread buffer where blocks whose checksum failed in the caller's
    /// buffer are read and verified again.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread buffer of `read_vectored`.
    static GATHER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A window of `len` bytes of `v` at a page-aligned address (`v` grows to
/// hold it, with a page of slack for the alignment).
fn page_aligned(v: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if v.len() < len + format::PAGE {
        v.resize(len + format::PAGE, 0);
    }
    let pad = v.as_ptr().align_offset(format::PAGE);
    &mut v[pad..pad + len]
}

/// The first of `entries` (data entries of blocks stored back to back, read
/// into `data`) whose block fails its checksum, if any.
fn first_bad(entries: &[Option<Entry>], data: &[u8]) -> Option<usize> {
    entries.iter().enumerate().position(|(k, e)| {
        let Some(Entry::Data { crc, .. }) = e else { unreachable!("data entries only") };
        crc32c::crc32c(&data[k * BS..(k + 1) * BS]) != *crc
    })
}

/// `try_read_vectored` takes requests up to this size. The hop to a worker
/// costs about as much as copying 64 KiB; a larger read done inline would
/// hold QEMU's event loop for its copy and run the requests in flight one
/// after another, where the workers copy them in parallel (fio in the
/// guest, 1M sequential reads at QD8: 0.47x raw inline, ~1x on workers).
const INLINE_READ_MAX: usize = 64 << 10;

/// A `SCRATCH` buffer larger than this is freed after use: it is only
/// needed when a checksum fails in the caller's buffer (rare).
const SCRATCH_KEEP: usize = 256 << 10;

/// A `GATHER` buffer larger than this is freed after use rather than kept:
/// QEMU runs up to 64 pool threads, and keeping a large-read-sized buffer in
/// each of them cost more peak memory than allocating one per large read.
const GATHER_KEEP: usize = 256 << 10;

impl Volume {
    pub(super) fn reader(&self, seg: u64) -> Result<Arc<dyn ReadFile>> {
        if let Some(r) = self.readers.lock().get(&seg) {
            return Ok(r.clone());
        }
        let open = |p: &str| {
            if self.direct.load(Ordering::Acquire) {
                self.backend.open_read_direct(p)
            } else {
                self.backend.open_read(p)
            }
        };
        let r = match open(&log::segment_path(&self.dir, seg)) {
            // The cleaner retired it after this read resolved its block.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match cleaner::find_retired(&*self.backend, &self.dir, seg)? {
                    Some(p) => open(&p)?,
                    None => return Err(e),
                }
            }
            r => r?,
        };
        let mut m = self.readers.lock();
        if m.len() >= 256 {
            m.clear();
        }
        m.insert(seg, r.clone());
        Ok(r)
    }

    /// Reads `buf.len()` bytes of segment `seg` at `off`, from the writer's
    /// memory if they are still there, else from the backend.
    pub(super) fn read_log(&self, seg: u64, off: u64, buf: &mut [u8], held: Option<&LogWriter>) -> Result<()> {
        if self.active_segment.load(Ordering::SeqCst) == seg {
            let found = match held {
                Some(w) => w.read_mem(seg, off, buf),
                None if nowait() => self
                    .writer
                    .try_lock()
                    .ok_or_else(|| would_block("the writer"))?
                    .as_ref()
                    .is_some_and(|w| w.read_mem(seg, off, buf)),
                None => self
                    .writer
                    .lock()
                    .as_ref()
                    .is_some_and(|w| w.read_mem(seg, off, buf)),
            };
            if found {
                return Ok(());
            }
        }
        if nowait() {
            // Only a segment already open, only bytes in the page cache.
            let r = self.readers.lock().get(&seg).cloned();
            let r = r.ok_or_else(|| would_block("opening a segment"))?;
            return match r.try_read_exact_at(off, buf)? {
                true => Ok(()),
                false => Err(would_block("the disk")),
            };
        }
        let r = match self.reader(seg)?.read_exact_at(off, buf) {
            // A cached handle to a segment the cleaner has since retired: on
            // backends that read by path (HDFS, memory) it no longer finds
            // the file. Look the segment up again (under its retired name).
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.readers.lock().remove(&seg);
                self.reader(seg)?.read_exact_at(off, buf)
            }
            r => r,
        };
        r.map_err(|e| {
            e.context(format!(
                "{}: reading segment {} at offset {off}",
                self.uri,
                format::segment_name(seg)
            ))
        })
    }

    /// Resolves blocks `[first, first+n)` through the timeline chain.
    pub(super) fn resolve(&self, first: u64, n: u64) -> Result<Vec<Option<Entry>>> {
        let st = if nowait() {
            self.state.try_read().ok_or_else(|| would_block("the volume state"))?
        } else {
            self.state.read()
        };
        let index = self.index();
        let tl = self.view.map(|v| v.0).unwrap_or(st.head);
        let chain = st.chain(tl);
        index.resolve(&chain, first, n)
    }

    /// Reads whole blocks `[first, first + buf.len()/BS)` into `buf`. A
    /// read-only view whose segments the writer's cleaner deleted reloads
    /// and reads again (`reload_view`).
    pub(super) fn read_blocks(&self, first: u64, buf: &mut [u8], held: Option<&LogWriter>) -> Result<()> {
        if !self.read_only {
            return match self.read_blocks_once(first, buf, held) {
                // The writer's own cleaner moved a block and deleted its old
                // segment (no reader holding it) between this read's lookup
                // and its read: the map points at the copy now.
                Err(e) if e.kind() == ErrorKind::NotFound => self.read_blocks_once(first, buf, held),
                r => r,
            };
        }
        let generation = self.view_generation.load(Ordering::Acquire);
        match self.read_blocks_once(first, buf, held) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.reload_view(generation)
                    .map_err(|r| r.context(format!("{e}; reloading the view")))?;
                self.read_blocks_once(first, buf, held)
            }
            r => r,
        }
    }

    pub(super) fn read_blocks_once(&self, first: u64, buf: &mut [u8], held: Option<&LogWriter>) -> Result<()> {
        let n = (buf.len() / BS) as u64;
        let entries = self.resolve(first, n)?;
        self.read_entries(first, &entries, buf, held, true)
    }

    /// Reads the blocks `entries` maps, from `first` on, into `buf`:
    /// blocks no timeline maps from the base where `through_base` (else
    /// zeros).
    pub(super) fn read_entries(
        &self,
        first: u64,
        entries: &[Option<Entry>],
        buf: &mut [u8],
        held: Option<&LogWriter>,
        through_base: bool,
    ) -> Result<()> {
        let mut i = 0usize;
        while i < entries.len() {
            match entries[i] {
                Some(Entry::Data { seg, off, .. }) => {
                    // Coalesce blocks stored back to back in the same segment.
                    let mut j = i + 1;
                    while j < entries.len() {
                        match entries[j] {
                            Some(Entry::Data {
                                seg: s2, off: o2, ..
                            }) if s2 == seg && o2 as u64 == off as u64 + ((j - i) * BS) as u64 => {
                                j += 1
                            }
                            _ => break,
                        }
                    }
                    // Read straight into the caller's buffer and verify
                    // there. That buffer may be guest memory that changes
                    // under us, or shared by concurrent reads (qemu-img
                    // bench does that), so a mismatch is checked again in a
                    // private buffer before the block is called corrupt.
                    let dst = &mut buf[i * BS..j * BS];
                    self.read_log(seg, off as u64, dst, held)?;
                    if first_bad(&entries[i..j], dst).is_some() {
                        SCRATCH.with_borrow_mut(|scratch| -> Result<()> {
                            // Page-aligned, so an O_DIRECT segment reads straight into it.
                            let s = page_aligned(scratch, (j - i) * BS);
                            self.read_log(seg, off as u64, s, held)?;
                            let r = match first_bad(&entries[i..j], s) {
                                Some(k) => {
                                    let Some(Entry::Data { seg, off, .. }) = entries[i + k] else { unreachable!() };
                                    Err(corrupt(format!(
                                        "{}: block {} (segment {} offset {off}) fails its checksum; run `hlfs fsck`",
                                        self.uri,
                                        first + (i + k) as u64,
                                        format::segment_name(seg)
                                    )))
                                }
                                None => {
                                    dst.copy_from_slice(s);
                                    Ok(())
                                }
                            };
                            if scratch.capacity() > SCRATCH_KEEP {
                                *scratch = Vec::new();
                            }
                            r
                        })?;
                    }
                    i = j;
                }
                Some(Entry::Zero) => {
                    buf[i * BS..(i + 1) * BS].fill(0);
                    i += 1;
                }
                None => {
                    let mut j = i + 1;
                    while j < entries.len() && entries[j].is_none() {
                        j += 1;
                    }
                    if through_base {
                        self.read_base(first + i as u64, &mut buf[i * BS..j * BS])?;
                    } else {
                        buf[i * BS..j * BS].fill(0);
                    }
                    i = j;
                }
            }
        }
        Ok(())
    }

    /// The base this volume reads through, if it is (still) a clone: a
    /// flatten drops the base while the volume stays open.
    pub(super) fn live_base(&self) -> Option<&Arc<Volume>> {
        self.base
            .as_ref()
            .filter(|_| self.state.read().base.is_some())
    }

    /// Reads blocks that no timeline of this volume maps: from the base, or zeros.
    pub(super) fn read_base(&self, first: u64, buf: &mut [u8]) -> Result<()> {
        buf.fill(0);
        let Some(base) = self.live_base() else {
            return Ok(());
        };
        // Round up: a base whose size is not a multiple of the block size
        // still holds its last, partial block whole in the log (the bytes
        // past its end read as zeros), so the clone reads it from there.
        let base_blocks = base.size().div_ceil(BLOCK_SIZE);
        if first >= base_blocks {
            return Ok(());
        }
        let n = ((buf.len() / BS) as u64).min(base_blocks - first) as usize;
        base.read_blocks(first, &mut buf[..n * BS], None)
    }

    /// Reads `buf.len()` bytes at `offset`. Offset and length must be
    /// multiples of 512 and inside the volume.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_io(offset, buf.len() as u64, self.size())?;
        self.read_inner(offset, buf, None)
    }

    pub(super) fn read_inner(&self, offset: u64, buf: &mut [u8], held: Option<&LogWriter>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let head_skip = (offset % BLOCK_SIZE) as usize;
        let end = offset + buf.len() as u64;
        if head_skip == 0 && end % BLOCK_SIZE == 0 {
            return self.read_blocks(offset / BLOCK_SIZE, buf, held);
        }
        let first = offset / BLOCK_SIZE;
        let last = end.div_ceil(BLOCK_SIZE);
        let mut tmp = vec![0u8; ((last - first) as usize) * BS];
        self.read_blocks(first, &mut tmp, held)?;
        buf.copy_from_slice(&tmp[head_skip..head_skip + buf.len()]);
        Ok(())
    }

    /// `read_vectored` if it can be done without waiting: every block is a
    /// hole, in the writer's memory or in the host's page cache, and no
    /// lock it needs is busy. Returns false otherwise (the buffers may then
    /// hold anything), and the caller makes the blocking call: QEMU's
    /// driver calls this from the request coroutine and hands only the
    /// rest to its worker threads, so a read served from memory costs no
    /// thread hop. Errors, too, are left to the blocking call to report.
    pub fn try_read_vectored(&self, offset: u64, bufs: &mut [&mut [u8]]) -> bool {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.closed.load(Ordering::Acquire) || len > INLINE_READ_MAX {
            return false;
        }
        with_nowait(|| self.read_vectored(offset, bufs)).is_ok()
    }

    /// Reads into the concatenation of `bufs` from `offset`, like `read`.
    /// Where every buffer is whole blocks at a block-aligned offset (QEMU's
    /// requests from a guest: a few runs of pages), each is read straight
    /// into; otherwise through a per-thread buffer, then copied out.
    pub fn read_vectored(&self, offset: u64, bufs: &mut [&mut [u8]]) -> Result<()> {
        if let [one] = bufs {
            return self.read(offset, one);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        self.check_io(offset, len as u64, self.size())?;
        if offset % BLOCK_SIZE == 0 && bufs.iter().all(|b| b.len() % BS == 0) {
            let mut at = offset;
            for b in bufs.iter_mut() {
                self.read_inner(at, b, None)?;
                at += b.len() as u64;
            }
            return Ok(());
        }
        GATHER.with_borrow_mut(|g| -> Result<()> {
            g.clear();
            g.resize(len, 0);
            self.read(offset, g)?;
            let mut at = 0;
            for b in bufs.iter_mut() {
                b.copy_from_slice(&g[at..at + b.len()]);
                at += b.len();
            }
            if g.capacity() > GATHER_KEEP {
                *g = Vec::new();
            }
            Ok(())
        })
    }

    /// Status of the blocks from `offset`: what the first block holds, and
    /// how many bytes (up to `len`) share that status.
    pub fn block_status(&self, offset: u64, len: u64) -> Result<(BlockState, u64)> {
        let size = self.size();
        if offset >= size || len == 0 {
            return Err(invalid(format!(
                "{}: block status at {offset} is past the end ({size} bytes)",
                self.uri
            )));
        }
        let len = len.min(size - offset);
        let first = offset / BLOCK_SIZE;
        let last = (offset + len).div_ceil(BLOCK_SIZE);
        let n = (last - first).min(64 * 1024);
        let entries = self.resolve(first, n)?;
        let mut states = Vec::with_capacity(entries.len());
        let mut i = 0usize;
        while i < entries.len() {
            match entries[i] {
                Some(Entry::Data { .. }) => states.push(BlockState::Data),
                Some(Entry::Zero) => states.push(BlockState::Zero),
                None => match self.live_base() {
                    Some(b) if (first + i as u64) * BLOCK_SIZE < b.size() => {
                        let (s, l) = b.block_status((first + i as u64) * BLOCK_SIZE, BLOCK_SIZE)?;
                        let _ = l;
                        states.push(s)
                    }
                    _ => states.push(BlockState::Unallocated),
                },
            }
            if states[i] != states[0] {
                break;
            }
            i += 1;
        }
        let same = states.iter().take_while(|s| **s == states[0]).count() as u64;
        let bytes = ((first + same) * BLOCK_SIZE).min(offset + len) - offset;
        Ok((states[0], bytes))
    }

    /// Bytes the log occupies in the backend.
    pub fn allocated_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for n in self.backend.list(&self.dir)? {
            if format::parse_segment_name(&n).is_some() || n.starts_with("ckpt-") {
                let path = format!("{}/{n}", self.dir);
                match self.backend.open_read(&path) {
                    Ok(f) => total += f.len()?,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // Bytes not yet handed to the backend.
        Ok(total)
    }
}
