//! The segment cleaner: reclaims the space of overwritten and deleted
//! blocks by copying the live blocks of mostly-dead segments forward and
//! retiring those segments.
//!
//! A block is live when some timeline's map (the head, a snapshot, and so
//! a clone's base snapshot) points at its bytes. A pass:
//!
//! 1. ranks the sealed segments by Sprite LFS's cost-benefit,
//!    `(1 - u) * age / (1 + u)`, where `u` is the segment's live fraction and
//!    `age` how many segments were written after it, and takes those whose
//!    `u` is at most `GcOptions::max_utilization`;
//! 2. finds the live blocks of every victim by asking the index which map
//!    still points at each block of each data record, sorts them all by
//!    timeline and block number, and copies them in that order: batches of
//!    up to 8 MiB are read (verifying their checksums) without the writer
//!    lock, then appended back to back under one hold of it, as ordinary
//!    data records of the same timeline. So blocks that random overwrites
//!    scattered come back in logical order, in stretches that new writes do
//!    not split, and a sequential read of them is sequential in the log
//!    again. Each run is re-checked under the writer lock just before it is
//!    appended, so a block that a guest overwrote meanwhile is not copied;
//!    replay applies the copies in log order, so a rebuilt index equals the
//!    live one;
//! 3. makes the copies durable, writes a checkpoint after them, checks
//!    under the writer lock that nothing points into the victims any more,
//!    deletes the checkpoints whose replay would need a victim, and only
//!    then retires the victims: they are renamed to `retired-N.<secs>` (so a
//!    reader that resolved a block just before the copy still finds it).
//!    They are deleted as soon as no registered reader can need them: at
//!    once if no read-only opener is registered, else once the readers
//!    that were have closed or loaded a newer map (registry.rs). Retired
//!    segments no record accounts for wait `retire_grace_secs`.
//!
//! A crash at any step leaves a volume that opens to the same contents:
//! before the checkpoint, replay from the old checkpoint re-applies the
//! copies; after it, the victims are only unreferenced files.
//!
//! Once a segment is retired, the log no longer starts at segment 1: the
//! newest checkpoint is its base, and `rebuild_index` starts there
//! (see `Volume::load_checkpoint`).

use super::*;

/// How a cleaning pass chooses and bounds its work.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Segments whose live fraction is above this are left alone (0..=1).
    pub max_utilization: f64,
    /// Clean at most this many segments (0: no limit).
    pub max_segments: usize,
    /// Retired segments are deleted once this many seconds old.
    pub retire_grace_secs: u64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            max_utilization: 0.8,
            max_segments: 0,
            retire_grace_secs: 600,
        }
    }
}

/// What a cleaning pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Segments whose live blocks were copied and which were retired.
    pub segments_cleaned: u64,
    /// Bytes of those segments (space given back once they are deleted).
    pub bytes_reclaimed: u64,
    /// Live blocks copied forward.
    pub blocks_copied: u64,
    /// Bytes appended to the log by the copies.
    pub bytes_written: u64,
    /// Retired segments deleted by this pass: its own victims when no
    /// reader could need them, and earlier ones whose readers let go or
    /// whose grace period was over (`retired.deleted`).
    pub retired_deleted: u64,
    /// What became of retired segments: deleted now, held by readers (who,
    /// and why), or waiting for the grace period (registry.rs).
    pub retired: crate::registry::Release,
    /// Bytes of segment files before the pass (retired ones included).
    pub log_bytes_before: u64,
    /// Bytes of segment files after the pass (retired ones included).
    pub log_bytes_after: u64,
    /// Bytes of live blocks after the pass.
    pub live_bytes: u64,
}

/// A segment the pass may clean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Segment number.
    pub segment: u64,
    /// File length.
    pub bytes: u64,
    /// Live bytes (blocks some map points at).
    pub live: u64,
    /// Cost-benefit score; higher is cleaned first.
    pub score: f64,
}

