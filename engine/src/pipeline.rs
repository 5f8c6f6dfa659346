//! The I/O side of the segment being written: the write pipeline between
//! the log writer's memory and the backend.
//!
//! The log writer (`log::LogWriter`) runs under the volume's writer lock
//! and does no I/O there in the common case. When its in-memory tail is
//! full it hands the bytes over as a [`Chunk`] (`SegIo::enqueue`, a pointer
//! move) and goes on filling a fresh buffer. Whoever then calls
//! `SegIo::drain`, normally the thread whose write filled the buffer, after
//! it let go of the writer lock, writes the queued chunks to the file in
//! log order. So a 1–4 MiB append never holds up other writers, and the
//! next buffer fills while the last one goes to disk (double buffering).
//! Where the file takes positional writes (an O_DIRECT local segment,
//! `AppendFile::positional`), up to `IN_FLIGHT` drainers write chunks at
//! once, each at its own offset, and `written` is the end of the chunks
//! done without a gap: all a flush waits for.
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

use crate::backend::{AppendFile, PosWriter, Syncer};
use crate::buf::{AlignedBuf, BufPool};
use crate::error::Result;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;

/// Bytes of the log handed over for writing: `data` belongs at segment
/// offset `off`.
struct Chunk {
    off: u64,
    data: Arc<AlignedBuf>,
}

/// A chunk taken off the queue to be written at its offset (positional
/// writers), kept until every byte before it is written too.
struct Flight {
    chunk: Chunk,
    done: bool,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    /// The chunk being appended (taken off the head of `chunks`; put back
    /// there if the append fails). Readers search it too.
    writing: Option<Chunk>,
    /// Positional writers: the chunks being written, or written past a
    /// gap, in offset order. Readers search them too.
    flights: VecDeque<Flight>,
    /// Bytes of the segment written to the file without a gap (the end of
    /// the last chunk written; the first chunk's offset is where writing
    /// starts).
    written: u64,
    /// Sum of the queued chunks' lengths.
    queued: usize,
    /// A failed append may have left part of the head chunk in the file:
    /// cut it back to `written` before writing again.
    needs_truncate: bool,
}

/// Chunks a positional writer keeps in flight at once.
const IN_FLIGHT: usize = 2;

/// Puts `c` back into the queue at its place in offset order.
fn requeue(q: &mut Queue, c: Chunk) {
    let at = q.chunks.iter().position(|x| x.off > c.off).unwrap_or(q.chunks.len());
    q.chunks.insert(at, c);
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
    /// Writes at an offset from any thread (`AppendFile::positional`): up
    /// to `IN_FLIGHT` chunks are written at once.
    positional: Option<PosWriter>,
    /// Signalled when a positional write ends.
    landed: Condvar,
    /// Set when the file may no longer hold what was acknowledged: a failed
    /// sync, or an append failure on a backend that cannot repair one.
    poisoned: Mutex<Option<(crate::ErrorKind, String)>>,
    repairable: bool,
    /// Where written chunks' buffers go back to (the writer's next tail).
    pool: Arc<BufPool>,
    /// The segment's header while it is held back (`hold_header`).
    header: Mutex<Option<HeldHeader>>,
    /// Writes over the file's first bytes (`AppendFile::header_writer`).
    header_writer: Option<PosWriter>,
    /// Set when `close` ends: whether it succeeded (`wait_closed`).
    closed: Mutex<Option<bool>>,
    closed_cv: Condvar,
}

/// A segment header written last (`LogWriter`'s header-last rule): the
/// file's first bytes go out as zeros, and these are written over them
/// once the writer lets them go (`SegIo::release_header`), which it does
/// when every earlier segment is durable.
struct HeldHeader {
    bytes: AlignedBuf,
    released: bool,
}

impl SegIo {
    /// `file` starts empty (written = 0); `repairable`: whether a failed
    /// append can be cut back and retried (`Backend::append_is_repairable`).
    pub fn new(
        n: u64,
        file: Box<dyn AppendFile>,
        repairable: bool,
        pool: Arc<BufPool>,
    ) -> Arc<SegIo> {
        let syncer = file.syncer();
        let positional = file.positional();
        let header_writer = file.header_writer();
        Arc::new(SegIo {
            n,
            file: Mutex::new(Some(file)),
            queue: Mutex::new(Queue::default()),
            synced: Mutex::new(0),
            syncer,
            positional,
            landed: Condvar::new(),
            poisoned: Mutex::new(None),
            repairable,
            pool,
            header: Mutex::new(None),
            header_writer,
            closed: Mutex::new(None),
            closed_cv: Condvar::new(),
        })
    }

