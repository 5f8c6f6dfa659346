//! Property: bad input gets a clear error and changes nothing. Each case
//! checks the error kind, that the message names the offending thing (the
//! URI, size, name, offset, clone or lock holder), and that the volumes'
//! files, contents and snapshot lists are identical before and after.

mod common;

use common::{pattern, read_all, snap_names, Kind, Place};
use hlfs::{clone_volume, delete_volume, fsck, ErrorKind, OpenOptions, Volume};
use std::path::Path;

const SIZE: u64 = 1 << 20;

/// Everything a failed call must leave alone: every file under the test
/// directory (except sled indexes) with its length, and each volume's head
/// contents and snapshots.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    files: Vec<(String, u64)>,
    volumes: Vec<(String, Vec<String>, Vec<u8>)>,
}

fn files(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                if e.file_name() != "index" {
                    todo.push(e.path());
                }
            } else {
                out.push((e.path().display().to_string(), md.len()));
            }
        }
    }
    out.sort();
    out
}

fn fingerprint(place: &Place, vols: &[&str]) -> Fingerprint {
    let volumes = vols
        .iter()
        .map(|name| {
            let v =
                Volume::open(&place.uri(name), &OpenOptions::read_only()).expect("read-only open");
            (name.to_string(), snap_names(&v), read_all(&v))
        })
        .collect();
    Fingerprint {
        files: files(place.dir.path()),
        volumes,
    }
}

/// A local volume "vol" with data and snapshots "s1", "s2"; closed.
fn setup() -> Place {
    let place = Place::new(Kind::Local);
    let uri = place.uri("vol");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &place.opts()).unwrap();
    v.write(0, &pattern(1, 64 << 10)).unwrap();
    v.snapshot_create("s1").unwrap();
    v.write(8192, &pattern(2, 4096)).unwrap();
    v.snapshot_create("s2").unwrap();
    v.write(SIZE - 4096, &pattern(3, 4096)).unwrap();
    v.close().unwrap();
    place
}

/// Asserts `r` failed with `kind` and a message containing each of `names`.
#[track_caller]
fn expect_err<T: std::fmt::Debug>(r: hlfs::Result<T>, kind: ErrorKind, names: &[&str]) -> String {
    let e = r.expect_err("expected an error");
    assert_eq!(e.kind(), kind, "wrong kind for error: {e}");
    let msg = e.to_string();
    for n in names {
        assert!(msg.contains(n), "error {msg:?} should mention {n:?}");
    }
    msg
}

#[test]
fn malformed_uris_are_rejected_and_create_nothing() {
    let place = setup();
    let dir = place.dir.path().display().to_string();
    let rel = dir.trim_start_matches('/');
    let before = fingerprint(&place, &["vol"]);
    let bad = [
        format!("hdfs:local://{dir}/new"), // the guide's typo: two schemes
        format!("local://{rel}/new"),      // two slashes: a relative path
        format!("local://{dir}/vol%"),     // '%' with no snapshot name
        format!("ftp://{dir}/new"),        // unknown scheme
        format!("{dir}/new"),              // no scheme at all
        format!("local://{dir}/../new"),   // '..'
        "local:///".to_string(),           // no volume name
        format!("local://{dir}/vol%a/b"),  // '/' in the snapshot name
    ];
    for uri in &bad {
        expect_err(
            Volume::create(uri, SIZE),
            ErrorKind::InvalidArgument,
            &[uri],
        );
        expect_err(
            Volume::open(uri, &place.opts()),
            ErrorKind::InvalidArgument,
            &[uri],
        );
        expect_err(
            Volume::open(uri, &OpenOptions::read_only()),
            ErrorKind::InvalidArgument,
            &[uri],
        );
        expect_err(fsck(uri, true), ErrorKind::InvalidArgument, &[uri]);
        expect_err(delete_volume(uri), ErrorKind::InvalidArgument, &[uri]);
        expect_err(
            clone_volume(&format!("{}%s1", place.uri("vol")), uri, None),
            ErrorKind::InvalidArgument,
            &[uri],
        );
        expect_err(
            clone_volume(uri, &place.uri("clone"), None),
            ErrorKind::InvalidArgument,
            &[uri],
        );
    }
    // The mixed-scheme typo is called out as such.
    let msg = expect_err(
        Volume::open(&bad[0], &place.opts()),
        ErrorKind::InvalidArgument,
        &["mixes schemes"],
    );
    assert!(
        msg.contains("local:///"),
        "{msg} should show the right form"
    );
    assert_eq!(fingerprint(&place, &["vol"]), before);
    assert!(
        !Path::new(rel).exists(),
        "local://{rel} was taken as a path relative to the working directory"
    );
}

