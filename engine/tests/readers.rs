//! Reader registrations (registry.rs): the cleaner deletes a retired
//! segment as soon as no reader can need it.
//!
//! Properties:
//! - with no reader open, a pass deletes its victims at once (no grace
//!   period): six full overwrites of a volume and one `gc` leave the
//!   directory at most 2.5x the live data;
//! - a read-only view of the head opened before the pass keeps reading
//!   what it read, from the retired segments, which stay until it closes;
//!   its close deletes them;
//! - a snapshot view that may reload (`Volume::watch`) lets go within a
//!   heartbeat, and still reads the same bytes;
//! - a registration whose process is dead, or whose heartbeat lapsed on
//!   another host, holds nothing and is removed;
//! - `hlfs du`'s directory total (`DirSpace::total`) is what `du -sb` says.
//!
//! On the local backend, the memory backend, the strict HDFS model and
//! (`real_hdfs_*`, ignored without `HLFS_TEST_HDFS`) a real HDFS.

mod common;

use common::{assert_same, pattern, read_all, Kind, Place};
use hlfs::{GcOptions, OpenOptions, Volume};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIZE: u64 = 8 << 20;

/// Heartbeats every 0.3 s in this test binary (before any registration
/// starts the heartbeat thread), so that snapshot views let go quickly.
fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("HLFS_READER_HEARTBEAT", "0.3"));
}

fn opts(place: &Place) -> OpenOptions {
    OpenOptions { segment_size: 1 << 20, ..place.opts() }
}

/// The default options: the grace period is *not* what frees the space.
fn gc() -> GcOptions {
    GcOptions { max_utilization: 1.0, ..Default::default() }
}

fn dir_total(place: &Place, name: &str) -> u64 {
    place.backend().usage(&place.path(name)).expect("usage").total
}

/// Overwrites the whole volume with a new pattern `rounds` times; returns
/// the last contents.
fn overwrite(v: &Volume, seed: u64, rounds: u64) -> Vec<u8> {
    let mut last = Vec::new();
    for r in 0..rounds {
        last = pattern(seed * 100 + r, SIZE as usize);
        for (i, chunk) in last.chunks(1 << 20).enumerate() {
            v.write(i as u64 * (1 << 20), chunk).unwrap();
        }
        v.flush().unwrap();
    }
    last
}

fn names(place: &Place, name: &str) -> Vec<String> {
    place.backend().list(&place.path(name)).unwrap()
}

fn assert_compact(place: &Place, name: &str, live: u64, what: &str) {
    let total = dir_total(place, name);
    assert!(
        total as f64 <= 2.5 * live as f64,
        "{what}: directory holds {total} bytes for {live} live bytes: {:?}",
        names(place, name)
    );
}

fn gc_frees_at_once(kind: Kind) {
    let place = Place::new(kind);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    let want = overwrite(&v, 1, 6);
    assert!(dir_total(&place, "v") > 5 * SIZE, "six overwrites are in the log");
    let rep = v.gc(&gc(), &mut |_, _| {}).unwrap();
    assert!(rep.segments_cleaned > 0, "{rep:?}");
    assert_eq!(rep.retired_deleted, rep.segments_cleaned, "every victim deleted at once: {rep:?}");
    assert!(rep.retired.held.is_empty() && rep.retired.unaccounted.0 == 0, "{rep:?}");
    assert_compact(&place, "v", SIZE, "right after gc");
    assert!(!names(&place, "v").iter().any(|n| n.starts_with("retired-")));
    assert_same("head after gc", &read_all(&v), &want);
    v.close().unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    assert_same("head after reopen", &read_all(&v), &want);
    v.close().unwrap();
    place.remove_hdfs();
}

#[test]
fn gc_frees_at_once_without_readers() {
    setup();
    for kind in [Kind::Local, Kind::Mem, Kind::MemClosedOnly] {
        gc_frees_at_once(kind);
    }
}

