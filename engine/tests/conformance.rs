//! One backend conformance suite (`common::conformance`), run on the local
//! backend and on the strict in-process HDFS model; `tests/hdfs.rs` runs it
//! on a real HDFS. Then the model's own rules: it must refuse what HDFS
//! refuses and lose what HDFS would lose, or the engine suites that run on it
//! (model, crash, concurrency, cross_backend, fencing) prove less than they say.
//! The model is a test tool: it proves nothing about HDFS itself.

mod common;

use common::{conformance, pattern, read_all, Kind, Place};
use hlfs::backend::local::LocalBackend;
use hlfs::backend::mem::MemBackend;
use hlfs::backend::Backend;
use hlfs::{ErrorKind, OpenOptions, Volume};

#[test]
fn local_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(&LocalBackend, &format!("{}/root", dir.path().display()));
}

#[test]
fn memory_backend_conforms() {
    conformance::run(&MemBackend::new(), "/root");
}

#[test]
fn hdfs_model_conforms() {
    let b = MemBackend::hdfs_model();
    assert!(b.sync_is_durable() && !b.reads_see_unclosed_appends());
    conformance::run(&b, "/root");
}

#[test]
fn hdfs_model_enforces_hdfs_rules() {
    let b = MemBackend::hdfs_model();
    let mut f = b.create("/d/open").unwrap();
    f.append(b"data").unwrap();
    f.sync().unwrap();
    // Visible only after close (hdfs-native reads a file up to its last
    // complete block, even after an hsync).
    let r = b.open_read("/d/open").unwrap();
    assert_eq!(r.len().unwrap(), 0, "an unclosed file shows nothing");
    let mut one = [0u8; 1];
    assert_eq!(
        r.read_exact_at(0, &mut one).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    f.append(b"more").unwrap();
    // Single writer per file; no rename of an open file.
    assert_eq!(
        b.create("/d/open").err().map(|e| e.kind()),
        Some(ErrorKind::Exists)
    );
    let e = b.rename("/d/open", "/d/moved").unwrap_err();
    assert!(e.to_string().contains("still open"), "{e}");
    // No rename over an existing file.
    b.create("/d/other").unwrap().close().unwrap();
    f.close().unwrap();
    assert_eq!(
        b.rename("/d/open", "/d/other").unwrap_err().kind(),
        ErrorKind::Exists
    );
    assert_eq!(r.len().unwrap(), 8);

    // `sync` is durable: a crash keeps what it covered of an unclosed file
    // and at most a prefix of what came after; a closed file survives whole.
    let mut lost_some = false;
    for seed in 0..32 {
        let b = MemBackend::hdfs_model();
        let mut c = b.create("/closed").unwrap();
        c.append(&[1u8; 1000]).unwrap();
        c.close().unwrap();
        let mut u = b.create("/unclosed").unwrap();
        u.append(&[2u8; 1000]).unwrap();
        u.sync().unwrap();
        u.append(&[3u8; 1000]).unwrap();
        b.crash_now();
        b.recover(seed);
        let r = b.open_read("/closed").unwrap();
        assert_eq!(
            r.len().unwrap(),
            1000,
            "seed {seed}: a closed file survives"
        );
        let kept = b.open_read("/unclosed").and_then(|r| r.len()).unwrap_or(0);
        lost_some |= kept < 2000;
        assert!((1000..=2000).contains(&kept), "seed {seed}: the synced 1000 bytes stay ({kept})");
    }
    assert!(
        lost_some,
        "what came after the sync of an unclosed file must be able to go"
    );
}

/// A flush that returned survives a crash of the writer on the strict
/// model, at every crash point after it; a snapshot after it makes it
/// visible to a read-only opener at once (it seals the segment: HDFS shows
/// readers an open file only once it is closed, hsync or not).
#[test]
fn returned_flush_survives_a_crash_on_the_hdfs_model() {
    for seed in 0..24u64 {
        let place = Place::new(Kind::MemClosedOnly);
        let mem = place.mem.clone().unwrap();
        let uri = place.uri("vol");
        Volume::create(&uri, 4 << 20).unwrap();
        let v = Volume::open(&uri, &place.opts()).unwrap();
        let a = pattern(seed, 256 << 10);
        v.write(0, &a).unwrap();
        v.flush().unwrap();
        if seed % 2 == 1 {
            // Visible to another opener once a snapshot sealed it.
            v.snapshot_create("s").unwrap();
            let ro = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
            assert_eq!(
                &read_all(&ro)[..a.len()],
                &a[..],
                "seed {seed}: flushed data visible after a snapshot"
            );
            drop(ro);
        }
        let segs_before = mem.paths().len();
        // A second flush with nothing new creates no segment.
        v.flush().unwrap();
        assert!(
            mem.paths().len() <= segs_before + 1,
            "an idle flush makes no segment"
        );
        // Unflushed writes after it, then a crash somewhere in them.
        mem.crash_after(seed % 5);
        let b = pattern(seed + 1000, 64 << 10);
        let _ = v.write(1 << 20, &b);
        let _ = v.write(2 << 20, &b);
        mem.crash_now();
        drop(v);
        mem.recover(seed);
        let v = Volume::open(&uri, &place.opts()).unwrap();
        let got = read_all(&v);
        assert_eq!(
            &got[..a.len()],
            &a[..],
            "seed {seed}: the flushed write survived"
        );
        for off in [1 << 20, 2 << 20] {
            let blk = &got[off..off + b.len()];
            assert!(
                blk == &b[..] || blk.iter().all(|x| *x == 0),
                "seed {seed}: unflushed write whole or absent per block"
            );
        }
        v.close().unwrap();
        let v = Volume::open(
            &uri,
            &OpenOptions {
                rebuild_index: true,
                ..place.opts()
            },
        )
        .unwrap();
        assert_eq!(
            &read_all(&v)[..a.len()],
            &a[..],
            "seed {seed}: also after an index rebuild"
        );
    }
}
