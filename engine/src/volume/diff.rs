//! Changes between two views (`hlfs diff`), and diff streams out of and
//! into volumes (`hlfs export-diff`, `hlfs import-diff`; the stream format
//! is in `diffstream` and docs/format.md §13).
//!
//! **Which blocks changed.** A view reads block `b` from the first timeline
//! of its chain that maps it (a clone's chain goes on into its base
//! snapshot's chain, for blocks inside the base). Two views of one volume
//! (or a clone and its base) share the end of their chains from their
//! nearest common timeline on, so a block can read differently only if a
//! timeline before that point, on either side, maps it. Those timelines
//! hold exactly what was written since the views parted, so the diff walks
//! their map entries alone: its cost grows with the changes, not with the
//! volume. A block both sides read as zeros is not a change. A full diff
//! (no `from`) compares with an empty volume: every block the view reads
//! as data.
//!
//! **Import.** `import_diff` checks that the target's newest snapshot is
//! the diff's `from` as an earlier import made it (snapshots taken by
//! import-diff carry the source volume's UUID and snapshot id,
//! `format::SnapshotSource`), writes a marker file `import-diff` naming the
//! head it writes, applies the records to the head as they arrive, and
//! after a verified end record takes snapshot `to` with the source's
//! identity, then deletes the marker. A stream that turns out damaged or
//! cut short has its changes discarded at once. A crash leaves the marker;
//! the next `import_diff` into the volume finds the head written since its
//! newest snapshot and the marker naming that head, so it discards the
//! partial changes (a Revert record that drops the head, or a Zero record
//! over an empty volume's head) and applies its diff from the start.

use super::*;
use crate::diffstream::{DiffCounts, DiffHeader, DiffItem, DiffReader, DiffWriter, SnapRef, MAX_DATA_BLOCKS};
use crate::format::{SnapshotSource, VmStateRef};
use std::io::{Read, Write};

/// A run of blocks that read differently in two views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// First block.
    pub first_block: u64,
    /// Number of blocks.
    pub blocks: u64,
    /// Whether the blocks read as zeros in the newer view (`to`).
    pub zero: bool,
}

/// What `Volume::export_diff` wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportDiffReport {
    /// The stream's counts.
    pub counts: DiffCounts,
    /// Blocks the diff found changed (data blocks that turned out to hold
    /// only zeros became zero records, or nothing in a full diff).
    pub changed_blocks: u64,
}

/// What `Volume::import_diff` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportDiffReport {
    /// The snapshot taken (the diff's `to`).
    pub snapshot: String,
    /// The snapshot the diff applied on top of (None: a full diff).
    pub from: Option<String>,
    /// The stream's counts.
    pub counts: DiffCounts,
    /// The volume already had this diff's snapshot from this source (an
    /// earlier import finished): nothing was written.
    pub already_imported: bool,
    /// The changes an interrupted import had left in the head were
    /// discarded first.
    pub discarded_interrupted: bool,
    /// The volume was grown to the diff's size.
    pub resized_to: Option<u64>,
}

/// Name of the marker file an import keeps in the volume's directory while
/// it writes.
pub const IMPORT_MARKER: &str = "import-diff";

/// Blocks examined per step of a diff.
const WINDOW: u64 = 1 << 16;

/// One timeline of a view's chain, which goes on through clone bases.
#[derive(Clone, Copy)]
struct Elem<'a> {
    vol: &'a Volume,
    uuid: [u8; 16],
    tl: u64,
    /// Blocks from here on are not read through this timeline (past a
    /// clone's base).
    clip: u64,
}

fn same(a: &Elem<'_>, b: &Elem<'_>) -> bool {
    a.uuid == b.uuid && a.tl == b.tl
}

