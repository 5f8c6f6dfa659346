//! A failed append or close where the writer holds the whole active
//! segment in memory (HDFS; here its model, `MemBackend::hdfs_model`, with
//! failures like a lost DataNode injected): the segment's bytes are written
//! again under the next segment number, the map follows them, and nothing
//! written is lost, in this session and after a reopen. The failed file is
//! left outside the log's chain, or, where a flush had made a prefix of it
//! durable, in the chain up to that prefix, followed by a segment holding
//! the rest.

mod common;
use common::*;
use hlfs::{fsck, OpenOptions, Volume};
use rand::{Rng, SeedableRng};

#[test]
fn failed_appends_and_closes_are_written_again_under_the_next_number() {
    let place = Place::new(Kind::MemClosedOnly);
    let mem = place.mem.clone().expect("a memory backend");
    let uri = place.uri("v");
    let size = 4u64 << 20;
    Volume::create(&uri, size).unwrap();
    // Small pushes, so that appends happen while writing, not only at close.
    let opts = OpenOptions { segment_size: 512 << 10, ..place.opts() };
    let v = Volume::open(&uri, &opts).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut failures = 0;
    for i in 0..300u64 {
        if i % 23 == 7 {
            // One append or close fails; the next attempt gets through.
            mem.fail_transiently(1);
            failures += 1;
        }
        if i % 31 == 13 {
            // One sync (hsync) fails: the flush writes the unsynced part
            // again and syncs that.
            mem.fail_syncs_transiently(1);
            failures += 1;
        }
        let b = rng.gen_range(0..size / 4096 - 16);
        let n = rng.gen_range(1..=16u64);
        let data = pattern(i, (n * 4096) as usize);
        v.write(b * 4096, &data).unwrap_or_else(|e| panic!("write {i}: {e}"));
        model[(b * 4096) as usize..((b + n) * 4096) as usize].copy_from_slice(&data);
        if i % 17 == 16 {
            v.flush().unwrap_or_else(|e| panic!("flush after write {i}: {e}"));
        }
        if i % 50 == 49 {
            assert!(read_all(&v) == model, "read back after write {i}");
        }
    }
    assert!(failures > 10);
    assert!(read_all(&v) == model, "after the failures");
    v.close().unwrap();
    // A fresh index, and the cached one: both from the log as it is.
    let fresh = tempfile::tempdir().unwrap();
    let v = Volume::open(&uri, &OpenOptions { index_root: Some(fresh.path().into()), ..opts.clone() }).unwrap();
    assert!(read_all(&v) == model, "reopened with a new index");
    v.close().unwrap();
    let v = Volume::open(&uri, &opts).unwrap();
    assert!(read_all(&v) == model, "reopened with its own index");
    v.close().unwrap();
    let rep = fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
}

/// Past `rewrite_attempts` failures in a row (a NameNode down for longer
/// than the retry window, say) the flush fails with the backend's error,
/// and so do writes while the failures last, but the writer is not given
/// up: once the backend is back, the next write and flush on the same open
/// volume go through (a VM paused by `werror=stop` resumes with `cont`),
/// and every write acknowledged before, during and after the outage is
/// there, in this session and after a reopen.
#[test]
fn a_failure_that_lasts_fails_the_flush_and_the_writer_goes_on_after_it() {
    let place = Place::new(Kind::MemClosedOnly);
    let mem = place.mem.clone().expect("a memory backend");
    let uri = place.uri("v");
    let size = 1u64 << 20;
    Volume::create(&uri, size).unwrap();
    let v = Volume::open(&uri, &place.opts()).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut put = |v: &Volume, off: u64, data: Vec<u8>| -> hlfs::Result<()> {
        v.write(off, &data)?;
        model[off as usize..off as usize + data.len()].copy_from_slice(&data);
        Ok(())
    };
    put(&v, 0, pattern(1, 64 << 10)).unwrap();
    v.flush().unwrap();
    mem.fail_transiently(1000);
    put(&v, 512 << 10, pattern(2, 4096)).unwrap(); // into memory
    let e = v.flush().expect_err("every attempt fails");
    assert!(e.to_string().contains("injected"), "{e}");
    assert!(e.to_string().contains("tries again"), "the error says the volume goes on: {e}");
    // Still failing: the next write or flush fails too (and a failed write
    // changes nothing).
    let e = v.flush().expect_err("still failing");
    assert!(e.to_string().contains("injected"), "{e}");
    mem.fail_transiently(0);
    // The backend is back: the same open volume goes on.
    put(&v, 256 << 10, pattern(3, 8192)).unwrap();
    v.flush().expect("the flush after the outage");
    put(&v, 768 << 10, pattern(4, 4096)).unwrap();
    v.flush().unwrap();
    let model = model.clone();
    assert!(read_all(&v) == model, "every acknowledged write, in this session");
    drop(v); // no clean close: the next writer recovers the leases
    let v = Volume::open(&uri, &place.opts()).unwrap();
    assert!(read_all(&v) == model, "every acknowledged write, after a reopen");
    v.close().unwrap();
    let rep = fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
}