/// An HDFS NameNode that cannot be reached, or an `hdfs:///` URI without a
/// default filesystem, fails every operation with an error naming the
/// address (or the missing setting), and creates nothing.
#[test]
fn unreachable_hdfs_is_reported() {
    // Only this test touches HDFS in this binary; the deadline is read when
    // the client for an address is first made.
    std::env::set_var("HLFS_HDFS_TIMEOUT", "0.5");
    std::env::set_var("HADOOP_CONF_DIR", "/nonexistent-hlfs-test-conf");
    let place = setup();
    let before = fingerprint(&place, &["vol"]);
    let cases: [(&str, ErrorKind, &[&str]); 2] = [
        ("hdfs://127.0.0.1:1/vols/x", ErrorKind::Backend, &["127.0.0.1:1", "unreachable"]),
        ("hlfs:hdfs:///tmp/testenv/testfs", ErrorKind::InvalidArgument, &["fs.defaultFS", "HADOOP_CONF_DIR"]),
    ];
    for (uri, kind, want) in cases {
        expect_err(Volume::create(uri, SIZE), kind, want);
        expect_err(Volume::open(uri, &OpenOptions::default()), kind, want);
        expect_err(fsck(uri, false), kind, want);
        expect_err(delete_volume(uri), kind, want);
        let snap = format!("{uri}%snapshot1");
        expect_err(Volume::open(&snap, &OpenOptions::read_only()), kind, want);
        expect_err(Volume::open(&snap, &OpenOptions::default()), kind, want);
        expect_err(clone_volume(&snap, &place.uri("c"), None), kind, want);
    }
    // A clone onto an unreachable HDFS fails before it registers anything with the base.
    let e = expect_err(
        clone_volume(&format!("{}%s1", place.uri("vol")), "hdfs://127.0.0.1:1/vols/c", None),
        ErrorKind::Backend,
        &["127.0.0.1:1"],
    );
    assert!(e.contains("unreachable"), "{e}");
    assert_eq!(fingerprint(&place, &["vol"]), before);
}

