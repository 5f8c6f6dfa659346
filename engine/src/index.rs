//! The block map of an open volume.
//!
//! A read-write opener keeps the whole map in memory as extents
//! (`map::ExtentMap`), which every read and write consults, and a copy of it
//! in sled, fed in batches off the write path (`Index::feed`, at checkpoints
//! and close): tree `extents`, key `timeline:u64 BE | first_block:u64 BE`
//! (big-endian so a timeline's extents sort together and in order), value
//! `map::encode_extent`. A clean close leaves sled equal to the map, so the
//! next open loads it instead of replaying.
//!
//! A read-only opener searches the newest checkpoint in place, with the log
//! after it replayed into an in-memory overlay.
//!
//! Per-block entries (`Entry`, 16 bytes `segment:u64 LE | offset:u32 LE |
//! crc32c:u32 LE`, segment `u64::MAX` for a block that reads as zeros) are
//! what checkpoints store and what the per-block accessors return.
//!
//! The index is a cache of the log: it can always be rebuilt by replay.

use crate::checkpoint::Reader as Checkpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::map::{
    decode_extent, encode_extent, page_of, split_at_pages, Extent, ExtentMap, RunBuilder,
    PAGE_BLOCKS,
};
use crate::state::VolState;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::iter::Peekable;
use std::path::Path;

/// Merges the checkpoint's ordered stream with the overlay's ordered slice;
/// the overlay wins on equal keys, and its `None` hides the key.
struct MergeIter<'a> {
    base: Peekable<RawIter<'a>>,
    over: Peekable<std::vec::IntoIter<([u8; 16], Option<[u8; 16]>)>>,
}

impl Iterator for MergeIter<'_> {
    type Item = Result<RawEntry>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let bk = match self.base.peek() {
                Some(Err(_)) => return self.base.next(),
                Some(Ok((k, _))) => Some(*k),
                None => None,
            };
            let ok = self.over.peek().map(|(k, _)| *k);
            match (bk, ok) {
                (None, None) => return None,
                (Some(_), None) => return self.base.next(),
                (b, Some(o)) if b.is_none_or(|b| o <= b) => {
                    if b == Some(o) {
                        self.base.next();
                    }
                    let (k, v) = self.over.next().expect("peeked");
                    match v {
                        Some(v) => return Some(Ok((k, v))),
                        None => continue,
                    }
                }
                _ => return self.base.next(),
            }
        }
    }
}

/// Where a block lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Data in segment `seg` at byte `off`, with checksum `crc`.
    Data {
        /// Segment number.
        seg: u64,
        /// Byte offset of the block within the segment.
        off: u32,
        /// crc32c of the block.
        crc: u32,
    },
    /// Reads as zeros.
    Zero,
}

const ZERO_SEG: u64 = u64::MAX;

impl Entry {
    /// 16-byte encoding.
    pub fn encode(self) -> [u8; 16] {
        let mut v = [0u8; 16];
        match self {
            Entry::Data { seg, off, crc } => {
                v[..8].copy_from_slice(&seg.to_le_bytes());
                v[8..12].copy_from_slice(&off.to_le_bytes());
                v[12..].copy_from_slice(&crc.to_le_bytes());
            }
            Entry::Zero => v[..8].copy_from_slice(&ZERO_SEG.to_le_bytes()),
        }
        v
    }

    /// Decodes a 16-byte value.
    pub fn decode(v: &[u8]) -> Result<Entry> {
        if v.len() != 16 {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("index value has {} bytes, expected 16", v.len()),
            ));
        }
        let seg = u64::from_le_bytes(v[..8].try_into().expect("8"));
        if seg == ZERO_SEG {
            return Ok(Entry::Zero);
        }
        Ok(Entry::Data {
            seg,
            off: u32::from_le_bytes(v[8..12].try_into().expect("4")),
            crc: u32::from_le_bytes(v[12..].try_into().expect("4")),
        })
    }
}

/// Map key for (timeline, block).
pub fn key(tl: u64, block: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&tl.to_be_bytes());
    k[8..].copy_from_slice(&block.to_be_bytes());
    k
}

fn split_key(k: &[u8]) -> Result<(u64, u64)> {
    if k.len() != 16 {
        return Err(Error::new(ErrorKind::Corrupt, "index key is not 16 bytes"));
    }
    Ok((
        u64::from_be_bytes(k[..8].try_into().expect("8")),
        u64::from_be_bytes(k[8..].try_into().expect("8")),
    ))
}

fn sled_err(what: &str, e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) => Error::io(format!("index: {what}"), io),
        other => Error::new(ErrorKind::Corrupt, format!("index: {what}: {other}")),
    }
}

/// The block map: sled for a writer, or, for read-only openers, the newest
/// checkpoint searched in place with the log tail replayed into a small
/// in-memory overlay (so opening costs nothing per mapped block).
pub struct Index {
    store: Store,
}

enum Store {
    Mem(MemStore),
    Layered(Layered),
}

/// A read-write opener's map: all of it in memory, copied to sled in batches.
struct MemStore {
    db: sled::Db,
    tree: sled::Tree,
    mem: RwLock<Mem>,
    /// Serialises `feed`.
    feeding: Mutex<()>,
}

