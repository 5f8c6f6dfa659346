//! Flattening a clone: copying what it still reads from its base snapshot
//! into itself, then dropping the base, so the base snapshot (or the whole
//! base volume) can be deleted.
//!
//! 1. Every block that the head or a snapshot of the clone reads from the
//!    base (no timeline of its chain maps it, and the base reads data
//!    there; see `du` for how readers are found) is read from the base and
//!    appended as a data record of the clone's root timeline, which every
//!    chain ends in. A block the root already maps is never written (it
//!    is checked under the writer lock, just before the append), so the
//!    copy shadows only base blocks holding the same bytes: no view's
//!    contents change at any point. Blocks that are all zeros are not
//!    copied: once the base is gone, an unmapped block reads as zeros.
//! 2. The copies are made durable; a marker file `unclone` in the clone's
//!    directory records the base's reference file.
//! 3. A `SetBase` record with an empty base URI drops the base.
//! 4. The clone's reference file in the base's `clones/` directory is
//!    removed, then the marker.
//!
//! A crash (or Ctrl-C) before 3 leaves a clone that still reads its base,
//! with some blocks already copied; running flatten again copies the rest.
//! A crash after 3 leaves a stale reference in the base (which would keep
//! its snapshot from being deleted) and the marker; running flatten again
//! on the clone, now no clone, finds the marker and finishes 4.

use super::du::{Tree, WINDOW};
use super::*;

/// Name of the marker a flatten leaves while it drops the base.
const MARKER: &str = "unclone";

/// What `Volume::flatten` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlattenReport {
    /// The base snapshot (`URI%snap`) that was dropped (None: the volume
    /// was no clone, or an earlier flatten had already dropped it).
    pub base: Option<String>,
    /// Blocks copied from the base.
    pub blocks_copied: u64,
    /// Bytes copied from the base.
    pub bytes_copied: u64,
    /// Blocks the views read from the base that held only zeros (not copied).
    pub zero_blocks: u64,
    /// Whether a base reference left by an interrupted flatten was removed.
    pub finished_earlier_flatten: bool,
}