/// A retired segment waits for its grace period to end as
/// `retired-<16 hex digits>.<unix seconds>` in the volume directory (a
/// rename within the directory works on every backend).
pub(crate) fn retired_name(seg: u64, secs: u64) -> String {
    format!("retired-{seg:016x}.{secs}")
}

fn parse_retired(name: &str) -> Option<(u64, u64)> {
    let (seg, secs) = name.strip_prefix("retired-")?.split_once('.')?;
    if seg.len() != 16 {
        return None;
    }
    Some((u64::from_str_radix(seg, 16).ok()?, secs.parse().ok()?))
}

/// The retired copy of segment `seg` in volume directory `dir`, if any.
pub(crate) fn find_retired(backend: &dyn Backend, dir: &str, seg: u64) -> Result<Option<String>> {
    Ok(backend
        .list(dir)?
        .into_iter()
        .filter(|n| parse_retired(n).is_some_and(|(s, _)| s == seg))
        .max()
        .map(|n| format!("{dir}/{n}")))
}

/// Where replay of the whole log starts: the beginning when segment 1 and
/// the chain from it are all there, else (once the cleaner has retired
/// segments) the oldest checkpoint whose log follows it intact.
///
/// Only a volume whose newest checkpoint says it was cleaned may start
/// anywhere but segment 1: elsewhere a missing or damaged start is damage,
/// and the full-log answer lets the caller report it.
pub(crate) fn log_base(backend: &dyn Backend, dir: &str, uuid: &[u8; 16]) -> Result<LogPos> {
    if let Ok(l) = log::layout(backend, dir, uuid, 0) {
        if l.chain.first().is_some_and(|(s, _)| *s == 1) {
            return Ok(LogPos::default());
        }
    }
    let cleaned = checkpoint::open_newest(backend, dir, uuid)?.is_some_and(|r| r.state.cleaned);
    if !cleaned {
        return Ok(LogPos::default());
    }
    let mut ckpts = checkpoint::list(backend, dir)?;
    ckpts.reverse(); // oldest first
    for seq in ckpts {
        let Ok(p) = checkpoint::position(backend, dir, seq, uuid) else { continue };
        if let Ok(l) = log::layout(backend, dir, uuid, p.segment) {
            if l.chain.first().is_some_and(|(s, _)| *s == p.segment) {
                return Ok(p);
            }
        }
    }
    Err(corrupt(format!(
        "{dir}: the start of the log was cleaned and no checkpoint with an intact log after it is left"
    )))
}

/// A run of live blocks to copy: consecutive blocks of one timeline whose
/// bytes are consecutive in the victim.
struct Run {
    timeline: u64,
    first_block: u64,
    /// The victim segment, and the offset of the first block's bytes in it.
    seg: u64,
    src_off: u64,
    crcs: Vec<u32>,
}

/// Live blocks the cleaner reads before it takes the writer lock to append
/// them (8 MiB).
const COPY_BATCH_BLOCKS: usize = 2048;

fn score(live: u64, bytes: u64, age: u64) -> f64 {
    let u = if bytes == 0 { 0.0 } else { (live as f64 / bytes as f64).min(1.0) };
    (1.0 - u) * (age as f64 + 1.0) / (1.0 + u)
}

