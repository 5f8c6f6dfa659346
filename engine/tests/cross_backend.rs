//! Clones whose base sits on another backend: between two local roots,
//! local ↔ the strict HDFS model (`tests/hdfs.rs` does local ↔ real HDFS).
//! Reads fall through to the base by its URI; the child stores only the
//! blocks written to it; writing the child never changes the base; the base
//! refuses to drop a snapshot its remote clone uses; the child reopens with
//! a fresh index (another host) and reads the same.
//!
//! Also: a volume's local index is only a cache. Opened again with a cache
//! from an older state, or from a log that since took another course, the
//! volume reads what its log says.

mod common;

use common::{assert_same, pattern, read_all, Kind, Place};
use hlfs::backend::mem::{registry_put, registry_remove};
use hlfs::{clone_volume, delete_volume, ErrorKind, OpenOptions, Volume};

const SIZE: u64 = 4 << 20;

/// Base on `a`, clone on `b`: the whole clone story.
fn clone_across(a: &Place, b: &Place) {
    let base = a.uri("base");
    Volume::create(&base, SIZE).unwrap();
    let v = Volume::open(&base, &a.opts()).unwrap();
    let img = pattern(1, SIZE as usize);
    v.write(0, &img).unwrap();
    v.snapshot_create("gold").unwrap();
    v.write(0, &pattern(2, 1 << 20)).unwrap(); // after the snapshot: not in the clone
    v.close().unwrap();

    let child = b.uri("child");
    clone_volume(&format!("{base}%gold"), &child, None).unwrap();
    let c = Volume::open(&child, &b.opts()).unwrap();
    assert_same("fresh clone reads its base snapshot", &read_all(&c), &img);
    let info = c.info().unwrap();
    assert_eq!(info.base.as_deref(), Some(format!("{base}%gold").as_str()));
    let mine = pattern(3, 64 << 10);
    c.write(1 << 20, &mine).unwrap();
    c.flush().unwrap();
    let mut want = img.clone();
    want[1 << 20..(1 << 20) + mine.len()].copy_from_slice(&mine);
    assert_same("clone after a write", &read_all(&c), &want);
    // Only the changed blocks live with the child.
    let alloc = c.info().unwrap().allocated_bytes;
    assert!(
        alloc < 1 << 20,
        "the child stores {alloc} bytes, not a copy of its base"
    );
    c.close().unwrap();

    // The base is untouched and knows its clone.
    let bsnap = Volume::open(&format!("{base}%gold"), &OpenOptions::read_only()).unwrap();
    assert_same(
        "base snapshot after the clone's writes",
        &read_all(&bsnap),
        &img,
    );
    drop(bsnap);
    let bv = Volume::open(&base, &a.opts()).unwrap();
    let e = bv.snapshot_delete("gold").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InUse, "{e}");
    assert!(
        e.to_string().contains(&child),
        "the refusal names the remote clone: {e}"
    );
    bv.close().unwrap();

    // Another host: no index cache at all.
    let elsewhere = tempfile::tempdir().unwrap();
    let c = Volume::open(
        &child,
        &OpenOptions {
            index_root: Some(elsewhere.path().to_path_buf()),
            ..b.opts()
        },
    )
    .unwrap();
    assert_same("clone reopened elsewhere", &read_all(&c), &want);
    c.close().unwrap();

    // Deleting the clone releases the base's snapshot.
    delete_volume(&child).unwrap();
    let bv = Volume::open(&base, &a.opts()).unwrap();
    bv.snapshot_delete("gold").unwrap();
    bv.close().unwrap();
}

#[test]
fn local_base_local_child_in_another_root() {
    clone_across(&Place::new(Kind::Local), &Place::new(Kind::Local));
}

#[test]
fn local_base_hdfs_model_child() {
    clone_across(&Place::new(Kind::Local), &Place::new(Kind::MemClosedOnly));
}

#[test]
fn hdfs_model_base_local_child() {
    clone_across(&Place::new(Kind::MemClosedOnly), &Place::new(Kind::Local));
}

/// A clone whose base cannot be reached fails to open with a message naming the base.
#[test]
fn unreachable_base_is_named() {
    let a = Place::new(Kind::MemClosedOnly);
    let b = Place::new(Kind::Local);
    let base = a.uri("base");
    Volume::create(&base, SIZE).unwrap();
    let v = Volume::open(&base, &a.opts()).unwrap();
    v.snapshot_create("s").unwrap();
    v.close().unwrap();
    clone_volume(&format!("{base}%s"), &b.uri("c"), None).unwrap();
    drop(a); // unregisters the memory backend: the base is gone
    let e = Volume::open(&b.uri("c"), &b.opts()).unwrap_err();
    assert!(e.to_string().contains(&format!("{base}%s")), "{e}");
}

