//! Space accounting per view (`Volume::du`, like `rbd du`), and the
//! machinery `flatten` shares with it: which views read which block
//! version.
//!
//! A *view* is the head or a snapshot. A *block version* is one data entry
//! of one timeline: (timeline, block). View `V` reads version `(t, b)` when
//! `t` is on `V`'s chain (its timeline, then each parent) and no timeline
//! nearer to `V` on that chain maps `b` (data or zero). Then:
//!
//! - a version is *exclusive* to `V` when `V` is its only reader, *shared*
//!   when two or more views read it, and *unread* when none does (a hidden
//!   timeline kept for two branches that both overwrote the block);
//! - a clone's view reads block `b` *from its base* when no timeline of its
//!   chain maps `b` and the base snapshot reads data there.
//!
//! Counting readers without visiting every view: timelines form a forest;
//! numbered in depth-first order, each timeline's subtree is an interval of
//! numbers. The timelines mapping a block nest as intervals, and the
//! readers of one of them are the views in its interval minus those in the
//! intervals of the mappers nested directly inside it: a few binary
//! searches per mapped block, whatever the number of views.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

/// Blocks examined per step: bounds memory whatever the volume's size.
pub(super) const WINDOW: u64 = 1 << 16;

/// One view in a `du` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuView {
    /// Snapshot name, or None for the head.
    pub snapshot: Option<String>,
    /// Snapshot id (None for the head).
    pub snapshot_id: Option<u64>,
    /// Virtual size of the view.
    pub provisioned_bytes: u64,
    /// Bytes of block versions no other view reads.
    pub exclusive_bytes: u64,
    /// Bytes of block versions this view reads that other views read too.
    pub shared_bytes: u64,
    /// Bytes this view still reads from the clone's base (0 without a base).
    pub base_bytes: u64,
}

/// What `Volume::du` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DuReport {
    /// The volume (without `%snapshot`).
    pub uri: String,
    /// Snapshots oldest first, then the head.
    pub views: Vec<DuView>,
    /// Sum of the views' virtual sizes.
    pub provisioned_bytes: u64,
    /// Bytes of block versions read by exactly one view (sum of the views' exclusive bytes).
    pub exclusive_bytes: u64,
    /// Bytes of block versions read by two or more views, each counted once.
    pub shared_bytes: u64,
    /// Bytes of block versions still mapped that no view reads.
    pub unread_bytes: u64,
    /// Base snapshot (`URI%snap`) of a clone.
    pub base: Option<String>,
    /// Bytes of distinct base blocks that some view still reads from the base.
    pub base_bytes: u64,
    /// Bytes of segment files, retired ones (awaiting deletion) included.
    pub log_bytes: u64,
    /// Bytes of blocks some timeline maps (`exclusive + shared + unread`).
    pub live_bytes: u64,
    /// The volume directory's files by kind (`files.total` agrees with
    /// `du -sb`).
    pub files: DirSpace,
}

/// Ranges of view positions (indexes into `Tree::vorder`).
pub(super) type Positions = Vec<(usize, usize)>;

/// The timeline forest numbered in depth-first order, with the views'
/// positions in that order.
pub(super) struct Tree {
    span: HashMap<u64, (u32, u32)>,
    /// Roots with their spans.
    pub(super) roots: Vec<(u64, u32, u32)>,
    /// DFS numbers of the views' timelines, sorted.
    vt: Vec<u32>,
    /// View index at each position of `vt`.
    pub(super) vorder: Vec<usize>,
    n: u32,
    /// (timeline, parent) of every timeline: what the numbering was made from.
    pub(super) shape: Vec<(u64, Option<u64>)>,
}

impl Tree {
    /// The forest of `st` with `views` (timelines; a timeline may appear once per view).
    pub(super) fn new(st: &VolState, views: &[u64]) -> Tree {
        let mut kids: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut roots = Vec::new();
        for (id, t) in &st.timelines {
            match t.parent.filter(|p| st.timelines.contains_key(p)) {
                Some(p) => kids.entry(p).or_default().push(*id),
                None => roots.push(*id),
            }
        }
        let mut span = HashMap::new();
        let mut n = 0u32;
        let mut root_spans = Vec::new();
        for r in roots {
            // Iterative DFS: (timeline, children visited?).
            let mut stack = vec![(r, false)];
            let mut open: HashMap<u64, u32> = HashMap::new();
            while let Some((t, done)) = stack.pop() {
                if done {
                    span.insert(t, (open[&t], n));
                    continue;
                }
                open.insert(t, n);
                n += 1;
                stack.push((t, true));
                if let Some(c) = kids.get(&t) {
                    for k in c.iter().rev() {
                        stack.push((*k, false));
                    }
                }
            }
            let (a, b) = span[&r];
            root_spans.push((r, a, b));
        }
        let mut pos: Vec<(u32, usize)> = views
            .iter()
            .enumerate()
            .filter_map(|(i, t)| span.get(t).map(|s| (s.0, i)))
            .collect();
        pos.sort_unstable();
        Tree {
            span,
            roots: root_spans,
            vt: pos.iter().map(|p| p.0).collect(),
            vorder: pos.iter().map(|p| p.1).collect(),
            n,
            shape: st.timelines.iter().map(|(id, t)| (*id, t.parent)).collect(),
        }
    }