impl Volume {
    /// The segments a cleaning pass would consider, best first: every
    /// sealed segment (not the one being written), with its live bytes and
    /// cost-benefit score.
    pub fn gc_candidates(&self) -> Result<Vec<Candidate>> {
        self.check_data_writable()?;
        let segs = log::list_segments(&*self.backend, &self.dir)?;
        let newest = segs.last().copied().unwrap_or(0);
        let active = self.active_segment.load(Ordering::SeqCst);
        let live = self.state.read().seg_live.clone();
        let mut out = Vec::new();
        for s in segs {
            if s == active || s == newest {
                continue;
            }
            let bytes = self.backend.open_read(&log::segment_path(&self.dir, s))?.len()?;
            let l = live.get(&s).copied().unwrap_or(0);
            out.push(Candidate { segment: s, bytes, live: l, score: score(l, bytes, newest - s) });
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.segment.cmp(&b.segment)));
        Ok(out)
    }

    /// Runs one cleaning pass (see the module documentation). `progress`
    /// is called with (segments done, segments chosen).
    pub fn gc(&self, opts: &GcOptions, progress: &mut dyn FnMut(u64, u64)) -> Result<GcReport> {
        self.check_data_writable()?;
        if !(0.0..=1.0).contains(&opts.max_utilization) {
            return Err(invalid(format!(
                "maximum utilization {} is not between 0 and 1",
                opts.max_utilization
            )));
        }
        let mut rep = GcReport { log_bytes_before: self.segment_bytes()?, ..Default::default() };
        let mut victims: Vec<Candidate> = self
            .gc_candidates()?
            .into_iter()
            .filter(|c| c.bytes > 0 && c.live as f64 <= opts.max_utilization * c.bytes as f64)
            .collect();
        if opts.max_segments > 0 {
            victims.truncate(opts.max_segments);
        }
        let total = victims.len() as u64;
        progress(0, total);
        // Every victim's live blocks, in logical order (see the module docs).
        let mut runs = Vec::new();
        for v in &victims {
            runs.extend(self.live_runs(v.segment)?);
        }
        runs.sort_by_key(|r| (r.timeline, r.first_block));
        let all: u64 = runs.iter().map(|r| r.crcs.len() as u64).sum();
        let (mut done, mut batch, mut batch_blocks) = (0u64, Vec::new(), 0usize);
        let mut runs = runs.into_iter().peekable();
        while let Some(r) = runs.next() {
            batch_blocks += r.crcs.len();
            batch.push(r);
            if batch_blocks >= COPY_BATCH_BLOCKS || runs.peek().is_none() {
                let (blocks, bytes) = self.copy_runs(&batch)?;
                rep.blocks_copied += blocks;
                rep.bytes_written += bytes;
                done += batch_blocks as u64;
                progress(done * total / all.max(1), total);
                batch.clear();
                batch_blocks = 0;
            }
        }
        progress(total, total);
        let mut free_now = Vec::new();
        if !victims.is_empty() {
            let (retired, names) = self.retire(&victims)?;
            rep.segments_cleaned = retired.len() as u64;
            rep.bytes_reclaimed = retired.iter().map(|c| c.bytes).sum();
            if !crate::registry::retired(&*self.backend, &self.dir, &names)? {
                free_now = names;
            }
        }
        rep.retired = crate::registry::release_with(&*self.backend, &self.dir, &free_now, Some(opts.retire_grace_secs))?;
        rep.retired_deleted = rep.retired.deleted;
        rep.log_bytes_after = self.segment_bytes()?;
        rep.live_bytes = self.state.read().seg_live.values().sum();
        Ok(rep)
    }

    /// Bytes of all segment files, retired ones included.
    fn segment_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for s in log::list_segments(&*self.backend, &self.dir)? {
            total += self.backend.open_read(&log::segment_path(&self.dir, s))?.len()?;
        }
        for n in self.backend.list(&self.dir)? {
            if parse_retired(&n).is_some() {
                total += self.backend.open_read(&format!("{}/{n}", self.dir))?.len()?;
            }
        }
        Ok(total)
    }

    /// The live blocks of segment `seg`, as runs, in log order.
    fn live_runs(&self, seg: u64) -> Result<Vec<Run>> {
        let mut runs: Vec<Run> = Vec::new();
        let timelines: Vec<u64> = self.state.read().timelines.keys().copied().collect();
        let mut f = |s: Scanned| -> Result<()> {
            for x in s.record.data_extents(s.offset, s.len) {
            for (i, crc) in x.crcs.iter().enumerate() {
                let off = x.data_off + i as u64 * BLOCK_SIZE;
                let b = x.first_block + i as u64;
                let want = Entry::Data { seg, off: off as u32, crc: *crc };
                let mut owner = None;
                for t in &timelines {
                    if self.index().get(*t, b)? == Some(want) {
                        owner = Some(*t);
                        break;
                    }
                }
                let Some(t) = owner else { continue };
                match runs.last_mut() {
                    Some(r)
                        if r.timeline == t
                            && r.first_block + r.crcs.len() as u64 == b
                            && r.src_off + (r.crcs.len() as u64) * BLOCK_SIZE == off
                            && r.crcs.len() < MAX_BLOCKS_PER_RECORD as usize =>
                    {
                        r.crcs.push(*crc)
                    }
                    _ => runs.push(Run { timeline: t, first_block: b, seg, src_off: off, crcs: vec![*crc] }),
                }
            }
            }
            Ok(())
        };
        // A sealed segment: stop quietly at a torn tail (nothing after it
        // is mapped). Damage before it stops the scan early too; the
        // blocks after it then stay live here and the segment is not
        // retired (see `retire`).
        log::scan_segment(&*self.backend, &self.dir, seg, 0, None, &mut f)?;
        Ok(runs)
    }

    /// Copies `runs` forward: reads and verifies them all, then appends
    /// them back to back under one hold of the writer lock. Returns
    /// (blocks, bytes appended).
    fn copy_runs(&self, runs: &[Run]) -> Result<(u64, u64)> {
        let (mut blocks, mut bytes) = (0u64, 0u64);
        let mut datas = Vec::with_capacity(runs.len());
        for run in runs {
            let seg = run.seg;
            let mut data = vec![0u8; run.crcs.len() * BS];
            self.reader(seg)?.read_exact_at(run.src_off, &mut data)?;
            for (i, (b, crc)) in data.chunks(BS).zip(&run.crcs).enumerate() {
                if crc32c::crc32c(b) != *crc {
                    return Err(corrupt(format!(
                        "{}: segment {} offset {}: block {} fails its checksum; the cleaner leaves this segment alone (run `hlfs fsck`)",
                        self.uri,
                        format::segment_name(seg),
                        run.src_off + (i * BS) as u64,
                        run.first_block + i as u64
                    )));
                }
            }
            datas.push(data);
        }
        // Under the writer lock: copy only the blocks that still point
        // at the victim (a guest may have overwritten some meanwhile).
        let mut wguard = self.writer.lock();
        let w = wguard
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::ReadOnly, format!("{} is open read-only", self.uri)))?;
        // Blocks that are still live and follow each other logically go
        // out as one record, even from different runs (and victims), so
        // that they end up back to back in the log.
        let mut pending: Option<(u64, u64, Vec<&[u8]>)> = None;
        let mut emit = |w: &mut LogWriter, p: (u64, u64, Vec<&[u8]>)| -> Result<()> {
            let (tl, first, parts) = p;
            let before = w.position();
            let (s, off, rec_len, rec) = w.append_data_parts(tl, first, &parts)?;
            {
                let mut st = self.state.write();
                apply(&self.index(), &mut st, s, off, rec_len, &rec)?;
            }
            blocks += parts.len() as u64;
            let after = w.position();
            bytes += if after.segment == before.segment { after.offset - before.offset } else { after.offset };
            Ok(())
        };
        for (run, data) in runs.iter().zip(&datas) {
            let seg = run.seg;
            for j in 0..run.crcs.len() {
                let want = Entry::Data { seg, off: (run.src_off + (j * BS) as u64) as u32, crc: run.crcs[j] };
                let b = run.first_block + j as u64;
                if self.index().get(run.timeline, b)? != Some(want) {
                    continue;
                }
                let block = &data[j * BS..(j + 1) * BS];
                match &mut pending {
                    Some((tl, first, parts))
                        if *tl == run.timeline
                            && *first + parts.len() as u64 == b
                            && parts.len() < MAX_BLOCKS_PER_RECORD as usize =>
                    {
                        parts.push(block)
                    }
                    _ => {
                        if let Some(p) = pending.take() {
                            emit(w, p)?;
                        }
                        pending = Some((run.timeline, b, vec![block]));
                    }
                }
            }
        }
        if let Some(p) = pending.take() {
            emit(w, p)?;
        }
        super::write::release_writer(wguard)?;
        Ok((blocks, bytes))
    }

    /// Makes the copies durable and findable, then retires every victim
    /// that nothing points into any more. Returns the retired ones.
    fn retire(&self, victims: &[Candidate]) -> Result<(Vec<Candidate>, Vec<String>)> {
        let mut wguard = self.writer.lock();
        let w = wguard
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::ReadOnly, format!("{} is open read-only", self.uri)))?;
        // Durable, and a checkpoint after the copies: from now on no replay
        // starts before them. The checkpoint must lie in a segment after
        // every victim: with nothing appended since the open (a pass that
        // copied nothing) the writer has no segment of its own, and its
        // position is the end of the last segment, which may be a victim;
        // a checkpoint there would be dropped below as stale and the log's
        // start retired with nothing after it. Open the next segment first.
        w.claim()?;
        let uuid = self.state.read().uuid;
        let newest = checkpoint::list(&*self.backend, &self.dir)?.first().copied();
        let at_end = match newest {
            Some(seq) => checkpoint::position(&*self.backend, &self.dir, seq, &uuid).ok() == Some(w.position()),
            None => false,
        };
        let was_cleaned = std::mem::replace(&mut self.state.write().cleaned, true);
        if at_end && was_cleaned {
            // Nothing was copied and the newest checkpoint already says so.
        } else {
            if at_end {
                // Same position, so the same name: replace it with one
                // that says the log has been cleaned (older ones remain
                // usable meanwhile).
                let seq = newest.expect("newest checkpoint");
                crate::registry::discard(&*self.backend, &self.dir, &[checkpoint::name(seq)])?;
            }
            self.checkpoint_locked(w)?;
        }
        let mut gone = Vec::new();
        for v in victims {
            // With the writer lock held, nothing can map a block into a
            // victim; check that nothing still does.
            if self.live_runs(v.segment)?.is_empty() {
                gone.push(*v);
            } else {
                tracing::warn!(
                    "{}: segment {} still holds live blocks after cleaning; keeping it",
                    self.uri,
                    format::segment_name(v.segment)
                );
            }
        }
        let Some(last) = gone.iter().map(|c| c.segment).max() else { return Ok((gone, Vec::new())) };
        if w.position().segment <= last {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}: the cleaner's checkpoint would lie in segment {}, not after the segments it retires; nothing retired",
                    self.uri,
                    format::segment_name(w.position().segment)
                ),
            ));
        }
        // Checkpoints whose replay would start at or before a retired
        // segment could no longer be used: remove them first (a reader
        // whose map came from one keeps it until it is done).
        let mut stale = Vec::new();
        for seq in checkpoint::list(&*self.backend, &self.dir)? {
            // The new checkpoint is in a later segment than any victim.
            let old = match checkpoint::position(&*self.backend, &self.dir, seq, &uuid) {
                Ok(p) => p.segment <= last,
                Err(_) => true,
            };
            if old {
                stale.push(checkpoint::name(seq));
            }
        }
        crate::registry::discard(&*self.backend, &self.dir, &stale)?;
        let (secs, _) = log::now();
        for v in &gone {
            let to = format!("{}/{}", self.dir, retired_name(v.segment, secs));
            self.backend.rename(&log::segment_path(&self.dir, v.segment), &to)?;
            self.readers.lock().remove(&v.segment);
        }
        let names = gone.iter().map(|v| retired_name(v.segment, secs)).collect();
        tracing::info!("{}: retired {} cleaned segment(s)", self.uri, gone.len());
        Ok((gone, names))
    }
}