struct Mem {
    map: ExtentMap,
    /// Keys whose extent changed (or went) since sled last got them, with
    /// the generation of their latest change.
    dirty: BTreeMap<(u64, u64), u64>,
    generation: u64,
    /// Run being assembled while a checkpoint is loaded (`load_raw`).
    loader: RunBuilder,
    /// Pages (timeline, page) whose extents are only in sled: the map in
    /// memory holds none of their keys, and `dirty` none either.
    evicted: BTreeSet<(u64, u64)>,
    /// When each page in memory was last loaded or changed (`clock`), to
    /// choose which to evict.
    used: HashMap<(u64, u64), u64>,
    clock: u64,
    /// Bytes the map may cost (`ExtentMap::bytes`) before pages are
    /// evicted.
    budget: u64,
    /// Where the writer moved segments' bytes (`relocate`), in order:
    /// extents still in sled that name a moved place are pointed at the
    /// new one as their page is loaded.
    moves: Vec<crate::log::SegMove>,
}

impl Default for Mem {
    fn default() -> Self {
        Mem {
            map: ExtentMap::default(),
            dirty: BTreeMap::new(),
            generation: 0,
            loader: RunBuilder::default(),
            evicted: BTreeSet::new(),
            used: HashMap::new(),
            clock: 0,
            budget: u64::MAX,
            moves: Vec::new(),
        }
    }
}

/// The extent sled holds for key (tl, first), decoded.
fn stored_extent(tl: u64, first: u64, v: &[u8]) -> Result<Extent> {
    decode_extent(v).ok_or_else(|| {
        Error::new(
            ErrorKind::Corrupt,
            format!("index: extent ({tl}, {first}) has a bad value"),
        )
    })
}

/// Sled keys of the extents of page `p` of `tl`.
fn page_keys(tl: u64, p: u64) -> std::ops::Range<[u8; 16]> {
    key(tl, p * PAGE_BLOCKS)..key(tl, (p + 1).saturating_mul(PAGE_BLOCKS))
}

impl Mem {
    fn touch(&mut self, k: (u64, u64)) {
        self.generation += 1;
        self.dirty.insert(k, self.generation);
    }

    /// Marks the pages of `[from, to)` of `tl` as just used.
    fn stamp(&mut self, tl: u64, from: u64, to: u64) {
        self.clock += 1;
        if to <= from {
            return;
        }
        let (p0, p1) = (page_of(from), page_of(to - 1));
        if p1 - p0 <= 64 {
            for p in p0..=p1 {
                self.used.insert((tl, p), self.clock);
            }
        } else {
            // A huge range (a whole timeline): the pages in memory only.
            let clock = self.clock;
            for ((t, p), c) in self.used.iter_mut() {
                if *t == tl && (p0..=p1).contains(p) {
                    *c = clock;
                }
            }
        }
    }

    /// Whether every page of `[from, to)` of `tl` is in memory.
    fn resident(&self, tl: u64, from: u64, to: u64) -> bool {
        if self.evicted.is_empty() || to <= from {
            return true;
        }
        self.evicted
            .range((tl, page_of(from))..=(tl, page_of(to - 1)))
            .next()
            .is_none()
    }

    /// Loads the evicted pages of `[from, to)` of `tl` from sled.
    fn load_pages(&mut self, tree: &sled::Tree, tl: u64, from: u64, to: u64) -> Result<()> {
        if self.resident(tl, from, to) {
            return Ok(());
        }
        let pages: Vec<(u64, u64)> = self
            .evicted
            .range((tl, page_of(from))..=(tl, page_of(to - 1)))
            .copied()
            .collect();
        for (t, p) in pages {
            for r in tree.range(page_keys(t, p)) {
                let (k, v) = r.map_err(|e| sled_err("loading a page", e))?;
                let (kt, first) = split_key(&k)?;
                let mut e = stored_extent(kt, first, &v)?;
                let mut moved = false;
                for m in &self.moves {
                    moved |= e.relocate(m);
                }
                if moved {
                    self.touch((kt, first)); // sled gets the new place
                }
                self.map.put(kt, first, e);
            }
            self.evicted.remove(&(t, p));
            self.clock += 1;
            self.used.insert((t, p), self.clock);
        }
        Ok(())
    }

    /// Past the budget, writes the least recently used pages to sled (their
    /// changed extents) and drops them from memory, down to 7/8 of it.
    fn evict(&mut self, tree: &sled::Tree) -> Result<()> {
        self.evict_except(tree, (u64::MAX, u64::MAX))
    }

    /// `evict`, keeping page `keep` (one being read).
    fn evict_except(&mut self, tree: &sled::Tree, keep: (u64, u64)) -> Result<()> {
        if self.map.bytes() <= self.budget {
            return Ok(());
        }
        let mut order: Vec<((u64, u64), u64)> = self
            .used
            .iter()
            .filter(|(k, _)| **k != keep)
            .map(|(k, c)| (*k, *c))
            .collect();
        order.sort_unstable_by_key(|(_, c)| *c);
        let target = self.budget - self.budget / 8;
        for ((tl, p), _) in order {
            if self.map.bytes() <= target {
                break;
            }
            let (from, to) = (p * PAGE_BLOCKS, (p + 1).saturating_mul(PAGE_BLOCKS));
            let mut batch = sled::Batch::default();
            let dirty: Vec<(u64, u64)> = self
                .dirty
                .range((tl, from)..(tl, to))
                .map(|(k, _)| *k)
                .collect();
            for k in &dirty {
                match self.map.at(k.0, k.1) {
                    Some(e) => batch.insert(&key(k.0, k.1)[..], encode_extent(e)),
                    None => batch.remove(&key(k.0, k.1)[..]),
                }
            }
            tree.apply_batch(batch)
                .map_err(|e| sled_err("writing a page out", e))?;
            for k in dirty {
                self.dirty.remove(&k);
            }
            self.map.take_range(tl, from, to);
            self.used.remove(&(tl, p));
            self.evicted.insert((tl, p));
        }
        Ok(())
    }

