//! HDFS. Always run (no server needed): a NameNode that cannot be reached
//! fails within the deadline with its address in the message.
//!
//! Against a real HDFS, only when `HLFS_TEST_HDFS=hdfs://host:port/dir` is
//! set and the ignored tests are asked for (`cargo test --release -p hlfs
//! --test hdfs -- --ignored`, or tests/e2e/hdfs.sh): the backend conformance
//! suite, the create / write / snapshot / clone / reopen-elsewhere scenario,
//! and clones between local and HDFS both ways. Without the variable they
//! are reported as ignored, never as passed (and fail if forced to run).
//! The model, fencing and crash suites have their real-HDFS variants in
//! their own files (`real_hdfs_*` in model.rs, fencing.rs, crash.rs);
//! scripts/test.sh runs all of them: `cargo test --release -p hlfs --test
//! hdfs --test model --test fencing --test crash -- --ignored real_hdfs
//! --test-threads 1`.

mod common;

use common::{assert_same, conformance, pattern, read_all, Kind, Place};
use hlfs::{clone_volume, delete_volume, fsck, ErrorKind, OpenOptions, Volume};
use std::time::{Duration, Instant};

#[test]
fn unreachable_namenode_fails_within_the_deadline() {
    std::env::set_var("HLFS_HDFS_TIMEOUT", "1.5");
    // Port 1 on loopback refuses at once: the engine retries until the deadline.
    let uri = "hlfs:hdfs://127.0.0.1:1/hlfs-test/vol";
    let t = Instant::now();
    let e = Volume::open(uri, &OpenOptions::default()).unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
    let m = e.to_string();
    eprintln!("{m}");
    assert!(
        m.contains("127.0.0.1:1") && m.contains("unreachable"),
        "{m}"
    );
    assert!(
        m.contains("HLFS_HDFS_TIMEOUT"),
        "the message says how to change the deadline: {m}"
    );
    assert!(
        took >= Duration::from_millis(1000),
        "retried until the deadline ({took:?})"
    );
    assert!(
        took < Duration::from_secs(10),
        "bounded by the deadline ({took:?})"
    );
    for r in [
        Volume::create(uri, 1 << 20).map(drop),
        fsck(uri, false).map(drop),
        delete_volume(uri),
    ] {
        let e = r.unwrap_err();
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    }
}

/// A "NameNode" that accepts connections and never answers (a hung
/// server, a black-holed route) is bounded by the same deadline.
#[test]
fn silent_namenode_fails_within_the_deadline() {
    std::env::set_var("HLFS_HDFS_TIMEOUT", "1.5");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s); // keep it open, say nothing
        }
    });
    let uri = format!("hdfs://127.0.0.1:{port}/hlfs-test/vol");
    let t = Instant::now();
    let e = Volume::open(&uri, &OpenOptions::read_only()).unwrap_err();
    let took = t.elapsed();
    let m = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Backend, "{m}");
    assert!(
        m.contains(&format!("127.0.0.1:{port}")) && m.contains("no answer within"),
        "{m}"
    );
    assert!(
        took < Duration::from_secs(10),
        "bounded by the deadline ({took:?})"
    );
}

#[test]
#[ignore = "needs HLFS_TEST_HDFS=hdfs://host:port/dir"]
fn real_hdfs_conforms() {
    let place = Place::new(Kind::Hdfs);
    conformance::run(&*place.backend(), &place.path("conformance"));
    cleanup(&place);
}

