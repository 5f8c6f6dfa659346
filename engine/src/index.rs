//! The block map in sled: key `timeline:u64 BE | block:u64 BE` (big-endian so
//! a timeline's blocks sort together and in order), value 16 bytes
//! `segment:u64 LE | offset:u32 LE | crc32c:u32 LE`; segment `u64::MAX` marks
//! a block that reads as zeros (a tombstone over older data).
//!
//! The index is a cache of the log: it can always be rebuilt by replay.

use crate::checkpoint::Reader as Checkpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::state::VolState;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::path::Path;

fn corrupt_value(len: usize) -> Error {
    Error::new(ErrorKind::Corrupt, format!("index value has {len} bytes, expected 16"))
}

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
    Sled { db: sled::Db, map: sled::Tree },
    Layered(Layered),
}

/// Checkpoint + overlay. `None` in the overlay hides a checkpoint entry.
struct Layered {
    base: Option<Checkpoint>,
    overlay: RwLock<BTreeMap<[u8; 16], Option<[u8; 16]>>>,
}

type RawEntry = ([u8; 16], [u8; 16]);
type RawIter<'a> = Box<dyn Iterator<Item = Result<RawEntry>> + 'a>;

/// Cache memory sled may use for one volume.
const SLED_CACHE_BYTES: u64 = 16 << 20;

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
        let map = db.open_tree("map").map_err(|e| sled_err("opening map tree", e))?;
        Ok(Index { store: Store::Sled { db, map } })
    }

    /// A read-only opener's index: `base` searched in place (if any), with
    /// changes kept in memory.
    pub fn layered(base: Option<Checkpoint>) -> Index {
        Index { store: Store::Layered(Layered { base, overlay: RwLock::new(BTreeMap::new()) }) }
    }

    /// Drops every entry and all metadata.
    pub fn clear(&self) -> Result<()> {
        match &self.store {
            Store::Sled { db, map } => {
                map.clear().map_err(|e| sled_err("clearing", e))?;
                db.clear().map_err(|e| sled_err("clearing", e))
            }
            Store::Layered(_) => Err(Error::new(ErrorKind::Unsupported, "a read-only index cannot be cleared")),
        }
    }

    /// Reads a metadata value (always None for a read-only index).
    pub fn meta_get(&self, k: &str) -> Result<Option<Vec<u8>>> {
        match &self.store {
            Store::Sled { db, .. } => Ok(db.get(k).map_err(|e| sled_err("reading metadata", e))?.map(|v| v.to_vec())),
            Store::Layered(_) => Ok(None),
        }
    }

    /// Writes a metadata value (ignored by a read-only index).
    pub fn meta_put(&self, k: &str, v: &[u8]) -> Result<()> {
        if let Store::Sled { db, .. } = &self.store {
            db.insert(k, v).map_err(|e| sled_err("writing metadata", e))?;
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        if let Store::Sled { db, .. } = &self.store {
            db.flush().map_err(|e| sled_err("flushing", e))?;
        }
        Ok(())
    }

    fn get_raw(&self, k: &[u8; 16]) -> Result<Option<[u8; 16]>> {
        match &self.store {
            Store::Sled { map, .. } => match map.get(k).map_err(|e| sled_err("lookup", e))? {
                None => Ok(None),
                Some(v) => Ok(Some(v.as_ref().try_into().map_err(|_| corrupt_value(v.len()))?)),
            },
            Store::Layered(l) => {
                if let Some(v) = l.overlay.read().get(k) {
                    return Ok(*v);
                }
                match &l.base {
                    Some(c) => c.get(k),
                    None => Ok(None),
                }
            }
        }
    }

    /// Stores `v` (or removes the key), returning the old value.
    fn put_raw_old(&self, k: &[u8; 16], v: Option<&[u8; 16]>) -> Result<Option<[u8; 16]>> {
        match &self.store {
            Store::Sled { map, .. } => {
                let old = match v {
                    Some(v) => map.insert(k, v).map_err(|e| sled_err("insert", e))?,
                    None => map.remove(k).map_err(|e| sled_err("remove", e))?,
                };
                old.map(|o| o.as_ref().try_into().map_err(|_| corrupt_value(o.len()))).transpose()
            }
            Store::Layered(l) => {
                let old = self.get_raw(k)?;
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
        }
    }

    /// Entries with `from <= key < to`, in key order.
    fn range_raw(&self, from: [u8; 16], to: [u8; 16]) -> RawIter<'_> {
        match &self.store {
            Store::Sled { map, .. } => Box::new(map.range(from..to).map(|r| {
                let (k, v) = r.map_err(|e| sled_err("range scan", e))?;
                let k: [u8; 16] = k.as_ref().try_into().map_err(|_| Error::new(ErrorKind::Corrupt, "index key size"))?;
                let v: [u8; 16] = v.as_ref().try_into().map_err(|_| corrupt_value(v.len()))?;
                Ok((k, v))
            })),
            Store::Layered(l) => {
                // The overlay holds only the log tail: copy its slice out and
                // merge it with the checkpoint's stream.
                let over: Vec<([u8; 16], Option<[u8; 16]>)> =
                    l.overlay.read().range(from..to).map(|(k, v)| (*k, *v)).collect();
                let base: RawIter<'_> = match &l.base {
                    Some(c) => Box::new(c.range(from, to)),
                    None => Box::new(std::iter::empty()),
                };
                Box::new(MergeIter { base: base.peekable(), over: over.into_iter().peekable() })
            }
        }
    }

    /// The entry for (tl, block), if any.
    pub fn get(&self, tl: u64, block: u64) -> Result<Option<Entry>> {
        self.get_raw(&key(tl, block))?.map(|v| Entry::decode(&v)).transpose()
    }

    /// Entries of `tl` with block in `[from, to)`, in block order.
    pub fn range(&self, tl: u64, from: u64, to: u64) -> impl Iterator<Item = Result<(u64, Entry)>> + '_ {
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

    /// Inserts a raw entry (checkpoint load); counters come from the checkpoint.
    pub fn put_raw(&self, k: &[u8; 16], v: &[u8; 16]) -> Result<()> {
        self.put_raw_old(k, Some(v)).map(drop)
    }

    /// Sets (tl, block) to `e`, keeping the counters in `st` right.
    pub fn set(&self, st: &mut VolState, tl: u64, block: u64, e: Entry) -> Result<()> {
        let old = self.put_raw_old(&key(tl, block), Some(&e.encode()))?;
        let old = old.map(|v| Entry::decode(&v)).transpose()?;
        account(st, tl, old, Some(e));
        Ok(())
    }

    /// Removes (tl, block), keeping the counters right.
    pub fn remove(&self, st: &mut VolState, tl: u64, block: u64) -> Result<()> {
        let old = self.put_raw_old(&key(tl, block), None)?;
        let old = old.map(|v| Entry::decode(&v)).transpose()?;
        account(st, tl, old, None);
        Ok(())
    }

    /// Makes `[first, first+count)` of the head read as zeros. On a root
    /// timeline without base, entries are simply removed; otherwise a
    /// tombstone is set wherever an older layer could show through.
    pub fn zero_range(&self, st: &mut VolState, tl: u64, first: u64, count: u64) -> Result<()> {
        let end = first.saturating_add(count);
        let chain = st.chain(tl);
        // Blocks already in this timeline: drop them first.
        let own: Vec<u64> = self
            .range(tl, first, end)
            .map(|r| r.map(|(b, _)| b))
            .collect::<Result<_>>()?;
        for b in own {
            self.remove(st, tl, b)?;
        }
        if st.base.is_some() {
            // The base cannot be asked cheaply here, so cover all of it.
            let base_end = end.min(st.virtual_size.div_ceil(crate::format::BLOCK_SIZE));
            for b in first..base_end {
                self.set(st, tl, b, Entry::Zero)?;
            }
            return Ok(());
        }
        let mut shadowed = std::collections::BTreeSet::new();
        for anc in &chain[1..] {
            for r in self.range(*anc, first, end) {
                let (b, e) = r?;
                if e != Entry::Zero {
                    shadowed.insert(b);
                }
            }
        }
        for b in shadowed {
            self.set(st, tl, b, Entry::Zero)?;
        }
        Ok(())
    }

    /// Removes every entry of `tl` and the timeline itself.
    pub fn drop_timeline(&self, st: &mut VolState, tl: u64) -> Result<()> {
        let keys: Vec<u64> = self
            .range(tl, 0, u64::MAX)
            .map(|r| r.map(|(b, _)| b))
            .collect::<Result<_>>()?;
        for b in keys {
            self.remove(st, tl, b)?;
        }
        st.timelines.remove(&tl);
        Ok(())
    }

    /// Folds `from` into its only child `into`: blocks `into` lacks move
    /// down, the rest die. Reads of `into` are unchanged.
    pub fn merge_timeline(&self, st: &mut VolState, from: u64, into: u64) -> Result<()> {
        let entries: Vec<(u64, Entry)> = self.range(from, 0, u64::MAX).collect::<Result<_>>()?;
        for (b, e) in entries {
            if self.get(into, b)?.is_none() {
                // Insert below before removing above, so a reader never misses it.
                self.set(st, into, b, e)?;
            }
            self.remove(st, from, b)?;
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
