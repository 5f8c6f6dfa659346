//! A broken lock (`hlfs unlock`, for a writer on a host that seemed gone)
//! must not let a writer that in fact still runs fork the log. On the strict
//! HDFS model: the new writer recovers the lease of the old one's open
//! segment and takes the next segment number at open, so the old writer's
//! next flush or segment create fails (nothing it is told is durable goes
//! missing), and its close leaves the new writer's lock alone.
//!
//! The same scenarios run on a real HDFS (`real_hdfs_*`, ignored without
//! `HLFS_TEST_HDFS`): with both writers in this process (one HDFS client,
//! two volume handles), and with the old writer in a child process (its own
//! HDFS client and leases, as on another host).

mod common;

use common::child::{serve_if_child, ChildOpts, RemoteVolume};
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

/// The old writer: a volume handle in this process, or one held by a child
/// process (`common::child`).
trait OldWriter {
    /// Writes `pattern(seed, len)` at `off`.
    fn write(&mut self, off: u64, seed: u64, len: usize) -> Result<(), String>;
    fn flush(&mut self) -> Result<(), String>;
    fn snapshot(&mut self, name: &str) -> Result<(), String>;
    /// Drops the handle, which closes it (a fenced writer's close fails,
    /// and must leave the new writer's lock alone), and waits until it is gone.
    fn close(self: Box<Self>);
}

impl OldWriter for Volume {
    fn write(&mut self, off: u64, seed: u64, len: usize) -> Result<(), String> {
        Volume::write(self, off, &pattern(seed, len)).map_err(|e| e.to_string())
    }
    fn flush(&mut self) -> Result<(), String> {
        Volume::flush(self).map_err(|e| e.to_string())
    }
    fn snapshot(&mut self, name: &str) -> Result<(), String> {
        self.snapshot_create(name).map_err(|e| e.to_string())
    }
    fn close(self: Box<Self>) {
        drop(self);
    }
}

impl OldWriter for RemoteVolume {
    fn write(&mut self, off: u64, seed: u64, len: usize) -> Result<(), String> {
        self.call(&format!("write {off} {seed} {len}"))
    }
    fn flush(&mut self) -> Result<(), String> {
        self.call("flush")
    }
    fn snapshot(&mut self, name: &str) -> Result<(), String> {
        self.call(&format!("snap {name}"))
    }
    fn close(mut self: Box<Self>) {
        self.call("drop").unwrap();
        self.exit();
    }
}

/// Opens the old writer of `uri` with `opts`.
type OpenOld = dyn Fn(&str, &OpenOptions) -> Box<dyn OldWriter>;

fn in_this_process(uri: &str, o: &OpenOptions) -> Box<dyn OldWriter> {
    Box::new(Volume::open(uri, o).unwrap_or_else(|e| panic!("open {uri}: {e}")))
}

/// Two index caches, as two hosts have.
fn two_hosts(p: &Place) -> (tempfile::TempDir, tempfile::TempDir, OpenOptions, OpenOptions) {
    let ia = tempfile::tempdir().unwrap();
    let ib = tempfile::tempdir().unwrap();
    let oa = OpenOptions { index_root: Some(ia.path().into()), ..p.opts() };
    let ob = OpenOptions { index_root: Some(ib.path().into()), ..p.opts() };
    (ia, ib, oa, ob)
}