fn head_view_holds_until_closed(kind: Kind) {
    let place = Place::new(kind);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    let written = overwrite(&v, 2, 1);
    let view = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
    // On HDFS (and its model) a reader sees the log up to the last sealed
    // segment, not what was only hsynced: what it reads at open is what
    // it must go on reading.
    let old = read_all(&view);
    if matches!(kind, Kind::Local | Kind::Mem) {
        assert_same("head view at open", &old, &written);
    }
    assert!(names(&place, "v").iter().any(|n| n.starts_with("reader-")), "the view registered");
    let new = overwrite(&v, 3, 5);
    let rep = v.gc(&gc(), &mut |_, _| {}).unwrap();
    assert!(rep.segments_cleaned > 0, "{rep:?}");
    assert_eq!(rep.retired.held.len(), 1, "held by the view: {rep:?}");
    let r = &rep.retired.held[0].readers;
    assert_eq!((r.len(), r[0].pid, r[0].refreshes), (1, std::process::id(), false), "{r:?}");
    assert!(r[0].what.ends_with("/v"), "{r:?}");
    // The view reads what it read, from the retired segments, without
    // loading its map again.
    assert_same("head view after gc", &read_all(&view), &old);
    assert_eq!(view.view_reloads(), 0);
    assert!(dir_total(&place, "v") > 3 * SIZE, "held back");
    // A second pass does not free them either.
    let rep = v.gc(&gc(), &mut |_, _| {}).unwrap();
    assert!(!rep.retired.held.is_empty(), "{rep:?}");
    view.close().unwrap();
    // The close deleted what only it held.
    assert_compact(&place, "v", SIZE, "after the view closed");
    assert!(!names(&place, "v").iter().any(|n| n.starts_with("reader-") || n.starts_with("holds-")));
    assert_same("head", &read_all(&v), &new);
    v.close().unwrap();
    place.remove_hdfs();
}

#[test]
fn a_head_view_holds_retired_segments_until_it_closes() {
    setup();
    for kind in [Kind::Local, Kind::Mem, Kind::MemClosedOnly] {
        head_view_holds_until_closed(kind);
    }
}

fn snapshot_view_lets_go(kind: Kind) {
    let place = Place::new(kind);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    let snap = overwrite(&v, 4, 1);
    v.snapshot_create("s1").unwrap();
    let view = Arc::new(Volume::open(&format!("{uri}%s1"), &OpenOptions::read_only()).unwrap());
    view.watch();
    // The snapshot's blocks move too: they sit in segments full of dead
    // head versions.
    let _ = overwrite(&v, 5, 2);
    let head = overwrite(&v, 6, 3);
    let rep = v.gc(&gc(), &mut |_, _| {}).unwrap();
    assert!(rep.segments_cleaned > 0, "{rep:?}");
    assert_eq!(rep.retired.held.len(), 1, "{rep:?}");
    assert!(rep.retired.held[0].readers[0].refreshes, "{rep:?}");
    // Within a heartbeat (HLFS_READER_HEARTBEAT, set low for this test
    // binary) the view loads a new map and the segments go.
    let t = Instant::now();
    loop {
        let rel = hlfs::release_retired(&uri, 600).unwrap();
        if rel.waiting_bytes() == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "still held: {rel:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(view.view_reloads() >= 1);
    assert_same("snapshot view after it let go", &read_all(&view), &snap);
    assert_compact(&place, "v", 2 * SIZE, "after the snapshot view let go");
    assert_same("head", &read_all(&v), &head);
    drop(view);
    v.close().unwrap();
    place.remove_hdfs();
}

#[test]
fn a_snapshot_view_lets_go_after_loading_a_new_map() {
    setup();
    for kind in [Kind::Local, Kind::Mem, Kind::MemClosedOnly] {
        snapshot_view_lets_go(kind);
    }
}

/// Writes a registration by hand, as another process would.
fn fake_reader(place: &Place, name: &str, token: u64, body: &str) {
    let b = place.backend();
    let mut f = b.create(&format!("{}/reader-{token:016x}-0-0", place.path(name))).unwrap();
    f.append(body.as_bytes()).unwrap();
    f.close().unwrap();
}

fn dead_readers_hold_nothing(kind: Kind) {
    let place = Place::new(kind);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    overwrite(&v, 7, 1);
    // A process of this host that is gone.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    fake_reader(
        &place,
        "v",
        0x11,
        &format!("pid={dead}\nhost={host}\nstart=1\ntoken=17\npid_space={}\nwhat={uri}\nrefreshes=0\nheartbeat=30\n", hlfs::lock::pid_space()),
    );
    // A reader on another host whose heartbeat is 1 s: it lapses after 4 s.
    fake_reader(
        &place,
        "v",
        0x22,
        &format!("pid=4242\nhost=some-other-host\nstart=1\ntoken=34\npid_space=other/boot/pid:[1]\nwhat={uri}%x\nrefreshes=0\nheartbeat=1\n"),
    );
    let written = Instant::now();
    overwrite(&v, 8, 5);
    let rep = v.gc(&gc(), &mut |_, _| {}).unwrap();
    assert!(rep.segments_cleaned > 0, "{rep:?}");
    let n = names(&place, "v");
    assert!(!n.iter().any(|n| n.starts_with("reader-0000000000000011")), "dead reader removed: {n:?}");
    if written.elapsed() < Duration::from_secs(3) {
        // Only the remote reader holds them, until its heartbeat lapses.
        assert_eq!(rep.retired.held.len(), 1, "{rep:?}");
        let r = &rep.retired.held[0].readers;
        assert_eq!((r.len(), r[0].pid, r[0].remote), (1, 4242, true), "{r:?}");
    }
    // Past the lapse (4 heartbeats of 1 s after the file was written) in
    // either case: a slow gc (HDFS under load) may end between 3 and 4 s.
    std::thread::sleep(Duration::from_millis(5500).saturating_sub(written.elapsed()));
    let rel = hlfs::release_retired(&uri, 600).unwrap();
    assert_eq!(rel.waiting_bytes(), 0, "{rel:?}");
    assert!(!names(&place, "v").iter().any(|n| n.starts_with("reader-") || n.starts_with("holds-")));
    assert_compact(&place, "v", SIZE, "after the remote reader lapsed");
    v.close().unwrap();
    place.remove_hdfs();
}

