//! The segment cleaner (`Volume::gc`).
//!
//! Properties:
//! - after a pass, the head, every snapshot view and every clone read
//!   exactly what they read before; the log shrinks by the dead space of
//!   the cleaned segments; fsck is clean; the volume reopens (also with its
//!   index deleted, replaying from the checkpoint that is now the log's base);
//! - blocks a snapshot (or a clone's base snapshot) still reads are never
//!   reclaimed; deleting the snapshot makes them reclaimable;
//! - writes racing a pass are never lost;
//! - a crash at any step of a pass (every mutating backend operation, on the
//!   memory backend and on the strict HDFS model) leaves a volume that opens
//!   and reads exactly as before the pass.

mod common;

use common::{pattern, read_all, Kind, Place};
use hlfs::{clone_volume, fsck, GcOptions, OpenOptions, Volume};
use rand::{Rng, SeedableRng};

const BS: u64 = 4096;
const SIZE: u64 = 2 << 20;

fn all_now() -> GcOptions {
    GcOptions { max_utilization: 1.0, max_segments: 0, retire_grace_secs: 0 }
}

fn opts(place: &Place) -> OpenOptions {
    OpenOptions { segment_size: 64 << 10, checkpoint_every: 1 << 30, ..place.opts() }
}

/// Writes `rounds` rounds of random 4 KiB overwrites (seeded), flushing
/// after each round; returns the expected head.
fn churn(v: &Volume, head: &mut [u8], seed: u64, rounds: usize, per_round: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for r in 0..rounds {
        for i in 0..per_round {
            let b = rng.gen_range(0..SIZE / BS);
            let d = pattern(seed ^ ((r * 1000 + i) as u64) << 8 ^ b, BS as usize);
            v.write(b * BS, &d).unwrap();
            head[(b * BS) as usize..((b + 1) * BS) as usize].copy_from_slice(&d);
        }
        v.flush().unwrap();
    }
}

fn log_bytes(place: &Place, name: &str) -> u64 {
    if place.kind == Kind::Local {
        // A background cleaner may retire files while this lists them.
        let dir = std::path::PathBuf::from(place.path(name));
        return std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
    }
    place
        .listing(name)
        .iter()
        .filter(|(p, _)| p.contains("/seg-"))
        .map(|(_, l)| l)
        .sum()
}

fn check_pass(kind: Kind) {
    let place = Place::new(kind);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    let mut head = vec![0u8; SIZE as usize];
    churn(&v, &mut head, 1, 4, 200);
    v.snapshot_create("s1").unwrap();
    let s1 = head.clone();
    churn(&v, &mut head, 2, 6, 200);
    v.flush().unwrap();
    clone_volume(&format!("{uri}%s1"), &place.uri("c"), None).unwrap();

    let before = log_bytes(&place, "v");
    let mut seen = Vec::new();
    let rep = v.gc(&all_now(), &mut |d, t| seen.push((d, t))).unwrap();
    assert!(rep.segments_cleaned > 0, "{kind:?}: {rep:?}");
    assert!(seen.last().is_some_and(|(d, t)| d == t), "progress {seen:?}");
    let after = log_bytes(&place, "v");
    assert!(after < before, "{kind:?}: log {before} -> {after} bytes ({rep:?})");
    assert_eq!(read_all(&v), head, "{kind:?}: head after gc");

    // Views and clones opened now read the relocated blocks.
    let snap = Volume::open(&format!("{uri}%s1"), &OpenOptions::read_only()).unwrap();
    assert!(read_all(&snap) == s1, "{kind:?}: snapshot after gc");
    let c = Volume::open(&place.uri("c"), &place.opts()).unwrap();
    assert!(read_all(&c) == s1, "{kind:?}: clone after gc");
    c.close().unwrap();
    v.close().unwrap();

    let rep = fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{kind:?}: {:?}", rep.errors);
    // The log's start is gone: a rebuild starts at its checkpoint.
    let v = Volume::open(&uri, &OpenOptions { rebuild_index: true, ..opts(&place) }).unwrap();
    assert!(read_all(&v) == head, "{kind:?}: head after rebuild");
    // A second pass after the rebuild works on the rebuilt index.
    v.gc(&GcOptions { retire_grace_secs: 0, ..Default::default() }, &mut |_, _| {}).unwrap();
    assert!(read_all(&v) == head);
    v.close().unwrap();
}