#[test]
fn bad_sizes_are_rejected() {
    let place = setup();
    let before = fingerprint(&place, &["vol"]);
    let new = place.uri("new");
    expect_err(
        Volume::create(&new, 0),
        ErrorKind::InvalidArgument,
        &["size is 0"],
    );
    expect_err(
        Volume::create(&new, 1000),
        ErrorKind::InvalidArgument,
        &["1000", "multiple of 512"],
    );
    let huge = (1u64 << 50) + 512;
    expect_err(
        Volume::create(&new, huge),
        ErrorKind::InvalidArgument,
        &[&huge.to_string(), "1 PiB"],
    );
    expect_err(
        Volume::create(&new, u64::MAX - 511),
        ErrorKind::InvalidArgument,
        &["1 PiB"],
    );
    expect_err(
        hlfs::parse_size("10X"),
        ErrorKind::InvalidArgument,
        &["10X"],
    );
    expect_err(
        hlfs::parse_size("-5G"),
        ErrorKind::InvalidArgument,
        &["-5G"],
    );
    assert_eq!(
        fingerprint(&place, &["vol"]),
        before,
        "a bad create left something behind"
    );

    // Resizes: invalid sizes, and shrinking, leave the volume as it was.
    let v = Volume::open(&place.uri("vol"), &place.opts()).unwrap();
    expect_err(v.resize(0), ErrorKind::InvalidArgument, &["0"]);
    expect_err(
        v.resize(SIZE + 1000),
        ErrorKind::InvalidArgument,
        &[&(SIZE + 1000).to_string()],
    );
    expect_err(
        v.resize(huge),
        ErrorKind::InvalidArgument,
        &[&huge.to_string()],
    );
    let msg = expect_err(
        v.resize(SIZE - 4096),
        ErrorKind::Unsupported,
        &["shrinking", &SIZE.to_string(), &(SIZE - 4096).to_string()],
    );
    assert!(msg.contains(&place.uri("vol")), "{msg}");
    assert_eq!(v.size(), SIZE);
    // A clone may not be smaller than its snapshot.
    expect_err(
        clone_volume(
            &format!("{}%s1", place.uri("vol")),
            &place.uri("c"),
            Some(SIZE - 4096),
        ),
        ErrorKind::InvalidArgument,
        &[&(SIZE - 4096).to_string()],
    );
    v.close().unwrap();
    assert_eq!(fingerprint(&place, &["vol"]), before);
}

#[test]
fn bad_snapshot_names_are_rejected() {
    let place = setup();
    let before = fingerprint(&place, &["vol"]);
    let uri = place.uri("vol");
    let v = Volume::open(&uri, &place.opts()).unwrap();
    let long = "x".repeat(256);
    let cases: [(&str, &str); 5] = [
        ("", "empty"),
        (&long, "256 bytes"),
        ("a/b", "\"a/b\""),
        ("50%", "\"50%\""),
        ("two\nlines", "\"two\\nlines\""),
    ];
    for (name, says) in cases {
        expect_err(v.snapshot_create(name), ErrorKind::InvalidArgument, &[says]);
        expect_err(v.snapshot_delete(name), ErrorKind::InvalidArgument, &[says]);
        expect_err(v.snapshot_revert(name), ErrorKind::InvalidArgument, &[says]);
    }
    // 255 bytes is still fine (and is undone below by deleting it).
    let ok = "y".repeat(255);
    v.snapshot_create(&ok).unwrap();
    v.snapshot_delete(&ok).unwrap();

    // A duplicate name.
    expect_err(
        v.snapshot_create("s1"),
        ErrorKind::Exists,
        &["\"s1\"", &uri],
    );
    // Missing snapshots: the message lists the ones that exist.
    for r in [v.snapshot_delete("nope"), v.snapshot_revert("nope")] {
        expect_err(r, ErrorKind::NotFound, &["\"nope\"", "s1, s2"]);
    }
    assert_eq!(snap_names(&v), ["s1", "s2"]);
    v.close().unwrap();
    // Opening a missing snapshot, read-only or read-write (which would revert).
    for opts in [OpenOptions::read_only(), place.opts()] {
        // The guide's own typo.
        expect_err(
            Volume::open(&format!("{uri}%shopshot1"), &opts),
            ErrorKind::NotFound,
            &["\"shopshot1\"", "s1, s2"],
        );
    }
    let after = fingerprint(&place, &["vol"]);
    // Creating and deleting the 255-byte snapshot appended to the log; the
    // snapshots and contents are what count here.
    assert_eq!(after.volumes, before.volumes);
}

#[test]
fn failed_snapshot_ops_append_nothing() {
    let place = setup();
    let uri = place.uri("vol");
    let before = fingerprint(&place, &["vol"]);
    let v = Volume::open(&uri, &place.opts()).unwrap();
    let _ = v.snapshot_create("");
    let _ = v.snapshot_create("s1");
    let _ = v.snapshot_delete("nope");
    let _ = v.snapshot_revert("nope");
    let _ = v.resize(SIZE - 512);
    v.close().unwrap();
    let _ = Volume::open(&format!("{uri}%nope"), &place.opts());
    assert_eq!(
        fingerprint(&place, &["vol"]),
        before,
        "a refused operation wrote to the volume"
    );
}