/// Deletes the retired segments of the volume at `uri` that no reader can
/// need any more, without opening it (no lock is taken: retired segments
/// are no longer part of the log), and says what still waits and why:
/// `hlfs gc --wait` polls this. Retired segments no record accounts for go
/// after `grace` seconds.
pub fn release_retired(uri: &str, grace: u64) -> Result<crate::registry::Release> {
    let u = parse_uri(uri)?;
    let backend = backend::for_uri(&u)?;
    require_exists(&*backend, &u)?;
    crate::registry::release_with(&*backend, &u.path, &[], Some(grace))
}

/// When a background cleaner runs a pass and how fast it may copy.
#[derive(Debug, Clone)]
pub struct BackgroundGc {
    /// Time between checks.
    pub interval: std::time::Duration,
    /// Clean once the segments hold more than this many bytes per live byte.
    pub max_log_ratio: f64,
    /// ... and at least this many dead bytes.
    pub min_dead_bytes: u64,
    /// Average bytes per second the copies may append.
    pub max_rate: u64,
    /// Segments cleaned per pass: each pass ends with a checkpoint (the
    /// whole map), so cleaning one segment at a time costs more than it
    /// frees on large volumes (docs/benchmarks.md, write amplification).
    pub batch: usize,
    /// How each pass chooses segments (one segment per pass is taken).
    pub gc: GcOptions,
}

