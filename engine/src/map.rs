//! The block map in memory: extents per timeline.
//!
//! An extent is a run of consecutive blocks of one timeline that either read
//! as zeros or are stored back to back in one segment (as one `Data` record
//! writes them). Reads and writes consult this map; sled (index.rs) keeps a
//! persistent copy, fed in batches, and checkpoints stream it out.
//!
//! Cost of one extent (x86-64): a 16-byte key plus a 48-byte `Extent`, in a
//! B-tree whose nodes hold up to 11 of them: about 100 bytes with the node
//! overhead (`EXTENT_BYTES`). A data extent of more than one block also owns
//! its checksums (4 bytes a block, shared between the pieces of a split
//! extent). A volume written in 1 MiB records costs about 4.4 bytes per
//! block; one filled by random 4 KiB writes about 100 bytes per block, so
//! 1 TiB of it would need ~25 GiB. The map is kept in pages
//! (`PAGE_BLOCKS`) so that index.rs can hold it within a budget and keep
//! the rest in sled only (docs/design.md §3).

use crate::index::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Checksums of an extent's blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Crcs {
    /// A one-block extent's checksum.
    One(u32),
    /// Blocks `start..` of a shared array (the record's, or a loaded run's).
    Shared { all: Arc<[u32]>, start: u32 },
}

/// Where an extent's blocks are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Loc {
    Zero,
    Data { seg: u64, off: u32, crcs: Crcs },
}

/// A run of `count` blocks: zeros, or data stored back to back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    count: u32,
    loc: Loc,
}

const BS: u64 = crate::format::BLOCK_SIZE;

impl Extent {
    /// `count` blocks that read as zeros.
    pub fn zero(count: u32) -> Extent {
        Extent {
            count,
            loc: Loc::Zero,
        }
    }

    /// Blocks stored back to back in segment `seg` from byte `off`, with
    /// checksums `crcs` (one per block, at least one).
    pub fn data(seg: u64, off: u32, crcs: &[u32]) -> Extent {
        debug_assert!(!crcs.is_empty());
        let loc = match crcs {
            [one] => Loc::Data {
                seg,
                off,
                crcs: Crcs::One(*one),
            },
            _ => Loc::Data {
                seg,
                off,
                crcs: Crcs::Shared {
                    all: crcs.into(),
                    start: 0,
                },
            },
        };
        Extent {
            count: crcs.len() as u32,
            loc,
        }
    }

    /// A one-block extent.
    pub fn from_entry(e: Entry) -> Extent {
        match e {
            Entry::Zero => Extent::zero(1),
            Entry::Data { seg, off, crc } => Extent {
                count: 1,
                loc: Loc::Data {
                    seg,
                    off,
                    crcs: Crcs::One(crc),
                },
            },
        }
    }

    /// Number of blocks.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The segment holding the data (None: zeros).
    pub fn segment(&self) -> Option<u64> {
        match self.loc {
            Loc::Zero => None,
            Loc::Data { seg, .. } => Some(seg),
        }
    }

