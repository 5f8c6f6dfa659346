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
//!
//! On a real HDFS (`real_hdfs_sigkill_loses_nothing_acknowledged`, ignored
//! without `HLFS_TEST_HDFS`) no backend can be made to crash: a writer in a
//! child process is SIGKILLed instead, and the same ledger (`Ledger`)
//! checks what the next writer finds.

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

/// What a volume's head must hold after a crash: its content as of the
/// last acknowledged flush, except blocks written since, which may hold any
/// value they took since then (old or new), nothing else.
struct Ledger {
    /// Head including unflushed writes.
    cur: Vec<u8>,
    /// Head as of the last acknowledged flush (or flushing operation).
    durable: Vec<u8>,
    /// Per block written since then: hashes of every value it took.
    maybe: HashMap<usize, Vec<u64>>,
    /// Acknowledged writes not yet covered by a flush.
    unflushed_writes: u64,
}

impl Ledger {
    fn new(size: usize) -> Ledger {
        Ledger {
            cur: vec![0; size],
            durable: vec![0; size],
            maybe: HashMap::new(),
            unflushed_writes: 0,
        }
    }

    /// Everything so far is durable.
    fn synced(&mut self, st: &mut Stats) {
        self.durable = self.cur.clone();
        self.maybe.clear();
        st.writes_durable += self.unflushed_writes;
        self.unflushed_writes = 0;
    }

    /// `data` was written at `off`, acknowledged or not: even a failed or
    /// interrupted write may have reached the log in part.
    fn write(&mut self, off: usize, data: &[u8]) {
        self.cur[off..off + data.len()].copy_from_slice(data);
        self.touched(off, data.len());
    }

    /// `[off, off+len)` was zeroed, acknowledged or not.
    fn zero(&mut self, off: usize, len: usize) {
        self.cur[off..off + len].fill(0);
        self.touched(off, len);
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

    /// Checks a recovered `head` block by block against `durable` (the
    /// ledger's, or one that an operation in flight changed): each block
    /// holds its durable content or a value it took since. Panics naming the
    /// first lost block and `context()`.
    fn check(&self, head: &[u8], durable: &[u8], st: &mut Stats, context: &dyn Fn() -> String) {
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
                "{}: block {b} after the crash holds neither its flushed content nor any later write",
                context()
            );
        }
    }

    /// What survived the crash is the new starting point.
    fn adopt(&mut self, head: Vec<u8>) {
        self.cur = head.clone();
        self.durable = head;
        self.maybe.clear();
        self.unflushed_writes = 0;
    }
}