#[test]
fn snapshots_and_volumes_with_clones_cannot_be_deleted() {
    let place = setup();
    let uri = place.uri("vol");
    let c1 = place.uri("c1");
    let c2 = place.uri("c2");
    clone_volume(&format!("{uri}%s1"), &c1, None).unwrap();
    clone_volume(&format!("hlfs:{uri}%s1"), &c2, None).unwrap();
    let before = fingerprint(&place, &["vol", "c1", "c2"]);

    let v = Volume::open(&uri, &place.opts()).unwrap();
    let msg = expect_err(
        v.snapshot_delete("s1"),
        ErrorKind::InUse,
        &["\"s1\"", &c1, &c2],
    );
    assert!(msg.contains("delete"), "{msg} should say what to do");
    let info = v.snapshots().unwrap();
    assert_eq!(info[0].clones.len(), 2, "{info:?}");
    v.close().unwrap();
    expect_err(delete_volume(&uri), ErrorKind::InUse, &[&uri, &c1, &c2]);
    assert_eq!(fingerprint(&place, &["vol", "c1", "c2"]), before);

    // Once the clones are gone, both succeed.
    delete_volume(&c1).unwrap();
    delete_volume(&c2).unwrap();
    let v = Volume::open(&uri, &place.opts()).unwrap();
    v.snapshot_delete("s1").unwrap();
    v.close().unwrap();
    delete_volume(&uri).unwrap();
    assert!(
        files(place.dir.path()).is_empty(),
        "{:?}",
        files(place.dir.path())
    );
}

#[test]
fn misplaced_io_is_rejected() {
    let place = setup();
    let uri = place.uri("vol");
    let before = fingerprint(&place, &["vol"]);
    let v = Volume::open(&uri, &place.opts()).unwrap();
    let mut b = vec![0u8; 1024];
    // Unaligned offsets and lengths.
    expect_err(
        v.read(100, &mut b[..512]),
        ErrorKind::InvalidArgument,
        &["offset 100", "512"],
    );
    expect_err(
        v.read(0, &mut b[..100]),
        ErrorKind::InvalidArgument,
        &["length 100"],
    );
    expect_err(
        v.write(4097, &b[..512]),
        ErrorKind::InvalidArgument,
        &["offset 4097"],
    );
    expect_err(
        v.write(0, &b[..513]),
        ErrorKind::InvalidArgument,
        &["length 513"],
    );
    expect_err(
        v.write_zeroes(1, 512),
        ErrorKind::InvalidArgument,
        &["offset 1"],
    );
    expect_err(
        v.discard(0, 100),
        ErrorKind::InvalidArgument,
        &["length 100"],
    );
    // Past the end, including offsets that overflow.
    let past = ["past the end", &SIZE.to_string()];
    expect_err(
        v.read(SIZE - 512, &mut b),
        ErrorKind::InvalidArgument,
        &past,
    );
    expect_err(
        v.read(SIZE, &mut b[..512]),
        ErrorKind::InvalidArgument,
        &past,
    );
    expect_err(v.write(SIZE, &b[..512]), ErrorKind::InvalidArgument, &past);
    expect_err(v.write(SIZE - 512, &b), ErrorKind::InvalidArgument, &past);
    expect_err(
        v.write(u64::MAX - 511, &b[..512]),
        ErrorKind::InvalidArgument,
        &past,
    );
    expect_err(
        v.write_zeroes(SIZE - 512, 1024),
        ErrorKind::InvalidArgument,
        &past,
    );
    expect_err(
        v.discard(u64::MAX - 511, 1024),
        ErrorKind::InvalidArgument,
        &past,
    );
    expect_err(
        v.block_status(SIZE, 4096),
        ErrorKind::InvalidArgument,
        &["past the end"],
    );
    v.close().unwrap();
    assert_eq!(fingerprint(&place, &["vol"]), before);
}