    /// Points the extent where `m` moved its data, if it did; returns
    /// whether it did.
    pub fn relocate(&mut self, m: &crate::log::SegMove) -> bool {
        match &mut self.loc {
            Loc::Data { seg, off, .. } => match m.apply(*seg, *off as u64) {
                Some((s, o)) => {
                    *seg = s;
                    *off = o as u32;
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// Block `i`'s entry.
    pub fn entry(&self, i: u32) -> Entry {
        debug_assert!(i < self.count);
        match &self.loc {
            Loc::Zero => Entry::Zero,
            Loc::Data { seg, off, crcs } => Entry::Data {
                seg: *seg,
                off: off + i * BS as u32,
                crc: match crcs {
                    Crcs::One(c) => *c,
                    Crcs::Shared { all, start } => all[(start + i) as usize],
                },
            },
        }
    }

    /// Blocks `[skip, skip + count)` of this extent.
    pub fn slice(&self, skip: u32, count: u32) -> Extent {
        debug_assert!(count > 0 && skip + count <= self.count);
        let loc = match &self.loc {
            Loc::Zero => Loc::Zero,
            Loc::Data { seg, off, crcs } => Loc::Data {
                seg: *seg,
                off: off + skip * BS as u32,
                crcs: match crcs {
                    _ if count == 1 => Crcs::One(self.crc(skip)),
                    Crcs::One(c) => Crcs::One(*c),
                    Crcs::Shared { all, start } => Crcs::Shared {
                        all: all.clone(),
                        start: start + skip,
                    },
                },
            },
        };
        Extent { count, loc }
    }

    fn crc(&self, i: u32) -> u32 {
        match self.entry(i) {
            Entry::Data { crc, .. } => crc,
            Entry::Zero => 0,
        }
    }

    /// Whether block 0 of `next` directly follows this extent's last block
    /// in the log (or both are zeros), so the two can be one extent.
    fn continues_with(&self, next: &Extent) -> bool {
        match (&self.loc, &next.loc) {
            (Loc::Zero, Loc::Zero) => true,
            (
                Loc::Data { seg, off, .. },
                Loc::Data {
                    seg: s2, off: o2, ..
                },
            ) => seg == s2 && *off as u64 + self.count as u64 * BS == *o2 as u64,
            _ => false,
        }
    }

    /// This extent followed by `next` (which `continues_with` it).
    fn joined(&self, next: &Extent) -> Extent {
        let count = self.count + next.count;
        let loc = match (&self.loc, &next.loc) {
            (Loc::Data { seg, off, .. }, Loc::Data { .. }) => {
                let crcs: Vec<u32> = (0..self.count)
                    .map(|i| self.crc(i))
                    .chain((0..next.count).map(|i| next.crc(i)))
                    .collect();
                Loc::Data {
                    seg: *seg,
                    off: *off,
                    crcs: Crcs::Shared {
                        all: crcs.into(),
                        start: 0,
                    },
                }
            }
            _ => Loc::Zero,
        };
        Extent { count, loc }
    }
}

/// Data extents are joined with a neighbour written right before them in
/// the log only up to this many blocks (joining copies the checksums).
const JOIN_LIMIT: u32 = 1024;

/// The map is kept in memory, or only in sled, a page at a time: this many
/// blocks of one timeline (64 MiB of the volume). No extent crosses a page
/// boundary (`insert` and `RunBuilder` never join across one, and callers
/// split what they insert: `split_at_pages`), so a page's extents are
/// exactly the keys in its range.
pub const PAGE_BLOCKS: u64 = 16384;

/// The page of block `b`.
pub fn page_of(b: u64) -> u64 {
    b / PAGE_BLOCKS
}

/// `e` at `first`, cut at page boundaries: (first block, piece), in order.
pub fn split_at_pages(first: u64, e: Extent) -> Vec<(u64, Extent)> {
    let end = first + e.count as u64;
    if page_of(first) == page_of(end - 1) {
        return vec![(first, e)];
    }
    let mut out = Vec::new();
    let mut at = first;
    while at < end {
        let stop = ((page_of(at) + 1) * PAGE_BLOCKS).min(end);
        out.push((at, e.slice((at - first) as u32, (stop - at) as u32)));
        at = stop;
    }
    out
}

/// What one extent costs in memory, apart from its checksums: a 16-byte
/// key and a 48-byte value in a B-tree, with node overhead (measured: a
/// million single-block extents inserted in random order take 99 bytes
/// each in the process's RSS).
pub const EXTENT_BYTES: u64 = 100;

impl Extent {
    /// Memory this extent costs in an `ExtentMap`: `EXTENT_BYTES`, plus 4
    /// bytes per block of shared checksums (counted for every piece of a
    /// split extent, so an over-estimate after splits).
    pub fn cost(&self) -> u64 {
        match &self.loc {
            Loc::Data { crcs: Crcs::Shared { .. }, .. } => EXTENT_BYTES + 4 * self.count as u64,
            _ => EXTENT_BYTES,
        }
    }
}

/// Every extent of every timeline, keyed by (timeline, first block).
#[derive(Debug, Default, Clone)]
pub struct ExtentMap {
    map: BTreeMap<(u64, u64), Extent>,
    /// Sum of `Extent::cost` of every extent.
    bytes: u64,
}

impl ExtentMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of extents.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no extents.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// What the extents cost in memory (`Extent::cost`), in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    /// `BTreeMap::insert`, keeping `bytes` right.
    fn ins(&mut self, k: (u64, u64), e: Extent) {
        self.bytes += e.cost();
        if let Some(old) = self.map.insert(k, e) {
            self.bytes -= old.cost();
        }
    }

    /// `BTreeMap::remove`, keeping `bytes` right.
    fn rem(&mut self, k: (u64, u64)) -> Option<Extent> {
        let e = self.map.remove(&k)?;
        self.bytes -= e.cost();
        Some(e)
    }

    /// Points every extent whose data `m` moved at its new place (the
    /// cost does not change). Returns their keys.
    pub fn relocate(&mut self, m: &crate::log::SegMove) -> Vec<(u64, u64)> {
        self.map
            .iter_mut()
            .filter_map(|(k, e)| e.relocate(m).then_some(*k))
            .collect()
    }

    /// The extent of `tl` holding block `b`: its first block and the extent.
    pub fn covering(&self, tl: u64, b: u64) -> Option<(u64, &Extent)> {
        let ((t, first), e) = self.map.range(..=(tl, b)).next_back()?;
        (*t == tl && b - first < e.count as u64).then_some((*first, e))
    }

    /// Block `b` of timeline `tl`.
    pub fn get(&self, tl: u64, b: u64) -> Option<Entry> {
        self.covering(tl, b)
            .map(|(first, e)| e.entry((b - first) as u32))
    }

    /// Pieces of `tl`'s extents inside `[from, to)`, clipped to it, in block
    /// order: (first block, extent).
    pub fn range(&self, tl: u64, from: u64, to: u64) -> impl Iterator<Item = (u64, Extent)> + '_ {
        // An empty range has no head: `slice` wants at least one block.
        let before = self.covering(tl, from).filter(|(first, _)| *first < from && from < to);
        let head = before.map(|(first, e)| {
            let skip = (from - first) as u32;
            let n = (e.count - skip).min((to - from).min(u32::MAX as u64) as u32);
            (from, e.slice(skip, n))
        });
        let rest = self
            .map
            .range((tl, from)..(tl, to.max(from)))
            .map(move |((_, first), e)| {
                let n = ((to - first).min(e.count as u64)) as u32;
                (
                    *first,
                    if n == e.count {
                        e.clone()
                    } else {
                        e.slice(0, n)
                    },
                )
            });
        head.into_iter().chain(rest)
    }

    /// Raw extents of `tl` whose key lies in `[from, to)` (not clipped).
    pub fn keys_in(
        &self,
        tl: u64,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = (u64, &Extent)> + '_ {
        self.map
            .range((tl, from)..(tl, to.max(from)))
            .map(|((_, f), e)| (*f, e))
    }

    /// Every extent in key order.
    pub fn iter(&self) -> impl Iterator<Item = ((u64, u64), &Extent)> + '_ {
        self.map.iter().map(|(k, e)| (*k, e))
    }

    /// Extents whose key is `k` or after, in key order.
    pub fn iter_from(&self, k: (u64, u64)) -> impl Iterator<Item = ((u64, u64), &Extent)> + '_ {
        self.map.range(k..).map(|(k, e)| (*k, e))
    }

