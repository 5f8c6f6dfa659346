//! A failed append or close where the writer holds the whole active
//! segment in memory (HDFS; here its model, `MemBackend::hdfs_model`, with
//! failures like a lost DataNode injected): the segment's bytes are written
//! again under the next segment number, the map follows them, and nothing
//! written is lost, in this session and after a reopen. The failed file is
//! left outside the log's chain.

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

/// Past `rewrite_attempts` failures in a row the writer gives up with the
/// backend's error; what was flushed before stays.
#[test]
fn a_failure_that_lasts_poisons_the_writer() {
    let place = Place::new(Kind::MemClosedOnly);
    let mem = place.mem.clone().expect("a memory backend");
    let uri = place.uri("v");
    Volume::create(&uri, 1 << 20).unwrap();
    let v = Volume::open(&uri, &place.opts()).unwrap();
    let x = pattern(1, 64 << 10);
    v.write(0, &x).unwrap();
    v.flush().unwrap();
    mem.fail_transiently(1000);
    v.write(512 << 10, &pattern(2, 4096)).unwrap(); // into memory
    let e = v.flush().expect_err("every attempt fails");
    assert!(e.to_string().contains("injected"), "{e}");
    assert!(v.write(0, &[1u8; 4096]).is_err());
    mem.fail_transiently(0);
    drop(v);
    let v = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
    assert!(read_all(&v)[..x.len()] == x[..], "the flushed write stays");
}