/// Create, write, snapshot, clone, flush, reopen elsewhere (fresh index
/// cache, as another host), check every view, delete.
#[test]
#[ignore = "needs HLFS_TEST_HDFS=hdfs://host:port/dir"]
fn real_hdfs_end_to_end() {
    let place = Place::new(Kind::Hdfs);
    let uri = place.uri("vol");
    let size = 8u64 << 20;
    Volume::create(&uri, size).unwrap();
    assert_eq!(
        Volume::create(&uri, size).unwrap_err().kind(),
        ErrorKind::Exists
    );
    let v = Volume::open(&uri, &place.opts()).unwrap();
    let second = Volume::open(&uri, &place.opts()).unwrap_err();
    assert_eq!(second.kind(), ErrorKind::Locked, "{second}");
    let a = pattern(1, size as usize);
    v.write(0, &a).unwrap();
    v.flush().unwrap();
    v.snapshot_create("s1").unwrap();
    let b = pattern(2, 1 << 20);
    v.write(3 << 20, &b).unwrap();
    v.flush().unwrap();
    let mut head = a.clone();
    head[3 << 20..(3 << 20) + b.len()].copy_from_slice(&b);
    // A flush hsyncs: durable, but HDFS shows other readers an open file
    // only once it is closed. A metadata operation seals the segment, so
    // another opener sees everything before it at once.
    v.snapshot_create("s2").unwrap();
    let ro = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
    assert_same("read-only view after a snapshot", &read_all(&ro), &head);
    drop(ro);
    clone_volume(&format!("{uri}%s1"), &place.uri("clone"), None).unwrap();
    v.close().unwrap();

    let elsewhere = tempfile::tempdir().unwrap();
    let o = OpenOptions {
        index_root: Some(elsewhere.path().to_path_buf()),
        ..place.opts()
    };
    let v = Volume::open(&uri, &o).unwrap();
    assert_same("head reopened elsewhere", &read_all(&v), &head);
    v.close().unwrap();
    let s = Volume::open(&format!("{uri}%s1"), &OpenOptions::read_only()).unwrap();
    assert_same("snapshot", &read_all(&s), &a);
    drop(s);
    let c = Volume::open(&place.uri("clone"), &o).unwrap();
    assert_same("clone", &read_all(&c), &a);
    c.write(0, &b).unwrap();
    c.close().unwrap();
    let rep = fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    delete_volume(&place.uri("clone")).unwrap();
    delete_volume(&uri).unwrap();
    cleanup(&place);
}

#[test]
#[ignore = "needs HLFS_TEST_HDFS=hdfs://host:port/dir"]
fn real_hdfs_cross_backend_clones() {
    let local = Place::new(Kind::Local);
    let hdfs = Place::new(Kind::Hdfs);
    for (a, b) in [(&local, &hdfs), (&hdfs, &local)] {
        let base = a.uri("base");
        Volume::create(&base, 4 << 20).unwrap();
        let v = Volume::open(&base, &a.opts()).unwrap();
        let img = pattern(7, 4 << 20);
        v.write(0, &img).unwrap();
        v.snapshot_create("gold").unwrap();
        v.close().unwrap();
        let child = b.uri("child");
        clone_volume(&format!("{base}%gold"), &child, None).unwrap();
        let c = Volume::open(&child, &b.opts()).unwrap();
        assert_same("clone across backends", &read_all(&c), &img);
        c.write(0, &pattern(8, 4096)).unwrap();
        c.close().unwrap();
        let s = Volume::open(&format!("{base}%gold"), &OpenOptions::read_only()).unwrap();
        assert_same("base unchanged", &read_all(&s), &img);
        drop(s);
        delete_volume(&child).unwrap();
        delete_volume(&base).unwrap();
    }
    cleanup(&hdfs);
}