/// A sync that fails after an earlier sync of the same segment: what that
/// made durable stays where it is, in the chain, and only the records after
/// it are written again, into a segment that follows it; the flush returns
/// success, and a crash right after it loses nothing.
#[test]
fn a_failed_sync_keeps_the_synced_prefix_and_moves_the_rest() {
    for seed in 0..12u64 {
        let place = Place::new(Kind::MemClosedOnly);
        let mem = place.mem.clone().expect("a memory backend");
        let uri = place.uri("v");
        let size = 4u64 << 20;
        Volume::create(&uri, size).unwrap();
        let opts = OpenOptions { segment_size: 8 << 20, ..place.opts() };
        let v = Volume::open(&uri, &opts).unwrap();
        let mut model = vec![0u8; size as usize];
        let put = |model: &mut Vec<u8>, v: &Volume, off: u64, data: Vec<u8>| {
            v.write(off, &data).unwrap();
            model[off as usize..off as usize + data.len()].copy_from_slice(&data);
        };
        put(&mut model, &v, 0, pattern(seed, 64 << 10));
        v.flush().unwrap();
        let segs = hlfs::log::list_segments(&*place.backend(), &place.path("v")).unwrap();
        let failed = *segs.last().unwrap();
        put(&mut model, &v, 1 << 20, pattern(seed + 1, (1 + seed as usize % 3) << 16));
        put(&mut model, &v, 16 << 10, pattern(seed + 2, 8 << 10)); // over the synced part
        mem.fail_syncs_transiently(1 + seed % 2);
        v.flush().expect("the flush writes the unsynced records again and syncs them");
        let after = hlfs::log::list_segments(&*place.backend(), &place.path("v")).unwrap();
        assert!(after.len() > segs.len(), "seed {seed}: a new segment took the rest");
        assert!(read_all(&v) == model, "seed {seed}: in the same session");
        put(&mut model, &v, 2 << 20, pattern(seed + 3, 12 << 10));
        v.flush().unwrap();
        if seed % 2 == 0 {
            // A crash right after the flush.
            mem.crash_now();
            drop(v);
            mem.recover(seed);
        } else {
            v.close().unwrap();
        }
        let v = Volume::open(&uri, &opts).unwrap();
        assert!(read_all(&v) == model, "seed {seed}: reopened");
        // The chain keeps the synced prefix of the failed segment.
        let b = place.backend();
        let dir = place.path("v");
        let uuid = hlfs::log::segment_header(&*b, &dir, after[0]).unwrap().unwrap().2;
        let l = hlfs::log::layout(&*b, &dir, &uuid, 0).unwrap();
        assert!(
            l.chain.iter().any(|&(s, bound)| s == failed && bound.is_some()),
            "seed {seed}: segment {failed} stays in the chain, bounded: {l:?}"
        );
        v.close().unwrap();
        let rep = fsck(&uri, false).unwrap();
        assert!(rep.errors.is_empty(), "seed {seed}: {:?}", rep.errors);
    }
}

/// A full quota where the writer holds the active segment in memory (HDFS):
/// the write that hits it fails with `NoSpace`, so do the writes and flushes
/// after it while space is still short, and the writer stays usable; once
/// space is freed the next write gets through (the segment's unwritten
/// bytes go into a new segment), and nothing flushed before is lost.
#[test]
fn a_full_quota_fails_writes_until_space_is_freed() {
    let place = Place::new(Kind::MemClosedOnly);
    let mem = place.mem.clone().expect("a memory backend");
    let uri = place.uri("v");
    Volume::create(&uri, 8 << 20).unwrap();
    let opts = OpenOptions { segment_size: 8 << 20, ..place.opts() };
    let v = Volume::open(&uri, &opts).unwrap();
    let mut model = vec![0u8; 8 << 20];
    let a = pattern(1, 1 << 20);
    v.write(0, &a).unwrap();
    v.flush().unwrap();
    model[..a.len()].copy_from_slice(&a);
    let used: u64 = place.listing("v").iter().map(|(_, l)| *l).sum();
    mem.set_capacity(Some(used + (256 << 10)));
    let b = pattern(2, 1 << 20);
    let mut failed = 0;
    for i in 0..4u64 {
        let r = v.write((1 + i) << 20, &b).and_then(|()| v.flush());
        match r {
            Err(e) => {
                assert_eq!(e.kind(), hlfs::ErrorKind::NoSpace, "{e}");
                failed += 1;
            }
            Ok(()) => model[((1 + i) << 20) as usize..((2 + i) << 20) as usize].copy_from_slice(&b),
        }
    }
    assert!(failed >= 2, "the quota was hit");
    mem.set_capacity(None);
    let c = pattern(3, 1 << 20);
    v.write(6 << 20, &c).expect("space is free again");
    v.flush().expect("space is free again");
    model[6 << 20..7 << 20].copy_from_slice(&c);
    // Writes that failed may or may not have landed; the rest must read back.
    let got = read_all(&v);
    assert!(got[..1 << 20] == model[..1 << 20] && got[6 << 20..7 << 20] == model[6 << 20..7 << 20]);
    v.close().unwrap();
    let v = Volume::open(&uri, &opts).unwrap();
    let again = read_all(&v);
    assert!(again == got, "reopened, the volume reads as it did before the close");
    v.close().unwrap();
    let rep = fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
}