#[test]
fn a_pass_keeps_every_view_and_shrinks_the_log() {
    for kind in [Kind::Local, Kind::Mem, Kind::MemClosedOnly] {
        check_pass(kind);
    }
}

#[test]
fn snapshot_blocks_stay_until_the_snapshot_goes() {
    let place = Place::new(Kind::Mem);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    let mut head = vec![0u8; SIZE as usize];
    // Fill the whole volume, snapshot, then overwrite all of it.
    let full: Vec<u8> = pattern(7, SIZE as usize);
    v.write(0, &full).unwrap();
    v.snapshot_create("old").unwrap();
    let new = pattern(8, SIZE as usize);
    v.write(0, &new).unwrap();
    v.flush().unwrap();
    head.copy_from_slice(&new);
    let live_with_snap = v.info().unwrap().live_bytes;
    assert_eq!(live_with_snap, 2 * SIZE, "both generations are live");
    v.gc(&all_now(), &mut |_, _| {}).unwrap();
    let snap = Volume::open(&format!("{uri}%old"), &OpenOptions::read_only()).unwrap();
    assert!(read_all(&snap) == full, "the snapshot lost blocks to the cleaner");
    drop(snap);
    let with_snap = log_bytes(&place, "v");

    v.snapshot_delete("old").unwrap();
    assert_eq!(v.info().unwrap().live_bytes, SIZE);
    let rep = v.gc(&all_now(), &mut |_, _| {}).unwrap();
    let without = log_bytes(&place, "v");
    assert!(
        without + SIZE / 2 < with_snap,
        "deleting the snapshot freed too little: {with_snap} -> {without} ({rep:?})"
    );
    assert!(read_all(&v) == head);
    v.close().unwrap();
}

#[test]
fn writes_racing_a_pass_are_kept() {
    let place = Place::new(Kind::Local);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = std::sync::Arc::new(Volume::open(&uri, &opts(&place)).unwrap());
    let mut head = vec![0u8; SIZE as usize];
    churn(&v, &mut head, 11, 5, 200);
    let writer = {
        let v = v.clone();
        std::thread::spawn(move || {
            let mut mine = Vec::new();
            let mut rng = rand::rngs::StdRng::seed_from_u64(99);
            for i in 0..600u64 {
                let b = rng.gen_range(0..SIZE / BS);
                let d = pattern(0xabc0_0000 + i, BS as usize);
                v.write(b * BS, &d).unwrap();
                mine.push((b, d));
                if i % 50 == 0 {
                    v.flush().unwrap();
                }
            }
            mine
        })
    };
    for _ in 0..3 {
        v.gc(&GcOptions { retire_grace_secs: 0, ..Default::default() }, &mut |_, _| {}).unwrap();
    }
    for (b, d) in writer.join().unwrap() {
        head[(b * BS) as usize..((b + 1) * BS) as usize].copy_from_slice(&d);
    }
    assert!(read_all(&v) == head, "a racing write was lost or a stale copy won");
    let v = std::sync::Arc::try_unwrap(v).ok().unwrap();
    v.close().unwrap();
    let v = Volume::open(&uri, &OpenOptions { rebuild_index: true, ..opts(&place) }).unwrap();
    assert!(read_all(&v) == head, "after rebuild");
    v.close().unwrap();
}

fn crash_every_step(kind: Kind) -> u64 {
    let mut points = 0;
    let mut n = 0u64;
    loop {
        let place = Place::new(kind);
        let mem = place.mem.clone().expect("memory backend");
        let uri = place.uri("v");
        Volume::create(&uri, SIZE).unwrap();
        let v = Volume::open(&uri, &opts(&place)).unwrap();
        let mut head = vec![0u8; SIZE as usize];
        churn(&v, &mut head, 5, 3, 150);
        v.snapshot_create("s").unwrap();
        let snap = head.clone();
        churn(&v, &mut head, 6, 3, 150);
        v.flush().unwrap();

        mem.crash_after(n);
        let r = v.gc(&all_now(), &mut |_, _| {});
        let crashed = mem.has_crashed();
        drop(v);
        if !crashed {
            r.unwrap();
            return points;
        }
        points += 1;
        mem.recover(n ^ 0x9e37);
        let v = Volume::open(&uri, &opts(&place))
            .unwrap_or_else(|e| panic!("{kind:?}: crash after op {n} of gc: volume does not open: {e}"));
        assert!(read_all(&v) == head, "{kind:?}: crash after op {n} of gc: head differs");
        let s = Volume::open(&format!("{uri}%s"), &OpenOptions::read_only()).unwrap();
        assert!(read_all(&s) == snap, "{kind:?}: crash after op {n}: snapshot differs");
        drop(s);
        // And the interrupted pass can be run again.
        v.gc(&all_now(), &mut |_, _| {}).unwrap();
        assert!(read_all(&v) == head, "{kind:?}: crash after op {n}: head after a second pass");
        v.close().unwrap();
        let rep = fsck(&uri, false).unwrap();
        assert!(rep.errors.is_empty(), "{kind:?}: crash after op {n}: {:?}", rep.errors);
        n += 1;
    }
}