    /// Whether the segment's header can be written after its other bytes
    /// (`hold_header`): the file takes a write over its start.
    pub fn can_hold_header(&self) -> bool {
        self.header_writer.is_some()
    }

    /// Holds the segment's header back: the writer queues zeros in its
    /// place, and `bytes` go over them once released and written past.
    pub fn hold_header(&self, bytes: AlignedBuf) {
        debug_assert!(self.can_hold_header());
        *self.header.lock() = Some(HeldHeader {
            bytes,
            released: false,
        });
    }

    /// Lets the held header go out (every earlier segment is durable): the
    /// next drain, sync or close writes it.
    pub fn release_header(&self) {
        if let Some(h) = self.header.lock().as_mut() {
            h.released = true;
        }
    }

    /// Writes the held header if it was released and the bytes it goes
    /// over are in the file. With `must`, a header that cannot go out yet
    /// is an error: a sync or close that left it held would vouch for
    /// bytes that no reader of the log can reach.
    fn write_header(&self, must: bool) -> Result<()> {
        let mut h = self.header.lock();
        let Some(held) = h.as_ref() else {
            return Ok(());
        };
        let written = self.queue.lock().written;
        if !held.released || written < held.bytes.len() as u64 {
            if !must {
                return Ok(());
            }
            return Err(crate::Error::new(
                crate::ErrorKind::Backend,
                format!(
                    "segment {}: its header is still held back (released: {}, {written} bytes written)",
                    self.n, held.released
                ),
            ));
        }
        let w = self.header_writer.as_ref().expect("can_hold_header");
        if let Err(e) = w(0, &held.bytes) {
            self.poison(&e);
            return Err(e);
        }
        *h = None;
        Ok(())
    }

    /// Waits until `close` has ended; whether it succeeded.
    pub fn wait_closed(&self) -> bool {
        let mut c = self.closed.lock();
        loop {
            if let Some(ok) = *c {
                return ok;
            }
            self.closed_cv.wait(&mut c);
        }
    }

    /// Marks the close ended (once): `ok` says whether it succeeded.
    pub fn set_closed(&self, ok: bool) {
        let mut c = self.closed.lock();
        if c.is_none() {
            *c = Some(ok);
            self.closed_cv.notify_all();
        }
    }

    /// Bytes of the segment known durable (made so by `sync_to`).
    pub fn synced(&self) -> u64 {
        *self.synced.lock()
    }

