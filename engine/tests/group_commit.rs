//! The write pipeline's group commit (`hlfs::pipeline`): concurrent
//! flushes share syncs, and a crash while flushers wait on one loses no
//! write whose flush returned.
//!
//! `concurrent_flushes_share_syncs`: eight threads each write a block and
//! flush, over and over, on a memory backend whose sync takes 3 ms. Without
//! group commit every flush is a sync of its own; with it, the flushes that
//! arrive while a sync runs are served by the next one. The volume must
//! equal the model afterwards, and after a reopen.
//!
//! `crash_inside_group_commit_loses_no_acknowledged_write`: the same
//! workload with a crash injected after the n-th backend operation, for a
//! range of n: the crash lands in appends, in syncs that other flushers
//! wait on, and in segment rolls. After the "reboot" (the backend keeps
//! what was durable and a random part of the rest), the volume opens and
//! every write whose flush returned Ok reads back.
//!
//! `background_checkpoints_under_concurrent_writes`: the same workload on
//! local files, whose periodic checkpoints are written by a thread of their
//! own from a copy of the map; a reopen from one of them is exact.

mod common;

use common::{pattern, read_all, Kind, Place};
use hlfs::backend::mem::MemBackend;
use hlfs::{OpenOptions, Volume};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

const THREADS: usize = 8;
const ROUNDS: usize = 25;
const BS: usize = 4096;

fn opts(place: &Place) -> OpenOptions {
    OpenOptions {
        // Small segments: rolls happen in the middle of the workload.
        segment_size: 256 << 10,
        ..place.opts()
    }
}

/// Block `t * ROUNDS + i` gets thread t's i-th write: every write has a
/// block of its own, so a flushed write must read back exactly.
fn block_of(t: usize, i: usize) -> u64 {
    (t * ROUNDS + i) as u64
}

