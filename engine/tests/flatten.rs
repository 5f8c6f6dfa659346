//! Flattening clones (`Volume::flatten`) and space accounting (`Volume::du`).
//!
//! Properties:
//! - after a flatten, the clone's head and every snapshot read exactly as
//!   before, zeroed ranges stay zero, the clone names no base, its base
//!   snapshot can be deleted, and the clone still reads the same once the
//!   whole base volume is deleted (also reopened, and with its index rebuilt);
//! - a crash at any step of a flatten (every mutating backend operation, on
//!   the memory backend and on the HDFS-like one) leaves a volume that reads
//!   exactly as before; a second flatten then finishes the job;
//! - `du`: each view's exclusive plus shared bytes are the data it reads
//!   from its own volume, the totals add up to the live bytes, and a
//!   clone's base bytes are what it still reads from its base.

mod common;

use common::{assert_same, pattern, read_all, Kind, Place};
use hlfs::{clone_volume, delete_volume, fsck, ErrorKind, OpenOptions, Volume};

const BS: u64 = 4096;
const SIZE: u64 = 1 << 20;

fn opts(place: &Place) -> OpenOptions {
    OpenOptions { segment_size: 64 << 10, ..place.opts() }
}

/// A base with data and a snapshot `s`, and a clone of it with its own
/// writes, a zeroed range and a snapshot `c1`; returns (base uri, clone
/// uri, base snapshot, clone head, clone snapshot c1).
struct Family {
    base: String,
    clone: String,
    base_snap: Vec<u8>,
    head: Vec<u8>,
    c1: Vec<u8>,
}

fn family(place: &Place) -> Family {
    let base = place.uri("base");
    let clone = place.uri("clone");
    Volume::create(&base, SIZE).unwrap();
    let v = Volume::open(&base, &opts(place)).unwrap();
    let mut b = pattern(1, SIZE as usize);
    // A hole (never written) and a zeroed range in the base.
    b[(200 * BS) as usize..(220 * BS) as usize].fill(0);
    v.write(0, &b[..(200 * BS) as usize]).unwrap();
    v.write(220 * BS, &b[(220 * BS) as usize..]).unwrap();
    v.write_zeroes(30 * BS, 10 * BS).unwrap();
    b[(30 * BS) as usize..(40 * BS) as usize].fill(0);
    v.snapshot_create("s").unwrap();
    // Later writes to the base head do not reach the clone.
    v.write(0, &[9u8; 8192]).unwrap();
    v.close().unwrap();
    clone_volume(&format!("{base}%s"), &clone, Some(SIZE + (64 << 10))).unwrap();
    let c = Volume::open(&clone, &opts(place)).unwrap();
    let mut head = b.clone();
    head.resize((SIZE + (64 << 10)) as usize, 0);
    c.write(4 * BS + 512, &[2u8; 1024]).unwrap();
    head[(4 * BS + 512) as usize..(4 * BS + 1536) as usize].fill(2);
    c.discard(100 * BS, 20 * BS).unwrap();
    head[(100 * BS) as usize..(120 * BS) as usize].fill(0);
    c.snapshot_create("c1").unwrap();
    let c1 = head.clone();
    c.write(50 * BS, &[3u8; 4096]).unwrap();
    head[(50 * BS) as usize..(51 * BS) as usize].fill(3);
    c.write_zeroes(150 * BS, 3 * BS).unwrap();
    head[(150 * BS) as usize..(153 * BS) as usize].fill(0);
    c.write(SIZE, &[4u8; 4096]).unwrap();
    head[SIZE as usize..(SIZE + BS) as usize].fill(4);
    c.close().unwrap();
    Family { base, clone, base_snap: b, head, c1 }
}

fn check_reads(f: &Family, v: &Volume, what: &str) {
    assert_same(&format!("{what}: head"), &read_all(v), &f.head);
    let s = Volume::open(&format!("{}%c1", f.clone), &OpenOptions::read_only()).unwrap();
    assert_same(&format!("{what}: snapshot c1"), &read_all(&s), &f.c1);
}