    /// The extent stored under key (tl, first), unclipped.
    pub fn at(&self, tl: u64, first: u64) -> Option<&Extent> {
        self.map.get(&(tl, first))
    }

    /// Makes `[first, first + count)` of `tl` unmapped. `removed` is told
    /// each piece that was mapped (first block, extent); `touched` each key
    /// whose extent changed or appeared.
    pub fn punch(
        &mut self,
        tl: u64,
        first: u64,
        count: u64,
        removed: &mut dyn FnMut(u64, &Extent),
        touched: &mut dyn FnMut((u64, u64)),
    ) {
        if count == 0 {
            return;
        }
        let end = first.saturating_add(count);
        // An extent starting before `first` and reaching into the range.
        if let Some(((t, f0), e)) = self.map.range(..(tl, first)).next_back() {
            let (t, f0) = (*t, *f0);
            let e_end = f0 + e.count as u64;
            if t == tl && e_end > first {
                let e = e.clone();
                let left = (first - f0) as u32;
                let mid_end = e_end.min(end);
                removed(first, &e.slice(left, (mid_end - first) as u32));
                self.ins((tl, f0), e.slice(0, left));
                touched((tl, f0));
                if e_end > end {
                    let skip = (end - f0) as u32;
                    self.ins((tl, end), e.slice(skip, e.count - skip));
                    touched((tl, end));
                    return;
                }
            }
        }
        let keys: Vec<u64> = self
            .map
            .range((tl, first)..(tl, end))
            .map(|((_, f), _)| *f)
            .collect();
        for f in keys {
            let e = self.rem((tl, f)).expect("listed");
            touched((tl, f));
            let e_end = f + e.count as u64;
            if e_end <= end {
                removed(f, &e);
            } else {
                let n = (end - f) as u32;
                removed(f, &e.slice(0, n));
                self.ins((tl, end), e.slice(n, e.count - n));
                touched((tl, end));
            }
        }
    }