    fn finish_load(&mut self) {
        if let Some((tl, first, e)) = self.loader.finish() {
            self.stamp(tl, first, first + e.count() as u64);
            self.map.put(tl, first, e);
            self.touch((tl, first));
        }
    }

    /// Maps `[first, first + e.count())` of `tl` to `e` (or unmaps it, with
    /// `None` and `count`), keeping the counters in `st` right. The pages
    /// it touches must be in memory.
    fn put(&mut self, st: &mut VolState, tl: u64, first: u64, count: u64, e: Option<Extent>) {
        debug_assert!(self.resident(tl, first, first.saturating_add(count)));
        self.stamp(tl, first, first.saturating_add(count));
        let Mem {
            map,
            dirty,
            generation,
            ..
        } = self;
        let mut removed = |_: u64, old: &Extent| account_extent(st, tl, old, false);
        let mut touched = |k: (u64, u64)| {
            *generation += 1;
            dirty.insert(k, *generation);
        };
        match e {
            Some(e) => {
                let pieces = split_at_pages(first, e);
                let added: Vec<Extent> = pieces.iter().map(|(_, p)| p.clone()).collect();
                for (f, piece) in pieces {
                    map.insert(tl, f, piece, &mut removed, &mut touched);
                }
                for a in &added {
                    account_extent(st, tl, a, true);
                }
            }
            None => map.punch(tl, first, count, &mut removed, &mut touched),
        }
    }
}

/// Name of the sled tree holding extents, and of the tree older versions
/// kept per-block entries in (dropped when found).
const EXTENT_TREE: &str = "extents";
const OLD_BLOCK_TREE: &str = "map";
/// Value of the `map_format` metadata key for extents.
const MAP_FORMAT: &[u8] = &[3];
/// Extents handed to sled per batch.
const FEED_BATCH: usize = 16384;

/// Checkpoint + overlay. `None` in the overlay hides a checkpoint entry.
struct Layered {
    base: Option<Checkpoint>,
    overlay: RwLock<BTreeMap<[u8; 16], Option<[u8; 16]>>>,
}

type RawEntry = ([u8; 16], [u8; 16]);
type RawIter<'a> = Box<dyn Iterator<Item = Result<RawEntry>> + 'a>;

/// Cache memory sled may use for one volume. sled is read only at open and
/// written in batches (the map in memory serves lookups), so it needs little.
const SLED_CACHE_BYTES: u64 = 4 << 20;

