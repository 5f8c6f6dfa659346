//! The I/O side of the segment being written: the write pipeline between
//! the log writer's memory and the backend.
//!
//! The log writer (`log::LogWriter`) runs under the volume's writer lock
//! and does no I/O there in the common case. When its in-memory tail is
//! full it hands the bytes over as a [`Chunk`] (`SegIo::enqueue`, a pointer
//! move) and goes on filling a fresh buffer. Whoever then calls
//! `SegIo::drain`, normally the thread whose write filled the buffer, after
//! it let go of the writer lock, writes the queued chunks to the file in
//! log order. So a 1–8 MiB append never holds up other writers, and the
//! next buffer fills while the last one goes to disk (double buffering).
//!
//! A flush is group commit: every flusher queues its bytes, then takes
//! `synced`'s mutex. The first one there writes everything queued so far,
//! other flushers' bytes too, and syncs it with one `fdatasync`; the ones
//! that waited behind it find their bytes covered and return without a
//! sync of their own. The sync runs on a duplicate
//! of the file's descriptor (`AppendFile::syncer`), so appends go on
//! meanwhile.
//!
//! Failures. A failed append on a backend that can carry on (a full local
//! disk) leaves the chunk at the head of the queue and marks the file for
//! repair: the next drain cuts it back to the bytes known written and
//! retries, so that once space is freed nothing acknowledged is lost.
//! Elsewhere, and after any failed sync, the pipeline is poisoned and the
//! writer fails until the volume is reopened (`LogWriter::check`).

use crate::backend::{AppendFile, Syncer};
use crate::error::Result;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;

/// Bytes of the log handed over for writing: `data` belongs at segment
/// offset `off`.
struct Chunk {
    off: u64,
    data: Arc<Vec<u8>>,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    /// The chunk being appended (taken off the head of `chunks`; put back
    /// there if the append fails). Readers search it too.
    writing: Option<Chunk>,
    /// Bytes of the segment written to the file (the end of the last
    /// chunk written; the first chunk's offset is where writing starts).
    written: u64,
    /// Sum of the queued chunks' lengths.
    queued: usize,
    /// A failed append may have left part of the head chunk in the file:
    /// cut it back to `written` before writing again.
    needs_truncate: bool,
    /// Emptied buffers, kept for the writer's next tail (`take_spare`).
    spare: Vec<Vec<u8>>,
}

/// The segment file being written, shared by the log writer and threads
/// that drain or sync it outside the writer lock.
pub struct SegIo {
    /// Segment number (for messages).
    pub n: u64,
    /// The file. Taken out by `close`; the
    /// lock is held across every append (which keeps them in order).
    file: Mutex<Option<Box<dyn AppendFile>>>,
    queue: Mutex<Queue>,
    /// Bytes known durable. Held across a sync, so concurrent flushers
    /// queue here and the first sync serves them all.
    synced: Mutex<u64>,
    syncer: Option<Syncer>,
    /// Set when the file may no longer hold what was acknowledged: a failed
    /// sync, or an append failure on a backend that cannot repair one.
    poisoned: Mutex<Option<String>>,
    repairable: bool,
}

/// Keep at most this many emptied buffers per segment.
const SPARE_BUFFERS: usize = 2;

impl SegIo {
    /// `file` starts empty (written = 0); `repairable`: whether a failed
    /// append can be cut back and retried (`Backend::append_is_repairable`).
    pub fn new(n: u64, file: Box<dyn AppendFile>, repairable: bool) -> Arc<SegIo> {
        let syncer = file.syncer();
        Arc::new(SegIo {
            n,
            file: Mutex::new(Some(file)),
            queue: Mutex::new(Queue::default()),
            synced: Mutex::new(0),
            syncer,
            poisoned: Mutex::new(None),
            repairable,
        })
    }