/// The timelines view `v` reads through, nearest first, into its bases.
fn chain_of(v: &Volume) -> Vec<Elem<'_>> {
    let mut out = Vec::new();
    let mut clip = u64::MAX;
    let mut cur = v;
    loop {
        let (uuid, chain) = {
            let st = cur.state.read();
            (st.uuid, st.chain(cur.view.map(|x| x.0).unwrap_or(st.head)))
        };
        out.extend(chain.into_iter().map(|tl| Elem { vol: cur, uuid, tl, clip }));
        match cur.live_base() {
            Some(b) => {
                clip = clip.min(b.size().div_ceil(BLOCK_SIZE));
                cur = b;
            }
            None => return out,
        }
    }
}

/// For blocks `[first, first + n)`: what the nearest of `elems` that maps
/// each holds: Some(true) data, Some(false) zeros, None not mapped.
fn resolve(elems: &[Elem<'_>], first: u64, n: u64) -> Result<Vec<Option<bool>>> {
    let mut out: Vec<Option<bool>> = vec![None; n as usize];
    let mut i = 0;
    while i < elems.len() {
        let mut j = i + 1;
        while j < elems.len() && std::ptr::eq(elems[j].vol, elems[i].vol) {
            j += 1;
        }
        let tls: Vec<u64> = elems[i..j].iter().map(|e| e.tl).collect();
        let m = n.min(elems[i].clip.saturating_sub(first));
        // Runs still unresolved.
        let mut k = 0u64;
        while k < m {
            if out[k as usize].is_some() {
                k += 1;
                continue;
            }
            let mut e = k + 1;
            while e < m && out[e as usize].is_none() {
                e += 1;
            }
            let got = elems[i].vol.index().resolve(&tls, first + k, e - k)?;
            for (x, g) in got.into_iter().enumerate() {
                out[k as usize + x] = g.map(|g| matches!(g, Entry::Data { .. }));
            }
            k = e;
        }
        i = j;
    }
    Ok(out)
}

/// For blocks `[start, end)`: what the nearest of `elems` that maps each
/// holds (Some(true) data, Some(false) zeros), from one range scan per
/// timeline (the blocks mapped, not the blocks of the window).
fn window_map(elems: &[Elem<'_>], start: u64, end: u64) -> Result<Vec<Option<bool>>> {
    let mut out: Vec<Option<bool>> = vec![None; (end - start) as usize];
    for e in elems {
        if start >= end.min(e.clip) {
            continue;
        }
        for r in e.vol.index().range(e.tl, start, end.min(e.clip)) {
            let (b, en) = r?;
            let slot = &mut out[(b - start) as usize];
            if slot.is_none() {
                *slot = Some(matches!(en, Entry::Data { .. }));
            }
        }
    }
    Ok(out)
}

/// First block in `[from, limit)` that one of `elems` maps.
fn next_mapped(elems: &[Elem<'_>], from: u64, limit: u64) -> Result<Option<u64>> {
    let mut best: Option<u64> = None;
    for e in elems {
        let to = e.clip.min(limit).min(best.unwrap_or(u64::MAX));
        if from >= to {
            continue;
        }
        if let Some(r) = e.vol.index().range(e.tl, from, to).next() {
            let (b, _) = r?;
            best = Some(best.map_or(b, |x| x.min(b)));
        }
    }
    Ok(best)
}

/// Calls `f` with the runs of blocks that read differently in `to` than in
/// `from` (None: an empty volume, so every block `to` reads as data), in
/// block order, each run as long as it can be (the same `zero` flag
/// throughout). Both are read-only opens: `vol%snap` views or heads, of one
/// volume, or of a clone and a volume of its base chain. Blocks past the
/// end of `to` are not reported.
pub fn diff_views(from: Option<&Volume>, to: &Volume, f: &mut dyn FnMut(Change) -> Result<()>) -> Result<()> {
    let cb = chain_of(to);
    let ca = from.map(chain_of).unwrap_or_default();
    let (a_own, b_own, common): (&[Elem<'_>], &[Elem<'_>], &[Elem<'_>]) = match from {
        None => (&[], &cb[..], &[]),
        Some(fv) => {
            let Some(pb) = cb.iter().position(|e| ca.iter().any(|x| same(x, e))) else {
                return Err(invalid(format!(
                    "{} and {} are not related: they share no snapshot history (different volumes, and neither is a \
                     clone of the other); diff two snapshots of one volume, or a clone and its base",
                    fv.uri, to.uri
                )));
            };
            let pa = ca.iter().position(|x| same(x, &cb[pb])).expect("found above");
            (&ca[..pa], &cb[..pb], &cb[pb..])
        }
    };
    let own: Vec<Elem<'_>> = a_own.iter().chain(b_own).copied().collect();
    let b_blocks = to.size().div_ceil(BLOCK_SIZE);
    let a_blocks = from.map_or(0, |v| v.size().div_ceil(BLOCK_SIZE));
    let mut pending: Option<Change> = None;
    let mut emit = |c: Change, f: &mut dyn FnMut(Change) -> Result<()>| -> Result<()> {
        match &mut pending {
            Some(p) if p.zero == c.zero && p.first_block + p.blocks == c.first_block => p.blocks += c.blocks,
            _ => {
                if let Some(p) = pending.replace(c) {
                    f(p)?;
                }
            }
        }
        Ok(())
    };
    let mut at = 0u64;
    while let Some(start) = next_mapped(&own, at, b_blocks)? {
        let end = start.saturating_add(WINDOW).min(b_blocks);
        // What each side's own timelines map in the window: the nearest
        // one wins (chains are listed nearest first), as a read resolves.
        let bo = window_map(b_own, start, end)?;
        let ao = window_map(a_own, start, end)?;
        let mut i = 0usize;
        while i < bo.len() {
            if bo[i].is_none() && ao[i].is_none() {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < bo.len() && (bo[j].is_some() || ao[j].is_some()) {
                j += 1;
            }
            let (first, n) = (start + i as u64, (j - i) as u64);
            let (bo, ao) = (&bo[i..j], &ao[i..j]);
            // What the shared part of the chains reads, where one side
            // falls through to it and the answer matters.
            let needs_common = bo.iter().zip(ao).any(|(b, a)| b.is_none() || (*b == Some(false) && a.is_none()));
            let co = if needs_common && !common.is_empty() { resolve(common, first, n)? } else { vec![None; n as usize] };
            for k in 0..n as usize {
                let block = first + k as u64;
                let b_zero = !bo[k].or(co[k]).unwrap_or(false);
                let a_zero = from.is_none() || block >= a_blocks || !ao[k].or(co[k]).unwrap_or(false);
                if !(a_zero && b_zero) {
                    emit(Change { first_block: block, blocks: 1, zero: b_zero }, f)?;
                }
            }
            i = j;
        }
        at = end;
    }
    if let Some(p) = pending {
        f(p)?;
    }
    Ok(())
}

fn hexs(b: &[u8]) -> String {
    hex(b)
}

fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(2, 4)
}

/// Whether every byte is zero.
fn is_zero(b: &[u8]) -> bool {
    b.chunks(512).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// A piece of an export: blocks to read, or blocks that read as zeros.
#[derive(Clone, Copy)]
enum Job {
    Read(u64, u64),
    Zero(u64, u64),
}

/// What a worker made of a job: runs of blocks, zeros or data with its
/// crc32c, in block order.
enum Piece {
    Zero(u64, u64),
    Data(u64, Vec<u8>, u32),
}

/// Splits a change into jobs of at most one data record.
fn jobs_of(c: &Change, out: &mut Vec<Job>) {
    if c.zero {
        out.push(Job::Zero(c.first_block, c.blocks));
        return;
    }
    let end = c.first_block + c.blocks;
    let mut b = c.first_block;
    while b < end {
        let n = (end - b).min(MAX_DATA_BLOCKS);
        out.push(Job::Read(b, n));
        b += n;
    }
}

/// Reads a job's blocks and cuts them into zero and data runs, taking the
/// data's checksums (on the worker's thread, not the writer's).
fn do_job(vol: &Volume, job: Job) -> Result<Vec<Piece>> {
    let (first, n) = match job {
        Job::Zero(f, n) => return Ok(vec![Piece::Zero(f, n)]),
        Job::Read(f, n) => (f, n),
    };
    let mut buf = vec![0u8; (n * BLOCK_SIZE) as usize];
    let off = first * BLOCK_SIZE;
    let len = (n * BLOCK_SIZE).min(vol.size() - off) as usize;
    vol.read(off, &mut buf[..len])?;
    let blocks = n as usize;
    let zero: Vec<bool> = buf.chunks(BS).map(is_zero).collect();
    if zero.iter().all(|z| !z) {
        let crc = crc32c::crc32c(&buf);
        return Ok(vec![Piece::Data(first, buf, crc)]);
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < blocks {
        let mut j = i + 1;
        while j < blocks && zero[j] == zero[i] {
            j += 1;
        }
        if zero[i] {
            out.push(Piece::Zero(first + i as u64, (j - i) as u64));
        } else {
            let d = buf[i * BS..j * BS].to_vec();
            let crc = crc32c::crc32c(&d);
            out.push(Piece::Data(first + i as u64, d, crc));
        }
        i = j;
    }
    Ok(out)
}

/// The records of a diff stream being written, with zero runs joined.
struct Emitter<'w, 'o> {
    w: &'w mut DiffWriter<'o>,
    zero: Option<(u64, u64)>,
    full: bool,
}

impl Emitter<'_, '_> {
    fn zero(&mut self, first: u64, n: u64) -> Result<()> {
        if self.full {
            return Ok(()); // an empty volume reads zeros already
        }
        match &mut self.zero {
            Some((f, c)) if *f + *c == first => *c += n,
            _ => {
                self.flush_zero()?;
                self.zero = Some((first, n));
            }
        }
        Ok(())
    }

    fn flush_zero(&mut self) -> Result<()> {
        if let Some((f, c)) = self.zero.take() {
            self.w.zero(f, c)?;
        }
        Ok(())
    }

    fn piece(&mut self, p: Piece) -> Result<()> {
        match p {
            Piece::Zero(f, n) => self.zero(f, n),
            Piece::Data(f, d, crc) => {
                self.flush_zero()?;
                self.w.data_with_crc(f, &d, crc)
            }
        }
    }
}

/// Runs `jobs` on a few reader threads, job `k` on thread `k mod n`, and
/// hands the results to `sink` in job order (bounded channels keep a couple
/// of jobs per thread in memory).
fn run_jobs(vol: &Volume, jobs: &[Job], sink: &mut dyn FnMut(Job, Vec<Piece>) -> Result<()>) -> Result<()> {
    let n = workers().min(jobs.len().max(1));
    std::thread::scope(|s| {
        let mut rxs = Vec::new();
        for w in 0..n {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Piece>>>(2);
            rxs.push(rx);
            s.spawn(move || {
                for job in jobs.iter().skip(w).step_by(n) {
                    let r = do_job(vol, *job);
                    let failed = r.is_err();
                    // A closed channel: the writer gave up.
                    if tx.send(r).is_err() || failed {
                        return;
                    }
                }
            });
        }
        // Returning drops the receivers, which stops readers that are ahead.
        for (k, job) in jobs.iter().enumerate() {
            let pieces = rxs[k % n].recv().map_err(|_| invalid("a reader thread of export-diff stopped early"))??;
            sink(*job, pieces)?;
        }
        Ok(())
    })
}

/// Runs of changes held at once by `export_diff` (~24 bytes each): past
/// this the diff is walked a second time instead.
const MAX_HELD_CHANGES: usize = 1 << 22;

impl Volume {
    /// The snapshot a read-only `vol%snap` view shows: (id, name).
    fn view_snapshot(&self) -> Option<(u64, String)> {
        let (tl, _) = self.view?;
        let name = self.uri.snapshot.as_ref()?;
        let st = self.state.read();
        st.snapshot_by_name(name).filter(|s| s.timeline == tl).map(|s| (s.id, s.name.clone()))
    }

    /// The source snapshot that `import-diff` reproduced as snapshot
    /// `name` (None: no such snapshot, or not one import-diff took).
    pub fn snapshot_source(&self, name: &str) -> Option<SnapshotSource> {
        self.state.read().snapshot_by_name(name).map(|s| s.source).filter(|s| s.is_some())
    }

    /// Writes the changes from snapshot `from` (a read-only `vol%a` view of
    /// this volume; None: from an empty volume) to this read-only `vol%b`
    /// view as a diff stream to `out` (docs/format.md §13). `progress` is
    /// called with (blocks done, blocks to do). Snapshots never change, so
    /// this works while a writer (a VM) keeps writing the volume.
    pub fn export_diff(
        &self,
        from: Option<&Volume>,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ExportDiffReport> {
        let vol = self.uri.without_snapshot().to_string();
        let Some((to_id, to_name)) = self.view_snapshot().filter(|_| self.read_only) else {
            return Err(invalid(format!(
                "export-diff needs a snapshot to export, as {vol}%NAME (open read-only); take one with `hlfs snapshot create {vol} NAME`"
            )));
        };
        let uuid = self.state.read().uuid;
        let from_ref = match from {
            None => None,
            Some(f) => {
                let (id, name) = f.view_snapshot().filter(|_| f.read_only).ok_or_else(|| {
                    invalid(format!("{}: the diff must start from a snapshot of {vol}, opened read-only as {vol}%NAME", f.uri))
                })?;
                if f.state.read().uuid != uuid {
                    return Err(invalid(format!(
                        "{} is not a snapshot of {vol} (another volume); export-diff carries changes within one volume",
                        f.uri
                    )));
                }
                Some(SnapRef { id, name })
            }
        };
        // First the changes (for the header's count and the progress),
        // kept unless there are very many.
        let mut total = 0u64;
        let mut held: Option<Vec<Change>> = Some(Vec::new());
        diff_views(from, self, &mut |c| {
            total += c.blocks;
            if held.as_ref().is_some_and(|h| h.len() >= MAX_HELD_CHANGES) {
                held = None;
            }
            if let Some(h) = held.as_mut() {
                h.push(c);
            }
            Ok(())
        })?;
        let header = DiffHeader {
            volume_size: self.size(),
            from_size: from.map_or(0, |f| f.size()),
            source_uuid: uuid,
            source_uri: vol.clone(),
            from: from_ref,
            to: SnapRef { id: to_id, name: to_name },
            planned_blocks: total,
        };
        let mut w = DiffWriter::new(out, &header)?;
        let mut em = Emitter { w: &mut w, zero: None, full: from.is_none() };
        progress(0, total);
        let mut done = 0u64;
        let mut sink = |job: Job, pieces: Vec<Piece>| -> Result<()> {
            for p in pieces {
                em.piece(p)?;
            }
            done += match job {
                Job::Read(_, n) | Job::Zero(_, n) => n,
            };
            progress(done, total);
            Ok(())
        };
        // Jobs in batches, so that memory stays bounded by the batch.
        const BATCH: usize = 4096;
        let mut jobs: Vec<Job> = Vec::new();
        match held {
            Some(changes) => {
                for c in &changes {
                    jobs_of(c, &mut jobs);
                    if jobs.len() >= BATCH {
                        run_jobs(self, &jobs, &mut sink)?;
                        jobs.clear();
                    }
                }
            }
            None => diff_views(from, self, &mut |c| {
                jobs_of(&c, &mut jobs);
                if jobs.len() >= BATCH {
                    run_jobs(self, &jobs, &mut sink)?;
                    jobs.clear();
                }
                Ok(())
            })?,
        }
        run_jobs(self, &jobs, &mut sink)?;
        drop(sink);
        em.flush_zero()?;
        let counts = w.finish()?;
        Ok(ExportDiffReport { counts, changed_blocks: total })
    }

    /// Applies the diff stream `input` (made by `export_diff`) to this
    /// volume, open read-write, and takes the diff's snapshot (see the
    /// module documentation for the checks, and how a damaged stream or a
    /// crash is undone). `progress` is called with (blocks done, blocks the
    /// stream announced).
    pub fn import_diff(&self, input: &mut dyn Read, progress: &mut dyn FnMut(u64, u64)) -> Result<ImportDiffReport> {
        self.check_data_writable()?;
        let mut r = DiffReader::new(input)?;
        let h = r.header().clone();
        validate_snapshot_name(&h.to.name).map_err(|e| corrupt(format!("the diff stream names its snapshot badly: {e}")))?;
        let vol = self.uri.without_snapshot().to_string();
        let src = format!("{}%{}", h.source_uri, h.to.name);
        let mut rep = ImportDiffReport {
            snapshot: h.to.name.clone(),
            from: h.from.as_ref().map(|f| f.name.clone()),
            ..Default::default()
        };
        let to_source = SnapshotSource { volume_uuid: h.source_uuid, snapshot_id: h.to.id };
        let marker_path = format!("{}/{IMPORT_MARKER}", self.dir);
        let st = self.state.read().clone();
        let newest = st.snapshots.values().max_by_key(|s| s.id).cloned();
        if newest.as_ref().is_some_and(|n| n.source == to_source) {
            // An earlier import got as far as its snapshot: check the
            // stream, change nothing.
            while r.next_item()?.is_some() {}
            if self.backend.exists(&marker_path)? {
                self.backend.delete(&marker_path)?;
            }
            rep.already_imported = true;
            rep.counts = r.counts();
            return Ok(rep);
        }
        let marker = self.read_import_marker(&marker_path)?;
        let interrupted = marker == Some(st.head);
        if marker.is_some() && !interrupted {
            // Left by an import whose head has since been snapshotted or
            // reverted: it explains nothing now.
            self.backend.delete(&marker_path)?;
        }
        let head = st.timelines.get(&st.head).cloned().unwrap_or_default();
        let head_changed = head.entries > 0 || st.head_resized;
        let written = head.blocks * BLOCK_SIZE;
        let src_vol = format!("{} (uuid {})", h.source_uri, hexs(&h.source_uuid));
        let discard: Option<Option<u64>> = match &h.from {
            None => {
                if !st.snapshots.is_empty() {
                    let names: Vec<&str> = st.snapshots.values().map(|s| s.name.as_str()).collect();
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "{vol} has snapshots ({}), and a full diff (export-diff without --from) starts a chain on \
                             an empty volume; import it into a new volume of its size (`hlfs create URI {}`), or import \
                             the changes since {vol}'s newest snapshot {:?} (`hlfs export-diff {}%{} FILE --from {}`)",
                            names.join(", "),
                            h.volume_size,
                            newest.as_ref().map_or("", |n| n.name.as_str()),
                            h.source_uri,
                            h.to.name,
                            newest.as_ref().map_or("", |n| n.name.as_str()),
                        ),
                    ));
                }
                if st.base.is_some() {
                    return Err(invalid(format!(
                        "{vol} is a clone, which reads its base where it was not written; a full diff needs an empty \
                         volume: `hlfs create URI {}`",
                        h.volume_size
                    )));
                }
                if st.virtual_size != h.volume_size {
                    return Err(invalid(format!(
                        "the diff is of a volume of {} bytes ({src_vol}), but {vol} is {} bytes; a full diff needs an \
                         empty volume of the same size: `hlfs create URI {}`",
                        h.volume_size, st.virtual_size, h.volume_size
                    )));
                }
                if head_changed && !interrupted {
                    return Err(invalid(format!(
                        "{vol} is not empty ({written} bytes written); a full diff needs an empty volume of {} bytes: \
                         `hlfs create URI {}`",
                        h.volume_size, h.volume_size
                    )));
                }
                (head_changed && interrupted).then_some(None)
            }
            Some(from) => {
                let want = SnapshotSource { volume_uuid: h.source_uuid, snapshot_id: from.id };
                let Some(n) = newest.as_ref() else {
                    return Err(invalid(format!(
                        "{vol} has no snapshots, and this diff applies on top of snapshot {:?} of {src_vol}; import \
                         the chain from its start, a full diff (`hlfs export-diff {}%{} FILE` without --from)",
                        from.name, h.source_uri, from.name
                    )));
                };
                if n.source != want {
                    let why = if !n.source.is_some() {
                        "was not made by import-diff".to_string()
                    } else if n.source.volume_uuid != h.source_uuid {
                        format!("reproduces a snapshot of another volume (uuid {})", hexs(&n.source.volume_uuid))
                    } else {
                        format!("reproduces snapshot id {} of {}", n.source.snapshot_id, h.source_uri)
                    };
                    return Err(invalid(format!(
                        "this diff goes from snapshot {:?} (id {}) to {:?} (id {}) of {src_vol}, but the newest \
                         snapshot of {vol}, {:?}, {why}; import the diff that starts at {:?} (`hlfs export-diff \
                         {}%{} FILE --from {}`)",
                        from.name, from.id, h.to.name, h.to.id, n.name, n.name, h.source_uri, h.to.name, n.name
                    )));
                }
                if head.parent != Some(n.timeline) {
                    return Err(invalid(format!(
                        "the head of {vol} does not continue its newest snapshot {:?} (it was reverted to another \
                         one); go back to it with `hlfs snapshot revert {vol} {}`",
                        n.name, n.name
                    )));
                }
                if head_changed && !interrupted {
                    return Err(invalid(format!(
                        "{vol} was written since its snapshot {:?} ({written} bytes), and a diff applies only on top \
                         of that snapshot unchanged; to drop those writes, run `hlfs snapshot revert {vol} {}` (it keeps \
                         them as snapshot pre-revert-{}), then `hlfs snapshot delete {vol} pre-revert-{}`",
                        n.name, n.name, st.next_snapshot, st.next_snapshot
                    )));
                }
                if n.virtual_size != h.from_size {
                    return Err(invalid(format!(
                        "snapshot {:?} of {vol} is {} bytes, but the diff's {:?} of {src_vol} was {} bytes",
                        n.name, n.virtual_size, from.name, h.from_size
                    )));
                }
                if h.volume_size < n.virtual_size {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "the diff shrinks the volume from {} to {} bytes, and volumes only grow",
                            n.virtual_size, h.volume_size
                        ),
                    ));
                }
                (head_changed && interrupted).then_some(Some(n.id))
            }
        };
        if st.snapshot_by_name(&h.to.name).is_some() {
            return Err(Error::new(
                ErrorKind::Exists,
                format!(
                    "{vol} already has a snapshot named {:?}, which is not {src}; delete or rename it first",
                    h.to.name
                ),
            ));
        }
        if let Some(base) = discard {
            tracing::warn!("{vol}: discarding the changes an interrupted import-diff left in its head");
            self.discard_head(base)?;
            rep.discarded_interrupted = true;
        }
        // The marker names the head the records go into: a crash from here
        // on leaves changes that the next import knows to discard.
        let head_now = self.state.read().head;
        if self.backend.exists(&marker_path)? {
            self.backend.delete(&marker_path)?;
        }
        let mut mf = self.backend.create(&marker_path)?;
        mf.append(
            format!(
                "head={head_now}\nsource={}\nsource_uri={}\nfrom={}\nto={}\nto_name={}\n",
                hexs(&h.source_uuid),
                h.source_uri,
                h.from.as_ref().map_or(0, |f| f.id),
                h.to.id,
                h.to.name
            )
            .as_bytes(),
        )?;
        mf.close()?;
        let base_snapshot = match &h.from {
            None => None,
            Some(_) => newest.as_ref().map(|n| n.id),
        };
        let applied = self.apply_diff(&mut r, &h, progress, &mut rep);
        if let Err(e) = applied {
            // Nothing is committed before the snapshot: undo what was applied.
            return Err(match self.discard_head(base_snapshot) {
                Ok(()) => {
                    let _ = self.backend.delete(&marker_path);
                    e.context(format!("{vol} was left as it was (the changes applied so far were discarded)"))
                }
                Err(d) => e.context(format!(
                    "importing into {vol}: discarding the changes applied so far failed too ({d}); run import-diff \
                     again to finish or discard them"
                )),
            });
        }
        rep.counts = r.counts();
        self.flush()?;
        self.with_writer(|w| self.snapshot_create_in(w, &h.to.name, VmStateRef::default(), to_source))?;
        self.backend.delete(&marker_path)?;
        tracing::info!(
            "{vol}: imported {src} ({} data blocks, {} zero blocks{})",
            rep.counts.data_blocks,
            rep.counts.zero_blocks,
            h.from.as_ref().map(|f| format!(", on top of {:?}", f.name)).unwrap_or_default()
        );
        Ok(rep)
    }

    /// Applies the records of `r` to the head.
    fn apply_diff(
        &self,
        r: &mut DiffReader<'_>,
        h: &DiffHeader,
        progress: &mut dyn FnMut(u64, u64),
        rep: &mut ImportDiffReport,
    ) -> Result<()> {
        if h.volume_size > self.size() {
            self.resize(h.volume_size)?;
            rep.resized_to = Some(h.volume_size);
        }
        let size = self.size();
        let mut done = 0u64;
        progress(0, h.planned_blocks);
        while let Some(item) = r.next_item()? {
            match item {
                DiffItem::Data { first_block, data } => {
                    let off = first_block * BLOCK_SIZE;
                    let len = (data.len() as u64).min(size - off) as usize;
                    self.write(off, &data[..len])?;
                    done += (data.len() / BS) as u64;
                }
                DiffItem::Zero { first_block, count } => {
                    let off = first_block * BLOCK_SIZE;
                    self.write_zeroes(off, (count * BLOCK_SIZE).min(size - off))?;
                    done += count;
                }
            }
            progress(done, h.planned_blocks.max(done));
        }
        Ok(())
    }

    /// Drops what the head holds: back to snapshot `base` (a Revert that
    /// keeps nothing of the old head), or for a volume without snapshots
    /// (None) a Zero record over all of it.
    fn discard_head(&self, base: Option<u64>) -> Result<()> {
        match base {
            Some(id) => self.with_writer(|w| {
                let (secs, nsecs) = log::now();
                let new_head = self.state.read().next_timeline;
                self.log_meta(
                    w,
                    Record::Revert { target_id: id, auto_id: 0, new_head, secs, nsecs, auto_name: String::new() },
                )
            }),
            None => {
                self.write_zeroes(0, self.size())?;
                self.flush()
            }
        }
    }

    /// The head an interrupted import wrote into, from its marker (None:
    /// no marker, or one that a crash left unreadable).
    fn read_import_marker(&self, path: &str) -> Result<Option<u64>> {
        let f = match self.backend.open_read(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = f.len()?.min(8192) as usize;
        let mut buf = vec![0u8; len];
        f.read_exact_at(0, &mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("head="))
            .and_then(|v| v.trim().parse::<u64>().ok())
            // Only a marker written whole counts.
            .filter(|_| text.lines().any(|l| l.starts_with("to_name="))))
    }
}