impl Default for BackgroundGc {
    fn default() -> Self {
        BackgroundGc {
            interval: std::time::Duration::from_secs(30),
            max_log_ratio: 1.5,
            min_dead_bytes: 256 << 20,
            max_rate: 32 << 20,
            batch: 8,
            gc: GcOptions::default(),
        }
    }
}

impl BackgroundGc {
    /// The defaults, changed by `HLFS_GC_INTERVAL` (seconds),
    /// `HLFS_GC_RATIO`, `HLFS_GC_MIN_DEAD` and `HLFS_GC_RATE` (bytes, with
    /// size suffixes); None if `HLFS_GC=off`.
    pub fn from_env() -> Option<BackgroundGc> {
        if std::env::var("HLFS_GC").is_ok_and(|v| v == "off" || v == "0") {
            return None;
        }
        let mut p = BackgroundGc::default();
        let var = |k: &str| std::env::var(k).ok();
        if let Some(s) = var("HLFS_GC_INTERVAL").and_then(|v| v.parse::<f64>().ok()).filter(|s| *s > 0.0) {
            p.interval = std::time::Duration::from_secs_f64(s);
        }
        if let Some(r) = var("HLFS_GC_RATIO").and_then(|v| v.parse::<f64>().ok()).filter(|r| *r >= 1.0) {
            p.max_log_ratio = r;
        }
        if let Some(b) = var("HLFS_GC_MIN_DEAD").and_then(|v| crate::size::parse_size(&v).ok()) {
            p.min_dead_bytes = b;
        }
        if let Some(b) = var("HLFS_GC_RATE").and_then(|v| crate::size::parse_size(&v).ok()).filter(|b| *b > 0) {
            p.max_rate = b;
        }
        Some(p)
    }
}