    /// Why this segment's writes failed for good, if they did.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().clone()
    }

    fn poison(&self, why: &crate::Error) {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            *p = Some(why.to_string());
        }
    }

    /// Queues `data` for segment offset `off`, which must follow the last
    /// queued chunk. Does no I/O.
    pub fn enqueue(&self, off: u64, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        let mut q = self.queue.lock();
        debug_assert!(
            q.chunks
                .back()
                .map_or(true, |c| c.off + c.data.len() as u64 == off),
            "chunks must be queued in log order"
        );
        q.queued += data.len();
        q.chunks.push_back(Chunk {
            off,
            data: Arc::new(data),
        });
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queue.lock().queued
    }

    /// An emptied buffer of at least `cap` bytes' capacity, if one is kept.
    pub fn take_spare(&self, cap: usize) -> Option<Vec<u8>> {
        let mut q = self.queue.lock();
        let i = q.spare.iter().position(|b| b.capacity() >= cap)?;
        Some(q.spare.swap_remove(i))
    }

    /// Copies bytes at segment offset `off` out of a queued chunk, if one
    /// holds all of them.
    pub fn read_queued(&self, off: u64, buf: &mut [u8]) -> bool {
        let q = self.queue.lock();
        let end = off + buf.len() as u64;
        for c in q.writing.iter().chain(&q.chunks) {
            if off >= c.off && end <= c.off + c.data.len() as u64 {
                let s = (off - c.off) as usize;
                buf.copy_from_slice(&c.data[s..s + buf.len()]);
                return true;
            }
        }
        false
    }

    /// Writes every queued chunk to the file, in order. Blocks while
    /// another thread drains or the file is being closed. Returns the
    /// first failure; the failed chunk stays queued for the next drain.
    pub fn drain(&self) -> Result<()> {
        let mut file = self.file.lock();
        loop {
            if let Some(p) = self.poisoned() {
                return Err(crate::Error::new(
                    crate::ErrorKind::Backend,
                    format!("an earlier write to the log failed ({p}); close and reopen the volume"),
                ));
            }
            let (chunk, truncate_to) = {
                let mut q = self.queue.lock();
                let Some(c) = q.chunks.pop_front() else {
                    return Ok(());
                };
                let t = q.needs_truncate.then_some(q.written);
                (c, t)
            };
            let put_back = |c: Chunk| self.queue.lock().chunks.push_front(c);
            let Some(f) = file.as_mut() else {
                put_back(chunk);
                return Err(crate::Error::new(
                    crate::ErrorKind::Backend,
                    format!("segment {} was closed with writes still queued", self.n),
                ));
            };
            if let Some(len) = truncate_to {
                if let Err(e) = f.truncate(len) {
                    put_back(chunk);
                    self.poison(&e);
                    return Err(e);
                }
                self.queue.lock().needs_truncate = false;
            }
            // Readers find the bytes in `writing` while they are appended.
            let (off, len) = (chunk.off, chunk.data.len());
            let data = chunk.data.clone();
            self.queue.lock().writing = Some(chunk);
            let r = f.append(&data);
            drop(data);
            let mut q = self.queue.lock();
            let c = q.writing.take().expect("writing");
            match r {
                Ok(()) => {
                    q.written = off + len as u64;
                    q.queued -= len;
                    if q.spare.len() < SPARE_BUFFERS {
                        if let Ok(mut b) = Arc::try_unwrap(c.data) {
                            b.clear();
                            q.spare.push(b);
                        }
                    }
                }
                Err(e) => {
                    q.chunks.push_front(c);
                    if self.repairable {
                        q.needs_truncate = true;
                    } else {
                        drop(q);
                        self.poison(&e);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Returns once the first `target` bytes of the segment, which must be
    /// queued, are durable. The flusher that gets here first writes what is
    /// queued and syncs it: one sync covers every flusher waiting.
    pub fn sync_to(&self, target: u64) -> Result<()> {
        let mut synced = self.synced.lock();
        if *synced >= target {
            return Ok(());
        }
        if let Some(p) = self.poisoned() {
            return Err(crate::Error::new(
                crate::ErrorKind::Backend,
                format!("an earlier write to the log failed ({p}); close and reopen the volume"),
            ));
        }
        // Write whatever is queued by now, other flushers' bytes included,
        // so that this one sync covers them too.
        self.drain()?;
        let upto = self.queue.lock().written;
        debug_assert!(upto >= target, "sync_to({target}): the drain wrote only {upto}");
        let r = match &self.syncer {
            Some(s) => s(),
            None => match self.file.lock().as_mut() {
                Some(f) => f.sync(),
                // Closed (`close`), which made it durable, unless the close
                // failed and poisoned it.
                None => match self.poisoned() {
                    None => Ok(()),
                    Some(p) => Err(crate::Error::new(crate::ErrorKind::Backend, p)),
                },
            },
        };
        // A failed sync is not retried: after fsync reports an error the
        // kernel may have dropped the dirty pages, so only a reopen (which
        // reads back what the log really holds) is safe.
        if let Err(e) = r {
            self.poison(&e);
            return Err(e);
        }
        *synced = upto;
        Ok(())
    }

    /// Closes the file; everything queued must have been written
    /// (`drain`). Holds the file's lock throughout, so a flusher without a
    /// syncer that gets there meanwhile waits and then sees the outcome.
    pub fn close(&self) -> Result<()> {
        let mut f = self.file.lock();
        debug_assert!(self.queue.lock().chunks.is_empty());
        let Some(file) = f.take() else {
            return Ok(());
        };
        let r = file.close();
        if let Err(e) = &r {
            self.poison(e);
        }
        r
    }
}
