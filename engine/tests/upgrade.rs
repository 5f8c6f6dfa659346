//! Volumes written by an earlier log format keep working.
//!
//! `fixtures/v1-volume` is a volume written by format version 1 (commit
//! 2f51bed, before 4 KiB-aligned records), made by `write_v1_fixture` below
//! and committed without its index (a cache). The same operations replayed
//! on an in-memory model give the contents it must show.

mod common;

use common::{pattern, read_all};
use hlfs::{fsck, OpenOptions, Volume};
use std::path::{Path, PathBuf};

const SIZE: u64 = 4 << 20;

/// The operations the fixture holds, applied to `apply` (a volume or the
/// model). Returns the model's state when snapshot "s1" was taken.
fn operations(mut write: impl FnMut(u64, &[u8]), mut zero: impl FnMut(u64, u64), mut snap: impl FnMut(&str)) {
    for i in 0..32u64 {
        write(i * 65536, &pattern(1000 + i, 65536));
    }
    snap("s1");
    let mut x = 7u64;
    for i in 0..100u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        write((x >> 33) % (SIZE / 4096) * 4096, &pattern(2000 + i, 4096));
    }
    write(5 * 4096 + 512, &pattern(3000, 512));
    zero(1 << 20, 512 << 10);
    snap("s2");
    write(3 << 20, &pattern(4000, 8192));
}

/// (head, s1, s2) contents.
fn model() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut m = vec![0u8; SIZE as usize];
    let mut snaps: Vec<Vec<u8>> = Vec::new();
    let cell = std::cell::RefCell::new(&mut m);
    operations(
        |off, d| cell.borrow_mut()[off as usize..off as usize + d.len()].copy_from_slice(d),
        |off, len| cell.borrow_mut()[off as usize..(off + len) as usize].fill(0),
        |_| snaps.push(cell.borrow().clone()),
    );
    let s2 = snaps.pop().unwrap();
    let s1 = snaps.pop().unwrap();
    (m, s1, s2)
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-volume")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Makes the fixture (run once, with the format it is meant to capture):
/// `HLFS_FIXTURE_OUT=/abs/dir cargo test --release -p hlfs --test upgrade -- --ignored`
#[test]
#[ignore]
fn write_v1_fixture() {
    let out = PathBuf::from(std::env::var("HLFS_FIXTURE_OUT").expect("HLFS_FIXTURE_OUT"));
    let uri = format!("local://{}", out.display());
    Volume::create(&uri, SIZE).unwrap();
    let opts = OpenOptions { segment_size: 256 << 10, checkpoint_every: 1 << 20, ..Default::default() };
    let v = Volume::open(&uri, &opts).unwrap();
    let v = std::cell::RefCell::new(v);
    operations(
        |off, d| {
            v.borrow().write(off, d).unwrap();
            v.borrow().flush().unwrap();
        },
        |off, len| v.borrow().write_zeroes(off, len).unwrap(),
        |name| v.borrow().snapshot_create(name).unwrap(),
    );
    v.into_inner().close().unwrap();
    std::fs::remove_dir_all(out.join("index")).unwrap();
}

/// The format-1 volume opens read-only and read-write with the contents
/// the model gives, for the head and both snapshots; new writes land and
/// survive a reopen, and fsck finds nothing wrong.
#[test]
fn a_v1_volume_opens_and_takes_writes() {
    let (head, s1, s2) = model();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    copy_dir(&fixture(), &dir);
    let uri = format!("local://{}", dir.display());

    let ro = Volume::open(&format!("{uri}%s1"), &OpenOptions::read_only()).unwrap();
    assert!(read_all(&ro) == s1, "snapshot s1 of the v1 volume");
    drop(ro);
    let v = Volume::open(&uri, &OpenOptions::default()).unwrap();
    assert!(read_all(&v) == head, "head of the v1 volume");
    let mut head = head;
    let new = pattern(5000, 1 << 20);
    v.write(2 << 20, &new).unwrap();
    head[2 << 20..3 << 20].copy_from_slice(&new);
    v.close().unwrap();
    let v = Volume::open(&uri, &OpenOptions::default()).unwrap();
    assert!(read_all(&v) == head, "after writing to it and reopening");
    v.close().unwrap();
    let ro = Volume::open(&format!("{uri}%s2"), &OpenOptions::read_only()).unwrap();
    assert!(read_all(&ro) == s2, "snapshot s2 after the new writes");
    drop(ro);
    let r = fsck(&uri, false).unwrap();
    assert!(r.errors.is_empty(), "fsck: {:?}", r.errors);
}