#[test]
fn read_only_opens_refuse_every_change() {
    let place = setup();
    let uri = place.uri("vol");
    let before = fingerprint(&place, &["vol"]);
    for target in [uri.clone(), format!("{uri}%s1")] {
        let v = Volume::open(&target, &OpenOptions::read_only()).unwrap();
        assert!(v.is_read_only());
        let ro = [target.as_str(), "read-only"];
        expect_err(v.write(0, &[1u8; 4096]), ErrorKind::ReadOnly, &ro);
        expect_err(v.write_zeroes(0, 4096), ErrorKind::ReadOnly, &ro);
        expect_err(v.discard(0, 4096), ErrorKind::ReadOnly, &ro);
        expect_err(v.resize(2 * SIZE), ErrorKind::ReadOnly, &ro);
        expect_err(v.snapshot_create("new"), ErrorKind::ReadOnly, &ro);
        expect_err(v.snapshot_delete("s2"), ErrorKind::ReadOnly, &ro);
        expect_err(v.snapshot_revert("s1"), ErrorKind::ReadOnly, &ro);
        v.flush().unwrap();
        v.close().unwrap();
    }
    assert_eq!(fingerprint(&place, &["vol"]), before);
}

#[test]
fn one_writer_at_a_time() {
    let place = setup();
    let uri = place.uri("vol");
    let before = fingerprint(&place, &["vol"]);
    let w = Volume::open(&uri, &place.opts()).unwrap();
    let pid = format!("open read-write by pid {}", std::process::id());
    expect_err(
        Volume::open(&uri, &place.opts()),
        ErrorKind::Locked,
        &[&pid, &uri],
    );
    expect_err(
        Volume::open(&format!("{uri}%s1"), &place.opts()),
        ErrorKind::Locked,
        &[&pid],
    );
    expect_err(
        Volume::open(&format!("hlfs:{uri}/"), &place.opts()),
        ErrorKind::Locked,
        &[&pid],
    );
    expect_err(delete_volume(&uri), ErrorKind::Locked, &[&pid]);
    // Readers are welcome while the writer holds the volume, and see what
    // it flushed; they can name the writer.
    w.write(0, &[9u8; 4096]).unwrap();
    w.flush().unwrap();
    let r = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
    let mut b = vec![0u8; 4096];
    r.read(0, &mut b).unwrap();
    assert_eq!(b, vec![9u8; 4096]);
    let writer = r.info().unwrap().writer.expect("writer shown");
    assert!(writer.contains(&std::process::id().to_string()), "{writer}");
    let s = Volume::open(&format!("{uri}%s1"), &OpenOptions::read_only()).unwrap();
    let mut s1 = vec![0u8; SIZE as usize];
    s1[..64 << 10].copy_from_slice(&pattern(1, 64 << 10));
    assert!(read_all(&s) == s1, "snapshot view beside a writer");
    drop((r, s));
    // Put the old bytes back so the contents can be compared.
    w.write(0, &before.volumes[0].2[..4096]).unwrap();
    w.close().unwrap();
    let after = fingerprint(&place, &["vol"]);
    assert_eq!(after.volumes, before.volumes);
    // Released on close: a new writer gets in.
    Volume::open(&uri, &place.opts()).unwrap().close().unwrap();
}