#[test]
fn a_crash_at_any_step_of_a_pass_loses_nothing() {
    for kind in [Kind::Mem, Kind::MemClosedOnly] {
        let points = crash_every_step(kind);
        assert!(points > 5, "{kind:?}: only {points} crash points");
        eprintln!("{kind:?}: {points} crash points in a gc pass, all recovered");
    }
}

#[test]
fn the_background_cleaner_keeps_the_log_bounded() {
    // Property: with a background cleaner running (as in QEMU), steady
    // random overwrites of a volume keep its segments below the policy's
    // ratio of log to live bytes (plus one segment of slack per pass), and
    // every block reads back.
    let place = Place::new(Kind::Local);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = std::sync::Arc::new(Volume::open(&uri, &opts(&place)).unwrap());
    let policy = hlfs::BackgroundGc {
        interval: std::time::Duration::from_millis(20),
        max_log_ratio: 1.5,
        min_dead_bytes: 0,
        max_rate: 1 << 30,
        batch: 4,
        gc: GcOptions { retire_grace_secs: 0, ..Default::default() },
    };
    let gc = v.spawn_gc(policy).unwrap();
    let mut head = vec![0u8; SIZE as usize];
    for round in 0..8 {
        churn(&v, &mut head, 100 + round, 4, 256);
        std::thread::sleep(std::time::Duration::from_millis(60));
    }
    // Let the cleaner catch up with the last writes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ratio = |v: &Volume| {
        let i = v.info().unwrap();
        log_bytes(&place, "v") as f64 / i.live_bytes as f64
    };
    while ratio(&v) > 1.5 + 2.0 * (64 << 10) as f64 / SIZE as f64 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    gc.stop();
    let r = ratio(&v);
    assert!(r <= 1.5 + 2.0 * (64 << 10) as f64 / SIZE as f64, "log/live ratio stayed at {r:.2}");
    assert!(read_all(&v) == head);
    std::sync::Arc::try_unwrap(v).ok().expect("the cleaner let go of the volume").close().unwrap();
}

/// A clone (which reads through a read-only view of its base snapshot) and
/// a plain read-only view stay open, *unregistered* (their registrations
/// removed, as for a reader that may not write the directory: readers.rs
/// covers registered ones), while the base's writer cleans the log and
/// deletes the retired segments at once: their next reads find their
/// segments (and the checkpoint the views search) gone, reload the view and
/// read exactly what they read before.
#[test]
fn read_only_views_outlive_the_deletion_of_their_segments() {
    for kind in [Kind::Local, Kind::Mem, Kind::MemClosedOnly] {
        let place = Place::new(kind);
        let uri = place.uri("v");
        Volume::create(&uri, SIZE).unwrap();
        let v = Volume::open(&uri, &opts(&place)).unwrap();
        let mut head = vec![0u8; SIZE as usize];
        churn(&v, &mut head, 21, 3, 150);
        v.snapshot_create("s").unwrap();
        v.close().unwrap();
        let snap = head.clone();
        clone_volume(&format!("{uri}%s"), &place.uri("c"), None).unwrap();
        let c = Volume::open(&place.uri("c"), &opts(&place)).unwrap();
        let view = Volume::open(&format!("{uri}%s"), &OpenOptions::read_only()).unwrap();
        let head_view = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
        assert!(read_all(&view) == snap && read_all(&c) == snap, "{kind:?}: before");
        let b = place.backend();
        let mut unregistered = 0;
        for n in b.list(&place.path("v")).unwrap() {
            if n.starts_with("reader-") {
                b.delete(&format!("{}/{n}", place.path("v"))).unwrap();
                unregistered += 1;
            }
        }
        assert_eq!(unregistered, 3, "{kind:?}: the clone's base, the snapshot view and the head view registered");

        let v = Volume::open(&uri, &opts(&place)).unwrap();
        churn(&v, &mut head, 22, 3, 150);
        let before: Vec<String> = place.listing("v").into_iter().map(|(n, _)| n).collect();
        for _ in 0..2 {
            v.gc(&all_now(), &mut |_, _| {}).unwrap();
        }
        let after: Vec<String> = place.listing("v").into_iter().map(|(n, _)| n).collect();
        let is_seg = |n: &String| n.rsplit('/').next().is_some_and(|f| f.starts_with("seg-"));
        let gone = before.iter().filter(|n| is_seg(n) && !after.contains(n)).count();
        assert!(gone > 0, "{kind:?}: the passes deleted no segment; the test proves nothing");

        assert!(read_all(&view) == snap, "{kind:?}: snapshot view after its segments were deleted");
        assert!(read_all(&c) == snap, "{kind:?}: clone after its base's segments were deleted");
        // A view of the head reloads to the head as it is now.
        assert!(read_all(&head_view) == head, "{kind:?}: head view after the reload");
        // A deleted snapshot is reported as such, not as a missing segment.
        drop(c);
        delete_clone_and_snapshot(&place, &v);
        churn(&v, &mut head, 23, 2, 150);
        for _ in 0..2 {
            v.gc(&all_now(), &mut |_, _| {}).unwrap();
        }
        let mut buf = vec![0u8; SIZE as usize];
        match view.read(0, &mut buf) {
            Ok(()) => assert!(buf == snap, "{kind:?}: a view of a deleted snapshot read something else"),
            Err(e) => assert!(e.to_string().contains("was deleted while this view was open"), "{kind:?}: {e}"),
        }
        v.close().unwrap();
    }
}

