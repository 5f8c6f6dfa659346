//! Property: a crash at any point loses nothing that was acknowledged.
//!
//! A workload of writes, write-zeroes, flushes, snapshot creates / deletes /
//! reverts, clones, resizes and clean reopens runs on the memory backend,
//! which crashes after its n-th mutating operation; `recover(seed)` then
//! drops every file never made durable and keeps a random prefix of unsynced
//! bytes, possibly ending in garbage (a torn write). After reopening:
//! - the volume opens (also with its index deleted, forcing checkpoint + replay,
//!   and also when the reopen itself crashes first);
//! - every 4 KiB block not written since the last acknowledged flush holds
//!   exactly its flushed content; a block written since may hold any value it
//!   had since then (old or new), nothing else;
//! - every acknowledged snapshot exists with its contents, every
//!   acknowledged clone reads as its snapshot, and an operation that was in
//!   flight at the crash either happened whole or not at all.
//!
//! Each case then crashes a second time early in the writes after recovery.
//! Counts are printed (`cargo test --test crash -- --nocapture`).

mod common;

use common::{pattern, read_all, Kind, Place};
use hlfs::backend::mem::MemBackend;
use hlfs::{ErrorKind, OpenOptions, Volume};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

const BS: usize = 4096;
const STEPS: usize = 40;
const MAX_SIZE: usize = 2 << 20;
/// Past this many snapshots, a snapshot step deletes one instead (reads
/// cost one index lookup per block per snapshot layer).
const MAX_SNAPS: usize = 4;

fn h(b: &[u8]) -> u64 {
    let mut s = DefaultHasher::new();
    b.hash(&mut s);
    s.finish()
}

#[derive(Debug, Default)]
struct Stats {
    cases: u64,
    crash_points: BTreeSet<(u64, u64)>,
    crashes: u64,
    reopen_crashes: u64,
    index_dropped: u64,
    writes_acked: u64,
    writes_durable: u64,
    blocks_checked: u64,
    blocks_exact: u64,
    snapshots_checked: u64,
    clones_checked: u64,
    inflight_happened: u64,
    inflight_not: u64,
    lost: u64,
}

/// An operation that was under way when the backend crashed.
#[derive(Debug)]
enum Pending {
    Snap { name: String, content: Vec<u8> },
    Delete { name: String },
    Revert { target: String, old: Vec<u8> },
    Resize { new: usize },
    Clone { uri: String, snap: String },
}

/// The volume under test and a ledger of what it must hold.
struct World {
    place: Place,
    mem: MemBackend,
    uri: String,
    vol: Option<Volume>,
    rng: StdRng,
    n: u64,
    /// Head including unflushed writes.
    cur: Vec<u8>,
    /// Head as of the last acknowledged flush (or flushing operation).
    durable: Vec<u8>,
    /// Per block written since then: hashes of every value it took.
    maybe: HashMap<usize, Vec<u64>>,
    /// Acknowledged writes not yet covered by a flush.
    unflushed_writes: u64,
    snaps: BTreeMap<String, Vec<u8>>,
    /// Acknowledged clones: (uri, base snapshot, contents).
    clones: Vec<(String, String, Vec<u8>)>,
    /// Snapshots a clone was attempted from (acknowledged or not).
    clone_bases: BTreeSet<String>,
    pending: Option<Pending>,
}

impl World {
    fn new(kind: Kind, seed: u64) -> World {
        let place = Place::new(kind);
        let mem = place.mem.clone().expect("memory backend");
        let uri = place.uri("vol");
        // Just over 256 blocks, so one write can span two records.
        let size = 1280 << 10;
        Volume::create(&uri, size as u64).expect("create");
        let vol = Volume::open(&uri, &Self::opts(&place)).expect("open");
        World {
            place,
            mem,
            uri,
            vol: Some(vol),
            rng: StdRng::seed_from_u64(seed),
            n: seed << 20,
            cur: vec![0; size],
            durable: vec![0; size],
            maybe: HashMap::new(),
            unflushed_writes: 0,
            snaps: BTreeMap::new(),
            clones: Vec::new(),
            clone_bases: BTreeSet::new(),
            pending: None,
        }
    }