/// A metadata operation (here a snapshot) whose sync fails past the retry
/// window: the caller gets the error, and since the record is applied in
/// memory but may not be in the log, the writer stops instead of writing
/// on top of it; after a reopen the volume holds the snapshot or not,
/// consistently, and every write flushed before it.
#[test]
fn a_metadata_record_whose_sync_fails_stops_the_writer() {
    let place = Place::new(Kind::MemClosedOnly);
    let mem = place.mem.clone().expect("a memory backend");
    let uri = place.uri("v");
    Volume::create(&uri, 1 << 20).unwrap();
    let v = Volume::open(&uri, &place.opts()).unwrap();
    let x = pattern(7, 64 << 10);
    v.write(0, &x).unwrap();
    v.flush().unwrap();
    mem.fail_transiently(1000);
    v.write(256 << 10, &pattern(8, 4096)).unwrap(); // into memory
    let e = v.snapshot_create("s").expect_err("every seal attempt fails");
    assert!(e.to_string().contains("injected"), "{e}");
    mem.fail_transiently(0);
    let e = v.write(512 << 10, &[1u8; 4096]).expect_err("the writer stopped");
    assert!(e.to_string().contains("reopen"), "{e}");
    drop(v);
    let v = Volume::open(&uri, &place.opts()).unwrap();
    assert!(read_all(&v)[..x.len()] == x[..], "the flushed write stays");
    let snaps = snap_names(&v);
    assert!(snaps.is_empty() || snaps == ["s"], "{snaps:?}");
    v.close().unwrap();
    let rep = fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
}

/// A segment create whose answer was lost (HDFS: the NameNode made the
/// file, the client timed out) fails that write; the next write finds the
/// file there. The write lock is still ours, so that is our own leftover,
/// not a writer that took the volume over: the number is skipped and the
/// volume goes on, losing nothing. (Before, the writer stopped for good,
/// saying another writer had taken the volume over.)
#[test]
fn a_segment_create_whose_answer_was_lost_is_not_taken_for_a_takeover() {
    let place = Place::new(Kind::MemClosedOnly);
    let mem = place.mem.clone().expect("a memory backend");
    let uri = place.uri("v");
    let size = 4u64 << 20;
    Volume::create(&uri, size).unwrap();
    let opts = OpenOptions { segment_size: 256 << 10, ..place.opts() };
    let v = Volume::open(&uri, &opts).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut lost = 0;
    for i in 0..40u64 {
        if i % 8 == 3 {
            mem.lose_create_replies(1);
            lost += 1;
        }
        let data = pattern(i, 64 << 10);
        let at = (i * (64 << 10)) % size;
        // The write that rolls to a new segment may report the lost
        // answer (the writer stays usable); the same write again works.
        if let Err(e) = v.write(at, &data) {
            assert_eq!(e.kind(), hlfs::ErrorKind::Backend, "write {i}: {e}");
            v.write(at, &data).unwrap_or_else(|e| panic!("write {i} again: {e}"));
        }
        model[at as usize..at as usize + data.len()].copy_from_slice(&data);
        if i % 5 == 4 {
            v.flush().unwrap_or_else(|e| panic!("flush after write {i}: {e}"));
        }
    }
    assert!(lost >= 4);
    assert!(read_all(&v) == model, "after the lost answers");
    v.close().unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let v = Volume::open(&uri, &OpenOptions { index_root: Some(fresh.path().into()), ..opts.clone() }).unwrap();
    assert!(read_all(&v) == model, "reopened with a new index");
    v.close().unwrap();
    let rep = fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
}
