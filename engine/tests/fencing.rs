//! A broken lock (`hlfs unlock`, for a writer on a host that seemed gone)
//! must not let a writer that in fact still runs fork the log. On the strict
//! HDFS model: the new writer recovers the lease of the old one's open
//! segment and takes the next segment number at open, so the old writer's
//! next flush or segment create fails (nothing it is told is durable goes
//! missing), and its close leaves the new writer's lock alone.

mod common;

use common::{pattern, read_all, Kind, Place};
use hlfs::{OpenOptions, Volume};

/// Makes the volume's lock look held from another host, then breaks it as
/// `hlfs unlock` does.
fn break_lock_as_if_remote(place: &Place, name: &str) {
    let b = place.backend();
    let dir = place.path(name);
    let lock = format!("{dir}/lock");
    b.delete(&lock).unwrap();
    let mut f = b.create(&lock).unwrap();
    f.append(b"pid=4242\nhost=hlfs-test-gone-host\nstart=7\n")
        .unwrap();
    f.close().unwrap();
    let h = hlfs::lock::break_lock(&*b, &dir, &place.uri(name))
        .unwrap()
        .expect("a lock to break");
    assert_eq!(h.host, "hlfs-test-gone-host");
}

#[test]
fn old_writer_with_an_open_segment_is_fenced() {
    let p = Place::new(Kind::MemClosedOnly);
    let uri = p.uri("v");
    Volume::create(&uri, 4 << 20).unwrap();
    let ia = tempfile::tempdir().unwrap();
    let ib = tempfile::tempdir().unwrap();
    let a = Volume::open(
        &uri,
        &OpenOptions {
            index_root: Some(ia.path().into()),
            ..p.opts()
        },
    )
    .unwrap();
    let x = pattern(1, 64 << 10);
    a.write(0, &x).unwrap();
    a.flush().unwrap();
    a.write(1 << 20, &pattern(2, 4096)).unwrap(); // in A's open segment
    break_lock_as_if_remote(&p, "v");
    let b = Volume::open(
        &uri,
        &OpenOptions {
            index_root: Some(ib.path().into()),
            ..p.opts()
        },
    )
    .unwrap();
    let e = a
        .flush()
        .expect_err("the old writer's flush must fail, not claim durability");
    assert!(
        e.to_string().contains("lease") || e.to_string().contains("exists"),
        "{e}"
    );
    assert!(a.write(0, &[9u8; 4096]).is_err(), "and it writes no more");
    drop(a); // its close must not remove B's lock
    assert!(
        p.backend()
            .exists(&format!("{}/lock", p.path("v")))
            .unwrap(),
        "B's lock stays"
    );
    let y = pattern(3, 8192);
    b.write(2 << 20, &y).unwrap();
    b.close().unwrap();
    let got = read_all(&Volume::open(&uri, &OpenOptions::read_only()).unwrap());
    assert_eq!(&got[..x.len()], &x[..], "A's flushed write is in the log");
    assert_eq!(&got[2 << 20..(2 << 20) + y.len()], &y[..], "B's write too");
}

#[test]
fn old_writer_between_segments_is_fenced() {
    let p = Place::new(Kind::MemClosedOnly);
    let uri = p.uri("v");
    Volume::create(&uri, 4 << 20).unwrap();
    let ia = tempfile::tempdir().unwrap();
    let ib = tempfile::tempdir().unwrap();
    let a = Volume::open(
        &uri,
        &OpenOptions {
            index_root: Some(ia.path().into()),
            ..p.opts()
        },
    )
    .unwrap();
    let x = pattern(1, 64 << 10);
    a.write(0, &x).unwrap();
    a.flush().unwrap(); // sealed: A has no open segment now
    break_lock_as_if_remote(&p, "v");
    let b = Volume::open(
        &uri,
        &OpenOptions {
            index_root: Some(ib.path().into()),
            ..p.opts()
        },
    )
    .unwrap();
    // A's next segment is the one B took.
    let r = a.write(1 << 20, &pattern(2, 4096)).and_then(|()| a.flush());
    assert!(
        r.is_err(),
        "the old writer must fail to start a segment B owns"
    );
    drop(a);
    b.write(2 << 20, &pattern(3, 4096)).unwrap();
    b.close().unwrap();
    let got = read_all(&Volume::open(&uri, &OpenOptions::read_only()).unwrap());
    assert_eq!(&got[..x.len()], &x[..]);
    assert!(
        got[1 << 20..(1 << 20) + 4096].iter().all(|b| *b == 0),
        "A's refused write is nowhere"
    );
}
