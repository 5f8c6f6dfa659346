//! Property: one `Arc<Volume>` shared by many threads behaves like one
//! volume per region. Eight threads write (whole blocks, partial sectors,
//! two-block spans) and read back their own disjoint regions and flush now
//! and then, while another thread reads everything and the main thread takes
//! snapshots. Every thread always reads its own last writes; at the end, and
//! again after a reopen, the head matches; and each snapshot holds, for every
//! region, exactly the state after some prefix of that region's writes, one
//! that lies between the writes finished before the snapshot began and the
//! writes begun before it returned (snapshots are atomic with respect to writes).
//!
//! `large_volume_open_time` (ignored by default) measures opening a 1 TiB
//! volume with a million mapped blocks.

mod common;

use common::{assert_same, pattern, read_all, Kind, Place};
use hlfs::{OpenOptions, Volume};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

const THREADS: usize = 8;
const REGION: u64 = 512 << 10;
const OPS: usize = 300;
const SNAPSHOTS: usize = 3;

/// One write a thread made: (offset within its region, data).
type Write = (u64, Vec<u8>);

struct Counters {
    started: AtomicU64,
    finished: AtomicU64,
}

fn worker(v: &Volume, t: usize, c: &Counters, start: &Barrier) -> Vec<Write> {
    let mut rng = StdRng::seed_from_u64(t as u64);
    let base = t as u64 * REGION;
    let mut model = vec![0u8; REGION as usize];
    let mut log = Vec::new();
    start.wait();
    for i in 0..OPS {
        let (off, len) = match rng.gen_range(0..4) {
            0 => (rng.gen_range(0..REGION / 512) * 512, 512), // one sector
            1 => (rng.gen_range(0..REGION / 4096 - 1) * 4096 + 2048, 4096), // straddles two blocks
            _ => (rng.gen_range(0..REGION / 4096) * 4096, 4096),
        };
        let data = pattern((t * 1_000_000 + i) as u64, len as usize);
        c.started.fetch_add(1, Ordering::SeqCst);
        v.write(base + off, &data)
            .unwrap_or_else(|e| panic!("thread {t} write {i}: {e}"));
        c.finished.fetch_add(1, Ordering::SeqCst);
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
        log.push((off, data));
        // Read back a random stretch of our own region: our writes only.
        let roff = rng.gen_range(0..REGION / 512 - 16) * 512;
        let mut b = vec![0u8; 16 * 512];
        v.read(base + roff, &mut b).unwrap();
        assert!(
            b == model[roff as usize..roff as usize + b.len()],
            "thread {t} op {i}: read at {roff} does not show its own writes"
        );
        if i % 50 == 49 {
            v.flush().unwrap();
        }
    }
    log
}

/// The region's contents after the first `k` writes of `log`.
fn replay(log: &[Write], k: usize) -> Vec<u8> {
    let mut m = vec![0u8; REGION as usize];
    for (off, data) in &log[..k] {
        m[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    m
}

fn run(kind: Kind) {
    let place = Place::new(kind);
    let uri = place.uri("vol");
    Volume::create(&uri, THREADS as u64 * REGION).unwrap();
    let v = Arc::new(Volume::open(&uri, &place.opts()).unwrap());
    let counters: Arc<Vec<Counters>> = Arc::new(
        (0..THREADS)
            .map(|_| Counters {
                started: AtomicU64::new(0),
                finished: AtomicU64::new(0),
            })
            .collect(),
    );
    let start = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(AtomicBool::new(false));

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (v, c, s) = (v.clone(), counters.clone(), start.clone());
            std::thread::spawn(move || worker(&v, t, &c[t], &s))
        })
        .collect();
    // A reader of everything: racing writes, it must simply never fail.
    let reader = {
        let (v, done) = (v.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::SeqCst) {
                let _ = read_all(&v);
                v.block_status(0, v.size()).unwrap();
                n += 1;
            }
            n
        })
    };
    start.wait();
    // Snapshots while the writers run: (name, lower bounds, upper bounds).
    let mut snaps = Vec::new();
    for s in 0..SNAPSHOTS {
        std::thread::sleep(std::time::Duration::from_millis(20 + 30 * s as u64));
        let lo: Vec<u64> = counters
            .iter()
            .map(|c| c.finished.load(Ordering::SeqCst))
            .collect();
        let name = format!("during-{s}");
        v.snapshot_create(&name).unwrap();
        let hi: Vec<u64> = counters
            .iter()
            .map(|c| c.started.load(Ordering::SeqCst))
            .collect();
        snaps.push((name, lo, hi));
    }
    let logs: Vec<Vec<Write>> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();
    done.store(true, Ordering::SeqCst);
    let full_reads = reader.join().expect("reader");
    assert!(full_reads > 0);

    let head: Vec<u8> = logs.iter().flat_map(|l| replay(l, l.len())).collect();
    assert_same("head after the threads", &read_all(&v), &head);

    let check_snapshots = || {
        for (name, lo, hi) in &snaps {
            let s = Volume::open(&format!("{uri}%{name}"), &OpenOptions::read_only()).unwrap();
            let got = read_all(&s);
            for (t, log) in logs.iter().enumerate() {
                let region = &got[t * REGION as usize..(t + 1) * REGION as usize];
                let ok = (lo[t] as usize..=hi[t] as usize).any(|k| replay(log, k) == region);
                assert!(
                    ok,
                    "snapshot {name}, region {t}: not the state after any of writes {}..={}",
                    lo[t], hi[t]
                );
            }
        }
    };
    check_snapshots();

    let v = Arc::try_unwrap(v).expect("all threads are done");
    v.close().unwrap();
    let v = Volume::open(&uri, &place.opts()).unwrap();
    assert_same("head after reopen", &read_all(&v), &head);
    v.close().unwrap();
    check_snapshots();
    let spans: Vec<String> = snaps
        .iter()
        .map(|(_, lo, hi)| format!("{}..{}", lo.iter().min().unwrap(), hi.iter().max().unwrap()))
        .collect();
    println!(
        "{kind:?}: {} writes by {THREADS} threads, {full_reads} concurrent full reads, snapshots after per-thread writes {}",
        THREADS * OPS,
        spans.join(", ")
    );
}