#[test]
fn dead_and_lapsed_readers_hold_nothing() {
    setup();
    for kind in [Kind::Local, Kind::Mem, Kind::MemClosedOnly] {
        dead_readers_hold_nothing(kind);
    }
}

/// `DirSpace::total` is what `du -sb` says of the directory, and the kinds
/// add up to it.
#[test]
fn dir_space_agrees_with_du() {
    setup();
    let place = Place::new(Kind::Local);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    overwrite(&v, 9, 3);
    v.snapshot_create("a").unwrap();
    overwrite(&v, 10, 1);
    v.close().unwrap();
    let view = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
    let s = view.dir_space().unwrap();
    drop(view);
    let out = std::process::Command::new("du").arg("-sb").arg(place.path("v")).output().unwrap();
    let du: u64 = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(s.total, du, "{s:?}");
    assert_eq!(s.segments + s.retired + s.checkpoints + s.index + s.other, s.total, "{s:?}");
    assert!(s.segments >= 4 * SIZE && s.index > 0 && s.checkpoints > 0, "{s:?}");
}

/// Deleting a volume that a reader has open is refused, naming it.
#[test]
fn delete_refuses_a_volume_being_read() {
    setup();
    let place = Place::new(Kind::Local);
    let uri = place.uri("v");
    Volume::create(&uri, SIZE).unwrap();
    let view = Volume::open(&uri, &OpenOptions::read_only()).unwrap();
    let e = hlfs::delete_volume(&uri).unwrap_err();
    assert_eq!(e.kind(), hlfs::ErrorKind::InUse, "{e}");
    assert!(e.to_string().contains(&format!("pid {}", std::process::id())), "{e}");
    drop(view);
    hlfs::delete_volume(&uri).unwrap();
}

#[test]
#[ignore = "needs HLFS_TEST_HDFS=hdfs://host:port/dir"]
fn real_hdfs_readers_hold_and_let_go() {
    setup();
    gc_frees_at_once(Kind::Hdfs);
    head_view_holds_until_closed(Kind::Hdfs);
    snapshot_view_lets_go(Kind::Hdfs);
    dead_readers_hold_nothing(Kind::Hdfs);
}