fn delete_clone_and_snapshot(place: &Place, v: &Volume) {
    hlfs::delete_volume(&place.uri("c")).unwrap();
    v.snapshot_delete("s").unwrap();
}

/// The cleaner copies live blocks in logical order: a volume filled
/// sequentially and then scattered by random 4 KiB overwrites is, after a
/// pass over every segment, stored in block order again, in few extents
/// (runs of blocks back to back in the log), where copying in log order
/// would keep one extent per overwritten block. It still reads the same.
#[test]
fn cleaning_restores_logical_order() {
    let place = Place::new(Kind::Local);
    let uri = place.uri("ordered");
    let size: u64 = 8 << 20;
    let blocks = size / BS;
    // The whole map in memory, so that `extents` counts all of it.
    let opts = OpenOptions {
        segment_size: 1 << 20,
        checkpoint_every: 1 << 30,
        map_memory: 1 << 30,
        ..place.opts()
    };
    Volume::create(&uri, size).unwrap();
    let v = Volume::open(&uri, &opts).unwrap();
    let mut head = pattern(77, size as usize);
    for off in (0..size).step_by(1 << 20) {
        v.write(off, &head[off as usize..(off + (1 << 20)) as usize]).unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for i in 0..blocks as usize * 3 / 10 {
        let b = rng.gen_range(0..blocks);
        let d = pattern(1_000 + i as u64, BS as usize);
        v.write(b * BS, &d).unwrap();
        head[(b * BS) as usize..((b + 1) * BS) as usize].copy_from_slice(&d);
    }
    // Reopen and write one block, so that the segment the overwrites went to
    // is sealed and not the newest (the cleaner leaves those alone).
    v.close().unwrap();
    let v = Volume::open(&uri, &opts).unwrap();
    v.write(0, &head[..BS as usize]).unwrap();
    v.flush().unwrap();
    let scattered = v.info().unwrap().extents;
    assert!(scattered > blocks / 5, "random overwrites left only {scattered} extents");
    v.gc(&all_now(), &mut |_, _| {}).unwrap();
    let after = v.info().unwrap().extents;
    // A record holds at most 256 blocks and a segment ~255, so at least
    // blocks/255 extents; allow for segment and batch boundaries.
    assert!(
        after <= blocks / 255 * 3 + 8,
        "after cleaning every segment the map has {after} extents for {blocks} blocks (before: {scattered}): the copies are not in logical order"
    );
    assert!(read_all(&v) == head, "cleaning changed what the volume reads");
    v.close().unwrap();
    assert!(fsck(&uri, false).unwrap().errors.is_empty());
    eprintln!("extents: {scattered} scattered, {after} after cleaning ({blocks} blocks)");
}