    /// Tiny segments and checkpoints: rollovers and checkpoints are crash
    /// points too. With `DIRECT` set (this thread's test), the writer writes
    /// page-aligned records and shares batch records between writes, as
    /// under QEMU's cache=none.
    fn opts(place: &Place) -> OpenOptions {
        OpenOptions {
            segment_size: 64 << 10,
            checkpoint_every: 128 << 10,
            direct_io: DIRECT.with(|d| d.get()),
            ..place.opts()
        }
    }

    fn vol(&self) -> &Volume {
        self.vol.as_ref().expect("open")
    }

    /// Everything so far is durable.
    fn synced(&mut self, st: &mut Stats) {
        self.durable = self.cur.clone();
        self.maybe.clear();
        st.writes_durable += self.unflushed_writes;
        self.unflushed_writes = 0;
    }

    /// Records that blocks overlapping `[off, off+len)` may now hold their `cur` value.
    fn touched(&mut self, off: usize, len: usize) {
        let size = self.cur.len();
        for b in off / BS..(off + len).div_ceil(BS) {
            let r = b * BS..((b + 1) * BS).min(size);
            let v = h(&self.cur[r]);
            self.maybe.entry(b).or_default().push(v);
        }
    }

    fn pick_snap(&mut self) -> Option<String> {
        if self.snaps.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.snaps.len());
        self.snaps.keys().nth(i).cloned()
    }

    /// One random operation. Err only when the backend crashed under it.
    fn step(&mut self, st: &mut Stats) -> hlfs::Result<()> {
        if self.vol.is_none() {
            // A reopen crashed earlier in this phase; nothing else to do.
            return Err(hlfs::Error::new(ErrorKind::Backend, "volume not open"));
        }
        let size = self.cur.len();
        let sectors = size / 512;
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=49 => {
                let len = match self.rng.gen_range(0..10) {
                    0 => self.rng.gen_range(257 * 8..=300 * 8), // two records
                    1..=4 => self.rng.gen_range(1..=8),
                    _ => self.rng.gen_range(1..=16 * 8),
                }
                .min(sectors);
                let off = self.rng.gen_range(0..=sectors - len) * 512;
                let len = len * 512;
                self.n += 1;
                let data = pattern(self.n, len);
                let r = self.vol().write(off as u64, &data);
                // Even a failed write may have reached the log in part.
                self.cur[off..off + len].copy_from_slice(&data);
                self.touched(off, len);
                if r.is_ok() {
                    self.unflushed_writes += 1;
                    st.writes_acked += 1;
                }
                r
            }
            50..=57 => {
                let len = self.rng.gen_range(1..=64 * 8).min(sectors);
                let off = self.rng.gen_range(0..=sectors - len) * 512;
                let len = len * 512;
                let r = self.vol().write_zeroes(off as u64, len as u64);
                self.cur[off..off + len].fill(0);
                self.touched(off, len);
                r
            }
            58..=71 => {
                let r = self.vol().flush();
                if r.is_ok() {
                    self.synced(st);
                }
                r
            }
            72..=79 if self.snaps.len() < MAX_SNAPS => {
                self.n += 1;
                let name = format!("s{}", self.n & 0xfffff);
                match self.vol().snapshot_create(&name) {
                    Ok(()) => {
                        self.snaps.insert(name, self.cur.clone());
                        self.synced(st);
                        Ok(())
                    }
                    Err(e) => {
                        self.pending = Some(Pending::Snap {
                            name,
                            content: self.cur.clone(),
                        });
                        Err(e)
                    }
                }
            }
            72..=83 => {
                let Some(name) = self.pick_snap() else {
                    return Ok(());
                };
                match self.vol().snapshot_delete(&name) {
                    Ok(()) => {
                        assert!(
                            !self.clones.iter().any(|c| c.1 == name),
                            "snapshot {name} was deleted although an acknowledged clone uses it"
                        );
                        self.snaps.remove(&name);
                        self.synced(st);
                        Ok(())
                    }
                    Err(e) if e.kind() == ErrorKind::InUse && !self.mem.has_crashed() => {
                        assert!(
                            self.clone_bases.contains(&name),
                            "{name} has no clone, yet: {e}"
                        );
                        Ok(())
                    }
                    Err(e) => {
                        self.pending = Some(Pending::Delete { name });
                        Err(e)
                    }
                }
            }
            84..=88 => {
                let Some(target) = self.pick_snap() else {
                    return Ok(());
                };
                let before: BTreeSet<String> = self.snaps.keys().cloned().collect();
                match self.vol().snapshot_revert(&target) {
                    Ok(()) => {
                        let old = std::mem::replace(&mut self.cur, self.snaps[&target].clone());
                        let names = common::snap_names(self.vol());
                        for n in names.iter().filter(|n| !before.contains(*n)) {
                            self.snaps.insert(n.clone(), old.clone());
                        }
                        self.synced(st);
                        Ok(())
                    }
                    Err(e) => {
                        self.pending = Some(Pending::Revert {
                            target,
                            old: self.cur.clone(),
                        });
                        Err(e)
                    }
                }
            }
            89..=91 => {
                let Some(snap) = self.pick_snap() else {
                    return Ok(());
                };
                if self.clones.len() >= 2 {
                    return Ok(());
                }
                self.n += 1;
                let curi = self.place.uri(&format!("c{}", self.n & 0xfffff));
                self.clone_bases.insert(snap.clone());
                match hlfs::clone_volume(&format!("{}%{snap}", self.uri), &curi, None) {
                    Ok(()) => {
                        let content = self.snaps[&snap].clone();
                        self.clones.push((curi, snap, content));
                        Ok(())
                    }
                    Err(e) => {
                        self.pending = Some(Pending::Clone { uri: curi, snap });
                        Err(e)
                    }
                }
            }
            92..=95 => {
                let new = (size + self.rng.gen_range(1..=512) * 512).min(MAX_SIZE.max(size));
                match self.vol().resize(new as u64) {
                    Ok(()) => {
                        self.cur.resize(new, 0);
                        self.synced(st);
                        Ok(())
                    }
                    Err(e) => {
                        self.pending = Some(Pending::Resize { new });
                        Err(e)
                    }
                }
            }
            _ => {
                self.vol.take().expect("open").close()?;
                self.synced(st);
                self.vol = Some(Volume::open(&self.uri, &Self::opts(&self.place))?);
                Ok(())
            }
        }
    }

    /// Reboots the backend, reopens and checks the ledger; then adopts what
    /// survived as the new ledger.
    fn recover_and_check(
        &mut self,
        seed: u64,
        drop_index: bool,
        crash_reopen: Option<u64>,
        st: &mut Stats,
    ) {
        // Dropping cannot seal or release the lock: the backend is down.
        drop(self.vol.take());
        self.mem.recover(seed);
        if drop_index {
            let _ = std::fs::remove_dir_all(self.place.dir.path().join("index"));
            st.index_dropped += 1;
        }
        if let Some(k) = crash_reopen {
            self.mem.crash_after(k);
            match Volume::open(&self.uri, &Self::opts(&self.place)) {
                Ok(v) => {
                    self.mem.crash_after(u64::MAX);
                    drop(v);
                }
                Err(e) => {
                    assert!(self.mem.has_crashed(), "reopen failed without a crash: {e}");
                    st.reopen_crashes += 1;
                    self.mem.recover(seed ^ 0x5555);
                }
            }
        }
        let v = Volume::open(&self.uri, &Self::opts(&self.place))
            .unwrap_or_else(|e| panic!("{}: does not reopen after a crash: {e}", self.uri));

        // Snapshots: acknowledged ones exist with their contents; others only
        // as the whole result of the operation in flight.
        let names = common::snap_names(&v);
        let mut found = BTreeMap::new();
        for (name, want) in &self.snaps {
            if !names.contains(name) {
                match &self.pending {
                    Some(Pending::Delete { name: d }) if d == name => continue,
                    _ => panic!("acknowledged snapshot {name} is gone after the crash; have {names:?} (in flight: {:?})", self.pending.as_ref().map(|p| format!("{p:?}").chars().take(60).collect::<String>())),
                }
            }
            let got = self.read_snap(name);
            st.snapshots_checked += 1;
            assert!(
                got == *want,
                "acknowledged snapshot {name} changed after the crash"
            );
            found.insert(name.clone(), got);
        }
        let mut happened = false;
        for name in names.iter().filter(|n| !self.snaps.contains_key(*n)) {
            let got = self.read_snap(name);
            match &self.pending {
                Some(Pending::Snap { name: p, content }) if p == name => {
                    assert!(
                        got == *content,
                        "snapshot {name} created at the crash holds the wrong data"
                    )
                }
                Some(Pending::Revert { old, .. }) => {
                    assert!(
                        got == *old,
                        "automatic snapshot {name} from a revert at the crash holds the wrong data"
                    )
                }
                _ => panic!("snapshot {name} appeared from nowhere after the crash"),
            }
            happened = true;
            st.snapshots_checked += 1;
            found.insert(name.clone(), got);
        }
        if let Some(Pending::Delete { name }) = &self.pending {
            happened |= !names.contains(name);
        }

        // The head.
        let head = read_all(&v);
        let mut durable = self.durable.clone();
        let exact_revert = match &self.pending {
            Some(Pending::Revert { target, .. }) => head == self.snaps[target],
            _ => false,
        };
        if exact_revert {
            happened = true;
        } else {
            if let Some(Pending::Resize { new }) = &self.pending {
                if head.len() == *new {
                    durable.resize(*new, 0);
                    happened = true;
                }
            }
            assert_eq!(head.len(), durable.len(), "head size after the crash");
            for b in 0..head.len().div_ceil(BS) {
                let r = b * BS..((b + 1) * BS).min(head.len());
                st.blocks_checked += 1;
                let got = h(&head[r.clone()]);
                if got == h(&durable[r.clone()]) {
                    if !self.maybe.contains_key(&b) {
                        st.blocks_exact += 1;
                    }
                    continue;
                }
                if self.maybe.get(&b).is_some_and(|vals| vals.contains(&got)) {
                    continue;
                }
                st.lost += 1;
                panic!(
                    "{}: block {b} after the crash holds neither its flushed content nor any later write (in flight: {:?})",
                    self.uri,
                    self.pending.as_ref().map(|p| format!("{p:?}").chars().take(60).collect::<String>())
                );
            }
        }
        if let Some(Pending::Snap { name, .. }) = &self.pending {
            happened |= names.contains(name);
        }

        // Clones: acknowledged ones read as their snapshot; one in flight
        // either does not exist or is a whole clone.
        for (curi, snap, want) in &self.clones {
            let c = Volume::open(curi, &OpenOptions::read_only())
                .unwrap_or_else(|e| panic!("clone {curi}: {e}"));
            assert!(
                read_all(&c) == *want,
                "clone {curi} of {snap} changed after the crash"
            );
            st.clones_checked += 1;
        }
        let mut survived = None;
        if let Some(Pending::Clone { uri, snap }) = &self.pending {
            match Volume::open(uri, &OpenOptions::read_only()) {
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    panic!("clone {uri} interrupted by a crash is neither absent nor whole: {e}")
                }
                Ok(c) => {
                    let info = c.info().expect("info");
                    assert_eq!(
                        info.base,
                        Some(format!("{}%{snap}", self.uri)),
                        "interrupted clone {uri} lost its base"
                    );
                    assert!(
                        read_all(&c) == self.snaps[snap],
                        "interrupted clone {uri} reads wrong"
                    );
                    happened = true;
                    st.clones_checked += 1;
                    survived = Some((uri.clone(), snap.clone(), self.snaps[snap].clone()));
                }
            }
        }
        // A clone that made it is checked after later crashes too.
        self.clones.extend(survived);
        if self.pending.is_some() {
            if happened {
                st.inflight_happened += 1;
            } else {
                st.inflight_not += 1;
            }
        }

        // Adopt what survived.
        self.cur = head.clone();
        self.durable = head;
        self.maybe.clear();
        self.unflushed_writes = 0;
        self.snaps = found;
        self.pending = None;
        self.vol = Some(v);
        st.crashes += 1;
    }

    fn read_snap(&self, name: &str) -> Vec<u8> {
        let suri = format!("{}%{name}", self.uri);
        let s = Volume::open(&suri, &OpenOptions::read_only())
            .unwrap_or_else(|e| panic!("{suri}: {e}"));
        read_all(&s)
    }
}