/// The old writer has written into its open segment since its last flush
/// when its lock is broken and a new writer opens.
fn old_writer_with_an_open_segment(p: &Place, open_old: &OpenOld) {
    let uri = p.uri("v");
    Volume::create(&uri, 4 << 20).unwrap();
    let (_ia, _ib, oa, ob) = two_hosts(p);
    let mut a = open_old(&uri, &oa);
    let x = pattern(1, 64 << 10);
    a.write(0, 1, x.len()).unwrap();
    a.flush().unwrap();
    a.write(1 << 20, 2, 4096).unwrap(); // in A's open segment
    break_lock_as_if_remote(p, "v");
    let b = Volume::open(&uri, &ob).unwrap();
    let e = a
        .flush()
        .expect_err("the old writer's flush must fail, not claim durability");
    eprintln!("the old writer's flush: {e}");
    assert!(e.contains("lease") || e.contains("exists") || e.contains("write lock is now held by"), "{e}");
    assert!(a.write(0, 9, 4096).is_err(), "and it writes no more");
    a.close(); // its close must not remove B's lock
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

/// The old writer's segments are all sealed (a flush only syncs; a
/// snapshot, a metadata operation, seals) when its lock is broken: its
/// next write needs a new segment, whose number the new writer took.
fn old_writer_between_segments(p: &Place, open_old: &OpenOld) {
    let uri = p.uri("v");
    Volume::create(&uri, 4 << 20).unwrap();
    let (_ia, _ib, oa, ob) = two_hosts(p);
    let mut a = open_old(&uri, &oa);
    let x = pattern(1, 64 << 10);
    a.write(0, 1, x.len()).unwrap();
    a.flush().unwrap();
    a.snapshot("sealed").unwrap(); // A has no open segment now
    break_lock_as_if_remote(p, "v");
    let b = Volume::open(&uri, &ob).unwrap();
    // A's next segment is the one B took.
    let r = a.write(1 << 20, 2, 4096).and_then(|()| a.flush());
    eprintln!("the old writer's write and flush: {r:?}");
    assert!(
        r.is_err(),
        "the old writer must fail to start a segment B owns"
    );
    a.close();
    b.write(2 << 20, &pattern(3, 4096)).unwrap();
    b.close().unwrap();
    let got = read_all(&Volume::open(&uri, &OpenOptions::read_only()).unwrap());
    assert_eq!(&got[..x.len()], &x[..]);
    assert!(
        got[1 << 20..(1 << 20) + 4096].iter().all(|b| *b == 0),
        "A's refused write is nowhere"
    );
}

#[test]
fn old_writer_with_an_open_segment_is_fenced() {
    old_writer_with_an_open_segment(&Place::new(Kind::MemClosedOnly), &in_this_process);
}

#[test]
fn old_writer_between_segments_is_fenced() {
    old_writer_between_segments(&Place::new(Kind::MemClosedOnly), &in_this_process);
}

/// Both writers in this process: one HDFS client, whose own lease the new
/// writer recovers.
#[test]
#[ignore = "needs HLFS_TEST_HDFS=hdfs://host:port/dir"]
fn real_hdfs_old_writer_is_fenced() {
    for scenario in [old_writer_with_an_open_segment, old_writer_between_segments] {
        let p = Place::new(Kind::Hdfs);
        scenario(&p, &in_this_process);
        p.remove_hdfs();
    }
}

/// The old writer in a child process: its own HDFS client and lease, alive
/// all along (as on a host that only seemed gone).
#[test]
#[ignore = "needs HLFS_TEST_HDFS=hdfs://host:port/dir"]
fn real_hdfs_old_writer_in_another_process_is_fenced() {
    if serve_if_child() {
        return;
    }
    let spawn = |uri: &str, o: &OpenOptions| -> Box<dyn OldWriter> {
        Box::new(RemoteVolume::spawn(
            "real_hdfs_old_writer_in_another_process_is_fenced",
            uri,
            &ChildOpts::from(o),
        ))
    };
    for scenario in [old_writer_with_an_open_segment, old_writer_between_segments] {
        let p = Place::new(Kind::Hdfs);
        scenario(&p, &spawn);
        p.remove_hdfs();
    }
}

/// A writer that survived a failure (a long HDFS outage, say: it was not
/// given up on, so a VM paused by werror=stop can resume) asks whether the
/// write lock is still its own before it writes on: meanwhile the volume
/// may have been taken over, and the segment numbers that fence it freed
/// again by the new writer's cleaner. It stops with the new holder's name.
#[test]
fn a_writer_recovering_from_a_failure_checks_its_lock_first() {
    let p = Place::new(Kind::MemClosedOnly);
    let mem = p.mem.clone().expect("a memory backend");
    let uri = p.uri("v");
    Volume::create(&uri, 4 << 20).unwrap();
    let (_ia, _ib, oa, ob) = two_hosts(&p);
    let a = Volume::open(&uri, &oa).unwrap();
    let x = pattern(1, 64 << 10);
    a.write(0, &x).unwrap();
    a.flush().unwrap();
    mem.fail_transiently(1000);
    a.write(1 << 20, &pattern(2, 4096)).unwrap();
    a.flush().expect_err("the outage outlasts the retries");
    mem.fail_transiently(0);
    break_lock_as_if_remote(&p, "v");
    let b = Volume::open(&uri, &ob).unwrap();
    let e = a.flush().expect_err("the old writer must not go on");
    assert!(e.to_string().contains("write lock is now held by"), "the fence said why: {e}");
    assert!(a.write(0, &[9u8; 4096]).is_err(), "and it writes no more");
    drop(a);
    let y = pattern(3, 8192);
    b.write(2 << 20, &y).unwrap();
    b.close().unwrap();
    let got = read_all(&Volume::open(&uri, &OpenOptions::read_only()).unwrap());
    assert_eq!(&got[..x.len()], &x[..], "A's flushed write is in the log");
    assert_eq!(&got[2 << 20..(2 << 20) + y.len()], &y[..], "B's write too");
}
