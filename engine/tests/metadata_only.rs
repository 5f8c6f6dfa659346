//! `OpenOptions::metadata_only`: snapshot create and delete without the
//! index. The records land in the log; the index, last closed cleanly
//! before them, takes them in at the next full open; data writes are
//! refused with an error that names the option.

use hlfs::{ErrorKind, OpenOptions, Volume};

const BS: usize = 4096;

fn block(i: u64, gen: u8) -> Vec<u8> {
    (0..BS).map(|j| (i as u8).wrapping_mul(13) ^ gen ^ (j as u8)).collect()
}

#[test]
fn metadata_only_sessions_snapshot_and_the_index_catches_up() {
    let root = tempfile::tempdir().unwrap();
    let uri = format!("local://{}/v", root.path().display());
    Volume::create(&uri, 256 * BS as u64).unwrap();
    let full = OpenOptions { segment_size: 128 << 10, ..Default::default() };
    let meta = OpenOptions { metadata_only: true, ..full.clone() };

    let v = Volume::open(&uri, &full).unwrap();
    for i in 0..256 {
        v.write(i * BS as u64, &block(i, 1)).unwrap();
    }
    v.close().unwrap();

    // Snapshot without the index; data writes are refused, and nothing of
    // them reaches the log.
    let v = Volume::open(&uri, &meta).unwrap();
    v.snapshot_create("one").unwrap();
    let e = v.write(0, &block(0, 9)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly);
    assert!(e.to_string().contains("metadata_only"), "{e}");
    assert!(v.write_zeroes(0, BS as u64).is_err());
    assert!(v.snapshot_create("one").is_err(), "a second snapshot of the same name");
    v.close().unwrap();

    // A full open sees the snapshot; the head goes on from it.
    let v = Volume::open(&uri, &full).unwrap();
    let names: Vec<String> = v.snapshots().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["one"]);
    for i in (0..256).step_by(2) {
        v.write(i * BS as u64, &block(i, 2)).unwrap();
    }
    v.close().unwrap();

    // Another metadata-only session, then a read-only view of each.
    let v = Volume::open(&uri, &meta).unwrap();
    v.snapshot_create("two").unwrap();
    v.close().unwrap();
    for (name, gen_of) in [("one", [1u8, 1]), ("two", [2, 1])] {
        let s = Volume::open(&format!("{uri}%{name}"), &OpenOptions::read_only()).unwrap();
        let mut buf = vec![0u8; BS];
        for i in 0..256u64 {
            s.read(i * BS as u64, &mut buf).unwrap();
            assert!(buf == block(i, gen_of[(i % 2) as usize]), "{name}: block {i}");
        }
    }

    // Delete without the index; the full open agrees, and so does fsck.
    let v = Volume::open(&uri, &meta).unwrap();
    v.snapshot_delete("one").unwrap();
    v.close().unwrap();
    let v = Volume::open(&uri, &full).unwrap();
    let names: Vec<String> = v.snapshots().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["two"]);
    let mut buf = vec![0u8; BS];
    for i in 0..256u64 {
        v.read(i * BS as u64, &mut buf).unwrap();
        assert!(buf == block(i, if i % 2 == 0 { 2 } else { 1 }), "head block {i}");
    }
    v.close().unwrap();
    let rep = hlfs::fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
}