/// Runs one case: crash after `crash_at` backend operations, recover,
/// check; crash again early after recovery, recover, check; then a clean
/// close and an index rebuild must agree.
fn case(kind: Kind, wseed: u64, crash_at: u64, rseed: u64, st: &mut Stats) {
    let mut w = World::new(kind, wseed);
    let mut aux = StdRng::seed_from_u64(rseed);
    st.cases += 1;
    st.crash_points.insert((wseed, crash_at));
    w.mem.crash_after(crash_at);
    for phase in 0..2 {
        let mut crashed = false;
        for _ in 0..STEPS {
            if let Err(e) = w.step(st) {
                assert!(w.mem.has_crashed(), "operation failed without a crash: {e}");
                crashed = true;
                break;
            }
        }
        if !crashed {
            // Past the end of the workload: crash with whatever is unsynced.
            w.mem.crash_now();
        }
        let drop_index = aux.gen_bool(0.3);
        let crash_reopen = aux.gen_bool(0.2).then(|| aux.gen_range(0..6));
        w.recover_and_check(aux.gen(), drop_index, crash_reopen, st);
        if phase == 0 {
            w.mem.crash_after(aux.gen_range(0..30));
        }
    }
    // A clean close, then a full rebuild from the log, read the same.
    let head = w.cur.clone();
    w.vol
        .take()
        .unwrap()
        .close()
        .expect("clean close after recovery");
    let v = Volume::open(
        &w.uri,
        &OpenOptions {
            rebuild_index: true,
            ..World::opts(&w.place)
        },
    )
    .expect("rebuild");
    assert!(
        read_all(&v) == head,
        "rebuilt index disagrees with the recovered one"
    );
    v.close().unwrap();
    let rep = hlfs::fsck(&w.uri, false).expect("fsck");
    assert!(
        rep.errors.is_empty(),
        "fsck after recovery: {:?}",
        rep.errors
    );
}

