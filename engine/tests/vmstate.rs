//! VM state in snapshots (QEMU's savevm/loadvm): a stream written in pieces
//! of any length from offset 0, claimed by the snapshot created after it,
//! read back (zeros past its end) after reopens and index rebuilds, never
//! visible in the disk, dropped with its snapshot (its bytes leave the
//! live count, so the cleaner reclaims them), and a stream no snapshot
//! claimed dropped by the next stream, the next snapshot or the next open.

mod common;
use common::*;
use hlfs::{fsck, OpenOptions, Volume};
use rand::{Rng, SeedableRng};

/// Writes `stream` in random pieces, as QEMU's savevm does.
fn save(v: &Volume, stream: &[u8], rng: &mut impl Rng) {
    let mut pos = 0usize;
    while pos < stream.len() {
        let n = rng.gen_range(1..=70_000).min(stream.len() - pos);
        // Sometimes as a scatter-gather list of two pieces.
        if n > 1 && rng.gen_bool(0.3) {
            let k = rng.gen_range(1..n);
            v.vmstate_write(pos as u64, &[&stream[pos..pos + k], &stream[pos + k..pos + n]]).unwrap();
        } else {
            v.vmstate_write(pos as u64, &[&stream[pos..pos + n]]).unwrap();
        }
        pos += n;
    }
}

/// Reads the whole stream of snapshot `name` back in random pieces, and
/// checks what lies past its end reads as zeros.
fn check(v: &Volume, name: &str, stream: &[u8], rng: &mut impl Rng) {
    let mut got = vec![0u8; stream.len()];
    let mut pos = 0usize;
    while pos < stream.len() {
        let n = rng.gen_range(1..=50_000).min(stream.len() - pos);
        v.vmstate_read(name, pos as u64, &mut got[pos..pos + n]).unwrap();
        pos += n;
    }
    assert_same(&format!("VM state of {name}"), &got, stream);
    let mut tail = vec![0xAAu8; 9000];
    v.vmstate_read(name, stream.len() as u64 - 100, &mut tail).unwrap();
    assert!(tail[..100] == stream[stream.len() - 100..], "the stream's last bytes");
    assert!(tail[100..].iter().all(|&b| b == 0), "past the end: zeros");
    let info = v.snapshots().unwrap().into_iter().find(|s| s.name == name).unwrap();
    assert_eq!(info.vm_state_size, stream.len() as u64);
}

fn run(kind: Kind) {
    let place = Place::new(kind);
    let uri = place.uri("v");
    let size = 8u64 << 20;
    Volume::create(&uri, size).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let v = Volume::open(&uri, &place.opts()).unwrap();
    let disk = pattern(1, size as usize);
    v.write(0, &disk).unwrap();
    let s1 = pattern(2, 3 << 20 | 12345);
    save(&v, &s1, &mut rng);
    v.snapshot_create_vm("s1", s1.len() as u64, 987_654_321).unwrap();
    check(&v, "s1", &s1, &mut rng);
    assert!(read_all(&v) == disk, "the disk does not see the VM state");
    let live_s1 = v.info().unwrap().live_bytes;

    // A stream restarted at 0 replaces the unclaimed one; a shorter one
    // reads zeros past its own end.
    save(&v, &pattern(3, 1 << 20), &mut rng);
    let s2 = pattern(4, 200_001);
    save(&v, &s2, &mut rng);
    v.write(4096, &pattern(5, 8192)).unwrap();
    v.snapshot_create_vm("s2", s2.len() as u64, 1).unwrap();
    check(&v, "s2", &s2, &mut rng);
    check(&v, "s1", &s1, &mut rng);
    let e = v.snapshot_create_vm("s3", 10, 0).expect_err("no stream was saved");
    assert!(e.to_string().contains("no VM state was saved"), "{e}");
    v.snapshot_create("disk-only").unwrap();
    let e = v.vmstate_read("disk-only", 0, &mut [0u8; 10]).expect_err("disk-only");
    assert!(e.to_string().contains("holds no VM state"), "{e}");

    // An unclaimed stream left by a writer that died: the next open drops it.
    let live = v.info().unwrap().live_bytes;
    save(&v, &pattern(6, 2 << 20), &mut rng);
    v.flush().unwrap();
    assert!(v.info().unwrap().live_bytes >= live + (2 << 20), "the stream is live while it is saved");
    drop(v);
    for fresh_index in [false, true] {
        let idx = tempfile::tempdir().unwrap();
        let opts = if fresh_index {
            OpenOptions { index_root: Some(idx.path().into()), ..place.opts() }
        } else {
            place.opts()
        };
        let v = Volume::open(&uri, &opts).unwrap();
        assert_eq!(v.info().unwrap().live_bytes, live, "the unclaimed stream was dropped at open");
        check(&v, "s1", &s1, &mut rng);
        check(&v, "s2", &s2, &mut rng);
        v.close().unwrap();
    }
    let v = Volume::open(&uri, &place.opts()).unwrap();
    // Reverting to s1 and reading its VM state: what loadvm does.
    v.snapshot_revert("s1").unwrap();
    check(&v, "s1", &s1, &mut rng);
    assert!(read_all(&v) == disk, "s1's disk");
    // Deleting s1 drops its VM state: its bytes leave the live count.
    let before = v.info().unwrap().live_bytes;
    v.snapshot_delete("s1").unwrap();
    let after = v.info().unwrap().live_bytes;
    assert!(
        before - after >= s1.len() as u64 - 4096,
        "deleting s1 frees its VM state: live {before} -> {after} (stream {} bytes; with it {live_s1})",
        s1.len()
    );
    let e = v.vmstate_read("s1", 0, &mut [0u8; 1]).expect_err("deleted");
    assert_eq!(e.kind(), hlfs::ErrorKind::NotFound, "{e}");
    check(&v, "s2", &s2, &mut rng);
    v.close().unwrap();
    let rep = fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
}

#[test]
fn vm_state_on_local_files() {
    run(Kind::Local);
}

#[test]
fn vm_state_on_the_hdfs_model() {
    run(Kind::MemClosedOnly);
}