    /// Why this segment's writes failed for good, if they did.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().as_ref().map(|p| p.1.clone())
    }

    /// The kind of the failure that poisoned it, if one did.
    pub fn poisoned_kind(&self) -> Option<crate::ErrorKind> {
        self.poisoned.lock().as_ref().map(|p| p.0)
    }

    fn poison(&self, why: &crate::Error) {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            *p = Some((why.kind(), why.to_string()));
        }
    }

    /// Drops the file without closing it, and whatever is queued or in
    /// flight: the writer is about to write the segment's bytes again into
    /// another segment (`LogWriter::rewrite_active`). Waits for writes in
    /// flight to end first.
    pub fn abandon(&self) {
        let mut q = self.queue.lock();
        while !q.flights.is_empty() {
            self.landed.wait(&mut q);
        }
        q.chunks.clear();
        q.writing = None;
        q.queued = 0;
        drop(q);
        let f = self.file.lock().take();
        drop(f);
        self.poison(&crate::Error::new(
            crate::ErrorKind::Backend,
            format!("segment {} was abandoned after a failed write", self.n),
        ));
    }

    /// Queues `data` for segment offset `off`, which must follow the last
    /// queued chunk. Does no I/O.
    pub fn enqueue(&self, off: u64, data: AlignedBuf) {
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

    /// Copies bytes at segment offset `off` out of a queued chunk, if one
    /// holds all of them.
    pub fn read_queued(&self, off: u64, buf: &mut [u8]) -> bool {
        let q = self.queue.lock();
        let end = off + buf.len() as u64;
        let flying = q.flights.iter().map(|f| &f.chunk);
        for c in q.writing.iter().chain(flying).chain(&q.chunks) {
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
    /// With a positional writer, several threads write chunks at once, and
    /// this returns once every chunk queued when it was called is written.
    pub fn drain(&self) -> Result<()> {
        let r = match &self.positional {
            Some(w) => self.drain_positional(w),
            None => self.drain_appending(),
        };
        r?;
        self.write_header(false)
    }

    /// `drain` for a file written by appends, one chunk after another.
    fn drain_appending(&self) -> Result<()> {
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
                    drop(q);
                    if let Ok(b) = Arc::try_unwrap(c.data) {
                        self.pool.put(b);
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

    fn poisoned_error(&self) -> Option<crate::Error> {
        self.poisoned().map(|p| {
            crate::Error::new(
                crate::ErrorKind::Backend,
                format!("an earlier write to the log failed ({p}); close and reopen the volume"),
            )
        })
    }

    /// `drain` for a positional writer. A thread takes the next queued
    /// chunk while fewer than `IN_FLIGHT` are being written, writes it at
    /// its offset without any lock, and then moves `written` over every
    /// chunk done without a gap before it. When nothing is left to start it
    /// waits for the others' chunks up to the end it was called for.
    ///
    /// A failed write on a repairable backend puts its chunk back, and so
    /// every chunk written past it (the cut back to `written` removes
    /// them); the cut waits until no write is in flight.
    fn drain_positional(&self, w: &PosWriter) -> Result<()> {
        let mut q = self.queue.lock();
        let goal = match (q.chunks.back(), q.flights.back()) {
            (Some(c), _) => c.off + c.data.len() as u64,
            (None, Some(f)) => f.chunk.off + f.chunk.data.len() as u64,
            (None, None) => return self.poisoned_error().map_or(Ok(()), Err),
        };
        loop {
            if let Some(e) = self.poisoned_error() {
                return Err(e);
            }
            if q.needs_truncate {
                if !q.flights.is_empty() {
                    self.landed.wait(&mut q);
                    continue;
                }
                let len = q.written;
                let r = match self.file.lock().as_mut() {
                    Some(f) => f.truncate(len),
                    None => Err(crate::Error::new(
                        crate::ErrorKind::Backend,
                        format!("segment {} was closed with writes still queued", self.n),
                    )),
                };
                if let Err(e) = r {
                    self.poison(&e);
                    self.landed.notify_all();
                    return Err(e);
                }
                q.needs_truncate = false;
            }
            if q.written >= goal {
                return Ok(());
            }
            if q.flights.len() >= IN_FLIGHT || q.chunks.is_empty() {
                self.landed.wait(&mut q);
                continue;
            }
            let chunk = q.chunks.pop_front().expect("a queued chunk");
            let (off, data) = (chunk.off, chunk.data.clone());
            q.flights.push_back(Flight { chunk, done: false });
            drop(q);
            let r = w(off, &data);
            drop(data);
            q = self.queue.lock();
            let i = q
                .flights
                .iter()
                .position(|f| f.chunk.off == off)
                .expect("the chunk in flight");
            let failed = match r {
                Ok(()) => {
                    q.flights[i].done = true;
                    None
                }
                Err(e) => {
                    let f = q.flights.remove(i).expect("flight");
                    requeue(&mut q, f.chunk);
                    if self.repairable {
                        q.needs_truncate = true;
                    } else {
                        self.poison(&e);
                    }
                    Some(e)
                }
            };
            // Move `written` over the chunks done without a gap.
            while q.flights.front().is_some_and(|f| f.done && f.chunk.off == q.written) {
                let f = q.flights.pop_front().expect("flight");
                let len = f.chunk.data.len();
                q.written += len as u64;
                q.queued -= len;
                if let Ok(b) = Arc::try_unwrap(f.chunk.data) {
                    self.pool.put(b);
                }
            }
            if q.needs_truncate {
                // Written past the gap a failure left: the cut removes
                // them, so they go back to the queue.
                while let Some(j) = q.flights.iter().position(|f| f.done) {
                    let f = q.flights.remove(j).expect("flight");
                    requeue(&mut q, f.chunk);
                }
            }
            self.landed.notify_all();
            if let Some(e) = failed {
                return Err(e);
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
        self.write_header(true)?;
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
        debug_assert!({
            let q = self.queue.lock();
            q.chunks.is_empty() && q.flights.is_empty()
        });
        let Some(file) = f.take() else {
            // Closed before, or abandoned (which poisoned it).
            self.set_closed(self.poisoned().is_none());
            return Ok(());
        };
        let r = self.write_header(true).and_then(|()| file.close());
        if let Err(e) = &r {
            self.poison(e);
        }
        self.set_closed(r.is_ok());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AppendFile;
    use crate::buf::{AlignedBuf, BufPool};
    use crate::{Error, ErrorKind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A file in memory whose positional writes can be made to fail, and
    /// that records how many ran at once.
    #[derive(Default)]
    struct Shared {
        bytes: Mutex<Vec<u8>>,
        writes: AtomicUsize,
        fail_at: Mutex<Vec<usize>>,
        active: AtomicUsize,
        most_active: AtomicUsize,
    }

    struct MemFile(Arc<Shared>);

    impl AppendFile for MemFile {
        fn append(&mut self, _: &[u8]) -> Result<()> {
            unreachable!("a positional file is written through `positional`")
        }
        fn sync(&mut self) -> Result<()> {
            Ok(())
        }
        fn truncate(&mut self, len: u64) -> Result<()> {
            self.0.bytes.lock().truncate(len as usize);
            Ok(())
        }
        fn close(self: Box<Self>) -> Result<()> {
            Ok(())
        }
        fn positional(&self) -> Option<PosWriter> {
            let s = self.0.clone();
            Some(Box::new(move |off: u64, data: &[u8]| {
                let n = s.writes.fetch_add(1, Ordering::SeqCst);
                let now = s.active.fetch_add(1, Ordering::SeqCst) + 1;
                s.most_active.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(2));
                let fail = s.fail_at.lock().contains(&n);
                if !fail || n % 2 == 1 {
                    // A failed write may still have put part of its bytes down.
                    let mut b = s.bytes.lock();
                    let end = off as usize + if fail { data.len() / 2 } else { data.len() };
                    if b.len() < end {
                        b.resize(end, 0);
                    }
                    let take = end - off as usize;
                    b[off as usize..end].copy_from_slice(&data[..take]);
                }
                s.active.fetch_sub(1, Ordering::SeqCst);
                if fail {
                    return Err(Error::new(ErrorKind::Backend, "no space left (injected)"));
                }
                Ok(())
            }))
        }
    }

    fn chunk(i: usize) -> AlignedBuf {
        AlignedBuf::from_slice(&vec![i as u8 + 1; 4096 * (1 + i % 3)])
    }

    /// Several threads drain at once, some writes fail (some after putting
    /// part of their bytes down), and every drain is retried until it
    /// succeeds: the file ends up holding exactly the queued bytes, in
    /// order, and more than one write ran at a time.
    #[test]
    fn positional_drains_keep_log_order_through_failures() {
        let shared = Arc::new(Shared::default());
        *shared.fail_at.lock() = vec![3, 4, 9, 17];
        let io = SegIo::new(7, Box::new(MemFile(shared.clone())), true, Arc::new(BufPool::new(2)));
        let mut want = Vec::new();
        let mut off = 0u64;
        for i in 0..40 {
            let c = chunk(i);
            want.extend_from_slice(&c);
            let len = c.len() as u64;
            io.enqueue(off, c);
            off += len;
        }
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while io.drain().is_err() {}
                });
            }
        });
        assert_eq!(io.queue.lock().written, off);
        assert_eq!(io.queued(), 0);
        assert!(io.poisoned().is_none());
        assert!(*shared.bytes.lock() == want, "the file differs from the log");
        assert!(shared.most_active.load(Ordering::SeqCst) > 1, "writes never overlapped");
        assert!(shared.most_active.load(Ordering::SeqCst) <= IN_FLIGHT);
        io.sync_to(off).unwrap();
    }

    /// On a backend that cannot repair a failed write, the first failure
    /// poisons the segment for every drainer.
    #[test]
    fn positional_failure_poisons_where_not_repairable() {
        let shared = Arc::new(Shared::default());
        *shared.fail_at.lock() = vec![2];
        let io = SegIo::new(7, Box::new(MemFile(shared.clone())), false, Arc::new(BufPool::new(2)));
        let mut off = 0u64;
        for i in 0..10 {
            let c = chunk(i);
            let len = c.len() as u64;
            io.enqueue(off, c);
            off += len;
        }
        assert!(io.drain().is_err());
        assert!(io.poisoned().is_some());
        let e = io.drain().unwrap_err();
        assert!(e.to_string().contains("close and reopen"), "{e}");
        assert!(io.queue.lock().written < off);
    }
}