    /// Maps `[first, first + e.count())` of `tl` to `e`, replacing what was
    /// there (reported to `removed`). Joins `e` to the extent before it when
    /// that one ends right where `e` starts, in the volume and in the log.
    pub fn insert(
        &mut self,
        tl: u64,
        first: u64,
        e: Extent,
        removed: &mut dyn FnMut(u64, &Extent),
        touched: &mut dyn FnMut((u64, u64)),
    ) {
        self.punch(tl, first, e.count as u64, removed, touched);
        if first > 0 {
            if let Some(((t, f0), prev)) = self.map.range(..(tl, first)).next_back() {
                let (t, f0) = (*t, *f0);
                let small = matches!(e.loc, Loc::Zero) || prev.count + e.count <= JOIN_LIMIT;
                let one_page = page_of(f0) == page_of(first + e.count as u64 - 1);
                if t == tl
                    && f0 + prev.count as u64 == first
                    && small
                    && one_page
                    && prev.continues_with(&e)
                {
                    let joined = prev.joined(&e);
                    self.ins((tl, f0), joined);
                    touched((tl, f0));
                    return;
                }
            }
        }
        self.ins((tl, first), e);
        touched((tl, first));
    }

    /// Removes and returns every extent of `tl`.
    pub fn take_timeline(&mut self, tl: u64) -> Vec<(u64, Extent)> {
        let keys: Vec<u64> = self
            .map
            .range((tl, 0)..=(tl, u64::MAX))
            .map(|((_, f), _)| *f)
            .collect();
        keys.into_iter()
            .map(|f| (f, self.rem((tl, f)).expect("listed")))
            .collect()
    }

    /// Removes and returns the extents of `tl` whose key is in `[from, to)`.
    pub fn take_range(&mut self, tl: u64, from: u64, to: u64) -> Vec<(u64, Extent)> {
        let keys: Vec<u64> = self
            .map
            .range((tl, from)..(tl, to.max(from)))
            .map(|((_, f), _)| *f)
            .collect();
        keys.into_iter()
            .map(|f| (f, self.rem((tl, f)).expect("listed")))
            .collect()
    }

    /// Stores an extent as it was persisted (loading; no joining, no checks).
    pub fn put(&mut self, tl: u64, first: u64, e: Extent) {
        self.ins((tl, first), e);
    }
}

/// Encoding of an extent as a sled value:
/// `count:u32 off:u32 seg:u64 crc:u32 × count` (zeros: seg = u64::MAX, no crcs).
pub fn encode_extent(e: &Extent) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + 4 * e.count as usize);
    v.extend_from_slice(&e.count.to_le_bytes());
    match &e.loc {
        Loc::Zero => {
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(&u64::MAX.to_le_bytes());
        }
        Loc::Data { seg, off, .. } => {
            v.extend_from_slice(&off.to_le_bytes());
            v.extend_from_slice(&seg.to_le_bytes());
            for i in 0..e.count {
                v.extend_from_slice(&e.crc(i).to_le_bytes());
            }
        }
    }
    v
}