#[test]
fn threads_share_a_volume_local() {
    run(Kind::Local);
}

#[test]
fn threads_share_a_volume_mem() {
    run(Kind::Mem);
}

#[test]
fn threads_share_a_volume_hdfs_like_visibility() {
    run(Kind::MemClosedOnly);
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Writes a million blocks (4 GiB, in 1 MiB writes spread over the address
/// space) to a 1 TiB local volume, then measures opening it: with its clean
/// index, from the checkpoint alone (index deleted), and by full replay
/// (rebuild_index). Prints times and RSS growth. Run with
/// `cargo test --release -p hlfs --test concurrency -- --ignored --nocapture`;
/// set `HLFS_LARGE_DIR` to put the 4 GiB somewhere other than the temp dir,
/// `HLFS_LARGE_BLOCKS` to write fewer blocks.
#[test]
#[ignore]
fn large_volume_open_time() {
    use std::time::Instant;
    let dir = match std::env::var_os("HLFS_LARGE_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .unwrap();
    let uri = format!("local://{}/big", dir.path().display());
    let size = 1u64 << 40;
    // 4096 writes × 256 blocks = 1,048,576 blocks; HLFS_LARGE_BLOCKS scales it.
    let blocks: u64 = std::env::var("HLFS_LARGE_BLOCKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 20);
    let writes = (blocks / 256).max(1);
    let stride = size / writes;
    Volume::create(&uri, size).unwrap();
    let opts = OpenOptions::default();
    let t = Instant::now();
    let v = Volume::open(&uri, &opts).unwrap();
    let mut data = vec![0u8; 1 << 20];
    for i in 0..writes {
        data[..8].copy_from_slice(&i.to_le_bytes());
        v.write(i * stride, &data).unwrap();
    }
    v.flush().unwrap();
    let write_time = t.elapsed();
    let t = Instant::now();
    v.close().unwrap();
    let close_time = t.elapsed();
    let mut report = vec![format!(
        "wrote {} blocks in {write_time:?}; close (checkpoint) {close_time:?}",
        writes * 256
    )];

    let check = |v: &Volume| {
        let mut b = vec![0u8; 4096];
        for i in [0, writes / 2, writes - 1] {
            v.read(i * stride, &mut b).unwrap();
            assert_eq!(&b[..8], &i.to_le_bytes());
        }
    };
    let index_dir = dir.path().join("big/index");
    for (what, opts, drop_index) in [
        ("clean index", OpenOptions::default(), false),
        (
            "checkpoint + log (index deleted)",
            OpenOptions::default(),
            true,
        ),
        (
            "full replay (rebuild_index)",
            OpenOptions {
                rebuild_index: true,
                ..Default::default()
            },
            false,
        ),
        (
            "read-only (checkpoint searched in place)",
            OpenOptions::read_only(),
            false,
        ),
    ] {
        if drop_index {
            std::fs::remove_dir_all(&index_dir).unwrap();
        }
        let rss = rss_bytes();
        let t = Instant::now();
        let v = Volume::open(&uri, &opts).unwrap();
        let open_time = t.elapsed();
        let grown = rss_bytes().saturating_sub(rss);
        check(&v);
        v.close().unwrap();
        report.push(format!(
            "open with {what}: {open_time:?}, RSS +{} MiB",
            grown >> 20
        ));
    }
    for line in &report {
        println!("large_volume_open_time: {line}");
    }
}