impl Index {
    /// Opens (or creates) the index at `dir`. Fails with `Locked` if another
    /// process has it open.
    pub fn open(dir: &Path) -> Result<Index> {
        // sled reports a held lock as an `Other` I/O error whose text says
        // so (sled 0.34 config.rs), not as WouldBlock.
        let is_locked = |e: &sled::Error| match e {
            sled::Error::Io(io) => {
                io.kind() == std::io::ErrorKind::WouldBlock
                    || io.raw_os_error() == Some(libc::EAGAIN)
                    || io.to_string().contains("could not acquire lock")
            }
            _ => false,
        };
        // sled releases its file lock only when its background threads let
        // go of the file, shortly after the last handle is dropped; so a
        // close followed at once by an open in the same process can find it
        // still locked. Wait a little before calling it in use.
        let mut waited = 0;
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(SLED_CACHE_BYTES)
                .mode(sled::Mode::HighThroughput)
                .open()
            {
                Ok(db) => break db,
                Err(e) if is_locked(&e) && waited < 200 => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    waited += 1;
                }
                Err(e) if is_locked(&e) => {
                    return Err(Error::new(
                        ErrorKind::Locked,
                        format!("index {} is in use by another process", dir.display()),
                    ))
                }
                Err(e) => return Err(sled_err(&format!("opening {}", dir.display()), e)),
            }
        };
        let tree = db
            .open_tree(EXTENT_TREE)
            .map_err(|e| sled_err("opening extent tree", e))?;
        if db
            .get("map_format")
            .map_err(|e| sled_err("reading metadata", e))?
            .as_deref()
            != Some(MAP_FORMAT)
        {
            // An index of an older version: a cache, so start it afresh
            // (its `clean` flag goes too, and the volume reloads).
            db.drop_tree(OLD_BLOCK_TREE)
                .map_err(|e| sled_err("dropping the old map tree", e))?;
            tree.clear().map_err(|e| sled_err("clearing", e))?;
            db.clear().map_err(|e| sled_err("clearing", e))?;
            db.insert("map_format", MAP_FORMAT)
                .map_err(|e| sled_err("writing metadata", e))?;
        }
        Ok(Index {
            store: Store::Mem(MemStore {
                db,
                tree,
                mem: RwLock::new(Mem::default()),
                feeding: Mutex::new(()),
            }),
        })
    }

    /// Loads the extents sled holds into memory (a clean index, at open).
    pub fn load_cached(&self) -> Result<()> {
        let Store::Mem(m) = &self.store else {
            return Ok(());
        };
        let mut mem = m.mem.write();
        mem.map.clear();
        mem.dirty.clear();
        mem.evicted.clear();
        mem.used.clear();
        // Pages in key order, whole, up to the budget; the rest stay in
        // sled only (evicted) and load when something needs them.
        let mut full = false;
        let mut current: Option<(u64, u64)> = None;
        for r in m.tree.iter() {
            let (k, v) = r.map_err(|e| sled_err("loading", e))?;
            let (tl, first) = split_key(&k)?;
            let page = (tl, page_of(first));
            if current != Some(page) {
                current = Some(page);
                full = full || mem.map.bytes() >= mem.budget;
                if full {
                    mem.evicted.insert(page);
                } else {
                    mem.used.insert(page, 0);
                }
            }
            if full {
                continue;
            }
            mem.map.put(tl, first, stored_extent(tl, first, &v)?);
        }
        // The last page loaded may have passed the budget.
        mem.evict(&m.tree)
    }

    /// Limits the memory of the map to `bytes` (`ExtentMap::bytes`); past
    /// it, the least recently used pages (`map::PAGE_BLOCKS` blocks of a
    /// timeline) are written to sled and dropped, and read back when needed.
    pub fn set_budget(&self, bytes: u64) -> Result<()> {
        if let Store::Mem(m) = &self.store {
            let mut mem = m.mem.write();
            mem.budget = bytes.max(1);
            mem.evict(&m.tree)?;
        }
        Ok(())
    }

    /// Extents in memory, what they cost (bytes), extents not yet fed to
    /// sled, and pages that are only in sled.
    pub fn paging_counts(&self) -> (usize, u64, usize, usize) {
        match &self.store {
            Store::Mem(m) => {
                let mem = m.mem.read();
                (mem.map.len(), mem.map.bytes(), mem.dirty.len(), mem.evicted.len())
            }
            Store::Layered(_) => (0, 0, 0, 0),
        }
    }

    /// Copies the extents changed since the last feed to sled, in batches.
    /// The map in memory stays the one that is read; sled has to match it
    /// only when the index is closed cleanly.
    pub fn feed(&self) -> Result<()> {
        let Store::Mem(m) = &self.store else {
            return Ok(());
        };
        let _one = m.feeding.lock();
        loop {
            let work: Vec<((u64, u64), u64, Option<Vec<u8>>)> = {
                let mem = m.mem.read();
                mem.dirty
                    .iter()
                    .take(FEED_BATCH)
                    .map(|(k, g)| (*k, *g, mem.map.at(k.0, k.1).map(encode_extent)))
                    .collect()
            };
            if work.is_empty() {
                return Ok(());
            }
            let mut batch = sled::Batch::default();
            for (k, _, v) in &work {
                match v {
                    Some(v) => batch.insert(&key(k.0, k.1)[..], v.as_slice()),
                    None => batch.remove(&key(k.0, k.1)[..]),
                }
            }
            m.tree
                .apply_batch(batch)
                .map_err(|e| sled_err("feeding", e))?;
            // Keys changed again meanwhile stay dirty for the next round.
            let mut mem = m.mem.write();
            for (k, g, _) in work {
                if mem.dirty.get(&k) == Some(&g) {
                    mem.dirty.remove(&k);
                }
            }
        }
    }

    /// A copy of the map in memory (a writer's), for a checkpoint written
    /// without holding the writer. The copy costs ~100 bytes an extent for
    /// as long as that checkpoint takes. None for a read-only view.
    pub fn frozen(&self) -> Option<FrozenMap> {
        let Store::Mem(m) = &self.store else {
            return None;
        };
        let mem = m.mem.read();
        if !mem.evicted.is_empty() {
            return None; // part of the map is only in sled
        }
        let map = mem.map.clone();
        drop(mem);
        Some(FrozenMap {
            mem: RwLock::new(Mem {
                map,
                ..Default::default()
            }),
        })
    }

    /// A read-only opener's index: `base` searched in place (if any), with
    /// changes kept in memory.
    pub fn layered(base: Option<Checkpoint>) -> Index {
        Index {
            store: Store::Layered(Layered {
                base,
                overlay: RwLock::new(BTreeMap::new()),
            }),
        }
    }

    /// Drops every entry and all metadata.
    pub fn clear(&self) -> Result<()> {
        match &self.store {
            Store::Mem(m) => {
                let _one = m.feeding.lock();
                let mut mem = m.mem.write();
                let budget = mem.budget;
                *mem = Mem::default();
                mem.budget = budget;
                drop(mem);
                m.tree.clear().map_err(|e| sled_err("clearing", e))?;
                m.db.clear().map_err(|e| sled_err("clearing", e))?;
                m.db.insert("map_format", MAP_FORMAT)
                    .map_err(|e| sled_err("writing metadata", e))?;
                Ok(())
            }
            Store::Layered(_) => Err(Error::new(
                ErrorKind::Unsupported,
                "a read-only index cannot be cleared",
            )),
        }
    }

    /// Reads a metadata value (always None for a read-only index).
    pub fn meta_get(&self, k: &str) -> Result<Option<Vec<u8>>> {
        match &self.store {
            Store::Mem(m) => Ok(m
                .db
                .get(k)
                .map_err(|e| sled_err("reading metadata", e))?
                .map(|v| v.to_vec())),
            Store::Layered(_) => Ok(None),
        }
    }

    /// Writes a metadata value (ignored by a read-only index).
    pub fn meta_put(&self, k: &str, v: &[u8]) -> Result<()> {
        if let Store::Mem(m) = &self.store {
            m.db.insert(k, v)
                .map_err(|e| sled_err("writing metadata", e))?;
        }
        Ok(())
    }

    /// Feeds sled and makes everything written to it so far durable.
    pub fn flush(&self) -> Result<()> {
        if let Store::Mem(m) = &self.store {
            self.feed()?;
            m.db.flush().map_err(|e| sled_err("flushing", e))?;
        }
        Ok(())
    }

    fn get_layered(l: &Layered, k: &[u8; 16]) -> Result<Option<[u8; 16]>> {
        if let Some(v) = l.overlay.read().get(k) {
            return Ok(*v);
        }
        match &l.base {
            Some(c) => c.get(k),
            None => Ok(None),
        }
    }

    /// Stores `v` (or removes the key) in a read-only opener's overlay,
    /// returning the old value.
    fn put_layered(l: &Layered, k: &[u8; 16], v: Option<&[u8; 16]>) -> Result<Option<[u8; 16]>> {
        let old = Self::get_layered(l, k)?;
        let in_base = match &l.base {
            Some(c) => c.get(k)?.is_some(),
            None => false,
        };
        let mut o = l.overlay.write();
        match v {
            Some(v) => {
                o.insert(*k, Some(*v));
            }
            None if in_base => {
                o.insert(*k, None);
            }
            None => {
                o.remove(k);
            }
        }
        Ok(old)
    }

    /// The entry for (tl, block), if any.
    pub fn get(&self, tl: u64, block: u64) -> Result<Option<Entry>> {
        match &self.store {
            Store::Mem(m) => {
                let mem = m.mem.read();
                if mem.resident(tl, block, block + 1) {
                    return Ok(mem.map.get(tl, block));
                }
                drop(mem);
                let mut mem = m.mem.write();
                mem.load_pages(&m.tree, tl, block, block + 1)?;
                let e = mem.map.get(tl, block);
                mem.evict(&m.tree)?;
                Ok(e)
            }
            Store::Layered(l) => Self::get_layered(l, &key(tl, block))?
                .map(|v| Entry::decode(&v))
                .transpose(),
        }
    }

    /// Points every extent whose data the writer moved (`m`: the bytes of
    /// the active segment written again under another number, whole or
    /// after a durable prefix; `LogWriter::rewrite_active`) at its new
    /// place. Extents in memory change now (and go to sled with the next
    /// feed); those in sled change as their page is loaded. sled may hold
    /// the old place until then, so after a move the index is not marked
    /// clean at close (`relocated`): the next open rebuilds it from the
    /// checkpoint and the log.
    pub fn relocate(&self, m: crate::log::SegMove) -> Result<()> {
        match &self.store {
            Store::Mem(s) => {
                let mut mem = s.mem.write();
                for k in mem.map.relocate(&m) {
                    mem.touch(k);
                }
                mem.moves.push(m);
            }
            Store::Layered(l) => {
                let mut o = l.overlay.write();
                for v in o.values_mut().flatten() {
                    if let Entry::Data { seg, off, crc } = Entry::decode(v)? {
                        if let Some((s, o)) = m.apply(seg, off as u64) {
                            *v = Entry::Data { seg: s, off: o as u32, crc }.encode();
                        }
                    }
                }
                // The checkpoint under the overlay names only durable
                // places, which a move leaves where they are.
            }
        }
        Ok(())
    }

    /// Whether `relocate` ran since the index was opened.
    pub fn relocated(&self) -> bool {
        match &self.store {
            Store::Mem(m) => !m.mem.read().moves.is_empty(),
            Store::Layered(_) => false,
        }
    }

    /// Resolves blocks `[first, first + n)` through `chain` (nearest
    /// timeline first): each block's entry in the nearest timeline that
    /// maps it, or None.
    pub fn resolve(&self, chain: &[u64], first: u64, n: u64) -> Result<Vec<Option<Entry>>> {
        let mut out = vec![None; n as usize];
        match &self.store {
            Store::Mem(m) => {
                let end = first.saturating_add(n);
                let nowait = crate::error::nowait();
                let mut mem = if nowait {
                    m.mem.try_read().ok_or_else(|| crate::error::would_block("the block map"))?
                } else {
                    m.mem.read()
                };
                if !chain.iter().all(|t| mem.resident(*t, first, end)) {
                    if nowait {
                        return Err(crate::error::would_block("map pages in sled"));
                    }
                    drop(mem);
                    let mut w = m.mem.write();
                    for t in chain {
                        w.load_pages(&m.tree, *t, first, end)?;
                    }
                    mem = parking_lot::RwLockWriteGuard::downgrade(w);
                }
                let mut missing = n;
                for t in chain {
                    if missing == 0 {
                        break;
                    }
                    for (f, e) in mem.map.range(*t, first, first + n) {
                        for i in 0..e.count() {
                            let slot = &mut out[(f - first) as usize + i as usize];
                            if slot.is_none() {
                                *slot = Some(e.entry(i));
                                missing -= 1;
                            }
                        }
                    }
                }
                if mem.map.bytes() > mem.budget && !nowait {
                    drop(mem);
                    m.mem.write().evict(&m.tree)?;
                }
            }
            Store::Layered(_) => {
                for (i, slot) in out.iter_mut().enumerate() {
                    for t in chain {
                        if let Some(e) = self.get(*t, first + i as u64)? {
                            *slot = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Entries with `from <= key < to`, in key order.
    fn range_raw(&self, from: [u8; 16], to: [u8; 16]) -> RawIter<'_> {
        match &self.store {
            Store::Mem(m) => Box::new(MemIter {
                mem: &m.mem,
                tree: Some(&m.tree),
                next: split_key(&from).expect("16 bytes"),
                to: split_key(&to).expect("16 bytes"),
                pieces: VecDeque::new(),
                cur: None,
            }),
            Store::Layered(l) => {
                // The overlay holds only the log tail: copy its slice out and
                // merge it with the checkpoint's stream.
                let over: Vec<([u8; 16], Option<[u8; 16]>)> = l
                    .overlay
                    .read()
                    .range(from..to)
                    .map(|(k, v)| (*k, *v))
                    .collect();
                let base: RawIter<'_> = match &l.base {
                    Some(c) => Box::new(c.range(from, to)),
                    None => Box::new(std::iter::empty()),
                };
                Box::new(MergeIter {
                    base: base.peekable(),
                    over: over.into_iter().peekable(),
                })
            }
        }
    }

    /// Entries of `tl` with block in `[from, to)`, in block order.
    pub fn range(
        &self,
        tl: u64,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(u64, Entry)>> + '_ {
        self.range_raw(key(tl, from), key(tl, to)).map(|r| {
            let (k, v) = r?;
            let (_, b) = split_key(&k)?;
            Ok((b, Entry::decode(&v)?))
        })
    }

    /// Every entry, in key order (checkpoints).
    pub fn iter_all(&self) -> impl Iterator<Item = Result<([u8; 16], [u8; 16])>> + '_ {
        self.range_raw([0; 16], [0xff; 16])
    }

    /// Adds a checkpoint's entry (in key order) while loading it into an
    /// empty index; counters come from the checkpoint. `finish_load` ends
    /// the load.
    pub fn load_raw(&self, k: &[u8; 16], v: &[u8; 16]) -> Result<()> {
        match &self.store {
            Store::Mem(m) => {
                let (tl, b) = split_key(k)?;
                let e = Entry::decode(v)?;
                let mut mem = m.mem.write();
                if let Some((tl, first, ext)) = mem.loader.push(tl, b, e) {
                    mem.stamp(tl, first, first + ext.count() as u64);
                    mem.map.put(tl, first, ext);
                    mem.touch((tl, first));
                    mem.evict(&m.tree)?;
                }
                Ok(())
            }
            Store::Layered(l) => Self::put_layered(l, k, Some(v)).map(drop),
        }
    }

    /// Ends a load begun with `load_raw`.
    pub fn finish_load(&self) {
        if let Store::Mem(m) = &self.store {
            m.mem.write().finish_load();
        }
    }

    /// Sets (tl, block) to `e`, keeping the counters in `st` right.
    pub fn set(&self, st: &mut VolState, tl: u64, block: u64, e: Entry) -> Result<()> {
        self.set_extent(st, tl, block, Extent::from_entry(e))
    }

    /// Maps `[first, first + e.count())` of `tl` to `e`, keeping the
    /// counters in `st` right.
    pub fn set_extent(&self, st: &mut VolState, tl: u64, first: u64, e: Extent) -> Result<()> {
        match &self.store {
            Store::Mem(m) => {
                let mut mem = m.mem.write();
                let end = first + e.count() as u64;
                // The extent before `first` may be split: its page too.
                mem.load_pages(&m.tree, tl, first.saturating_sub(1), end)?;
                mem.put(st, tl, first, e.count() as u64, Some(e));
                mem.evict(&m.tree)
            }
            Store::Layered(l) => {
                for i in 0..e.count() {
                    let new = e.entry(i);
                    let old =
                        Self::put_layered(l, &key(tl, first + i as u64), Some(&new.encode()))?;
                    let old = old.map(|v| Entry::decode(&v)).transpose()?;
                    account(st, tl, old, Some(new));
                }
                Ok(())
            }
        }
    }

    /// Removes (tl, block), keeping the counters right.
    pub fn remove(&self, st: &mut VolState, tl: u64, block: u64) -> Result<()> {
        self.remove_range(st, tl, block, 1)
    }

    /// Removes `[first, first + count)` of `tl`, keeping the counters right.
    fn remove_range(&self, st: &mut VolState, tl: u64, first: u64, count: u64) -> Result<()> {
        match &self.store {
            Store::Mem(m) => {
                let mut mem = m.mem.write();
                let end = first.saturating_add(count);
                mem.load_pages(&m.tree, tl, first.saturating_sub(1), end)?;
                mem.put(st, tl, first, count, None);
                mem.evict(&m.tree)
            }
            Store::Layered(l) => {
                let keys: Vec<u64> = self
                    .range(tl, first, first.saturating_add(count))
                    .map(|r| r.map(|(b, _)| b))
                    .collect::<Result<_>>()?;
                for b in keys {
                    let old = Self::put_layered(l, &key(tl, b), None)?;
                    let old = old.map(|v| Entry::decode(&v)).transpose()?;
                    account(st, tl, old, None);
                }
                Ok(())
            }
        }
    }

    /// Makes `[first, first+count)` of the head read as zeros. On a root
    /// timeline without base, entries are simply removed; otherwise a
    /// tombstone is set wherever an older layer could show through.
    pub fn zero_range(&self, st: &mut VolState, tl: u64, first: u64, count: u64) -> Result<()> {
        let end = first.saturating_add(count);
        let chain = st.chain(tl);
        // Blocks already in this timeline: drop them first.
        self.remove_range(st, tl, first, count)?;
        if st.base.is_some() {
            // The base cannot be asked cheaply here, so cover all of it.
            let base_end = end.min(st.virtual_size.div_ceil(crate::format::BLOCK_SIZE));
            let mut b = first;
            while b < base_end {
                let n = (base_end - b).min(u32::MAX as u64 / 2);
                self.set_extent(st, tl, b, Extent::zero(n as u32))?;
                b += n;
            }
            return Ok(());
        }
        // Runs of blocks some ancestor maps with data.
        let mut shadowed: Vec<(u64, u64)> = Vec::new();
        for anc in &chain[1..] {
            for r in self.range(*anc, first, end) {
                let (b, e) = r?;
                if e != Entry::Zero {
                    shadowed.push((b, b + 1));
                }
            }
        }
        shadowed.sort_unstable();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (a, z) in shadowed {
            match runs.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(z),
                _ => runs.push((a, z)),
            }
        }
        for (a, z) in runs {
            self.set_extent(st, tl, a, Extent::zero((z - a) as u32))?;
        }
        Ok(())
    }

    /// Removes every entry of `tl` and the timeline itself.
    pub fn drop_timeline(&self, st: &mut VolState, tl: u64) -> Result<()> {
        match &self.store {
            Store::Mem(m) => {
                let mut mem = m.mem.write();
                mem.load_pages(&m.tree, tl, 0, u64::MAX)?;
                for (first, e) in mem.map.take_timeline(tl) {
                    account_extent(st, tl, &e, false);
                    mem.touch((tl, first));
                }
                mem.used.retain(|(t, _), _| *t != tl);
                mem.evict(&m.tree)?;
            }
            Store::Layered(_) => self.remove_range(st, tl, 0, u64::MAX)?,
        }
        st.timelines.remove(&tl);
        Ok(())
    }

    /// Folds `from` into its only child `into`: blocks `into` lacks move
    /// down, the rest die. Reads of `into` are unchanged.
    pub fn merge_timeline(&self, st: &mut VolState, from: u64, into: u64) -> Result<()> {
        match &self.store {
            Store::Mem(m) => {
                // One write lock for the whole fold: readers see it done or
                // not. Both timelines whole in memory meanwhile (a fold is
                // O(extents) anyway); the budget applies again after it.
                let mut mem = m.mem.write();
                mem.load_pages(&m.tree, from, 0, u64::MAX)?;
                mem.load_pages(&m.tree, into, 0, u64::MAX)?;
                for (first, e) in mem.map.take_timeline(from) {
                    account_extent(st, from, &e, false);
                    mem.touch((from, first));
                    // The gaps `into` leaves inside this extent move down.
                    let end = first + e.count() as u64;
                    let mut gaps = Vec::new();
                    let mut at = first;
                    for (f, x) in mem.map.range(into, first, end) {
                        if f > at {
                            gaps.push((at, f));
                        }
                        at = f + x.count() as u64;
                    }
                    if at < end {
                        gaps.push((at, end));
                    }
                    for (a, z) in gaps {
                        let piece = e.slice((a - first) as u32, (z - a) as u32);
                        mem.put(st, into, a, z - a, Some(piece));
                    }
                }
                mem.used.retain(|(t, _), _| *t != from);
                mem.evict(&m.tree)?;
            }
            Store::Layered(_) => {
                let entries: Vec<(u64, Entry)> =
                    self.range(from, 0, u64::MAX).collect::<Result<_>>()?;
                for (b, e) in entries {
                    if self.get(into, b)?.is_none() {
                        // Insert below before removing above, so a reader never misses it.
                        self.set(st, into, b, e)?;
                    }
                    self.remove(st, from, b)?;
                }
            }
        }
        let parent = st.timelines.get(&from).and_then(|t| t.parent);
        if let Some(t) = st.timelines.get_mut(&into) {
            t.parent = parent;
        }
        st.timelines.remove(&from);
        Ok(())
    }

    /// Drops or folds timelines that neither the head nor a snapshot
    /// references, until none is left to collect.
    pub fn collect_hidden(&self, st: &mut VolState) -> Result<()> {
        loop {
            let hidden: Vec<u64> = st
                .timelines
                .keys()
                .copied()
                .filter(|tl| !st.is_referenced(*tl))
                .collect();
            let mut changed = false;
            for tl in hidden {
                let children = st.children(tl);
                match children.len() {
                    0 => {
                        self.drop_timeline(st, tl)?;
                        changed = true;
                    }
                    1 => {
                        self.merge_timeline(st, tl, children[0])?;
                        changed = true;
                    }
                    _ => {}
                }
            }
            if !changed {
                return Ok(());
            }
        }
    }
}

/// A copy of a writer's map, taken under the writer lock, from which a
/// checkpoint is written by another thread while writes go on
/// (`Index::frozen`).
pub struct FrozenMap {
    mem: RwLock<Mem>,
}

impl FrozenMap {
    /// Every entry, in key order, per block (as `Index::iter_all`).
    pub fn iter_all(&self) -> impl Iterator<Item = Result<([u8; 16], [u8; 16])>> + '_ {
        MemIter {
            mem: &self.mem,
            tree: None,
            next: (0, 0),
            to: (u64::MAX, u64::MAX),
            pieces: VecDeque::new(),
            cur: None,
        }
    }
}