/// Decodes `encode_extent`'s bytes.
pub fn decode_extent(v: &[u8]) -> Option<Extent> {
    if v.len() < 16 {
        return None;
    }
    let count = u32::from_le_bytes(v[..4].try_into().ok()?);
    let off = u32::from_le_bytes(v[4..8].try_into().ok()?);
    let seg = u64::from_le_bytes(v[8..16].try_into().ok()?);
    if count == 0 {
        return None;
    }
    if seg == u64::MAX {
        return (v.len() == 16).then(|| Extent::zero(count));
    }
    if v.len() != 16 + 4 * count as usize {
        return None;
    }
    let crcs: Vec<u32> = v[16..]
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
        .collect();
    Some(Extent::data(seg, off, &crcs))
}

/// Builds extents from per-block entries in key order (a checkpoint being
/// loaded), joining runs that are contiguous in the volume and the log.
#[derive(Default)]
pub struct RunBuilder {
    run: Option<(u64, u64, Entry, Vec<u32>, u32)>, // tl, first, first entry, crcs, count
}

impl RunBuilder {
    /// Adds block `b` of `tl`; returns a finished extent when the run ends.
    pub fn push(&mut self, tl: u64, b: u64, e: Entry) -> Option<(u64, u64, Extent)> {
        if let Some((rtl, first, e0, crcs, count)) = &mut self.run {
            let next = *first + *count as u64;
            let fits = *rtl == tl && next == b && *count < JOIN_LIMIT && b % PAGE_BLOCKS != 0;
            let cont = match (*e0, e) {
                (Entry::Zero, Entry::Zero) => true,
                (
                    Entry::Data { seg, off, .. },
                    Entry::Data {
                        seg: s2,
                        off: o2,
                        crc,
                    },
                ) => {
                    let ok = seg == s2 && off as u64 + *count as u64 * BS == o2 as u64;
                    if ok && fits {
                        crcs.push(crc);
                    }
                    ok
                }
                _ => false,
            };
            if fits && cont {
                *count += 1;
                return None;
            }
        }
        let done = self.finish();
        let crcs = match e {
            Entry::Data { crc, .. } => vec![crc],
            Entry::Zero => Vec::new(),
        };
        self.run = Some((tl, b, e, crcs, 1));
        done
    }