/// Backend operations the workload of `wseed` performs without a crash.
fn workload_ops(kind: Kind, wseed: u64) -> u64 {
    let mut w = World::new(kind, wseed);
    let mut st = Stats::default();
    let start = w.mem.ops();
    for _ in 0..STEPS {
        w.step(&mut st).expect("workload without crash");
    }
    w.mem.ops() - start
}

fn run(kind: Kind, workloads: u64, per_workload: u64) -> Stats {
    let mut st = Stats::default();
    for wseed in 0..workloads {
        let total = workload_ops(kind, wseed);
        let mut rng = StdRng::seed_from_u64(wseed ^ 0xc0ffee);
        // Spread the crash points over the whole workload, and just past it.
        for i in 0..per_workload {
            let crash_at = (i * (total + 2)) / per_workload;
            case(kind, wseed, crash_at, rng.gen(), &mut st);
        }
    }
    println!("{kind:?}: {st:#?}", st = Summary(&st));
    assert_eq!(st.lost, 0);
    assert!(
        st.crash_points.len() as u64 >= workloads * per_workload / 2,
        "too few distinct crash points"
    );
    st
}

/// Prints the counts, not the set of crash points.
struct Summary<'a>(&'a Stats);

impl std::fmt::Debug for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        f.debug_struct("crash test")
            .field("cases", &s.cases)
            .field("distinct crash points", &s.crash_points.len())
            .field("crashes recovered", &s.crashes)
            .field("crashes during reopen", &s.reopen_crashes)
            .field("recoveries without index", &s.index_dropped)
            .field("writes acknowledged", &s.writes_acked)
            .field("writes flushed before a crash", &s.writes_durable)
            .field("blocks checked", &s.blocks_checked)
            .field("blocks that had to be exact", &s.blocks_exact)
            .field("snapshots checked", &s.snapshots_checked)
            .field("clones checked", &s.clones_checked)
            .field("in-flight ops that happened", &s.inflight_happened)
            .field("in-flight ops that did not", &s.inflight_not)
            .field("lost", &s.lost)
            .finish()
    }
}

/// `HLFS_CRASH_WORKLOADS` and `HLFS_CRASH_POINTS` (per workload) raise the counts.
fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn crash_anywhere_loses_nothing_acknowledged() {
    run(
        Kind::Mem,
        env("HLFS_CRASH_WORKLOADS", 4),
        env("HLFS_CRASH_POINTS", 32),
    );
}

thread_local! {
    /// Whether this thread's test opens volumes with `direct_io`.
    static DIRECT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The same with page-aligned records and batch records (cache=none): a
/// crash inside a batch (half pushed, or sealed but not synced), at a
/// segment roll or a checkpoint, loses no acknowledged write.
#[test]
fn crash_anywhere_with_batch_records() {
    DIRECT.with(|d| d.set(true));
    let st = run(
        Kind::Mem,
        env("HLFS_CRASH_WORKLOADS", 4),
        env("HLFS_CRASH_POINTS", 32),
    );
    assert!(st.writes_acked > 0);
}

#[test]
fn crash_anywhere_with_hdfs_like_visibility() {
    run(
        Kind::MemClosedOnly,
        env("HLFS_CRASH_WORKLOADS", 4),
        env("HLFS_CRASH_POINTS", 32),
    );
}