/// Runs the workload; returns the writes whose flush returned Ok.
fn workload(v: &Arc<Volume>) -> Vec<(u64, Vec<u8>)> {
    let start = Arc::new(Barrier::new(THREADS));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (v, start, acked) = (v.clone(), start.clone(), acked.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..ROUNDS {
                    let b = block_of(t, i);
                    let data = pattern(b * 7 + 1, BS);
                    if v.write(b * BS as u64, &data).is_err() || v.flush().is_err() {
                        return;
                    }
                    acked.lock().unwrap().push((b, data));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

#[test]
fn concurrent_flushes_share_syncs() {
    let place = Place::new(Kind::Mem);
    let mem: MemBackend = place.mem.clone().unwrap();
    let uri = place.uri("vol");
    Volume::create(&uri, 4 << 20).unwrap();
    let v = Arc::new(Volume::open(&uri, &opts(&place)).unwrap());
    mem.set_sync_delay(Duration::from_millis(3));
    let before = mem.syncs();
    let acked = workload(&v);
    let syncs = mem.syncs() - before;
    mem.set_sync_delay(Duration::ZERO);
    let flushes = (THREADS * ROUNDS) as u64;
    assert_eq!(acked.len() as u64, flushes, "every write and flush succeeds");
    // Each roll of a full segment also syncs it; still, most flushes must
    // have ridden on another's sync.
    assert!(
        syncs * 3 <= flushes * 2,
        "{flushes} flushes took {syncs} syncs: flushes waiting on a sync are not sharing the next"
    );
    let mut model = vec![0u8; 4 << 20];
    for (b, d) in &acked {
        model[*b as usize * BS..][..BS].copy_from_slice(d);
    }
    assert!(read_all(&v) == model, "the volume differs from the model");
    Arc::try_unwrap(v).ok().unwrap().close().unwrap();
    let v = Volume::open(&uri, &opts(&place)).unwrap();
    assert!(read_all(&v) == model, "after reopening, the volume differs");
    v.close().unwrap();
    eprintln!("{flushes} flushes, {syncs} syncs");
}

#[test]
fn crash_inside_group_commit_loses_no_acknowledged_write() {
    // How many backend operations the full workload takes.
    let total = {
        let place = Place::new(Kind::Mem);
        let mem = place.mem.clone().unwrap();
        let uri = place.uri("vol");
        Volume::create(&uri, 4 << 20).unwrap();
        let v = Arc::new(Volume::open(&uri, &opts(&place)).unwrap());
        let before = mem.ops();
        workload(&v);
        mem.ops() - before
    };
    assert!(total > 50, "the workload took only {total} backend operations");
    let cases = 40u64;
    let mut lost = 0;
    let mut checked = 0;
    for k in 0..cases {
        let crash_at = 1 + k * total / cases;
        let place = Place::new(Kind::Mem);
        let mem = place.mem.clone().unwrap();
        let uri = place.uri("vol");
        Volume::create(&uri, 4 << 20).unwrap();
        let v = Arc::new(Volume::open(&uri, &opts(&place)).unwrap());
        mem.set_sync_delay(Duration::from_micros(300));
        mem.crash_after(crash_at);
        let acked = workload(&v);
        mem.crash_now();
        drop(v); // its close fails: the backend has crashed
        mem.set_sync_delay(Duration::ZERO);
        mem.recover(k);
        let v = Volume::open(&uri, &opts(&place))
            .unwrap_or_else(|e| panic!("crash after {crash_at} ops: the volume does not open: {e}"));
        let all = read_all(&v);
        for (b, d) in &acked {
            checked += 1;
            if &all[*b as usize * BS..][..BS] != d.as_slice() {
                lost += 1;
                eprintln!("crash after {crash_at} ops: block {b} lost its flushed write");
            }
        }
        v.close().unwrap();
        assert!(hlfs::fsck(&uri, false).unwrap().errors.is_empty(), "crash after {crash_at}: fsck");
    }
    eprintln!("{cases} crash points, {checked} acknowledged writes checked, {lost} lost");
    assert_eq!(lost, 0);
    assert!(checked > 0, "no write was acknowledged before any crash");
}

/// Checkpoints written in the background (local files: `flush` copies the
/// map and a thread writes it) while eight threads write and flush: after
/// a close, a reopen from the older of the two checkpoints kept (the newest
/// and the index removed) and the log after it equals the model, and fsck
/// finds nothing wrong.
#[test]
fn background_checkpoints_under_concurrent_writes() {
    let place = Place::new(Kind::Local);
    let uri = place.uri("vol");
    let opts = OpenOptions {
        segment_size: 256 << 10,
        checkpoint_every: 128 << 10,
        ..place.opts()
    };
    Volume::create(&uri, 4 << 20).unwrap();
    let v = Arc::new(Volume::open(&uri, &opts).unwrap());
    let acked = workload(&v);
    assert_eq!(acked.len(), THREADS * ROUNDS);
    Arc::try_unwrap(v).ok().unwrap().close().unwrap();
    let dir = std::path::Path::new(&place.path("vol")).to_path_buf();
    let mut ckpts: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ckpt-") && !n.ends_with(".tmp"))
        .collect();
    ckpts.sort();
    assert!(ckpts.len() >= 2, "checkpoints in {}: {ckpts:?}", dir.display());
    // The newest may be the close's; the one before it a flush's, written
    // in the background. Open from that one and the log after it.
    std::fs::remove_file(dir.join(ckpts.last().unwrap())).unwrap();
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let mut model = vec![0u8; 4 << 20];
    for (b, d) in &acked {
        model[*b as usize * BS..][..BS].copy_from_slice(d);
    }
    let v = Volume::open(&uri, &opts).unwrap();
    assert!(read_all(&v) == model, "reopened from its checkpoint, the volume differs");
    v.close().unwrap();
    assert!(hlfs::fsck(&uri, false).unwrap().errors.is_empty());
}