fn flatten_then_drop_base(kind: Kind) {
    let place = Place::new(kind);
    let f = family(&place);
    let v = Volume::open(&f.clone, &opts(&place)).unwrap();
    let du = v.du().unwrap();
    assert!(du.base_bytes > 0, "{kind:?}: {du:?}");
    let mut seen = Vec::new();
    let rep = v.flatten(&mut |d, t| seen.push((d, t))).unwrap();
    assert_eq!(rep.base.as_deref(), Some(format!("{}%s", f.base).as_str()), "{kind:?}: {rep:?}");
    // The base blocks the clone still read, minus all-zero ones.
    assert!(rep.blocks_copied > 100, "{kind:?}: {rep:?}");
    assert_eq!(rep.blocks_copied * BS, du.base_bytes - rep.zero_blocks * BS, "{kind:?}: {rep:?} vs {du:?}");
    assert!(seen.last().is_some_and(|(d, t)| d == t && *t == SIZE / BS), "{kind:?}: progress {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "progress goes backwards: {seen:?}");
    check_reads(&f, &v, &format!("{kind:?} after flatten"));
    assert_eq!(v.info().unwrap().base, None);
    let du = v.du().unwrap();
    assert_eq!((du.base, du.base_bytes), (None, 0));
    // Nothing is left to do.
    assert_eq!(v.flatten(&mut |_, _| {}).unwrap(), hlfs::FlattenReport::default());
    v.close().unwrap();

    // The base snapshot is free to go, then the whole base.
    let b = Volume::open(&f.base, &opts(&place)).unwrap();
    assert!(b.snapshots().unwrap()[0].clones.is_empty());
    b.snapshot_delete("s").unwrap();
    b.close().unwrap();
    let v = Volume::open(&f.clone, &opts(&place)).unwrap();
    check_reads(&f, &v, &format!("{kind:?} after the base snapshot was deleted"));
    v.close().unwrap();
    delete_volume(&f.base).unwrap();
    let v = Volume::open(&f.clone, &opts(&place)).unwrap();
    check_reads(&f, &v, &format!("{kind:?} after the base volume was deleted"));
    // Zeroed ranges stay zero and writes still work.
    v.write(100 * BS, &[5u8; 512]).unwrap();
    v.close().unwrap();
    let v = Volume::open(&f.clone, &OpenOptions { rebuild_index: true, ..opts(&place) }).unwrap();
    let mut head = f.head.clone();
    head[(100 * BS) as usize..(100 * BS + 512) as usize].fill(5);
    assert_same(&format!("{kind:?}: rebuilt"), &read_all(&v), &head);
    v.close().unwrap();
    let rep = fsck(&f.clone, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
}

#[test]
fn flatten_keeps_every_view_and_frees_the_base() {
    for kind in [Kind::Local, Kind::Mem, Kind::MemClosedOnly] {
        flatten_then_drop_base(kind);
    }
}

#[test]
fn flatten_of_a_clone_of_a_clone_copies_both_bases() {
    let place = Place::new(Kind::Mem);
    let f = family(&place);
    let c = Volume::open(&f.clone, &opts(&place)).unwrap();
    c.snapshot_create("c2").unwrap();
    c.close().unwrap();
    let g = place.uri("grandchild");
    clone_volume(&format!("{}%c2", f.clone), &g, None).unwrap();
    let v = Volume::open(&g, &opts(&place)).unwrap();
    v.flatten(&mut |_, _| {}).unwrap();
    v.close().unwrap();
    // The middle volume and the first base can go: the grandchild holds all.
    delete_volume(&f.clone).unwrap();
    delete_volume(&f.base).unwrap();
    let v = Volume::open(&g, &opts(&place)).unwrap();
    assert_same("grandchild", &read_all(&v), &f.head);
    v.close().unwrap();
}

#[test]
fn flatten_of_a_plain_volume_does_nothing() {
    let place = Place::new(Kind::Mem);
    let u = place.uri("v");
    Volume::create(&u, SIZE).unwrap();
    let v = Volume::open(&u, &opts(&place)).unwrap();
    v.write(0, &[1u8; 4096]).unwrap();
    assert_eq!(v.flatten(&mut |_, _| {}).unwrap(), hlfs::FlattenReport::default());
    v.close().unwrap();
    let ro = Volume::open(&u, &OpenOptions::read_only()).unwrap();
    let e = ro.flatten(&mut |_, _| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly, "{e}");
}

fn crash_every_step(kind: Kind) -> u64 {
    let mut points = 0;
    let mut n = 0u64;
    loop {
        let place = Place::new(kind);
        let mem = place.mem.clone().expect("memory backend");
        let f = family(&place);
        let v = Volume::open(&f.clone, &opts(&place)).unwrap();
        mem.crash_after(n);
        let r = v.flatten(&mut |_, _| {});
        let crashed = mem.has_crashed();
        drop(v);
        if !crashed {
            r.unwrap();
            return points;
        }
        points += 1;
        mem.recover(n ^ 0x5bd1);
        let what = format!("{kind:?}: crash after op {n} of flatten");
        let v = Volume::open(&f.clone, &opts(&place)).unwrap_or_else(|e| panic!("{what}: the clone does not open: {e}"));
        check_reads(&f, &v, &what);
        let b = Volume::open(&format!("{}%s", f.base), &OpenOptions::read_only()).unwrap();
        assert_same(&format!("{what}: base snapshot"), &read_all(&b), &f.base_snap);
        drop(b);
        // A second flatten finishes the job.
        v.flatten(&mut |_, _| {}).unwrap_or_else(|e| panic!("{what}: second flatten: {e}"));
        assert_eq!(v.info().unwrap().base, None, "{what}");
        check_reads(&f, &v, &format!("{what}, flattened again"));
        v.close().unwrap();
        let b = Volume::open(&f.base, &opts(&place)).unwrap();
        b.snapshot_delete("s").unwrap_or_else(|e| panic!("{what}: base snapshot still held: {e}"));
        b.close().unwrap();
        delete_volume(&f.base).unwrap();
        let v = Volume::open(&f.clone, &opts(&place)).unwrap();
        check_reads(&f, &v, &format!("{what}, base deleted"));
        v.close().unwrap();
        let rep = fsck(&f.clone, false).unwrap();
        assert!(rep.errors.is_empty(), "{what}: {:?}", rep.errors);
        n += 1;
    }
}

#[test]
fn a_crash_at_any_step_of_a_flatten_loses_nothing() {
    for kind in [Kind::Mem, Kind::MemClosedOnly] {
        let points = crash_every_step(kind);
        assert!(points > 5, "{kind:?}: only {points} crash points");
        eprintln!("{kind:?}: {points} crash points in a flatten, all recovered");
    }
}

#[test]
fn du_accounts_every_view() {
    let place = Place::new(Kind::Mem);
    let u = place.uri("v");
    Volume::create(&u, SIZE).unwrap();
    let v = Volume::open(&u, &opts(&place)).unwrap();
    v.write(0, &pattern(1, (100 * BS) as usize)).unwrap(); // blocks 0..100
    v.snapshot_create("a").unwrap();
    v.write(0, &pattern(2, (10 * BS) as usize)).unwrap(); // head overwrites 0..10
    v.write(200 * BS, &pattern(3, (5 * BS) as usize)).unwrap(); // head-only 200..205
    v.snapshot_create("b").unwrap();
    v.write(10 * BS, &pattern(4, (20 * BS) as usize)).unwrap(); // head overwrites 10..30
    v.write_zeroes(90 * BS, 10 * BS).unwrap(); // head zeroes 90..100
    let d = v.du().unwrap();
    let by = |n: Option<&str>| d.views.iter().find(|x| x.snapshot.as_deref() == n).unwrap().clone();
    let (a, b, h) = (by(Some("a")), by(Some("b")), by(None));
    assert_eq!(d.views.len(), 3);
    assert_eq!(d.views[2].snapshot, None, "head comes last");
    // a: 0..10 only a reads (b and head read the newer ones); 10..100 shared.
    assert_eq!(a.exclusive_bytes, 10 * BS, "{d:?}");
    assert_eq!(a.shared_bytes, 90 * BS, "{d:?}");
    // b: its 0..10 and 200..205 are shared with the head, and a's
    // 10..100 with a (and 30..90 with the head too): nothing exclusive.
    assert_eq!(b.exclusive_bytes, 0, "{d:?}");
    assert_eq!(b.shared_bytes, 105 * BS, "{d:?}");
    // head: its 10..30 are exclusive; 0..10 and 200..205 shared with b;
    // 30..90 shared with a and b.
    assert_eq!(h.exclusive_bytes, 20 * BS, "{d:?}");
    assert_eq!(h.shared_bytes, (10 + 5 + 60) * BS, "{d:?}");
    assert_eq!(d.exclusive_bytes + d.shared_bytes + d.unread_bytes, d.live_bytes, "{d:?}");
    assert_eq!(d.live_bytes, v.info().unwrap().live_bytes);
    assert_eq!(d.provisioned_bytes, 3 * SIZE);
    assert!(d.log_bytes >= d.live_bytes, "{d:?}");
    v.close().unwrap();
    // Read-only opens report the same (the log grew by the close, which
    // also wrote a checkpoint and released the lock).
    let ro = Volume::open(&u, &OpenOptions::read_only()).unwrap();
    let r = ro.du().unwrap();
    assert!(r.log_bytes >= d.log_bytes);
    assert_eq!(hlfs::DuReport { log_bytes: d.log_bytes, files: d.files.clone(), ..r }, d);

    // A clone reads from its base what it did not overwrite.
    let c = place.uri("c");
    clone_volume(&format!("{u}%b"), &c, None).unwrap();
    let cv = Volume::open(&c, &opts(&place)).unwrap();
    cv.write(0, &pattern(5, (50 * BS) as usize)).unwrap();
    let cd = cv.du().unwrap();
    assert_eq!(cd.base.as_deref(), Some(format!("{u}%b").as_str()));
    // b reads data at 0..100 and 200..205; the clone overwrote 0..50.
    assert_eq!(cd.base_bytes, 55 * BS, "{cd:?}");
    assert_eq!(cd.views[0].base_bytes, 55 * BS);
    assert_eq!(cd.views[0].exclusive_bytes, 50 * BS);
    cv.close().unwrap();
}

/// Property (regression): once flattened, a volume that stays open no
/// longer reads through to its base: a discard of copied blocks reads zeros.
#[test]
fn a_discard_after_flatten_reads_zeros() {
    for kind in [Kind::Mem, Kind::MemClosedOnly, Kind::Local] {
        let place = Place::new(kind);
        let f = family(&place);
        let v = Volume::open(&f.clone, &opts(&place)).unwrap();
        v.flatten(&mut |_, _| {}).unwrap();
        v.discard(0, 64 * BS).unwrap();
        let mut head = f.head.clone();
        head[..(64 * BS) as usize].fill(0);
        assert_same(&format!("{kind:?}: after discard"), &read_all(&v), &head);
        assert_ne!(v.block_status(0, 64 * BS).unwrap().0, hlfs::BlockState::Data);
        v.close().unwrap();
        let v = Volume::open(&f.clone, &opts(&place)).unwrap();
        assert_same(&format!("{kind:?}: reopened"), &read_all(&v), &head);
        v.close().unwrap();
    }
}
