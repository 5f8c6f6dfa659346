//! The backend conformance suite: what the engine needs of every backend
//! (trait `hlfs::backend::Backend`), checked the same way on the local
//! backend, the strict HDFS model and, when `HLFS_TEST_HDFS` is set, a real
//! HDFS. `root` is an empty directory on the backend that the suite may fill.

use hlfs::backend::Backend;
use hlfs::ErrorKind;

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    super::pattern(seed, len)
}

#[track_caller]
fn kind_of<T>(r: hlfs::Result<T>, want: ErrorKind, what: &str) -> String {
    match r {
        Ok(_) => panic!("{what}: succeeded, expected {want:?}"),
        Err(e) => {
            assert_eq!(e.kind(), want, "{what}: {e}");
            e.to_string()
        }
    }
}

fn read(b: &dyn Backend, path: &str) -> Vec<u8> {
    let f = b
        .open_read(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    let len = f.len().unwrap() as usize;
    let mut v = vec![0u8; len];
    f.read_exact_at(0, &mut v)
        .unwrap_or_else(|e| panic!("read {path}: {e}"));
    v
}

/// Runs every check. Panics with the failing rule's name.
pub fn run(b: &dyn Backend, root: &str) {
    let root = root.trim_end_matches('/');
    create_append_close_read(b, root);
    create_is_exclusive(b, root);
    reads_are_bounded(b, root);
    list_rename_delete(b, root);
    visibility(b, root);
    concurrent_readers(b, root);
}

/// A new file (with missing parents) takes appends and, closed, reads back
/// exactly, at any offset.
fn create_append_close_read(b: &dyn Backend, root: &str) {
    let path = format!("{root}/a/b/file1");
    assert!(!b.exists(&path).unwrap(), "exists before create");
    let mut f = b.create(&path).expect("create with missing parents");
    let mut want = Vec::new();
    for (i, n) in [1usize, 4096, 100_000, 1 << 20, 7].into_iter().enumerate() {
        let d = bytes(i as u64, n);
        f.append(&d).expect("append");
        want.extend_from_slice(&d);
    }
    f.close().expect("close");
    assert!(b.exists(&path).unwrap(), "file exists after close");
    assert!(
        b.exists(&format!("{root}/a/b")).unwrap(),
        "parent directory exists"
    );
    assert_eq!(read(b, &path), want, "contents after close");
    let r = b.open_read(&path).unwrap();
    assert_eq!(r.len().unwrap(), want.len() as u64);
    for (off, n) in [
        (0usize, 1usize),
        (4095, 2),
        (500_000, 70_000),
        (want.len() - 7, 7),
    ] {
        let mut got = vec![0u8; n];
        r.read_exact_at(off as u64, &mut got)
            .expect("positional read");
        assert_eq!(got, want[off..off + n], "read at {off}");
    }
    // An empty file is a file too.
    let empty = format!("{root}/a/empty");
    b.create(&empty).unwrap().close().unwrap();
    assert_eq!(b.open_read(&empty).unwrap().len().unwrap(), 0);
}

/// `create` never replaces: not a closed file, not one still being written.
fn create_is_exclusive(b: &dyn Backend, root: &str) {
    let path = format!("{root}/excl");
    let mut f = b.create(&path).unwrap();
    f.append(b"first").unwrap();
    kind_of(
        b.create(&path),
        ErrorKind::Exists,
        "second create while the first writer is open",
    );
    f.close().unwrap();
    kind_of(
        b.create(&path),
        ErrorKind::Exists,
        "create over a closed file",
    );
    assert_eq!(read(b, &path), b"first");
}

/// Reading past the end is an error (never zeros); missing files are NotFound.
fn reads_are_bounded(b: &dyn Backend, root: &str) {
    let path = format!("{root}/short");
    let mut f = b.create(&path).unwrap();
    f.append(&[7u8; 100]).unwrap();
    f.close().unwrap();
    let r = b.open_read(&path).unwrap();
    let mut buf = [0u8; 10];
    kind_of(
        r.read_exact_at(95, &mut buf),
        ErrorKind::Corrupt,
        "read across the end",
    );
    kind_of(
        r.read_exact_at(1000, &mut buf),
        ErrorKind::Corrupt,
        "read past the end",
    );
    let msg = kind_of(
        b.open_read(&format!("{root}/nope")).map(drop),
        ErrorKind::NotFound,
        "open a missing file",
    );
    assert!(msg.contains("nope"), "the message names the file: {msg}");
}

/// Listing shows one level; rename never replaces; delete removes.
fn list_rename_delete(b: &dyn Backend, root: &str) {
    let dir = format!("{root}/d");
    for n in ["x1", "x2", "sub/y"] {
        let mut f = b.create(&format!("{dir}/{n}")).unwrap();
        f.append(n.as_bytes()).unwrap();
        f.close().unwrap();
    }
    let mut names = b.list(&dir).unwrap();
    names.sort();
    assert_eq!(names, ["sub", "x1", "x2"], "one level, names only");
    kind_of(
        b.list(&format!("{root}/missing-dir")),
        ErrorKind::NotFound,
        "list a missing directory",
    );

    kind_of(
        b.rename(&format!("{dir}/x1"), &format!("{dir}/x2")),
        ErrorKind::Exists,
        "rename over a file",
    );
    assert_eq!(
        read(b, &format!("{dir}/x1")),
        b"x1",
        "source untouched by a refused rename"
    );
    assert_eq!(
        read(b, &format!("{dir}/x2")),
        b"x2",
        "target untouched by a refused rename"
    );
    b.rename(&format!("{dir}/x1"), &format!("{dir}/x3"))
        .unwrap();
    assert!(!b.exists(&format!("{dir}/x1")).unwrap());
    assert_eq!(read(b, &format!("{dir}/x3")), b"x1", "renamed contents");
    kind_of(
        b.rename(&format!("{dir}/x1"), &format!("{dir}/x4")),
        ErrorKind::NotFound,
        "rename a missing file",
    );

    b.delete(&format!("{dir}/x3")).unwrap();
    assert!(!b.exists(&format!("{dir}/x3")).unwrap());
    kind_of(
        b.delete(&format!("{dir}/x3")),
        ErrorKind::NotFound,
        "delete a missing file",
    );
    b.delete(&format!("{dir}/sub/y")).unwrap();
    b.remove_dir(&format!("{dir}/sub")).unwrap();
    b.remove_dir(&format!("{dir}/never-there"))
        .expect("removing an absent directory is fine");
    let mut names = b.list(&dir).unwrap();
    names.sort();
    assert_eq!(names, ["x2"]);
}

/// What readers see of a file being written: on backends that say so,
/// appended bytes at once; on the others at most what was appended, and
/// everything once closed. `sync` never fails on an open file where it is
/// durable.
fn visibility(b: &dyn Backend, root: &str) {
    let path = format!("{root}/vis");
    let mut f = b.create(&path).unwrap();
    let d = bytes(99, 10_000);
    f.append(&d).unwrap();
    if b.sync_is_durable() {
        f.sync().expect("sync");
    }
    let r = b.open_read(&path).unwrap();
    let seen = r.len().unwrap();
    if b.reads_see_unclosed_appends() {
        assert_eq!(seen, d.len() as u64, "appends are visible before close");
    } else {
        assert!(
            seen <= d.len() as u64,
            "a reader sees at most what was appended ({seen})"
        );
        let mut got = vec![0u8; seen as usize];
        r.read_exact_at(0, &mut got).unwrap();
        assert_eq!(got, d[..seen as usize], "a prefix of what was appended");
    }
    f.close().unwrap();
    assert_eq!(read(b, &path), d, "everything once closed");
    // A reader opened before the close catches up.
    let mut got = vec![0u8; d.len()];
    r.read_exact_at(0, &mut got)
        .expect("a reader opened before close reads the closed file");
    assert_eq!(got, d);
}

/// One open file serves positional reads from many threads at once.
fn concurrent_readers(b: &dyn Backend, root: &str) {
    let path = format!("{root}/shared");
    let d = bytes(5, 3 << 20);
    let mut f = b.create(&path).unwrap();
    f.append(&d).unwrap();
    f.close().unwrap();
    let r = b.open_read(&path).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let r = r.clone();
            let d = &d;
            s.spawn(move || {
                for i in 0..16u64 {
                    let off = (super::mix(t * 100 + i) % (d.len() as u64 - 65536)) as usize;
                    let mut got = vec![0u8; 65536];
                    r.read_exact_at(off as u64, &mut got).unwrap();
                    assert_eq!(got, d[off..off + 65536], "thread {t} read at {off}");
                }
            });
        }
    });
}