    fn pp(&self, x: u32) -> usize {
        self.vt.partition_point(|v| *v < x)
    }

    /// View positions (ranges of `vorder`) in `[lo, hi)` outside `inner`
    /// (sorted, disjoint spans inside it).
    fn gaps(&self, lo: u32, hi: u32, inner: &[(u32, u32)], out: &mut Vec<(usize, usize)>) {
        let mut push = |a: u32, b: u32| {
            let (x, y) = (self.pp(a), self.pp(b));
            if y > x {
                out.push((x, y));
            }
        };
        let mut cur = lo;
        for &(a, b) in inner {
            if a > cur {
                push(cur, a);
            }
            cur = cur.max(b);
        }
        if hi > cur {
            push(cur, hi);
        }
    }

    /// For the timelines mapping one block: the views reading each one's
    /// entry, and the views reading through to the base, as ranges of view
    /// positions.
    pub(super) fn readers(&self, mappers: &[u64]) -> (Vec<Positions>, Positions) {
        let mut iv: Vec<(u32, u32, usize)> = mappers
            .iter()
            .enumerate()
            .filter_map(|(i, t)| self.span.get(t).map(|s| (s.0, s.1, i)))
            .collect();
        iv.sort_unstable();
        let mut inner: Vec<Vec<(u32, u32)>> = vec![Vec::new(); mappers.len()];
        let mut top = Vec::new();
        let mut stack: Vec<(u32, usize)> = Vec::new();
        for &(a, b, i) in &iv {
            while stack.last().is_some_and(|(end, _)| a >= *end) {
                stack.pop();
            }
            match stack.last() {
                Some(&(_, p)) => inner[p].push((a, b)),
                None => top.push((a, b)),
            }
            stack.push((b, i));
        }
        let mut per = vec![Vec::new(); mappers.len()];
        for &(a, b, i) in &iv {
            self.gaps(a, b, &inner[i], &mut per[i]);
        }
        let mut base = Vec::new();
        self.gaps(0, self.n, &top, &mut base);
        (per, base)
    }

    /// Roots of the views at positions `ranges`.
    pub(super) fn roots_of(&self, ranges: &[(usize, usize)]) -> Vec<u64> {
        let mut out = Vec::new();
        for &(r, a, b) in &self.roots {
            let (rx, ry) = (self.pp(a), self.pp(b));
            if ranges.iter().any(|&(x, y)| x.max(rx) < y.min(ry)) {
                out.push(r);
            }
        }
        out
    }
}

fn count(ranges: &[(usize, usize)]) -> usize {
    ranges.iter().map(|(a, b)| b - a).sum()
}

/// Adds `v` to the views at `ranges` in a difference array over positions.
fn add(diff: &mut [i64], ranges: &[(usize, usize)], v: i64) {
    for &(a, b) in ranges {
        diff[a] += v;
        diff[b] -= v;
    }
}

impl Volume {
    /// The timeline a view of this volume reads (the snapshot's for a
    /// `vol%snap` view, else the head).
    fn view_timeline(&self, st: &VolState) -> u64 {
        self.view.map(|v| v.0).unwrap_or(st.head)
    }

    /// First block at or after `from` that this view's chain, or its base,
    /// maps.
    pub(super) fn view_next_mapped(&self, from: u64) -> Result<Option<u64>> {
        let chain = {
            let st = self.state.read();
            st.chain(self.view_timeline(&st))
        };
        let mut best = self.next_mapped_in(&chain, from)?;
        if let Some(b) = self.live_base() {
            let bb = b.size().div_ceil(BLOCK_SIZE);
            if from < bb {
                if let Some(x) = b.view_next_mapped(from)?.filter(|x| *x < bb) {
                    best = Some(best.map_or(x, |y: u64| y.min(x)));
                }
            }
        }
        Ok(best)
    }