    /// Ends the current run.
    pub fn finish(&mut self) -> Option<(u64, u64, Extent)> {
        let (tl, first, e0, crcs, count) = self.run.take()?;
        let ext = match e0 {
            Entry::Zero => Extent::zero(count),
            Entry::Data { seg, off, .. } => Extent::data(seg, off, &crcs),
        };
        Some((tl, first, ext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A per-block model of the map, for comparison.
    type Model = BTreeMap<(u64, u64), Entry>;

    fn entries(m: &ExtentMap) -> Model {
        let mut out = Model::new();
        for ((tl, first), e) in m.iter() {
            for i in 0..e.count() {
                assert!(
                    out.insert((tl, first + i as u64), e.entry(i)).is_none(),
                    "overlapping extents"
                );
            }
        }
        out
    }

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Random inserts and punches on the extent map and a per-block model
    /// give the same map, and `removed` reports exactly the blocks that
    /// were mapped before.
    #[test]
    fn matches_a_per_block_model() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut m = ExtentMap::new();
        let mut model = Model::new();
        let mut next_off = 0u32;
        for _ in 0..20_000 {
            let tl = 1 + rng(&mut seed) % 3;
            let first = rng(&mut seed) % 300;
            let count = 1 + rng(&mut seed) % 20;
            let mut gone = Model::new();
            let mut removed = |f: u64, e: &Extent| {
                for i in 0..e.count() {
                    gone.insert((tl, f + i as u64), e.entry(i));
                }
            };
            let mut added = Vec::new();
            match rng(&mut seed) % 4 {
                0 => m.punch(tl, first, count, &mut removed, &mut |_| {}),
                1 => {
                    m.insert(
                        tl,
                        first,
                        Extent::zero(count as u32),
                        &mut removed,
                        &mut |_| {},
                    );
                    added = vec![Entry::Zero; count as usize];
                }
                _ => {
                    // Sometimes continue the log right after the last write.
                    if rng(&mut seed) % 2 == 0 {
                        next_off = next_off.wrapping_add(4096 * 7);
                    }
                    let crcs: Vec<u32> = (0..count).map(|_| rng(&mut seed) as u32).collect();
                    m.insert(
                        tl,
                        first,
                        Extent::data(5, next_off, &crcs),
                        &mut removed,
                        &mut |_| {},
                    );
                    added = (0..count as u32)
                        .map(|i| Entry::Data {
                            seg: 5,
                            off: next_off + 4096 * i,
                            crc: crcs[i as usize],
                        })
                        .collect();
                    next_off = next_off.wrapping_add(4096 * count as u32);
                }
            }
            let expect_gone: Model = model
                .range((tl, first)..(tl, first + count))
                .map(|(k, v)| (*k, *v))
                .collect();
            assert_eq!(gone, expect_gone);
            for b in first..first + count {
                model.remove(&(tl, b));
            }
            for (i, e) in added.into_iter().enumerate() {
                model.insert((tl, first + i as u64), e);
            }
            assert_eq!(entries(&m), model);
            let cost: u64 = m.iter().map(|(_, e)| e.cost()).sum();
            assert_eq!(m.bytes(), cost, "bytes follows every change");
        }
        assert!(m.len() < model.len(), "contiguous writes were joined");
    }

    /// `range` returns exactly the clipped pieces inside the range.
    #[test]
    fn range_is_clipped() {
        let mut m = ExtentMap::new();
        m.insert(
            1,
            10,
            Extent::data(3, 0, &[1, 2, 3, 4, 5]),
            &mut |_, _| {},
            &mut |_| {},
        );
        m.insert(1, 20, Extent::zero(5), &mut |_, _| {}, &mut |_| {});
        let r: Vec<(u64, u32)> = m.range(1, 12, 22).map(|(f, e)| (f, e.count())).collect();
        assert_eq!(r, vec![(12, 3), (20, 2)]);
        assert_eq!(
            m.range(1, 12, 22).next().unwrap().1.entry(0),
            Entry::Data {
                seg: 3,
                off: 8192,
                crc: 3
            }
        );
        assert_eq!(m.range(1, 30, 40).count(), 0);
        assert_eq!(m.range(2, 0, 100).count(), 0);
        assert_eq!(m.range(1, 12, 12).count(), 0);
    }

    /// Extents round-trip through their sled encoding, and runs of loaded
    /// entries become one extent.
    #[test]
    fn encoding_and_runs() {
        for e in [
            Extent::zero(7),
            Extent::data(9, 4096, &[1, 2, 3]),
            Extent::data(9, 0, &[8]),
        ] {
            assert_eq!(decode_extent(&encode_extent(&e)), Some(e));
        }
        assert_eq!(decode_extent(&[0; 15]), None);
        let mut b = RunBuilder::default();
        let mut out = Vec::new();
        for i in 0..4u64 {
            out.extend(b.push(
                1,
                i,
                Entry::Data {
                    seg: 2,
                    off: 100 + 4096 * i as u32,
                    crc: i as u32,
                },
            ));
        }
        out.extend(b.push(1, 4, Entry::Zero));
        out.extend(b.push(1, 5, Entry::Zero));
        out.extend(b.push(2, 6, Entry::Zero));
        out.extend(b.finish());
        assert_eq!(
            out,
            vec![
                (1, 0, Extent::data(2, 100, &[0, 1, 2, 3])),
                (1, 4, Extent::zero(2)),
                (2, 6, Extent::zero(1))
            ]
        );
    }
}