/// Sends one control command to the test cluster of tests/hdfs (its
/// directory in `HLFS_HDFS_CLUSTER_DIR`, set by scripts/test.sh).
fn cluster(cmd: &str) {
    let dir = std::env::var("HLFS_HDFS_CLUSTER_DIR")
        .expect("this test needs the cluster of tests/hdfs: set HLFS_HDFS_CLUSTER_DIR (scripts/test.sh does)");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/hdfs/cluster.sh");
    let out = std::process::Command::new("bash")
        .args([script, "cmd", &dir, cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster command {cmd}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A DataNode of the write pipeline stops mid-write, and later a second
/// one: no write, flush or close fails (a segment whose append or close
/// failed is written again, whole, from the writer's memory), and every
/// block reads back, also after a reopen elsewhere. Needs the cluster of
/// tests/hdfs (4 DataNodes, replication 3).
#[test]
#[ignore = "needs HLFS_TEST_HDFS and HLFS_HDFS_CLUSTER_DIR (the cluster of tests/hdfs)"]
fn real_hdfs_datanode_loss_mid_write() {
    let place = Place::new(Kind::Hdfs);
    let uri = place.uri("dnloss");
    let size = 64u64 << 20;
    Volume::create(&uri, size).unwrap();
    let opts = OpenOptions { segment_size: 8 << 20, ..place.opts() };
    let v = Volume::open(&uri, &opts).unwrap();
    let mut model = vec![0u8; size as usize];
    let chunk = 1usize << 20;
    for i in 0..48u64 {
        match i {
            12 => cluster("stop-datanode 0"),
            28 => cluster("stop-datanode 1"),
            40 => cluster("start-datanode 0"),
            _ => {}
        }
        let off = ((i * 5) % 64) as usize * chunk;
        let data = pattern(100 + i, chunk);
        v.write(off as u64, &data).unwrap_or_else(|e| panic!("write {i}: {e}"));
        model[off..off + chunk].copy_from_slice(&data);
        if i % 3 == 2 {
            v.flush().unwrap_or_else(|e| panic!("flush after write {i}: {e}"));
        }
    }
    cluster("start-datanode 1");
    assert_same("after the DataNode losses", &read_all(&v), &model);
    v.close().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let o = OpenOptions { index_root: Some(elsewhere.path().to_path_buf()), ..opts };
    let v = Volume::open(&uri, &o).unwrap();
    assert_same("reopened elsewhere", &read_all(&v), &model);
    v.close().unwrap();
    let rep = fsck(&uri, false).unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    delete_volume(&uri).unwrap();
    cleanup(&place);
}

/// A flush hsyncs the open segment instead of sealing it: a guest that
/// flushes after every write creates no file on the NameNode (it created
/// one per flush when flushes sealed). A writer that dies after the last
/// flush (its segment left open) loses none of it: the next read-write
/// opener has HDFS close the segment (lease recovery) before it reads.
#[test]
#[ignore = "needs HLFS_TEST_HDFS=hdfs://host:port/dir"]
fn real_hdfs_flushes_create_no_files() {
    let place = Place::new(Kind::Hdfs);
    let uri = place.uri("vol");
    let size = 64u64 << 20;
    Volume::create(&uri, size).unwrap();
    // The default segment size and checkpoint interval: segments roll at
    // the size, and a checkpoint seals one (a test-sized interval would
    // seal one every 512 KiB of log).
    let d = OpenOptions::default();
    let opts = OpenOptions {
        segment_size: d.segment_size,
        checkpoint_every: d.checkpoint_every,
        ..place.opts()
    };
    let v = Volume::open(&uri, &opts).unwrap();
    let b = place.backend();
    let dir = place.path("vol");
    // The first write and flush create the writer's first segment.
    v.write(0, &pattern(0, 4096)).unwrap();
    v.flush().unwrap();
    let before = hlfs::log::list_segments(&*b, &dir).unwrap().len();
    let mut model = vec![0u8; size as usize];
    model[..4096].copy_from_slice(&pattern(0, 4096));
    let flushes = 1000u64;
    let t = Instant::now();
    for i in 1..=flushes {
        let off = (i * 37 % 2048) * 4096;
        let data = pattern(i, 4096);
        v.write(off, &data).unwrap();
        model[off as usize..off as usize + 4096].copy_from_slice(&data);
        v.flush().unwrap_or_else(|e| panic!("flush {i}: {e}"));
    }
    let took = t.elapsed();
    let after = hlfs::log::list_segments(&*b, &dir).unwrap().len();
    eprintln!(
        "{flushes} write+flush pairs: {} segment file(s) created, {:.2} ms per pair",
        after - before,
        took.as_secs_f64() * 1000.0 / flushes as f64
    );
    assert_eq!(after, before, "flushes create no segment file");
    // The writer "dies": its segment stays open under this client's lease,
    // and its lock is removed as `hlfs unlock` would (which refuses a
    // holder alive on this host, as this process is).
    std::mem::forget(v);
    b.delete(&format!("{dir}/lock")).unwrap();
    // As another host would: its own index cache (the dead writer's is
    // still held by this process).
    let elsewhere = tempfile::tempdir().unwrap();
    let o = OpenOptions { index_root: Some(elsewhere.path().to_path_buf()), ..opts };
    let t = Instant::now();
    let v = Volume::open(&uri, &o).unwrap();
    eprintln!("takeover with lease recovery: {:.1} s", t.elapsed().as_secs_f64());
    assert_same("taken over after the writer died", &read_all(&v), &model);
    v.close().unwrap();
    delete_volume(&uri).unwrap();
    cleanup(&place);
}

fn cleanup(place: &Place) {
    place.remove_hdfs();
}