    /// First block at or after `from` mapped by any of `tls`.
    pub(super) fn next_mapped_in(&self, tls: &[u64], from: u64) -> Result<Option<u64>> {
        let mut best: Option<u64> = None;
        for t in tls {
            if let Some(r) = self.index().range(*t, from, u64::MAX).next() {
                let (b, _) = r?;
                best = Some(best.map_or(b, |x| x.min(b)));
            }
        }
        Ok(best)
    }

    /// Blocks in `[from, to)` this view reads as data (from its own chain
    /// or, through it, from its base).
    pub(super) fn view_data_blocks(&self, from: u64, to: u64, out: &mut BTreeSet<u64>) -> Result<()> {
        let chain = {
            let st = self.state.read();
            st.chain(self.view_timeline(&st))
        };
        let mut seen: BTreeMap<u64, bool> = BTreeMap::new();
        for t in &chain {
            for r in self.index().range(*t, from, to) {
                let (b, e) = r?;
                seen.entry(b).or_insert(matches!(e, Entry::Data { .. }));
            }
        }
        if let Some(base) = self.live_base() {
            let bb = base.size().div_ceil(BLOCK_SIZE);
            if from < bb {
                let mut sub = BTreeSet::new();
                base.view_data_blocks(from, to.min(bb), &mut sub)?;
                out.extend(sub.into_iter().filter(|b| !seen.contains_key(b)));
            }
        }
        out.extend(seen.into_iter().filter(|(_, d)| *d).map(|(b, _)| b));
        Ok(())
    }

    /// Entries of `tls` in `[from, to)`, by block.
    pub(super) fn entries_in(&self, tls: &[u64], from: u64, to: u64) -> Result<BTreeMap<u64, Vec<(u64, Entry)>>> {
        let mut m: BTreeMap<u64, Vec<(u64, Entry)>> = BTreeMap::new();
        for t in tls {
            for r in self.index().range(*t, from, to) {
                let (b, e) = r?;
                m.entry(b).or_default().push((*t, e));
            }
        }
        Ok(m)
    }