/// The volume under test and a ledger of what it must hold.
struct World {
    place: Place,
    mem: MemBackend,
    uri: String,
    vol: Option<Volume>,
    rng: StdRng,
    n: u64,
    l: Ledger,
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
            l: Ledger::new(size),
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
        let size = self.l.cur.len();
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
                self.l.write(off, &data);
                if r.is_ok() {
                    self.l.unflushed_writes += 1;
                    st.writes_acked += 1;
                }
                r
            }
            50..=57 => {
                let len = self.rng.gen_range(1..=64 * 8).min(sectors);
                let off = self.rng.gen_range(0..=sectors - len) * 512;
                let len = len * 512;
                let r = self.vol().write_zeroes(off as u64, len as u64);
                self.l.zero(off, len);
                r
            }
            58..=71 => {
                let r = self.vol().flush();
                if r.is_ok() {
                    self.l.synced(st);
                }
                r
            }
            72..=79 if self.snaps.len() < MAX_SNAPS => {
                self.n += 1;
                let name = format!("s{}", self.n & 0xfffff);
                match self.vol().snapshot_create(&name) {
                    Ok(()) => {
                        self.snaps.insert(name, self.l.cur.clone());
                        self.l.synced(st);
                        Ok(())
                    }
                    Err(e) => {
                        self.pending = Some(Pending::Snap {
                            name,
                            content: self.l.cur.clone(),
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
                        self.l.synced(st);
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
                        let old = std::mem::replace(&mut self.l.cur, self.snaps[&target].clone());
                        let names = common::snap_names(self.vol());
                        for n in names.iter().filter(|n| !before.contains(*n)) {
                            self.snaps.insert(n.clone(), old.clone());
                        }
                        self.l.synced(st);
                        Ok(())
                    }
                    Err(e) => {
                        self.pending = Some(Pending::Revert {
                            target,
                            old: self.l.cur.clone(),
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
                        self.l.cur.resize(new, 0);
                        self.l.synced(st);
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
                self.l.synced(st);
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
        let mut durable = self.l.durable.clone();
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
            self.l.check(&head, &durable, st, &|| {
                format!(
                    "{}, in flight: {:?}",
                    self.uri,
                    self.pending.as_ref().map(|p| format!("{p:?}").chars().take(60).collect::<String>())
                )
            });
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
        self.l.adopt(head);
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
    let head = w.l.cur.clone();
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

/// One command of the real-HDFS crash test's writer.
#[derive(Debug)]
enum Cmd {
    Write { off: usize, seed: u64, len: usize },
    Zero { off: usize, len: usize },
    Flush,
    Snap(String),
}

impl Cmd {
    fn line(&self) -> String {
        match self {
            Cmd::Write { off, seed, len } => format!("write {off} {seed} {len}"),
            Cmd::Zero { off, len } => format!("zero {off} {len}"),
            Cmd::Flush => "flush".to_string(),
            Cmd::Snap(name) => format!("snap {name}"),
        }
    }
}

/// The ledger of the real-HDFS crash test.
struct Acked {
    l: Ledger,
    st: Stats,
    /// Acknowledged snapshots and their contents.
    snaps: BTreeMap<String, Vec<u8>>,
}

impl Acked {
    /// `cmd` is sent: it may happen, in part, from now on. Returns the
    /// content a snapshot it creates must have.
    fn sent(&mut self, cmd: &Cmd) -> Option<Vec<u8>> {
        match cmd {
            Cmd::Write { off, seed, len } => self.l.write(*off, &pattern(*seed, *len)),
            Cmd::Zero { off, len } => self.l.zero(*off, *len),
            Cmd::Flush => {}
            Cmd::Snap(_) => return Some(self.l.cur.clone()),
        }
        None
    }

    /// `cmd` is acknowledged.
    fn acked(&mut self, cmd: &Cmd, content: Option<Vec<u8>>) {
        match cmd {
            Cmd::Write { .. } => {
                self.l.unflushed_writes += 1;
                self.st.writes_acked += 1;
            }
            Cmd::Zero { .. } => {}
            Cmd::Flush => self.l.synced(&mut self.st),
            Cmd::Snap(name) => {
                self.snaps.insert(name.clone(), content.expect("snapshot content"));
                self.l.synced(&mut self.st);
            }
        }
    }
}

/// A real crash on a real HDFS: a writer in a child process (its own HDFS
/// client, leases and index cache, as a QEMU would hold them) runs writes,
/// write-zeroes, flushes and snapshots, and is SIGKILLed, either in the
/// middle of a command (0 to 30 ms after sending it) or idle after an
/// acknowledged one, always after at least one acknowledged flush. The next
/// read-write opener takes over (the dead holder's lock, HDFS lease
/// recovery of the open segment), sometimes with a fresh index cache (as
/// another host), and finds every block as of the last acknowledged flush
/// or as a later write, every acknowledged snapshot whole, and a snapshot
/// in flight whole or absent; fsck finds no error. The next writer starts on
/// what survived. `HLFS_CRASH_KILLS` (10) kills in all; `HLFS_CRASH_SEED`
/// (printed; random by default) draws the commands and the kill times.
#[test]
#[ignore = "needs HLFS_TEST_HDFS=hdfs://host:port/dir"]
fn real_hdfs_sigkill_loses_nothing_acknowledged() {
    use common::child::{serve_if_child, ChildOpts, RemoteVolume};
    use std::time::{Duration, Instant};
    if serve_if_child() {
        return;
    }
    let kills = env("HLFS_CRASH_KILLS", 10);
    let seed = env("HLFS_CRASH_SEED", rand::random::<u32>() as u64);
    eprintln!("HLFS_CRASH_SEED={seed} HLFS_CRASH_KILLS={kills}");
    let mut rng = StdRng::seed_from_u64(seed);
    let place = Place::new(Kind::Hdfs);
    let uri = place.uri("vol");
    // Just over 256 blocks, so one write can span two records.
    let size = 1280usize << 10;
    let sectors = size / 512;
    Volume::create(&uri, size as u64).expect("create");
    // The writers' host: its index cache outlives each of them.
    let host = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        index_root: Some(host.path().into()),
        segment_size: 128 << 10,
        checkpoint_every: 256 << 10,
        ..place.opts()
    };
    let mut a = Acked { l: Ledger::new(size), st: Stats::default(), snaps: BTreeMap::new() };
    let mut n = seed << 20;
    let mut takeovers = Duration::ZERO;
    // Kills when idle, during a command that was answered all the same,
    // during a command that was not.
    let mut kinds = [0u32; 3];
    let t0 = Instant::now();
    for k in 0..kills {
        let mut child = Some(RemoteVolume::spawn(
            "real_hdfs_sigkill_loses_nothing_acknowledged",
            &uri,
            &ChildOpts::from(&opts),
        ));
        a.st.cases += 1;
        a.st.crash_points.insert((seed, k));
        let steps = rng.gen_range(4..28);
        let mid_command = rng.gen_bool(0.6);
        // A write returns once buffered; a flush (hsync) takes a few ms.
        let delay = if mid_command {
            Duration::from_micros(rng.gen_range(0..2500))
        } else {
            Duration::from_millis([0, 1, 10, 30][rng.gen_range(0..4)])
        };
        let mut flushed = false;
        // The command the kill interrupted, and a snapshot's content.
        let mut in_flight: Option<(Cmd, Option<Vec<u8>>)> = None;
        for i in 0..steps {
            let last = i + 1 == steps;
            // At least one acknowledged flush before the kill, and half of
            // the kills in the middle of a command are during a flush.
            let roll = if (i + 2 == steps && !flushed) || (last && mid_command && rng.gen_bool(0.5)) {
                99
            } else {
                rng.gen_range(0..100)
            };
            let cmd = match roll {
                0..=54 => {
                    let len = match rng.gen_range(0..10) {
                        0 => rng.gen_range(257 * 8..=300 * 8), // two records
                        1..=4 => rng.gen_range(1..=8),
                        _ => rng.gen_range(1..=16 * 8),
                    };
                    let off = rng.gen_range(0..=sectors - len) * 512;
                    n += 1;
                    Cmd::Write { off, seed: n, len: len * 512 }
                }
                55..=64 => {
                    let len = rng.gen_range(1..=64 * 8);
                    let off = rng.gen_range(0..=sectors - len) * 512;
                    Cmd::Zero { off, len: len * 512 }
                }
                90..=95 if a.snaps.len() < 3 => Cmd::Snap(format!("k{k}-{i}")),
                _ => Cmd::Flush,
            };
            let content = a.sent(&cmd);
            let c = child.as_mut().unwrap();
            c.send(&cmd.line());
            if last && mid_command {
                std::thread::sleep(delay);
                let late = child.take().unwrap().kill();
                let what = cmd.line().split(' ').next().unwrap().to_string();
                match late.into_iter().next() {
                    Some(r) => {
                        r.unwrap_or_else(|e| panic!("kill {k}: {} failed: {e}", cmd.line()));
                        a.acked(&cmd, content);
                        eprintln!("kill {k}: {} µs after sending a {what}, which had been acknowledged", delay.as_micros());
                        kinds[1] += 1;
                    }
                    None => {
                        eprintln!("kill {k}: {} µs into a {what}", delay.as_micros());
                        kinds[2] += 1;
                        in_flight = Some((cmd, content));
                    }
                }
                break;
            }
            c.reply().unwrap_or_else(|e| panic!("kill {k}: {} failed: {e}", cmd.line()));
            a.acked(&cmd, content);
            flushed |= matches!(cmd, Cmd::Flush | Cmd::Snap(_));
            if last {
                std::thread::sleep(delay);
                child.take().unwrap().kill();
                kinds[0] += 1;
                eprintln!("kill {k}: idle, {} ms after an acknowledged {}", delay.as_millis(), cmd.line().split(' ').next().unwrap());
            }
        }

        // Take over, as the next writer would.
        let elsewhere = tempfile::tempdir().unwrap();
        let fresh = rng.gen_bool(0.3);
        let ropts = if fresh {
            a.st.index_dropped += 1;
            OpenOptions { index_root: Some(elsewhere.path().into()), ..opts.clone() }
        } else {
            opts.clone()
        };
        let t = Instant::now();
        let v = Volume::open(&uri, &ropts)
            .unwrap_or_else(|e| panic!("kill {k} (HLFS_CRASH_SEED={seed}): {uri} does not reopen: {e}"));
        takeovers += t.elapsed();
        let head = read_all(&v);
        let ctx = || format!("kill {k} (HLFS_CRASH_SEED={seed}), in flight: {:?}", in_flight.as_ref().map(|c| c.0.line()));
        a.l.check(&head, &a.l.durable, &mut a.st, &ctx);
        let names = common::snap_names(&v);
        for name in a.snaps.keys() {
            assert!(names.contains(name), "{}: acknowledged snapshot {name} is gone; have {names:?}", ctx());
        }
        for name in &names {
            let want = match (a.snaps.get(name), &in_flight) {
                (Some(w), _) => w,
                (None, Some((Cmd::Snap(p), Some(w)))) if p == name => {
                    a.st.inflight_happened += 1;
                    w
                }
                _ => panic!("{}: snapshot {name} appeared from nowhere", ctx()),
            };
            let s = Volume::open(&format!("{uri}%{name}"), &OpenOptions::read_only())
                .unwrap_or_else(|e| panic!("{}: snapshot {name}: {e}", ctx()));
            assert!(read_all(&s) == *want, "{}: snapshot {name} changed", ctx());
            a.st.snapshots_checked += 1;
        }
        if let Some((Cmd::Snap(name), Some(content))) = in_flight {
            if names.contains(&name) {
                a.snaps.insert(name, content);
            } else {
                a.st.inflight_not += 1;
            }
        }
        v.close().unwrap_or_else(|e| panic!("kill {k}: close after the takeover: {e}"));
        let rep = hlfs::fsck(&uri, false).expect("fsck");
        assert!(rep.errors.is_empty(), "kill {k} (HLFS_CRASH_SEED={seed}): fsck: {:?}", rep.errors);
        a.l.adopt(head);
        a.st.crashes += 1;
    }
    // From the log alone, the last head reads the same.
    let v = Volume::open(&uri, &OpenOptions { rebuild_index: true, ..opts.clone() }).expect("rebuild");
    assert!(read_all(&v) == a.l.cur, "a rebuilt index disagrees with the recovered one");
    v.close().unwrap();
    eprintln!("{:#?}", Summary(&a.st));
    eprintln!(
        "{kills} kills ({} idle, {} during a command answered before the kill, {} during an unanswered one) \
         in {:.1} s; takeovers (lease recovery included) {:.2} s on average",
        kinds[0],
        kinds[1],
        kinds[2],
        t0.elapsed().as_secs_f64(),
        takeovers.as_secs_f64() / kills.max(1) as f64
    );
    assert_eq!(a.st.lost, 0);
    assert!(a.st.writes_durable > 0, "no write was flushed before a kill");
    hlfs::delete_volume(&uri).unwrap();
    place.remove_hdfs();
}