impl Volume {
    /// Makes a clone independent of its base (see the module
    /// documentation). `progress` is called with (blocks examined, blocks
    /// of the base). On a volume that is no clone, only finishes what an
    /// interrupted flatten left, if anything.
    pub fn flatten(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<FlattenReport> {
        self.check_data_writable()?;
        let mut rep = FlattenReport::default();
        let marker = format!("{}/{MARKER}", self.dir);
        let base_ref = self.state.read().base.clone();
        let Some(base_ref) = base_ref else {
            if self.backend.exists(&marker)? {
                self.drop_clone_ref_from_marker(&marker)?;
                rep.finished_earlier_flatten = true;
            }
            return Ok(rep);
        };
        let Some(base) = self.base.clone() else {
            return Err(invalid(format!("{}: its base was not opened", self.uri)));
        };
        let base_blocks = base.size().div_ceil(BLOCK_SIZE);
        progress(0, base_blocks);
        let mut w = 0u64;
        // Only blocks the base reads matter: follow the base's map.
        while let Some(start) = base.view_next_mapped(w)?.filter(|s| *s < base_blocks) {
            let end = start.saturating_add(WINDOW).min(base_blocks);
            self.flatten_window(&base, start, end, &mut rep)?;
            progress(end, base_blocks);
            w = end;
        }
        progress(base_blocks, base_blocks);
        // Durable before the base goes: the record below must never be
        // replayed without the copies before it.
        self.with_writer(|w| self.sync_visible(w))?;
        let name = self.uri.without_snapshot().to_string();
        let bu = VolumeUri::parse(&base_ref.uri)?;
        let mut f = {
            if self.backend.exists(&marker)? {
                self.backend.delete(&marker)?;
            }
            self.backend.create(&marker)?
        };
        f.append(format!("base={}\nchild={name}\n", base_ref.uri).as_bytes())?;
        f.close()?;
        let cleared = BaseRef { uri: String::new(), snapshot: String::new(), snapshot_id: 0, volume_uuid: [0; 16] };
        self.with_writer(|w| self.log_meta(w, Record::SetBase(cleared)))?;
        remove_clone_refs(&bu, &name)?;
        self.backend.delete(&marker)?;
        // The base view stays open (reads no longer go to it) but stops
        // holding the base's retired segments and blocking its delete.
        if let Some(b) = &self.base {
            b.close_registration();
        }
        rep.base = Some(format!("{}%{}", base_ref.uri, base_ref.snapshot));
        tracing::info!(
            "{name}: flattened: copied {} block(s) from {}; it no longer depends on it",
            rep.blocks_copied,
            rep.base.as_deref().unwrap_or("")
        );
        Ok(rep)
    }

    /// Copies what the views read from the base in `[start, end)`.
    fn flatten_window(&self, base: &Volume, start: u64, end: u64, rep: &mut FlattenReport) -> Result<()> {
        loop {
            let (tree, views_shape, tls) = {
                let st = self.state.read();
                let tls: Vec<u64> = st.timelines.keys().copied().collect();
                let mut views: Vec<u64> = st.snapshots.values().map(|s| s.timeline).collect();
                views.push(st.head);
                let t = Tree::new(&st, &views);
                let shape = (t.shape.clone(), views);
                (t, shape, tls)
            };
            let entries = self.entries_in(&tls, start, end)?;
            let data = self.base_data_in(start, end)?;
            // (block, root timeline to copy it into).
            let mut plan: Vec<(u64, u64)> = Vec::new();
            for b in data {
                let ids: Vec<u64> = entries.get(&b).map(|v| v.iter().map(|(t, _)| *t).collect()).unwrap_or_default();
                let (_, through) = tree.readers(&ids);
                for r in tree.roots_of(&through) {
                    plan.push((b, r));
                }
            }
            plan.sort_unstable_by_key(|(b, r)| (*r, *b));
            // Runs of consecutive blocks for one root.
            let mut runs: Vec<(u64, u64, u64)> = Vec::new(); // (root, first, count)
            for (b, r) in plan {
                match runs.last_mut() {
                    Some((rr, f, n)) if *rr == r && *f + *n == b && *n < MAX_BLOCKS_PER_RECORD as u64 => *n += 1,
                    _ => runs.push((r, b, 1)),
                }
            }
            let mut bufs = Vec::with_capacity(runs.len());
            for &(_, first, n) in &runs {
                let mut buf = vec![0u8; (n as usize) * BS];
                base.read_blocks(first, &mut buf, None)?;
                bufs.push(buf);
            }
            let mut wguard = self.writer.lock();
            let w = wguard
                .as_mut()
                .ok_or_else(|| Error::new(ErrorKind::ReadOnly, format!("{} is open read-only", self.uri)))?;
            let shape_now = {
                let st = self.state.read();
                let mut views: Vec<u64> = st.snapshots.values().map(|s| s.timeline).collect();
                views.push(st.head);
                (st.timelines.iter().map(|(id, t)| (*id, t.parent)).collect::<Vec<_>>(), views)
            };
            if shape_now != views_shape {
                // A snapshot was taken, deleted or reverted meanwhile: plan again.
                continue;
            }
            for ((root, first, n), buf) in runs.iter().zip(&bufs) {
                let mut i = 0u64;
                while i < *n {
                    let copy = |j: u64| -> Result<bool> {
                        let blk = &buf[j as usize * BS..(j as usize + 1) * BS];
                        Ok(self.index().get(*root, first + j)?.is_none() && blk.iter().any(|x| *x != 0))
                    };
                    if !copy(i)? {
                        if self.index().get(*root, first + i)?.is_none() {
                            rep.zero_blocks += 1;
                        }
                        i += 1;
                        continue;
                    }
                    let mut j = i + 1;
                    while j < *n && copy(j)? {
                        j += 1;
                    }
                    let (seg, off, rec_len, rec) =
                        w.append_data(*root, first + i, &buf[i as usize * BS..j as usize * BS])?;
                    {
                        let mut st = self.state.write();
                        apply(&self.index(), &mut st, seg, off, rec_len, &rec)?;
                    }
                    rep.blocks_copied += j - i;
                    rep.bytes_copied += (j - i) * BLOCK_SIZE;
                    i = j;
                }
            }
            return Ok(());
        }
    }

    /// Finishes an interrupted flatten whose `SetBase` record is in the log:
    /// removes the clone's reference in the base named by the marker.
    fn drop_clone_ref_from_marker(&self, marker: &str) -> Result<()> {
        let f = self.backend.open_read(marker)?;
        let mut b = vec![0u8; f.len()?.min(8192) as usize];
        f.read_exact_at(0, &mut b)?;
        let text = String::from_utf8_lossy(&b).into_owned();
        let base = text.lines().find_map(|l| l.strip_prefix("base=")).map(str::to_string);
        let name = self.uri.without_snapshot().to_string();
        match base {
            Some(u) => remove_clone_refs(&VolumeUri::parse(&u)?, &name)?,
            // The marker is whole before the base is dropped, so this is
            // not the flatten's doing; a leftover reference, if any, is
            // harmless but keeps the base snapshot from being deleted.
            None => tracing::warn!("{name}: ignoring an unreadable flatten marker {marker}"),
        }
        self.backend.delete(marker)
    }
}

/// Removes every reference to clone `child` from the `clones/` directory of
/// the volume at `base` (a base that is gone has none left to remove).
fn remove_clone_refs(base: &VolumeUri, child: &str) -> Result<()> {
    let b = backend::for_uri(base)?;
    for (_, c, path) in read_clone_refs(&*b, &base.path)? {
        if c == child {
            match b.delete(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}