    /// The next window to examine at or after `from`: where this volume's
    /// timelines or its base first map something. None when nothing is left.
    pub(super) fn next_window(&self, tls: &[u64], from: u64) -> Result<Option<u64>> {
        let own = self.next_mapped_in(tls, from)?;
        let base = match self.live_base() {
            Some(b) if from < b.size().div_ceil(BLOCK_SIZE) => b.view_next_mapped(from)?,
            _ => None,
        };
        Ok(match (own, base) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Blocks in `[from, to)` the base snapshot reads as data (none without a base).
    pub(super) fn base_data_in(&self, from: u64, to: u64) -> Result<BTreeSet<u64>> {
        let mut out = BTreeSet::new();
        if let Some(b) = self.live_base() {
            let bb = b.size().div_ceil(BLOCK_SIZE);
            if from < bb {
                b.view_data_blocks(from, to.min(bb), &mut out)?;
            }
        }
        Ok(out)
    }

    /// Space use per snapshot and for the head (see the module
    /// documentation for the definitions). Works on read-only opens too;
    /// costs a scan of the block map (and of the base's, for a clone).
    pub fn du(&self) -> Result<DuReport> {
        let (tls, views, mut out, tree) = {
            let st = self.state.read();
            let mut views: Vec<u64> = Vec::new();
            let mut out = Vec::new();
            for s in st.snapshots.values() {
                views.push(s.timeline);
                out.push(DuView {
                    snapshot: Some(s.name.clone()),
                    snapshot_id: Some(s.id),
                    provisioned_bytes: s.virtual_size,
                    exclusive_bytes: 0,
                    shared_bytes: 0,
                    base_bytes: 0,
                });
            }
            views.push(st.head);
            out.push(DuView {
                snapshot: None,
                snapshot_id: None,
                provisioned_bytes: st.virtual_size,
                exclusive_bytes: 0,
                shared_bytes: 0,
                base_bytes: 0,
            });
            let tls: Vec<u64> = st.timelines.keys().copied().collect();
            let tree = Tree::new(&st, &views);
            (tls, views, out, tree)
        };
        let nv = views.len();
        let mut shared_diff = vec![0i64; nv + 1];
        let mut base_diff = vec![0i64; nv + 1];
        let mut exclusive = vec![0u64; nv];
        let mut rep = DuReport { uri: self.uri.without_snapshot().to_string(), ..Default::default() };
        let mut w = 0u64;
        while let Some(start) = self.next_window(&tls, w)? {
            let end = start.saturating_add(WINDOW);
            let entries = self.entries_in(&tls, start, end)?;
            let base = self.base_data_in(start, end)?;
            let blocks: BTreeSet<u64> = entries.keys().copied().chain(base.iter().copied()).collect();
            for b in blocks {
                let mappers = entries.get(&b).map(Vec::as_slice).unwrap_or(&[]);
                let ids: Vec<u64> = mappers.iter().map(|(t, _)| *t).collect();
                let (per, through) = tree.readers(&ids);
                for ((_, e), ranges) in mappers.iter().zip(&per) {
                    if !matches!(e, Entry::Data { .. }) {
                        continue;
                    }
                    match count(ranges) {
                        0 => rep.unread_bytes += BLOCK_SIZE,
                        1 => exclusive[tree.vorder[ranges[0].0]] += BLOCK_SIZE,
                        _ => {
                            rep.shared_bytes += BLOCK_SIZE;
                            add(&mut shared_diff, ranges, BLOCK_SIZE as i64);
                        }
                    }
                }
                if base.contains(&b) && count(&through) > 0 {
                    rep.base_bytes += BLOCK_SIZE;
                    add(&mut base_diff, &through, BLOCK_SIZE as i64);
                }
            }
            if end == u64::MAX {
                break;
            }
            w = end;
        }
        let (mut sh, mut bs) = (0i64, 0i64);
        for p in 0..tree.vorder.len() {
            sh += shared_diff[p];
            bs += base_diff[p];
            let v = &mut out[tree.vorder[p]];
            v.shared_bytes = sh as u64;
            v.base_bytes = bs as u64;
        }
        for (v, e) in out.iter_mut().zip(&exclusive) {
            v.exclusive_bytes = *e;
        }
        rep.exclusive_bytes = exclusive.iter().sum();
        rep.provisioned_bytes = out.iter().map(|v| v.provisioned_bytes).sum();
        rep.views = out;
        let st = self.state.read();
        rep.base = st.base.as_ref().map(|b| format!("{}%{}", b.uri, b.snapshot));
        rep.live_bytes = st.seg_live.values().sum();
        drop(st);
        rep.files = self.dir_space()?;
        rep.log_bytes = rep.files.segments + rep.files.retired;
        Ok(rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Timeline;

    fn tl(st: &mut VolState, id: u64, parent: Option<u64>) {
        st.timelines.insert(id, Timeline { parent, ..Default::default() });
    }

    /// Property: reader ranges match a direct walk of each view's chain.
    #[test]
    fn readers_match_chain_walks() {
        // 1 -> 2 -> {3, 4}; 4 -> 5; views: 2, 3, 4, 5, 5 (two on one timeline).
        let mut st = VolState::default();
        tl(&mut st, 1, None);
        tl(&mut st, 2, Some(1));
        tl(&mut st, 3, Some(2));
        tl(&mut st, 4, Some(2));
        tl(&mut st, 5, Some(4));
        let views = [2u64, 3, 4, 5, 5];
        let tree = Tree::new(&st, &views);
        let all = [1u64, 2, 3, 4, 5];
        for mask in 0u32..32 {
            let mappers: Vec<u64> = all.iter().copied().filter(|t| mask & (1 << (t - 1)) != 0).collect();
            let (per, base) = tree.readers(&mappers);
            let expand = |r: &[(usize, usize)]| {
                let mut v: Vec<usize> = r.iter().flat_map(|(a, b)| (*a..*b).map(|p| tree.vorder[p])).collect();
                v.sort_unstable();
                v
            };
            for (i, m) in mappers.iter().enumerate() {
                let want: Vec<usize> = (0..views.len())
                    .filter(|v| st.chain(views[*v]).into_iter().find(|t| mappers.contains(t)) == Some(*m))
                    .collect();
                assert_eq!(expand(&per[i]), want, "mask {mask:b} mapper {m}");
            }
            let want: Vec<usize> = (0..views.len())
                .filter(|v| st.chain(views[*v]).into_iter().all(|t| !mappers.contains(&t)))
                .collect();
            assert_eq!(expand(&base), want, "mask {mask:b} base");
            assert_eq!(tree.roots_of(&base), if want.is_empty() { vec![] } else { vec![1] });
        }
    }
}