#[test]
fn other_refusals() {
    let place = setup();
    let uri = place.uri("vol");
    let before = fingerprint(&place, &["vol"]);
    expect_err(
        Volume::create(&uri, SIZE),
        ErrorKind::Exists,
        &[&uri, "already exists"],
    );
    expect_err(
        Volume::create(&format!("{uri}%s9"), SIZE),
        ErrorKind::InvalidArgument,
        &["%s9"],
    );
    let missing = place.uri("missing");
    expect_err(
        Volume::open(&missing, &place.opts()),
        ErrorKind::NotFound,
        &[&missing, "hlfs create"],
    );
    expect_err(
        Volume::open(&missing, &OpenOptions::read_only()),
        ErrorKind::NotFound,
        &[&missing],
    );
    expect_err(delete_volume(&missing), ErrorKind::NotFound, &[&missing]);
    expect_err(fsck(&missing, false), ErrorKind::NotFound, &[&missing]);
    expect_err(
        delete_volume(&format!("{uri}%s1")),
        ErrorKind::InvalidArgument,
        &["snapshot delete"],
    );
    // Clones need a snapshot, a new target, and not the source itself.
    expect_err(
        clone_volume(&uri, &place.uri("c"), None),
        ErrorKind::InvalidArgument,
        &[&uri, "%SNAPSHOT"],
    );
    expect_err(
        clone_volume(&format!("{uri}%nope"), &place.uri("c"), None),
        ErrorKind::NotFound,
        &["\"nope\"", "s1, s2"],
    );
    expect_err(
        clone_volume(&format!("{uri}%s1"), &uri, None),
        ErrorKind::InvalidArgument,
        &["onto itself"],
    );
    expect_err(
        clone_volume(&format!("{uri}%s1"), &format!("{}%x", place.uri("c")), None),
        ErrorKind::InvalidArgument,
        &["must not name a snapshot"],
    );
    Volume::create(&place.uri("full"), SIZE).unwrap();
    let f = Volume::open(&place.uri("full"), &place.opts()).unwrap();
    f.write(0, &[1u8; 4096]).unwrap();
    f.close().unwrap();
    let full_before = fingerprint(&place, &["full"]);
    expect_err(
        clone_volume(&format!("{uri}%s1"), &place.uri("full"), None),
        ErrorKind::Exists,
        &[&place.uri("full"), "already holds data"],
    );
    assert_eq!(fingerprint(&place, &["full"]).volumes, full_before.volumes);
    delete_volume(&place.uri("full")).unwrap();
    let after = fingerprint(&place, &["vol"]);
    assert_eq!(after.volumes, before.volumes);
    // None of the refused clones left a reference that blocks deleting the snapshot.
    let v = Volume::open(&uri, &place.opts()).unwrap();
    v.snapshot_delete("s1").unwrap();
    v.close().unwrap();
}

/// Fills the backend of `place` with 64 KiB writes, each followed by a
/// flush, until one fails. Returns the open volume, the model of what was
/// flushed (without the failing write), the failing write's range, whether the write itself failed
/// (rather than its flush), and the error.
fn fill_until_full(
    place: &Place,
    uri: &str,
) -> (Volume, Vec<u8>, std::ops::Range<usize>, bool, hlfs::Error) {
    let mem = place.mem.clone().unwrap();
    Volume::create(uri, 8 << 20).unwrap();
    let v = Volume::open(uri, &place.opts()).unwrap();
    let mut model = vec![0u8; 8 << 20];
    let first = pattern(1, 256 << 10);
    v.write(0, &first).unwrap();
    v.flush().unwrap();
    model[..first.len()].copy_from_slice(&first);
    let used: u64 = place.listing("vol").iter().map(|(_, n)| n).sum();
    mem.set_capacity(Some(used + (600 << 10)));
    let mut off = 1 << 20;
    loop {
        let data = pattern(off, 64 << 10);
        let range = off as usize..off as usize + data.len();
        if let Err(e) = v.write(off, &data) {
            return (v, model, range, true, e);
        }
        if let Err(e) = v.flush() {
            return (v, model, range, false, e);
        }
        model[range].copy_from_slice(&data);
        off += 64 << 10;
        assert!(off < 8 << 20, "capacity was never reached");
    }
}