/// Per-block entries of the map in memory between two keys, read a few
/// extents at a time (the lock is not held between calls).
struct MemIter<'a> {
    mem: &'a RwLock<Mem>,
    /// Where evicted pages are read from (None: nothing is evicted).
    tree: Option<&'a sled::Tree>,
    /// Next (timeline, block) to return from.
    next: (u64, u64),
    /// End (exclusive).
    to: (u64, u64),
    pieces: VecDeque<(u64, u64, Extent)>,
    cur: Option<(u64, u64, Extent, u32)>,
}

impl MemIter<'_> {
    /// Reads the next few extents from `self.next`, within its page, into
    /// `pieces`, and moves `next` past them (to the next page, or the next
    /// timeline, that has any).
    fn fill(&mut self) -> Result<()> {
        let (tl, b) = self.next;
        let page_end = (page_of(b) + 1).saturating_mul(PAGE_BLOCKS);
        let end = if self.to.0 == tl { self.to.1.min(page_end) } else { page_end };
        let mut mem = self.mem.read();
        if !mem.resident(tl, b, end) {
            let tree = self.tree.expect("a frozen map has no evicted pages");
            drop(mem);
            let mut w = self.mem.write();
            w.load_pages(tree, tl, b, end)?;
            w.evict_except(tree, (tl, page_of(b)))?;
            mem = parking_lot::RwLockWriteGuard::downgrade(w);
        }
        let mut last = None;
        for (f, e) in mem.map.range(tl, b, end).take(64) {
            last = Some(f + e.count() as u64);
            self.pieces.push_back((tl, f, e));
        }
        if self.pieces.len() == 64 {
            self.next = (tl, last.expect("pieces"));
            return Ok(());
        }
        if end < page_end || tl == u64::MAX && page_end == u64::MAX {
            self.next = self.to; // the end of the range
            return Ok(());
        }
        // On to the next key in memory or the next evicted page, whichever
        // comes first, in this timeline or a later one.
        let after = (tl, page_end);
        let in_mem = mem.map.iter_from(after).next().map(|(k, _)| k);
        let in_sled = mem
            .evicted
            .range((tl, page_of(page_end))..)
            .next()
            .map(|(t, p)| (*t, p * PAGE_BLOCKS));
        let next = match (in_mem, in_sled) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(self.to),
        };
        self.next = next.min(self.to).max(after);
        Ok(())
    }
}