/// Host A's cache is older than the log (host B wrote since): caught up.
#[test]
fn stale_index_cache_is_caught_up() {
    for kind in [Kind::Local, Kind::MemClosedOnly] {
        let p = Place::new(kind);
        let uri = p.uri("v");
        Volume::create(&uri, SIZE).unwrap();
        let host_a = tempfile::tempdir().unwrap();
        let host_b = tempfile::tempdir().unwrap();
        let on = |d: &tempfile::TempDir| OpenOptions {
            index_root: Some(d.path().to_path_buf()),
            ..p.opts()
        };
        let v = Volume::open(&uri, &on(&host_a)).unwrap();
        v.write(0, &pattern(1, 1 << 20)).unwrap();
        v.close().unwrap();
        let v = Volume::open(&uri, &on(&host_b)).unwrap();
        v.write(4096, &pattern(2, 8192)).unwrap();
        v.snapshot_create("s").unwrap();
        v.write(2 << 20, &pattern(3, 1 << 20)).unwrap();
        v.close().unwrap();
        let want = read_all(&Volume::open(&uri, &OpenOptions::read_only()).unwrap());
        let v = Volume::open(&uri, &on(&host_a)).unwrap();
        assert_same("host A's stale cache caught up", &read_all(&v), &want);
        assert_eq!(common::snap_names(&v), ["s"]);
        v.close().unwrap();
    }
}

/// Host A's cache describes a log that later took another course (here: the
/// volume restored from a copy and written differently): never trusted.
#[test]
fn diverged_index_cache_is_rebuilt() {
    let p = Place::new(Kind::MemClosedOnly);
    let mem = p.mem.clone().unwrap();
    let uri = p.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let cache_a = tempfile::tempdir().unwrap();
    let cache_c = tempfile::tempdir().unwrap();
    let on = |d: &tempfile::TempDir| OpenOptions {
        index_root: Some(d.path().to_path_buf()),
        ..p.opts()
    };
    let v = Volume::open(&uri, &on(&cache_a)).unwrap();
    v.write(0, &pattern(1, 256 << 10)).unwrap();
    v.close().unwrap();
    // The copy forks here.
    let copy = mem.deep_copy();
    let name = format!("fork-{}", std::process::id());
    registry_put(&name, copy);
    let fork_uri = format!("mem://{name}/vols/v");
    // Original goes on with Y through cache A.
    let v = Volume::open(&uri, &on(&cache_a)).unwrap();
    v.write(0, &pattern(2, 128 << 10)).unwrap();
    v.close().unwrap();
    // The fork (same volume UUID, so the same cache directory) writes Z
    // through another cache, as much log as Y and more.
    let v = Volume::open(&fork_uri, &on(&cache_c)).unwrap();
    let z = pattern(3, 128 << 10);
    v.write(0, &z).unwrap();
    v.write(1 << 20, &pattern(4, 4096)).unwrap();
    v.close().unwrap();
    let want = read_all(&Volume::open(&fork_uri, &OpenOptions::read_only()).unwrap());
    assert_eq!(&want[..z.len()], &z[..]);
    // Cache A (which holds Y's state) opened on the fork reads Z.
    let v = Volume::open(&fork_uri, &on(&cache_a)).unwrap();
    assert_same("a diverged cache is not trusted", &read_all(&v), &want);
    v.close().unwrap();
    registry_remove(&name);
}

/// On a backend without a natural index place (HDFS, the model) the index
/// cache goes to `$HLFS_INDEX_DIR/<uuid>`, and deleting the volume removes it.
#[test]
fn default_index_cache_is_removed_with_the_volume() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HLFS_INDEX_DIR", cache.path());
    let p = Place::new(Kind::MemClosedOnly);
    let uri = p.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &OpenOptions::default()).unwrap();
    v.write(0, &pattern(1, 8192)).unwrap();
    let uuid = v.info().unwrap().uuid;
    v.close().unwrap();
    let idir = cache.path().join(&uuid);
    assert!(idir.is_dir(), "index cache at {}", idir.display());
    delete_volume(&uri).unwrap();
    assert!(!idir.exists(), "index cache removed with the volume");
}