/// `got` equals `model` except in `torn` (a write that failed), where each
/// 4 KiB block holds the old or the new data.
fn assert_model(got: &[u8], model: &[u8], torn: &std::ops::Range<usize>, new: &[u8], what: &str) {
    assert!(got[..torn.start] == model[..torn.start], "{what}: data before the failed write differs");
    assert!(got[torn.end..] == model[torn.end..], "{what}: data after the failed write differs");
    for (i, b) in got[torn.clone()].chunks(4096).enumerate() {
        let old = &model[torn.start + i * 4096..][..4096];
        assert!(b == old || b == &new[i * 4096..][..4096], "{what}: block {i} of the failed write is torn");
    }
}

#[test]
fn out_of_space_is_reported_and_the_volume_goes_on_once_space_is_freed() {
    let place = Place::new(Kind::Mem);
    let mem = place.mem.clone().unwrap();
    let uri = place.uri("vol");
    let (v, mut model, torn, write_failed, err) = fill_until_full(&place, &uri);
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    assert!(err.to_string().contains("/vols/vol/"), "{err} should name the file");
    let failed_data = pattern(torn.start as u64, torn.len());
    // While the backend is full, writes and flushes fail with ENOSPC again
    // (the writer is not poisoned), and reads see every acknowledged write.
    for _ in 0..3 {
        let e = v.write(torn.start as u64, &failed_data).and_then(|()| v.flush()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    }
    assert_model(&read_all(&v), &model, &torn, &failed_data, "still full");
    // Space comes back: the same open volume retries the failed write (as
    // QEMU does on `cont` after werror=stop paused the VM) and goes on.
    mem.set_capacity(None);
    v.write(torn.start as u64, &failed_data).unwrap();
    v.flush().unwrap();
    model[torn.clone()].copy_from_slice(&failed_data);
    let more = pattern(7 << 20, 128 << 10);
    v.write(7 << 20, &more).unwrap();
    model[7 << 20..(7 << 20) + more.len()].copy_from_slice(&more);
    assert!(read_all(&v) == model, "the live volume differs from what it acknowledged");
    v.close().unwrap();
    let v = Volume::open(&uri, &place.opts()).unwrap();
    assert!(read_all(&v) == model, "after reopening, the volume differs (write_failed={write_failed})");
    v.close().unwrap();
    assert!(hlfs::fsck(&uri, false).unwrap().errors.is_empty());
}

#[test]
fn out_of_space_on_hdfs_fails_writes_until_space_is_freed_and_loses_nothing_flushed() {
    // HDFS cannot cut a half-written file back, but the writer holds the
    // active segment in memory: while the quota is full every write fails
    // with NoSpace, and once space is freed the same open volume goes on
    // (the segment's unwritten part goes into a new segment).
    let place = Place::new(Kind::MemClosedOnly);
    let mem = place.mem.clone().unwrap();
    let uri = place.uri("vol");
    let (v, model, torn, _, err) = fill_until_full(&place, &uri);
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    let again = v.write(0, &[1u8; 4096]).and_then(|()| v.flush()).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::NoSpace, "still full: {again}");
    mem.set_capacity(None);
    v.write(0, &[2u8; 4096]).expect("space is free again: the same open volume goes on");
    v.flush().unwrap();
    drop(v);
    let v = Volume::open(&uri, &place.opts()).unwrap();
    // Every flushed write is there; the one whose write or flush failed may
    // or may not be.
    let got = read_all(&v);
    assert!(got[..4096].iter().all(|&b| b == 2), "the write after the quota was raised");
    let mut want = model.clone();
    want[..4096].fill(2);
    assert_model(&got, &want, &torn, &pattern(torn.start as u64, torn.len()), "reopened");
    v.close().unwrap();
    assert!(hlfs::fsck(&uri, false).unwrap().errors.is_empty());
}