/// A background cleaner; stopping (or dropping) it waits for its pass.
pub struct GcThread {
    stop: Arc<(Mutex<bool>, parking_lot::Condvar)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl GcThread {
    /// Stops the cleaner and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for GcThread {
    fn drop(&mut self) {
        self.halt();
    }
}

impl Volume {
    /// Whether the log holds enough dead space for `policy` to clean.
    pub fn needs_gc(&self, policy: &BackgroundGc) -> Result<bool> {
        let log_bytes = self.segment_bytes()?;
        let live: u64 = self.state.read().seg_live.values().sum();
        Ok(log_bytes > policy.min_dead_bytes.saturating_add(live)
            && log_bytes as f64 > live as f64 * policy.max_log_ratio)
    }

    /// Segments a background pass takes: `policy.batch`, but no more than
    /// half the budget's headroom over the live data holds (at least one).
    /// A pass copies its victims' live blocks before it deletes any of
    /// them, so on a small volume a full batch of 64 MiB segments ran the
    /// log far past its budget (bench/gc-guest.sh: 1.67x with 8 segments
    /// of a 512 MiB volume); on a large one the batch stays whole, keeping
    /// the per-pass checkpoint rare.
    fn gc_batch(&self, policy: &BackgroundGc) -> usize {
        let live: u64 = self.state.read().seg_live.values().sum();
        let budget = (live as f64 * policy.max_log_ratio).max(live.saturating_add(policy.min_dead_bytes) as f64);
        let headroom = (budget - live as f64).max(0.0);
        let fit = (headroom / (2.0 * self.opts.segment_size.max(1) as f64)) as usize;
        fit.clamp(1, policy.batch.max(1))
    }

