//! The write path: data and zero records into the log, flush (group
//! commit through the write pipeline), periodic checkpoints, metadata
//! records, resize.

use super::*;

/// Lets go of the writer, then writes out the buffers its appends handed to
/// the write pipeline (`SegIo::drain`), so that other requests go on
/// meanwhile.
pub(super) fn release_writer(g: parking_lot::MutexGuard<'_, Option<LogWriter>>) -> Result<()> {
    let io = g.as_ref().and_then(|w| w.pending_io());
    let rewritable = g.as_ref().is_some_and(|w| w.rewritable());
    drop(g);
    match io.map_or(Ok(()), |io| io.drain()) {
        // The segment's bytes are written again, whole, by the writer's
        // next call (`LogWriter::rewrite_active`): this write is not lost.
        Err(e) if rewritable && e.kind() == ErrorKind::Backend => {
            tracing::warn!("{e}; the segment will be written again");
            Ok(())
        }
        r => r,
    }
}

/// Splits the concatenation of `parts` into chunks of `size` bytes (the last
/// one shorter), each a list of sub-slices of `parts`.
fn split_parts<'a>(parts: &[&'a [u8]], size: usize) -> Vec<Vec<&'a [u8]>> {
    let mut out = Vec::new();
    let mut cur: Vec<&'a [u8]> = Vec::new();
    let mut room = size;
    for &p in parts {
        let mut p = p;
        while !p.is_empty() {
            let n = p.len().min(room);
            cur.push(&p[..n]);
            p = &p[n..];
            room -= n;
            if room == 0 {
                out.push(std::mem::take(&mut cur));
                room = size;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Volume {
    /// Writes `data` at `offset`. Offset and length must be multiples of 512
    /// and inside the volume. Whole 4 KiB blocks are written as they are;
    /// only a partial block at either end is read, merged and rewritten.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_vectored(offset, &[data])
    }

    /// Writes the concatenation of `parts` at `offset`, like `write`. Whole
    /// blocks are gathered straight into the log's tail (one copy, which is
    /// also what the checksums are taken from), so a caller with a
    /// scatter-gather list (QEMU) needs no buffer of its own.
    pub fn write_vectored(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
        self.check_data_writable()?;
        let mut wguard = self.writer.lock();
        let size = self.state.read().virtual_size;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.check_io(offset, len as u64, size)?;
        if len == 0 {
            return Ok(());
        }
        let w = wguard
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::ReadOnly, "read-only"))?;
        let end = offset + len as u64;
        let first = offset / BLOCK_SIZE;
        let aligned = offset % BLOCK_SIZE == 0 && end % BLOCK_SIZE == 0;
        let (owned, owned_ref);
        let blocks: &[&[u8]] = if aligned {
            parts
        } else {
            let last = end.div_ceil(BLOCK_SIZE);
            let mut b = vec![0u8; ((last - first) as usize) * BS];
            let bsize = size.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
            // Read-modify-write of the partial edge blocks only.
            let readable = |blk: u64| blk * BLOCK_SIZE < bsize;
            if offset % BLOCK_SIZE != 0 && readable(first) {
                self.read_blocks(first, &mut b[..BS], Some(w))?;
            }
            if end % BLOCK_SIZE != 0
                && readable(last - 1)
                && (last - 1 != first || offset % BLOCK_SIZE == 0)
            {
                let l = b.len();
                self.read_blocks(last - 1, &mut b[l - BS..], Some(w))?;
            }
            let mut s = (offset - first * BLOCK_SIZE) as usize;
            for p in parts {
                b[s..s + p.len()].copy_from_slice(p);
                s += p.len();
            }
            owned = b;
            owned_ref = [owned.as_slice()];
            &owned_ref
        };
        let head = self.state.read().head;
        for (ci, chunk) in split_parts(blocks, MAX_BLOCKS_PER_RECORD as usize * BS)
            .iter()
            .enumerate()
        {
            let first_block = first + (ci * MAX_BLOCKS_PER_RECORD as usize) as u64;
            let (seg, rec_off, rec_len, rec) = w.append_data_parts(head, first_block, chunk)?;
            let mut st = self.state.write();
            apply(&self.index(), &mut st, seg, rec_off, rec_len, &rec)?;
        }
        release_writer(wguard)
    }

    /// `write_vectored` if it can complete at once, without I/O and without
    /// waiting for a lock: the write is block-aligned, fits one record, and
    /// the log takes it into its in-memory tail without a push. Returns
    /// false, having changed nothing, when the caller should use
    /// `write_vectored` instead (QEMU's driver then hands the request to a
    /// worker thread; done here, it is a copy with no thread hop).
    pub fn try_write_vectored(&self, offset: u64, parts: &[&[u8]]) -> Result<bool> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if self.read_only
            || self.opts.metadata_only
            || self.closed.load(Ordering::Acquire)
            || len == 0
            || offset % BLOCK_SIZE != 0
            || len % BLOCK_SIZE != 0
            || len > MAX_BLOCKS_PER_RECORD as u64 * BLOCK_SIZE
        {
            return Ok(false);
        }
        let Some(mut wguard) = self.writer.try_lock() else {
            return Ok(false);
        };
        let Some(w) = wguard.as_mut() else {
            return Ok(false);
        };
        let Some(mut st) = self.state.try_write() else {
            return Ok(false);
        };
        self.check_io(offset, len, st.virtual_size)?;
        let Some((seg, rec_off, rec_len, rec)) =
            w.try_append_data_parts(st.head, offset / BLOCK_SIZE, parts)
        else {
            return Ok(false);
        };
        apply(&self.index(), &mut st, seg, rec_off, rec_len, &rec)?;
        Ok(true)
    }

    /// Makes `[offset, offset+len)` read as zeros and releases its blocks
    /// (after the cleaner runs). Partial blocks at the ends are written as zeros.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.check_data_writable()?;
        let size = self.state.read().virtual_size;
        self.check_io(offset, len, size)?;
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let first_full = offset.div_ceil(BLOCK_SIZE);
        let end_full = if end == size {
            end.div_ceil(BLOCK_SIZE)
        } else {
            end / BLOCK_SIZE
        };
        if first_full >= end_full {
            return self.write(offset, &vec![0u8; len as usize]);
        }
        if offset < first_full * BLOCK_SIZE {
            self.write(
                offset,
                &vec![0u8; (first_full * BLOCK_SIZE - offset) as usize],
            )?;
        }
        let tail_start = (end_full * BLOCK_SIZE).min(end);
        if tail_start < end {
            self.write(tail_start, &vec![0u8; (end - tail_start) as usize])?;
        }
        let mut wguard = self.writer.lock();
        let w = wguard
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::ReadOnly, "read-only"))?;
        let head = self.state.read().head;
        let rec = Record::Zero {
            timeline: head,
            first_block: first_full,
            count: end_full - first_full,
        };
        let (seg, off, _) = w.append(&rec, &[])?;
        {
            let mut st = self.state.write();
            apply(&self.index(), &mut st, seg, off, 0, &rec)?;
        }
        release_writer(wguard)
    }

    /// Same as `write_zeroes`: discarded ranges read as zeros.
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }

    /// Returns once every write that completed before the call is durable:
    /// pending log bytes are appended and the active segment is synced (on
    /// backends whose sync is not durable, HDFS, the segment is sealed). The
    /// index needs no flush: replay rebuilds it from the log.
    ///
    /// Group commit: the writer is held only to hand the log's tail to the
    /// write pipeline; the append and the sync run after it is let go, and
    /// concurrent flushes share one sync (`pipeline`).
    pub fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let pending = {
            let mut wguard = self.writer.lock();
            let Some(w) = wguard.as_mut() else {
                return Ok(());
            };
            w.begin_flush()?
        };
        let failed = match pending {
            Some(p) => p.finish().err(),
            None => None,
        };
        let mut wguard = self.writer.lock();
        let Some(w) = wguard.as_mut() else {
            return failed.map_or(Ok(()), Err);
        };
        if let Some(e) = failed {
            // A sync that failed where the segment's bytes can be written
            // again (an HDFS pipeline lost its DataNodes): the writer writes
            // what the sync did not cover into a new segment, and syncs
            // that. Elsewhere the writer stays poisoned.
            w.flush_again(e)?;
        }
        if w.since_checkpoint >= self.opts.checkpoint_every
            || self.checkpoint_retry.load(Ordering::Acquire)
        {
            // The flush's promise is kept once the log is durable; a
            // checkpoint only shortens the replay of the next open. If it
            // cannot be written (a full disk), the next flush tries again.
            if let Err(e) = self.checkpoint_periodic(w) {
                tracing::warn!("{}: checkpoint not written, will retry: {e}", self.uri);
            }
        }
        Ok(())
    }

    /// The checkpoint a flush writes every `checkpoint_every` bytes of log.
    /// Where the backend allows background I/O (`close_in_background`), the
    /// writer is held only to copy the map and the state; a thread of its
    /// own writes the checkpoint from the copy and then feeds sled, while
    /// writes go on. Elsewhere (the test backends, whose crash tests need
    /// one order of operations) it is written here.
    pub(super) fn checkpoint_periodic(&self, w: &mut LogWriter) -> Result<()> {
        if self.opts.metadata_only {
            return Ok(()); // no full map to write one from
        }
        if !self.backend.close_in_background() {
            return self.checkpoint_locked(w);
        }
        let mut bg = self.background.lock();
        if bg.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(()); // the last one is still being written
        }
        if let Some(h) = bg.take() {
            let _ = h.join();
        }
        self.sync_visible(w)?;
        let pos = w.position();
        let st = self.state.read().clone();
        let index = self.index();
        let Some(frozen) = index.frozen() else {
            // `checkpoint_locked` waits for the background slot itself.
            drop(bg);
            return self.checkpoint_locked(w);
        };
        w.since_checkpoint = 0;
        self.checkpoint_retry.store(false, Ordering::Release);
        let (backend, dir, uri) = (self.backend.clone(), self.dir.clone(), self.uri.to_string());
        let retry = self.checkpoint_retry.clone();
        let h = std::thread::Builder::new()
            .name("hlfs-checkpoint".into())
            .spawn(move || {
                if let Err(e) = checkpoint::write(&*backend, &dir, pos, &st, frozen.iter_all()) {
                    tracing::warn!("{uri}: checkpoint not written, will retry: {e}");
                    retry.store(true, Ordering::Release);
                }
                drop(frozen);
                // Keep sled close to the map, so that a clean close has
                // little left to feed.
                if let Err(e) = index.feed() {
                    tracing::warn!("{uri}: feeding the index: {e}");
                }
            })
            .map_err(|e| Error::io("starting a thread to write a checkpoint", e))?;
        *bg = Some(h);
        Ok(())
    }

    /// Waits for the background checkpoint, if one is being written.
    pub(super) fn wait_background(&self) {
        if let Some(h) = self.background.lock().take() {
            let _ = h.join();
        }
    }

    pub(super) fn checkpoint_locked(&self, w: &mut LogWriter) -> Result<()> {
        self.wait_background();
        // A checkpoint names a log position; on a backend whose readers see
        // only closed files (HDFS), a position inside the open segment would
        // make every other opener fail with "the log after … is missing".
        self.sync_visible(w)?;
        let st = self.state.read();
        checkpoint::write(&*self.backend, &self.dir, w.position(), &st, self.index().iter_all())?;
        w.since_checkpoint = 0;
        Ok(())
    }

    /// Appends a metadata record, applies it and makes it durable.
    pub(super) fn log_meta(&self, w: &mut LogWriter, rec: Record) -> Result<()> {
        let (seg, off, _) = w.append(&rec, &[])?;
        {
            let mut st = self.state.write();
            apply(&self.index(), &mut st, seg, off, 0, &rec)?;
        }
        // Snapshots, reverts and resizes must be visible to other openers
        // (`vol%snap` views, `clone_volume`), not only durable. If that
        // fails, the record is applied here but may or may not reach the
        // log: the writer stops (writes on top of a revert the caller was
        // told failed would be worse than refusing them), and a reopen
        // reads whichever the log holds.
        let r = self.sync_visible(w);
        if let Err(e) = &r {
            w.give_up(e);
        }
        r
    }

    /// Makes the log durable and readable by other openers: a flush where
    /// readers see appends (local files); elsewhere (HDFS, whose readers
    /// see a file only once it is closed) the active segment is sealed, and
    /// the next write starts a new one.
    pub(super) fn sync_visible(&self, w: &mut LogWriter) -> Result<()> {
        if self.backend.reads_see_unclosed_appends() {
            w.flush()
        } else {
            w.seal()
        }
    }

    pub(super) fn with_writer<T>(&self, f: impl FnOnce(&mut LogWriter) -> Result<T>) -> Result<T> {
        self.check_writable()?;
        let mut g = self.writer.lock();
        let w = g.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::ReadOnly,
                format!("{} is open read-only", self.uri),
            )
        })?;
        f(w)
    }

    /// Grows the volume to `size` bytes.
    pub fn resize(&self, size: u64) -> Result<()> {
        check_size(size, "new size")?;
        self.with_writer(|w| {
            let cur = self.state.read().virtual_size;
            if size < cur {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{}: shrinking from {cur} to {size} bytes is not supported; volumes only grow", self.uri),
                ));
            }
            if size == cur {
                return Ok(());
            }
            self.log_meta(w, Record::Resize { virtual_size: size })
        })
    }
}