impl Iterator for MemIter<'_> {
    type Item = Result<RawEntry>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((tl, f, e, i)) = &mut self.cur {
                if *i < e.count() {
                    let out = (key(*tl, *f + *i as u64), e.entry(*i).encode());
                    *i += 1;
                    return Some(Ok(out));
                }
                self.cur = None;
            }
            if let Some((tl, f, e)) = self.pieces.pop_front() {
                self.cur = Some((tl, f, e, 0));
                continue;
            }
            if self.next >= self.to {
                return None;
            }
            if let Err(e) = self.fill() {
                self.next = self.to;
                return Some(Err(e));
            }
        }
    }
}

/// Counts an extent into (`added`) or out of `tl`'s counters and the
/// segment's live bytes.
fn account_extent(st: &mut VolState, tl: u64, e: &Extent, added: bool) {
    let n = e.count() as u64;
    let t = st.timelines.entry(tl).or_default();
    if added {
        t.entries += n;
    } else {
        t.entries = t.entries.saturating_sub(n);
    }
    if let Some(seg) = e.segment() {
        let bytes = n * crate::format::BLOCK_SIZE;
        if added {
            t.blocks += n;
            *st.seg_live.entry(seg).or_default() += bytes;
        } else {
            t.blocks = t.blocks.saturating_sub(n);
            if let Some(x) = st.seg_live.get_mut(&seg) {
                *x = x.saturating_sub(bytes);
            }
        }
    }
}

fn account(st: &mut VolState, tl: u64, old: Option<Entry>, new: Option<Entry>) {
    let t = st.timelines.entry(tl).or_default();
    match (&old, &new) {
        (None, Some(_)) => t.entries += 1,
        (Some(_), None) => t.entries = t.entries.saturating_sub(1),
        _ => {}
    }
    if let Some(Entry::Data { seg, .. }) = old {
        t.blocks = t.blocks.saturating_sub(1);
        if let Some(n) = st.seg_live.get_mut(&seg) {
            *n = n.saturating_sub(crate::format::BLOCK_SIZE);
        }
    }
    let t = st.timelines.entry(tl).or_default();
    if let Some(Entry::Data { seg, .. }) = new {
        t.blocks += 1;
        *st.seg_live.entry(seg).or_default() += crate::format::BLOCK_SIZE;
    }
}