    /// Starts a thread that cleans this (read-write) volume while it stays
    /// open: every `interval`, and whenever half a segment was appended
    /// since its last check, it checks `needs_gc` and, if so, cleans up to
    /// `gc_batch` segments, then sleeps long enough to keep the copies under
    /// `max_rate`. Errors are logged and the next check tries again.
    pub fn spawn_gc(self: &Arc<Self>, policy: BackgroundGc) -> Result<GcThread> {
        self.check_data_writable()?;
        let weak = Arc::downgrade(self);
        let stop = Arc::new((Mutex::new(false), parking_lot::Condvar::new()));
        let s2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("hlfs-gc".into())
            .spawn(move || {
                // Besides every `interval`, a check comes as soon as half a
                // segment was appended since the last one (looked at every
                // `TICK`): a guest overwriting fast must not run far past
                // the budget between two checks (bench/gc-guest.sh: at 30 s
                // a TCG guest's 15 MiB/s took the log ~470 MiB over it).
                const TICK: std::time::Duration = std::time::Duration::from_secs(1);
                let mut pause = TICK.min(policy.interval);
                let mut last_check = std::time::Instant::now();
                let mut last_pos: Option<u64> = None;
                loop {
                    {
                        let mut stopped = s2.0.lock();
                        if !*stopped {
                            s2.1.wait_for(&mut stopped, pause);
                        }
                        if *stopped {
                            return;
                        }
                    }
                    let Some(v) = weak.upgrade() else { return };
                    pause = TICK.min(policy.interval);
                    let seg = v.opts.segment_size.max(1);
                    let pos = v.writer.lock().as_ref().map(|w| {
                        let p = w.position();
                        p.segment.saturating_mul(seg).saturating_add(p.offset)
                    });
                    let grown = match (pos, last_pos) {
                        (Some(p), Some(l)) => p.saturating_sub(l) >= seg / 2,
                        _ => true,
                    };
                    if !grown && last_check.elapsed() < policy.interval {
                        continue;
                    }
                    last_check = std::time::Instant::now();
                    last_pos = pos;
                    let pass = || -> Result<Option<GcReport>> {
                        if !v.needs_gc(&policy)? {
                            return Ok(None);
                        }
                        let opts = GcOptions { max_segments: v.gc_batch(&policy), ..policy.gc.clone() };
                        v.gc(&opts, &mut |_, _| {}).map(Some)
                    };
                    match pass() {
                        Ok(Some(rep)) => {
                            tracing::info!("{}: background gc: {rep:?}", v.uri);
                            let busy = std::time::Duration::from_secs_f64(rep.bytes_written as f64 / policy.max_rate as f64);
                            // Dead space left: go on after the rate limit's pause.
                            if rep.segments_cleaned > 0 {
                                pause = busy.max(std::time::Duration::from_millis(10));
                                last_pos = None;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!("{}: background gc: {e}", v.uri),
                    }
                }
            })
            .map_err(|e| Error::io("starting the background cleaner", e))?;
        Ok(GcThread { stop, handle: Some(handle) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_names_round_trip() {
        assert_eq!(parse_retired(&retired_name(0x2a, 1_700_000_000)), Some((0x2a, 1_700_000_000)));
        assert_eq!(parse_retired("seg-000000000000002a"), None);
        assert_eq!(format::parse_segment_name(&retired_name(0x2a, 5)), None);
        assert_eq!(parse_retired("lock"), None);
    }

    #[test]
    fn emptier_and_older_segments_score_higher() {
        assert!(score(0, 100, 1) > score(50, 100, 1));
        assert!(score(50, 100, 10) > score(50, 100, 1));
        assert_eq!(score(100, 100, 5), 0.0);
    }
}
